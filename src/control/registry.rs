//! What the control plane knows, read-only, for the API and metrics: devices, their channels
//! and subscriptions, media sessions, SIP counters. A view over the endpoint borrowed for one
//! answer, so `http` reads the registry without reaching the endpoint (its transactions,
//! timers and mutations stay the driver's).

use crate::proto::sip::endpoint::{Counters, Device, Endpoint, Latencies, Session, SubKind};
use std::cell::Ref;
use std::time::Instant;

/// Held only while one answer is built: the driver cannot feed the endpoint meanwhile.
pub struct Registry<'a>(pub(super) Ref<'a, Endpoint>);

impl Registry<'_> {
    pub fn devices(&self) -> impl Iterator<Item = &Device> {
        self.0.devices()
    }

    pub fn device(&self, device_id: &str) -> Option<&Device> {
        self.0.device(device_id)
    }

    /// The device a channel belongs to (a device is its own channel too).
    pub fn owner_of(&self, channel_id: &str) -> Option<&Device> {
        self.0.devices().find(|d| d.channels.contains_key(channel_id) || d.device_id == channel_id)
    }

    pub fn device_count(&self) -> usize {
        self.0.device_count()
    }

    pub fn is_online(&self, device: &Device, now: Instant) -> bool {
        self.0.is_online(device, now)
    }

    pub fn subscriptions_of(&self, device_id: &str) -> Vec<(SubKind, bool)> {
        self.0.subscriptions_of(device_id)
    }

    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.0.sessions()
    }

    pub fn counters(&self) -> Counters {
        self.0.counters()
    }

    pub fn latencies(&self) -> Latencies {
        self.0.latencies()
    }

    /// The device's clock's offset from UTC (seconds), for times it is given and gives.
    pub fn utc_offset_for(&self, device_id: &str) -> i32 {
        self.0.config().utc_offset_for(device_id)
    }
}
