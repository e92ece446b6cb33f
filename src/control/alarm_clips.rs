//! Alarm clips, the driver's side: an alarm of a channel (a device's, or one raised through the
//! API) has the shard holding the channel's stream record a clip around it
//! (`shard::alarm_clip`); a channel nobody plays is played for it (no pre-roll then). Off
//! unless `record.alarm_clip.post_s` > 0. Each clip that starts brings a snapshot of the
//! channel (`data_dir/alarm_snapshots/{alarm id}.jpg`, an `alarm_snapshot` event, served at
//! `GET /api/events/{id}/snapshot`), kept while the alarm is in the events history.

use super::Control;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

/// Where alarm snapshots are kept, under data_dir.
pub const ALARM_SNAPSHOTS_DIR: &str = "alarm_snapshots";
/// A channel played for its alarm has no picture yet: asked again this often, this long.
const SNAPSHOT_RETRY: Duration = Duration::from_millis(500);
const SNAPSHOT_WAIT: Duration = Duration::from_secs(10);
/// Directory entries read when the old snapshots are cleared (more than the history holds).
const SNAPSHOT_ENTRIES_READ_MAX: usize = super::events::EVENTS_HISTORY_MAX * 2;

/// The snapshot file of alarm event `alarm_id`.
pub fn snapshot_path(data_dir: &Path, alarm_id: u64) -> PathBuf {
    data_dir.join(ALARM_SNAPSHOTS_DIR).join(format!("{alarm_id}.jpg"))
}

/// Writes a snapshot and removes those of alarms the events history has forgotten (ids at or
/// below `forgotten_below`). Blocking.
fn save_snapshot(data_dir: &Path, alarm_id: u64, jpeg: &[u8], forgotten_below: u64) -> std::io::Result<usize> {
    let dir = data_dir.join(ALARM_SNAPSHOTS_DIR);
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!("{alarm_id}.jpg.tmp"));
    std::fs::write(&tmp, jpeg)?;
    std::fs::rename(&tmp, snapshot_path(data_dir, alarm_id))?;
    let mut removed = 0;
    for entry in std::fs::read_dir(&dir)?.take(SNAPSHOT_ENTRIES_READ_MAX).flatten() {
        let name = entry.file_name();
        let id = name.to_str().and_then(|n| n.strip_suffix(".jpg")).and_then(|n| n.parse::<u64>().ok());
        if id.is_some_and(|id| id < forgotten_below) && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

impl Control {
    /// Starts (or extends) the clip of an alarm, event `alarm_id`, of a device's channel.
    pub(super) fn alarm_clip(self: &Rc<Self>, device_id: &str, channel_id: &str, alarm_id: u64) {
        let post = Duration::from_secs(self.shard.config.record.alarm_clip.post_s);
        if post.is_zero() {
            return;
        }
        let live = self.endpoint().sessions().find(|s| s.kind == "live" && s.device_id == device_id && s.channel_id == channel_id).map(|s| s.ssrc);
        let (me, device_id, channel_id) = (self.clone(), device_id.to_string(), channel_id.to_string());
        glommio::spawn_local(async move {
            let ssrc = match live {
                Some(ssrc) => ssrc,
                None => match me.play(&device_id, &channel_id, me.device_transport(&device_id)).await {
                    Ok(session) => session.ssrc,
                    Err(error) => {
                        tracing::warn!(device_id, channel_id, alarm_id, %error, "alarm clip: the channel cannot be played");
                        return;
                    }
                },
            };
            match me.shard.alarm(ssrc, alarm_id, post).await {
                Some(started) => {
                    tracing::info!(device_id, channel_id, alarm_id, started, "alarm clip");
                    if started {
                        me.alarm_snapshot(ssrc, &device_id, &channel_id, alarm_id).await;
                    }
                }
                None => tracing::warn!(device_id, channel_id, alarm_id, "alarm clip: the stream is not on this engine's shards (a media node)"),
            }
        })
        .detach();
    }

    /// A snapshot of the channel for the alarm that started a clip: the stream's latest
    /// keyframe (the pre-roll's), or its first when the channel was played for the alarm.
    async fn alarm_snapshot(self: &Rc<Self>, ssrc: u32, device_id: &str, channel_id: &str, alarm_id: u64) {
        let deadline = std::time::Instant::now() + SNAPSHOT_WAIT;
        let jpeg = loop {
            match self.shard.snapshot(ssrc).await {
                Ok(jpeg) => break jpeg,
                Err(error) if std::time::Instant::now() >= deadline => {
                    tracing::warn!(device_id, channel_id, alarm_id, %error, "alarm snapshot: no picture");
                    return;
                }
                Err(_) => glommio::timer::sleep(SNAPSHOT_RETRY).await,
            }
        };
        let data_dir = self.shard.config.data_dir.clone();
        let forgotten_below = alarm_id.saturating_sub(super::events::EVENTS_HISTORY_MAX as u64);
        let bytes = jpeg.len();
        match glommio::executor().spawn_blocking(move || save_snapshot(&data_dir, alarm_id, &jpeg, forgotten_below)).await {
            Ok(removed) => {
                let data = serde_json::json!({ "alarm_id": alarm_id, "bytes": bytes, "url": format!("/api/events/{alarm_id}/snapshot") });
                self.events.publish("alarm_snapshot", Some(device_id), Some(channel_id), data);
                tracing::info!(device_id, channel_id, alarm_id, bytes, removed, "alarm snapshot");
            }
            Err(error) => tracing::warn!(device_id, channel_id, alarm_id, %error, "alarm snapshot not saved"),
        }
    }

    /// An alarm raised through the API (an operator, or a system without GB28181 alarms): an
    /// `alarm` event as a device's would be, and its clip. The event's id.
    pub fn raise_alarm(self: &Rc<Self>, device_id: &str, channel_id: &str, description: &str) -> u64 {
        let data = serde_json::json!({ "device_id": channel_id, "description": description, "source": "api" });
        let id = self.events.publish("alarm", Some(device_id), Some(channel_id), data);
        tracing::info!(device_id, channel_id, id, description, "alarm raised through the API");
        self.alarm_clip(device_id, channel_id, id);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_kept_while_its_alarm_is_remembered() {
        let dir = std::env::temp_dir().join(format!("gmv-alarm-snap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for id in [3, 5, 9] {
            assert_eq!(save_snapshot(&dir, id, b"jpeg", 0).unwrap(), 0);
        }
        std::fs::write(dir.join(ALARM_SNAPSHOTS_DIR).join("notes.txt"), b"x").unwrap();
        // Alarm 12 while events up to 5 are forgotten: 3 and 5 go, 9 stays, other files too.
        assert_eq!(save_snapshot(&dir, 12, b"jpeg2", 6).unwrap(), 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.join(ALARM_SNAPSHOTS_DIR)).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, vec!["12.jpg", "9.jpg", "notes.txt"]);
        assert_eq!(std::fs::read(snapshot_path(&dir, 12)).unwrap(), b"jpeg2");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
