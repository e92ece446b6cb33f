#!/usr/bin/env bash
# Copies the console's third-party player code from the npm registry (versions pinned by
# console/package-lock.json) into console/vendor, where the binary embeds it from. Run after
# changing console/package.json; the result is committed so a build needs no npm.
# (console/vendor/hevc, the H.265 decoder, is not from npm: console/vendor/hevc/src/build.sh.)
set -euo pipefail
cd "$(dirname "$0")/../console"
npm ci --no-audit --no-fund --silent
mkdir -p vendor
cp node_modules/mpegts.js/dist/mpegts.js vendor/mpegts.js
cp node_modules/mpegts.js/LICENSE vendor/LICENSE-mpegts.js.txt
cp node_modules/hls.js/dist/hls.min.js vendor/hls.min.js
cp node_modules/hls.js/LICENSE vendor/LICENSE-hls.js.txt
for p in mpegts.js hls.js; do
  echo "$p $(node -p "require('./node_modules/$p/package.json').version") vendored into console/vendor"
done
