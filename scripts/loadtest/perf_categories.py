#!/usr/bin/env python3
"""Shares of an engine's perf samples by the work they belong to (docs/PERFORMANCE.md).

    perf record -F 700 --call-graph dwarf,16384 -p PID -o perf.data -- sleep 6
    perf script -i perf.data -F comm,ip,sym | python3 scripts/loadtest/perf_categories.py [TOP]

A sample goes to the first category, in the order below, that one of its frames names (so a
memcpy under the FLV muxer counts as FLV mux); TOP also lists the most frequent leaf symbols.
"""
import collections
import sys

CATEGORIES = [
    ("park/wake (membarrier)", ["membarrier"]),
    ("park/wake (io_uring wait, switch)", ["Parker::park", "Reactor::wait", "link_rings_and_sleep"]),
    ("io_uring submit/peek", ["io_uring_enter", "submit_one_event", "SleepableRing", "consume_rings", "io_submit", "Reactor::react", "process_shared_channels", "preempt"]),
    ("receive (epoll, recvmmsg, slab copy)", ["recvmmsg", "do_recvmmsg", "RecvBatch", "copy_into_slab", "recv_from", "udp_recvmsg", "epoll_wait", "StreamSockets"]),
    ("start-code scan", ["memchr::", "AuAssembler::scan"]),
    ("PS demux + AU assembly (copies)", ["AuAssembler", "PsDemuxer"]),
    ("FLV mux", ["FlvMuxer", "flv::tag"]),
    ("fan-out + viewer write", ["Fanout", "viewer", "http::"]),
    ("pipeline/RTP", ["Pipeline", "rtp", "Stream::", "single_port", "source::"]),
]


def main():
    top = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    shares, leaves, total = collections.Counter(), collections.Counter(), 0
    for block in sys.stdin.read().split("\n\n"):
        frames = [line.strip().split(None, 1)[-1] for line in block.strip().split("\n")[1:] if line.strip()]
        if not frames:
            continue
        total += 1
        category = next((name for name, keys in CATEGORIES if any(k in f for f in frames for k in keys)), "other")
        shares[category] += 1
        leaves[(category, frames[0][:70])] += 1
    for category, n in shares.most_common():
        print(f"{100 * n / total:5.1f}%  {category}")
    print("samples", total)
    for (category, leaf), n in leaves.most_common(top):
        print(f"{100 * n / total:5.1f}%  [{category}] {leaf}")


if __name__ == "__main__":
    main()
