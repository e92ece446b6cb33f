// The console's operator features (issue 28) in headless Chromium, driven by tests/console_ops.rs:
// the onboarding panel (connect-info, copy, a device added, refused, changed and removed, a
// registered device's settings changed from its details, a viewer key sees no form), an alarm
// raised by the simulated device while the Live wall is shown (the script prints ALARM_NOW and
// the test sends it; the toast's time is read), the badge, the Events view (history, names,
// filters, acknowledge with a note, live view, the alarm's clip), the acknowledgement read back
// from the history after a reload, the preset list bound to its tile (the answers to the preset
// queries are held back or hurried by the script), eight-way PTZ at a chosen speed, and at 390
// px no view wider than the screen; then the same in Chinese. Screenshots go to SHOTS_DIR.
// Usage: node console_ops_check.mjs CONSOLE_URL ADMIN_KEY VIEWER_KEY DEVICE_ID CHANNEL_A CHANNEL_B
// Env: SERVER_ID, DOMAIN, SIP_PORT (what connect-info must show), SHOTS_DIR.
// Prints ALARM_NOW when it waits for the alarm, and JSON {ok, ...} as its last line.
import { chromium } from 'playwright-core';

const [url, key, viewerKey, device, chA, chB] = process.argv.slice(2);
const shots = process.env.SHOTS_DIR || '.';
const NEW_DEVICE = '34020000001320000077';
const VIEWS = ['devices', 'wall', 'playback', 'streams', 'events', 'nodes', 'upstreams'];
const result = { ok: false, steps: [] };
const finish = async (browser) => {
  console.log(JSON.stringify(result));
  if (browser) await browser.close().catch(() => {});
  process.exit(result.ok ? 0 : 1);
};
// Whatever happens, the script ends (and says where it was).
setTimeout(() => { result.error = `timed out after ${result.steps.join(', ')}`; console.log(JSON.stringify(result)); process.exit(1); }, 300000).unref();

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
});

const text = (page, sel) => page.textContent(sel, { timeout: 5000 });
const waitText = (page, sel, part, timeout = 10000) => page.waitForFunction(([s, p]) => {
  const e = document.querySelector(s);
  return e && e.textContent.includes(p);
}, [sel, part], { timeout, polling: 100 });

async function signIn(page, k) {
  await page.goto(url);
  await page.fill('[data-testid=key]', k);
  await page.click('[data-testid=signin-button]');
  await page.waitForSelector(`[data-testid=device-${device}]`, { timeout: 15000 });
}

// Every view at the page's present width: the page no wider than the window; the device tree's
// rows neither overlap nor stick out. Screenshots named `ops-{tag}-{view}.png`.
async function fitsEveryView(page, tag) {
  const out = {};
  for (const view of VIEWS) {
    await page.click(`nav button[data-view=${view}]`);
    await page.waitForTimeout(view === 'devices' || view === 'events' ? 1200 : 700);
    out[view] = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, inner: window.innerWidth }));
    if (view === 'devices') {
      out.tree = await page.evaluate(() => {
        const tree = document.querySelector('#device-tree');
        const right = tree.getBoundingClientRect().right;
        const rows = [...tree.querySelectorAll(':scope > .row')].sort((a, b) => a.offsetTop - b.offsetTop);
        const overlaps = [];
        const outside = [];
        rows.forEach((r, i) => {
          const next = rows[i + 1];
          if (next && r.offsetTop + r.offsetHeight > next.offsetTop + 1) overlaps.push(r.dataset.testid || r.className);
          for (const c of r.querySelectorAll('*')) {
            if (c.getBoundingClientRect().right > right + 1) outside.push(`${r.dataset.testid}: ${c.textContent.slice(0, 30)}`);
          }
        });
        return { rows: rows.length, overlaps, outside, heights: rows.slice(0, 4).map((r) => r.offsetHeight) };
      });
    }
    await page.screenshot({ path: `${shots}/ops-${tag}-${view}.png`, fullPage: true });
  }
  return out;
}

try {
  // ---- desktop, English ----
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, locale: 'en-US', permissions: ['clipboard-read', 'clipboard-write'] });
  const page = await context.newPage();
  page.on('console', (m) => console.error('page:', m.text()));
  await signIn(page, key);
  await waitText(page, '#device-count', 'of 1 devices', 15000);
  // A device is registered: the panel is closed until asked for.
  result.onboard_open_at_first = await page.isVisible('[data-testid=onboard]');
  await page.click('[data-testid=onboard-toggle]');
  await page.waitForFunction(() => (document.querySelector('[data-testid=ci-server-id] code') || {}).textContent, null, { timeout: 10000 });
  const ci = async (k) => (await text(page, `[data-testid=ci-${k}] code`)).trim();
  result.connect = {
    server_id: await ci('server-id'), domain: await ci('domain'), host: await ci('host'), port: await ci('port'),
    transports: await text(page, '[data-testid=ci-transports]'), password: await text(page, '[data-testid=ci-password]'),
    rtp: await text(page, '[data-testid=ci-rtp]'),
  };
  await page.click('[data-testid=copy-server-id]');
  await page.waitForTimeout(200);
  result.copy_button = await text(page, '[data-testid=copy-server-id]');
  result.clipboard = await page.evaluate(() => navigator.clipboard.readText().catch((e) => `(${e.name})`));
  result.steps.push('connect-info');

  // Add a device; the same again and a bad one are refused, as the API (or the form) says.
  await page.waitForSelector('[data-testid=device-form]:not([hidden])', { timeout: 10000 });
  result.form_title = await text(page, '[data-testid=df-title]');
  await page.fill('[data-testid=df-id]', NEW_DEVICE);
  await page.fill('[data-testid=df-name]', 'Gate 7');
  await page.fill('[data-testid=df-password]', 'pw-77');
  await page.selectOption('[data-testid=df-transport]', 'tcp');
  await page.selectOption('[data-testid=df-ssrc]', 'strict');
  await page.click('[data-testid=df-submit]');
  await waitText(page, '[data-testid=df-status]', 'added');
  result.added = await text(page, '[data-testid=df-status]');
  await page.waitForSelector(`[data-testid=prov-${NEW_DEVICE}]`, { timeout: 10000 });
  result.provisioned_row = await text(page, `[data-testid=prov-${NEW_DEVICE}]`);
  await page.fill('[data-testid=df-id]', NEW_DEVICE);
  await page.click('[data-testid=df-submit]');
  await waitText(page, '[data-testid=df-status]', 'set up already');
  result.exists_error = await text(page, '[data-testid=df-status]');
  // A name over the API's 64 bytes (30 Chinese characters are 90): gmv's own words, shown.
  await page.fill('[data-testid=df-id]', '34020000001320000078');
  await page.fill('[data-testid=df-name]', '东'.repeat(30));
  await page.click('[data-testid=df-submit]');
  await waitText(page, '[data-testid=df-status]', 'Not saved');
  result.api_error = await text(page, '[data-testid=df-status]');
  await page.fill('[data-testid=df-id]', '123');
  await page.fill('[data-testid=df-name]', '');
  await page.click('[data-testid=df-submit]');
  await waitText(page, '[data-testid=df-status]', '20 digits');
  result.bad_id = await text(page, '[data-testid=df-status]');
  await page.fill('[data-testid=df-id]', '');
  // Changed from the list: a new name, its own password removed.
  await page.click(`[data-testid=prov-edit-${NEW_DEVICE}]`);
  result.edit_title = await text(page, '[data-testid=df-title]');
  await page.fill('[data-testid=df-name]', 'Gate 7 east');
  await page.check('[data-testid=df-password-clear]');
  await page.click('[data-testid=df-submit]');
  await waitText(page, '[data-testid=df-status]', 'saved');
  await waitText(page, `[data-testid=prov-${NEW_DEVICE}]`, 'Gate 7 east');
  result.changed_row = await text(page, `[data-testid=prov-${NEW_DEVICE}]`);
  // The registered device, from its details: named.
  await page.click(`[data-testid=device-${device}] .device-id`);
  await page.click(`[data-testid=edit-${device}]`);
  result.edit_registered_title = await text(page, '[data-testid=df-title]');
  await page.fill('[data-testid=df-name]', 'Front door');
  await page.click('[data-testid=df-submit]');
  await waitText(page, '[data-testid=df-status]', 'saved');
  await waitText(page, `[data-testid=device-${device}]`, 'Front door');
  result.device_row = await text(page, `[data-testid=device-${device}]`);
  result.details = await text(page, `[data-testid=details-${device}]`);
  await page.screenshot({ path: `${shots}/ops-desktop-onboarding.png`, fullPage: true });
  // Removed (asked twice).
  await page.click(`[data-testid=prov-remove-${NEW_DEVICE}]`);
  result.remove_asks = await text(page, `[data-testid=prov-remove-${NEW_DEVICE}]`);
  await page.click(`[data-testid=prov-remove-${NEW_DEVICE}]`);
  await page.waitForSelector(`[data-testid=prov-${NEW_DEVICE}]`, { state: 'detached', timeout: 10000 });
  result.steps.push('provisioning');

  // ---- the wall: two channels, the preset race, PTZ ----
  await page.click(`[data-testid=device-${device}] .device-id`); // details closed again
  await page.waitForSelector(`[data-testid=play-${chA}]`, { timeout: 10000 });
  await page.click(`[data-testid=play-${chA}]`);
  await page.click(`[data-testid=play-${chB}]`);
  await page.click('nav button[data-view=wall]');
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid=wall] .tile')].filter((x) => !x.classList.contains('empty')).length >= 2, null, { timeout: 10000 });
  // A's presets answer late, B's at once: selecting A, then B before A's answer, lists B's.
  let aAnswered = 0;
  await page.route('**/api/devices/*/channels/*/presets', async (route) => {
    if (route.request().method() !== 'GET') return route.continue();
    const u = route.request().url();
    if (u.includes(`/channels/${chA}/`)) {
      await new Promise((r) => setTimeout(r, 1500));
      aAnswered += 1;
      return route.fulfill({ json: { presets: [{ id: 11, name: 'only A has this' }] } });
    }
    if (u.includes(`/channels/${chB}/`)) return route.fulfill({ json: { presets: [{ id: 22, name: 'only B has this' }] } });
    return route.continue();
  });
  await page.click('[data-testid=tile-0]');
  await page.waitForTimeout(100);
  await page.click('[data-testid=tile-1]');
  await page.waitForSelector('[data-testid=preset-22]', { timeout: 5000 });
  const deadline = Date.now() + 5000;
  while (aAnswered === 0 && Date.now() < deadline) await page.waitForTimeout(100);
  await page.waitForTimeout(300); // A's late answer had its chance to land
  result.presets_race = await page.evaluate(() => ({
    items: [...document.querySelectorAll('[data-testid=presets] li')].map((li) => li.textContent),
    channel: document.querySelector('[data-testid=presets]').dataset.channel,
    of: document.querySelector('[data-testid=presets-of]').textContent,
  }));
  result.presets_race.a_answered = aAnswered;
  // And back to A: A's (late) list, not B's.
  await page.click('[data-testid=tile-0]');
  await page.waitForSelector('[data-testid=preset-11]', { timeout: 5000 });
  result.presets_back = await page.evaluate(() => [...document.querySelectorAll('[data-testid=presets] li')].map((li) => li.textContent));
  await page.unroute('**/api/devices/*/channels/*/presets');
  // Up and left at full speed, held a moment.
  await page.click('[data-testid=tile-1]');
  await page.$eval('[data-testid=ptz-speed]', (e) => { e.value = '1'; e.dispatchEvent(new Event('input')); });
  const ul = await (await page.$('[data-testid=ptz-up-left]')).boundingBox();
  await page.mouse.move(ul.x + ul.width / 2, ul.y + ul.height / 2);
  await page.mouse.down();
  await page.waitForTimeout(300);
  await page.mouse.up();
  await page.waitForTimeout(300);
  result.ptz_controls = await page.evaluate(() => ['ptz-up-left', 'ptz-up-right', 'ptz-down-left', 'ptz-down-right', 'ptz-near', 'ptz-far', 'ptz-iris-open', 'ptz-iris-close', 'home-set', 'home-off', 'ptz-speed']
    .filter((id) => document.querySelector(`[data-testid=${id}]`)));
  result.ptz_error = await text(page, '#ptz-error');
  result.steps.push('wall');

  // ---- an alarm while the wall is shown: a toast within a second, a badge ----
  await page.waitForTimeout(500);
  result.alarm_asked_ms = Date.now();
  console.log('ALARM_NOW');
  await page.waitForSelector('[data-testid=toast-alarm]', { timeout: 10000 });
  result.toast = await page.evaluate(() => {
    const x = document.querySelector('[data-testid=toast-alarm]');
    return { id: Number(x.dataset.alarmId), shown_at_ms: Number(x.dataset.shownAt), text: x.textContent };
  });
  result.toast_view_wall = await page.isVisible('[data-testid=view-wall]');
  result.badge = await text(page, '[data-testid=events-badge]');
  await page.screenshot({ path: `${shots}/ops-desktop-toast.png` });
  const alarm = result.toast.id;
  result.steps.push('toast');

  // ---- Events: history, names, filters, acknowledge ----
  await page.click('nav button[data-view=events]');
  await page.waitForSelector(`[data-event-id="${alarm}"]`, { timeout: 10000 });
  await page.waitForFunction(() => document.querySelector('[data-testid=ev-note]').textContent === '' || document.querySelector('[data-testid=ev-note]').textContent.includes('No event'), null, { timeout: 10000 });
  result.history_kinds = await page.evaluate(() => [...new Set([...document.querySelectorAll('#event-log li')].map((li) => li.dataset.testid))]);
  await waitText(page, `[data-event-id="${alarm}"]`, 'Front door');
  result.alarm_row = await text(page, `[data-event-id="${alarm}"]`);
  await page.selectOption('[data-testid=ev-kind]', 'alarm');
  await page.waitForTimeout(200);
  result.filtered_kinds = await page.evaluate(() => [...new Set([...document.querySelectorAll('#event-log li')].map((li) => li.dataset.testid))]);
  result.device_options = await page.evaluate(() => [...document.querySelectorAll('[data-testid=ev-device] option')].map((o) => o.textContent));
  await page.selectOption('[data-testid=ev-device]', device);
  await page.waitForTimeout(200);
  result.filtered_devices = await page.evaluate(() => [...new Set([...document.querySelectorAll('#event-log li')].map((li) => li.dataset.device))]);
  await page.selectOption('[data-testid=ev-kind]', '');
  await page.selectOption('[data-testid=ev-device]', '');
  await page.click(`[data-testid=ack-${alarm}]`);
  await page.fill(`[data-testid=ack-note-${alarm}]`, 'checked the gate');
  await page.click(`[data-testid=ack-send-${alarm}]`);
  await waitText(page, `[data-testid=ack-state-${alarm}]`, 'acknowledged by');
  result.acked = await text(page, `[data-testid=ack-state-${alarm}]`);
  result.badge_after_ack = await page.isVisible('[data-testid=events-badge]');
  result.ack_rows = await page.evaluate(() => document.querySelectorAll('[data-testid=event-alarm_acknowledged]').length);
  result.steps.push('ack');

  // The alarm's channel live, from its row.
  await page.click(`[data-testid=ev-live-${alarm}]`);
  await page.waitForSelector('[data-testid=view-wall]:not([hidden])', { timeout: 5000 });
  result.live_from_alarm = await page.evaluate(() => [...document.querySelectorAll('[data-testid=wall] .tile .name')].map((n) => n.textContent));
  // The alarm's clip (closed some seconds after the alarm), played.
  await page.click('nav button[data-view=events]');
  await page.waitForSelector(`[data-testid=ev-clip-${alarm}]`, { timeout: 30000 });
  await page.click(`[data-testid=ev-clip-${alarm}]`);
  await page.waitForFunction(() => document.querySelector('[data-testid=ev-video]').currentTime > 0.5, null, { timeout: 20000, polling: 200 });
  result.clip = await page.evaluate(() => ({ time: document.querySelector('[data-testid=ev-video]').currentTime, title: document.querySelector('[data-testid=ev-player-title]').textContent }));
  await page.screenshot({ path: `${shots}/ops-desktop-events.png`, fullPage: true });
  result.steps.push('clip');

  // From the history alone: a reload, then the Events view.
  await page.reload();
  await page.waitForSelector(`[data-testid=device-${device}]`, { timeout: 15000 });
  await page.click('nav button[data-view=events]');
  await waitText(page, `[data-testid=ack-state-${alarm}]`, 'acknowledged by', 15000);
  result.acked_from_history = await text(page, `[data-testid=ack-state-${alarm}]`);
  result.steps.push('history');

  // ---- phone width, English ----
  await page.setViewportSize({ width: 390, height: 844 });
  await page.click('nav button[data-view=devices]');
  if (!(await page.isVisible('[data-testid=onboard]'))) await page.click('[data-testid=onboard-toggle]');
  result.phone_en = await fitsEveryView(page, 'phone-en');
  result.steps.push('phone-en');
  await context.close();

  // ---- a viewer's key: the details, no form, and why ----
  const viewer = await browser.newContext({ viewport: { width: 1440, height: 900 }, locale: 'en-US' });
  const vpage = await viewer.newPage();
  await signIn(vpage, viewerKey);
  await vpage.click('[data-testid=onboard-toggle]');
  await vpage.waitForSelector('[data-testid=provision-not-admin]:not([hidden])', { timeout: 10000 });
  result.viewer = {
    server_id: (await text(vpage, '[data-testid=ci-server-id] code')).trim(),
    why: await text(vpage, '[data-testid=provision-not-admin]'),
    form_shown: await vpage.isVisible('[data-testid=device-form]'),
  };
  await viewer.close();
  result.steps.push('viewer');

  // ---- Chinese (chosen before, kept in localStorage), desktop then phone ----
  const zh = await browser.newContext({ viewport: { width: 1440, height: 900 }, locale: 'en-US' });
  await zh.addInitScript(() => localStorage.setItem('gmv-lang', 'zh-CN'));
  const zpage = await zh.newPage();
  await signIn(zpage, key);
  await zpage.click('[data-testid=onboard-toggle]');
  await zpage.waitForFunction(() => (document.querySelector('[data-testid=ci-server-id] code') || {}).textContent, null, { timeout: 10000 });
  result.zh = {
    toggle: await text(zpage, '[data-testid=onboard-toggle]'),
    title: await text(zpage, '[data-testid=onboard] h3'),
    terms: await zpage.evaluate(() => [...document.querySelectorAll('[data-testid=connect-info] dt')].map((d) => d.textContent)),
    password: await text(zpage, '[data-testid=ci-password]'),
    form_title: await text(zpage, '[data-testid=df-title]'),
    nav_events: await text(zpage, 'nav button[data-view=events]'),
  };
  // The panel's own words (not data: ids, addresses, names) are Chinese.
  result.zh.latin = await zpage.evaluate(() => {
    const clone = document.querySelector('[data-testid=onboard]').cloneNode(true);
    for (const e of clone.querySelectorAll('code, .data, [hidden]')) e.remove();
    const words = [clone.textContent];
    for (const e of document.querySelectorAll('[data-testid=onboard] [placeholder], [data-testid=onboard] [title]')) words.push(e.getAttribute('placeholder') || '', e.getAttribute('title') || '');
    return [...new Set(words.join('\n').match(/[A-Za-z]{2,}/g) || [])];
  });
  await zpage.click('nav button[data-view=events]');
  await waitText(zpage, `[data-testid=ack-state-${alarm}]`, '确认', 15000);
  result.zh.acked = await text(zpage, `[data-testid=ack-state-${alarm}]`);
  result.zh.kind = await text(zpage, `[data-event-id="${alarm}"] .kind`);
  await zpage.screenshot({ path: `${shots}/ops-desktop-zh-events.png`, fullPage: true });
  await zpage.setViewportSize({ width: 390, height: 844 });
  result.phone_zh = await fitsEveryView(zpage, 'phone-zh');
  // No device left: the page opens on how to connect one.
  result.removed_status = await zpage.evaluate(async ([k, d]) => (await fetch(`/api/devices/${d}`, { method: 'DELETE', headers: { Authorization: `Bearer ${k}` } })).status, [key, device]);
  await zpage.reload();
  await zpage.waitForSelector('[data-testid=onboard]:not([hidden])', { timeout: 15000 });
  result.zh.no_devices = { count: await text(zpage, '#device-count'), toggle_pressed: await zpage.getAttribute('[data-testid=onboard-toggle]', 'aria-expanded') };
  await zpage.screenshot({ path: `${shots}/ops-phone-zh-no-devices.png`, fullPage: true });
  await zh.close();
  result.steps.push('zh');
  result.ok = true;
} catch (e) {
  result.error = String(e && e.stack || e);
  try {
    const pages = browser.contexts().flatMap((c) => c.pages());
    if (pages.length) await pages[pages.length - 1].screenshot({ path: `${shots}/ops-failed.png`, fullPage: true });
  } catch (_) { /* no page */ }
}
await finish(browser);
