//! Alarm clips, the driver's side: an alarm of a channel (a device's, or one raised through the
//! API) has the shard holding the channel's stream record a clip around it
//! (`shard::alarm_clip`); a channel nobody plays is played for it (no pre-roll then). Off
//! unless `record.alarm_clip.post_s` > 0.

use super::Control;
use std::rc::Rc;
use std::time::Duration;

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
                Some(started) => tracing::info!(device_id, channel_id, alarm_id, started, "alarm clip"),
                None => tracing::warn!(device_id, channel_id, alarm_id, "alarm clip: the stream is not on this engine's shards (a media node)"),
            }
        })
        .detach();
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
