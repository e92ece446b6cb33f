// The live wall's H.265 decoder, in a Worker: FFmpeg's hevc decoder built to WebAssembly
// (console/vendor/hevc, LGPL-2.1-or-later; how it is built: console/vendor/hevc/src). The page
// sends access units in Annex B form, one message each ({type: 'au', au, pts, key}); the worker
// answers each with 'done' (so the page knows how many wait) after any 'frame' it produced
// ({width, height, rgba}: an ArrayBuffer of width*height*4 bytes, transferred). 'ready' once
// the decoder is up; 'error' ({stage: 'load' | 'format', error}) when it cannot go on.
'use strict';

importScripts('vendor/hevc/hevcdec.js');

// FFmpeg's AVPixelFormat numbers (9.0) of the formats drawn here.
const PIX_FMT_YUV420P = 0;
const PIX_FMT_YUVJ420P = 12;
const PIX_FMT_YUV420P10LE = 62;

let M = null;
let dec = 0;
let inPtr = 0;
let inCap = 0;
let failed = false;

// 10-bit 4:2:0 (Main 10) to RGBA here (the wrapper converts 8-bit only), BT.601 limited range.
function rgba10(w, h) {
  const out = new Uint8ClampedArray(w * h * 4);
  const heap = new Uint16Array(M.HEAPU8.buffer);
  const plane = (i) => [M._hevc_frame_plane(dec, i) >> 1, M._hevc_frame_stride(dec, i) >> 1];
  const [y0, ys] = plane(0);
  const [u0, us] = plane(1);
  const [v0, vs] = plane(2);
  let o = 0;
  for (let y = 0; y < h; y++) {
    const yr = y0 + y * ys;
    const ur = u0 + (y >> 1) * us;
    const vr = v0 + (y >> 1) * vs;
    for (let x = 0; x < w; x++) {
      const c = 1.164 * ((heap[yr + x] >> 2) - 16);
      const u = (heap[ur + (x >> 1)] >> 2) - 128;
      const v = (heap[vr + (x >> 1)] >> 2) - 128;
      out[o] = c + 1.596 * v;
      out[o + 1] = c - 0.392 * u - 0.813 * v;
      out[o + 2] = c + 2.017 * u;
      out[o + 3] = 255;
      o += 4;
    }
  }
  return out;
}

// The frames out of the decoder; only the last of them is drawn (the page shows the newest).
function drain() {
  let last = null;
  let r;
  while ((r = M._hevc_receive(dec)) === 1) {
    const width = M._hevc_frame_width(dec);
    const height = M._hevc_frame_height(dec);
    const format = M._hevc_frame_format(dec);
    let rgba = null;
    if (format === PIX_FMT_YUV420P || format === PIX_FMT_YUVJ420P) {
      const p = M._hevc_frame_rgba(dec);
      if (p) rgba = M.HEAPU8.slice(p, p + width * height * 4); // (HEAPU8 re-read: memory may have grown)
    } else if (format === PIX_FMT_YUV420P10LE) {
      rgba = rgba10(width, height);
    }
    if (!rgba) {
      failed = true;
      postMessage({ type: 'error', stage: 'format', error: `pixel format ${format} (FFmpeg's number)` });
      return;
    }
    last = { width, height, rgba };
  }
  if (last) postMessage({ type: 'frame', width: last.width, height: last.height, rgba: last.rgba.buffer }, [last.rgba.buffer]);
  return r;
}

onmessage = async (e) => {
  const m = e.data;
  if (m.type === 'init') {
    try {
      M = await createHevcDecoder({ locateFile: (f) => new URL(`vendor/hevc/${f}`, self.location.href).href });
      dec = M._hevc_open();
      if (!dec) throw new Error('the decoder did not open');
      postMessage({ type: 'ready' });
    } catch (err) {
      failed = true;
      postMessage({ type: 'error', stage: 'load', error: String((err && err.message) || err) });
    }
    return;
  }
  if (m.type !== 'au') return;
  let error = 0;
  if (dec && !failed) {
    const au = m.au;
    if (au.length > inCap) {
      if (inPtr) M._free(inPtr);
      inCap = au.length + 65536;
      inPtr = M._malloc(inCap);
    }
    M.HEAPU8.set(au, inPtr);
    // A damaged access unit is skipped (the decoder goes on from the next one).
    const sent = M._hevc_send(dec, inPtr, au.length, m.pts || 0);
    const drained = drain();
    error = sent < 0 ? sent : (drained < 0 ? drained : 0);
  }
  postMessage({ type: 'done', error });
};
