//! Play-token and session-cookie verification on hostile tokens: never a panic, never
//! accepted unless signed.
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
    // Sessions of a console user: the fuzzer cannot forge one, nor a CSRF token.
    let user = gmv::users::User { name: "zhang".into(), role: gmv::auth::Role::Admin, hash: "$argon2id$x".into(), created_unix_s: 0 };
    let secrets = secrets.with_users(&[user]);
    assert!(secrets.session(&token, 0).is_none(), "a forged session: {token:?}");
    let real = secrets.issue_session("zhang", 100).expect("a user");
    assert!(!secrets.csrf_ok(&real, &token) || token == secrets.csrf(&real));
});
