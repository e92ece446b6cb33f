//! HTTP request heads (httparse with caller-side limits) and routing.
#![no_main]
use gmv::http::request::parse_head;
use gmv::http::routes::{request_token, route};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((head, len))) = parse_head(data) {
        assert!(len <= data.len());
        let _ = (route(&head, &gmv::config::Config::default()), request_token(&head), head.query_param("token"));
    }
});
