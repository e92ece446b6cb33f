// Drives the gmv console in headless Chromium: sign in, find the simulated device in the tree,
// play four channels in a 4-tile wall (each <video> must advance and decode frames), hold PTZ
// right, then wait for an alarm in the event log. Screenshots go to SHOTS_DIR.
// Usage: node console_check.mjs CONSOLE_URL API_KEY DEVICE_ID CHANNEL_ID... ; prints JSON {ok, ...}
import { chromium } from 'playwright-core';

const [url, key, device, ...channels] = process.argv.slice(2);
const shots = process.env.SHOTS_DIR || '.';
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
});
const result = { ok: false, steps: [] };
try {
  // English (the strings checked below are the English ones), whatever the machine's language.
  const page = await browser.newPage({ viewport: { width: 1280, height: 720 }, locale: 'en-US' });
  page.on('console', (m) => console.error('page:', m.text()));
  await page.goto(url);
  // A wrong key is refused with a readable message.
  await page.fill('[data-testid=key]', 'not-a-key');
  await page.click('[data-testid=signin-button]');
  await page.waitForFunction(() => document.querySelector('[data-testid=signin-error]').textContent.length > 0, null, { timeout: 10000 });
  result.wrong_key = await page.textContent('[data-testid=signin-error]');
  await page.fill('[data-testid=key]', key);
  await page.click('[data-testid=signin-button]');
  await page.waitForSelector(`[data-testid=device-${device}]`, { timeout: 15000 });
  // Thousands of devices: the count says so, the page holds only the rows in view.
  await page.waitForFunction((n) => document.querySelector('#device-count').textContent.includes(`of ${n} devices`), Number(process.env.DEVICES_TOTAL || 1), { timeout: 15000 });
  result.rows_in_page = await page.evaluate(() => document.querySelectorAll('#device-tree .row').length);
  await page.click(`[data-testid=expand-${device}]`);
  for (const ch of channels) await page.waitForSelector(`[data-testid=channel-${ch}]`, { timeout: 15000 });
  await page.screenshot({ path: `${shots}/console-devices.png` });
  result.steps.push('devices');

  // A 9-tile wall: each channel twice and the first a third time (more than the six HTTP/1.1
  // connections a browser opens to one origin: the tiles play over WebSockets).
  const TILES = 9;
  await page.click('nav button[data-view=wall]');
  await page.selectOption('[data-testid=layout]', String(TILES));
  await page.click('nav button[data-view=devices]');
  for (let i = 0; i < TILES; i++) {
    const ch = channels[i % channels.length];
    await page.click(`[data-testid=play-${ch}]`);
  }
  await page.click('nav button[data-view=wall]');
  await page.waitForFunction((n) => {
    const videos = [...document.querySelectorAll('[data-testid=wall] video')].slice(0, n);
    return videos.length === n && videos.every((v) => v.currentTime > 1.5 && v.getVideoPlaybackQuality().totalVideoFrames > 20);
  }, TILES, { timeout: 40000, polling: 250 });
  result.tiles = await page.evaluate((n) => [...document.querySelectorAll('[data-testid=wall] video')].slice(0, n).map((v) => ({
    time: v.currentTime, frames: v.getVideoPlaybackQuality().totalVideoFrames, width: v.videoWidth, height: v.videoHeight,
  })), TILES);
  // Tile stats come from /api/streams.
  await page.waitForFunction(() => document.querySelector('[data-testid=tile-0] .stats').textContent.includes('h264'), null, { timeout: 10000 });
  // Which player each tile took (WebRTC first), as the tile's figures name it.
  await page.waitForFunction((n) => [...document.querySelectorAll('[data-testid=wall] .stats')].slice(0, n)
    .every((e) => e.textContent.includes('h264')), TILES, { timeout: 10000 });
  result.tile_players = await page.evaluate((n) => [...document.querySelectorAll('[data-testid=wall] .stats')].slice(0, n)
    .map((e) => e.textContent.split(' · ')[0]), TILES);
  await page.screenshot({ path: `${shots}/console-wall.png` });
  result.steps.push('wall');

  // PTZ: press and hold right on the first tile's channel.
  await page.click('[data-testid=tile-0]');
  const right = await page.$('[data-testid=ptz-right]');
  const box = await right.boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await page.mouse.down();
  await page.waitForTimeout(300);
  await page.mouse.up();
  // The channel's presets, listed from PresetQuery; go to 1.
  await page.waitForSelector('[data-testid=preset-call-1]', { timeout: 15000 });
  await page.click('[data-testid=preset-call-1]');
  result.steps.push('ptz');

  await page.click('nav button[data-view=events]');
  await page.waitForSelector('[data-testid=event-alarm]', { timeout: 20000 });
  result.alarm = await page.textContent('[data-testid=event-alarm]');
  await page.screenshot({ path: `${shots}/console-events.png` });
  result.steps.push('events');

  // HLS (hls.js) when chosen: a 1-tile wall.
  await page.click('nav button[data-view=wall]');
  await page.selectOption('[data-testid=layout]', '1');
  await page.selectOption('[data-testid=player]', 'hls');
  await page.click('nav button[data-view=devices]');
  await page.click(`[data-testid=play-${channels[1]}]`);
  await page.click('nav button[data-view=wall]');
  await page.waitForFunction(() => {
    const v = document.querySelector('[data-testid=tile-0] video');
    return v.currentTime > 1 && v.getVideoPlaybackQuality().totalVideoFrames > 10;
  }, null, { timeout: 40000, polling: 250 });
  result.hls_tile = await page.evaluate(() => ({ time: document.querySelector('[data-testid=tile-0] video').currentTime }));
  await page.selectOption('[data-testid=player]', 'auto');
  result.steps.push('hls');

  // Playback: the channel's recording on the timeline; click plays it; pause; download.
  await page.click('nav button[data-view=playback]');
  await page.waitForSelector('[data-testid=range-0]', { timeout: 20000 });
  await page.click('[data-testid=range-0]');
  await page.waitForFunction(() => {
    const v = document.querySelector('[data-testid=pb-video]');
    return v.currentTime > 1 && v.getVideoPlaybackQuality().totalVideoFrames > 20;
  }, null, { timeout: 30000, polling: 250 });
  await page.click('[data-testid=pb-pause]');
  await page.waitForFunction(() => document.querySelector('[data-testid=pb-status]').textContent === 'paused', null, { timeout: 10000 });
  // Drag inside the recording playing: a seek to where it is let go.
  const range = await (await page.$('[data-testid=range-0]')).boundingBox();
  await page.mouse.move(range.x + 1, range.y + range.height / 2);
  await page.mouse.down();
  await page.mouse.move(range.x + range.width - 1, range.y + range.height / 2, { steps: 5 });
  await page.mouse.up();
  await page.waitForFunction(() => document.querySelector('[data-testid=pb-status]').textContent.startsWith('sought to'), null, { timeout: 10000 });
  await page.click('[data-testid=pb-download]');
  await page.waitForFunction(() => /\d+ % (running|finishing|complete)/.test(document.querySelector('[data-testid=downloads]').textContent), null, { timeout: 15000 });
  result.download = await page.textContent('[data-testid=downloads]');
  await page.screenshot({ path: `${shots}/console-playback.png` });
  result.steps.push('playback');

  // Back in the tree: live channels show their cover; a device's details open on its id.
  await page.click('nav button[data-view=devices]');
  await page.waitForFunction((ch) => {
    const img = document.querySelector(`[data-testid=channel-${ch}] img.cover`);
    return img && img.complete && img.naturalWidth > 0;
  }, channels[0], { timeout: 15000 });
  await page.click(`[data-testid=device-${device}] .device-id`);
  await page.waitForSelector(`[data-testid=details-${device}]:not([hidden])`, { timeout: 5000 });
  result.details = await page.textContent(`[data-testid=details-${device}]`);
  await page.screenshot({ path: `${shots}/console-details.png` });
  result.steps.push('details');
  // A search by a channel id finds its device among thousands (server side) and shows the channel.
  if (process.env.SEARCH_CHANNEL) {
    await page.fill('[data-testid=device-filter]', process.env.SEARCH_CHANNEL);
    await page.waitForSelector(`[data-testid=channel-${process.env.SEARCH_CHANNEL}]`, { timeout: 10000 });
    result.search_count = await page.textContent('#device-count');
    await page.fill('[data-testid=device-filter]', '');
  }

  await page.click('nav button[data-view=streams]');
  await page.waitForFunction((n) => document.querySelectorAll('#stream-rows tr').length >= n, channels.length, { timeout: 10000 });
  await page.screenshot({ path: `${shots}/console-streams.png` });
  result.steps.push('streams');

  // A stream that gets no media says why on its tile.
  if (process.env.NO_MEDIA_STREAM) {
    await page.click(`[data-testid=play-stream-${process.env.NO_MEDIA_STREAM}]`);
    const waiting = '[data-testid=wall] .tile .message';
    await page.waitForFunction((sel) => [...document.querySelectorAll(sel)].some((m) => m.textContent.startsWith('No video yet')), waiting, { timeout: 15000 });
    result.no_media = await page.evaluate((sel) => [...document.querySelectorAll(sel)].map((m) => m.textContent).find((t) => t.startsWith('No video yet')), waiting);
    await page.screenshot({ path: `${shots}/console-no-media.png` });
    result.steps.push('no-media');
  }

  // Phone width: the page still lays out (one column of tiles).
  await page.setViewportSize({ width: 390, height: 800 });
  await page.click('nav button[data-view=wall]');
  await page.screenshot({ path: `${shots}/console-phone.png` });
  result.ok = true;
} catch (e) {
  result.error = String(e);
  try {
    const p = browser.contexts()[0].pages()[0];
    result.pb_status = await p.textContent('[data-testid=pb-status]');
    result.tile0 = await p.evaluate(() => {
      const t = document.querySelector('[data-testid=tile-0]');
      const v = t && t.querySelector('video');
      return t && { message: t.querySelector('.message').textContent, name: t.querySelector('.name').textContent, src: v.src, time: v.currentTime, ready: v.readyState, error: v.error && v.error.message };
    });
  } catch (_) { /* no page */ }
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
