//! Which RTP packets a stream takes. Anyone who finds a stream's port can send to it, so a
//! stream takes only its expected SSRCs (the one it was opened with, and the one the device
//! answered in its SDP `y=`), and once valid packets arrived, only from that source (UDP
//! address, or TCP connection). Everything else is dropped and counted. An SSRC change is
//! followed only from the locked source and only after `SSRC_CHANGE_PACKETS_MIN` packets in a
//! row carry the new one (a device that restarted its encoder), so a stray or forged packet
//! cannot switch a stream. Pure: no IO, no clock.

use std::net::SocketAddr;

/// Packets in a row with one new SSRC, from the locked source, before the stream follows it.
pub const SSRC_CHANGE_PACKETS_MIN: u32 = 32;
/// Expected SSRCs at once: the stream's own and the one the device answered.
const EXPECTED_SSRCS_MAX: usize = 2;
const RTP_HEADER_BYTES: usize = 12;

/// Where a packet came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Udp(SocketAddr),
    /// A connection of the stream's TCP port (or the one it dialled), by its number.
    Tcp(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Take,
    /// Another source than the locked one.
    ForeignSource,
    /// Not an SSRC this stream expects (or not RTP at all, before a source is locked).
    ForeignSsrc,
    /// A new SSRC from the locked source, not yet seen often enough to follow.
    SsrcChangePending,
}

#[derive(Debug, Clone)]
pub struct SourceGuard {
    expected: [Option<u32>; EXPECTED_SSRCS_MAX],
    /// Takes the first SSRC a valid packet carries (a port of its own opened without one, as
    /// ZLMediaKit's `openRtpServer` without `ssrc`); then only that one, as if expected.
    any_ssrc: bool,
    locked: Option<Origin>,
    /// A new SSRC from the locked source and how many packets in a row carried it.
    candidate: Option<(u32, u32)>,
    pub foreign_packets: u64,
    pub ssrc_changes: u64,
}

/// The SSRC of an RTP version 2 packet.
pub fn rtp_ssrc(packet: &[u8]) -> Option<u32> {
    if packet.len() < RTP_HEADER_BYTES || packet[0] >> 6 != 2 {
        return None;
    }
    Some(u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]))
}

impl SourceGuard {
    pub fn new(ssrc: u32) -> SourceGuard {
        SourceGuard { expected: [Some(ssrc), None], any_ssrc: false, locked: None, candidate: None, foreign_packets: 0, ssrc_changes: 0 }
    }

    /// Takes whichever SSRC comes first (see `any_ssrc`).
    pub fn any() -> SourceGuard {
        SourceGuard { expected: [None, None], any_ssrc: true, ..SourceGuard::new(0) }
    }

    /// Also takes `ssrc` (the device answered it in its SDP).
    pub fn expect(&mut self, ssrc: u32) {
        // Told which SSRC to take: no longer any.
        self.any_ssrc = false;
        if !self.expects(ssrc) {
            self.expected[EXPECTED_SSRCS_MAX - 1] = Some(ssrc);
        }
    }

    fn expects(&self, ssrc: u32) -> bool {
        self.expected.contains(&Some(ssrc))
    }

    pub fn locked(&self) -> Option<Origin> {
        self.locked
    }

    /// Decides on one packet and counts what it drops.
    pub fn check(&mut self, origin: Origin, packet: &[u8]) -> Verdict {
        let verdict = self.decide(origin, packet);
        if verdict != Verdict::Take {
            self.foreign_packets += 1;
        }
        verdict
    }

    fn decide(&mut self, origin: Origin, packet: &[u8]) -> Verdict {
        match self.locked {
            Some(locked) if locked != origin => Verdict::ForeignSource,
            None => match rtp_ssrc(packet) {
                Some(ssrc) if self.expects(ssrc) || self.any_ssrc => {
                    if self.any_ssrc {
                        self.any_ssrc = false;
                        self.expected = [Some(ssrc), None];
                    }
                    self.locked = Some(origin);
                    Verdict::Take
                }
                _ => Verdict::ForeignSsrc,
            },
            Some(_) => match rtp_ssrc(packet) {
                // Broken packets from the device itself go on to be counted as RTP errors.
                None => Verdict::Take,
                Some(ssrc) if self.expects(ssrc) => {
                    self.candidate = None;
                    Verdict::Take
                }
                Some(ssrc) => {
                    let seen = match self.candidate {
                        Some((s, n)) if s == ssrc => n + 1,
                        _ => 1,
                    };
                    if seen < SSRC_CHANGE_PACKETS_MIN {
                        self.candidate = Some((ssrc, seen));
                        return Verdict::SsrcChangePending;
                    }
                    self.expected = [Some(ssrc), None];
                    self.candidate = None;
                    self.ssrc_changes += 1;
                    Verdict::Take
                }
            },
        }
    }

    /// Any source may lock again (a download resumed: the device sends from a new socket).
    pub fn release(&mut self) {
        self.locked = None;
        self.candidate = None;
    }

    /// The locked TCP connection closed: the next connection with an expected SSRC may take
    /// over (devices reconnect). A UDP lock lasts as long as the stream.
    pub fn origin_closed(&mut self, origin: Origin) {
        if self.locked == Some(origin) && matches!(origin, Origin::Tcp(_)) {
            self.locked = None;
            self.candidate = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(ssrc: u32) -> Vec<u8> {
        let mut p = Vec::new();
        crate::proto::rtp::RtpPacket::write_header(&mut p, false, 96, 1, 0, ssrc);
        p.extend_from_slice(b"payload");
        p
    }

    fn udp(port: u16) -> Origin {
        Origin::Udp(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn locks_on_the_first_valid_packet_and_drops_other_sources() {
        let mut g = SourceGuard::new(7);
        assert_eq!(g.check(udp(1), &rtp(8)), Verdict::ForeignSsrc, "a foreign SSRC locks nothing");
        assert_eq!(g.check(udp(1), b"junk"), Verdict::ForeignSsrc);
        assert_eq!(g.locked(), None);
        assert_eq!(g.check(udp(2), &rtp(7)), Verdict::Take);
        assert_eq!(g.locked(), Some(udp(2)));
        assert_eq!(g.check(udp(3), &rtp(7)), Verdict::ForeignSource, "right SSRC, wrong source");
        assert_eq!(g.check(Origin::Tcp(0), &rtp(7)), Verdict::ForeignSource);
        assert_eq!(g.check(udp(2), &rtp(7)), Verdict::Take);
        assert_eq!(g.check(udp(2), b"short"), Verdict::Take, "the device's own junk is counted downstream");
        assert_eq!(g.foreign_packets, 4);
    }

    #[test]
    fn any_ssrc_takes_the_first_and_then_only_it() {
        let mut g = SourceGuard::any();
        assert_eq!(g.check(udp(1), b"junk"), Verdict::ForeignSsrc, "not RTP locks nothing");
        assert_eq!(g.check(udp(2), &rtp(5)), Verdict::Take);
        assert_eq!(g.check(udp(2), &rtp(5)), Verdict::Take);
        assert_eq!(g.check(udp(3), &rtp(5)), Verdict::ForeignSource);
        assert_eq!(g.check(udp(2), &rtp(6)), Verdict::SsrcChangePending, "a second SSRC is a change, not any");
        let mut told = SourceGuard::any();
        told.expect(9);
        assert_eq!(told.check(udp(2), &rtp(5)), Verdict::ForeignSsrc, "once told, only the one it was told");
        assert_eq!(told.check(udp(2), &rtp(9)), Verdict::Take);
    }

    #[test]
    fn the_answered_ssrc_is_taken_too() {
        let mut g = SourceGuard::new(7);
        g.expect(9);
        assert_eq!(g.check(udp(2), &rtp(9)), Verdict::Take);
        assert_eq!(g.check(udp(2), &rtp(7)), Verdict::Take);
    }

    #[test]
    fn an_ssrc_change_is_followed_only_from_the_locked_source_after_a_run() {
        let mut g = SourceGuard::new(7);
        assert_eq!(g.check(udp(2), &rtp(7)), Verdict::Take);
        // Interleaved forged packets from another source never count towards a change.
        for _ in 0..SSRC_CHANGE_PACKETS_MIN * 2 {
            assert_eq!(g.check(udp(3), &rtp(99)), Verdict::ForeignSource);
        }
        // A run broken by the old SSRC starts over.
        for _ in 0..SSRC_CHANGE_PACKETS_MIN - 1 {
            assert_eq!(g.check(udp(2), &rtp(99)), Verdict::SsrcChangePending);
        }
        assert_eq!(g.check(udp(2), &rtp(7)), Verdict::Take);
        for _ in 0..SSRC_CHANGE_PACKETS_MIN - 1 {
            assert_eq!(g.check(udp(2), &rtp(99)), Verdict::SsrcChangePending);
        }
        assert_eq!(g.check(udp(2), &rtp(99)), Verdict::Take, "followed after a run");
        assert_eq!(g.ssrc_changes, 1);
        assert_eq!(g.check(udp(2), &rtp(7)), Verdict::SsrcChangePending, "the old one is not taken any more");
    }

    #[test]
    fn a_closed_tcp_connection_lets_the_next_one_lock() {
        let mut g = SourceGuard::new(7);
        assert_eq!(g.check(Origin::Tcp(1), &rtp(7)), Verdict::Take);
        assert_eq!(g.check(Origin::Tcp(2), &rtp(7)), Verdict::ForeignSource);
        g.origin_closed(Origin::Tcp(2));
        assert_eq!(g.locked(), Some(Origin::Tcp(1)), "another connection closing changes nothing");
        g.origin_closed(Origin::Tcp(1));
        assert_eq!(g.check(Origin::Tcp(2), &rtp(7)), Verdict::Take);
        g.origin_closed(udp(2));
        assert_eq!(g.locked(), Some(Origin::Tcp(2)));
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let mut rng = crate::proto::testutil::Rng::new(9);
        let mut g = SourceGuard::new(7);
        let seed = rtp(7);
        for i in 0..10_000u16 {
            let _ = g.check(udp(i % 3), &rng.mutate(&seed));
        }
    }
}
