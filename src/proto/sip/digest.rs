//! HTTP digest authentication for SIP REGISTER (RFC 2617 / RFC 3261 §22), MD5, with and
//! without qop=auth (GB28181 devices do both).

use md5::{Digest, Md5};

fn md5_hex(s: &str) -> String {
    let d = Md5::digest(s.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parameters of an `Authorization: Digest ...` header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DigestCredentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub qop: Option<String>,
    pub nc: Option<String>,
    pub cnonce: Option<String>,
}

/// Parameter values longer than this are not credentials.
const DIGEST_PARAM_BYTES_MAX: usize = 512;

impl DigestCredentials {
    pub fn parse(header_value: &str) -> Option<DigestCredentials> {
        let rest = header_value.trim();
        let rest = rest.get(..6).filter(|s| s.eq_ignore_ascii_case("digest")).map(|_| &rest[6..])?;
        let mut c = DigestCredentials::default();
        for part in split_params(rest) {
            let Some((k, v)) = part.split_once('=') else { continue };
            let v = v.trim().trim_matches('"').to_string();
            if v.len() > DIGEST_PARAM_BYTES_MAX {
                return None;
            }
            match k.trim().to_ascii_lowercase().as_str() {
                "username" => c.username = v,
                "realm" => c.realm = v,
                "nonce" => c.nonce = v,
                "uri" => c.uri = v,
                "response" => c.response = v.to_ascii_lowercase(),
                "qop" => c.qop = Some(v),
                "nc" => c.nc = Some(v),
                "cnonce" => c.cnonce = Some(v),
                _ => {}
            }
        }
        (!c.username.is_empty() && !c.nonce.is_empty() && !c.response.is_empty()).then_some(c)
    }

    /// The response a client with `password` would compute for `method`.
    pub fn expected_response(&self, method: &str, password: &str) -> String {
        let ha1 = md5_hex(&format!("{}:{}:{}", self.username, self.realm, password));
        let ha2 = md5_hex(&format!("{method}:{}", self.uri));
        match (&self.qop, &self.nc, &self.cnonce) {
            (Some(qop), Some(nc), Some(cnonce)) => md5_hex(&format!("{ha1}:{}:{nc}:{cnonce}:{qop}:{ha2}", self.nonce)),
            _ => md5_hex(&format!("{ha1}:{}:{ha2}", self.nonce)),
        }
    }

    pub fn verify(&self, method: &str, password: &str) -> bool {
        let expected = self.expected_response(method, password);
        expected.len() == self.response.len() && expected.bytes().zip(self.response.bytes()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0
    }
}

/// Splits on commas outside quotes.
fn split_params(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, ch) in s.char_indices() {
        match ch {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Parameters of a `WWW-Authenticate: Digest ...` challenge (what gmv answers as a client:
/// registering with an upper platform).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DigestChallenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    /// `qop` offers `auth` (answered with nc and cnonce).
    pub qop_auth: bool,
    /// The nonce was only stale (RFC 2617 §3.2.1): the password was right.
    pub stale: bool,
}

impl DigestChallenge {
    /// None for another scheme, an algorithm other than MD5, or no nonce.
    pub fn parse(header_value: &str) -> Option<DigestChallenge> {
        let rest = header_value.trim();
        let rest = rest.get(..6).filter(|s| s.eq_ignore_ascii_case("digest")).map(|_| &rest[6..])?;
        let mut c = DigestChallenge::default();
        for part in split_params(rest) {
            let Some((k, v)) = part.split_once('=') else { continue };
            let v = v.trim().trim_matches('"');
            if v.len() > DIGEST_PARAM_BYTES_MAX {
                return None;
            }
            match k.trim().to_ascii_lowercase().as_str() {
                "realm" => c.realm = v.to_string(),
                "nonce" => c.nonce = v.to_string(),
                "opaque" => c.opaque = Some(v.to_string()),
                "qop" => c.qop_auth = v.split(',').any(|q| q.trim().eq_ignore_ascii_case("auth")),
                "stale" => c.stale = v.eq_ignore_ascii_case("true"),
                "algorithm" if !v.eq_ignore_ascii_case("md5") => return None,
                _ => {}
            }
        }
        (!c.nonce.is_empty()).then_some(c)
    }

    /// The `Authorization` value answering this challenge for `method` on `uri`; `cnonce`
    /// is used when qop is offered (first use of the nonce: nc 1).
    pub fn authorization(&self, username: &str, password: &str, method: &str, uri: &str, cnonce: &str) -> String {
        let qop = self.qop_auth.then_some(("00000001", cnonce));
        let response = client_response(username, &self.realm, password, method, uri, &self.nonce, qop);
        let mut v = format!(r#"Digest username="{username}", realm="{}", nonce="{}", uri="{uri}", response="{response}", algorithm=MD5"#, self.realm, self.nonce);
        if let Some((nc, cnonce)) = qop {
            v.push_str(&format!(r#", qop=auth, nc={nc}, cnonce="{cnonce}""#));
        }
        if let Some(o) = &self.opaque {
            v.push_str(&format!(r#", opaque="{o}""#));
        }
        v
    }
}

/// What a client computes: used by the device simulator in tests and by tools.
pub fn client_response(username: &str, realm: &str, password: &str, method: &str, uri: &str, nonce: &str, qop: Option<(&str, &str)>) -> String {
    let c = DigestCredentials {
        username: username.into(),
        realm: realm.into(),
        nonce: nonce.into(),
        uri: uri.into(),
        qop: qop.map(|_| "auth".to_string()),
        nc: qop.map(|(nc, _)| nc.to_string()),
        cnonce: qop.map(|(_, cn)| cn.to_string()),
        ..Default::default()
    };
    c.expected_response(method, password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_challenge_is_answered_as_the_server_checks_it() {
        let c = DigestChallenge::parse(r#"Digest realm="3402000000", nonce="abc,def", qop="auth,auth-int", opaque="o1", algorithm=MD5"#).unwrap();
        assert_eq!((c.realm.as_str(), c.nonce.as_str(), c.qop_auth, c.opaque.as_deref(), c.stale), ("3402000000", "abc,def", true, Some("o1"), false));
        let auth = c.authorization("34020000002000000002", "pw", "REGISTER", "sip:34020000002000000001@3402000000", "cn1");
        let back = DigestCredentials::parse(&auth).unwrap();
        assert!(back.verify("REGISTER", "pw") && !back.verify("REGISTER", "other"), "{auth}");
        assert!(auth.contains(r#"opaque="o1""#) && auth.contains("nc=00000001"));
        // Without qop: the RFC 2069 form.
        let plain = DigestChallenge::parse(r#"Digest realm="r", nonce="n""#).unwrap();
        let auth = plain.authorization("u", "pw", "REGISTER", "sip:s@r", "cn");
        assert!(!auth.contains("qop") && DigestCredentials::parse(&auth).unwrap().verify("REGISTER", "pw"));
        assert_eq!(DigestChallenge::parse(r#"Digest realm="r", nonce="n", algorithm=SHA-256"#), None);
        assert_eq!(DigestChallenge::parse(r#"Basic realm="r""#), None);
        assert!(DigestChallenge::parse(r#"Digest realm="r", nonce="n", stale=TRUE"#).unwrap().stale);
    }

    #[test]
    fn rfc2617_example() {
        // RFC 2617 §3.5 (HTTP, method GET) with qop=auth.
        let h = r#"Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41""#;
        let c = DigestCredentials::parse(h).unwrap();
        assert!(c.verify("GET", "Circle Of Life"));
        assert!(!c.verify("GET", "circle of life"));
    }

    #[test]
    fn without_qop_as_most_cameras() {
        let resp =
            client_response("34020000001320000001", "3402000000", "12345678", "REGISTER", "sip:34020000002000000001@3402000000", "abc123", None);
        let h = format!(
            r#"Digest username="34020000001320000001",realm="3402000000",nonce="abc123",uri="sip:34020000002000000001@3402000000",response="{resp}",algorithm=MD5"#
        );
        let c = DigestCredentials::parse(&h).unwrap();
        assert!(c.verify("REGISTER", "12345678"));
        assert!(!c.verify("REGISTER", "wrong"));
    }

    #[test]
    fn hostile_headers() {
        assert_eq!(DigestCredentials::parse("Basic abc"), None);
        assert_eq!(DigestCredentials::parse("Digest"), None);
        let long = format!(r#"Digest username="{}", nonce="n", response="r""#, "a".repeat(DIGEST_PARAM_BYTES_MAX + 1));
        assert_eq!(DigestCredentials::parse(&long), None);
        let mut rng = crate::proto::testutil::Rng::new(4);
        for _ in 0..5_000 {
            let d = rng.mutate(br#"Digest username="a", realm="b", nonce="c", uri="d", response="e", qop=auth, nc=1, cnonce="f""#);
            let _ = DigestCredentials::parse(&String::from_utf8_lossy(&d));
        }
    }
}
