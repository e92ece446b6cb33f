//! URL routing and token authorisation (pure functions of the request head).

use super::request::RequestHead;
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
    /// A recorded MP4 file (token by header or `?token=`).
    Record {
        file: String,
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
    /// Anything under /api/, served by the control executor.
    Api,
    NotFound,
}

pub fn route(head: &RequestHead, config: &Config) -> Route {
    let parts: Vec<&str> = head.path.trim_start_matches('/').split('/').collect();
    let header_token = head.header(TOKEN_HEADER).map(str::to_string);
    match parts.as_slice() {
        ["api", ..] => Route::Api,
        // /hls/{stream_id}/{token}/{file}
        ["hls", stream_id, token, file] if head.method == "GET" => {
            Route::Hls { stream_id: stream_id.to_string(), token: Some(token.to_string()), file: file.to_string() }
        }
        ["hls", stream_id, token] if head.method == "GET" => {
            let query = if head.query.is_empty() { String::new() } else { format!("?{}", head.query) };
            Route::Redirect { location: format!("/hls/{stream_id}/{token}/index.m3u8{query}") }
        }
        // /{node_id}/hls/{stream_id}/{file} with the gmv-token header
        [node, "hls", stream_id, file] if head.method == "GET" && *node == config.node_id => Route::Hls {
            stream_id: stream_id.to_string(),
            token: header_token.clone().or_else(|| head.query_param("token").map(str::to_string)),
            file: file.to_string(),
        },
        ["records", file] if head.method == "GET" => Route::Record { file: file.to_string() },
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
        // /{node_id}/play/{stream_id}.flv with the gmv-token header
        [node, "play", file] if head.method == "GET" && *node == config.node_id => match file.strip_suffix(".flv") {
            Some(stream_id) => {
                Route::FlvPlay { stream_id: stream_id.to_string(), token: header_token.or_else(|| head.query_param("token").map(str::to_string)) }
            }
            None => Route::NotFound,
        },
        _ => Route::NotFound,
    }
}

/// Token from the header or ?token= (API requests).
pub fn request_token(head: &RequestHead) -> Option<&str> {
    head.header(TOKEN_HEADER).or_else(|| head.query_param("token"))
}

pub fn authorised(config: &Config, token: Option<&str>) -> bool {
    let Some(token) = token else { return false };
    config.http.tokens.iter().any(|t| constant_time_eq(t.as_bytes(), token.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
        assert_eq!(route(&h, &c), Route::Hls { stream_id: "0100000001".into(), token: Some("t".into()), file: "7.ts".into() });
        let h = head("GET /34020000002000000001/play/0100000001.flv HTTP/1.1\r\ngmv-token: t\r\n\r\n");
        assert_eq!(route(&h, &c), Route::FlvPlay { stream_id: "0100000001".into(), token: Some("t".into()) });
        assert_eq!(route(&head("GET /999/play/0100000001.flv HTTP/1.1\r\n\r\n"), &c), Route::NotFound);
        assert_eq!(route(&head("DELETE /api/streams/1 HTTP/1.1\r\n\r\n"), &c), Route::Api);
        assert_eq!(
            route(&head("GET /flv/gb/dev1/ch1/tok HTTP/1.1\r\n\r\n"), &c),
            Route::GbPlay { device_id: "dev1".into(), channel_id: "ch1".into(), token: Some("tok".into()) }
        );
        assert_eq!(route(&head("GET /nope HTTP/1.1\r\n\r\n"), &c), Route::NotFound);
        assert_eq!(
            route(&head("GET /hls/0100000001/abc HTTP/1.1\r\n\r\n"), &c),
            Route::Redirect { location: "/hls/0100000001/abc/index.m3u8".into() }
        );
    }

    #[test]
    fn tokens_and_stream_ids() {
        let c = Config::default();
        assert!(authorised(&c, Some("gmv-dev-token")));
        assert!(!authorised(&c, Some("gmv-dev-tokeN")));
        assert!(!authorised(&c, None));
    }
}
