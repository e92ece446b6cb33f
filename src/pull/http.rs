//! The least HTTP/1.1 client the HTTP-FLV and HLS pulls and ONVIF need: GET over TCP or TLS,
//! redirects followed a few times, Basic credentials from the URL, the body by length, chunked
//! or to the close; and a POST whose answer is read whatever its status (a SOAP fault comes
//! with 400 or 500, a digest challenge with 401). Its answers are a source's: the head is
//! bounded before it is parsed, the chunked coding by `proto::http_chunked`.

use super::session::CONNECT_TIMEOUT;
use crate::proto::http_chunked::ChunkedDecoder;
use base64::Engine as _;
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// A connection, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An answer's head, at most.
pub const HEAD_BYTES_MAX: usize = 16 << 10;
/// Redirects followed for one request, at most.
pub const REDIRECTS_MAX: usize = 3;
const HEADERS_MAX: usize = 64;
/// One read from the socket.
const READ_BYTES: usize = 64 << 10;

enum Framing {
    Length(u64),
    Chunked(ChunkedDecoder),
    /// To the connection's end.
    Close,
}

/// An answer whose head was 2xx, its body still to read.
pub struct Response {
    stream: Box<dyn Io>,
    /// Bytes read past the head, not yet given out.
    early: BytesMut,
    framing: Framing,
    scratch: Box<[u8]>,
    /// Where it came from after redirects (relative URIs in a playlist resolve against it).
    pub url: url::Url,
}

/// GETs `url`, following redirects; an error says why in words an operator reads (`HTTP 401`
/// for wrong credentials, which the proxy shows as unauthorized).
pub async fn get(url: &url::Url) -> Result<Response, String> {
    let mut url = url.clone();
    for _ in 0..=REDIRECTS_MAX {
        let answer = match tokio::time::timeout(CONNECT_TIMEOUT, request(&url, "GET", &[], &[])).await {
            Err(_) => return Err(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())),
            Ok(answer) => answer?,
        };
        let status = answer.status;
        if (300..400).contains(&status)
            && let Some(to) = answer.header("location")
        {
            url = url.join(to).map_err(|e| format!("redirect to {to:?}: {e}"))?;
            continue;
        }
        if !(200..300).contains(&status) {
            return Err(if status == 401 { "HTTP 401 unauthorized (user or password)".into() } else { format!("HTTP {status} {}", answer.reason) });
        }
        return Ok(answer.body);
    }
    Err(format!("more than {REDIRECTS_MAX} redirects"))
}

/// An answer of any status: its head, its body to read.
pub struct Answer {
    pub status: u16,
    pub reason: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Response,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.headers.iter().filter(move |(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// POSTs `body` with `headers` (no redirects followed) and reads the whole answer, refused
/// past `body_max` bytes, whatever its status.
pub async fn post(url: &url::Url, headers: &[(&str, &str)], body: &[u8], body_max: usize) -> Result<(Answer, BytesMut), String> {
    let exchange = async {
        let mut answer = request(url, "POST", headers, body).await?;
        let bytes = answer.body.read_all_ref(body_max).await?;
        Ok::<_, String>((answer, bytes))
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, exchange).await {
        Err(_) => Err(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())),
        Ok(r) => r,
    }
}

async fn request(url: &url::Url, method: &str, extra: &[(&str, &str)], body: &[u8]) -> Result<Answer, String> {
    let tls = match url.scheme() {
        "http" => false,
        "https" => true,
        other => return Err(format!("{other}:// is not fetched (http:// and https:// are)")),
    };
    let host = url.host_str().ok_or("no host")?;
    let port = url.port_or_known_default().unwrap_or(80);
    let tcp = TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port)).await.map_err(|e| format!("connect {host}:{port}: {e}"))?;
    let mut stream: Box<dyn Io> = if tls { Box::new(super::tls::connect(host, tcp).await?) } else { Box::new(tcp) };
    let mut target = url.path().to_string();
    if let Some(q) = url.query() {
        target.push('?');
        target.push_str(q);
    }
    let host_header = url.port().map_or_else(|| host.to_string(), |p| format!("{host}:{p}"));
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: gmv/{}\r\nAccept: */*\r\nConnection: close\r\n", env!("CARGO_PKG_VERSION"));
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if method != "GET" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if !url.username().is_empty() {
        let decode = crate::proto::http_head::percent_decode;
        let pair = format!("{}:{}", decode(url.username()), decode(url.password().unwrap_or("")));
        head.push_str(&format!("Authorization: Basic {}\r\n", base64::engine::general_purpose::STANDARD.encode(pair)));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
    stream.write_all(body).await.map_err(|e| format!("send: {e}"))?;

    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if buf.len() >= HEAD_BYTES_MAX {
            return Err(format!("answer head over {HEAD_BYTES_MAX} bytes"));
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed before an answer".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let mut parsed = httparse::Response::new(&mut headers);
        let head_len = match parsed.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => continue,
            Err(e) => return Err(format!("bad answer: {e}")),
        };
        let status = parsed.code.unwrap_or(0);
        let reason = parsed.reason.unwrap_or("").to_string();
        let headers: Vec<(String, String)> =
            parsed.headers.iter().map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).trim().to_string())).collect();
        let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let framing = if header("transfer-encoding").is_some_and(|t| t.to_ascii_lowercase().contains("chunked")) {
            Framing::Chunked(ChunkedDecoder::new())
        } else if let Some(len) = header("content-length") {
            Framing::Length(len.parse().map_err(|_| format!("bad Content-Length {len:?}"))?)
        } else {
            Framing::Close
        };
        let early = buf.split_off(head_len);
        let body = Response { stream, early, framing, scratch: vec![0; READ_BYTES].into_boxed_slice(), url: url.clone() };
        return Ok(Answer { status, reason, headers, body });
    }
}

impl Response {
    /// Appends the next body bytes to `out`; false once the body ended.
    pub async fn read_into(&mut self, out: &mut BytesMut) -> Result<bool, String> {
        if !self.early.is_empty() {
            let early = self.early.split();
            consume(&mut self.framing, &early, out)?;
            return Ok(true);
        }
        if matches!(self.framing, Framing::Length(0)) || matches!(&self.framing, Framing::Chunked(d) if d.done()) {
            return Ok(false);
        }
        let n = self.stream.read(&mut self.scratch).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return match self.framing {
                Framing::Close => Ok(false),
                _ => Err("connection closed inside the body".into()),
            };
        }
        consume(&mut self.framing, &self.scratch[..n], out)?;
        Ok(true)
    }

    /// The whole body, refused past `max` bytes.
    pub async fn read_all(mut self, max: usize) -> Result<BytesMut, String> {
        self.read_all_ref(max).await
    }

    async fn read_all_ref(&mut self, max: usize) -> Result<BytesMut, String> {
        if let Framing::Length(n) = self.framing
            && n > max as u64
        {
            return Err(format!("body of {n} bytes (at most {max})"));
        }
        let mut out = BytesMut::new();
        while self.read_into(&mut out).await? {
            if out.len() > max {
                return Err(format!("body over {max} bytes"));
            }
        }
        Ok(out)
    }
}

/// Body bytes as they came off the wire, unframed into `out`.
fn consume(framing: &mut Framing, raw: &[u8], out: &mut BytesMut) -> Result<(), String> {
    match framing {
        Framing::Close => out.extend_from_slice(raw),
        Framing::Length(left) => {
            let n = (*left).min(raw.len() as u64) as usize;
            out.extend_from_slice(&raw[..n]);
            *left -= n as u64;
        }
        Framing::Chunked(d) => d.decode(raw, out).map_err(|e| e.to_string())?,
    }
    Ok(())
}
