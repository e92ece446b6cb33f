//! H.264/H.265 bitstream helpers: Annex B NAL splitting, keyframe detection,
//! parameter-set extraction and SPS parsing (resolution, profile) for muxers.

use super::bits::{BitReader, BitsExhausted, unescape_rbsp};
use super::frame::Codec;
use bytes::Bytes;

/// Iterates NAL units (without start codes) of an Annex B buffer.
pub struct NalUnits<'a> {
    rest: &'a [u8],
    finder: memchr::memmem::Finder<'static>,
}

pub fn nal_units(data: &[u8]) -> NalUnits<'_> {
    let finder = memchr::memmem::Finder::new(&[0u8, 0, 1]);
    let rest = match finder.find(data) {
        Some(i) => &data[i + 3..],
        // No start code at all: treat the whole buffer as one NAL (RTP depacketizers emit such).
        None => data,
    };
    NalUnits { rest, finder }
}

impl<'a> NalUnits<'a> {
    /// The bytes from the next NAL's header on, without searching where that NAL ends.
    pub fn upcoming(&self) -> Option<&'a [u8]> {
        (!self.rest.is_empty()).then_some(self.rest)
    }
}

impl<'a> Iterator for NalUnits<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let (nal, rest) = match self.finder.find(self.rest) {
                Some(i) => (&self.rest[..i], &self.rest[i + 3..]),
                None => (self.rest, &self.rest[self.rest.len()..]),
            };
            self.rest = rest;
            // The zero before a 4-byte start code belongs to the start code, not the NAL.
            let end = nal.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            if end > 0 {
                return Some(&nal[..end]);
            }
        }
    }
}

pub fn h264_nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1f)
}

pub fn h265_nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| (b >> 1) & 0x3f)
}

pub const H264_NAL_IDR: u8 = 5;
pub const H264_NAL_SEI: u8 = 6;
pub const H264_NAL_SPS: u8 = 7;
pub const H264_NAL_PPS: u8 = 8;
pub const H264_NAL_AUD: u8 = 9;
pub const H265_NAL_VPS: u8 = 32;
pub const H265_NAL_SPS: u8 = 33;
pub const H265_NAL_PPS: u8 = 34;
pub const H265_NAL_AUD: u8 = 35;

/// True when the NAL is a coded slice (VCL).
pub fn is_vcl(codec: Codec, nal: &[u8]) -> bool {
    match codec {
        Codec::H265 => h265_nal_type(nal) < 32,
        _ => (1..=5).contains(&h264_nal_type(nal)),
    }
}

/// True when the NAL is a random-access picture (H.264 IDR, H.265 BLA/IDR/CRA).
pub fn is_key_nal(codec: Codec, nal: &[u8]) -> bool {
    match codec {
        Codec::H265 => (16..=21).contains(&h265_nal_type(nal)),
        _ => h264_nal_type(nal) == H264_NAL_IDR,
    }
}

/// Decides from the first coded slice only, so it touches just the frame's head.
pub fn is_keyframe(codec: Codec, annexb: &[u8]) -> bool {
    nal_units(annexb).find(|nal| is_vcl(codec, nal)).is_some_and(|nal| is_key_nal(codec, nal))
}

/// Parameter sets and delimiters: carried in decoder configuration records, not in samples.
pub fn is_parameter_or_delimiter(codec: Codec, nal: &[u8]) -> bool {
    match codec {
        Codec::H265 => matches!(h265_nal_type(nal), H265_NAL_VPS | H265_NAL_SPS | H265_NAL_PPS | H265_NAL_AUD),
        _ => matches!(h264_nal_type(nal), H264_NAL_SPS | H264_NAL_PPS | H264_NAL_AUD),
    }
}

/// Appends a picture's NAL units with 4-byte length prefixes (AVCC/HVCC sample format, as
/// FLV and MP4 carry them), leaving out parameter sets and delimiters.
pub fn append_length_prefixed(codec: Codec, annexb: &[u8], out: &mut impl bytes::BufMut) {
    for nal in nal_units(annexb) {
        if !is_parameter_or_delimiter(codec, nal) {
            out.put_u32(nal.len() as u32);
            out.put_slice(nal);
        }
    }
}

/// The latest parameter sets seen on a stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParamSets {
    pub vps: Option<Bytes>,
    pub sps: Option<Bytes>,
    pub pps: Option<Bytes>,
}

impl ParamSets {
    /// Records parameter-set NALs; returns true when any of them changed.
    pub fn observe(&mut self, codec: Codec, nal: &[u8]) -> bool {
        let slot = match (codec, nal) {
            (Codec::H265, n) => match h265_nal_type(n) {
                H265_NAL_VPS => &mut self.vps,
                H265_NAL_SPS => &mut self.sps,
                H265_NAL_PPS => &mut self.pps,
                _ => return false,
            },
            (_, n) => match h264_nal_type(n) {
                H264_NAL_SPS => &mut self.sps,
                H264_NAL_PPS => &mut self.pps,
                _ => return false,
            },
        };
        if slot.as_deref() == Some(nal) {
            return false;
        }
        *slot = Some(Bytes::copy_from_slice(nal));
        true
    }

    pub fn complete(&self, codec: Codec) -> bool {
        self.sps.is_some() && self.pps.is_some() && (codec != Codec::H265 || self.vps.is_some())
    }
}

/// What muxers need from an SPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpsInfo {
    pub width: u32,
    pub height: u32,
    pub chroma_format_idc: u32,
    pub bit_depth_luma: u32,
    pub bit_depth_chroma: u32,
    /// H.265 only: sps_max_sub_layers_minus1 + 1, and temporal_id_nesting.
    pub temporal_layers: u32,
    pub temporal_id_nested: bool,
}

/// Frame sizes beyond this are not cameras; treat as a corrupt SPS.
pub const PICTURE_DIMENSION_MAX: u32 = 16_384;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpsError {
    Truncated,
    NotAnSps,
    Implausible,
}

impl From<BitsExhausted> for SpsError {
    fn from(_: BitsExhausted) -> Self {
        SpsError::Truncated
    }
}

pub fn parse_sps(codec: Codec, nal: &[u8]) -> Result<SpsInfo, SpsError> {
    let info = match codec {
        Codec::H265 => parse_h265_sps(nal)?,
        _ => parse_h264_sps(nal)?,
    };
    if info.width == 0 || info.height == 0 || info.width > PICTURE_DIMENSION_MAX || info.height > PICTURE_DIMENSION_MAX {
        return Err(SpsError::Implausible);
    }
    Ok(info)
}

fn sub_sampling(chroma_format_idc: u32) -> (u32, u32) {
    match chroma_format_idc {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    }
}

fn parse_h264_sps(nal: &[u8]) -> Result<SpsInfo, SpsError> {
    if h264_nal_type(nal) != H264_NAL_SPS {
        return Err(SpsError::NotAnSps);
    }
    let rbsp = unescape_rbsp(&nal[1..]);
    let mut r = BitReader::new(&rbsp);
    let profile_idc = r.bits(8)?;
    r.skip(16)?; // constraint flags, level_idc
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    let (mut bit_depth_luma, mut bit_depth_chroma) = (8, 8);
    if matches!(profile_idc, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc == 3 {
            r.skip(1)?; // separate_colour_plane_flag
        }
        bit_depth_luma = 8 + r.ue()?.min(8);
        bit_depth_chroma = 8 + r.ue()?.min(8);
        r.skip(1)?; // qpprime_y_zero_transform_bypass_flag
        if r.flag()? {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.flag()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?;
        }
        1 => {
            r.skip(1)?;
            r.se()?;
            r.se()?;
            let cycle = r.ue()?;
            for _ in 0..cycle.min(255) {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.skip(1)?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = r.ue()?.saturating_add(1);
    let height_map_units = r.ue()?.saturating_add(1);
    let frame_mbs_only = r.bit()?;
    if frame_mbs_only == 0 {
        r.skip(1)?;
    }
    r.skip(1)?; // direct_8x8_inference_flag
    let (mut crop_l, mut crop_r, mut crop_t, mut crop_b) = (0, 0, 0, 0);
    if r.flag()? {
        crop_l = r.ue()?;
        crop_r = r.ue()?;
        crop_t = r.ue()?;
        crop_b = r.ue()?;
    }
    let (sub_w, sub_h) = sub_sampling(chroma_format_idc);
    let (crop_x, crop_y) = if chroma_format_idc == 0 { (1, 2 - frame_mbs_only) } else { (sub_w, sub_h * (2 - frame_mbs_only)) };
    let width = (width_mbs.min(PICTURE_DIMENSION_MAX) * 16).saturating_sub(crop_x.saturating_mul(crop_l.saturating_add(crop_r)));
    let height = ((2 - frame_mbs_only) * height_map_units.min(PICTURE_DIMENSION_MAX) * 16)
        .saturating_sub(crop_y.saturating_mul(crop_t.saturating_add(crop_b)));
    Ok(SpsInfo { width, height, chroma_format_idc, bit_depth_luma, bit_depth_chroma, temporal_layers: 1, temporal_id_nested: false })
}

fn skip_scaling_list(r: &mut BitReader<'_>, size: u32) -> Result<(), BitsExhausted> {
    let (mut last, mut next) = (8i32, 8i32);
    for _ in 0..size {
        if next != 0 {
            // delta_scale is -128..=127 in a valid SPS; a hostile one can carry any i32.
            next = (i64::from(last) + i64::from(r.se()?)).rem_euclid(256) as i32;
        }
        last = if next == 0 { last } else { next };
    }
    Ok(())
}

/// Byte offset of general_profile_tier_level in an unescaped H.265 SPS (after NAL header + 1 byte).
pub const H265_SPS_PTL_OFFSET: usize = 3;
pub const H265_PTL_GENERAL_BYTES: usize = 12;

fn parse_h265_sps(nal: &[u8]) -> Result<SpsInfo, SpsError> {
    if h265_nal_type(nal) != H265_NAL_SPS || nal.len() < 2 {
        return Err(SpsError::NotAnSps);
    }
    let rbsp = unescape_rbsp(&nal[2..]);
    let mut r = BitReader::new(&rbsp);
    r.skip(4)?; // sps_video_parameter_set_id
    let max_sub_layers_minus1 = r.bits(3)?;
    let temporal_id_nested = r.flag()?;
    r.skip(H265_PTL_GENERAL_BYTES * 8)?;
    let mut profile_present = [false; 8];
    let mut level_present = [false; 8];
    for i in 0..max_sub_layers_minus1 as usize {
        profile_present[i] = r.flag()?;
        level_present[i] = r.flag()?;
    }
    if max_sub_layers_minus1 > 0 {
        r.skip(2 * (8 - max_sub_layers_minus1 as usize))?;
    }
    for i in 0..max_sub_layers_minus1 as usize {
        if profile_present[i] {
            r.skip(88)?;
        }
        if level_present[i] {
            r.skip(8)?;
        }
    }
    r.ue()?; // sps_seq_parameter_set_id
    let chroma_format_idc = r.ue()?;
    if chroma_format_idc == 3 {
        r.skip(1)?;
    }
    let mut width = r.ue()?;
    let mut height = r.ue()?;
    if r.flag()? {
        let (sub_w, sub_h) = sub_sampling(chroma_format_idc);
        let (l, rt, t, b) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        width = width.saturating_sub(sub_w.saturating_mul(l.saturating_add(rt)));
        height = height.saturating_sub(sub_h.saturating_mul(t.saturating_add(b)));
    }
    let bit_depth_luma = 8 + r.ue()?.min(8);
    let bit_depth_chroma = 8 + r.ue()?.min(8);
    Ok(SpsInfo { width, height, chroma_format_idc, bit_depth_luma, bit_depth_chroma, temporal_layers: max_sub_layers_minus1 + 1, temporal_id_nested })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    // x264 High profile 320x240 (`ffmpeg -f lavfi -i testsrc=size=320x240 -c:v libx264`).
    pub const SPS_320X240: &[u8] =
        &[0x67, 0x64, 0x00, 0x0d, 0xac, 0xb2, 0x02, 0x83, 0xf6, 0x02, 0x20, 0x00, 0x00, 0x03, 0x00, 0x20, 0x00, 0x00, 0x06, 0x41, 0xe2, 0x85, 0x49];
    // x264 Baseline 1920x1080, cropped from 1088 (as Hikvision main streams).
    pub const SPS_1080P: &[u8] = &[
        0x67, 0x42, 0xc0, 0x28, 0xd9, 0x00, 0x78, 0x02, 0x27, 0xe5, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xc8, 0x3c,
        0x60, 0xc9, 0x20,
    ];
    // x265 Main 1920x1080 (`-c:v libx265`).
    pub const HEVC_SPS_1080P: &[u8] = &[
        0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00, 0x03, 0x00, 0x78, 0xa0, 0x03, 0xc0, 0x80, 0x10,
        0xe5, 0x96, 0x56, 0x69, 0x24, 0xca, 0xf0, 0x16, 0x80, 0x80, 0x00, 0x00, 0x03, 0x00, 0x80, 0x00, 0x00, 0x0c, 0x84,
    ];

    #[test]
    fn splits_annexb_with_3_and_4_byte_start_codes() {
        let data = [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5];
        let nals: Vec<&[u8]> = nal_units(&data).collect();
        assert_eq!(nals, vec![&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 4, 5]]);
        assert!(is_keyframe(Codec::H264, &data));
        assert!(!is_keyframe(Codec::H264, &[0, 0, 1, 0x67, 0, 0, 1, 0x41, 9]));
    }

    /// A High-profile SPS whose first scaling-list delta is se = 2^31 - 1: the running
    /// `last + delta` overflowed (a panic in debug builds) before it was widened.
    #[test]
    fn hostile_scaling_list_delta_does_not_overflow() {
        let mut bits = String::from("1"); // seq_parameter_set_id = 0
        bits += "010"; // chroma_format_idc = 1
        bits += "11"; // bit depths 8
        bits += "0"; // qpprime_y_zero_transform_bypass_flag
        bits += "11"; // seq_scaling_matrix_present, list 0 present
        bits += &"0".repeat(31); // ue with 31 leading zeros ...
        bits += "1";
        bits += &format!("{:031b}", (1u64 << 31) - 2); // ... = 2^32 - 3, se = 2^31 - 1
        bits += &"1".repeat(64); // more deltas, then whatever follows
        let mut sps = vec![0x67, 100, 0, 0x0d];
        for chunk in bits.as_bytes().chunks(8) {
            let byte = std::str::from_utf8(chunk).unwrap();
            sps.push(u8::from_str_radix(&format!("{byte:0<8}"), 2).unwrap());
        }
        let _ = parse_sps(Codec::H264, &sps);
    }

    #[test]
    fn parses_h264_sps_resolution() {
        let info = parse_sps(Codec::H264, SPS_320X240).unwrap();
        assert_eq!((info.width, info.height), (320, 240));
        let info = parse_sps(Codec::H264, SPS_1080P).unwrap();
        assert_eq!((info.width, info.height), (1920, 1080));
    }

    #[test]
    fn parses_h265_sps_resolution() {
        let info = parse_sps(Codec::H265, HEVC_SPS_1080P).unwrap();
        assert_eq!((info.width, info.height), (1920, 1080));
        assert_eq!(info.chroma_format_idc, 1);
        assert_eq!(info.bit_depth_luma, 8);
    }

    #[test]
    fn param_sets_track_changes() {
        let mut ps = ParamSets::default();
        assert!(ps.observe(Codec::H264, SPS_320X240));
        assert!(!ps.observe(Codec::H264, SPS_320X240));
        assert!(!ps.complete(Codec::H264));
        assert!(ps.observe(Codec::H264, &[0x68, 0xeb, 0xe3, 0xcb]));
        assert!(ps.complete(Codec::H264));
    }

    #[test]
    fn fuzz_sps_and_nal_split_never_panic() {
        let mut rng = crate::proto::testutil::Rng::new(7);
        for _ in 0..20_000 {
            let seed = [SPS_320X240, SPS_1080P, HEVC_SPS_1080P][rng.below(3)];
            let data = rng.mutate(seed);
            let _ = parse_sps(Codec::H264, &data);
            let _ = parse_sps(Codec::H265, &data);
            let junk = rng.bytes(64);
            for nal in nal_units(&junk) {
                assert!(!nal.is_empty());
            }
        }
    }
}
