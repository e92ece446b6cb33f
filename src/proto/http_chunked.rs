//! HTTP/1.1 chunked transfer coding (RFC 9112 §7.1) decoded as bytes come: what HTTP-FLV
//! servers (SRS, ZLMediaKit behind proxies, nginx) send a stream of unknown length in. Sans-IO;
//! a size line or a trailer line longer than `CHUNK_LINE_BYTES_MAX` is an error, so a hostile
//! server cannot make it keep bytes that are not body.

use bytes::BytesMut;

/// A chunk-size line (hex size and extensions) or trailer line, at most.
pub const CHUNK_LINE_BYTES_MAX: usize = 256;
/// Trailer lines after the last chunk, at most.
const TRAILER_LINES_MAX: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkedError {
    /// A size line that is not hex, or too long, or a chunk not followed by CRLF.
    BadFraming,
}

impl std::fmt::Display for ChunkedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bad chunked transfer coding")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Reading a size line (its bytes so far in `line`).
    Size,
    /// In a chunk's data, bytes left.
    Data(u64),
    /// The CRLF after a chunk's data: bytes of it seen.
    DataEnd(u8),
    /// After the last chunk: trailer lines, then an empty line.
    Trailer { lines: usize },
    Done,
}

#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    line: Vec<u8>,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder { state: State::Size, line: Vec::new() }
    }
}

impl ChunkedDecoder {
    pub fn new() -> ChunkedDecoder {
        ChunkedDecoder::default()
    }

    /// The last chunk and the trailer came: the body is whole.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes all of `input`, appending body bytes to `out` (bytes after the end are ignored).
    pub fn decode(&mut self, mut input: &[u8], out: &mut BytesMut) -> Result<(), ChunkedError> {
        while !input.is_empty() {
            match self.state {
                State::Done => return Ok(()),
                State::Data(left) => {
                    let n = (left.min(input.len() as u64)) as usize;
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.state = if left == n as u64 { State::DataEnd(0) } else { State::Data(left - n as u64) };
                }
                State::DataEnd(seen) => {
                    let want = if seen == 0 { b'\r' } else { b'\n' };
                    if input[0] != want {
                        return Err(ChunkedError::BadFraming);
                    }
                    input = &input[1..];
                    self.state = if seen == 0 { State::DataEnd(1) } else { State::Size };
                }
                State::Size | State::Trailer { .. } => {
                    let Some(line) = self.take_line(&mut input)? else { continue };
                    match self.state {
                        State::Size => {
                            let size = parse_size(&line)?;
                            self.state = if size == 0 { State::Trailer { lines: 0 } } else { State::Data(size) };
                        }
                        State::Trailer { .. } if line.is_empty() => self.state = State::Done,
                        State::Trailer { lines } if lines < TRAILER_LINES_MAX => self.state = State::Trailer { lines: lines + 1 },
                        _ => return Err(ChunkedError::BadFraming),
                    }
                }
            }
        }
        Ok(())
    }

    /// Gathers a line ending in LF (its CR dropped); None while it is incomplete (all of the
    /// input taken).
    fn take_line(&mut self, input: &mut &[u8]) -> Result<Option<Vec<u8>>, ChunkedError> {
        let end = memchr::memchr(b'\n', input);
        let take = end.map_or(input.len(), |e| e + 1);
        if self.line.len() + take > CHUNK_LINE_BYTES_MAX {
            return Err(ChunkedError::BadFraming);
        }
        self.line.extend_from_slice(&input[..take]);
        *input = &input[take..];
        if end.is_none() {
            return Ok(None);
        }
        let mut line = std::mem::take(&mut self.line);
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok(Some(line))
    }
}

/// A size line: hex digits, then optional `;extensions`.
fn parse_size(line: &[u8]) -> Result<u64, ChunkedError> {
    let hex = line.split(|&b| b == b';').next().unwrap_or_default();
    let hex = hex.trim_ascii();
    if hex.is_empty() || hex.len() > 15 {
        return Err(ChunkedError::BadFraming);
    }
    let text = std::str::from_utf8(hex).map_err(|_| ChunkedError::BadFraming)?;
    u64::from_str_radix(text, 16).map_err(|_| ChunkedError::BadFraming)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\nafter";

    #[test]
    fn decodes_however_the_bytes_are_cut() {
        for cut in 1..BODY.len() {
            let mut d = ChunkedDecoder::new();
            let mut out = BytesMut::new();
            for piece in BODY.chunks(cut) {
                d.decode(piece, &mut out).unwrap();
            }
            assert_eq!(&out[..], b"hello world", "cut {cut}");
            assert!(d.done());
        }
    }

    #[test]
    fn bad_framing_and_endless_lines_are_errors() {
        let mut out = BytesMut::new();
        assert!(ChunkedDecoder::new().decode(b"zz\r\n", &mut out).is_err());
        assert!(ChunkedDecoder::new().decode(b"3\r\nabcX", &mut out).is_err());
        assert!(ChunkedDecoder::new().decode(&[b'1'; CHUNK_LINE_BYTES_MAX + 1], &mut out).is_err());
        assert!(ChunkedDecoder::new().decode(b"ffffffffffffffff\r\n", &mut out).is_err());
    }
}
