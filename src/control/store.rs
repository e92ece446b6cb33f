//! The device registry on disk: an SQLite database (`data_dir/registry.sqlite3`, one row per
//! device, its JSON), so a change writes that device's row, not the whole registry (a JSON file
//! of 100,000 devices is 88 MB and took 300 ms to rewrite; `benches/registry.rs`). Called on
//! blocking threads only. A database that cannot be read is moved aside, never overwritten; a
//! `devices.json` of earlier versions is imported once and kept as `devices.json.imported`.
//! With `registry.postgres` the registry is shared by several controls instead (`shared`).

pub mod shared;

use crate::proto::sip::endpoint::{DEVICES_MAX, Device, RegistryChanges};
use rusqlite::{Connection, OpenFlags, params};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub const REGISTRY_DB: &str = "registry.sqlite3";
/// The whole-file registry of earlier versions.
pub const LEGACY_REGISTRY_FILE: &str = "devices.json";
/// A writer waits this long for a reader (another process inspecting the file) to let go.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub fn registry_path(data_dir: &Path) -> PathBuf {
    data_dir.join(REGISTRY_DB)
}

#[derive(Debug)]
pub struct Loaded {
    pub devices: Vec<Device>,
    /// Where an unreadable registry was moved, and why it was unreadable.
    pub moved_aside: Option<(PathBuf, String)>,
    /// Rows that did not read as a device (left out, counted).
    pub skipped: usize,
    /// A `devices.json` imported into the database (now named `devices.json.imported`).
    pub imported: Option<PathBuf>,
}

fn sql(e: rusqlite::Error) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL: one fsync per saved batch, and readers do not block the writer.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch("CREATE TABLE IF NOT EXISTS devices (id TEXT PRIMARY KEY, body TEXT NOT NULL) STRICT")?;
    Ok(conn)
}

fn read_all(conn: &Connection) -> rusqlite::Result<(Vec<Device>, usize)> {
    let mut stmt = conn.prepare("SELECT body FROM devices ORDER BY id LIMIT ?1")?;
    let mut rows = stmt.query(params![DEVICES_MAX as i64])?;
    let (mut devices, mut skipped) = (Vec::new(), 0);
    while let Some(row) = rows.next()? {
        match serde_json::from_str::<Device>(&row.get::<_, String>(0)?) {
            Ok(d) => devices.push(d),
            Err(_) => skipped += 1,
        }
    }
    Ok((devices, skipped))
}

/// Moves `path` (and its WAL files) aside as `{name}.corrupt-{unix_s}`.
fn move_aside(path: &Path, unix_s: u64) -> std::io::Result<PathBuf> {
    let name = path.file_name().map_or_else(|| "registry".into(), |n| n.to_string_lossy().to_string());
    let aside = path.with_file_name(format!("{name}.corrupt-{unix_s}"));
    std::fs::rename(path, &aside)?;
    for suffix in ["-wal", "-shm"] {
        let side = path.with_file_name(format!("{name}{suffix}"));
        if side.exists() {
            std::fs::rename(&side, aside.with_file_name(format!("{name}.corrupt-{unix_s}{suffix}")))?;
        }
    }
    Ok(aside)
}

/// Loads the registry (a missing database is an empty one; `devices.json` of an earlier
/// version is imported first).
pub fn load(data_dir: &Path, unix_s: u64) -> std::io::Result<Loaded> {
    std::fs::create_dir_all(data_dir)?;
    let path = registry_path(data_dir);
    let mut loaded = Loaded { devices: Vec::new(), moved_aside: None, skipped: 0, imported: None };
    if !path.exists() {
        import_legacy(data_dir, unix_s, &mut loaded)?;
        return Ok(loaded);
    }
    match open(&path).and_then(|conn| read_all(&conn)) {
        Ok((devices, skipped)) => {
            loaded.devices = devices;
            loaded.skipped = skipped;
        }
        Err(error) => loaded.moved_aside = Some((move_aside(&path, unix_s)?, error.to_string())),
    }
    Ok(loaded)
}

/// `devices.json` into a new database, once; an unreadable one is moved aside.
fn import_legacy(data_dir: &Path, unix_s: u64, loaded: &mut Loaded) -> std::io::Result<()> {
    let legacy = data_dir.join(LEGACY_REGISTRY_FILE);
    let bytes = match std::fs::read(&legacy) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    match serde_json::from_slice::<Vec<Device>>(&bytes) {
        Ok(mut devices) => {
            devices.truncate(DEVICES_MAX);
            let persisted = Persisted::open(data_dir)?;
            persisted.apply(&RegistryChanges { changed: devices.clone(), removed: Vec::new() })?;
            let imported = data_dir.join(format!("{LEGACY_REGISTRY_FILE}.imported"));
            std::fs::rename(&legacy, &imported)?;
            loaded.devices = devices;
            loaded.imported = Some(imported);
        }
        Err(error) => loaded.moved_aside = Some((move_aside(&legacy, unix_s)?, error.to_string())),
    }
    Ok(())
}

/// Where the endpoint's registry changes go: this control's own SQLite file, or the database
/// shared by the controls (written only while this control holds the lease).
// One instance per control, behind an Arc: the size of its larger variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Registry {
    Local(Persisted),
    Shared(shared::Shared),
}

impl Registry {
    /// Writes `changes` (blocking); how many rows changed.
    pub fn apply(&self, changes: &RegistryChanges) -> std::io::Result<usize> {
        match self {
            Registry::Local(p) => p.apply(changes),
            Registry::Shared(s) => s.apply(changes).map_err(std::io::Error::other),
        }
    }

    pub fn shared(&self) -> Option<&shared::Shared> {
        match self {
            Registry::Local(_) => None,
            Registry::Shared(s) => Some(s),
        }
    }
}

/// The registry database, written from blocking threads: the endpoint hands over only what
/// changed, so neither the control executor nor the disk handles every device.
pub struct Persisted {
    conn: Mutex<Connection>,
}

impl Persisted {
    pub fn open(data_dir: &Path) -> std::io::Result<Persisted> {
        std::fs::create_dir_all(data_dir)?;
        Ok(Persisted { conn: Mutex::new(open(&registry_path(data_dir)).map_err(sql)?) })
    }

    /// Writes `changes` in one transaction (blocking); how many rows changed.
    pub fn apply(&self, changes: &RegistryChanges) -> std::io::Result<usize> {
        let mut conn = self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let tx = conn.transaction().map_err(sql)?;
        let mut n = 0;
        {
            let mut upsert = tx.prepare_cached("INSERT INTO devices (id, body) VALUES (?1, ?2) ON CONFLICT(id) DO UPDATE SET body = excluded.body").map_err(sql)?;
            for d in &changes.changed {
                let body = serde_json::to_string(d).map_err(std::io::Error::other)?;
                n += upsert.execute(params![d.device_id, body]).map_err(sql)?;
            }
            let mut delete = tx.prepare_cached("DELETE FROM devices WHERE id = ?1").map_err(sql)?;
            for id in &changes.removed {
                n += delete.execute(params![id]).map_err(sql)?;
            }
        }
        tx.commit().map_err(sql)?;
        Ok(n)
    }
}

/// The devices saved in `data_dir`, read without changing anything (another process may be
/// writing): for tools and tests.
pub fn read_only(data_dir: &Path) -> std::io::Result<Vec<Device>> {
    let conn = Connection::open_with_flags(registry_path(data_dir), OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(sql)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;
    read_all(&conn).map(|(d, _)| d).map_err(sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("gmv-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn ids(devices: &[Device]) -> Vec<&str> {
        devices.iter().map(|d| d.device_id.as_str()).collect()
    }

    #[test]
    fn changes_are_written_row_by_row_and_read_back() {
        let d = dir("rows");
        let p = Persisted::open(&d).unwrap();
        let mut a = Device::new("a");
        a.last_error = Some("x".into());
        assert_eq!(p.apply(&RegistryChanges { changed: vec![a, Device::new("b"), Device::new("c")], removed: vec![] }).unwrap(), 3);
        assert_eq!(p.apply(&RegistryChanges { changed: vec![Device::new("c")], removed: vec!["b".into(), "nobody".into()] }).unwrap(), 2);
        drop(p);
        let loaded = load(&d, 1).unwrap();
        assert_eq!(ids(&loaded.devices), ["a", "c"]);
        assert_eq!(loaded.devices[0].last_error.as_deref(), Some("x"));
        assert_eq!(ids(&read_only(&d).unwrap()), ["a", "c"]);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_database_that_cannot_be_read_is_moved_aside_not_lost() {
        let d = dir("corrupt");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(registry_path(&d), b"this is not a database, whatever it was").unwrap();
        let loaded = load(&d, 42).unwrap();
        assert!(loaded.devices.is_empty());
        let (aside, _) = loaded.moved_aside.unwrap();
        assert_eq!(aside, d.join("registry.sqlite3.corrupt-42"));
        assert_eq!(std::fs::read(&aside).unwrap(), b"this is not a database, whatever it was", "kept as it was");
        let p = Persisted::open(&d).unwrap();
        p.apply(&RegistryChanges { changed: vec![Device::new("again")], removed: vec![] }).unwrap();
        assert_eq!(ids(&load(&d, 43).unwrap().devices), ["again"]);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_legacy_json_registry_is_imported_once_and_a_truncated_one_kept_aside() {
        let d = dir("legacy");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(LEGACY_REGISTRY_FILE), serde_json::to_vec(&[Device::new("old1"), Device::new("old2")]).unwrap()).unwrap();
        let loaded = load(&d, 1).unwrap();
        assert_eq!(ids(&loaded.devices), ["old1", "old2"]);
        assert_eq!(loaded.imported, Some(d.join("devices.json.imported")));
        assert!(!d.join(LEGACY_REGISTRY_FILE).exists());
        assert_eq!(ids(&load(&d, 2).unwrap().devices), ["old1", "old2"], "from the database now");

        let e = dir("legacy-cut");
        std::fs::create_dir_all(&e).unwrap();
        let full = serde_json::to_vec(&[Device::new("a"), Device::new("b")]).unwrap();
        std::fs::write(e.join(LEGACY_REGISTRY_FILE), &full[..full.len() / 2]).unwrap();
        let loaded = load(&e, 7).unwrap();
        assert!(loaded.devices.is_empty());
        assert_eq!(loaded.moved_aside.unwrap().0, e.join("devices.json.corrupt-7"));
        assert_eq!(std::fs::read(e.join("devices.json.corrupt-7")).unwrap(), &full[..full.len() / 2]);
        let _ = (std::fs::remove_dir_all(d), std::fs::remove_dir_all(e));
    }
}
