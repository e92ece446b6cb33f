// Minimal streaming H.265/HEVC decoder for the browser (FFmpeg libavcodec -> wasm).
// Feed one Annex B access unit at a time, pull decoded frames as I420 planes or RGBA.
// LGPL-2.1-or-later (links FFmpeg's LGPL libavcodec/libavutil).
#include <emscripten/emscripten.h>
#include <libavcodec/avcodec.h>
#include <libavutil/imgutils.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  AVCodecContext *ctx;
  AVPacket *pkt;
  AVFrame *frame;
  uint8_t *rgba;
  int rgba_size;
} Dec;

EMSCRIPTEN_KEEPALIVE Dec *hevc_open(void) {
  const AVCodec *codec = avcodec_find_decoder(AV_CODEC_ID_HEVC);
  if (!codec) return NULL;
  Dec *d = calloc(1, sizeof(Dec));
  d->ctx = avcodec_alloc_context3(codec);
  d->ctx->thread_count = 1;
  d->ctx->flags |= AV_CODEC_FLAG_LOW_DELAY;
  if (avcodec_open2(d->ctx, codec, NULL) < 0) return NULL;
  d->pkt = av_packet_alloc();
  d->frame = av_frame_alloc();
  return d;
}

// Send one access unit (Annex B bytes). data==0/size==0 -> flush (drain).
// Returns 0 or a negative AVERROR.
EMSCRIPTEN_KEEPALIVE int hevc_send(Dec *d, uint8_t *data, int size, double pts) {
  if (!data || size <= 0) return avcodec_send_packet(d->ctx, NULL);
  av_packet_unref(d->pkt);
  d->pkt->data = data;  // caller keeps buffer alive until hevc_send returns
  d->pkt->size = size;
  d->pkt->pts = (int64_t)pts;
  int r = avcodec_send_packet(d->ctx, d->pkt);
  d->pkt->data = NULL; d->pkt->size = 0;
  return r;
}

// Returns 1 if a frame is available (then use hevc_frame_*), 0 if decoder needs more input
// (EAGAIN) or is drained (EOF), negative on error.
EMSCRIPTEN_KEEPALIVE int hevc_receive(Dec *d) {
  int r = avcodec_receive_frame(d->ctx, d->frame);
  if (r == 0) return 1;
  if (r == AVERROR(EAGAIN) || r == AVERROR_EOF) return 0;
  return r;
}

EMSCRIPTEN_KEEPALIVE int hevc_frame_width(Dec *d) { return d->frame->width; }
EMSCRIPTEN_KEEPALIVE int hevc_frame_height(Dec *d) { return d->frame->height; }
EMSCRIPTEN_KEEPALIVE int hevc_frame_format(Dec *d) { return d->frame->format; } // 0 = yuv420p, 12 = yuvj420p
EMSCRIPTEN_KEEPALIVE double hevc_frame_pts(Dec *d) { return (double)d->frame->pts; }
EMSCRIPTEN_KEEPALIVE uint8_t *hevc_frame_plane(Dec *d, int i) { return d->frame->data[i]; }
EMSCRIPTEN_KEEPALIVE int hevc_frame_stride(Dec *d, int i) { return d->frame->linesize[i]; }

static inline uint8_t clip(int v) { return v < 0 ? 0 : v > 255 ? 255 : v; }

// BT.601 limited-range I420 -> RGBA, returns pointer to width*height*4 bytes (valid until next call).
EMSCRIPTEN_KEEPALIVE uint8_t *hevc_frame_rgba(Dec *d) {
  AVFrame *f = d->frame;
  int w = f->width, h = f->height, need = w * h * 4;
  if (f->format != AV_PIX_FMT_YUV420P && f->format != AV_PIX_FMT_YUVJ420P) return NULL;
  if (need > d->rgba_size) { free(d->rgba); d->rgba = malloc(need); d->rgba_size = need; }
  int full = f->format == AV_PIX_FMT_YUVJ420P || f->color_range == AVCOL_RANGE_JPEG;
  for (int y = 0; y < h; y++) {
    const uint8_t *Y = f->data[0] + y * f->linesize[0];
    const uint8_t *U = f->data[1] + (y >> 1) * f->linesize[1];
    const uint8_t *V = f->data[2] + (y >> 1) * f->linesize[2];
    uint8_t *o = d->rgba + y * w * 4;
    for (int x = 0; x < w; x++) {
      int c = full ? Y[x] : (Y[x] - 16), u = U[x >> 1] - 128, v = V[x >> 1] - 128;
      int yy = full ? (c << 10) : 1192 * c;          // 1.164 * 1024
      int r = full ? yy + 1436 * v : yy + 1634 * v;  // 1.402 / 1.596
      int g = full ? yy - 352 * u - 731 * v : yy - 401 * u - 833 * v;
      int b = full ? yy + 1815 * u : yy + 2066 * u;
      o[0] = clip(r >> 10); o[1] = clip(g >> 10); o[2] = clip(b >> 10); o[3] = 255; o += 4;
    }
  }
  return d->rgba;
}

EMSCRIPTEN_KEEPALIVE void hevc_close(Dec *d) {
  if (!d) return;
  avcodec_free_context(&d->ctx);
  av_packet_free(&d->pkt);
  av_frame_free(&d->frame);
  free(d->rgba);
  free(d);
}
