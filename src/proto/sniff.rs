//! What an RTP payload of a dynamic payload type carries, guessed from its bytes, for a stream
//! nobody described (an unknown SSRC on the single RTP port: a bare `ffmpeg -f rtp` push).
//! Only packets that decide are answered: an MPEG-PS pack or PES start, whole TS packets, or an
//! H.264/H.265 parameter set or keyframe (single NAL, aggregate or first fragment). The other
//! packets of a stream say nothing either way (a P-slice fragment is any bytes), so the caller
//! waits for one that decides; a stream's first keyframe always brings one.

use super::frame::Codec;
use super::sdp::PayloadKind;
use super::ts_demux::TsDemuxer;

const START_CODE: [u8; 3] = [0, 0, 1];
/// MPEG-PS stream ids that open a pack or a PES: pack header (0xBA), system header (0xBB),
/// program stream map (0xBC), audio (0xC0-0xDF), video (0xE0-0xEF).
fn is_ps_start_id(id: u8) -> bool {
    matches!(id, 0xBA..=0xBC | 0xC0..=0xEF)
}

/// The kind of payload this packet proves, or None when it proves nothing.
pub fn sniff(payload: &[u8]) -> Option<PayloadKind> {
    // RTP H.264/H.265 payloads never start with a start code, so this is PS.
    if payload.len() >= 4 && payload[..3] == START_CODE && is_ps_start_id(payload[3]) {
        return Some(PayloadKind::Ps);
    }
    if TsDemuxer::sniff(payload) {
        return Some(PayloadKind::Ts);
    }
    match (h265_decides(payload), h264_decides(payload)) {
        (true, false) => Some(PayloadKind::Video(Codec::H265)),
        (false, true) => Some(PayloadKind::Video(Codec::H264)),
        _ => None,
    }
}

/// H.264 NAL types that only start a picture a decoder can begin at: IDR slice, SPS, PPS.
fn h264_key_type(t: u8) -> bool {
    matches!(t, 5 | 7 | 8)
}

/// profile_idc values of H.264 (Annex A), the byte after an SPS's NAL header: what makes a
/// TS sync byte (0x47, which reads as an SPS header) no SPS.
fn h264_profile(p: u8) -> bool {
    matches!(p, 44 | 66 | 77 | 88 | 100 | 110 | 118 | 122 | 128 | 134 | 135 | 138 | 139 | 144 | 244)
}

/// A key NAL unit (header first) whose SPS, if it is one, names a real profile.
fn h264_key_nal(nal: &[u8]) -> bool {
    match nal {
        [h, profile, ..] if h & 0x1f == 7 => h264_profile(*profile),
        [h, _, ..] => h264_key_type(h & 0x1f),
        _ => false,
    }
}

/// RFC 6184: a single NAL, a STAP-A whose first unit is one, or an FU-A start of one.
fn h264_decides(p: &[u8]) -> bool {
    let Some(&h) = p.first() else { return false };
    if h & 0x80 != 0 || h & 0x60 == 0 {
        // forbidden bit set, or nal_ref_idc 0 (parameter sets and IDR slices are referenced)
        return false;
    }
    match h & 0x1f {
        t if h264_key_type(t) => h264_key_nal(p),
        24 => p.len() >= 5 && {
            let size = usize::from(u16::from_be_bytes([p[1], p[2]]));
            size >= 2 && 3 + size <= p.len() && p[3] & 0x80 == 0 && h264_key_nal(&p[3..3 + size])
        },
        28 => p.len() >= 3 && p[1] & 0x80 != 0 && p[1] & 0x40 == 0 && h264_key_type(p[1] & 0x1f),
        _ => false,
    }
}

/// H.265 NAL types a decoder can begin at: IRAP slices (16-21), VPS, SPS, PPS (32-34).
fn h265_key_type(t: u8) -> bool {
    matches!(t, 16..=21 | 32..=34)
}

/// The two-byte H.265 NAL header of a base-layer unit: its type, if the header is well formed
/// (forbidden bit 0, layer 0, temporal id + 1 in 1..=7).
fn h265_type(h: &[u8]) -> Option<u8> {
    let (b0, b1) = (*h.first()?, *h.get(1)?);
    let layer = ((b0 & 1) << 5) | (b1 >> 3);
    (b0 & 0x80 == 0 && layer == 0 && b1 & 7 != 0).then_some((b0 >> 1) & 0x3f)
}

/// RFC 7798: a single NAL, an AP whose first unit is one, or an FU start of one.
fn h265_decides(p: &[u8]) -> bool {
    match h265_type(p) {
        Some(t) if h265_key_type(t) => p.len() >= 3,
        Some(48) => p.len() >= 6 && {
            let size = usize::from(u16::from_be_bytes([p[2], p[3]]));
            size >= 2 && 4 + size <= p.len() && h265_type(&p[4..]).is_some_and(h265_key_type)
        },
        Some(49) => p.len() >= 4 && p[2] & 0x80 != 0 && p[2] & 0x40 == 0 && h265_key_type(p[2] & 0x3f),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H264: Option<PayloadKind> = Some(PayloadKind::Video(Codec::H264));
    const H265: Option<PayloadKind> = Some(PayloadKind::Video(Codec::H265));

    #[test]
    fn mpeg_system_streams_are_known_by_their_start() {
        assert_eq!(sniff(&[0, 0, 1, 0xBA, 0x44, 0, 4]), Some(PayloadKind::Ps));
        assert_eq!(sniff(&[0, 0, 1, 0xE0, 0x10, 0]), Some(PayloadKind::Ps));
        assert_eq!(sniff(&[0, 0, 1, 0x09, 0x10]), None, "a start code with a NAL type is no PS");
        let mut ts = vec![0u8; 188 * 7];
        ts.chunks_mut(188).for_each(|p| p[0] = 0x47);
        assert_eq!(sniff(&ts), Some(PayloadKind::Ts));
        assert_eq!(sniff(&ts[..188 * 6 + 100]), None);
    }

    #[test]
    fn h264_parameter_sets_and_idr_decide_other_slices_do_not() {
        assert_eq!(sniff(&[0x67, 0x42, 0xC0, 0x1F]), H264, "SPS");
        assert_eq!(sniff(&[0x68, 0xCE, 0x3C, 0x80]), H264, "PPS");
        assert_eq!(sniff(&[0x65, 0x88, 0x84]), H264, "IDR");
        assert_eq!(sniff(&[0x78, 0x00, 0x04, 0x67, 0x42, 0xC0, 0x1F, 0x00, 0x02, 0x68, 0xCE]), H264, "STAP-A with SPS");
        assert_eq!(sniff(&[0x7C, 0x85, 0x88, 0x84]), H264, "FU-A start of an IDR");
        assert_eq!(sniff(&[0x7C, 0x05, 0x88]), None, "FU-A middle");
        assert_eq!(sniff(&[0x41, 0x9A, 0x02]), None, "P slice");
        assert_eq!(sniff(&[0x07, 0x42]), None, "nal_ref_idc 0");
        assert_eq!(sniff(&[0x78, 0x00, 0x09, 0x67]), None, "STAP-A size past the end");
        assert_eq!(sniff(&[0x47, 0x40, 0x11, 0x10]), None, "a TS header reads as an SPS of no profile");
    }

    #[test]
    fn h265_parameter_sets_and_irap_decide_other_slices_do_not() {
        assert_eq!(sniff(&[0x40, 0x01, 0x0C, 0x01]), H265, "VPS");
        assert_eq!(sniff(&[0x42, 0x01, 0x01, 0x01]), H265, "SPS");
        assert_eq!(sniff(&[0x44, 0x01, 0xC1, 0x72]), H265, "PPS");
        assert_eq!(sniff(&[0x26, 0x01, 0xAF, 0x06]), H265, "IDR_W_RADL");
        assert_eq!(sniff(&[0x60, 0x01, 0x00, 0x03, 0x40, 0x01, 0x0C]), H265, "AP with VPS");
        assert_eq!(sniff(&[0x62, 0x01, 0x93, 0xAF]), H265, "FU start of IDR_W_RADL");
        assert_eq!(sniff(&[0x62, 0x01, 0x13, 0xAF]), None, "FU middle");
        assert_eq!(sniff(&[0x02, 0x01, 0xD0, 0x0A]), None, "TRAIL_R");
        assert_eq!(sniff(&[0x40, 0x00, 0x0C]), None, "temporal id 0 is no header");
    }

    #[test]
    fn nothing_short_or_empty_decides() {
        for p in [&[][..], &[0x67], &[0x40, 0x01], &[0, 0, 1], &[0x7C, 0x85], &[0x60, 0x01, 0x00]] {
            assert_eq!(sniff(p), None, "{p:?}");
        }
    }
}
