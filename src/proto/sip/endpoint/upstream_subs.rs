//! Subscriptions from above (GB/T 28181 §9.11, RFC 6665): an upstream SUBSCRIBEs to this
//! platform's catalog or alarms. A catalog subscription is answered with the shared catalog in
//! paced NOTIFYs, then a NOTIFY for each change a device reports to a shared channel (ADD, DEL,
//! UPDATE, ON, OFF...) and for each change of what is shared; an alarm subscription carries the
//! alarms of shared channels as NOTIFYs instead of MESSAGEs; a position subscription gets the
//! positions devices report for shared channels (or themselves). One subscription per upstream and
//! kind (a new one replaces the old: the upper platform restarted); each ends at its expiry, its
//! `Expires: 0`, or with its upstream.

use super::subscribe::SubKind;
use super::transaction::ServerKey;
use super::upstream::{Paced, Shared, UasDialog, UpstreamState, catalog_page_bodies};
use super::{Endpoint, Peer, Reply};
use crate::proto::sip::SipMsg;
use crate::proto::sip::build::response;
use crate::proto::sip::manscdp::{self, CatalogEvent, CatalogItem};
use crate::proto::sip::text::decode_body;
use std::time::{Duration, Instant};

/// The longest subscription granted, and the shortest.
pub const UPSTREAM_SUB_EXPIRES_S_MAX: u32 = 86_400;
pub const UPSTREAM_SUB_EXPIRES_S_MIN: u32 = 60;
/// Catalog changes carried in one NOTIFY.
const CHANGES_PER_NOTIFY: usize = super::upstream::CATALOG_ITEMS_PER_MESSAGE;

pub(super) struct UpstreamSub {
    upstream: String,
    kind: SubKind,
    dialog: UasDialog,
    /// The SN of their SUBSCRIBE, which our NOTIFYs carry.
    sn: u32,
    expires_at: Instant,
}

/// One catalog change of a device, as it goes up.
#[derive(Debug, Clone)]
pub(super) struct ChannelChange {
    pub event: CatalogEvent,
    pub item: CatalogItem,
}

impl UpstreamSub {
    pub(super) fn is_of(&self, upstream: &str) -> bool {
        self.upstream == upstream
    }
}

fn event_name(e: CatalogEvent) -> &'static str {
    match e {
        CatalogEvent::On => "ON",
        CatalogEvent::Off => "OFF",
        CatalogEvent::VideoLost => "VLOST",
        CatalogEvent::Defect => "DEFECT",
        CatalogEvent::Add => "ADD",
        CatalogEvent::Del => "DEL",
        CatalogEvent::Update => "UPDATE",
    }
}

impl Endpoint {
    /// SUBSCRIBE from upstream `i` (already checked: its address, registered).
    pub(super) fn on_upstream_subscribe(&mut self, now: Instant, from: Peer, msg: &SipMsg, i: usize, key: &ServerKey) -> Option<Reply> {
        let upstream = self.upstreams.list[i].cfg.id.clone();
        let call_id = msg.call_id().unwrap_or_default();
        let expires = msg.expires().unwrap_or(3600).min(UPSTREAM_SUB_EXPIRES_S_MAX);
        if let Some(tag) = msg.to_tag() {
            // A refresh or an end, in a subscription of ours.
            let Some(s) = self.upstreams.subs.iter().position(|s| s.upstream == upstream && s.dialog.call_id == call_id && s.dialog.our_tag == tag) else {
                return Reply::status(481);
            };
            if expires == 0 {
                self.upstreams.subs.remove(s);
            } else {
                self.upstreams.subs[s].expires_at = now + Duration::from_secs(u64::from(expires.max(UPSTREAM_SUB_EXPIRES_S_MIN)));
            }
            return Some(Reply { code: 200, reason: "OK", extra: vec![("Expires", expires.to_string())], body: None });
        }
        let (text, _) = decode_body(msg.body());
        let Ok(query) = manscdp::parse(&text) else {
            self.counters.malformed += 1;
            return Reply::status(400);
        };
        let kind = match query.cmd_type.as_str() {
            "Catalog" => SubKind::Catalog,
            "Alarm" => SubKind::Alarm,
            "MobilePosition" => SubKind::MobilePosition,
            _ => return Some(Reply { code: 489, reason: "Bad Event", extra: Vec::new(), body: None }),
        };
        if expires == 0 {
            return Some(Reply { code: 200, reason: "OK", extra: vec![("Expires", "0".into())], body: None });
        }
        let expires = expires.max(UPSTREAM_SUB_EXPIRES_S_MIN);
        let our_tag = self.rng.hex()[..10].to_string();
        let Some(dialog) = UasDialog::accept(msg, from, our_tag.clone()) else { return Reply::status(400) };
        // One per upstream and kind: the upper platform subscribing again replaced its own.
        self.upstreams.subs.retain(|s| !(s.upstream == upstream && s.kind == kind));
        let ok = response(msg, from.addr(), 200, "OK", &our_tag, &[("Expires", expires.to_string())], None);
        self.server.remember(now, key.clone(), ok.clone());
        self.send(from, ok);
        self.upstreams.subs.push(UpstreamSub {
            upstream,
            kind,
            dialog,
            sn: query.sn.unwrap_or(0),
            expires_at: now + Duration::from_secs(u64::from(expires)),
        });
        if kind == SubKind::Catalog {
            // The catalog as it is now, in NOTIFYs of its own.
            let cfg = self.upstreams.list[i].cfg.clone();
            let sn = query.sn.unwrap_or(0);
            let pages = self.catalog_bodies(&cfg, sn, now, "Notify");
            self.queue_pages(now, i, Paced::Notify(call_id), pages);
        }
        None
    }

    /// A NOTIFY in the subscription with `call_id` of upstream `i` (dropped when it ended).
    pub(super) fn send_sub_notify(&mut self, now: Instant, i: usize, call_id: &str, body: Vec<u8>) {
        let upstream = &self.upstreams.list[i].cfg.id;
        let Some(s) = self.upstreams.subs.iter_mut().find(|s| s.upstream == *upstream && s.dialog.call_id == call_id) else { return };
        let left = s.expires_at.saturating_duration_since(now).as_secs();
        // GB/T 28181 names alarm and position subscriptions `presence`.
        let event = if s.kind == SubKind::Catalog { "Catalog" } else { "presence" };
        let dialog = s.dialog.step();
        let extra = vec![("Event", event.to_string()), ("Subscription-State", format!("active;expires={left}"))];
        self.send_in_dialog(now, i, &dialog, "NOTIFY", extra, Some(("Application/MANSCDP+xml", &body)));
    }

    /// The subscription of `kind` upstream `i` holds, by its Call-ID.
    pub(super) fn upstream_sub(&self, i: usize, kind: SubKind) -> Option<String> {
        let id = &self.upstreams.list[i].cfg.id;
        self.upstreams.subs.iter().find(|s| s.upstream == *id && s.kind == kind).map(|s| s.dialog.call_id.clone())
    }

    /// The SN a subscription's NOTIFYs carry.
    fn sub_sn(&self, call_id: &str) -> u32 {
        self.upstreams.subs.iter().find(|s| s.dialog.call_id == call_id).map_or(0, |s| s.sn)
    }

    /// Changes a device reported to its channels: each catalog subscriber sharing some of them
    /// gets them in NOTIFYs (`CHANGES_PER_NOTIFY` each).
    pub(super) fn notify_catalog_changes(&mut self, now: Instant, device_id: &str, changes: &[ChannelChange]) {
        for i in 0..self.upstreams.list.len() {
            if self.upstreams.list[i].state != UpstreamState::Registered {
                continue;
            }
            let Some(call_id) = self.upstream_sub(i, SubKind::Catalog) else { continue };
            let cfg = self.upstreams.list[i].cfg.clone();
            let Some(device) = self.devices.get(device_id) else { continue };
            let items: Vec<String> = changes
                .iter()
                .filter(|c| cfg.shared.contains(&c.item.device_id))
                .map(|c| self.catalog_item(&cfg, device, &c.item, now, Some(event_name(c.event))))
                .collect();
            if items.is_empty() {
                continue;
            }
            let sn = self.sub_sn(&call_id);
            let bodies: Vec<Vec<u8>> = items.chunks(CHANGES_PER_NOTIFY).flat_map(|chunk| catalog_page_bodies(&cfg, sn, "Notify", chunk)).collect();
            self.queue_pages(now, i, Paced::Notify(call_id), bodies);
        }
    }

    /// What upstream `i` shares went from `before` to its present set: a catalog subscriber
    /// hears of the channels it gained (ADD) and lost (DEL).
    pub(super) fn notify_shared_changed(&mut self, now: Instant, i: usize, before: &Shared) {
        let Some(call_id) = self.upstream_sub(i, SubKind::Catalog) else { return };
        let cfg = self.upstreams.list[i].cfg.clone();
        let mut items = Vec::new();
        for d in self.devices.values() {
            for c in d.channels.values() {
                let (was, is) = (before.contains(&c.device_id), cfg.shared.contains(&c.device_id));
                if was != is {
                    items.push(self.catalog_item(&cfg, d, c, now, Some(if is { "ADD" } else { "DEL" })));
                }
            }
        }
        if items.is_empty() {
            return;
        }
        let sn = self.sub_sn(&call_id);
        let bodies: Vec<Vec<u8>> = items.chunks(CHANGES_PER_NOTIFY).flat_map(|chunk| catalog_page_bodies(&cfg, sn, "Notify", chunk)).collect();
        self.queue_pages(now, i, Paced::Notify(call_id), bodies);
    }

    /// A device's position (of itself or a channel, `target`): each upstream subscribed to
    /// positions and sharing it gets a MobilePosition NOTIFY.
    pub(super) fn notify_position(&mut self, now: Instant, device_id: &str, target: &str, p: &manscdp::Position) {
        for i in 0..self.upstreams.list.len() {
            if self.upstreams.list[i].state != UpstreamState::Registered {
                continue;
            }
            let Some(call_id) = self.upstream_sub(i, SubKind::MobilePosition) else { continue };
            let cfg = &self.upstreams.list[i].cfg;
            // The device's own position goes up when any of its channels is shared.
            let own = target == device_id && self.devices.get(device_id).is_some_and(|d| d.channels.keys().any(|c| cfg.shared.contains(c)));
            if !own && !cfg.shared.contains(target) {
                continue;
            }
            let optional = |tag: &str, v: Option<f64>| v.map(|v| format!("<{tag}>{v}</{tag}>\r\n")).unwrap_or_default();
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"{}\"?>\r\n<Notify>\r\n<CmdType>MobilePosition</CmdType>\r\n<SN>{}</SN>\r\n<DeviceID>{}</DeviceID>\r\n<Time>{}</Time>\r\n<Longitude>{}</Longitude>\r\n<Latitude>{}</Latitude>\r\n{}{}{}</Notify>\r\n",
                cfg.charset.label(),
                self.sub_sn(&call_id),
                manscdp::escape(cfg.channel_ids.up(target)),
                manscdp::escape(&p.time),
                p.longitude,
                p.latitude,
                optional("Speed", p.speed),
                optional("Direction", p.direction),
                optional("Altitude", p.altitude),
            );
            let body = cfg.charset.encode(&xml);
            self.send_sub_notify(now, i, &call_id, body);
        }
    }

    /// Subscriptions past their expiry, and those of upstreams gone or lost, end.
    pub(super) fn expire_upstream_subs(&mut self, now: Instant) {
        let live: Vec<String> = self.upstreams.list.iter().filter(|u| u.state == UpstreamState::Registered).map(|u| u.cfg.id.clone()).collect();
        self.upstreams.subs.retain(|s| s.expires_at > now && live.contains(&s.upstream));
    }

    pub(super) fn upstream_subs_next_timeout(&self) -> Option<Instant> {
        self.upstreams.subs.iter().map(|s| s.expires_at).min()
    }
}
