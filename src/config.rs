//! YAML configuration with an embedded default (config/gmv.yml).

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};

pub const DEFAULT_CONFIG_YAML: &str = include_str!("../config/gmv.yml");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node_id: String,
    pub shards: usize,
    pub io_memory_kib: usize,
    pub ring_depth: usize,
    /// Where the device registry is kept across restarts.
    pub data_dir: std::path::PathBuf,
    pub http: HttpConfig,
    pub sip: SipConfig,
    pub rtp: RtpConfig,
    pub media: MediaConfig,
    pub hls: HlsConfig,
    pub record: RecordConfig,
    pub streams: Vec<StaticStream>,
    /// Receivers of platform events (alarms, devices, streams...) as signed JSON POSTs.
    pub webhooks: Vec<WebhookConfig>,
    /// This process as a media node: its role, and the ZLMediaKit node API and hooks.
    pub node: NodeConfig,
    /// Where the device registry lives: SQLite in `data_dir`, or PostgreSQL shared by controls.
    pub registry: RegistryConfig,
    /// Upper platforms this one reports to as a lower platform (级联).
    pub cascade: CascadeConfig,
    /// WebRTC playback (WHEP) on the media shards.
    pub webrtc: WebRtcConfig,
    /// RTMP push ingest (encoders, OBS, drones publishing with a publish token).
    pub rtmp: RtmpConfig,
    /// ONVIF cameras: where discovery probes go out.
    pub onvif: OnvifConfig,
    /// Pull proxies' clients.
    pub pull: PullConfig,
}

/// RTMP push ingest: one TCP listener; each publisher's connection moves to the media shard
/// that owns its stream once its publish token is checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtmpConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// The host publishers are told to use in `rtmp://` URLs (publish-token answers); None:
    /// the host of the API request that asked.
    pub public_host: Option<String>,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        RtmpConfig { enabled: true, listen: "0.0.0.0:1935".parse().expect("literal"), public_host: None }
    }
}

/// What pull proxies' clients trust.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PullConfig {
    /// PEM certificates of authorities trusted for `https://` sources besides the system's
    /// (a site's own CA); None: the system's only.
    pub ca_file: Option<std::path::PathBuf>,
}

/// ONVIF discovery (WS-Discovery) and control of cameras that are pulled as proxies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OnvifConfig {
    /// The address of the interface on the cameras' network: probes to the multicast group go
    /// out there. 0.0.0.0: the one the route picks.
    pub interface: IpAddr,
    /// How long a probe waits for answers (100..=10000).
    pub probe_wait_ms: u64,
}

impl Default for OnvifConfig {
    fn default() -> Self {
        OnvifConfig { interface: "0.0.0.0".parse().expect("literal"), probe_wait_ms: 2000 }
    }
}

/// WebRTC playback (WHEP): one UDP socket per media shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebRtcConfig {
    pub enabled: bool,
    pub listen_ip: IpAddr,
    /// Media shard 1's UDP port; shard i takes `port + i - 1`. 0: any free port per shard.
    pub port: u16,
    /// The address browsers reach the shards at (the ICE candidate); None: the address the
    /// WHEP request came to.
    pub candidate_ip: Option<IpAddr>,
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        WebRtcConfig { enabled: true, listen_ip: "0.0.0.0".parse().expect("literal"), port: 8189, candidate_ip: None }
    }
}

impl WebRtcConfig {
    /// The UDP address media shard `index` (1-based) binds.
    pub fn shard_addr(&self, index: usize) -> SocketAddr {
        let port = if self.port == 0 { 0 } else { self.port.saturating_add((index - 1) as u16) };
        SocketAddr::new(self.listen_ip, port)
    }
}

/// The device registry's storage. Empty `postgres`: `data_dir/registry.sqlite3`, for one
/// control. A PostgreSQL URL: the registry is shared by every control configured with it, one
/// of them active (it holds a lease in the database and serves SIP), the others standby (they
/// follow the registry and take over when the lease runs out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// `postgres://user:password@host:port/database` (or the key=value form); "" for SQLite.
    pub postgres: String,
    /// This control's name in the lease; empty: `{hostname}:{sip.listen}`.
    pub instance: String,
    /// The active control renews its lease every `lease_s / 3`; a standby takes over once
    /// `lease_s` passed without a renewal (a graceful stop hands the lease over at once).
    pub lease_s: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig { postgres: String::new(), instance: String::new(), lease_s: 10 }
    }
}

/// Bounds of `registry.lease_s`: renewals need a few round trips' slack; a failover longer
/// than two minutes leaves devices unserved too long.
/// The largest REGISTER burst or rate a config may set (a limit that means something).
pub const REGISTER_BURST_MAX: u32 = 100_000;
pub const LEASE_S_MIN: u64 = 2;
pub const LEASE_S_MAX: u64 = 120;

/// What a process runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// SIP, REST, console and media in one process.
    #[default]
    All,
    /// Shards, ingest and play, driven over the node API; no SIP.
    Media,
    /// SIP, REST and console; every stream is placed on one of `node.media_nodes`.
    Control,
}

/// A media node a control plane places streams on (a gmv `--role media` or a ZLMediaKit).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaNodeConfig {
    /// Its `mediaServerId` (what its hooks say).
    pub id: String,
    /// Its HTTP address, `http://host:port`: the node API, and where viewers play.
    pub api: String,
    pub secret: String,
    /// The address devices send media to (put in INVITE SDPs).
    pub media_ip: String,
}

/// Hooks a node posts, by ZLMediaKit's names.
pub const HOOK_NAMES: [&str; 11] = [
    "on_server_started",
    "on_server_keepalive",
    "on_publish",
    "on_stream_changed",
    "on_play",
    "on_stream_none_reader",
    "on_stream_not_found",
    "on_rtp_server_timeout",
    "on_record_mp4",
    "on_send_rtp_stopped",
    "on_http_access",
];

/// The ZLMediaKit node API (`/index/api/...`) and hooks, as wvp-GB28181-pro drives a media
/// node. Names follow ZLMediaKit's config where they have a counterpart there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    pub role: Role,
    /// `secret` every node API call carries (ZLMediaKit's `api.secret`); empty: the node API
    /// answers every call "Please login first".
    pub secret: String,
    /// Names this node in hooks (`general.mediaServerId`); empty: `node_id`.
    pub media_server_id: String,
    /// Hook name (`on_play`, ...) to `http://host:port/path`; a hook not listed is not posted
    /// (and `on_play` then leaves play to gmv's own tokens). `setServerConfig` changes them
    /// until the next start.
    pub hooks: std::collections::BTreeMap<String, String>,
    /// One hook delivery, connect to answer (`hook.timeoutSec`).
    pub hook_timeout_s: u64,
    /// Tries after the first failed one (`hook.retry`): the first `hook_retry_delay_ms` later,
    /// each next one twice as long after (at most `HOOK_RETRY_DELAY_MAX`).
    pub hook_retry: u32,
    pub hook_retry_delay_ms: u64,
    /// `on_server_keepalive` period (`hook.alive_interval`).
    pub keepalive_interval_s: u64,
    /// A published stream with no viewer this long is offered to `on_stream_none_reader`,
    /// whose `close: true` closes it (`general.streamNoneReaderDelayMS`).
    pub stream_none_reader_delay_ms: u64,
    /// A viewer of a stream not yet published waits this long for it (`general.maxStreamWaitMS`).
    pub max_stream_wait_ms: u64,
    /// An RTP server with no packet for this long is closed and `on_rtp_server_timeout`
    /// posted, unless `pauseRtpCheck` paused the check (`rtp_proxy.timeoutSec`).
    pub rtp_server_timeout_s: u64,
    /// Schemas `on_stream_changed` announces for each stream. gmv serves HTTP-FLV (ZLMediaKit's
    /// `rtmp` schema serves it too) and HLS; wvp acts only on `rtsp`, so it is announced for
    /// wvp's sake although gmv serves no RTSP.
    pub stream_changed_schemas: Vec<String>,
    /// Role control: the media nodes streams are placed on. Each posts its hooks (at least
    /// on_server_keepalive, on_play, on_publish) to this control's /index/hook/{name}.
    pub media_nodes: Vec<MediaNodeConfig>,
    /// Role control: a node whose last keepalive is older than this is down; its sessions
    /// are ended and its channels play elsewhere when asked again.
    pub node_down_after_s: u64,
    /// Role control: a media node not listed in `media_nodes` that announces itself
    /// (`on_server_started`, as ZLMediaKit's carries its config) with this as its `api.secret`
    /// is taken as a node (API at the announcing address and its `http.port`). Empty: only
    /// listed nodes are placed on.
    pub announce_secret: String,
    /// `/index/api/downloadFile` without the secret and with no `on_http_access` hook set:
    /// addresses or ranges that may fetch recordings (ZLMediaKit's `http.allow_ip_range`,
    /// whose default this is: loopback and private networks, where wvp's browsers are).
    /// Empty: only the secret, a gmv credential or `on_http_access` opens a file.
    pub download_allow_ips: Vec<String>,
    /// H.265 on the node's FLV URLs (`/rtp/{stream}.live.flv`) as enhanced RTMP's `hvc1`
    /// (ZLMediaKit's `rtmp.enhanced=1`); false: codec id 12, which wvp's players (jessibuca)
    /// read and wvp ships ZLMediaKit set to. A URL's `h265=legacy|enhanced` chooses for itself.
    pub rtmp_enhanced: bool,
}

/// Entries of `node.download_allow_ips`.
pub const DOWNLOAD_ALLOW_IPS_MAX: usize = 64;

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            role: Role::All,
            secret: String::new(),
            media_server_id: String::new(),
            hooks: Default::default(),
            hook_timeout_s: 10,
            hook_retry: 1,
            hook_retry_delay_ms: 3000,
            keepalive_interval_s: 10,
            stream_none_reader_delay_ms: 20_000,
            max_stream_wait_ms: 15_000,
            rtp_server_timeout_s: 15,
            stream_changed_schemas: vec!["rtsp".into(), "rtmp".into(), "hls".into()],
            media_nodes: Vec::new(),
            node_down_after_s: 30,
            announce_secret: String::new(),
            download_allow_ips: ["127.0.0.1", "::1", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"].map(String::from).to_vec(),
            rtmp_enhanced: false,
        }
    }
}

impl Config {
    /// The name this node gives itself in hooks.
    pub fn media_server_id(&self) -> &str {
        if self.node.media_server_id.is_empty() { &self.node_id } else { &self.node.media_server_id }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CascadeConfig {
    pub upstreams: Vec<UpstreamYaml>,
}

/// An upper platform (上级平台) this one registers with and shares channels to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamYaml {
    /// Our name for it (API, logs, events).
    pub id: String,
    /// The name this platform gives itself upward (DeviceInfo).
    #[serde(default = "default_upstream_name")]
    pub name: String,
    /// The upper platform's SIP id and domain.
    pub server_id: String,
    pub domain: String,
    /// Its SIP address, `host:port` (a name is resolved at start).
    pub address: String,
    /// `udp` or `tcp` (a connection this platform dials and keeps).
    #[serde(default = "default_upstream_transport")]
    pub transport: String,
    pub password: String,
    /// The id this platform has toward it (a platform id, type 200, by convention).
    pub local_id: String,
    #[serde(default = "default_upstream_expires_s")]
    pub register_expires_s: u32,
    #[serde(default = "default_upstream_keepalive_s")]
    pub keepalive_s: u32,
    /// Keepalives unanswered in a row before the upstream is deemed lost (and registered again).
    #[serde(default = "default_upstream_keepalive_count")]
    pub keepalive_timeout_count: u32,
    /// `GB2312` (the standard's) or `UTF-8`.
    #[serde(default = "default_upstream_charset")]
    pub charset: String,
    /// `all`, or a list of channel ids.
    #[serde(default)]
    pub shared: SharedYaml,
    /// Channels the upper platform knows by ids of its own (its numbering plan):
    /// `{our channel id: its id upward}`. Others keep their ids.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub channel_id_map: std::collections::BTreeMap<String, String>,
    /// Business groups (id type 215) and virtual organisations (216) its catalog shows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupYaml>,
    /// `{our channel id: the group it hangs under}` (others hang under this platform).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub channel_groups: std::collections::BTreeMap<String, String>,
}

/// A business group or virtual organisation of the catalog sent up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupYaml {
    pub id: String,
    pub name: String,
    /// The group it sits under: a virtual organisation (216) needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SharedYaml {
    /// `all`
    Word(String),
    Channels(Vec<String>),
}

impl Default for SharedYaml {
    fn default() -> Self {
        SharedYaml::Channels(Vec::new())
    }
}

fn default_upstream_name() -> String {
    "gmv".into()
}
fn default_upstream_transport() -> String {
    "udp".into()
}
fn default_upstream_expires_s() -> u32 {
    3600
}
fn default_upstream_keepalive_s() -> u32 {
    60
}
fn default_upstream_keepalive_count() -> u32 {
    3
}
fn default_upstream_charset() -> String {
    "GB2312".into()
}

impl UpstreamYaml {
    /// The upstream as the SIP endpoint takes it, or why it cannot be.
    pub fn to_endpoint(&self) -> Result<crate::proto::sip::endpoint::UpstreamConfig, String> {
        use crate::proto::sip::endpoint::{Charset, Shared, UPSTREAM_CALLS_MAX, valid_id};
        use std::net::ToSocketAddrs;
        let id = &self.id;
        for (field, v) in [("server_id", &self.server_id), ("domain", &self.domain), ("local_id", &self.local_id)] {
            if !valid_id(v) {
                return Err(format!("cascade.upstreams {id}: {field} {v:?} is not an id (letters, digits, - _ .)"));
            }
        }
        if id.is_empty() || id.len() > 64 {
            return Err("cascade.upstreams: id must be 1 to 64 characters".into());
        }
        let tcp = match self.transport.to_ascii_lowercase().as_str() {
            "udp" => false,
            "tcp" => true,
            _ => return Err(format!("cascade.upstreams {id}: transport {:?} is udp or tcp", self.transport)),
        };
        let address = self.address.to_socket_addrs().ok().and_then(|mut a| a.next());
        let Some(address) = address else { return Err(format!("cascade.upstreams {id}: address {:?} is not host:port", self.address)) };
        if self.keepalive_s == 0 || self.keepalive_s > 3600 || self.keepalive_timeout_count == 0 || self.keepalive_timeout_count > 100 {
            return Err(format!("cascade.upstreams {id}: keepalive_s must be 1 to 3600 and keepalive_timeout_count 1 to 100"));
        }
        let charset = match self.charset.to_ascii_uppercase().as_str() {
            "GB2312" | "GBK" | "GB18030" => Charset::Gb2312,
            "UTF-8" | "UTF8" => Charset::Utf8,
            other => return Err(format!("cascade.upstreams {id}: charset {other:?} is GB2312 or UTF-8")),
        };
        let shared = match &self.shared {
            SharedYaml::Word(w) if w == "all" => Shared::All,
            SharedYaml::Word(w) => return Err(format!("cascade.upstreams {id}: shared {w:?} is \"all\" or a list of channel ids")),
            SharedYaml::Channels(list) => {
                if let Some(bad) = list.iter().find(|c| !valid_id(c)) {
                    return Err(format!("cascade.upstreams {id}: shared channel {bad:?} is not an id"));
                }
                if list.len() > 100 * UPSTREAM_CALLS_MAX {
                    return Err(format!("cascade.upstreams {id}: shared lists at most {} channels (or say all)", 100 * UPSTREAM_CALLS_MAX));
                }
                Shared::Channels(list.iter().cloned().collect())
            }
        };
        if let Some((ours, theirs)) = self.channel_id_map.iter().find(|(o, t)| !valid_id(o) || !valid_id(t)) {
            return Err(format!("cascade.upstreams {id}: channel_id_map {ours:?}: {theirs:?} is not a pair of ids"));
        }
        if self.channel_id_map.len() > 100 * UPSTREAM_CALLS_MAX {
            return Err(format!("cascade.upstreams {id}: channel_id_map holds at most {} channels", 100 * UPSTREAM_CALLS_MAX));
        }
        let groups = self.catalog_groups()?;
        let pairs = self.channel_id_map.iter().map(|(o, t)| (o.clone(), t.clone()));
        let Some(channel_ids) = crate::proto::sip::endpoint::ChannelIds::new(pairs) else {
            return Err(format!("cascade.upstreams {id}: channel_id_map gives one id upward to two channels"));
        };
        Ok(crate::proto::sip::endpoint::UpstreamConfig {
            id: id.clone(),
            name: self.name.clone(),
            server_id: self.server_id.clone(),
            domain: self.domain.clone(),
            address,
            tcp,
            password: self.password.clone(),
            local_id: self.local_id.clone(),
            register_expires_s: self.register_expires_s,
            keepalive: std::time::Duration::from_secs(u64::from(self.keepalive_s)),
            keepalive_misses_max: self.keepalive_timeout_count,
            charset,
            shared,
            channel_ids,
            groups,
            channel_groups: self.channel_groups.clone(),
        })
    }

    /// The groups, checked: ids of type 215 or 216, a 216 under a listed group, channels only
    /// under listed groups, no group under itself.
    fn catalog_groups(&self) -> Result<Vec<crate::proto::sip::endpoint::CatalogGroup>, String> {
        use crate::proto::sip::endpoint::{CATALOG_GROUPS_MAX, CatalogGroup, id_type, valid_id};
        let id = &self.id;
        if self.groups.len() > CATALOG_GROUPS_MAX {
            return Err(format!("cascade.upstreams {id}: at most {CATALOG_GROUPS_MAX} groups"));
        }
        let listed = |g: &str| self.groups.iter().any(|x| x.id == g);
        for g in &self.groups {
            let kind = id_type(&g.id).filter(|t| valid_id(&g.id) && g.id.len() == 20 && matches!(*t, "215" | "216"));
            match (kind, g.parent.as_deref()) {
                (None, _) => return Err(format!("cascade.upstreams {id}: group {:?} is not a 20-digit id of type 215 (business group) or 216 (virtual organisation)", g.id)),
                (Some("216"), None) => return Err(format!("cascade.upstreams {id}: virtual organisation {} needs a parent group", g.id)),
                (_, Some(p)) if p == g.id || !listed(p) => return Err(format!("cascade.upstreams {id}: group {} is under {p:?}, which is not another listed group", g.id)),
                _ => {}
            }
        }
        if let Some((channel, group)) = self.channel_groups.iter().find(|(c, g)| !valid_id(c) || !listed(g)) {
            return Err(format!("cascade.upstreams {id}: channel_groups puts {channel:?} under {group:?}, which is not a listed group"));
        }
        if self.channel_groups.len() > 100 * crate::proto::sip::endpoint::UPSTREAM_CALLS_MAX {
            return Err(format!("cascade.upstreams {id}: channel_groups too long"));
        }
        let groups: Vec<CatalogGroup> = self.groups.iter().map(|g| CatalogGroup { id: g.id.clone(), name: g.name.clone(), parent: g.parent.clone() }).collect();
        if let Some(lost) = groups.iter().find(|g| crate::proto::sip::endpoint::business_group(&groups, &g.id).is_none()) {
            return Err(format!("cascade.upstreams {id}: group {} does not lead up to a business group (215)", lost.id));
        }
        Ok(groups)
    }
}

impl CascadeConfig {
    /// The valid upstreams (`validate` refuses a config with another).
    pub fn endpoint_upstreams(&self) -> Vec<crate::proto::sip::endpoint::UpstreamConfig> {
        self.upstreams.iter().filter_map(|u| u.to_endpoint().ok()).collect()
    }

    fn validate(&self) -> Result<(), String> {
        use crate::proto::sip::endpoint::UPSTREAMS_MAX;
        if self.upstreams.len() > UPSTREAMS_MAX {
            return Err(format!("cascade.upstreams: at most {UPSTREAMS_MAX}"));
        }
        let mut ids = std::collections::BTreeSet::new();
        for u in &self.upstreams {
            u.to_endpoint()?;
            if !ids.insert(&u.id) {
                return Err(format!("cascade.upstreams: id {} twice", u.id));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://host:port/path` (HTTPS is not offered yet).
    pub url: String,
    /// Event kinds sent (`alarm`, `device_offline`, ...); empty: all.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// HMAC-SHA256 key of the `X-Gmv-Signature` header.
    pub secret: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordConfig {
    /// Record every stream from its first keyframe (else only on `POST /api/streams/{id}/record`).
    pub all: bool,
    /// A recording file is closed and a new one begun at the first keyframe after this long.
    pub rotate_s: u64,
    /// What `data_dir/records` may hold; nothing is deleted unless a rule is set.
    pub retention: RetentionConfig,
    /// A clip of a device's channel around each of its alarms (off unless `post_s` > 0).
    pub alarm_clip: AlarmClipConfig,
}

impl Default for RecordConfig {
    fn default() -> Self {
        RecordConfig { all: false, rotate_s: 600, retention: RetentionConfig::default(), alarm_clip: AlarmClipConfig::default() }
    }
}

/// Alarm clips (报警录像): on an alarm of a channel, a recording from up to `pre_s` before it
/// (the channel's last seconds, kept while it plays) to `post_s` after it; an alarm during a
/// clip extends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlarmClipConfig {
    /// Seconds recorded after the (last) alarm; 0: no clips.
    pub post_s: u64,
    /// Seconds kept before an alarm, from a keyframe (the pre-roll): memory on each playing
    /// device channel, bounded by `pre_bytes_max`.
    pub pre_s: u64,
    pub pre_bytes_max: u64,
}

impl Default for AlarmClipConfig {
    fn default() -> Self {
        AlarmClipConfig { post_s: 0, pre_s: 5, pre_bytes_max: 4 << 20 }
    }
}

/// Retention of the recordings (`data_dir/records`; downloads are kept): the oldest closed
/// files are deleted while any rule is broken, never a file being written. 0 turns a rule off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Recordings that ended longer ago than this are deleted.
    pub max_age_days: u64,
    /// The recordings take at most this many bytes.
    pub max_used_bytes: u64,
    /// The file system keeps at least this many bytes free.
    pub min_free_bytes: u64,
    /// How often the rules are checked.
    pub interval_s: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { max_age_days: 0, max_used_bytes: 0, min_free_bytes: 0, interval_s: 60 }
    }
}

impl RetentionConfig {
    pub fn any(&self) -> bool {
        self.max_age_days > 0 || self.max_used_bytes > 0 || self.min_free_bytes > 0
    }
}

/// `record.retention.max_used_bytes` below this would leave nothing but the file being
/// written: refused as a mistake.
pub const RETENTION_USED_BYTES_MIN: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HlsConfig {
    /// Segments are cut at the first keyframe at or after this duration.
    pub segment_duration_s: u64,
    /// Segments in the rolling playlist (held in memory on the stream's shard).
    pub segments_max: usize,
    /// HLS for a stream starts with its first playlist request and stops after this long
    /// without one, so streams nobody watches as HLS cost nothing.
    pub idle_timeout_s: u64,
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig { segment_duration_s: 2, segments_max: 5, idle_timeout_s: 60 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// Address for GB28181 signalling, UDP and TCP; empty string disables SIP.
    pub listen: String,
    /// SIP domain (realm), the first 10 digits of the server id by convention.
    pub domain: String,
    /// Password for devices not listed in `device_passwords`.
    pub password: String,
    pub device_passwords: std::collections::BTreeMap<String, String>,
    /// Offer `qop="auth"` in digest challenges (answers with and without qop are always taken).
    pub digest_qop: bool,
    /// Address devices reach this node at: Via/Contact and the media address in INVITE SDP.
    pub host_ip: String,
    /// A device missing 3 keepalives in a row is offline.
    pub keepalive_interval_s: u64,
    /// An INVITE not answered in this time fails the play request.
    pub invite_timeout_s: u64,
    /// A played channel with no viewer for this long is stopped (BYE); 0 keeps it.
    pub no_viewer_stop_s: u64,
    /// DeviceInfo and Catalog are asked again this often; 0 = only after registration/sync.
    pub catalog_refresh_s: u64,
    /// The devices' clock zone (`+08:00`): RecordInfo times are local. Empty: this machine's.
    pub time_zone: String,
    /// Zones of devices set to another one, by device id.
    pub device_time_zones: std::collections::BTreeMap<String, String>,
    /// A RecordInfo answer not complete in this time is returned as it stands.
    pub record_query_timeout_s: u64,
    /// Subscriptions made on every device when it comes online: `catalog`, `alarm`,
    /// `mobile_position`.
    pub subscribe: Vec<String>,
    /// Subscriptions of devices set apart (replacing `subscribe` for them), by device id.
    pub device_subscribe: std::collections::BTreeMap<String, Vec<String>>,
    /// How long each subscription is asked for (refreshed before it ends).
    pub subscribe_expires_s: u32,
    /// Media of a device that sends another SSRC than it was offered: `learn` takes it (from
    /// the device's addresses only), `strict` drops it (the stream says why it has nothing).
    pub ssrc_check: SsrcCheck,
    /// Devices set apart, by device id.
    pub device_ssrc_check: std::collections::BTreeMap<String, SsrcCheck>,
    /// New REGISTER challenges one source address gets: a burst, then so many a second; past
    /// that it is answered 503 with Retry-After.
    pub register_rate: RegisterRate,
    /// Networks with limits of their own (a site whose cameras all register through one NAT
    /// address), the first match counting.
    pub register_rate_networks: Vec<RegisterRateNetwork>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRate {
    pub burst: u32,
    pub per_s: u32,
}

impl Default for RegisterRate {
    fn default() -> Self {
        let d = crate::proto::sip::endpoint::RateLimit::default();
        RegisterRate { burst: d.burst, per_s: d.per_s }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRateNetwork {
    /// An address or range: `203.0.113.7`, `10.20.0.0/16`.
    pub source: String,
    pub burst: u32,
    pub per_s: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SsrcCheck {
    #[default]
    Learn,
    Strict,
}

impl Config {
    /// Every number an operator sets that has an upper bound: (key, value, most). A limit on
    /// everything: a typo of a few zeros must not become a queue or a timer without end.
    fn over_their_bounds(&self) -> [(&'static str, u64, u64); 22] {
        const DAY_S: u64 = 86_400;
        let n = |v: usize| v as u64;
        [
            ("shards", n(self.shards), 256),
            ("io_memory_kib", n(self.io_memory_kib), 1 << 20),
            ("ring_depth", n(self.ring_depth), 32_768),
            ("sip.keepalive_interval_s", self.sip.keepalive_interval_s, 3_600),
            ("sip.invite_timeout_s", self.sip.invite_timeout_s, 300),
            ("sip.no_viewer_stop_s", self.sip.no_viewer_stop_s, DAY_S),
            ("sip.catalog_refresh_s", self.sip.catalog_refresh_s, 7 * DAY_S),
            ("sip.record_query_timeout_s", self.sip.record_query_timeout_s, 300),
            ("sip.subscribe_expires_s", u64::from(self.sip.subscribe_expires_s), DAY_S),
            ("rtp.idle_timeout_s", self.rtp.idle_timeout_s, DAY_S),
            ("media.gop_cache_bytes_max", n(self.media.gop_cache_bytes_max), 256 << 20),
            ("media.subscriber_queue_tags_max", n(self.media.subscriber_queue_tags_max), 65_536),
            ("media.subscriber_skips_max", u64::from(self.media.subscriber_skips_max), 1_000),
            ("hls.segment_duration_s", self.hls.segment_duration_s, 60),
            ("hls.segments_max", n(self.hls.segments_max), 100),
            ("hls.idle_timeout_s", self.hls.idle_timeout_s, DAY_S),
            ("record.rotate_s", self.record.rotate_s, DAY_S),
            ("record.retention.max_age_days", self.record.retention.max_age_days, 36_500),
            ("record.retention.interval_s", self.record.retention.interval_s, DAY_S),
            ("record.alarm_clip.post_s", self.record.alarm_clip.post_s, 3_600),
            ("record.alarm_clip.pre_s", self.record.alarm_clip.pre_s, 60),
            ("record.alarm_clip.pre_bytes_max", self.record.alarm_clip.pre_bytes_max, 64 << 20),
        ]
    }

    /// The SIP endpoint's own settings, from this config (the endpoint knows nothing of it):
    /// `local` is where devices reach this node.
    pub fn endpoint_config(&self, local: std::net::SocketAddr) -> crate::proto::sip::endpoint::EndpointConfig {
        use crate::proto::sip::endpoint::SUBSCRIBE_EXPIRES_S_MIN;
        use std::time::Duration;
        let s = &self.sip;
        let nonzero = |secs: u64| (secs > 0).then(|| Duration::from_secs(secs));
        crate::proto::sip::endpoint::EndpointConfig {
            server_id: self.node_id.clone(),
            domain: s.domain.clone(),
            password: s.password.clone(),
            device_passwords: s.device_passwords.clone(),
            digest_qop: s.digest_qop,
            local,
            media_ip: s.host_ip.clone(),
            keepalive_interval: Duration::from_secs(s.keepalive_interval_s.max(1)),
            invite_timeout: Duration::from_secs(s.invite_timeout_s.max(1)),
            no_viewer_stop: nonzero(s.no_viewer_stop_s),
            catalog_refresh: nonzero(s.catalog_refresh_s),
            utc_offset_s: s.utc_offset_s(),
            device_utc_offsets_s: s.device_utc_offsets_s(),
            record_query_timeout: Duration::from_secs(s.record_query_timeout_s.max(1)),
            subscribe: s.subscribe.clone(),
            device_subscribe: s.device_subscribe.clone(),
            subscribe_expires_s: s.subscribe_expires_s.max(SUBSCRIBE_EXPIRES_S_MIN),
            register_rate: s.register_rate_limits(),
            upstreams: self.cascade.endpoint_upstreams(),
        }
    }
}

impl SipConfig {
    /// `time_zone` in seconds east of UTC (validated), or this machine's zone.
    pub fn utc_offset_s(&self) -> i32 {
        crate::proto::sip::gbtime::parse_offset(&self.time_zone).unwrap_or_else(local_utc_offset_s)
    }

    /// The REGISTER rate limits as the endpoint takes them (validated: sources parse).
    pub fn register_rate_limits(&self) -> crate::proto::sip::endpoint::RateLimits {
        use crate::proto::sip::endpoint::RateLimit;
        let limit = |burst, per_s| RateLimit { burst, per_s };
        crate::proto::sip::endpoint::RateLimits {
            default: limit(self.register_rate.burst, self.register_rate.per_s),
            networks: self
                .register_rate_networks
                .iter()
                .filter_map(|n| Some((crate::proto::ipnet::IpNet::parse(&n.source).ok()?, limit(n.burst, n.per_s))))
                .collect(),
        }
    }

    /// Whether a device's stream learns an SSRC the device picked itself.
    pub fn learns_ssrc(&self, device_id: &str) -> bool {
        self.device_ssrc_check.get(device_id).copied().unwrap_or(self.ssrc_check) == SsrcCheck::Learn
    }

    pub fn device_utc_offsets_s(&self) -> std::collections::BTreeMap<String, i32> {
        self.device_time_zones.iter().filter_map(|(id, z)| Some((id.clone(), crate::proto::sip::gbtime::parse_offset(z)?))).collect()
    }
}

/// This machine's offset from UTC now (the TZ environment or /etc/localtime, as libc reads it).
fn local_utc_offset_s() -> i32 {
    // SAFETY: time(NULL) and localtime_r write only into the tm we own.
    unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return 0;
        }
        tm.tm_gmtoff as i32
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// API keys with their roles, stored as SHA-256 (`gmv --hash-key KEY`). None configured:
    /// an admin key is generated into `data_dir/admin-key` on first start.
    pub api_keys: Vec<crate::auth::ApiKeyConfig>,
    /// HMAC secrets for play tokens: the first signs, each verifies (two during a rotation).
    /// None configured: one is generated into `data_dir/play-secret`.
    pub play_secrets: Vec<String>,
    /// Lifetime of the play tokens in API answers.
    pub play_token_ttl_s: u64,
    /// Origins (`https://console.example:8443`, or `*`) whose pages may call this server;
    /// empty: none but the same origin.
    pub cors_origins: Vec<String>,
    /// HTTPS on its own address, same routes; absent: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// The seed's plain-text tokens; refused with a pointer to `api_keys`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<String>,
}

/// HTTPS (rustls): PEM files, read at start and again on SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub listen: SocketAddr,
    /// Certificate chain, leaf first.
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
}

/// `rtp.gather_us` unless configured: 2 ms, a twentieth of a 25 fps frame interval (half the
/// wake-ups of 1 ms: a tenth less CPU at 500 cameras, p99 frame-to-viewer 2.5 ms there;
/// docs/PERFORMANCE.md).
pub const RTP_GATHER_US_DEFAULT: u32 = 2_000;
/// Longest `rtp.gather_us`: 2 ms, a tenth of a 50 fps frame interval.
pub const RTP_GATHER_US_MAX: u32 = 2_000;
const _: () = assert!(RTP_GATHER_US_DEFAULT <= RTP_GATHER_US_MAX);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtpConfig {
    pub listen_ip: IpAddr,
    pub port_min: u16,
    pub port_max: u16,
    pub idle_timeout_s: u64,
    /// One port (UDP and TCP) for every stream, steered to the owning shard by SSRC (0: none,
    /// each stream binds its own from the range). With it, streams bind a port of their own
    /// only when one is asked for (API `port`, a static stream's `port`).
    pub port: u16,
    /// On the single port, a packet of an SSRC no stream expects opens a stream for it (a bare
    /// `ffmpeg -f rtp` push) instead of being dropped.
    pub accept_unknown_ssrc: bool,
    /// For such streams: an SDP whose `a=rtpmap` lines say what each payload type carries;
    /// payload types it does not name are guessed from their bytes (PS, TS, H.264, H.265).
    pub unknown_ssrc_sdp: Option<String>,
    /// After a receive that found datagrams emptied the single port's socket, or a round of the
    /// shard's per-stream sockets emptied them (`shard::stream_sockets`), wait this long before
    /// looking again instead of waking for the next datagram (fewer wake-ups under load; a
    /// picture waits at most this much longer). 0: wake for every datagram. The default, 1 ms,
    /// took a third to two fifths off the engine's CPU at 500 and 1000 streams on the single
    /// port (58 and 130-146 datagrams a wake instead of 17-34; docs/PERFORMANCE.md).
    pub gather_us: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    pub gop_cache_bytes_max: usize,
    pub subscriber_queue_tags_max: usize,
    pub subscriber_skips_max: u32,
    /// FLV viewers of one stream from one address; more are refused (503): a client opening
    /// thousands of slow viewers must not hold thousands of sockets and buffers.
    pub viewers_per_address_max: usize,
    /// Make each stream's cover from its first keyframe (JPEG decode on low-priority threads).
    pub cover_on_first_keyframe: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticStream {
    pub ssrc: u32,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub sdp: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: "34020000002000000001".into(),
            shards: 0,
            io_memory_kib: 1024,
            ring_depth: 256,
            data_dir: "data".into(),
            http: HttpConfig::default(),
            sip: SipConfig::default(),
            rtp: RtpConfig::default(),
            media: MediaConfig::default(),
            hls: HlsConfig::default(),
            record: RecordConfig::default(),
            streams: Vec::new(),
            webhooks: Vec::new(),
            node: NodeConfig::default(),
            registry: RegistryConfig::default(),
            cascade: CascadeConfig::default(),
            webrtc: WebRtcConfig::default(),
            rtmp: RtmpConfig::default(),
            onvif: OnvifConfig::default(),
            pull: PullConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "0.0.0.0:8080".parse().expect("literal"),
            api_keys: Vec::new(),
            play_secrets: Vec::new(),
            play_token_ttl_s: 3600,
            cors_origins: Vec::new(),
            tls: None,
            tokens: Vec::new(),
        }
    }
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: "0.0.0.0:5060".into(),
            domain: "3402000000".into(),
            password: "12345678".into(),
            device_passwords: Default::default(),
            digest_qop: false,
            host_ip: "127.0.0.1".into(),
            keepalive_interval_s: 60,
            invite_timeout_s: 10,
            no_viewer_stop_s: 30,
            catalog_refresh_s: 3600,
            time_zone: String::new(),
            device_time_zones: Default::default(),
            record_query_timeout_s: 10,
            subscribe: Vec::new(),
            device_subscribe: Default::default(),
            subscribe_expires_s: 3600,
            ssrc_check: SsrcCheck::Learn,
            device_ssrc_check: Default::default(),
            register_rate: RegisterRate::default(),
            register_rate_networks: Vec::new(),
        }
    }
}

impl Default for RtpConfig {
    fn default() -> Self {
        RtpConfig {
            listen_ip: "0.0.0.0".parse().expect("literal"),
            port_min: 30000,
            port_max: 39999,
            idle_timeout_s: 30,
            port: 0,
            accept_unknown_ssrc: false,
            unknown_ssrc_sdp: None,
            gather_us: RTP_GATHER_US_DEFAULT,
        }
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            gop_cache_bytes_max: 8 << 20,
            subscriber_queue_tags_max: 512,
            subscriber_skips_max: 3,
            viewers_per_address_max: 64,
            cover_on_first_keyframe: true,
        }
    }
}

#[derive(Debug)]
pub enum ConfigError {
    Read(std::io::Error),
    Parse(serde_yaml_ng::Error),
    Invalid(String),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Read(e) => write!(f, "cannot read config: {e}"),
            ConfigError::Parse(e) => write!(f, "bad config YAML: {e}"),
            ConfigError::Invalid(m) => write!(f, "invalid config: {m}"),
        }
    }
}
impl std::error::Error for ConfigError {}

impl Config {
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = serde_yaml_ng::from_str(text).map_err(ConfigError::Parse)?;
        config.validate()?;
        Ok(config)
    }

    pub fn load(path: Option<&std::path::Path>) -> Result<Config, ConfigError> {
        match path {
            Some(p) => Config::from_yaml(&std::fs::read_to_string(p).map_err(ConfigError::Read)?),
            None => Config::from_yaml(DEFAULT_CONFIG_YAML),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if self.rtp.port_min == 0 || self.rtp.port_min > self.rtp.port_max {
            return invalid("rtp.port_min must be > 0 and <= rtp.port_max");
        }
        if !(100..=10_000).contains(&self.onvif.probe_wait_ms) {
            return invalid("onvif.probe_wait_ms must be 100..=10000");
        }
        if !self.http.tokens.is_empty() {
            return invalid(
                "http.tokens (plain-text tokens) was replaced by http.api_keys: [{name, role: viewer|operator|admin, sha256}]; `gmv --hash-key KEY` prints the sha256",
            );
        }
        if crate::auth::uses_example_key(&self.http.api_keys) && !self.http.listen.ip().is_loopback() {
            return invalid(&format!(
                "http.api_keys holds the example key from the docs ({}) and http.listen {} is not loopback: anyone could use it; configure a key of your own",
                crate::auth::EXAMPLE_API_KEY,
                self.http.listen
            ));
        }
        if self.http.play_secrets.len() > crate::auth::PLAY_SECRETS_MAX
            || self.http.play_secrets.iter().any(|s| s.len() < crate::auth::PLAY_SECRET_BYTES_MIN)
        {
            return invalid(&format!(
                "http.play_secrets: at most {} (the signing one first), each at least {} bytes",
                crate::auth::PLAY_SECRETS_MAX,
                crate::auth::PLAY_SECRET_BYTES_MIN
            ));
        }
        if self.http.play_token_ttl_s == 0 || self.http.play_token_ttl_s > crate::auth::PLAY_TOKEN_TTL_S_MAX {
            return invalid(&format!("http.play_token_ttl_s must be 1..={}", crate::auth::PLAY_TOKEN_TTL_S_MAX));
        }
        if let Some(bad) =
            self.http.cors_origins.iter().find(|o| *o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/'))
        {
            return invalid(&format!("http.cors_origins: {bad:?} is not an origin (scheme://host[:port], no path, or \"*\")"));
        }
        if self.http.tls.as_ref().is_some_and(|t| t.listen == self.http.listen) {
            return invalid("http.tls.listen must differ from http.listen");
        }
        if let Some(k) = self.http.api_keys.iter().find(|k| k.sha256.len() != 64 || !k.sha256.bytes().all(|b| b.is_ascii_hexdigit())) {
            return invalid(&format!("http.api_keys {:?}: sha256 must be 64 hex digits (gmv --hash-key KEY prints it)", k.name));
        }
        if self.media.subscriber_queue_tags_max == 0 {
            return invalid("media.subscriber_queue_tags_max must be > 0");
        }
        if !(1..=crate::shard::fanout::SUBSCRIBERS_PER_STREAM_MAX).contains(&self.media.viewers_per_address_max) {
            return invalid(&format!("media.viewers_per_address_max must be 1..={}", crate::shard::fanout::SUBSCRIBERS_PER_STREAM_MAX));
        }
        if !self.sip.listen.is_empty() && self.sip.listen.parse::<SocketAddr>().is_err() {
            return invalid("sip.listen must be ip:port (or empty to disable SIP)");
        }
        if self.sip.host_ip.parse::<IpAddr>().is_err() {
            return invalid("sip.host_ip must be an IP address");
        }
        if self.sip.domain.is_empty() || !self.sip.domain.bytes().all(|b| b.is_ascii_digit()) {
            return invalid("sip.domain must be digits (e.g. 3402000000)");
        }
        if self.sip.keepalive_interval_s == 0 {
            return invalid("sip.keepalive_interval_s must be > 0");
        }
        if self.rtp.port != 0 && (self.rtp.port_min..=self.rtp.port_max).contains(&self.rtp.port) {
            return invalid("rtp.port must be outside rtp.port_min..=rtp.port_max");
        }
        if self.rtp.gather_us > RTP_GATHER_US_MAX {
            return invalid(&format!("rtp.gather_us must be at most {RTP_GATHER_US_MAX} (each picture may wait that long)"));
        }
        if self.rtp.accept_unknown_ssrc && self.rtp.port == 0 {
            return invalid("rtp.accept_unknown_ssrc needs rtp.port (the single port learns SSRCs; a stream's own port has one)");
        }
        if let Some(sdp) = &self.rtp.unknown_ssrc_sdp {
            match crate::proto::sdp::Sdp::parse(sdp.as_bytes()) {
                Ok(parsed) if !parsed.rtp_map().entries.is_empty() => {}
                Ok(_) => return invalid("rtp.unknown_ssrc_sdp names no payload type gmv can ingest (PS, H264, H265, PCMA, PCMU)"),
                Err(e) => return invalid(&format!("rtp.unknown_ssrc_sdp: {e}")),
            }
        }
        let kinds = self.sip.subscribe.iter().chain(self.sip.device_subscribe.values().flatten());
        if let Some(k) = kinds.into_iter().find(|k| crate::proto::sip::endpoint::SubKind::parse(k).is_none()) {
            return Err(ConfigError::Invalid(format!("sip subscription {k:?} is not catalog, alarm or mobile_position")));
        }
        self.cascade.validate().map_err(ConfigError::Invalid)?;
        if !self.cascade.upstreams.is_empty() && self.sip.listen.is_empty() {
            return invalid("cascade.upstreams needs sip.listen (the upstreams are reached from its socket)");
        }
        for w in &self.webhooks {
            if crate::outbound::parse_url(&w.url).is_none() {
                return Err(ConfigError::Invalid(format!("webhooks: {:?} must be http://host:port/path (HTTPS is not offered yet)", w.url)));
            }
            if w.secret.len() < 16 {
                return invalid("webhooks: secret must be at least 16 characters");
            }
        }
        if let Some((name, url)) = self.node.hooks.iter().find(|(n, u)| !HOOK_NAMES.contains(&n.as_str()) || crate::outbound::parse_url(u).is_none())
        {
            return invalid(&format!("node.hooks: {name}: {url:?} (names: {}; URLs http://host:port/path)", HOOK_NAMES.join(", ")));
        }
        if self.node.hook_timeout_s == 0 || self.node.keepalive_interval_s == 0 || self.node.rtp_server_timeout_s == 0 {
            return invalid("node.hook_timeout_s, node.keepalive_interval_s and node.rtp_server_timeout_s must be > 0");
        }
        if let Some(n) = self
            .node
            .media_nodes
            .iter()
            .find(|n| crate::outbound::parse_url(&n.api).is_none() || n.media_ip.parse::<IpAddr>().is_err() || n.id.is_empty())
        {
            return invalid(&format!("node.media_nodes {:?}: id, api http://host:port and media_ip (an address) are needed", n.id));
        }
        if self.node.role == Role::Control
            && ((self.node.media_nodes.is_empty() && self.node.announce_secret.is_empty()) || self.sip.listen.is_empty())
        {
            return invalid("node.role control needs node.media_nodes (or node.announce_secret) and sip.listen");
        }
        if self.node.download_allow_ips.len() > DOWNLOAD_ALLOW_IPS_MAX {
            return invalid(&format!("node.download_allow_ips takes at most {DOWNLOAD_ALLOW_IPS_MAX} addresses or ranges"));
        }
        if let Some((ip, e)) = self.node.download_allow_ips.iter().find_map(|a| crate::proto::ipnet::IpNet::parse(a).err().map(|e| (a, e))) {
            return invalid(&format!("node.download_allow_ips {ip:?}: {e}"));
        }
        if !self.node.announce_secret.is_empty() && self.node.announce_secret.len() < 16 {
            return invalid("node.announce_secret must be at least 16 characters");
        }
        if self.node.hook_retry > crate::outbound::RETRIES_MAX {
            return invalid(&format!("node.hook_retry must be <= {}", crate::outbound::RETRIES_MAX));
        }
        let rates = std::iter::once((self.sip.register_rate.burst, self.sip.register_rate.per_s))
            .chain(self.sip.register_rate_networks.iter().map(|n| (n.burst, n.per_s)));
        if rates.into_iter().any(|(burst, per_s)| burst == 0 || per_s == 0 || burst > REGISTER_BURST_MAX || per_s > REGISTER_BURST_MAX) {
            return invalid(&format!("sip.register_rate and register_rate_networks: burst and per_s must be 1..={REGISTER_BURST_MAX}"));
        }
        if self.sip.register_rate_networks.len() > crate::proto::sip::endpoint::RATE_NETWORKS_MAX {
            return invalid(&format!("sip.register_rate_networks: at most {}", crate::proto::sip::endpoint::RATE_NETWORKS_MAX));
        }
        if let Some(n) = self.sip.register_rate_networks.iter().find(|n| crate::proto::ipnet::IpNet::parse(&n.source).is_err()) {
            return invalid(&format!("sip.register_rate_networks: source {:?} is not an address or range (10.20.0.0/16)", n.source));
        }
        let zones = std::iter::once(&self.sip.time_zone).filter(|z| !z.is_empty()).chain(self.sip.device_time_zones.values());
        if let Some(z) = zones.into_iter().find(|z| crate::proto::sip::gbtime::parse_offset(z).is_none()) {
            return Err(ConfigError::Invalid(format!("sip time zone {z:?} must be an offset like +08:00")));
        }
        if self.webrtc.enabled && self.webrtc.port != 0 && usize::from(self.webrtc.port) + self.shard_count() > 65536 {
            return invalid("webrtc.port + the media shards must stay under 65536");
        }
        if self.webrtc.candidate_ip.is_some_and(|ip| ip.is_unspecified() || ip.is_multicast()) {
            return invalid("webrtc.candidate_ip must be an address browsers can reach (not 0.0.0.0 or multicast)");
        }
        if self.hls.segment_duration_s == 0 || self.hls.segments_max == 0 {
            return invalid("hls.segment_duration_s and hls.segments_max must be > 0");
        }
        if self.record.rotate_s == 0 {
            return invalid("record.rotate_s must be > 0");
        }
        let retention = &self.record.retention;
        if retention.interval_s == 0 {
            return invalid("record.retention.interval_s must be > 0");
        }
        if retention.max_used_bytes > 0 && retention.max_used_bytes < RETENTION_USED_BYTES_MIN {
            return invalid(&format!(
                "record.retention.max_used_bytes is {}: below {RETENTION_USED_BYTES_MIN} it would delete every recording but the one being written (0 turns the rule off)",
                retention.max_used_bytes
            ));
        }
        if let Some((key, value, max)) = self.over_their_bounds().into_iter().find(|(_, v, max)| v > max) {
            return invalid(&format!("{key} is {value}; at most {max}"));
        }
        if self.ring_depth < 8 {
            return invalid("ring_depth must be >= 8");
        }
        if !(LEASE_S_MIN..=LEASE_S_MAX).contains(&self.registry.lease_s) {
            return invalid(&format!("registry.lease_s must be {LEASE_S_MIN}..={LEASE_S_MAX}"));
        }
        if !self.registry.postgres.is_empty() {
            if self.sip.listen.is_empty() {
                return invalid("registry.postgres is for controls: it needs sip.listen");
            }
            if let Err(e) = self.registry.postgres.parse::<postgres::Config>() {
                return invalid(&format!("registry.postgres: {e}"));
            }
        }
        Ok(())
    }

    /// Media shard count: configured, or one per available core.
    pub fn shard_count(&self) -> usize {
        if self.shards > 0 { self.shards } else { std::thread::available_parallelism().map_or(1, |n| n.get()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_yaml_matches_defaults() {
        assert_eq!(Config::from_yaml(DEFAULT_CONFIG_YAML).unwrap(), Config::default());
    }

    #[test]
    fn an_upstream_is_checked_whole_and_shares_nothing_unless_told() {
        let up = |extra: &str| {
            format!("cascade:\n  upstreams:\n  - id: city\n    server_id: \"44010000002000000001\"\n    domain: \"4401000000\"\n    address: \"127.0.0.1:5061\"\n    password: pw\n    local_id: \"34020000002000000001\"\n{extra}")
        };
        let c = Config::from_yaml(&up("")).unwrap();
        let e = &c.cascade.endpoint_upstreams()[0];
        assert_eq!(e.shared, crate::proto::sip::endpoint::Shared::Channels(Default::default()), "nothing unless told");
        assert_eq!((e.keepalive.as_secs(), e.keepalive_misses_max, e.register_expires_s, e.charset), (60, 3, 3600, crate::proto::sip::endpoint::Charset::Gb2312));
        let all = Config::from_yaml(&up("    shared: all\n    charset: UTF-8\n")).unwrap();
        assert_eq!(all.cascade.endpoint_upstreams()[0].shared, crate::proto::sip::endpoint::Shared::All);
        let mapped = Config::from_yaml(&up("    channel_id_map: {\"34020000001310000001\": \"44010200001320000009\"}\n")).unwrap();
        assert_eq!(mapped.cascade.endpoint_upstreams()[0].channel_ids.up("34020000001310000001"), "44010200001320000009");
        for (bad, says) in [
            ("    transport: sctp\n", "udp or tcp"),
            ("    shared: some\n", "\"all\" or a list"),
            ("    shared: [\"a\\r\\nb\"]\n", "not an id"),
            ("    charset: latin1\n", "GB2312 or UTF-8"),
            ("    channel_id_map: {\"34020000001310000001\": \"a b\"}\n", "not a pair of ids"),
            ("    channel_id_map: {\"34020000001310000001\": \"x\", \"34020000001310000002\": \"x\"}\n", "to two channels"),
            ("    groups: [{id: \"44010200001320000001\", name: camera}]\n", "type 215"),
            ("    groups: [{id: \"44010200002160000001\", name: org}]\n", "needs a parent"),
            ("    groups: [{id: \"44010200002160000001\", name: a, parent: \"44010200002160000002\"}, {id: \"44010200002160000002\", name: b, parent: \"44010200002160000001\"}]\n", "lead up to a business group"),
            ("    channel_groups: {\"34020000001310000001\": \"44010200002150000009\"}\n", "not a listed group"),
            ("    keepalive_s: 0\n", "keepalive_s"),
        ] {
            let e = Config::from_yaml(&up(bad)).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let e = Config::from_yaml(&up("").replace("127.0.0.1:5061", "nowhere")).unwrap_err().to_string();
        assert!(e.contains("host:port"), "{e}");
        let twice = up("") + &up("").replace("cascade:\n  upstreams:\n", "");
        assert!(Config::from_yaml(&twice).unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn a_shared_registry_needs_a_control_a_sane_lease_and_a_readable_connection_string() {
        let ok = Config::from_yaml("registry:\n  postgres: \"host=10.0.0.5 user=gmv password=x dbname=gmv\"\n  lease_s: 5\n").unwrap();
        assert_eq!((ok.registry.lease_s, ok.registry.instance.as_str()), (5, ""));
        assert!(Config::from_yaml("registry:\n  postgres: \"postgres://gmv:x@db/gmv\"\n").is_ok(), "the URL form too");
        let refused = |yaml: &str| Config::from_yaml(yaml).unwrap_err().to_string();
        assert!(refused("registry:\n  lease_s: 1\n").contains("registry.lease_s must be 2..=120"));
        assert!(refused("sip:\n  listen: \"\"\nregistry:\n  postgres: \"host=db\"\n").contains("needs sip.listen"));
        assert!(refused("registry:\n  postgres: \"host=db nonsense\"\n").contains("registry.postgres"));
    }

    #[test]
    fn retention_rules_that_would_delete_everything_are_refused() {
        let ok = Config::from_yaml("record:\n  retention:\n    max_age_days: 30\n    max_used_bytes: 1073741824\n").unwrap();
        assert!(ok.record.retention.any() && !Config::default().record.retention.any());
        let refused = |yaml: &str| Config::from_yaml(yaml).unwrap_err().to_string();
        assert!(refused("record:\n  retention:\n    max_used_bytes: 4096\n").contains("would delete every recording"));
        assert!(refused("record:\n  retention:\n    interval_s: 0\n").contains("interval_s must be > 0"));
        assert!(refused("record:\n  retention:\n    max_age_days: 100000\n").contains("max_age_days"));
        assert!(refused("record:\n  retention:\n    keep: 3\n").contains("keep"), "unknown keys");
    }

    #[test]
    fn partial_yaml_fills_defaults_and_rejects_unknown_keys() {
        let c = Config::from_yaml("http:\n  listen: 127.0.0.1:9999\nstreams:\n  - ssrc: 7\n    port: 31000\n").unwrap();
        assert_eq!(c.http.listen.port(), 9999);
        assert!(c.http.api_keys.is_empty());
        assert_eq!(c.streams[0], StaticStream { ssrc: 7, port: Some(31000), sdp: None });
        assert!(matches!(Config::from_yaml("htp: {}"), Err(ConfigError::Parse(_))));
        assert!(matches!(Config::from_yaml("rtp: {port_min: 5, port_max: 4}"), Err(ConfigError::Invalid(_))));
    }

    #[test]
    fn unknown_ssrcs_need_the_single_port_and_an_sdp_that_names_something() {
        let invalid = |yaml: &str| matches!(Config::from_yaml(yaml), Err(ConfigError::Invalid(_)));
        assert!(invalid("rtp: {accept_unknown_ssrc: true}"), "no single port to learn SSRCs on");
        assert!(invalid("rtp: {idle_timeout_s: 3000000}"), "a timer without end");
        assert!(invalid("rtp: {gather_us: 2001}"), "pictures held past the bound");
        assert_eq!(Config::from_yaml("rtp: {gather_us: 2000}").ok().map(|c| c.rtp.gather_us), Some(2000), "the bound itself");
        assert!(invalid("media: {subscriber_queue_tags_max: 100000000}"), "a queue without end");
        assert!(invalid("sip: {register_rate: {burst: 0, per_s: 1}}"));
        assert!(invalid("sip: {register_rate_networks: [{source: \"10.0.0.0/33\", burst: 1, per_s: 1}]}"));
        assert!(invalid("media: {viewers_per_address_max: 0}"));
        assert!(invalid("rtp: {port: 30500}"), "inside the stream port range");
        assert!(invalid(
            "rtp: {port: 18568, accept_unknown_ssrc: true, unknown_ssrc_sdp: \"v=0\\r\\nm=video 0 RTP/AVP 96\\r\\na=rtpmap:96 VP8/90000\\r\\n\"}"
        ));
        let c = Config::from_yaml(
            "rtp: {port: 18568, accept_unknown_ssrc: true, unknown_ssrc_sdp: \"v=0\\r\\nm=video 0 RTP/AVP 96\\r\\na=rtpmap:96 H264/90000\\r\\n\"}",
        )
        .unwrap();
        assert!(c.rtp.accept_unknown_ssrc && c.rtp.port == 18568);
    }

    #[test]
    fn the_example_key_is_refused_off_loopback_and_plain_tokens_are_gone() {
        let example = crate::auth::key_hash(crate::auth::EXAMPLE_API_KEY);
        let keys = format!("  api_keys: [{{name: dev, role: admin, sha256: {example}}}]\n");
        assert!(Config::from_yaml(&format!("http:\n  listen: 127.0.0.1:8080\n{keys}")).is_ok());
        let e = Config::from_yaml(&format!("http:\n  listen: 0.0.0.0:8080\n{keys}")).unwrap_err();
        assert!(e.to_string().contains("example key"), "{e}");
        let e = Config::from_yaml("http:\n  tokens: [abc]\n").unwrap_err();
        assert!(e.to_string().contains("api_keys"), "{e}");
        assert!(Config::from_yaml("http:\n  api_keys: [{name: x, role: boss, sha256: aa}]\n").is_err());
        assert!(Config::from_yaml("http:\n  play_secrets: [short]\n").is_err());
        assert!(Config::from_yaml("http:\n  cors_origins: [\"example.com\"]\n").is_err());
        assert!(Config::from_yaml("http:\n  cors_origins: [\"http://127.0.0.1:9000\", \"*\"]\n").is_ok());
    }
}
