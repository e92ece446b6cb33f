//! HTTP/1.1 request head parsing on httparse with caller-side limits (sans-IO): the HTTP
//! layer's, and what an executor hands another with a connection.

/// A request head larger than this is refused (431).
pub const HEAD_BYTES_MAX: usize = 8 * 1024;
pub const HEADERS_MAX: usize = 32;
/// API request bodies (JSON, SDP) larger than this are refused (413).
pub const BODY_BYTES_MAX: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    Malformed,
    TooLarge,
    BadContentLength,
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HeadError::Malformed => "the request head is not HTTP/1.x",
            HeadError::TooLarge => "the request head is too large",
            HeadError::BadContentLength => "Content-Length is not a number gmv takes",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub path: String,
    pub query: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub content_length: usize,
    /// HTTP/1.x minor version.
    pub version: u8,
}

impl RequestHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Whether the client keeps the connection for another request: HTTP/1.1 unless it says
    /// `Connection: close`, HTTP/1.0 only when it says `keep-alive`.
    pub fn wants_keep_alive(&self) -> bool {
        let connection = self.header("connection").unwrap_or("").to_ascii_lowercase();
        let says = |t: &str| connection.split(',').any(|v| v.trim() == t);
        if self.version >= 1 { !says("close") } else { says("keep-alive") }
    }

    /// `offset` and `limit` of a listing (limit defaults to and is capped at `max`).
    pub fn page(&self, max: usize) -> Page {
        let offset = self.query_param("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
        let limit = self.query_param("limit").and_then(|v| v.parse().ok()).unwrap_or(max).clamp(1, max);
        Page { offset, limit }
    }

    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then_some(v)
        })
    }
}

/// Parses a head from the start of `buf`: Ok(None) if more bytes are needed,
/// Ok(Some((head, head_len))) when complete.
/// A window of a listing: `{"total", "offset", ...}` goes with the items it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub offset: usize,
    pub limit: usize,
}

impl Page {
    /// The items of this page, and how many there were in all.
    pub fn of<T>(&self, items: impl Iterator<Item = T>) -> (Vec<T>, usize) {
        let mut total = 0;
        let mut kept = Vec::new();
        for item in items {
            if total >= self.offset && kept.len() < self.limit {
                kept.push(item);
            }
            total += 1;
        }
        (kept, total)
    }
}

/// `%XX` escapes decoded (a URL's user and password, a scope's name); bytes that do not make
/// UTF-8 are replaced, a `%` not followed by two hex digits and `+` are kept as they are.
pub fn percent_decode(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&c, tail)) = rest.split_first() {
        let hex = tail.get(..2).filter(|h| h.iter().all(u8::is_ascii_hexdigit));
        let (byte, used) = match hex.and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()) {
            Some(v) if c == b'%' => (v, 3),
            _ => (c, 1),
        };
        out.push(byte);
        rest = &rest[used..];
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_head(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut req = httparse::Request::new(&mut headers);
    let status = match req.parse(buf) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    let len = match status {
        httparse::Status::Partial if buf.len() >= HEAD_BYTES_MAX => return Err(HeadError::TooLarge),
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(len) if len > HEAD_BYTES_MAX => return Err(HeadError::TooLarge),
        httparse::Status::Complete(len) => len,
    };
    let target = req.path.ok_or(HeadError::Malformed)?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut content_length = 0;
    let mut out = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        let value = String::from_utf8_lossy(h.value).trim().to_string();
        if name == "content-length" {
            content_length = value.parse().map_err(|_| HeadError::BadContentLength)?;
        }
        if name == "transfer-encoding" {
            return Err(HeadError::BadContentLength); // chunked uploads are not needed by the API
        }
        out.push((name, value));
    }
    let head = RequestHead {
        method: req.method.ok_or(HeadError::Malformed)?.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers: out,
        content_length,
        version: req.version.unwrap_or(0),
    };
    Ok(Some((head, len)))
}

#[cfg(test)]
mod tests {

    #[test]
    fn percent_escapes_are_decoded_and_the_rest_kept() {
        assert_eq!(super::percent_decode("p%40ss%3Aw%2Frd"), "p@ss:w/rd");
        assert_eq!(super::percent_decode("a+b%2"), "a+b%2");
        assert_eq!(super::percent_decode("Front%20Door%E5%A4%A7"), "Front Door大");
        assert_eq!(super::percent_decode("%FF"), "\u{FFFD}");
    }
    use super::*;

    #[test]
    fn parses_complete_and_partial_heads() {
        let raw = b"GET /flv/0100000001/tok?x=1&token=abc HTTP/1.1\r\nHost: a\r\nGMV-Token: t\r\n\r\nBODY";
        let (head, len) = parse_head(raw).unwrap().unwrap();
        assert_eq!(len, raw.len() - 4);
        assert_eq!(head.path, "/flv/0100000001/tok");
        assert_eq!(head.query_param("token"), Some("abc"));
        assert_eq!(head.header("gmv-token"), Some("t"));
        assert_eq!(parse_head(&raw[..20]), Ok(None));
        assert!(head.wants_keep_alive());
        let close = parse_head(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").unwrap().unwrap().0;
        assert!(!close.wants_keep_alive());
        let old = parse_head(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap().0;
        assert!(!old.wants_keep_alive());
        let old_kept = parse_head(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap().unwrap().0;
        assert!(old_kept.wants_keep_alive());
    }

    #[test]
    fn limits_and_errors() {
        assert_eq!(parse_head(b"\x01\x02 / HTTP/1.1\r\n\r\n"), Err(HeadError::Malformed));
        let huge = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(HEAD_BYTES_MAX));
        assert_eq!(parse_head(huge.as_bytes()), Err(HeadError::TooLarge));
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(HEADERS_MAX + 1));
        assert_eq!(parse_head(many.as_bytes()), Err(HeadError::TooLarge));
        assert_eq!(parse_head(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), Err(HeadError::BadContentLength));
    }

    #[test]
    fn fuzz_never_panics() {
        let mut rng = crate::proto::testutil::Rng::new(13);
        let seed = b"POST /api/streams?token=a HTTP/1.1\r\nContent-Length: 10\r\nHost: x\r\n\r\n";
        for _ in 0..20_000 {
            let _ = parse_head(&rng.mutate(seed));
        }
    }
}
