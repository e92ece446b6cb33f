//! SDP (RFC 4566) parser for ingest: media sections with rtpmap/fmtp/ssrc/setup and the
//! GB28181 `y=` (SSRC) and `f=` (media format) lines. Unknown lines are kept, never fatal.

use super::frame::Codec;
use base64::Engine;

pub const SDP_BYTES_MAX: usize = 16 * 1024;
pub const SDP_MEDIA_MAX: usize = 8;
pub const SDP_FORMATS_MAX: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdpError {
    TooLarge { bytes: usize },
    NotUtf8,
    MissingVersion,
    BadMediaLine { line: usize },
    TooManyMedia,
}

impl std::fmt::Display for SdpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}
impl std::error::Error for SdpError {}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RtpMapEntry {
    pub payload_type: u8,
    pub encoding: String,
    pub clock_rate: u32,
    pub channels: Option<u32>,
    pub fmtp: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaSection {
    /// "video", "audio", …
    pub kind: String,
    pub port: u16,
    /// "RTP/AVP", "TCP/RTP/AVP", …
    pub protocol: String,
    pub formats: Vec<u8>,
    pub rtpmap: Vec<RtpMapEntry>,
    pub ssrc: Vec<u32>,
    pub mid: Option<String>,
    /// a=setup: active / passive / actpass (RFC 4145; GB28181 TCP media).
    pub setup: Option<String>,
    /// a=sendonly / recvonly / sendrecv / inactive.
    pub direction: Option<String>,
    pub rtcp_fb: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sdp {
    pub origin: Option<String>,
    pub session_name: Option<String>,
    pub connection: Option<String>,
    pub media: Vec<MediaSection>,
    /// GB28181 `y=` SSRC as written (10 decimal digits).
    pub gb_ssrc: Option<String>,
    /// GB28181 `f=` media format description.
    pub gb_format: Option<String>,
    pub groups: Vec<String>,
}

impl Sdp {
    pub fn parse(text: &[u8]) -> Result<Sdp, SdpError> {
        if text.len() > SDP_BYTES_MAX {
            return Err(SdpError::TooLarge { bytes: text.len() });
        }
        let text = std::str::from_utf8(text).map_err(|_| SdpError::NotUtf8)?;
        let mut sdp = Sdp::default();
        let mut saw_version = false;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            let Some((key, value)) = line.split_once('=') else { continue };
            let value = value.trim();
            match key.trim() {
                "v" => saw_version = true,
                "o" => sdp.origin = Some(value.to_string()),
                "s" => sdp.session_name = Some(value.to_string()),
                "c" if sdp.media.is_empty() => sdp.connection = Some(value.to_string()),
                "y" => sdp.gb_ssrc = Some(value.to_string()),
                "f" => sdp.gb_format = Some(value.to_string()),
                "m" => {
                    if sdp.media.len() >= SDP_MEDIA_MAX {
                        return Err(SdpError::TooManyMedia);
                    }
                    sdp.media.push(parse_media_line(value).ok_or(SdpError::BadMediaLine { line: n + 1 })?);
                }
                "a" => match sdp.media.last_mut() {
                    Some(m) => parse_media_attribute(m, value),
                    None => {
                        if let Some(g) = value.strip_prefix("group:") {
                            sdp.groups.push(g.to_string());
                        }
                    }
                },
                _ => {}
            }
        }
        if !saw_version {
            return Err(SdpError::MissingVersion);
        }
        Ok(sdp)
    }

    /// GB28181 SSRC from `y=` as a number, if it is one.
    pub fn ssrc(&self) -> Option<u32> {
        self.gb_ssrc.as_deref().and_then(|s| s.parse().ok()).or_else(|| self.media.iter().find_map(|m| m.ssrc.first().copied()))
    }

    /// Maps payload types to what the ingest path can depacketize.
    pub fn rtp_map(&self) -> RtpMap {
        let mut map = RtpMap::default();
        for m in &self.media {
            for e in &m.rtpmap {
                if let Some(kind) = PayloadKind::from_encoding(&e.encoding) {
                    map.entries.push((e.payload_type, kind, e.fmtp.clone()));
                }
            }
            // Static payload types need no rtpmap line.
            for &pt in &m.formats {
                let kind = match pt {
                    0 => Some(PayloadKind::Audio(Codec::Pcmu)),
                    8 => Some(PayloadKind::Audio(Codec::Pcma)),
                    33 => Some(PayloadKind::Ts),
                    _ => None,
                };
                if let (Some(kind), false) = (kind, map.entries.iter().any(|(p, _, _)| *p == pt)) {
                    map.entries.push((pt, kind, None));
                }
            }
        }
        map
    }
}

fn parse_media_line(value: &str) -> Option<MediaSection> {
    let mut parts = value.split_whitespace();
    let kind = parts.next()?.to_string();
    let port = parts.next()?.split('/').next()?.parse().ok()?;
    let protocol = parts.next()?.to_string();
    let formats = parts.filter_map(|f| f.parse().ok()).take(SDP_FORMATS_MAX).collect();
    Some(MediaSection { kind, port, protocol, formats, ..MediaSection::default() })
}

fn parse_media_attribute(m: &mut MediaSection, value: &str) {
    let (name, arg) = value.split_once(':').map_or((value, ""), |(n, a)| (n, a.trim()));
    match name.trim() {
        "rtpmap" => {
            let Some((pt, enc)) = arg.split_once(char::is_whitespace) else { return };
            let Ok(payload_type) = pt.parse() else { return };
            let mut it = enc.trim().split('/');
            let encoding = it.next().unwrap_or_default().to_string();
            let clock_rate = it.next().and_then(|c| c.parse().ok()).unwrap_or(0);
            let channels = it.next().and_then(|c| c.parse().ok());
            if m.rtpmap.len() < SDP_FORMATS_MAX {
                m.rtpmap.push(RtpMapEntry { payload_type, encoding, clock_rate, channels, fmtp: None });
            }
        }
        "fmtp" => {
            let Some((pt, params)) = arg.split_once(char::is_whitespace) else { return };
            let Ok(pt) = pt.parse::<u8>() else { return };
            if let Some(e) = m.rtpmap.iter_mut().find(|e| e.payload_type == pt) {
                e.fmtp = Some(params.trim().to_string());
            }
        }
        "ssrc" => {
            if let Some(id) = arg.split_whitespace().next().and_then(|s| s.parse().ok())
                && !m.ssrc.contains(&id)
                && m.ssrc.len() < SDP_FORMATS_MAX
            {
                m.ssrc.push(id);
            }
        }
        "mid" => m.mid = Some(arg.to_string()),
        "setup" => m.setup = Some(arg.to_ascii_lowercase()),
        "rtcp-fb" if m.rtcp_fb.len() < SDP_FORMATS_MAX => m.rtcp_fb.push(arg.to_string()),
        d @ ("sendonly" | "recvonly" | "sendrecv" | "inactive") => m.direction = Some(d.to_string()),
        _ => {}
    }
}

/// What an RTP payload type carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    /// MPEG-PS (GB28181 "PS/90000", also "MP2P").
    Ps,
    /// MPEG-TS (RFC 2250 "MP2T", static payload type 33).
    Ts,
    /// RFC 6184 / RFC 7798 payload.
    Video(Codec),
    Audio(Codec),
}

impl PayloadKind {
    pub fn from_encoding(encoding: &str) -> Option<PayloadKind> {
        match encoding.to_ascii_uppercase().as_str() {
            "PS" | "MP2P" => Some(PayloadKind::Ps),
            "MP2T" => Some(PayloadKind::Ts),
            "H264" => Some(PayloadKind::Video(Codec::H264)),
            "H265" | "HEVC" => Some(PayloadKind::Video(Codec::H265)),
            "PCMA" => Some(PayloadKind::Audio(Codec::Pcma)),
            "PCMU" => Some(PayloadKind::Audio(Codec::Pcmu)),
            _ => None,
        }
    }
}

/// Payload type -> codec for one stream, built from its SDP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RtpMap {
    pub entries: Vec<(u8, PayloadKind, Option<String>)>,
}

impl RtpMap {
    pub fn kind(&self, payload_type: u8) -> Option<PayloadKind> {
        self.entries.iter().find(|(pt, _, _)| *pt == payload_type).map(|(_, k, _)| *k)
    }

    /// Parameter sets from `sprop-parameter-sets` (H.264) or `sprop-vps/sps/pps` (H.265), as NAL units.
    pub fn sprop_parameter_sets(&self, payload_type: u8) -> Vec<Vec<u8>> {
        let Some((_, _, Some(fmtp))) = self.entries.iter().find(|(pt, _, _)| *pt == payload_type) else {
            return Vec::new();
        };
        let mut nals = Vec::new();
        for param in fmtp.split(';') {
            let Some((k, v)) = param.trim().split_once('=') else { continue };
            if matches!(k.trim(), "sprop-parameter-sets" | "sprop-vps" | "sprop-sps" | "sprop-pps") {
                for b64 in v.split(',') {
                    if let Ok(nal) = base64::engine::general_purpose::STANDARD.decode(b64.trim())
                        && !nal.is_empty()
                    {
                        nals.push(nal);
                    }
                }
            }
        }
        nals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `ffmpeg -re -i x.h264 -vcodec copy -f rtp rtp://127.0.0.1:PORT -sdp_file` writes.
    const FFMPEG_SDP: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=No Name\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\na=tool:libavformat 59.27.100\r\nm=video 30002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1; sprop-parameter-sets=Z2QADayyAoP2AiAAAAMAIAAABkHihUk=,aOvjyyLA; profile-level-id=64000D\r\n";

    /// A GB28181 device's answer to INVITE (Hikvision style).
    const GB_SDP: &str = "v=0\r\no=34020000001320000001 0 0 IN IP4 192.168.1.64\r\ns=Play\r\nc=IN IP4 192.168.1.64\r\nt=0 0\r\nm=video 15060 TCP/RTP/AVP 96\r\na=setup:passive\r\na=connection:new\r\na=sendonly\r\na=rtpmap:96 PS/90000\r\ny=0100000001\r\nf=v/2/5/25/1/4096a/1/8/1\r\n";

    #[test]
    fn parses_ffmpeg_sdp_and_sprop() {
        let sdp = Sdp::parse(FFMPEG_SDP.as_bytes()).unwrap();
        assert_eq!(sdp.media.len(), 1);
        let map = sdp.rtp_map();
        assert_eq!(map.kind(96), Some(PayloadKind::Video(Codec::H264)));
        let ps = map.sprop_parameter_sets(96);
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0][0] & 0x1f, 7);
        assert_eq!(ps[1][0] & 0x1f, 8);
    }

    #[test]
    fn parses_gb28181_sdp() {
        let sdp = Sdp::parse(GB_SDP.as_bytes()).unwrap();
        assert_eq!(sdp.ssrc(), Some(100000001));
        assert_eq!(sdp.gb_format.as_deref(), Some("v/2/5/25/1/4096a/1/8/1"));
        let m = &sdp.media[0];
        assert_eq!((m.protocol.as_str(), m.port, m.setup.as_deref()), ("TCP/RTP/AVP", 15060, Some("passive")));
        assert_eq!(m.direction.as_deref(), Some("sendonly"));
        assert_eq!(sdp.rtp_map().kind(96), Some(PayloadKind::Ps));
    }

    #[test]
    fn multiple_media_sections_with_webrtc_attributes() {
        let text = "v=0\no=- 1 1 IN IP4 0.0.0.0\ns=-\nt=0 0\na=group:BUNDLE 0 1\nm=audio 9 UDP/TLS/RTP/SAVPF 8 0\na=mid:0\na=ssrc:11 cname:x\nm=video 9 UDP/TLS/RTP/SAVPF 98\na=mid:1\na=rtpmap:98 H265/90000\na=rtcp-fb:98 nack\na=ssrc:22 cname:y\n";
        let sdp = Sdp::parse(text.as_bytes()).unwrap();
        assert_eq!(sdp.groups, vec!["BUNDLE 0 1"]);
        assert_eq!(sdp.media.len(), 2);
        let map = sdp.rtp_map();
        assert_eq!(map.kind(8), Some(PayloadKind::Audio(Codec::Pcma)));
        assert_eq!(map.kind(98), Some(PayloadKind::Video(Codec::H265)));
        assert_eq!(sdp.media[1].rtcp_fb, vec!["98 nack"]);
        assert_eq!(sdp.ssrc(), Some(11));
    }

    #[test]
    fn rejects_hostile_input() {
        assert_eq!(Sdp::parse(b"o=x\r\n"), Err(SdpError::MissingVersion));
        assert_eq!(Sdp::parse(&[0xff, 0xfe]), Err(SdpError::NotUtf8));
        assert!(matches!(Sdp::parse(&vec![b'a'; SDP_BYTES_MAX + 1]), Err(SdpError::TooLarge { .. })));
        assert_eq!(Sdp::parse(b"v=0\nm=video\n"), Err(SdpError::BadMediaLine { line: 2 }));
        let many = format!("v=0\n{}", "m=video 1 RTP/AVP 96\n".repeat(SDP_MEDIA_MAX + 1));
        assert_eq!(Sdp::parse(many.as_bytes()), Err(SdpError::TooManyMedia));
    }

    #[test]
    fn fuzz_never_panics() {
        let mut rng = crate::proto::testutil::Rng::new(3);
        for _ in 0..5_000 {
            let seed = if rng.below(2) == 0 { FFMPEG_SDP } else { GB_SDP };
            let data = rng.mutate(seed.as_bytes());
            if let Ok(sdp) = Sdp::parse(&data) {
                let map = sdp.rtp_map();
                let _ = map.sprop_parameter_sets(96);
            }
        }
    }
}
