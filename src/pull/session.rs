//! What every pull source shares: the retry loop with backoff around one attempt of its kind,
//! and the sink its frames go to (the stream's socket, `proto::frame_wire`) with the counts
//! the API shows.

use super::{PullState, Status, Transport};
use crate::proto::frame::Frame;
use crate::proto::frame_wire;
use bytes::BytesMut;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// Waits between attempts: doubling from the first to the last.
pub const RETRY_BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Playing this long counts as a success: the next failure waits the least again.
const STABLE_PLAY: Duration = Duration::from_secs(30);
/// Connecting to playing (RTSP DESCRIBE to PLAY, RTMP handshake to play, HTTP request to its
/// answer), at most.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A playing source silent this long is dropped and dialled again.
pub const SILENCE_TIMEOUT: Duration = Duration::from_secs(10);

/// The protocols pulled, by URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Rtsp,
    Rtmp,
    /// `http://…` that is not a playlist: an FLV stream (HTTP-FLV).
    HttpFlv,
    /// `http://….m3u8`.
    Hls,
}

impl Kind {
    pub fn of(url: &url::Url) -> Option<Kind> {
        match url.scheme() {
            "rtsp" | "rtsps" => Some(Kind::Rtsp),
            "rtmp" => Some(Kind::Rtmp),
            "http" | "https" if url.path().ends_with(".m3u8") => Some(Kind::Hls),
            "http" | "https" => Some(Kind::HttpFlv),
            _ => None,
        }
    }

    /// The stream's `payload` in the API.
    pub fn format(self) -> &'static str {
        match self {
            Kind::Rtsp => "rtsp",
            Kind::Rtmp => "rtmp",
            Kind::HttpFlv => "flv",
            Kind::Hls => "hls",
        }
    }
}

/// Why one attempt ended.
pub enum Ended {
    /// The stream's socket closed (the stream was closed): the proxy stops.
    SinkClosed,
    /// The source failed or ended: try again after the backoff.
    Source(String),
}

impl From<String> for Ended {
    fn from(why: String) -> Ended {
        Ended::Source(why)
    }
}

/// Pulls `url` into `sink` until the sink closes, retrying with backoff; reports into `state`.
pub async fn run(url: url::Url, transport: Transport, sink: tokio::net::UnixStream, state: Arc<Mutex<PullState>>) {
    let Some(kind) = Kind::of(&url) else {
        // The API checked the URL; a file edited by hand is refused here.
        super::set(&state, |s| {
            s.status = Status::Stopped;
            s.last_error = Some(format!("{}:// is not pulled", url.scheme()));
        });
        return;
    };
    let mut sink = FrameSink { sock: sink, wire: BytesMut::new(), state: state.clone() };
    let mut backoff = RETRY_BACKOFF_MIN;
    loop {
        super::set(&state, |s| s.status = Status::Connecting);
        let started = Instant::now();
        let attempt = match kind {
            Kind::Rtsp => super::rtsp::pull_once(&url, transport, &mut sink).await,
            Kind::Rtmp => super::rtmp::pull_once(&url, &mut sink).await,
            Kind::HttpFlv => super::flv::pull_once(&url, &mut sink).await,
            Kind::Hls => super::hls::pull_once(&url, &mut sink).await,
        };
        let why = match attempt {
            Ended::SinkClosed => {
                super::set(&state, |s| s.status = Status::Stopped);
                return;
            }
            Ended::Source(why) => why,
        };
        if started.elapsed() >= STABLE_PLAY {
            backoff = RETRY_BACKOFF_MIN;
        }
        let status = if why.contains("401") { Status::Unauthorized } else { Status::Retrying };
        tracing::info!(url = %super::redacted(&url), why, retry_in_s = backoff.as_secs(), "pull source ended; retrying");
        super::set(&state, |s| {
            s.status = status;
            s.last_error = Some(why.clone());
            s.retry_in_ms = Some(backoff.as_millis() as u64);
            s.failures += 1;
        });
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
    }
}

/// The stream's socket, and the proxy's state its counts go to.
pub struct FrameSink {
    sock: tokio::net::UnixStream,
    wire: BytesMut,
    pub state: Arc<Mutex<PullState>>,
}

impl FrameSink {
    /// The source plays (its codecs, where the protocol says them before the first frame).
    pub fn playing(&self, url: &url::Url, video: Option<&str>, audio: Option<&str>) {
        super::set(&self.state, |s| {
            s.status = Status::Playing;
            s.video = video.map(str::to_string);
            s.audio = audio.map(str::to_string);
            s.last_error = None;
            s.retry_in_ms = None;
            s.connects += 1;
        });
        tracing::info!(url = %super::redacted(url), video, audio, "pull source playing");
    }

    /// A frame of the source that could not be read (counted; the source goes on).
    pub fn dropped(&self) {
        super::set(&self.state, |s| s.dropped_frames += 1);
    }

    /// Writes a frame to the stream; `SinkClosed` once the stream is gone.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), Ended> {
        self.wire.clear();
        if !frame_wire::encode(frame, &mut self.wire) {
            self.dropped();
            return Ok(());
        }
        if self.sock.write_all(&self.wire).await.is_err() {
            return Err(Ended::SinkClosed);
        }
        super::set(&self.state, |s| {
            s.frames += 1;
            // Sources that say their codecs only with their frames (FLV, TS).
            let slot = if frame.codec.is_video() { &mut s.video } else { &mut s.audio };
            slot.get_or_insert_with(|| frame.codec.name().to_string());
        });
        Ok(())
    }
}

/// Runs `f` on `input`, turning a panic inside it into an error: the RTMP library panics on
/// some malformed input (rml_rtmp 0.8: an AMF0 command with fewer than three values), and a
/// hostile source must cost its connection, never the pull thread.
pub fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|_| "the protocol library failed on the input (dropped)".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_their_protocol() {
        let kind = |u: &str| Kind::of(&url::Url::parse(u).unwrap());
        assert_eq!(kind("rtsp://h/x"), Some(Kind::Rtsp));
        assert_eq!(kind("rtmp://h/live/x?token=1"), Some(Kind::Rtmp));
        assert_eq!(kind("http://h/live/x.flv"), Some(Kind::HttpFlv));
        assert_eq!(kind("http://h/live/x.m3u8?t=1"), Some(Kind::Hls));
        assert_eq!(kind("ftp://h/x"), None);
    }
}
