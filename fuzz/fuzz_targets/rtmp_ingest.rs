//! What a publisher's bytes reach: rml_rtmp's server session (chunking and AMF commands, before
//! and after the publish token is checked) and the FLV tag demuxer of the audio and video
//! messages it raises, as `shard::rtmp` drives them (connect and publish accepted; input
//! through `session_input`, which turns the library's panics into a dropped connection).
#![no_main]
use gmv::proto::flv_demux::TagDemuxer;
use libfuzzer_sys::fuzz_target;
use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult};

fuzz_target!(|data: &[u8]| {
    let Ok((mut session, _)) = ServerSession::new(ServerSessionConfig::new()) else { return };
    let mut demux = TagDemuxer::new();
    // Pieces of the input as reads: a length byte, then that many bytes.
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let (piece, tail) = tail.split_at((usize::from(len) * 16 + 1).min(tail.len()));
        rest = tail;
        let Ok(results) = gmv::shard::rtmp::session_input(&mut session, piece) else { return };
        for r in results {
            let ServerSessionResult::RaisedEvent(event) = r else { continue };
            match event {
                ServerSessionEvent::ConnectionRequested { request_id, .. } | ServerSessionEvent::PublishStreamRequested { request_id, .. } => {
                    let _ = session.accept_request(request_id);
                }
                ServerSessionEvent::VideoDataReceived { data, timestamp, .. } => {
                    let _ = demux.video(&data, u64::from(timestamp.value));
                }
                ServerSessionEvent::AudioDataReceived { data, timestamp, .. } => {
                    let _ = demux.audio(&data, u64::from(timestamp.value));
                }
                _ => {}
            }
        }
    }
});
