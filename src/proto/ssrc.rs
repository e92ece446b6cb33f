//! SSRCs as GB28181 names them: the 10-digit decimal stream id, and the live SSRC a
//! platform allocates from its domain.

/// Stream ids are the SSRC in GB28181's 10-digit decimal form.
pub fn stream_id(ssrc: u32) -> String {
    format!("{ssrc:010}")
}

pub fn parse_stream_id(id: &str) -> Option<u32> {
    if id.is_empty() || id.len() > 10 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse().ok()
}

/// Streams known by a name (RTMP `{app}/{stream}`, pull proxies) have SSRCs from here up:
/// above GB28181's live (< 1e9) and history (1e9..2e9) ones, so the two never meet.
pub const NAMED_SSRC_BASE: u32 = 2_000_000_000;

/// The SSRC (and so the stream id) of a named stream: the same name always gives the same one,
/// so its play URLs outlive a publisher's reconnection. FNV-1a over the name.
pub fn named_ssrc(name: &str) -> u32 {
    let hash = name.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    NAMED_SSRC_BASE + hash % (u32::MAX - NAMED_SSRC_BASE)
}

/// Sequence numbers per domain: the last four digits of a GB SSRC.
pub const GB_SSRC_SEQUENCES: u32 = 10_000;

/// GB28181 live SSRC: `0`, digits 4–8 of the domain, then a 4-digit sequence.
pub fn gb_live_ssrc(domain: &str, sequence: u32) -> u32 {
    let middle: u32 = domain.get(3..8).and_then(|d| d.parse().ok()).unwrap_or(0);
    middle * GB_SSRC_SEQUENCES + sequence % GB_SSRC_SEQUENCES
}

/// GB28181 history (playback, download) SSRCs are live ones with a leading `1`.
pub const GB_HISTORY_SSRC_BASE: u32 = 1_000_000_000;

#[cfg(test)]
mod tests {
    #[test]
    fn named_streams_have_stable_ids_above_gb_ones() {
        let a = super::named_ssrc("live/cam1");
        assert_eq!(a, super::named_ssrc("live/cam1"));
        assert_ne!(a, super::named_ssrc("live/cam2"));
        for name in ["", "a", "live/cam1", "x".repeat(200).as_str()] {
            assert!(super::named_ssrc(name) >= super::NAMED_SSRC_BASE);
        }
    }

    use super::*;

    #[test]
    fn ids_and_gb_ssrcs() {
        assert_eq!(parse_stream_id("0100000001"), Some(100000001));
        assert_eq!(parse_stream_id("99999999999"), None);
        assert_eq!(parse_stream_id("12a"), None);
        assert_eq!(stream_id(7), "0000000007");
        assert_eq!(gb_live_ssrc("3402000000", 1), 200_000_001);
        assert_eq!(stream_id(gb_live_ssrc("3402000000", 1)), "0200000001");
        assert_eq!(gb_live_ssrc("3401012345", 42), 101_230_042);
    }
}
