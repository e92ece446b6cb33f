//! gmv: a GB/T 28181 video-surveillance streaming engine.

pub mod proto;
