#!/usr/bin/env bash
# Ramps the number of 2 Mbit/s camera streams against a fresh gmv each step and prints a
# markdown table; the last line names the largest N with zero loss and CPU headroom.
# Usage: scripts/loadtest/ramp.sh [N ...]   (default: 100 250 500 1000 1500 2000)
# Loopback only; each step is bounded (DURATION_S of sending plus set-up).
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION_S=${DURATION_S:-20}
WARMUP_S=${WARMUP_S:-10}
# Extra gmv-loadtest flags, e.g. LOADTEST_ARGS="--no-covers --single-port --with-bare"
LOADTEST_ARGS=${LOADTEST_ARGS:-}
VIEWERS=${VIEWERS:-10}
SENDERS=${SENDERS:-2}
# "Headroom": the engine uses at most this share of the machine's CPU.
HEADROOM_CPU_PCT=${HEADROOM_CPU_PCT:-$(( $(nproc) * 100 * 3 / 4 ))}
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(100 250 500 1000 1500 2000)

cargo build --release --locked -p gmv -p gmv-loadtest >&2
echo "| streams | sent Mbit/s | sent pkt/s | send pace | engine missing | engine lost | kernel drops | engine CPU % | bare CPU % (before/after) | × bare | × per-stream bare | RSS MiB | viewers ok | late viewer 1st keyframe ms | frame→viewer p50 ms | shard spread % |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
best=0
for n in "${steps[@]}"; do
  # shellcheck disable=SC2086
  out=$(./target/release/gmv-loadtest --gmv target/release/gmv --streams "$n" --duration-s "$DURATION_S" \
        --warmup-s "$WARMUP_S" --viewers "$VIEWERS" --senders "$SENDERS" $LOADTEST_ARGS)
  row=$(python3 - "$out" "$DURATION_S" "$HEADROOM_CPU_PCT" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); dur = float(sys.argv[2]); cap = float(sys.argv[3])
pace = "on time" if r["seconds"] <= dur * 1.05 else f'{dur / r["seconds"]:.0%} of real time'
clean = (r["engine_missing_packets"] == 0 and r["engine_lost"] == 0 and r["kernel_udp_rcvbuf_errors"] == 0
         and r["viewers_ok"] == r["viewers"] and pace == "on time" and r["engine_cpu_pct"] <= cap)
b = r.get("bare_cpu_pct")
bare = f'{b[0]:.0f}/{b[1]:.0f} | {r["cpu_vs_bare"]:.2f} | {r["cpu_vs_per_stream_bare"]:.2f}' if b else "- | - | -"
print(f'| {r["streams"]} | {r["sent_mbit_s"]:.0f} | {r["sent_pps"]:.0f} | {pace} | {r["engine_missing_packets"]} | {r["engine_lost"]} | '
      f'{r["kernel_udp_rcvbuf_errors"]} | {r["engine_cpu_pct"]:.0f} | {bare} | {r["engine_rss_mib"]:.0f} | {r["viewers_ok"]}/{r["viewers"]} | '
      f'{r["late_viewer_first_keyframe_ms"]} | {r["frame_to_viewer_ms_p50"]} | {r["engine_shard_spread_pct"]} |' + ("" if clean else " ✗"))
PY
)
  echo "$row"
  case "$row" in *"✗"*) ;; *) best=$n ;; esac
done
echo
echo "largest clean N (zero loss, viewers without stalls, sender on time, engine CPU <= ${HEADROOM_CPU_PCT}%): $best"
