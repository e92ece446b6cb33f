//! Registered devices and their channels, owned by the control executor; saved to
//! `data_dir/devices.json` so a restart keeps the catalog.

use crate::proto::sip::manscdp::{CatalogItem, DeviceInfo};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Devices kept; registrations from new devices beyond this are refused (503).
pub const DEVICES_MAX: usize = 100_000;
/// Channels kept per device (large NVRs have a few hundred).
pub const CHANNELS_PER_DEVICE_MAX: usize = 10_000;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Device {
    pub device_id: String,
    pub info: DeviceInfo,
    pub channels: BTreeMap<String, CatalogItem>,
    /// Unix seconds of the last successful REGISTER.
    pub registered_at: u64,
    /// Where signalling to the device goes (source of its REGISTER: NAT-safe).
    pub addr: Option<SocketAddr>,
    /// How to reach it now (the transport and connection of its latest REGISTER/keepalive).
    #[serde(skip)]
    pub peer: Option<super::Peer>,
    #[serde(skip)]
    pub live: Option<Liveness>,
    /// Catalog being merged from several MESSAGEs (SumNum split).
    #[serde(skip)]
    pub catalog_in_progress: Option<(usize, BTreeMap<String, CatalogItem>)>,
}

#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    pub expires_at: Instant,
    pub last_seen: Instant,
}

impl Device {
    pub fn online(&self, keepalive: Duration) -> bool {
        self.live.is_some_and(|l| Instant::now() < l.expires_at && l.last_seen.elapsed() < keepalive * 3)
    }

    pub fn peer(&self) -> Option<super::Peer> {
        self.peer.or(self.addr.map(super::Peer::Udp))
    }

    /// Merges one Catalog MESSAGE; true when the catalog is complete and committed.
    pub fn merge_catalog(&mut self, sum_num: usize, items: Vec<CatalogItem>) -> bool {
        let (expected, partial) = self.catalog_in_progress.get_or_insert_with(|| (sum_num, BTreeMap::new()));
        *expected = sum_num.max(*expected);
        for item in items {
            if partial.len() >= CHANNELS_PER_DEVICE_MAX {
                break;
            }
            partial.insert(item.device_id.clone(), item);
        }
        if partial.len() >= *expected || partial.len() >= CHANNELS_PER_DEVICE_MAX {
            let (_, done) = self.catalog_in_progress.take().expect("in progress");
            self.channels = done;
            return true;
        }
        false
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[derive(Debug, Default)]
pub struct Registry {
    pub devices: BTreeMap<String, Device>,
    path: Option<PathBuf>,
    pub dirty: bool,
}

impl Registry {
    /// Loads `dir/devices.json` if present (devices come back offline until they register).
    pub fn load(dir: &Path) -> Registry {
        let path = dir.join("devices.json");
        let devices = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Vec<Device>>(&bytes) {
                Ok(list) => list.into_iter().take(DEVICES_MAX).map(|d| (d.device_id.clone(), d)).collect(),
                Err(error) => {
                    tracing::error!(path = %path.display(), %error, "device registry unreadable; starting empty");
                    BTreeMap::new()
                }
            },
            Err(_) => BTreeMap::new(),
        };
        tracing::info!(devices = devices.len(), path = %path.display(), "device registry loaded");
        Registry { devices, path: Some(path), dirty: false }
    }

    /// Writes the registry if it changed (atomically: temp file, then rename).
    pub fn save(&mut self) {
        let Some(path) = &self.path else { return };
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let list: Vec<&Device> = self.devices.values().collect();
        let result = (|| -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&list).map_err(std::io::Error::other)?)?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(error) = result {
            tracing::error!(path = %path.display(), %error, "cannot save device registry");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str) -> CatalogItem {
        CatalogItem { device_id: id.into(), name: format!("cam {id}"), ..Default::default() }
    }

    #[test]
    fn catalog_split_over_messages_is_merged() {
        let mut d = Device::default();
        assert!(!d.merge_catalog(3, vec![item("a"), item("b")]));
        assert!(d.channels.is_empty());
        assert!(d.merge_catalog(3, vec![item("b"), item("c")]));
        assert_eq!(d.channels.keys().collect::<Vec<_>>(), vec!["a", "b", "c"]);
    }

    #[test]
    fn registry_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("gmv-registry-{}", std::process::id()));
        let mut r = Registry::load(&dir);
        let mut d = Device { device_id: "dev".into(), ..Default::default() };
        d.merge_catalog(1, vec![item("ch")]);
        r.devices.insert("dev".into(), d);
        r.dirty = true;
        r.save();
        let again = Registry::load(&dir);
        assert_eq!(again.devices["dev"].channels["ch"].name, "cam ch");
        let _ = std::fs::remove_dir_all(dir);
    }
}
