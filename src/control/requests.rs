//! Requests devices send: REGISTER (digest), MESSAGE (keepalive, catalog, device info),
//! BYE, OPTIONS. And the queries sent to a device once it registers.

use super::registry::{DEVICES_MAX, Device, Liveness, unix_now};
use super::sip_text::{OutRequest, gb_date, response};
use super::{Control, Peer};
use crate::proto::sip::SipMsg;
use crate::proto::sip::digest::DigestCredentials;
use crate::proto::sip::manscdp::{self, Body};
use crate::proto::sip::text::{decode_body, encode_body};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A nonce is good for this long.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(300);
/// Outstanding challenges; beyond this new REGISTERs get 503 (a REGISTER flood).
pub const CHALLENGES_MAX: usize = 10_000;
/// Wrong passwords in a row before a device gets 403 instead of another challenge.
pub const AUTH_FAILURES_MAX: u32 = 3;
/// Registration length when the device names none, and the most we grant.
pub const REGISTER_EXPIRES_DEFAULT_S: u32 = 3600;
pub const REGISTER_EXPIRES_MAX_S: u32 = 86_400;
const MANSCDP: &str = "Application/MANSCDP+xml";

pub struct Challenge {
    pub nonce: String,
    pub issued: Instant,
    pub failures: u32,
}

impl Control {
    pub(super) async fn on_request(self: Rc<Self>, msg: SipMsg, source: Peer) {
        let method = msg.method().map(|m| m.to_string()).unwrap_or_default();
        match method.as_str() {
            "REGISTER" => self.on_register(&msg, source).await,
            "MESSAGE" => self.on_message(&msg, source).await,
            "BYE" => {
                self.reply(&msg, source, 200, "OK", &[], None).await;
                if let Some(call_id) = msg.call_id() {
                    self.session_ended_by_device(&call_id).await;
                }
            }
            "OPTIONS" => self.reply(&msg, source, 200, "OK", &[], None).await,
            "ACK" => {}
            _ => self.reply(&msg, source, 501, "Not Implemented", &[], None).await,
        }
    }

    pub(super) async fn reply(&self, msg: &SipMsg, to: Peer, code: u16, reason: &str, extra: &[(&str, String)], body: Option<(&str, &[u8])>) {
        let tag = self.random();
        self.send(to, &response(msg, to.addr(), code, reason, &tag[..10], extra, body)).await;
    }

    async fn on_register(self: &Rc<Self>, msg: &SipMsg, source: Peer) {
        self.counters.borrow_mut().registers += 1;
        let Some(device_id) = msg.from_user() else {
            return self.reply(msg, source, 400, "Bad Request", &[], None).await;
        };
        let known = self.registry.borrow().devices.contains_key(&device_id);
        if !known && self.registry.borrow().devices.len() >= DEVICES_MAX {
            self.counters.borrow_mut().refused += 1;
            return self.reply(msg, source, 503, "Service Unavailable", &[], None).await;
        }
        let config = &self.shard.config.sip;
        let credentials = msg.header("Authorization").as_deref().and_then(DigestCredentials::parse);
        let Some(credentials) = credentials else {
            return self.challenge(msg, source, &device_id, false).await;
        };
        let password = config.device_passwords.get(&device_id).unwrap_or(&config.password);
        let nonce_ok = self.challenges.borrow().get(&device_id).is_some_and(|c| c.nonce == credentials.nonce);
        if !(nonce_ok && credentials.verify("REGISTER", password)) {
            self.counters.borrow_mut().auth_failures += 1;
            return self.challenge(msg, source, &device_id, nonce_ok).await;
        }
        self.challenges.borrow_mut().remove(&device_id);
        let expires = msg.expires().unwrap_or(REGISTER_EXPIRES_DEFAULT_S).min(REGISTER_EXPIRES_MAX_S);
        let was_online;
        {
            let mut reg = self.registry.borrow_mut();
            let keepalive = self.keepalive();
            let d = reg.devices.entry(device_id.clone()).or_insert_with(|| Device { device_id: device_id.clone(), ..Device::default() });
            was_online = d.online(keepalive);
            if expires == 0 {
                d.live = None;
            } else {
                let now = Instant::now();
                d.live = Some(Liveness { expires_at: now + Duration::from_secs(u64::from(expires)), last_seen: now });
                d.addr = Some(source.addr());
                d.peer = Some(source);
                d.registered_at = unix_now();
            }
            reg.dirty = true;
        }
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let mut extra = vec![("Expires", expires.to_string()), ("Date", gb_date(now_ms))];
        if let Some(contact) = msg.header("Contact") {
            extra.push(("Contact", contact));
        }
        self.reply(msg, source, 200, "OK", &extra, None).await;
        if expires == 0 {
            tracing::info!(device_id = %device_id, source = ?source, "device unregistered");
            return;
        }
        if !was_online {
            tracing::info!(device_id = %device_id, source = ?source, expires, "device registered");
            let me = self.clone();
            glommio::spawn_local(async move { me.query_device(&device_id).await }).detach();
        }
    }

    /// 401 with a fresh nonce, or 403 once the device has failed too often.
    async fn challenge(&self, msg: &SipMsg, source: Peer, device_id: &str, counted_failure: bool) {
        enum Answer {
            Busy,
            Refuse(u32),
            Challenge(String),
        }
        let answer = {
            let mut challenges = self.challenges.borrow_mut();
            let failures = challenges.get(device_id).map_or(0, |c| c.failures) + u32::from(counted_failure);
            if !challenges.contains_key(device_id) && challenges.len() >= CHALLENGES_MAX {
                Answer::Busy
            } else if failures >= AUTH_FAILURES_MAX {
                challenges.remove(device_id);
                Answer::Refuse(failures)
            } else {
                let nonce = self.random();
                challenges.insert(device_id.to_string(), Challenge { nonce: nonce.clone(), issued: Instant::now(), failures });
                Answer::Challenge(nonce)
            }
        };
        match answer {
            Answer::Busy => {
                self.counters.borrow_mut().refused += 1;
                self.reply(msg, source, 503, "Service Unavailable", &[], None).await;
            }
            Answer::Refuse(failures) => {
                tracing::warn!(device_id, source = ?source, failures, "device failed digest authentication; refused");
                self.reply(msg, source, 403, "Forbidden", &[], None).await;
            }
            Answer::Challenge(nonce) => {
                let realm = &self.shard.config.sip.domain;
                let qop = if self.shard.config.sip.digest_qop { ", qop=\"auth\"" } else { "" };
                let www = format!("Digest realm=\"{realm}\", nonce=\"{nonce}\", algorithm=MD5{qop}");
                self.reply(msg, source, 401, "Unauthorized", &[("WWW-Authenticate", www)], None).await;
            }
        }
    }

    async fn on_message(&self, msg: &SipMsg, source: Peer) {
        let content_type = msg.content_type().unwrap_or_default();
        if content_type != "application/manscdp+xml" {
            return self.reply(msg, source, 415, "Unsupported Media Type", &[], None).await;
        }
        let (text, _) = decode_body(msg.body());
        let parsed = match manscdp::parse(&text) {
            Ok(p) => p,
            Err(error) => {
                tracing::debug!(source = ?source, ?error, "bad MANSCDP body");
                return self.reply(msg, source, 400, "Bad Request", &[], None).await;
            }
        };
        // The sender is the device in From; Catalog items carry channel ids in DeviceID.
        let device_id = msg.from_user().unwrap_or_else(|| parsed.device_id.clone());
        let keepalive = self.keepalive();
        let status = {
            let mut reg = self.registry.borrow_mut();
            match reg.devices.get_mut(&device_id) {
                Some(d) if d.online(keepalive) || d.live.is_some_and(|l| Instant::now() < l.expires_at) => {
                    if let Some(l) = d.live.as_mut() {
                        l.last_seen = Instant::now();
                    }
                    match parsed.body {
                        Body::Keepalive => {
                            self.counters.borrow_mut().keepalives += 1;
                            d.addr = Some(source.addr());
                            d.peer = Some(source);
                        }
                        Body::Catalog { sum_num, items } => {
                            if d.merge_catalog(sum_num, items) {
                                tracing::info!(device_id = %device_id, channels = d.channels.len(), "catalog received");
                                reg.dirty = true;
                            }
                        }
                        Body::DeviceInfo(info) => {
                            d.info = info;
                            reg.dirty = true;
                        }
                        Body::Other => {}
                    }
                    200
                }
                // Not registered (or expired): refusing makes devices register again.
                _ => 403,
            }
        };
        let reason = if status == 200 { "OK" } else { "Forbidden" };
        self.reply(msg, source, status, reason, &[], None).await;
    }

    /// DeviceInfo and Catalog queries, as GB28181 platforms send after registration.
    async fn query_device(&self, device_id: &str) {
        for cmd in ["DeviceInfo", "Catalog"] {
            let Some(peer) = self.registry.borrow().devices.get(device_id).and_then(|d| d.peer()) else { return };
            let config = &self.shard.config;
            let body = encode_body(&manscdp::query(cmd, self.next() as u32 % 1_000_000, device_id, "GB2312"), encoding_rs::GB18030);
            let call_id = format!("{}@{}", self.random(), self.local.ip());
            let from_tag = self.random();
            let cseq = (self.next() % 10_000) as u32 + 1;
            let req = OutRequest {
                method: "MESSAGE",
                request_uri: format!("sip:{device_id}@{}", config.sip.domain),
                transport: peer.transport(),
                local: self.local,
                branch: self.random(),
                from: format!("sip:{}@{}", config.node_id, config.sip.domain),
                from_tag: &from_tag,
                to: format!("sip:{device_id}@{}", config.sip.domain),
                to_tag: None,
                call_id: &call_id,
                cseq,
                contact_user: &config.node_id,
                extra: vec![],
            };
            let answer = self.transact(peer, &call_id, cseq, "MESSAGE", &req.build(Some((MANSCDP, &body))), super::NON_INVITE_TIMEOUT).await;
            match answer.and_then(|a| a.status()) {
                Some(200) => tracing::debug!(device_id, cmd, "query accepted"),
                other => tracing::warn!(device_id, cmd, status = ?other, "query not accepted"),
            }
        }
    }
}
