//! Registered devices and their channels as the endpoint keeps them. What is persisted
//! (`Device` serialised) is what an operator expects back after a restart: ids, info,
//! channels, the last address; liveness and bindings are runtime state from `now`.

use super::Peer;
use super::query::QuerySlots;
use crate::proto::sip::manscdp::{CatalogEvent, CatalogItem, DeviceInfo};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Devices kept; registrations from new devices beyond this are refused (503).
pub const DEVICES_MAX: usize = 100_000;
/// Channels kept per device (large NVRs have a few hundred).
pub const CHANNELS_PER_DEVICE_MAX: usize = 10_000;
/// Keepalive intervals a device may miss before it is offline.
pub const KEEPALIVES_MISSED_MAX: u32 = 3;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Device {
    pub device_id: String,
    pub info: DeviceInfo,
    pub channels: BTreeMap<String, CatalogItem>,
    /// Unix seconds of the last successful REGISTER.
    pub registered_at: u64,
    /// Where signalling went last (source of its authenticated REGISTER).
    pub addr: Option<SocketAddr>,
    /// Why the last query or answer failed (kept until one succeeds).
    #[serde(default)]
    pub last_error: Option<String>,
    /// Where it is, from its latest MobilePosition notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<crate::proto::sip::manscdp::Position>,
    /// The GB/T 28181 version it said it speaks (`X-GB-Ver`: 2.0 is 2016, 3.0 is 2022).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gb_version: Option<String>,
    /// Its latest DeviceStatus answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<crate::proto::sip::manscdp::DeviceStatus>,
    /// The address or connection its authenticated REGISTER came from: the only one whose
    /// messages are taken as this device's, and where requests to it go.
    #[serde(skip)]
    pub binding: Option<Peer>,
    #[serde(skip)]
    pub live: Option<Liveness>,
    /// Catalog being merged from several MESSAGEs (SumNum split).
    #[serde(skip)]
    pub catalog_merge: Option<CatalogMerge>,
    #[serde(skip)]
    pub queries: QuerySlots,
    /// Online as of the last check (for offline edges).
    #[serde(skip)]
    pub was_online: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    pub expires_at: Instant,
    pub last_seen: Instant,
}

#[derive(Debug, Clone, Default)]
pub struct CatalogMerge {
    pub sn: Option<u32>,
    pub expected: usize,
    pub items: BTreeMap<String, CatalogItem>,
    /// Items left out (ids that could break a message); they still count toward SumNum.
    pub dropped: usize,
}

impl Device {
    pub fn new(device_id: &str) -> Device {
        Device { device_id: device_id.into(), ..Device::default() }
    }

    /// It said (`X-GB-Ver` 3.x) it speaks GB/T 28181-2022.
    pub fn speaks_2022(&self) -> bool {
        self.gb_version.as_deref().is_some_and(|v| v.starts_with('3'))
    }

    /// Registered, not expired, heard from within the keepalive allowance, and reachable.
    pub fn online(&self, now: Instant, keepalive: Duration) -> bool {
        self.binding.is_some() && self.live.is_some_and(|l| now < l.expires_at && now.duration_since(l.last_seen) < keepalive * KEEPALIVES_MISSED_MAX)
    }

    /// Registered and not expired (a device may be late with keepalives yet still talk).
    pub fn registered(&self, now: Instant) -> bool {
        self.binding.is_some() && self.live.is_some_and(|l| now < l.expires_at)
    }

    /// When `online` turns false without new input.
    pub fn offline_at(&self, keepalive: Duration) -> Option<Instant> {
        self.live.map(|l| l.expires_at.min(l.last_seen + keepalive * KEEPALIVES_MISSED_MAX))
    }

    /// Merges one Catalog message; Some(complete) when the catalog was committed.
    /// A new SN starts a new merge (a re-query), so answers to an old query do not mix in.
    pub fn merge_catalog(&mut self, sn: Option<u32>, sum_num: usize, items: Vec<CatalogItem>) -> Option<bool> {
        if self.catalog_merge.as_ref().is_some_and(|m| m.sn != sn) {
            self.catalog_merge = None;
        }
        let merge = self.catalog_merge.get_or_insert_with(|| CatalogMerge { sn, ..CatalogMerge::default() });
        merge.expected = sum_num.max(merge.expected);
        for item in items {
            if merge.items.len() >= CHANNELS_PER_DEVICE_MAX {
                break;
            }
            // Channel ids go into INVITEs: ones that could break a message are left out.
            if !super::valid_id(&item.device_id) {
                merge.dropped += 1;
                continue;
            }
            merge.items.insert(item.device_id.clone(), item);
        }
        if merge.items.len() + merge.dropped >= merge.expected || merge.items.len() >= CHANNELS_PER_DEVICE_MAX {
            let done = self.catalog_merge.take().expect("merge in progress");
            self.channels = done.items;
            return Some(true);
        }
        None
    }

    /// Applies a catalog notification: statuses, channels added, updated and removed. Refused
    /// whole (None) when an added channel's id could break a message or the channel table
    /// would overflow, so a bad notification changes nothing; else how many channels changed.
    pub fn apply_catalog_changes(&mut self, changes: Vec<(CatalogEvent, CatalogItem)>) -> Option<usize> {
        let added = changes
            .iter()
            .filter(|(e, i)| matches!(e, CatalogEvent::Add | CatalogEvent::Update) && !self.channels.contains_key(&i.device_id))
            .count();
        if changes.iter().any(|(_, i)| !super::valid_id(&i.device_id)) || self.channels.len() + added > CHANNELS_PER_DEVICE_MAX {
            return None;
        }
        let mut changed = 0;
        for (event, item) in changes {
            changed += match event {
                CatalogEvent::Add | CatalogEvent::Update => {
                    self.channels.insert(item.device_id.clone(), item);
                    1
                }
                CatalogEvent::Del => usize::from(self.channels.remove(&item.device_id).is_some()),
                _ => match self.channels.get_mut(&item.device_id) {
                    Some(c) => {
                        c.status = event.status().unwrap_or_default().to_string();
                        1
                    }
                    None => 0,
                },
            };
        }
        Some(changed)
    }

    /// Commits what a merge holds (the query timed out): better some channels than none.
    pub fn commit_partial_catalog(&mut self) -> Option<(usize, usize)> {
        let merge = self.catalog_merge.take()?;
        if merge.items.is_empty() {
            return None;
        }
        let got = (merge.items.len(), merge.expected);
        self.channels = merge.items;
        Some(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str) -> CatalogItem {
        CatalogItem { device_id: id.into(), name: format!("cam {id}"), ..Default::default() }
    }

    #[test]
    fn catalog_split_over_messages_is_merged_and_a_new_sn_restarts() {
        let mut d = Device::default();
        assert_eq!(d.merge_catalog(Some(1), 3, vec![item("a"), item("b")]), None);
        assert!(d.channels.is_empty());
        assert_eq!(d.merge_catalog(Some(1), 3, vec![item("b"), item("c")]), Some(true));
        assert_eq!(d.channels.keys().collect::<Vec<_>>(), vec!["a", "b", "c"]);
        // A stale part of query 2, then query 3 answers in full.
        assert_eq!(d.merge_catalog(Some(2), 2, vec![item("x")]), None);
        assert_eq!(d.merge_catalog(Some(3), 1, vec![item("y")]), Some(true));
        assert_eq!(d.channels.keys().collect::<Vec<_>>(), vec!["y"]);
        // SumNum 0 (an empty NVR) commits an empty catalog.
        assert_eq!(d.merge_catalog(Some(4), 0, vec![]), Some(true));
        assert!(d.channels.is_empty());
    }
}
