//! HTTP request heads (httparse with caller-side limits), routing and the credential checks
//! that run on them before anything is authorised.
#![no_main]
use gmv::auth::{Scope, Secrets};
use gmv::http::request::parse_head;
use gmv::http::routes::{api_caller, header_credential, play_allowed, route};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((head, len))) = parse_head(data) {
        assert!(len <= data.len());
        // A console user exists, so a session cookie in the head is parsed and checked.
        let user = gmv::users::User { name: "zhang".into(), role: gmv::auth::Role::Admin, hash: "$argon2id$x".into(), created_unix_s: 0 };
        let secrets = Secrets::new(&[], vec![b"fuzzing-play-secret".to_vec()], 60).expect("valid").with_users(&[user]);
        let scope = Scope::Stream("0100000001".into());
        let client = std::net::IpAddr::from([127, 0, 0, 1]);
        assert!(api_caller(&secrets, &head).is_err(), "no key is configured, no session signed");
        assert!(play_allowed(&secrets, &head, None, &scope, 0, client).is_err(), "nothing here is signed");
        let _ = (route(&head, &gmv::config::Config::default()), header_credential(&head), head.wants_keep_alive());
        let _ = gmv::http::routes::session_cookie(&head);
    }
});
