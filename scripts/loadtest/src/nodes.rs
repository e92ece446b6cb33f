//! `--nodes N`: a control and N media nodes (`--role control`, `--role media`) on this box. One
//! simulated NVR registers to the control with `--streams` channels; each channel is played
//! through the control's API (the control places it on the least-loaded node and INVITEs the
//! NVR to that node's port), then every channel's media goes to its node. Reports streams and
//! packets per node, the API's play latency and the control's SIP INVITE latency (its
//! histogram in /metrics).

use crate::engine::Engine;
use gmv::proto::sip::{SipMsg, digest, parse};
use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DEVICE: &str = "34020000001110000001";
const DOMAIN: &str = "3402000000";
const SERVER: &str = "34020000002000000001";
const PASSWORD: &str = "12345678";
const NODE_SECRET: &str = "loadtest-node-secret";
/// Catalog items per MESSAGE (NVRs split big catalogs; a datagram holds a few dozen).
const CATALOG_ITEMS_PER_MESSAGE: usize = 20;
/// Plays asked of the control at once.
const PLAY_THREADS: usize = 4;
const CONTROL_SIP_PORT: u16 = 25_060;

fn channel_id(i: usize) -> String {
    format!("3402000000131{i:07}")
}

/// The NVR's SIP side: REGISTER (digest), Catalog answers, INVITEs answered with the offered
/// SSRC; what each INVITE asked for lands in `targets` (channel -> (ssrc, media address)).
struct Nvr {
    sock: UdpSocket,
    server: SocketAddr,
    cseq: u32,
}

impl Nvr {
    fn request(&mut self, method: &str, call_id: &str, extra: &str, body: &[u8]) -> Vec<u8> {
        self.cseq += 1;
        let local = self.sock.local_addr().expect("bound");
        let ct = if body.is_empty() { String::new() } else { "Content-Type: Application/MANSCDP+xml\r\n".to_string() };
        let head = format!(
            "{method} sip:{SERVER}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {local};rport;branch=z9hG4bKlt{}\r\nFrom: <sip:{DEVICE}@{DOMAIN}>;tag=nvr{}\r\nTo: <sip:{SERVER}@{DOMAIN}>\r\nCall-ID: {call_id}\r\nCSeq: {} {method}\r\nContact: <sip:{DEVICE}@{local}>\r\nMax-Forwards: 70\r\n{extra}{ct}Content-Length: {}\r\n\r\n",
            self.cseq,
            self.cseq,
            self.cseq,
            body.len()
        );
        [head.as_bytes(), body].concat()
    }

    fn send(&self, bytes: &[u8]) {
        let _ = self.sock.send_to(bytes, self.server);
    }

    fn recv(&self) -> Option<SipMsg> {
        let mut buf = vec![0u8; 65_536];
        let (n, _) = self.sock.recv_from(&mut buf).ok()?;
        parse(&buf[..n]).ok()
    }

    fn register(&mut self) -> Result<(), String> {
        let first = self.request("REGISTER", "lt-reg", "Expires: 3600\r\n", b"");
        self.send(&first);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let Some(resp) = self.recv() else { continue };
            match resp.status() {
                Some(401) => {
                    let www = resp.header("WWW-Authenticate").unwrap_or_default();
                    let param = |k: &str| {
                        www.split(',').find_map(|p| p.trim().trim_start_matches("Digest ").strip_prefix(&format!("{k}=")).map(|v| v.trim_matches('"').to_string()))
                    };
                    let (realm, nonce) = (param("realm").unwrap_or_default(), param("nonce").unwrap_or_default());
                    let uri = format!("sip:{SERVER}@{DOMAIN}");
                    let response = digest::client_response(DEVICE, &realm, PASSWORD, "REGISTER", &uri, &nonce, None);
                    let auth = format!(
                        "Authorization: Digest username=\"{DEVICE}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5\r\nExpires: 3600\r\n"
                    );
                    let again = self.request("REGISTER", "lt-reg", &auth, b"");
                    self.send(&again);
                }
                Some(200) => return Ok(()),
                Some(s) if s >= 300 => return Err(format!("REGISTER answered {s}")),
                _ => {}
            }
        }
        Err("REGISTER not answered".into())
    }

    fn reply(&self, req: &SipMsg, code: u16, extra: &str, body: Option<&[u8]>) {
        let mut head = format!("SIP/2.0 {code} {}\r\n", if code == 200 { "OK" } else { "Trying" });
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            let v = req.header(name).unwrap_or_default();
            if name == "To" && code > 100 && !v.contains("tag=") {
                head.push_str(&format!("To: {v};tag=nvrtag\r\n"));
            } else {
                head.push_str(&format!("{name}: {v}\r\n"));
            }
        }
        head.push_str(extra);
        let out = match body {
            Some(b) => [format!("{head}Content-Type: Application/SDP\r\nContent-Length: {}\r\n\r\n", b.len()).as_bytes(), b].concat(),
            None => format!("{head}Content-Length: 0\r\n\r\n").into_bytes(),
        };
        self.send(&out);
    }

    fn catalog(&mut self, sn: &str, channels: usize) {
        for (part, chunk) in (0..channels).collect::<Vec<_>>().chunks(CATALOG_ITEMS_PER_MESSAGE).enumerate() {
            let items: String = chunk
                .iter()
                .map(|i| format!("<Item>\r\n<DeviceID>{}</DeviceID>\r\n<Name>cam {i}</Name>\r\n<Status>ON</Status>\r\n<ParentID>{DEVICE}</ParentID>\r\n</Item>\r\n", channel_id(*i)))
                .collect();
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Response>\r\n<CmdType>Catalog</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{DEVICE}</DeviceID>\r\n<SumNum>{channels}</SumNum>\r\n<DeviceList Num=\"{}\">\r\n{items}</DeviceList>\r\n</Response>\r\n",
                chunk.len()
            );
            let m = self.request("MESSAGE", &format!("lt-cat-{sn}-{part}"), "", xml.as_bytes());
            self.send(&m);
        }
    }

    /// Serves until `until`: queries and INVITEs (targets noted), BYEs.
    fn serve(mut self, channels: usize, targets: Arc<Mutex<HashMap<String, (u32, SocketAddrV4)>>>, until: Instant) {
        while Instant::now() < until {
            let Some(msg) = self.recv() else { continue };
            if !msg.is_request() {
                continue;
            }
            match msg.method().map(|m| m.to_string()).as_deref() {
                Some("MESSAGE") => {
                    self.reply(&msg, 200, "", None);
                    let text = String::from_utf8_lossy(msg.body()).to_string();
                    if text.contains("<CmdType>Catalog</CmdType>") {
                        let sn = gmv::proto::sip::manscdp::element(&text, "SN").unwrap_or("1").to_string();
                        self.catalog(&sn, channels);
                    }
                }
                Some("INVITE") => {
                    let Ok(offer) = gmv::proto::sdp::Sdp::parse(msg.body()) else { continue };
                    let channel = msg.header("Subject").unwrap_or_default().split(':').next().unwrap_or("").to_string();
                    let ip = offer.connection.as_deref().and_then(|c| c.split_whitespace().last()).and_then(|ip| ip.parse().ok()).unwrap_or(std::net::Ipv4Addr::LOCALHOST);
                    let port = offer.media.first().map_or(0, |m| m.port);
                    let ssrc: u32 = offer.gb_ssrc.as_deref().and_then(|s| s.parse().ok()).unwrap_or(1);
                    let answer = format!(
                        "v=0\r\no={channel} 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=video 15060 RTP/AVP 96\r\na=sendonly\r\na=rtpmap:96 PS/90000\r\ny={ssrc:010}\r\nf=\r\n"
                    );
                    let contact = format!("Contact: <sip:{channel}@{}>\r\n", self.sock.local_addr().expect("bound"));
                    self.reply(&msg, 200, &contact, Some(answer.as_bytes()));
                    targets.lock().expect("not poisoned").insert(channel, (ssrc, SocketAddrV4::new(ip, port)));
                }
                Some("ACK") => {}
                _ => self.reply(&msg, 200, "", None),
            }
        }
    }
}

/// p-th percentile (0..=100) of `ms`, sorted in place.
fn percentile(ms: &mut [f64], p: usize) -> Option<f64> {
    ms.sort_by(f64::total_cmp);
    (!ms.is_empty()).then(|| ms[((ms.len() - 1) * p / 100).min(ms.len() - 1)])
}

/// The p-th percentile bucket bound (seconds) of a Prometheus histogram in `text`.
fn histogram_percentile(text: &str, name: &str, label: &str, p: f64) -> Option<f64> {
    let buckets: Vec<(f64, u64)> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket{{")) && l.contains(label))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((bound, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    let total = buckets.last()?.1;
    let want = (total as f64 * p / 100.0).ceil() as u64;
    buckets.iter().find(|(_, n)| *n >= want.max(1)).map(|(b, _)| *b)
}

pub struct NodesRun {
    pub control: Engine,
    pub nodes: Vec<Engine>,
    pub targets: Vec<crate::sender::Target>,
    pub report: serde_json::Value,
}

/// Brings up the control, the nodes and the NVR, and plays every channel: the targets to send to.
pub fn set_up(args: &crate::Args) -> Result<NodesRun, String> {
    let bin = args.gmv.as_deref().ok_or("--nodes needs --gmv BIN")?;
    let control_http = args.http;
    let mut nodes = Vec::new();
    let mut listed = String::new();
    for n in 0..args.nodes {
        let http: SocketAddr = format!("127.0.0.1:{}", control_http.port() + 1 + n as u16).parse().map_err(|e| format!("{e}"))?;
        let hooks: String = ["on_server_started", "on_server_keepalive", "on_play", "on_publish", "on_stream_none_reader"]
            .iter()
            .map(|h| format!("    {h}: \"http://{control_http}/index/hook/{h}\"\n"))
            .collect();
        let port_min = crate::engine::PORT_MIN as usize + n * (3 * args.streams + 100);
        let yaml = format!(
            "rtp:\n  listen_ip: 127.0.0.1\n  port_min: {port_min}\n  port_max: {}\n  idle_timeout_s: 3600\nmedia:\n  cover_on_first_keyframe: {}\n  viewers_per_address_max: 4096\nnode:\n  secret: \"{NODE_SECRET}\"\n  media_server_id: media-{n}\n  keepalive_interval_s: 1\n  rtp_server_timeout_s: 3600\n  hooks:\n{hooks}",
            (port_min + 3 * args.streams + 99).min(65_000),
            !args.no_covers
        );
        let dir = args.work_dir.join(format!("media-{n}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        nodes.push(Engine::spawn_with(bin, http, &args.token, args.shards, &yaml, &["--role", "media"], &dir)?);
        listed.push_str(&format!("    - {{id: media-{n}, api: \"http://{http}\", secret: \"{NODE_SECRET}\", media_ip: 127.0.0.1}}\n"));
    }
    let yaml = format!("sip:\n  listen: \"127.0.0.1:{CONTROL_SIP_PORT}\"\n  no_viewer_stop_s: 0\nnode:\n  node_down_after_s: 30\n  media_nodes:\n{listed}");
    let dir = args.work_dir.join("control");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let control = Engine::spawn_with(bin, control_http, &args.token, 1, &yaml, &["--role", "control"], &dir)?;
    let up_by = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = control.request("GET", "/api/nodes", "").map_err(|e| e.to_string())?;
        let up = v["nodes"].as_array().map_or(0, |n| n.iter().filter(|n| n["state"] == "up").count());
        if up == args.nodes {
            break;
        }
        if Instant::now() > up_by {
            return Err(format!("media nodes not up: {v}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_millis(100))).map_err(|e| e.to_string())?;
    let mut nvr = Nvr { sock, server: format!("127.0.0.1:{CONTROL_SIP_PORT}").parse().expect("literal"), cseq: 0 };
    nvr.register()?;
    let targets = Arc::new(Mutex::new(HashMap::new()));
    let until = Instant::now() + Duration::from_secs(args.duration_s) + crate::RUN_OVERHEAD_MAX;
    {
        let (targets, channels) = (targets.clone(), args.streams);
        std::thread::spawn(move || nvr.serve(channels, targets, until));
    }
    let catalog_by = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = control.request("GET", &format!("/api/devices/{DEVICE}/channels?limit=1"), "").map_err(|e| e.to_string())?;
        if v["total"].as_u64() == Some(args.streams as u64) {
            break;
        }
        if Instant::now() > catalog_by {
            return Err(format!("catalog not complete: {v}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // Every channel played through the control, PLAY_THREADS at a time, each timed.
    let started = Instant::now();
    let per_thread = args.streams.div_ceil(PLAY_THREADS);
    let mut play_ms: Vec<f64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..PLAY_THREADS)
            .map(|t| {
                let control = &control;
                scope.spawn(move || {
                    let mut times = Vec::new();
                    for i in (t * per_thread)..((t + 1) * per_thread).min(args.streams) {
                        let t0 = Instant::now();
                        let (status, v) = control.request("POST", &format!("/api/devices/{DEVICE}/channels/{}/play", channel_id(i)), "{}").unwrap_or_default();
                        if status == 200 {
                            times.push(t0.elapsed().as_secs_f64() * 1000.0);
                        } else {
                            eprintln!("gmv-loadtest: play {}: {status} {v}", channel_id(i));
                        }
                    }
                    times
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    });
    let plays_s = started.elapsed().as_secs_f64();
    let targets: Vec<crate::sender::Target> = targets.lock().expect("not poisoned").values().map(|(ssrc, dest)| crate::sender::Target { ssrc: *ssrc, dest: *dest }).collect();
    let metrics = control.request_text("/metrics").unwrap_or_default();
    let invite = |p| histogram_percentile(&metrics, "gmv_sip_transaction_latency_seconds", "method=\"INVITE\"", p).map(|s| s * 1000.0);
    let report = serde_json::json!({
        "nodes": args.nodes,
        "plays_ok": play_ms.len(),
        "plays_s": (plays_s * 10.0).round() / 10.0,
        "api_play_ms_p50": percentile(&mut play_ms, 50).map(|v| v.round()),
        "api_play_ms_p99": percentile(&mut play_ms, 99).map(|v| v.round()),
        "sip_invite_ms_p50_bucket": invite(50.0),
        "sip_invite_ms_p99_bucket": invite(99.0),
    });
    Ok(NodesRun { control, nodes, targets, report })
}

/// After sending: streams, packets and loss per node, as each node counts them.
pub fn per_node(run: &NodesRun) -> serde_json::Value {
    let figures: Vec<serde_json::Value> = run
        .nodes
        .iter()
        .map(|n| {
            let (_, shards) = n.request("GET", "/api/shards", "").unwrap_or_default();
            let list = shards["shards"].as_array().cloned().unwrap_or_default();
            let sum = |k: &str| list.iter().map(|s| s[k].as_u64().unwrap_or(0)).sum::<u64>();
            serde_json::json!({ "streams": sum("streams"), "packets": sum("packets"), "lost": sum("lost") })
        })
        .collect();
    serde_json::json!(figures)
}
