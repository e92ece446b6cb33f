// Drives the console's Upstreams view (级联上级) in headless Chromium against a lower gmv with
// four upstreams: `city` (registered, one live session sent up), `province` (its password
// refused), `silent` (an address where nobody answers) and `closed` (signalled over TCP to a
// port nobody listens on). At desktop (1280x800) and phone
// (390x844) width, in zh-CN and en: the states as labelled badges, the errors explained, no
// text of the other language, the list refreshed (one request at a time, none once the view is
// left), the shared-channels picker saving (admin) and refused (operator, explained), a viewer
// told why it sees nothing, the language switch. Every wait is a poll with a deadline.
// Screenshots go to SHOTS_DIR/console-upstreams-*.png.
// Usage: node upstreams_check.mjs CONSOLE_URL ADMIN_KEY OPERATOR_KEY VIEWER_KEY
//   env CHANNELS (the camera's four channel ids, comma-separated), SESSION_CHANNEL (the one the
//   upper plays), SHOTS_DIR; prints JSON {ok, ...} as its last line.
import { chromium } from 'playwright-core';

const [url, adminKey, operatorKey, viewerKey] = process.argv.slice(2);
const channels = (process.env.CHANNELS || '').split(',');
const sessionChannel = process.env.SESSION_CHANNEL;
const shots = process.env.SHOTS_DIR || '.';
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
// Latin words the zh-CN view may hold outside data: protocol and product names.
const LATIN_ALLOWED = new Set(['gmv', 'SIP', 'UDP', 'TCP', 'MD', 'SSRC', 'HTTP']);
const CJK = /[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]/;
// `silent` ends its first REGISTER transaction unanswered after 32 s (from the engine's start).
const SILENT_RETRYING_MS = 50000;

const result = { ok: false, steps: [] };
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

// Polls `fn` until it gives a truthy value, for at most `timeout` ms.
async function until(what, fn, timeout = 15000) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function open(name, viewport, locale, storedLang) {
  const phone = viewport === PHONE;
  const context = await browser.newContext({ viewport, locale, isMobile: phone, hasTouch: phone });
  if (storedLang) await context.addInitScript((l) => localStorage.setItem('gmv-lang', l), storedLang);
  const page = await context.newPage();
  page.on('console', (m) => console.error(`${name} page:`, m.text()));
  page.on('pageerror', (e) => { console.error(`${name} page error:`, e); result.page_errors = [...(result.page_errors || []), String(e)]; });
  // GET /api/upstreams as the page sends them: how many, how many at once; and /api/streams.
  const net = { upstreams: 0, inFlight: 0, maxInFlight: 0, streams: 0 };
  const isUpstreams = (r) => r.method() === 'GET' && new URL(r.url()).pathname === '/api/upstreams';
  page.on('request', (r) => {
    if (isUpstreams(r)) { net.upstreams += 1; net.inFlight += 1; net.maxInFlight = Math.max(net.maxInFlight, net.inFlight); }
    if (r.method() === 'GET' && new URL(r.url()).pathname === '/api/streams') net.streams += 1;
  });
  const done = (r) => { if (isUpstreams(r)) net.inFlight -= 1; };
  page.on('requestfinished', done);
  page.on('requestfailed', done);
  await page.goto(url);
  return { context, page, net };
}

async function signIn(page, key) {
  await page.fill('[data-testid=key]', key);
  await page.click('[data-testid=signin-button]');
  await page.waitForSelector('[data-testid=view-devices]:not([hidden])', { timeout: 15000 });
}

async function openUpstreams(page) {
  await page.click('[data-testid=nav-upstreams]');
  await page.waitForSelector('[data-testid=view-upstreams]:not([hidden])', { timeout: 5000 });
}

const text = async (page, sel) => ((await page.textContent(sel, { timeout: 5000 })) || '').trim();
const badge = (page, id) => text(page, `[data-testid=upstream-state-${id}]`);

// The view's own words (and the nav entry's): its text without data (ids, addresses, names,
// the engine's words in <code> or .data), with placeholders, labels and titles.
async function ownWords(page) {
  return page.evaluate(() => {
    const view = document.querySelector('[data-testid=view-upstreams]');
    const clone = view.cloneNode(true);
    for (const e of clone.querySelectorAll('code, .data, [hidden]')) e.remove();
    const words = [clone.textContent, document.querySelector('[data-testid=nav-upstreams]').textContent];
    for (const e of view.querySelectorAll('[placeholder], [aria-label], [title]:not([data-raw])')) {
      words.push(e.getAttribute('placeholder') || '', e.getAttribute('aria-label') || '', e.getAttribute('title') || '');
    }
    return words.join('\n');
  });
}

async function checkLanguage(page, language, where) {
  const words = await ownWords(page);
  if (language === 'zh-CN') {
    const latin = (words.match(/[A-Za-z]{2,}/g) || []).filter((w) => !LATIN_ALLOWED.has(w));
    check(latin.length === 0, `${where}: English left in the zh-CN view: ${JSON.stringify(latin)} in ${JSON.stringify(words)}`);
    check(CJK.test(words), `${where}: no Chinese in the zh-CN view`);
  } else {
    check(!CJK.test(words), `${where}: Chinese in the English view: ${JSON.stringify(words.match(new RegExp(CJK.source, 'g')))}`);
  }
}

// Nothing wider than the screen (a phone scrolls only down).
async function checkNoOverflow(page, where) {
  const o = await page.evaluate(() => ({ page: document.documentElement.scrollWidth, screen: window.innerWidth,
    wide: [...document.querySelectorAll('[data-testid=view-upstreams] *')].filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1
      && !e.closest('.table-scroll, .picker-list')).map((e) => e.outerHTML.slice(0, 80)).slice(0, 5) }));
  check(o.page <= o.screen && o.wide.length === 0, `${where}: wider than the screen: ${JSON.stringify(o)}`);
}

// The engine's words for each failure, explained by the page's own function.
async function explanations(page) {
  return page.evaluate(() => ['REGISTER not answered', 'REGISTER answered 403', '401 to our credentials: wrong password or local id',
    '3 keepalives unanswered', 'REGISTER answered 404', '407 without a digest challenge gmv can answer (MD5)', 'something new']
    .map((e) => explainUpstreamError(e)));
}

const shot = (page, name) => page.screenshot({ path: `${shots}/console-upstreams-${name}.png`, fullPage: true });

try {
  const [ch1, ch2, ch3, ch4] = channels;

  // 1. Desktop, a Chinese browser (navigator.language zh-CN: the view in zh-CN without a
  //    choice), the admin key: states, errors, the session sent up, the picker saves.
  {
    const { context, page, net } = await open('desktop-zh', DESKTOP, 'zh-CN');
    await signIn(page, adminKey);
    check(await text(page, '[data-testid=nav-upstreams]') === '上级平台', 'nav entry in zh-CN');
    check(await page.evaluate(() => document.documentElement.lang) === 'zh-CN', 'html lang zh-CN');
    await openUpstreams(page);
    await until('city 已注册', async () => await badge(page, 'city') === '已注册');
    await until('province 重试中', async () => await badge(page, 'province') === '重试中');
    const silent = await badge(page, 'silent');
    check(['注册中', '重试中'].includes(silent), `silent is ${silent}`);
    const provinceError = await text(page, '[data-testid=upstream-error-province]');
    check(provinceError.includes('拒绝') && provinceError.includes('密码') && provinceError.includes('自动重试'), `province error: ${provinceError}`);
    const closedError = await until('closed explained', async () => {
      const s = await text(page, '[data-testid=upstream-error-closed]');
      return s.includes('TCP 连接') && s;
    });
    check(closedError.includes('无法') && closedError.includes('防火墙') && /refused/i.test(closedError), `closed error: ${closedError}`);
    check((await text(page, '[data-testid=upstream-address-closed]')).endsWith('(TCP)'), 'closed: its address says TCP');
    const since = await text(page, '[data-testid=upstream-since-city]');
    check(since !== '未注册' && /\d/.test(since), `city registered since ${since}`);
    check(await text(page, '[data-testid=upstream-sessions-city]') === '1', 'city: one session');
    const session = await text(page, `[data-testid=upstream-session-city-${sessionChannel}]`);
    check(session.includes('实时') && /\b\d{10}\b/.test(session), `city's session: ${session}`);
    check(await text(page, '[data-testid=upstream-shared-city]') === '2 个', 'city shares 2');
    await checkLanguage(page, 'zh-CN', 'desktop zh');
    const zh = await explanations(page);
    check(zh[0].title.includes('未应答') && zh[0].hint.includes('防火墙') && zh[0].hint.includes('地址'), `zh not answered: ${JSON.stringify(zh[0])}`);
    check(zh[1].title.includes('拒绝') && zh[1].title.includes('403') && zh[1].hint.includes('密码'), `zh 403: ${JSON.stringify(zh[1])}`);
    check(zh[2].title.includes('401') && zh[2].hint.includes('密码'), `zh second 401: ${JSON.stringify(zh[2])}`);
    check(zh[3].title.includes('3') && zh[3].title.includes('心跳') && zh[3].hint.includes('不再应答'), `zh keepalives: ${JSON.stringify(zh[3])}`);
    check(zh[6].raw === 'something new', 'an unknown error is shown as the engine says it');
    result.zh = { silent, province_error: provinceError, closed_error: closedError, since, session, explained: zh.map((x) => x.title) };
    await shot(page, 'desktop-zh');

    // The list refreshes by itself, one request at a time.
    await until('two refreshes', async () => net.upstreams >= 3);

    // The picker: the camera's channels, city's two checked; choose 1, 2 and 4; save.
    await page.click('[data-testid=pick-open-city]');
    await page.waitForSelector(`[data-testid=pick-city-${ch4}]`, { timeout: 15000 });
    const checked = [];
    for (const ch of channels) checked.push(await page.isChecked(`[data-testid=pick-city-${ch}]`));
    check(JSON.stringify(checked) === JSON.stringify([true, false, true, false]), `city's checkboxes: ${checked}`);
    await page.uncheck(`[data-testid=pick-city-${ch3}]`);
    await page.check(`[data-testid=pick-city-${ch2}]`);
    await page.check(`[data-testid=pick-city-${ch4}]`);
    check(await text(page, '[data-testid=pick-status-city]') === '尚未保存。', 'not saved yet');
    check(await text(page, '[data-testid=pick-count-city]') === '已选 3 个通道', 'three chosen');
    await checkLanguage(page, 'zh-CN', 'desktop zh, picker open');
    await page.click('[data-testid=pick-save-city]');
    result.zh.saved = await until('saved', async () => { const s = await text(page, '[data-testid=pick-status-city]'); return s.startsWith('已保存') && s; });
    await until('city shares 3', async () => await text(page, '[data-testid=upstream-shared-city]') === '3 个');
    check(await page.isChecked(`[data-testid=pick-city-${ch2}]`) && !await page.isChecked(`[data-testid=pick-city-${ch3}]`), 'the picker shows what was saved');
    await shot(page, 'desktop-zh-picker');

    // Left for another view: no more requests for the list (the Streams view asks twice, 3 s
    // apart, meanwhile: longer than the list's refresh).
    await page.click('nav button[data-view=streams]');
    const streamsAtLeave = net.streams;
    await until('streams asked once', async () => net.streams >= streamsAtLeave + 1);
    const upstreamsAtLeave = net.upstreams;
    await until('streams asked again', async () => net.streams >= streamsAtLeave + 2, 10000);
    check(net.upstreams === upstreamsAtLeave, `list asked ${net.upstreams - upstreamsAtLeave} times after the view was left`);
    check(net.maxInFlight === 1, `at most one list request at a time, saw ${net.maxInFlight}`);
    result.zh.requests = net.upstreams;
    await context.close();
    result.steps.push('desktop-zh');
  }

  // 2. Desktop, an English browser: the same in English; province shares all; the switch.
  {
    const { context, page } = await open('desktop-en', DESKTOP, 'en-US');
    await signIn(page, adminKey);
    check(await text(page, '[data-testid=nav-upstreams]') === 'Upstreams', 'nav entry in en');
    await openUpstreams(page);
    await until('city registered', async () => await badge(page, 'city') === 'registered');
    check(await badge(page, 'province') === 'retrying', 'province retrying');
    check(['registering', 'retrying'].includes(await badge(page, 'silent')), 'silent registering or retrying');
    const provinceError = await text(page, '[data-testid=upstream-error-province]');
    check(provinceError.includes('refused') && provinceError.includes('password') && provinceError.includes('tries again'), `province error: ${provinceError}`);
    const closedError = await text(page, '[data-testid=upstream-error-closed]');
    check(closedError.includes('cannot open a TCP connection') && closedError.includes('firewall'), `closed error: ${closedError}`);
    const session = await text(page, `[data-testid=upstream-session-city-${sessionChannel}]`);
    check(session.includes('live'), `city's session: ${session}`);
    check(await text(page, '[data-testid=upstream-shared-city]') === '3', 'city shares 3 (saved in zh-CN)');
    await checkLanguage(page, 'en', 'desktop en');
    const en = await explanations(page);
    check(en[0].title.includes('does not answer') && en[0].hint.includes('firewall'), `en not answered: ${JSON.stringify(en[0])}`);
    check(en[1].title.includes('refused') && en[1].title.includes('403') && en[1].hint.includes('password'), `en 403: ${JSON.stringify(en[1])}`);
    check(en[2].hint.includes('password'), `en second 401: ${JSON.stringify(en[2])}`);
    check(en[3].title.includes('3 keepalives') && en[3].hint.includes('stopped answering'), `en keepalives: ${JSON.stringify(en[3])}`);
    check(en[4].title.includes('does not know us'), `en 404: ${JSON.stringify(en[4])}`);
    check(en[5].hint.includes('MD5'), `en auth scheme: ${JSON.stringify(en[5])}`);
    result.en = { province_error: provinceError, closed_error: closedError, session, explained: en.map((x) => x.title) };

    await page.click('[data-testid=pick-open-province]');
    await page.waitForSelector(`[data-testid=pick-province-${ch1}]`, { timeout: 15000 });
    check(await page.isChecked(`[data-testid=pick-province-${ch1}]`) && !await page.isChecked(`[data-testid=pick-province-${ch2}]`), 'province shares channel 1');
    await page.check('[data-testid=pick-all-province]');
    check(await page.isDisabled(`[data-testid=pick-province-${ch2}]`) && await page.isChecked(`[data-testid=pick-province-${ch2}]`), 'all: every channel checked, none to pick');
    check(await text(page, '[data-testid=pick-count-province]') === 'All channels, present and future', 'all chosen');
    await page.click('[data-testid=pick-save-province]');
    result.en.saved = await until('saved', async () => { const s = await text(page, '[data-testid=pick-status-province]'); return s.startsWith('Saved at') && s; });
    await until('province shares all', async () => (await text(page, '[data-testid=upstream-shared-province]')).startsWith('all ('));
    await checkLanguage(page, 'en', 'desktop en, picker open');
    await shot(page, 'desktop-en');

    // The switch: 中文, remembered; then English again.
    await page.click('[data-testid=lang-zh-CN]');
    await until('switched to zh-CN', async () => await text(page, '[data-testid=nav-upstreams]') === '上级平台' && await badge(page, 'city') === '已注册');
    check(await text(page, '[data-testid=pick-save-province]') === '保存', 'the open picker follows the switch');
    check(await page.evaluate(() => localStorage.getItem('gmv-lang')) === 'zh-CN', 'the choice is kept');
    await checkLanguage(page, 'zh-CN', 'desktop switched to zh-CN');
    await page.click('[data-testid=lang-en]');
    await until('switched to en', async () => await text(page, '[data-testid=nav-upstreams]') === 'Upstreams' && await badge(page, 'city') === 'registered');
    check(await page.evaluate(() => localStorage.getItem('gmv-lang')) === 'en', 'the choice is kept');
    await context.close();
    result.steps.push('desktop-en');
  }

  // 3. Phone, an English browser with zh-CN chosen earlier (the saved choice wins), an
  //    operator key: the list in zh-CN; a save is refused and says why.
  {
    const { context, page } = await open('phone-zh', PHONE, 'en-US', 'zh-CN');
    await signIn(page, operatorKey);
    await openUpstreams(page);
    await until('city 已注册', async () => await badge(page, 'city') === '已注册');
    check(await badge(page, 'province') === '重试中', 'province 重试中');
    await checkLanguage(page, 'zh-CN', 'phone zh');
    await checkNoOverflow(page, 'phone zh');
    await shot(page, 'phone-zh');
    await page.click('[data-testid=pick-open-silent]');
    await page.waitForSelector(`[data-testid=pick-silent-${ch4}]`, { timeout: 15000 });
    check(await page.isChecked(`[data-testid=pick-silent-${ch4}]`), 'silent shares channel 4');
    await page.uncheck(`[data-testid=pick-silent-${ch4}]`);
    await page.click('[data-testid=pick-save-silent]');
    const refused = await until('refused', async () => { const s = await text(page, '[data-testid=pick-status-silent]'); return s.includes('管理员') && s; });
    check(refused.startsWith('未保存'), `operator's save: ${refused}`);
    check(await text(page, '[data-testid=pick-status-silent]') === refused, 'the refusal stays');
    await checkLanguage(page, 'zh-CN', 'phone zh, picker open');
    await checkNoOverflow(page, 'phone zh, picker open');
    await page.locator('[data-testid=upstream-silent]').scrollIntoViewIfNeeded();
    await shot(page, 'phone-zh-picker');
    result.phone_zh = { refused };
    await context.close();
    result.steps.push('phone-zh');
  }

  // 4. Phone, English, admin: silent's unanswered REGISTER explained once it times out; then a
  //    viewer key is told why it sees no upstream (in both languages).
  {
    const { context, page } = await open('phone-en', PHONE, 'en-US');
    await signIn(page, adminKey);
    await openUpstreams(page);
    await until('city registered', async () => await badge(page, 'city') === 'registered');
    await until('silent retrying', async () => await badge(page, 'silent') === 'retrying', SILENT_RETRYING_MS);
    const silentError = await until('silent explained', async () => {
      const s = await text(page, '[data-testid=upstream-error-silent]');
      return s.includes('does not answer') && s;
    });
    check(silentError.includes('firewall') && silentError.includes('address'), `silent error: ${silentError}`);
    check(await page.getAttribute('[data-testid=upstream-error-silent]', 'title') === 'The engine said: REGISTER not answered', 'the engine\'s words in the title');
    await checkLanguage(page, 'en', 'phone en');
    await checkNoOverflow(page, 'phone en');
    await shot(page, 'phone-en');
    result.phone_en = { silent_error: silentError };

    await page.click('#signout');
    await page.waitForSelector('[data-testid=signin]:not([hidden])');
    await signIn(page, viewerKey);
    await openUpstreams(page);
    const note = await until('the viewer told', async () => { const s = await text(page, '[data-testid=upstreams-note]'); return s.includes('operator or admin') && s; });
    check(await page.isVisible('[data-testid=upstreams-note]'), 'the note is shown');
    check(await page.locator('[data-testid=upstream-list] section').count() === 0, 'no upstream shown to a viewer');
    await checkLanguage(page, 'en', 'viewer en');
    await shot(page, 'viewer-en');
    await page.click('[data-testid=lang-zh-CN]');
    const noteZh = await until('the viewer told in zh-CN', async () => { const s = await text(page, '[data-testid=upstreams-note]'); return s.includes('管理员') && s; });
    await checkLanguage(page, 'zh-CN', 'viewer zh');
    await checkNoOverflow(page, 'viewer zh');
    await shot(page, 'viewer-zh');
    result.viewer = { en: note, zh: noteZh };
    await context.close();
    result.steps.push('phone-en');
  }
  check(!result.page_errors, `errors in the page: ${result.page_errors}`);
  result.ok = true;
} catch (err) {
  result.error = String(err && err.stack || err);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
