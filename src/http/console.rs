//! The web console: static files embedded in the binary (one binary still runs everything,
//! offline), served at `/` and `/console/...` without credentials (they hold no secrets; the
//! page signs in with an API key and calls the API like any client).

use super::conn::HttpConn;
use super::response::{respond, respond_error};

/// (path under `/console/`, content type, bytes).
const ASSETS: [(&str, &str, &[u8]); 10] = [
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../console/app.js")),
    ("app.css", "text/css; charset=utf-8", include_bytes!("../../console/app.css")),
    ("vendor/mpegts.js", "text/javascript; charset=utf-8", include_bytes!("../../console/vendor/mpegts.js")),
    ("vendor/LICENSE-mpegts.js.txt", "text/plain; charset=utf-8", include_bytes!("../../console/vendor/LICENSE-mpegts.js.txt")),
    ("vendor/hls.min.js", "text/javascript; charset=utf-8", include_bytes!("../../console/vendor/hls.min.js")),
    ("vendor/LICENSE-hls.js.txt", "text/plain; charset=utf-8", include_bytes!("../../console/vendor/LICENSE-hls.js.txt")),
    // The H.265 decoder for browsers without one (FFmpeg's, LGPL; console/vendor/hevc/src).
    ("hevc-worker.js", "text/javascript; charset=utf-8", include_bytes!("../../console/hevc-worker.js")),
    ("vendor/hevc/hevcdec.js", "text/javascript; charset=utf-8", include_bytes!("../../console/vendor/hevc/hevcdec.js")),
    ("vendor/hevc/hevcdec.wasm", "application/wasm", include_bytes!("../../console/vendor/hevc/hevcdec.wasm")),
    ("vendor/hevc/LICENSE-hevcdec.txt", "text/plain; charset=utf-8", include_bytes!("../../console/vendor/hevc/LICENSE-hevcdec.txt")),
];
const INDEX: &[u8] = include_bytes!("../../console/index.html");

/// `file`: None for the page itself.
pub async fn serve(conn: &mut HttpConn, file: Option<&str>) {
    match file {
        None => respond(conn, 200, "text/html; charset=utf-8", INDEX).await,
        Some(path) => match ASSETS.iter().find(|(p, _, _)| *p == path) {
            Some((_, content_type, body)) => respond(conn, 200, content_type, body).await,
            None => respond_error(conn, 404, "not_found", "no such console file").await,
        },
    }
}
