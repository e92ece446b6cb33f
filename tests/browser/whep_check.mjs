// Plays a stream over WebRTC (WHEP) in headless Chromium, as a page of the engine's own origin
// would: a recvonly offer (video and audio) POSTed to the WHEP URL, the answer applied, the
// video drawn into a <video> and the audio into an <audio> and a WebAudio analyser. Reads back
// what the browser itself measured: time from the POST to the first frame drawn
// (requestVideoFrameCallback), getStats() (frames decoded, size, codec, audio samples and
// level) and the audio's strongest frequency. Then DELETEs the session. Every wait is a poll
// with a deadline. With VANISH=1 the browser is killed instead (SIGKILL: no DELETE, no DTLS
// goodbye), as a browser that crashes or loses its network. With ZLM=1 the offer goes as
// ZLMediaKit's players send it to `/index/api/webrtc` (text/plain, a JSON answer).
// Usage: node whep_check.mjs PAGE_URL WHEP_URL [SECONDS]; prints JSON as its last line.
import { chromium } from 'playwright-core';

const [pageUrl, whepUrl, seconds = '4'] = process.argv.slice(2);
const vanish = process.env.VANISH === '1';
const zlm = process.env.ZLM === '1';
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
  result = await page.evaluate(async ({ whepUrl, listenMs, vanish, zlm }) => {
    const out = { ok: false };
    const pc = new RTCPeerConnection();
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    const tracks = [];
    pc.ontrack = (e) => tracks.push(e.track);
    await pc.setLocalDescription(await pc.createOffer());
    const t0 = performance.now();
    const contentType = zlm ? 'text/plain;charset=utf-8' : 'application/sdp';
    const r = await fetch(whepUrl, { method: 'POST', headers: { 'Content-Type': contentType }, body: pc.localDescription.sdp });
    out.post_status = r.status;
    let body = await r.text();
    if (zlm) {
      const answer = JSON.parse(body);
      out.zlm = { code: answer.code, type: answer.type, id: answer.id, msg: answer.msg };
      if (answer.code !== 0) return out;
      body = answer.sdp;
    } else if (r.status !== 201) {
      out.error = body;
      return out;
    } else {
      out.location = r.headers.get('Location');
    }
    out.answer_codecs = [...body.matchAll(/a=rtpmap:\d+ ([\w-]+)\//g)].map((m) => m[1]);
    await pc.setRemoteDescription({ type: 'answer', sdp: body });
    const video = document.createElement('video');
    Object.assign(video, { muted: true, autoplay: true, playsInline: true });
    document.body.appendChild(video);
    video.srcObject = new MediaStream(tracks.filter((t) => t.kind === 'video'));
    const audioTracks = tracks.filter((t) => t.kind === 'audio');
    const audio = new Audio();
    audio.srcObject = new MediaStream(audioTracks);
    audio.play().catch(() => {});
    const ctx = new AudioContext();
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 8192;
    if (audioTracks.length) ctx.createMediaStreamSource(new MediaStream(audioTracks)).connect(analyser);
    // When getStats first counts a decoded frame (polled every 20 ms).
    const decoded = (async () => {
      while (performance.now() - t0 < 10000) {
        const st = await pc.getStats();
        let n = 0;
        st.forEach((x) => { if (x.type === 'inbound-rtp' && x.kind === 'video') n = x.framesDecoded || 0; });
        if (n > 0) return Math.round(performance.now() - t0);
        await new Promise((r) => setTimeout(r, 20));
      }
      return null;
    })();
    out.first_frame_ms = await new Promise((resolve) => {
      const timer = setTimeout(() => resolve(null), 10000);
      video.requestVideoFrameCallback(() => { clearTimeout(timer); resolve(Math.round(performance.now() - t0)); });
    });
    out.ice_state = pc.iceConnectionState;
    out.first_decoded_ms = await decoded;
    // Listen, keeping the strongest frequency of each look at the spectrum.
    const bins = new Float32Array(analyser.frequencyBinCount);
    const peaks = [];
    const end = performance.now() + listenMs;
    while (performance.now() < end) {
      await new Promise((r) => setTimeout(r, 250));
      analyser.getFloatFrequencyData(bins);
      let best = 0;
      for (let i = 1; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
      if (bins[best] > -80) peaks.push(Math.round(best * ctx.sampleRate / analyser.fftSize));
    }
    out.audio_peaks_hz = peaks;
    const stats = await pc.getStats();
    const codecs = {};
    stats.forEach((s) => { if (s.type === 'codec') codecs[s.id] = s.mimeType; });
    stats.forEach((s) => {
      if (s.type !== 'inbound-rtp') return;
      if (s.kind === 'video') {
        out.video = { codec: codecs[s.codecId], frames_decoded: s.framesDecoded, width: s.frameWidth, height: s.frameHeight, packets_lost: s.packetsLost, nacks: s.nackCount, plis: s.pliCount };
      } else {
        out.audio = { codec: codecs[s.codecId], samples: s.totalSamplesReceived, level: s.audioLevel, packets_lost: s.packetsLost };
      }
    });
    out.video_size = [video.videoWidth, video.videoHeight];
    if (!vanish) {
      if (out.location) out.delete_status = (await fetch(out.location, { method: 'DELETE' })).status;
      pc.close();
    }
    out.ok = true;
    return out;
  }, { whepUrl, listenMs: Number(seconds) * 1000, vanish, zlm });
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
