// Drives the console's Sources view (视频源) in headless Chromium against a gmv with two pull
// proxies made through the API, `cam` (playing an RTSP server's /h264) and `wrongpw` (the same
// server with a wrong password: unauthorized), and RTMP ingest on. At desktop (1440x900) and
// phone (390x844) width, in zh-CN and en: both proxies with their status as labelled badges,
// the wrong password explained and when gmv dials again, no text of the other language, nothing
// wider than the screen; the list refreshed every 2 s (one request at a time, none once the
// view is left). With an operator key: a third proxy `gate` added through the form, the 400 for
// an ftp:// address shown in the operator's language, `gate` changed to on demand, `wrongpw`
// deleted (asked twice), a push address issued and read (full URL, OBS server and key, copied),
// ffmpeg publishing to that very URL, the push listed and played in the wall (its <video>
// advancing), `cam` played from its row. ONVIF cameras: a simulated camera found by a unicast
// probe (its row, name and address), read with a wrong password (the refusal explained, with
// what to check) and the right one (two streams: main 1920x1080, sub 640x360, with PTZ),
// added as a pull proxy under the name prefilled from the camera's (`front-door`), playing;
// its PTZ panel: the right arrow held ~300 ms (a move, then a stop once let go, one after the
// other), the preset Parking called; in English a preset saved and deleted and an unreachable
// camera explained with its address; at phone width the panel and a camera read, nothing wider
// than the screen. A viewer key: the lists, no form, no ONVIF panel or PTZ, and why. Every
// wait is a poll with a deadline. Screenshots go to SHOTS_DIR/console-sources-*.png.
// Usage: node sources_check.mjs CONSOLE_URL OPERATOR_KEY VIEWER_KEY
//   env RTSP_PORT (the RTSP server's port; user admin, password RTSP_PASSWORD), RTMP_PORT,
//   ONVIF_PROBE (the camera's discovery ip:port), ONVIF_DEVICE (its device address; user
//   admin, password RTSP_PASSWORD), ONVIF_NOBODY (a device address nothing serves), SHOTS_DIR;
//   prints JSON {ok, ...} as its last line.
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';

const [url, operatorKey, viewerKey] = process.argv.slice(2);
const rtspPort = process.env.RTSP_PORT;
const rtmpPort = process.env.RTMP_PORT;
const password = process.env.RTSP_PASSWORD;
const onvifProbe = process.env.ONVIF_PROBE;
const onvifDevice = process.env.ONVIF_DEVICE;
const onvifNobody = process.env.ONVIF_NOBODY;
const shots = process.env.SHOTS_DIR || '.';
const DESKTOP = { width: 1440, height: 900 };
const PHONE = { width: 390, height: 844 };
// Latin words the zh-CN view may hold outside data: protocol and product names.
const LATIN_ALLOWED = new Set(['gmv', 'RTSP', 'RTMP', 'TCP', 'UDP', 'OBS', 'ID', 'ffmpeg', 'FLV', 'HLS', 'HTTP', 'GET', 'ZLMediaKit', 'SRS', 'ONVIF', 'IP']);
const CJK = /[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]/;

const result = { ok: false, steps: [] };
let ffmpeg = null;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
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
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: new URL(url).origin });
  if (storedLang) await context.addInitScript((l) => localStorage.setItem('gmv-lang', l), storedLang);
  const page = await context.newPage();
  page.on('console', (m) => console.error(`${name} page:`, m.text()));
  page.on('pageerror', (e) => { console.error(`${name} page error:`, e); result.page_errors = [...(result.page_errors || []), String(e)]; });
  // GET /api/proxies as the page sends them: how many, how many at once; and /api/streams.
  const net = { proxies: 0, inFlight: 0, maxInFlight: 0, streams: 0, ptz: [] };
  const isProxies = (r) => r.method() === 'GET' && new URL(r.url()).pathname === '/api/proxies';
  page.on('request', (r) => {
    if (isProxies(r)) { net.proxies += 1; net.inFlight += 1; net.maxInFlight = Math.max(net.maxInFlight, net.inFlight); }
    if (r.method() === 'GET' && new URL(r.url()).pathname === '/api/streams' && !new URL(r.url()).search) net.streams += 1;
  });
  const done = (r) => { if (isProxies(r)) net.inFlight -= 1; };
  // PTZ moves as the page sends them and as they are answered, in order.
  const isPtz = (r) => r.method() === 'POST' && /^\/api\/proxies\/[^/]+\/ptz$/.test(new URL(r.url()).pathname);
  page.on('request', (r) => { if (isPtz(r)) net.ptz.push({ kind: 'sent', body: r.postData() }); });
  page.on('response', (r) => { if (isPtz(r.request())) net.ptz.push({ kind: 'answered', body: r.request().postData(), status: r.status() }); });
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

async function openSources(page) {
  await page.click('[data-testid=nav-sources]');
  await page.waitForSelector('[data-testid=view-sources]:not([hidden])', { timeout: 5000 });
}

const text = async (page, sel) => ((await page.textContent(sel, { timeout: 5000 })) || '').trim();
const badge = (page, name) => text(page, `[data-testid=proxy-status-${name}]`);
const shot = (page, name) => page.screenshot({ path: `${shots}/console-sources-${name}.png`, fullPage: true });

// The view's own words (and the nav entry's): its text without data (names, addresses, ids,
// the engine's words in <code> or .data), with placeholders (not the example addresses),
// labels of the phone's cards and titles.
async function ownWords(page) {
  return page.evaluate(() => {
    const view = document.querySelector('[data-testid=view-sources]');
    const clone = view.cloneNode(true);
    for (const e of clone.querySelectorAll('code, .data, [hidden]')) e.remove();
    const words = [clone.textContent, document.querySelector('[data-testid=nav-sources]').textContent];
    for (const e of view.querySelectorAll('[placeholder]:not([data-example]), [aria-label], [title]:not([data-raw]), [data-label]')) {
      if (e.closest('[hidden]')) continue;
      words.push(e.getAttribute('placeholder') || '', e.getAttribute('aria-label') || '', e.getAttribute('title') || '', e.dataset.label || '');
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
    wide: [...document.querySelectorAll('[data-testid=view-sources] *')].filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1
      && !e.closest('[hidden]')).map((e) => e.outerHTML.slice(0, 100)).slice(0, 5) }));
  check(o.page <= o.screen && o.wide.length === 0, `${where}: wider than the screen: ${JSON.stringify(o)}`);
}

// The first tile of the wall plays: its <video> advances and decodes pictures.
async function tilePlays(page, what) {
  await page.waitForSelector('[data-testid=view-wall]:not([hidden])', { timeout: 5000 });
  await page.waitForFunction(() => {
    const v = document.querySelector('[data-testid=tile-0] video');
    return v && v.currentTime > 1.5 && v.getVideoPlaybackQuality().totalVideoFrames > 20;
  }, null, { timeout: 30000 }).catch(async (err) => {
    const tile = await page.evaluate(() => {
      const t = document.querySelector('[data-testid=tile-0]');
      const v = t && t.querySelector('video');
      return t && { message: t.querySelector('.message').textContent, stats: t.querySelector('.stats').textContent, time: v.currentTime, ready: v.readyState };
    });
    throw new Error(`${what} did not play in the wall: ${JSON.stringify(tile)} (${err.message})`);
  });
  // A few seconds on (the tile's figures come every 2 s): nothing over the picture.
  await new Promise((r) => setTimeout(r, 4500));
  const tile = await page.evaluate(() => {
    const t = document.querySelector('[data-testid=tile-0]');
    const v = t.querySelector('video');
    return { name: t.querySelector('.name').textContent, stats: t.querySelector('.stats').textContent, message: t.querySelector('.message').textContent,
      time: v.currentTime, frames: v.getVideoPlaybackQuality().totalVideoFrames, width: v.videoWidth, height: v.videoHeight };
  });
  check(tile.message === '' && tile.stats.includes('h264'), `${what}'s tile: ${JSON.stringify(tile)}`);
  return tile;
}

// Both proxies made through the API, with their status in `language`'s words.
async function seesBoth(page, words, where) {
  await until(`${where}: cam ${words.playing}`, async () => await badge(page, 'cam') === words.playing, 20000);
  await until(`${where}: wrongpw ${words.unauthorized}`, async () => await badge(page, 'wrongpw') === words.unauthorized, 20000);
  const error = await until(`${where}: wrongpw explained`, async () => { const s = await text(page, '[data-testid=proxy-error-wrongpw]'); return s.includes('401') && s; });
  const retry = await text(page, '[data-testid=proxy-retry-wrongpw]');
  const frames = Number(await text(page, '[data-testid=proxy-frames-cam]'));
  check(frames > 0, `${where}: cam's frames ${frames}`);
  const codecs = await text(page, '[data-testid=proxy-codecs-cam]');
  check(codecs.includes('h264'), `${where}: cam's codecs ${codecs}`);
  const wrongUrl = await text(page, '[data-testid=proxy-url-wrongpw]');
  check(wrongUrl.includes('admin:***@') && !wrongUrl.includes('wrong@'), `${where}: the password is not shown: ${wrongUrl}`);
  return { error, retry, frames, codecs };
}

// The push listed under `name`: its stream id.
const pushRow = (page, name) => page.evaluate((n) => {
  const row = [...document.querySelectorAll('[data-testid=push-rows] tr')].find((r) => r.dataset.name === n);
  return row ? row.dataset.testid.replace(/^push-/, '') : null;
}, name);

// Issues a push address through the form: what it shows.
async function issuePush(page, stream, days) {
  await page.fill('[data-testid=pub-stream]', stream);
  await page.fill('[data-testid=pub-days]', String(days));
  await page.click('[data-testid=pub-submit]');
  const full = await until('the push address shown', async () => {
    const s = await text(page, '[data-testid=pub-url] code');
    return s.startsWith('rtmp://') && s.includes(`/${stream}?token=`) && s;
  });
  return {
    url: full,
    server: await text(page, '[data-testid=pub-server] code'),
    key: await text(page, '[data-testid=pub-key] code'),
    expires: await text(page, '[data-testid=pub-expires]'),
    stream_id: await text(page, '[data-testid=pub-stream-id] code'),
    status: await text(page, '[data-testid=pub-status]'),
  };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ONVIF: the camera probed at its address (multicast does not reach it here): its row.
async function discover(page) {
  await page.fill('[data-testid=ov-probe]', onvifProbe);
  await page.click('[data-testid=ov-discover]');
  return until('the camera listed', async () => {
    const rows = await page.$$eval('[data-testid=ov-camera-rows] tr', (trs) => trs.map((r) => ({ name: r.dataset.name, testid: r.dataset.testid, text: r.textContent })));
    const i = rows.findIndex((r) => r.name === 'Front Door');
    return i >= 0 && { ...rows[i], index: Number(rows[i].testid.replace('ov-cam-', '')), count: rows.length };
  }, 10000);
}

// Reads the camera in the form as admin with `pw`: the status once it is `want` (ok, error).
async function readCamera(page, pw, want) {
  await page.fill('[data-testid=ov-user]', 'admin');
  await page.fill('[data-testid=ov-password]', pw);
  await page.click('[data-testid=ov-inspect]');
  return until(`the camera read (${want})`, async () => {
    const cls = (await page.getAttribute('[data-testid=ov-inspect-status]', 'class')) || '';
    return cls.split(' ').includes(want) && await text(page, '[data-testid=ov-inspect-status]');
  }, 15000);
}

// The streams read, as listed: token, resolution, PTZ.
const profiles = (page) => page.$$eval('[data-testid=ov-profile-rows] tr', (trs) => trs.map((r) => ({
  token: r.dataset.testid.replace('ov-profile-', ''), res: r.querySelector('td.resolution').textContent.trim(), ptz: r.querySelector('td.has-ptz').textContent.trim() })));

// A preset of front-door's panel by its name: its testid, or null.
const presetId = (page, name) => page.$eval('[data-testid=ov-presets-front-door]', (ul, n) => {
  const li = [...ul.children].find((x) => x.dataset.name === n);
  return li ? li.dataset.testid : null;
}, name);

// front-door's PTZ panel opened, its presets read.
async function openPtz(page) {
  await page.click('[data-testid=src-ptz-front-door]');
  await until('front-door\'s presets', async () => (await text(page, '[data-testid=ov-presets-front-door]')).includes('Parking'));
}

try {
  check(rtspPort && rtmpPort && password && onvifProbe && onvifDevice && onvifNobody, 'RTSP_PORT, RTMP_PORT, RTSP_PASSWORD and ONVIF_*');
  const rtsp = (password, path) => `rtsp://admin:${password}@127.0.0.1:${rtspPort}/${path}`;

  // 1. Desktop, a Chinese browser, an operator key: both proxies; a third added through the
  //    form; the ftp:// refusal explained; a push address issued, published to by ffmpeg,
  //    listed and played in the wall; the refresh while shown only.
  {
    const { context, page, net } = await open('desktop-zh', DESKTOP, 'zh-CN');
    await signIn(page, operatorKey);
    check(await text(page, '[data-testid=nav-sources]') === '视频源', 'nav entry in zh-CN');
    // The catalogue: every key in both languages (the view's own and the whole console's).
    const missing = await page.evaluate(() => {
      const en = Object.keys(I18N.en);
      const zh = Object.keys(I18N['zh-CN']);
      return { zh: en.filter((k) => !(k in I18N['zh-CN'])), en: zh.filter((k) => !(k in I18N.en)), src: en.filter((k) => k.startsWith('src.')).length };
    });
    check(!missing.zh.length && !missing.en.length && missing.src > 100, `catalogue: ${JSON.stringify(missing)}`);
    await openSources(page);
    const zh = await seesBoth(page, { playing: '拉流中', unauthorized: '认证失败' }, 'desktop zh');
    check(zh.error.includes('密码') && zh.error.includes('拒绝'), `zh wrongpw error: ${zh.error}`);
    check(zh.retry.includes('秒') && (zh.retry.includes('后重试') || zh.retry.includes('重新连接')) && zh.retry.includes('加倍'), `zh retry: ${zh.retry}`);
    check(await text(page, '[data-testid=proxy-mode-cam]') === '常驻', 'cam is always');
    check(await page.getAttribute('[data-testid=px-url]', 'placeholder') === 'rtsp://用户名:密码@192.168.1.64:554/Streaming/Channels/101', 'the URL placeholder');
    await checkLanguage(page, 'zh-CN', 'desktop zh');
    result.zh = zh;

    // A third proxy through the form (UDP, always).
    await page.fill('[data-testid=px-name]', 'gate');
    await page.fill('[data-testid=px-url]', rtsp(password, 'h264'));
    await page.selectOption('[data-testid=px-transport]', 'udp');
    await page.selectOption('[data-testid=px-mode]', 'always');
    check(await page.isDisabled('[data-testid=px-idle]'), 'no idle time for an always proxy');
    await page.click('[data-testid=px-submit]');
    result.zh.added = await until('gate added', async () => { const s = await text(page, '[data-testid=px-status]'); return s.includes('已添加') && s; });
    check(await page.inputValue('[data-testid=px-name]') === '', 'the form is empty again');
    await until('gate 拉流中', async () => await badge(page, 'gate') === '拉流中', 20000);
    check(await text(page, '[data-testid=proxy-url-gate]') === `rtsp://admin:***@127.0.0.1:${rtspPort}/h264`, 'gate\'s address, its password hidden');

    // Another scheme: refused (400), explained in Chinese.
    await page.fill('[data-testid=px-name]', 'bad');
    await page.fill('[data-testid=px-url]', 'ftp://127.0.0.1/x');
    await page.click('[data-testid=px-submit]');
    const ftp = await until('the ftp refusal', async () => { const s = await text(page, '[data-testid=px-status]'); return s.includes('ftp://') && s; });
    check(ftp.startsWith('未添加拉流代理') && ftp.includes('rtsp://') && ftp.includes('不能拉取') && ftp.includes('只能拉取'), `zh ftp refusal: ${ftp}`);
    check((await page.getAttribute('[data-testid=px-status]', 'title') || '').includes('is not pulled'), 'the engine\'s words in the title');
    check(await page.locator('[data-testid=proxy-bad]').count() === 0, 'no proxy bad');
    await checkLanguage(page, 'zh-CN', 'desktop zh, refusal shown');
    result.zh.ftp = ftp;
    await page.locator('[data-testid=proxy-form]').scrollIntoViewIfNeeded();
    await shot(page, 'desktop-zh-refused');
    await page.fill('[data-testid=px-name]', '');
    await page.fill('[data-testid=px-url]', '');

    // ONVIF: the camera found, picked, refused with a wrong password (and why), read.
    const ov = {};
    const cam = await discover(page);
    check(cam.count === 1 && cam.text.includes(onvifDevice) && cam.text.includes('SimCam-PTZ'), `the camera's row: ${JSON.stringify(cam)}`);
    ov.found = await text(page, '[data-testid=ov-discover-status]');
    check(ov.found.includes('1 台') && ov.found.includes(onvifProbe), `zh found: ${ov.found}`);
    await page.click(`[data-testid=ov-use-${cam.index}]`);
    check(await page.inputValue('[data-testid=ov-device]') === onvifDevice, 'the camera\'s address in the form');
    ov.refused = await readCamera(page, 'wrong-password', 'error');
    check(ov.refused.startsWith('未能读取摄像机') && ov.refused.includes('摄像机拒绝了用户名或密码') && ov.refused.includes('请检查用户名和密码') && ov.refused.includes('集成协议'), `zh refusal: ${ov.refused}`);
    check(await page.isHidden('[data-testid=ov-report]'), 'nothing read');
    await checkLanguage(page, 'zh-CN', 'desktop zh, camera refused');
    await shot(page, 'desktop-zh-onvif-refused');
    ov.read = await readCamera(page, password, 'ok');
    check(ov.read.includes('2 个码流'), `zh read: ${ov.read}`);
    const ps = await profiles(page);
    check(JSON.stringify(ps) === JSON.stringify([{ token: 'main', res: '1920×1080', ptz: '有' }, { token: 'sub', res: '640×360', ptz: '有' }]), `profiles: ${JSON.stringify(ps)}`);
    check(await page.inputValue('[data-testid=ov-name]') === 'front-door', 'the proxy\'s name from the camera\'s');
    check(await page.inputValue('[data-testid=ov-profile]') === 'main', 'the main stream chosen');
    // Added as a proxy: listed, playing, its camera under its address.
    await page.click('[data-testid=ov-add]');
    ov.added = await until('front-door added', async () => { const s = await text(page, '[data-testid=ov-add-status]'); return s.includes('已从摄像机添加') && s; }, 15000);
    await until('front-door 拉流中', async () => await badge(page, 'front-door') === '拉流中', 20000);
    check(await text(page, '[data-testid=proxy-url-front-door]') === `rtsp://admin:***@127.0.0.1:${rtspPort}/h264`, 'front-door\'s address, its password hidden');
    check((await text(page, '[data-testid=proxy-onvif-front-door]')) === `ONVIF 摄像机 ${new URL(onvifDevice).host} · 码流 main`, 'its camera under its address');
    check(await page.getAttribute('[data-testid=proxy-onvif-front-door] code', 'title') === onvifDevice, 'the whole device address as its title');
    await until('the camera row says so', async () => (await text(page, `[data-testid=ov-added-${cam.index}]`)).includes('front-door'));
    // PTZ: the right arrow held ~300 ms, then let go: a move, then its stop once it is answered.
    await openPtz(page);
    const right = page.locator('[data-testid=ov-ptz-right-front-door]');
    await right.scrollIntoViewIfNeeded();
    const box = await right.boundingBox();
    await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
    await page.mouse.down();
    await sleep(300);
    await page.mouse.up();
    await until('the move and its stop answered', () => net.ptz.filter((x) => x.kind === 'answered').length >= 2, 15000);
    ov.ptz = net.ptz.map((x) => `${x.kind} ${x.body} ${x.status || ''}`.trim());
    check(JSON.stringify(ov.ptz) === JSON.stringify(['sent {"pan":1,"speed":0.5}', 'answered {"pan":1,"speed":0.5} 200', 'sent {}', 'answered {} 200']), `the PTZ requests: ${JSON.stringify(ov.ptz)}`);
    // The preset Parking.
    const parking = await presetId(page, 'Parking');
    await page.click(`[data-testid=${parking.replace('ov-preset-', 'ov-preset-go-')}]`);
    ov.preset = await until('Parking called', async () => { const s = await text(page, '[data-testid=ov-ptz-status-front-door]'); return s.includes('Parking') && s; });
    check(ov.preset.includes('正在转到预置位') && (await page.getAttribute('[data-testid=ov-ptz-status-front-door]', 'class')).includes('ok'), `zh preset: ${ov.preset}`);
    await checkLanguage(page, 'zh-CN', 'desktop zh, ONVIF');
    await shot(page, 'desktop-zh-onvif');
    await page.click('[data-testid=ov-ptz-close-front-door]');
    result.zh.onvif = ov;

    // A push address: read from the page, copied, given to ffmpeg.
    const push = await issuePush(page, 'live/door', 7);
    check(push.url === `${push.server}/${push.key}`, `the full address is server + key: ${JSON.stringify(push)}`);
    check(push.url.startsWith(`rtmp://127.0.0.1:${rtmpPort}/live/door?token=`), `push url ${push.url}`);
    check(push.status.includes('live/door') && push.status.includes('7 天'), `push status: ${push.status}`);
    check(/\d/.test(push.expires), `expires ${push.expires}`);
    await page.click('[data-testid=copy-pub-url]');
    push.copied = await until('copied', async () => { const s = await text(page, '[data-testid=copy-pub-url]'); return s !== '复制' && s; }, 3000);
    push.clipboard = await page.evaluate(() => navigator.clipboard.readText()).catch((e) => `(${e})`);
    check(push.clipboard === push.url, `the clipboard has the address: ${push.clipboard}`);
    result.push = push;
    ffmpeg = spawn('ffmpeg', ['-v', 'error', '-re', '-f', 'lavfi', '-i', 'testsrc=size=320x240:rate=25', '-f', 'lavfi', '-i', 'sine=frequency=1000:sample_rate=16000',
      '-t', '600', '-c:v', 'libx264', '-preset', 'ultrafast', '-tune', 'zerolatency', '-pix_fmt', 'yuv420p', '-g', '25', '-bf', '0',
      '-c:a', 'aac', '-ar', '16000', '-ac', '1', '-f', 'flv', push.url], { stdio: ['ignore', 'ignore', 'pipe'] });
    ffmpeg.stderr.on('data', (d) => console.error('ffmpeg:', String(d).trim()));
    ffmpeg.on('exit', (code) => { result.ffmpeg_exit = code; });
    const pushId = await until('the push listed', () => pushRow(page, 'live/door'), 20000);
    check(pushId === push.stream_id, `the push's stream id ${pushId} is the one issued ${push.stream_id}`);
    await until('its video codec', async () => (await text(page, `[data-testid=push-${pushId}]`)).includes('h264'));
    await until('the counters', async () => Number(await text(page, '[data-testid=rtmp-published]')) >= 1 && Number(await text(page, '[data-testid=rtmp-publishing]')) >= 1);
    result.zh.counters = await text(page, '[data-testid=rtmp-counters]');
    check(result.zh.counters.includes('正在推流') && result.zh.counters.includes('令牌无效'), `zh counters: ${result.zh.counters}`);
    await checkLanguage(page, 'zh-CN', 'desktop zh, push listed');
    await page.evaluate(() => window.scrollTo(0, 0));
    await shot(page, 'desktop-zh');

    // The list refreshes by itself every 2 s, one request at a time.
    const before = net.proxies;
    await until('two refreshes', async () => net.proxies >= before + 2, 8000);

    // The push plays in the wall.
    await page.click(`[data-testid=play-push-${pushId}]`);
    result.zh.push_tile = await tilePlays(page, 'the RTMP push');
    check(result.zh.push_tile.name === 'live/door', `the tile names the push: ${result.zh.push_tile.name}`);
    await shot(page, 'desktop-zh-wall');

    // Left for another view (the wall): no more requests for the list.
    const atLeave = net.proxies;
    await new Promise((r) => setTimeout(r, 5000));
    check(net.proxies === atLeave, `list asked ${net.proxies - atLeave} times after the view was left`);
    check(net.maxInFlight === 1, `at most one list request at a time, saw ${net.maxInFlight}`);
    result.zh.requests = net.proxies;
    await context.close();
    result.steps.push('desktop-zh');
  }

  // 2. Desktop, an English browser, an operator: both proxies (and gate, the push); gate
  //    changed to on demand; an address still holding *** refused before it is sent; the switch.
  {
    const { context, page } = await open('desktop-en', DESKTOP, 'en-US');
    await signIn(page, operatorKey);
    check(await text(page, '[data-testid=nav-sources]') === 'Sources', 'nav entry in en');
    await openSources(page);
    const en = await seesBoth(page, { playing: 'playing', unauthorized: 'unauthorized' }, 'desktop en');
    check(en.error.includes('refused the user name or password') && en.error.includes('password'), `en wrongpw error: ${en.error}`);
    check((en.retry.includes('Next try in about') || en.retry.includes('Dialling again now')) && en.retry.includes('doubling up to 30 s'), `en retry: ${en.retry}`);
    await until('gate playing', async () => await badge(page, 'gate') === 'playing');
    check(await text(page, '[data-testid=proxies-count]') === '4 of at most 1000', 'four proxies');
    await until('the push listed', () => pushRow(page, 'live/door'));
    await checkLanguage(page, 'en', 'desktop en');
    result.en = en;
    // The engine's refusals as the page words them (this engine's and a later one's scheme list).
    en.refusals = await page.evaluate(() => [
      'url scheme ftp:// is not pulled (rtsp:// is; RTMP sources push to rtmp.listen)',
      'url scheme ftp:// is not pulled (rtsp://, rtmp://, http://….flv and http://….m3u8 are; TLS sources not yet)',
      'name is letters, digits, \'_\' and \'-\' (at most 64)',
      'idle_s is 1..=3600',
      'url has no host',
      'something new',
    ].map((m) => { const x = proxyRefusal(m); return x && x.map((n) => (typeof n === 'string' ? n : n.textContent)).join(''); }));
    const [old, later, badName, idle, noHost, other] = en.refusals;
    check(old === 'gmv cannot pull ftp:// addresses; it pulls rtsp://. An encoder that speaks RTMP pushes to gmv instead: get it a push address under RTMP pushes.', `old: ${old}`);
    check(later.includes('rtmp://') && later.includes('http://….m3u8') && !later.includes('push address'), `later: ${later}`);
    check(badName.includes('letters, digits') && idle.includes('1 to 3600') && noHost.includes('no camera') && other === null, `refusals: ${en.refusals}`);
    // The HTTP-FLV/HLS and RTMP clients' failures as the page words them.
    en.pullErrors = await page.evaluate(() => [
      'HTTP 401 unauthorized (user or password)',
      'segment 12: HTTP 404 Not Found',
      'connect 10.0.0.9:1935: Connection refused (os error 111)',
    ].map((m) => { const x = explainPullError(m); const words = (v) => (Array.isArray(v) ? v.map((n) => (typeof n === 'string' ? n : n.textContent)).join('') : String(v)); return `${words(x.title)} | ${words(x.hint)}`; }));
    const [http401, seg404, rtmpRefused] = en.pullErrors;
    check(http401.includes('refused the user name or password') && seg404.includes('/live/stream.flv') && rtmpRefused.includes('connection refused') && rtmpRefused.includes('1935'), `pull errors: ${en.pullErrors}`);

    // An address whose password is still *** is not sent.
    await page.click('[data-testid=src-edit-wrongpw]');
    check((await page.inputValue('[data-testid=px-url]')).includes(':***@'), 'the form shows the redacted address');
    await page.fill('[data-testid=px-url]', `rtsp://admin:***@127.0.0.1:${rtspPort}/h264`);
    await page.click('[data-testid=px-submit]');
    result.en.retype = await until('*** refused', async () => { const s = await text(page, '[data-testid=px-status]'); return s.includes('***') && s; });
    await page.click('[data-testid=px-cancel]');

    // gate: on demand, closed 15 s after its last viewer.
    await page.click('[data-testid=src-edit-gate]');
    check((await text(page, '[data-testid=px-title]')).includes('gate'), 'the form edits gate');
    check(await page.inputValue('[data-testid=px-name]') === 'gate' && await page.getAttribute('[data-testid=px-name]', 'readonly') !== null, 'its name stays');
    check(await page.inputValue('[data-testid=px-transport]') === 'udp', 'its transport shown');
    await page.selectOption('[data-testid=px-mode]', 'on_demand');
    check(!await page.isDisabled('[data-testid=px-idle]'), 'an idle time for on demand');
    await page.fill('[data-testid=px-idle]', '15');
    await page.click('[data-testid=px-submit]');
    result.en.saved = await until('gate saved', async () => { const s = await text(page, '[data-testid=px-status]'); return s.includes('saved') && s; });
    await until('gate on demand', async () => await text(page, '[data-testid=proxy-mode-gate]') === 'on demand (closed 15 s after the last viewer)');
    await until('gate idle', async () => await badge(page, 'gate') === 'idle', 20000);
    check(await badge(page, 'cam') === 'playing', 'cam goes on');
    await checkLanguage(page, 'en', 'desktop en, gate changed');
    await page.evaluate(() => window.scrollTo(0, 0));
    await shot(page, 'desktop-en');

    // ONVIF in English: a camera nobody serves, explained with its address and what to check;
    // the other failures as the page words them; a preset saved, then deleted (asked twice).
    const ov = {};
    await page.fill('[data-testid=ov-device]', onvifNobody);
    ov.unreachable = await readCamera(page, password, 'error');
    check(ov.unreachable.startsWith('The camera was not read') && ov.unreachable.includes(`nothing accepts connections at ${new URL(onvifNobody).host} (connection refused)`)
      && ov.unreachable.includes('port 80') && ov.unreachable.includes('ONVIF is enabled'), `en unreachable: ${ov.unreachable}`);
    ov.explained = await page.evaluate(() => [
      [new ApiError(502, 'camera_error', 'the camera answered with an error: SOAP fault env:Sender ter:InvalidArgVal: no such thing'), 'read'],
      [new ApiError(503, 'busy', '8 ONVIF conversations are under way; try again'), 'add'],
      [new ApiError(422, 'no_profile', 'the camera has no such profile with a stream address'), 'add'],
      [new ApiError(502, 'camera_unauthorized', 'the camera refused the user name or password'), 'ptz'],
      [new ApiError(409, 'exists', 'a proxy with this name exists'), 'add'],
    ].map(([e, what]) => {
      const x = onvifProblem(e, what, { address: '10.0.0.9:80', proxy: what === 'ptz' ? 'door' : undefined, name: 'door' });
      const words = (v) => (v || []).map((n) => (typeof n === 'string' ? n : n.textContent)).join('');
      return `${words(x.title)} | ${words(x.hint)}`;
    }));
    const [fault, busy, noProfile, changed, exists] = ov.explained;
    check(fault.includes('answered with an error: SOAP fault env:Sender ter:InvalidArgVal: no such thing') && fault.includes('/onvif/device_service'), `fault: ${fault}`);
    check(busy.includes('8 cameras at once') && noProfile.includes('no stream with an address') && noProfile.includes('choose another stream'), `busy, no profile: ${busy} ${noProfile}`);
    check(changed.startsWith('The camera was not moved') && changed.includes('password has changed'), `changed password: ${changed}`);
    check(exists.includes('a pull proxy named door exists already'), `exists: ${exists}`);
    await openPtz(page);
    await page.fill('[data-testid=ov-preset-name-front-door]', 'Lobby');
    await page.click('[data-testid=ov-preset-save-front-door]');
    ov.saved = await until('Lobby saved and listed', async () => {
      const s = await text(page, '[data-testid=ov-ptz-status-front-door]');
      return s.includes('Preset Lobby saved') && await presetId(page, 'Lobby') && s;
    });
    const del = (await presetId(page, 'Lobby')).replace('ov-preset-', 'ov-preset-del-');
    await page.click(`[data-testid=${del}]`);
    check(await text(page, `[data-testid=${del}]`) === 'Click again to delete', 'the first click asks');
    await checkLanguage(page, 'en', 'desktop en, ONVIF');
    await shot(page, 'desktop-en-onvif');
    await page.click(`[data-testid=${del}]`);
    ov.deleted = await until('Lobby deleted', async () => {
      const s = await text(page, '[data-testid=ov-ptz-status-front-door]');
      return s.includes('Preset Lobby deleted') && !await presetId(page, 'Lobby') && s;
    });
    result.en.onvif = ov;

    // The switch: 中文, then English again.
    await page.click('[data-testid=lang-zh-CN]');
    await until('switched to zh-CN', async () => await text(page, '[data-testid=nav-sources]') === '视频源' && await badge(page, 'gate') === '待机');
    check((await text(page, '[data-testid=proxy-mode-gate]')).startsWith('按需'), 'the rows follow the switch');
    check((await text(page, '[data-testid=ov-inspect-status]')).includes('连接被拒绝') && (await text(page, '[data-testid=ptz-panel-front-door]')).includes('预置位'), 'the ONVIF panel follows the switch');
    await checkLanguage(page, 'zh-CN', 'desktop switched to zh-CN');
    await page.click('[data-testid=lang-en]');
    await until('switched to en', async () => await text(page, '[data-testid=nav-sources]') === 'Sources' && await badge(page, 'cam') === 'playing');
    await context.close();
    result.steps.push('desktop-en');
  }

  // 3. Phone, an English browser with zh-CN chosen earlier, an operator: the lists as cards,
  //    nothing wider than the screen; cam played from its card.
  {
    const { context, page } = await open('phone-zh', PHONE, 'en-US', 'zh-CN');
    await signIn(page, operatorKey);
    await openSources(page);
    const zh = await seesBoth(page, { playing: '拉流中', unauthorized: '认证失败' }, 'phone zh');
    await until('gate 待机', async () => await badge(page, 'gate') === '待机');
    await until('the push listed', () => pushRow(page, 'live/door'));
    await checkLanguage(page, 'zh-CN', 'phone zh');
    await checkNoOverflow(page, 'phone zh');
    check(await page.isHidden('[data-testid=proxies-table] thead'), 'cards: no table head');
    await shot(page, 'phone-zh');
    await until('front-door 拉流中', async () => await badge(page, 'front-door') === '拉流中');
    await openPtz(page);
    await checkLanguage(page, 'zh-CN', 'phone zh, PTZ');
    await checkNoOverflow(page, 'phone zh, PTZ');
    await page.locator('[data-testid=ptz-panel-front-door]').scrollIntoViewIfNeeded();
    await shot(page, 'phone-zh-ptz');
    await page.click('[data-testid=src-play-cam]');
    zh.cam_tile = await tilePlays(page, 'cam');
    check(zh.cam_tile.name === 'proxy/cam', `the tile names cam: ${zh.cam_tile.name}`);
    result.phone_zh = zh;
    await context.close();
    result.steps.push('phone-zh');
  }

  // 4. Phone, English, an operator: both proxies; wrongpw deleted (the first click asks); a
  //    push address at phone width.
  {
    const { context, page } = await open('phone-en', PHONE, 'en-US');
    await signIn(page, operatorKey);
    await openSources(page);
    const en = await seesBoth(page, { playing: 'playing', unauthorized: 'unauthorized' }, 'phone en');
    await checkLanguage(page, 'en', 'phone en');
    await checkNoOverflow(page, 'phone en');
    await shot(page, 'phone-en');
    await page.click('[data-testid=src-del-wrongpw]');
    check(await text(page, '[data-testid=src-del-wrongpw]') === 'Click again to delete', 'the first click asks');
    check(await page.locator('[data-testid=proxy-wrongpw]').count() === 1, 'not deleted yet');
    await page.click('[data-testid=src-del-wrongpw]');
    en.deleted = await until('wrongpw deleted', async () => { const s = await text(page, '[data-testid=proxies-status]'); return s.includes('deleted') && s; });
    await until('its row gone', async () => await page.locator('[data-testid=proxy-wrongpw]').count() === 0);
    en.push = await issuePush(page, 'live/phone', 30);
    check(en.push.url.startsWith(`rtmp://127.0.0.1:${rtmpPort}/live/phone?token=`), `phone push url ${en.push.url}`);
    await checkLanguage(page, 'en', 'phone en, push address shown');
    await checkNoOverflow(page, 'phone en, push address shown');
    await page.locator('[data-testid=pub-result]').scrollIntoViewIfNeeded();
    await shot(page, 'phone-en-push');
    const cam = await discover(page);
    await until('the camera row says it is added', async () => (await text(page, `[data-testid=ov-added-${cam.index}]`)).includes('added as front-door'));
    await page.click(`[data-testid=ov-use-${cam.index}]`);
    en.onvif = await readCamera(page, password, 'ok');
    check(en.onvif.includes('2 streams'), `en read: ${en.onvif}`);
    check(await page.inputValue('[data-testid=ov-name]') === 'front-door-2', 'a free name: front-door is taken');
    await page.selectOption('[data-testid=ov-profile]', 'sub');
    check(await page.inputValue('[data-testid=ov-name]') === 'front-door-sub', 'the sub stream\'s name');
    await checkLanguage(page, 'en', 'phone en, camera read');
    await checkNoOverflow(page, 'phone en, camera read');
    await page.locator('[data-testid=onvif-section]').scrollIntoViewIfNeeded();
    await shot(page, 'phone-en-onvif');
    result.phone_en = en;
    await context.close();
    result.steps.push('phone-en');
  }

  // 5. A viewer: the lists and Play, no form, no change buttons, and why (both languages).
  {
    const { context, page } = await open('viewer', DESKTOP, 'en-US');
    await signIn(page, viewerKey);
    await openSources(page);
    await until('cam playing', async () => await badge(page, 'cam') === 'playing');
    const note = await until('the viewer told', async () => {
      const s = (await page.isVisible('[data-testid=sources-role]')) && await text(page, '[data-testid=sources-role]');
      return s && s.includes('operator or admin') && s;
    });
    check(!await page.isVisible('[data-testid=proxy-form]') && !await page.isVisible('[data-testid=push-form]'), 'no forms for a viewer');
    check(!await page.isVisible('[data-testid=src-edit-cam]') && !await page.isVisible('[data-testid=src-del-cam]'), 'no change buttons');
    check(await page.isVisible('[data-testid=src-play-cam]'), 'Play is there');
    await until('front-door listed', async () => await badge(page, 'front-door') === 'playing');
    check(!await page.isVisible('[data-testid=onvif-section]') && !await page.isVisible('[data-testid=src-ptz-front-door]'), 'no ONVIF panel, no PTZ for a viewer');
    await until('the push listed', () => pushRow(page, 'live/door'));
    await checkLanguage(page, 'en', 'viewer en');
    await shot(page, 'viewer-en');
    await page.click('[data-testid=lang-zh-CN]');
    const noteZh = await until('the viewer told in zh-CN', async () => { const s = await text(page, '[data-testid=sources-role]'); return s.includes('操作员') && s; });
    await checkLanguage(page, 'zh-CN', 'viewer zh');
    await page.setViewportSize(PHONE);
    await checkNoOverflow(page, 'viewer zh, phone width');
    await shot(page, 'viewer-zh');
    result.viewer = { en: note, zh: noteZh };
    await context.close();
    result.steps.push('viewer');
  }
  check(!result.page_errors, `errors in the page: ${result.page_errors}`);
  result.ok = true;
} catch (err) {
  result.error = String(err && err.stack || err);
  try {
    const pages = browser.contexts().flatMap((c) => c.pages());
    if (pages.length) await pages[pages.length - 1].screenshot({ path: `${shots}/console-sources-failed.png`, fullPage: true });
  } catch (_) { /* no page */ }
} finally {
  if (ffmpeg) ffmpeg.kill('SIGKILL');
  await browser.close();
}
console.log(JSON.stringify(result));
