//! Console users: a name, a role (as API keys have) and an Argon2id password hash each, kept in
//! `data_dir/users.json` and managed by an admin through `/api/users`. Signing in gives a
//! session cookie that `auth::Secrets` verifies like a play token (an HMAC over the name, the
//! expiry and a stamp of the password hash: a changed password or a deleted user ends every
//! session at once, on every executor, with no shared state). API keys stay for machines.
//!
//! File IO here is blocking: callers run it off the executors.

use crate::auth::Role;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const USERS_FILE: &str = "users.json";
/// Users kept at most (a site has tens; the file is read whole).
pub const USERS_MAX: usize = 1_000;
pub const USER_NAME_CHARS_MAX: usize = 32;
pub const PASSWORD_BYTES_MIN: usize = 8;
/// Longer passwords are refused before hashing (Argon2 would take them, at a cost).
pub const PASSWORD_BYTES_MAX: usize = 128;
/// A session lasts this long from signing in.
pub const SESSION_TTL_S: u64 = 12 * 3600;
pub const SESSION_COOKIE: &str = "gmv_session";
/// The header a cookie session's changing requests carry (the value `GET /api/session` gives).
pub const CSRF_HEADER: &str = "x-csrf-token";
/// A users file larger than this is refused (1,000 users take about 200 KB).
const USERS_FILE_BYTES_MAX: u64 = 1 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// Argon2id PHC string (`$argon2id$v=19$m=...`).
    pub hash: String,
    pub created_unix_s: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct UsersFile {
    users: Vec<User>,
}

/// Letters, digits, `_`, `-` and `.`, 1 to `USER_NAME_CHARS_MAX` of them (they go in cookies
/// and logs as they are).
pub fn valid_name(name: &str) -> bool {
    (1..=USER_NAME_CHARS_MAX).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// Why a new password is refused, if it is.
pub fn password_problem(password: &str) -> Option<String> {
    if password.len() < PASSWORD_BYTES_MIN {
        return Some(format!("a password has at least {PASSWORD_BYTES_MIN} characters"));
    }
    if password.len() > PASSWORD_BYTES_MAX {
        return Some(format!("a password has at most {PASSWORD_BYTES_MAX} bytes"));
    }
    None
}

/// An Argon2id hash of `password` with a random salt (the crate's default cost: 19 MiB, two
/// passes; tens of milliseconds).
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default().hash_password(password.as_bytes()).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Whether `password` matches the PHC string `hash` (false for a hash that does not parse).
pub fn verify_password(hash: &str, password: &str) -> bool {
    use argon2::password_hash::PasswordVerifier;
    let Ok(parsed) = argon2::password_hash::phc::PasswordHash::new(hash) else { return false };
    password.len() <= PASSWORD_BYTES_MAX && argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
}

/// Costs what checking a real user's password costs, so the time of a refusal does not tell
/// whether the name exists.
pub fn verify_nobody(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let hash = DUMMY.get_or_init(|| hash_password("not anyone's password").unwrap_or_default());
    let _ = verify_password(hash, password);
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(USERS_FILE)
}

/// The users in `data_dir` (none when the file is missing).
pub fn load(data_dir: &Path) -> Result<Vec<User>, String> {
    let path = path(data_dir);
    let size = match std::fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if size > USERS_FILE_BYTES_MAX {
        return Err(format!("{}: larger than {USERS_FILE_BYTES_MAX} bytes", path.display()));
    }
    let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file: UsersFile = serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if file.users.len() > USERS_MAX {
        return Err(format!("{}: more than {USERS_MAX} users", path.display()));
    }
    if let Some(u) = file.users.iter().find(|u| !valid_name(&u.name)) {
        return Err(format!("{}: user name {:?} has characters a name may not have", path.display(), u.name));
    }
    Ok(file.users)
}

/// Writes the users (a new file renamed over the old, owner-only: it holds password hashes).
pub fn save(data_dir: &Path, users: &[User]) -> std::io::Result<()> {
    crate::control::json_file::save(&path(data_dir), &UsersFile { users: users.to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "correct horsf"));
        assert!(!verify_password("not a hash", "correct horse"));
        assert_ne!(hash_password("correct horse").unwrap(), h, "salted");
    }

    #[test]
    fn names_and_passwords_have_rules() {
        assert!(valid_name("zhang.san-01_A"));
        for bad in ["", "a b", "名字", "a;b", "a:b", &"x".repeat(33)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert!(password_problem("1234567").is_some());
        assert!(password_problem("12345678").is_none());
        assert!(password_problem(&"x".repeat(129)).is_some());
    }

    #[test]
    fn the_file_round_trips_and_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("gmv-users-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(load(&dir).unwrap(), Vec::new(), "no file: no users");
        let users = vec![User { name: "ops".into(), role: Role::Operator, hash: hash_password("password1").unwrap(), created_unix_s: 7 }];
        save(&dir, &users).unwrap();
        assert_eq!(load(&dir).unwrap(), users);
        assert_eq!(std::fs::metadata(path(&dir)).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::write(path(&dir), r#"{"users":[{"name":"a b","role":"admin","hash":"x","created_unix_s":1}]}"#).unwrap();
        assert!(load(&dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
