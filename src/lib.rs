//! gmv: a GB/T 28181 video-surveillance streaming engine.
//!
//! `proto` holds sans-IO parsers, muxers and the SIP endpoint; `shard` the thread-per-core
//! media executors that own sockets and streams; `http` the HTTP-FLV and REST front;
//! `control` the driver of the SIP endpoint; `runtime` wires them (dependencies flow
//! http, control -> shard -> proto).

pub mod auth;
pub mod config;
pub mod control;
pub mod demo;
pub mod http;
pub mod node;
pub mod outbound;
pub mod process;
pub mod proto;
pub mod pull;
pub mod recent_log;
pub mod runtime;
pub mod shard;
pub mod sim;
pub mod snapshot;
pub mod users;
