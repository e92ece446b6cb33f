// Talks into a camera from headless Chromium over WHIP, as the console's push-to-talk does: the
// microphone is Chromium's fake capture device fed from a WAV file (a tone), taken with
// getUserMedia (echo cancellation, noise suppression and gain control off, so the tone goes
// as it is), offered sendonly and POSTed with an API key to the WHIP URL; the answer applied,
// it talks for SECONDS while getStats() counts what went out and in which codec. Then the
// session is DELETEd, or with VANISH=1 the browser is killed (SIGKILL: no DELETE, no DTLS
// goodbye), as a browser that crashes or loses its network. Every wait is a poll with a
// deadline.
// Usage: KEY=apikey node whip_check.mjs PAGE_URL WHIP_URL TONE_WAV [SECONDS]; prints JSON last.
import { chromium } from 'playwright-core';

const [pageUrl, whipUrl, toneWav, seconds = '3'] = process.argv.slice(2);
const vanish = process.env.VANISH === '1';
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--use-fake-ui-for-media-stream',
         '--use-fake-device-for-media-stream', `--use-file-for-fake-audio-capture=${toneWav}`],
});
let result = { ok: false };
try {
  const context = await browser.newContext({ permissions: ['microphone'] });
  const page = await context.newPage();
  const logs = [];
  page.on('console', (m) => logs.push(m.text()));
  await page.goto(pageUrl);
  result = await page.evaluate(async ({ whipUrl, talkMs, key, vanish }) => {
    const out = { ok: false };
    const mic = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    const pc = new RTCPeerConnection();
    pc.addTransceiver(mic.getAudioTracks()[0], { direction: 'sendonly' });
    await pc.setLocalDescription(await pc.createOffer());
    const r = await fetch(whipUrl, {
      method: 'POST',
      headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${key}` },
      body: pc.localDescription.sdp,
    });
    out.post_status = r.status;
    const body = await r.text();
    if (r.status !== 201) {
      out.error = body;
      return out;
    }
    out.location = r.headers.get('Location');
    out.answer_codecs = [...body.matchAll(/a=rtpmap:\d+ ([\w-]+)\//g)].map((m) => m[1]);
    await pc.setRemoteDescription({ type: 'answer', sdp: body });
    const t0 = performance.now();
    while (pc.connectionState !== 'connected' && performance.now() - t0 < 10000) {
      await new Promise((res) => setTimeout(res, 20));
    }
    out.connection_state = pc.connectionState;
    out.connect_ms = Math.round(performance.now() - t0);
    await new Promise((res) => setTimeout(res, talkMs));
    const stats = await pc.getStats();
    const codecs = {};
    stats.forEach((s) => { if (s.type === 'codec') codecs[s.id] = s.mimeType; });
    stats.forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === 'audio') out.sent = { codec: codecs[s.codecId], packets: s.packetsSent, bytes: s.bytesSent };
    });
    if (!vanish) {
      out.delete_status = (await fetch(out.location, { method: 'DELETE' })).status;
      pc.close();
    }
    out.ok = true;
    return out;
  }, { whipUrl, talkMs: Number(seconds) * 1000, key: process.env.KEY || '', vanish });
  result.logs = logs.slice(-10);
} catch (e) {
  result.error = String(e && e.stack || e);
}
console.log(JSON.stringify(result));
if (vanish) {
  browser.process().kill('SIGKILL');
  process.exit(0);
}
await browser.close();
