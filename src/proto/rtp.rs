//! RTP (RFC 3550) header parsing, sequence tracking and a bounded reorder buffer.
//! Sans-IO: packets in, ordered packets and loss counts out.

use bytes::Bytes;
use std::collections::VecDeque;

pub const RTP_HEADER_BYTES_MIN: usize = 12;
/// Largest RTP packet accepted from the wire (UDP datagram / RFC 4571 frame).
pub const RTP_PACKET_BYTES_MAX: usize = 65_535;
/// How many out-of-order packets are held while waiting for a missing one.
pub const REORDER_PACKETS_MAX: usize = 64;
/// How long a gap may stay open before the packets behind it are released (and the gap
/// counted lost): a late packet is worth waiting for only this long on a live stream.
pub const REORDER_WAIT_MS_MAX: u64 = 40;
/// A jump larger than this (either direction) is a sender restart, not reordering.
pub const SEQ_JUMP_RESET_MAX: u16 = 3_000;
/// Packets in a row, each following the one before, from behind what was already released:
/// a sender that restarted its sequence close below where it was (a camera that always starts
/// at 0), not duplicates. They are held meanwhile and come out when the restart is taken.
pub const SEQ_RESTART_RUN_MIN: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtpError {
    TooShort { len: usize },
    TooLong { len: usize },
    BadVersion { version: u8 },
    CsrcOverrun,
    ExtensionOverrun,
    PaddingOverrun { padding: u8 },
}

impl std::fmt::Display for RtpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}
impl std::error::Error for RtpError {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// Payload with padding removed; shares the datagram's allocation.
    pub payload: Bytes,
}

impl RtpPacket {
    pub fn parse(data: Bytes) -> Result<RtpPacket, RtpError> {
        let len = data.len();
        if len < RTP_HEADER_BYTES_MIN {
            return Err(RtpError::TooShort { len });
        }
        if len > RTP_PACKET_BYTES_MAX {
            return Err(RtpError::TooLong { len });
        }
        let b0 = data[0];
        let version = b0 >> 6;
        if version != 2 {
            return Err(RtpError::BadVersion { version });
        }
        let has_padding = b0 & 0x20 != 0;
        let has_extension = b0 & 0x10 != 0;
        let csrc_count = (b0 & 0x0f) as usize;
        let b1 = data[1];
        let mut offset = RTP_HEADER_BYTES_MIN + 4 * csrc_count;
        if offset > len {
            return Err(RtpError::CsrcOverrun);
        }
        if has_extension {
            if offset + 4 > len {
                return Err(RtpError::ExtensionOverrun);
            }
            let words = u16::from_be_bytes([data[offset + 2], data[offset + 3]]) as usize;
            offset += 4 + 4 * words;
            if offset > len {
                return Err(RtpError::ExtensionOverrun);
            }
        }
        let mut end = len;
        if has_padding {
            let padding = data[len - 1];
            if padding == 0 || offset + padding as usize > len {
                return Err(RtpError::PaddingOverrun { padding });
            }
            end -= padding as usize;
        }
        Ok(RtpPacket {
            marker: b1 & 0x80 != 0,
            payload_type: b1 & 0x7f,
            sequence: u16::from_be_bytes([data[2], data[3]]),
            timestamp: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
            ssrc: u32::from_be_bytes([data[8], data[9], data[10], data[11]]),
            payload: data.slice(offset..end),
        })
    }

    /// Writes a minimal (no CSRC, no extension) header; used by packetizers and tests.
    pub fn write_header(out: &mut Vec<u8>, marker: bool, payload_type: u8, sequence: u16, timestamp: u32, ssrc: u32) {
        out.push(0x80);
        out.push(((marker as u8) << 7) | (payload_type & 0x7f));
        out.extend_from_slice(&sequence.to_be_bytes());
        out.extend_from_slice(&timestamp.to_be_bytes());
        out.extend_from_slice(&ssrc.to_be_bytes());
    }
}

/// Counters for one stream's packet sequence.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SeqStats {
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub resets: u64,
}

/// Restores sequence order with a bounded window. Packets come out in order; a gap still
/// open when the window is full, or `REORDER_WAIT_MS_MAX` after it opened, is counted as
/// loss and skipped. Time comes from the caller (milliseconds on any monotonic clock).
#[derive(Debug, Default)]
pub struct ReorderBuffer {
    /// Next sequence number expected out; None before the first packet.
    next: Option<u16>,
    /// Held packets, kept sorted by distance from `next`.
    held: VecDeque<RtpPacket>,
    /// When the current gap opened (the first packet held behind it arrived).
    gap_since_ms: Option<u64>,
    /// A run of consecutive packets from behind `next`: a restart once it is long enough.
    restart_run: Vec<RtpPacket>,
    pub stats: SeqStats,
}

impl ReorderBuffer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one packet that arrived at `now_ms`; in-order packets (and any held ones it
    /// releases) are appended to `out`.
    pub fn push(&mut self, packet: RtpPacket, now_ms: u64, out: &mut Vec<RtpPacket>) {
        self.push_inner(packet, out);
        match (self.held.is_empty(), self.gap_since_ms) {
            (true, _) => self.gap_since_ms = None,
            (false, None) => self.gap_since_ms = Some(now_ms),
            (false, Some(since)) if now_ms.saturating_sub(since) >= REORDER_WAIT_MS_MAX => {
                // Waited long enough: release up to the next gap, which starts its own wait.
                self.skip_gap(out);
                self.gap_since_ms = (!self.held.is_empty()).then_some(now_ms);
            }
            _ => {}
        }
    }

    fn push_inner(&mut self, packet: RtpPacket, out: &mut Vec<RtpPacket>) {
        self.stats.received += 1;
        let Some(next) = self.next else {
            self.next = Some(packet.sequence.wrapping_add(1));
            out.push(packet);
            return;
        };
        let ahead = packet.sequence.wrapping_sub(next);
        let behind = next.wrapping_sub(packet.sequence);
        if !(behind > 0 && behind <= SEQ_JUMP_RESET_MAX) {
            self.restart_run.clear();
        }
        if ahead == 0 {
            self.next = Some(next.wrapping_add(1));
            out.push(packet);
            self.release_in_order(out);
        } else if ahead < SEQ_JUMP_RESET_MAX {
            // A gap: hold the packet until the gap fills or the window overflows.
            let pos = self.held.iter().position(|p| p.sequence.wrapping_sub(next) >= ahead);
            match pos {
                Some(i) if self.held[i].sequence == packet.sequence => self.stats.duplicates += 1,
                Some(i) => self.held.insert(i, packet),
                None => self.held.push_back(packet),
            }
            while self.held.len() > REORDER_PACKETS_MAX {
                self.skip_gap(out);
            }
        } else if behind <= SEQ_JUMP_RESET_MAX {
            // Already released (or declared lost): a late or duplicate packet, unless a run
            // of them follow each other (a restart a little below).
            self.stats.duplicates += 1;
            let follows = self.restart_run.last().is_none_or(|p| p.sequence.wrapping_add(1) == packet.sequence);
            if !follows {
                self.restart_run.clear();
            }
            self.restart_run.push(packet);
            if self.restart_run.len() >= SEQ_RESTART_RUN_MIN {
                self.stats.resets += 1;
                self.stats.duplicates -= self.restart_run.len() as u64;
                self.flush(out);
                let run = std::mem::take(&mut self.restart_run);
                self.next = run.last().map(|p| p.sequence.wrapping_add(1));
                out.extend(run);
            }
        } else {
            // Sender restarted its sequence: flush what we hold and start over.
            self.stats.resets += 1;
            self.flush(out);
            self.next = Some(packet.sequence.wrapping_add(1));
            out.push(packet);
        }
    }

    /// Releases everything held, counting the holes as lost.
    pub fn flush(&mut self, out: &mut Vec<RtpPacket>) {
        while !self.held.is_empty() {
            self.skip_gap(out);
        }
        self.gap_since_ms = None;
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }

    fn skip_gap(&mut self, out: &mut Vec<RtpPacket>) {
        let (Some(next), Some(first)) = (self.next, self.held.front()) else { return };
        let gap = first.sequence.wrapping_sub(next);
        self.stats.lost += u64::from(gap);
        self.next = Some(first.sequence);
        self.release_in_order(out);
    }

    fn release_in_order(&mut self, out: &mut Vec<RtpPacket>) {
        while let (Some(next), Some(first)) = (self.next, self.held.front()) {
            if first.sequence != next {
                break;
            }
            self.stats.reordered += 1;
            self.next = Some(next.wrapping_add(1));
            out.push(self.held.pop_front().expect("front exists"));
        }
    }
}

/// RFC 4571 framing (2-byte big-endian length before each RTP packet) for RTP over TCP.
/// Sans-IO: push whatever the socket gave, pop whole packets. Holds at most one frame plus
/// one read.
#[derive(Debug, Default)]
pub struct Rfc4571Deframer {
    buf: bytes::BytesMut,
}

impl Rfc4571Deframer {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Next complete frame, if buffered. Zero-length frames are skipped.
    pub fn pop(&mut self) -> Option<Bytes> {
        loop {
            if self.buf.len() < 2 {
                return None;
            }
            let len = usize::from(u16::from_be_bytes([self.buf[0], self.buf[1]]));
            if self.buf.len() < 2 + len {
                return None;
            }
            let _ = self.buf.split_to(2);
            if len > 0 {
                return Some(self.buf.split_to(len).freeze());
            }
        }
    }

    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// Splits payloads into RTP packets (marker on the last one), tracking the sequence number.
pub struct RtpPacketizer {
    pub ssrc: u32,
    pub payload_type: u8,
    pub sequence: u16,
}

impl RtpPacketizer {
    pub fn packetize(&mut self, data: &[u8], timestamp: u32, payload_bytes_max: usize, out: &mut Vec<Vec<u8>>) {
        let chunks = data.chunks(payload_bytes_max.max(1));
        let n = chunks.len();
        for (i, chunk) in chunks.enumerate() {
            let mut p = Vec::with_capacity(RTP_HEADER_BYTES_MIN + chunk.len());
            RtpPacket::write_header(&mut p, i + 1 == n, self.payload_type, self.sequence, timestamp, self.ssrc);
            p.extend_from_slice(chunk);
            self.sequence = self.sequence.wrapping_add(1);
            out.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u16) -> RtpPacket {
        let mut raw = Vec::new();
        RtpPacket::write_header(&mut raw, false, 96, seq, 1000, 7);
        raw.extend_from_slice(&[1, 2, 3]);
        RtpPacket::parse(Bytes::from(raw)).unwrap()
    }

    fn seqs(out: &[RtpPacket]) -> Vec<u16> {
        out.iter().map(|p| p.sequence).collect()
    }

    #[test]
    fn parses_header_with_csrc_extension_and_padding() {
        let mut raw = vec![0xb1, 0xe0, 0x12, 0x34, 0, 0, 0x10, 0, 0xde, 0xad, 0xbe, 0xef];
        raw.extend_from_slice(&[0, 0, 0, 9]); // one CSRC
        raw.extend_from_slice(&[0xbe, 0xde, 0, 1, 1, 2, 3, 4]); // extension, one word
        raw.extend_from_slice(&[0xaa, 0xbb]); // payload
        raw.extend_from_slice(&[0, 0, 3]); // padding of 3
        let p = RtpPacket::parse(Bytes::from(raw)).unwrap();
        assert!(p.marker);
        assert_eq!(p.payload_type, 96);
        assert_eq!(p.sequence, 0x1234);
        assert_eq!(p.timestamp, 0x1000);
        assert_eq!(p.ssrc, 0xdeadbeef);
        assert_eq!(&p.payload[..], &[0xaa, 0xbb]);
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(RtpPacket::parse(Bytes::from_static(&[0x80; 5])), Err(RtpError::TooShort { len: 5 }));
        assert_eq!(RtpPacket::parse(Bytes::from_static(&[0x40; 12])), Err(RtpError::BadVersion { version: 1 }));
        let csrc = [0x8f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(RtpPacket::parse(Bytes::copy_from_slice(&csrc)), Err(RtpError::CsrcOverrun));
        let ext = [0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
        assert_eq!(RtpPacket::parse(Bytes::copy_from_slice(&ext)), Err(RtpError::ExtensionOverrun));
        let pad = [0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 40];
        assert_eq!(RtpPacket::parse(Bytes::copy_from_slice(&pad)), Err(RtpError::PaddingOverrun { padding: 40 }));
    }

    #[test]
    fn reorders_within_window_and_counts_loss() {
        let mut r = ReorderBuffer::new();
        let mut out = Vec::new();
        for s in [10, 12, 11, 13, 15, 16] {
            r.push(packet(s), 0, &mut out);
        }
        assert_eq!(seqs(&out), vec![10, 11, 12, 13]);
        r.flush(&mut out);
        assert_eq!(seqs(&out), vec![10, 11, 12, 13, 15, 16]);
        assert_eq!(r.stats.lost, 1);
    }

    #[test]
    fn a_gap_is_given_up_after_the_wait_not_the_window() {
        let mut r = ReorderBuffer::new();
        let mut out = Vec::new();
        r.push(packet(1), 0, &mut out);
        r.push(packet(3), 10, &mut out); // 2 missing: held
        r.push(packet(4), 20, &mut out);
        assert_eq!(seqs(&out), vec![1]);
        r.push(packet(5), 10 + REORDER_WAIT_MS_MAX, &mut out);
        assert_eq!(seqs(&out), vec![1, 3, 4, 5], "released after the wait, far below the window");
        assert_eq!(r.stats.lost, 1);
        r.push(packet(2), 60, &mut out);
        assert_eq!(r.stats.duplicates, 1, "too late: counted, not delivered");
    }

    #[test]
    fn sequence_wraps() {
        let mut r = ReorderBuffer::new();
        let mut out = Vec::new();
        for s in [65534, 0, 65535, 1] {
            r.push(packet(s), 0, &mut out);
        }
        assert_eq!(seqs(&out), vec![65534, 65535, 0, 1]);
        assert_eq!(r.stats.lost, 0);
    }

    #[test]
    fn window_overflow_skips_gap_and_stays_bounded() {
        let mut r = ReorderBuffer::new();
        let mut out = Vec::new();
        r.push(packet(0), 0, &mut out);
        for s in 2..(2 + REORDER_PACKETS_MAX as u16 + 1) {
            r.push(packet(s), 0, &mut out);
            assert!(r.held() <= REORDER_PACKETS_MAX);
        }
        assert_eq!(r.stats.lost, 1);
        assert_eq!(out.len(), REORDER_PACKETS_MAX + 2);
    }

    #[test]
    fn duplicates_and_restarts() {
        let mut r = ReorderBuffer::new();
        let mut out = Vec::new();
        for s in [100, 101, 101, 100, 40_000, 40_001] {
            r.push(packet(s), 0, &mut out);
        }
        assert_eq!(seqs(&out), vec![100, 101, 40_000, 40_001]);
        assert_eq!(r.stats.duplicates, 2);
        assert_eq!(r.stats.resets, 1);
    }

    #[test]
    fn a_restart_a_little_below_is_taken_after_a_run_and_loses_nothing() {
        let mut r = ReorderBuffer::new();
        let mut out = Vec::new();
        for s in 200..300 {
            r.push(packet(s), 0, &mut out);
        }
        // Scattered old packets (duplicates) do not make a run.
        for s in [250, 252, 254, 251] {
            r.push(packet(s), 0, &mut out);
        }
        assert_eq!((out.len(), r.stats.duplicates, r.stats.resets), (100, 4, 0));
        // The sender starts over at 0: held until the run proves it, then every packet out.
        for s in 0..SEQ_RESTART_RUN_MIN as u16 - 1 {
            r.push(packet(s), 0, &mut out);
        }
        assert_eq!(out.len(), 100);
        for s in SEQ_RESTART_RUN_MIN as u16 - 1..50 {
            r.push(packet(s), 0, &mut out);
        }
        assert_eq!(seqs(&out[100..]), (0..50).collect::<Vec<u16>>());
        assert_eq!((r.stats.duplicates, r.stats.resets, r.stats.lost), (4, 1, 0));
    }

    #[test]
    fn rfc4571_deframes_across_reads() {
        let mut d = Rfc4571Deframer::default();
        d.push(&[0, 3, 1, 2]);
        assert_eq!(d.pop(), None);
        d.push(&[3, 0, 0, 0, 1, 9, 0]);
        assert_eq!(d.pop().as_deref(), Some(&[1u8, 2, 3][..]));
        assert_eq!(d.pop().as_deref(), Some(&[9u8][..]));
        assert_eq!(d.pop(), None);
        assert_eq!(d.buffered(), 1);
    }

    #[test]
    fn fuzz_parse_and_reorder_never_panic() {
        let mut rng = crate::proto::testutil::Rng::new(1);
        let mut r = ReorderBuffer::new();
        let mut out = Vec::new();
        for _ in 0..20_000 {
            let data = rng.bytes(40);
            if let Ok(p) = RtpPacket::parse(Bytes::from(data)) {
                r.push(p, 0, &mut out);
                assert!(r.held() <= REORDER_PACKETS_MAX);
            }
            out.clear();
        }
    }
}
