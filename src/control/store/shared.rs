//! The device registry in PostgreSQL, shared by several controls: one row per device (its
//! JSON, or NULL once removed, with a version from one sequence so a standby reads only what
//! changed), and a one-row lease naming the active control. Only the lease holder writes, and
//! each write checks the lease in its own transaction (a fence: a control that lost the lease
//! while paused cannot overwrite its successor's registry). Times are the database's, so the
//! controls' clocks need not agree. The record plans and which channel follows which are one
//! more row (their JSON, a few hundred KB at most: `record_plan::PLANS_MAX` plans and
//! `PLAN_CHANNELS_MAX` channels), written and followed the same way. Called on blocking
//! threads only.

use crate::proto::sip::endpoint::{DEVICES_MAX, Device, RegistryChanges};
use postgres::{Client, NoTls};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Connecting, and any one statement, give up after this long (a database that stopped
/// answering must not hold the lease loop past its deadline for long).
pub const DB_TIMEOUT: Duration = Duration::from_secs(5);
/// Devices read in one round trip when following the registry.
pub const ROWS_PER_READ_MAX: usize = 10_000;
/// Serialises the schema's creation between controls starting at once.
const SCHEMA_LOCK_KEY: i64 = 28181;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS gmv_lease (
    id int PRIMARY KEY CHECK (id = 1),
    holder text NOT NULL,
    epoch bigint NOT NULL,
    expires_at timestamptz NOT NULL);
INSERT INTO gmv_lease VALUES (1, '', 0, 'epoch') ON CONFLICT (id) DO NOTHING;
CREATE SEQUENCE IF NOT EXISTS gmv_devices_version;
CREATE TABLE IF NOT EXISTS gmv_devices (
    id text PRIMARY KEY,
    body text,
    version bigint NOT NULL,
    epoch bigint NOT NULL);
CREATE INDEX IF NOT EXISTS gmv_devices_by_version ON gmv_devices (version);
CREATE TABLE IF NOT EXISTS gmv_record_plans (
    id int PRIMARY KEY CHECK (id = 1),
    body text NOT NULL,
    version bigint NOT NULL,
    epoch bigint NOT NULL);";

#[derive(Debug)]
pub enum DbError {
    /// The database could not be reached or refused the statement.
    Db(postgres::Error),
    /// This control does not hold the lease (it never won it, or lost it): nothing written.
    Fenced,
    /// A row that is not a device's JSON.
    Row(String),
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbError::Db(e) => write!(f, "PostgreSQL: {e}"),
            DbError::Fenced => f.write_str("this control does not hold the registry lease: not written"),
            DbError::Row(m) => write!(f, "registry row: {m}"),
        }
    }
}

impl std::error::Error for DbError {}

impl From<postgres::Error> for DbError {
    fn from(e: postgres::Error) -> Self {
        DbError::Db(e)
    }
}

/// What a try for the lease found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lead {
    /// This control holds it now, as `epoch` (one more than the last holder's).
    Won { epoch: u64 },
    /// Another control holds it, for `expires_in_ms` more unless renewed.
    Held { holder: String, expires_in_ms: u64 },
}

/// Devices changed since a version, and the version to ask from next.
#[derive(Debug, Default)]
pub struct Followed {
    pub changes: RegistryChanges,
    pub version: u64,
    /// Rows that did not read as a device (left out).
    pub skipped: usize,
    /// More rows wait past this read (`ROWS_PER_READ_MAX`).
    pub more: bool,
}

/// One connection, made again after it broke.
struct Conn {
    config: postgres::Config,
    client: Option<Client>,
}

impl Conn {
    fn with<R>(&mut self, f: impl FnOnce(&mut Client) -> Result<R, DbError>) -> Result<R, DbError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let mut client = self.config.connect(NoTls)?;
            // NOTICEs ("already exists, skipping") are not worth a log line each turn.
            client.batch_execute(&format!("SET statement_timeout = {}; SET client_min_messages = warning", DB_TIMEOUT.as_millis()))?;
            self.client = Some(client);
        }
        let client = self.client.as_mut().expect("connected above");
        let result = f(client);
        if client.is_closed() {
            self.client = None;
        }
        result
    }
}

/// The shared registry, as one control sees it: two connections (the lease's renewals never
/// wait behind a large write) and the epoch of the lease it holds (0: none).
pub struct Shared {
    instance: String,
    lease_s: u64,
    lease: Mutex<Conn>,
    writer: Mutex<Conn>,
    epoch: AtomicU64,
    schema_ready: AtomicBool,
}

fn lock(conn: &Mutex<Conn>) -> std::sync::MutexGuard<'_, Conn> {
    conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// Nothing is connected yet: the first call connects (and creates the tables if missing).
    pub fn new(url: &str, instance: &str, lease_s: u64) -> Result<Shared, String> {
        let mut config: postgres::Config = url.parse().map_err(|e| format!("registry.postgres: {e}"))?;
        // A statement the server never acknowledges (its host gone, no reset) fails after
        // DB_TIMEOUT too, instead of the kernel's many minutes of retransmission.
        config.connect_timeout(DB_TIMEOUT).tcp_user_timeout(DB_TIMEOUT).application_name("gmv");
        let conn = || Mutex::new(Conn { config: config.clone(), client: None });
        Ok(Shared { instance: instance.to_string(), lease_s, lease: conn(), writer: conn(), epoch: AtomicU64::new(0), schema_ready: AtomicBool::new(false) })
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The lease epoch this control holds (0: none).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Creates the tables where they are missing (once per process; controls starting
    /// together take turns).
    pub fn create_schema(&self) -> Result<(), DbError> {
        if self.schema_ready.load(Ordering::SeqCst) {
            return Ok(());
        }
        lock(&self.writer).with(|c| {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK_KEY])?;
            tx.batch_execute(SCHEMA)?;
            tx.commit()?;
            Ok(())
        })?;
        self.schema_ready.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Takes the lease if nobody holds it (or its holder let it run out).
    pub fn try_lead(&self) -> Result<Lead, DbError> {
        let lease_s = self.lease_s as f64;
        let lead = lock(&self.lease).with(|c| {
            let won = c.query_opt(
                "UPDATE gmv_lease SET holder = $1, epoch = epoch + 1, expires_at = now() + make_interval(secs => $2)
                 WHERE id = 1 AND expires_at < now() RETURNING epoch",
                &[&self.instance, &lease_s],
            )?;
            if let Some(row) = won {
                return Ok(Lead::Won { epoch: row.get::<_, i64>(0) as u64 });
            }
            let row = c.query_one(
                "SELECT holder, GREATEST(0, EXTRACT(EPOCH FROM expires_at - now()) * 1000)::bigint FROM gmv_lease WHERE id = 1",
                &[],
            )?;
            Ok(Lead::Held { holder: row.get(0), expires_in_ms: row.get::<_, i64>(1) as u64 })
        })?;
        if let Lead::Won { epoch } = lead {
            self.epoch.store(epoch, Ordering::SeqCst);
        }
        Ok(lead)
    }

    /// Extends the lease held as `epoch`; false when it is no longer this control's (it ran
    /// out and another took it).
    pub fn renew(&self) -> Result<bool, DbError> {
        let epoch = self.epoch() as i64;
        let renewed = lock(&self.lease).with(|c| {
            Ok(c.execute(
                "UPDATE gmv_lease SET expires_at = now() + make_interval(secs => $3)
                 WHERE id = 1 AND holder = $1 AND epoch = $2 AND expires_at >= now()",
                &[&self.instance, &epoch, &(self.lease_s as f64)],
            )? == 1)
        })?;
        if !renewed {
            self.epoch.store(0, Ordering::SeqCst);
        }
        Ok(renewed)
    }

    /// Lets the lease go now (a graceful stop): a standby takes over at its next try.
    pub fn release(&self) -> Result<(), DbError> {
        let epoch = self.epoch.swap(0, Ordering::SeqCst) as i64;
        if epoch == 0 {
            return Ok(());
        }
        lock(&self.lease).with(|c| {
            c.execute("UPDATE gmv_lease SET expires_at = now() WHERE id = 1 AND holder = $1 AND epoch = $2", &[&self.instance, &epoch])?;
            Ok(())
        })
    }

    /// Writes `changes` in one transaction, if this control still holds the lease; how many
    /// rows changed.
    pub fn apply(&self, changes: &RegistryChanges) -> Result<usize, DbError> {
        let epoch = self.epoch() as i64;
        if epoch == 0 {
            return Err(DbError::Fenced);
        }
        let ids: Vec<&str> = changes.changed.iter().map(|d| d.device_id.as_str()).collect();
        let bodies = changes.changed.iter().map(serde_json::to_string).collect::<Result<Vec<_>, _>>().map_err(|e| DbError::Row(e.to_string()))?;
        lock(&self.writer).with(|c| {
            let mut tx = c.transaction()?;
            self.hold_lease(&mut tx, epoch)?;
            let mut n = tx.execute(
                "INSERT INTO gmv_devices (id, body, version, epoch)
                 SELECT id, body, nextval('gmv_devices_version'), $3 FROM unnest($1::text[], $2::text[]) AS t(id, body)
                 ON CONFLICT (id) DO UPDATE SET body = excluded.body, version = excluded.version, epoch = excluded.epoch",
                &[&ids, &bodies, &epoch],
            )?;
            n += tx.execute(
                "UPDATE gmv_devices SET body = NULL, version = nextval('gmv_devices_version'), epoch = $2
                 WHERE id = ANY($1) AND body IS NOT NULL",
                &[&changes.removed, &epoch],
            )?;
            tx.commit()?;
            Ok(n as usize)
        })
    }

    /// The fence of every write: the lease row, still this control's at `epoch`, locked until
    /// `tx` commits (a takeover waits for the write, and a write after a takeover finds the
    /// epoch changed).
    fn hold_lease(&self, tx: &mut postgres::Transaction<'_>, epoch: i64) -> Result<(), DbError> {
        let held = tx.query_opt(
            "SELECT 1 FROM gmv_lease WHERE id = 1 AND holder = $1 AND epoch = $2 AND expires_at > now() FOR UPDATE",
            &[&self.instance, &epoch],
        )?;
        if held.is_none() {
            return Err(DbError::Fenced);
        }
        Ok(())
    }

    /// Devices written (or removed) after `version`, oldest first, at most `ROWS_PER_READ_MAX`.
    /// Versions commit in order: every write holds the lease row's lock while it takes them.
    pub fn follow(&self, version: u64) -> Result<Followed, DbError> {
        lock(&self.writer).with(|c| {
            let rows = c.query(
                "SELECT id, body, version FROM gmv_devices WHERE version > $1 ORDER BY version LIMIT $2",
                &[&(version as i64), &(ROWS_PER_READ_MAX as i64)],
            )?;
            let mut followed = Followed { version, more: rows.len() == ROWS_PER_READ_MAX, ..Default::default() };
            for row in rows {
                followed.version = row.get::<_, i64>(2) as u64;
                match row.get::<_, Option<String>>(1) {
                    None => followed.changes.removed.push(row.get(0)),
                    Some(body) => match serde_json::from_str::<Device>(&body) {
                        Ok(d) => followed.changes.changed.push(d),
                        Err(_) => followed.skipped += 1,
                    },
                }
            }
            Ok(followed)
        })
    }

    /// Writes the record plans (their JSON, whole), if this control still holds the lease; the
    /// row's version now.
    pub fn save_record_plans(&self, body: &str) -> Result<u64, DbError> {
        let epoch = self.epoch() as i64;
        if epoch == 0 {
            return Err(DbError::Fenced);
        }
        lock(&self.writer).with(|c| {
            let mut tx = c.transaction()?;
            self.hold_lease(&mut tx, epoch)?;
            let row = tx.query_one(
                "INSERT INTO gmv_record_plans (id, body, version, epoch) VALUES (1, $1, 1, $2)
                 ON CONFLICT (id) DO UPDATE SET body = excluded.body, version = gmv_record_plans.version + 1, epoch = excluded.epoch
                 RETURNING version",
                &[&body, &epoch],
            )?;
            tx.commit()?;
            Ok(row.get::<_, i64>(0) as u64)
        })
    }

    /// The record plans' JSON and version when written after `version` (None: not since; from
    /// 0, None is a registry whose plans were never written).
    pub fn record_plans_after(&self, version: u64) -> Result<Option<(String, u64)>, DbError> {
        lock(&self.writer).with(|c| {
            let row = c.query_opt("SELECT body, version FROM gmv_record_plans WHERE id = 1 AND version > $1", &[&(version as i64)])?;
            Ok(row.map(|r| (r.get(0), r.get::<_, i64>(1) as u64)))
        })
    }

    /// Every device now in the registry (for tools and tests), at most `DEVICES_MAX`.
    pub fn devices(&self) -> Result<Vec<Device>, DbError> {
        lock(&self.writer).with(|c| {
            let rows = c.query("SELECT body FROM gmv_devices WHERE body IS NOT NULL ORDER BY id LIMIT $1", &[&(DEVICES_MAX as i64)])?;
            rows.iter().map(|r| serde_json::from_str::<Device>(r.get(0)).map_err(|e| DbError::Row(e.to_string()))).collect()
        })
    }
}
