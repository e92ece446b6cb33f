//! The engine under test: spawned with a generated config (or attached by pid), its REST API,
//! and its CPU time and RSS from /proc.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// First port of the spawned engine's stream range (streams take the lowest free ones).
pub const PORT_MIN: u16 = 40_000;

pub struct Engine {
    pub http: SocketAddr,
    pub token: String,
    pub pid: u32,
    child: Option<Child>,
}

/// The load test's settings of a spawned engine, each a command-line flag passed through.
pub struct Knobs {
    /// Media shards (0 = one per core).
    pub shards: usize,
    /// Covers from each stream's first keyframe.
    pub covers: bool,
    /// `rtp.port`: every stream on one port.
    pub single_port: Option<u16>,
    /// `rtp.gather_us` (the engine's default when `None`).
    pub gather_us: Option<u32>,
}

impl Engine {
    pub fn spawn(bin: &str, http: SocketAddr, token: &str, streams: usize, knobs: Knobs, dir: &std::path::Path) -> Result<Engine, String> {
        let Knobs { shards, covers, single_port, gather_us } = knobs;
        let port_min = u32::from(PORT_MIN);
        let port_max = (port_min + 3 * streams as u32 + 100).min(65_000);
        let config = dir.join("loadtest-gmv.yml");
        std::fs::write(
            &config,
            format!(
                "shards: {shards}\ndata_dir: \"{}\"\nhttp:\n  listen: \"{http}\"\n  api_keys: [{{name: loadtest, role: admin, sha256: \"{}\"}}]\nsip:\n  listen: \"\"\nrtp:\n  listen_ip: 127.0.0.1\n  port_min: {port_min}\n  port_max: {port_max}\n  idle_timeout_s: 3600\n  port: {}\n{}media:\n  cover_on_first_keyframe: {covers}\n  viewers_per_address_max: 4096\nwebrtc:\n  listen_ip: 127.0.0.1\n  port: 0\n",
                dir.join("data").display(),
                gmv::auth::key_hash(token),
                single_port.unwrap_or(0),
                gather_us.map(|us| format!("  gather_us: {us}\n")).unwrap_or_default()
            ),
        )
        .map_err(|e| e.to_string())?;
        Engine::start(bin, http, token, &config, &dir.join("loadtest-gmv.log"), &[])
    }

    /// Runs `bin` on `config` with `args`, its log in `log`; returns once its API answers.
    fn start(bin: &str, http: SocketAddr, token: &str, config: &std::path::Path, log: &std::path::Path, args: &[&str]) -> Result<Engine, String> {
        let log_file = std::fs::File::create(log).map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .arg("--config")
            .arg(config)
            .args(args)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("{bin}: {e}"))?;
        let engine = Engine { http, token: token.into(), pid: child.id(), child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if engine.request("GET", "/api/health", "").is_ok_and(|(s, _)| s == 200) {
                return Ok(engine);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("gmv {args:?} did not come up (see {})", log.display()))
    }

    /// A gmv on `http` with `extra_yaml` after its own keys and `args` (e.g. `--role media`),
    /// its data and log in `dir`.
    pub fn spawn_with(bin: &str, http: SocketAddr, token: &str, shards: usize, extra_yaml: &str, args: &[&str], dir: &std::path::Path) -> Result<Engine, String> {
        let config = dir.join("gmv.yml");
        let yaml = format!(
            "shards: {shards}\ndata_dir: \"{}\"\nhttp:\n  listen: \"{http}\"\n  api_keys: [{{name: loadtest, role: admin, sha256: \"{}\"}}]\n{extra_yaml}",
            dir.join("data").display(),
            gmv::auth::key_hash(token)
        );
        std::fs::write(&config, yaml).map_err(|e| e.to_string())?;
        Engine::start(bin, http, token, &config, &dir.join("gmv.log"), args)
    }

    /// A GET's body as text (e.g. /metrics).
    pub fn request_text(&self, path: &str) -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&self.http, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\ngmv-token: {}\r\n\r\n", self.http, self.token)?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)?;
        let text = String::from_utf8_lossy(&resp);
        Ok(text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string())
    }

    pub fn attach(http: SocketAddr, token: &str, pid: u32) -> Engine {
        Engine { http, token: token.into(), pid, child: None }
    }

    pub fn request(&self, method: &str, path: &str, body: &str) -> std::io::Result<(u16, serde_json::Value)> {
        let mut s = TcpStream::connect_timeout(&self.http, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\ngmv-token: {}\r\nContent-Length: {}\r\n\r\n{body}",
            self.http,
            self.token,
            body.len()
        )?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)?;
        let text = String::from_utf8_lossy(&resp);
        let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        Ok((status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null)))
    }
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds_of(pid: u32) -> f64 {
    {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are 14th and 15th overall.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // SAFETY: sysconf has no preconditions.
        ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
    }
}

/// Voluntary context switches of all of a process's threads (each is a wait: a park, a
/// blocking read), from /proc/{pid}/task/*/status.
pub fn voluntary_switches_of(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .filter_map(|status| status.lines().find_map(|l| l.strip_prefix("voluntary_ctxt_switches:")).and_then(|v| v.trim().parse::<u64>().ok()))
        .sum()
}

impl Engine {
    pub fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// UDP receive-buffer overflows, machine-wide (kernel drops before the engine sees a packet).
pub fn udp_rcvbuf_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else { return 0 };
    names.split_whitespace().zip(values.split_whitespace()).find(|(n, _)| *n == "RcvbufErrors").and_then(|(_, v)| v.parse().ok()).unwrap_or(0)
}
