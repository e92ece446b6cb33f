//! wvp-GB28181-pro driving gmv (`--role media`) as its ZLMediaKit node, call for call as wvp's
//! source makes them (648540858/wvp-GB28181-pro at 768d7409; paths below are under
//! `src/main/java/com/genersoft/iot/vmp/`). Real wvp cannot be built here (its Java
//! dependencies come from a registry these machines do not reach), so this emulation is the
//! acceptance test: the form it posts, the fields it reads, its hook answers (`stream_replace`
//! above all) and the URLs it hands the browser, each step citing the file behind it.

mod common;

use common::*;
use gmv::proto::frame::Codec;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "wvp-node-secret-0123456789";
const MEDIA_SERVER_ID: &str = "polaris";
const DEVICE: &str = "34020000001320000001";
const CHANNEL: &str = "34020000001310000001";
const CHANNEL_NO_AUDIO: &str = "34020000001310000002";
/// A recording's span in wvp's stream names (`RtpServerServiceImpl.getPlaybackStream`:
/// `yyyy-MM-dd HH:mm:ss` with `-`, `:` and ` ` removed).
const START: &str = "20261205080000";
const END: &str = "20261205080100";
const RANGE_S: u64 = 60;
/// The node's own file span: a download must be one file however much longer it is.
const ROTATE_S: u64 = 2;

/// wvp's SSRC (`SSRCFactory`: "0" live / "1" history, five digits of the SIP domain, four of a
/// counter) and the stream id its multi-port mode opens it under (`ZLMServerFactory.createRTPServer`:
/// `String.format("%08x", ssrc).toUpperCase()`).
fn ssrc_and_id(ssrc: &str) -> (u32, String) {
    let n: u32 = ssrc.parse().unwrap();
    (n, format!("{n:08x}").to_uppercase())
}

/// The hook side of wvp (`media/zlm/ZLMHttpHookListener.java`): every hook kept, `on_publish`
/// answered from what the opener stored (`RtpServerServiceImpl.addAuthenticateInfo`, Redis
/// `RTP_AUTHENTICATE:{stream}`; missing: `{"code":-1,"msg":"fail"}`), the rest
/// `HookResult.SUCCESS()`; `on_stream_none_reader` keeps GB streams (`close: false`, wvp's
/// answer for downloads and with `stream-on-demand` off).
struct WvpHooks {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(String, Value)>>>,
    auth: Arc<Mutex<HashMap<String, Value>>>,
    /// Proxies with 无人观看 停用 on, by stream: the node and the proxy's key.
    on_demand: Arc<Mutex<HashMap<String, (SocketAddr, String)>>>,
}

impl WvpHooks {
    fn start() -> WvpHooks {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let auth: Arc<Mutex<HashMap<String, Value>>> = Arc::new(Mutex::new(HashMap::new()));
        let on_demand: Arc<Mutex<HashMap<String, (SocketAddr, String)>>> = Default::default();
        let (log, auth_read, proxies) = (seen.clone(), auth.clone(), on_demand.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let (head, body) = read_response(&mut conn);
                let name = head.split_whitespace().nth(1).unwrap_or("").rsplit('/').next().unwrap_or("").to_string();
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let answer = match name.as_str() {
                    "on_publish" => auth_read.lock().unwrap().get(body["stream"].as_str().unwrap_or("")).cloned().unwrap_or(json!({"code": -1, "msg": "fail"})),
                    // MediaServiceImpl.closeStreamOnNoneReader: an on-demand proxy is stopped
                    // with delStreamProxy while the hook waits, then `close: true`.
                    "on_stream_none_reader" => match proxies.lock().unwrap().get(body["stream"].as_str().unwrap_or("")) {
                        Some((node, key)) => {
                            let answer = post_to(*node, "delStreamProxy", &[("key", key)]);
                            assert_eq!(answer["code"], 0, "{answer}");
                            json!({"code": 0, "close": true})
                        }
                        None => json!({"code": 0, "close": false}),
                    },
                    _ => json!({"code": 0, "msg": "success"}),
                };
                log.lock().unwrap().push((name, body));
                let text = answer.to_string();
                let _ = conn.write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: application/json;charset=UTF-8\r\nContent-Length: {}\r\n\r\n{text}", text.len()).as_bytes());
            }
        });
        WvpHooks { addr, seen, auth, on_demand }
    }

    /// What `on_publish` answers for `stream` (the opened hex id).
    fn authorize(&self, stream: &str, answer: Value) {
        self.auth.lock().unwrap().insert(stream.to_string(), answer);
    }

    fn named(&self, hook: &str, stream: &str) -> Vec<Value> {
        self.seen.lock().unwrap().iter().filter(|(n, b)| n == hook && b["stream"] == stream).map(|(_, b)| b.clone()).collect()
    }

    fn wait(&self, hook: &str, stream: &str, matching: impl Fn(&Value) -> bool) -> Value {
        wait_for(&format!("{hook} for {stream}"), Duration::from_secs(30), || self.named(hook, stream).into_iter().find(|b| matching(b)))
    }

    /// `on_stream_changed` as wvp reacts to it: schema `rtsp` only (`ZLMHttpHookListener.onStreamChanged`).
    fn changed(&self, stream: &str, regist: bool) -> Vec<Value> {
        self.named("on_stream_changed", stream).into_iter().filter(|b| b["schema"] == "rtsp" && b["regist"] == regist).collect()
    }
}

/// wvp's REST side (`media/zlm/ZLMRESTfulUtils.sendPost`): POST, an OkHttp `FormBody` with the
/// secret inside, every answer parsed as JSON whatever its type.
fn post(engine: &Engine, call: &str, params: &[(&str, &str)]) -> Value {
    post_to(engine.http, call, params)
}

fn post_to(host: SocketAddr, call: &str, params: &[(&str, &str)]) -> Value {
    let form: String = form_urlencoded::Serializer::new(String::new()).append_pair("secret", SECRET).extend_pairs(params).finish();
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let len = form.len();
    write!(s, "POST /index/api/{call} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {len}\r\n\r\n{form}").unwrap();
    let (head, body) = read_response(&mut s);
    assert_eq!(status_of(&head), 200, "{call}: wvp takes anything but 200 for code -2 ({head})");
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{call}: {e}: {}", String::from_utf8_lossy(&body)))
}

/// A device's PS stream of the test clip (video, and G.711 A-law unless `video_only`) over
/// UDP, looped until stopped.
struct Device {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Device {
    fn send(port: u16, ssrc: u32, with_audio: bool) -> Device {
        Device::send_clip(port, ssrc, with_audio, Codec::H264)
    }

    fn send_clip(port: u16, ssrc: u32, with_audio: bool, codec: Codec) -> Device {
        let video = match codec {
            Codec::H265 => gmv::sim::frames_from_es(Codec::H265, &std::fs::read(h265_clip()).unwrap(), FPS),
            _ => h264_frames(),
        };
        let frames = if with_audio {
            gmv::sim::interleave(video, gmv::sim::g711_frames(Codec::Pcma, &std::fs::read(alaw_clip()).unwrap(), 40))
        } else {
            video
        };
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut sender = gmv::sim::PsRtpSender::new(codec, with_audio.then_some(Codec::Pcma), ssrc);
            let clip_ms = (CLIP_FRAMES as u64) * 1000 / u64::from(FPS);
            for round in 0u64.. {
                let mut last_dts = 0;
                for f in &frames {
                    if flag.load(Ordering::SeqCst) {
                        return;
                    }
                    let mut f = f.clone();
                    // Loops on the clip's clock, as a camera's clock runs on.
                    f.dts += round * clip_ms * 90;
                    f.pts += round * clip_ms * 90;
                    if f.codec.is_video() && f.dts > last_dts {
                        std::thread::sleep(Duration::from_millis(1000 / u64::from(FPS)));
                        last_dts = f.dts;
                    }
                    for p in sender.packets(&f) {
                        let _ = sock.send_to(&p, ("127.0.0.1", port));
                    }
                }
            }
        });
        Device { stop, thread: Some(thread) }
    }
}

impl Device {
    /// The clip over a TCP connection the node dialled (RFC 4571 framing), video only.
    fn over_tcp(conn: TcpStream, ssrc: u32) -> Device {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let frames = h264_frames();
        let thread = std::thread::spawn(move || {
            let mut conn = conn;
            let mut sender = gmv::sim::PsRtpSender::new(Codec::H264, None, ssrc);
            for f in frames.iter().cycle() {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                for p in sender.packets(f) {
                    if conn.write_all(&gmv::sim::rfc4571(&p)).is_err() {
                        return;
                    }
                }
                std::thread::sleep(Duration::from_millis(1000 / u64::from(FPS)));
            }
        });
        Device { stop, thread: Some(thread) }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `ZLMServerFactory.createRTPServer` for a GB stream in multi-port mode: `getRtpInfo` first,
/// then `openRtpServer` with every parameter it sends; the port read from the answer.
fn open_rtp_server(engine: &Engine, stream_id: &str, ssrc: u32) -> u16 {
    let info = post(engine, "getRtpInfo", &[("stream_id", stream_id)]);
    assert_eq!((info["code"].as_i64(), info["exist"].as_bool()), (Some(0), Some(false)), "{info}");
    let ssrc = ssrc.to_string();
    let opened = post(
        engine,
        "openRtpServer",
        &[("tcp_mode", "0"), ("app", "rtp"), ("stream_id", stream_id), ("only_track", "0"), ("re_use_port", "0"), ("port", "0"), ("only_audio", "0"), ("ssrc", &ssrc)],
    );
    assert_eq!(opened["code"], 0, "{opened}");
    opened["port"].as_u64().unwrap() as u16
}

/// The play URL wvp hands the browser (`media/zlm/ZLMMediaNodeServerService.getStreamInfoByAppAndStream`,
/// `common/StreamInfo.java`): `/{app}/{stream}.live.flv` with `callId` and what the media info said.
fn play_path(stream: &str, call_id: &str) -> String {
    format!("/rtp/{stream}.live.flv?callId={call_id}&originTypeStr=rtp_push&videoCodec=H264&audioCodec=G711A")
}

/// Reads an FLV over a WebSocket (jessibuca's `ws_flv`, wvp's default player) until `tags`
/// video tags came.
fn ws_flv(engine: &Engine, path: &str, video_tags: usize) -> Vec<u8> {
    ws_read(engine, path, |flv| flv.len() >= 13 && flv_tags(flv).iter().filter(|t| t.0 == 9).count() >= video_tags)
}

/// The payloads of a WebSocket's binary frames until `enough` says so.
fn ws_read(engine: &Engine, path: &str, enough: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut c = TcpStream::connect(engine.http).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut flv = Vec::new();
    while !enough(&flv) {
        let mut h = [0u8; 2];
        c.read_exact(&mut h).unwrap();
        let len = match h[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                c.read_exact(&mut l).unwrap();
                u16::from_be_bytes(l) as usize
            }
            127 => {
                let mut l = [0u8; 8];
                c.read_exact(&mut l).unwrap();
                u64::from_be_bytes(l) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        c.read_exact(&mut payload).unwrap();
        flv.extend_from_slice(&payload);
    }
    flv
}

/// A GET from another loopback address (the allowed-address check sees it).
fn get_from(ip: [u8; 4], engine: &Engine, path: &str) -> (u16, Vec<u8>) {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::from((ip, 0)).into()).unwrap();
    sock.connect(&engine.http.into()).unwrap();
    let mut c: TcpStream = sock.into();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (head, body) = read_response(&mut c);
    (status_of(&head), body)
}

fn engine() -> Engine {
    let yaml = format!(
        "node:\n  secret: \"{SECRET}\"\n  media_server_id: {MEDIA_SERVER_ID}\n  keepalive_interval_s: 1\n  max_stream_wait_ms: 1500\n  rtp_server_timeout_s: 15\nrecord:\n  rotate_s: {ROTATE_S}\n"
    );
    Engine::start_command(2, "", &yaml, "", None, None, &["--role", "media"])
}

/// `media/zlm/ZLMMediaServerStatusManager.setZLMConfig`: the keys wvp writes when the node
/// comes online (hook prefix `http://{hookIp}:{server.port}/index/hook`).
fn set_zlm_config(engine: &Engine, hooks: &WvpHooks) {
    let prefix = format!("http://{}/index/hook", hooks.addr);
    let named = [
        "on_play", "on_publish", "on_server_started", "on_stream_changed", "on_stream_none_reader", "on_stream_not_found", "on_server_keepalive",
        "on_send_rtp_stopped", "on_rtp_server_timeout", "on_record_mp4",
    ];
    let mut params: Vec<(String, String)> = vec![("hook.enable".into(), "1".into())];
    params.extend(named.iter().map(|n| (format!("hook.{n}"), format!("{prefix}/{n}"))));
    for off in ["on_flow_report", "on_http_access", "on_record_ts", "on_rtsp_auth", "on_rtsp_realm", "on_shell_login"] {
        params.push((format!("hook.{off}"), String::new()));
    }
    params.push(("hook.timeoutSec".into(), "30".into()));
    params.push(("protocol.continue_push_ms".into(), "3000".into()));
    // wvp's default record-path `./www/record`: its parent, and its last component.
    params.push(("protocol.mp4_save_path".into(), "./www".into()));
    params.push(("protocol.downloadRoot".into(), "./www".into()));
    params.push(("record.appName".into(), "record".into()));
    let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let answer = post(engine, "setServerConfig", &pairs);
    assert_eq!(answer["code"], 0, "{answer}");
}

#[test]
fn wvp_plays_live_through_stream_replace() {
    let hooks = WvpHooks::start();
    let engine = engine();

    // Coming online (`ZLMMediaServerStatusManager`): getServerConfig, the keys it binds.
    let config = post(&engine, "getServerConfig", &[]);
    let data = &config["data"][0];
    assert_eq!(data["general.mediaServerId"], MEDIA_SERVER_ID);
    for key in ["hook.alive_interval", "http.port", "http.sslport", "rtmp.port", "rtsp.port", "rtp_proxy.port"] {
        assert!(data[key].is_string(), "{key} missing: wvp unboxes it ({data})");
    }
    set_zlm_config(&engine, &hooks);
    let data = post(&engine, "getServerConfig", &[])["data"][0].clone();
    assert_eq!((data["protocol.continue_push_ms"].as_str(), data["protocol.mp4_save_path"].as_str()), (Some("3000"), Some("./www")), "told back as set");
    assert_eq!(data["hook.on_publish"], format!("http://{}/index/hook/on_publish", hooks.addr));

    // Live play (`gb28181/service/impl/PlayServiceImpl.play` → `RtpServerServiceImpl.openGbRTPServerForPlay`).
    let (ssrc, hex) = ssrc_and_id("0200000001");
    let name = format!("{DEVICE}_{CHANNEL}");
    let port = open_rtp_server(&engine, &hex, ssrc);
    hooks.authorize(&hex, json!({"code": 0, "msg": "success", "enable_audio": true, "enable_mp4": true, "stream_replace": name}));
    let device = Device::send(port, ssrc, true);

    // on_publish under the opened id; announced under the replaced one, with what wvp reads.
    let publish = hooks.wait("on_publish", &hex, |_| true);
    assert_eq!((publish["app"].as_str(), publish["schema"].as_str(), publish["params"].as_str()), (Some("rtp"), Some("rtp"), Some("")));
    assert_eq!(publish["mediaServerId"], MEDIA_SERVER_ID);
    let arrived = wait_for("on_stream_changed rtsp regist", Duration::from_secs(30), || hooks.changed(&name, true).pop());
    assert_eq!(arrived["app"], "rtp");
    assert!(arrived["params"].is_string(), "wvp parses params unguarded: {arrived}");
    assert_eq!(arrived["originType"], 3);
    assert_eq!(arrived["originUrl"], format!("rtp://__defaultVhost__/rtp/{hex}"), "SSRCFactory reads the SSRC after /rtp/");
    let codecs: Vec<u64> = arrived["tracks"].as_array().unwrap().iter().filter_map(|t| t["codec_id"].as_u64()).collect();
    assert!(codecs.contains(&0) && codecs.contains(&3), "H264 and G711A: {codecs:?}");
    assert!(hooks.changed(&hex, true).is_empty(), "nothing is announced under the opened id");

    // `MediaServerServiceImpl.isStreamReady` and the SSRC allocator's listing.
    let info = post(&engine, "getMediaInfo", &[("app", "rtp"), ("schema", "rtsp"), ("stream", &name), ("vhost", "__defaultVhost__")]);
    assert_eq!((info["code"].as_i64(), info["app"].as_str()), (Some(0), Some("rtp")), "{info}");
    let list = post(&engine, "getMediaList", &[("vhost", "__defaultVhost__"), ("schema", "rtsp")]);
    let entry = list["data"].as_array().unwrap().iter().find(|e| e["stream"] == name.as_str()).cloned().unwrap_or_else(|| panic!("{list}"));
    assert_eq!(entry["originUrl"], format!("rtp://__defaultVhost__/rtp/{hex}"));

    // The 200 OK named another SSRC (`PlayServiceImpl.InviteOKHandler`): wvp names the stream
    // by its replaced name, which gmv takes as the RTP server's.
    let updated = post(&engine, "updateRtpServerSSRC", &[("ssrc", &ssrc.to_string()), ("app", "rtp"), ("stream_id", &name)]);
    assert_eq!(updated["code"], 0, "{updated}");

    // The browser: HTTP-FLV and WS-FLV at the URLs wvp hands out, decoded by ffprobe.
    let out = work_dir().join("wvp-live.flv");
    let viewer = spawn_viewer(engine.http, play_path(&name, "call-1"), vec![], out.clone(), Duration::from_secs(3));
    assert_eq!(viewer.join().unwrap().0, 200);
    let probe = ffprobe(&out);
    assert_eq!((probe.codec.as_str(), probe.width, probe.height), ("h264", WIDTH, HEIGHT));
    assert!(probe.frames >= 25, "{probe:?}");
    assert_eq!(ffprobe_audio(&out).codec, "pcm_alaw");
    let play = hooks.wait("on_play", &name, |_| true);
    assert!(play["params"].as_str().unwrap().contains("callId=call-1"), "{play}");
    let ws = work_dir().join("wvp-live-ws.flv");
    std::fs::write(&ws, ws_flv(&engine, &play_path(&name, "call-2"), 30)).unwrap();
    assert!(ffprobe(&ws).frames >= 25, "WS-FLV decodes");
    let (head, _) = http_get(engine.http, &play_path(&hex, "call-3"), &[]);
    assert_eq!(status_of(&head), 404, "the opened id is not a stream name any more");

    // wvp's other URL forms (`StreamInfo`): fMP4 and TS over HTTP, fMP4 over a WebSocket.
    for (file, path) in [("wvp-live.mp4", format!("/rtp/{name}.live.mp4?callId=call-5")), ("wvp-live.ts", format!("/rtp/{name}.live.ts?callId=call-6"))] {
        let out = work_dir().join(file);
        assert_eq!(spawn_viewer(engine.http, path.clone(), vec![], out.clone(), Duration::from_secs(3)).join().unwrap().0, 200, "{path}");
        let probe = ffprobe(&out);
        assert_eq!((probe.codec.as_str(), probe.width, probe.height), ("h264", WIDTH, HEIGHT), "{path}");
        assert!(probe.frames >= 25, "{path}: {probe:?}");
    }
    let ws_mp4 = ws_read(&engine, &format!("/rtp/{name}.live.mp4?callId=call-7"), |b| b.windows(4).filter(|w| w == b"moof").count() >= 2);
    let out = work_dir().join("wvp-live-ws.mp4");
    std::fs::write(&out, ws_mp4).unwrap();
    assert!(ffprobe(&out).frames >= 25, "ws_fmp4 decodes");

    // The snapshot wvp takes once the stream arrived (`PlayServiceImpl.snapOnPlay`; the node
    // has no RTSP port, so the URL is HTTP).
    let snap_url = format!("http://127.0.0.1:{}/rtp/{name}.live.mp4", engine.http.port());
    let query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([("url", snap_url.as_str()), ("timeout_sec", "15"), ("expire_sec", "1"), ("async", "1"), ("secret", SECRET)])
        .finish();
    let jpeg = wait_for("a snapshot", Duration::from_secs(20), || {
        let (head, body) = http_get(engine.http, &format!("/index/api/getSnap?{query}"), &[]);
        (status_of(&head) == 200 && body.starts_with(&[0xff, 0xd8])).then_some(body)
    });
    assert!(jpeg.len() > 1000);

    // A second stream whose answer names the same stream is refused: the first plays on.
    let (ssrc2, hex2) = ssrc_and_id("0200000002");
    let port2 = open_rtp_server(&engine, &hex2, ssrc2);
    hooks.authorize(&hex2, json!({"code": 0, "msg": "success", "enable_audio": true, "enable_mp4": false, "stream_replace": name}));
    let intruder = Device::send(port2, ssrc2, true);
    hooks.wait("on_publish", &hex2, |_| true);
    wait_for("the colliding server closed", Duration::from_secs(10), || {
        let list = post(&engine, "listRtpServer", &[]);
        (!list.to_string().contains(&hex2)).then_some(())
    });
    drop(intruder);
    assert_eq!(hooks.changed(&name, true).len(), 1, "announced once");
    assert_eq!(post(&engine, "getMediaInfo", &[("app", "rtp"), ("schema", "rtsp"), ("stream", &name), ("vhost", "__defaultVhost__")])["code"], 0);

    // A channel without audio (`enable_audio: false`, wvp's `channel.hasAudio`): video only.
    let (ssrc3, hex3) = ssrc_and_id("0200000003");
    let silent_name = format!("{DEVICE}_{CHANNEL_NO_AUDIO}");
    let port3 = open_rtp_server(&engine, &hex3, ssrc3);
    hooks.authorize(&hex3, json!({"code": 0, "msg": "success", "enable_audio": false, "enable_mp4": false, "stream_replace": silent_name}));
    let silent = Device::send(port3, ssrc3, true);
    let arrived = wait_for("the silent channel", Duration::from_secs(30), || hooks.changed(&silent_name, true).pop());
    let codecs: Vec<u64> = arrived["tracks"].as_array().unwrap().iter().filter_map(|t| t["codec_id"].as_u64()).collect();
    assert_eq!(codecs, [0], "video only");
    let out = work_dir().join("wvp-silent.flv");
    assert_eq!(spawn_viewer(engine.http, play_path(&silent_name, "call-4"), vec![], out.clone(), Duration::from_secs(2)).join().unwrap().0, 200);
    let flv = std::fs::read(&out).unwrap();
    assert!(flv_tags(&flv).iter().all(|t| t.0 != 8), "no audio tag");
    drop(silent);

    // Stop (`RtpServerServiceImpl.closeRTPServer`): closeRtpServer and close_streams by the
    // replaced name; wvp needs `hit`, then hears the stream leave.
    let closed = post(&engine, "closeRtpServer", &[("app", "rtp"), ("stream_id", &name)]);
    assert_eq!(closed, json!({"code": 0, "hit": 1}));
    let swept = post(&engine, "close_streams", &[("vhost", "__defaultVhost__"), ("app", "rtp"), ("stream", &name), ("force", "1")]);
    assert_eq!(swept["code"], 0);
    wait_for("departure", Duration::from_secs(10), || hooks.changed(&name, false).pop());
    let record = hooks.wait("on_record_mp4", &name, |_| true);
    assert_eq!(record["app"], "rtp", "recorded under the replaced name: {record}");
    drop(device);
}

#[test]
fn wvp_downloads_a_recording_as_one_file_and_pauses_a_playback() {
    let hooks = WvpHooks::start();
    let engine = engine();
    set_zlm_config(&engine, &hooks);

    // Download (`RtpServerServiceImpl.openGbRTPServerForDownload`): MP4 on, one file for the
    // range plus 10 s (`mp4_max_second`), while the node's own files span ROTATE_S.
    let (ssrc, hex) = ssrc_and_id("1200000001");
    let name = format!("{DEVICE}_{CHANNEL}_{START}_{END}");
    let port = open_rtp_server(&engine, &hex, ssrc);
    let span = (RANGE_S + 10).to_string();
    hooks.authorize(&hex, json!({"code": 0, "msg": "success", "enable_audio": true, "enable_mp4": true, "mp4_max_second": span.parse::<u64>().unwrap(), "stream_replace": name}));
    let device = Device::send(port, ssrc, true);
    wait_for("download arrived", Duration::from_secs(30), || hooks.changed(&name, true).pop());
    // Progress as wvp reads it (`PlayServiceImpl.getDownLoadInfo`: the tracks' duration).
    let sent_s = 3 * ROTATE_S;
    wait_for("the download's progress", Duration::from_secs(30), || {
        let info = post(&engine, "getMediaInfo", &[("app", "rtp"), ("schema", "rtsp"), ("stream", &name), ("vhost", "__defaultVhost__")]);
        let ms = info["tracks"].as_array()?.iter().filter_map(|t| t["duration"].as_u64()).max()?;
        (ms >= sent_s * 1000).then_some(())
    });
    drop(device);
    let closed = post(&engine, "closeRtpServer", &[("app", "rtp"), ("stream_id", &name)]);
    assert_eq!(closed["hit"], 1);
    let record = hooks.wait("on_record_mp4", &name, |_| true);
    // The file begins at the first keyframe after the publish, a little after the media began.
    let time_len = record["time_len"].as_f64().unwrap();
    assert!(time_len > (2 * ROTATE_S) as f64, "one file, longer than the node's span: {record}");
    std::thread::sleep(Duration::from_millis(500)); // any second file's hook would follow at once
    assert_eq!(hooks.named("on_record_mp4", &name).len(), 1, "one file");
    let file = std::path::PathBuf::from(record["file_path"].as_str().unwrap());
    let probe = ffprobe(&file);
    assert!(probe.frames as f64 >= time_len * f64::from(FPS) * 0.9, "{probe:?} in {time_len} s");

    // The browser fetches it where wvp points it (`ZLMMediaNodeServerService.getDownloadFilePath`:
    // downloadFile with on_record_mp4's file_path, not URL-encoded, no secret; wvp sets
    // on_http_access to "", so the node's allowed addresses decide, as ZLMediaKit's do).
    let file_path = record["file_path"].as_str().unwrap();
    let url = format!("/index/api/downloadFile?file_path={file_path}");
    let on_disk = std::fs::read(&file).unwrap();
    let (head, body) = http_get(engine.http, &url, &[]);
    assert_eq!(status_of(&head), 200, "{head}");
    assert!(body == on_disk, "the whole file ({} of {} bytes)", body.len(), on_disk.len());
    let (head, body) = http_get(engine.http, &url, &[("Range", "bytes=100-199")]);
    assert_eq!((status_of(&head), body.as_slice()), (206, &on_disk[100..200]), "byte ranges for the player's seeks");
    // From an address outside node.download_allow_ips: refused, unless the secret comes along.
    assert_eq!(get_from([127, 0, 0, 2], &engine, &url).0, 401);
    let (status, body) = get_from([127, 0, 0, 2], &engine, &format!("{url}&secret={SECRET}"));
    assert_eq!((status, body.len()), (200, on_disk.len()), "the secret opens it from anywhere");
    // Nothing but the node's recordings, however the path is put.
    let records = file.parent().unwrap().display().to_string();
    let config = engine.config.display().to_string();
    for bad in ["/etc/passwd".to_string(), format!("{records}/../../{}", engine.config.file_name().unwrap().to_str().unwrap()), config, format!("{records}/%2e%2e/x.mp4"), records.clone()] {
        let (head, body) = http_get(engine.http, &format!("/index/api/downloadFile?file_path={bad}"), &[]);
        assert_eq!(status_of(&head), 401, "{bad}: {}", String::from_utf8_lossy(&body));
    }
    let link = file.with_file_name("1200000001_1.mp4");
    std::os::unix::fs::symlink(&engine.config, &link).unwrap();
    let (head, _) = http_get(engine.http, &format!("/index/api/downloadFile?file_path={}", link.display()), &[]);
    assert_eq!(status_of(&head), 404, "a symlink in the folder is no recording");
    std::fs::remove_file(&link).unwrap();

    // Cloud-record playback (`service/impl/CloudRecordServiceImpl` → `ZLMMediaNodeServerService.loadMP4File`):
    // the file published as `mp4_record/{app}_{stream}_{file}_{6 letters}`, sought to its
    // middle (`seekRecordStamp`, stamp as BigDecimal writes a double) and sped up fourfold
    // (`setRecordSpeed`) before the browser plays it.
    let stem = file.file_stem().unwrap().to_str().unwrap();
    let vod = format!("rtp_{name}_{stem}_qwerty");
    let vod_call = |call: &str, extra: &[(&str, &str)]| {
        let mut params = vec![("vhost", "__defaultVhost__"), ("app", "mp4_record"), ("stream", vod.as_str())];
        params.extend_from_slice(extra);
        post(&engine, call, &params)
    };
    let loaded = vod_call("loadMP4File", &[("file_path", file_path), ("file_repeat", "0")]);
    let duration_ms = loaded["data"]["duration_ms"].as_u64().unwrap_or(0);
    assert!(loaded["code"] == 0 && duration_ms as f64 >= time_len * 900.0, "{loaded}");
    let arrived = wait_for("the recording arrived", Duration::from_secs(10), || hooks.changed(&vod, true).pop());
    assert_eq!((arrived["app"].as_str(), arrived["originType"].as_u64()), (Some("mp4_record"), Some(6)));
    let middle = format!("{}.000000000000227373675443232059478759765625", duration_ms / 2);
    assert_eq!(vod_call("seekRecordStamp", &[("stamp", &middle), ("schema", "fmp4")]), json!({"code": 0, "result": 0, "msg": "success"}));
    assert_eq!(vod_call("setRecordSpeed", &[("speed", "4"), ("schema", "ts")])["code"], 0);
    let out = work_dir().join("wvp-cloud-record.flv");
    let started = std::time::Instant::now();
    let (status, _) = spawn_viewer(engine.http, format!("/mp4_record/{vod}.live.flv"), vec![], out.clone(), Duration::from_secs(20)).join().unwrap();
    let elapsed = started.elapsed();
    assert_eq!(status, 200);
    let played = ffprobe(&out).frames as f64;
    let whole = time_len * f64::from(FPS);
    // From the keyframe before the middle (GOPs of a second) to the end.
    assert!(played >= whole / 2.0 - 2.0 && played <= whole / 2.0 + f64::from(FPS) + 2.0, "{played} of {whole} frames");
    let rest_s = played / f64::from(FPS);
    assert!(elapsed.as_secs_f64() < rest_s * 0.75, "fourfold: {rest_s:.1} s of media in {elapsed:?}");
    // Its only viewer left: the playback closes, as ZLMediaKit's auto_close does.
    wait_for("the recording playback closed", Duration::from_secs(10), || hooks.changed(&vod, false).pop());
    assert_eq!(vod_call("seekRecordStamp", &[("stamp", "0")])["code"], -500);
    assert_ne!(
        post(&engine, "loadMP4File", &[("vhost", "__defaultVhost__"), ("app", "mp4_record"), ("stream", "x"), ("file_path", "/etc/passwd")])["code"],
        0,
        "only the node's recordings"
    );

    // Retention (`conf/CloudRecordTimer.java`, daily): each expired file by its folder's name
    // (`period`) and its file name; the file goes, a second time finds nothing.
    let period = file.parent().unwrap().file_name().unwrap().to_str().unwrap().to_string();
    let file_name = record["file_name"].as_str().unwrap();
    let delete = |file: &str| post(&engine, "deleteRecordDirectory", &[("vhost", "__defaultVhost__"), ("app", "rtp"), ("stream", &name), ("period", &period), ("name", file)]);
    for bad in ["../gmv.yml", "x.mp4", "/etc/passwd"] {
        assert_ne!(delete(bad)["code"], 0, "{bad}");
    }
    assert!(engine.config.exists());
    assert_eq!(delete(file_name)["code"], 0);
    assert!(!file.exists(), "deleted");
    assert_eq!(status_of(&http_get(engine.http, &url, &[]).0), 404);
    assert_eq!(delete(file_name)["code"], -1, "gone already");

    // Playback with pause (`PlayServiceImpl.playbackPause/playbackResume`): by the replaced name.
    let (ssrc, hex) = ssrc_and_id("1200000002");
    let name = format!("{DEVICE}_{CHANNEL}_{START}_20261205083000");
    let port = open_rtp_server(&engine, &hex, ssrc);
    hooks.authorize(&hex, json!({"code": 0, "msg": "success", "enable_audio": true, "enable_mp4": false, "stream_replace": name}));
    let device = Device::send(port, ssrc, true);
    wait_for("playback arrived", Duration::from_secs(30), || hooks.changed(&name, true).pop());
    assert_eq!(post(&engine, "pauseRtpCheck", &[("stream_id", &name)])["code"], 0);
    assert_eq!(post(&engine, "resumeRtpCheck", &[("stream_id", &name)])["code"], 0);
    drop(device);
    assert_eq!(post(&engine, "closeRtpServer", &[("app", "rtp"), ("stream_id", &hex)]), json!({"code": 0, "hit": 1}), "the opened id stays an alias");
}

#[test]
fn wvp_sets_the_port_range_and_dials_devices_as_annex_d_asks() {
    let hooks = WvpHooks::start();
    let engine = engine();
    set_zlm_config(&engine, &hooks);
    let range = post(&engine, "getServerConfig", &[])["data"][0]["rtp_proxy.port_range"].as_str().unwrap().to_string();
    let (min, max) = range.split_once('-').map(|(a, b)| (a.parse::<u16>().unwrap(), b.parse::<u16>().unwrap())).unwrap();

    // An explicit port outside the range is refused (a firewall opened for it is enough).
    let outside = post(&engine, "openRtpServer", &[("tcp_mode", "0"), ("app", "rtp"), ("stream_id", "0BEBC2FF"), ("port", "1"), ("only_track", "0"), ("re_use_port", "0")]);
    assert_eq!(outside["code"], -300, "{outside}");
    assert!(outside["msg"].as_str().unwrap().contains("outside"), "{outside}");

    // wvp narrows the range (`ZLMMediaServerStatusManager.setZLMConfig`: media.rtp.port-range
    // with `,` turned into `-`): RTP servers take ports there from now on.
    let (new_min, new_max) = (max - 7, max);
    let narrowed = format!("{new_min}-{new_max}");
    let set = post(&engine, "setServerConfig", &[("rtp_proxy.port_range", &narrowed)]);
    assert_eq!((set["code"].as_i64(), set["changed"].as_i64()), (Some(0), Some(1)), "{set}");
    assert_eq!(post(&engine, "getServerConfig", &[])["data"][0]["rtp_proxy.port_range"], narrowed.as_str());
    for n in 0..4u32 {
        let (ssrc, hex) = ssrc_and_id(&format!("02000001{n:02}"));
        let port = open_rtp_server(&engine, &hex, ssrc);
        assert!((new_min..=new_max).contains(&port), "port {port} outside {narrowed}");
        assert_eq!(post(&engine, "closeRtpServer", &[("app", "rtp"), ("stream_id", &hex)])["hit"], 1);
    }
    let old = post(&engine, "openRtpServer", &[("tcp_mode", "0"), ("app", "rtp"), ("stream_id", "0BEBC2FE"), ("port", &min.to_string())]);
    assert_eq!(old["code"], -300, "the old range's ports are outside now: {old}");

    // TCP active (`PlayServiceImpl.tcpActiveHandler` → connectRtpServer by the replaced name
    // once the device answered): the device's media port listens only a moment later; the
    // node tries again, a second apart (GB/T 28181-2022 Annex D), and answers wvp in time.
    let (ssrc, hex) = ssrc_and_id("0200000201");
    let info = post(&engine, "openRtpServer", &[("tcp_mode", "2"), ("app", "rtp"), ("stream_id", &hex), ("only_track", "0"), ("re_use_port", "0"), ("port", "0"), ("only_audio", "0"), ("ssrc", &ssrc.to_string())]);
    assert_eq!(info["code"], 0, "{info}");
    let device_port = free_tcp_port();
    let late = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1200));
        let listener = TcpListener::bind(("127.0.0.1", device_port)).unwrap();
        let (first, _) = listener.accept().unwrap();
        (listener, first)
    });
    let started = std::time::Instant::now();
    let connected = post(&engine, "connectRtpServer", &[("dst_url", "127.0.0.1"), ("dst_port", &device_port.to_string()), ("app", "rtp"), ("stream_id", &hex)]);
    assert_eq!(connected, json!({"code": 0}), "after {:?}", started.elapsed());
    let (listener, first) = late.join().unwrap();
    // The device drops the connection: the node dials it again.
    drop(first);
    listener.set_nonblocking(true).unwrap();
    let (again, _) = wait_for("the node's redial", Duration::from_secs(10), || listener.accept().ok());
    again.set_nonblocking(false).unwrap();
    hooks.authorize(&hex, json!({"code": 0, "msg": "success", "enable_audio": true, "enable_mp4": false, "stream_replace": format!("{DEVICE}_{CHANNEL}")}));
    let mut device = Device::over_tcp(again, ssrc);
    hooks.wait("on_publish", &hex, |_| true);
    device.stop();

    // A port nobody listens on: three tries a second apart, then ZLMediaKit's failure shape.
    let (ssrc, hex) = ssrc_and_id("0200000202");
    let opened = post(&engine, "openRtpServer", &[("tcp_mode", "2"), ("app", "rtp"), ("stream_id", &hex), ("port", "0"), ("ssrc", &ssrc.to_string())]);
    assert_eq!(opened["code"], 0, "{opened}");
    let nobody = free_tcp_port();
    let started = std::time::Instant::now();
    let failed = post(&engine, "connectRtpServer", &[("dst_url", "127.0.0.1"), ("dst_port", &nobody.to_string()), ("app", "rtp"), ("stream_id", &hex)]);
    assert_eq!(failed["code"], -1, "{failed}");
    assert!(failed["msg"].is_string());
    assert!(started.elapsed() >= Duration::from_secs(2), "3 tries, 1 s apart: {:?}", started.elapsed());
}

/// Starts a live channel as wvp does and waits until it arrived; the device keeps sending.
fn live_channel(engine: &Engine, hooks: &WvpHooks, ssrc_text: &str, name: &str) -> Device {
    let (ssrc, hex) = ssrc_and_id(ssrc_text);
    let port = open_rtp_server(engine, &hex, ssrc);
    hooks.authorize(&hex, json!({"code": 0, "msg": "success", "enable_audio": true, "enable_mp4": false, "stream_replace": name}));
    let device = Device::send(port, ssrc, true);
    wait_for("the channel arrived", Duration::from_secs(30), || hooks.changed(name, true).pop());
    device
}

/// RTP payloads (PS) received on a UDP socket for `span`, written to a file ffprobe reads;
/// also where they came from and the SSRCs seen.
fn receive_udp_ps(sock: &UdpSocket, span: Duration, name: &str) -> (std::path::PathBuf, Vec<SocketAddr>, Vec<u32>) {
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let deadline = std::time::Instant::now() + span;
    let (mut ps, mut from, mut ssrcs) = (Vec::new(), Vec::new(), Vec::new());
    let mut buf = vec![0u8; 65536];
    while std::time::Instant::now() < deadline {
        if let Ok((n, peer)) = sock.recv_from(&mut buf) {
            let p = gmv::proto::rtp::RtpPacket::parse(bytes::Bytes::copy_from_slice(&buf[..n])).unwrap();
            ps.extend_from_slice(&p.payload);
            if !from.contains(&peer) {
                from.push(peer);
            }
            if !ssrcs.contains(&p.ssrc) {
                ssrcs.push(p.ssrc);
            }
        }
    }
    let out = work_dir().join(name);
    std::fs::write(&out, ps).unwrap();
    (out, from, ssrcs)
}

/// RFC 4571 frames read from a TCP connection for `span`, their RTP payloads (PS) to a file.
fn receive_tcp_ps(conn: &mut TcpStream, span: Duration, name: &str) -> std::path::PathBuf {
    conn.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let deadline = std::time::Instant::now() + span;
    let mut data = Vec::new();
    let mut buf = vec![0u8; 65536];
    while std::time::Instant::now() < deadline {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let mut ps = Vec::new();
    let mut rest = &data[..];
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        if rest.len() < 2 + len {
            break;
        }
        let p = gmv::proto::rtp::RtpPacket::parse(bytes::Bytes::copy_from_slice(&rest[2..2 + len])).unwrap();
        ps.extend_from_slice(&p.payload);
        rest = &rest[2 + len..];
    }
    let out = work_dir().join(name);
    std::fs::write(&out, ps).unwrap();
    out
}

fn assert_clip(path: &std::path::Path, seconds: f64) {
    let probe = ffprobe(path);
    assert_eq!((probe.codec.as_str(), probe.width, probe.height), ("h264", WIDTH, HEIGHT), "{}", path.display());
    assert!(probe.frames as f64 >= seconds * f64::from(FPS) * 0.6, "{probe:?} from {}", path.display());
}

/// ffmpeg receiving RTP as an SDP describes it (an independent peer), for `seconds` of media.
fn ffmpeg_rtp(sdp: &str, out: &std::path::Path, seconds: u32) -> std::process::Child {
    let sdp_path = out.with_extension("sdp");
    std::fs::write(&sdp_path, sdp).unwrap();
    std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-protocol_whitelist", "file,udp,rtp", "-i"])
        .arg(&sdp_path)
        .args(["-t", &seconds.to_string(), "-c", "copy"])
        .arg(out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run ffmpeg")
}

#[test]
fn wvp_sends_a_stream_on_as_ps_and_raw_over_udp_and_tcp_both_ways() {
    let hooks = WvpHooks::start();
    let engine = engine();
    set_zlm_config(&engine, &hooks);
    let name = format!("{DEVICE}_{CHANNEL}");
    let _device = live_channel(&engine, &hooks, "0200000301", &name);
    let send = |call: &str, extra: &[(&str, &str)]| {
        let mut params = vec![("vhost", "__defaultVhost__"), ("app", "rtp"), ("stream", name.as_str())];
        params.extend_from_slice(extra);
        post(&engine, call, &params)
    };

    // Cascade over UDP (`AckRequestProcessor` → `MediaServerServiceImpl.startSendRtp`): PS,
    // pt 96, from the port wvp allocated, RTCP asked for as wvp asks (`"500"`, which reads false).
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let src_port = free_udp_port();
    let (dst, src) = (receiver.local_addr().unwrap().port().to_string(), src_port.to_string());
    let started = send(
        "startSendRtp",
        &[("ssrc", "100000301"), ("src_port", &src), ("pt", "96"), ("use_ps", "1"), ("only_audio", "0"), ("is_udp", "1"), ("enable_origin_recv_limit", "1"), ("udp_rtcp_timeout", "500"), ("dst_url", "127.0.0.1"), ("dst_port", &dst)],
    );
    assert_eq!(started, json!({"code": 0, "local_port": src_port}));
    let (ps, from, ssrcs) = receive_udp_ps(&receiver, Duration::from_secs(3), "wvp-send-udp.mpg");
    assert_clip(&ps, 3.0);
    assert_eq!(from.iter().map(|a| a.port()).collect::<Vec<_>>(), [src_port], "sent from src_port");
    assert_eq!(ssrcs, [100_000_301]);
    assert_eq!(send("stopSendRtp", &[("ssrc", "100000301")]), json!({"code": 0}));
    let stopped = hooks.wait("on_send_rtp_stopped", &name, |b| b["ssrc"] == "100000301");
    assert_eq!((stopped["app"].as_str(), stopped["originType"].as_u64()), (Some("rtp"), Some(3)));

    // Raw H.264 over UDP, received by ffmpeg from an SDP (an independent RTP peer).
    let port = free_udp_port();
    let out = work_dir().join("wvp-send-es.mkv");
    let mut ffmpeg = ffmpeg_rtp(&format!("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=gmv\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=video {port} RTP/AVP 98\r\na=rtpmap:98 H264/90000\r\n"), &out, 3);
    let started = send("startSendRtp", &[("ssrc", "100000302"), ("pt", "98"), ("use_ps", "0"), ("only_audio", "0"), ("is_udp", "1"), ("dst_url", "127.0.0.1"), ("dst_port", &port.to_string())]);
    assert_eq!(started["code"], 0, "{started}");
    assert!(wait_exit(&mut ffmpeg, Duration::from_secs(30)).is_some_and(|s| s.success()), "ffmpeg took 3 s of the stream");
    assert_clip(&out, 2.0);
    send("stopSendRtp", &[("ssrc", "100000302")]);

    // Voice broadcast (`PlayServiceImpl.startPushStream`): raw G.711 A-law alone, pt 8; ffmpeg
    // decodes it and the tone is the camera's 1 kHz.
    let port = free_udp_port();
    let wav = work_dir().join("wvp-send-voice.wav");
    let mut ffmpeg = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-protocol_whitelist", "file,udp,rtp", "-i"])
        .arg({
            let sdp = work_dir().join("wvp-send-voice.sdp");
            std::fs::write(&sdp, format!("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=gmv\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n")).unwrap();
            sdp
        })
        .args(["-t", "2", "-f", "s16le", "-ac", "1", "-ar", "8000"])
        .arg(&wav)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run ffmpeg");
    let started = send("startSendRtp", &[("ssrc", "100000303"), ("pt", "8"), ("use_ps", "0"), ("only_audio", "1"), ("is_udp", "1"), ("dst_url", "127.0.0.1"), ("dst_port", &port.to_string())]);
    assert_eq!(started["code"], 0, "{started}");
    assert!(wait_exit(&mut ffmpeg, Duration::from_secs(30)).is_some_and(|s| s.success()), "ffmpeg took 2 s of the voice");
    let samples: Vec<i16> = std::fs::read(&wav).unwrap().chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
    assert!(samples.len() >= 8000, "{} samples", samples.len());
    let crossings = samples.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count() as f64;
    let hz = crossings / 2.0 / (samples.len() as f64 / 8000.0);
    assert!((900.0..1100.0).contains(&hz), "a {hz:.0} Hz tone");
    send("stopSendRtp", &[("ssrc", "100000303")]);

    // Cascade over TCP, dialled by the node (`is_udp=0`).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let dst = listener.local_addr().unwrap().port().to_string();
    let started = send("startSendRtp", &[("ssrc", "100000304"), ("pt", "96"), ("use_ps", "1"), ("only_audio", "0"), ("is_udp", "0"), ("dst_url", "127.0.0.1"), ("dst_port", &dst)]);
    assert_eq!(started["code"], 0, "{started}");
    let (mut conn, _) = listener.accept().unwrap();
    assert_clip(&receive_tcp_ps(&mut conn, Duration::from_secs(3), "wvp-send-tcp.mpg"), 3.0);
    // The upper platform goes away: the sender ends and says so.
    drop(conn);
    let stopped = hooks.wait("on_send_rtp_stopped", &name, |b| b["ssrc"] == "100000304");
    assert_eq!(stopped["err"], 1, "the peer hung up: {stopped}");

    // Cascade to an upper platform that connects (`InviteRequestProcessor`, SDP setup:active:
    // startSendRtpPassive before the 200 OK, close_delay_ms 10000).
    let src_port = free_tcp_port();
    let started = send(
        "startSendRtpPassive",
        &[("ssrc", "100000305"), ("src_port", &src_port.to_string()), ("pt", "96"), ("use_ps", "1"), ("only_audio", "0"), ("is_udp", "0"), ("enable_origin_recv_limit", "1"), ("close_delay_ms", "10000"), ("dst_port", "0")],
    );
    assert_eq!(started, json!({"code": 0, "local_port": src_port}));
    let mut conn = TcpStream::connect(("127.0.0.1", src_port)).unwrap();
    assert_clip(&receive_tcp_ps(&mut conn, Duration::from_secs(3), "wvp-send-passive.mpg"), 3.0);
    assert_eq!(send("stopSendRtp", &[]), json!({"code": 0}), "all of the stream's senders");
    hooks.wait("on_send_rtp_stopped", &name, |b| b["ssrc"] == "100000305");
    assert_eq!(send("stopSendRtp", &[]), json!({"code": -1, "msg": "stopSendRtp failed"}), "none left");

    // Nobody there: a refused dial fails at once; a passive send nobody takes times out.
    let nobody = free_tcp_port().to_string();
    let refused = send("startSendRtp", &[("ssrc", "100000306"), ("is_udp", "0"), ("dst_url", "127.0.0.1"), ("dst_port", &nobody)]);
    assert_eq!((refused["code"].as_i64(), refused["local_port"].as_u64()), (Some(-1), Some(0)), "{refused}");
    let started = send("startSendRtpPassive", &[("ssrc", "100000307"), ("is_udp", "0"), ("close_delay_ms", "1000")]);
    assert_eq!(started["code"], 0);
    let stopped = hooks.wait("on_send_rtp_stopped", &name, |b| b["ssrc"] == "100000307");
    assert_eq!(stopped["err"], 2, "timed out: {stopped}");
    let unknown = post(&engine, "startSendRtp", &[("vhost", "__defaultVhost__"), ("app", "rtp"), ("stream", "nope"), ("ssrc", "1"), ("is_udp", "1"), ("dst_url", "127.0.0.1"), ("dst_port", "9")]);
    assert_eq!(unknown, json!({"code": -500, "msg": "can not find the source stream"}));
    let (_, metrics) = engine.try_request("GET", "/metrics", &[("gmv-token", TOKEN)], b"").unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("gmv_node_sends_stopped_total ") && !l.ends_with(" 0")), "counted");
}

/// The H.265 of legacy FLV tags (codec id 12) as Annex B: the parameter sets of the
/// HEVCDecoderConfigurationRecord, then each picture's NAL units; how many tags were legacy
/// and how many enhanced (`hvc1`).
fn legacy_hevc_annexb(flv: &[u8]) -> (Vec<u8>, usize, usize) {
    let (mut out, mut legacy, mut enhanced) = (Vec::new(), 0, 0);
    for (kind, _, body) in flv_tags(flv) {
        if kind != 9 || body.len() < 5 {
            continue;
        }
        if body[0] & 0x80 != 0 {
            enhanced += 1;
            continue;
        }
        assert_eq!(body[0] & 0x0f, 12, "H.265 as codec id 12");
        legacy += 1;
        let data = &body[5..];
        if body[1] == 0 {
            let mut at = 23;
            for _ in 0..data[22] {
                let n = usize::from(u16::from_be_bytes([data[at + 1], data[at + 2]]));
                at += 3;
                for _ in 0..n {
                    let len = usize::from(u16::from_be_bytes([data[at], data[at + 1]]));
                    out.extend_from_slice(&[0, 0, 0, 1]);
                    out.extend_from_slice(&data[at + 2..at + 2 + len]);
                    at += 2 + len;
                }
            }
        } else {
            let mut rest = data;
            while rest.len() >= 4 {
                let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                out.extend_from_slice(&[0, 0, 0, 1]);
                out.extend_from_slice(&rest[4..4 + len]);
                rest = &rest[4 + len..];
            }
        }
    }
    (out, legacy, enhanced)
}

#[test]
fn wvp_plays_h265_as_codec_id_12_and_enhanced_when_asked() {
    let hooks = WvpHooks::start();
    let engine = engine();
    set_zlm_config(&engine, &hooks);
    assert_eq!(post(&engine, "getServerConfig", &[])["data"][0]["rtmp.enhanced"], "0", "as wvp ships ZLMediaKit");
    let (ssrc, hex) = ssrc_and_id("0200000401");
    let name = format!("{DEVICE}_{CHANNEL}");
    let port = open_rtp_server(&engine, &hex, ssrc);
    hooks.authorize(&hex, json!({"code": 0, "msg": "success", "enable_audio": true, "enable_mp4": false, "stream_replace": name}));
    let _device = Device::send_clip(port, ssrc, false, Codec::H265);
    wait_for("the H.265 channel", Duration::from_secs(30), || hooks.changed(&name, true).pop());

    // jessibuca v3 at wvp's URL: codec id 12; its pictures decode.
    let out = work_dir().join("wvp-h265-legacy.flv");
    assert_eq!(spawn_viewer(engine.http, play_path(&name, "call-h265"), vec![], out.clone(), Duration::from_secs(3)).join().unwrap().0, 200);
    let flv = std::fs::read(&out).unwrap();
    let (annexb, legacy, enhanced) = legacy_hevc_annexb(&flv);
    assert!(legacy > 25 && enhanced == 0, "{legacy} legacy, {enhanced} enhanced tags");
    let es = work_dir().join("wvp-h265-legacy.h265");
    std::fs::write(&es, annexb).unwrap();
    let probe = ffprobe(&es);
    assert_eq!((probe.codec.as_str(), probe.width, probe.height), ("hevc", WIDTH, HEIGHT));
    assert!(probe.frames >= 25, "{probe:?}");

    // The URL asks for enhanced RTMP; then the node is set to it for everyone.
    let out = work_dir().join("wvp-h265-enhanced.flv");
    spawn_viewer(engine.http, format!("{}&h265=enhanced", play_path(&name, "call-h265e")), vec![], out.clone(), Duration::from_secs(2)).join().unwrap();
    let (_, legacy, enhanced) = legacy_hevc_annexb(&std::fs::read(&out).unwrap());
    assert!(legacy == 0 && enhanced > 10, "{legacy} legacy, {enhanced} enhanced");
    assert_eq!(post(&engine, "setServerConfig", &[("rtmp.enhanced", "1")])["changed"], 1);
    spawn_viewer(engine.http, play_path(&name, "call-h265f"), vec![], out.clone(), Duration::from_secs(2)).join().unwrap();
    let (_, legacy, enhanced) = legacy_hevc_annexb(&std::fs::read(&out).unwrap());
    assert!(legacy == 0 && enhanced > 10, "{legacy} legacy, {enhanced} enhanced");
}

/// wvp's WebRTC player (`common/StreamInfo.setRtc`: `/index/api/webrtc?app=&stream=&type=play`
/// with its `callId`, the offer posted as ZLMediaKit's player posts it, text/plain) plays a
/// channel in headless Chromium: ZLMediaKit's JSON answer (`code` 0, `type` answer, `sdp`),
/// H.264 and the channel's G.711 A-law decoded; `on_play` asked with schema `rtc` and the
/// URL's parameters; `type=push` refused in ZLMediaKit's words.
#[test]
fn wvps_webrtc_player_plays_a_channel() {
    let hooks = WvpHooks::start();
    let engine = engine();
    set_zlm_config(&engine, &hooks);
    let name = format!("{DEVICE}_{CHANNEL}");
    let device = live_channel(&engine, &hooks, "0200000031", &name);
    let played = whep_in_chromium(&engine, &format!("/index/api/webrtc?app=rtp&stream={name}&type=play&callId=call-31"), 1, &[("ZLM", "1")]);
    assert_eq!((played["zlm"]["code"].as_i64(), played["zlm"]["type"].as_str()), (Some(0), Some("answer")), "{played}");
    assert_eq!(played["video"]["codec"], "video/H264", "{played}");
    assert!(played["video"]["frames_decoded"].as_u64().unwrap_or(0) > 0, "{played}");
    assert_eq!(played["audio"]["codec"], "audio/PCMA", "{played}");
    let play = hooks.wait("on_play", &name, |b| b["schema"] == "rtc");
    assert!(play["params"].as_str().is_some_and(|p| p.contains("callId=call-31")), "{play}");
    let pushed = whep_in_chromium(&engine, &format!("/index/api/webrtc?app=rtp&stream={name}&type=push"), 1, &[("ZLM", "1")]);
    assert_eq!(pushed["zlm"]["code"], -400, "{pushed}");
    drop(device);
}

/// wvp's 拉流代理 (`streamProxy/service/impl/StreamProxyPlayServiceImpl.startProxy` →
/// `ZLMMediaNodeServerService.startProxy` → `ZLMRESTfulUtils.addStreamProxy`) of a camera
/// GStreamer's RTSP server serves: added as wvp posts it, announced as wvp waits for it
/// (`on_stream_changed` regist, schema rtsp, with `params` and `originUrl`), played from the URL
/// wvp hands the player and decoded by ffprobe, listed, refused twice, and stopped by wvp's
/// on-demand path (`delStreamProxy` inside `on_stream_none_reader`, then `close: true`).
#[test]
fn wvp_proxies_an_rtsp_camera_plays_it_and_stops_it_when_nobody_watches() {
    require_tool("ffprobe");
    let rtsp_port = free_tcp_port();
    let _camera = common::rtsp_server::RtspServer::start(rtsp_port, &[]);
    let yaml = format!("node:\n  secret: \"{SECRET}\"\n  media_server_id: {MEDIA_SERVER_ID}\n  max_stream_wait_ms: 1500\n  stream_none_reader_delay_ms: 1000\n");
    let engine = Engine::start_command(2, "", &yaml, "", None, None, &["--role", "media"]);
    let hooks = WvpHooks::start();
    set_zlm_config(&engine, &hooks);
    let url = format!("rtsp://127.0.0.1:{rtsp_port}/h264");
    // ZLMRESTfulUtils.addStreamProxy's fields (rtp_type 0: the UI's TCP; retry_count hard-coded 3).
    let add = |stream: &str, url: &str| {
        post(&engine, "addStreamProxy", &[("vhost", "__defaultVhost__"), ("app", "live"), ("stream", stream), ("url", url), ("enable_mp4", "0"), ("enable_audio", "1"), ("rtp_type", "0"), ("timeout_sec", "10"), ("retry_count", "3")])
    };
    let missing = post(&engine, "addStreamProxy", &[("vhost", "__defaultVhost__"), ("app", "live")]);
    assert_eq!(missing, json!({"code": -300, "msg": "Required parameter missed: \"vhost\",\"app\",\"stream\",\"url\""}));

    let added = add("cam1", &url);
    assert_eq!(added, json!({"code": 0, "data": {"key": "__defaultVhost__/live/cam1"}}), "answered once it plays");
    let key = "__defaultVhost__/live/cam1";
    // ZLMHttpHookListener.onStreamChanged: only schema rtsp, regist true makes the arrival.
    let regist = hooks.wait("on_stream_changed", "cam1", |b| b["schema"] == "rtsp" && b["regist"] == true);
    assert_eq!((regist["app"].as_str(), regist["originType"].as_u64(), regist["originTypeStr"].as_str()), (Some("live"), Some(4), Some("pull")), "{regist}");
    assert_eq!((regist["originUrl"].as_str(), regist["params"].as_str()), (Some(url.as_str()), Some("")), "wvp NPEs without params");
    assert_eq!(regist["mediaServerId"], MEDIA_SERVER_ID, "{regist}");
    assert_eq!(add("cam1", &url), json!({"code": -1, "msg": "This stream already exists"}));

    // startProxy's "already online" check, then what listStreamProxy shows.
    let media = post(&engine, "getMediaList", &[("vhost", "__defaultVhost__"), ("app", "live"), ("stream", "cam1")]);
    assert_eq!(media["data"][0]["originType"], 4, "{media}");
    let listed = post(&engine, "listStreamProxy", &[]);
    let item = &listed["data"][0];
    assert_eq!((item["key"].as_str(), item["status"].as_u64(), item["status_str"].as_str()), (Some(key), Some(0), Some("playing")), "{listed}");
    assert_eq!(item["src"], json!({"vhost": "__defaultVhost__", "app": "live", "stream": "cam1", "params": ""}));

    // The URL wvp's getStreamInfoByAppAndStream hands jessibuca (ws_flv), decoded.
    let flv = ws_flv(&engine, "/live/cam1.live.flv?originTypeStr=pull&videoCodec=H264&audioCodec=AAC", 60);
    let file = engine.data_dir.join("proxy.flv");
    std::fs::write(&file, &flv).unwrap();
    let video = ffprobe(&file);
    assert_eq!((video.codec.as_str(), video.width, video.height), ("h264", 320, 240), "{video:?}");
    assert!(video.frames >= 50, "{video:?}");
    assert_eq!(ffprobe_audio(&file).codec, "aac");

    // 无人观看 停用: the viewer is gone, so wvp stops the proxy from inside the hook.
    hooks.on_demand.lock().unwrap().insert("cam1".into(), (engine.http, key.into()));
    let unregist = hooks.wait("on_stream_changed", "cam1", |b| b["schema"] == "rtsp" && b["regist"] == false);
    assert_eq!(unregist["app"], "live");
    assert!(!hooks.named("on_stream_none_reader", "cam1").is_empty());
    wait_for("the proxy gone", Duration::from_secs(10), || (post(&engine, "listStreamProxy", &[]) == json!({"code": 0})).then_some(()));
    assert_eq!(post(&engine, "getMediaList", &[("vhost", "__defaultVhost__"), ("app", "live"), ("stream", "cam1")]), json!({"code": 0}));
    assert_eq!(post(&engine, "delStreamProxy", &[("key", key)]), json!({"code": 0, "data": {"flag": false}}));
    assert_eq!(post(&engine, "getProxyInfo", &[("key", key)]), json!({"code": -500, "msg": "can not find the proxy"}));

    // A source that does not answer: refused after the first try, and not kept.
    let dead = add("dead", &format!("rtsp://127.0.0.1:{}/h264", free_tcp_port()));
    assert_eq!(dead["code"], -1, "{dead}");
    assert!(dead["msg"].as_str().is_some_and(|m| m.contains("refused")), "{dead}");
    assert_eq!(post(&engine, "listStreamProxy", &[("key", "__defaultVhost__/live/dead")]), json!({"code": 0}));
    let ftp = add("ftp", "ftp://127.0.0.1/x");
    assert!(ftp["msg"].as_str().is_some_and(|m| m.starts_with("invalid play url")) && ftp["code"] == -1, "{ftp}");
    assert!(!engine.log_text().contains("panicked"));
}
