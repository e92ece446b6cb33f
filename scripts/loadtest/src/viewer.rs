//! HTTP-FLV viewers that count bytes, notice stalls, time the first keyframe and, on the first
//! stream, how long each picture took from the generator to them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// No data for this long counts as a stall.
pub const STALL_GAP: Duration = Duration::from_secs(1);
/// Pictures are timed only from this long after connecting (the start of every stream at once
/// is not the steady state).
const LATENCY_FROM: Duration = Duration::from_secs(3);
/// FLV milliseconds per picture of the generator's 25 fps capture.
const FRAME_MS: u32 = 1000 / crate::capture::FPS;

#[derive(Debug, Default, Clone)]
pub struct ViewerStats {
    pub status: u16,
    pub bytes: u64,
    pub stalls: u32,
    /// From connect to the end of the first video keyframe tag.
    pub first_keyframe: Option<Duration>,
    /// Per picture, from its last packet leaving the generator to its tag arriving here.
    pub latencies: Vec<Duration>,
}

pub fn run(http: SocketAddr, path: &str, until: Instant, clock: Option<&crate::frame_clock::FrameClock>) -> ViewerStats {
    let mut stats = ViewerStats::default();
    let started = Instant::now();
    let Ok(mut s) = TcpStream::connect(http) else { return stats };
    let _ = s.set_read_timeout(Some(Duration::from_millis(250)));
    if s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {http}\r\n\r\n").as_bytes()).is_err() {
        return stats;
    }
    let mut head = Vec::new();
    let mut parser = FlvScan::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut last_data = Instant::now();
    let mut stalled = false;
    while Instant::now() < until {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                last_data = Instant::now();
                stalled = false;
                if stats.status == 0 {
                    head.extend_from_slice(&buf[..n]);
                    let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                    stats.status = String::from_utf8_lossy(&head[9..12]).parse().unwrap_or(0);
                    let body = head.split_off(end + 4);
                    stats.bytes += body.len() as u64;
                    parser.timed = clock.is_some();
                    if parser.feed(&body) && stats.first_keyframe.is_none() {
                        stats.first_keyframe = Some(started.elapsed());
                    }
                    continue;
                }
                stats.bytes += n as u64;
                if (parser.timed || stats.first_keyframe.is_none()) && parser.feed(&buf[..n]) && stats.first_keyframe.is_none() {
                    stats.first_keyframe = Some(started.elapsed());
                }
                if let Some(clock) = clock.filter(|_| started.elapsed() >= LATENCY_FROM) {
                    stats.latencies.extend(parser.pictures.drain(..).filter_map(|ms| clock.since_sent(u64::from(ms / FRAME_MS))));
                } else {
                    parser.pictures.clear();
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if !stalled && last_data.elapsed() > STALL_GAP {
                    stats.stalls += 1;
                    stalled = true;
                }
            }
            Err(_) => break,
        }
    }
    stats
}

/// Walks FLV tags far enough to see the first complete video keyframe, or, when `timed`, all
/// of them, noting each picture's timestamp.
#[derive(Default)]
struct FlvScan {
    skip_header: bool,
    buf: Vec<u8>,
    done: bool,
    timed: bool,
    /// FLV timestamps (ms) of the pictures whose tags came whole since the last look.
    pictures: Vec<u32>,
}

impl FlvScan {
    /// Feeds bytes; true once a whole keyframe tag has been seen.
    fn feed(&mut self, data: &[u8]) -> bool {
        if self.done && !self.timed {
            return true;
        }
        self.buf.extend_from_slice(data);
        if !self.skip_header {
            if self.buf.len() < 13 {
                return false;
            }
            self.buf.drain(..13);
            self.skip_header = true;
        }
        while self.buf.len() >= 11 {
            let size = u32::from_be_bytes([0, self.buf[1], self.buf[2], self.buf[3]]) as usize;
            if self.buf.len() < 15 + size {
                return false;
            }
            let is_picture = self.buf[0] == 9 && size >= 2 && self.buf[12] == 1;
            let is_key_frame = is_picture && self.buf[11] >> 4 == 1;
            if is_picture && self.timed {
                self.pictures.push(u32::from_be_bytes([self.buf[7], self.buf[4], self.buf[5], self.buf[6]]));
            }
            self.buf.drain(..15 + size);
            if is_key_frame && !self.done {
                self.done = true;
                if !self.timed {
                    self.buf = Vec::new();
                    return true;
                }
            }
        }
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::FlvScan;

    #[test]
    fn finds_first_keyframe_across_reads() {
        let mut m = gmv::proto::flv::FlvMuxer::new();
        let mut tags = Vec::new();
        let sps = [
            0x67, 0x64, 0x00, 0x0d, 0xac, 0xb2, 0x02, 0x83, 0xf6, 0x02, 0x20, 0x00, 0x00, 0x03, 0x00, 0x20, 0x00, 0x00, 0x06, 0x41, 0xe2, 0x85, 0x49,
        ];
        let mut data = vec![0, 0, 0, 1];
        data.extend_from_slice(&sps);
        data.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xeb, 0xe3, 0xcb, 0, 0, 0, 1, 0x65, 0x88, 1, 2, 3]);
        let frame =
            gmv::proto::frame::Frame { codec: gmv::proto::frame::Codec::H264, pts: 0, dts: 0, keyframe: true, data: bytes::Bytes::from(data) };
        m.push(&frame, &mut tags);
        let mut stream: Vec<u8> = m.preamble()[0].to_vec();
        for t in &tags {
            stream.extend_from_slice(&t.data);
        }
        let mut scan = FlvScan::default();
        let (a, b) = stream.split_at(stream.len() - 3);
        assert!(!scan.feed(a), "keyframe tag not complete yet");
        assert!(scan.feed(b));
    }
}
