//! Reads a recording (gmv's fragmented MP4) back as frames, one fragment (a GOP) at a time:
//! bounded memory however long the file. What playback (`record_play`) and export
//! (`record_export`) stand on.

use crate::proto::frame::{Codec, Frame};
use crate::proto::mp4_read::{self, InitInfo};
use bytes::Bytes;
use glommio::io::BufferedFile;

/// Largest box read into memory (a fragment of a high-bitrate GOP fits).
pub const BOX_BYTES_MAX: u64 = 64 << 20;

/// A fragment's frames, video and audio in decode order, and where the fragment ends (90 kHz).
pub struct Fragment {
    pub frames: Vec<Frame>,
    pub end_90k: u64,
}

pub struct RecordingReader {
    f: BufferedFile,
    len: u64,
    pos: u64,
    init: Option<InitInfo>,
}

async fn read(f: &BufferedFile, pos: u64, len: u64) -> Option<Vec<u8>> {
    let r = f.read_at(pos, len as usize).await.ok()?;
    (r.len() as u64 == len).then(|| r.to_vec())
}

impl RecordingReader {
    pub async fn new(f: BufferedFile) -> RecordingReader {
        let len = f.file_size().await.unwrap_or(0);
        RecordingReader { f, len, pos: 0, init: None }
    }

    /// The file's tracks (video, audio), read from its init segment (the boxes before the
    /// first fragment); None when it has none.
    pub async fn tracks(&mut self) -> Option<(bool, bool)> {
        while self.init.is_none() && self.pos + 8 <= self.len {
            let header = read(&self.f, self.pos, 8).await?;
            let size = u64::from(u32::from_be_bytes([header[0], header[1], header[2], header[3]]));
            if !(8..=BOX_BYTES_MAX).contains(&size) || self.pos + size > self.len || &header[4..8] == b"moof" {
                break;
            }
            if &header[4..8] == b"moov" {
                self.init = read(&self.f, self.pos + 8, size - 8).await.and_then(|b| mp4_read::parse_moov(&b).ok());
            }
            self.pos += size;
        }
        self.init.as_ref().map(|i| (i.video.is_some(), i.audio.is_some()))
    }

    /// From the file's start again (a seek).
    pub fn rewind(&mut self) {
        self.pos = 0;
    }

    /// The next fragment; None at the end, at a fragment still being written, or at damage.
    pub async fn next_fragment(&mut self) -> Option<Fragment> {
        while self.pos + 8 <= self.len {
            let header = read(&self.f, self.pos, 8).await?;
            let size = u64::from(u32::from_be_bytes([header[0], header[1], header[2], header[3]]));
            let kind = [header[4], header[5], header[6], header[7]];
            if !(8..=BOX_BYTES_MAX).contains(&size) || self.pos + size > self.len {
                return None;
            }
            let at = self.pos;
            self.pos += size;
            match &kind {
                b"moov" => self.init = read(&self.f, at + 8, size - 8).await.and_then(|b| mp4_read::parse_moov(&b).ok()),
                b"moof" => return self.fragment(at, size).await,
                _ => {}
            }
        }
        None
    }

    async fn fragment(&self, at: u64, size: u64) -> Option<Fragment> {
        let info = self.init.as_ref()?;
        let moof = read(&self.f, at + 8, size - 8).await?;
        let runs = mp4_read::parse_moof(&moof).ok()?;
        let mut frames = Vec::new();
        let mut end_90k = 0;
        for run in &runs {
            let mut offset = at + u64::from(run.data_offset);
            let mut time = run.base_time;
            for s in &run.samples {
                let data = read(&self.f, offset, u64::from(s.size)).await?;
                offset += u64::from(s.size);
                if let Some(v) = info.video.as_ref().filter(|v| v.track_id == run.track_id) {
                    let scale = u64::from(v.timescale.max(1));
                    let dts = time * 90_000 / scale;
                    let pts = (dts as i64 + i64::from(s.cto) * 90_000 / i64::from(v.timescale.max(1))).max(0) as u64;
                    frames.push(Frame { codec: v.codec, pts, dts, keyframe: s.keyframe, data: Bytes::from(annexb(&data, &v.params, s.keyframe)) });
                    end_90k = end_90k.max((time + u64::from(s.duration)) * 90_000 / scale);
                } else if let Some(a) = info.audio.as_ref().filter(|a| a.track_id == run.track_id) {
                    let dts = time * 90_000 / u64::from(a.timescale.max(1));
                    let mut framed = crate::proto::aac::adts_header(a.asc, data.len()).to_vec();
                    framed.extend_from_slice(&data);
                    frames.push(Frame { codec: Codec::Aac, pts: dts, dts, keyframe: true, data: Bytes::from(framed) });
                }
                time += u64::from(s.duration);
            }
        }
        frames.sort_by_key(|fr| (fr.dts, !fr.codec.is_video()));
        Some(Fragment { frames, end_90k })
    }

    pub async fn close(self) {
        let _ = self.f.close().await;
    }
}

/// Annex B picture from a length-prefixed sample, parameter sets first on keyframes.
fn annexb(sample: &[u8], params: &[Vec<u8>], keyframe: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(sample.len() + 64);
    if keyframe {
        for p in params {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(p);
        }
    }
    let mut rest = sample;
    while rest.len() >= 4 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let Some(nal) = rest.get(4..4 + len) else { break };
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal);
        rest = &rest[4 + len..];
    }
    out
}
