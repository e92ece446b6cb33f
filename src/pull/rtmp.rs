//! RTMP sources (`rtmp://host[:1935]/app/stream[?query]`, what ZLMediaKit, SRS, nginx-rtmp and
//! encoders serve): the handshake, the chunk stream and the commands (connect, createStream,
//! play) are rml_rtmp's (sans-IO, fed here from a tokio socket); audio and video messages go
//! through the FLV demuxer RTMP pushes use.
//!
//! The chunk stream is read here rather than by the session: its client drops media whose
//! message stream id is not the one createStream gave, and servers differ there (ffmpeg's
//! listen mode sends on another), so media is taken whatever its stream id, and every other
//! message is chunked again for the session at one agreed chunk size. Acknowledgements go
//! from here too, counting every byte read.

use super::flv::TagFeed;
use super::session::{CONNECT_TIMEOUT, Ended, FrameSink, SILENCE_TIMEOUT, guarded};
use crate::proto::flv_read::{TAG_AUDIO, TAG_VIDEO};
use rml_rtmp::chunk_io::{ChunkDeserializer, ChunkSerializer};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::{MessagePayload, RtmpMessage};
use rml_rtmp::sessions::{ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEFAULT_PORT: u16 = 1935;
/// One read from the socket.
const READ_BYTES: usize = 64 << 10;
/// Messages the session could not take in a row before the source is dropped (a server that
/// sends a second `NetStream.Play.Start` is tolerated; one that sends only garbage is not).
const SESSION_ERRORS_MAX: u32 = 64;
/// The chunk size messages are chunked again at for the session.
const RECHUNK_BYTES: u32 = 1 << 20;
const TYPE_SET_CHUNK_SIZE: u8 = 1;
const TYPE_WINDOW_ACK_SIZE: u8 = 5;
const TYPE_AUDIO: u8 = 8;
const TYPE_VIDEO: u8 = 9;

/// The server's chunk stream, split between the media (here) and the session (the rest).
struct Chunks {
    from_server: ChunkDeserializer,
    to_session: ChunkSerializer,
    /// For our acknowledgements (chunk headers uncompressed, so they mix with the session's).
    acks: ChunkSerializer,
    received: u64,
    unacked: u64,
    window: Option<u64>,
}

impl Chunks {
    /// The chunker, and the bytes that tell the session the chunk size it will get.
    fn new() -> Result<(Chunks, Vec<u8>), String> {
        let mut to_session = ChunkSerializer::new();
        let size = to_session.set_max_chunk_size(RECHUNK_BYTES, RtmpTimestamp::new(0)).map_err(|e| format!("RTMP: {e:?}"))?;
        let chunks = Chunks { from_server: ChunkDeserializer::new(), to_session, acks: ChunkSerializer::new(), received: 0, unacked: 0, window: None };
        Ok((chunks, size.bytes))
    }

    /// Splits the server's bytes: media messages into `media`, the rest chunked again into
    /// `session`; an acknowledgement into `ack` when the window is full.
    fn split(&mut self, bytes: &[u8], media: &mut Vec<MessagePayload>, session: &mut Vec<u8>, ack: &mut Vec<u8>) -> Result<(), String> {
        self.received += bytes.len() as u64;
        self.unacked += bytes.len() as u64;
        let mut input = bytes;
        while let Some(message) = guarded(|| self.from_server.get_next_message(input))?.map_err(|e| format!("RTMP chunks: {e:?}"))? {
            input = &[];
            match message.type_id {
                TYPE_AUDIO | TYPE_VIDEO => media.push(message),
                TYPE_SET_CHUNK_SIZE => {
                    let size = u32_of(&message.data)? & 0x7fff_ffff;
                    self.from_server.set_max_chunk_size(size as usize).map_err(|e| format!("RTMP: {e:?}"))?;
                }
                TYPE_WINDOW_ACK_SIZE => self.window = Some(u64::from(u32_of(&message.data)?)),
                _ => session.extend(self.to_session.serialize(&message, false, false).map_err(|e| format!("RTMP: {e:?}"))?.bytes),
            }
        }
        if let Some(window) = self.window
            && self.unacked >= window
        {
            self.unacked = 0;
            let message = RtmpMessage::Acknowledgement { sequence_number: self.received as u32 };
            let payload = message.into_message_payload(RtmpTimestamp::new(0), 0).map_err(|e| format!("RTMP: {e:?}"))?;
            ack.extend(self.acks.serialize(&payload, true, false).map_err(|e| format!("RTMP: {e:?}"))?.bytes);
        }
        Ok(())
    }
}

fn u32_of(data: &[u8]) -> Result<u32, String> {
    data.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])).ok_or_else(|| "RTMP control message too short".to_string())
}

/// `rtmp://h/live/cam1?k=v` → (`live`, `cam1?k=v`): the app is the path up to its last
/// segment, the stream key the last segment with the query (tokens ride there).
pub fn app_and_key(url: &url::Url) -> Option<(String, String)> {
    let path = url.path().trim_start_matches('/');
    let (app, stream) = path.rsplit_once('/')?;
    if app.is_empty() || stream.is_empty() {
        return None;
    }
    let key = match url.query() {
        Some(q) => format!("{stream}?{q}"),
        None => stream.to_string(),
    };
    Some((app.to_string(), key))
}

/// One attempt: handshake, connect, play, then media until the source fails or the stream goes.
pub async fn pull_once(url: &url::Url, sink: &mut FrameSink) -> Ended {
    let Some((app, key)) = app_and_key(url) else { return Ended::Source("the URL has no app/stream path".into()) };
    let host = url.host_str().unwrap_or_default().to_string();
    let port = url.port().unwrap_or(DEFAULT_PORT);
    let started = std::time::Instant::now();
    let connect = async {
        let mut conn = TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port)).await.map_err(|e| format!("connect {host}:{port}: {e}"))?;
        let rest = handshake(&mut conn).await?;
        Ok::<_, String>((conn, rest))
    };
    let (mut conn, rest) = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Err(_) => return Ended::Source(format!("no handshake within {} s", CONNECT_TIMEOUT.as_secs())),
        Ok(Err(why)) => return Ended::Source(why),
        Ok(Ok(c)) => c,
    };
    let config = ClientSessionConfig { tc_url: Some(format!("rtmp://{host}:{port}/{app}")), ..ClientSessionConfig::new() };
    let Ok((mut session, _)) = ClientSession::new(config) else { return Ended::Source("RTMP session".into()) };
    let (mut chunks, mut to_session) = match Chunks::new() {
        Ok(c) => c,
        Err(why) => return Ended::Source(why),
    };
    let mut out: Vec<ClientSessionResult> = match session.request_connection(app.clone()) {
        Ok(r) => vec![r],
        Err(e) => return Ended::Source(format!("RTMP connect: {e:?}")),
    };
    let mut feed = TagFeed::new();
    let mut playing = false;
    let mut errors = 0u32;
    let (mut media, mut ack) = (Vec::new(), Vec::new());
    let mut read = rest;
    let mut buf = vec![0u8; READ_BYTES];
    loop {
        if let Err(why) = chunks.split(&read, &mut media, &mut to_session, &mut ack) {
            return Ended::Source(why);
        }
        if !ack.is_empty() {
            if let Err(e) = conn.write_all(&ack).await {
                return Ended::Source(format!("send: {e}"));
            }
            ack.clear();
        }
        if !to_session.is_empty() {
            match guarded(|| session.handle_input(&to_session)) {
                Ok(Ok(results)) => {
                    errors = 0;
                    out.extend(results);
                }
                Ok(Err(e)) if playing && errors < SESSION_ERRORS_MAX => {
                    errors += 1;
                    tracing::debug!(url = %super::redacted(url), error = ?e, "RTMP message not taken");
                }
                Ok(Err(e)) => return Ended::Source(format!("RTMP: {e:?}")),
                Err(why) => return Ended::Source(why),
            }
            to_session.clear();
        }
        for result in out.drain(..) {
            let event = match result {
                ClientSessionResult::OutboundResponse(packet) => {
                    if let Err(e) = conn.write_all(&packet.bytes).await {
                        return Ended::Source(format!("send: {e}"));
                    }
                    continue;
                }
                ClientSessionResult::RaisedEvent(e) => e,
                ClientSessionResult::UnhandleableMessageReceived(_) => continue,
            };
            match event {
                ClientSessionEvent::ConnectionRequestAccepted => match session.request_playback(key.clone()) {
                    Ok(ClientSessionResult::OutboundResponse(packet)) => {
                        if let Err(e) = conn.write_all(&packet.bytes).await {
                            return Ended::Source(format!("send: {e}"));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return Ended::Source(format!("RTMP play: {e:?}")),
                },
                ClientSessionEvent::ConnectionRequestRejected { description } => return Ended::Source(format!("connect refused: {description}")),
                ClientSessionEvent::PlaybackRequestAccepted if !playing => {
                    playing = true;
                    sink.playing(url, None, None);
                }
                ClientSessionEvent::UnhandleableOnStatusCode { code } if code.contains("NotFound") || code.contains("Failed") || code.contains("Unpublish") || code.contains("Stop") => {
                    return Ended::Source(format!("the source said {code}"));
                }
                _ => {}
            }
        }
        for message in media.drain(..) {
            // Media before Play.Start (some servers) is taken too.
            let kind = if message.type_id == TYPE_VIDEO { TAG_VIDEO } else { TAG_AUDIO };
            if let Err(ended) = feed.tag(sink, kind, message.timestamp.value, &message.data).await {
                return ended;
            }
        }
        let wait = if playing { SILENCE_TIMEOUT } else { CONNECT_TIMEOUT.saturating_sub(started.elapsed()) };
        let n = match tokio::time::timeout(wait, conn.read(&mut buf)).await {
            Err(_) if playing => return Ended::Source(format!("silent for {} s", wait.as_secs())),
            Err(_) => return Ended::Source(format!("not playing within {} s", CONNECT_TIMEOUT.as_secs())),
            Ok(Ok(0)) => return Ended::Source("the source closed the connection".into()),
            Ok(Err(e)) => return Ended::Source(format!("read: {e}")),
            Ok(Ok(n)) => n,
        };
        read.clear();
        read.extend_from_slice(&buf[..n]);
    }
}

/// The client side of the handshake; the bytes the server sent past it.
async fn handshake(conn: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut hs = Handshake::new(PeerType::Client);
    let p0p1 = hs.generate_outbound_p0_and_p1().map_err(|e| format!("handshake: {e:?}"))?;
    conn.write_all(&p0p1).await.map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 4096];
    loop {
        let n = conn.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the source closed the connection in the handshake".into());
        }
        match guarded(|| hs.process_bytes(&buf[..n]))? {
            Ok(HandshakeProcessResult::InProgress { response_bytes }) => conn.write_all(&response_bytes).await.map_err(|e| format!("send: {e}"))?,
            Ok(HandshakeProcessResult::Completed { response_bytes, remaining_bytes }) => {
                conn.write_all(&response_bytes).await.map_err(|e| format!("send: {e}"))?;
                return Ok(remaining_bytes);
            }
            Err(e) => return Err(format!("handshake: {e:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_gives_app_and_stream_key() {
        let split = |u: &str| app_and_key(&url::Url::parse(u).unwrap());
        assert_eq!(split("rtmp://h/live/cam1"), Some(("live".into(), "cam1".into())));
        assert_eq!(split("rtmp://h:1936/rtp/34020000001320000001_1?sign=x"), Some(("rtp".into(), "34020000001320000001_1?sign=x".into())));
        assert_eq!(split("rtmp://h/a/b/c"), Some(("a/b".into(), "c".into())));
        assert_eq!(split("rtmp://h/live"), None);
        assert_eq!(split("rtmp://h/live/"), None);
    }
}
