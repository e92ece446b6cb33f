//! HTTP-FLV sources (`http://…/x.flv`, what ZLMediaKit, SRS, monibuca and many NVRs serve):
//! one GET, then the body's tags (`proto::flv_read`) through the FLV demuxer RTMP pushes use
//! (`proto::flv_demux`) onto the stream. Also the tag-to-frame step RTMP pulls share.

use super::http;
use super::session::{CONNECT_TIMEOUT, Ended, FrameSink, SILENCE_TIMEOUT};
use crate::proto::flv_demux::TagDemuxer;
use crate::proto::flv_read::{FlvReader, TAG_AUDIO, TAG_VIDEO};
use crate::proto::frame::TimestampUnwrapper;
use bytes::BytesMut;

/// Audio and video tag bodies to frames on the stream, with their 32-bit ms times unwrapped.
pub struct TagFeed {
    demux: TagDemuxer,
    clock: TimestampUnwrapper,
    warned: bool,
}

impl Default for TagFeed {
    fn default() -> TagFeed {
        TagFeed::new()
    }
}

impl TagFeed {
    pub fn new() -> TagFeed {
        TagFeed { demux: TagDemuxer::new(), clock: TimestampUnwrapper::new(32), warned: false }
    }

    /// One tag body (`TAG_AUDIO` or `TAG_VIDEO`; others are skipped): a frame written to the
    /// sink, or a bad body counted and skipped.
    pub async fn tag(&mut self, sink: &mut FrameSink, kind: u8, time_ms: u32, body: &[u8]) -> Result<(), Ended> {
        let time = self.clock.unwrap(u64::from(time_ms));
        let out = match kind {
            TAG_VIDEO => self.demux.video(body, time),
            TAG_AUDIO => self.demux.audio(body, time),
            _ => return Ok(()),
        };
        match out {
            Ok(Some(frame)) => sink.send(&frame).await,
            Ok(None) => Ok(()),
            Err(error) => {
                sink.dropped();
                if !self.warned {
                    self.warned = true;
                    tracing::warn!(%error, "pull source: FLV tag dropped (further ones are logged at debug)");
                } else {
                    tracing::debug!(%error, "pull source: FLV tag dropped");
                }
                Ok(())
            }
        }
    }
}

/// One attempt: the GET, then tags until the source ends or fails or the stream goes.
pub async fn pull_once(url: &url::Url, sink: &mut FrameSink) -> Ended {
    let mut response = match http::get(url).await {
        Ok(r) => r,
        Err(why) => return Ended::Source(why),
    };
    let mut reader = FlvReader::new();
    let mut feed = TagFeed::new();
    let mut buf = BytesMut::new();
    let mut playing = false;
    let started = std::time::Instant::now();
    loop {
        buf.clear();
        let wait = if playing { SILENCE_TIMEOUT } else { CONNECT_TIMEOUT.saturating_sub(started.elapsed()) };
        match tokio::time::timeout(wait, response.read_into(&mut buf)).await {
            Err(_) => return Ended::Source(format!("silent for {} s", wait.as_secs())),
            Ok(Err(why)) => return Ended::Source(why),
            Ok(Ok(false)) => return Ended::Source("the source ended the stream".into()),
            Ok(Ok(true)) => {}
        }
        reader.push(&buf);
        loop {
            let tag = match reader.next_tag() {
                Ok(Some(tag)) => tag,
                Ok(None) => break,
                Err(e) => return Ended::Source(e.to_string()),
            };
            if !playing {
                // The FLV header and a first tag came: it is an FLV stream.
                playing = true;
                sink.playing(url, None, None);
            }
            if let Err(ended) = feed.tag(sink, tag.kind, tag.time_ms, &tag.body).await {
                return ended;
            }
        }
    }
}
