//! The index of the recordings (`data_dir/records.sqlite3`): a row per file of
//! `data_dir/records`, so a listing of one channel's day, or a retention pass, asks the index
//! instead of reading a directory of hundreds of thousands of entries and a sidecar per file.
//! The sidecars stay the truth: the index is written beside them (a file opened, a sidecar
//! written, a file deleted) and is checked against the directory at start-up and every
//! `RECORD_INDEX_CHECK_INTERVAL` (files recovered after a crash, copied in or removed by
//! hand). A damaged database is made again from the directory. It also keeps
//! what media nodes recorded for record plans (`NodeRecord`: the files stay on the nodes),
//! so those are listed after a restart too. Every call blocks: run them off the executors.

use super::record::{RecordFilter, RecordInfo, name_parts, read_sidecar, records_dir};
use super::retention::Candidate;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

pub const RECORD_INDEX_DB: &str = "records.sqlite3";
/// The layout of the rows; an index of another version is made again from the directory (and
/// forgets what nodes recorded).
const SCHEMA_VERSION: i64 = 2;
/// Media nodes' recordings remembered at most; past this the oldest are forgotten (the files
/// stay on the nodes).
pub const NODE_RECORDS_MAX: usize = 1_000_000;
/// How often the index is checked against the directory (one read of the entries, sidecars
/// only of files the index does not know).
pub const RECORD_INDEX_CHECK_INTERVAL: Duration = Duration::from_secs(600);
/// Directory entries a check reads at most (as a retention pass did).
pub const RECORD_INDEX_CHECK_ENTRIES_MAX: usize = super::retention::RETENTION_SCAN_ENTRIES_MAX;
/// A writer waits this long for another connection (another shard, another control) to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The index of one recordings directory; each shard holds one (its own connection, opened
/// on first use) over the same database.
#[derive(Debug)]
pub struct RecordIndex {
    records: PathBuf,
    db: PathBuf,
    conn: Mutex<Option<Connection>>,
}

/// A recording a media node closed for a record plan (its `on_record_mp4`); the file is the
/// node's, served by its HTTP server at `url`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeRecord {
    pub node: String,
    pub stream_id: String,
    pub device_id: String,
    pub channel_id: String,
    /// As the node said it (any number).
    pub start_unix_ms: u64,
    pub duration_ms: u64,
    pub name: String,
    /// Its path on the node's HTTP server (`records/...`).
    pub url: String,
    pub bytes: u64,
}

impl NodeRecord {
    /// As a recording of gmv's own is described (the API lists both alike).
    pub fn info(&self) -> RecordInfo {
        RecordInfo {
            file: self.name.clone(),
            stream_id: self.stream_id.clone(),
            start_unix_ms: self.start_unix_ms,
            duration_ms: self.duration_ms,
            bytes: self.bytes,
            channel_id: Some(self.channel_id.clone()),
            ..Default::default()
        }
    }
}

/// What a check against the directory changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checked {
    /// Files the index did not know (or knew as being written, now closed).
    pub added: usize,
    /// Rows whose file is gone.
    pub removed: usize,
}

fn sql(e: rusqlite::Error) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Whether SQLite found the file is no database, or a damaged one.
fn damaged(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if matches!(f.code, rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt))
}

/// Times and sizes as SQLite integers (a sidecar edited by hand may say anything).
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl RecordIndex {
    /// The index of `data_dir/records`.
    pub fn for_data_dir(data_dir: &Path) -> RecordIndex {
        RecordIndex::new(records_dir(data_dir), data_dir.join(RECORD_INDEX_DB))
    }

    pub fn new(records: PathBuf, db: PathBuf) -> RecordIndex {
        RecordIndex { records, db, conn: Mutex::new(None) }
    }

    /// The directory indexed.
    pub fn records(&self) -> &Path {
        &self.records
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let mut conn = Connection::open(&self.db)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL: readers do not wait for a writer. NORMAL: a power cut may lose the last rows
        // (the check at start-up puts gmv's own back from the sidecars; a node's last few
        // recordings would be forgotten).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // One transaction: shards opening their connections at once cannot drop each other's
        // tables while the version is being set.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version != SCHEMA_VERSION {
            tx.execute_batch("DROP TABLE IF EXISTS records; DROP TABLE IF EXISTS node_records")?;
        }
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS records (
                file TEXT PRIMARY KEY,
                stream_id TEXT NOT NULL,
                channel_id TEXT,
                start_unix_ms INTEGER NOT NULL,
                end_unix_ms INTEGER NOT NULL,
                in_progress INTEGER NOT NULL,
                disk_bytes INTEGER NOT NULL,
                body TEXT
            ) STRICT;
            CREATE INDEX IF NOT EXISTS records_by_start ON records (start_unix_ms);
            CREATE INDEX IF NOT EXISTS records_by_stream ON records (stream_id, start_unix_ms);
            CREATE INDEX IF NOT EXISTS records_by_channel ON records (channel_id, start_unix_ms);
            CREATE TABLE IF NOT EXISTS node_records (
                node TEXT NOT NULL,
                url TEXT NOT NULL,
                stream_id TEXT NOT NULL,
                channel_id TEXT NOT NULL,
                start_unix_ms INTEGER NOT NULL,
                end_unix_ms INTEGER NOT NULL,
                body TEXT NOT NULL,
                PRIMARY KEY (node, url)
            ) STRICT;
            CREATE INDEX IF NOT EXISTS node_records_by_start ON node_records (start_unix_ms);
            CREATE INDEX IF NOT EXISTS node_records_by_stream ON node_records (stream_id, start_unix_ms);
            CREATE INDEX IF NOT EXISTS node_records_by_channel ON node_records (channel_id, start_unix_ms);",
        )?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
        Ok(conn)
    }

    /// Runs `f` on the connection, opened first when needed; a damaged database is removed
    /// and made again once (it is only an index: the check fills it).
    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> std::io::Result<T> {
        let mut guard = self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.is_none() {
            if let Some(parent) = self.db.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let conn = match self.open() {
                Ok(c) => c,
                // Only a damaged file is replaced: one that is busy (another connection
                // holding it past the timeout) is someone's good index.
                Err(error) if damaged(&error) => {
                    tracing::warn!(db = %self.db.display(), %error, "the recordings index is damaged; it is made again from the directory");
                    for suffix in ["", "-wal", "-shm"] {
                        let _ = std::fs::remove_file(format!("{}{suffix}", self.db.display()));
                    }
                    self.open().map_err(sql)?
                }
                Err(error) => return Err(sql(error)),
            };
            *guard = Some(conn);
        }
        let conn = guard.as_mut().expect("opened above");
        f(conn).map_err(sql)
    }

    /// A file begun (no sidecar yet): listed as being written.
    pub fn opened(&self, file: &str, stream_id: &str, start_unix_ms: u64) -> std::io::Result<()> {
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO records (file, stream_id, channel_id, start_unix_ms, end_unix_ms, in_progress, disk_bytes, body)
                 VALUES (?1, ?2, NULL, ?3, ?3, 1, 0, NULL)
                 ON CONFLICT(file) DO UPDATE SET in_progress = 1, body = NULL",
            )?
            .execute(params![file, stream_id, int(start_unix_ms)])
            .map(drop)
        })
    }

    /// A file closed: its sidecar's `info`, and the bytes of file and sidecar on disk.
    pub fn closed(&self, info: &RecordInfo, disk_bytes: u64) -> std::io::Result<()> {
        self.with(|c| upsert_closed(c, info, disk_bytes))
    }

    /// A file deleted.
    pub fn removed(&self, file: &str) -> std::io::Result<()> {
        self.with(|c| c.prepare_cached("DELETE FROM records WHERE file = ?1")?.execute(params![file]).map(drop))
    }

    /// The recordings `filter` wants, oldest first, at most `limit`; `true` for a file being
    /// written (no channel nor end known yet: listed unless a channel is asked for).
    pub fn list(&self, filter: &RecordFilter, limit: usize) -> std::io::Result<Vec<(RecordInfo, bool)>> {
        let (conditions, values) = conditions(filter, true, limit);
        let rows = self.with(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT file, stream_id, start_unix_ms, in_progress, body FROM records WHERE {conditions} ORDER BY start_unix_ms LIMIT ?"
            ))?;
            let rows = stmt.query_map(rusqlite::params_from_iter(values), |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)? != 0, r.get::<_, Option<String>>(4)?))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for (file, stream_id, start, in_progress, body) in rows {
            let closed = body.as_deref().and_then(|b| serde_json::from_str::<RecordInfo>(b).ok());
            match closed {
                Some(info) if !in_progress => out.push((info, false)),
                _ => {
                    let bytes = std::fs::metadata(self.records.join(&file)).map_or(0, |m| m.len());
                    let start_unix_ms = u64::try_from(start).unwrap_or(0);
                    out.push((RecordInfo { file, stream_id, start_unix_ms, bytes, ..Default::default() }, true));
                }
            }
        }
        Ok(out)
    }

    /// A media node's recording for a plan, remembered (the oldest forgotten past
    /// `NODE_RECORDS_MAX`).
    pub fn node_recorded(&self, r: &NodeRecord) -> std::io::Result<()> {
        let body = serde_json::to_string(r).map_err(std::io::Error::other)?;
        self.with(|c| {
            let tx = c.transaction()?;
            tx.prepare_cached(
                "INSERT INTO node_records (node, url, stream_id, channel_id, start_unix_ms, end_unix_ms, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(node, url) DO UPDATE SET stream_id = excluded.stream_id, channel_id = excluded.channel_id,
                   start_unix_ms = excluded.start_unix_ms, end_unix_ms = excluded.end_unix_ms, body = excluded.body",
            )?
            .execute(params![r.node, r.url, r.stream_id, r.channel_id, int(r.start_unix_ms), int(r.start_unix_ms.saturating_add(r.duration_ms)), body])?;
            let count: i64 = tx.query_row("SELECT count(*) FROM node_records", [], |row| row.get(0))?;
            let excess = count - int(NODE_RECORDS_MAX as u64);
            if excess > 0 {
                tx.execute("DELETE FROM node_records WHERE rowid IN (SELECT rowid FROM node_records ORDER BY start_unix_ms LIMIT ?1)", params![excess])?;
            }
            tx.commit()
        })
    }

    /// The media nodes' recordings `filter` wants, oldest first, at most `limit`.
    pub fn node_records(&self, filter: &RecordFilter, limit: usize) -> std::io::Result<Vec<NodeRecord>> {
        let (conditions, values) = conditions(filter, false, limit);
        let bodies = self.with(|c| {
            c.prepare_cached(&format!("SELECT body FROM node_records WHERE {conditions} ORDER BY start_unix_ms LIMIT ?"))?
                .query_map(rusqlite::params_from_iter(values), |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(bodies.iter().filter_map(|b| serde_json::from_str(b).ok()).collect())
    }

    /// The closed recordings, oldest first (at most `RETENTION_SCAN_ENTRIES_MAX`), and the
    /// bytes of every file indexed (those being written as they are now).
    pub fn retention_candidates(&self) -> std::io::Result<(Vec<Candidate>, u64)> {
        let (closed, writing) = self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT file, start_unix_ms, end_unix_ms, disk_bytes, coalesce(channel_id, stream_id) FROM records
                 WHERE in_progress = 0 ORDER BY start_unix_ms LIMIT ?1",
            )?;
            let closed = stmt
                .query_map(params![int(super::retention::RETENTION_SCAN_ENTRIES_MAX as u64)], |r| {
                    Ok(Candidate {
                        file: r.get(0)?,
                        start_unix_ms: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                        end_unix_ms: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                        bytes: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                        channel_id: r.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let writing = c.prepare_cached("SELECT file FROM records WHERE in_progress = 1")?.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((closed, writing))
        })?;
        let written: u64 = writing.iter().map(|f| std::fs::metadata(self.records.join(f)).map_or(0, |m| m.len())).sum();
        let used = closed.iter().map(|c| c.bytes).fold(written, u64::saturating_add);
        Ok((closed, used))
    }

    /// Brings the index in line with the directory: files it does not know are added (from
    /// their sidecars, or as being written), rows whose file is gone are removed. What the
    /// directory gains or loses meanwhile is left to the writers' own calls.
    pub fn check(&self) -> std::io::Result<Checked> {
        // The rows first: a row made after this (a file begun meanwhile) is not one the
        // listing below could have missed.
        let known: HashMap<String, bool> = self.with(|c| {
            c.prepare_cached("SELECT file, in_progress FROM records")?.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? != 0)))?.collect()
        })?;
        // Names only: a file is looked at (its size, its sidecar) when the index lacks it.
        let mut on_disk: HashSet<String> = HashSet::new();
        match std::fs::read_dir(&self.records) {
            Ok(entries) => {
                for e in entries.flatten().take(RECORD_INDEX_CHECK_ENTRIES_MAX) {
                    let name = e.file_name().to_string_lossy().to_string();
                    if name.ends_with(".mp4") || name.ends_with(".json") {
                        on_disk.insert(name);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut checked = Checked::default();
        let mut closed = Vec::new();
        let mut writing = Vec::new();
        for name in &on_disk {
            let Some(stem) = name.strip_suffix(".mp4") else { continue };
            if !super::record::valid_file_name(name) {
                continue;
            }
            let sidecar = format!("{stem}.json");
            match (on_disk.contains(&sidecar), known.get(name)) {
                // Closed and known as closed.
                (true, Some(false)) => {}
                (true, _) => {
                    let size = |f: &str| std::fs::metadata(self.records.join(f)).map_or(0, |m| m.len());
                    if let Some(info) = read_sidecar(&self.records.join(name)).filter(|i| i.file == *name) {
                        closed.push((info, size(name).saturating_add(size(&sidecar))));
                    }
                }
                (false, None) => writing.push(name.clone()),
                (false, Some(_)) => {}
            }
        }
        let gone: Vec<&String> = known.keys().filter(|f| !on_disk.contains(*f)).collect();
        self.with(|c| {
            let tx = c.transaction()?;
            for (info, disk_bytes) in &closed {
                upsert_closed(&tx, info, *disk_bytes)?;
            }
            for name in &writing {
                let (stream_id, start) = name_parts(name).unwrap_or_default();
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO records (file, stream_id, channel_id, start_unix_ms, end_unix_ms, in_progress, disk_bytes, body)
                     VALUES (?1, ?2, NULL, ?3, ?3, 1, 0, NULL)",
                )?
                .execute(params![name, stream_id, int(start)])?;
            }
            for name in &gone {
                // Only if still there as read above: a writer may have changed it meanwhile.
                let still: Option<i64> = tx.query_row("SELECT 1 FROM records WHERE file = ?1", params![name], |r| r.get(0)).optional()?;
                if still.is_some() && !self.records.join(name.as_str()).exists() {
                    tx.execute("DELETE FROM records WHERE file = ?1", params![name])?;
                    checked.removed += 1;
                }
            }
            tx.commit()
        })?;
        checked.added = closed.len() + writing.len();
        Ok(checked)
    }
}

/// The WHERE conditions for `filter` and their values, then `limit`'s. Only the conditions
/// asked for are written (SQLite uses an index for `channel_id = ?`, not for `? IS NULL OR
/// channel_id = ?`: a channel's day took 220 ms of 100,800 rows that way). `own`: gmv's
/// records, where a file being written has no channel nor end yet (listed unless a channel
/// is asked for).
fn conditions(filter: &RecordFilter, own: bool, limit: usize) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut conditions = vec!["1"];
    let mut values = Vec::new();
    if let Some(s) = &filter.stream_id {
        conditions.push("stream_id = ?");
        values.push(Value::Text(s.clone()));
    }
    if let Some(c) = &filter.channel_id {
        conditions.push(if own { "channel_id = ? AND in_progress = 0" } else { "channel_id = ?" });
        values.push(Value::Text(c.clone()));
    }
    if let Some(from) = filter.from_ms {
        conditions.push(if own { "(in_progress = 1 OR end_unix_ms >= ?)" } else { "end_unix_ms >= ?" });
        values.push(Value::Integer(int(from)));
    }
    if let Some(to) = filter.to_ms {
        conditions.push("start_unix_ms <= ?");
        values.push(Value::Integer(int(to)));
    }
    values.push(Value::Integer(int(limit as u64)));
    (conditions.join(" AND "), values)
}

fn upsert_closed(c: &Connection, info: &RecordInfo, disk_bytes: u64) -> rusqlite::Result<()> {
    let body = serde_json::to_string(info).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    let end = info.start_unix_ms.saturating_add(info.duration_ms);
    c.prepare_cached(
        "INSERT INTO records (file, stream_id, channel_id, start_unix_ms, end_unix_ms, in_progress, disk_bytes, body)
         VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7)
         ON CONFLICT(file) DO UPDATE SET stream_id = excluded.stream_id, channel_id = excluded.channel_id,
           start_unix_ms = excluded.start_unix_ms, end_unix_ms = excluded.end_unix_ms, in_progress = 0,
           disk_bytes = excluded.disk_bytes, body = excluded.body",
    )?
    .execute(params![info.file, info.stream_id, info.channel_id, int(info.start_unix_ms), int(end), int(disk_bytes), body])
    .map(drop)
}

/// Checks the index against the directory every `RECORD_INDEX_CHECK_INTERVAL` (the first
/// check is start-up's), on this executor's blocking threads, while the engine runs.
pub async fn keep(index: std::sync::Arc<RecordIndex>) {
    loop {
        glommio::timer::sleep(RECORD_INDEX_CHECK_INTERVAL).await;
        let i = index.clone();
        match glommio::executor().spawn_blocking(move || i.check()).await {
            Ok(c) if c.added + c.removed > 0 => tracing::info!(added = c.added, removed = c.removed, "recordings index checked against the directory"),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "recordings index: check failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::plant_closed;
    use super::*;

    fn data_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("gmv-record-index-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(records_dir(&d)).unwrap();
        d
    }

    #[test]
    fn the_check_finds_what_the_directory_holds_and_the_writers_keep_it_current() {
        let data = data_dir("check");
        let records = records_dir(&data);
        let index = RecordIndex::for_data_dir(&data);
        for n in 0..40 {
            plant_closed(&records, "0100000001", 1_000 + n, None);
        }
        for n in 0..3 {
            plant_closed(&records, "0100000002", 5_000 + n * 2_000, Some("34020000001310000001"));
        }
        std::fs::write(records.join("0100000002_99000.mp4"), b"being written").unwrap();
        std::fs::write(records.join("notes.txt"), b"not a recording").unwrap();
        assert_eq!(index.check().unwrap(), Checked { added: 44, removed: 0 });
        assert_eq!(index.check().unwrap(), Checked::default(), "nothing new the second time");

        let stream = |s: &str| RecordFilter { stream_id: Some(s.into()), ..Default::default() };
        assert_eq!(index.list(&RecordFilter::default(), 100_000).unwrap().len(), 44);

        // The writer closes the file: listed with its sidecar, by channel too.
        let mut info = plant_closed(&records, "0100000002", 99_000, Some("34020000001310000001"));
        info.duration_ms = 4_000;
        index.closed(&info, 100).unwrap();
        let listed = index.list(&stream("0100000002"), 10).unwrap();
        assert_eq!((listed[3].0.start_unix_ms, listed[3].0.duration_ms, listed[3].1), (99_000, 4_000, false));
        let channel = RecordFilter { channel_id: Some("34020000001310000001".into()), from_ms: Some(102_000), ..Default::default() };
        assert_eq!(index.list(&channel, 10).unwrap().iter().map(|(r, _)| r.start_unix_ms).collect::<Vec<_>>(), vec![99_000]);
        // A file begun, one deleted by gmv, one removed by hand (found by the next check).
        index.opened("0100000003_200000.mp4", "0100000003", 200_000).unwrap();
        std::fs::write(records.join("0100000003_200000.mp4"), b"").unwrap();
        index.removed("0100000001_1000.mp4").unwrap();
        std::fs::remove_file(records.join("0100000001_1000.mp4")).unwrap();
        std::fs::remove_file(records.join("0100000001_1001.mp4")).unwrap();
        std::fs::remove_file(records.join("0100000001_1001.json")).unwrap();
        assert_eq!(index.list(&RecordFilter::default(), 100_000).unwrap().len(), 44);
        assert_eq!(index.check().unwrap(), Checked { added: 0, removed: 1 });
        let all = index.list(&RecordFilter::default(), 100_000).unwrap();
        assert_eq!(all.len(), 43);
        assert!(all.iter().any(|(r, p)| r.file == "0100000003_200000.mp4" && *p));

        // Another process's view (a second index over the same database) agrees.
        let other = RecordIndex::for_data_dir(&data);
        assert_eq!(other.list(&RecordFilter::default(), 100_000).unwrap().len(), 43);
        std::fs::remove_dir_all(&data).unwrap();
    }

    #[test]
    fn what_nodes_recorded_is_kept_and_listed_by_channel_and_time() {
        let data = data_dir("nodes");
        let index = RecordIndex::for_data_dir(&data);
        let recorded = |node: &str, channel: &str, start: u64| NodeRecord {
            node: node.into(),
            stream_id: "0100000007".into(),
            device_id: "34020000001320000001".into(),
            channel_id: channel.into(),
            start_unix_ms: start,
            duration_ms: 1_000,
            name: format!("{start}.mp4"),
            url: format!("record/rtp/0100000007/{start}.mp4"),
            bytes: 10,
        };
        for (node, channel, start) in [("a", "C1", 5_000), ("a", "C1", 1_000), ("b", "C2", 3_000), ("a", "C1", u64::MAX)] {
            index.node_recorded(&recorded(node, channel, start)).unwrap();
        }
        // The same file told twice (a hook repeated) is one.
        index.node_recorded(&recorded("a", "C1", 1_000)).unwrap();
        let c1 = RecordFilter { channel_id: Some("C1".into()), to_ms: Some(6_000), ..Default::default() };
        let listed = index.node_records(&c1, 10).unwrap();
        assert_eq!(listed.iter().map(|r| r.start_unix_ms).collect::<Vec<_>>(), vec![1_000, 5_000]);
        assert_eq!(listed[0], recorded("a", "C1", 1_000));
        let late = RecordFilter { from_ms: Some(4_500), ..Default::default() };
        assert_eq!(index.node_records(&late, 10).unwrap().len(), 2, "5 s on, and the one at the end of time");
        // A restart: another connection reads them back.
        let again = RecordIndex::for_data_dir(&data);
        assert_eq!(again.node_records(&RecordFilter::default(), 10).unwrap().len(), 4);
        std::fs::remove_dir_all(&data).unwrap();
    }

    #[test]
    fn a_damaged_database_is_made_again_from_the_directory() {
        let data = data_dir("damaged");
        let records = records_dir(&data);
        plant_closed(&records, "0100000001", 1_000, None);
        std::fs::write(data.join(RECORD_INDEX_DB), vec![0x5a; 8192]).unwrap();
        let index = RecordIndex::for_data_dir(&data);
        assert_eq!(index.check().unwrap().added, 1);
        assert_eq!(index.list(&RecordFilter::default(), 10).unwrap().len(), 1);
        std::fs::remove_dir_all(&data).unwrap();
    }

    #[test]
    fn retention_sees_closed_files_oldest_first_and_counts_those_being_written() {
        let data = data_dir("retention");
        let records = records_dir(&data);
        let index = RecordIndex::for_data_dir(&data);
        plant_closed(&records, "0100000001", 3_000, Some("34020000001310000001"));
        plant_closed(&records, "0100000002", 2_000, None);
        std::fs::write(records.join("0100000002_1000.mp4"), vec![0u8; 500]).unwrap();
        index.check().unwrap();
        let (candidates, used) = index.retention_candidates().unwrap();
        let sidecars: u64 = ["0100000001_3000.json", "0100000002_2000.json"].iter().map(|f| std::fs::metadata(records.join(f)).unwrap().len()).sum();
        assert_eq!(used, 3 + 3 + 500 + sidecars);
        let seen: Vec<(&str, Option<&str>)> = candidates.iter().map(|c| (c.file.as_str(), c.channel_id.as_deref())).collect();
        assert_eq!(seen, vec![("0100000002_2000.mp4", Some("0100000002")), ("0100000001_3000.mp4", Some("34020000001310000001"))]);
        std::fs::remove_dir_all(&data).unwrap();
    }
}
