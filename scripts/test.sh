#!/usr/bin/env bash
# The test command (README "Two commands"): installs what the tests need when it is missing
# (Debian/Ubuntu packages: ffmpeg/ffprobe make and check media, sip-tester is sipp, openssl makes
# the HTTPS tests' certificates, Chromium and Node run the browser tests, whose npm packages come
# from the registry by tests/browser/package-lock.json), then runs every test. Extra arguments go
# to `cargo test` (e.g. `scripts/test.sh --test gb28181`).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in ffmpeg ffprobe sipp openssl chromium node npm; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing what the tests need (missing: ${missing[*]})"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends ffmpeg sip-tester openssl >/dev/null
  command -v node >/dev/null && command -v npm >/dev/null || $sudo apt-get install -y -qq nodejs npm >/dev/null
  $sudo apt-get install -y -qq chromium >/dev/null
fi
(cd tests/browser && npm ci --no-audit --no-fund --silent)
ffmpeg -version | head -1
# glommio needs io_uring and a locked-memory limit of at least 512 KiB.
echo "kernel $(uname -r), ulimit -l $(ulimit -l)"
cargo test --workspace --locked "$@"
