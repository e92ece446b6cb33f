//! ONVIF, the driver (on the pull thread, with its HTTP client): WS-Discovery probes over UDP,
//! and SOAP calls to a camera, authenticated with WS-Security UsernameToken digests in the
//! camera's clock, or HTTP digest when it challenges. What is on the wire is
//! `proto::onvif`'s; this module only moves it and keeps the per-camera state a conversation
//! needs (clock offset, digest nonce).

use super::http;
use crate::proto::onvif::{self as wire, DigestChallenge, Discovered, MediaService, OnvifError, Profile, ServiceUrls, WsseToken};
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The WS-Discovery multicast group and port.
pub const DISCOVERY_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(239, 255, 255, 250)), 3702);
/// Cameras one probe lists, at most (answers past it are dropped).
pub const DISCOVERED_MAX: usize = 256;
/// Profiles whose stream address is asked, at most (cameras have 2 or 3).
pub const PROFILES_ASKED_MAX: usize = 8;
/// A SOAP answer's body, at most.
const ANSWER_BYTES_MAX: usize = wire::RESPONSE_BYTES_MAX;
/// How long one PTZ move lasts unless stopped earlier (a lost Stop cannot leave it turning).
pub const MOVE_TIMEOUT_S: u32 = 10;

/// Why a conversation with a camera failed, as the API tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No TCP connection or answer: address, port, or the camera is off.
    Unreachable(String),
    /// The camera refused the user or password (`ter:NotAuthorized`, or 401 after digest).
    Unauthorized,
    /// It answered, but not as ONVIF: a fault, or XML that is not what was asked.
    Device(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unreachable(why) => write!(f, "the camera did not answer: {why}"),
            Failure::Unauthorized => f.write_str("the camera refused the user name or password"),
            Failure::Device(why) => write!(f, "the camera answered with an error: {why}"),
        }
    }
}

impl From<OnvifError> for Failure {
    fn from(e: OnvifError) -> Failure {
        if e.is_not_authorized() {
            return Failure::Unauthorized;
        }
        Failure::Device(match e {
            OnvifError::Fault { code, subcode, reason } => format!("SOAP fault {code} {subcode}: {reason}"),
            other => other.to_string(),
        })
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    for chunk in out.chunks_mut(8) {
        let r = crate::shard::ports::unpredictable_u64().to_le_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
    out
}

/// Sends a Probe to `to` from `interface` and gathers the cameras that answer within `wait`.
pub async fn discover(interface: IpAddr, to: SocketAddr, wait: Duration) -> Result<Vec<Discovered>, String> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(to), socket2::Type::DGRAM, Some(socket2::Protocol::UDP)).map_err(|e| e.to_string())?;
    if let (IpAddr::V4(ip), true) = (interface, to.ip().is_multicast()) {
        // The interface the group is on: without it the kernel picks by route, often not the
        // cameras' network.
        if !ip.is_unspecified() {
            socket.set_multicast_if_v4(&ip).map_err(|e| format!("multicast interface {ip}: {e}"))?;
        }
        socket.set_multicast_ttl_v4(1).map_err(|e| e.to_string())?;
    }
    let bind = if to.is_ipv4() && interface.is_ipv4() { SocketAddr::new(interface, 0) } else { SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0) };
    socket.bind(&bind.into()).map_err(|e| format!("bind {bind}: {e}"))?;
    socket.set_nonblocking(true).map_err(|e| e.to_string())?;
    let socket = tokio::net::UdpSocket::from_std(socket.into()).map_err(|e| e.to_string())?;
    let message_id = format!("urn:uuid:{}", uuid_v4());
    socket.send_to(wire::probe(&message_id).as_bytes(), to).await.map_err(|e| format!("send to {to}: {e}"))?;
    let mut found: Vec<Discovered> = Vec::new();
    let mut buf = vec![0u8; wire::DATAGRAM_BYTES_MAX];
    let deadline = tokio::time::Instant::now() + wait;
    while found.len() < DISCOVERED_MAX {
        let Ok(received) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await else { break };
        let Ok((n, from)) = received else { continue };
        match wire::parse_probe_match(&buf[..n], &message_id) {
            Ok(matches) => {
                for m in matches {
                    if found.len() < DISCOVERED_MAX && !found.iter().any(|f| f.endpoint == m.endpoint) {
                        found.push(m);
                    }
                }
            }
            Err(error) => tracing::debug!(%from, %error, "ONVIF probe: an answer not read"),
        }
    }
    Ok(found)
}

/// A random UUID (version 4) for a probe's MessageID.
fn uuid_v4() -> String {
    let mut b: [u8; 16] = random_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = crate::auth::hex(&b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// One camera's conversation: its address and credentials, its clock, its digest nonce.
pub struct Camera {
    pub device_url: url::Url,
    user: String,
    password: String,
    /// The camera's clock minus ours, seconds (WS-Security `Created` is checked against it).
    clock_offset_s: i64,
    /// An HTTP digest challenge answered before, and how often.
    digest: Option<(DigestChallenge, u32)>,
}

impl Camera {
    /// Starts a conversation: the camera's clock is read first (unauthenticated, as ONVIF
    /// allows) so that the UsernameToken's time is the camera's.
    pub async fn open(device_url: &str, user: &str, password: &str) -> Result<Camera, Failure> {
        let device_url = url::Url::parse(device_url).map_err(|e| Failure::Unreachable(format!("device address: {e}")))?;
        if device_url.scheme() != "http" {
            return Err(Failure::Unreachable(format!("{}:// is not spoken (http:// is)", device_url.scheme())));
        }
        let mut camera = Camera { device_url, user: user.to_string(), password: password.to_string(), clock_offset_s: 0, digest: None };
        let url = camera.device_url.clone();
        let answer = camera.post(&url, wire::GET_SYSTEM_DATE_AND_TIME, false).await?;
        match wire::parse_system_date_and_time(&answer) {
            Ok(device_s) => camera.clock_offset_s = device_s - crate::shard::unix_s() as i64,
            // Some cameras want credentials even for the clock: ours is taken as theirs.
            Err(e) if e.is_not_authorized() => {}
            Err(e) => return Err(e.into()),
        }
        Ok(camera)
    }

    fn token(&self) -> Option<WsseToken> {
        (!self.user.is_empty()).then(|| {
            let created = wire::format_created(crate::shard::unix_s() as i64 + self.clock_offset_s);
            WsseToken::new(&self.user, &self.password, random_bytes(), &created)
        })
    }

    /// POSTs one operation to `url` and gives the answer's bytes (a fault's too: the parsers
    /// read it). A 401 is answered with HTTP digest once.
    async fn post(&mut self, url: &url::Url, operation: &str, secured: bool) -> Result<bytes::BytesMut, Failure> {
        let token = if secured { self.token() } else { None };
        let body = wire::envelope(operation, token.as_ref());
        let mut target = url.path().to_string();
        if let Some(q) = url.query() {
            target = format!("{target}?{q}");
        }
        for _ in 0..2 {
            let authorization = self.digest.as_mut().map(|(challenge, nc)| {
                *nc += 1;
                challenge.authorization("POST", &target, &self.user, &self.password, &crate::auth::hex(&random_bytes::<8>()), *nc)
            });
            let mut headers = vec![("Content-Type", "application/soap+xml; charset=utf-8")];
            if let Some(a) = authorization.as_deref() {
                headers.push(("Authorization", a));
            }
            let (answer, bytes) = http::post(url, &headers, body.as_bytes(), ANSWER_BYTES_MAX).await.map_err(Failure::Unreachable)?;
            if answer.status != 401 {
                return Ok(bytes);
            }
            let challenge = DigestChallenge::choose(answer.headers_named("www-authenticate")).map_err(|_| Failure::Unauthorized)?;
            // A second 401 without `stale`: the credentials are wrong.
            if self.digest.is_some() && !challenge.stale || self.user.is_empty() {
                return Err(Failure::Unauthorized);
            }
            self.digest = Some((challenge, 0));
        }
        Err(Failure::Unauthorized)
    }

    async fn call(&mut self, url: &str, operation: &str) -> Result<bytes::BytesMut, Failure> {
        let url = self.device_url.join(url).map_err(|e| Failure::Device(format!("service address {url:?}: {e}")))?;
        self.post(&url, operation, true).await
    }

    pub async fn device_information(&mut self) -> Result<wire::DeviceInformation, Failure> {
        let url = self.device_url.to_string();
        Ok(wire::parse_device_information(&self.call(&url, wire::GET_DEVICE_INFORMATION).await?)?)
    }

    /// Where media and PTZ calls go: GetServices, or GetCapabilities on a camera too old for it.
    pub async fn services(&mut self) -> Result<ServiceUrls, Failure> {
        let url = self.device_url.to_string();
        match wire::parse_service_urls(&self.call(&url, wire::GET_SERVICES).await?, &url) {
            Ok(s) => Ok(s),
            Err(e) if e.is_not_authorized() => Err(Failure::Unauthorized),
            Err(_) => Ok(wire::parse_service_urls(&self.call(&url, wire::GET_CAPABILITIES).await?, &url)?),
        }
    }

    pub async fn profiles(&mut self, services: &ServiceUrls) -> Result<(MediaService, String, Vec<Profile>), Failure> {
        // Media2 where the camera has it: only it lists H.265 profiles.
        if let Some(media2) = &services.media2
            && let Ok(profiles) = wire::parse_profiles(&self.call(media2, wire::get_profiles(MediaService::Media2)).await?)
        {
            return Ok((MediaService::Media2, media2.clone(), profiles));
        }
        let profiles = wire::parse_profiles(&self.call(&services.media, wire::get_profiles(MediaService::Media)).await?)?;
        Ok((MediaService::Media, services.media.clone(), profiles))
    }

    pub async fn stream_uri(&mut self, service: MediaService, media_url: &str, profile: &str) -> Result<String, Failure> {
        Ok(wire::parse_stream_uri(&self.call(media_url, &wire::get_stream_uri(service, profile)).await?)?)
    }

    /// Velocities -1..=1 (pan + right, tilt + up, zoom + in); all zero stops.
    pub async fn move_or_stop(&mut self, ptz_url: &str, profile: &str, pan: f32, tilt: f32, zoom: f32) -> Result<(), Failure> {
        if pan == 0.0 && tilt == 0.0 && zoom == 0.0 {
            return Ok(wire::parse_ack(&self.call(ptz_url, &wire::stop(profile)).await?, "Stop")?);
        }
        let op = wire::continuous_move(profile, Some((pan, tilt)), Some(zoom), Some(MOVE_TIMEOUT_S));
        Ok(wire::parse_ack(&self.call(ptz_url, &op).await?, "ContinuousMove")?)
    }

    pub async fn presets(&mut self, ptz_url: &str, profile: &str) -> Result<Vec<(String, String)>, Failure> {
        Ok(wire::parse_presets(&self.call(ptz_url, &wire::get_presets(profile)).await?)?)
    }

    pub async fn goto_preset(&mut self, ptz_url: &str, profile: &str, token: &str) -> Result<(), Failure> {
        Ok(wire::parse_ack(&self.call(ptz_url, &wire::goto_preset(profile, token)).await?, "GotoPreset")?)
    }

    /// Saves the current position as preset `name`; its token.
    pub async fn set_preset(&mut self, ptz_url: &str, profile: &str, name: &str) -> Result<String, Failure> {
        Ok(wire::parse_set_preset(&self.call(ptz_url, &wire::set_preset(profile, name, None)).await?)?)
    }

    pub async fn remove_preset(&mut self, ptz_url: &str, profile: &str, token: &str) -> Result<(), Failure> {
        Ok(wire::parse_ack(&self.call(ptz_url, &wire::remove_preset(profile, token)).await?, "RemovePreset")?)
    }
}

/// A camera as `POST /api/onvif/inspect` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub device_url: String,
    pub manufacturer: String,
    pub model: String,
    pub firmware: String,
    pub serial: String,
    /// Where PTZ calls go.
    pub ptz_url: String,
    pub profiles: Vec<ProfileReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProfileReport {
    pub token: String,
    pub name: String,
    pub encoding: String,
    pub width: u32,
    pub height: u32,
    pub ptz: bool,
    /// Its RTSP address as the camera gives it (no credentials), or why not.
    pub stream_uri: Option<String>,
    pub stream_uri_error: Option<String>,
}

/// Reads a camera: who it is, its profiles with their stream addresses, where PTZ goes.
pub async fn inspect(device_url: &str, user: &str, password: &str) -> Result<Report, Failure> {
    let mut camera = Camera::open(device_url, user, password).await?;
    let info = camera.device_information().await?;
    let services = camera.services().await?;
    let (service, media_url, profiles) = camera.profiles(&services).await?;
    let mut reports = Vec::new();
    for p in profiles.into_iter().take(PROFILES_ASKED_MAX) {
        let (stream_uri, stream_uri_error) = match camera.stream_uri(service, &media_url, &p.token).await {
            Ok(uri) => (Some(uri), None),
            Err(Failure::Unauthorized) => return Err(Failure::Unauthorized),
            Err(e) => (None, Some(e.to_string())),
        };
        reports.push(ProfileReport {
            token: p.token,
            name: p.name,
            encoding: p.encoding,
            width: p.width,
            height: p.height,
            ptz: p.ptz_configuration.is_some(),
            stream_uri,
            stream_uri_error,
        });
    }
    Ok(Report {
        device_url: camera.device_url.to_string(),
        manufacturer: info.manufacturer,
        model: info.model,
        firmware: info.firmware_version,
        serial: info.serial_number,
        ptz_url: services.ptz,
        profiles: reports,
    })
}

/// The stream address with the camera's credentials in it (cameras give it without).
pub fn with_credentials(stream_uri: &str, user: &str, password: &str) -> Result<url::Url, String> {
    let mut url = url::Url::parse(stream_uri).map_err(|e| format!("stream address {stream_uri:?}: {e}"))?;
    if !user.is_empty() && url.username().is_empty() {
        url.set_username(user).map_err(|()| "stream address takes no user".to_string())?;
        url.set_password(Some(password)).map_err(|()| "stream address takes no password".to_string())?;
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_go_into_a_stream_address_that_has_none() {
        let u = super::with_credentials("rtsp://10.0.0.8:554/Streaming/Channels/101?transportmode=unicast", "admin", "p@ss:w/rd").unwrap();
        assert_eq!(u.as_str(), "rtsp://admin:p%40ss%3Aw%2Frd@10.0.0.8:554/Streaming/Channels/101?transportmode=unicast");
        let kept = super::with_credentials("rtsp://other:x@10.0.0.8/a", "admin", "y").unwrap();
        assert_eq!(kept.username(), "other", "the camera's own are kept");
    }

    #[test]
    fn a_probe_message_id_is_a_version_4_uuid() {
        let id = super::uuid_v4();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(id, super::uuid_v4());
    }
}
