//! State the control keeps in `data_dir` as one JSON file each (upstreams changed through the
//! API, record plans): read at start, written whole on each change. Blocking: call these on
//! blocking threads only.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;

/// What `file` holds (the default when there is none). A file that does not read is moved
/// aside as `{name}.unreadable-{unix_s}` (never overwritten) and said why.
pub fn load<T: DeserializeOwned + Default>(file: &Path, unix_s: u64) -> (T, Option<String>) {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (T::default(), None),
        Err(e) => return (T::default(), Some(format!("{}: {e}", file.display()))),
    };
    match serde_json::from_slice::<T>(&bytes) {
        Ok(v) => (v, None),
        Err(e) => {
            let name = file.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            let aside = file.with_file_name(format!("{name}.unreadable-{unix_s}"));
            let moved = std::fs::rename(file, &aside).map_or_else(|m| format!("not moved: {m}"), |()| format!("moved to {}", aside.display()));
            (T::default(), Some(format!("{}: {e} ({moved})", file.display())))
        }
    }
}

/// Writes `value` whole: a temporary file, owner-only (it may hold passwords), synced, renamed
/// over the old one.
pub fn save<T: Serialize>(file: &Path, value: &T) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(tmp, file)
}
