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
    if name == "downloadFile" {
        return download_file(front, node, conn, head).await;
    }
    let Some(body) = body(conn, head).await else { return };
    let is_form = head.header("content-type").is_none_or(|t| t.starts_with("application/x-www-form-urlencoded"));
    let p = params(&head.query, if is_form { &body } else { &[] });
    match crate::node::api::call(node, name, &p).await {
        Reply::Json(v) => respond(conn, 200, JSON, v.to_string().as_bytes()).await,
        Reply::Jpeg(jpeg) => respond(conn, 200, "image/jpeg", &jpeg).await,
        Reply::NoSuchCall => respond_empty(conn, 404, "").await,
    }
}

/// `downloadFile?file_path=` (wvp's download and cloud-record URL, no secret in it): allowed
/// as ZLMediaKit allows it (the secret; else `on_http_access` when set; else an address in
/// `node.download_allow_ips`) or by a gmv credential for the recording; then served with
/// byte ranges, if the path names a recording of this node.
async fn download_file(front: &Front, node: &crate::node::Node, conn: &mut HttpConn, head: &RequestHead) {
    use crate::node::download_file::{FileRefused, allowed_ip, folders, resolve};
    node.counters.borrow_mut().api_calls += 1;
    if head.content_length > 0 {
        conn.keep_alive = false; // its body is not read: the connection is out of step
    }
    let p = params(&head.query, &[]);
    let Some(file_path) = p.get("file_path").filter(|f| !f.is_empty()).cloned() else {
        return respond(conn, 200, JSON, crate::node::zlm::missing(&["file_path"]).to_string().as_bytes()).await;
    };
    let peer = conn.peer_ip();
    let stem = std::path::Path::new(&file_path).file_stem().and_then(|s| s.to_str()).unwrap_or("").to_string();
    let now = super::play_tokens::unix_s();
    let allowed = crate::node::api::secret_ok(node, p.get("secret"))
        || super::routes::play_allowed(&front.shard.secrets(), head, None, &crate::auth::Scope::Record(stem), now, peer).is_ok()
        || match node.hooks.configured("on_http_access") {
            true => node.http_access(&file_path, &head.query, std::net::SocketAddr::new(peer, 0)).await,
            false => allowed_ip(&front.shard.config.node.download_allow_ips, peer),
        };
    if !allowed {
        let refused = {
            let mut c = node.counters.borrow_mut();
            c.files_refused += 1;
            c.files_refused
        };
        // Anyone may ask: a line at 1, 2, 4, ... refusals, all counted.
        if refused.is_power_of_two() {
            tracing::warn!(%peer, file_path, refused, "downloadFile refused: no secret, credential, on_http_access consent or allowed address");
        }
        conn.keep_alive = false;
        return respond(conn, 401, "text/plain; charset=utf-8", b"[auth failed]: downloadFile needs the secret, a play token, on_http_access's consent or an address in node.download_allow_ips").await;
    }
    let data_dir = front.shard.config.data_dir.clone();
    let asked = file_path.clone();
    let resolved = glommio::executor().spawn_blocking(move || resolve(&asked, &folders(&data_dir))).await;
    match resolved {
        Ok((folder, name)) => {
            node.counters.borrow_mut().files_downloaded += 1;
            super::records_serve::serve(&folder, conn, &name, head.header("range")).await;
        }
        Err(FileRefused::NoSuchFile) => respond(conn, 404, "text/plain; charset=utf-8", b"no such recording").await,
        Err(FileRefused::OutsideFolders) => {
            let bad = {
                let mut c = node.counters.borrow_mut();
                c.files_bad_path += 1;
                c.files_bad_path
            };
            if bad.is_power_of_two() {
                tracing::warn!(%peer, file_path, bad, "downloadFile refused: the path names no recording of this node");
            }
            respond(conn, 401, "text/plain; charset=utf-8", b"file_path names no recording of this node").await;
        }
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

/// What a node play URL's viewer may watch.
pub enum Watch {
    /// A stream of the shards, by SSRC.
    Stream(u32),
    /// A recording published by `loadMP4File`, from where its control says.
    Vod { stem: String, control: std::rc::Rc<crate::node::vod::PlaybackControl> },
}

/// Whether the viewer of a node play URL may watch, and what; None once answered (401 as
/// ZLMediaKit words it, 404, or gmv's own refusal when no `on_play` hook is set).
pub async fn play_allowed(front: &Front, conn: &mut HttpConn, head: &RequestHead, app: &str, stream: &str, schema: &str) -> Option<Watch> {
    let Some(node) = &front.node else {
        respond_empty(conn, 404, "").await;
        return None;
    };
    let peer = std::net::SocketAddr::new(conn.peer_ip(), 0);
    match node.play(app, stream, schema, &head.query, peer).await {
        PlayDecision::Allowed(key) => Some(Watch::Stream(key)),
        PlayDecision::Vod { stem, control, needs_credential: false } => Some(Watch::Vod { stem, control }),
        PlayDecision::Vod { stem, control, needs_credential: true } => {
            let scope = crate::auth::Scope::Record(stem.clone());
            match super::routes::play_allowed(&front.shard.secrets(), head, None, &scope, super::play_tokens::unix_s(), conn.peer_ip()) {
                Ok(()) => Some(Watch::Vod { stem, control }),
                Err((status, code, message)) => {
                    super::response::respond_error(conn, status, code, &format!("{message} (no on_play hook is set: gmv's play tokens or an API key decide)")).await;
                    None
                }
            }
        }
        PlayDecision::NeedsCredential(key) => {
            let scope = crate::auth::Scope::Stream(crate::proto::ssrc::stream_id(key));
            match super::routes::play_allowed(&front.shard.secrets(), head, None, &scope, super::play_tokens::unix_s(), conn.peer_ip()) {
                Ok(()) => Some(Watch::Stream(key)),
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
