//! Sans-IO protocol cores: bytes in, events out. No sockets, no clocks.
// Parsers of hostile bytes: safe Rust only, by the compiler's word.
#![forbid(unsafe_code)]

pub mod aac;
pub mod access_unit;
pub mod bits;
pub mod flv;
pub mod flv_demux;
pub mod flv_read;
pub mod frame;
pub mod frame_wire;
pub mod gop;
pub mod h26x;
pub mod http_chunked;
pub mod http_head;
pub mod hls;
pub mod live_mux;
pub mod m3u8;
pub mod ipnet;
pub mod mp4;
pub mod mp4_read;
pub mod onvif;
pub mod ps;
pub mod ps_mux;
pub mod retime;
pub mod rtp;
pub mod rtp_depack;
pub mod rtp_mux;
pub mod sdp;
pub mod sip;
pub mod sniff;
pub mod ssrc;
#[doc(hidden)]
pub mod testutil;
pub mod ts;
pub mod ts_demux;
pub mod wav;
