//! What a pulled HTTP-FLV or HLS source sends: the first byte picks the parser (FLV reader,
//! chunked transfer decoder, m3u8 playlist), the rest is fed in pieces whose sizes come from
//! the input too, so framing split anywhere is tried.
#![no_main]
use bytes::BytesMut;
use gmv::proto::flv_read::{FlvReader, FLV_TAG_BYTES_MAX};
use gmv::proto::http_chunked::ChunkedDecoder;
use gmv::proto::m3u8;
use libfuzzer_sys::fuzz_target;

/// The FLV reader holds at most one tag with its headers plus the piece just pushed.
const FLV_HELD_BYTES_MAX: usize = FLV_TAG_BYTES_MAX + 11 + 4 + 1024 + 255;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    match pick % 3 {
        0 => {
            let mut reader = FlvReader::new();
            for piece in pieces(rest) {
                reader.push(piece);
                loop {
                    match reader.next_tag() {
                        Ok(Some(tag)) => assert!(tag.body.len() <= FLV_TAG_BYTES_MAX),
                        Ok(None) => break,
                        Err(_) => return,
                    }
                }
                assert!(reader.buffered() <= FLV_HELD_BYTES_MAX, "{} bytes held", reader.buffered());
            }
        }
        1 => {
            let mut decoder = ChunkedDecoder::new();
            let mut body = BytesMut::new();
            for piece in pieces(rest) {
                let before = body.len();
                if decoder.decode(piece, &mut body).is_err() {
                    return;
                }
                // Body bytes come only from input bytes.
                assert!(body.len() - before <= piece.len());
            }
        }
        _ => {
            if let Ok(m3u8::Playlist::Media { segments, .. }) = m3u8::parse(rest) {
                assert!(segments.len() <= m3u8::SEGMENTS_MAX);
                assert!(segments.windows(2).all(|w| w[0].sequence <= w[1].sequence));
            }
        }
    }
});

/// Splits `data` at lengths read from its own bytes: a length byte, then that many bytes.
fn pieces(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (&len, rest) = data.split_first()?;
        let n = usize::from(len).max(1).min(rest.len());
        let (piece, tail) = rest.split_at(n);
        data = tail;
        Some(piece)
    })
}
