//! WHEP (WebRTC-HTTP Egress Protocol, RFC 9725): a browser POSTs its SDP offer for a stream
//! (its play token in the path, `?token=` or a header) and gets the answer (201, `Location`
//! naming the session, which DELETE ends). The offer is read and the token checked where the
//! request lands; the stream's own shard answers (`shard::webrtc`). WHIP (RFC 9725's ingest
//! twin) the same way for a microphone: `/whip/broadcast/{device}/{channel}`, authorised as the
//! broadcast API is, opens a talk stream and a broadcast from it to the channel.

use super::conn::HttpConn;
use super::request::RequestHead;
use super::response::respond_error;
use crate::shard::Shard;
use crate::shard::msg::Served;
use crate::shard::webrtc::WHEP_OFFER_BYTES_MAX;
use std::net::IpAddr;
use std::rc::Rc;

/// The offer of a WHEP POST, or the answer it got (already sent) when it cannot be read.
/// `typed`: it must say `Content-Type: application/sdp` (ZLMediaKit's players send text/plain).
pub async fn read_offer(conn: &mut HttpConn, head: &RequestHead, typed: bool) -> Option<String> {
    let sdp_type = head.header("content-type").is_some_and(|t| t.trim().to_ascii_lowercase().starts_with("application/sdp"));
    if typed && !sdp_type {
        conn.keep_alive = false;
        respond_error(conn, 415, "unsupported_media_type", "a WHEP offer is Content-Type: application/sdp").await;
        return None;
    }
    if head.content_length == 0 || head.content_length > WHEP_OFFER_BYTES_MAX {
        conn.keep_alive = false;
        respond_error(conn, 413, "offer_size", &format!("an SDP offer of 1 to {WHEP_OFFER_BYTES_MAX} bytes")).await;
        return None;
    }
    let body = super::api::read_body(conn, head).await?;
    match String::from_utf8(body) {
        Ok(offer) => Some(offer),
        Err(_) => {
            respond_error(conn, 400, "bad_offer", "the SDP offer is not UTF-8").await;
            None
        }
    }
}

/// The address to offer browsers (the ICE candidate): `webrtc.candidate_ip`, else the one the
/// request came to, else `sip.host_ip`.
pub fn candidate_ip(shard: &Shard, conn: &HttpConn) -> IpAddr {
    let configured = shard.config.webrtc.candidate_ip;
    let reached = conn.local_ip().filter(|ip| !ip.is_unspecified());
    configured.or(reached).or_else(|| shard.config.sip.host_ip.parse().ok()).unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// On the stream's shard: the answer to an authorised offer, as WHEP has it or (`zlm`) as
/// ZLMediaKit's `/index/api/webrtc` does (HTTP 200, JSON `code`, `id`, `sdp`, `type`).
/// `talk`: a WHIP offer of a microphone for a talk stream, which closes when it is refused.
#[allow(clippy::too_many_arguments)]
pub async fn answer(shard: &Rc<Shard>, conn: &mut HttpConn, ssrc: u32, offer: &str, candidate_ip: IpAddr, peer: IpAddr, zlm: bool, talk: bool) {
    let result = match shard.webrtc.get() {
        Some(webrtc) => webrtc.offer(shard, ssrc, offer, candidate_ip, peer, talk),
        None => Err(crate::shard::webrtc::WhepError::Off),
    };
    if talk && result.is_err() {
        // Nobody will talk into it: its broadcast ends with it.
        crate::shard::stream::close_stream(shard, ssrc, "the microphone's offer was refused");
    }
    if zlm {
        let body = match result {
            Ok(a) => serde_json::json!({ "code": 0, "id": a.session, "sdp": a.sdp, "type": "answer" }),
            // ZLMediaKit's API::Exception.
            Err(e) => serde_json::json!({ "code": -400, "msg": e.http().2 }),
        };
        return super::response::respond_json(conn, 200, &body).await;
    }
    match result {
        Ok(a) => {
            let kind = if talk { "whip" } else { "whep" };
            let location = format!("/{kind}/{}/session/{}", super::routes::stream_id(ssrc), a.session);
            let extra = format!("Location: {location}\r\nAccess-Control-Expose-Headers: Location\r\n");
            super::response::respond_with(conn, 201, &extra, "application/sdp", a.sdp.as_bytes()).await;
        }
        Err(e) => {
            let (status, code, message) = e.http();
            respond_error(conn, status, code, &message).await;
        }
    }
}

/// On the stream's shard: the WHEP DELETE of a session (trickle ICE, PATCH, is not needed by
/// an ICE-lite server and is refused before it gets here).
pub async fn close(shard: &Shard, conn: &mut HttpConn, ssrc: u32, session: &str) {
    match shard.webrtc.get().is_some_and(|w| w.close(ssrc, session)) {
        true => super::response::respond_empty(conn, 200, "").await,
        false => respond_error(conn, 404, "not_found", "no such WHEP session").await,
    }
}

/// Where a WHEP request is authorised: its offer, to be served on the stream's shard.
pub fn served(shard: &Shard, conn: &HttpConn, ssrc: u32, offer: String, zlm: bool) -> Served {
    Served::Whep { ssrc, offer, candidate_ip: candidate_ip(shard, conn), peer: conn.peer_ip(), zlm, talk: false }
}
