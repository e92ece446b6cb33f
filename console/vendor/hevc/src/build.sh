#!/bin/sh
# Builds console/vendor/hevc/hevcdec.{js,wasm}: FFmpeg 9.0's H.265 decoder (libavcodec's hevc
# decoder and parser only, unmodified) linked with hevcdec.c by emscripten. This is the script
# that produced the vendored files (see README.md for their sha256).
#
# From a clean Debian 12 (bookworm) machine:
#   apt-get install emscripten nodejs npm xz-utils   # emscripten 3.1.6
#   console/vendor/hevc/src/build.sh
# FFmpeg's source is the ffmpeg-9.0.tar.xz that the libav.js 6.10.9 npm package carries in its
# sources/ (fetched with `npm pack`, both checked against SOURCES.sha256).
#
# Environment: WORK (build directory, default /tmp/gmv-hevcdec-build; an FFmpeg built there
# before is reused), OUT (where hevcdec.js and hevcdec.wasm go, default console/vendor/hevc).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$(cd "$HERE/.." && pwd)}
WORK=${WORK:-/tmp/gmv-hevcdec-build}
# Debian's emscripten runs under node and needs Debian's node modules (acorn) even when
# another node is first on PATH.
export NODE_PATH=${NODE_PATH:-/usr/share/nodejs}

command -v emcc >/dev/null || { echo "emcc not found: apt-get install emscripten" >&2; exit 1; }
case "$(emcc --version | head -1)" in
  *" 3.1.6 "*|*" 3.1.6") ;;
  *) echo "warning: the vendored files were built with emscripten 3.1.6 (Debian 12); this is: $(emcc --version | head -1)" >&2 ;;
esac

mkdir -p "$WORK"
cd "$WORK"
if [ ! -f libav.js-6.10.9.tgz ]; then
  npm pack libav.js@6.10.9 --silent >/dev/null
fi
if [ ! -f package/sources/ffmpeg-9.0.tar.xz ]; then
  tar -xzf libav.js-6.10.9.tgz package/sources/ffmpeg-9.0.tar.xz
fi
sha256sum -c "$HERE/SOURCES.sha256"
FF="$WORK/ffmpeg-9.0"
if [ ! -d "$FF" ]; then
  tar -xJf package/sources/ffmpeg-9.0.tar.xz
fi

if [ ! -f "$FF/b/libavcodec/libavcodec.a" ]; then
  mkdir -p "$FF/b" && cd "$FF/b"
  emconfigure ../configure --target-os=none --arch=x86_32 --enable-cross-compile \
    --disable-x86asm --disable-inline-asm --disable-asm --disable-runtime-cpudetect \
    --cc=emcc --cxx=em++ --ar=emar --ranlib=emranlib --nm=emnm \
    --disable-doc --disable-programs --disable-network --disable-iconv --disable-zlib --disable-xlib --disable-sdl2 \
    --disable-everything --disable-avformat --disable-avdevice --disable-avfilter --disable-swscale --disable-swresample \
    --disable-pthreads --disable-w32threads --disable-os2threads --disable-debug --disable-stripping \
    --enable-decoder=hevc --enable-parser=hevc --optflags=-O3
  make -j"$(nproc)"
fi

# Linked in the source directory (emcc names the .wasm after the .js it writes), then copied.
cd "$HERE"
emcc -O3 -I"$FF" -I"$FF/b" hevcdec.c "$FF/b/libavcodec/libavcodec.a" "$FF/b/libavutil/libavutil.a" \
  -o "$WORK/hevcdec.js" -sMODULARIZE=1 -sEXPORT_NAME=createHevcDecoder -sENVIRONMENT=web,worker \
  -sALLOW_MEMORY_GROWTH=1 -sINITIAL_MEMORY=33554432 -sFILESYSTEM=0 \
  -sEXPORTED_FUNCTIONS=_malloc,_free -sEXPORTED_RUNTIME_METHODS=[]
cp "$WORK/hevcdec.js" "$WORK/hevcdec.wasm" "$OUT/"
cp "$FF/COPYING.LGPLv2.1" "$OUT/LICENSE-hevcdec.txt"
cd "$OUT" && sha256sum hevcdec.js hevcdec.wasm
