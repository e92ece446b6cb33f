//! ONVIF client core, sans-IO: WS-Discovery Probe/ProbeMatches, SOAP 1.2 request bodies and
//! envelopes with a WS-Security UsernameToken, response and fault parsers, and HTTP digest
//! (RFC 7616 MD5/SHA-256) for devices that challenge with 401. The driver owns sockets, clocks
//! and randomness: times and nonces come in as parameters. Wire forms: /work/notes/onvif_wire.md,
//! checked against tests/onvif/sim.py.

use base64::Engine;
use sha1::Digest;
use std::borrow::Cow;

/// An HTTP response body we will parse; GetProfiles is tens of KB at most (notes §2).
pub const RESPONSE_BYTES_MAX: usize = 1024 * 1024;
/// A discovery datagram; real ProbeMatches are 1 to 4 KB, UDP allows up to 64 KiB.
pub const DATAGRAM_BYTES_MAX: usize = 64 * 1024;
/// SOAP answers nest about 8 deep; anything far deeper is hostile.
pub const XML_DEPTH_MAX: usize = 32;
/// Elements in one document: a 64-channel NVR's GetProfiles stays well below this.
pub const XML_ELEMENTS_MAX: usize = 64 * 1024;
/// Attributes on one element.
pub const XML_ATTRIBUTES_MAX: usize = 64;
pub const PROBE_MATCHES_MAX: usize = 32;
pub const XADDRS_MAX: usize = 16;
pub const SCOPES_MAX: usize = 64;
pub const SERVICES_MAX: usize = 64;
pub const PROFILES_MAX: usize = 256;
pub const PRESETS_MAX: usize = 1024;
/// One WWW-Authenticate value; longer ones are not worth answering.
pub const CHALLENGE_BYTES_MAX: usize = 4096;
/// Challenges considered across all WWW-Authenticate headers of one 401.
pub const CHALLENGES_MAX: usize = 16;
/// Parameters of one challenge.
pub const CHALLENGE_PARAMS_MAX: usize = 32;
/// ContinuousMove dead-man timeout ceiling: a lost Stop must not leave the camera turning.
pub const PTZ_TIMEOUT_SECONDS_MAX: u32 = 3600;
/// 9999-12-31T23:59:59Z: the last instant the xs:dateTime formats below can spell.
pub const UNIX_SECONDS_MAX: i64 = 253_402_300_799;
/// `&#x10FFFF;` is the longest reference we accept (name part, without `&` and `;`).
const ENTITY_BYTES_MAX: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnvifError {
    TooLarge {
        bytes: usize,
        max_bytes: usize,
    },
    NotUtf8,
    /// Malformed or truncated XML; `offset` is roughly where reading stopped.
    Xml {
        offset: usize,
        reason: &'static str,
    },
    /// A DOCTYPE or ENTITY declaration: refused outright (entity expansion, external fetches).
    Dtd,
    TooMany {
        what: &'static str,
        max: usize,
    },
    /// Well-formed XML but no SOAP Envelope/Body (e.g. an HTML error page).
    NotSoap,
    /// A SOAP fault. `subcode` is the chain of Subcode values joined by '/', outermost first
    /// (e.g. `ter:InvalidArgVal/ter:NoProfile`), empty when the device gave none.
    Fault {
        code: String,
        subcode: String,
        reason: String,
    },
    /// The Body holds another element than the expected response.
    Unexpected {
        expected: String,
        found: String,
    },
    Missing(&'static str),
    BadValue(&'static str),
    /// A ProbeMatches whose RelatesTo is not our probe's MessageID (or has none).
    NotRelated,
    /// No Digest challenge with an algorithm and qop we can answer.
    NoUsableChallenge,
}

impl OnvifError {
    /// Whether this is a fault whose code or subcode chain has this local name (prefixes
    /// ignored: some devices never declare `ter`).
    pub fn fault_is(&self, local_name: &str) -> bool {
        match self {
            Self::Fault { code, subcode, .. } => std::iter::once(code.as_str()).chain(subcode.split('/')).any(|q| local(q) == local_name),
            _ => false,
        }
    }

    /// Wrong user or password, clock skew or replay: the driver refreshes the clock once, then stops.
    pub fn is_not_authorized(&self) -> bool {
        self.fault_is("NotAuthorized")
    }
}

// The Debug form names the variant and its fields, which is what a log line needs.
impl std::fmt::Display for OnvifError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "onvif: {self:?}")
    }
}
impl std::error::Error for OnvifError {}

// ------------------------------------------------------------------------------------------
// A minimal XML reader: elements matched by local name (devices use any prefix for the same
// namespace), attributes, entity-decoded text. No DTDs, so no custom entities. The document is
// a flat list in document order where `end` is one past the element's last descendant, so
// children are walked by jumping over whole subtrees.

struct Node<'a> {
    local: &'a str,
    /// Character data directly inside the element (CDATA included), entity-decoded.
    text: Cow<'a, str>,
    attrs: std::ops::Range<usize>,
    end: usize,
}

struct Doc<'a> {
    nodes: Vec<Node<'a>>,
    attrs: Vec<(&'a str, Cow<'a, str>)>,
}

fn local(qname: &str) -> &str {
    qname.rsplit(':').next().unwrap_or(qname)
}

fn xml_err(offset: usize, reason: &'static str) -> OnvifError {
    OnvifError::Xml { offset, reason }
}

fn find_from(s: &str, from: usize, pat: &str) -> Result<usize, OnvifError> {
    s.get(from..).and_then(|r| r.find(pat)).map(|i| from + i).ok_or(xml_err(s.len(), "truncated document"))
}

fn decode_entities(raw: &str, offset: usize) -> Result<Cow<'_, str>, OnvifError> {
    if !raw.contains('&') {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let semi = after.find(';').filter(|&n| n <= ENTITY_BYTES_MAX).ok_or(xml_err(offset, "bad entity reference"))?;
        let name = &after[..semi];
        let numeric = |digits: &str, radix: u32| {
            let ok = !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix));
            ok.then(|| u32::from_str_radix(digits, radix).ok()).flatten().and_then(char::from_u32).filter(|&c| c != '\0')
        };
        let ch = match name {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => match name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
                Some(hex) => numeric(hex, 16),
                None => name.strip_prefix('#').and_then(|dec| numeric(dec, 10)),
            },
        };
        out.push(ch.ok_or(xml_err(offset, "unknown entity"))?);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

/// A name runs to whitespace, '/', '>' or '='; quotes and '<' cannot occur in one.
fn read_name(s: &str, from: usize) -> Result<(&str, usize), OnvifError> {
    let rest = s.get(from..).unwrap_or("");
    let len = rest.find(|c: char| c.is_ascii_whitespace() || matches!(c, '/' | '>' | '=')).unwrap_or(rest.len());
    let name = &rest[..len];
    if name.is_empty() || name.contains(['<', '"', '\'', '&']) {
        return Err(xml_err(from, "bad name"));
    }
    Ok((name, from + len))
}

fn skip_ws(b: &[u8], mut p: usize) -> usize {
    while b.get(p).is_some_and(u8::is_ascii_whitespace) {
        p += 1;
    }
    p
}

impl<'a> Doc<'a> {
    fn parse(s: &'a str) -> Result<Self, OnvifError> {
        let s = s.strip_prefix('\u{feff}').unwrap_or(s);
        let b = s.as_bytes();
        let mut doc = Doc { nodes: Vec::new(), attrs: Vec::new() };
        let mut stack: Vec<(usize, &'a str)> = Vec::new();
        let mut pos = 0;
        while pos < b.len() {
            let rest = &s[pos..];
            if !rest.starts_with('<') {
                let end = rest.find('<').map_or(s.len(), |i| pos + i);
                let raw = &s[pos..end];
                // Whitespace-only runs are layout between elements; every text is read trimmed.
                if !raw.trim().is_empty() {
                    let &(open, _) = stack.last().ok_or(xml_err(pos, "text outside the root element"))?;
                    doc.push_text(open, decode_entities(raw, pos)?);
                }
                pos = end;
            } else if rest.starts_with("<?") {
                pos = find_from(s, pos + 2, "?>")? + 2;
            } else if rest.starts_with("<!--") {
                pos = find_from(s, pos + 4, "-->")? + 3;
            } else if rest.starts_with("<![CDATA[") {
                let end = find_from(s, pos + 9, "]]>")?;
                let &(open, _) = stack.last().ok_or(xml_err(pos, "CDATA outside the root element"))?;
                doc.push_text(open, Cow::Borrowed(&s[pos + 9..end]));
                pos = end + 3;
            } else if rest.starts_with("<!") {
                return Err(OnvifError::Dtd);
            } else if rest.starts_with("</") {
                let end = find_from(s, pos + 2, ">")?;
                let (open, qname) = stack.pop().ok_or(xml_err(pos, "close tag without open tag"))?;
                if s[pos + 2..end].trim_end() != qname {
                    return Err(xml_err(pos, "mismatched close tag"));
                }
                doc.nodes[open].end = doc.nodes.len();
                pos = end + 1;
            } else {
                if stack.is_empty() && !doc.nodes.is_empty() {
                    return Err(xml_err(pos, "second root element"));
                }
                if stack.len() >= XML_DEPTH_MAX {
                    return Err(OnvifError::TooMany { what: "levels of XML nesting", max: XML_DEPTH_MAX });
                }
                if doc.nodes.len() >= XML_ELEMENTS_MAX {
                    return Err(OnvifError::TooMany { what: "XML elements", max: XML_ELEMENTS_MAX });
                }
                let (qname, mut p) = read_name(s, pos + 1)?;
                let first_attr = doc.attrs.len();
                let self_closing = loop {
                    p = skip_ws(b, p);
                    match b.get(p) {
                        None => return Err(xml_err(p, "truncated document")),
                        Some(b'>') => break false,
                        Some(b'/') if b.get(p + 1) == Some(&b'>') => break true,
                        Some(_) => {
                            let (aname, q) = read_name(s, p)?;
                            let q = skip_ws(b, q);
                            if b.get(q) != Some(&b'=') {
                                return Err(xml_err(q, "attribute without value"));
                            }
                            let q = skip_ws(b, q + 1);
                            let quote = match b.get(q) {
                                Some(&c @ (b'"' | b'\'')) => c as char,
                                _ => return Err(xml_err(q, "unquoted attribute value")),
                            };
                            let close = find_from(s, q + 1, if quote == '"' { "\"" } else { "'" })?;
                            if doc.attrs.len() - first_attr >= XML_ATTRIBUTES_MAX {
                                return Err(OnvifError::TooMany { what: "XML attributes", max: XML_ATTRIBUTES_MAX });
                            }
                            // Namespace declarations are not data; dropping them keeps lookups by local name clean.
                            if aname != "xmlns" && !aname.starts_with("xmlns:") {
                                doc.attrs.push((local(aname), decode_entities(&s[q + 1..close], q)?));
                            }
                            p = close + 1;
                        }
                    }
                };
                let index = doc.nodes.len();
                doc.nodes.push(Node { local: local(qname), text: Cow::Borrowed(""), attrs: first_attr..doc.attrs.len(), end: index + 1 });
                if !self_closing {
                    stack.push((index, qname));
                }
                pos = p + if self_closing { 2 } else { 1 };
            }
        }
        if !stack.is_empty() || doc.nodes.is_empty() {
            return Err(xml_err(s.len(), "truncated document"));
        }
        Ok(doc)
    }

    fn push_text(&mut self, node: usize, text: Cow<'a, str>) {
        let t = &mut self.nodes[node].text;
        if t.is_empty() { *t = text } else { t.to_mut().push_str(&text) }
    }

    fn children(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        let end = self.nodes.get(i).map_or(0, |n| n.end);
        std::iter::successors(Some(i + 1), |&j| self.nodes.get(j).map(|n| n.end)).take_while(move |&j| j < end)
    }

    fn named<'s>(&'s self, i: usize, name: &'s str) -> impl Iterator<Item = usize> + 's {
        self.children(i).filter(move |&j| self.nodes[j].local == name)
    }

    fn path(&self, i: usize, path: &[&str]) -> Option<usize> {
        path.iter().try_fold(i, |n, name| self.named(n, name).next())
    }

    fn text(&self, i: usize) -> &str {
        self.nodes.get(i).map_or("", |n| n.text.trim())
    }

    /// Trimmed text at `path` below `i`; None when absent or empty.
    fn text_at(&self, i: usize, path: &[&str]) -> Option<&str> {
        self.path(i, path).map(|n| self.text(n)).filter(|t| !t.is_empty())
    }

    fn attr(&self, i: usize, name: &str) -> Option<&str> {
        let range = self.nodes.get(i)?.attrs.clone();
        self.attrs.get(range)?.iter().find(|(n, _)| *n == name).map(|(_, v)| v.trim())
    }
}

// ------------------------------------------------------------------------------------------
// SOAP

fn parse_envelope(bytes: &[u8], max_bytes: usize) -> Result<(Doc<'_>, usize), OnvifError> {
    if bytes.len() > max_bytes {
        return Err(OnvifError::TooLarge { bytes: bytes.len(), max_bytes });
    }
    let doc = Doc::parse(std::str::from_utf8(bytes).map_err(|_| OnvifError::NotUtf8)?)?;
    if doc.nodes[0].local != "Envelope" {
        return Err(OnvifError::NotSoap);
    }
    let body = doc.path(0, &["Body"]).ok_or(OnvifError::NotSoap)?;
    // Devices send faults with 200, 400 or 500 alike, so the body decides, not the status.
    if let Some(fault) = doc.path(body, &["Fault"]) {
        return Err(read_fault(&doc, fault));
    }
    Ok((doc, body))
}

fn read_fault(doc: &Doc, fault: usize) -> OnvifError {
    let code_el = doc.path(fault, &["Code"]);
    // SOAP 1.1 (faultcode/faultstring) comes from old firmware; read it too rather than fail.
    let code = code_el.and_then(|c| doc.text_at(c, &["Value"])).or_else(|| doc.text_at(fault, &["faultcode"]));
    let mut subcodes = Vec::new();
    let mut level = code_el;
    for _ in 0..XML_DEPTH_MAX {
        let Some(sub) = level.and_then(|l| doc.path(l, &["Subcode"])) else { break };
        subcodes.extend(doc.text_at(sub, &["Value"]));
        level = Some(sub);
    }
    let reason = doc.text_at(fault, &["Reason", "Text"]).or_else(|| doc.text_at(fault, &["faultstring"]));
    OnvifError::Fault { code: code.unwrap_or("").into(), subcode: subcodes.join("/"), reason: reason.unwrap_or("").into() }
}

/// The `<operation>Response` element of a SOAP answer.
fn parse_response<'b>(bytes: &'b [u8], operation: &str) -> Result<(Doc<'b>, usize), OnvifError> {
    let (doc, body) = parse_envelope(bytes, RESPONSE_BYTES_MAX)?;
    let expected = format!("{operation}Response");
    let first = doc.children(body).next();
    match first {
        Some(r) if doc.nodes[r].local == expected => Ok((doc, r)),
        _ => {
            let found = first.map_or("", |r| doc.nodes[r].local).chars().take(64).collect();
            Err(OnvifError::Unexpected { expected, found })
        }
    }
}

/// XML-escapes user data (preset names, user names, tokens) for text and attribute values.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
}

// ------------------------------------------------------------------------------------------
// WS-Discovery

/// A WS-Discovery Probe for `dn:NetworkVideoTransmitter`; `message_id` should be a fresh
/// `urn:uuid:…` per probe, and answers are matched on it.
pub fn probe(message_id: &str) -> String {
    format!(
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" "#,
            r#"xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" "#,
            r#"xmlns:dn="http://www.onvif.org/ver10/network/wsdl"><s:Header><a:MessageID>{}</a:MessageID>"#,
            r#"<a:To s:mustUnderstand="1">urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To>"#,
            r#"<a:Action s:mustUnderstand="1">http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</a:Action></s:Header>"#,
            r#"<s:Body><d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types></d:Probe></s:Body></s:Envelope>"#
        ),
        esc(message_id)
    )
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovered {
    /// EndpointReference Address: the device identity to de-duplicate on (opaque, usually urn:uuid).
    pub endpoint: String,
    /// Device-service URLs in the order given; see `device_url` for the one to try first.
    pub xaddrs: Vec<String>,
    /// From scope `onvif://www.onvif.org/name/…`, percent-decoded.
    pub name: Option<String>,
    /// From scope `onvif://www.onvif.org/hardware/…`, percent-decoded.
    pub hardware: Option<String>,
    pub scopes: Vec<String>,
}

impl Discovered {
    pub fn device_url(&self) -> Option<&str> {
        usable_xaddr(&self.xaddrs)
    }
}

/// The first plain-http XAddr worth trying: IPv4 or host names first, then global IPv6.
/// Link-local IPv6 is never usable (the zone is the device's interface, not ours), and https
/// would need a TLS stack and certificates cameras rarely have right.
pub fn usable_xaddr(xaddrs: &[String]) -> Option<&str> {
    let host = |u: &str| -> Option<String> {
        let rest = u.strip_prefix("http://")?;
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        Some(authority.rsplit_once('@').map_or(authority, |(_, h)| h).to_string())
    };
    let v6 = |h: &str| h.starts_with('[');
    let link_local = |h: &str| {
        let inner = h.trim_start_matches('[').split([']', '%']).next().unwrap_or("");
        inner.parse::<std::net::Ipv6Addr>().map_or(true, |a| a.is_unicast_link_local())
    };
    let candidates = || xaddrs.iter().take(XADDRS_MAX).filter_map(|u| Some((u.as_str(), host(u)?)));
    candidates().find(|(_, h)| !h.is_empty() && !v6(h)).or_else(|| candidates().find(|(_, h)| v6(h) && !link_local(h))).map(|(u, _)| u)
}

/// Reads a ProbeMatches datagram answering the probe with `message_id`. Hello, Bye, our own
/// looped-back probe and other devices' chatter come back as errors for the driver to skip.
pub fn parse_probe_match(bytes: &[u8], message_id: &str) -> Result<Vec<Discovered>, OnvifError> {
    let (doc, body) = parse_envelope(bytes, DATAGRAM_BYTES_MAX)?;
    if doc.text_at(0, &["Header", "RelatesTo"]) != Some(message_id) {
        return Err(OnvifError::NotRelated);
    }
    let matches = doc.path(body, &["ProbeMatches"]).ok_or(OnvifError::Missing("ProbeMatches"))?;
    let mut found = Vec::new();
    for (n, m) in doc.named(matches, "ProbeMatch").enumerate() {
        if n >= PROBE_MATCHES_MAX {
            return Err(OnvifError::TooMany { what: "ProbeMatch elements", max: PROBE_MATCHES_MAX });
        }
        // Without an address there is no identity to de-duplicate on; skip that match alone.
        let Some(endpoint) = doc.text_at(m, &["EndpointReference", "Address"]) else { continue };
        let list = |name: &str, max: usize, what: &'static str| -> Result<Vec<String>, OnvifError> {
            let items: Vec<String> = doc.text_at(m, &[name]).unwrap_or("").split_ascii_whitespace().take(max + 1).map(String::from).collect();
            if items.len() > max { Err(OnvifError::TooMany { what, max }) } else { Ok(items) }
        };
        let scopes = list("Scopes", SCOPES_MAX, "scopes")?;
        let scope = |kind: &str| {
            let prefix = format!("onvif://www.onvif.org/{kind}/");
            scopes.iter().find_map(|s| s.strip_prefix(&prefix)).map(super::http_head::percent_decode).filter(|v| !v.is_empty())
        };
        let (name, hardware) = (scope("name"), scope("hardware"));
        found.push(Discovered { endpoint: endpoint.into(), xaddrs: list("XAddrs", XADDRS_MAX, "XAddrs")?, name, hardware, scopes });
    }
    Ok(found)
}

// ------------------------------------------------------------------------------------------
// Envelope, WS-Security UsernameToken and device time

/// A WS-Security UsernameToken with PasswordDigest. Build a fresh one per request: devices
/// refuse a replayed (Nonce, Created) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsseToken {
    pub username: String,
    /// Base64(SHA1(nonce ‖ created ‖ password)).
    pub password_digest: String,
    pub nonce_base64: String,
    pub created: String,
}

impl WsseToken {
    /// `created_utc` is device time (local clock + offset from GetSystemDateAndTime), e.g.
    /// from `format_created`; the same string goes into the digest and the element.
    pub fn new(user: &str, password: &str, nonce: [u8; 16], created_utc: &str) -> Self {
        let mut h = sha1::Sha1::new();
        h.update(nonce);
        h.update(created_utc.as_bytes());
        h.update(password.as_bytes());
        let b64 = base64::engine::general_purpose::STANDARD;
        WsseToken { username: user.into(), password_digest: b64.encode(h.finalize()), nonce_base64: b64.encode(nonce), created: created_utc.into() }
    }
}

/// A SOAP 1.2 envelope around one operation `body`, declaring the prefixes the builders below use.
pub fn envelope(body: &str, security: Option<&WsseToken>) -> String {
    let header = security.map_or(String::new(), |t| {
        format!(
            concat!(
                r#"<s:Header><wsse:Security s:mustUnderstand="1" "#,
                r#"xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd" "#,
                r#"xmlns:wsu="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd">"#,
                r#"<wsse:UsernameToken><wsse:Username>{}</wsse:Username><wsse:Password "#,
                r#"Type="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest">{}</wsse:Password>"#,
                r#"<wsse:Nonce EncodingType="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary">"#,
                r#"{}</wsse:Nonce><wsu:Created>{}</wsu:Created></wsse:UsernameToken></wsse:Security></s:Header>"#
            ),
            esc(&t.username),
            t.password_digest,
            t.nonce_base64,
            esc(&t.created)
        )
    });
    format!(
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" "#,
            r#"xmlns:tds="http://www.onvif.org/ver10/device/wsdl" xmlns:trt="http://www.onvif.org/ver10/media/wsdl" "#,
            r#"xmlns:tr2="http://www.onvif.org/ver20/media/wsdl" xmlns:tptz="http://www.onvif.org/ver20/ptz/wsdl" "#,
            r#"xmlns:tt="http://www.onvif.org/ver10/schema">{}<s:Body>{}</s:Body></s:Envelope>"#
        ),
        header, body
    )
}

// Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's algorithm); callers keep
// years within 0..=9999, so nothing here can overflow.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

fn unix_seconds(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> Option<i64> {
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    // The month is checked by lookup before any arithmetic on it: it comes off the wire.
    let &days = usize::try_from(mo).ok().and_then(|m| month_days.get(m.checked_sub(1)?))?;
    // Second 60 is a leap second; it counts as the next minute's 0.
    let ok = (1970..=9999).contains(&y) && (1..=days).contains(&d) && (0..24).contains(&h) && (0..60).contains(&mi) && (0..=60).contains(&s);
    ok.then(|| days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s)
}

/// `YYYY-MM-DDThh:mm:ssZ` for WS-Security `Created`; clamped to 1970..9999.
pub fn format_created(unix_secs: i64) -> String {
    let t = unix_secs.clamp(0, UNIX_SECONDS_MAX);
    let (days, secs) = (t / 86_400 + 719_468, t % 86_400);
    let era = days / 146_097;
    let doe = days - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

pub const GET_SYSTEM_DATE_AND_TIME: &str = "<tds:GetSystemDateAndTime/>";

/// Device clock as unix seconds from `UTCDateTime`. The driver's offset is this minus its own
/// clock at receipt; when a device leaves UTCDateTime out (it is optional), the HTTP `Date`
/// header is the fallback.
pub fn parse_system_date_and_time(bytes: &[u8]) -> Result<i64, OnvifError> {
    let (doc, r) = parse_response(bytes, "GetSystemDateAndTime")?;
    let utc = doc.path(r, &["SystemDateAndTime", "UTCDateTime"]).ok_or(OnvifError::Missing("UTCDateTime"))?;
    let n = |path: [&str; 2]| doc.text_at(utc, &path).and_then(|t| t.parse::<i64>().ok()).ok_or(OnvifError::BadValue("UTCDateTime"));
    let (y, mo, d) = (n(["Date", "Year"])?, n(["Date", "Month"])?, n(["Date", "Day"])?);
    let (h, mi, s) = (n(["Time", "Hour"])?, n(["Time", "Minute"])?, n(["Time", "Second"])?);
    unix_seconds(y, mo, d, h, mi, s).ok_or(OnvifError::BadValue("UTCDateTime"))
}

// ------------------------------------------------------------------------------------------
// Device service

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceInformation {
    pub manufacturer: String,
    pub model: String,
    pub firmware_version: String,
    /// The stable identity when discovery gave no endpoint UUID.
    pub serial_number: String,
    pub hardware_id: String,
}

pub const GET_DEVICE_INFORMATION: &str = "<tds:GetDeviceInformation/>";

/// All five fields are required by the schema; a device leaving one out still gets its
/// others read (they are for display), with the missing one empty.
pub fn parse_device_information(bytes: &[u8]) -> Result<DeviceInformation, OnvifError> {
    let (doc, r) = parse_response(bytes, "GetDeviceInformation")?;
    let f = |name: &str| doc.text_at(r, &[name]).unwrap_or("").to_string();
    Ok(DeviceInformation {
        manufacturer: f("Manufacturer"),
        model: f("Model"),
        firmware_version: f("FirmwareVersion"),
        serial_number: f("SerialNumber"),
        hardware_id: f("HardwareId"),
    })
}

/// Where to send Media and PTZ requests. Paths differ by vendor, so they come from the device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceUrls {
    /// Media ver10, or the device URL when not listed.
    pub media: String,
    /// Media2 (ver20), the only way to see H.265 profiles; GetCapabilities never lists it.
    pub media2: Option<String>,
    /// PTZ (ver20), or the device URL when not listed: a PTZ call then ends in a fault, which
    /// says more than guessing. Whether a profile can move is `Profile::ptz_configuration`.
    pub ptz: String,
}

/// GetServices is preferred; on a fault (old devices), fall back to GET_CAPABILITIES.
pub const GET_SERVICES: &str = "<tds:GetServices><tds:IncludeCapability>false</tds:IncludeCapability></tds:GetServices>";

pub const GET_CAPABILITIES: &str = "<tds:GetCapabilities><tds:Category>All</tds:Category></tds:GetCapabilities>";

const NS_MEDIA: &str = "http://www.onvif.org/ver10/media/wsdl";
const NS_MEDIA2: &str = "http://www.onvif.org/ver20/media/wsdl";
const NS_PTZ: &str = "http://www.onvif.org/ver20/ptz/wsdl";

/// Reads a GetServicesResponse or a GetCapabilitiesResponse, whichever the body holds.
pub fn parse_service_urls(bytes: &[u8], device_url: &str) -> Result<ServiceUrls, OnvifError> {
    let (doc, body) = parse_envelope(bytes, RESPONSE_BYTES_MAX)?;
    let (mut media, mut media2, mut ptz) = (None, None, None);
    if let Some(r) = doc.path(body, &["GetServicesResponse"]) {
        for (n, s) in doc.named(r, "Service").enumerate() {
            if n >= SERVICES_MAX {
                return Err(OnvifError::TooMany { what: "services", max: SERVICES_MAX });
            }
            let slot = match doc.text_at(s, &["Namespace"]) {
                Some(NS_MEDIA) => &mut media,
                Some(NS_MEDIA2) => &mut media2,
                Some(NS_PTZ) => &mut ptz,
                _ => continue,
            };
            *slot = slot.or(doc.text_at(s, &["XAddr"]));
        }
    } else {
        let caps = doc.path(body, &["GetCapabilitiesResponse", "Capabilities"]).ok_or(OnvifError::Missing("GetServicesResponse"))?;
        media = doc.text_at(caps, &["Media", "XAddr"]);
        ptz = doc.text_at(caps, &["PTZ", "XAddr"]);
    }
    let or_device = |u: Option<&str>| u.unwrap_or(device_url).to_string();
    Ok(ServiceUrls { media: or_device(media), media2: media2.map(String::from), ptz: or_device(ptz) })
}

// ------------------------------------------------------------------------------------------
// Media (ver10) and Media2 (ver20)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaService {
    /// `trt:` (ver10): VideoEncoding is only JPEG, MPEG4 or H264.
    Media,
    /// `tr2:` (ver20): reports H265 too.
    Media2,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    /// ProfileToken for GetStreamUri and PTZ calls.
    pub token: String,
    pub name: String,
    /// As the device writes it: `H264`, `H265`, `JPEG`, `MPEG4`. RTSP SDP has the last word.
    pub encoding: String,
    /// 0 when the device did not say.
    pub width: u32,
    pub height: u32,
    /// PTZConfiguration token: PTZ works on this profile only when present.
    pub ptz_configuration: Option<String>,
}

pub fn get_profiles(service: MediaService) -> &'static str {
    match service {
        MediaService::Media => "<trt:GetProfiles/>",
        // Without a Type, Media2 profiles come back with no configurations at all.
        MediaService::Media2 => "<tr2:GetProfiles><tr2:Type>All</tr2:Type></tr2:GetProfiles>",
    }
}

/// Reads both the ver10 and the ver20 shape. Profiles without a video encoder cannot stream
/// video and are left out.
pub fn parse_profiles(bytes: &[u8]) -> Result<Vec<Profile>, OnvifError> {
    let (doc, r) = parse_response(bytes, "GetProfiles")?;
    let mut out = Vec::new();
    for (n, p) in doc.named(r, "Profiles").enumerate() {
        if n >= PROFILES_MAX {
            return Err(OnvifError::TooMany { what: "profiles", max: PROFILES_MAX });
        }
        let Some(token) = doc.attr(p, "token").filter(|t| !t.is_empty()) else { continue };
        let conf = doc.path(p, &["Configurations"]);
        let pick = |v10: &str, v20: &str| doc.path(p, &[v10]).or_else(|| conf.and_then(|c| doc.path(c, &[v20])));
        let Some(enc) = pick("VideoEncoderConfiguration", "VideoEncoder") else { continue };
        let dim = |name: &str| doc.text_at(enc, &["Resolution", name]).and_then(|t| t.parse().ok()).unwrap_or(0);
        out.push(Profile {
            token: token.into(),
            name: doc.text_at(p, &["Name"]).unwrap_or("").into(),
            encoding: doc.text_at(enc, &["Encoding"]).unwrap_or("").into(),
            width: dim("Width"),
            height: dim("Height"),
            ptz_configuration: pick("PTZConfiguration", "PTZ").map(|c| doc.attr(c, "token").unwrap_or("").to_string()),
        });
    }
    Ok(out)
}

/// RTP unicast over RTSP (interleaved TCP): the transport that survives NAT and firewalls.
pub fn get_stream_uri(service: MediaService, profile_token: &str) -> String {
    let t = esc(profile_token);
    match service {
        MediaService::Media => format!(
            "<trt:GetStreamUri><trt:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream><tt:Transport><tt:Protocol>RTSP</tt:Protocol>\
             </tt:Transport></trt:StreamSetup><trt:ProfileToken>{t}</trt:ProfileToken></trt:GetStreamUri>"
        ),
        MediaService::Media2 => {
            format!("<tr2:GetStreamUri><tr2:Protocol>RTSP</tr2:Protocol><tr2:ProfileToken>{t}</tr2:ProfileToken></tr2:GetStreamUri>")
        }
    }
}

/// The RTSP URI, unescaped (`&amp;` is common in real ones). It carries no credentials.
pub fn parse_stream_uri(bytes: &[u8]) -> Result<String, OnvifError> {
    let (doc, r) = parse_response(bytes, "GetStreamUri")?;
    let uri = doc.text_at(r, &["MediaUri", "Uri"]).or_else(|| doc.text_at(r, &["Uri"]));
    uri.map(String::from).ok_or(OnvifError::Missing("MediaUri/Uri"))
}

// ------------------------------------------------------------------------------------------
// PTZ (ver20). Speeds are in the generic spaces, [-1, 1]: pan + right, tilt + up, zoom + tele.

/// Clamps into the generic space; NaN means "do not move" rather than a fault from the device.
fn speed(v: f32) -> f32 {
    // `+ 0.0` turns -0.0 into 0.0 so the wire never says "-0".
    if v.is_nan() { 0.0 } else { v.clamp(-1.0, 1.0) + 0.0 }
}

/// `pan_tilt` or `zoom` None leaves that axis alone (cameras without zoom fault on a Zoom
/// element). `timeout_secs` is the camera-side dead-man stop; send Stop explicitly anyway.
pub fn continuous_move(profile_token: &str, pan_tilt: Option<(f32, f32)>, zoom: Option<f32>, timeout_secs: Option<u32>) -> String {
    let mut s = format!("<tptz:ContinuousMove><tptz:ProfileToken>{}</tptz:ProfileToken><tptz:Velocity>", esc(profile_token));
    if let Some((pan, tilt)) = pan_tilt {
        s += &format!(r#"<tt:PanTilt x="{}" y="{}"/>"#, speed(pan), speed(tilt));
    }
    if let Some(z) = zoom {
        s += &format!(r#"<tt:Zoom x="{}"/>"#, speed(z));
    }
    s += "</tptz:Velocity>";
    if let Some(t) = timeout_secs {
        s += &format!("<tptz:Timeout>PT{}S</tptz:Timeout>", t.min(PTZ_TIMEOUT_SECONDS_MAX));
    }
    s + "</tptz:ContinuousMove>"
}

/// Stops both axes explicitly rather than trusting the "omitted means stop" default.
pub fn stop(profile_token: &str) -> String {
    format!(
        "<tptz:Stop><tptz:ProfileToken>{}</tptz:ProfileToken><tptz:PanTilt>true</tptz:PanTilt><tptz:Zoom>true</tptz:Zoom></tptz:Stop>",
        esc(profile_token)
    )
}

pub fn get_presets(profile_token: &str) -> String {
    format!("<tptz:GetPresets><tptz:ProfileToken>{}</tptz:ProfileToken></tptz:GetPresets>", esc(profile_token))
}

pub fn goto_preset(profile_token: &str, preset_token: &str) -> String {
    let (p, t) = (esc(profile_token), esc(preset_token));
    format!("<tptz:GotoPreset><tptz:ProfileToken>{p}</tptz:ProfileToken><tptz:PresetToken>{t}</tptz:PresetToken></tptz:GotoPreset>")
}

/// With `preset_token` the existing preset is overwritten (and renamed); without, a new one is made.
pub fn set_preset(profile_token: &str, name: &str, preset_token: Option<&str>) -> String {
    let token = preset_token.map_or(String::new(), |t| format!("<tptz:PresetToken>{}</tptz:PresetToken>", esc(t)));
    let (p, n) = (esc(profile_token), esc(name));
    format!("<tptz:SetPreset><tptz:ProfileToken>{p}</tptz:ProfileToken><tptz:PresetName>{n}</tptz:PresetName>{token}</tptz:SetPreset>")
}

pub fn remove_preset(profile_token: &str, preset_token: &str) -> String {
    let (p, t) = (esc(profile_token), esc(preset_token));
    format!("<tptz:RemovePreset><tptz:ProfileToken>{p}</tptz:ProfileToken><tptz:PresetToken>{t}</tptz:PresetToken></tptz:RemovePreset>")
}

pub fn goto_home_position(profile_token: &str) -> String {
    format!("<tptz:GotoHomePosition><tptz:ProfileToken>{}</tptz:ProfileToken></tptz:GotoHomePosition>", esc(profile_token))
}

/// (token, name) pairs. Tokens are strings even when they look numeric.
pub fn parse_presets(bytes: &[u8]) -> Result<Vec<(String, String)>, OnvifError> {
    let (doc, r) = parse_response(bytes, "GetPresets")?;
    let mut out = Vec::new();
    for (n, p) in doc.named(r, "Preset").enumerate() {
        if n >= PRESETS_MAX {
            return Err(OnvifError::TooMany { what: "presets", max: PRESETS_MAX });
        }
        if let Some(token) = doc.attr(p, "token").filter(|t| !t.is_empty()) {
            out.push((token.to_string(), doc.text_at(p, &["Name"]).unwrap_or("").to_string()));
        }
    }
    Ok(out)
}

/// The token of the preset SetPreset made or overwrote.
pub fn parse_set_preset(bytes: &[u8]) -> Result<String, OnvifError> {
    let (doc, r) = parse_response(bytes, "SetPreset")?;
    doc.text_at(r, &["PresetToken"]).map(String::from).ok_or(OnvifError::Missing("PresetToken"))
}

/// Success of an operation whose answer is an empty `<operation>Response`, e.g. `"Stop"`,
/// `"ContinuousMove"`, `"GotoPreset"`, `"RemovePreset"`, `"GotoHomePosition"`.
pub fn parse_ack(bytes: &[u8], operation: &str) -> Result<(), OnvifError> {
    parse_response(bytes, operation).map(|_| ())
}

// ------------------------------------------------------------------------------------------
// HTTP digest (RFC 7616; RFC 2617/2069 forms) for devices that answer 401

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    Md5,
    Sha256,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestChallenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: DigestAlgorithm,
    /// qop offered `auth`; false means the RFC 2069 form (no qop, nc, cnonce).
    pub qop_auth: bool,
    /// The nonce expired but the credentials were right: answer the new challenge once.
    pub stale: bool,
}

type Challenge<'a> = (&'a str, Vec<(String, String)>);

/// Every challenge in one WWW-Authenticate value (RFC 7235 allows several, of any scheme), as
/// (scheme, parameters with lower-case names and unquoted values). None when over the limits:
/// a value cut short could lose its `algorithm` and be misread as MD5.
fn challenges(value: &str) -> Option<Vec<Challenge<'_>>> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut rest = value;
    // Every round consumes at least one byte, and values are at most CHALLENGE_BYTES_MAX long.
    for _ in 0..CHALLENGE_BYTES_MAX {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
        if rest.is_empty() {
            break;
        }
        let (name, after) = rest.split_at(rest.find(|c: char| c == '=' || c == ',' || c.is_ascii_whitespace()).unwrap_or(rest.len()));
        let Some(v) = after.trim_start().strip_prefix('=') else {
            // A token not followed by '=' is the next challenge's scheme.
            if out.len() >= CHALLENGES_MAX {
                return None;
            }
            out.push((name, Vec::new()));
            rest = after;
            continue;
        };
        let v = v.trim_start();
        let value = if let Some(quoted) = v.strip_prefix('"') {
            let (mut value, mut chars) = (String::new(), quoted.char_indices());
            rest = "";
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next().map(|(_, e)| e)),
                    '"' => {
                        rest = &quoted[i + 1..];
                        break;
                    }
                    c => value.push(c),
                }
            }
            value
        } else {
            let end = v.find(',').unwrap_or(v.len());
            rest = &v[end..];
            v[..end].trim().to_string()
        };
        if let Some((_, params)) = out.last_mut() {
            if params.len() >= CHALLENGE_PARAMS_MAX {
                return None;
            }
            params.push((name.to_ascii_lowercase(), value));
        }
    }
    Some(out)
}

impl DigestChallenge {
    /// Picks what to answer from all WWW-Authenticate values of a 401: SHA-256 over MD5, the
    /// device's order otherwise. `-sess` variants, auth-int-only qop, other schemes and values
    /// over the CHALLENGE_* limits are skipped, so one odd header cannot hide a good one.
    pub fn choose<'h>(www_authenticate: impl IntoIterator<Item = &'h str>) -> Result<Self, OnvifError> {
        let mut best: Option<DigestChallenge> = None;
        for value in www_authenticate.into_iter().take(CHALLENGES_MAX) {
            let Some(list) = (value.len() <= CHALLENGE_BYTES_MAX).then(|| challenges(value)).flatten() else { continue };
            for (scheme, params) in list {
                let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
                let algorithm = match get("algorithm") {
                    None => DigestAlgorithm::Md5,
                    Some(a) if a.eq_ignore_ascii_case("MD5") => DigestAlgorithm::Md5,
                    Some(a) if a.eq_ignore_ascii_case("SHA-256") => DigestAlgorithm::Sha256,
                    Some(_) => continue,
                };
                let qop_auth = get("qop").map(|q| q.split(',').any(|o| o.trim().eq_ignore_ascii_case("auth")));
                let (Some(realm), Some(nonce)) = (get("realm"), get("nonce").filter(|n| !n.is_empty())) else { continue };
                if !scheme.eq_ignore_ascii_case("Digest") || qop_auth == Some(false) {
                    continue;
                }
                let c = DigestChallenge {
                    realm: realm.into(),
                    nonce: nonce.into(),
                    opaque: get("opaque").map(String::from),
                    algorithm,
                    qop_auth: qop_auth.is_some(),
                    stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
                };
                if best.as_ref().is_none_or(|b| b.algorithm == DigestAlgorithm::Md5 && algorithm == DigestAlgorithm::Sha256) {
                    best = Some(c);
                }
            }
        }
        best.ok_or(OnvifError::NoUsableChallenge)
    }

    fn hash(&self, s: &str) -> String {
        let bytes: Vec<u8> = match self.algorithm {
            DigestAlgorithm::Md5 => md5::Md5::digest(s.as_bytes()).to_vec(),
            DigestAlgorithm::Sha256 => sha2::Sha256::digest(s.as_bytes()).to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The Authorization value. `uri` must be exactly the request target (path and query) of
    /// this request: devices bind it to the nonce. `cnonce` is fresh random hex from the driver,
    /// `nc` counts uses of this nonce from 1.
    pub fn authorization(&self, method: &str, uri: &str, user: &str, password: &str, cnonce: &str, nc: u32) -> String {
        let q = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
        let ha1 = self.hash(&format!("{user}:{}:{password}", self.realm));
        let ha2 = self.hash(&format!("{method}:{uri}"));
        let algorithm = match self.algorithm {
            DigestAlgorithm::Md5 => "MD5",
            DigestAlgorithm::Sha256 => "SHA-256",
        };
        let mut v = format!(
            r#"Digest username="{}", realm="{}", nonce="{}", uri="{}", algorithm={algorithm}"#,
            q(user),
            q(&self.realm),
            q(&self.nonce),
            q(uri)
        );
        let response = if self.qop_auth {
            v += &format!(r#", qop=auth, nc={nc:08x}, cnonce="{}""#, q(cnonce));
            self.hash(&format!("{ha1}:{}:{nc:08x}:{cnonce}:auth:{ha2}", self.nonce))
        } else {
            self.hash(&format!("{ha1}:{}:{ha2}", self.nonce))
        };
        v += &format!(r#", response="{response}""#);
        if let Some(o) = &self.opaque {
            v += &format!(r#", opaque="{}""#, q(o));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The simulator's envelope (tests/onvif/sim.py ENV_OPEN); the bodies below are its exact
    /// output, captured with tests/onvif/check.py's client against `--digest-alg SHA-256,MD5
    /// --extra-xaddr http://[fe80::4619:b6ff:fe3e:baa1]/onvif/device_service`.
    fn sim(body: &str) -> Vec<u8> {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<env:Envelope xmlns:env=\"http://www.w3.org/2003/05/soap-envelope\" \
             xmlns:tt=\"http://www.onvif.org/ver10/schema\" xmlns:tds=\"http://www.onvif.org/ver10/device/wsdl\" \
             xmlns:trt=\"http://www.onvif.org/ver10/media/wsdl\" xmlns:tr2=\"http://www.onvif.org/ver20/media/wsdl\" \
             xmlns:tptz=\"http://www.onvif.org/ver20/ptz/wsdl\" xmlns:ter=\"http://www.onvif.org/ver10/error\"><env:Body>{body}</env:Body></env:Envelope>"
        )
        .into_bytes()
    }

    const PROBE_ID: &str = "urn:uuid:0c8e5b5e-3d0a-4f7e-9a55-2b1f7c9d4e21";
    const BASE: &str = "http://127.0.0.1:43255/onvif/";
    const DEVICE_URL: &str = "http://127.0.0.1:43255/onvif/device_service";
    const PROBE_MATCH: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
        \n<env:Envelope xmlns:env=\"http://www.w3.org/2003/05/soap-envelope\" xmlns:wsa=\"http://schemas.xmlsoap.org/ws/2004/08/addressing\" xmlns:d\
        =\"http://schemas.xmlsoap.org/ws/2005/04/discovery\" xmlns:dn=\"http://www.onvif.org/ver10/network/wsdl\" xmlns:tds=\"http://www.onvif.org/v\
        er10/device/wsdl\"><env:Header><wsa:MessageID>urn:uuid:2c94e057-02f0-496e-a55c-3bba11ff3a17</wsa:MessageID><wsa:RelatesTo>\
        urn:uuid:0c8e5b5e-3d0a-4f7e-9a55-2b1f7c9d4e21</wsa:RelatesTo><wsa:To>\
        http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsa:To><wsa:Action>\
        http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</wsa:Action><d:AppSequence InstanceId=\"1796586135\" MessageNumber=\"1\"/>\
        </env:Header><env:Body><d:ProbeMatches><d:ProbeMatch><wsa:EndpointReference><wsa:Address>\
        urn:uuid:7cc3e24d-b4a1-5002-91b7-16978cefcbd4</wsa:Address></wsa:EndpointReference><d:Types>dn:NetworkVideoTransmitter tds:Device</d:Types>\
        <d:Scopes>\
        onvif://www.onvif.org/type/video_encoder onvif://www.onvif.org/type/ptz onvif://www.onvif.org/Profile/Streaming onvif://www.onvif.org/name/F\
        ront%20Door onvif://www.onvif.org/hardware/SimCam-PTZ onvif://www.onvif.org/location/country/china onvif://www.onvif.org/location/city/test-\
        lab</d:Scopes><d:XAddrs>http://[fe80::4619:b6ff:fe3e:baa1]/onvif/device_service http://127.0.0.1:43255/onvif/device_service</d:XAddrs>\
        <d:MetadataVersion>1</d:MetadataVersion></d:ProbeMatch></d:ProbeMatches></env:Body></env:Envelope>";
    const SDT: &str = "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime><tt:DateTimeType>NTP</tt:DateTimeType><tt:DaylightSavings>\
        false</tt:DaylightSavings><tt:TimeZone><tt:TZ>CST-8</tt:TZ></tt:TimeZone><tt:UTCDateTime><tt:Time><tt:Hour>19</tt:Hour><tt:Minute>\
        42</tt:Minute><tt:Second>15</tt:Second></tt:Time><tt:Date><tt:Year>2026</tt:Year><tt:Month>12</tt:Month><tt:Day>6</tt:Day></tt:Date>\
        </tt:UTCDateTime><tt:LocalDateTime><tt:Time><tt:Hour>3</tt:Hour><tt:Minute>42</tt:Minute><tt:Second>15</tt:Second></tt:Time><tt:Date>\
        <tt:Year>2026</tt:Year><tt:Month>12</tt:Month><tt:Day>7</tt:Day></tt:Date></tt:LocalDateTime></tds:SystemDateAndTime>\
        </tds:GetSystemDateAndTimeResponse>";
    const DEVINFO: &str = "<tds:GetDeviceInformationResponse><tds:Manufacturer>GMV-Sim</tds:Manufacturer><tds:Model>SimCam-PTZ</tds:Model><tds:FirmwareVersion>\
        V1.0.0 build 240101</tds:FirmwareVersion><tds:SerialNumber>SIM5CEE4CC84224</tds:SerialNumber><tds:HardwareId>SIM-HW-0001</tds:HardwareId>\
        </tds:GetDeviceInformationResponse>";
    const CAPS: &str = "<tds:GetCapabilitiesResponse><tds:Capabilities><tt:Device><tt:XAddr>http://127.0.0.1:43255/onvif/device_service</tt:XAddr><tt:Network>\
        <tt:IPFilter>false</tt:IPFilter><tt:ZeroConfiguration>false</tt:ZeroConfiguration><tt:IPVersion6>false</tt:IPVersion6><tt:DynDNS>\
        false</tt:DynDNS></tt:Network><tt:System><tt:DiscoveryResolve>false</tt:DiscoveryResolve><tt:DiscoveryBye>false</tt:DiscoveryBye>\
        <tt:RemoteDiscovery>false</tt:RemoteDiscovery><tt:SystemBackup>false</tt:SystemBackup><tt:SystemLogging>false</tt:SystemLogging>\
        <tt:FirmwareUpgrade>false</tt:FirmwareUpgrade><tt:SupportedVersions><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tt:SupportedVersions>\
        </tt:System></tt:Device><tt:Media><tt:XAddr>http://127.0.0.1:43255/onvif/media_service</tt:XAddr><tt:StreamingCapabilities><tt:RTPMulticast>\
        false</tt:RTPMulticast><tt:RTP_TCP>true</tt:RTP_TCP><tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP></tt:StreamingCapabilities></tt:Media><tt:PTZ>\
        <tt:XAddr>http://127.0.0.1:43255/onvif/ptz_service</tt:XAddr></tt:PTZ></tds:Capabilities></tds:GetCapabilitiesResponse>";
    const SERVICES: &str = "<tds:GetServicesResponse><tds:Service><tds:Namespace>http://www.onvif.org/ver10/device/wsdl</tds:Namespace><tds:XAddr>\
        http://127.0.0.1:43255/onvif/device_service</tds:XAddr><tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version>\
        </tds:Service><tds:Service><tds:Namespace>http://www.onvif.org/ver10/media/wsdl</tds:Namespace><tds:XAddr>\
        http://127.0.0.1:43255/onvif/media_service</tds:XAddr><tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version></tds:Service>\
        <tds:Service><tds:Namespace>http://www.onvif.org/ver20/media/wsdl</tds:Namespace><tds:XAddr>\
        http://127.0.0.1:43255/onvif/media2_service</tds:XAddr><tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version>\
        </tds:Service><tds:Service><tds:Namespace>http://www.onvif.org/ver20/ptz/wsdl</tds:Namespace><tds:XAddr>\
        http://127.0.0.1:43255/onvif/ptz_service</tds:XAddr><tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version></tds:Service>\
        </tds:GetServicesResponse>";
    const PROFILES: &str = "<trt:GetProfilesResponse><trt:Profiles token=\"main\" fixed=\"true\"><tt:Name>MainStream</tt:Name>\
        <tt:VideoSourceConfiguration token=\"VideoSourceConfig_1\"><tt:Name>VideoSourceConfig</tt:Name><tt:UseCount>2</tt:UseCount><tt:SourceToken>\
        VideoSource_1</tt:SourceToken><tt:Bounds x=\"0\" y=\"0\" width=\"1920\" height=\"1080\"/></tt:VideoSourceConfiguration>\
        <tt:VideoEncoderConfiguration token=\"VideoEncoder_main\"><tt:Name>VideoEncoder_main</tt:Name><tt:UseCount>1</tt:UseCount><tt:Encoding>\
        H264</tt:Encoding><tt:Resolution><tt:Width>1920</tt:Width><tt:Height>1080</tt:Height></tt:Resolution><tt:Quality>5</tt:Quality>\
        <tt:RateControl><tt:FrameRateLimit>25</tt:FrameRateLimit><tt:EncodingInterval>1</tt:EncodingInterval><tt:BitrateLimit>4096</tt:BitrateLimit>\
        </tt:RateControl><tt:H264><tt:GovLength>50</tt:GovLength><tt:H264Profile>Main</tt:H264Profile></tt:H264><tt:Multicast><tt:Address><tt:Type>\
        IPv4</tt:Type><tt:IPv4Address>0.0.0.0</tt:IPv4Address></tt:Address><tt:Port>0</tt:Port><tt:TTL>0</tt:TTL><tt:AutoStart>false</tt:AutoStart>\
        </tt:Multicast><tt:SessionTimeout>PT60S</tt:SessionTimeout></tt:VideoEncoderConfiguration><tt:PTZConfiguration token=\"PTZConfig_1\">\
        <tt:Name>PTZ</tt:Name><tt:UseCount>2</tt:UseCount><tt:NodeToken>PTZNode_1</tt:NodeToken><tt:DefaultContinuousPanTiltVelocitySpace>\
        http://www.onvif.org/ver10/tptz/PanTiltSpaces/VelocityGenericSpace</tt:DefaultContinuousPanTiltVelocitySpace>\
        <tt:DefaultContinuousZoomVelocitySpace>\
        http://www.onvif.org/ver10/tptz/ZoomSpaces/VelocityGenericSpace</tt:DefaultContinuousZoomVelocitySpace><tt:DefaultPTZSpeed>\
        <tt:PanTilt x=\"0.5\" y=\"0.5\" space=\"http://www.onvif.org/ver10/tptz/PanTiltSpaces/GenericSpeedSpace\"/>\
        <tt:Zoom x=\"0.5\" space=\"http://www.onvif.org/ver10/tptz/ZoomSpaces/ZoomGenericSpeedSpace\"/></tt:DefaultPTZSpeed><tt:DefaultPTZTimeout>\
        PT5S</tt:DefaultPTZTimeout></tt:PTZConfiguration></trt:Profiles><trt:Profiles token=\"sub\" fixed=\"true\"><tt:Name>SubStream</tt:Name>\
        <tt:VideoSourceConfiguration token=\"VideoSourceConfig_1\"><tt:Name>VideoSourceConfig</tt:Name><tt:UseCount>2</tt:UseCount><tt:SourceToken>\
        VideoSource_1</tt:SourceToken><tt:Bounds x=\"0\" y=\"0\" width=\"1920\" height=\"1080\"/></tt:VideoSourceConfiguration>\
        <tt:VideoEncoderConfiguration token=\"VideoEncoder_sub\"><tt:Name>VideoEncoder_sub</tt:Name><tt:UseCount>1</tt:UseCount><tt:Encoding>\
        H264</tt:Encoding><tt:Resolution><tt:Width>640</tt:Width><tt:Height>360</tt:Height></tt:Resolution><tt:Quality>5</tt:Quality>\
        <tt:RateControl><tt:FrameRateLimit>25</tt:FrameRateLimit><tt:EncodingInterval>1</tt:EncodingInterval><tt:BitrateLimit>512</tt:BitrateLimit>\
        </tt:RateControl><tt:H264><tt:GovLength>50</tt:GovLength><tt:H264Profile>Main</tt:H264Profile></tt:H264><tt:Multicast><tt:Address><tt:Type>\
        IPv4</tt:Type><tt:IPv4Address>0.0.0.0</tt:IPv4Address></tt:Address><tt:Port>0</tt:Port><tt:TTL>0</tt:TTL><tt:AutoStart>false</tt:AutoStart>\
        </tt:Multicast><tt:SessionTimeout>PT60S</tt:SessionTimeout></tt:VideoEncoderConfiguration><tt:PTZConfiguration token=\"PTZConfig_1\">\
        <tt:Name>PTZ</tt:Name><tt:UseCount>2</tt:UseCount><tt:NodeToken>PTZNode_1</tt:NodeToken><tt:DefaultContinuousPanTiltVelocitySpace>\
        http://www.onvif.org/ver10/tptz/PanTiltSpaces/VelocityGenericSpace</tt:DefaultContinuousPanTiltVelocitySpace>\
        <tt:DefaultContinuousZoomVelocitySpace>\
        http://www.onvif.org/ver10/tptz/ZoomSpaces/VelocityGenericSpace</tt:DefaultContinuousZoomVelocitySpace><tt:DefaultPTZSpeed>\
        <tt:PanTilt x=\"0.5\" y=\"0.5\" space=\"http://www.onvif.org/ver10/tptz/PanTiltSpaces/GenericSpeedSpace\"/>\
        <tt:Zoom x=\"0.5\" space=\"http://www.onvif.org/ver10/tptz/ZoomSpaces/ZoomGenericSpeedSpace\"/></tt:DefaultPTZSpeed><tt:DefaultPTZTimeout>\
        PT5S</tt:DefaultPTZTimeout></tt:PTZConfiguration></trt:Profiles></trt:GetProfilesResponse>";
    const PROFILES2_MAIN: &str = "<tr2:GetProfilesResponse><tr2:Profiles token=\"main\" fixed=\"true\"><tr2:Name>MainStream</tr2:Name><tr2:Configurations>\
        <tr2:VideoSource token=\"VideoSourceConfig_1\"><tt:Name>VideoSourceConfig</tt:Name><tt:UseCount>2</tt:UseCount><tt:SourceToken>\
        VideoSource_1</tt:SourceToken><tt:Bounds x=\"0\" y=\"0\" width=\"1920\" height=\"1080\"/></tr2:VideoSource>\
        <tr2:VideoEncoder token=\"VideoEncoder_main\" GovLength=\"50\" Profile=\"Main\"><tt:Name>VideoEncoder_main</tt:Name><tt:UseCount>\
        1</tt:UseCount><tt:Encoding>H264</tt:Encoding><tt:Resolution><tt:Width>1920</tt:Width><tt:Height>1080</tt:Height></tt:Resolution>\
        <tt:RateControl ConstantBitRate=\"false\"><tt:FrameRateLimit>25</tt:FrameRateLimit><tt:BitrateLimit>4096</tt:BitrateLimit></tt:RateControl>\
        <tt:Quality>5</tt:Quality></tr2:VideoEncoder><tr2:PTZ token=\"PTZConfig_1\"><tt:Name>PTZ</tt:Name><tt:UseCount>2</tt:UseCount><tt:NodeToken>\
        PTZNode_1</tt:NodeToken><tt:DefaultContinuousPanTiltVelocitySpace>\
        http://www.onvif.org/ver10/tptz/PanTiltSpaces/VelocityGenericSpace</tt:DefaultContinuousPanTiltVelocitySpace>\
        <tt:DefaultContinuousZoomVelocitySpace>\
        http://www.onvif.org/ver10/tptz/ZoomSpaces/VelocityGenericSpace</tt:DefaultContinuousZoomVelocitySpace><tt:DefaultPTZSpeed>\
        <tt:PanTilt x=\"0.5\" y=\"0.5\" space=\"http://www.onvif.org/ver10/tptz/PanTiltSpaces/GenericSpeedSpace\"/>\
        <tt:Zoom x=\"0.5\" space=\"http://www.onvif.org/ver10/tptz/ZoomSpaces/ZoomGenericSpeedSpace\"/></tt:DefaultPTZSpeed><tt:DefaultPTZTimeout>\
        PT5S</tt:DefaultPTZTimeout></tr2:PTZ></tr2:Configurations></tr2:Profiles></tr2:GetProfilesResponse>";
    const STREAMURI: &str = "<trt:GetStreamUriResponse><trt:MediaUri><tt:Uri>rtsp://127.0.0.1:8554/h264?a=1&amp;b=2</tt:Uri><tt:InvalidAfterConnect>\
        false</tt:InvalidAfterConnect><tt:InvalidAfterReboot>false</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout></trt:MediaUri>\
        </trt:GetStreamUriResponse>";
    const STREAMURI2: &str = "<tr2:GetStreamUriResponse><tr2:Uri>rtsp://127.0.0.1:8554/h264?a=1&amp;b=2</tr2:Uri></tr2:GetStreamUriResponse>";
    const PRESETS_AFTER: &str = "<tptz:GetPresetsResponse><tptz:Preset token=\"1\"><tt:Name>Gate</tt:Name></tptz:Preset><tptz:Preset token=\"2\"><tt:Name>Parking</tt:Name>\
        </tptz:Preset><tptz:Preset token=\"3\"><tt:Name>Lobby &amp; Hall</tt:Name></tptz:Preset></tptz:GetPresetsResponse>";
    const SETPRESET: &str = "<tptz:SetPresetResponse><tptz:PresetToken>3</tptz:PresetToken></tptz:SetPresetResponse>";
    const FAULT_NOPROFILE: &str = "<env:Fault><env:Code><env:Value>env:Sender</env:Value><env:Subcode><env:Value>ter:InvalidArgVal</env:Value><env:Subcode><env:Value>\
        ter:NoProfile</env:Value></env:Subcode></env:Subcode></env:Code><env:Reason><env:Text xml:lang=\"en\">\
        The requested profile token does not exist</env:Text></env:Reason></env:Fault>";
    const FAULT_BADPW: &str = "<env:Fault><env:Code><env:Value>env:Sender</env:Value><env:Subcode><env:Value>ter:NotAuthorized</env:Value></env:Subcode></env:Code>\
        <env:Reason><env:Text xml:lang=\"en\">Sender not Authorized</env:Text></env:Reason></env:Fault>";
    const FAULT_UNKNOWN: &str = "<env:Fault><env:Code><env:Value>env:Receiver</env:Value><env:Subcode><env:Value>ter:ActionNotSupported</env:Value></env:Subcode></env:Code>\
        <env:Reason><env:Text xml:lang=\"en\">Optional Action Not Implemented</env:Text></env:Reason></env:Fault>";

    /// Calls every parser; the property under test is "typed result, no panic".
    fn all_parsers(bytes: &[u8]) {
        let _ = parse_probe_match(bytes, PROBE_ID);
        let _ = parse_system_date_and_time(bytes);
        let _ = parse_device_information(bytes);
        let _ = parse_service_urls(bytes, DEVICE_URL);
        let _ = parse_profiles(bytes);
        let _ = parse_stream_uri(bytes);
        let _ = parse_presets(bytes);
        let _ = parse_set_preset(bytes);
        let _ = parse_ack(bytes, "Stop");
        let _ = DigestChallenge::choose([String::from_utf8_lossy(bytes).as_ref()]);
    }

    #[test]
    fn probe_is_the_notes_wire_form() {
        let p = probe(PROBE_ID);
        assert!(p.contains(&format!("<a:MessageID>{PROBE_ID}</a:MessageID>")));
        assert!(p.contains("<d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types></d:Probe>"));
        assert!(p.contains(r#"xmlns:dn="http://www.onvif.org/ver10/network/wsdl""#));
        let doc = Doc::parse(&p).unwrap();
        assert_eq!(doc.text_at(0, &["Header", "Action"]), Some("http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe"));
        // Our own probe looped back by multicast is not an answer.
        assert_eq!(parse_probe_match(p.as_bytes(), PROBE_ID), Err(OnvifError::NotRelated));
        assert!(probe("a<b").contains("<a:MessageID>a&lt;b</a:MessageID>"));
    }

    #[test]
    fn probe_match_from_the_simulator() {
        let d = parse_probe_match(PROBE_MATCH.as_bytes(), PROBE_ID).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].endpoint, "urn:uuid:7cc3e24d-b4a1-5002-91b7-16978cefcbd4");
        assert_eq!(d[0].xaddrs, ["http://[fe80::4619:b6ff:fe3e:baa1]/onvif/device_service", DEVICE_URL]);
        assert_eq!((d[0].name.as_deref(), d[0].hardware.as_deref()), (Some("Front Door"), Some("SimCam-PTZ")));
        assert_eq!(d[0].scopes.len(), 7);
        assert_eq!(d[0].device_url(), Some(DEVICE_URL));
        assert_eq!(parse_probe_match(PROBE_MATCH.as_bytes(), "urn:uuid:someone-else"), Err(OnvifError::NotRelated));
        // Hikvision's `wsadis:` prefix, a `uuid:` address, a match without address (skipped).
        let more = "</d:ProbeMatch><d:ProbeMatch><d:XAddrs>http://x/</d:XAddrs></d:ProbeMatch><d:ProbeMatch><wsa:EndpointReference>\
                    <wsa:Address>uuid:2</wsa:Address></wsa:EndpointReference><d:Scopes>onvif://www.onvif.org/name/</d:Scopes></d:ProbeMatch>";
        let hik = PROBE_MATCH.replace("</d:ProbeMatch>", more).replace("wsa:", "wsadis:").replace("xmlns:wsa=", "xmlns:wsadis=");
        let d = parse_probe_match(hik.as_bytes(), PROBE_ID).unwrap();
        assert_eq!((d.len(), d[1].endpoint.as_str(), d[1].name.as_deref(), d[1].device_url()), (2, "uuid:2", None, None));
        // A Hello (no RelatesTo) and a ProbeMatches-less answer.
        let hello = PROBE_MATCH.replace("wsa:RelatesTo", "wsa:Other");
        assert_eq!(parse_probe_match(hello.as_bytes(), PROBE_ID), Err(OnvifError::NotRelated));
        let bye = PROBE_MATCH.replace("d:ProbeMatches", "d:Bye");
        assert_eq!(parse_probe_match(bye.as_bytes(), PROBE_ID), Err(OnvifError::Missing("ProbeMatches")));
    }

    #[test]
    fn xaddr_choice_skips_link_local_and_https() {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mixed = v(&["http://[fe80::1%25eth0]/d", "https://10.0.0.1/d", "http://[2001:db8::1]:80/d", "http://u:p@10.0.0.2:8000/d"]);
        assert_eq!(usable_xaddr(&mixed), Some("http://u:p@10.0.0.2:8000/d"));
        assert_eq!(usable_xaddr(&v(&["http://[fe80::1]/d", "http://[2001:db8::1]/d"])), Some("http://[2001:db8::1]/d"));
        assert_eq!(usable_xaddr(&v(&["http://[fe80::1]/d", "ftp://a/", "http:///d", "http://[zz]/"])), None);
    }

    #[test]
    fn wsse_token_matches_the_programmers_guide_vector() {
        let nonce: [u8; 16] = base64::engine::general_purpose::STANDARD.decode("LKqI6G/AikKCQrN0zqZFlg==").unwrap().try_into().unwrap();
        let t = WsseToken::new("us<er", "userpassword", nonce, "2010-09-16T07:50:45Z");
        assert_eq!((t.password_digest.as_str(), t.nonce_base64.as_str()), ("tuOSpGlFlIXsozq4HFNeeGeFLEI=", "LKqI6G/AikKCQrN0zqZFlg=="));
        let e = envelope(&stop("main"), Some(&t));
        assert!(e.contains("#PasswordDigest\">tuOSpGlFlIXsozq4HFNeeGeFLEI=</wsse:Password>"));
        assert!(e.contains("<wsse:Username>us&lt;er</wsse:Username>") && e.contains("<wsu:Created>2010-09-16T07:50:45Z</wsu:Created>"));
        // What the device reads back: the token in the header, the operation first in the body.
        let doc = Doc::parse(&e).unwrap();
        assert_eq!(doc.text_at(0, &["Header", "Security", "UsernameToken", "Username"]), Some("us<er"));
        assert_eq!(doc.text_at(0, &["Body", "Stop", "ProfileToken"]), Some("main"));
        assert!(!envelope(GET_DEVICE_INFORMATION, None).contains("Header"));
    }

    #[test]
    fn device_time() {
        assert_eq!(format_created(1_284_623_445), "2010-09-16T07:50:45Z");
        assert_eq!(format_created(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!((format_created(-5), format_created(i64::MAX)), ("1970-01-01T00:00:00Z".into(), "9999-12-31T23:59:59Z".into()));
        assert_eq!(parse_system_date_and_time(&sim(SDT)), Ok(1_796_586_135));
        let local_only = SDT.replace("tt:UTCDateTime>", "tt:Gone>");
        assert_eq!(parse_system_date_and_time(&sim(&local_only)), Err(OnvifError::Missing("UTCDateTime")));
        let feb30 = SDT.replace("<tt:Month>12</tt:Month><tt:Day>6<", "<tt:Month>2</tt:Month><tt:Day>30<");
        let min = SDT.replace("<tt:Month>12<", "<tt:Month>-9223372036854775808<");
        for bad in [feb30, min] {
            assert_eq!(parse_system_date_and_time(&sim(&bad)), Err(OnvifError::BadValue("UTCDateTime")));
        }
    }

    #[test]
    fn every_request_is_one_well_formed_operation() {
        let t = "a<&>\"'b";
        let requests = [
            (GET_SYSTEM_DATE_AND_TIME.to_string(), "GetSystemDateAndTime"),
            (GET_DEVICE_INFORMATION.into(), "GetDeviceInformation"),
            (GET_SERVICES.into(), "GetServices"),
            (GET_CAPABILITIES.into(), "GetCapabilities"),
            (get_profiles(MediaService::Media).into(), "GetProfiles"),
            (get_stream_uri(MediaService::Media2, t), "GetStreamUri"),
            (continuous_move(t, Some((1.0, 1.0)), Some(1.0), Some(1)), "ContinuousMove"),
            (stop(t), "Stop"),
            (get_presets(t), "GetPresets"),
            (goto_preset(t, t), "GotoPreset"),
            (set_preset(t, t, None), "SetPreset"),
            (remove_preset(t, t), "RemovePreset"),
            (goto_home_position(t), "GotoHomePosition"),
        ];
        for (body, op) in requests {
            let e = envelope(&body, None);
            let doc = Doc::parse(&e).unwrap();
            let ops: Vec<_> = doc.path(0, &["Body"]).map(|b| doc.children(b).map(|c| doc.nodes[c].local).collect()).unwrap();
            assert_eq!(ops, [op]);
            let token = doc.path(0, &["Body", op, "ProfileToken"]).or(doc.path(0, &["Body", op, "PresetName"]));
            assert!(token.is_none_or(|n| doc.text(n) == t), "{op}");
        }
    }

    #[test]
    fn device_information_and_service_urls() {
        let info = parse_device_information(&sim(DEVINFO)).unwrap();
        assert_eq!((info.manufacturer.as_str(), info.model.as_str()), ("GMV-Sim", "SimCam-PTZ"));
        assert_eq!(
            (info.firmware_version.as_str(), info.serial_number.as_str(), info.hardware_id.as_str()),
            ("V1.0.0 build 240101", "SIM5CEE4CC84224", "SIM-HW-0001")
        );
        let url = |p: &str| format!("{BASE}{p}");
        let s = parse_service_urls(&sim(SERVICES), DEVICE_URL).unwrap();
        assert_eq!(s, ServiceUrls { media: url("media_service"), media2: Some(url("media2_service")), ptz: url("ptz_service") });
        let c = parse_service_urls(&sim(CAPS), DEVICE_URL).unwrap();
        assert_eq!(c, ServiceUrls { media: url("media_service"), media2: None, ptz: url("ptz_service") });
        let no_ptz = CAPS.replace(&format!("<tt:PTZ><tt:XAddr>{}</tt:XAddr></tt:PTZ>", url("ptz_service")), "");
        assert_eq!(parse_service_urls(&sim(&no_ptz), DEVICE_URL).unwrap().ptz, DEVICE_URL);
        assert_eq!(parse_service_urls(&sim(DEVINFO), DEVICE_URL), Err(OnvifError::Missing("GetServicesResponse")));
    }

    #[test]
    fn profiles_from_media_and_media2() {
        let p = parse_profiles(&sim(PROFILES)).unwrap();
        let main = Profile {
            token: "main".into(),
            name: "MainStream".into(),
            encoding: "H264".into(),
            width: 1920,
            height: 1080,
            ptz_configuration: Some("PTZConfig_1".into()),
        };
        let sub = Profile { token: "sub".into(), name: "SubStream".into(), width: 640, height: 360, ..main.clone() };
        assert_eq!(p, [main.clone(), sub]);
        assert_eq!(parse_profiles(&sim(PROFILES2_MAIN)).unwrap(), p[..1]);
        // H.265 only shows through Media2; no PTZ configuration means no PTZ on that profile.
        let h265 = PROFILES2_MAIN.replace(">H264<", ">H265<").replace("tr2:PTZ", "tr2:Metadata");
        assert_eq!(parse_profiles(&sim(&h265)).unwrap(), [Profile { encoding: "H265".into(), ptz_configuration: None, ..main }]);
        assert_eq!(parse_profiles(&sim(&PROFILES.replace("VideoEncoderConfiguration", "AudioEncoderConfiguration"))), Ok(vec![]));
        assert_eq!(get_profiles(MediaService::Media2), "<tr2:GetProfiles><tr2:Type>All</tr2:Type></tr2:GetProfiles>");
    }

    #[test]
    fn stream_uri_is_unescaped() {
        for fixture in [STREAMURI, STREAMURI2] {
            assert_eq!(parse_stream_uri(&sim(fixture)).as_deref(), Ok("rtsp://127.0.0.1:8554/h264?a=1&b=2"));
        }
        let req = get_stream_uri(MediaService::Media, "a&b");
        assert!(req.starts_with("<trt:GetStreamUri><trt:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream>"));
        assert!(req.ends_with("</trt:StreamSetup><trt:ProfileToken>a&amp;b</trt:ProfileToken></trt:GetStreamUri>"));
        assert!(get_stream_uri(MediaService::Media2, "m").contains("<tr2:Protocol>RTSP</tr2:Protocol><tr2:ProfileToken>m<"));
        assert_eq!(parse_stream_uri(&sim("<trt:GetStreamUriResponse/>")), Err(OnvifError::Missing("MediaUri/Uri")));
    }

    #[test]
    fn ptz_requests_and_answers() {
        let mv = continuous_move("main", Some((0.5, -0.0)), Some(f32::NAN), Some(99_999));
        assert_eq!(
            mv,
            "<tptz:ContinuousMove><tptz:ProfileToken>main</tptz:ProfileToken><tptz:Velocity><tt:PanTilt x=\"0.5\" y=\"0\"/>\
             <tt:Zoom x=\"0\"/></tptz:Velocity><tptz:Timeout>PT3600S</tptz:Timeout></tptz:ContinuousMove>"
        );
        assert!(continuous_move("m", None, Some(-2.0), None).ends_with("<tptz:Velocity><tt:Zoom x=\"-1\"/></tptz:Velocity></tptz:ContinuousMove>"));
        assert_eq!(
            set_preset("main", "Lobby & Hall", Some("3")),
            "<tptz:SetPreset><tptz:ProfileToken>main</tptz:ProfileToken><tptz:PresetName>Lobby &amp; Hall</tptz:PresetName>\
             <tptz:PresetToken>3</tptz:PresetToken></tptz:SetPreset>"
        );
        assert!(stop("main").contains("<tptz:PanTilt>true</tptz:PanTilt><tptz:Zoom>true</tptz:Zoom>"));
        let presets = parse_presets(&sim(PRESETS_AFTER)).unwrap();
        let want = [("1", "Gate"), ("2", "Parking"), ("3", "Lobby & Hall")].map(|(t, n)| (t.to_string(), n.to_string()));
        assert_eq!(presets, want);
        assert_eq!(parse_set_preset(&sim(SETPRESET)).as_deref(), Ok("3"));
        for op in ["ContinuousMove", "Stop", "GotoPreset", "RemovePreset", "GotoHomePosition"] {
            assert_eq!(parse_ack(&sim(&format!("<tptz:{op}Response/>")), op), Ok(()));
        }
        let wrong = parse_ack(&sim("<tptz:StopResponse/>"), "GotoPreset");
        assert_eq!(wrong, Err(OnvifError::Unexpected { expected: "GotoPresetResponse".into(), found: "StopResponse".into() }));
        assert!(matches!(parse_ack(&sim(""), "Stop"), Err(OnvifError::Unexpected { found, .. }) if found.is_empty()));
    }

    #[test]
    fn faults_are_typed() {
        let e = parse_presets(&sim(FAULT_BADPW)).unwrap_err();
        let want = OnvifError::Fault { code: "env:Sender".into(), subcode: "ter:NotAuthorized".into(), reason: "Sender not Authorized".into() };
        assert_eq!(e, want);
        assert!(e.is_not_authorized() && e.to_string().contains("ter:NotAuthorized"));
        let e = parse_ack(&sim(FAULT_NOPROFILE), "GotoPreset").unwrap_err();
        assert!(matches!(&e, OnvifError::Fault { subcode, .. } if subcode == "ter:InvalidArgVal/ter:NoProfile"));
        assert!(e.fault_is("NoProfile") && !e.is_not_authorized());
        let e = parse_device_information(&sim(FAULT_UNKNOWN)).unwrap_err();
        assert!(e.fault_is("Receiver") && e.fault_is("ActionNotSupported"));
        // SOAP 1.1 faults from old firmware, undeclared prefixes.
        let soap11 = "<SOAP-ENV:Envelope><SOAP-ENV:Body><SOAP-ENV:Fault><faultcode>SOAP-ENV:Client</faultcode>\
                      <faultstring>Invalid username</faultstring></SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>";
        let want = OnvifError::Fault { code: "SOAP-ENV:Client".into(), subcode: String::new(), reason: "Invalid username".into() };
        assert_eq!(parse_profiles(soap11.as_bytes()), Err(want));
    }

    // Expected values computed with Python hashlib (as check.py's digest_authorization does).
    const CHALLENGE_SHA256: &str = "Digest realm=\"GMV-Sim ONVIF\", qop=\"auth\", nonce=\"6b15ba01c07cdc7a41efb0a7879e708840e3d476\", \
                                    opaque=\"a6987dd5b0cb8ff2\", algorithm=SHA-256";

    #[test]
    fn digest_matches_python_vectors() {
        let md5 = CHALLENGE_SHA256.replace("SHA-256", "MD5");
        let c = DigestChallenge::choose([md5.as_str(), CHALLENGE_SHA256]).unwrap();
        assert_eq!(c.algorithm, DigestAlgorithm::Sha256);
        assert_eq!(
            c.authorization("POST", "/onvif/device_service", "admin", "Secr3t!", "0a4f113b9c8d7e6f", 1),
            "Digest username=\"admin\", realm=\"GMV-Sim ONVIF\", nonce=\"6b15ba01c07cdc7a41efb0a7879e708840e3d476\", \
             uri=\"/onvif/device_service\", algorithm=SHA-256, qop=auth, nc=00000001, cnonce=\"0a4f113b9c8d7e6f\", \
             response=\"94300c9959e119c32cb3de80d388c3f461a39968c646ae297496443f344b990b\", opaque=\"a6987dd5b0cb8ff2\""
        );
        let auth =
            |h: &str| DigestChallenge::choose([h]).unwrap().authorization("POST", "/onvif/device_service", "admin", "Secr3t!", "0a4f113b9c8d7e6f", 1);
        assert!(
            auth(&md5).contains("algorithm=MD5, qop=auth, nc=00000001, cnonce=\"0a4f113b9c8d7e6f\", response=\"c54293aff3923efda746acd31adc77e9\"")
        );
        // RFC 2069 form: no qop offered, so no qop, nc or cnonce sent.
        let no_qop = md5.replace("qop=\"auth\", ", "");
        assert!(auth(&no_qop).ends_with("algorithm=MD5, response=\"2dc73f71712f4001dd2a06bc92a74add\", opaque=\"a6987dd5b0cb8ff2\""));
        let no_qop = CHALLENGE_SHA256.replace("qop=\"auth\", ", "");
        assert!(auth(&no_qop).contains("response=\"56af470cc189a264c16122650d7386e57ee6f59e99701559b32c5abbcdfe0d7e\""));
    }

    #[test]
    fn digest_challenge_parsing_edges() {
        let h = "Basic realm=\"a, b\", Digest realm = \"r\\\"q\", nonce=\"n,1\", qop=\"auth-int, auth\", stale=TRUE";
        let c = DigestChallenge::choose([h]).unwrap();
        let want =
            DigestChallenge { realm: "r\"q".into(), nonce: "n,1".into(), opaque: None, algorithm: DigestAlgorithm::Md5, qop_auth: true, stale: true };
        assert_eq!(c, want);
        assert!(c.authorization("POST", "/", "u\"", "p", "c", 2).starts_with("Digest username=\"u\\\"\", realm=\"r\\\"q\", nonce=\"n,1\""));
        let unusable =
            ["Basic realm=\"x\"", "Digest realm=\"x\", nonce=\"n\", algorithm=MD5-sess", "Digest realm=\"x\", nonce=\"n\", qop=\"auth-int\""];
        for h in unusable.into_iter().chain(["Digest realm=\"x\"", "Digest", "", ",,,", "=", "Digest nonce=\"n\""]) {
            assert_eq!(DigestChallenge::choose([h]), Err(OnvifError::NoUsableChallenge), "{h}");
        }
        let long = format!("{CHALLENGE_SHA256}, x=\"{}\"", "a".repeat(CHALLENGE_BYTES_MAX));
        assert_eq!(DigestChallenge::choose([long.as_str()]), Err(OnvifError::NoUsableChallenge));
        let many = format!("Digest {}", "a=b, ".repeat(CHALLENGE_PARAMS_MAX + 1));
        assert_eq!(DigestChallenge::choose([many.as_str(), CHALLENGE_SHA256]).map(|c| c.algorithm), Ok(DigestAlgorithm::Sha256));
    }

    #[test]
    fn xml_reader_edges() {
        let text = "<?xml version=\"1.0\"?><!-- c --><a:r xmlns:a=\"u\" x:k='v&amp;&#x41;&#66;'>\
                    <b>1 &lt; 2 &gt; 0 &quot;&apos;</b><b> <![CDATA[<raw&>]]> </b><c/></a:r>";
        let doc = Doc::parse(text).unwrap();
        assert_eq!((doc.attr(0, "k"), doc.attr(0, "a")), (Some("v&AB"), None));
        assert_eq!(doc.named(0, "b").map(|b| doc.text(b)).collect::<Vec<_>>(), ["1 < 2 > 0 \"'", "<raw&>"]);
        assert_eq!(doc.children(0).count(), 3);
        let bad = ["<a>&nope;</a>", "<a>&#0;</a>", "<a>&#xD800;</a>", "<a>&#x110000;</a>", "<a>& b</a>", "<a>&#x;</a>", "<a></b>", "<a>"];
        let bad2 = ["</a>", "<a/><b/>", "text", "", "<a x=1/>", "<a x></a>", "< a/>", "<a>x</a>tail", "<a><!--</a>", "<a x='1></a>"];
        for b in bad.into_iter().chain(bad2) {
            assert!(matches!(Doc::parse(b), Err(OnvifError::Xml { .. })), "{b}");
        }
        for dtd in ["<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>", "<a><!ENTITY x 'y'></a>"] {
            assert!(matches!(Doc::parse(dtd), Err(OnvifError::Dtd)));
        }
        let nest = |n: usize| format!("{}{}", "<a>".repeat(n), "</a>".repeat(n));
        assert!(Doc::parse(&nest(XML_DEPTH_MAX)).is_ok());
        assert!(matches!(Doc::parse(&nest(XML_DEPTH_MAX + 1)), Err(OnvifError::TooMany { max: XML_DEPTH_MAX, .. })));
        let wide = format!("<a>{}</a>", "<b/>".repeat(XML_ELEMENTS_MAX));
        assert!(matches!(Doc::parse(&wide), Err(OnvifError::TooMany { max: XML_ELEMENTS_MAX, .. })));
        let attrs = format!("<a {}/>", (0..=XML_ATTRIBUTES_MAX).map(|i| format!("a{i}=''")).collect::<Vec<_>>().join(" "));
        assert!(matches!(Doc::parse(&attrs), Err(OnvifError::TooMany { max: XML_ATTRIBUTES_MAX, .. })));
    }

    #[test]
    fn hostile_input_gives_typed_errors() {
        let huge = vec![b' '; RESPONSE_BYTES_MAX + 1];
        assert_eq!(parse_profiles(&huge), Err(OnvifError::TooLarge { bytes: RESPONSE_BYTES_MAX + 1, max_bytes: RESPONSE_BYTES_MAX }));
        assert!(matches!(parse_probe_match(&huge[..DATAGRAM_BYTES_MAX + 1], PROBE_ID), Err(OnvifError::TooLarge { .. })));
        assert_eq!(parse_presets(b"\xff\xfe<a/>"), Err(OnvifError::NotUtf8));
        let html = b"<html><body><h2>Access Error: 401 -- Unauthorized</h2></body></html>";
        assert_eq!(parse_device_information(html), Err(OnvifError::NotSoap));
        let presets = format!("<tptz:GetPresetsResponse>{}</tptz:GetPresetsResponse>", "<tptz:Preset token=\"1\"/>".repeat(PRESETS_MAX + 1));
        assert!(matches!(parse_presets(&sim(&presets)), Err(OnvifError::TooMany { max: PRESETS_MAX, .. })));
        // Every truncation of a real answer is an error, never a partial success.
        let fixtures = [sim(PROFILES), sim(FAULT_NOPROFILE), PROBE_MATCH.as_bytes().to_vec()];
        for f in &fixtures {
            for n in 0..f.len() {
                assert!(parse_profiles(&f[..n]).is_err() && parse_probe_match(&f[..n], PROBE_ID).is_err());
            }
        }
        // Mutated fixtures (a fixed LCG, so failures reproduce) through every parser.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for round in 0..3000 {
            let mut f = fixtures[round % fixtures.len()].clone();
            for _ in 0..1 + round % 8 {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                let at = (seed >> 33) as usize % f.len();
                let alphabet = b"<>/&;=\"' :x#\0\xff";
                f[at] = alphabet[(seed >> 20) as usize % alphabet.len()];
            }
            all_parsers(&f);
        }
    }
}
