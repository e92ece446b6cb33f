//! Fragmented MP4 (ISO 14496-12/-14/-15) for recording: an init segment, then one `moof`+
//! `mdat` fragment per GOP, so a crash loses at most the fragment being built. H.264/H.265
//! video (avcC/hvcC) and AAC audio (esds); G.711 is not recorded.

use super::aac::{AAC_SAMPLES_PER_FRAME, AdtsHeader};
use super::flv::{avc_decoder_configuration_record, hevc_decoder_configuration_record};
use super::frame::{Codec, Frame};
use super::h26x::{self, ParamSets, SpsInfo};

const VIDEO_TRACK: u32 = 1;
const AUDIO_TRACK: u32 = 2;
const VIDEO_TIMESCALE: u32 = 90_000;
/// Samples held for one fragment; a GOP longer than this is cut into several fragments.
pub const FRAGMENT_SAMPLES_MAX: usize = 1_500;

fn bx(out: &mut Vec<u8>, kind: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(kind);
    body(out);
    let size = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

fn full(out: &mut Vec<u8>, kind: &[u8; 4], version: u8, flags: u32, body: impl FnOnce(&mut Vec<u8>)) {
    bx(out, kind, |o| {
        o.extend_from_slice(&((u32::from(version) << 24) | flags).to_be_bytes());
        body(o)
    })
}

fn u16b(o: &mut Vec<u8>, v: u16) {
    o.extend_from_slice(&v.to_be_bytes());
}
fn u32b(o: &mut Vec<u8>, v: u32) {
    o.extend_from_slice(&v.to_be_bytes());
}
fn u64b(o: &mut Vec<u8>, v: u64) {
    o.extend_from_slice(&v.to_be_bytes());
}

const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

struct Sample {
    dts: u64,
    cto: i32,
    keyframe: bool,
    data: Vec<u8>,
}

/// Codec configuration a recording needs before its init segment can be written.
#[derive(Clone)]
pub struct VideoConfig {
    pub codec: Codec,
    pub record: Vec<u8>,
    pub info: SpsInfo,
}

impl VideoConfig {
    /// From the parameter sets in a keyframe (or seen before it).
    pub fn from_params(codec: Codec, params: &ParamSets) -> Option<VideoConfig> {
        let (sps, pps) = (params.sps.as_ref()?, params.pps.as_ref()?);
        let info = h26x::parse_sps(codec, sps).ok()?;
        let record = match codec {
            Codec::H265 => hevc_decoder_configuration_record(params.vps.as_ref()?, sps, pps, info)?,
            _ => avc_decoder_configuration_record(sps, pps)?,
        };
        Some(VideoConfig { codec, record, info })
    }
}

pub struct Fmp4Muxer {
    video: VideoConfig,
    audio: Option<AdtsHeader>,
    /// DTS (90 kHz) that maps to time `offset` in the file.
    base_dts: u64,
    /// File time (90 kHz) of `base_dts`: 0, or where a file being continued ended.
    offset: u64,
    sequence: u32,
    video_samples: Vec<Sample>,
    audio_samples: Vec<Vec<u8>>,
    /// Decode time (audio timescale) of the next audio sample.
    audio_time: u64,
    audio_started: bool,
    /// Previous video sample interval, for the last sample of a flush.
    last_step: u64,
    pub frames: u64,
    /// Bytes held for the next fragment (video and audio samples).
    pending_bytes: usize,
}

impl Fmp4Muxer {
    pub fn new(video: VideoConfig, audio: Option<AdtsHeader>, base_dts: u64) -> Self {
        Fmp4Muxer {
            video,
            audio,
            base_dts,
            offset: 0,
            sequence: 0,
            video_samples: Vec::new(),
            audio_samples: Vec::new(),
            audio_time: 0,
            audio_started: false,
            last_step: 3600,
            frames: 0,
            pending_bytes: 0,
        }
    }

    /// Fragments that continue a file: its init segment stays, its last fragment was number
    /// `fragments` and ended at `end_90k` (file time); `base_dts` is placed there.
    pub fn continuing(video: VideoConfig, audio: Option<AdtsHeader>, base_dts: u64, end_90k: u64, fragments: u32) -> Self {
        Fmp4Muxer { offset: end_90k, sequence: fragments, ..Fmp4Muxer::new(video, audio, base_dts) }
    }

    /// The file time (90 kHz) of a dts at or after `base_dts`.
    fn file_time(&self, dts: u64) -> u64 {
        dts.saturating_sub(self.base_dts) + self.offset
    }

    /// Bytes held for the next fragment.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Whether the init segment has an audio track.
    pub fn has_audio(&self) -> bool {
        self.audio.is_some()
    }

    /// The video configuration (parameter sets) the file is written with.
    pub fn video(&self) -> &VideoConfig {
        &self.video
    }

    pub fn init_segment(&self) -> Vec<u8> {
        let mut o = Vec::with_capacity(1024);
        let hevc = self.video.codec == Codec::H265;
        bx(&mut o, b"ftyp", |o| {
            o.extend_from_slice(b"isom");
            u32b(o, 0x200);
            o.extend_from_slice(if hevc { b"isomiso6hvc1mp41" } else { b"isomiso6avc1mp41" });
        });
        bx(&mut o, b"moov", |o| {
            full(o, b"mvhd", 0, 0, |o| {
                u32b(o, 0);
                u32b(o, 0);
                u32b(o, 1000);
                u32b(o, 0);
                u32b(o, 0x0001_0000);
                u16b(o, 0x0100);
                o.extend_from_slice(&[0; 10]);
                MATRIX.iter().for_each(|m| u32b(o, *m));
                o.extend_from_slice(&[0; 24]);
                u32b(o, 3);
            });
            self.video_trak(o);
            if let Some(a) = self.audio {
                audio_trak(o, a);
            }
            bx(o, b"mvex", |o| {
                for id in [VIDEO_TRACK].into_iter().chain(self.audio.map(|_| AUDIO_TRACK)) {
                    full(o, b"trex", 0, 0, |o| {
                        u32b(o, id);
                        u32b(o, 1);
                        u32b(o, 0);
                        u32b(o, 0);
                        u32b(o, 0);
                    });
                }
            });
        });
        o
    }

    fn video_trak(&self, o: &mut Vec<u8>) {
        let (w, h) = (self.video.info.width, self.video.info.height);
        bx(o, b"trak", |o| {
            tkhd(o, VIDEO_TRACK, 0, w, h);
            bx(o, b"mdia", |o| {
                mdhd(o, VIDEO_TIMESCALE);
                hdlr(o, b"vide", b"VideoHandler\0");
                bx(o, b"minf", |o| {
                    full(o, b"vmhd", 0, 1, |o| o.extend_from_slice(&[0; 8]));
                    dinf(o);
                    bx(o, b"stbl", |o| {
                        full(o, b"stsd", 0, 0, |o| {
                            u32b(o, 1);
                            let (entry, config): (&[u8; 4], &[u8; 4]) =
                                if self.video.codec == Codec::H265 { (b"hvc1", b"hvcC") } else { (b"avc1", b"avcC") };
                            bx(o, entry, |o| {
                                o.extend_from_slice(&[0; 6]);
                                u16b(o, 1);
                                o.extend_from_slice(&[0; 16]);
                                u16b(o, w as u16);
                                u16b(o, h as u16);
                                u32b(o, 0x0048_0000);
                                u32b(o, 0x0048_0000);
                                u32b(o, 0);
                                u16b(o, 1);
                                o.extend_from_slice(&[0; 32]);
                                u16b(o, 0x0018);
                                u16b(o, 0xffff);
                                bx(o, config, |o| o.extend_from_slice(&self.video.record));
                            });
                        });
                        empty_sample_tables(o);
                    });
                });
            });
        });
    }

    /// Adds a frame; returns a finished fragment when a keyframe closes the previous GOP.
    pub fn push(&mut self, frame: &Frame) -> Option<Vec<u8>> {
        if !frame.codec.is_video() {
            if frame.codec == Codec::Aac && self.audio.is_some() && frame.dts >= self.base_dts {
                for (h, raw) in super::aac::adts_frames(&frame.data) {
                    if !self.audio_started {
                        self.audio_started = true;
                        self.audio_time = self.file_time(frame.dts) * u64::from(h.sample_rate()) / 90_000;
                    }
                    self.pending_bytes += raw.len();
                    self.audio_samples.push(raw.to_vec());
                }
            }
            return None;
        }
        if frame.codec != self.video.codec || frame.dts < self.base_dts {
            return None;
        }
        let out = if (frame.keyframe && !self.video_samples.is_empty()) || self.video_samples.len() >= FRAGMENT_SAMPLES_MAX {
            self.fragment(Some(frame.dts))
        } else {
            None
        };
        let mut data = Vec::with_capacity(frame.data.len() + 16);
        h26x::append_length_prefixed(frame.codec, &frame.data, &mut data);
        let cto = (frame.pts as i64 - frame.dts as i64).clamp(i32::MIN as i64, i32::MAX as i64) as i32;
        self.pending_bytes += data.len();
        self.video_samples.push(Sample { dts: self.file_time(frame.dts), cto, keyframe: frame.keyframe, data });
        self.frames += 1;
        out
    }

    /// Drops what waits for the next fragment (the GOP under way) and returns the dts of its
    /// first video sample: a download resumed from the GOP's start then leaves no duplicate.
    pub fn discard_pending(&mut self) -> Option<u64> {
        let first = self.video_samples.first().map(|s| s.dts - self.offset + self.base_dts)?;
        self.frames -= self.video_samples.len() as u64;
        self.video_samples.clear();
        self.pending_bytes = 0;
        self.audio_samples.clear();
        Some(first)
    }

    /// The last fragment (end of recording).
    pub fn flush(&mut self) -> Option<Vec<u8>> {
        self.fragment(None)
    }

    /// The fragment of what is held, ending where a frame at `next_dts` will begin (a segment
    /// cut at that frame).
    pub fn fragment_until(&mut self, next_dts: u64) -> Option<Vec<u8>> {
        self.fragment(Some(next_dts))
    }

    /// Duration so far in milliseconds (last video sample's time).
    pub fn duration_ms(&self, latest_dts: u64) -> u64 {
        self.file_time(latest_dts) / 90
    }

    fn fragment(&mut self, next_dts: Option<u64>) -> Option<Vec<u8>> {
        if self.video_samples.is_empty() {
            return None;
        }
        let samples = std::mem::take(&mut self.video_samples);
        self.pending_bytes = 0;
        let audio = std::mem::take(&mut self.audio_samples);
        let mut durations: Vec<u32> = samples.windows(2).map(|w| w[1].dts.saturating_sub(w[0].dts) as u32).collect();
        let last = samples.last().expect("not empty");
        let last_duration = match next_dts {
            Some(n) => self.file_time(n).saturating_sub(last.dts),
            None => self.last_step,
        };
        if let Some(&d) = durations.last() {
            self.last_step = u64::from(d.max(1));
        }
        durations.push(last_duration as u32);
        self.sequence += 1;
        let mut moof = Vec::with_capacity(256 + samples.len() * 16);
        let mut offsets = Vec::new(); // positions of trun data_offset fields
        bx(&mut moof, b"moof", |o| {
            full(o, b"mfhd", 0, 0, |o| u32b(o, self.sequence));
            bx(o, b"traf", |o| {
                full(o, b"tfhd", 0, 0x02_0000, |o| u32b(o, VIDEO_TRACK));
                full(o, b"tfdt", 1, 0, |o| u64b(o, samples[0].dts));
                full(o, b"trun", 1, 0x000f01, |o| {
                    u32b(o, samples.len() as u32);
                    offsets.push(o.len());
                    u32b(o, 0);
                    for (s, d) in samples.iter().zip(&durations) {
                        u32b(o, *d);
                        u32b(o, s.data.len() as u32);
                        u32b(o, if s.keyframe { 0x0200_0000 } else { 0x0101_0000 });
                        u32b(o, s.cto as u32);
                    }
                });
            });
            if let (Some(_), false) = (self.audio, audio.is_empty()) {
                bx(o, b"traf", |o| {
                    full(o, b"tfhd", 0, 0x02_0000, |o| u32b(o, AUDIO_TRACK));
                    full(o, b"tfdt", 1, 0, |o| u64b(o, self.audio_time));
                    full(o, b"trun", 0, 0x000301, |o| {
                        u32b(o, audio.len() as u32);
                        offsets.push(o.len());
                        u32b(o, 0);
                        for a in &audio {
                            u32b(o, AAC_SAMPLES_PER_FRAME);
                            u32b(o, a.len() as u32);
                        }
                    });
                });
            }
        });
        self.audio_time += audio.len() as u64 * u64::from(AAC_SAMPLES_PER_FRAME);
        let video_bytes: usize = samples.iter().map(|s| s.data.len()).sum();
        let audio_bytes: usize = audio.iter().map(Vec::len).sum();
        let mdat_header = 8;
        let first = (moof.len() + mdat_header) as u32;
        for (i, pos) in offsets.iter().enumerate() {
            let off = if i == 0 { first } else { first + video_bytes as u32 };
            moof[*pos..pos + 4].copy_from_slice(&off.to_be_bytes());
        }
        let mut out = moof;
        out.reserve(mdat_header + video_bytes + audio_bytes);
        u32b(&mut out, (mdat_header + video_bytes + audio_bytes) as u32);
        out.extend_from_slice(b"mdat");
        for s in &samples {
            out.extend_from_slice(&s.data);
        }
        for a in &audio {
            out.extend_from_slice(a);
        }
        Some(out)
    }
}

fn tkhd(o: &mut Vec<u8>, id: u32, volume: u16, w: u32, h: u32) {
    full(o, b"tkhd", 0, 3, |o| {
        u32b(o, 0);
        u32b(o, 0);
        u32b(o, id);
        u32b(o, 0);
        u32b(o, 0);
        o.extend_from_slice(&[0; 8]);
        u16b(o, 0);
        u16b(o, 0);
        u16b(o, volume);
        u16b(o, 0);
        MATRIX.iter().for_each(|m| u32b(o, *m));
        u32b(o, w << 16);
        u32b(o, h << 16);
    });
}

fn mdhd(o: &mut Vec<u8>, timescale: u32) {
    full(o, b"mdhd", 0, 0, |o| {
        u32b(o, 0);
        u32b(o, 0);
        u32b(o, timescale);
        u32b(o, 0);
        u16b(o, 0x55c4); // "und"
        u16b(o, 0);
    });
}

fn hdlr(o: &mut Vec<u8>, kind: &[u8; 4], name: &[u8]) {
    full(o, b"hdlr", 0, 0, |o| {
        u32b(o, 0);
        o.extend_from_slice(kind);
        o.extend_from_slice(&[0; 12]);
        o.extend_from_slice(name);
    });
}

fn dinf(o: &mut Vec<u8>) {
    bx(o, b"dinf", |o| {
        full(o, b"dref", 0, 0, |o| {
            u32b(o, 1);
            full(o, b"url ", 0, 1, |_| {});
        });
    });
}

fn empty_sample_tables(o: &mut Vec<u8>) {
    for kind in [b"stts", b"stsc", b"stco"] {
        full(o, kind, 0, 0, |o| u32b(o, 0));
    }
    full(o, b"stsz", 0, 0, |o| {
        u32b(o, 0);
        u32b(o, 0);
    });
}

fn audio_trak(o: &mut Vec<u8>, a: AdtsHeader) {
    bx(o, b"trak", |o| {
        tkhd(o, AUDIO_TRACK, 0x0100, 0, 0);
        bx(o, b"mdia", |o| {
            mdhd(o, a.sample_rate());
            hdlr(o, b"soun", b"SoundHandler\0");
            bx(o, b"minf", |o| {
                full(o, b"smhd", 0, 0, |o| u32b(o, 0));
                dinf(o);
                bx(o, b"stbl", |o| {
                    full(o, b"stsd", 0, 0, |o| {
                        u32b(o, 1);
                        bx(o, b"mp4a", |o| {
                            o.extend_from_slice(&[0; 6]);
                            u16b(o, 1);
                            o.extend_from_slice(&[0; 8]);
                            u16b(o, u16::from(a.channels.max(1)));
                            u16b(o, 16);
                            u32b(o, 0);
                            u32b(o, a.sample_rate() << 16);
                            full(o, b"esds", 0, 0, |o| {
                                let asc = a.audio_specific_config();
                                // ES_Descriptor { DecoderConfigDescriptor { DecoderSpecificInfo }, SLConfig }
                                o.extend_from_slice(&[0x03, 25, 0, 0, 0]);
                                o.extend_from_slice(&[0x04, 17, 0x40, 0x15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
                                o.extend_from_slice(&[0x05, 2, asc[0], asc[1]]);
                                o.extend_from_slice(&[0x06, 1, 0x02]);
                            });
                        });
                    });
                    empty_sample_tables(o);
                });
            });
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const SPS: &[u8] =
        &[0x67, 0x64, 0x00, 0x0d, 0xac, 0xb2, 0x02, 0x83, 0xf6, 0x02, 0x20, 0x00, 0x00, 0x03, 0x00, 0x20, 0x00, 0x00, 0x06, 0x41, 0xe2, 0x85, 0x49];
    const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];

    fn config() -> VideoConfig {
        let mut p = ParamSets::default();
        p.observe(Codec::H264, SPS);
        p.observe(Codec::H264, PPS);
        VideoConfig::from_params(Codec::H264, &p).unwrap()
    }

    /// (type, payload) of top-level boxes.
    fn boxes(mut b: &[u8]) -> Vec<([u8; 4], Vec<u8>)> {
        let mut v = Vec::new();
        while b.len() >= 8 {
            let size = u32::from_be_bytes(b[..4].try_into().unwrap()) as usize;
            v.push((b[4..8].try_into().unwrap(), b[8..size].to_vec()));
            b = &b[size..];
        }
        v
    }

    #[test]
    fn init_segment_and_gop_fragments() {
        let mut m = Fmp4Muxer::new(config(), None, 9000);
        let init = m.init_segment();
        let top: Vec<[u8; 4]> = boxes(&init).iter().map(|b| b.0).collect();
        assert_eq!(top, vec![*b"ftyp", *b"moov"]);
        let frame = |i: u64, key: bool| Frame {
            codec: Codec::H264,
            pts: 9000 + i * 3600,
            dts: 9000 + i * 3600,
            keyframe: key,
            data: Bytes::from(vec![0, 0, 0, 1, if key { 0x65 } else { 0x41 }, 0x88, 1, 2]),
        };
        let mut fragments = Vec::new();
        for i in 0..60 {
            fragments.extend(m.push(&frame(i, i % 25 == 0)));
        }
        fragments.extend(m.flush());
        assert_eq!(fragments.len(), 3, "GOPs of 25, 25 and 10");
        let b = boxes(&fragments[1]);
        assert_eq!((b[0].0, b[1].0), (*b"moof", *b"mdat"));
        assert_eq!(b[1].1.len(), 25 * 8, "25 samples of 4-byte length + 4 bytes");
        assert_eq!(m.frames, 60);
    }
}

#[cfg(test)]
mod continuing_tests {
    use super::*;
    use crate::proto::mp4_read::{parse_moof, parse_moov};
    use bytes::Bytes;

    fn frame(dts: u64, key: bool) -> Frame {
        Frame { codec: Codec::H264, pts: dts, dts, keyframe: key, data: Bytes::from(vec![0, 0, 0, 1, if key { 0x65 } else { 0x41 }, 0x88, 1, 2]) }
    }

    /// (sequence, base time, sample count, durations) of each fragment of a file.
    fn fragments(file: &[u8]) -> Vec<(u32, u64, Vec<u32>)> {
        let mut out = Vec::new();
        for b in crate::proto::mp4_read::boxes(file) {
            let (kind, body) = b.unwrap();
            if &kind == b"moof" {
                let mfhd = crate::proto::mp4_read::boxes(body).find_map(|b| b.ok().filter(|(k, _)| k == b"mfhd")).unwrap().1;
                let sequence = u32::from_be_bytes(mfhd[4..8].try_into().unwrap());
                let run = parse_moof(body).unwrap().remove(0);
                out.push((sequence, run.base_time, run.samples.iter().map(|s| s.duration).collect()));
            }
        }
        out
    }

    #[test]
    fn a_continued_file_goes_on_where_it_ended() {
        let mut p = ParamSets::default();
        for nal in [&[0x67u8, 0x64, 0x00, 0x0d, 0xac, 0xb2, 0x02, 0x83, 0xf6, 0x02, 0x20, 0x00, 0x00, 0x03, 0x00, 0x20, 0x00, 0x00, 0x06, 0x41, 0xe2, 0x85, 0x49][..], &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0]] {
            p.observe(Codec::H264, nal);
        }
        let config = VideoConfig::from_params(Codec::H264, &p).unwrap();
        // Two GOPs of 4 frames (3600 ticks apart), the second left whole in the file.
        let mut first = Fmp4Muxer::new(config.clone(), None, 1_000);
        let mut file = first.init_segment();
        for i in 0..9 {
            file.extend(first.push(&frame(1_000 + i * 3600, i % 4 == 0)).unwrap_or_default());
        }
        let end_90k = 8 * 3600; // the fragments written end where frame 8 starts
        assert_eq!(fragments(&file).len(), 2);
        // After a restart the device's clock starts anywhere: 500,000 here.
        let mut next = Fmp4Muxer::continuing(config, None, 500_000, end_90k, 2);
        for i in 0..5 {
            file.extend(next.push(&frame(500_000 + i * 3600, i % 4 == 0)).unwrap_or_default());
        }
        file.extend(next.flush().unwrap());
        let f = fragments(&file);
        assert_eq!(f.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 2, 3, 4], "sequence numbers go on");
        let mut time = 0;
        for (_, base, durations) in &f {
            assert_eq!(*base, time, "each fragment starts where the last ended");
            time += durations.iter().map(|d| u64::from(*d)).sum::<u64>();
        }
        assert_eq!(next.duration_ms(500_000 + 4 * 3600), (end_90k + 4 * 3600) / 90);
        assert!(parse_moov(crate::proto::mp4_read::boxes(&file).nth(1).unwrap().unwrap().1).is_ok(), "one init segment");
    }
}
