//! Reading back gmv's fragmented MP4 recordings (sans-IO): the init segment's codec
//! configuration and each fragment's sample runs. Bounded and total: malformed boxes give
//! errors, never panics.

use super::frame::Codec;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mp4Error {
    Truncated,
    BadBox,
    Unsupported(&'static str),
}

/// Iterates (type, body) of the boxes in `data`.
pub fn boxes(mut data: &[u8]) -> impl Iterator<Item = Result<([u8; 4], &[u8]), Mp4Error>> {
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        if data.len() < 8 {
            data = &[];
            return Some(Err(Mp4Error::Truncated));
        }
        let size = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if size < 8 || size > data.len() {
            data = &[];
            return Some(Err(Mp4Error::BadBox));
        }
        let kind = [data[4], data[5], data[6], data[7]];
        let body = &data[8..size];
        data = &data[size..];
        Some(Ok((kind, body)))
    })
}

fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    boxes(data).filter_map(Result::ok).find(|(k, _)| k == kind).map(|(_, b)| b)
}

fn be32(b: &[u8], at: usize) -> Result<u32, Mp4Error> {
    b.get(at..at + 4).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]])).ok_or(Mp4Error::Truncated)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoTrackInfo {
    pub track_id: u32,
    pub codec: Codec,
    pub timescale: u32,
    /// Parameter-set NAL units from avcC/hvcC.
    pub params: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioTrackInfo {
    pub track_id: u32,
    pub timescale: u32,
    pub asc: [u8; 2],
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitInfo {
    pub video: Option<VideoTrackInfo>,
    pub audio: Option<AudioTrackInfo>,
}

/// Parses the body of a `moov` box.
pub fn parse_moov(moov: &[u8]) -> Result<InitInfo, Mp4Error> {
    let mut info = InitInfo::default();
    for b in boxes(moov) {
        let (kind, trak) = b?;
        if &kind != b"trak" {
            continue;
        }
        let tkhd = child(trak, b"tkhd").ok_or(Mp4Error::BadBox)?;
        let track_id = be32(tkhd, 12)?;
        let mdia = child(trak, b"mdia").ok_or(Mp4Error::BadBox)?;
        let timescale = be32(child(mdia, b"mdhd").ok_or(Mp4Error::BadBox)?, 12)?;
        let handler = child(mdia, b"hdlr").and_then(|h| h.get(8..12)).ok_or(Mp4Error::BadBox)?;
        let stsd = child(mdia, b"minf").and_then(|m| child(m, b"stbl")).and_then(|s| child(s, b"stsd")).ok_or(Mp4Error::BadBox)?;
        let entries = stsd.get(8..).ok_or(Mp4Error::Truncated)?;
        let (entry_kind, entry) = boxes(entries).next().ok_or(Mp4Error::BadBox)??;
        match (handler, &entry_kind) {
            (b"vide", b"avc1" | b"hvc1" | b"hev1") => {
                // VisualSampleEntry is 78 bytes before its child boxes.
                let children = entry.get(78..).ok_or(Mp4Error::Truncated)?;
                let (codec, params) = if &entry_kind == b"avc1" {
                    (Codec::H264, avcc_params(child(children, b"avcC").ok_or(Mp4Error::BadBox)?)?)
                } else {
                    (Codec::H265, hvcc_params(child(children, b"hvcC").ok_or(Mp4Error::BadBox)?)?)
                };
                info.video = Some(VideoTrackInfo { track_id, codec, timescale, params });
            }
            (b"soun", b"mp4a") => {
                // AudioSampleEntry is 28 bytes before its child boxes.
                let esds = entry.get(28..).and_then(|c| child(c, b"esds")).ok_or(Mp4Error::BadBox)?;
                let at = esds.windows(2).position(|w| w == [0x05, 0x02]).ok_or(Mp4Error::Unsupported("audio config"))?;
                let asc = esds.get(at + 2..at + 4).ok_or(Mp4Error::Truncated)?;
                info.audio = Some(AudioTrackInfo { track_id, timescale, asc: [asc[0], asc[1]] });
            }
            _ => {}
        }
    }
    Ok(info)
}

fn avcc_params(r: &[u8]) -> Result<Vec<Vec<u8>>, Mp4Error> {
    let mut out = Vec::new();
    let mut i = 5;
    for _ in 0..2 {
        let n = if out.is_empty() { *r.get(i).ok_or(Mp4Error::Truncated)? & 0x1f } else { *r.get(i).ok_or(Mp4Error::Truncated)? };
        i += 1;
        for _ in 0..n {
            let len = u16::from_be_bytes([*r.get(i).ok_or(Mp4Error::Truncated)?, *r.get(i + 1).ok_or(Mp4Error::Truncated)?]) as usize;
            out.push(r.get(i + 2..i + 2 + len).ok_or(Mp4Error::Truncated)?.to_vec());
            i += 2 + len;
        }
    }
    Ok(out)
}

fn hvcc_params(r: &[u8]) -> Result<Vec<Vec<u8>>, Mp4Error> {
    let mut out = Vec::new();
    let arrays = *r.get(22).ok_or(Mp4Error::Truncated)?;
    let mut i = 23;
    for _ in 0..arrays {
        let count = u16::from_be_bytes([*r.get(i + 1).ok_or(Mp4Error::Truncated)?, *r.get(i + 2).ok_or(Mp4Error::Truncated)?]);
        i += 3;
        for _ in 0..count {
            let len = u16::from_be_bytes([*r.get(i).ok_or(Mp4Error::Truncated)?, *r.get(i + 1).ok_or(Mp4Error::Truncated)?]) as usize;
            out.push(r.get(i + 2..i + 2 + len).ok_or(Mp4Error::Truncated)?.to_vec());
            i += 2 + len;
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSample {
    pub duration: u32,
    pub size: u32,
    pub keyframe: bool,
    pub cto: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackRun {
    pub track_id: u32,
    pub base_time: u64,
    /// From the start of the `moof` box to the first sample's data.
    pub data_offset: u32,
    pub samples: Vec<RunSample>,
}

/// Samples per run taken; more is hostile.
pub const RUN_SAMPLES_MAX: usize = 100_000;

/// Parses the body of a `moof` box.
pub fn parse_moof(moof: &[u8]) -> Result<Vec<TrackRun>, Mp4Error> {
    let mut runs = Vec::new();
    for b in boxes(moof) {
        let (kind, traf) = b?;
        if &kind != b"traf" {
            continue;
        }
        let tfhd = child(traf, b"tfhd").ok_or(Mp4Error::BadBox)?;
        let track_id = be32(tfhd, 4)?;
        let base_time = match child(traf, b"tfdt") {
            Some(t) if t.first() == Some(&1) => u64::from(be32(t, 4)?) << 32 | u64::from(be32(t, 8)?),
            Some(t) => u64::from(be32(t, 4)?),
            None => 0,
        };
        let trun = child(traf, b"trun").ok_or(Mp4Error::BadBox)?;
        let flags = be32(trun, 0)? & 0x00ff_ffff;
        let count = be32(trun, 4)? as usize;
        if count > RUN_SAMPLES_MAX {
            return Err(Mp4Error::Unsupported("too many samples"));
        }
        let mut at = 8;
        let data_offset = if flags & 0x1 != 0 {
            at += 4;
            be32(trun, 8)?
        } else {
            0
        };
        if flags & 0x4 != 0 {
            at += 4; // first_sample_flags
        }
        let mut samples = Vec::with_capacity(count);
        for _ in 0..count {
            let mut field = |present: bool| -> Result<u32, Mp4Error> {
                if !present {
                    return Ok(0);
                }
                let v = be32(trun, at)?;
                at += 4;
                Ok(v)
            };
            let duration = field(flags & 0x100 != 0)?;
            let size = field(flags & 0x200 != 0)?;
            let sflags = field(flags & 0x400 != 0)?;
            let cto = field(flags & 0x800 != 0)? as i32;
            samples.push(RunSample { duration, size, keyframe: flags & 0x400 == 0 || sflags & 0x0001_0000 == 0, cto });
        }
        runs.push(TrackRun { track_id, base_time, data_offset, samples });
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::Frame;
    use crate::proto::mp4::{Fmp4Muxer, VideoConfig};
    use bytes::Bytes;

    #[test]
    fn reads_back_what_the_muxer_wrote() {
        let sps: &[u8] = &[
            0x67, 0x64, 0x00, 0x0d, 0xac, 0xb2, 0x02, 0x83, 0xf6, 0x02, 0x20, 0x00, 0x00, 0x03, 0x00, 0x20, 0x00, 0x00, 0x06, 0x41, 0xe2, 0x85, 0x49,
        ];
        let pps: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
        let mut p = crate::proto::h26x::ParamSets::default();
        p.observe(Codec::H264, sps);
        p.observe(Codec::H264, pps);
        let mut m = Fmp4Muxer::new(VideoConfig::from_params(Codec::H264, &p).unwrap(), None, 0);
        let init = m.init_segment();
        let moov = boxes(&init).filter_map(Result::ok).find(|(k, _)| k == b"moov").unwrap().1;
        let info = parse_moov(moov).unwrap();
        let v = info.video.unwrap();
        assert_eq!((v.codec, v.timescale, v.params.len()), (Codec::H264, 90_000, 2));
        assert_eq!(v.params[0], sps);
        let mut frag = None;
        for i in 0..30u64 {
            let f = Frame {
                codec: Codec::H264,
                pts: i * 3600,
                dts: i * 3600,
                keyframe: i % 25 == 0,
                data: Bytes::from(vec![0, 0, 0, 1, 0x41, 0x9a, i as u8]),
            };
            frag = frag.or(m.push(&f));
        }
        let frag = frag.unwrap();
        let moof = boxes(&frag).next().unwrap().unwrap().1;
        let runs = parse_moof(moof).unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].samples.len(), 25);
        assert!(runs[0].samples[0].keyframe && !runs[0].samples[1].keyframe);
        assert_eq!(runs[0].samples[3].duration, 3600);
    }

    #[test]
    fn fuzz_never_panics() {
        let mut p = crate::proto::h26x::ParamSets::default();
        p.observe(
            Codec::H264,
            &[
                0x67, 0x64, 0x00, 0x0d, 0xac, 0xb2, 0x02, 0x83, 0xf6, 0x02, 0x20, 0x00, 0x00, 0x03, 0x00, 0x20, 0x00, 0x00, 0x06, 0x41, 0xe2, 0x85,
                0x49,
            ],
        );
        p.observe(Codec::H264, &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0]);
        let m = Fmp4Muxer::new(VideoConfig::from_params(Codec::H264, &p).unwrap(), None, 0);
        let init = m.init_segment();
        let moov = boxes(&init).filter_map(Result::ok).find(|(k, _)| k == b"moov").unwrap().1.to_vec();
        let mut rng = crate::proto::testutil::Rng::new(77);
        for _ in 0..5_000 {
            let d = if rng.below(2) == 0 { rng.bytes(300) } else { rng.mutate(&moov) };
            let _ = parse_moov(&d);
            let _ = parse_moof(&d);
        }
    }
}
