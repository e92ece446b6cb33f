//! The ZLMediaKit node API and play URLs over HTTP: parameters from the query and the form
//! body, answers with ZLMediaKit's content types and status codes. The work is in `node`.

use super::Front;
use super::conn::HttpConn;
use super::request::{BODY_BYTES_MAX, RequestHead};
use super::response::{respond, respond_empty};
use crate::node::PlayDecision;
use crate::node::api::{Params, Reply};

const JSON: &str = "application/json; charset=utf-8";

/// Query and `application/x-www-form-urlencoded` body, decoded; a body field wins over the
/// query's of the same name.
pub fn params(query: &str, body: &[u8]) -> Params {
    let mut p: Params = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    p.extend(form_urlencoded::parse(body).into_owned());
    p
}

/// The request's body (bounded, within the API's read timeout); None once answered 413/400.
async fn body(conn: &mut HttpConn, head: &RequestHead) -> Option<Vec<u8>> {
    if head.content_length > BODY_BYTES_MAX {
        conn.keep_alive = false;
        respond_empty(conn, 413, "").await;
        return None;
    }
    let read = glommio::timer::timeout(super::api::BODY_READ_TIMEOUT, async { Ok(super::api::read_body(conn, head).await) }).await;
    if let Ok(Some(body)) = read {
        return Some(body);
    }
    conn.keep_alive = false;
    respond_empty(conn, 400, "").await;
    None
}

pub async fn serve_api(front: &Front, conn: &mut HttpConn, head: &RequestHead, name: &str) {
    let Some(node) = &front.node else { return respond_empty(conn, 404, "").await };
    let Some(body) = body(conn, head).await else { return };
    let is_form = head.header("content-type").is_none_or(|t| t.starts_with("application/x-www-form-urlencoded"));
    let p = params(&head.query, if is_form { &body } else { &[] });
    match crate::node::api::call(node, name, &p).await {
        Reply::Json(v) => respond(conn, 200, JSON, v.to_string().as_bytes()).await,
        Reply::Jpeg(jpeg) => respond(conn, 200, "image/jpeg", &jpeg).await,
        Reply::NoSuchCall => respond_empty(conn, 404, "").await,
    }
}

/// A hook a media node posted (role control): answered as wvp answers ZLMediaKit.
pub async fn serve_hook(front: &Front, conn: &mut HttpConn, head: &RequestHead, name: &str) {
    let Some(body) = body(conn, head).await else { return };
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let answer = match &front.control {
        Some(control) => crate::control::nodes::answer_hook(control, name, &body, conn.peer_ip(), super::play_tokens::unix_s()),
        None => serde_json::json!({ "code": -1, "msg": "SIP is disabled: no control plane here" }),
    };
    respond(conn, 200, JSON, answer.to_string().as_bytes()).await;
}

/// Whether the viewer of a node play URL may watch: the stream's SSRC, or None once answered
/// (401 as ZLMediaKit words it, 404, or gmv's own refusal when no `on_play` hook is set).
pub async fn play_allowed(front: &Front, conn: &mut HttpConn, head: &RequestHead, app: &str, stream: &str, hls: bool) -> Option<u32> {
    let Some(node) = &front.node else {
        respond_empty(conn, 404, "").await;
        return None;
    };
    let schema = if hls { "hls" } else { "rtmp" };
    let peer = std::net::SocketAddr::new(conn.peer_ip(), 0);
    match node.play(app, stream, schema, &head.query, peer).await {
        PlayDecision::Allowed(key) => Some(key),
        PlayDecision::NeedsCredential(key) => {
            let scope = crate::auth::Scope::Stream(crate::proto::ssrc::stream_id(key));
            match super::routes::play_allowed(&front.shard.secrets(), head, None, &scope, super::play_tokens::unix_s(), conn.peer_ip()) {
                Ok(()) => Some(key),
                Err((status, code, message)) => {
                    super::response::respond_error(conn, status, code, &format!("{message} (no on_play hook is set: gmv's play tokens or an API key decide)")).await;
                    None
                }
            }
        }
        PlayDecision::Refused(code, msg) => {
            tracing::info!(stream, code, msg, peer = %conn.peer_ip(), "play refused by on_play");
            let text = format!("[auth failed]: code:{code} msg:{msg:?}");
            respond(conn, 401, "text/plain; charset=utf-8", text.as_bytes()).await;
            None
        }
        PlayDecision::NotFound => {
            let page = "<html><head><title>404 Not Found</title></head><body><center><h1>no such stream</h1></center><hr><center>gmv</center></body></html>";
            respond(conn, 404, "text/html; charset=utf-8", page.as_bytes()).await;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn params_from_query_and_form_body() {
        let p = super::params("secret=q&url=rtsp%3A%2F%2F127.0.0.1%2Frtp%2Fs", b"secret=fixture&stream_id=a+b&x=%E5%88%9B");
        assert_eq!(p["secret"], "fixture", "the body wins");
        assert_eq!(p["url"], "rtsp://127.0.0.1/rtp/s");
        assert_eq!(p["stream_id"], "a b");
        assert_eq!(p["x"], "创");
    }
}
