//! Frames as bytes on a local socket: how a pull source's thread (an RTSP client on its own
//! runtime) hands whole frames to the media shard that owns the stream, with the socket's
//! buffer as the bound and the back-pressure. A fixed header then the data:
//! `b'F'`, codec, flags (bit 0: keyframe), a zero byte, pts and dts (u64, 90 kHz), length (u32).

use super::flv_demux::PARAMETER_SETS_BYTES_MAX;
use super::frame::{Codec, Frame};
use super::ps::FRAME_BYTES_MAX;
use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const HEADER_BYTES: usize = 24;
/// The longest frame carried: a picture with its parameter sets.
pub const WIRE_FRAME_BYTES_MAX: usize = FRAME_BYTES_MAX + PARAMETER_SETS_BYTES_MAX;
const MAGIC: u8 = b'F';

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Not a frame header where one was due: the writer and reader disagree; stop reading.
    BadHeader,
    TooLarge,
}

fn codec_byte(c: Codec) -> u8 {
    match c {
        Codec::H264 => 1,
        Codec::H265 => 2,
        Codec::Pcma => 3,
        Codec::Pcmu => 4,
        Codec::Aac => 5,
    }
}

fn codec_of(b: u8) -> Option<Codec> {
    Some(match b {
        1 => Codec::H264,
        2 => Codec::H265,
        3 => Codec::Pcma,
        4 => Codec::Pcmu,
        5 => Codec::Aac,
        _ => return None,
    })
}

/// Appends `frame` to `out`; false (nothing appended) when it is longer than the wire takes.
pub fn encode(frame: &Frame, out: &mut BytesMut) -> bool {
    if frame.data.len() > WIRE_FRAME_BYTES_MAX {
        return false;
    }
    out.reserve(HEADER_BYTES + frame.data.len());
    out.put_u8(MAGIC);
    out.put_u8(codec_byte(frame.codec));
    out.put_u8(u8::from(frame.keyframe));
    out.put_u8(0);
    out.put_u64(frame.pts);
    out.put_u64(frame.dts);
    out.put_u32(frame.data.len() as u32);
    out.put_slice(&frame.data);
    true
}

/// Collects bytes read from the socket and gives the frames whole.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
}

impl Decoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, None while it is still coming; an error ends the stream.
    pub fn pop(&mut self) -> Result<Option<Frame>, WireError> {
        if self.buf.len() < HEADER_BYTES {
            return Ok(None);
        }
        let h = &self.buf[..HEADER_BYTES];
        let codec = codec_of(h[1]).filter(|_| h[0] == MAGIC && h[2] <= 1 && h[3] == 0).ok_or(WireError::BadHeader)?;
        let len = u32::from_be_bytes([h[20], h[21], h[22], h[23]]) as usize;
        if len > WIRE_FRAME_BYTES_MAX {
            return Err(WireError::TooLarge);
        }
        if self.buf.len() < HEADER_BYTES + len {
            return Ok(None);
        }
        let keyframe = h[2] == 1;
        let mut head = self.buf.split_to(HEADER_BYTES);
        head.advance(4);
        let (pts, dts) = (head.get_u64(), head.get_u64());
        let data: Bytes = self.buf.split_to(len).freeze();
        Ok(Some(Frame { codec, pts, dts, keyframe, data }))
    }

    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_cross_whole_in_any_pieces() {
        let frames = [
            Frame { codec: Codec::H265, pts: 1 << 40, dts: (1 << 40) - 3600, keyframe: true, data: Bytes::from_static(&[0, 0, 0, 1, 0x26, 1]) },
            Frame { codec: Codec::Aac, pts: 7, dts: 7, keyframe: false, data: Bytes::from_static(&[0xff, 0xf1, 1]) },
        ];
        let mut wire = BytesMut::new();
        for f in &frames {
            assert!(encode(f, &mut wire));
        }
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for b in wire.chunks(5) {
            d.push(b);
            while let Some(f) = d.pop().unwrap() {
                out.push(f);
            }
        }
        assert_eq!(out, frames);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn a_bad_header_or_length_is_an_error_not_a_wait() {
        let mut d = Decoder::default();
        d.push(&[b'X'; HEADER_BYTES]);
        assert_eq!(d.pop(), Err(WireError::BadHeader));
        let mut d = Decoder::default();
        let mut h = vec![b'F', 1, 0, 0];
        h.extend_from_slice(&[0; 16]);
        h.extend_from_slice(&u32::MAX.to_be_bytes());
        d.push(&h);
        assert_eq!(d.pop(), Err(WireError::TooLarge));
    }
}
