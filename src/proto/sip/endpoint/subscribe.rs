//! Subscriptions the platform holds on devices (RFC 3265 SUBSCRIBE with MANSCDP bodies, GB/T
//! 28181 §9.7, §9.11): Catalog (channel changes), Alarm and MobilePosition. Made when a device
//! comes online, refreshed in their dialog before they expire, made again after a failure (with
//! backoff) or after the device registers anew, and ended with `Expires: 0` when the device is
//! removed. What the NOTIFYs carry is handled with the device's other MESSAGE/NOTIFY bodies.

use super::query::{QUERY_BACKOFF_FIRST, QUERY_BACKOFF_MAX};
use super::{Endpoint, Peer, transaction};
use crate::proto::sip::SipMsg;
use crate::proto::sip::text::encode_body;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Refreshed when less than this is left (or a tenth of the time granted, if more; at most
/// half of it).
pub const SUBSCRIBE_REFRESH_MARGIN: Duration = Duration::from_secs(30);
/// The shortest subscription asked for.
pub const SUBSCRIBE_EXPIRES_S_MIN: u32 = 10;
/// Interval asked of MobilePosition notifications.
pub const POSITION_INTERVAL_S: u32 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SubKind {
    Catalog,
    Alarm,
    MobilePosition,
}

impl SubKind {
    pub const ALL: [SubKind; 3] = [SubKind::Catalog, SubKind::Alarm, SubKind::MobilePosition];

    /// Its name in config and the API.
    pub fn name(self) -> &'static str {
        match self {
            SubKind::Catalog => "catalog",
            SubKind::Alarm => "alarm",
            SubKind::MobilePosition => "mobile_position",
        }
    }

    pub fn parse(s: &str) -> Option<SubKind> {
        SubKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// The SUBSCRIBE's `Event` package (alarms use `presence`, as GB/T 28181 asks).
    fn event(self) -> &'static str {
        match self {
            SubKind::Catalog => "Catalog",
            SubKind::Alarm => "presence",
            SubKind::MobilePosition => "presence",
        }
    }

    fn body(self, sn: u32, device_id: &str) -> String {
        let inner = match self {
            SubKind::Catalog => String::new(),
            SubKind::Alarm => {
                "<StartAlarmPriority>0</StartAlarmPriority>\r\n<EndAlarmPriority>0</EndAlarmPriority>\r\n<AlarmMethod>0</AlarmMethod>\r\n".into()
            }
            SubKind::MobilePosition => format!("<Interval>{POSITION_INTERVAL_S}</Interval>\r\n"),
        };
        let cmd = match self {
            SubKind::Catalog => "Catalog",
            SubKind::Alarm => "Alarm",
            SubKind::MobilePosition => "MobilePosition",
        };
        format!(
            "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Query>\r\n<CmdType>{cmd}</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{device_id}</DeviceID>\r\n{inner}</Query>\r\n"
        )
    }
}

#[derive(Debug, Clone)]
struct Dialog {
    call_id: String,
    from_tag: String,
    to_tag: Option<String>,
    cseq: u32,
    peer: Peer,
}

#[derive(Debug, Clone, Default)]
pub(super) struct Sub {
    dialog: Option<Dialog>,
    /// Granted until (refreshed before).
    expires_at: Option<Instant>,
    /// A SUBSCRIBE is out.
    pending: bool,
    failures: u32,
    retry_at: Option<Instant>,
    /// The device said it does not know this event package (489): not asked again until it
    /// registers anew.
    refused: bool,
}

#[derive(Debug, Default)]
pub(super) struct Subscriptions {
    subs: BTreeMap<(String, SubKind), Sub>,
}

impl Subscriptions {
    /// (kind, active) of a device's subscriptions, for the API.
    pub(super) fn of(&self, device_id: &str) -> Vec<(SubKind, bool)> {
        SubKind::ALL.into_iter().filter_map(|k| self.subs.get(&(device_id.to_string(), k)).map(|s| (k, s.expires_at.is_some()))).collect()
    }
}

impl Endpoint {
    /// The kinds configured for a device.
    fn subscribed_kinds(&self, device_id: &str) -> Vec<SubKind> {
        let names = self.cfg.device_subscribe.get(device_id).unwrap_or(&self.cfg.subscribe);
        names.iter().filter_map(|n| SubKind::parse(n)).collect()
    }

    /// A device came online: fresh subscriptions of every configured kind.
    pub(super) fn subscribe_all(&mut self, now: Instant, device_id: &str) {
        for kind in self.subscribed_kinds(device_id) {
            self.subscriptions.subs.insert((device_id.to_string(), kind), Sub::default());
            self.send_subscribe(now, device_id, kind, false);
        }
    }

    fn send_subscribe(&mut self, now: Instant, device_id: &str, kind: SubKind, unsubscribe: bool) {
        let Some(binding) = self.devices.get(device_id).and_then(|d| d.binding) else { return };
        let key = (device_id.to_string(), kind);
        let Some(sub) = self.subscriptions.subs.get(&key) else { return };
        let expires = if unsubscribe { 0 } else { self.cfg.subscribe_expires_s };
        let (call_id, from_tag, to_tag, cseq, peer) = match &sub.dialog {
            Some(d) => (d.call_id.clone(), d.from_tag.clone(), d.to_tag.clone(), d.cseq + 1, d.peer),
            None => (self.new_call_id(), self.rng.hex(), None, 1, binding),
        };
        let sn = self.new_sn();
        let body = encode_body(&kind.body(sn, device_id), encoding_rs::GB18030);
        let branch = self.rng.hex();
        let extra = vec![("Event", format!("{};id={sn}", kind.event())), ("Expires", expires.to_string())];
        let bytes = self.build_request(
            "SUBSCRIBE",
            device_id,
            peer,
            &call_id,
            &from_tag,
            to_tag.as_deref(),
            cseq,
            &branch,
            extra,
            Some(("Application/MANSCDP+xml", &body)),
        );
        let tx = transaction::TxKey { call_id: call_id.clone(), cseq, method: "SUBSCRIBE".into() };
        let purpose =
            if unsubscribe { transaction::Purpose::Fire } else { transaction::Purpose::Subscribe { device_id: device_id.to_string(), kind } };
        if !self.start_transaction(now, tx, peer, bytes, purpose, transaction::TRANSACTION_TIMEOUT) {
            return;
        }
        let sub = self.subscriptions.subs.get_mut(&key).expect("present");
        sub.pending = !unsubscribe;
        let dialog = Dialog { call_id, from_tag, to_tag, cseq, peer };
        sub.dialog = Some(dialog);
    }

    /// The answer to a SUBSCRIBE (None: none came).
    pub(super) fn subscribe_done(&mut self, now: Instant, device_id: &str, kind: SubKind, answer: Option<&SipMsg>) {
        let Some(sub) = self.subscriptions.subs.get_mut(&(device_id.to_string(), kind)) else { return };
        sub.pending = false;
        let status = answer.and_then(SipMsg::status).unwrap_or(0);
        if (200..300).contains(&status) {
            let answer = answer.expect("a status came with an answer");
            let granted = answer.expires().unwrap_or(self.cfg.subscribe_expires_s).min(self.cfg.subscribe_expires_s);
            if let Some(d) = sub.dialog.as_mut() {
                d.to_tag = d.to_tag.take().or_else(|| answer.to_tag());
            }
            sub.expires_at = Some(now + Duration::from_secs(u64::from(granted.max(1))));
            sub.failures = 0;
            sub.retry_at = None;
            return;
        }
        // A new dialog next time.
        sub.dialog = None;
        sub.expires_at = None;
        if status == 489 {
            sub.refused = true;
            return;
        }
        let backoff = QUERY_BACKOFF_FIRST.saturating_mul(1 << sub.failures.min(16)).min(QUERY_BACKOFF_MAX);
        sub.failures = sub.failures.saturating_add(1);
        sub.retry_at = Some(now + backoff);
        let error = if status == 0 {
            format!("{} subscription not answered", kind.name())
        } else {
            format!("{} subscription answered {status}", kind.name())
        };
        if let Some(d) = self.devices.get_mut(device_id) {
            d.last_error = Some(error);
        }
    }

    /// Once a second: refresh what is about to expire, retry what failed; forget the
    /// subscriptions of devices gone offline (they are made anew when it comes back).
    pub(super) fn tick_subscriptions(&mut self, now: Instant) {
        let keepalive = self.cfg.keepalive_interval;
        let mut due = Vec::new();
        let devices = &self.devices;
        self.subscriptions.subs.retain(|(id, _), _| devices.get(id).is_some_and(|d| d.online(now, keepalive)));
        for ((device_id, kind), sub) in &self.subscriptions.subs {
            if sub.pending || sub.refused {
                continue;
            }
            let refresh = sub.expires_at.is_some_and(|t| {
                let granted = Duration::from_secs(u64::from(self.cfg.subscribe_expires_s));
                t.saturating_duration_since(now) < SUBSCRIBE_REFRESH_MARGIN.max(granted / 10).min(granted / 2)
            });
            let retry = sub.expires_at.is_none() && sub.retry_at.is_some_and(|t| t <= now);
            if refresh || retry {
                due.push((device_id.clone(), *kind));
            }
        }
        for (device_id, kind) in due {
            self.send_subscribe(now, &device_id, kind, false);
        }
    }

    /// Ends a device's subscriptions (`Expires: 0` in each dialog).
    pub(super) fn unsubscribe_all(&mut self, now: Instant, device_id: &str) {
        for kind in SubKind::ALL {
            if self.subscriptions.subs.get(&(device_id.to_string(), kind)).is_some_and(|s| s.dialog.is_some()) {
                self.send_subscribe(now, device_id, kind, true);
            }
            self.subscriptions.subs.remove(&(device_id.to_string(), kind));
        }
    }
}
