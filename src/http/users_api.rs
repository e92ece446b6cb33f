//! Console users over HTTP: signing in and out (`/api/session`, a session cookie that is
//! HTTP-only and SameSite=Strict, plus a CSRF token for changing requests), a user's own
//! password, and an admin's `/api/users`. Served on the control executor; the users file is
//! read and written on a blocking thread, one change at a time, and every executor is given
//! the new users (`Shard::publish_reload`) before the change is answered.

use super::Front;
use super::conn::HttpConn;
use super::request::RequestHead;
use super::response::{respond_error, respond_with};
use crate::auth::Role;
use crate::users::{self, SESSION_COOKIE, SESSION_TTL_S, User};
use serde_json::{Value, json};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A sign-in body is at most this long (a name and a password).
pub const SIGN_IN_BODY_BYTES_MAX: usize = 1024;
/// Failed sign-ins from one address within `SIGN_IN_WINDOW` before it must wait.
pub const SIGN_IN_FAILURES_MAX: u32 = 5;
pub const SIGN_IN_WINDOW: Duration = Duration::from_secs(300);
/// Addresses whose failures are remembered; past it the oldest window is forgotten.
pub const SIGN_IN_ADDRESSES_TRACKED_MAX: usize = 4_096;

/// The control executor's users state: one change at a time, failures per address, counters.
pub struct UserAdmin {
    change: glommio::sync::Semaphore,
    failures: RefCell<HashMap<IpAddr, (u32, Instant)>>,
    pub sign_ins: Cell<u64>,
    pub sign_in_failures: Cell<u64>,
    pub sign_ins_throttled: Cell<u64>,
}

impl Default for UserAdmin {
    fn default() -> Self {
        UserAdmin {
            change: glommio::sync::Semaphore::new(1),
            failures: RefCell::new(HashMap::new()),
            sign_ins: Cell::new(0),
            sign_in_failures: Cell::new(0),
            sign_ins_throttled: Cell::new(0),
        }
    }
}

impl UserAdmin {
    /// Seconds the address must still wait, when it failed too often lately.
    fn throttled(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        let failures = self.failures.borrow();
        let (count, since) = failures.get(&ip)?;
        let left = SIGN_IN_WINDOW.saturating_sub(now.duration_since(*since));
        (*count >= SIGN_IN_FAILURES_MAX && !left.is_zero()).then(|| left.as_secs().max(1))
    }

    fn failed(&self, ip: IpAddr, now: Instant) {
        let mut failures = self.failures.borrow_mut();
        if failures.len() >= SIGN_IN_ADDRESSES_TRACKED_MAX && !failures.contains_key(&ip) {
            failures.retain(|_, (_, since)| now.duration_since(*since) < SIGN_IN_WINDOW);
            if failures.len() >= SIGN_IN_ADDRESSES_TRACKED_MAX {
                let oldest = failures.iter().min_by_key(|(_, (_, since))| *since).map(|(ip, _)| *ip);
                oldest.map(|o| failures.remove(&o));
            }
        }
        let entry = failures.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1) >= SIGN_IN_WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
    }
}

fn cookie(conn: &HttpConn, value: &str, max_age_s: u64) -> String {
    let secure = if conn.is_tls() { "; Secure" } else { "" };
    format!("Set-Cookie: {SESSION_COOKIE}={value}; Path=/; Max-Age={max_age_s}; HttpOnly; SameSite=Strict{secure}\r\n")
}

/// `POST /api/session {"name", "password"}`: a session cookie and the CSRF token, or 401 (the
/// same answer and about the same time whether the name exists), or 429 after too many
/// failures from the address.
pub async fn sign_in(front: &Front, conn: &mut HttpConn, head: &RequestHead) {
    let admin = &front.users;
    let ip = conn.peer_ip();
    if head.content_length > SIGN_IN_BODY_BYTES_MAX {
        conn.keep_alive = false;
        return respond_error(conn, 413, "body_too_large", "a sign-in is a name and a password").await;
    }
    if let Some(wait_s) = admin.throttled(ip, Instant::now()) {
        admin.sign_ins_throttled.set(admin.sign_ins_throttled.get() + 1);
        conn.keep_alive = false; // the body is not read
        tracing::warn!(%ip, wait_s, "sign-in refused: too many failures from this address");
        return respond_error(conn, 429, "too_many_failures", &format!("too many failed sign-ins from this address: try again in {wait_s} s")).await;
    }
    let body = match glommio::timer::timeout(super::api::BODY_READ_TIMEOUT, async { Ok(super::api::read_body(conn, head).await) }).await {
        Ok(Some(b)) => b,
        _ => {
            conn.keep_alive = false;
            return respond_error(conn, 400, "bad_request", "request body incomplete").await;
        }
    };
    let form: Value = serde_json::from_slice(&body).unwrap_or_default();
    let (Some(name), Some(password)) = (form["name"].as_str(), form["password"].as_str()) else {
        return respond_error(conn, 400, "bad_request", "give {\"name\", \"password\"}").await;
    };
    let (name, password) = (name.to_string(), password.to_string());
    let data_dir = front.shard.config.data_dir.clone();
    let who = name.clone();
    let matched = glommio::executor()
        .spawn_blocking(move || {
            let found = users::load(&data_dir).ok().and_then(|all| all.into_iter().find(|u| u.name == who));
            match found {
                Some(u) => users::verify_password(&u.hash, &password),
                None => {
                    users::verify_nobody(&password);
                    false
                }
            }
        })
        .await;
    let secrets = front.shard.secrets();
    let expires = crate::shard::unix_s() + SESSION_TTL_S;
    let session = if matched { secrets.issue_session(&name, expires) } else { None };
    let Some(token) = session else {
        admin.failed(ip, Instant::now());
        admin.sign_in_failures.set(admin.sign_in_failures.get() + 1);
        tracing::info!(%ip, user = %name, "sign-in failed");
        return respond_error(conn, 401, "bad_credentials", "wrong user name or password").await;
    };
    admin.sign_ins.set(admin.sign_ins.get() + 1);
    let role = secrets.session(&token, crate::shard::unix_s()).map_or(Role::Viewer, |(_, r)| r);
    tracing::info!(%ip, user = %name, ?role, "signed in");
    let answer = json!({ "name": name, "role": role, "csrf": secrets.csrf(&token), "expires_at": expires });
    respond_with(conn, 200, &cookie(conn, &token, SESSION_TTL_S), "application/json", answer.to_string().as_bytes()).await;
}

/// `DELETE /api/session`: the browser forgets the cookie (a copy of it stays valid until it
/// expires: sessions are not kept by the server; a password change ends them all).
pub async fn sign_out(conn: &mut HttpConn) {
    let extra = cookie(conn, "", 0);
    respond_with(conn, 200, &extra, "application/json", b"{}").await;
}

/// Who is calling: `GET /api/session`, with the CSRF token when it is a session.
pub fn whoami(front: &Front, head: &RequestHead, caller: &str, role: Role) -> (u16, Value) {
    let session = super::routes::user_session(head);
    let csrf = session.map(|s| front.shard.secrets().csrf(s));
    (200, json!({ "name": caller, "role": role, "kind": if session.is_some() { "user" } else { "api_key" }, "csrf": csrf }))
}

/// The rest of `/api/session` and `/api/users` (the caller authorised for the role
/// `routes::required_role` asks).
pub async fn serve(front: &Front, head: &RequestHead, segments: &[&str], caller: &str, body: &[u8]) -> (u16, Value) {
    let bad = |m: String| (400, json!({ "code": "bad_request", "message": m }));
    let req: Value = serde_json::from_slice(body).unwrap_or_default();
    let text = |k: &str| req.get(k).and_then(Value::as_str).map(str::to_string);
    let role_of = |v: &Value| serde_json::from_value::<Role>(v.clone()).ok();
    let change = match (head.method.as_str(), segments) {
        ("GET", ["api", "users"]) => {
            let data_dir = front.shard.config.data_dir.clone();
            return match glommio::executor().spawn_blocking(move || users::load(&data_dir)).await {
                Ok(all) => {
                    let list: Vec<Value> = all.iter().map(|u| json!({ "name": u.name, "role": u.role, "created_at": u.created_unix_s })).collect();
                    let a = &front.users;
                    let counters = json!({ "sign_ins": a.sign_ins.get(), "sign_in_failures": a.sign_in_failures.get(), "sign_ins_throttled": a.sign_ins_throttled.get() });
                    (200, json!({ "users": list, "counters": counters }))
                }
                Err(e) => (500, json!({ "code": "users_file", "message": e })),
            };
        }
        ("PUT", ["api", "session", "password"]) => {
            if super::routes::user_session(head).is_none() {
                return bad("an API key has no password: sign in as a user to change yours".into());
            }
            let (Some(old), Some(new)) = (text("old"), text("new")) else { return bad("give {\"old\", \"new\"}".into()) };
            Change::OwnPassword { name: caller.to_string(), old, new }
        }
        ("POST", ["api", "users"]) => {
            let (Some(name), Some(password), Some(role)) = (text("name"), text("password"), role_of(&req["role"])) else {
                return bad("give {\"name\", \"password\", \"role\": viewer|operator|admin}".into());
            };
            Change::Add { name, password, role }
        }
        ("PUT", ["api", "users", name]) => {
            let role = match req.get("role") {
                None => None,
                Some(v) => match role_of(v) {
                    Some(r) => Some(r),
                    None => return bad("role is viewer, operator or admin".into()),
                },
            };
            Change::Edit { name: name.to_string(), role, password: text("password") }
        }
        ("DELETE", ["api", "users", name]) => Change::Remove { name: name.to_string() },
        _ => return (404, json!({ "code": "not_found", "message": "no such API route" })),
    };
    apply(front, change, caller).await
}

/// An API answer: status and JSON.
type Answer = (u16, Value);

enum Change {
    Add { name: String, password: String, role: Role },
    Edit { name: String, role: Option<Role>, password: Option<String> },
    Remove { name: String },
    OwnPassword { name: String, old: String, new: String },
}

/// Reads the users, changes them, writes them and gives every executor the new list.
async fn apply(front: &Front, change: Change, caller: &str) -> (u16, Value) {
    let problem = match &change {
        Change::Add { name, .. } if !users::valid_name(name) => {
            Some(format!("a user name has 1 to {} letters, digits, '_', '-' or '.'", users::USER_NAME_CHARS_MAX))
        }
        Change::Add { password, .. } | Change::OwnPassword { new: password, .. } => users::password_problem(password),
        Change::Edit { password: Some(p), .. } => users::password_problem(p),
        _ => None,
    };
    if let Some(m) = problem {
        return (400, json!({ "code": "bad_request", "message": m }));
    }
    let Ok(_permit) = front.users.change.acquire_permit(1).await else {
        return (503, json!({ "code": "busy", "message": "users cannot be changed now" }));
    };
    let data_dir = front.shard.config.data_dir.clone();
    let now = crate::shard::unix_s();
    let done = glommio::executor()
        .spawn_blocking(move || -> Result<(Vec<User>, Answer), Answer> {
            let fail = |status: u16, code: &str, m: String| (status, json!({ "code": code, "message": m }));
            let mut all = users::load(&data_dir).map_err(|e| fail(500, "users_file", e))?;
            let hash = |p: &str| users::hash_password(p).map_err(|e| fail(500, "hash", e));
            let answer = match change {
                Change::Add { name, password, role } => {
                    if all.iter().any(|u| u.name == name) {
                        return Err(fail(409, "exists", format!("a user named {name} exists")));
                    }
                    if all.len() >= users::USERS_MAX {
                        return Err(fail(409, "too_many", format!("at most {} users", users::USERS_MAX)));
                    }
                    all.push(User { name: name.clone(), role, hash: hash(&password)?, created_unix_s: now });
                    (201, json!({ "name": name, "role": role, "created_at": now }))
                }
                Change::Edit { name, role, password } => {
                    let Some(u) = all.iter_mut().find(|u| u.name == name) else { return Err(fail(404, "not_found", format!("no user named {name}"))) };
                    if let Some(r) = role {
                        u.role = r;
                    }
                    if let Some(p) = password {
                        u.hash = hash(&p)?;
                    }
                    (200, json!({ "name": u.name, "role": u.role, "created_at": u.created_unix_s }))
                }
                Change::Remove { name } => {
                    let before = all.len();
                    all.retain(|u| u.name != name);
                    if all.len() == before {
                        return Err(fail(404, "not_found", format!("no user named {name}")));
                    }
                    (200, json!({ "removed": name }))
                }
                Change::OwnPassword { name, old, new } => {
                    let Some(u) = all.iter_mut().find(|u| u.name == name) else { return Err(fail(404, "not_found", format!("no user named {name}"))) };
                    if !users::verify_password(&u.hash, &old) {
                        return Err(fail(403, "bad_credentials", "the present password is wrong".into()));
                    }
                    u.hash = hash(&new)?;
                    (200, json!({ "name": name, "message": "password changed: sign in again" }))
                }
            };
            users::save(&data_dir, &all).map_err(|e| fail(500, "users_file", e.to_string()))?;
            Ok((all, answer))
        })
        .await;
    match done {
        Ok((all, answer)) => {
            let shard = &front.shard;
            let secrets = Arc::new(shard.secrets().with_users(&all));
            let tls = shard.tls.borrow().clone();
            shard.publish_reload(secrets, tls).await;
            tracing::info!(by = caller, answer = %answer.1, "console users changed");
            answer
        }
        Err(refused) => refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_waits_after_too_many_failures_and_memory_stays_bounded() {
        let a = UserAdmin::default();
        let (ip, t0): (IpAddr, Instant) = ("192.0.2.1".parse().unwrap(), Instant::now());
        for _ in 0..SIGN_IN_FAILURES_MAX - 1 {
            a.failed(ip, t0);
        }
        assert_eq!(a.throttled(ip, t0), None);
        a.failed(ip, t0);
        assert_eq!(a.throttled(ip, t0 + Duration::from_secs(100)), Some(200));
        assert_eq!(a.throttled(ip, t0 + SIGN_IN_WINDOW), None, "the window passed");
        for i in 0..SIGN_IN_ADDRESSES_TRACKED_MAX as u32 + 10 {
            a.failed(IpAddr::from(i.to_be_bytes()), t0 + Duration::from_millis(u64::from(i)));
        }
        assert!(a.failures.borrow().len() <= SIGN_IN_ADDRESSES_TRACKED_MAX);
    }
}
