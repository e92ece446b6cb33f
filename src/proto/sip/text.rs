//! Text bodies in the device's encoding: GB28181 XML often declares GB2312 (really GBK/GB18030).

use encoding_rs::{Encoding, GB18030, UTF_8};

/// The encoding named in `<?xml ... encoding="..."?>`, else UTF-8. GB2312 and GBK are decoded
/// as GB18030, their superset, since devices put GBK characters in "GB2312" bodies.
pub fn xml_encoding(body: &[u8]) -> &'static Encoding {
    let head = &body[..body.len().min(200)];
    let head = String::from_utf8_lossy(head);
    let Some(decl) = head.find("<?xml").map(|i| &head[i..]) else { return UTF_8 };
    let decl = &decl[..decl.find("?>").unwrap_or(decl.len())];
    let Some(i) = decl.to_ascii_lowercase().find("encoding") else { return UTF_8 };
    let value = decl[i + 8..].trim_start().trim_start_matches('=').trim_start();
    let value = value.trim_start_matches(['"', '\'']);
    let name = &value[..value.find(['"', '\'', ' ', '?']).unwrap_or(value.len())];
    match Encoding::for_label(name.as_bytes()) {
        Some(e) if e == encoding_rs::GBK => GB18030,
        Some(e) => e,
        None => UTF_8,
    }
}

/// Decodes a body by its XML declaration; malformed sequences become U+FFFD, never an error.
pub fn decode_body(body: &[u8]) -> (String, &'static Encoding) {
    let enc = xml_encoding(body);
    let (text, _, _) = enc.decode(body);
    (text.into_owned(), enc)
}

/// Encodes a reply in the device's encoding.
pub fn encode_body(text: &str, enc: &'static Encoding) -> Vec<u8> {
    let (bytes, _, _) = enc.encode(text);
    bytes.into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gb2312_round_trip() {
        let text = "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Name>前门摄像机</Name>";
        let bytes = encode_body(text, GB18030);
        assert_ne!(bytes, text.as_bytes());
        let (decoded, enc) = decode_body(&bytes);
        assert_eq!(decoded, text);
        assert_eq!(enc, GB18030);
        assert_eq!(xml_encoding(b"<?xml version='1.0' encoding='utf-8'?>"), UTF_8);
        assert_eq!(xml_encoding(b"<Query/>"), UTF_8);
    }
}
