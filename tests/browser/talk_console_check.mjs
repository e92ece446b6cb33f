// Push-to-talk in the gmv console, in headless Chromium whose microphone is the fake capture
// device playing a tone file: sign in, play a device's channel in the wall, select its tile,
// hold "Hold to talk" for SECONDS while reading the status line, the level meter, the
// camera's state and the camera's own sound in its tile (both ways: the strongest frequencies
// of the tile's audio track, heard through Web Audio), release, and read what the console says
// after. Screenshots at desktop and
// phone width go to SHOTS_DIR. Every wait has a deadline.
// Usage: node talk_console_check.mjs CONSOLE_URL API_KEY DEVICE_ID CHANNEL_ID TONE_WAV [SECONDS]
// Prints JSON {ok, ...} as its last line.
import { chromium } from 'playwright-core';

const [url, key, device, channel, toneWav, seconds = '3'] = process.argv.slice(2);
const shots = process.env.SHOTS_DIR || '.';
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required',
         '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
         `--use-file-for-fake-audio-capture=${toneWav}`],
});
const result = { ok: false, steps: [] };
let page = null;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, permissions: ['microphone'], locale: 'en-US' });
  page = await context.newPage();
  page.on('console', (m) => console.error('page:', m.text()));
  await page.goto(url);
  await page.fill('[data-testid=key]', key);
  await page.click('[data-testid=signin-button]');
  await page.waitForSelector(`[data-testid=device-${device}]`, { timeout: 15000 });
  // The device list settled (its first load replaces the rows), then the device opened.
  await page.waitForFunction(() => document.querySelector('#device-count').textContent.includes('of 1 devices'), null, { timeout: 15000 });
  // A site of a few devices opens them by itself; otherwise open it.
  if ((await page.textContent(`[data-testid=expand-${device}]`)).trim() === '▸') await page.click(`[data-testid=expand-${device}]`);
  await page.waitForSelector(`[data-testid=play-${channel}]`, { timeout: 15000 });
  await page.click(`[data-testid=play-${channel}]`);
  await page.click('nav button[data-view=wall]');
  await page.waitForFunction(() => {
    const v = document.querySelector('[data-testid=wall] video');
    return v && v.currentTime > 0.5;
  }, null, { timeout: 30000, polling: 250 });
  result.steps.push('playing');

  // A tap is too short to talk: it ends at once, and says so.
  await page.click('[data-testid=tile-0]');
  await page.click('[data-testid=talk-button]');
  await page.waitForFunction(() => document.querySelector('[data-testid=talk-status]').textContent === 'Talk ended.', null, { timeout: 5000 });
  // A tile with nothing in it: the button says what to do.
  await page.click('[data-testid=tile-1]');
  await page.click('[data-testid=talk-button]');
  result.without_channel = await page.textContent('[data-testid=talk-status]');
  await page.click('[data-testid=tile-0]');

  // Hold to talk.
  const button = await page.$('[data-testid=talk-button]');
  const box = await button.boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await page.mouse.down();
  await page.waitForFunction(() => document.querySelector('[data-testid=talk-status]').textContent.startsWith('Talking'), null, { timeout: 15000, polling: 100 });
  result.while_talking = await page.textContent('[data-testid=talk-status]');
  let levelMax = 0;
  const end = Date.now() + Number(seconds) * 1000;
  while (Date.now() < end) {
    levelMax = Math.max(levelMax, await page.evaluate(() => document.querySelector('[data-testid=talk-level]').value));
    await page.waitForTimeout(200);
  }
  result.level_max = levelMax;
  // The camera's sound, from its tile, while we talk.
  result.heard = await page.evaluate(async () => {
    const v = document.querySelector('[data-testid=tile-0] video');
    const tracks = v && v.srcObject ? v.srcObject.getAudioTracks() : [];
    if (!tracks.length) return { tracks: 0 };
    // Chromium feeds a remote track to Web Audio once a media element plays it.
    const audio = new Audio();
    audio.srcObject = new MediaStream(tracks);
    audio.play().catch(() => {});
    const ctx = new AudioContext();
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 8192;
    ctx.createMediaStreamSource(new MediaStream(tracks)).connect(analyser);
    const bins = new Float32Array(analyser.frequencyBinCount);
    const peaks = [];
    for (let i = 0; i < 12; i++) {
      await new Promise((r) => setTimeout(r, 250));
      analyser.getFloatFrequencyData(bins);
      let best = 1;
      for (let j = 1; j < bins.length; j++) if (bins[j] > bins[best]) best = j;
      if (bins[best] > -80) peaks.push(Math.round(best * ctx.sampleRate / analyser.fftSize));
    }
    audio.pause();
    ctx.close();
    return { tracks: tracks.length, peaks };
  });
  await page.waitForSelector(`[data-testid=talk-target-${channel}]`, { timeout: 5000 });
  result.target_while_talking = await page.textContent(`[data-testid=talk-target-${channel}]`);
  result.button_on = await page.evaluate(() => document.querySelector('[data-testid=talk-button]').classList.contains('on'));
  await page.screenshot({ path: `${shots}/console-talk.png` });
  await page.mouse.up();
  await page.waitForFunction(() => document.querySelector('[data-testid=talk-status]').textContent === 'Talk ended.', null, { timeout: 5000 });
  // The camera's BYE and its why, a moment later.
  await page.waitForFunction((ch) => (document.querySelector(`[data-testid=talk-target-${ch}]`) || {}).textContent?.includes('ended'), channel, { timeout: 10000, polling: 200 });
  result.target_after = await page.textContent(`[data-testid=talk-target-${channel}]`);
  // The same at phone width, in Chinese.
  await page.evaluate(() => localStorage.setItem('gmv-lang', 'zh-CN'));
  await page.setViewportSize({ width: 390, height: 844 });
  await page.reload();
  await page.waitForSelector('[data-testid=talk-button]', { state: 'attached', timeout: 15000 });
  // The devices view in Chinese: the count, the channel rows, the nav.
  await page.waitForFunction(() => document.querySelector('#device-count').textContent.includes('台设备'), null, { timeout: 15000 });
  result.devices_zh = { count: await page.textContent('#device-count'), nav: await page.textContent('nav button[data-view=devices]') };
  await page.screenshot({ path: `${shots}/console-devices-phone-zh.png`, fullPage: true });
  await page.click('nav button[data-view=wall]');
  result.button_zh = await page.textContent('[data-testid=talk-button]');
  // Tile 0 plays the talking camera again (the wall is kept over the reload): tile 1 is empty.
  result.tile_zh = await page.textContent('[data-testid=tile-1] .message');
  await page.screenshot({ path: `${shots}/console-talk-phone-zh.png`, fullPage: true });
  result.ok = true;
} catch (e) {
  result.error = String(e && e.stack || e);
  // What the page showed when it went wrong.
  if (page) await page.screenshot({ path: `${shots}/console-talk-failed.png` }).catch(() => {});
}
console.log(JSON.stringify(result));
await browser.close();
