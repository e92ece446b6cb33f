//! The ZLMediaKit node API as a control speaks it to its media nodes, typed: each call knows
//! its name and its form parameters, so the vocabulary (names, `app=rtp`, the vhost, gmv's own
//! parameters) is written once, here, and nowhere else in the control.

use crate::proto::sip::endpoint::{MediaTransport, UpstreamMedia};
use crate::proto::ssrc::stream_id;
use crate::shard::source::SourceRule;
use std::net::SocketAddr;

/// The `app` every stream of a control lives in on its nodes.
const APP: &str = "rtp";
/// ZLMediaKit's default virtual host, the one nodes put streams in.
pub const VHOST: &str = "__defaultVhost__";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeCall {
    /// A stream (an RTP server) for `ssrc`: its port comes back in the answer.
    OpenRtpServer {
        ssrc: u32,
        transport: MediaTransport,
        /// Record it to MP4 from its first frame (a download; gmv's parameter, a ZLMediaKit
        /// node records from `on_publish`'s answer instead).
        record: bool,
        /// Media only from there (gmv's `expect_source`/`learn_ssrc`; ZLMediaKit ignores them).
        source: SourceRule,
    },
    CloseRtpServer {
        ssrc: u32,
    },
    /// A stream of a gmv stream id this control did not open (an orphan), by its name there.
    CloseRtpServerNamed {
        stream_id: String,
    },
    /// The device answered: take `device_ssrc` (the stream's own when it answered that), and
    /// media from where `source` says.
    UpdateRtpServerSsrc {
        ssrc: u32,
        device_ssrc: u32,
        source: Option<SourceRule>,
    },
    /// TCP active: the node dials the device's media port.
    ConnectRtpServer {
        ssrc: u32,
        to: SocketAddr,
    },
    /// The node's check for a stream without packets: off while a playback is paused or a
    /// download is this control's to watch, on again after.
    PauseRtpCheck {
        ssrc: u32,
    },
    ResumeRtpCheck {
        ssrc: u32,
    },
    GetMediaInfo {
        ssrc: u32,
    },
    /// MP4 recording of the stream (a download on a node that does not record on publish).
    StartRecord {
        ssrc: u32,
    },
    /// Ends what `StartRecord` began (a record plan's end; the stream stays for its viewers).
    StopRecord {
        ssrc: u32,
    },
    ListRtpServer,
    GetMediaList,
    /// The stream sent on as PS over RTP under `send_ssrc` (cascade): to `media`'s address
    /// over UDP or dialled TCP, or to whoever connects (`startSendRtpPassive`). The answer
    /// says its `local_port`.
    StartSendRtp {
        ssrc: u32,
        send_ssrc: u32,
        media: UpstreamMedia,
    },
    StopSendRtp {
        ssrc: u32,
        send_ssrc: u32,
    },
}

impl NodeCall {
    pub fn name(&self) -> &'static str {
        match self {
            NodeCall::OpenRtpServer { .. } => "openRtpServer",
            NodeCall::CloseRtpServer { .. } | NodeCall::CloseRtpServerNamed { .. } => "closeRtpServer",
            NodeCall::UpdateRtpServerSsrc { .. } => "updateRtpServerSSRC",
            NodeCall::ConnectRtpServer { .. } => "connectRtpServer",
            NodeCall::PauseRtpCheck { .. } => "pauseRtpCheck",
            NodeCall::ResumeRtpCheck { .. } => "resumeRtpCheck",
            NodeCall::GetMediaInfo { .. } => "getMediaInfo",
            NodeCall::StartRecord { .. } => "startRecord",
            NodeCall::StopRecord { .. } => "stopRecord",
            NodeCall::ListRtpServer => "listRtpServer",
            NodeCall::GetMediaList => "getMediaList",
            NodeCall::StartSendRtp { media: UpstreamMedia::TcpListen, .. } => "startSendRtpPassive",
            NodeCall::StartSendRtp { .. } => "startSendRtp",
            NodeCall::StopSendRtp { .. } => "stopSendRtp",
        }
    }

    /// The form parameters (`secret` is the caller's).
    pub fn params(&self) -> Vec<(&'static str, String)> {
        let app = ("app", APP.to_string());
        // A stream as `getMediaInfo` and the record calls name it (schema, vhost, app, stream).
        let media = |ssrc: u32| {
            vec![
                ("schema", "rtmp".to_string()),
                ("vhost", VHOST.to_string()),
                app.clone(),
                ("stream", stream_id(ssrc)),
            ]
        };
        match self {
            NodeCall::OpenRtpServer { ssrc, transport, record, source } => vec![
                app.clone(),
                ("stream_id", stream_id(*ssrc)),
                ("port", "0".into()),
                ("tcp_mode", tcp_mode(*transport).into()),
                ("ssrc", ssrc.to_string()),
                ("enable_mp4", u8::from(*record).to_string()),
                ("expect_source", source.joined(",")),
                ("learn_ssrc", u8::from(source.learn_ssrc).to_string()),
            ],
            NodeCall::CloseRtpServer { ssrc } => vec![app, ("stream_id", stream_id(*ssrc))],
            NodeCall::CloseRtpServerNamed { stream_id } => vec![app, ("stream_id", stream_id.clone())],
            NodeCall::UpdateRtpServerSsrc { ssrc, device_ssrc, source } => {
                let mut p = vec![app, ("stream_id", stream_id(*ssrc)), ("ssrc", device_ssrc.to_string())];
                p.extend(source.as_ref().map(|s| ("expect_source", s.joined(","))));
                p
            }
            NodeCall::ConnectRtpServer { ssrc, to } => {
                vec![app, ("stream_id", stream_id(*ssrc)), ("dst_url", to.ip().to_string()), ("dst_port", to.port().to_string())]
            }
            NodeCall::PauseRtpCheck { ssrc } | NodeCall::ResumeRtpCheck { ssrc } => vec![app, ("stream_id", stream_id(*ssrc))],
            NodeCall::GetMediaInfo { ssrc } => media(*ssrc),
            NodeCall::StartRecord { ssrc } | NodeCall::StopRecord { ssrc } => {
                let mut p = media(*ssrc);
                p.push(("type", "1".into())); // MP4
                p
            }
            NodeCall::ListRtpServer | NodeCall::GetMediaList => Vec::new(),
            NodeCall::StartSendRtp { ssrc, send_ssrc, media } => {
                // PS on payload type 96, as GB/T 28181 carries video upward (`use_ps` for older
                // ZLMediaKit, `type` for newer).
                let mut p = vec![("vhost", VHOST.to_string()), app, ("stream", stream_id(*ssrc)), ("ssrc", send_ssrc.to_string())];
                p.extend([("pt", "96".to_string()), ("use_ps", "1".into()), ("type", "1".into()), ("only_audio", "0".into())]);
                match media {
                    UpstreamMedia::Udp(to) | UpstreamMedia::TcpDial(to) => {
                        let udp = matches!(media, UpstreamMedia::Udp(_));
                        p.extend([("dst_url", to.ip().to_string()), ("dst_port", to.port().to_string()), ("is_udp", u8::from(udp).to_string())]);
                    }
                    UpstreamMedia::TcpListen => p.push(("is_udp", "0".into())),
                }
                p
            }
            NodeCall::StopSendRtp { ssrc, send_ssrc } => vec![("vhost", VHOST.to_string()), app, ("stream", stream_id(*ssrc)), ("ssrc", send_ssrc.to_string())],
        }
    }
}

/// ZLMediaKit's `tcp_mode`: 0 UDP, 1 TCP passive (the device connects), 2 TCP active.
fn tcp_mode(transport: MediaTransport) -> &'static str {
    match transport {
        MediaTransport::Udp => "0",
        MediaTransport::TcpPassive => "1",
        MediaTransport::TcpActive => "2",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param<'a>(p: &'a [(&str, String)], k: &str) -> Option<&'a str> {
        p.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn calls_carry_zlmediakit_names_and_gmv_parameters() {
        let source = SourceRule::device(&["10.0.0.8".parse().unwrap()], true);
        let open = NodeCall::OpenRtpServer { ssrc: 200_000_002, transport: MediaTransport::TcpPassive, record: true, source };
        let p = open.params();
        assert_eq!(open.name(), "openRtpServer");
        assert_eq!(
            [param(&p, "app"), param(&p, "stream_id"), param(&p, "tcp_mode"), param(&p, "ssrc"), param(&p, "enable_mp4")],
            [Some("rtp"), Some("0200000002"), Some("1"), Some("200000002"), Some("1")]
        );
        assert_eq!((param(&p, "expect_source"), param(&p, "learn_ssrc")), (Some("10.0.0.8"), Some("1")));
        let info = NodeCall::GetMediaInfo { ssrc: 7 }.params();
        assert_eq!((param(&info, "stream"), param(&info, "vhost"), param(&info, "app")), (Some("0000000007"), Some("__defaultVhost__"), Some("rtp")));
        let update = NodeCall::UpdateRtpServerSsrc { ssrc: 7, device_ssrc: 9, source: None };
        assert_eq!((update.name(), param(&update.params(), "ssrc"), param(&update.params(), "expect_source")), ("updateRtpServerSSRC", Some("9"), None));
        let to = "10.0.0.8:6000".parse().unwrap();
        let connect = NodeCall::ConnectRtpServer { ssrc: 7, to }.params();
        assert_eq!((param(&connect, "dst_url"), param(&connect, "dst_port")), (Some("10.0.0.8"), Some("6000")));
        assert_eq!(param(&NodeCall::StartRecord { ssrc: 7 }.params(), "type"), Some("1"));
        let stop = NodeCall::StopRecord { ssrc: 7 };
        assert_eq!((stop.name(), param(&stop.params(), "type"), param(&stop.params(), "stream")), ("stopRecord", Some("1"), Some("0000000007")));
        assert_eq!(VHOST, crate::node::rtp_servers::VHOST, "what gmv nodes put streams in");
        // Sends on (cascade): PS on 96 to the offer, or passive for a TCP upstream that dials.
        let send = NodeCall::StartSendRtp { ssrc: 7, send_ssrc: 100_000_131, media: UpstreamMedia::Udp(to) };
        let p = send.params();
        assert_eq!(send.name(), "startSendRtp");
        assert_eq!(
            [param(&p, "stream"), param(&p, "ssrc"), param(&p, "dst_url"), param(&p, "dst_port"), param(&p, "is_udp"), param(&p, "pt"), param(&p, "use_ps")],
            [Some("0000000007"), Some("100000131"), Some("10.0.0.8"), Some("6000"), Some("1"), Some("96"), Some("1")]
        );
        let passive = NodeCall::StartSendRtp { ssrc: 7, send_ssrc: 1, media: UpstreamMedia::TcpListen };
        assert_eq!((passive.name(), param(&passive.params(), "is_udp"), param(&passive.params(), "dst_url")), ("startSendRtpPassive", Some("0"), None));
        assert_eq!(param(&NodeCall::StopSendRtp { ssrc: 7, send_ssrc: 1 }.params(), "ssrc"), Some("1"));
    }
}
