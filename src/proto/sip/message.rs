//! One place for what real devices send: compact header names, case-insensitive header names
//! and content types (`Application/SDP`), odd spacing (`Content-Length:   162`), bodies in
//! GB2312, trailing bytes past Content-Length. rsip tokenizes; this wrapper normalizes first
//! and offers typed accessors that never panic.

use rsip::SipMessage;
use rsip::headers::UntypedHeader;
use rsip::message::HeadersExt;

/// Largest SIP message accepted (UDP datagram or TCP frame).
pub const SIP_MESSAGE_BYTES_MAX: usize = 64 * 1024;
/// Headers per message; more is hostile.
pub const SIP_HEADERS_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipError {
    TooLarge {
        bytes: usize,
    },
    /// No blank line ending the head.
    Incomplete,
    TooManyHeaders,
    BadContentLength,
    Malformed(String),
}

impl std::fmt::Display for SipError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}
impl std::error::Error for SipError {}

/// RFC 3261 §7.3.3 compact forms.
fn expand_compact(name: &str) -> &str {
    match name {
        "v" | "V" => "Via",
        "f" | "F" => "From",
        "t" | "T" => "To",
        "i" | "I" => "Call-ID",
        "m" | "M" => "Contact",
        "l" | "L" => "Content-Length",
        "c" | "C" => "Content-Type",
        "k" | "K" => "Supported",
        "s" | "S" => "Subject",
        "e" | "E" => "Content-Encoding",
        _ => name,
    }
}

/// A parsed message plus what the wrapper learned while normalizing.
#[derive(Debug, Clone)]
pub struct SipMsg {
    pub inner: SipMessage,
}

/// Parses one complete message (one framed TCP message, or anything exact).
pub fn parse(data: &[u8]) -> Result<SipMsg, SipError> {
    parse_with(data, false).map(|(m, _)| m)
}

/// Parses a UDP datagram. The datagram's end is authoritative there, so a Content-Length
/// larger than what arrived (simulators and devices that count it wrong) takes the bytes that
/// did arrive; the flag says so (count it).
pub fn parse_datagram(data: &[u8]) -> Result<(SipMsg, bool), SipError> {
    parse_with(data, true)
}

fn parse_with(data: &[u8], datagram: bool) -> Result<(SipMsg, bool), SipError> {
    if data.len() > SIP_MESSAGE_BYTES_MAX {
        return Err(SipError::TooLarge { bytes: data.len() });
    }
    // Keep-alive CRLFs and leading blank lines are not messages' business.
    let start = data.iter().position(|b| !matches!(b, b'\r' | b'\n')).unwrap_or(data.len());
    let data = &data[start..];
    let head_end = find_head_end(data).ok_or(SipError::Incomplete)?;
    let head = std::str::from_utf8(&data[..head_end.0]).map_err(|_| SipError::Malformed("head is not UTF-8".into()))?;
    let mut lines = head.split("\r\n").flat_map(|l| l.split('\n'));
    let first = lines.next().unwrap_or_default().trim();
    if !valid_start_line(first) {
        return Err(SipError::Malformed(format!("bad start line: {first:.40}")));
    }
    let mut normalized = String::with_capacity(head.len() + 64);
    normalized.push_str(first);
    normalized.push_str("\r\n");
    let mut content_length: Option<usize> = None;
    let mut count = 0;
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            // Folded continuation (RFC 3261 §7.3.1): join to the previous header.
            normalized.truncate(normalized.trim_end_matches("\r\n").len());
            normalized.push(' ');
            normalized.push_str(line.trim());
            normalized.push_str("\r\n");
            continue;
        }
        count += 1;
        if count > SIP_HEADERS_MAX {
            return Err(SipError::TooManyHeaders);
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(SipError::Malformed(format!("header without colon: {line:.40}")));
        };
        let name = expand_compact(name.trim());
        let value = value.trim();
        if name.eq_ignore_ascii_case("Content-Length") {
            content_length = Some(value.parse().map_err(|_| SipError::BadContentLength)?);
        }
        normalized.push_str(name);
        normalized.push_str(": ");
        normalized.push_str(value);
        normalized.push_str("\r\n");
    }
    normalized.push_str("\r\n");
    let body_start = head_end.0 + head_end.1;
    let available = data.len() - body_start;
    let mut length_fixed = false;
    let body_len = match content_length {
        Some(n) if n > available && datagram => {
            length_fixed = true;
            available
        }
        Some(n) if n > available => return Err(SipError::BadContentLength),
        Some(n) => n,
        None => available,
    };
    let mut bytes = normalized.into_bytes();
    bytes.extend_from_slice(&data[body_start..body_start + body_len]);
    let inner = SipMessage::try_from(bytes.as_slice()).map_err(|e| SipError::Malformed(e.to_string()))?;
    // rsip must have seen the same lines we did: a value with a line break in it would be
    // copied into our answers (found by the sip_endpoint fuzz target).
    let msg = SipMsg { inner };
    if msg.headers().iter().any(|h| h.to_string().contains(['\r', '\n'])) {
        return Err(SipError::Malformed("line break inside a header".into()));
    }
    Ok((msg, length_fixed))
}

/// `METHOD SP Request-URI SP SIP/2.0` or `SIP/2.0 SP 3DIGIT SP reason` (RFC 3261 §7.1, §7.2).
fn valid_start_line(line: &str) -> bool {
    let mut parts = line.splitn(3, ' ');
    let (Some(a), Some(b)) = (parts.next(), parts.next()) else { return false };
    let c = parts.next();
    if a == "SIP/2.0" {
        // The reason phrase may be empty (RFC 4475 §3.1.1.13).
        return b.len() == 3 && b.bytes().all(|d| d.is_ascii_digit()) && !c.unwrap_or("").contains(['\r', '\n']);
    }
    let Some(c) = c else { return false };
    let token = |t: &str| !t.is_empty() && t.bytes().all(|x| x.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&x));
    token(a) && !b.is_empty() && !b.contains(char::is_whitespace) && c == "SIP/2.0"
}

/// (end of head, length of the blank-line separator): CRLFCRLF, or bare LFLF from sloppy stacks.
pub(crate) fn find_head_end(data: &[u8]) -> Option<(usize, usize)> {
    let crlf = memchr::memmem::find(data, b"\r\n\r\n").map(|i| (i, 4));
    let lf = memchr::memmem::find(data, b"\n\n").map(|i| (i, 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// Cuts a SIP byte stream (TCP) into messages by Content-Length (RFC 3261 §18.3), bounded.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buf: Vec<u8>,
}

impl StreamFramer {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole message, if buffered. An error means the stream cannot be trusted
    /// any more (close the connection).
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, SipError> {
        // CRLF keep-alives between messages (RFC 5626 §3.5.1).
        let blank = self.buf.iter().position(|b| !matches!(b, b'\r' | b'\n')).unwrap_or(self.buf.len());
        self.buf.drain(..blank);
        let Some((head_end, sep)) = find_head_end(&self.buf) else {
            return if self.buf.len() > SIP_MESSAGE_BYTES_MAX { Err(SipError::TooLarge { bytes: self.buf.len() }) } else { Ok(None) };
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]);
        let mut content_length = 0usize;
        for line in head.lines() {
            if let Some((name, value)) = line.split_once(':') {
                let name = name.trim();
                if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
                    content_length = value.trim().parse().map_err(|_| SipError::BadContentLength)?;
                }
            }
        }
        // The sender's Content-Length is hostile: add without overflow, then bound.
        let total = (head_end + sep).saturating_add(content_length);
        if total > SIP_MESSAGE_BYTES_MAX {
            return Err(SipError::TooLarge { bytes: total });
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let rest = self.buf.split_off(total);
        Ok(Some(std::mem::replace(&mut self.buf, rest)))
    }
}

impl SipMsg {
    pub fn is_request(&self) -> bool {
        self.inner.is_request()
    }

    pub fn method(&self) -> Option<&rsip::Method> {
        match &self.inner {
            SipMessage::Request(r) => Some(&r.method),
            SipMessage::Response(_) => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match &self.inner {
            SipMessage::Response(r) => Some(r.status_code.code()),
            SipMessage::Request(_) => None,
        }
    }

    pub fn headers(&self) -> &rsip::Headers {
        use rsip::message::HasHeaders;
        self.inner.headers()
    }

    /// Raw value of the first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers().iter().find_map(|h| {
            let text = h.to_string();
            let (n, v) = text.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    pub fn call_id(&self) -> Option<String> {
        self.inner.call_id_header().ok().map(|h| h.value().to_string())
    }

    /// (sequence number, method) of CSeq.
    pub fn cseq(&self) -> Option<(u32, String)> {
        let v = self.inner.cseq_header().ok()?.value().to_string();
        let (n, m) = v.trim().split_once(char::is_whitespace)?;
        Some((n.trim().parse().ok()?, m.trim().to_ascii_uppercase()))
    }

    /// Lower-cased media type without parameters: `Application/MANSCDP+xml` -> `application/manscdp+xml`.
    pub fn content_type(&self) -> Option<String> {
        let v = self.header("Content-Type")?;
        Some(v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
    }

    pub fn body(&self) -> &[u8] {
        self.inner.body()
    }

    pub fn expires(&self) -> Option<u32> {
        self.header("Expires")?.trim().parse().ok()
    }

    /// The user part of the From URI: the device id in GB28181.
    pub fn from_user(&self) -> Option<String> {
        uri_user(self.inner.from_header().ok()?.value())
    }

    pub fn from_tag(&self) -> Option<String> {
        header_param(self.inner.from_header().ok()?.value(), "tag")
    }

    pub fn to_tag(&self) -> Option<String> {
        header_param(self.inner.to_header().ok()?.value(), "tag")
    }

    /// Top Via's branch.
    pub fn branch(&self) -> Option<String> {
        header_param(&self.header("Via")?, "branch")
    }
}

/// `"Name" <sip:user@host>;tag=x` -> `user`.
pub fn uri_user(value: &str) -> Option<String> {
    let start = value.find("sip:").map(|i| i + 4).or_else(|| value.find("sips:").map(|i| i + 5))?;
    let rest = &value[start..];
    let end = rest.find(['@', '>', ';', ':']).unwrap_or(rest.len());
    let user = &rest[..end];
    (!user.is_empty() && rest[end..].starts_with('@')).then(|| user.to_string())
}

/// A `;name=value` parameter of a header value, outside the `<...>` URI.
pub fn header_param(value: &str, name: &str) -> Option<String> {
    let params = match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value,
    };
    params.split(';').skip_while(|p| p.contains("sip:")).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().trim_matches('"').to_string())
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A Hikvision camera's answer to INVITE: capitalised content type, padded Content-Length.
    pub const HIK_INVITE_200: &str = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.168.1.10:5060;rport=5060;branch=z9hG4bK1234;received=192.168.1.10\r\nFrom: <sip:34020000002000000001@3402000000>;tag=abc\r\nTo: <sip:34020000001320000001@3402000000>;tag=1882937423\r\nCall-ID: 7be1f5@192.168.1.10\r\nCSeq: 20 INVITE\r\nContact: <sip:34020000001320000001@192.168.1.64:5060>\r\nContent-Type: Application/SDP\r\nUser-Agent: IP Camera\r\nContent-Length:   162\r\n\r\nv=0\r\no=34020000001320000001 0 0 IN IP4 192.168.1.6\r\ns=Play\r\nc=IN IP4 192.168.1.6\r\nt=0 0\r\nm=video 6000 RTP/AVP 96\r\na=sendonly\r\na=rtpmap:96 PS/90000\r\ny=0100000002\r\n";

    pub const DAHUA_REGISTER: &str = "REGISTER sip:34020000002000000001@3402000000 SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.108:5060;rport;branch=z9hG4bK1371463273\r\nFrom: <sip:34020000001320000002@3402000000>;tag=2043466181\r\nTo: <sip:34020000001320000002@3402000000>\r\nCall-ID: 1011047669\r\nCSeq: 1 REGISTER\r\nContact: <sip:34020000001320000002@192.168.1.108:5060>\r\nMax-Forwards: 70\r\nUser-Agent: IP Camera\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn hikvision_invite_answer_with_quirks() {
        let m = parse(HIK_INVITE_200.as_bytes()).unwrap();
        assert_eq!(m.status(), Some(200));
        assert_eq!(m.content_type().as_deref(), Some("application/sdp"));
        assert_eq!(m.body().len(), 162);
        assert!(m.body().ends_with(b"y=0100000002\r\n"), "the whole SDP is the body");
        assert_eq!(m.cseq(), Some((20, "INVITE".into())));
        assert_eq!(m.to_tag().as_deref(), Some("1882937423"));
        let sdp = crate::proto::sdp::Sdp::parse(m.body()).unwrap();
        assert_eq!(sdp.ssrc(), Some(100000002));
    }

    #[test]
    fn dahua_register() {
        let m = parse(DAHUA_REGISTER.as_bytes()).unwrap();
        assert_eq!(m.method(), Some(&rsip::Method::Register));
        assert_eq!(m.from_user().as_deref(), Some("34020000001320000002"));
        assert_eq!(m.from_tag().as_deref(), Some("2043466181"));
        assert_eq!(m.expires(), Some(3600));
        assert_eq!(m.branch().as_deref(), Some("z9hG4bK1371463273"));
        assert_eq!(m.call_id().as_deref(), Some("1011047669"));
    }

    #[test]
    fn compact_forms_bare_lf_and_trailing_bytes() {
        let raw = "MESSAGE sip:34020000002000000001@3402000000 SIP/2.0\nv: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKx\nf: <sip:dev1@3402000000>;tag=1\nt: <sip:34020000002000000001@3402000000>\ni: cid-1\nCSeq: 3 MESSAGE\nc: application/manscdp+xml\nl: 5\n\nhelloJUNK";
        let m = parse(raw.as_bytes()).unwrap();
        assert_eq!(m.call_id().as_deref(), Some("cid-1"));
        assert_eq!(m.body(), b"hello");
        assert_eq!(m.from_user().as_deref(), Some("dev1"));
    }

    #[test]
    fn rejects_hostile_messages() {
        assert!(matches!(parse(&vec![b'a'; SIP_MESSAGE_BYTES_MAX + 1]), Err(SipError::TooLarge { .. })));
        assert_eq!(parse(b"REGISTER sip:a SIP/2.0\r\nVia: x").err(), Some(SipError::Incomplete));
        let many = format!("OPTIONS sip:a@b SIP/2.0\r\n{}\r\n", "X-A: b\r\n".repeat(SIP_HEADERS_MAX + 1));
        assert_eq!(parse(many.as_bytes()).err(), Some(SipError::TooManyHeaders));
        assert_eq!(parse(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 99\r\n\r\nshort").err(), Some(SipError::BadContentLength));
        assert_eq!(parse(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n").err(), Some(SipError::BadContentLength));
    }

    #[test]
    fn tcp_stream_is_framed_by_content_length() {
        let mut f = StreamFramer::default();
        let two = format!("\r\n\r\n{DAHUA_REGISTER}{HIK_INVITE_200}");
        let bytes = two.as_bytes();
        f.push(&bytes[..100]);
        assert_eq!(f.next_message(), Ok(None));
        f.push(&bytes[100..]);
        let a = f.next_message().unwrap().unwrap();
        assert_eq!(a, DAHUA_REGISTER.as_bytes());
        let b = f.next_message().unwrap().unwrap();
        assert!(parse(&b).unwrap().body().ends_with(b"y=0100000002\r\n"));
        assert_eq!(f.next_message(), Ok(None));
        assert_eq!(f.buffered(), 0);
        f.push(b"MESSAGE sip:a SIP/2.0\r\nContent-Length: 99999999\r\n\r\n");
        assert!(matches!(f.next_message(), Err(SipError::TooLarge { .. })));
        let mut g = StreamFramer::default();
        g.push(&vec![b'a'; SIP_MESSAGE_BYTES_MAX + 1]);
        assert!(matches!(g.next_message(), Err(SipError::TooLarge { .. })));
    }

    #[test]
    fn framer_content_length_near_usize_max_is_refused_not_overflowed() {
        let mut f = StreamFramer::default();
        f.push(format!("MESSAGE sip:a SIP/2.0\r\nContent-Length: {}\r\n\r\n", usize::MAX - 2).as_bytes());
        assert!(matches!(f.next_message(), Err(SipError::TooLarge { .. })));
    }

    /// Found by the sip_endpoint fuzz target: a bare-LF head that rsip re-read with other
    /// line boundaries, leaving a line break inside the To value (which we then echoed).
    #[test]
    fn a_start_line_rsip_would_read_differently_is_refused() {
        let raw = b"OPTIONS so V3.0.0.675168\nExpires: 3600\nContent-Leng\x15h: 0\n\n#ap.beep://192.0.2\x00103:3002 SIP/2.0\r\nTo: sip 70\nUser-Agent: x\r\nVia: SIP/2.0/UDP h\r\n\r\n";
        assert!(matches!(parse(raw), Err(SipError::Malformed(_))));
        assert!(matches!(parse(b"REGISTER  sip:a SIP/2.0\r\n\r\n"), Err(SipError::Malformed(_))));
        assert!(matches!(parse(b"SIP/2.0 2000 OK\r\n\r\n"), Err(SipError::Malformed(_))));
        assert!(parse(b"SIP/2.0 200 OK\r\nCall-ID: a\r\n\r\n").is_ok());
    }

    #[test]
    fn a_datagram_shorter_than_its_content_length_is_taken_as_it_is() {
        let raw = b"MESSAGE sip:a@b SIP/2.0\r\nCall-ID: x\r\nContent-Length: 99\r\n\r\nshort";
        assert_eq!(parse(raw).err(), Some(SipError::BadContentLength));
        let (m, fixed) = parse_datagram(raw).unwrap();
        assert!(fixed);
        assert_eq!(m.body(), b"short");
    }

    #[test]
    fn fuzz_never_panics() {
        let mut rng = crate::proto::testutil::Rng::new(21);
        for _ in 0..5_000 {
            let seed = if rng.below(2) == 0 { HIK_INVITE_200 } else { DAHUA_REGISTER };
            if let Ok(m) = parse(&rng.mutate(seed.as_bytes())) {
                let _ = (m.cseq(), m.from_user(), m.to_tag(), m.content_type(), m.expires(), m.branch());
            }
        }
    }
}
