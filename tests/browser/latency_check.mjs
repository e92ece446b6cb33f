// Frame-to-display latency in headless Chromium, over WebRTC (WHEP) and over FLV on a
// WebSocket (mpegts.js, as the console plays it). Each picture of the test's stream carries its
// number as a 4x4 grid of black and white blocks (12 bits of number, 4 of check); on each frame
// the browser shows (requestVideoFrameCallback) the page draws it into a canvas, reads the
// number back and notes when it was to be displayed, in Unix milliseconds
// (performance.timeOrigin + expectedDisplayTime). The test knows when it sent each number.
// Usage: node latency_check.mjs PAGE_URL WHEP_URL FLV_WS_URL SECONDS_EACH; prints JSON
// {ok, webrtc: {seen: [[n, ms], ...]}, flv: {...}} as its last line.
import { chromium } from 'playwright-core';

const [pageUrl, whepUrl, flvUrl, seconds = '6'] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
});
let result = { ok: false };
try {
  const page = await browser.newPage();
  const logs = [];
  page.on('console', (m) => logs.push(m.text()));
  await page.goto(pageUrl);
  await page.addScriptTag({ url: '/console/vendor/mpegts.js' });
  result = await page.evaluate(async ({ whepUrl, flvUrl, listenMs }) => {
    // The number a picture carries, or null when the blocks do not read as one.
    const canvas = document.createElement('canvas');
    Object.assign(canvas, { width: 320, height: 240 });
    const g = canvas.getContext('2d', { willReadFrequently: true });
    const numberOf = (video) => {
      g.drawImage(video, 0, 0, 320, 240);
      let bits = 0;
      for (let i = 0; i < 16; i++) {
        const x = 80 + (i % 4) * 40 + 20, y = 40 + Math.floor(i / 4) * 40 + 20;
        if (g.getImageData(x, y, 1, 1).data[0] > 128) bits |= 1 << i;
      }
      const n = bits & 0xfff;
      let ones = 0;
      for (let v = n; v; v >>= 1) ones += v & 1;
      return (bits >> 12) === (ones & 0xf) ? n : null;
    };
    const watch = (video) => new Promise((resolve) => {
      const seen = [];
      let misread = 0;
      const end = performance.now() + listenMs;
      const onFrame = (_, meta) => {
        const n = numberOf(video);
        if (n === null) misread += 1;
        else seen.push([n, performance.timeOrigin + meta.expectedDisplayTime]);
        if (performance.now() < end) video.requestVideoFrameCallback(onFrame);
        else resolve({ seen, misread });
      };
      video.requestVideoFrameCallback(onFrame);
      setTimeout(() => resolve({ seen, misread, timeout: true }), listenMs + 10000);
    });
    const newVideo = () => {
      const v = document.createElement('video');
      Object.assign(v, { muted: true, autoplay: true, playsInline: true, width: 320, height: 240 });
      document.body.appendChild(v);
      return v;
    };
    const out = { ok: false };
    // WebRTC.
    const pc = new RTCPeerConnection();
    pc.addTransceiver('video', { direction: 'recvonly' });
    const tracks = [];
    pc.ontrack = (e) => tracks.push(e.track);
    await pc.setLocalDescription(await pc.createOffer());
    const r = await fetch(whepUrl, { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp });
    if (r.status !== 201) return { ok: false, error: `WHEP ${r.status}: ${await r.text()}` };
    const session = new URL(r.headers.get('Location'), whepUrl).href;
    await pc.setRemoteDescription({ type: 'answer', sdp: await r.text() });
    const v1 = newVideo();
    v1.srcObject = new MediaStream(tracks);
    v1.play().catch(() => {});
    out.webrtc = await watch(v1);
    pc.close();
    await fetch(session, { method: 'DELETE' }).catch(() => {});
    // FLV over a WebSocket, as the console's tiles set mpegts.js up.
    const v2 = newVideo();
    const player = mpegts.createPlayer({ type: 'flv', isLive: true, url: flvUrl }, { enableStashBuffer: false, liveBufferLatencyChasing: true });
    player.attachMediaElement(v2);
    player.load();
    v2.play().catch(() => {});
    out.flv = await watch(v2);
    player.destroy();
    out.ok = out.webrtc.seen.length > 0 && out.flv.seen.length > 0;
    return out;
  }, { whepUrl, flvUrl, listenMs: Number(seconds) * 1000 });
  if (!result.ok) result.logs = logs.slice(-20);
} catch (e) {
  result = { ok: false, error: String(e) };
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
