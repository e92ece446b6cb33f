//! Writing simple HTTP responses.

use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

pub async fn respond(conn: &mut TcpStream, status: u16, content_type: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\nAccess-Control-Allow-Origin: *\r\n\r\n",
        reason(status),
        body.len()
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    if let Err(error) = conn.write_all(&out).await {
        tracing::debug!(%error, status, "response write failed");
    }
    let _ = conn.close().await;
}

pub async fn respond_json(conn: &mut TcpStream, status: u16, value: &serde_json::Value) {
    respond(conn, status, "application/json", value.to_string().as_bytes()).await;
}

/// 302 to `location` (a path on this server).
pub async fn respond_redirect(conn: &mut TcpStream, location: &str) {
    let head =
        format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\nAccess-Control-Allow-Origin: *\r\n\r\n");
    if let Err(error) = conn.write_all(head.as_bytes()).await {
        tracing::debug!(%error, "redirect write failed");
    }
    let _ = conn.close().await;
}

/// Errors are JSON: {"code": "not_found", "message": "..."}.
pub async fn respond_error(conn: &mut TcpStream, status: u16, code: &str, message: &str) {
    respond_json(conn, status, &serde_json::json!({ "code": code, "message": message })).await;
}
