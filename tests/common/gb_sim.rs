//! A simulated GB28181 device's SIP side for end-to-end tests: digest REGISTER, requests from
//! the device, replies to the engine's requests. Loopback UDP, every wait bounded.

use gmv::proto::sip::{SipMsg, digest, parse};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

pub const DEVICE: &str = "34020000001320000001";
pub const DOMAIN: &str = "3402000000";
pub const SERVER: &str = "34020000002000000001";
pub const PASSWORD: &str = "12345678";

pub struct Sim {
    pub sock: UdpSocket,
    pub server: SocketAddr,
    pub cseq: u32,
}

impl Sim {
    pub fn new(server: SocketAddr) -> Sim {
        Sim::new_at("127.0.0.1:0", server)
    }

    /// A sender bound elsewhere on loopback (another host, as far as the engine can tell).
    pub fn new_at(bind: &str, server: SocketAddr) -> Sim {
        let sock = UdpSocket::bind(bind).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        Sim { sock, server, cseq: 0 }
    }

    pub fn local(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    pub fn send(&self, text: &[u8]) {
        self.sock.send_to(text, self.server).unwrap();
    }

    pub fn recv(&self, limit: Duration) -> Option<SipMsg> {
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            if let Ok((n, _)) = self.sock.recv_from(&mut buf) {
                return Some(parse(&buf[..n]).expect("engine sent valid SIP"));
            }
        }
        None
    }

    /// The next response, skipping requests the engine sends meanwhile (its queries).
    pub fn recv_response(&self, limit: Duration) -> Option<SipMsg> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match self.recv(deadline - Instant::now()) {
                Some(m) if !m.is_request() => return Some(m),
                Some(_) => continue,
                None => return None,
            }
        }
        None
    }

    pub fn request(&mut self, method: &str, call_id: &str, extra: &str, content_type: Option<&str>, body: &[u8]) -> Vec<u8> {
        self.cseq += 1;
        let local = self.local();
        let mut head = format!(
            "{method} sip:{SERVER}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {local};rport;branch=z9hG4bK{}{}\r\nFrom: <sip:{DEVICE}@{DOMAIN}>;tag=dev{}\r\nTo: <sip:{SERVER}@{DOMAIN}>\r\nCall-ID: {call_id}\r\nCSeq: {} {method}\r\nContact: <sip:{DEVICE}@{local}>\r\nMax-Forwards: 70\r\nUser-Agent: IP Camera\r\n{extra}",
            self.cseq,
            call_id.len(),
            self.cseq,
            self.cseq
        );
        if let Some(ct) = content_type {
            head.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut out = head.into_bytes();
        out.extend_from_slice(body);
        out
    }

    /// REGISTER, answer the challenge with `password`; returns the final status and the 200's Date.
    pub fn register(&mut self, password: &str, expires: u32) -> (u16, Option<String>) {
        let call_id = format!("reg-{}", self.local().port());
        let first = self.request("REGISTER", &call_id, &format!("Expires: {expires}\r\n"), None, b"");
        self.send(&first);
        let mut resp = self.recv_response(Duration::from_secs(5)).expect("answer to REGISTER");
        for _ in 0..5 {
            if resp.status() != Some(401) {
                break;
            }
            let www = resp.header("WWW-Authenticate").expect("challenge");
            let param = |k: &str| {
                www.split(',')
                    .find_map(|p| p.trim().trim_start_matches("Digest ").strip_prefix(&format!("{k}=")).map(|v| v.trim_matches('"').to_string()))
                    .unwrap()
            };
            let (realm, nonce) = (param("realm"), param("nonce"));
            let uri = format!("sip:{SERVER}@{DOMAIN}");
            let response = digest::client_response(DEVICE, &realm, password, "REGISTER", &uri, &nonce, None);
            let auth = format!(
                "Authorization: Digest username=\"{DEVICE}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5\r\nExpires: {expires}\r\n"
            );
            let again = self.request("REGISTER", &call_id, &auth, None, b"");
            self.send(&again);
            resp = self.recv_response(Duration::from_secs(5)).expect("answer to authorised REGISTER");
        }
        (resp.status().unwrap_or(0), resp.header("Date"))
    }

    pub fn reply(&self, req: &SipMsg, code: u16, reason: &str, extra: &str, body: Option<(&str, &[u8])>) {
        let mut head = format!("SIP/2.0 {code} {reason}\r\n");
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            let v = req.header(name).unwrap();
            if name == "To" && code > 100 && !v.contains("tag=") {
                head.push_str(&format!("To: {v};tag=devtag\r\n"));
            } else {
                head.push_str(&format!("{name}: {v}\r\n"));
            }
        }
        head.push_str(extra);
        let mut out = match body {
            // Hikvision style: capitalised type, padded length.
            Some((ct, b)) => format!("{head}Content-Type: {ct}\r\nContent-Length:   {}\r\n\r\n", b.len()).into_bytes(),
            None => format!("{head}Content-Length: 0\r\n\r\n").into_bytes(),
        };
        if let Some((_, b)) = body {
            out.extend_from_slice(b);
        }
        self.send(&out);
    }
}
