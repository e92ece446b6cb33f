//! Which RTP packets a stream takes. Anyone who finds a stream's port can send to it, so a
//! stream takes only its expected SSRCs (the one it was opened with, and the one the device
//! answered in its SDP `y=`), only from its allowed sources (a device's stream: the device's
//! addresses; empty: anyone), and once valid packets arrived, only from that source (UDP
//! address, or TCP connection). Everything else is dropped and counted. An SSRC change is
//! followed only from the locked source and only after `SSRC_CHANGE_PACKETS_MIN` packets in a
//! row carry the new one (a device that restarted its encoder), so a stray or forged packet
//! cannot switch a stream. A device that ignores the offered SSRC (`learn_ssrc`) has its first
//! SSRC taken, from an allowed source only. Pure: no IO; time is an input.

use crate::proto::ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// Packets in a row with one new SSRC, from the locked source, before the stream follows it.
pub const SSRC_CHANGE_PACKETS_MIN: u32 = 32;
/// A locked source silent this long gives way to an allowed source sending an expected SSRC
/// (a camera that restarted and sends from a new port).
pub const SOURCE_SILENT_MOVE_MS: u64 = 2_000;
/// Address ranges a stream takes media from (a device's signalling and SDP addresses; what an
/// API request names).
pub const SOURCE_NETS_MAX: usize = 4;
// A device's stream takes its signalling address, its answer's c= and the address dialled.
const _: () = assert!(SOURCE_NETS_MAX >= 3);
/// Expected SSRCs at once: the stream's own and the one the device answered.
const EXPECTED_SSRCS_MAX: usize = 2;
const RTP_HEADER_BYTES: usize = 12;

/// Where a packet came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Udp(SocketAddr),
    /// A connection of the stream's TCP port (or the one it dialled), by its number, and its
    /// peer's address.
    Tcp {
        conn: u64,
        ip: IpAddr,
    },
}

impl Origin {
    pub fn ip(&self) -> IpAddr {
        match self {
            Origin::Udp(addr) => addr.ip(),
            Origin::Tcp { ip, .. } => *ip,
        }
    }
}

/// Whom a stream takes media from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceRule {
    /// Allowed source ranges (at most `SOURCE_NETS_MAX`); empty: the first sender locks.
    pub nets: Vec<IpNet>,
    /// From an allowed source, a first packet with an SSRC the stream does not expect makes
    /// that SSRC the stream's (devices that ignore the offered `y=`). Only with `nets`.
    pub learn_ssrc: bool,
}

impl SourceRule {
    /// A device's stream: its addresses, at most `SOURCE_NETS_MAX` (the first ones kept).
    pub fn device(addrs: &[IpAddr], learn_ssrc: bool) -> SourceRule {
        let mut nets: Vec<IpNet> = Vec::with_capacity(SOURCE_NETS_MAX);
        for a in addrs {
            let net = IpNet::host(*a);
            if nets.len() < SOURCE_NETS_MAX && !nets.contains(&net) {
                nets.push(net);
            }
        }
        SourceRule { nets, learn_ssrc }
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        self.nets.is_empty() || self.nets.iter().any(|n| n.contains(ip))
    }

    /// "10.0.0.8, 10.0.0.0/24" (or "anywhere").
    pub fn describe(&self) -> String {
        if self.nets.is_empty() {
            return "anywhere".into();
        }
        self.joined(", ")
    }

    /// The ranges written out, `sep` between them (a node API parameter takes `,`).
    pub fn joined(&self, sep: &str) -> String {
        self.nets.iter().map(ToString::to_string).collect::<Vec<_>>().join(sep)
    }

    /// Ranges as a request names them (`name` is the field, for the error), at most
    /// `SOURCE_NETS_MAX`.
    pub fn parse_nets<'a>(name: &str, items: impl IntoIterator<Item = &'a str>) -> Result<Vec<IpNet>, String> {
        let mut nets = Vec::new();
        for item in items {
            if nets.len() >= SOURCE_NETS_MAX {
                return Err(format!("{name} takes at most {SOURCE_NETS_MAX} addresses or ranges"));
            }
            nets.push(IpNet::parse(item).map_err(|e| format!("{name} {item:?}: {e}"))?);
        }
        Ok(nets)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Take,
    /// Taken, and its SSRC became the stream's (`learn_ssrc`).
    Learned(u32),
    /// Another source than the locked one, or not an allowed one.
    ForeignSource,
    /// Not an SSRC this stream expects (or not RTP at all, before a source is locked).
    ForeignSsrc,
    /// A new SSRC from the locked source, not yet seen often enough to follow.
    SsrcChangePending,
}

impl Verdict {
    pub fn taken(self) -> bool {
        matches!(self, Verdict::Take | Verdict::Learned(_))
    }
}

/// A refused packet, kept while the stream has taken none: what the operator is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refused {
    from: IpAddr,
    ssrc: Option<u32>,
    verdict: Verdict,
}

#[derive(Debug, Clone)]
pub struct SourceGuard {
    expected: [Option<u32>; EXPECTED_SSRCS_MAX],
    /// Takes the first SSRC a valid packet carries (a port of its own opened without one, as
    /// ZLMediaKit's `openRtpServer` without `ssrc`); then only that one, as if expected.
    any_ssrc: bool,
    rule: SourceRule,
    locked: Option<Origin>,
    /// When the locked source's latest packet was taken (the caller's clock, ms).
    last_taken_ms: Option<u64>,
    /// A new SSRC from the locked source and how many packets in a row carried it.
    candidate: Option<(u32, u32)>,
    last_refused: Option<Refused>,
    pub foreign_packets: u64,
    pub ssrc_changes: u64,
    /// SSRCs taken from a device that sent another than it was offered.
    pub ssrc_learned: u64,
    /// Locks moved from a silent source to an allowed one.
    pub source_moves: u64,
}

/// The SSRC of an RTP version 2 packet.
pub fn rtp_ssrc(packet: &[u8]) -> Option<u32> {
    if packet.len() < RTP_HEADER_BYTES || packet[0] >> 6 != 2 {
        return None;
    }
    Some(u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]))
}

/// `0x0BEBC202 (0200000002)`: hex as packet dumps show it, decimal as GB28181 writes it.
pub fn ssrc_text(ssrc: u32) -> String {
    format!("0x{ssrc:08X} ({ssrc:010})")
}

impl SourceGuard {
    pub fn new(ssrc: u32, rule: SourceRule) -> SourceGuard {
        debug_assert!(rule.nets.len() <= SOURCE_NETS_MAX);
        SourceGuard {
            expected: [Some(ssrc), None],
            any_ssrc: false,
            rule,
            locked: None,
            last_taken_ms: None,
            candidate: None,
            last_refused: None,
            foreign_packets: 0,
            ssrc_changes: 0,
            ssrc_learned: 0,
            source_moves: 0,
        }
    }

    /// Takes whichever SSRC comes first (see `any_ssrc`).
    pub fn any(rule: SourceRule) -> SourceGuard {
        SourceGuard { expected: [None, None], any_ssrc: true, ..SourceGuard::new(0, rule) }
    }

    /// Also takes `ssrc` (the device answered it in its SDP).
    pub fn expect(&mut self, ssrc: u32) {
        // Told which SSRC to take: no longer any.
        self.any_ssrc = false;
        if !self.expects(ssrc) {
            self.expected[EXPECTED_SSRCS_MAX - 1] = Some(ssrc);
        }
    }

    /// Takes media only as `rule` says from now on: a lock on a source it does not allow
    /// (someone who sent first) is dropped, so the device's next packet locks.
    pub fn set_rule(&mut self, rule: SourceRule) {
        debug_assert!(rule.nets.len() <= SOURCE_NETS_MAX);
        self.rule = rule;
        if self.locked.is_some_and(|l| !self.rule.allows(l.ip())) {
            self.locked = None;
            self.candidate = None;
        }
    }

    pub fn rule(&self) -> &SourceRule {
        &self.rule
    }

    fn expects(&self, ssrc: u32) -> bool {
        self.expected.contains(&Some(ssrc))
    }

    /// The SSRCs taken now (the stream's, the device's), for the operator.
    pub fn expected(&self) -> impl Iterator<Item = u32> + '_ {
        self.expected.iter().flatten().copied()
    }

    pub fn locked(&self) -> Option<Origin> {
        self.locked
    }

    /// Whether any packet was taken yet.
    pub fn has_taken(&self) -> bool {
        self.last_taken_ms.is_some()
    }

    /// Decides on one packet arriving at `now_ms` and counts what it drops.
    #[must_use = "a packet the guard refused must not be taken"]
    pub fn check(&mut self, origin: Origin, packet: &[u8], now_ms: u64) -> Verdict {
        let verdict = self.decide(origin, packet, now_ms);
        if verdict.taken() {
            self.last_taken_ms = Some(now_ms);
        } else {
            self.foreign_packets += 1;
            if self.last_taken_ms.is_none() {
                self.last_refused = Some(Refused { from: origin.ip(), ssrc: rtp_ssrc(packet), verdict });
            }
        }
        verdict
    }

    fn decide(&mut self, origin: Origin, packet: &[u8], now_ms: u64) -> Verdict {
        match self.locked {
            Some(locked) if locked != origin => {
                let silent = self.last_taken_ms.is_none_or(|t| now_ms.saturating_sub(t) >= SOURCE_SILENT_MOVE_MS);
                let bound = !self.rule.nets.is_empty();
                if bound && silent && self.rule.allows(origin.ip()) && rtp_ssrc(packet).is_some_and(|s| self.expects(s)) {
                    self.locked = Some(origin);
                    self.candidate = None;
                    self.source_moves += 1;
                    return Verdict::Take;
                }
                Verdict::ForeignSource
            }
            None if !self.rule.allows(origin.ip()) => Verdict::ForeignSource,
            None => match rtp_ssrc(packet) {
                Some(ssrc) if self.expects(ssrc) || self.any_ssrc => {
                    if self.any_ssrc {
                        self.any_ssrc = false;
                        self.expected = [Some(ssrc), None];
                    }
                    self.locked = Some(origin);
                    Verdict::Take
                }
                Some(ssrc) if self.rule.learn_ssrc && !self.rule.nets.is_empty() => {
                    self.expected = [Some(ssrc), None];
                    self.locked = Some(origin);
                    self.ssrc_learned += 1;
                    Verdict::Learned(ssrc)
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

    /// Why a stream that has taken nothing has nothing, in words an operator can act on; None
    /// once a packet was taken.
    pub fn no_media_why(&self) -> Option<String> {
        if self.has_taken() {
            return None;
        }
        let expected = self.expected().map(ssrc_text).collect::<Vec<_>>().join(" or ");
        let from = self.rule.describe();
        let Some(r) = self.last_refused else {
            return Some("no packet at all".into());
        };
        Some(match (r.verdict, r.ssrc) {
            (_, None) => format!("packets that are not RTP arrived from {}", r.from),
            (Verdict::ForeignSource, Some(ssrc)) => {
                format!("packets arrived from {} with SSRC {}, but this stream takes media from {from} only", r.from, ssrc_text(ssrc))
            }
            (_, Some(ssrc)) => format!("packets arrived from {} with SSRC {}, expected {expected} from {from}", r.from, ssrc_text(ssrc)),
        })
    }

    /// Any source may lock again (a download resumed: the device sends from a new socket).
    pub fn release(&mut self) {
        self.locked = None;
        self.candidate = None;
    }

    /// The locked TCP connection closed: the next connection with an expected SSRC may take
    /// over (devices reconnect). A UDP lock lasts as long as the stream.
    pub fn origin_closed(&mut self, origin: Origin) {
        if self.locked == Some(origin) && matches!(origin, Origin::Tcp { .. }) {
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

    fn tcp(conn: u64) -> Origin {
        Origin::Tcp { conn, ip: IpAddr::from([127, 0, 0, 1]) }
    }

    fn from(ip: [u8; 4], port: u16) -> Origin {
        Origin::Udp(SocketAddr::from((ip, port)))
    }

    const DEVICE: [u8; 4] = [10, 0, 0, 8];
    const ATTACKER: [u8; 4] = [10, 0, 0, 9];

    fn device_rule(learn_ssrc: bool) -> SourceRule {
        SourceRule::device(&[IpAddr::from(DEVICE)], learn_ssrc)
    }

    #[test]
    fn ranges_a_request_names_are_bounded_and_said_back() {
        let nets = SourceRule::parse_nets("source", ["10.0.0.8", "10.0.0.0/24"]).unwrap();
        assert_eq!(SourceRule { nets, learn_ssrc: false }.joined(","), "10.0.0.8,10.0.0.0/24");
        let five = ["1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4", "1.1.1.5"];
        assert_eq!(SourceRule::parse_nets("source", five).unwrap_err(), format!("source takes at most {SOURCE_NETS_MAX} addresses or ranges"));
        assert!(SourceRule::parse_nets("expect_source", ["10.0.0.0/33"]).unwrap_err().starts_with("expect_source \"10.0.0.0/33\""));
        assert_eq!(SourceRule::default().describe(), "anywhere");
    }

    #[test]
    fn a_device_stream_never_locks_on_another_address() {
        let mut g = SourceGuard::new(7, device_rule(false));
        // The attacker sprays the right SSRC first: nothing locks, every packet is foreign.
        for i in 0..100 {
            assert_eq!(g.check(from(ATTACKER, 5000), &rtp(7), i), Verdict::ForeignSource);
        }
        assert_eq!(g.locked(), None);
        assert_eq!(g.check(from(DEVICE, 6000), &rtp(7), 100), Verdict::Take);
        assert_eq!(g.check(from(ATTACKER, 5000), &rtp(7), 101), Verdict::ForeignSource);
        assert_eq!(g.foreign_packets, 101);
    }

    #[test]
    fn a_lock_taken_before_the_device_was_known_gives_way() {
        let mut g = SourceGuard::new(7, SourceRule::default());
        assert_eq!(g.check(from(ATTACKER, 5000), &rtp(7), 0), Verdict::Take);
        g.set_rule(device_rule(false));
        assert_eq!(g.locked(), None, "the attacker's lock is dropped");
        assert_eq!(g.check(from(ATTACKER, 5000), &rtp(7), 1), Verdict::ForeignSource);
        assert_eq!(g.check(from(DEVICE, 6000), &rtp(7), 2), Verdict::Take);
        g.set_rule(SourceRule::device(&[IpAddr::from(DEVICE), IpAddr::from([10, 0, 0, 10])], false));
        assert_eq!(g.locked(), Some(from(DEVICE, 6000)), "an allowed lock stays");
    }

    #[test]
    fn a_silent_lock_moves_to_the_device_sending_from_a_new_port() {
        let mut g = SourceGuard::new(7, device_rule(false));
        assert_eq!(g.check(from(DEVICE, 6000), &rtp(7), 0), Verdict::Take);
        assert_eq!(g.check(from(DEVICE, 6001), &rtp(7), SOURCE_SILENT_MOVE_MS - 1), Verdict::ForeignSource, "the lock is not silent yet");
        assert_eq!(g.check(from(DEVICE, 6000), &rtp(7), SOURCE_SILENT_MOVE_MS), Verdict::Take);
        let later = 2 * SOURCE_SILENT_MOVE_MS;
        assert_eq!(g.check(from(ATTACKER, 5000), &rtp(7), later), Verdict::ForeignSource, "never to a source not allowed");
        assert_eq!(g.check(from(DEVICE, 6001), &rtp(8), later), Verdict::ForeignSource, "only with an expected SSRC");
        assert_eq!(g.check(from(DEVICE, 6001), &rtp(7), later), Verdict::Take);
        assert_eq!((g.locked(), g.source_moves), (Some(from(DEVICE, 6001)), 1));
        // Without a device to bind to (an API stream), a UDP lock lasts.
        let mut open = SourceGuard::new(7, SourceRule::default());
        assert_eq!(open.check(udp(1), &rtp(7), 0), Verdict::Take);
        assert_eq!(open.check(udp(2), &rtp(7), 10 * SOURCE_SILENT_MOVE_MS), Verdict::ForeignSource);
    }

    #[test]
    fn a_device_that_ignores_the_offered_ssrc_is_learned_from_its_address_only() {
        let mut g = SourceGuard::new(7, device_rule(true));
        assert_eq!(g.check(from(ATTACKER, 5000), &rtp(1234), 0), Verdict::ForeignSource);
        assert_eq!(g.check(from(DEVICE, 6000), &rtp(1234), 1), Verdict::Learned(1234));
        assert_eq!(g.check(from(DEVICE, 6000), &rtp(1234), 2), Verdict::Take);
        assert_eq!(g.check(from(DEVICE, 6000), &rtp(7), 3), Verdict::SsrcChangePending, "learned: the offered one is a change now");
        assert_eq!(g.ssrc_learned, 1);
        // Without an address to learn from, nothing is learned.
        let mut unbound = SourceGuard::new(7, SourceRule { nets: vec![], learn_ssrc: true });
        assert_eq!(unbound.check(udp(1), &rtp(1234), 0), Verdict::ForeignSsrc);
    }

    #[test]
    fn strict_ssrc_check_says_why_nothing_plays() {
        let mut g = SourceGuard::new(200_000_002, device_rule(false));
        assert_eq!(g.no_media_why().as_deref(), Some("no packet at all"));
        assert_eq!(g.check(from(DEVICE, 6000), &rtp(0x1234), 0), Verdict::ForeignSsrc);
        assert_eq!(
            g.no_media_why().as_deref(),
            Some("packets arrived from 10.0.0.8 with SSRC 0x00001234 (0000004660), expected 0x0BEBC202 (0200000002) from 10.0.0.8")
        );
        assert_eq!(g.check(from(ATTACKER, 6000), &rtp(200_000_002), 1), Verdict::ForeignSource);
        assert_eq!(
            g.no_media_why().as_deref(),
            Some("packets arrived from 10.0.0.9 with SSRC 0x0BEBC202 (0200000002), but this stream takes media from 10.0.0.8 only")
        );
        assert_eq!(g.check(from(DEVICE, 6000), &rtp(200_000_002), 2), Verdict::Take);
        assert_eq!(g.no_media_why(), None);
    }

    #[test]
    fn locks_on_the_first_valid_packet_and_drops_other_sources() {
        let mut g = SourceGuard::new(7, SourceRule::default());
        assert_eq!(g.check(udp(1), &rtp(8), 0), Verdict::ForeignSsrc, "a foreign SSRC locks nothing");
        assert_eq!(g.check(udp(1), b"junk", 0), Verdict::ForeignSsrc);
        assert_eq!(g.locked(), None);
        assert_eq!(g.check(udp(2), &rtp(7), 0), Verdict::Take);
        assert_eq!(g.locked(), Some(udp(2)));
        assert_eq!(g.check(udp(3), &rtp(7), 0), Verdict::ForeignSource, "right SSRC, wrong source");
        assert_eq!(g.check(tcp(0), &rtp(7), 0), Verdict::ForeignSource);
        assert_eq!(g.check(udp(2), &rtp(7), 0), Verdict::Take);
        assert_eq!(g.check(udp(2), b"short", 0), Verdict::Take, "the device's own junk is counted downstream");
        assert_eq!(g.foreign_packets, 4);
    }

    #[test]
    fn any_ssrc_takes_the_first_and_then_only_it() {
        let mut g = SourceGuard::any(SourceRule::default());
        assert_eq!(g.check(udp(1), b"junk", 0), Verdict::ForeignSsrc, "not RTP locks nothing");
        assert_eq!(g.check(udp(2), &rtp(5), 0), Verdict::Take);
        assert_eq!(g.check(udp(2), &rtp(5), 0), Verdict::Take);
        assert_eq!(g.check(udp(3), &rtp(5), 0), Verdict::ForeignSource);
        assert_eq!(g.check(udp(2), &rtp(6), 0), Verdict::SsrcChangePending, "a second SSRC is a change, not any");
        let mut told = SourceGuard::any(SourceRule::default());
        told.expect(9);
        assert_eq!(told.check(udp(2), &rtp(5), 0), Verdict::ForeignSsrc, "once told, only the one it was told");
        assert_eq!(told.check(udp(2), &rtp(9), 0), Verdict::Take);
    }

    #[test]
    fn the_answered_ssrc_is_taken_too() {
        let mut g = SourceGuard::new(7, SourceRule::default());
        g.expect(9);
        assert_eq!(g.check(udp(2), &rtp(9), 0), Verdict::Take);
        assert_eq!(g.check(udp(2), &rtp(7), 0), Verdict::Take);
    }

    #[test]
    fn an_ssrc_change_is_followed_only_from_the_locked_source_after_a_run() {
        let mut g = SourceGuard::new(7, SourceRule::default());
        assert_eq!(g.check(udp(2), &rtp(7), 0), Verdict::Take);
        // Interleaved forged packets from another source never count towards a change.
        for _ in 0..SSRC_CHANGE_PACKETS_MIN * 2 {
            assert_eq!(g.check(udp(3), &rtp(99), 0), Verdict::ForeignSource);
        }
        // A run broken by the old SSRC starts over.
        for _ in 0..SSRC_CHANGE_PACKETS_MIN - 1 {
            assert_eq!(g.check(udp(2), &rtp(99), 0), Verdict::SsrcChangePending);
        }
        assert_eq!(g.check(udp(2), &rtp(7), 0), Verdict::Take);
        for _ in 0..SSRC_CHANGE_PACKETS_MIN - 1 {
            assert_eq!(g.check(udp(2), &rtp(99), 0), Verdict::SsrcChangePending);
        }
        assert_eq!(g.check(udp(2), &rtp(99), 0), Verdict::Take, "followed after a run");
        assert_eq!(g.ssrc_changes, 1);
        assert_eq!(g.check(udp(2), &rtp(7), 0), Verdict::SsrcChangePending, "the old one is not taken any more");
    }

    #[test]
    fn a_closed_tcp_connection_lets_the_next_one_lock() {
        let mut g = SourceGuard::new(7, SourceRule::default());
        assert_eq!(g.check(tcp(1), &rtp(7), 0), Verdict::Take);
        assert_eq!(g.check(tcp(2), &rtp(7), 0), Verdict::ForeignSource);
        g.origin_closed(tcp(2));
        assert_eq!(g.locked(), Some(tcp(1)), "another connection closing changes nothing");
        g.origin_closed(tcp(1));
        assert_eq!(g.check(tcp(2), &rtp(7), 0), Verdict::Take);
        g.origin_closed(udp(2));
        assert_eq!(g.locked(), Some(tcp(2)));
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let mut rng = crate::proto::testutil::Rng::new(9);
        let mut g = SourceGuard::new(7, SourceRule::default());
        let seed = rtp(7);
        for i in 0..10_000u16 {
            let _ = g.check(udp(i % 3), &rng.mutate(&seed), u64::from(i));
        }
    }
}
