//! The RTP servers a node was asked to open (ZLMediaKit's `openRtpServer`), each one gmv stream,
//! and what happens to them over time: published when packets come, closed when none come for
//! a while, offered for closing when nobody watches. Pure: the streams' figures and the time
//! are inputs, the hooks to post and streams to close come out as actions.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// RTP servers one node holds at once.
pub const RTP_SERVERS_MAX: usize = 20_000;
/// Bytes of a `stream_id` or `app` (ZLMediaKit takes any text; GB ids are 41).
pub const NAME_BYTES_MAX: usize = 128;
pub const VHOST: &str = "__defaultVhost__";
/// TCP active: tries of a dial to the device (`connectRtpServer`, and again whenever the
/// device drops the connection), and the wait between them: GB/T 28181-2022 Annex D asks for
/// at least 3 tries at least 1 s apart.
pub const DIAL_TRIES_MAX: u32 = 3;
pub const DIAL_GAP: Duration = Duration::from_secs(1);
/// wvp's read timeout on node calls (`ZLMRESTfulUtils`): `connectRtpServer` answers within it.
pub const CALLER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const _: () = assert!(
    DIAL_TRIES_MAX >= 3
        && DIAL_GAP.as_millis() >= 1000
        && (DIAL_TRIES_MAX as u128) * crate::shard::stream::TCP_ACTIVE_CONNECT_TIMEOUT.as_millis() + (DIAL_TRIES_MAX as u128 - 1) * DIAL_GAP.as_millis()
            < CALLER_READ_TIMEOUT.as_millis()
);

/// TCP active: the device the node dialled, redialled when the connection drops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dial {
    pub to: SocketAddr,
    /// Failed tries in a row; at `DIAL_TRIES_MAX` the node gives up (the RTP timeout ends it).
    pub failures: u32,
    /// Since when the dial stands as it is (set, or last tried): a listing taken before says
    /// nothing of it.
    pub since: Instant,
    /// No try before this (`DIAL_GAP` after a failure).
    pub next_at: Option<Instant>,
    pub dialing: bool,
}

/// How the RTP server takes media (`tcp_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpMode {
    Udp = 0,
    /// The device connects to the port.
    Passive = 1,
    /// The node connects to the device (`connectRtpServer`).
    Active = 2,
}

impl TcpMode {
    pub fn parse(v: &str) -> Option<TcpMode> {
        match v {
            "0" => Some(TcpMode::Udp),
            "1" => Some(TcpMode::Passive),
            "2" => Some(TcpMode::Active),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publish {
    /// No packet yet.
    Waiting,
    /// Packets came; `on_publish` was asked and has not answered.
    Asking,
    /// Allowed: the stream is announced (`on_stream_changed`) and playable.
    Published { unix_s: u64 },
}

#[derive(Debug, Clone)]
pub struct RtpServer {
    /// The name it was opened under: what the RTP-server calls (`closeRtpServer`,
    /// `getRtpInfo`, `updateRtpServerSSRC`, `pauseRtpCheck`) and `on_rtp_server_timeout` use.
    pub stream_id: String,
    /// The name the stream is announced, served, recorded and closed under: `stream_id`, or
    /// what `on_publish`'s `stream_replace` named (wvp: `{deviceId}_{channelId}`).
    pub name: String,
    pub app: String,
    /// The gmv stream's SSRC, its key on the media shards (the `ssrc` asked for, or a random
    /// one when the server takes any).
    pub key: u32,
    pub port: u16,
    pub tcp_mode: TcpMode,
    /// The SSRC asked for (`ssrc`, `updateRtpServerSSRC`); 0: any.
    pub ssrc: u32,
    /// The one `openRtpServer` named (what ZLMediaKit's `on_rtp_server_timeout` says, even
    /// after `updateRtpServerSSRC`).
    pub opened_ssrc: u32,
    pub only_track: u8,
    pub re_use_port: bool,
    /// Opened with `learn_ssrc=1` (gmv's parameter): an `expect_source` given later keeps it.
    pub learn_ssrc: bool,
    pub opened: Instant,
    pub publish: Publish,
    /// `pauseRtpCheck`: no timeout until `resumeRtpCheck`.
    pub check_paused: bool,
    /// Since when nobody watches (published streams), and whether `on_stream_none_reader` is
    /// being asked.
    pub unwatched_since: Option<Instant>,
    pub none_reader_asking: bool,
    /// TCP active, once `connectRtpServer` connected.
    pub dial: Option<Dial>,
}

impl RtpServer {
    pub fn published(&self) -> bool {
        matches!(self.publish, Publish::Published { .. })
    }
}

/// What a node's stream looks like at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamView {
    pub packets: u64,
    /// Its tracks are known (codec, size and rate of the video): what `on_publish` and
    /// `on_stream_changed` describe, so it is published only then (as ZLMediaKit waits for
    /// its tracks to be ready).
    pub ready: bool,
    /// Since the last packet, or since the stream opened when none came.
    pub quiet_ms: u64,
    /// FLV viewers, and 1 while HLS is being requested.
    pub readers: usize,
    /// RTP over TCP connections the stream holds.
    pub tcp_conns: usize,
}

/// The timings of `NodeConfig` a tick applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub rtp_timeout: Duration,
    pub none_reader_delay: Duration,
}

#[derive(Debug, Clone)]
pub enum Action {
    /// First packets: ask `on_publish` (the server is now `Asking`).
    AskPublish { stream_id: String },
    /// Nothing came for `rtp_timeout` (or the stream is gone): the server was removed; close its
    /// stream, post `on_rtp_server_timeout`, and unregister it if it was published.
    TimedOut { server: RtpServer },
    /// Nobody watched for `none_reader_delay`: ask `on_stream_none_reader`.
    AskNoneReader { stream_id: String },
    /// TCP active: the device dropped the connection (or the last try failed): dial again, and
    /// report with `dialled`.
    Redial { stream_id: String, to: SocketAddr },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenRefused {
    Exists,
    Full,
    BadName,
}

fn name_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= NAME_BYTES_MAX && s.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

#[derive(Default)]
pub struct RtpServers {
    by_id: BTreeMap<String, RtpServer>,
    /// Every server's `name` → its `stream_id`: one namespace, so a name (opened or replaced)
    /// is one stream's.
    names: BTreeMap<String, String>,
}

impl RtpServers {
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn get(&self, stream_id: &str) -> Option<&RtpServer> {
        self.by_id.get(stream_id)
    }

    pub fn get_mut(&mut self, stream_id: &str) -> Option<&mut RtpServer> {
        self.by_id.get_mut(stream_id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &RtpServer> {
        self.by_id.values()
    }

    pub fn by_key(&self, key: u32) -> Option<&RtpServer> {
        self.by_id.values().find(|s| s.key == key)
    }

    /// Whether a new server may be opened under this name (checked before its stream is).
    pub fn may_open(&self, stream_id: &str, app: &str) -> Result<(), OpenRefused> {
        if !name_ok(stream_id) || !name_ok(app) {
            return Err(OpenRefused::BadName);
        }
        if self.by_id.contains_key(stream_id) || self.names.contains_key(stream_id) {
            return Err(OpenRefused::Exists);
        }
        if self.by_id.len() >= RTP_SERVERS_MAX {
            return Err(OpenRefused::Full);
        }
        Ok(())
    }

    pub fn insert(&mut self, server: RtpServer) {
        debug_assert!(self.may_open(&server.stream_id, &server.app).is_ok());
        debug_assert_eq!(server.name, server.stream_id, "renamed only at publish");
        self.names.insert(server.name.clone(), server.stream_id.clone());
        self.by_id.insert(server.stream_id.clone(), server);
    }

    pub fn remove(&mut self, stream_id: &str) -> Option<RtpServer> {
        let server = self.by_id.remove(stream_id)?;
        self.names.remove(&server.name);
        Some(server)
    }

    /// The server announced and served as `name` (viewers, media queries, `close_streams`).
    pub fn named(&self, name: &str) -> Option<&RtpServer> {
        self.by_id.get(self.names.get(name)?)
    }

    /// The server opened as `id`, or else the one announced as `id`: the RTP-server calls take
    /// either name, as wvp may name a replaced stream by its new name too.
    pub fn resolve(&self, id: &str) -> Option<&RtpServer> {
        self.by_id.get(id).or_else(|| self.named(id))
    }

    /// `on_publish`'s `stream_replace`: the stream is announced and served as `name` from now
    /// on. Refused when the name is bad or another stream has it.
    pub fn rename(&mut self, stream_id: &str, name: &str) -> Result<(), OpenRefused> {
        if !name_ok(name) {
            return Err(OpenRefused::BadName);
        }
        if self.names.get(name).is_some_and(|owner| owner != stream_id) {
            return Err(OpenRefused::Exists);
        }
        let Some(server) = self.by_id.get_mut(stream_id) else { return Err(OpenRefused::Exists) };
        self.names.remove(&server.name);
        server.name = name.to_string();
        self.names.insert(name.to_string(), stream_id.to_string());
        Ok(())
    }

    /// `on_publish` allowed the stream (or no such hook is set).
    pub fn allow(&mut self, stream_id: &str, unix_s: u64) -> bool {
        match self.by_id.get_mut(stream_id) {
            Some(s) => {
                s.publish = Publish::Published { unix_s };
                true
            }
            None => false,
        }
    }

    /// A dial (`connectRtpServer`'s or a redial) ended: connected, or one more failure (the
    /// last one gives up).
    pub fn dialled(&mut self, stream_id: &str, to: SocketAddr, connected: bool, now: Instant) {
        let Some(s) = self.by_id.get_mut(stream_id) else { return };
        let failures = s.dial.as_ref().filter(|d| d.to == to && !connected).map_or(0, |d| d.failures) + u32::from(!connected);
        s.dial = (failures < DIAL_TRIES_MAX).then_some(Dial {
            to,
            failures,
            since: now,
            next_at: (!connected).then_some(now + DIAL_GAP),
            dialing: false,
        });
    }

    /// `on_stream_none_reader` answered without closing: ask again after another delay.
    pub fn none_reader_answered(&mut self, stream_id: &str, now: Instant) {
        if let Some(s) = self.by_id.get_mut(stream_id) {
            s.none_reader_asking = false;
            s.unwatched_since = Some(now);
        }
    }

    /// One look at every server with its stream's figures as listed at `listed_at` (None: the
    /// stream is gone). Servers opened since are left for the next look: their streams may
    /// not be in the listing yet.
    pub fn tick(&mut self, now: Instant, listed_at: Instant, timing: Timing, view: impl Fn(u32) -> Option<StreamView>) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut timed_out = Vec::new();
        for s in self.by_id.values_mut().filter(|s| s.opened <= listed_at) {
            let Some(v) = view(s.key) else {
                timed_out.push(s.stream_id.clone());
                continue;
            };
            if !s.check_paused && Duration::from_millis(v.quiet_ms) >= timing.rtp_timeout {
                timed_out.push(s.stream_id.clone());
                continue;
            }
            let due = |d: &&mut Dial| d.since <= listed_at && !d.dialing && v.tcp_conns == 0 && d.next_at.is_none_or(|at| now >= at);
            if let Some(d) = s.dial.as_mut().filter(due) {
                d.dialing = true;
                actions.push(Action::Redial { stream_id: s.stream_id.clone(), to: d.to });
            }
            if s.publish == Publish::Waiting && v.packets > 0 && v.ready {
                s.publish = Publish::Asking;
                actions.push(Action::AskPublish { stream_id: s.stream_id.clone() });
            }
            if !s.published() || v.readers > 0 {
                s.unwatched_since = None;
                continue;
            }
            let since = *s.unwatched_since.get_or_insert(now);
            if !s.none_reader_asking && now.saturating_duration_since(since) >= timing.none_reader_delay {
                s.none_reader_asking = true;
                actions.push(Action::AskNoneReader { stream_id: s.stream_id.clone() });
            }
        }
        for id in timed_out {
            if let Some(server) = self.remove(&id) {
                actions.push(Action::TimedOut { server });
            }
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(id: &str, key: u32, at: Instant) -> RtpServer {
        RtpServer {
            stream_id: id.into(),
            name: id.into(),
            app: "rtp".into(),
            key,
            port: 30000,
            tcp_mode: TcpMode::Udp,
            ssrc: key,
            opened_ssrc: key,
            only_track: 0,
            re_use_port: false,
            learn_ssrc: false,
            opened: at,
            publish: Publish::Waiting,
            check_paused: false,
            unwatched_since: None,
            none_reader_asking: false,
            dial: None,
        }
    }

    const TIMING: Timing = Timing { rtp_timeout: Duration::from_secs(15), none_reader_delay: Duration::from_secs(20) };

    #[test]
    fn names_and_bounds() {
        let t = Instant::now();
        let mut s = RtpServers::default();
        assert_eq!(s.may_open("", "rtp"), Err(OpenRefused::BadName));
        assert_eq!(s.may_open("a/b", "rtp"), Err(OpenRefused::BadName));
        assert_eq!(s.may_open(&"x".repeat(NAME_BYTES_MAX + 1), "rtp"), Err(OpenRefused::BadName));
        s.insert(server("a", 1, t));
        assert_eq!(s.may_open("a", "rtp"), Err(OpenRefused::Exists));
        assert_eq!(s.by_key(1).map(|s| s.stream_id.as_str()), Some("a"));
    }

    #[test]
    fn a_replaced_name_is_the_streams_alone_and_the_opened_one_stays_an_alias() {
        let t = Instant::now();
        let mut s = RtpServers::default();
        s.insert(server("0A0B0C0D", 1, t));
        s.insert(server("0A0B0C0E", 2, t));
        assert_eq!(s.rename("0A0B0C0D", "dev_ch"), Ok(()));
        assert_eq!(s.named("dev_ch").map(|s| s.key), Some(1));
        assert!(s.named("0A0B0C0D").is_none(), "served under the new name only");
        assert_eq!(s.resolve("0A0B0C0D").map(|s| s.key), Some(1), "the opened name stays for the RTP-server calls");
        assert_eq!(s.resolve("dev_ch").map(|s| s.key), Some(1));
        assert_eq!(s.rename("0A0B0C0E", "dev_ch"), Err(OpenRefused::Exists), "another stream has it");
        assert_eq!(s.rename("0A0B0C0E", "0A0B0C0E"), Ok(()), "its own name again");
        assert_eq!(s.rename("0A0B0C0E", "a/b"), Err(OpenRefused::BadName));
        assert_eq!(s.may_open("dev_ch", "rtp"), Err(OpenRefused::Exists), "a new server cannot take a replaced name");
        assert!(s.may_open("0A0B0C0D", "rtp").is_err());
        s.remove("0A0B0C0D");
        assert!(s.named("dev_ch").is_none());
        assert_eq!(s.may_open("dev_ch", "rtp"), Ok(()), "free again once its stream closed");
    }

    #[test]
    fn publishes_once_then_offers_an_unwatched_stream_again_and_again() {
        let t0 = Instant::now();
        let mut s = RtpServers::default();
        s.insert(server("a", 1, t0));
        let quiet = |packets| move |_| Some(StreamView { packets, ready: true, quiet_ms: 0, readers: 0, tcp_conns: 0 });
        assert!(s.tick(t0, t0, TIMING, quiet(0)).is_empty(), "no packet: nothing");
        assert!(
            s.tick(t0, t0, TIMING, |_| Some(StreamView { packets: 5, ready: false, quiet_ms: 0, readers: 0, tcp_conns: 0 })).is_empty(),
            "tracks not known yet"
        );
        let a = s.tick(t0, t0, TIMING, quiet(5));
        assert!(matches!(&a[..], [Action::AskPublish { stream_id }] if stream_id == "a"));
        assert!(s.tick(t0, t0, TIMING, quiet(9)).is_empty(), "asked once");
        assert!(s.allow("a", 100));
        let t1 = t0 + Duration::from_secs(1);
        assert!(s.tick(t1, t1, TIMING, quiet(9)).is_empty(), "unwatched from now on");
        assert!(s.tick(t1 + Duration::from_secs(19), t1, TIMING, quiet(9)).is_empty());
        let a = s.tick(t1 + Duration::from_secs(20), t1, TIMING, quiet(9));
        assert!(matches!(&a[..], [Action::AskNoneReader { .. }]));
        assert!(s.tick(t1 + Duration::from_secs(40), t1, TIMING, quiet(9)).is_empty(), "not while asking");
        s.none_reader_answered("a", t1 + Duration::from_secs(41));
        assert!(s.tick(t1 + Duration::from_secs(60), t1, TIMING, quiet(9)).is_empty());
        assert_eq!(s.tick(t1 + Duration::from_secs(61), t1, TIMING, quiet(9)).len(), 1, "asked again a delay later");
        // A viewer resets the wait.
        s.none_reader_answered("a", t1 + Duration::from_secs(62));
        let watched = |_| Some(StreamView { packets: 9, ready: true, quiet_ms: 0, readers: 1, tcp_conns: 0 });
        assert!(s.tick(t1 + Duration::from_secs(90), t1, TIMING, watched).is_empty());
        assert!(s.tick(t1 + Duration::from_secs(91), t1, TIMING, quiet(9)).is_empty());
    }

    #[test]
    fn a_quiet_or_vanished_stream_times_out_unless_paused() {
        let t0 = Instant::now();
        let mut s = RtpServers::default();
        s.insert(server("a", 1, t0));
        s.insert(server("b", 2, t0));
        s.insert(server("c", 3, t0));
        s.get_mut("b").unwrap().check_paused = true;
        let view = |key| match key {
            3 => None,
            _ => Some(StreamView { packets: 0, ready: false, quiet_ms: 15_000, readers: 0, tcp_conns: 0 }),
        };
        let a = s.tick(t0, t0, TIMING, view);
        let gone: Vec<_> =
            a.iter().filter_map(|a| if let Action::TimedOut { server } = a { Some(server.stream_id.as_str()) } else { None }).collect();
        assert_eq!(gone, ["a", "c"]);
        assert_eq!(s.len(), 1, "the paused one stays");
        assert_eq!(s.may_open("a", "rtp"), Ok(()), "a timed-out server's name is free again");
    }

    #[test]
    fn a_dropped_dial_is_redialled_a_gap_after_each_failure_and_given_up_after_the_last() {
        let t0 = Instant::now();
        let mut s = RtpServers::default();
        s.insert(server("a", 1, t0));
        let device: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let view = |conns| move |_| Some(StreamView { packets: 9, ready: false, quiet_ms: 0, readers: 0, tcp_conns: conns });
        assert!(s.tick(t0, t0, TIMING, view(0)).is_empty(), "never dialled: nothing");
        let t1 = t0 + Duration::from_millis(1);
        s.dialled("a", device, true, t1);
        assert!(s.tick(t1, t0, TIMING, view(0)).is_empty(), "a listing taken before the dial says nothing of it");
        assert!(s.tick(t1, t1, TIMING, view(1)).is_empty(), "connected");
        let redial = s.tick(t1, t1, TIMING, view(0));
        assert!(matches!(&redial[..], [Action::Redial { stream_id, to }] if stream_id == "a" && *to == device), "dropped: {redial:?}");
        assert!(s.tick(t1, t1, TIMING, view(0)).is_empty(), "not while dialling");
        for failure in 1..DIAL_TRIES_MAX {
            let at = t1 + DIAL_GAP * (failure - 1);
            s.dialled("a", device, false, at);
            assert!(s.tick(at + DIAL_GAP / 2, at + DIAL_GAP / 2, TIMING, view(0)).is_empty(), "a gap between tries");
            assert_eq!(s.tick(at + DIAL_GAP, at + DIAL_GAP, TIMING, view(0)).len(), 1, "try {}", failure + 1);
        }
        s.dialled("a", device, false, t1 + DIAL_GAP * 3);
        assert!(s.get("a").unwrap().dial.is_none(), "given up after {DIAL_TRIES_MAX} tries");
        assert!(s.tick(t1 + DIAL_GAP * 9, t1 + DIAL_GAP * 9, TIMING, view(0)).is_empty());
    }

    #[test]
    fn a_server_opened_after_the_listing_is_not_taken_for_gone() {
        let t0 = Instant::now();
        let mut s = RtpServers::default();
        s.insert(server("new", 1, t0 + Duration::from_millis(5)));
        assert!(s.tick(t0 + Duration::from_millis(10), t0, TIMING, |_| None).is_empty(), "listed before it opened");
        let a = s.tick(t0 + Duration::from_millis(20), t0 + Duration::from_millis(10), TIMING, |_| None);
        assert!(matches!(&a[..], [Action::TimedOut { .. }]), "listed after it opened, and not there");
    }
}
