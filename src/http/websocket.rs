//! WebSocket (RFC 6455) for live FLV, server side only: the handshake answer and binary frames.
//! A browser opens only six HTTP/1.1 connections to one origin but about 255 WebSockets, so a
//! 16-tile wall plays its tiles over WebSocket. Nothing the client sends is read (players send
//! nothing; a close frame is followed by the connection closing, which ends the writes).

use super::request::RequestHead;
use base64::Engine as _;
use sha1::{Digest, Sha1};

/// RFC 6455 §1.3: appended to the client's key before hashing.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// FIN + binary opcode.
const FIN_BINARY: u8 = 0x82;

/// The `Sec-WebSocket-Accept` for a client key.
pub fn accept_for(key: &str) -> String {
    let digest = Sha1::new().chain_update(key.trim().as_bytes()).chain_update(WS_GUID.as_bytes()).finalize();
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// The accept value when `head` asks to upgrade to a WebSocket (version 13, a 16-byte key).
pub fn upgrade_accept(head: &RequestHead) -> Option<String> {
    let has = |name: &str, token: &str| head.header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)));
    if !has("upgrade", "websocket") || !has("connection", "upgrade") || head.header("sec-websocket-version").map(str::trim) != Some("13") {
        return None;
    }
    let key = head.header("sec-websocket-key")?.trim();
    let raw = base64::engine::general_purpose::STANDARD.decode(key).ok()?;
    (raw.len() == 16).then(|| accept_for(key))
}

/// The 101 answer (CORS and the like are for HTTP responses; a WebSocket has none).
pub fn handshake(accept: &str) -> String {
    format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n")
}

/// Appends `payload` as one unmasked binary frame.
pub fn binary_frame(payload: &[u8], out: &mut Vec<u8>) {
    out.push(FIN_BINARY);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_6455_example_and_frame_lengths() {
        assert_eq!(accept_for("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        for (len, header) in [(5usize, vec![0x82, 5]), (300, vec![0x82, 126, 1, 44]), (70_000, vec![0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70])] {
            let mut out = Vec::new();
            binary_frame(&vec![7; len], &mut out);
            assert_eq!(&out[..header.len()], &header[..]);
            assert_eq!(out.len(), header.len() + len);
        }
    }
}
