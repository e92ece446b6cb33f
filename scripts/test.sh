#!/usr/bin/env bash
# The test command (README "Two commands"): installs what the tests need when it is missing
# (Debian/Ubuntu packages: ffmpeg/ffprobe make and check media, sip-tester is sipp, openssl makes
# the HTTPS tests' certificates, Chromium and Node run the browser tests, whose npm packages come
# from the registry by tests/browser/package-lock.json, a CJK font draws the zh-CN console in
# their screenshots, PostgreSQL holds the registry two controls share, GStreamer's RTSP server
# with its encoders is the RTSP camera pull proxies are tested against), starts PostgreSQL unless
# GMV_TEST_POSTGRES names one, then runs every test.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh --test gb28181`).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in ffmpeg ffprobe sipp openssl chromium node npm pg_lsclusters; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
# A Chinese font, or the zh-CN console's screenshots (tests/console_upstreams.rs) show boxes.
command -v fc-list >/dev/null && [ -n "$(fc-list :lang=zh)" ] || missing+=("a CJK font")
# tests/rtsp/serve.py: GStreamer's RTSP server from Debian's python3 (x264enc, x265enc, avenc_aac),
# and GIO's TLS backend (glib-networking) for its rtsps:// mode.
rtsp_server_ok() {
  /usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0'); gi.require_version('Gst', '1.0'); gi.require_version('Gio', '2.0'); from gi.repository import Gst, Gio; Gst.init(None); assert all(Gst.ElementFactory.find(e) for e in ('x264enc', 'x265enc', 'avenc_aac')); assert Gio.TlsBackend.get_default().supports_tls()" 2>/dev/null
}
rtsp_server_ok || missing+=("GStreamer's RTSP server")
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing what the tests need (missing: ${missing[*]})"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends ffmpeg sip-tester openssl >/dev/null
  command -v node >/dev/null && command -v npm >/dev/null || $sudo apt-get install -y -qq nodejs npm >/dev/null
  $sudo apt-get install -y -qq chromium >/dev/null
  [ -n "$(fc-list :lang=zh 2>/dev/null)" ] || $sudo apt-get install -y -qq --no-install-recommends fonts-wqy-microhei >/dev/null
  command -v pg_lsclusters >/dev/null || $sudo apt-get install -y -qq postgresql >/dev/null
  rtsp_server_ok || $sudo apt-get install -y -qq --no-install-recommends python3-gi gir1.2-gst-rtsp-server-1.0 glib-networking \
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav >/dev/null
fi
if [ -z "${GMV_TEST_POSTGRES:-}" ]; then
  # The packaged cluster (made if missing), started, with a test role that may create the
  # databases the tests make for themselves.
  sudo="" as_postgres="runuser -u postgres --"
  [ "$(id -u)" -eq 0 ] || { sudo=sudo; as_postgres="sudo -u postgres"; }
  if [ -z "$(pg_lsclusters -h)" ]; then
    $sudo pg_createcluster "$(ls /usr/lib/postgresql | sort -V | tail -1)" main >/dev/null
  fi
  read -r pg_version pg_cluster pg_port pg_status _ < <(pg_lsclusters -h | head -1)
  # Started with only stdin/out/err: a server that outlives this script must not keep the
  # caller's other descriptors (a lock file, a pipe a CI runner waits on) open.
  [ "$pg_status" = online ] || (
    for fd in $(ls /proc/$BASHPID/fd); do [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done
    $sudo pg_ctlcluster "$pg_version" "$pg_cluster" start
  )
  $as_postgres psql -p "$pg_port" -qtc "SELECT 1 FROM pg_roles WHERE rolname = 'gmv_test'" | grep -q 1 \
    || $as_postgres psql -p "$pg_port" -qc "CREATE ROLE gmv_test LOGIN CREATEDB PASSWORD 'gmv_test'"
  export GMV_TEST_POSTGRES="host=127.0.0.1 port=$pg_port user=gmv_test password=gmv_test dbname=postgres"
  echo "PostgreSQL $pg_version on port $pg_port for the shared-registry tests"
fi
(cd tests/browser && npm ci --no-audit --no-fund --silent)
ffmpeg -version | head -1
# glommio needs io_uring and a locked-memory limit of at least 512 KiB.
echo "kernel $(uname -r), ulimit -l $(ulimit -l)"
cargo test --workspace --locked "$@"
