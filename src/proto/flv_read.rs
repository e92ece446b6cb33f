//! An FLV byte stream (HTTP-FLV, an `.flv` file) to tags: the 9-byte header and its first
//! PreviousTagSize, then tags (11-byte header, body, PreviousTagSize) whose bodies
//! `flv_demux::TagDemuxer` reads. Sans-IO: bytes in as they come, whole tags out; a tag's size
//! is bounded before a byte of its body is kept, so a lying source costs no memory.

use super::flv_demux::PARAMETER_SETS_BYTES_MAX;
use super::ps::FRAME_BYTES_MAX;
use bytes::{Buf, Bytes, BytesMut};

/// The largest tag body taken: a picture at the frame bound plus its length prefixes.
pub const FLV_TAG_BYTES_MAX: usize = FRAME_BYTES_MAX + PARAMETER_SETS_BYTES_MAX;
const FILE_HEADER_BYTES: usize = 9;
const TAG_HEADER_BYTES: usize = 11;
const PREVIOUS_TAG_SIZE_BYTES: usize = 4;
pub const TAG_AUDIO: u8 = 8;
pub const TAG_VIDEO: u8 = 9;
pub const TAG_SCRIPT: u8 = 18;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlvReadError {
    /// The stream does not start with `FLV` version 1.
    NotFlv,
    /// A tag type other than audio, video or script data, or an encrypted (filtered) tag: the
    /// stream is not FLV or lost its framing.
    BadTag(u8),
    /// A tag body over `FLV_TAG_BYTES_MAX`.
    TooLarge(usize),
}

impl std::fmt::Display for FlvReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlvReadError::NotFlv => f.write_str("not an FLV stream (no FLV header)"),
            FlvReadError::BadTag(t) => write!(f, "FLV tag type {t} (lost framing?)"),
            FlvReadError::TooLarge(n) => write!(f, "FLV tag of {n} bytes (at most {FLV_TAG_BYTES_MAX})"),
        }
    }
}

/// One tag: its type (`TAG_AUDIO`, `TAG_VIDEO`, `TAG_SCRIPT`), its 32-bit time in ms, its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlvTag {
    pub kind: u8,
    pub time_ms: u32,
    pub body: Bytes,
}

#[derive(Debug, Default)]
pub struct FlvReader {
    buf: BytesMut,
    header_read: bool,
}

impl FlvReader {
    pub fn new() -> FlvReader {
        FlvReader::default()
    }

    /// Bytes held for the tag being assembled (at most one tag and its header, plus what the
    /// caller pushed since the last `next`).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole tag, None until more bytes come. An error means the stream is unusable.
    pub fn next_tag(&mut self) -> Result<Option<FlvTag>, FlvReadError> {
        if !self.header_read {
            if self.buf.len() < FILE_HEADER_BYTES {
                // Refuse early what cannot become a header.
                if !b"FLV\x01".starts_with(&self.buf[..self.buf.len().min(4)]) {
                    return Err(FlvReadError::NotFlv);
                }
                return Ok(None);
            }
            if &self.buf[..4] != b"FLV\x01" {
                return Err(FlvReadError::NotFlv);
            }
            let offset = u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]]) as usize;
            // DataOffset is 9 in FLV 1; a larger one skips header bytes of a later version, but
            // never more than a tag's worth.
            if !(FILE_HEADER_BYTES..=FILE_HEADER_BYTES + 1024).contains(&offset) {
                return Err(FlvReadError::NotFlv);
            }
            if self.buf.len() < offset + PREVIOUS_TAG_SIZE_BYTES {
                return Ok(None);
            }
            self.buf.advance(offset + PREVIOUS_TAG_SIZE_BYTES);
            self.header_read = true;
        }
        if self.buf.len() < TAG_HEADER_BYTES {
            return Ok(None);
        }
        let h = &self.buf[..TAG_HEADER_BYTES];
        // Bit 5 is "filter" (encrypted); bits 6-7 are reserved.
        let kind = h[0];
        if !matches!(kind, TAG_AUDIO | TAG_VIDEO | TAG_SCRIPT) {
            return Err(FlvReadError::BadTag(kind));
        }
        let size = usize::from(h[1]) << 16 | usize::from(h[2]) << 8 | usize::from(h[3]);
        if size > FLV_TAG_BYTES_MAX {
            return Err(FlvReadError::TooLarge(size));
        }
        let time_ms = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
        let whole = TAG_HEADER_BYTES + size + PREVIOUS_TAG_SIZE_BYTES;
        if self.buf.len() < whole {
            self.buf.reserve(whole - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(TAG_HEADER_BYTES);
        let body = self.buf.split_to(size).freeze();
        self.buf.advance(PREVIOUS_TAG_SIZE_BYTES);
        Ok(Some(FlvTag { kind, time_ms, body }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(kind: u8, time_ms: u32, body: &[u8]) -> Vec<u8> {
        let mut t = vec![kind];
        t.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        t.extend_from_slice(&time_ms.to_be_bytes()[1..]);
        t.push((time_ms >> 24) as u8);
        t.extend_from_slice(&[0, 0, 0]);
        t.extend_from_slice(body);
        t.extend_from_slice(&((TAG_HEADER_BYTES + body.len()) as u32).to_be_bytes());
        t
    }

    fn stream() -> Vec<u8> {
        let mut s = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
        s.extend(tag(TAG_SCRIPT, 0, b"meta"));
        s.extend(tag(TAG_VIDEO, 40, &[0x17, 0, 0, 0, 0]));
        s.extend(tag(TAG_AUDIO, 0x0100_0020, &[0x72, 1, 2]));
        s
    }

    #[test]
    fn tags_come_whole_however_the_bytes_are_cut() {
        let s = stream();
        for cut in 1..s.len() {
            let mut r = FlvReader::new();
            let mut tags = vec![];
            for piece in s.chunks(cut) {
                r.push(piece);
                while let Some(t) = r.next_tag().unwrap() {
                    tags.push(t);
                }
            }
            assert_eq!(tags.len(), 3, "cut {cut}");
            assert_eq!((tags[1].kind, tags[1].time_ms, &tags[1].body[..]), (TAG_VIDEO, 40, &[0x17, 0, 0, 0, 0][..]));
            assert_eq!(tags[2].time_ms, 0x0100_0020, "the extended byte is the time's top");
            assert_eq!(r.buffered(), 0);
        }
    }

    #[test]
    fn what_is_not_flv_or_too_large_is_refused_before_it_is_kept() {
        let mut r = FlvReader::new();
        r.push(b"HTTP/1.1 200");
        assert_eq!(r.next_tag(), Err(FlvReadError::NotFlv));
        let mut r = FlvReader::new();
        r.push(b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00");
        r.push(&[TAG_VIDEO, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(r.next_tag(), Err(FlvReadError::TooLarge(0xff_ffff)));
        let mut r = FlvReader::new();
        r.push(b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00");
        r.push(&[0x47; 11]);
        assert_eq!(r.next_tag(), Err(FlvReadError::BadTag(0x47)));
    }
}
