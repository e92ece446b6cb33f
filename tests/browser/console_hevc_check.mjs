// The console's H.265 player in headless Chromium (no H.265 decoder of its own): sign in, play
// the H.265 + G.711 channel in the wall (the console's WebAssembly decoder draws it on a canvas,
// the sound comes over a sound-only WebRTC session), measure the picture and the sound, close
// the tile (its WebSocket closed, its WHEP session deleted), play it again and close its stream
// through the API (the tile says it ended and opens nothing again), then play the H.264 + G.711
// channel with the FLV player (the picture without the sound, and why), and the H.265 tile in
// Chinese. Screenshots go to SHOTS_DIR as console-hevc-*.png. Every wait has a deadline.
// Usage: KEY=... node console_hevc_check.mjs CONSOLE_URL DEVICE_ID HEVC_CHANNEL H264_G711_CHANNEL
// Prints JSON {ok, ...} as its last line.
import { chromium } from 'playwright-core';

const [url, device, hevcChannel, h264Channel] = process.argv.slice(2);
const key = process.env.KEY;
const shots = process.env.SHOTS_DIR || '.';
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
});
const result = { ok: false, steps: [] };
let page = null;
try {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, locale: 'en-US' });
  page = await context.newPage();
  const logs = [];
  page.on('console', (m) => { logs.push(m.text()); console.error('page:', m.text()); });
  page.on('pageerror', (e) => console.error('page error:', e.message));
  // What the page opens: WebSockets (and their closing), play requests, WHEP DELETEs.
  const sockets = [];
  page.on('websocket', (ws) => {
    const s = { url: ws.url(), closed: false, closedAt: 0 };
    sockets.push(s);
    ws.on('close', () => { s.closed = true; s.closedAt = Date.now(); });
  });
  const plays = [];
  const deletes = [];
  page.on('request', (r) => {
    if (r.method() === 'POST' && /\/play$/.test(r.url())) plays.push(r.url());
    if (r.method() === 'DELETE') deletes.push(r.url());
  });

  await page.goto(url);
  await page.fill('[data-testid=key]', key);
  await page.click('[data-testid=signin-button]');
  await page.waitForSelector(`[data-testid=device-${device}]`, { timeout: 15000 });
  await page.waitForFunction(() => document.querySelector('#device-count').textContent.includes('of 1 devices'), null, { timeout: 15000 });
  const playChannel = async (channel) => {
    await page.click('nav button[data-view=devices]');
    if ((await page.textContent(`[data-testid=expand-${device}]`)).trim() === '▸') await page.click(`[data-testid=expand-${device}]`);
    await page.waitForSelector(`[data-testid=play-${channel}]`, { timeout: 15000 });
    await page.click(`[data-testid=play-${channel}]`);
    await page.click('nav button[data-view=wall]');
  };
  // The tile's picture drawn by the console's decoder (its canvas at the stream's size).
  const waitPicture = () => page.waitForFunction(() => {
    const c = document.querySelector('[data-testid=tile-0] canvas');
    return c && c.width > 0 && tiles[0].wasm && tiles[0].wasm.drawn >= 10;
  }, null, { timeout: 40000, polling: 200 });
  const canvasFacts = () => page.evaluate(() => {
    const c = document.querySelector('[data-testid=tile-0] canvas');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let hash = 2166136261;
    const colours = new Set();
    for (let i = 0; i < d.length; i += 4) {
      hash = Math.imul(hash ^ d[i] ^ (d[i + 1] << 8) ^ (d[i + 2] << 16), 16777619) >>> 0;
      if (colours.size < 1000) colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
    }
    return { width: c.width, height: c.height, hash, colours: colours.size };
  });

  // 1. The H.265 channel: the console's decoder, the sound over WebRTC.
  await playChannel(hevcChannel);
  await waitPicture();
  await page.waitForFunction(() => document.querySelector('[data-testid=tile-0] .stats').textContent.includes('h265'), null, { timeout: 10000 });
  const before = await canvasFacts();
  await page.waitForTimeout(1000);
  const after = await canvasFacts();
  // The sound: the WebRTC session's figures, and the tone through Web Audio.
  await page.waitForFunction(async () => {
    const pc = tiles[0].player && tiles[0].player.pc;
    if (!pc) return false;
    for (const s of (await pc.getStats()).values()) if (s.type === 'inbound-rtp' && s.kind === 'audio' && s.packetsReceived > 20) return true;
    return false;
  }, null, { timeout: 15000, polling: 250 });
  const sound = await page.evaluate(async () => {
    const pc = tiles[0].player.pc;
    const stats = [...(await pc.getStats()).values()];
    const inbound = stats.find((s) => s.type === 'inbound-rtp' && s.kind === 'audio') || {};
    const codec = stats.find((s) => s.id === inbound.codecId) || {};
    const v = document.querySelector('[data-testid=tile-0] video');
    const tracks = v && v.srcObject ? v.srcObject.getAudioTracks() : [];
    const peaks = [];
    if (tracks.length) {
      // Chromium feeds a remote track to Web Audio once a media element plays it.
      const audio = new Audio();
      audio.srcObject = new MediaStream(tracks);
      audio.play().catch(() => {});
      const ctx = new AudioContext();
      const analyser = ctx.createAnalyser();
      analyser.fftSize = 8192;
      ctx.createMediaStreamSource(new MediaStream(tracks)).connect(analyser);
      const bins = new Float32Array(analyser.frequencyBinCount);
      for (let i = 0; i < 12; i++) {
        await new Promise((r) => setTimeout(r, 250));
        analyser.getFloatFrequencyData(bins);
        let best = 1;
        for (let j = 1; j < bins.length; j++) if (bins[j] > bins[best]) best = j;
        if (bins[best] > -80) peaks.push(Math.round(best * ctx.sampleRate / analyser.fftSize));
      }
      audio.pause();
      ctx.close();
    }
    return {
      packets: inbound.packetsReceived || 0,
      samples: inbound.totalSamplesReceived || 0,
      codec: (codec.mimeType || '').replace(/^audio\//, '').toLowerCase(),
      video_transceivers: pc.getTransceivers().filter((t) => t.receiver.track.kind === 'video').length,
      tracks: tracks.length,
      peaks,
    };
  });
  result.hevc = {
    player: await page.evaluate(() => tiles[0].player && tiles[0].player.name),
    stats: await page.textContent('[data-testid=tile-0] .stats'),
    width: after.width,
    height: after.height,
    hash_before: before.hash,
    hash_after: after.hash,
    colours: after.colours,
    drawn: await page.evaluate(() => tiles[0].wasm.drawn),
    dropped: await page.evaluate(() => tiles[0].wasm.dropped),
    message: await page.textContent('[data-testid=tile-0] .message'),
    note: await page.textContent('[data-testid=tile-0] .note'),
    sound,
  };
  await page.screenshot({ path: `${shots}/console-hevc-wasm.png` });
  result.steps.push('hevc');

  // 2. Closed: the WebSocket closed, the WHEP session deleted, the canvas gone.
  const whepUrl = await page.evaluate(() => tiles[0].wasm.sound && tiles[0].wasm.sound.url);
  const socket = await page.evaluateHandle(() => tiles[0].wasm.ws);
  const closedAt = Date.now();
  await page.click('[data-testid=tile-0] .label button[title=Close]');
  await page.waitForFunction(() => !document.querySelector('[data-testid=tile-0] canvas'), null, { timeout: 5000 });
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline && !deletes.includes(whepUrl)) await page.waitForTimeout(100);
  result.closed = {
    // Closed by the page (CLOSING or CLOSED; the connection itself goes a moment later).
    ws_closed: (await socket.evaluate((ws) => ws.readyState)) >= 2, // CLOSING or CLOSED
    ws_closed_on_the_wire: sockets.length > 0 && sockets.every((s) => s.closed),
    whep_deleted: Boolean(whepUrl) && deletes.includes(whepUrl),
    canvas: await page.evaluate(() => Boolean(document.querySelector('[data-testid=tile-0] canvas'))),
    message: await page.textContent('[data-testid=tile-0] .message'),
  };
  result.steps.push('closed');

  // 3. Again, then its stream closed through the API: the tile says so, opens nothing again.
  await playChannel(hevcChannel);
  await waitPicture();
  const streamId = await page.evaluate(() => tiles[0].streamId);
  await page.evaluate(async ([id, k]) => {
    await fetch(`/api/streams/${id}`, { method: 'DELETE', headers: { Authorization: `Bearer ${k}` } });
  }, [streamId, key]);
  await page.waitForFunction(() => document.querySelector('[data-testid=tile-0] .message').textContent.startsWith('The stream ended'), null, { timeout: 10000, polling: 100 });
  const atEnd = { sockets: sockets.length, plays: plays.length };
  await page.waitForTimeout(4000);
  result.ended = {
    message: await page.textContent('[data-testid=tile-0] .message'),
    sockets_at_end: atEnd.sockets,
    sockets_after: sockets.length,
    plays_at_end: atEnd.plays,
    plays_after: plays.length,
  };
  await page.screenshot({ path: `${shots}/console-hevc-ended.png` });
  result.steps.push('ended');

  // 4. H.264 + G.711 with the FLV player: the picture without the sound, and why.
  await page.click('[data-testid=tile-0] .label button[title=Close]');
  await page.selectOption('[data-testid=player]', 'flv');
  const logsBefore = logs.length;
  await playChannel(h264Channel);
  await page.waitForFunction(() => {
    const v = document.querySelector('[data-testid=tile-0] video');
    return v && v.currentTime > 1.5 && v.getVideoPlaybackQuality().totalVideoFrames > 20;
  }, null, { timeout: 30000, polling: 250 });
  await page.waitForFunction(() => document.querySelector('[data-testid=tile-0] .stats').textContent.includes('h264'), null, { timeout: 10000 });
  result.flv = await page.evaluate(() => {
    const v = document.querySelector('[data-testid=tile-0] video');
    return {
      frames: v.getVideoPlaybackQuality().totalVideoFrames,
      time: v.currentTime,
      width: v.videoWidth,
      height: v.videoHeight,
      stats: document.querySelector('[data-testid=tile-0] .stats').textContent,
      note: document.querySelector('[data-testid=tile-0] .note').textContent,
      message: document.querySelector('[data-testid=tile-0] .message').textContent,
    };
  });
  result.flv.errors = logs.slice(logsBefore).filter((l) => /Unsupported audio codec|MediaMSEError|Playback error/i.test(l));
  await page.screenshot({ path: `${shots}/console-hevc-flv.png` });
  result.steps.push('flv');

  // 4b. The same camera's recording in Playback (the device's playback, over FLV): the picture
  // without the G.711 sound, and why; then the H.265 camera's, which says why it cannot play.
  {
    const before = logs.length;
    await page.click('[data-testid=tile-0] .label button[title=Close]');
    await page.click('nav button[data-view=playback]');
    await page.waitForFunction((ch) => [...document.querySelectorAll('[data-testid=pb-channel] option')].some((o) => o.value === ch), h264Channel, { timeout: 15000 });
    await page.selectOption('[data-testid=pb-channel]', h264Channel);
    await page.waitForSelector('[data-testid=range-0]', { timeout: 20000 });
    await page.click('[data-testid=range-0]');
    await page.waitForFunction(() => {
      const v = document.querySelector('[data-testid=pb-video]');
      return v.currentTime > 1 && v.getVideoPlaybackQuality().totalVideoFrames > 20;
    }, null, { timeout: 30000, polling: 250 });
    result.playback = {
      status: await page.textContent('[data-testid=pb-status]'),
      frames: await page.evaluate(() => document.querySelector('[data-testid=pb-video]').getVideoPlaybackQuality().totalVideoFrames),
      errors: logs.slice(before).filter((l) => /Unsupported audio codec|MediaMSEError|Playback error/i.test(l)),
    };
    await page.screenshot({ path: `${shots}/console-hevc-playback.png` });
    await page.selectOption('[data-testid=pb-channel]', hevcChannel);
    await page.waitForSelector('[data-testid=range-0]', { timeout: 20000 });
    await page.click('[data-testid=range-0]');
    await page.waitForFunction(() => document.querySelector('[data-testid=pb-status]').textContent.includes('H.265'), null, { timeout: 20000, polling: 200 });
    result.playback.hevc_status = await page.textContent('[data-testid=pb-status]');
    await page.click('nav button[data-view=wall]');
    result.steps.push('playback');
  }

  // Every key in both catalogues.
  result.catalogue_missing = await page.evaluate(() => {
    const en = Object.keys(I18N.en);
    const zh = Object.keys(I18N['zh-CN']);
    return { zh: en.filter((k) => !(k in I18N['zh-CN'])), en: zh.filter((k) => !(k in I18N.en)) };
  });

  // 5. The decoder missing (its Worker script refused): the tile says H.265 cannot play here,
  // and why, and asks for nothing more.
  {
    const bare = await browser.newContext({ viewport: { width: 1440, height: 900 }, locale: 'en-US' });
    await bare.route(/\/console\/hevc-worker\.js$/, (route) => route.fulfill({ status: 404, contentType: 'text/plain', body: 'gone' }));
    const p = await bare.newPage();
    const asked = [];
    p.on('request', (r) => { if (r.method() === 'POST' && /\/play$/.test(r.url())) asked.push(r.url()); });
    await p.goto(url);
    await p.fill('[data-testid=key]', key);
    await p.click('[data-testid=signin-button]');
    await p.waitForSelector(`[data-testid=device-${device}]`, { timeout: 15000 });
    if ((await p.textContent(`[data-testid=expand-${device}]`)).trim() === '▸') await p.click(`[data-testid=expand-${device}]`);
    await p.waitForSelector(`[data-testid=play-${hevcChannel}]`, { timeout: 15000 });
    await p.click(`[data-testid=play-${hevcChannel}]`);
    await p.click('nav button[data-view=wall]');
    await p.waitForFunction(() => document.querySelector('[data-testid=tile-0] .message').textContent.startsWith('H.265 cannot play here'), null, { timeout: 20000, polling: 100 });
    const playsThen = asked.length;
    await p.waitForTimeout(3000);
    result.unplayable = { message: await p.textContent('[data-testid=tile-0] .message'), plays_then: playsThen, plays_after: asked.length };
    await p.screenshot({ path: `${shots}/console-hevc-unplayable.png` });
    await bare.close();
    result.steps.push('unplayable');
  }

  // 6. The H.265 tile in Chinese (the automatic player again).
  // The wall this browser kept is forgotten (it would come back after the reload, and the
  // channel then play in the next free tile): the H.265 channel plays in tile 0 again.
  await page.evaluate(() => { localStorage.setItem('gmv-lang', 'zh-CN'); localStorage.removeItem('gmv-wall'); });
  await page.reload();
  await page.waitForSelector(`[data-testid=device-${device}]`, { timeout: 15000 });
  await playChannel(hevcChannel);
  await waitPicture();
  await page.waitForFunction(() => document.querySelector('[data-testid=tile-0] .stats').textContent.includes('h265'), null, { timeout: 10000 });
  result.zh = { stats: await page.textContent('[data-testid=tile-0] .stats'), player: await page.inputValue('[data-testid=player]'), nav: await page.textContent('nav button[data-view=wall]') };
  await page.screenshot({ path: `${shots}/console-hevc-wasm-zh.png` });
  result.steps.push('zh');
  // How long the first tile's connection lasted after the page closed its WebSocket, for the
  // record.
  result.first_socket_wire_close_ms = sockets[0] && sockets[0].closed ? sockets[0].closedAt - closedAt : null;
  result.ok = true;
} catch (e) {
  result.error = String(e && e.stack || e);
  if (page) await page.screenshot({ path: `${shots}/console-hevc-failed.png` }).catch(() => {});
}
console.log(JSON.stringify(result));
await browser.close();
