//! Building SIP responses and requests as text (parsing goes through `proto::sip::message`).

use super::SipMsg;
use std::fmt::Write;
use std::net::SocketAddr;

/// Top Via with NAT facts added (RFC 3581): `rport` gets the source port, `received` the IP.
fn via_with_received(via: &str, source: SocketAddr) -> String {
    let mut out = String::with_capacity(via.len() + 40);
    for (i, part) in via.split(';').enumerate() {
        if i > 0 {
            out.push(';');
        }
        if part.trim().eq_ignore_ascii_case("rport") {
            let _ = write!(out, "rport={}", source.port());
        } else {
            out.push_str(part);
        }
    }
    if !via.to_ascii_lowercase().contains("received=") {
        let _ = write!(out, ";received={}", source.ip());
    }
    out
}

/// A response to `req`: Via/From/To/Call-ID/CSeq copied (To gets `to_tag` if it has none).
pub fn response(
    req: &SipMsg,
    source: SocketAddr,
    code: u16,
    reason: &str,
    to_tag: &str,
    extra: &[(&str, String)],
    body: Option<(&str, &[u8])>,
) -> Vec<u8> {
    let mut head = format!("SIP/2.0 {code} {reason}\r\n");
    let mut first_via = true;
    for h in req.headers().iter() {
        let text = h.to_string();
        let Some((name, value)) = text.split_once(':') else { continue };
        let (name, value) = (name.trim(), value.trim());
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            "via" => {
                let v = if first_via { via_with_received(value, source) } else { value.to_string() };
                first_via = false;
                let _ = write!(head, "Via: {v}\r\n");
            }
            "to" if !value.to_ascii_lowercase().contains(";tag=") && code > 100 => {
                let _ = write!(head, "To: {value};tag={to_tag}\r\n");
            }
            "from" | "to" | "call-id" | "cseq" => {
                let canonical = match lower.as_str() {
                    "from" => "From",
                    "to" => "To",
                    "call-id" => "Call-ID",
                    _ => "CSeq",
                };
                let _ = write!(head, "{canonical}: {value}\r\n");
            }
            _ => {}
        }
    }
    for (k, v) in extra {
        let _ = write!(head, "{k}: {v}\r\n");
    }
    head.push_str("User-Agent: gmv\r\n");
    let mut out = finish(head, body);
    out.shrink_to_fit();
    out
}

/// Lines of a head longer than this are not copied into a 400.
const RAW_LINE_BYTES_MAX: usize = 1024;

/// A 400 for a request too broken to parse, built from its raw lines, so the device learns
/// what happened instead of retransmitting into silence. None when it does not look like a
/// request (first line `METHOD uri SIP/2.0`), is an ACK, or has no Via to answer along.
pub fn bad_request_for_unparsed(data: &[u8], source: SocketAddr) -> Option<Vec<u8>> {
    let start = data.iter().position(|b| !matches!(b, b'\r' | b'\n'))?;
    let data = &data[start..data.len().min(start + super::message::SIP_MESSAGE_BYTES_MAX)];
    let head_len = super::message::find_head_end(data).map_or(data.len(), |(end, _)| end);
    let head = std::str::from_utf8(&data[..head_len]).ok()?;
    let mut lines = head.split('\n').map(|l| l.trim_end_matches('\r'));
    let mut first = lines.next()?.split(' ');
    let (method, _uri, version) = (first.next()?, first.next()?, first.next()?);
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) || method == "ACK" || version != "SIP/2.0" {
        return None;
    }
    let mut out = String::from("SIP/2.0 400 Bad Request\r\n");
    let mut has_via = false;
    // Lines with control characters (a CR inside, NULs) are not copied: our answer must be
    // valid SIP whatever the request was (found by the sip_endpoint fuzz target).
    let clean = |l: &&str| l.len() <= RAW_LINE_BYTES_MAX && !l.bytes().any(|b| b.is_ascii_control() && b != b'\t');
    for line in lines.take(super::message::SIP_HEADERS_MAX).filter(clean) {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        let canonical = match name.trim().to_ascii_lowercase().as_str() {
            "via" | "v" => "Via",
            "from" | "f" => "From",
            "to" | "t" => "To",
            "call-id" | "i" => "Call-ID",
            "cseq" => "CSeq",
            _ => continue,
        };
        match canonical {
            "Via" if !has_via => {
                has_via = true;
                let _ = write!(out, "Via: {}\r\n", via_with_received(value, source));
            }
            "Via" => continue,
            "To" if !value.to_ascii_lowercase().contains(";tag=") => {
                let _ = write!(out, "To: {value};tag=bad{:08x}\r\n", value.len());
            }
            _ => {
                let _ = write!(out, "{canonical}: {value}\r\n");
            }
        }
    }
    if !has_via {
        return None;
    }
    out.push_str("User-Agent: gmv\r\nContent-Length: 0\r\n\r\n");
    Some(out.into_bytes())
}

fn finish(mut head: String, body: Option<(&str, &[u8])>) -> Vec<u8> {
    match body {
        Some((content_type, b)) => {
            let _ = write!(head, "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n", b.len());
            let mut out = head.into_bytes();
            out.extend_from_slice(b);
            out
        }
        None => {
            head.push_str("Content-Length: 0\r\n\r\n");
            head.into_bytes()
        }
    }
}

/// Fields of a request the platform sends to a device.
pub struct OutRequest<'a> {
    pub method: &'a str,
    pub request_uri: String,
    /// "UDP" or "TCP", for Via.
    pub transport: &'static str,
    /// `transport=` in Contact (where the peer sends requests back), when not UDP.
    pub contact_transport: Option<&'static str>,
    /// host:port put in Via and Contact.
    pub local: SocketAddr,
    pub branch: String,
    pub from: String,
    pub from_tag: &'a str,
    pub to: String,
    pub to_tag: Option<&'a str>,
    pub call_id: &'a str,
    pub cseq: u32,
    pub contact_user: &'a str,
    pub extra: Vec<(&'a str, String)>,
}

impl OutRequest<'_> {
    pub fn build(&self, body: Option<(&str, &[u8])>) -> Vec<u8> {
        let mut head = format!("{} {} SIP/2.0\r\n", self.method, self.request_uri);
        let _ = write!(head, "Via: SIP/2.0/{} {};rport;branch=z9hG4bK{}\r\n", self.transport, self.local, self.branch);
        let _ = write!(head, "From: <{}>;tag={}\r\n", self.from, self.from_tag);
        match self.to_tag {
            Some(t) => {
                let _ = write!(head, "To: <{}>;tag={t}\r\n", self.to);
            }
            None => {
                let _ = write!(head, "To: <{}>\r\n", self.to);
            }
        }
        let _ = write!(head, "Call-ID: {}\r\nCSeq: {} {}\r\nMax-Forwards: 70\r\n", self.call_id, self.cseq, self.method);
        let transport = self.contact_transport.map(|t| format!(";transport={t}")).unwrap_or_default();
        let _ = write!(head, "Contact: <sip:{}@{}{transport}>\r\nUser-Agent: gmv\r\n", self.contact_user, self.local);
        for (k, v) in &self.extra {
            let _ = write!(head, "{k}: {v}\r\n");
        }
        finish(head, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_copies_dialog_headers_and_marks_nat() {
        let req = crate::proto::sip::parse(b"REGISTER sip:s@d SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2:5060;rport;branch=z9hG4bKa\r\nFrom: <sip:dev@d>;tag=1\r\nTo: <sip:dev@d>\r\nCall-ID: c1\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n").unwrap();
        let src: SocketAddr = "1.2.3.4:40000".parse().unwrap();
        let out = String::from_utf8(response(&req, src, 200, "OK", "t9", &[("Expires", "3600".into())], None)).unwrap();
        assert!(out.starts_with("SIP/2.0 200 OK\r\n"));
        assert!(out.contains("Via: SIP/2.0/UDP 10.0.0.2:5060;rport=40000;branch=z9hG4bKa;received=1.2.3.4\r\n"), "{out}");
        assert!(out.contains("To: <sip:dev@d>;tag=t9\r\n"));
        assert!(out.contains("CSeq: 1 REGISTER\r\n") && out.contains("Expires: 3600\r\n") && out.ends_with("Content-Length: 0\r\n\r\n"));
        let back = crate::proto::sip::parse(out.as_bytes()).unwrap();
        assert_eq!(back.status(), Some(200));
    }

    #[test]
    fn unparseable_request_still_gets_a_400() {
        let src: SocketAddr = "10.0.0.2:5060".parse().unwrap();
        let raw = b"REGISTER sip:s@d SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2:5060;rport;branch=z9hG4bKq\r\nFrom: <sip:dev@d>;tag=1\r\nTo: <sip:dev@d>\r\nCall-ID: c9\r\nCSeq: 1 REGISTER\r\nContent-Length: 99\r\n\r\nshort";
        assert!(crate::proto::sip::parse(raw).is_err());
        let out = String::from_utf8(bad_request_for_unparsed(raw, src).unwrap()).unwrap();
        assert!(out.starts_with("SIP/2.0 400 Bad Request\r\n"), "{out}");
        assert!(out.contains("Via: SIP/2.0/UDP 10.0.0.2:5060;rport=5060;branch=z9hG4bKq;received=10.0.0.2\r\n"), "{out}");
        assert!(out.contains("Call-ID: c9\r\n") && out.contains("CSeq: 1 REGISTER\r\n") && out.contains("To: <sip:dev@d>;tag="));
        assert_eq!(crate::proto::sip::parse(out.as_bytes()).unwrap().status(), Some(400));
        // Not a request, no Via, an ACK, or noise: nothing to answer.
        assert_eq!(bad_request_for_unparsed(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n", src), None);
        assert_eq!(bad_request_for_unparsed(b"REGISTER sip:x SIP/2.0\r\nContent-Length: 5000\r\n\r\nshort", src), None);
        assert_eq!(bad_request_for_unparsed(b"ACK sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=b\r\n\r\n", src), None);
        assert_eq!(bad_request_for_unparsed(&[0xff; 100], src), None);
        // A Via with a bare CR and NULs inside is not copied (so there is nothing to answer).
        assert_eq!(bad_request_for_unparsed(b"REGISTER sip:x SIP/2.0\r\nVia: SIP\0\0\r\0P host\r\nCall-ID: x\r\n\r\n", src), None);
    }
}
