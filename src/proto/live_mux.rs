//! A live stream's frames as one viewer's fragmented MP4 (init segment, then a fragment per
//! GOP) or MPEG-TS (tables before each keyframe): ZLMediaKit's `.live.mp4` and `.live.ts`.
//! Sans-IO: frames in, bytes out; the output starts at the first keyframe that decodes.

use super::aac::AdtsHeader;
use super::frame::{Codec, Frame};
use super::h26x::{self, ParamSets};
use super::mp4::{Fmp4Muxer, VideoConfig};
use super::ts::TsMuxer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveFormat {
    Fmp4,
    Ts,
}

pub struct LiveMux {
    format: LiveFormat,
    params: ParamSets,
    /// The stream's audio as the viewer joined (TS maps it in its PMT).
    audio: Option<Codec>,
    adts: Option<AdtsHeader>,
    fmp4: Option<Fmp4Muxer>,
    ts: Option<TsMuxer>,
}

impl LiveMux {
    pub fn new(format: LiveFormat, audio: Option<Codec>) -> LiveMux {
        LiveMux { format, params: ParamSets::default(), audio, adts: None, fmp4: None, ts: None }
    }

    /// Whether output has begun (a keyframe with its parameter sets came).
    pub fn started(&self) -> bool {
        self.fmp4.is_some() || self.ts.is_some()
    }

    /// Appends what the frame makes to `out`.
    pub fn push(&mut self, frame: &Frame, out: &mut Vec<u8>) {
        if frame.codec.is_video() {
            for nal in h26x::nal_units(&frame.data) {
                self.params.observe(frame.codec, nal);
            }
        } else if frame.codec == Codec::Aac && self.adts.is_none() {
            self.adts = AdtsHeader::parse(&frame.data);
        }
        match self.format {
            LiveFormat::Fmp4 => {
                let starts = self.fmp4.is_none() && frame.codec.is_video() && frame.keyframe;
                if starts && let Some(config) = VideoConfig::from_params(frame.codec, &self.params) {
                    let muxer = Fmp4Muxer::new(config, self.adts.filter(|_| self.audio == Some(Codec::Aac)), frame.dts);
                    out.extend_from_slice(&muxer.init_segment());
                    self.fmp4 = Some(muxer);
                }
                if let Some(fragment) = self.fmp4.as_mut().and_then(|m| m.push(frame)) {
                    out.extend_from_slice(&fragment);
                }
            }
            LiveFormat::Ts => {
                let key = frame.codec.is_video() && frame.keyframe;
                if self.ts.is_none() && key {
                    self.ts = Some(TsMuxer::new(Some(frame.codec), self.audio));
                }
                let Some(ts) = self.ts.as_mut() else { return };
                if key {
                    ts.write_tables(out);
                }
                ts.write_frame(frame, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn h264(keyframe: bool, dts: u64) -> Frame {
        let mut data = vec![0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0x84, 0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80, 0, 0, 0, 1];
        data.extend_from_slice(if keyframe { &[0x65, 0x88, 0x84] } else { &[0x41, 0x9a, 0x02] });
        Frame { codec: Codec::H264, pts: dts, dts, keyframe, data: Bytes::from(data) }
    }

    #[test]
    fn output_begins_at_a_keyframe_and_fmp4_cuts_a_fragment_per_gop() {
        let mut mux = LiveMux::new(LiveFormat::Fmp4, None);
        let mut out = Vec::new();
        mux.push(&h264(false, 0), &mut out);
        assert!(out.is_empty() && !mux.started());
        mux.push(&h264(true, 3600), &mut out);
        assert_eq!(&out[4..8], b"ftyp", "the init segment");
        let init = out.len();
        mux.push(&h264(false, 7200), &mut out);
        assert_eq!(out.len(), init, "the GOP is under way");
        mux.push(&h264(true, 10_800), &mut out);
        assert_eq!(&out[init + 4..init + 8], b"moof", "a fragment for the first GOP");
    }

    #[test]
    fn ts_writes_tables_before_each_keyframe() {
        let mut mux = LiveMux::new(LiveFormat::Ts, Some(Codec::Pcma));
        let mut out = Vec::new();
        mux.push(&h264(false, 0), &mut out);
        assert!(out.is_empty());
        for (i, key) in [true, false, true].into_iter().enumerate() {
            mux.push(&h264(key, 3600 * (i as u64 + 1)), &mut out);
        }
        assert_eq!(out.len() % super::super::ts::TS_PACKET_BYTES, 0);
        let pats = out.chunks(188).filter(|p| p[0] == 0x47 && p[1] & 0x1f == 0 && p[2] == 0).count();
        assert_eq!(pats, 2, "a PAT before each keyframe");
    }
}
