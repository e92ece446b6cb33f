//! REGISTER: digest challenges keyed by (device, source), the username bound to the From
//! user, and the binding of a device to the address or connection it authenticated from.

use super::challenge::{ChallengeKey, Issue};
use super::device::{DEVICES_MAX, Device, Liveness};
use super::{Endpoint, Event, Peer, REGISTER_EXPIRES_DEFAULT_S, REGISTER_EXPIRES_MAX_S, Refusal, Reply};
use crate::proto::sip::SipMsg;
use crate::proto::sip::digest::DigestCredentials;
use crate::proto::sip::gbtime::gb_date;
use std::time::{Duration, Instant};

impl Endpoint {
    pub(super) fn on_register(&mut self, now: Instant, from: Peer, msg: &SipMsg, registered: &mut Option<String>) -> Option<Reply> {
        self.counters.registers += 1;
        let Some(device_id) = msg.from_user().filter(|id| super::valid_id(id)) else {
            self.counters.malformed += 1;
            self.emit(Event::Malformed { peer: from, error: "REGISTER without a valid device id in From".into() });
            return Reply::status(400);
        };
        if !self.devices.contains_key(&device_id) && self.devices.len() >= DEVICES_MAX {
            return self.refuse_register(from, &device_id, Refusal::RegistryFull, 503);
        }
        let key = ChallengeKey { device_id: device_id.clone(), source: from.addr() };
        let Some(credentials) = msg.header("Authorization").as_deref().and_then(DigestCredentials::parse) else {
            return self.challenge(now, from, key, false, false);
        };
        // The password is looked up by the From user, so the hash must be over that user.
        if credentials.username != device_id {
            self.counters.auth_failures += 1;
            return self.refuse_register(from, &device_id, Refusal::UsernameMismatch, 403);
        }
        let nonce_ok = self.challenges.get(&key, now).is_some_and(|c| c.nonce == credentials.nonce);
        if !nonce_ok {
            // Expired, never issued, or issued to another source: a fresh one, no failure.
            self.emit(Event::Refused { peer: from, method: "REGISTER".into(), device_id: Some(device_id.clone()), reason: Refusal::StaleNonce });
            return self.challenge(now, from, key, false, true);
        }
        let password = self.cfg.password_for(&device_id).to_string();
        if credentials.realm != self.cfg.domain || !credentials.verify("REGISTER", &password) {
            self.counters.auth_failures += 1;
            self.emit(Event::Refused { peer: from, method: "REGISTER".into(), device_id: Some(device_id.clone()), reason: Refusal::WrongPassword });
            return self.challenge(now, from, key, true, false);
        }
        self.challenges.remove(&key);
        let expires = msg.expires().unwrap_or(REGISTER_EXPIRES_DEFAULT_S).min(REGISTER_EXPIRES_MAX_S);
        let keepalive = self.cfg.keepalive_interval;
        let unix_s = self.unix_ms(now) / 1000;
        let known = self.devices.contains_key(&device_id);
        let d = self.devices.entry(device_id.clone()).or_insert_with(|| Device::new(&device_id));
        let was_online = d.online(now, keepalive);
        // A refresh from where the device already was changes nothing worth a rewrite of the
        // registry file (at 100k devices that would be one a second); `registered_at` is kept
        // in memory and saved with the next real change.
        let worth_saving = !known || expires == 0 || !was_online || d.addr != Some(from.addr());
        if expires == 0 {
            d.live = None;
            d.was_online = false;
            d.queries.clear();
            self.set_binding(&device_id, None);
            self.emit(Event::Unregistered { device_id: device_id.clone() });
        } else {
            d.live = Some(Liveness { expires_at: now + Duration::from_secs(u64::from(expires)), last_seen: now });
            d.addr = Some(from.addr());
            d.registered_at = unix_s;
            self.set_binding(&device_id, Some(from));
            let d = self.devices.get_mut(&device_id).expect("just inserted");
            d.was_online = true;
            if !was_online {
                d.queries.ask_all(now);
                *registered = Some(device_id.clone());
                self.emit(Event::Registered { device_id: device_id.clone(), peer: from, expires_s: expires });
            }
        }
        if worth_saving {
            self.registry_changed(&device_id);
        }
        let mut extra = vec![("Expires", expires.to_string()), ("Date", gb_date(self.unix_ms(now)))];
        // GB/T 28181-2022 devices say their version; the answer says which one this platform
        // speaks with them (3.0 to 2022 devices, 2.0 to 2016 ones).
        if let Some(version) = gb_version(msg) {
            let speaks = if version.starts_with(|c: char| c.is_ascii_digit() && c >= '3') { "3.0" } else { "2.0" };
            extra.push(("X-GB-Ver", speaks.to_string()));
            if let Some(d) = self.devices.get_mut(&device_id) {
                d.gb_version = Some(version);
            }
        }
        if let Some(contact) = msg.header("Contact") {
            extra.push(("Contact", contact));
        }
        Some(Reply { code: 200, reason: "OK", extra, body: None })
    }

    fn refuse_register(&mut self, from: Peer, device_id: &str, reason: Refusal, code: u16) -> Option<Reply> {
        self.counters.refused += 1;
        self.emit(Event::Refused { peer: from, method: "REGISTER".into(), device_id: Some(device_id.to_string()), reason });
        Reply::status(code)
    }

    /// 401 with a fresh nonce, 403 once this source failed too often, or 503 with Retry-After
    /// when the source is over its challenge rate (warned once each time it bites).
    fn challenge(&mut self, now: Instant, from: Peer, key: ChallengeKey, failed: bool, stale: bool) -> Option<Reply> {
        let device_id = key.device_id.clone();
        let rng = &mut self.rng;
        match self.challenges.issue(now, key, failed, || rng.nonce()) {
            Issue::Challenge { nonce } => {
                let realm = &self.cfg.domain;
                let qop = if self.cfg.digest_qop { ", qop=\"auth\"" } else { "" };
                let stale = if stale { ", stale=TRUE" } else { "" };
                let www = format!("Digest realm=\"{realm}\", nonce=\"{nonce}\", algorithm=MD5{qop}{stale}");
                Some(Reply { code: 401, reason: "Unauthorized", extra: vec![("WWW-Authenticate", www)], body: None })
            }
            Issue::Refuse { .. } => self.refuse_register(from, &device_id, Refusal::TooManyFailures, 403),
            Issue::RateLimited { retry_after_s, first } => {
                self.counters.rate_limited += 1;
                if first {
                    self.emit(Event::Refused { peer: from, method: "REGISTER".into(), device_id: Some(device_id), reason: Refusal::RateLimited });
                }
                Some(Reply { code: 503, reason: "Service Unavailable", extra: vec![("Retry-After", retry_after_s.to_string())], body: None })
            }
        }
    }
}

/// The `X-GB-Ver` a REGISTER carries (`M.N`, GB/T 28181-2022), if well formed.
fn gb_version(msg: &SipMsg) -> Option<String> {
    let v = msg.header("X-GB-Ver")?;
    let v = v.trim();
    let ok = (1..=8).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit() || b == b'.') && v.starts_with(|c: char| c.is_ascii_digit());
    ok.then(|| v.to_string())
}
