//! Writing simple HTTP responses.

use super::conn::HttpConn;
use futures_lite::AsyncWriteExt;

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Internal Server Error",
    }
}

/// A response head: status line, `extra` header lines (each ending in CRLF), the connection's
/// common headers (CORS), `Connection: keep-alive` or `close`, blank line.
pub fn head(conn: &HttpConn, status: u16, extra: &str) -> String {
    let connection = if conn.keep_alive { "keep-alive" } else { "close" };
    format!("HTTP/1.1 {status} {}\r\n{extra}{}Connection: {connection}\r\n\r\n", reason(status), conn.common_headers())
}

/// Writes a whole response; closes the connection unless it is kept for another request.
async fn send(conn: &mut HttpConn, status: u16, out: &[u8]) {
    if let Err(error) = conn.write_all(out).await {
        tracing::debug!(%error, status, "response write failed");
        conn.keep_alive = false;
    }
    end(conn).await;
}

/// After a response: closes the connection unless it is kept.
pub async fn end(conn: &mut HttpConn) {
    if !conn.keep_alive {
        let _ = conn.close().await;
    }
}

pub async fn respond(conn: &mut HttpConn, status: u16, content_type: &str, body: &[u8]) {
    respond_with(conn, status, "", content_type, body).await;
}

/// A whole response with more header lines (`extra`, each ending in CRLF).
pub async fn respond_with(conn: &mut HttpConn, status: u16, extra: &str, content_type: &str, body: &[u8]) {
    let mut out = head(conn, status, &format!("{extra}Content-Type: {content_type}\r\nContent-Length: {}\r\n", body.len())).into_bytes();
    out.extend_from_slice(body);
    send(conn, status, &out).await;
}

pub async fn respond_json(conn: &mut HttpConn, status: u16, value: &serde_json::Value) {
    respond(conn, status, "application/json", value.to_string().as_bytes()).await;
}

/// A response with no body: `extra` header lines only.
pub async fn respond_empty(conn: &mut HttpConn, status: u16, extra: &str) {
    let out = head(conn, status, &format!("{extra}Content-Length: 0\r\n"));
    send(conn, status, out.as_bytes()).await;
}

/// 302 to `location` (a path on this server).
pub async fn respond_redirect(conn: &mut HttpConn, location: &str) {
    respond_empty(conn, 302, &format!("Location: {location}\r\n")).await;
}

/// Errors are JSON: {"code": "not_found", "message": "..."}.
pub async fn respond_error(conn: &mut HttpConn, status: u16, code: &str, message: &str) {
    respond_json(conn, status, &serde_json::json!({ "code": code, "message": message })).await;
}
