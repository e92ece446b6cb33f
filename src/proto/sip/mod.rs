//! SIP for GB28181, sans-IO: parsing (rsip, behind one wrapper that absorbs device quirks),
//! digest authentication, MANSCDP XML bodies and GB2312/GBK text.

pub mod build;
pub mod digest;
pub mod endpoint;
pub mod gbtime;
pub mod manscdp;
pub mod mansrtsp;
pub mod message;
pub mod ptz;
pub mod text;

pub use message::{SipError, SipMsg, StreamFramer, parse, parse_datagram};
