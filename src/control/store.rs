//! The device registry on disk (`data_dir/devices.json`). Called on blocking threads only.
//! Writes are atomic (temp file, fsync, rename, fsync of the directory); a file that cannot be
//! read is moved aside, never overwritten, so a bad disk day does not lose every device.

use crate::proto::sip::endpoint::{DEVICES_MAX, Device};
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

pub fn save(data_dir: &Path, devices: &[Device]) -> std::io::Result<()> {
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
