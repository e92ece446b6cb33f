//! URL routing and credential checks (pure functions of the request head, the secrets and
//! the time).

use super::request::RequestHead;
use crate::auth::{Role, Scope, Secrets};
use crate::config::Config;

pub const TOKEN_HEADER: &str = "gmv-token";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Live HTTP-FLV of a stream.
    FlvPlay {
        stream_id: String,
        token: Option<String>,
    },
    /// HLS playlist (`index.m3u8`) or segment (`{sequence}.ts`) of a stream.
    Hls {
        stream_id: String,
        token: Option<String>,
        file: String,
    },
    /// A recording played as HTTP-FLV at real time from `start` seconds.
    RecordPlay {
        stem: String,
        token: Option<String>,
        start_s: u64,
    },
    /// A recorded MP4 file, or a downloaded device recording (token by header or `?token=`).
    Record {
        file: String,
        download: bool,
    },
    /// A stream's cover JPEG (token by header or `?token=`).
    Cover {
        stream_id: String,
    },
    /// Live HTTP-FLV of a GB28181 channel, invited on demand if it is not streaming.
    GbPlay {
        device_id: String,
        channel_id: String,
        token: Option<String>,
    },
    /// A URL that moved: `/hls/{stream_id}/{token}` (the seed's playlist URL) is
    /// `/hls/{stream_id}/{token}/index.m3u8`, so the playlist's relative segment URLs resolve.
    Redirect {
        location: String,
    },
    /// Live fragmented MP4 of a stream (init segment, a fragment per GOP) over HTTP or a
    /// WebSocket: `/fmp4/{stream_id}/{token}` (a trailing `.mp4` is tolerated).
    Fmp4Play {
        stream_id: String,
        token: Option<String>,
    },
    /// A WHEP offer (POST, `application/sdp`) for a stream: `/whep/{stream_id}/{token}` or
    /// `/whep/{stream_id}` with the token in `?token=` or a header.
    Whep {
        stream_id: String,
        token: Option<String>,
    },
    /// A WHEP offer for a GB28181 channel, invited on demand: `/whep/gb/{device}/{channel}/{token}`.
    WhepGb {
        device_id: String,
        channel_id: String,
        token: Option<String>,
    },
    /// A WHIP offer of a browser's microphone for talk to a channel's speaker (a voice
    /// broadcast from it): `/whip/broadcast/{device}/{channel}`, or to several
    /// (`/whip/broadcast?channels={device}:{channel},...`), authorised as the broadcast API.
    /// No channel: the query named none well.
    WhipTalk {
        channels: Option<Vec<(String, String)>>,
    },
    /// A WHEP (or WHIP) session's resource (`Location` of the answer): DELETE ends it.
    WhepSession {
        stream_id: String,
        session: String,
    },
    /// Anything under /api/, served by the control executor.
    Api,
    /// A ZLMediaKit node API call (`/index/api/{name}`), served by the control executor.
    NodeApi {
        name: String,
    },
    /// A hook a media node posts to this control (`/index/hook/{name}`).
    NodeHook {
        name: String,
    },
    /// A ZLMediaKit play URL: `/{app}/{stream}.live.flv`, `.live.mp4`, `.live.ts` or
    /// `/{app}/{stream}/hls.m3u8`.
    NodePlay {
        app: String,
        stream: String,
        format: NodeFormat,
    },
    /// A CORS preflight (`OPTIONS` with `Origin`), answered without credentials.
    Preflight,
    /// The web console's page (`file` None) or one of its files.
    Console {
        file: Option<String>,
    },
    NotFound,
}

pub fn route(head: &RequestHead, config: &Config) -> Route {
    let parts: Vec<&str> = head.path.trim_start_matches('/').split('/').collect();
    if head.method == "OPTIONS" && head.header("origin").is_some() {
        return Route::Preflight;
    }
    match parts.as_slice() {
        [""] | ["index.html"] if head.method == "GET" => Route::Console { file: None },
        ["console", rest @ ..] if head.method == "GET" && !rest.is_empty() => Route::Console { file: Some(rest.join("/")) },
        ["api", ..] => Route::Api,
        ["index", "api", name] => Route::NodeApi { name: name.to_string() },
        ["index", "hook", name] if head.method == "POST" => Route::NodeHook { name: name.to_string() },
        // Prometheus scrapes, with an API key like the REST API.
        ["metrics"] if head.method == "GET" => Route::Api,
        // /hls/{stream_id}/{token}/{file}
        ["hls", stream_id, token, file] if head.method == "GET" => {
            Route::Hls { stream_id: stream_id.to_string(), token: Some(token.to_string()), file: file.to_string() }
        }
        ["hls", stream_id, token] if head.method == "GET" => {
            let query = if head.query.is_empty() { String::new() } else { format!("?{}", head.query) };
            Route::Redirect { location: format!("/hls/{stream_id}/{token}/index.m3u8{query}") }
        }
        // /{node_id}/hls/{stream_id}/{file} with the gmv-token header (or ?token=)
        [node, "hls", stream_id, file] if head.method == "GET" && *node == config.node_id => {
            Route::Hls { stream_id: stream_id.to_string(), token: None, file: file.to_string() }
        }
        ["whep", "gb", device_id, channel_id, token] if head.method == "POST" => {
            Route::WhepGb { device_id: device_id.to_string(), channel_id: channel_id.to_string(), token: Some(token.to_string()) }
        }
        ["whip", "broadcast", device_id, channel_id] if head.method == "POST" => Route::WhipTalk { channels: Some(vec![(device_id.to_string(), channel_id.to_string())]) },
        ["whip", "broadcast"] if head.method == "POST" => Route::WhipTalk { channels: head.query_param("channels").and_then(channel_list) },
        ["whep" | "whip", stream_id, "session", session] => Route::WhepSession { stream_id: stream_id.to_string(), session: session.to_string() },
        ["whep", stream_id, token] if head.method == "POST" => Route::Whep { stream_id: stream_id.to_string(), token: Some(token.to_string()) },
        ["whep", stream_id] if head.method == "POST" => Route::Whep { stream_id: stream_id.to_string(), token: None },
        ["records", file] if head.method == "GET" => Route::Record { file: file.to_string(), download: false },
        ["downloads", file] if head.method == "GET" => Route::Record { file: file.to_string(), download: true },
        ["cover", file] if head.method == "GET" => match file.strip_suffix(".jpg") {
            Some(id) => Route::Cover { stream_id: id.to_string() },
            None => Route::NotFound,
        },
        // /flv/gb/{device_id}/{channel_id}/{token}
        ["flv", "gb", device_id, channel_id, token] if head.method == "GET" => Route::GbPlay {
            device_id: device_id.to_string(),
            channel_id: channel_id.to_string(),
            token: Some(token.trim_end_matches(".flv").to_string()),
        },
        // /flv/record/{file without .mp4}/{token}?start=seconds
        ["flv", "record", stem, token] if head.method == "GET" => Route::RecordPlay {
            stem: stem.to_string(),
            token: Some(token.trim_end_matches(".flv").to_string()),
            start_s: head.query_param("start").and_then(|s| s.parse().ok()).unwrap_or(0),
        },
        // /flv/{stream_id}/{token}  (a trailing ".flv" is tolerated for players that want one)
        ["flv", stream_id, token] if head.method == "GET" => {
            Route::FlvPlay { stream_id: stream_id.to_string(), token: Some(token.trim_end_matches(".flv").to_string()) }
        }
        ["fmp4", stream_id, token] if head.method == "GET" => {
            Route::Fmp4Play { stream_id: stream_id.to_string(), token: Some(token.trim_end_matches(".mp4").to_string()) }
        }
        // /{node_id}/play/{stream_id}.flv with the gmv-token header
        [node, "play", file] if head.method == "GET" && *node == config.node_id => match file.strip_suffix(".flv") {
            Some(stream_id) => Route::FlvPlay { stream_id: stream_id.to_string(), token: None },
            None => Route::NotFound,
        },
        [app, file] if head.method == "GET" && [".live.flv", ".live.mp4", ".live.ts"].iter().any(|x| file.ends_with(x)) => {
            let (stream, format) = match file.rsplit_once(".live.") {
                Some((stream, "mp4")) => (stream, NodeFormat::Fmp4),
                Some((stream, "ts")) => (stream, NodeFormat::Ts),
                Some((stream, _)) => (stream, NodeFormat::Flv),
                None => (*file, NodeFormat::Flv),
            };
            Route::NodePlay { app: app.to_string(), stream: stream.to_string(), format }
        }
        [app, stream, "hls.m3u8"] if head.method == "GET" => Route::NodePlay { app: app.to_string(), stream: stream.to_string(), format: NodeFormat::Hls },
        [app, stream, "hls.fmp4.m3u8"] if head.method == "GET" => {
            Route::NodePlay { app: app.to_string(), stream: stream.to_string(), format: NodeFormat::HlsFmp4 }
        }
        _ => Route::NotFound,
    }
}

/// H.265 over FLV in the legacy codec-id-12 form (`h265=legacy`) or enhanced RTMP's `hvc1`
/// (`h265=enhanced`); otherwise `default` (gmv's own URLs: enhanced; a node's: its
/// `rtmp.enhanced`).
pub fn hevc_legacy(head: &RequestHead, default: bool) -> bool {
    match head.query_param("h265") {
        Some("legacy") => true,
        Some("enhanced") => false,
        _ => default,
    }
}

/// What a node play URL serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeFormat {
    Flv,
    Hls,
    /// HLS with fMP4 segments (ZLMediaKit's `hls_fmp4`, `/{app}/{stream}/hls.fmp4.m3u8`).
    HlsFmp4,
    Fmp4,
    Ts,
}

impl NodeFormat {
    /// ZLMediaKit's schema of the format (what `on_play` is told).
    pub fn schema(self) -> &'static str {
        match self {
            NodeFormat::Flv => "rtmp",
            NodeFormat::Hls => "hls",
            NodeFormat::HlsFmp4 => "hls.fmp4",
            NodeFormat::Fmp4 => "fmp4",
            NodeFormat::Ts => "ts",
        }
    }
}

/// A credential sent in a header: `Authorization: Bearer X` or `gmv-token: X`.
pub fn header_credential(head: &RequestHead) -> Option<&str> {
    let bearer = head.header("authorization").and_then(|v| {
        let (scheme, rest) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    bearer.or_else(|| head.header(TOKEN_HEADER))
}

/// Why a request is refused: (status, code, message).
pub type Refusal = (u16, &'static str, &'static str);

/// The name and role behind an `/api` request: an API key in a header (a key in a URL ends up
/// in logs and browser histories; a play token never opens `/api`), or a console user's
/// session cookie, whose changing requests (not GET or HEAD) must carry the session's CSRF
/// token in `X-CSRF-Token`.
pub fn api_caller<'s>(secrets: &'s Secrets, head: &RequestHead) -> Result<(&'s str, Role), Refusal> {
    if let Some(key) = header_credential(head) {
        return secrets.api_key(key).ok_or((401, "unauthorized", "not an API key (play tokens do not open /api)"));
    }
    let Some(session) = session_cookie(head) else {
        return Err((401, "unauthorized", "sign in, or send an API key as `Authorization: Bearer KEY` or `gmv-token: KEY`"));
    };
    let Some(caller) = secrets.session(session, crate::shard::unix_s()) else {
        return Err((401, "unauthorized", "the session has ended (expired, signed out, or the password changed): sign in again"));
    };
    let reads = matches!(head.method.as_str(), "GET" | "HEAD");
    if !reads && !head.header(crate::users::CSRF_HEADER).is_some_and(|t| secrets.csrf_ok(session, t)) {
        return Err((403, "csrf", "a change made with a session cookie must carry its X-CSRF-Token (GET /api/session gives it)"));
    }
    Ok(caller)
}

/// A console user's session cookie, when the request is made with one (and no API key in a
/// header, which would be the credential instead).
pub fn user_session(head: &RequestHead) -> Option<&str> {
    session_cookie(head).filter(|_| header_credential(head).is_none())
}

/// The session cookie's value, when the request has one.
pub fn session_cookie(head: &RequestHead) -> Option<&str> {
    let cookies = head.header("cookie")?;
    cookies.split(';').find_map(|c| c.trim().strip_prefix(crate::users::SESSION_COOKIE)?.strip_prefix('='))
}

/// Whether a play request may open `scope`: a play token (in the path, `?token=` or a
/// header) for it, or an API key of any role sent in a header.
pub fn play_allowed(
    secrets: &Secrets,
    head: &RequestHead,
    path_token: Option<&str>,
    scope: &Scope,
    now_unix_s: u64,
    client: std::net::IpAddr,
) -> Result<(), Refusal> {
    let header = header_credential(head);
    if header.is_some_and(|k| secrets.api_key(k).is_some()) {
        return Ok(());
    }
    let Some(token) = path_token.or_else(|| head.query_param("token")).or(header) else {
        return Err((401, "unauthorized", "no play token"));
    };
    secrets.verify(token, scope, now_unix_s, client).map_err(|e| (401, "unauthorized", e.message()))
}

/// The largest request body an API call takes: an announcement's WAV for a voice
/// broadcast, `BODY_BYTES_MAX` for the rest.
pub fn body_bytes_max(method: &str, segments: &[&str]) -> usize {
    match (method, segments) {
        ("POST", ["api", "devices", _, "channels", _, "broadcast"] | ["api", "broadcasts"]) => crate::proto::wav::WAV_BYTES_MAX,
        _ => crate::proto::http_head::BODY_BYTES_MAX,
    }
}

/// The role an API call needs.
/// Channels as a query names them: `{device}:{channel}` separated by commas (percent-encoded
/// or not); None when one is malformed or there are none.
pub fn channel_list(query_value: &str) -> Option<Vec<(String, String)>> {
    let decoded = query_value.replace("%3A", ":").replace("%3a", ":").replace("%2C", ",").replace("%2c", ",");
    let channels: Option<Vec<_>> = decoded
        .split(',')
        .filter(|c| !c.is_empty())
        .map(|c| c.split_once(':').filter(|(d, ch)| !d.is_empty() && !ch.is_empty() && !ch.contains(':')).map(|(d, ch)| (d.to_string(), ch.to_string())))
        .collect();
    channels.filter(|c| !c.is_empty())
}

pub fn required_role(method: &str, segments: &[&str]) -> Role {
    match (method, segments) {
        ("GET", ["api", "config"]) => Role::Admin,
        // Console users: an admin's; a user's own session and password are the user's.
        (_, ["api", "session", ..]) => Role::Viewer,
        (_, ["api", "users", ..]) => Role::Admin,
        // Where this platform reports and what it shares.
        ("GET", ["api", "upstreams"]) => Role::Operator,
        // Where this platform reports, with what password, and which cameras leave the site.
        (_, ["api", "upstreams", ..]) => Role::Admin,
        ("GET" | "HEAD", _) => Role::Viewer,
        // Play tokens, watching a GB channel (which invites it on demand) and playing back its
        // recordings (pause, seek, speed included) are a viewer's.
        ("POST", ["api", "play-tokens"])
        | ("POST", ["api", "devices", _, "channels", _, "play" | "playback"])
        | ("POST", ["api", "sessions", _, "control"]) => Role::Viewer,
        // A reboot takes every channel of the device down for a while.
        ("DELETE", ["api", "devices", _]) | ("POST", ["api", "devices", _, "reboot"]) => Role::Admin,
        // A device's own password and how its media comes.
        ("POST", ["api", "devices"]) | ("PUT", ["api", "devices", _]) => Role::Admin,
        _ => Role::Operator,
    }
}

pub use crate::proto::ssrc::{parse_stream_id, stream_id};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::parse_head;

    fn head(raw: &str) -> RequestHead {
        parse_head(raw.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn routes_both_play_url_forms() {
        let c = Config::default();
        assert_eq!(
            route(&head("GET /flv/0100000001/abc HTTP/1.1\r\n\r\n"), &c),
            Route::FlvPlay { stream_id: "0100000001".into(), token: Some("abc".into()) }
        );
        assert_eq!(
            route(&head("GET /hls/0100000001/abc/index.m3u8 HTTP/1.1\r\n\r\n"), &c),
            Route::Hls { stream_id: "0100000001".into(), token: Some("abc".into()), file: "index.m3u8".into() }
        );
        let h = head("GET /34020000002000000001/hls/0100000001/7.ts HTTP/1.1\r\ngmv-token: t\r\n\r\n");
        assert_eq!(route(&h, &c), Route::Hls { stream_id: "0100000001".into(), token: None, file: "7.ts".into() });
        let h = head("GET /34020000002000000001/play/0100000001.flv HTTP/1.1\r\ngmv-token: t\r\n\r\n");
        assert_eq!(route(&h, &c), Route::FlvPlay { stream_id: "0100000001".into(), token: None });
        assert_eq!(route(&head("OPTIONS /api/streams HTTP/1.1\r\nOrigin: http://a\r\n\r\n"), &c), Route::Preflight);
        assert_eq!(route(&head("GET /999/play/0100000001.flv HTTP/1.1\r\n\r\n"), &c), Route::NotFound);
        assert_eq!(route(&head("DELETE /api/streams/1 HTTP/1.1\r\n\r\n"), &c), Route::Api);
        assert_eq!(
            route(&head("GET /flv/gb/dev1/ch1/tok HTTP/1.1\r\n\r\n"), &c),
            Route::GbPlay { device_id: "dev1".into(), channel_id: "ch1".into(), token: Some("tok".into()) }
        );
        assert_eq!(route(&head("GET /nope HTTP/1.1\r\n\r\n"), &c), Route::NotFound);
        assert_eq!(route(&head("POST /index/api/openRtpServer HTTP/1.1\r\n\r\n"), &c), Route::NodeApi { name: "openRtpServer".into() });
        assert_eq!(
            route(&head("GET /rtp/3402_3401.live.flv?callId=1 HTTP/1.1\r\n\r\n"), &c),
            Route::NodePlay { app: "rtp".into(), stream: "3402_3401".into(), format: NodeFormat::Flv }
        );
        assert_eq!(route(&head("GET /rtp/3402_3401/hls.m3u8 HTTP/1.1\r\n\r\n"), &c), Route::NodePlay { app: "rtp".into(), stream: "3402_3401".into(), format: NodeFormat::Hls });
        assert_eq!(
            route(&head("GET /rtp/3402_3401/hls.fmp4.m3u8 HTTP/1.1\r\n\r\n"), &c),
            Route::NodePlay { app: "rtp".into(), stream: "3402_3401".into(), format: NodeFormat::HlsFmp4 }
        );
        assert_eq!(route(&head("GET /fmp4/0100000001/abc.mp4 HTTP/1.1\r\n\r\n"), &c), Route::Fmp4Play { stream_id: "0100000001".into(), token: Some("abc".into()) });
        assert_eq!(route(&head("GET /rtp/a.b.live.mp4 HTTP/1.1\r\n\r\n"), &c), Route::NodePlay { app: "rtp".into(), stream: "a.b".into(), format: NodeFormat::Fmp4 });
        assert_eq!(route(&head("GET /rtp/s.live.ts?callId=1 HTTP/1.1\r\n\r\n"), &c), Route::NodePlay { app: "rtp".into(), stream: "s".into(), format: NodeFormat::Ts });
        assert_eq!(
            route(&head("GET /hls/0100000001/abc HTTP/1.1\r\n\r\n"), &c),
            Route::Redirect { location: "/hls/0100000001/abc/index.m3u8".into() }
        );
    }

    fn secrets() -> Secrets {
        let keys = [
            crate::auth::ApiKeyConfig { name: "v".into(), role: Role::Viewer, sha256: crate::auth::key_hash("view-key") },
            crate::auth::ApiKeyConfig { name: "a".into(), role: Role::Admin, sha256: crate::auth::key_hash("admin-key") },
        ];
        Secrets::new(&keys, vec![b"a-secret-of-some-length".to_vec()], 60).unwrap()
    }

    #[test]
    fn api_needs_a_key_in_a_header_and_a_role() {
        let s = secrets();
        let play = s.issue(&Scope::Stream("0100000001".into()), 100, None).unwrap();
        let ok = |raw: &str| api_caller(&s, &head(raw)).map(|(_, r)| r);
        assert_eq!(ok("GET /api/streams HTTP/1.1\r\nAuthorization: Bearer view-key\r\n\r\n"), Ok(Role::Viewer));
        assert_eq!(ok("GET /api/streams HTTP/1.1\r\nauthorization: bearer admin-key\r\n\r\n"), Ok(Role::Admin));
        assert_eq!(ok("GET /api/streams HTTP/1.1\r\ngmv-token: admin-key\r\n\r\n"), Ok(Role::Admin));
        assert!(ok("GET /api/streams?token=admin-key HTTP/1.1\r\n\r\n").is_err(), "never from the URL");
        assert!(ok(&format!("GET /api/streams HTTP/1.1\r\ngmv-token: {play}\r\n\r\n")).is_err(), "a play token is no key");
        assert!(ok("GET /api/streams HTTP/1.1\r\nAuthorization: Basic admin-key\r\n\r\n").is_err());
        assert_eq!(required_role("GET", &["api", "streams"]), Role::Viewer);
        assert_eq!(required_role("DELETE", &["api", "streams", "1"]), Role::Operator);
        assert_eq!(required_role("POST", &["api", "play-tokens"]), Role::Viewer);
        assert_eq!(required_role("GET", &["api", "config"]), Role::Admin);
        assert_eq!(required_role("GET", &["api", "upstreams"]), Role::Operator);
        // A device's password is set by an admin; an alarm acknowledged by an operator.
        assert_eq!(required_role("POST", &["api", "events", "7", "ack"]), Role::Operator);
        assert_eq!(required_role("GET", &["api", "sip", "connect-info"]), Role::Viewer);
        for (method, path) in [("POST", &["api", "devices"][..]), ("PUT", &["api", "devices", "34020000001320000001"])] {
            assert_eq!(required_role(method, path), Role::Admin, "{method} {path:?}");
        }
        for (method, path) in [("POST", &["api", "upstreams"][..]), ("PUT", &["api", "upstreams", "city"]), ("PUT", &["api", "upstreams", "city", "shared"]), ("DELETE", &["api", "upstreams", "city"])] {
            assert_eq!(required_role(method, path), Role::Admin, "{method} {path:?}");
        }
    }

    #[test]
    fn play_takes_its_token_or_a_key_in_a_header() {
        let s = secrets();
        let scope = Scope::Stream("0100000001".into());
        let t = s.issue(&scope, 100, None).unwrap();
        let ip = std::net::IpAddr::from([127, 0, 0, 1]);
        let check = |raw: &str, path: Option<&str>| play_allowed(&s, &head(raw), path, &scope, 50, ip).is_ok();
        assert!(check("GET /flv/x/y HTTP/1.1\r\n\r\n", Some(&t)));
        assert!(check(&format!("GET /p?token={t} HTTP/1.1\r\n\r\n"), None));
        assert!(check(&format!("GET /p HTTP/1.1\r\ngmv-token: {t}\r\n\r\n"), None));
        assert!(check("GET /p HTTP/1.1\r\ngmv-token: view-key\r\n\r\n", None));
        assert!(!check("GET /flv/x/y HTTP/1.1\r\n\r\n", Some("view-key")), "a key in a URL does not play");
        assert!(!check("GET /p HTTP/1.1\r\n\r\n", None));
        assert!(play_allowed(&s, &head("GET /p HTTP/1.1\r\n\r\n"), Some(&t), &scope, 100, ip).is_err(), "expired");
    }

    #[test]
    fn talk_names_its_channels_in_the_path_or_the_query() {
        let config = crate::config::Config::default();
        let route = |raw: &str| route(&head(raw), &config);
        let one = route("POST /whip/broadcast/34020000001320000001/34020000001370000001 HTTP/1.1\r\n\r\n");
        assert!(matches!(one, Route::WhipTalk { channels: Some(c) } if c == [("34020000001320000001".to_string(), "34020000001370000001".to_string())]));
        let two = route("POST /whip/broadcast?channels=d1:c1,d2%3Ac2 HTTP/1.1\r\n\r\n");
        assert!(matches!(two, Route::WhipTalk { channels: Some(c) } if c.len() == 2 && c[1] == ("d2".to_string(), "c2".to_string())));
        for bad in ["", "?channels=", "?channels=d1", "?channels=d1:c1,:c2", "?channels=a:b:c"] {
            assert!(matches!(route(&format!("POST /whip/broadcast{bad} HTTP/1.1\r\n\r\n")), Route::WhipTalk { channels: None }), "{bad}");
        }
        assert!(matches!(route("DELETE /whip/0100000001/session/abc HTTP/1.1\r\n\r\n"), Route::WhepSession { .. }));
        assert!(matches!(route("GET /whip/broadcast/d/c HTTP/1.1\r\n\r\n"), Route::NotFound));
    }
}
