//! Outbound HTTP/1.1 POSTs (webhooks, node hooks): one request per connection, the answer read
//! whole up to a bound, every step under one deadline. Plain HTTP only (no TLS offered yet).

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use std::time::Duration;

/// Bytes of an answer (head and body) read at most; a longer one is an error.
pub const ANSWER_BYTES_MAX: usize = 64 * 1024;
/// Retries a sender may be configured with.
pub const RETRIES_MAX: u32 = 10;
/// Headers of an answer parsed at most.
const ANSWER_HEADERS_MAX: usize = 32;

/// `http://host[:port][/path]` as (host, port, path).
pub fn parse_url(url: &str) -> Option<(String, u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (authority, 80),
    };
    let clean = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
    (clean(host) && path.bytes().all(|b| b.is_ascii_graphic())).then(|| (host.to_string(), port, path))
}

/// Why a POST got no answer to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundError {
    /// Not an `http://host:port/path` URL.
    Url,
    /// The host's name did not resolve.
    Resolve,
    /// Connecting, writing or reading failed (the OS's words).
    Io(String),
    Timeout,
    /// Longer than `ANSWER_BYTES_MAX`.
    TooLong,
    /// Not an HTTP answer (httparse's words), or closed before its head or body was whole.
    Malformed(String),
}

impl std::fmt::Display for OutboundError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutboundError::Url => f.write_str("not an http:// URL"),
            OutboundError::Resolve => f.write_str("cannot resolve the receiver"),
            OutboundError::Io(e) => f.write_str(e),
            OutboundError::Timeout => f.write_str("timed out"),
            OutboundError::TooLong => f.write_str("answer too long"),
            OutboundError::Malformed(why) => f.write_str(why),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// POSTs `body` to `url` with `headers` (each `Name: value`, no CRLF), within `timeout`.
pub async fn post(url: &str, headers: &[String], content_type: &str, body: &[u8], timeout: Duration) -> Result<Answer, OutboundError> {
    let io = |e: std::io::Error| OutboundError::Io(e.to_string());
    let (host, port, path) = parse_url(url).ok_or(OutboundError::Url)?;
    let exchange = async {
        let target = format!("{host}:{port}");
        // Name resolution may block: on a blocking thread.
        let addr = glommio::executor()
            .spawn_blocking(move || std::net::ToSocketAddrs::to_socket_addrs(&target).ok().and_then(|mut a| a.next()))
            .await
            .ok_or(OutboundError::Resolve)?;
        let mut conn = glommio::net::TcpStream::connect_timeout(addr, timeout).await.map_err(|e| OutboundError::Io(e.to_string()))?;
        let mut head = format!("POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n", body.len());
        for h in headers {
            head.push_str(h);
            head.push_str("\r\n");
        }
        head.push_str("Connection: close\r\n\r\n");
        conn.write_all(head.as_bytes()).await.map_err(io)?;
        conn.write_all(body).await.map_err(io)?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(parsed) = parse_answer(&answer)? {
                return Ok(parsed);
            }
            if answer.len() > ANSWER_BYTES_MAX {
                return Err(OutboundError::TooLong);
            }
            match conn.read(&mut buf).await.map_err(io)? {
                0 => return parse_answer_at_eof(&answer),
                n => answer.extend_from_slice(&buf[..n]),
            }
        }
    };
    futures_lite::future::or(exchange, async {
        glommio::timer::sleep(timeout).await;
        Err(OutboundError::Timeout)
    })
    .await
}

/// The answer once its head and `Content-Length` body are in; None while more is needed.
pub fn parse_answer(bytes: &[u8]) -> Result<Option<Answer>, OutboundError> {
    let mut headers = [httparse::EMPTY_HEADER; ANSWER_HEADERS_MAX];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(bytes).map_err(|e| OutboundError::Malformed(format!("bad answer: {e}")))? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = response.code.unwrap_or(0);
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok());
    match length {
        Some(n) if n > ANSWER_BYTES_MAX => Err(OutboundError::TooLong),
        Some(n) if bytes.len() >= head_len + n => Ok(Some(Answer { status, body: bytes[head_len..head_len + n].to_vec() })),
        // Without a length the body ends with the connection.
        _ => Ok(None),
    }
}

/// The connection closed: what came is the answer, if its head is whole.
pub fn parse_answer_at_eof(bytes: &[u8]) -> Result<Answer, OutboundError> {
    let mut headers = [httparse::EMPTY_HEADER; ANSWER_HEADERS_MAX];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(bytes).map_err(|e| OutboundError::Malformed(format!("bad answer: {e}")))? {
        httparse::Status::Complete(n) => {
            let length = response.headers.iter().any(|h| h.name.eq_ignore_ascii_case("content-length"));
            if length {
                return Err(OutboundError::Malformed("answer cut short".into()));
            }
            Ok(Answer { status: response.code.unwrap_or(0), body: bytes[n..].to_vec() })
        }
        httparse::Status::Partial => Err(OutboundError::Malformed("connection closed before an answer".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(parse_url("http://10.0.0.5:8080/hooks/gmv"), Some(("10.0.0.5".into(), 8080, "/hooks/gmv".into())));
        assert_eq!(parse_url("http://example.com"), Some(("example.com".into(), 80, "/".into())));
        assert_eq!(parse_url("https://example.com/x"), None);
        assert_eq!(parse_url("http://a b/x"), None);
        assert_eq!(parse_url("http://h:99999/"), None);
    }

    #[test]
    fn answers_whole_partial_and_cut() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"code\":0}\n";
        assert_eq!(parse_answer(ok).unwrap(), Some(Answer { status: 200, body: b"{\"code\":0}\n".to_vec() }));
        assert_eq!(parse_answer(&ok[..40]).unwrap(), None, "body not all in");
        assert_eq!(parse_answer(b"HTTP/1.1 200 OK\r\nConte").unwrap(), None);
        assert!(parse_answer(b"garbage\r\n\r\n").is_err());
        assert_eq!(parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n"), Err(OutboundError::TooLong));
        assert!(parse_answer_at_eof(&ok[..40]).is_err(), "cut short");
        let eof = parse_answer_at_eof(b"HTTP/1.0 204 No Content\r\n\r\nrest").unwrap();
        assert_eq!((eof.status, eof.body), (204, b"rest".to_vec()));
    }
}
