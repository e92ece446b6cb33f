//! What a publisher's bytes reach: rml_rtmp's server session (chunking and AMF commands, before
//! and after the publish token is checked) and the FLV tag demuxer of the audio and video
//! messages it raises, as `shard::rtmp` drives them (connect and publish accepted; input
//! through `session_input`, which turns the library's panics into a dropped connection).
#![no_main]
use gmv::proto::flv_demux::TagDemuxer;
use libfuzzer_sys::fuzz_target;
use rml_rtmp::sessions::{ServerSession, ServerSession as Session, ServerSessionConfig, ServerSessionEvent, ServerSessionResult};
use std::cell::Cell;

thread_local! {
    /// Inside `session_input`: a panic there is the library's, caught by gmv (a dropped
    /// connection), so the run goes on; anywhere else it is a crash.
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

fn input(session: &mut Session, piece: &[u8]) -> Result<Vec<ServerSessionResult>, String> {
    GUARDED.with(|g| g.set(true));
    let r = gmv::shard::rtmp::session_input(session, piece);
    GUARDED.with(|g| g.set(false));
    r
}

fuzz_target!(init: {
    // libfuzzer-sys aborts on every panic, caught or not; keep that for all but the guarded.
    let aborting = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !GUARDED.with(Cell::get) {
            aborting(info);
        }
    }));
}, |data: &[u8]| {
    let Ok((mut session, _)) = ServerSession::new(ServerSessionConfig::new()) else { return };
    let mut demux = TagDemuxer::new();
    // Pieces of the input as reads: a length byte, then that many bytes.
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let (piece, tail) = tail.split_at((usize::from(len) * 16 + 1).min(tail.len()));
        rest = tail;
        let Ok(results) = input(&mut session, piece) else { return };
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
