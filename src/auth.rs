//! Who may do what. Two separate credentials:
//! - API keys, each with a role, for `/api` (and, sent in a header, for playing). Stored as
//!   SHA-256 digests (keys are random, so a plain digest is enough) and compared in constant time.
//! - Play tokens: an HMAC-SHA256 over what they open (a stream, a GB channel or a recording),
//!   their expiry and optionally the client address, so any executor verifies one from its own
//!   copy of the secrets, with no shared state. A play token never authorises `/api`.
//!
//! A third, for people: console users' session cookies (`crate::users`), signed like play
//! tokens over the user's name, the expiry and a stamp of the password hash.
//!
//! Pure functions of their inputs (time is a parameter), except `load`, which reads and, on
//! first start, writes the generated key and secret in data_dir, and reads the users file.

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The key the docs show; refused on any address but loopback.
pub const EXAMPLE_API_KEY: &str = "gmv-dev-token";
/// Where a first start without configured keys puts the generated admin key (mode 0600).
pub const ADMIN_KEY_FILE: &str = "admin-key";
/// Where a first start without configured play secrets puts the generated one (mode 0600).
pub const PLAY_SECRET_FILE: &str = "play-secret";
/// Random bytes in a generated key or secret.
const GENERATED_BYTES: usize = 32;
/// A configured play secret shorter than this is refused (it could be guessed).
pub const PLAY_SECRET_BYTES_MIN: usize = 16;
/// Play secrets verified at once: the signing one and the one it replaced (rotation).
pub const PLAY_SECRETS_MAX: usize = 2;
/// A play token is at most this long (longer ones are refused unread).
pub const PLAY_TOKEN_BYTES_MAX: usize = 512;
/// The longest lifetime a play token can be issued with.
pub const PLAY_TOKEN_TTL_S_MAX: u64 = 7 * 24 * 3600;
const TOKEN_VERSION: &str = "1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read the API, issue play tokens, play.
    Viewer,
    /// + open/close streams, stop sessions, record, sync devices (and PTZ, playback control).
    Operator,
    /// + remove devices, read the configuration.
    Admin,
}

/// An API key as configured: its SHA-256 in hex (`gmv --hash-key KEY` prints it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub name: String,
    pub role: Role,
    pub sha256: String,
}

/// SHA-256 of a key, lower-case hex.
pub fn key_hash(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let text = text.as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

/// The longest app or stream name of a published stream (ZLMediaKit takes 64 too).
pub const NAME_BYTES_MAX: usize = 64;

/// What a play token opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// A live stream by its 10-digit stream id (FLV, HLS, cover).
    Stream(String),
    /// A GB28181 channel, invited on demand (`/flv/gb/{device}/{channel}/{token}`).
    Channel { device_id: String, channel_id: String },
    /// A recording by its file stem (`{stream_id}_{start ms}`).
    Record(String),
    /// Publishing the RTMP stream `{app}/{stream}` (a publish token, not a play token).
    Publish { app: String, stream: String },
}

impl Scope {
    fn fields(&self) -> (&'static str, &str, &str) {
        match self {
            Scope::Stream(id) => ("s", id, ""),
            Scope::Channel { device_id, channel_id } => ("c", device_id, channel_id),
            Scope::Record(stem) => ("r", stem, ""),
            Scope::Publish { app, stream } => ("p", app, stream),
        }
    }

    /// Fields that could be confused with the token's separators are refused at issue.
    fn valid(&self) -> bool {
        let (_, a, b) = self.fields();
        let publish_unnamed = matches!(self, Scope::Publish { .. }) && b.is_empty();
        !a.is_empty() && !publish_unnamed && [a, b].iter().all(|f| f.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-'))
    }

    /// Whether a name can be a scope's field (what `valid` asks of each).
    pub fn valid_name(name: &str) -> bool {
        !name.is_empty() && name.len() <= NAME_BYTES_MAX && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    BadSignature,
    Expired,
    WrongScope,
    WrongClient,
}

impl TokenError {
    pub fn message(self) -> &'static str {
        match self {
            TokenError::Malformed => "not a play token",
            TokenError::BadSignature => "play token signature does not verify",
            TokenError::Expired => "play token expired",
            TokenError::WrongScope => "play token is for another stream",
            TokenError::WrongClient => "play token is for another client address",
        }
    }
}

/// One API key as held in memory.
#[derive(Clone)]
struct Key {
    name: String,
    role: Role,
    digest: [u8; 32],
}

/// A console user as sessions are checked against: a changed password changes the stamp.
#[derive(Clone)]
struct SessionUser {
    name: String,
    role: Role,
    stamp: [u8; 16],
}

/// A session cookie is at most this long (longer ones are refused unread).
const SESSION_TOKEN_BYTES_MAX: usize = 256;

/// Keys, play secrets and users of one executor (each holds its own `Arc`; a reload or a change
/// of users sends a new one).
#[derive(Clone)]
pub struct Secrets {
    keys: Vec<Key>,
    users: Vec<SessionUser>,
    /// The first signs; every one verifies.
    play_secrets: Vec<Vec<u8>>,
    pub play_token_ttl_s: u64,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets").field("keys", &self.key_names()).field("play_secrets", &self.play_secrets.len()).finish()
    }
}

impl Secrets {
    /// Keys as configured (hex digests checked) and secrets (at least one).
    pub fn new(keys: &[ApiKeyConfig], play_secrets: Vec<Vec<u8>>, play_token_ttl_s: u64) -> Result<Secrets, String> {
        let keys = keys
            .iter()
            .map(|k| match unhex(&k.sha256.to_ascii_lowercase()) {
                Some(digest) => Ok(Key { name: k.name.clone(), role: k.role, digest }),
                None => Err(format!("api key {:?}: sha256 must be 64 hex digits (gmv --hash-key KEY prints it)", k.name)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if play_secrets.is_empty() || play_secrets.len() > PLAY_SECRETS_MAX {
            return Err(format!("1 to {PLAY_SECRETS_MAX} play secrets (the signing one first)"));
        }
        if play_secrets.iter().any(|s| s.len() < PLAY_SECRET_BYTES_MIN) {
            return Err(format!("play secrets must be at least {PLAY_SECRET_BYTES_MIN} bytes"));
        }
        Ok(Secrets { keys, users: Vec::new(), play_secrets, play_token_ttl_s: play_token_ttl_s.clamp(1, PLAY_TOKEN_TTL_S_MAX) })
    }

    /// These secrets with `users` as the console users.
    pub fn with_users(&self, users: &[crate::users::User]) -> Secrets {
        let users = users
            .iter()
            .map(|u| {
                let digest: [u8; 32] = Sha256::digest(u.hash.as_bytes()).into();
                let mut stamp = [0u8; 16];
                stamp.copy_from_slice(&digest[..16]);
                SessionUser { name: u.name.clone(), role: u.role, stamp }
            })
            .collect();
        Secrets { users, ..self.clone() }
    }

    pub fn user_names(&self) -> Vec<String> {
        self.users.iter().map(|u| format!("{} ({:?})", u.name, u.role)).collect()
    }

    fn session_payload(user: &SessionUser, expires_unix_s: u64) -> String {
        let stamp: String = user.stamp.iter().map(|b| format!("{b:02x}")).collect();
        format!("session\n{}\n{expires_unix_s}\n{stamp}", user.name)
    }

    /// A session cookie value for user `name` until `expires_unix_s`; None for no such user.
    pub fn issue_session(&self, name: &str, expires_unix_s: u64) -> Option<String> {
        let user = self.users.iter().find(|u| u.name == name)?;
        let tag = Self::sign(&self.play_secrets[0], &Self::session_payload(user, expires_unix_s)).finalize().into_bytes();
        Some(format!("{name}:{expires_unix_s}:{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag)))
    }

    /// The user and role a session cookie value stands for, if it is signed, unexpired and the
    /// user still has the password it was issued under.
    pub fn session(&self, token: &str, now_unix_s: u64) -> Option<(&str, Role)> {
        if token.len() > SESSION_TOKEN_BYTES_MAX {
            return None;
        }
        let mut parts = token.splitn(3, ':');
        let (name, expires, tag) = (parts.next()?, parts.next()?, parts.next()?);
        let expires: u64 = expires.parse().ok()?;
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(tag).ok()?;
        let user = self.users.iter().find(|u| u.name == name)?;
        let payload = Self::session_payload(user, expires);
        let signed = self.play_secrets.iter().any(|s| Self::sign(s, &payload).verify_slice(&tag).is_ok());
        (signed && expires > now_unix_s).then_some((user.name.as_str(), user.role))
    }

    /// The CSRF token of a session: a changing request with its cookie must carry it in a header.
    pub fn csrf(&self, session_token: &str) -> String {
        let tag = Self::sign(&self.play_secrets[0], &format!("csrf\n{session_token}")).finalize().into_bytes();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag)
    }

    /// Whether `given` is the session's CSRF token (under any play secret, in constant time).
    pub fn csrf_ok(&self, session_token: &str, given: &str) -> bool {
        let Ok(tag) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(given) else { return false };
        self.play_secrets.iter().any(|s| Self::sign(s, &format!("csrf\n{session_token}")).verify_slice(&tag).is_ok())
    }

    pub fn key_names(&self) -> Vec<String> {
        self.keys.iter().map(|k| format!("{} ({:?})", k.name, k.role)).collect()
    }

    /// The name and role of an API key; None if it is not one. Every configured digest is
    /// compared, in constant time, so timing says nothing of which one matched.
    pub fn api_key(&self, key: &str) -> Option<(&str, Role)> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        for k in &self.keys {
            if bool::from(k.digest.ct_eq(&digest)) {
                found = Some((k.name.as_str(), k.role));
            }
        }
        found
    }

    fn sign(secret: &[u8], payload: &str) -> HmacSha256 {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(payload.as_bytes());
        mac
    }

    /// A token for `scope` valid until `expires_unix_s`, for `client` only when given.
    /// None if the scope has characters no id has.
    pub fn issue(&self, scope: &Scope, expires_unix_s: u64, client: Option<IpAddr>) -> Option<String> {
        if !scope.valid() {
            return None;
        }
        let (kind, a, b) = scope.fields();
        let client = client.map(|c| c.to_string()).unwrap_or_default();
        let payload = format!("{TOKEN_VERSION}\n{kind}\n{a}\n{b}\n{expires_unix_s}\n{client}");
        let tag = Self::sign(&self.play_secrets[0], &payload).finalize().into_bytes();
        let b64 = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
        Some(format!("{}.{}", b64.encode(payload), b64.encode(tag)))
    }

    /// Checks a play token against what is asked for, the time and the client's address.
    pub fn verify(&self, token: &str, want: &Scope, now_unix_s: u64, client: IpAddr) -> Result<(), TokenError> {
        if token.len() > PLAY_TOKEN_BYTES_MAX {
            return Err(TokenError::Malformed);
        }
        let b64 = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (payload, tag) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let payload = b64.decode(payload).ok().and_then(|p| String::from_utf8(p).ok()).ok_or(TokenError::Malformed)?;
        let tag = b64.decode(tag).map_err(|_| TokenError::Malformed)?;
        // The signature first: nothing of an unsigned payload is believed.
        if !self.play_secrets.iter().any(|s| Self::sign(s, &payload).verify_slice(&tag).is_ok()) {
            return Err(TokenError::BadSignature);
        }
        let fields: Vec<&str> = payload.split('\n').collect();
        let [version, kind, a, b, expires, bound] = fields.as_slice() else { return Err(TokenError::Malformed) };
        if *version != TOKEN_VERSION {
            return Err(TokenError::Malformed);
        }
        if (*kind, *a, *b) != want.fields() {
            return Err(TokenError::WrongScope);
        }
        if expires.parse::<u64>().map_err(|_| TokenError::Malformed)? <= now_unix_s {
            return Err(TokenError::Expired);
        }
        if !bound.is_empty() && bound.parse::<IpAddr>().ok() != Some(client) {
            return Err(TokenError::WrongClient);
        }
        Ok(())
    }
}

/// Random bytes from the OS.
fn random_bytes() -> std::io::Result<[u8; GENERATED_BYTES]> {
    let mut out = [0u8; GENERATED_BYTES];
    fill_random(&mut out)?;
    Ok(out)
}

/// Fills `out` with random bytes from the OS (at most 256 at a time, which getrandom gives
/// whole).
pub fn fill_random(out: &mut [u8]) -> std::io::Result<()> {
    if out.len() > 256 {
        return Err(std::io::Error::other("more than 256 random bytes at once"));
    }
    // SAFETY: getrandom writes at most out.len() bytes into the buffer we own.
    let n = unsafe { libc::getrandom(out.as_mut_ptr().cast(), out.len(), 0) };
    if n != out.len() as isize {
        return Err(std::io::Error::other("getrandom failed"));
    }
    Ok(())
}

/// A new random key or secret, URL-safe text.
pub fn generate() -> std::io::Result<String> {
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes()?))
}

/// Reads `path`, or on first start writes a new generated value there (mode 0600, created
/// exclusively so a racing writer cannot be overwritten). `Ok((value, true))` when generated.
fn read_or_generate(path: &Path) -> std::io::Result<(String, bool)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => return Ok((text.trim().to_string(), false)),
        Ok(_) => return Err(std::io::Error::other(format!("{} is empty; delete it to have a new one made", path.display()))),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let value = generate()?;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(format!("{value}\n").as_bytes())?;
    f.sync_all()?;
    Ok((value, true))
}

/// What `load` found, for the log.
#[derive(Debug, Default)]
pub struct Loaded {
    /// A key generated on this start: shown once, in the log.
    pub generated_key: Option<(String, PathBuf)>,
    /// The generated key's file when keys come from there.
    pub key_file: Option<PathBuf>,
    pub generated_secret: Option<PathBuf>,
}

/// The secrets an engine runs with: the configured keys and play secrets, or (none configured)
/// the admin key and play secret kept in data_dir, made on first start.
pub fn load(http: &crate::config::HttpConfig, data_dir: &Path) -> Result<(Secrets, Loaded), String> {
    let mut loaded = Loaded::default();
    let mut keys = http.api_keys.clone();
    if keys.is_empty() {
        let path = data_dir.join(ADMIN_KEY_FILE);
        let (key, made) = read_or_generate(&path).map_err(|e| format!("admin key {}: {e}", path.display()))?;
        keys.push(ApiKeyConfig { name: "admin".into(), role: Role::Admin, sha256: key_hash(&key) });
        if made {
            loaded.generated_key = Some((key, path.clone()));
        }
        loaded.key_file = Some(path);
    }
    let secrets = if http.play_secrets.is_empty() {
        let path = data_dir.join(PLAY_SECRET_FILE);
        let (secret, made) = read_or_generate(&path).map_err(|e| format!("play secret {}: {e}", path.display()))?;
        if made {
            loaded.generated_secret = Some(path);
        }
        vec![secret.into_bytes()]
    } else {
        http.play_secrets.iter().map(|s| s.clone().into_bytes()).collect()
    };
    let users = crate::users::load(data_dir)?;
    Ok((Secrets::new(&keys, secrets, http.play_token_ttl_s)?.with_users(&users), loaded))
}

/// True when a configured key is the docs' example key (refused off loopback).
pub fn uses_example_key(keys: &[ApiKeyConfig]) -> bool {
    let example = key_hash(EXAMPLE_API_KEY);
    keys.iter().any(|k| k.sha256.eq_ignore_ascii_case(&example))
}

/// What changed between two sets of secrets, for the reload log line.
pub fn describe_change(old: &Secrets, new: &Secrets) -> Vec<String> {
    let mut out = Vec::new();
    let (old_keys, new_keys) = (old.key_names(), new.key_names());
    for k in new_keys.iter().filter(|k| !old_keys.contains(k)) {
        out.push(format!("api key added: {k}"));
    }
    for k in old_keys.iter().filter(|k| !new_keys.contains(k)) {
        out.push(format!("api key removed: {k}"));
    }
    for k in &new.keys {
        if old.keys.iter().any(|o| o.name == k.name && o.digest != k.digest) {
            out.push(format!("api key replaced: {}", k.name));
        }
    }
    if old.play_secrets != new.play_secrets {
        let kept = new.play_secrets.iter().filter(|s| old.play_secrets.contains(s)).count();
        out.push(format!("play secrets changed ({} now, {kept} kept: tokens signed with a dropped one stop working)", new.play_secrets.len()));
    }
    if old.play_token_ttl_s != new.play_token_ttl_s {
        out.push(format!("play_token_ttl_s {} -> {}", old.play_token_ttl_s, new.play_token_ttl_s));
    }
    let (old_users, new_users) = (old.user_names(), new.user_names());
    for u in new_users.iter().filter(|u| !old_users.contains(u)) {
        out.push(format!("console user added or changed: {u}"));
    }
    for u in old_users.iter().filter(|u| !new_users.contains(u)) {
        out.push(format!("console user removed or changed: {u}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Secrets {
        let keys = [
            ApiKeyConfig { name: "ops".into(), role: Role::Operator, sha256: key_hash("op-key") },
            ApiKeyConfig { name: "wall".into(), role: Role::Viewer, sha256: key_hash("view-key").to_uppercase() },
        ];
        Secrets::new(&keys, vec![b"0123456789abcdef-signing".to_vec()], 600).unwrap()
    }

    const HOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 5));

    #[test]
    fn api_keys_have_roles_and_only_exact_keys_match() {
        let s = secrets();
        assert_eq!(s.api_key("op-key"), Some(("ops", Role::Operator)));
        assert_eq!(s.api_key("view-key"), Some(("wall", Role::Viewer)));
        assert_eq!(s.api_key("op-keY"), None);
        assert_eq!(s.api_key(""), None);
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        let bad = ApiKeyConfig { name: "x".into(), role: Role::Admin, sha256: "abc".into() };
        assert!(Secrets::new(&[bad], vec![vec![7; 32]], 1).is_err());
        assert!(Secrets::new(&[], vec![vec![7; 8]], 1).is_err(), "short secret");
        assert!(Secrets::new(&[], vec![], 1).is_err());
    }

    #[test]
    fn play_tokens_open_only_their_scope_until_expiry_for_their_client() {
        let s = secrets();
        let stream = Scope::Stream("0100000001".into());
        let t = s.issue(&stream, 1_000, None).unwrap();
        assert!(!t.contains('/') && !t.contains('?'), "{t}");
        assert_eq!(s.verify(&t, &stream, 999, HOST), Ok(()));
        assert_eq!(s.verify(&t, &stream, 1_000, HOST), Err(TokenError::Expired));
        assert_eq!(s.verify(&t, &Scope::Stream("0100000002".into()), 999, HOST), Err(TokenError::WrongScope));
        assert_eq!(s.verify(&t, &Scope::Record("0100000001".into()), 999, HOST), Err(TokenError::WrongScope));
        let bound = s.issue(&stream, 1_000, Some(HOST)).unwrap();
        assert_eq!(s.verify(&bound, &stream, 999, HOST), Ok(()));
        assert_eq!(s.verify(&bound, &stream, 999, "127.0.0.6".parse().unwrap()), Err(TokenError::WrongClient));
        let ch = Scope::Channel { device_id: "34020000001320000001".into(), channel_id: "34020000001310000001".into() };
        let t = s.issue(&ch, 1_000, None).unwrap();
        assert_eq!(s.verify(&t, &ch, 5, HOST), Ok(()));
        assert!(s.issue(&Scope::Stream("a\nb".into()), 1, None).is_none());
        assert!(s.issue(&Scope::Record(String::new()), 1, None).is_none());
    }

    #[test]
    fn forged_and_garbled_tokens_are_refused() {
        let s = secrets();
        let stream = Scope::Stream("0100000001".into());
        let t = s.issue(&stream, 1_000, None).unwrap();
        // Another secret signs nothing this engine takes.
        let other = Secrets::new(&[], vec![b"another-secret-of-16+".to_vec()], 600).unwrap();
        assert_eq!(s.verify(&other.issue(&stream, 1_000, None).unwrap(), &stream, 1, HOST), Err(TokenError::BadSignature));
        // A payload changed (later expiry) under the old signature.
        let b64 = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (_, tag) = t.split_once('.').unwrap();
        let forged = format!("{}.{tag}", b64.encode("1\ns\n0100000001\n\n99999\n"));
        assert_eq!(s.verify(&forged, &stream, 1, HOST), Err(TokenError::BadSignature));
        for junk in ["", ".", "abc", "gmv-dev-token", &"A".repeat(PLAY_TOKEN_BYTES_MAX + 1), &format!("{t}x")] {
            assert!(s.verify(junk, &stream, 1, HOST).is_err(), "{junk}");
        }
        let mut rng = crate::proto::testutil::Rng::new(5);
        for _ in 0..5_000 {
            let m = rng.mutate(t.as_bytes());
            let _ = s.verify(&String::from_utf8_lossy(&m), &stream, 1, HOST);
        }
    }

    #[test]
    fn a_rotated_secret_still_verifies_until_dropped() {
        let old = secrets();
        let t = old.issue(&Scope::Record("1_2".into()), 100, None).unwrap();
        let rotated = Secrets::new(&[], vec![b"the-new-signing-secret".to_vec(), b"0123456789abcdef-signing".to_vec()], 600).unwrap();
        assert_eq!(rotated.verify(&t, &Scope::Record("1_2".into()), 1, HOST), Ok(()));
        let dropped = Secrets::new(&[], vec![b"the-new-signing-secret".to_vec()], 600).unwrap();
        assert_eq!(dropped.verify(&t, &Scope::Record("1_2".into()), 1, HOST), Err(TokenError::BadSignature));
        let change = describe_change(&old, &dropped);
        assert!(change.iter().any(|c| c.contains("api key removed: ops")), "{change:?}");
        assert!(change.iter().any(|c| c.contains("play secrets changed")), "{change:?}");
    }

    #[test]
    fn first_start_generates_a_private_key_and_secret_once() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("gmv-auth-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let http = crate::config::HttpConfig::default();
        let (s, loaded) = load(&http, &dir).unwrap();
        let (key, path) = loaded.generated_key.expect("made on first start");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(dir.join(PLAY_SECRET_FILE)).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(s.api_key(&key), Some(("admin", Role::Admin)));
        let (again, loaded) = load(&http, &dir).unwrap();
        assert!(loaded.generated_key.is_none() && loaded.generated_secret.is_none(), "kept, not made again");
        assert_eq!(again.api_key(&key), Some(("admin", Role::Admin)));
        let t = s.issue(&Scope::Stream("0000000001".into()), 10, None).unwrap();
        assert_eq!(again.verify(&t, &Scope::Stream("0000000001".into()), 1, HOST), Ok(()));
        assert!(uses_example_key(&[ApiKeyConfig { name: "d".into(), role: Role::Viewer, sha256: key_hash(EXAMPLE_API_KEY) }]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_session_stands_for_its_user_until_it_expires_or_the_password_changes() {
        use crate::users::User;
        let user = |hash: &str| User { name: "zhang".into(), role: Role::Operator, hash: hash.into(), created_unix_s: 0 };
        let s = secrets().with_users(&[user("$argon2id$first")]);
        assert!(s.issue_session("nobody", 100).is_none());
        let token = s.issue_session("zhang", 100).unwrap();
        assert_eq!(s.session(&token, 99), Some(("zhang", Role::Operator)));
        assert_eq!(s.session(&token, 100), None, "expired");
        // Changed fields do not verify.
        let forged = token.replacen(":100:", ":999:", 1);
        assert_eq!(s.session(&forged, 99), None);
        assert_eq!(s.session(&format!("admin{}", &token[5..]), 99), None);
        for bad in ["", "zhang", "zhang:100", "zhang:x:y", &"z".repeat(300)] {
            assert_eq!(s.session(bad, 0), None, "{bad:?}");
        }
        // A new password (another hash) or the user gone: the old session ends.
        assert_eq!(s.with_users(&[user("$argon2id$second")]).session(&token, 99), None);
        assert_eq!(s.with_users(&[]).session(&token, 99), None);
        // Another role: the session carries the user's current role.
        let admin = User { role: Role::Admin, ..user("$argon2id$first") };
        assert_eq!(s.with_users(&[admin]).session(&token, 99), Some(("zhang", Role::Admin)));
        // CSRF: bound to the session.
        let csrf = s.csrf(&token);
        assert!(s.csrf_ok(&token, &csrf));
        assert!(!s.csrf_ok(&token, "x") && !s.csrf_ok(&forged, &csrf));
    }
}
