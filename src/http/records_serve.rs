//! Recorded MP4 files over HTTP with byte ranges (RFC 9110 §14), so players can seek.

use super::conn::HttpConn;
use super::response::respond_error;
use crate::shard::record::valid_file_name;
use futures_lite::AsyncWriteExt;
use std::path::Path;

/// Bytes read from disk per step while sending.
const READ_CHUNK_BYTES: usize = 256 * 1024;

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` against a file of `len` bytes; None if unsatisfiable.
pub fn parse_range(header: &str, len: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || len == 0 {
        return None; // one range only
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (len.saturating_sub(n), len - 1)
        }
        (a, "") => (a.parse().ok()?, len - 1),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(len - 1)),
    };
    (start <= end && start < len).then_some((start, end))
}

/// Opens a recording in `dir` by its file name (gmv's own names only, never a path); answers
/// 404 and gives None when there is no such file.
pub async fn open_recording(dir: &Path, conn: &mut HttpConn, file: &str) -> Option<glommio::io::BufferedFile> {
    let opened = match valid_file_name(file) {
        true => glommio::io::BufferedFile::open(dir.join(file)).await.ok(),
        false => None,
    };
    if opened.is_none() {
        respond_error(conn, 404, "not_found", "no such recording").await;
    }
    opened
}

pub async fn serve(dir: &Path, conn: &mut HttpConn, file: &str, range: Option<&str>) {
    let Some(f) = open_recording(dir, conn, file).await else { return };
    let len = f.file_size().await.unwrap_or(0);
    let (status, start, end) = match range {
        Some(r) => match parse_range(r, len) {
            Some((s, e)) => (206, s, e),
            None => {
                super::response::respond_empty(conn, 416, &format!("Content-Range: bytes */{len}\r\n")).await;
                let _ = f.close().await;
                return;
            }
        },
        None if len == 0 => (200, 0, 0),
        None => (200, 0, len - 1),
    };
    let body_len = if len == 0 { 0 } else { end - start + 1 };
    let mut extra = format!("Content-Type: video/mp4\r\nAccept-Ranges: bytes\r\nContent-Length: {body_len}\r\n");
    if status == 206 {
        extra.push_str(&format!("Content-Range: bytes {start}-{end}/{len}\r\n"));
    }
    let head = super::response::head(conn, status, &extra);
    let mut result = conn.write_all(head.as_bytes()).await;
    let mut pos = start;
    while result.is_ok() && body_len > 0 && pos <= end {
        let want = READ_CHUNK_BYTES.min((end - pos + 1) as usize);
        match f.read_at(pos, want).await {
            Ok(chunk) if !chunk.is_empty() => {
                pos += chunk.len() as u64;
                result = conn.write_all(&chunk).await;
            }
            _ => break,
        }
    }
    if result.is_err() || (body_len > 0 && pos <= end) {
        conn.keep_alive = false; // the body is not whole: the client must see the end of it
    }
    super::response::end(conn).await;
    let _ = f.close().await;
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000), Some((0, 99)));
        assert_eq!(parse_range("bytes=900-", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=-100", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=990-2000", 1000), Some((990, 999)));
        assert_eq!(parse_range("bytes=1000-", 1000), None);
        assert_eq!(parse_range("bytes=5-2", 1000), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), None);
        assert_eq!(parse_range("items=0-1", 1000), None);
    }
}
