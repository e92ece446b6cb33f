//! A pull source's stream on its owning shard: the stream is opened `local`, and frames come
//! whole over one end of a socket pair whose other end the pull thread writes
//! (`proto::frame_wire`): owned bytes, bounded by the socket's buffer, no lock. The stream
//! lives while that end is open, across the source's reconnections; the pull thread closing
//! it (the proxy deleted or changed) closes the stream, and the stream closing (the API)
//! closes the socket, which tells the pull thread.

use super::Shard;
use super::msg::{OpenError, StreamInfo, StreamSpec};
use super::stream::{close_stream, open_stream};
use crate::proto::frame_wire::Decoder;
use futures_lite::AsyncReadExt;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;

/// One read of the socket.
const READ_BYTES: usize = 256 << 10;

/// Opens `spec` (made `local`) and returns the socket end the pull thread writes frames to.
pub fn open(shard: &Rc<Shard>, mut spec: StreamSpec, transport: &'static str, format: &'static str) -> Result<(StreamInfo, OwnedFd), OpenError> {
    spec.local = true;
    let ssrc = spec.ssrc;
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(|e| OpenError::NoPort(format!("socket pair: {e}")))?;
    let info = open_stream(shard, spec)?;
    let Some(stream) = shard.streams.borrow().get(&ssrc).cloned() else { return Err(OpenError::NoPort("stream gone at once".into())) };
    // SAFETY: `ours` is a connected Unix stream socket this executor alone owns from here.
    let mut conn = unsafe { glommio::net::UnixStream::from_raw_fd(ours.into_raw_fd()) };
    let weak_shard = Rc::downgrade(shard);
    let weak = Rc::downgrade(&stream);
    let task = glommio::spawn_local(async move {
        let mut decoder = Decoder::default();
        let mut buf = vec![0u8; READ_BYTES];
        let why = loop {
            let n = match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break "the pull source closed",
                Ok(n) => n,
            };
            let Some(stream) = weak.upgrade() else { return };
            decoder.push(&buf[..n]);
            loop {
                match decoder.pop() {
                    Ok(Some(frame)) => stream.on_local_frame(frame, transport, format),
                    Ok(None) => break,
                    Err(error) => {
                        tracing::error!(ssrc, ?error, "pull source frames unreadable; stream closed");
                        return close_if_ours(&weak_shard, &weak, ssrc, "pull source frames unreadable");
                    }
                }
            }
        };
        close_if_ours(&weak_shard, &weak, ssrc, why);
    })
    .detach();
    stream.own_task(task);
    Ok((info, OwnedFd::from(theirs)))
}

fn close_if_ours(shard: &std::rc::Weak<Shard>, stream: &std::rc::Weak<super::stream::Stream>, ssrc: u32, why: &str) {
    let (Some(shard), Some(stream)) = (shard.upgrade(), stream.upgrade()) else { return };
    let ours = shard.streams.borrow().get(&ssrc).is_some_and(|s| Rc::ptr_eq(s, &stream));
    if ours {
        close_stream(&shard, ssrc, why);
    }
}
