#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), without a sanitizer (the fuzzed code is
# safe Rust), optimised but with debug assertions and so overflow checks on (`-O -a`: without
# `-a`, `-O` turns both off), and prints executions and coverage per
# target. Corpora live in fuzz/corpus/<target> (not committed), seeded from ../shared/corpus
# when it is there; crashes land in fuzz/artifacts/<target>/ and make this exit non-zero
# (turn each into a unit test). Needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz --locked`).
#   fuzz/run.sh 600            # ten minutes each
#   fuzz/run.sh 60 sip_parse   # one target
set -uo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(sip_parse sip_framer sip_endpoint manscdp sdp rtp ps_demux ts_demux rtp_depack h26x_sps mp4_read http_head play_token gb_text node_inputs whep_offer wav flv_demux rtmp_ingest pull_inputs onvif)
fi
shared="../../shared/corpus"

seed() {
  local target="$1" dir="corpus/$1"
  mkdir -p "$dir"
  # Seeds kept with the targets (inputs no capture in shared/ has).
  [ -d "seeds/$target" ] && cp -n "seeds/$target"/* "$dir/"
  [ -d "$shared" ] || return 0
  case "$target" in
    sip_parse|sip_framer|sip_endpoint)
      find "$shared/sip" -type f -size -64k -exec cp -n {} "$dir/" \; 2>/dev/null ;;
    manscdp)
      find "$shared/sip" -type f -size -64k -exec grep -l -a "<CmdType>" {} + 2>/dev/null | xargs -r cp -n -t "$dir/" ;;
    sdp|whep_offer)
      find "$shared" -name '*.sdp' -exec cp -n {} "$dir/" \; ;;
    ps_demux)
      for f in "$shared"/ps/*; do head -c 4096 "$f" > "$dir/$(basename "$f").head"; done ;;
    rtp|rtp_depack)
      for f in "$shared"/rtp/*.rtp; do [ -f "$f" ] && head -c 4096 "$f" > "$dir/$(basename "$f").head"; done ;;
    ts_demux)
      # No TS capture in the shared corpus: a short one made by ffmpeg, when it is installed.
      [ -s "$dir/testsrc.ts" ] || { command -v ffmpeg >/dev/null && ffmpeg -v error -y -f lavfi -i testsrc=size=64x64:rate=10 -t 0.5 -c:v libx264 -f mpegts "$dir/testsrc.ts"; } ;;
    h26x_sps)
      for f in "$shared"/es/*.264; do [ -f "$f" ] && head -c 512 "$f" > "$dir/$(basename "$f").head"; done ;;
    node_inputs)
      # The recorded ZLMediaKit calls' form bodies.
      for f in "$shared"/zlm/exchanges/*.json; do
        [ -f "$f" ] && python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["request"]; sys.stdout.write(r.get("body_raw") or r.get("url",""))' "$f" > "$dir/$(basename "$f" .json).form" 2>/dev/null
      done ;;
  esac
}

failed=0
printf '%-14s %12s %8s %8s %s\n' target executions cov ft result
for t in "${targets[@]}"; do
  seed "$t"
  log="$(mktemp)"
  cargo +nightly fuzz run -O -a -s none "$t" "corpus/$t" -- -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=2048 >"$log" 2>&1
  rc=$?
  execs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
  cov=$(grep -E '^#[0-9]+' "$log" | tail -1 | grep -o 'cov: [0-9]*' | awk '{print $2}')
  ft=$(grep -E '^#[0-9]+' "$log" | tail -1 | grep -o 'ft: [0-9]*' | awk '{print $2}')
  if [ $rc -eq 0 ]; then result=ok; else result="CRASH (see $log, fuzz/artifacts/$t)"; failed=1; fi
  printf '%-14s %12s %8s %8s %s\n' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$result"
  [ $rc -eq 0 ] && rm -f "$log"
done
exit $failed
