//! One HTTP connection: its transport (plain TCP, TLS, or relayed from the shard that holds
//! the TLS session) and what every response on it must say besides its own headers (the CORS
//! answer for the request's origin, keep-alive).

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::{TcpStream, UnixStream};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

pub type TlsStream = futures_rustls::server::TlsStream<TcpStream>;

/// What carries the bytes.
pub enum Io {
    Tcp(TcpStream),
    Tls(Box<TlsStream>),
    /// A connection whose TLS session lives on another shard, which relays its plaintext
    /// over this socket pair (a TLS session cannot move between threads the way an fd can).
    /// The fd number is kept beside it (glommio's stream does not give it out).
    Relayed(UnixStream, RawFd),
}

pub struct HttpConn {
    pub io: Io,
    /// The client's address (for a relayed connection, the one the TLS shard saw).
    peer: IpAddr,
    /// `Access-Control-Allow-Origin` value for this request's Origin, when it is allowed.
    allow_origin: Option<String>,
    /// The connection serves another request after this response (HTTP/1.1 keep-alive);
    /// cleared by a response that must end it (an error mid-way, a stream until close).
    pub keep_alive: bool,
    /// Bytes read past the current request (the next one, pipelined).
    pub pending: Vec<u8>,
    /// Requests served on this connection so far, on any shard (it follows hand-offs).
    pub served: u32,
}

impl HttpConn {
    pub fn new(tcp: TcpStream) -> HttpConn {
        let peer = tcp.peer_addr().map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        HttpConn::with(Io::Tcp(tcp), peer)
    }

    pub fn with(io: Io, peer: IpAddr) -> HttpConn {
        HttpConn { io, peer, allow_origin: None, keep_alive: false, pending: Vec::new(), served: 0 }
    }

    /// The socket underneath (for a peek at whether the peer hung up).
    pub fn raw_fd(&self) -> RawFd {
        match &self.io {
            Io::Tcp(t) => t.as_raw_fd(),
            Io::Tls(t) => t.get_ref().0.as_raw_fd(),
            Io::Relayed(_, fd) => *fd,
        }
    }

    /// The address the client reached us at (None for a connection relayed from the shard
    /// holding its TLS session).
    pub fn local_ip(&self) -> Option<IpAddr> {
        let tcp = match &self.io {
            Io::Tcp(t) => t,
            Io::Tls(t) => t.get_ref().0,
            Io::Relayed(..) => return None,
        };
        tcp.local_addr().ok().map(|a| crate::proto::ipnet::canonical(a.ip()))
    }

    pub fn set_nodelay(&self) {
        let tcp = match &self.io {
            Io::Tcp(t) => t,
            Io::Tls(t) => t.get_ref().0,
            Io::Relayed(..) => return,
        };
        let _ = tcp.set_nodelay(true);
    }

    /// Sets the CORS answer from the request's `Origin` against the allow-list.
    pub fn set_origin(&mut self, origin: Option<&str>, allowed: &[String]) {
        self.allow_origin = cors_allow(origin, allowed);
    }

    /// Whether the client's connection is TLS (here, or on the shard that relays it).
    pub fn is_tls(&self) -> bool {
        matches!(self.io, Io::Tls(_) | Io::Relayed(..))
    }

    /// Header lines every response carries (each ends in CRLF): CORS for an allowed origin.
    pub fn common_headers(&self) -> String {
        match &self.allow_origin {
            Some(o) => format!("Access-Control-Allow-Origin: {o}\r\nVary: Origin\r\n"),
            None => String::new(),
        }
    }

    pub fn cors_allowed(&self) -> bool {
        self.allow_origin.is_some()
    }

    pub fn peer_ip(&self) -> IpAddr {
        self.peer
    }
}

/// The origin to echo for a request from `origin`, if the allow-list lets it in.
pub fn cors_allow(origin: Option<&str>, allowed: &[String]) -> Option<String> {
    let origin = origin?;
    // An origin is text a browser sends; anything that could split a header line is not one.
    if origin.bytes().any(|b| b.is_ascii_control()) {
        return None;
    }
    if allowed.iter().any(|a| a == "*") {
        return Some("*".to_string());
    }
    allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)).then(|| origin.to_string())
}

impl AsyncRead for HttpConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        match &mut self.io {
            Io::Tcp(t) => Pin::new(t).poll_read(cx, buf),
            Io::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
            Io::Relayed(u, _) => Pin::new(u).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for HttpConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match &mut self.io {
            Io::Tcp(t) => Pin::new(t).poll_write(cx, buf),
            Io::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
            Io::Relayed(u, _) => Pin::new(u).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.io {
            Io::Tcp(t) => Pin::new(t).poll_flush(cx),
            Io::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
            Io::Relayed(u, _) => Pin::new(u).poll_flush(cx),
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.io {
            Io::Tcp(t) => Pin::new(t).poll_close(cx),
            Io::Tls(t) => Pin::new(t.as_mut()).poll_close(cx),
            Io::Relayed(u, _) => Pin::new(u).poll_close(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::cors_allow;

    #[test]
    fn only_listed_origins_are_echoed() {
        let list = vec!["http://127.0.0.1:9000".to_string()];
        assert_eq!(cors_allow(Some("http://127.0.0.1:9000"), &list).as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(cors_allow(Some("http://evil.example"), &list), None);
        assert_eq!(cors_allow(None, &list), None);
        assert_eq!(cors_allow(Some("http://a"), &[]), None);
        assert_eq!(cors_allow(Some("http://a"), &["*".to_string()]).as_deref(), Some("*"));
        assert_eq!(cors_allow(Some("http://127.0.0.1:9000\r\nX: y"), &["*".to_string()]), None);
    }
}
