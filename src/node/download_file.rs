//! `/index/api/downloadFile?file_path=`: a recording the node made, named by the path its
//! `on_record_mp4` gave (wvp hands that URL to browsers as is). Only a file gmv names
//! (`valid_file_name`) directly in the node's records or downloads folder is ever served: no
//! `..`, no other folder, no symlink, whatever the path says.

use crate::proto::ipnet::IpNet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Why a `file_path` is not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRefused {
    /// Not a recording file name in one of the node's folders (or `..` in it).
    OutsideFolders,
    /// There, but no such regular file (a symlink is none).
    NoSuchFile,
}

/// The folder and file name `file_path` names, if it is a recording of one of `folders`
/// (canonical paths). Reads the file system (blocking).
pub fn resolve(file_path: &str, folders: &[PathBuf]) -> Result<(PathBuf, String), FileRefused> {
    let path = Path::new(file_path);
    if path.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(FileRefused::OutsideFolders);
    }
    let name = path.file_name().and_then(|n| n.to_str()).filter(|n| crate::shard::record::valid_file_name(n)).ok_or(FileRefused::OutsideFolders)?;
    let parent = path.parent().and_then(|p| p.canonicalize().ok()).ok_or(FileRefused::OutsideFolders)?;
    let folder = folders.iter().find(|f| **f == parent).ok_or(FileRefused::OutsideFolders)?;
    let is_file = std::fs::symlink_metadata(folder.join(name)).is_ok_and(|m| m.file_type().is_file());
    if !is_file {
        return Err(FileRefused::NoSuchFile);
    }
    Ok((folder.clone(), name.to_string()))
}

/// The node's folders recordings are served from, canonical (those that exist).
pub fn folders(data_dir: &Path) -> Vec<PathBuf> {
    [crate::shard::record::records_dir(data_dir), crate::shard::record::downloads_dir(data_dir)].iter().filter_map(|d| d.canonicalize().ok()).collect()
}

/// Whether `ip` is in `download_allow_ips` (already checked by the config's validation).
pub fn allowed_ip(allow: &[String], ip: IpAddr) -> bool {
    let ip = crate::proto::ipnet::canonical(ip);
    allow.iter().filter_map(|a| IpNet::parse(a).ok()).any(|net| net.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_recordings_directly_in_the_folders_are_served() {
        let root = std::env::temp_dir().join(format!("gmv-download-file-{}", std::process::id()));
        let records = root.join("records");
        let elsewhere = root.join("elsewhere");
        std::fs::create_dir_all(&records).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        let name = "0200000001_1796458409241.mp4";
        std::fs::write(records.join(name), b"mp4").unwrap();
        std::fs::write(elsewhere.join(name), b"secret").unwrap();
        let _ = std::os::unix::fs::symlink(elsewhere.join(name), records.join("0200000001_1.mp4"));
        let folders = vec![records.canonicalize().unwrap()];
        let p = |s: &Path| s.display().to_string();
        assert_eq!(resolve(&p(&records.join(name)), &folders), Ok((folders[0].clone(), name.to_string())));
        let dotted = format!("{}/../records/{name}", p(&records));
        assert_eq!(resolve(&dotted, &folders), Err(FileRefused::OutsideFolders), "no ..");
        assert_eq!(resolve(&p(&elsewhere.join(name)), &folders), Err(FileRefused::OutsideFolders));
        assert_eq!(resolve(&p(&records.join("0200000001_1.mp4")), &folders), Err(FileRefused::NoSuchFile), "a symlink is no recording");
        assert_eq!(resolve(&p(&records.join("0200000001_2.mp4")), &folders), Err(FileRefused::NoSuchFile));
        for bad in ["/etc/passwd", "", "/", "records", &p(&records)] {
            assert_eq!(resolve(bad, &folders), Err(FileRefused::OutsideFolders), "{bad:?}");
        }
        // A symlinked folder is taken for what it points at: not one of the folders.
        let _ = std::os::unix::fs::symlink(&elsewhere, root.join("alias"));
        assert_eq!(resolve(&p(&root.join("alias").join(name)), &folders), Err(FileRefused::OutsideFolders));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn allowed_addresses_are_zlmediakits_ranges_by_default() {
        let allow = crate::config::NodeConfig::default().download_allow_ips;
        for (ip, ok) in [("127.0.0.1", true), ("192.168.1.20", true), ("::ffff:10.1.2.3", true), ("172.32.0.1", false), ("8.8.8.8", false)] {
            assert_eq!(allowed_ip(&allow, ip.parse().unwrap()), ok, "{ip}");
        }
        assert!(!allowed_ip(&[], "127.0.0.1".parse().unwrap()));
    }
}
