//! The device registry on disk (`data_dir/devices.json`). Called on blocking threads only.
//! Writes are atomic (temp file, fsync, rename, fsync of the directory); a file that cannot be
//! read is moved aside, never overwritten, so a bad disk day does not lose every device.

use crate::proto::sip::endpoint::{DEVICES_MAX, Device, RegistryChanges};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const REGISTRY_FILE: &str = "devices.json";

pub fn registry_path(data_dir: &Path) -> PathBuf {
    data_dir.join(REGISTRY_FILE)
}

#[derive(Debug)]
pub struct Loaded {
    pub devices: Vec<Device>,
    /// Where an unreadable registry was moved, and why it was unreadable.
    pub moved_aside: Option<(PathBuf, String)>,
}

/// Loads the registry; a missing file is an empty registry.
pub fn load(data_dir: &Path, unix_s: u64) -> std::io::Result<Loaded> {
    let path = registry_path(data_dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded { devices: Vec::new(), moved_aside: None }),
        Err(e) => return Err(e),
    };
    match serde_json::from_slice::<Vec<Device>>(&bytes) {
        Ok(mut devices) => {
            devices.truncate(DEVICES_MAX);
            Ok(Loaded { devices, moved_aside: None })
        }
        Err(error) => {
            let aside = data_dir.join(format!("{REGISTRY_FILE}.corrupt-{unix_s}"));
            std::fs::rename(&path, &aside)?;
            Ok(Loaded { devices: Vec::new(), moved_aside: Some((aside, error.to_string())) })
        }
    }
}

/// The registry as saved, kept beside the file by the persistence side (blocking threads): the
/// endpoint hands over only what changed, so the control executor never copies every device.
#[derive(Debug, Default)]
pub struct Persisted {
    devices: Mutex<BTreeMap<String, Device>>,
}

impl Persisted {
    pub fn new(devices: &[Device]) -> Persisted {
        Persisted { devices: Mutex::new(devices.iter().map(|d| (d.device_id.clone(), d.clone())).collect()) }
    }

    /// Applies `changes` and writes the whole registry (blocking). The changes stay applied
    /// when the write fails: offered again, they apply the same.
    pub fn apply_and_save(&self, data_dir: &Path, changes: &RegistryChanges) -> std::io::Result<usize> {
        let mut devices = self.devices.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for d in &changes.changed {
            devices.insert(d.device_id.clone(), d.clone());
        }
        for id in &changes.removed {
            devices.remove(id);
        }
        let all: Vec<&Device> = devices.values().collect();
        save(data_dir, &all)?;
        Ok(all.len())
    }
}

pub fn save<T: serde::Serialize + ?Sized>(data_dir: &Path, devices: &T) -> std::io::Result<()> {
    std::fs::create_dir_all(data_dir)?;
    let path = registry_path(data_dir);
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec(devices).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(data_dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("gmv-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn registry_round_trips() {
        let d = dir("trip");
        let mut dev = Device::new("dev");
        dev.last_error = Some("x".into());
        save(&d, &[dev]).unwrap();
        let loaded = load(&d, 1).unwrap();
        assert_eq!(loaded.devices.len(), 1);
        assert_eq!(loaded.devices[0].last_error.as_deref(), Some("x"));
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn changes_apply_to_what_was_saved() {
        let d = dir("changes");
        let persisted = Persisted::new(&[Device::new("a"), Device::new("b")]);
        let mut c = Device::new("c");
        c.last_error = Some("new".into());
        let changes = RegistryChanges { changed: vec![c], removed: vec!["a".into()] };
        assert_eq!(persisted.apply_and_save(&d, &changes).unwrap(), 2);
        let ids: Vec<String> = load(&d, 1).unwrap().devices.into_iter().map(|d| d.device_id).collect();
        assert_eq!(ids, ["b", "c"]);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_truncated_registry_is_moved_aside_not_lost() {
        let d = dir("corrupt");
        save(&d, &[Device::new("a"), Device::new("b")]).unwrap();
        let full = std::fs::read(registry_path(&d)).unwrap();
        std::fs::write(registry_path(&d), &full[..full.len() / 2]).unwrap();
        let loaded = load(&d, 42).unwrap();
        assert!(loaded.devices.is_empty());
        let (aside, _) = loaded.moved_aside.unwrap();
        assert_eq!(aside, d.join("devices.json.corrupt-42"));
        assert_eq!(std::fs::read(&aside).unwrap(), &full[..full.len() / 2], "the damaged file is kept as it was");
        assert!(!registry_path(&d).exists());
        let _ = std::fs::remove_dir_all(d);
    }
}
