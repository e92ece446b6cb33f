//! Console users end to end: an admin key makes users, each signs in with a name and password
//! and gets an HTTP-only, SameSite=Strict session cookie and a CSRF token; the cookie opens the
//! API at the user's role, a change without the CSRF token is refused, a changed password or a
//! removed user ends the session, the users file keeps only Argon2id hashes and outlives a
//! restart, and an address that fails too often must wait.

mod common;

use common::*;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One request: (status, Set-Cookie value if any, JSON body).
fn call(engine: &Engine, method: &str, path: &str, headers: &[(&str, &str)], body: &Value) -> (u16, Option<String>, Value) {
    let body = if body.is_null() { String::new() } else { body.to_string() };
    let mut s = TcpStream::connect(engine.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n", engine.http, body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    s.write_all(format!("{req}\r\n{body}").as_bytes()).unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let cookie = head.lines().find_map(|l| l.strip_prefix("Set-Cookie: ")).map(str::to_string);
    (status_of(head), cookie, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn admin(engine: &Engine, method: &str, path: &str, body: Value) -> (u16, Value) {
    let (status, _, v) = call(engine, method, path, &[("gmv-token", TOKEN)], &body);
    (status, v)
}

/// Signs in: (cookie header value `gmv_session=...`, CSRF token).
fn sign_in(engine: &Engine, name: &str, password: &str) -> (String, String) {
    let (status, cookie, v) = call(engine, "POST", "/api/session", &[], &json!({ "name": name, "password": password }));
    assert_eq!(status, 200, "{v}");
    let cookie = cookie.expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    (cookie.split(';').next().unwrap().to_string(), v["csrf"].as_str().unwrap().to_string())
}

#[test]
fn users_sign_in_with_passwords_and_sessions_follow_their_changes() {
    let engine = Engine::start(2, "");
    // Only an admin makes users; the rules are said.
    assert_eq!(admin(&engine, "POST", "/api/users", json!({ "name": "zhang", "password": "short", "role": "operator" })).0, 400);
    assert_eq!(admin(&engine, "POST", "/api/users", json!({ "name": "a b", "password": "long enough", "role": "operator" })).0, 400);
    assert_eq!(admin(&engine, "POST", "/api/users", json!({ "name": "zhang", "password": "long enough", "role": "king" })).0, 400);
    let (status, v) = admin(&engine, "POST", "/api/users", json!({ "name": "zhang", "password": "zhang-pass-1", "role": "operator" }));
    assert_eq!(status, 201, "{v}");
    assert_eq!(admin(&engine, "POST", "/api/users", json!({ "name": "zhang", "password": "zhang-pass-1", "role": "viewer" })).0, 409);
    assert_eq!(admin(&engine, "POST", "/api/users", json!({ "name": "li", "password": "li-pass-12", "role": "viewer" })).0, 201);
    let (status, list) = admin(&engine, "GET", "/api/users", Value::Null);
    assert_eq!(status, 200);
    assert_eq!(list["users"].as_array().unwrap().len(), 2, "{list}");
    assert!(!list.to_string().contains("argon2"), "hashes never leave the engine: {list}");

    // Signing in: a wrong password and an unknown name get the same answer.
    let (s1, c1, v1) = call(&engine, "POST", "/api/session", &[], &json!({ "name": "zhang", "password": "wrong-pass" }));
    let (s2, _, v2) = call(&engine, "POST", "/api/session", &[], &json!({ "name": "nobody", "password": "wrong-pass" }));
    assert_eq!((s1, s2), (401, 401));
    assert!(c1.is_none() && v1 == v2, "{v1} {v2}");
    let (cookie, csrf) = sign_in(&engine, "zhang", "zhang-pass-1");
    let (status, _, me) = call(&engine, "GET", "/api/session", &[("cookie", &cookie)], &Value::Null);
    assert_eq!((status, me["name"].as_str(), me["role"].as_str(), me["kind"].as_str()), (200, Some("zhang"), Some("operator"), Some("user")));
    assert_eq!(me["csrf"].as_str(), Some(csrf.as_str()));

    // The cookie opens the API at the user's role; a change needs the CSRF token.
    assert_eq!(call(&engine, "GET", "/api/streams", &[("cookie", &cookie)], &Value::Null).0, 200);
    let (status, _, v) = call(&engine, "POST", "/api/streams", &[("cookie", &cookie)], &json!({}));
    assert_eq!((status, v["code"].as_str()), (403, Some("csrf")), "{v}");
    assert_eq!(call(&engine, "POST", "/api/streams", &[("cookie", &cookie), ("x-csrf-token", "forged")], &json!({})).0, 403);
    assert_eq!(call(&engine, "POST", "/api/streams", &[("cookie", &cookie), ("x-csrf-token", &csrf)], &json!({})).0, 201);
    assert_eq!(call(&engine, "GET", "/api/users", &[("cookie", &cookie)], &Value::Null).0, 403, "an operator is no admin");
    let (viewer, viewer_csrf) = sign_in(&engine, "li", "li-pass-12");
    assert_eq!(call(&engine, "POST", "/api/streams", &[("cookie", &viewer), ("x-csrf-token", &viewer_csrf)], &json!({})).0, 403);
    // A forged cookie (another name, the same signature) opens nothing.
    let forged = cookie.replacen("zhang", "li", 1);
    assert_eq!(call(&engine, "GET", "/api/streams", &[("cookie", &forged)], &Value::Null).0, 401);

    // The admin makes li an operator: li's session carries the new role at once.
    assert_eq!(admin(&engine, "PUT", "/api/users/li", json!({ "role": "operator" })).0, 200);
    assert_eq!(call(&engine, "POST", "/api/streams", &[("cookie", &viewer), ("x-csrf-token", &viewer_csrf)], &json!({})).0, 201);

    // A user changes the password: the old session ends, the new password signs in.
    let body = json!({ "old": "wrong-pass", "new": "zhang-pass-2" });
    assert_eq!(call(&engine, "PUT", "/api/session/password", &[("cookie", &cookie), ("x-csrf-token", &csrf)], &body).0, 403);
    let body = json!({ "old": "zhang-pass-1", "new": "zhang-pass-2" });
    assert_eq!(call(&engine, "PUT", "/api/session/password", &[("cookie", &cookie), ("x-csrf-token", &csrf)], &body).0, 200);
    assert_eq!(call(&engine, "GET", "/api/streams", &[("cookie", &cookie)], &Value::Null).0, 401);
    let (cookie, _) = sign_in(&engine, "zhang", "zhang-pass-2");
    // Removed by the admin: the session ends.
    assert_eq!(admin(&engine, "DELETE", "/api/users/zhang", Value::Null).0, 200);
    assert_eq!(call(&engine, "GET", "/api/streams", &[("cookie", &cookie)], &Value::Null).0, 401);
    assert_eq!(admin(&engine, "DELETE", "/api/users/zhang", Value::Null).0, 404);
    // Signing out: the browser is told to forget the cookie.
    let (status, gone, _) = call(&engine, "DELETE", "/api/session", &[("cookie", &viewer)], &Value::Null);
    assert!(status == 200 && gone.is_some_and(|c| c.starts_with("gmv_session=;") && c.contains("Max-Age=0")));

    // The file holds Argon2id hashes, readable by the engine's user only.
    let file = engine.data_dir.join("users.json");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("$argon2id$") && !text.contains("li-pass-12"), "{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

    // Too many failures from one address: it waits (even with the right password).
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(call(&engine, "POST", "/api/session", &[], &json!({ "name": "li", "password": "guess-1234" })).0);
    }
    // Two failures were counted above (the wrong password and the unknown name).
    assert_eq!(statuses, vec![401, 401, 401, 429, 429, 429], "{statuses:?}");
    let (status, _, v) = call(&engine, "POST", "/api/session", &[], &json!({ "name": "li", "password": "li-pass-12" }));
    assert_eq!(status, 429, "{v}");
    let (_, counters) = admin(&engine, "GET", "/api/users", Value::Null);
    assert_eq!(counters["counters"]["sign_in_failures"], 5, "{counters}");

    // Users outlive a restart (the wait does not: it is the running engine's).
    let data_dir = engine.data_dir.clone();
    drop(engine);
    let engine = Engine::start_with(2, "", "", Some(data_dir));
    let (cookie, _) = sign_in(&engine, "li", "li-pass-12");
    let (_, _, me) = call(&engine, "GET", "/api/session", &[("cookie", &cookie)], &Value::Null);
    assert_eq!(me["role"], "operator", "{me}");
}
