//! HTTP/1.1 on every media shard (SO_REUSEPORT): live HTTP-FLV and the REST API.

pub mod api;
pub mod api_gb;
pub mod api_history;
pub mod conn;
pub mod console;
pub mod dashboard;
pub mod events_sse;
pub mod flv_play;
pub mod hls_serve;
pub mod live_play;
pub mod metrics;
pub mod node_api;
pub mod play_tokens;
pub mod record_export;
pub mod record_play;
pub mod record_read;
pub mod records_serve;
/// The request head parser is sans-IO (`proto::http_head`): shards carry parsed heads in
/// their hand-off messages without knowing the HTTP layer.
pub mod request {
    pub use crate::proto::http_head::*;
}
pub mod response;
pub mod routes;
pub mod server;
pub mod tls;
pub mod users_api;
pub mod websocket;
pub mod whep;

use std::rc::Rc;

/// What an executor's HTTP side serves with: its shard and, on the control executor, the SIP
/// driver (when SIP is enabled) and the media node.
pub struct Front {
    pub shard: Rc<crate::shard::Shard>,
    pub control: Option<Rc<crate::control::Control>>,
    pub node: Option<Rc<crate::node::Node>>,
    /// On the control executor: the pull proxies.
    pub pull: Option<Rc<crate::pull::Proxies>>,
    /// Console users' sign-ins and changes (used on the control executor, which serves `/api`).
    pub users: users_api::UserAdmin,
    /// This process's CPU between two dashboard reads.
    pub cpu: crate::process::CpuSampler,
}
