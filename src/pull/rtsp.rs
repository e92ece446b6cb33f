//! One RTSP source, pulled with retina (a maintained RTSP client, in production in an NVR) on
//! the pull thread's runtime: DESCRIBE, SETUP of the first video (H.264/H.265) and audio
//! (AAC, G.711) track, PLAY, then its frames in Annex B / ADTS onto the stream's socket
//! (`proto::frame_wire`). `session::run` retries it with backoff.

use super::Transport;
use super::session::{CONNECT_TIMEOUT, Ended, FrameSink, SILENCE_TIMEOUT};
use crate::proto::flv_demux::{VideoTrack, adts_frame};
use crate::proto::frame::{Codec, Frame};
use futures_lite::StreamExt;
use retina::client::{Credentials, PlayOptions, SessionOptions, SetupOptions};
use retina::codec::{CodecItem, ParametersRef};

const VIDEO_HZ: i64 = 90_000;
/// RTSP over TLS's port when the URL names none (RFC 7826).
const RTSPS_PORT: u16 = 322;

/// Aborts a task when dropped (the relay ends with its attempt).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `rtsps://`: retina speaks plain RTSP, so it talks to a relay on loopback that carries its
/// one connection over TLS to the source (the certificate checked as for `https://`). The URL
/// it is given names the relay; path, query and credentials stay the source's. TLS is set up
/// first, so a refused connection or a bad certificate is the attempt's error.
async fn tls_relay(url: &url::Url) -> Result<(url::Url, AbortOnDrop), String> {
    let host = url.host_str().ok_or("no host")?.to_string();
    let port = url.port().unwrap_or(RTSPS_PORT);
    let tcp = tokio::net::TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port)).await.map_err(|e| format!("connect {host}:{port}: {e}"))?;
    let mut tls = super::tls::connect(&host, tcp).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("TLS relay: {e}"))?;
    let relay = listener.local_addr().map_err(|e| format!("TLS relay: {e}"))?;
    let task = tokio::spawn(async move {
        if let Ok(Ok((mut plain, _))) = tokio::time::timeout(CONNECT_TIMEOUT, listener.accept()).await {
            let _ = tokio::io::copy_bidirectional(&mut plain, &mut tls).await;
        }
    });
    let mut relayed = url.clone();
    relayed.set_scheme("rtsp").map_err(|()| "rtsps:// URL".to_string())?;
    relayed.set_host(Some("127.0.0.1")).map_err(|e| e.to_string())?;
    relayed.set_port(Some(relay.port())).map_err(|()| "rtsps:// URL".to_string())?;
    Ok((relayed, AbortOnDrop(task)))
}

/// The URL without its user and password, and those as retina's credentials.
fn split_credentials(url: &url::Url) -> (url::Url, Option<Credentials>) {
    if url.username().is_empty() {
        return (url.clone(), None);
    }
    let decode = crate::proto::http_head::percent_decode;
    let creds = Credentials { username: decode(url.username()), password: decode(url.password().unwrap_or("")) };
    let mut bare = url.clone();
    let _ = bare.set_username("");
    let _ = bare.set_password(None);
    (bare, Some(creds))
}

/// One attempt: DESCRIBE to PLAY, then frames until the source fails or the stream goes.
pub async fn pull_once(url: &url::Url, transport: Transport, sink: &mut FrameSink) -> Ended {
    let (target, _relay) = if url.scheme() == "rtsps" {
        match tokio::time::timeout(CONNECT_TIMEOUT, tls_relay(url)).await {
            Ok(Ok((relayed, relay))) => (relayed, Some(relay)),
            Ok(Err(why)) => return Ended::Source(why),
            Err(_) => return Ended::Source(format!("no TLS within {} s", CONNECT_TIMEOUT.as_secs())),
        }
    } else {
        (url.clone(), None)
    };
    let (bare, creds) = split_credentials(&target);
    let setup = async {
        let options = SessionOptions::default().creds(creds).user_agent(format!("gmv/{}", env!("CARGO_PKG_VERSION")));
        let mut session = retina::client::Session::describe(bare, options).await.map_err(|e| e.to_string())?;
        let streams = session.streams();
        let video = streams.iter().position(|s| s.media() == "video" && video_codec(s.encoding_name()).is_some());
        let audio = streams.iter().position(|s| s.media() == "audio" && audio_codec(s.encoding_name()).is_some());
        let Some(video) = video else {
            let found: Vec<String> = streams.iter().map(|s| format!("{}/{}", s.media(), s.encoding_name())).collect();
            return Err(format!("no H.264 or H.265 video track (the source offers {})", found.join(", ")));
        };
        for i in std::iter::once(video).chain(audio) {
            let t = match transport {
                Transport::Tcp => retina::client::Transport::Tcp(Default::default()),
                Transport::Udp => retina::client::Transport::Udp(Default::default()),
            };
            session.setup(i, SetupOptions::default().transport(t)).await.map_err(|e| e.to_string())?;
        }
        let playing = session.play(PlayOptions::default()).await.map_err(|e| e.to_string())?;
        playing.demuxed().map_err(|e| e.to_string()).map(|d| (d, video, audio))
    };
    let (mut demuxed, video_i, audio_i) = match tokio::time::timeout(CONNECT_TIMEOUT, setup).await {
        Ok(Ok(d)) => d,
        Ok(Err(why)) => return Ended::Source(why),
        Err(_) => return Ended::Source(format!("no PLAY within {} s", CONNECT_TIMEOUT.as_secs())),
    };
    let codecs = |i: usize| demuxed.streams()[i].encoding_name().to_ascii_lowercase();
    let (video_name, audio_name) = (codecs(video_i), audio_i.map(codecs));
    let named = |c: Option<Codec>| c.map(Codec::name);
    sink.playing(url, named(video_codec(&video_name)), named(audio_name.as_deref().and_then(audio_codec)));
    let mut track: Option<VideoTrack> = None;
    let mut asc: Option<[u8; 2]> = None;
    loop {
        let item = match tokio::time::timeout(SILENCE_TIMEOUT, demuxed.next()).await {
            Err(_) => return Ended::Source(format!("silent for {} s", SILENCE_TIMEOUT.as_secs())),
            Ok(None) => return Ended::Source("the source ended the session".into()),
            Ok(Some(Err(e))) => return Ended::Source(e.to_string()),
            Ok(Some(Ok(item))) => item,
        };
        let frame = match item {
            CodecItem::VideoFrame(f) => {
                let Some(codec) = video_codec(&video_name) else { continue };
                if (track.is_none() || f.has_new_parameters())
                    && let Some(ParametersRef::Video(p)) = demuxed.streams()[f.stream_id()].parameters()
                {
                    match VideoTrack::from_config(codec, p.extra_data()) {
                        Ok(t) => track = Some(t),
                        Err(e) => return Ended::Source(format!("video parameters: {e}")),
                    }
                }
                let Some(t) = &track else { continue };
                let ts = ticks_90k(f.timestamp());
                match t.picture(f.data(), f.is_random_access_point(), ts, ts) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => continue,
                    Err(e) => {
                        sink.dropped();
                        tracing::debug!(url = %super::redacted(url), %e, "pull source picture dropped");
                        continue;
                    }
                }
            }
            CodecItem::AudioFrame(f) => {
                let Some(codec) = audio_name.as_deref().and_then(audio_codec) else { continue };
                let ts = ticks_90k(f.timestamp());
                match codec {
                    Codec::Aac => {
                        if asc.is_none()
                            && let Some(ParametersRef::Audio(p)) = demuxed.streams()[f.stream_id()].parameters()
                        {
                            asc = p.extra_data().get(..2).and_then(|a| a.try_into().ok());
                        }
                        let Some(asc) = asc else { continue };
                        match adts_frame(asc, f.data(), ts) {
                            Ok(frame) => frame,
                            Err(_) => {
                                sink.dropped();
                                continue;
                            }
                        }
                    }
                    _ => Frame { codec, pts: ts, dts: ts, keyframe: true, data: bytes::Bytes::copy_from_slice(f.data()) },
                }
            }
            _ => continue,
        };
        if let Err(ended) = sink.send(&frame).await {
            return ended;
        }
    }
}

/// A retina timestamp on the 90 kHz clock frames carry (from the session's start; a new
/// session starts over, which the stream's retimer joins up).
fn ticks_90k(ts: retina::Timestamp) -> u64 {
    let rate = i64::from(ts.clock_rate().get());
    (ts.elapsed().max(0) as i128 * i128::from(VIDEO_HZ) / i128::from(rate)) as u64
}

fn video_codec(encoding: &str) -> Option<Codec> {
    match encoding.to_ascii_lowercase().as_str() {
        "h264" => Some(Codec::H264),
        "h265" => Some(Codec::H265),
        _ => None,
    }
}

fn audio_codec(encoding: &str) -> Option<Codec> {
    match encoding.to_ascii_lowercase().as_str() {
        "mpeg4-generic" => Some(Codec::Aac),
        "pcma" => Some(Codec::Pcma),
        "pcmu" => Some(Codec::Pcmu),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url_for_retina() {
        let url = url::Url::parse("rtsp://admin:p%40ss%3Aw@10.0.0.8:554/Streaming/Channels/101").unwrap();
        let (bare, creds) = split_credentials(&url);
        assert_eq!(bare.as_str(), "rtsp://10.0.0.8:554/Streaming/Channels/101");
        let creds = creds.unwrap();
        assert_eq!((creds.username.as_str(), creds.password.as_str()), ("admin", "p@ss:w"));
        assert!(split_credentials(&url::Url::parse("rtsp://h/x").unwrap()).1.is_none());
    }

    #[test]
    fn codecs_by_their_sdp_names() {
        assert_eq!(video_codec("H265"), Some(Codec::H265));
        assert_eq!(video_codec("jpeg"), None);
        assert_eq!(audio_codec("MPEG4-GENERIC"), Some(Codec::Aac));
        assert_eq!(audio_codec("PCMU"), Some(Codec::Pcmu));
    }
}
