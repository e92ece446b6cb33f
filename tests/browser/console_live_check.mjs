// The Live view (issue 28) in headless Chromium, driven by tests/console_live.rs: the device
// tree beside the wall (names first, ids second), two channels dragged onto tiles, a view
// switch that restarts nothing (no new play, WHEP or FLV request; the same pictures go on), the
// one-large-and-five layout, a click that plays in the selected tile and moves the selection on,
// a reload that brings the layout and its channels back, and a device going offline (the
// script prints OFFLINE_NOW, the test unregisters it) turning its row and its channels' dots
// off without a reload. Then at 390×844 in Chinese: the tree is a drawer over the wall, a tap
// plays and closes it, nothing is wider than the screen. Screenshots go to SHOTS_DIR.
// Usage: node console_live_check.mjs CONSOLE_URL ADMIN_KEY DEVICE_ID CH_A CH_B CH_C CH_D
// Prints OFFLINE_NOW when it waits for the device to go, and JSON {ok, ...} as its last line.
import { chromium } from 'playwright-core';
import * as readline from 'node:readline';

const [url, key, device, chA, chB, chC, chD] = process.argv.slice(2);
const shots = process.env.SHOTS_DIR || '.';
const result = { ok: false, steps: [] };
const finish = async (browser) => {
  console.log(JSON.stringify(result));
  if (browser) await browser.close().catch(() => {});
  process.exit(result.ok ? 0 : 1);
};
// Whatever happens, the script ends (and says where it was).
setTimeout(() => { result.error = `timed out after ${result.steps.join(', ')}`; console.log(JSON.stringify(result)); process.exit(1); }, 240000).unref();

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
});

// The requests that start, carry or end a tile's picture: a channel's play (the INVITE), a
// WHEP offer or its session's end, an FLV or HLS request, an FLV WebSocket.
function countPlays(page) {
  const seen = [];
  page.on('request', (r) => {
    const u = new URL(r.url());
    const whep = /\/whep/.test(u.pathname) && (r.method() === 'POST' || r.method() === 'DELETE');
    if (whep || (r.method() === 'POST' && /\/play$/.test(u.pathname)) || /^\/(flv|hls|fmp4)\//.test(u.pathname)) seen.push(`${r.method()} ${u.pathname}`);
  });
  page.on('websocket', (ws) => seen.push(`WS ${new URL(ws.url()).pathname}`));
  return seen;
}

// Frames each tile's video has decoded, and its element (a replaced element would start again).
const tileFrames = (page) => page.evaluate(() => [...document.querySelectorAll('[data-testid=wall] .tile')].map((t) => {
  const v = t.querySelector('video');
  if (!v.dataset.mark) v.dataset.mark = String(Math.random());
  return { frames: v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().totalVideoFrames : 0, time: v.currentTime, mark: v.dataset.mark, stream: t.dataset.streamId || '', name: t.querySelector('.name').textContent };
}));
async function waitPlaying(page, indexes, timeout = 20000) {
  await page.waitForFunction((ix) => ix.every((i) => {
    const v = document.querySelector(`[data-testid=tile-${i}] video`);
    return v && v.currentTime > 0.5 && v.getVideoPlaybackQuality().totalVideoFrames > 5;
  }), indexes, { timeout, polling: 200 });
}
// Whether the page is wider than the window (measured in the page).
const width = (page) => page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, inner: window.innerWidth }));
// Signed in with the admin key, the device listed.
async function signIn(page) {
  await page.goto(url);
  await page.fill('[data-testid=key]', key);
  await page.click('[data-testid=signin-button]');
  await page.waitForSelector(`[data-testid=device-${device}]`, { timeout: 15000 });
}
const lines = readline.createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once('line', resolve));

try {
  // ---- desktop, English ----
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, locale: 'en-US' });
  const page = await context.newPage();
  page.on('console', (m) => console.error('page:', m.text()));
  const plays = countPlays(page);
  await signIn(page);
  await page.click('nav button[data-view=wall]');
  // The tree is beside the wall, its rows drawn there.
  await page.waitForSelector(`[data-testid=live-tree] [data-testid=channel-${chA}]`, { timeout: 15000 });
  result.device_row = await page.textContent(`[data-testid=live-tree] [data-testid=device-${device}]`);
  result.tree_beside_wall = await page.evaluate(() => {
    const tree = document.querySelector('[data-testid=live-tree]').getBoundingClientRect();
    const wall = document.querySelector('[data-testid=wall]').getBoundingClientRect();
    return { tree_right: tree.right, wall_left: wall.left, same_row: tree.top < wall.bottom && wall.top < tree.bottom };
  });
  result.dots_on = await page.evaluate(([d, c]) => ({
    device: document.querySelector(`[data-testid=device-state-${d}]`).classList.contains('on'),
    channel: document.querySelector(`[data-testid=channel-state-${c}]`).classList.contains('on'),
  }), [device, chA]);
  result.steps.push('tree');

  // Two channels dragged: A onto tile 1 (a click would have taken the first free tile, 0),
  // then B onto tile 0.
  await page.dragAndDrop(`[data-testid=channel-${chA}]`, '[data-testid=tile-1]');
  await page.dragAndDrop(`[data-testid=channel-${chB}]`, '[data-testid=tile-0]');
  await waitPlaying(page, [0, 1]);
  result.dragged = (await tileFrames(page)).map((t) => t.name);
  await page.screenshot({ path: `${shots}/live-desktop-dragged.png` });
  result.steps.push('dragged');

  // To Events and back: nothing asked again, the same videos went on.
  const before = await tileFrames(page);
  const playsBefore = plays.length;
  await page.click('nav button[data-view=events]');
  await page.waitForTimeout(1500); // a look at the events
  await page.click('nav button[data-view=wall]');
  await page.waitForFunction((f) => [0, 1].every((i) => document.querySelector(`[data-testid=tile-${i}] video`).getVideoPlaybackQuality().totalVideoFrames > f[i].frames + 10), before, { timeout: 10000, polling: 200 });
  const after = await tileFrames(page);
  result.switch = {
    requests_before: plays.slice(0, playsBefore),
    new_requests: plays.slice(playsBefore),
    same_video: [0, 1].map((i) => after[i].mark === before[i].mark && after[i].stream === before[i].stream && before[i].stream !== ''),
    frames_before: [0, 1].map((i) => before[i].frames),
    frames_after: [0, 1].map((i) => after[i].frames),
    time_after: [0, 1].map((i) => after[i].time),
  };
  result.steps.push('view switch');

  // One large tile and five: the large one is about twice as wide; the playing tiles go on.
  await page.selectOption('[data-testid=layout]', '6');
  result.six = await page.evaluate(() => {
    const w = (i) => document.querySelector(`[data-testid=tile-${i}]`).getBoundingClientRect().width;
    return { tiles: document.querySelectorAll('[data-testid=wall] .tile').length, large: w(0), small: w(1) };
  });
  // A click in the tree: the selected (empty) tile 3 plays it, and the selection moves to tile 4.
  await page.click('[data-testid=tile-3]');
  await page.click(`[data-testid=live-tree] [data-testid=channel-${chC}] .ch-text`);
  await waitPlaying(page, [0, 1, 3]);
  result.clicked = {
    names: (await tileFrames(page)).map((t) => t.name),
    selected: await page.evaluate(() => [...document.querySelectorAll('[data-testid=wall] .tile')].findIndex((t) => t.classList.contains('selected'))),
  };
  result.plays_before_reload = plays.filter((p) => p.endsWith('/play')).length;
  await page.screenshot({ path: `${shots}/live-desktop.png` });
  result.steps.push('layout 6 and click');

  // A reload: the layout and its three channels come back and play.
  await page.reload();
  await page.waitForSelector(`[data-testid=device-${device}]`, { timeout: 15000 });
  await page.click('nav button[data-view=wall]');
  await waitPlaying(page, [0, 1, 3]);
  result.reloaded = { layout: await page.inputValue('[data-testid=layout]'), names: (await tileFrames(page)).map((t) => t.name) };
  result.steps.push('reload');

  // ---- a phone, Chinese ----
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, locale: 'zh-CN', isMobile: true, hasTouch: true });
  const p = await phone.newPage();
  p.on('console', (m) => console.error('phone:', m.text()));
  await signIn(p);
  await p.click('nav button[data-view=wall]');
  await p.waitForTimeout(500);
  result.phone = {
    toggle: (await p.textContent('[data-testid=live-tree-toggle]')).trim(),
    hint: (await p.textContent('#view-wall .toolbar .hint')).trim(),
    tree_shown_at_first: await p.isVisible('[data-testid=live-tree]'),
    closed: await width(p),
  };
  await p.screenshot({ path: `${shots}/live-phone-wall.png` });
  await p.tap('[data-testid=live-tree-toggle]');
  await p.waitForSelector(`[data-testid=live-tree] [data-testid=channel-${chD}]`, { state: 'visible', timeout: 10000 });
  result.phone.open = await width(p);
  result.phone.drawer = await p.evaluate(() => {
    const r = document.querySelector('[data-testid=live-tree]').getBoundingClientRect();
    return { left: r.left, right: r.right };
  });
  await p.screenshot({ path: `${shots}/live-phone-drawer.png` });
  await p.tap(`[data-testid=live-tree] [data-testid=channel-${chD}] .ch-text`);
  await p.waitForSelector('[data-testid=live-tree]', { state: 'hidden', timeout: 5000 });
  await waitPlaying(p, [0]);
  result.phone.tile0 = await p.textContent('[data-testid=tile-0] .name');
  result.phone.after = await width(p);
  result.steps.push('phone');
  await phone.close();

  // ---- every view in Chinese (desktop): no English word of the console's own ----
  const zh = await browser.newContext({ viewport: { width: 1440, height: 900 }, locale: 'zh-CN' });
  const z = await zh.newPage();
  z.on('console', (m) => console.error('zh:', m.text()));
  await signIn(z);
  await z.waitForSelector('[data-testid=nav-users]:not([hidden])', { timeout: 5000 });
  const views = await z.evaluate(() => [...document.querySelectorAll('nav button[data-view]')].filter((b) => !b.hidden).map((b) => b.dataset.view));
  result.zh_views = {};
  for (const view of views) {
    await z.click(`nav button[data-view=${view}]`);
    await z.waitForTimeout(1000);
    const words = await z.evaluate((v) => {
      // The view's own words: its text without data (ids, names, the engine's and devices'
      // words in <code> or .data, the choices of the selects), with placeholders and titles.
      const view = document.querySelector(`#view-${v}`);
      const clone = view.cloneNode(true);
      for (const e of clone.querySelectorAll('code, .data, select, [hidden], .muted.info')) e.remove();
      const out = [clone.textContent, document.querySelector(`nav button[data-view=${v}]`).textContent];
      for (const e of view.querySelectorAll('[placeholder], [title]')) {
        if (e.closest('[hidden]')) continue;
        // An example address or name (data-example) is data too.
        if (!e.hasAttribute('data-example')) out.push(e.getAttribute('placeholder') || '');
        out.push(e.getAttribute('title') || '');
      }
      return out.join('\n');
    }, view);
    result.zh_views[view] = { latin: [...new Set((words.match(/[A-Za-z]{2,}/g) || []))], chinese: /[\u3400-\u9fff]/.test(words) };
    await z.screenshot({ path: `${shots}/live-zh-${view}.png` });
  }
  await zh.close();
  result.steps.push('zh views');

  // The device goes offline: its dot and its channels' dots follow, with no reload.
  console.log('OFFLINE_NOW');
  await nextLine();
  await page.waitForFunction(([d, c]) => {
    const dev = document.querySelector(`[data-testid=device-state-${d}]`);
    const ch = document.querySelector(`[data-testid=channel-state-${c}]`);
    return dev && ch && !dev.classList.contains('on') && !ch.classList.contains('on');
  }, [device, chA], { timeout: 15000, polling: 100 });
  result.offline_row = await page.textContent(`[data-testid=live-tree] [data-testid=device-${device}]`);
  result.offline_title = await page.getAttribute(`[data-testid=device-state-${device}]`, 'title');
  result.steps.push('offline');

  await context.close();
  result.ok = true;
} catch (err) {
  result.error = String(err && err.stack || err);
}
await finish(browser);
