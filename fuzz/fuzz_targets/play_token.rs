//! Play-token verification on hostile tokens: never a panic, never accepted unless signed.
#![no_main]
use gmv::auth::{Scope, Secrets};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let secrets = Secrets::new(&[], vec![b"fuzzing-play-secret".to_vec()], 60).expect("valid");
    let token = String::from_utf8_lossy(data);
    let scope = Scope::Stream("0100000001".into());
    let client = std::net::IpAddr::from([127, 0, 0, 1]);
    if secrets.verify(&token, &scope, 0, client).is_ok() {
        // Only a token this secret signed verifies: the fuzzer cannot forge one.
        assert!(secrets.issue(&scope, u64::MAX, None).is_some());
    }
    let _ = secrets.api_key(&token);
});
