// Console users, the dashboard and sub-streams (issue 28) in headless Chromium, driven by
// tests/console_users.rs: a person signs in with a user name and password (no API key: the
// session cookie and a CSRF token on every change), a wrong password is said, the dashboard is
// the first view (version, streams, the warning the test provoked; refreshed while shown only),
// an operator has no Users view, plays a channel in a 9-tile wall as its sub-stream and in full
// screen as its main stream (the test checks each session through the API when the script
// prints SUB_PLAYING / MAIN_PLAYING / SUB_AGAIN and answers on stdin), moves the camera,
// changes their own password (wrong present one and a mismatch said), signs out (a reload stays
// signed out) and in with the new password; an admin adds, refuses, changes and deletes users
// and sets a device's sub-stream in its form; a password the admin sets ends the operator's
// session (the other page says so); 390 px wide in English and Chinese; too many failures say
// how long to wait. Screenshots go to SHOTS_DIR as console-users-*.png.
// Usage: node console_users_check.mjs URL VERSION DEVICE CHANNEL OP_NAME OP_PASS OP_NEW_PASS OP_ADMIN_SET_PASS ADMIN_NAME ADMIN_PASS
// Prints JSON {ok, ...} as its last line.
import { chromium } from 'playwright-core';
import readline from 'node:readline';

const [url, version, device, channel, opName, opPass, opNewPass, opAdminPass, adName, adPass] = process.argv.slice(2);
const shots = process.env.SHOTS_DIR || '.';
const result = { ok: false, steps: [] };
const finish = async (browser) => {
  console.log(JSON.stringify(result));
  if (browser) await browser.close().catch(() => {});
  process.exit(result.ok ? 0 : 1);
};
setTimeout(() => { result.error = `timed out after ${result.steps.join(', ')}`; console.log(JSON.stringify(result)); process.exit(1); }, 300000).unref();

// Questions to the test (a line out), its answer (a line in).
const answers = [];
const waiting = [];
readline.createInterface({ input: process.stdin }).on('line', (l) => { const w = waiting.shift(); if (w) w(l); else answers.push(l); });
const ask = (line) => {
  console.log(line);
  return new Promise((resolve) => { if (answers.length) resolve(answers.shift()); else waiting.push(resolve); });
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required',
         '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream'],
});

const text = (page, sel) => page.textContent(sel, { timeout: 5000 });
const waitText = (page, sel, part, timeout = 10000) => page.waitForFunction(([s, p]) => {
  const e = document.querySelector(s);
  return e && e.textContent.includes(p);
}, [sel, part], { timeout, polling: 100 });
const shot = (page, name, fullPage = true) => page.screenshot({ path: `${shots}/console-users-${name}.png`, fullPage });
const fits = (page) => page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, inner: window.innerWidth }));

// Every /api request a page makes: method, path, and its credentials.
const requests = [];
function watch(page, who) {
  page.on('console', (m) => console.error(`page ${who}:`, m.text()));
  page.on('request', (r) => {
    const u = new URL(r.url());
    if (!u.pathname.startsWith('/api/') && !u.pathname.startsWith('/whip/')) return;
    const h = r.headers();
    requests.push({ who, at: Date.now(), method: r.method(), path: u.pathname, authorization: h.authorization || null, csrf: h['x-csrf-token'] || null, gmv_token: h['gmv-token'] || null });
  });
}

async function signInUser(page, name, password) {
  await page.fill('[data-testid=signin-name]', name);
  await page.fill('[data-testid=signin-password]', password);
  const answered = page.waitForResponse((r) => r.url().endsWith('/api/session') && r.request().method() === 'POST', { timeout: 15000 });
  await page.click('[data-testid=signin-user-button]');
  return (await answered).status();
}

// The tile's state as the page shows it.
const tileState = (page, i) => page.evaluate((n) => {
  const tile = document.querySelector(`[data-testid=tile-${n}]`);
  const v = tile.querySelector('video');
  return { stream: tile.dataset.stream, id: tile.dataset.streamId, badge: tile.querySelector('.stream-kind').textContent, time: v.currentTime,
    full: document.fullscreenElement === tile, message: tile.querySelector('.message').textContent, stats: tile.querySelector('.stats').textContent };
}, i);
const waitTile = (page, i, stream, notId = null, sameId = null, full = null) => page.waitForFunction(([n, kind, not, same, fs]) => {
  const tile = document.querySelector(`[data-testid=tile-${n}]`);
  const v = tile.querySelector('video');
  return tile.dataset.stream === kind && tile.dataset.streamId && tile.dataset.streamId !== not && (!same || tile.dataset.streamId === same)
    && (fs === null || (document.fullscreenElement === tile) === fs) && v.currentTime > 0.5;
}, [i, stream, notId, sameId, full], { timeout: 40000, polling: 200 });

try {
  // ---- an operator, desktop, English ----
  const ctxA = await browser.newContext({ viewport: { width: 1440, height: 900 }, locale: 'en-US', permissions: ['microphone'], acceptDownloads: true });
  const page = await ctxA.newPage();
  watch(page, 'operator');
  await page.goto(url);
  await page.waitForSelector('[data-testid=signin-user-form]', { timeout: 15000 });
  // A new browser: the name and password first, the API key part open (a new site's way in).
  result.signin = {
    name_shown: await page.isVisible('[data-testid=signin-name]'),
    key_shown: await page.isVisible('[data-testid=key]'),
    toggle: await text(page, '[data-testid=signin-key-toggle]'),
  };
  await shot(page, 'signin');
  // A wrong password: said.
  result.wrong_status = await signInUser(page, opName, 'not-the-password');
  await waitText(page, '[data-testid=signin-user-error]', 'Wrong');
  result.wrong_password = await text(page, '[data-testid=signin-user-error]');
  await shot(page, 'signin-error');
  result.steps.push('wrong password');

  // Signed in: the dashboard first.
  result.signin_status = await signInUser(page, opName, opPass);
  await page.waitForSelector('[data-testid=view-dashboard]:not([hidden])', { timeout: 15000 });
  await page.waitForFunction(() => document.querySelector('[data-testid=dash-version]'), null, { timeout: 15000 });
  await waitText(page, '[data-testid=dash-errors]', 'RTP packet dropped', 15000);
  result.dashboard = await page.evaluate(() => ({
    version: document.querySelector('[data-testid=dash-version]').textContent,
    streams: document.querySelector('[data-testid=dash-streams-value]').textContent,
    cards: [...document.querySelectorAll('[data-testid=dash-cards] .dash-card')].map((c) => c.dataset.testid),
    uptime: document.querySelector('[data-testid=dash-uptime-value]').textContent,
    cpu: document.querySelector('[data-testid=dash-cpu-value]').textContent,
    memory: document.querySelector('[data-testid=dash-memory-value]').textContent,
    disk: document.querySelector('[data-testid=dash-disk]').textContent,
    devices: document.querySelector('[data-testid=dash-devices]').textContent,
    warning: [...document.querySelectorAll('[data-testid=dash-error]')].map((li) => li.textContent).find((x) => x.includes('RTP packet dropped')),
    nodes_note: document.querySelector('[data-testid=dash-nodes-note]').textContent,
    first_view: [...document.querySelectorAll('.view')].filter((v) => !v.hidden).map((v) => v.id),
  }));
  result.whoami = await text(page, '[data-testid=whoami]');
  result.users_nav_shown = await page.isVisible('[data-testid=nav-users]');
  result.password_button_shown = await page.isVisible('[data-testid=password-open]');
  result.storage = await page.evaluate(() => ({ key: sessionStorage.getItem('gmv-api-key'), cookie: document.cookie }));
  // Refreshed while shown: GET /api/dashboard every few seconds; none once another view is shown.
  const dashGets = () => requests.filter((r) => r.who === 'operator' && r.path === '/api/dashboard').length;
  const before = dashGets();
  await page.waitForTimeout(7000);
  result.dash_refreshes = dashGets() - before;
  await shot(page, 'dashboard');
  await page.click('nav button[data-view=devices]');
  const left = Date.now();
  await page.waitForTimeout(4500);
  result.dash_after_leaving = requests.filter((r) => r.who === 'operator' && r.path === '/api/dashboard' && r.at > left + 50).length;
  result.steps.push('dashboard');

  // ---- the sub-stream in a 9-tile wall, the main stream in full screen ----
  await page.click('nav button[data-view=wall]');
  await page.selectOption('[data-testid=layout]', '9');
  await page.click('nav button[data-view=devices]');
  await page.waitForSelector(`[data-testid=play-${channel}]`, { timeout: 15000 });
  await page.click(`[data-testid=play-${channel}]`);
  await page.click('nav button[data-view=wall]');
  await waitTile(page, 0, 'sub');
  const sub = await tileState(page, 0);
  result.sub = sub;
  result.sub_answer = await ask(`SUB_PLAYING ${sub.id}`);
  await shot(page, 'wall-sub', false);
  // The operator moves the camera (an operator's change, through the cookie with its CSRF token).
  await page.click('[data-testid=tile-0] .label .name');
  const right = await (await page.$('[data-testid=ptz-right]')).boundingBox();
  await page.mouse.move(right.x + right.width / 2, right.y + right.height / 2);
  await page.mouse.down();
  await page.waitForTimeout(300);
  await page.mouse.up();
  await page.waitForTimeout(500);
  result.ptz_error = await text(page, '#ptz-error');
  // Its own fetches: the tile's snapshot (GET with the cookie), talking (WHIP, a POST with the
  // CSRF token).
  const download = page.waitForEvent('download', { timeout: 15000 });
  const snapped = page.waitForResponse((r) => r.url().includes('/snapshot'), { timeout: 15000 });
  await page.click('[data-testid=tile-0] button[data-i18n="wall.snap"]');
  result.snapshot = { status: (await snapped).status(), file: (await download).suggestedFilename() };
  const talkBox = await (await page.$('[data-testid=talk-button]')).boundingBox();
  const whip = page.waitForResponse((r) => r.url().includes('/whip/broadcast/') && r.request().method() === 'POST', { timeout: 15000 });
  await page.mouse.move(talkBox.x + talkBox.width / 2, talkBox.y + talkBox.height / 2);
  await page.mouse.down();
  result.whip_status = (await whip).status();
  await page.waitForFunction(() => document.querySelector('[data-testid=talk-status]').textContent.startsWith('Talking'), null, { timeout: 15000, polling: 100 });
  result.talk = await text(page, '[data-testid=talk-status]');
  await page.waitForTimeout(1000);
  await page.mouse.up();
  await page.waitForFunction(() => document.querySelector('[data-testid=talk-status]').textContent === 'Talk ended.', null, { timeout: 5000 });
  // Full screen: the main stream.
  await page.click('[data-testid=tile-0] button[data-i18n="wall.full"]');
  await waitTile(page, 0, 'main', sub.id, null, true);
  const main = await tileState(page, 0);
  result.main = main;
  result.main_answer = await ask(`MAIN_PLAYING ${main.id}`);
  await shot(page, 'fullscreen', false);
  // Out of full screen: the sub-stream again (its session, still there).
  await page.evaluate(() => document.exitFullscreen());
  await waitTile(page, 0, 'sub', null, sub.id, false);
  const again = await tileState(page, 0);
  result.sub_again = again;
  result.sub_again_answer = await ask(`SUB_AGAIN ${again.id}`);
  result.steps.push('sub-stream');

  // ---- one's own password ----
  await page.click('[data-testid=password-open]');
  await page.fill('[data-testid=pw-old]', 'not-my-password');
  await page.fill('[data-testid=pw-new]', opNewPass);
  await page.fill('[data-testid=pw-repeat]', opNewPass);
  await page.click('[data-testid=pw-submit]');
  await waitText(page, '[data-testid=pw-status]', 'wrong');
  result.pw_wrong_old = await text(page, '[data-testid=pw-status]');
  await page.fill('[data-testid=pw-old]', opPass);
  await page.fill('[data-testid=pw-repeat]', `${opNewPass}x`);
  await page.click('[data-testid=pw-submit]');
  await waitText(page, '[data-testid=pw-status]', 'differ');
  result.pw_mismatch = await text(page, '[data-testid=pw-status]');
  await page.fill('[data-testid=pw-repeat]', opNewPass);
  await page.click('[data-testid=pw-submit]');
  await waitText(page, '[data-testid=pw-status]', 'Password changed');
  result.pw_changed = await text(page, '[data-testid=pw-status]');
  await shot(page, 'password', false);
  // Still signed in (the console signed in again): the dashboard answers.
  await page.click('[data-testid=pw-cancel]');
  const fresh = page.waitForResponse((r) => r.url().endsWith('/api/dashboard'), { timeout: 10000 });
  await page.click('nav button[data-view=dashboard]');
  result.after_change_status = (await fresh).status();
  result.after_change_app = await page.isVisible('[data-testid=view-dashboard]');
  result.steps.push('own password');

  // ---- signing out; a reload stays signed out; the old password no longer opens ----
  await page.click('[data-testid=signout]');
  await page.waitForSelector('[data-testid=signin-user-form]', { timeout: 15000 });
  await waitText(page, '[data-testid=signin-note]', 'signed out');
  result.signed_out_note = await text(page, '[data-testid=signin-note]');
  await page.reload();
  await page.waitForSelector('[data-testid=signin-user-form]', { timeout: 15000 });
  await page.waitForTimeout(500);
  result.after_reload = { signin: await page.isVisible('[data-testid=signin]'), app: await page.isVisible('#app'), key_shown: await page.isVisible('[data-testid=key]') };
  await shot(page, 'signed-out');
  result.old_password_status = await signInUser(page, opName, opPass);
  await waitText(page, '[data-testid=signin-user-error]', 'Wrong');
  result.new_password_status = await signInUser(page, opName, opNewPass);
  await page.waitForSelector('[data-testid=view-dashboard]:not([hidden])', { timeout: 15000 });
  result.steps.push('sign out and in');

  // ---- an admin: users ----
  const ctxC = await browser.newContext({ viewport: { width: 1440, height: 900 }, locale: 'en-US' });
  const admin = await ctxC.newPage();
  watch(admin, 'admin');
  await admin.goto(url);
  await admin.waitForSelector('[data-testid=signin-user-form]', { timeout: 15000 });
  result.admin_signin_status = await signInUser(admin, adName, adPass);
  await admin.waitForSelector('[data-testid=view-dashboard]:not([hidden])', { timeout: 15000 });
  result.admin_whoami = await text(admin, '[data-testid=whoami]');
  await admin.click('[data-testid=nav-users]');
  await admin.waitForSelector(`[data-testid=user-${opName}]`, { timeout: 10000 });
  await admin.waitForSelector(`[data-testid=user-${adName}]`, { timeout: 10000 });
  result.users_listed = await admin.evaluate(() => [...document.querySelectorAll('[data-testid=user-rows] tr[data-testid^=user-]')].map((r) => r.dataset.testid.slice(5)));
  result.counters = await text(admin, '[data-testid=users-counters]');
  // Added; refused by the console (a name with a space, a short password) and by gmv (exists).
  const addUser = async (name, role, password, expect) => {
    await admin.fill('[data-testid=uf-name]', name);
    await admin.selectOption('[data-testid=uf-role]', role);
    await admin.fill('[data-testid=uf-password]', password);
    await admin.click('[data-testid=uf-submit]');
    await waitText(admin, '[data-testid=uf-status]', expect);
    return text(admin, '[data-testid=uf-status]');
  };
  result.added = await addUser('li', 'viewer', 'li-pass-123', 'added');
  await admin.waitForSelector('[data-testid=user-li]', { timeout: 10000 });
  result.added_row = await text(admin, '[data-testid=user-li]');
  result.bad_name = await addUser('li si', 'viewer', 'li-pass-123', 'user name is');
  result.bad_password = await addUser('wang', 'viewer', 'short', 'password is');
  result.exists = await addUser(opName, 'viewer', 'another-pass-1', 'exists');
  // li's role changed at once.
  await admin.selectOption('[data-testid=user-role-li]', 'operator');
  await waitText(admin, '[data-testid=users-status]', 'is now');
  result.role_set = await text(admin, '[data-testid=users-status]');
  await admin.waitForTimeout(300);
  result.role_after = await admin.$eval('[data-testid=user-role-li]', (s) => s.value);
  // The operator's password set by the admin: the operator's page says its session ended.
  await admin.click(`[data-testid=user-pw-${opName}]`);
  await admin.fill(`[data-testid=user-pw-input-${opName}]`, opAdminPass);
  await admin.click(`[data-testid=user-pw-save-${opName}]`);
  await waitText(admin, '[data-testid=users-status]', 'password is set');
  result.pw_set = await text(admin, '[data-testid=users-status]');
  await page.waitForSelector('[data-testid=signin-note]:not([hidden])', { timeout: 15000 });
  await waitText(page, '[data-testid=signin-note]', 'ended');
  result.session_ended = { note: await text(page, '[data-testid=signin-note]'), name: await page.inputValue('[data-testid=signin-name]'), app: await page.isVisible('#app') };
  await shot(page, 'session-ended');
  // li deleted, asked once more.
  await admin.click('[data-testid=user-delete-li]');
  result.delete_asks = await text(admin, '[data-testid=user-delete-li]');
  await admin.click('[data-testid=user-delete-li]');
  await admin.waitForSelector('[data-testid=user-li]', { state: 'detached', timeout: 10000 });
  result.deleted = await text(admin, '[data-testid=users-status]');
  await shot(admin, 'users');
  result.steps.push('users');

  // ---- the device's sub-stream in its form (an admin's) ----
  await admin.click('nav button[data-view=devices]');
  await admin.waitForSelector(`[data-testid=device-${device}]`, { timeout: 15000 });
  await admin.click(`[data-testid=device-${device}] .device-id`);
  await admin.waitForSelector(`[data-testid=details-${device}]`, { timeout: 10000 });
  result.details = await text(admin, `[data-testid=details-${device}]`);
  await admin.click(`[data-testid=edit-${device}]`);
  await admin.waitForSelector('[data-testid=df-sub]', { timeout: 10000 });
  result.form_sub = await admin.$eval('[data-testid=df-sub]', (s) => ({ value: s.value, options: [...s.options].map((o) => o.textContent) }));
  await admin.selectOption('[data-testid=df-sub]', 'streamnumber');
  await admin.click('[data-testid=df-submit]');
  await waitText(admin, '[data-testid=df-status]', 'saved');
  await waitText(admin, `[data-testid=prov-sub-${device}]`, 'streamnumber');
  result.prov_sub = await text(admin, `[data-testid=prov-sub-${device}]`);
  await shot(admin, 'device-form');
  result.steps.push('device form');

  // ---- a phone's width, English then Chinese ----
  await admin.setViewportSize({ width: 390, height: 844 });
  result.phone = {};
  for (const view of ['dashboard', 'users']) {
    await admin.click(`nav button[data-view=${view}]`);
    await admin.waitForTimeout(1200);
    result.phone[view] = await fits(admin);
    await shot(admin, `phone-${view}`);
  }
  await admin.click('[data-testid=lang-zh-CN]');
  await admin.click('nav button[data-view=dashboard]');
  await admin.waitForTimeout(1200);
  result.phone.dashboard_zh = await fits(admin);
  result.zh = {
    nav: await text(admin, 'nav button[data-view=dashboard]'),
    users_nav: await text(admin, '[data-testid=nav-users]'),
    labels: await admin.evaluate(() => [...document.querySelectorAll('[data-testid=dash-cards] .label')].map((l) => l.textContent)),
    whoami: await text(admin, '[data-testid=whoami]'),
  };
  await shot(admin, 'phone-dashboard-zh');
  await admin.click('nav button[data-view=users]');
  await admin.waitForTimeout(1200);
  result.phone.users_zh = await fits(admin);
  result.zh.counters = await text(admin, '[data-testid=users-counters]');
  await shot(admin, 'phone-users-zh');
  await admin.click('nav button[data-view=devices]');
  await admin.waitForSelector('[data-testid=df-sub]', { state: 'attached', timeout: 10000 });
  result.zh.sub_options = await admin.$eval('[data-testid=df-sub]', (s) => [...s.options].map((o) => o.textContent));
  result.catalogue_missing = await admin.evaluate(() => {
    const en = Object.keys(I18N.en);
    const zh = Object.keys(I18N['zh-CN']);
    return { zh: en.filter((k) => !(k in I18N['zh-CN'])), en: zh.filter((k) => !(k in I18N.en)) };
  });
  await admin.click('[data-testid=lang-en]');
  result.steps.push('phone');

  // ---- too many failures from this address: how long to wait ----
  await page.setViewportSize({ width: 390, height: 844 });
  result.throttle_tries = [];
  for (let i = 0; i < 8; i++) {
    const status = await signInUser(page, opName, 'wrong-again');
    result.throttle_tries.push(status);
    await page.waitForFunction(() => !document.querySelector('[data-testid=signin-user-button]').disabled, null, { timeout: 5000 });
    if (status === 429) break;
  }
  await waitText(page, '[data-testid=signin-user-error]', 'try again in');
  result.throttled = await text(page, '[data-testid=signin-user-error]');
  result.phone.signin = await fits(page);
  await shot(page, 'phone-throttled');
  result.steps.push('throttled');

  result.requests = requests;
  result.ok = true;
} catch (e) {
  result.error = String(e && e.stack || e);
  result.requests_tail = requests.slice(-20);
  try {
    const pages = browser.contexts().flatMap((c) => c.pages());
    for (const [i, p] of pages.entries()) await p.screenshot({ path: `${shots}/console-users-failed-${i}.png`, fullPage: true });
  } catch (_) { /* no page */ }
}
await finish(browser);
