//! Shared helpers for end-to-end tests: media from ffmpeg, the engine as a child process,
//! a tiny HTTP client, ffprobe checks. Loopback only; everything bounded in time.
#![allow(dead_code)]

pub mod gb_device;
pub mod gb_sim;
pub mod onvif_camera;
pub mod rtsp_server;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// The admin API key every test engine is configured with (the docs' example key, allowed on
/// loopback only).
pub const TOKEN: &str = gmv::auth::EXAMPLE_API_KEY;
pub const NODE_ID: &str = "34020000002000000001";
pub const WIDTH: u32 = 320;
pub const HEIGHT: u32 = 240;
pub const FPS: u32 = 25;
/// Frames in the generated clip (4 s at 25 fps, a keyframe every second).
pub const CLIP_FRAMES: usize = 100;

pub fn work_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("gmv-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Set (CI sets it) to make a test whose corpus is missing fail instead of skipping.
pub const REQUIRE_CORPUS_VAR: &str = "GMV_REQUIRE_CORPUS";

/// `../shared/corpus/{sub}` beside the repository: real captures, device messages and recorded
/// ZLMediaKit answers the team keeps in its shared folder, not in the repository. None (having
/// said so on stderr) when it is absent, so a fresh clone's suite runs; with
/// `GMV_REQUIRE_CORPUS` set (CI) its absence fails the test, naming the path.
pub fn corpus_dir(sub: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus").join(sub);
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(std::env::var_os(REQUIRE_CORPUS_VAR).is_none(), "{REQUIRE_CORPUS_VAR} is set and the corpus is missing: {}", dir.display());
    // Straight to stderr: the test harness hides what `eprintln!` says in a passing test.
    let _ = writeln!(std::io::stderr(), "SKIPPED: the corpus {} is not there (it sits beside the repository, in the shared folder)", dir.display());
    None
}

pub fn require_tool(name: &str) {
    let ok = Command::new(name).arg("-version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    assert!(ok, "{name} is required for end-to-end tests (apt-get install ffmpeg; .ci/run does this)");
}

/// Runs ffmpeg once per test binary to make `name` in the work dir from `args`.
fn ffmpeg_clip(cell: &'static OnceLock<PathBuf>, name: &str, args: &[&str]) -> &'static Path {
    cell.get_or_init(|| {
        require_tool("ffmpeg");
        let path = work_dir().join(name);
        let status = Command::new("ffmpeg").args(["-v", "error", "-y"]).args(args).arg(&path).status().expect("run ffmpeg");
        assert!(status.success(), "ffmpeg failed to make {name}");
        path
    })
}

/// H.264 Annex B test pattern (a keyframe every second, no B-frames).
pub fn h264_clip() -> &'static Path {
    static CLIP: OnceLock<PathBuf> = OnceLock::new();
    let (src, frames, gop) = (format!("testsrc=size={WIDTH}x{HEIGHT}:rate={FPS}"), CLIP_FRAMES.to_string(), FPS.to_string());
    ffmpeg_clip(
        &CLIP,
        "clip.h264",
        &["-f", "lavfi", "-i", &src, "-frames:v", &frames, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-bf", "0", "-g", &gop, "-f", "h264"],
    )
}

/// H.265 Annex B test pattern (a keyframe every second, no B-frames).
pub fn h265_clip() -> &'static Path {
    static CLIP: OnceLock<PathBuf> = OnceLock::new();
    let (src, frames) = (format!("testsrc=size={WIDTH}x{HEIGHT}:rate={FPS}"), CLIP_FRAMES.to_string());
    let x265 = ["-c:v", "libx265", "-pix_fmt", "yuv420p", "-x265-params", "log-level=none:bframes=0:keyint=25", "-f", "hevc"];
    ffmpeg_clip(&CLIP, "clip.h265", &[&["-f", "lavfi", "-i", &src, "-frames:v", &frames][..], &x265].concat())
}

/// 4 s of a 1 kHz tone as raw G.711 A-law, 8 kHz mono.
pub fn alaw_clip() -> &'static Path {
    static CLIP: OnceLock<PathBuf> = OnceLock::new();
    ffmpeg_clip(&CLIP, "clip.alaw", &["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=8000", "-t", "4", "-c:a", "pcm_alaw", "-f", "alaw"])
}

/// 4 s of the simulated device's own sound (`gb_device::DEVICE_SOUND_HZ`) as G.711 A-law.
pub fn device_sound_clip() -> &'static Path {
    static CLIP: OnceLock<PathBuf> = OnceLock::new();
    ffmpeg_clip(&CLIP, "device-sound.alaw", &["-f", "lavfi", "-i", "sine=frequency=600:sample_rate=8000", "-t", "4", "-c:a", "pcm_alaw", "-f", "alaw"])
}

/// 4 s of a tone as ADTS AAC-LC, 16 kHz mono.
pub fn aac_clip() -> &'static Path {
    static CLIP: OnceLock<PathBuf> = OnceLock::new();
    ffmpeg_clip(&CLIP, "clip.aac", &["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=16000", "-t", "4", "-c:a", "aac", "-f", "adts"])
}

static PORT_BLOCK: AtomicU16 = AtomicU16::new(0);
/// Engine starts tried when a picked port turns out to be taken.
const START_ATTEMPTS_MAX: usize = 5;

/// How often the waits below look again.
const POLL: Duration = Duration::from_millis(10);

/// Polls `f` until it gives a value, for at most `limit`; panics naming `what` otherwise.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}

/// Waits for a child to exit, for at most `limit`; None (after killing it) if it did not.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(POLL);
    }
    let _ = child.kill();
    None
}

pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Ports handed out by `fixed_port`, so two tests of one process do not pick the same.
static FIXED_PORTS: AtomicU16 = AtomicU16::new(0);

/// A port free for UDP and TCP above the kernel's ephemeral range, for an engine to bind
/// later (`rtp.port`, a fixed stream port): a port from `free_udp_port` can be taken meanwhile
/// by any socket bound to port 0 (another test's sender), one up here cannot.
pub fn fixed_port() -> u16 {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let above: u16 = range.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(60_999);
    let span = u32::from(u16::MAX - above.min(u16::MAX - 100));
    for _ in 0..span {
        let step = u32::from(FIXED_PORTS.fetch_add(1, Ordering::SeqCst));
        let port = above as u32 + 1 + (std::process::id() * 37 + step) % span;
        let port = port as u16;
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port above the ephemeral range {range:?}")
}

pub struct Engine {
    child: Child,
    /// The config file it runs with.
    pub config: PathBuf,
    pub http: SocketAddr,
    pub sip: SocketAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl Engine {
    pub fn start(shards: usize, extra_yaml: &str) -> Engine {
        Engine::start_with(shards, extra_yaml, "", None)
    }

    /// `sip_yaml`: extra lines under `sip:` (indented two spaces); `data_dir`: reuse one
    /// (a restart), else a fresh one.
    pub fn start_with(shards: usize, extra_yaml: &str, sip_yaml: &str, data_dir: Option<PathBuf>) -> Engine {
        Engine::start_full(shards, "", extra_yaml, sip_yaml, data_dir)
    }

    /// `http_yaml`: extra lines under `http:` (indented two spaces); when it has `api_keys`
    /// they replace the default admin key (`TOKEN`), which the start-up health check then
    /// cannot use: the first key listed must be able to read (any role can).
    pub fn start_full(shards: usize, http_yaml: &str, extra_yaml: &str, sip_yaml: &str, data_dir: Option<PathBuf>) -> Engine {
        Engine::start_limited(shards, http_yaml, extra_yaml, sip_yaml, data_dir, None)
    }

    /// As `start_full`, with the engine's files (its log too) limited to `file_bytes_max`
    /// (RLIMIT_FSIZE; SIGXFSZ ignored, so a write past it fails as on a full disk).
    pub fn start_limited(
        shards: usize,
        http_yaml: &str,
        extra_yaml: &str,
        sip_yaml: &str,
        data_dir: Option<PathBuf>,
        file_bytes_max: Option<u64>,
    ) -> Engine {
        Engine::start_command(shards, http_yaml, extra_yaml, sip_yaml, data_dir, file_bytes_max, &[])
    }

    /// As `start_limited`, with more command-line arguments (e.g. `--demo`).
    pub fn start_command(
        shards: usize,
        http_yaml: &str,
        extra_yaml: &str,
        sip_yaml: &str,
        data_dir: Option<PathBuf>,
        file_bytes_max: Option<u64>,
        args: &[&str],
    ) -> Engine {
        Engine::start_inner(shards, http_yaml, extra_yaml, sip_yaml, data_dir, file_bytes_max, args, None)
    }

    /// An engine on HTTP address `http` (one other processes were told before it started).
    pub fn start_at(http: SocketAddr, shards: usize, extra_yaml: &str, sip_yaml: &str, args: &[&str]) -> Engine {
        Engine::start_inner(shards, "", extra_yaml, sip_yaml, None, None, args, Some(http))
    }

    #[allow(clippy::too_many_arguments)]
    fn start_inner(
        shards: usize,
        http_yaml: &str,
        extra_yaml: &str,
        sip_yaml: &str,
        data_dir: Option<PathBuf>,
        file_bytes_max: Option<u64>,
        args: &[&str],
        fixed_http: Option<SocketAddr>,
    ) -> Engine {
        let keys = if http_yaml.contains("api_keys") {
            String::new()
        } else {
            format!("  api_keys: [{{name: test-admin, role: admin, sha256: \"{}\"}}]\n", gmv::auth::key_hash(TOKEN))
        };
        // Engines of parallel tests cannot share the default WebRTC port: any free one each
        // (after `extra_yaml`, whose first lines may go on with the `rtp` section).
        let mut webrtc = if extra_yaml.contains("webrtc:") { "" } else { "webrtc:\n  listen_ip: 127.0.0.1\n  port: 0\n" }.to_string();
        // Nor the default RTMP port: off unless the test asks for it (with a port of its own).
        if !extra_yaml.contains("rtmp:") {
            webrtc.push_str("rtmp:\n  enabled: false\n");
        }
        let block = PORT_BLOCK.fetch_add(1, Ordering::SeqCst);
        let rtp_min = 20_000 + (std::process::id() % 200) as u16 * 100 + block * 20;
        let dir = work_dir();
        for attempt in 1..=START_ATTEMPTS_MAX {
            // Free when picked, but another test's client socket may take the number before
            // the engine binds it (for SIP both UDP and TCP): the engine then exits saying the
            // address is in use, and we pick again.
            let http: SocketAddr = fixed_http.unwrap_or_else(|| format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap());
            let sip: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
            let config = dir.join(format!("gmv-{}.yml", http.port()));
            let data_dir = data_dir.clone().unwrap_or_else(|| dir.join(format!("data-{}", http.port())));
            std::fs::write(
                &config,
                format!(
                    "shards: {shards}\ndata_dir: \"{}\"\nhttp:\n  listen: \"{http}\"\n{keys}{http_yaml}sip:\n  listen: \"{sip}\"\n  host_ip: 127.0.0.1\n{sip_yaml}rtp:\n  listen_ip: 127.0.0.1\n  port_min: {rtp_min}\n  port_max: {}\n{extra_yaml}\n{webrtc}",
                    data_dir.display(),
                    rtp_min + 19
                ),
            )
            .unwrap();
            let log = dir.join(format!("gmv-{}.log", http.port()));
            let mut command = Command::new(env!("CARGO_BIN_EXE_gmv"));
            if let Some(limit) = file_bytes_max {
                use std::os::unix::process::CommandExt;
                // SAFETY: signal and setrlimit are async-signal-safe and only touch the child.
                unsafe {
                    command.pre_exec(move || {
                        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                        let lim = libc::rlimit { rlim_cur: limit, rlim_max: limit };
                        if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            }
            let child = command
                .arg("--config")
                .arg(&config)
                .args(args)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("start gmv");
            let mut engine = Engine { child, config, http, sip, data_dir, log };
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                // Any answer from the API (401 too, for engines without the test key) means it is up.
                if let Ok((200 | 401, _)) = engine.try_request("GET", "/api/health", &[("gmv-token", TOKEN)], b"") {
                    return engine;
                }
                if engine.child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let text = engine.log_text();
            if attempt < START_ATTEMPTS_MAX && text.contains("in use") {
                continue;
            }
            panic!("gmv did not come up; log:\n{text}");
        }
        unreachable!("the last attempt returns or panics")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn try_request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect_timeout(&self.http, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        // Read to the end: the server must close after the answer.
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n", self.http, body.len());
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes())?;
        s.write_all(body)?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)?;
        parse_response(&resp)
    }

    pub fn request(&self, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        let (status, text) = self.try_request(method, path, &[("gmv-token", TOKEN)], body.as_bytes()).expect("HTTP request");
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    pub fn open_stream(&self, body: serde_json::Value) -> serde_json::Value {
        let (status, v) = self.request("POST", "/api/streams", &body.to_string());
        assert_eq!(status, 201, "open stream: {v}");
        v
    }

    pub fn stream(&self, stream_id: &str) -> serde_json::Value {
        let (status, v) = self.request("GET", &format!("/api/streams/{stream_id}"), "");
        assert_eq!(status, 200, "stream info: {v}");
        v
    }

    /// A play token from `POST /api/play-tokens` for `scope` (`{"stream_id": ..}`,
    /// `{"device_id": .., "channel_id": ..}` or `{"record": ..}`).
    pub fn play_token(&self, scope: serde_json::Value) -> String {
        let (status, v) = self.request("POST", "/api/play-tokens", &scope.to_string());
        assert_eq!(status, 201, "play token: {v}");
        v["token"].as_str().expect("token").to_string()
    }

    /// A play token for a live stream.
    pub fn stream_token(&self, stream_id: &str) -> String {
        self.play_token(serde_json::json!({ "stream_id": stream_id }))
    }

    /// Waits until the stream has taken in at least `n` RTP packets (bounded).
    pub fn wait_packets(&self, stream_id: &str, n: u64) {
        self.wait_stat(stream_id, "packets", n);
    }

    /// Waits until a counter of `/api/streams/{id}` reaches `n` (bounded).
    pub fn wait_stat(&self, stream_id: &str, field: &str, n: u64) {
        wait_for(&format!("stream {stream_id} to reach {field} = {n}"), Duration::from_secs(15), || {
            (self.stream(stream_id)[field].as_u64() >= Some(n)).then_some(())
        });
    }

    /// Waits until the stream reports `n` viewers (bounded).
    pub fn wait_subscribers(&self, stream_id: &str, n: u64) {
        wait_for(&format!("stream {stream_id} to have {n} subscribers"), Duration::from_secs(10), || {
            (self.stream(stream_id)["subscribers"] == n).then_some(())
        });
    }
}

impl Engine {
    /// Kills the engine (SIGKILL: a crash) and starts it again on the same config, ports and
    /// data_dir; returns once its API answers, panics with the log if it does not come up.
    pub fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log = self.log.with_extension("restarted.log");
        self.child = Command::new(env!("CARGO_BIN_EXE_gmv"))
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&self.log).unwrap())
            .spawn()
            .expect("start gmv");
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok((200 | 401, _)) = self.try_request("GET", "/api/health", &[("gmv-token", TOKEN)], b"") {
                return;
            }
            if self.child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("gmv did not come up again; log:\n{}", self.log_text());
    }

    /// Sends `signal` to the engine process.
    /// kill -9, and wait for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Waits, bounded, for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_exit(&mut self.child, limit)
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit; its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        // SAFETY: kill(2) on our child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        match wait_exit(&mut self.child, Duration::from_secs(20)) {
            Some(status) => status.code(),
            None => panic!("gmv did not stop within 20 s of SIGTERM; log:\n{}", self.log_text()),
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_response(resp: &[u8]) -> std::io::Result<(u16, String)> {
    let text = String::from_utf8_lossy(resp);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).ok_or_else(|| std::io::Error::other(format!("bad response: {text}")))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    Ok((status, body))
}

/// A GET read to the end: (head, body).
pub fn http_get(http: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    s.write_all(format!("{req}\r\n").as_bytes()).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n").map_or(resp.len(), |i| i + 4);
    (String::from_utf8_lossy(&resp[..split]).to_string(), resp[split..].to_vec())
}

/// The status code of a response head.
pub fn status_of(head: &str) -> u16 {
    head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A viewer: sends the request, then saves the body to `out` until the server closes or `limit` passes.
pub fn spawn_viewer(
    http: SocketAddr,
    path: String,
    headers: Vec<(String, String)>,
    out: PathBuf,
    limit: Duration,
) -> std::thread::JoinHandle<(u16, usize)> {
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(http).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n");
        for (k, v) in &headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let deadline = Instant::now() + limit;
        let mut data = Vec::new();
        let mut buf = [0u8; 65536];
        while Instant::now() < deadline {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => data.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        let split = data.windows(4).position(|w| w == b"\r\n\r\n").map_or(data.len(), |i| i + 4);
        let status = String::from_utf8_lossy(&data[..split.min(data.len())]).get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        std::fs::write(&out, &data[split..]).unwrap();
        (status, data.len() - split)
    })
}

#[derive(Debug, PartialEq, Eq)]
pub struct Probe {
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub frames: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub struct AudioProbe {
    pub codec: String,
    pub sample_rate: u32,
    pub packets: usize,
}

/// Audio stream of a file as ffprobe reads it.
pub fn ffprobe_audio(path: &Path) -> AudioProbe {
    let s = ffprobe_stream(path, "a:0", "-count_packets", "codec_name,sample_rate,nb_read_packets");
    AudioProbe {
        codec: s["codec_name"].as_str().unwrap_or_default().to_string(),
        sample_rate: s["sample_rate"].as_str().and_then(|n| n.parse().ok()).unwrap_or(0),
        packets: s["nb_read_packets"].as_str().and_then(|n| n.parse().ok()).unwrap_or(0),
    }
}

/// ffprobe's JSON for one stream of a file (`select` e.g. "v:0"), counting with `count`.
fn ffprobe_stream(path: &Path, select: &str, count: &str, entries: &str) -> serde_json::Value {
    require_tool("ffprobe");
    let out = Command::new("ffprobe")
        .args(["-v", "error", count, "-select_streams", select, "-show_entries", &format!("stream={entries}"), "-of", "json"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["streams"][0].clone()
}

/// FLV tags of a file: (type, timestamp ms, body).
pub fn flv_tags(data: &[u8]) -> Vec<(u8, u32, Vec<u8>)> {
    assert!(data.len() >= 13 && &data[..3] == b"FLV", "not an FLV stream");
    let mut b = &data[13..];
    let mut tags = Vec::new();
    while b.len() >= 15 {
        let size = u32::from_be_bytes([0, b[1], b[2], b[3]]) as usize;
        if b.len() < 15 + size {
            break;
        }
        tags.push((b[0], u32::from_be_bytes([b[7], b[4], b[5], b[6]]), b[11..11 + size].to_vec()));
        b = &b[15 + size..];
    }
    tags
}

/// An FLV file of about 4 s of the tests' RTMP/RTSP test pattern: H.264 320x240 at 25 fps and
/// AAC at 16 kHz, as ffprobe decodes it (the first GOP may start up to a second early: the
/// stream's cache).
pub fn assert_four_seconds_of_test_pattern(file: &Path, bytes: usize) {
    assert!(bytes > 10_000, "{bytes} bytes of FLV");
    let video = ffprobe(file);
    assert_eq!((video.codec.as_str(), video.width, video.height), ("h264", 320, 240));
    assert!((75..=160).contains(&video.frames), "{video:?}");
    let audio = ffprobe_audio(file);
    assert_eq!((audio.codec.as_str(), audio.sample_rate), ("aac", 16000), "{audio:?}");
    assert!(audio.packets > 40, "{audio:?}");
}

/// Decodes every video frame of a file with ffprobe.
pub fn ffprobe(path: &Path) -> Probe {
    let s = ffprobe_stream(path, "v:0", "-count_frames", "codec_name,width,height,nb_read_frames");
    Probe {
        codec: s["codec_name"].as_str().unwrap_or_default().to_string(),
        width: s["width"].as_u64().unwrap_or(0) as u32,
        height: s["height"].as_u64().unwrap_or(0) as u32,
        frames: s["nb_read_frames"].as_str().and_then(|n| n.parse().ok()).unwrap_or(0),
    }
}

/// Sends `frames` as PS over RTP (UDP) to an opened stream, `gap` after each frame, then
/// waits until the engine has taken every packet in.
pub fn push_ps_udp(engine: &Engine, stream: &serde_json::Value, frames: &[gmv::proto::frame::Frame], gap: Duration) {
    let sock = udp_sender();
    let dest = format!("127.0.0.1:{}", stream["port"]);
    let mut sent = 0;
    for frame in gmv::sim::ps_rtp_packets(frames, stream["ssrc"].as_u64().unwrap() as u32) {
        for p in frame {
            sock.send_to(&p, &dest).unwrap();
            sent += 1;
        }
        std::thread::sleep(gap);
    }
    engine.wait_packets(stream["stream_id"].as_str().unwrap(), sent);
}

/// The H.264 test clip as frames.
pub fn h264_frames() -> Vec<gmv::proto::frame::Frame> {
    gmv::sim::frames_from_es(gmv::proto::frame::Codec::H264, &std::fs::read(h264_clip()).unwrap(), FPS)
}

pub fn udp_sender() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

/// Reads one response (head and a Content-Length body) from a kept connection.
pub fn read_response(s: &mut impl Read) -> (String, Vec<u8>) {
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    while !data.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "connection closed mid-head: {}", String::from_utf8_lossy(&data));
        data.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&data).to_string();
    let len: usize = head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (head, body)
}

/// Runs `tests/browser/{script}` with node, its arguments and `env`: its last line of output
/// as JSON (a script prints what the browser did and measured there). Needs chromium and
/// `npm ci` in tests/browser.
pub fn browser_script(script: &str, args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> serde_json::Value {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
    let out = Command::new("node")
        .env("KEY", TOKEN)
        .envs(env.iter().copied())
        .arg(format!("{dir}/{script}"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("node (npm ci in tests/browser)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap_or_else(|_| panic!("{stdout}\n{stderr}"));
    if v["ok"] != true {
        v["stderr"] = stderr.lines().rev().take(20).collect::<Vec<_>>().into();
    }
    v
}

/// A browser script that talks with its test: `tests/browser/{script}` under node with `args`
/// and `env`, its stdout read line by line (a script prints a word when the test is to act,
/// and reads a line back on its stdin), its stderr kept for a failure's message. Its last line
/// is its result as JSON. Needs chromium and `npm ci` in tests/browser.
pub struct BrowserRun {
    child: Child,
    pub stdin: std::process::ChildStdin,
    stdout: Option<std::process::ChildStdout>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

/// Lines of a browser script's stderr shown when it failed.
const BROWSER_STDERR_TAIL_LINES: usize = 40;

impl BrowserRun {
    pub fn start(script: &str, args: &[&str], env: &[(&str, &str)]) -> BrowserRun {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
        let mut child = Command::new("node")
            .arg(format!("{dir}/{script}"))
            .args(args)
            .envs(env.iter().copied())
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node (npm ci in tests/browser)");
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        BrowserRun { stdin: child.stdin.take().unwrap(), stdout: child.stdout.take(), stderr: Some(stderr), child }
    }

    /// The script's output, a line at a time until it ends (taken once).
    pub fn lines(&mut self) -> impl Iterator<Item = String> + use<> {
        std::io::BufRead::lines(std::io::BufReader::new(self.stdout.take().expect("the output is read once"))).map(|l| l.unwrap_or_default())
    }

    /// The script's result, `last` (its last line) read as JSON once it ended, asserted `ok`
    /// (the message has the end of its stderr).
    pub fn result(mut self, last: &str) -> serde_json::Value {
        let exited = wait_exit(&mut self.child, Duration::from_secs(30));
        let stderr = self.stderr.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default();
        let lines: Vec<&str> = stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(BROWSER_STDERR_TAIL_LINES)..].join("\n");
        let v: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|_| panic!("no result ({exited:?}): {last}\n{tail}"));
        assert_eq!(v["ok"], true, "{v:#}\n{tail}");
        v
    }
}

/// Plays `path` of the engine over WebRTC in headless Chromium (tests/browser/whep_check.mjs,
/// run with `env`: VANISH, ZLM), listening `seconds`: what the browser measured, as JSON.
pub fn whep_in_chromium(engine: &Engine, path: &str, seconds: u32, env: &[(&str, &str)]) -> serde_json::Value {
    let (page, url, seconds) = (format!("http://{}/", engine.http), format!("http://{}{path}", engine.http), seconds.to_string());
    browser_script("whep_check.mjs", &[page.as_ref(), url.as_ref(), seconds.as_ref()], env)
}

/// Talks into `path` of the engine over WHIP from headless Chromium whose microphone plays
/// `wav` (tests/browser/whip_check.mjs, with the admin key and `env`: VANISH), for `seconds`:
/// what the browser did and measured, as JSON.
pub fn whip_in_chromium(engine: &Engine, path: &str, wav: &Path, seconds: u32, env: &[(&str, &str)]) -> serde_json::Value {
    let (page, url, seconds) = (format!("http://{}/", engine.http), format!("http://{}{path}", engine.http), seconds.to_string());
    browser_script("whip_check.mjs", &[page.as_ref(), url.as_ref(), wav.as_os_str(), seconds.as_ref()], env)
}
