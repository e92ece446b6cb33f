//! gmv: a GB/T 28181 video-surveillance streaming engine.
//!
//! `proto` holds sans-IO parsers and muxers; `shard` the thread-per-core runtime that owns
//! sockets and streams; `http` the HTTP-FLV and REST front.

pub mod config;
pub mod control;
pub mod http;
pub mod proto;
pub mod shard;
pub mod sim;
pub mod snapshot;
