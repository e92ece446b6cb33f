//! MPEG-2 Program Stream muxer in the GB28181 device layout: pack header per frame, system
//! header and PSM before keyframes, PES split at 64 KiB. Used by the load generator and tests
//! to produce what cameras send.

use super::frame::{Codec, Frame};

const VIDEO_STREAM_ID: u8 = 0xe0;
const AUDIO_STREAM_ID: u8 = 0xc0;
/// PES payload per packet, leaving room for the header inside the 16-bit length.
const PES_PAYLOAD_BYTES_MAX: usize = 65_000;
/// Declared in pack/system headers, in units of 50 bytes/s (~20 Mbit/s).
const MUX_RATE_50BPS: u32 = 50_000;

pub struct PsMuxer {
    video: Option<Codec>,
    audio: Option<Codec>,
}

impl PsMuxer {
    pub fn new(video: Codec, audio: Option<Codec>) -> Self {
        PsMuxer { video: Some(video), audio }
    }

    /// Audio alone (a voice broadcast): each audio frame leads its own pack.
    pub fn audio_only(audio: Codec) -> Self {
        PsMuxer { video: None, audio: Some(audio) }
    }

    pub fn mux(&mut self, frame: &Frame) -> Vec<u8> {
        let mut out = Vec::with_capacity(frame.data.len() + 64);
        let is_video = frame.codec.is_video();
        if is_video || self.video.is_none() {
            write_pack_header(&mut out, frame.dts);
            if frame.keyframe {
                self.write_system_header(&mut out);
                self.write_psm(&mut out);
            }
        }
        let stream_id = if is_video { VIDEO_STREAM_ID } else { AUDIO_STREAM_ID };
        for (i, chunk) in frame.data.chunks(PES_PAYLOAD_BYTES_MAX).enumerate() {
            let dts = (frame.dts != frame.pts).then_some(frame.dts);
            write_pes(&mut out, stream_id, (i == 0).then_some((frame.pts, dts)), chunk);
        }
        out
    }

    fn write_system_header(&self, out: &mut Vec<u8>) {
        let streams = self.video.is_some() as usize + self.audio.is_some() as usize;
        let len = 6 + 3 * streams;
        out.extend_from_slice(&[0, 0, 1, 0xbb, 0, len as u8]);
        out.push(0x80 | (MUX_RATE_50BPS >> 15) as u8);
        out.push((MUX_RATE_50BPS >> 7) as u8);
        out.push(((MUX_RATE_50BPS << 1) as u8) | 1);
        out.push((self.audio.is_some() as u8) << 2); // audio_bound; fixed and CSPS flags clear
        out.push(0xe0 | self.video.is_some() as u8); // locks, marker, video_bound
        out.push(0x7f);
        if self.video.is_some() {
            out.extend_from_slice(&[VIDEO_STREAM_ID, 0xe0, 0xe8]);
        }
        if self.audio.is_some() {
            out.extend_from_slice(&[AUDIO_STREAM_ID, 0xc0, 0x20]);
        }
    }

    fn write_psm(&self, out: &mut Vec<u8>) {
        let mut map = Vec::with_capacity(8);
        if let Some(v) = self.video {
            map.extend_from_slice(&[v.stream_type(), VIDEO_STREAM_ID, 0, 0]);
        }
        if let Some(a) = self.audio {
            map.extend_from_slice(&[a.stream_type(), AUDIO_STREAM_ID, 0, 0]);
        }
        let len = 2 + 2 + 2 + map.len() + 4;
        let start = out.len();
        out.extend_from_slice(&[0, 0, 1, 0xbc, (len >> 8) as u8, len as u8, 0xe0, 0xff, 0, 0]);
        out.extend_from_slice(&(map.len() as u16).to_be_bytes());
        out.extend_from_slice(&map);
        let crc = crc32_mpeg(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
}

fn write_pack_header(out: &mut Vec<u8>, scr: u64) {
    let base = scr & 0x1_ffff_ffff;
    out.extend_from_slice(&[
        0,
        0,
        1,
        0xba,
        0x44 | ((base >> 27) & 0x38) as u8 | ((base >> 28) & 0x03) as u8,
        (base >> 20) as u8,
        ((base >> 12) & 0xf8) as u8 | 0x04 | ((base >> 13) & 0x03) as u8,
        (base >> 5) as u8,
        ((base << 3) & 0xf8) as u8 | 0x04,
        0x01,
        (MUX_RATE_50BPS >> 14) as u8,
        (MUX_RATE_50BPS >> 6) as u8,
        ((MUX_RATE_50BPS << 2) as u8) | 0x03,
        0xf8,
    ]);
}

pub(crate) fn write_timestamp(out: &mut Vec<u8>, prefix: u8, ts: u64) {
    let ts = ts & 0x1_ffff_ffff;
    out.extend_from_slice(&[
        (prefix << 4) | ((ts >> 29) & 0x0e) as u8 | 1,
        (ts >> 22) as u8,
        ((ts >> 14) & 0xfe) as u8 | 1,
        (ts >> 7) as u8,
        ((ts << 1) & 0xfe) as u8 | 1,
    ]);
}

fn write_pes(out: &mut Vec<u8>, stream_id: u8, timestamps: Option<(u64, Option<u64>)>, payload: &[u8]) {
    let header_len = match timestamps {
        Some((_, Some(_))) => 10,
        Some((_, None)) => 5,
        None => 0,
    };
    let len = 3 + header_len + payload.len();
    out.extend_from_slice(&[0, 0, 1, stream_id, (len >> 8) as u8, len as u8, 0x80]);
    match timestamps {
        Some((pts, Some(dts))) => {
            out.extend_from_slice(&[0xc0, 10]);
            write_timestamp(out, 0x3, pts);
            write_timestamp(out, 0x1, dts);
        }
        Some((pts, None)) => {
            out.extend_from_slice(&[0x80, 5]);
            write_timestamp(out, 0x2, pts);
        }
        None => out.extend_from_slice(&[0x00, 0]),
    }
    out.extend_from_slice(payload);
}

/// CRC-32/MPEG-2 (poly 0x04C11DB7, no reflection), as PSM and PSI tables use.
pub fn crc32_mpeg(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 { (crc << 1) ^ 0x04c1_1db7 } else { crc << 1 };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32_mpeg_check_value() {
        assert_eq!(super::crc32_mpeg(b"123456789"), 0x0376_e6e7);
    }
}
