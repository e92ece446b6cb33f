//! Upstreams changed through the API, kept in `data_dir/upstreams.json` as changes over the
//! config's `cascade.upstreams`: the upstreams added or changed (whole, keyed by id) and the
//! ids removed. At start the config's list is read through them, so an edit of the YAML still
//! applies to every upstream the API never touched. The file holds passwords (the digest needs
//! them in the clear, as the YAML does): it is written owner-only. Read and written on blocking
//! threads only.

use crate::config::UpstreamYaml;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub const UPSTREAMS_FILE: &str = "upstreams.json";

/// What the API changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Changes {
    pub set: BTreeMap<String, UpstreamYaml>,
    pub removed: BTreeSet<String>,
}

/// Where an upstream's settings come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Config,
    Api,
}

impl Changes {
    /// The upstreams in force: the config's (less those removed, those set replaced), then
    /// those the API added, in id order.
    pub fn apply(&self, config: &[UpstreamYaml]) -> Vec<(UpstreamYaml, Source)> {
        let mut out: Vec<(UpstreamYaml, Source)> = config
            .iter()
            .filter(|u| !self.removed.contains(&u.id))
            .map(|u| match self.set.get(&u.id) {
                Some(changed) => (changed.clone(), Source::Api),
                None => (u.clone(), Source::Config),
            })
            .collect();
        let added = self.set.values().filter(|u| !config.iter().any(|c| c.id == u.id));
        out.extend(added.map(|u| (u.clone(), Source::Api)));
        out
    }

    /// `upstream` added or changed.
    pub fn set(&mut self, upstream: UpstreamYaml) {
        self.removed.remove(&upstream.id);
        self.set.insert(upstream.id.clone(), upstream);
    }

    pub fn remove(&mut self, id: &str) {
        self.set.remove(id);
        self.removed.insert(id.to_string());
    }
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(UPSTREAMS_FILE)
}

/// The changes saved (none when there is no file). A file that does not read is moved aside
/// as `upstreams.json.unreadable-{unix_s}` (never overwritten) and said why.
pub fn load(data_dir: &Path, unix_s: u64) -> (Changes, Option<String>) {
    super::json_file::load(&path(data_dir), unix_s)
}

/// Writes the changes whole: a temporary file, owner-only, renamed over the old one.
pub fn save(data_dir: &Path, changes: &Changes) -> std::io::Result<()> {
    super::json_file::save(&path(data_dir), changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(id: &str, address: &str) -> UpstreamYaml {
        serde_json::from_value(serde_json::json!({
            "id": id, "server_id": "44010000002000000001", "domain": "4401000000", "address": address,
            "password": "p", "local_id": "34020000002000000001"
        }))
        .unwrap()
    }

    #[test]
    fn the_api_changes_read_the_config_through() {
        let config = vec![up("a", "127.0.0.1:1"), up("b", "127.0.0.1:2"), up("c", "127.0.0.1:3")];
        let mut changes = Changes::default();
        assert_eq!(changes.apply(&config).iter().map(|(u, s)| (u.id.as_str(), *s)).collect::<Vec<_>>(), vec![
            ("a", Source::Config),
            ("b", Source::Config),
            ("c", Source::Config)
        ]);
        changes.set(up("b", "127.0.0.1:22"));
        changes.remove("c");
        changes.set(up("d", "127.0.0.1:4"));
        let now = changes.apply(&config);
        assert_eq!(now.iter().map(|(u, s)| (u.id.as_str(), u.address.as_str(), *s)).collect::<Vec<_>>(), vec![
            ("a", "127.0.0.1:1", Source::Config),
            ("b", "127.0.0.1:22", Source::Api),
            ("d", "127.0.0.1:4", Source::Api)
        ]);
        // Added back after a removal.
        changes.set(up("c", "127.0.0.1:33"));
        assert!(changes.apply(&config).iter().any(|(u, s)| u.id == "c" && u.address == "127.0.0.1:33" && *s == Source::Api));
    }

    #[test]
    fn saved_changes_read_back_owner_only_and_a_bad_file_is_moved_aside() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("gmv-upstreams-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(load(&dir, 1), (Changes::default(), None));
        let mut changes = Changes::default();
        changes.set(up("x", "127.0.0.1:9"));
        changes.remove("y");
        save(&dir, &changes).unwrap();
        assert_eq!(load(&dir, 1), (changes, None));
        assert_eq!(std::fs::metadata(path(&dir)).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::write(path(&dir), b"{ not json").unwrap();
        let (loaded, error) = load(&dir, 7);
        assert_eq!(loaded, Changes::default());
        assert!(error.unwrap().contains("moved to"));
        assert!(dir.join("upstreams.json.unreadable-7").exists() && !path(&dir).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
