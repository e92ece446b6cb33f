//! Hot-path throughput per core: RTP parse, PS demux, H.264 RTP depacketize, TS mux, FLV mux,
//! and per packet the whole ingest (a stream's pipeline, then with the single port's batched
//! receive from a loopback socket in front of it).
//! `cargo bench --bench media` (figures in MB/s of input or packets/s, one thread).

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use gmv::proto::flv::FlvMuxer;
use gmv::proto::frame::{Codec, Frame};
use gmv::proto::ps::PsDemuxer;
use gmv::proto::rtp::{RtpPacket, RtpPacketizer};
use gmv::proto::rtp_depack::Depacketizer;
use std::hint::black_box;

const SPS: &[u8] = &[
    0x67, 0x64, 0x00, 0x28, 0xac, 0xd9, 0x40, 0x78, 0x02, 0x27, 0xe5, 0x84, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xc8, 0x3c, 0x60,
    0xc6, 0x58,
];
const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];

/// One second of a 2 Mbit/s, 25 fps camera: a 60 KB IDR and 24 P-frames of ~8 KB.
fn camera_second() -> Vec<Frame> {
    (0..25u64)
        .map(|i| {
            let key = i == 0;
            let mut data = Vec::new();
            if key {
                for ps in [SPS, PPS] {
                    data.extend_from_slice(&[0, 0, 0, 1]);
                    data.extend_from_slice(ps);
                }
            }
            data.extend_from_slice(&[0, 0, 0, 1, if key { 0x65 } else { 0x41 }, 0x88]);
            let len = if key { 60_000 } else { 8_000 };
            data.extend((0..len).map(|j| ((j * 7 + i as usize) % 255) as u8 | 1));
            Frame { codec: Codec::H264, pts: i * 3600, dts: i * 3600, keyframe: key, data: Bytes::from(data) }
        })
        .collect()
}

fn ps_packets() -> Vec<Bytes> {
    gmv::sim::ps_rtp_packets(&camera_second(), 1).into_iter().flatten().map(Bytes::from).collect()
}

fn bench(c: &mut Criterion) {
    let packets = ps_packets();
    let total: usize = packets.iter().map(Bytes::len).sum();

    let mut g = c.benchmark_group("rtp_parse");
    g.throughput(Throughput::Bytes(total as u64));
    g.bench_function("camera_second", |b| {
        b.iter(|| {
            for p in &packets {
                black_box(RtpPacket::parse(p.clone()).unwrap());
            }
        })
    });
    g.finish();

    let payloads: Vec<(Bytes, u32)> = packets
        .iter()
        .map(|p| {
            let r = RtpPacket::parse(p.clone()).unwrap();
            (r.payload, r.timestamp)
        })
        .collect();
    let ps_bytes: usize = payloads.iter().map(|(p, _)| p.len()).sum();
    let mut g = c.benchmark_group("ps_demux");
    g.throughput(Throughput::Bytes(ps_bytes as u64));
    g.bench_function("camera_second", |b| {
        b.iter_batched(
            PsDemuxer::new,
            |mut d| {
                let mut out = Vec::with_capacity(64);
                for (p, ts) in &payloads {
                    d.push(p, *ts, &mut out);
                    out.clear();
                }
                d
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();

    // What `ffmpeg -f rtp` sends: FU-A fragments of 1400 bytes.
    let frames = camera_second();
    let mut rtp = Vec::new();
    let mut pk = RtpPacketizer { ssrc: 1, payload_type: 96, sequence: 0 };
    for f in &frames {
        for nal in gmv::proto::h26x::nal_units(&f.data) {
            if nal.len() <= 1400 {
                pk.packetize(nal, f.pts as u32, 1400, &mut rtp);
                continue;
            }
            let (header, body) = (nal[0], &nal[1..]);
            let chunks: Vec<&[u8]> = body.chunks(1398).collect();
            for (i, chunk) in chunks.iter().enumerate() {
                let fu_header = (header & 0x1f) | if i == 0 { 0x80 } else { 0 } | if i + 1 == chunks.len() { 0x40 } else { 0 };
                let mut payload = vec![(header & 0xe0) | 28, fu_header];
                payload.extend_from_slice(chunk);
                pk.packetize(&payload, f.pts as u32, 1400, &mut rtp);
            }
        }
    }
    let rtp: Vec<RtpPacket> = rtp.into_iter().map(|p| RtpPacket::parse(Bytes::from(p)).unwrap()).collect();
    let rtp_bytes: usize = rtp.iter().map(|p| p.payload.len()).sum();
    let mut g = c.benchmark_group("h264_depacketize");
    g.throughput(Throughput::Bytes(rtp_bytes as u64));
    g.bench_function("camera_second", |b| {
        b.iter_batched(
            || Depacketizer::new(Codec::H264),
            |mut d| {
                let mut out = Vec::with_capacity(4);
                for p in &rtp {
                    d.push(p, &mut out);
                    out.clear();
                }
                d
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let es_bytes: usize = frames.iter().map(|f| f.data.len()).sum();
    let mut g = c.benchmark_group("ts_mux");
    g.throughput(Throughput::Bytes(es_bytes as u64));
    g.bench_function("camera_second", |b| {
        let mut out = Vec::with_capacity(es_bytes * 11 / 10);
        b.iter(|| {
            let mut m = gmv::proto::ts::TsMuxer::new(Some(Codec::H264), None);
            out.clear();
            m.write_tables(&mut out);
            for f in &frames {
                m.write_frame(f, &mut out);
            }
            black_box(out.len())
        })
    });
    g.finish();

    ingest_per_packet(c, &packets);

    let mut g = c.benchmark_group("flv_mux");
    g.throughput(Throughput::Bytes(es_bytes as u64));
    g.bench_function("camera_second", |b| {
        b.iter_batched(
            FlvMuxer::new,
            |mut m| {
                let mut out = Vec::with_capacity(4);
                for f in &frames {
                    m.push(f, &mut out);
                    out.clear();
                }
                m
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// A stream's whole pipeline per packet (RTP parse, reorder, PS demux, retime, FLV mux), alone
/// and behind the single port's receive (recvmmsg from a loopback socket, copy into a slab).
fn ingest_per_packet(c: &mut Criterion, packets: &[Bytes]) {
    use gmv::shard::pipeline::Pipeline;
    let mut g = c.benchmark_group("ingest_per_packet");
    g.throughput(Throughput::Elements(packets.len() as u64));
    g.bench_function("pipeline", |b| {
        b.iter_batched(
            || Pipeline::new(Default::default()),
            |mut p| {
                let mut tags = Vec::new();
                for (i, pk) in packets.iter().enumerate() {
                    p.on_packet(pk.clone(), i as u64, &mut tags);
                    tags.clear();
                }
                p
            },
            BatchSize::SmallInput,
        )
    });
    // What a device's stream checks before the pipeline: allowed source, lock, expected SSRC.
    g.bench_function("source_guard", |b| {
        use gmv::shard::source::{Origin, SourceGuard, SourceRule};
        let device = std::net::SocketAddr::from(([192, 0, 2, 8], 6000));
        let ssrc = gmv::shard::source::rtp_ssrc(&packets[0]).expect("RTP");
        b.iter_batched(
            || SourceGuard::new(ssrc, SourceRule::device(&[device.ip(), "192.0.2.9".parse().unwrap()], true)),
            |mut guard| {
                for (i, pk) in packets.iter().enumerate() {
                    assert!(guard.check(Origin::Udp(device), pk, i as u64).taken());
                }
                guard
            },
            BatchSize::SmallInput,
        )
    });
    let rx = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    // Room for the camera-second queued at once (about 2.3 KB of kernel memory each).
    rx.set_recv_buffer_size(4 << 20).unwrap();
    rx.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    let rx: std::net::UdpSocket = rx.into();
    let to = rx.local_addr().unwrap();
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&rx);
    let mut batch = gmv::shard::recv_batch::RecvBatch::new(gmv::shard::stream::UDP_DATAGRAM_BYTES_MAX);
    g.bench_function("recvmmsg_and_pipeline", |b| {
        b.iter_batched(
            || {
                for pk in packets {
                    tx.send_to(pk, to).unwrap();
                }
                Pipeline::new(Default::default())
            },
            |mut p| {
                let (mut tags, mut taken, mut misses) = (Vec::new(), 0, 0u32);
                while taken < packets.len() {
                    let Ok(n) = batch.recv(fd) else {
                        misses += 1;
                        assert!(misses < 10_000_000, "the kernel dropped datagrams of the camera-second");
                        continue;
                    };
                    for i in 0..n {
                        let (packet, _) = batch.take(i);
                        p.on_packet(packet, taken as u64, &mut tags);
                        tags.clear();
                        taken += 1;
                    }
                }
                p
            },
            // One setup, then its routine: queued datagrams of several setups would overflow.
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
