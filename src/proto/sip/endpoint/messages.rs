//! MESSAGE and NOTIFY from devices (keepalive, catalog, device info, record lists, media
//! status), taken only from the
//! address or connection the device registered from; and the queries that ask for them.

use super::query::QueryCmd;
use super::upstream_subs::ChannelChange;
use super::{Endpoint, Event, Peer, Refusal, Reply, transaction};
use crate::proto::sip::SipMsg;
use crate::proto::sip::manscdp::{self, Body, Manscdp};
use crate::proto::sip::text::{decode_body, encode_body};
use std::time::Instant;

const MANSCDP: &str = "Application/MANSCDP+xml";

impl Endpoint {
    /// The device a request claims to be from, if it is registered and the request comes
    /// from where it registered; otherwise the refusal (403 makes devices register again).
    pub(super) fn authenticated_sender(&mut self, now: Instant, from: Peer, method: &str, device_id: &str) -> Result<(), Option<Reply>> {
        let reason = match self.devices.get(device_id) {
            Some(d) if d.registered(now) => match d.binding {
                Some(b) if b.same_as(&from) => return Ok(()),
                _ => Refusal::WrongSource,
            },
            _ => Refusal::NotRegistered,
        };
        match reason {
            Refusal::WrongSource => self.counters.spoofed += 1,
            _ => self.counters.refused += 1,
        }
        self.emit(Event::Refused { peer: from, method: method.to_string(), device_id: Some(device_id.to_string()), reason });
        Err(Reply::status(403))
    }

    pub(super) fn on_message(&mut self, now: Instant, from: Peer, msg: &SipMsg, raw: &[u8]) -> Option<Reply> {
        let method = msg.method().map(|m| m.to_string()).unwrap_or_default();
        if msg.content_type().as_deref() != Some("application/manscdp+xml") {
            return Reply::status(415);
        }
        let Some(device_id) = msg.from_user() else { return Reply::status(400) };
        if let Err(reply) = self.authenticated_sender(now, from, &method, &device_id) {
            return reply;
        }
        let parsed = match parse_body(msg.body()) {
            Ok(p) => Ok(p),
            // Sloppy devices count Content-Length in characters, not bytes: over UDP the
            // datagram itself says where the message ends.
            Err(e) => match (from, udp_tail(raw, msg.body().len())) {
                (Peer::Udp(_), Some(tail)) => parse_body(tail).inspect(|_| self.counters.lenient_bodies += 1).map_err(|_| e),
                _ => Err(e),
            },
        };
        let parsed = match parsed {
            Ok(p) => p,
            Err(error) => {
                self.counters.malformed += 1;
                let text = String::from_utf8_lossy(msg.body());
                let error = format!("unreadable MANSCDP body: {error:?}");
                let cmds: Vec<QueryCmd> = QueryCmd::ALL.into_iter().filter(|c| text.contains(&format!("<CmdType>{}", c.name()))).collect();
                let cmds = if cmds.is_empty() { QueryCmd::ALL.to_vec() } else { cmds };
                for cmd in cmds {
                    if self.devices.get(&device_id).is_some_and(|d| d.queries.waiting_sn(cmd).is_some()) {
                        self.query_failed(now, &device_id, cmd, None, error.clone());
                    }
                }
                self.emit(Event::Malformed { peer: from, error });
                return Reply::status(400);
            }
        };
        let refresh = self.cfg.catalog_refresh;
        let Some(d) = self.devices.get_mut(&device_id) else { return Reply::status(403) };
        if let Some(l) = d.live.as_mut() {
            l.last_seen = now;
        }
        let Manscdp { sn, body, device_id: parsed_device, cmd_type, .. } = parsed;
        match body {
            Body::Keepalive => self.counters.keepalives += 1,
            Body::Catalog { sum_num, items } => {
                if let Some(complete) = d.merge_catalog(sn, sum_num, items) {
                    let channels = d.channels.len();
                    if sn.is_some() && d.queries.waiting_sn(QueryCmd::Catalog) == sn {
                        d.queries.succeed(QueryCmd::Catalog, now, refresh);
                        d.last_error = None;
                    }
                    self.emit(Event::CatalogUpdated { device_id: device_id.clone(), channels, complete });
                    self.registry_changed(&device_id);
                }
            }
            Body::DeviceInfo(info) => {
                d.info = info;
                if sn.is_some() && d.queries.waiting_sn(QueryCmd::DeviceInfo) == sn {
                    d.queries.succeed(QueryCmd::DeviceInfo, now, refresh);
                }
                self.emit(Event::DeviceInfoUpdated { device_id: device_id.clone() });
                self.registry_changed(&device_id);
            }
            Body::RecordInfo { sum_num, items } => self.record_answer(&device_id, sn, sum_num, items),
            Body::MediaStatus { notify_type } => {
                if notify_type == "121" {
                    let call_id = msg.call_id().unwrap_or_default();
                    if !self.media_status_end(now, &device_id, &call_id, &parsed_device) {
                        self.counters.responses_unmatched += 1;
                    }
                }
            }
            Body::Alarm(alarm) => {
                self.counters.alarms += 1;
                // A MESSAGE alarm is answered after the 200 (GB/T 28181 §9.4.1: the platform's
                // Response follows); a subscribed NOTIFY takes the 200 alone.
                if let Some(sn) = sn.filter(|_| method == "MESSAGE") {
                    self.alarm_acks.push((device_id.clone(), sn, alarm.device_id.clone()));
                }
                // Only what is the device's own (itself or a channel of it) goes up: a device
                // must not raise alarms upstream under another's id.
                if alarm.device_id == device_id || d.channels.contains_key(&alarm.device_id) {
                    self.forward_alarm(now, &alarm);
                }
                self.emit(Event::Alarm { device_id: device_id.clone(), alarm });
            }
            Body::CatalogChanges(changes) => {
                // What goes on to catalog subscribers above (only when there are any).
                let upward: Vec<ChannelChange> = if self.upstreams.subs.is_empty() {
                    Vec::new()
                } else {
                    changes.iter().map(|(event, item)| ChannelChange { event: *event, item: item.clone() }).collect()
                };
                match d.apply_catalog_changes(changes) {
                    Some(changed) => {
                        let channels = d.channels.len();
                        if changed > 0 {
                            self.emit(Event::CatalogUpdated { device_id: device_id.clone(), channels, complete: true });
                            self.registry_changed(&device_id);
                        }
                        if !upward.is_empty() {
                            self.notify_catalog_changes(now, &device_id, &upward);
                        }
                    }
                    None => {
                        self.counters.malformed += 1;
                        self.emit(Event::Malformed {
                            peer: from,
                            error: "catalog notification refused: a channel id could break a message, or too many channels".into(),
                        });
                        return Reply::status(400);
                    }
                }
            }
            Body::Position(position) => {
                d.position = Some(position.clone());
                if !self.upstreams.subs.is_empty() {
                    self.notify_position(now, &device_id, &parsed_device, &position);
                }
                self.emit(Event::Position { device_id: device_id.clone(), position });
            }
            Body::DeviceStatus(status) => {
                d.status = Some(status.clone());
                self.ask_answered(&device_id, &cmd_type, sn, Body::DeviceStatus(status));
            }
            Body::Result { result } if sn.is_some_and(|sn| self.relay_result_up(now, &device_id, sn, &cmd_type, &parsed_device, &result)) => {}
            // The device's word on a voice broadcast (its SN is the device's own, not ours).
            Body::Result { result } if cmd_type == "Broadcast" => self.broadcast_result(now, &device_id, &parsed_device, &result),
            body @ (Body::Result { .. } | Body::Presets { .. }) => {
                if !self.ask_answered(&device_id, &cmd_type, sn, body) {
                    self.counters.responses_unmatched += 1;
                }
            }
            Body::Other => {}
        }
        Reply::status(200)
    }

    /// Asks what is due for a device, and gives up on what is overdue.
    pub(super) fn run_queries(&mut self, now: Instant, device_id: &str) {
        let Some(d) = self.devices.get(device_id) else { return };
        let overdue: Vec<QueryCmd> = d.queries.overdue(now).collect();
        for cmd in overdue {
            let error = match cmd {
                QueryCmd::Catalog => match self.devices.get_mut(device_id).and_then(|d| d.commit_partial_catalog()) {
                    Some((got, expected)) => {
                        let channels = got;
                        self.emit(Event::CatalogUpdated { device_id: device_id.to_string(), channels, complete: false });
                        self.registry_changed(device_id);
                        format!("Catalog answer incomplete: {got} of {expected} items")
                    }
                    None => "Catalog query not answered in time".to_string(),
                },
                QueryCmd::DeviceInfo => "DeviceInfo query not answered in time".to_string(),
            };
            self.query_failed(now, device_id, cmd, None, error);
        }
        let Some(d) = self.devices.get(device_id) else { return };
        let due: Vec<QueryCmd> = d.queries.due(now).collect();
        for cmd in due {
            self.send_query(now, device_id, cmd);
        }
    }

    /// Sends the Responses to alarms just answered 200.
    pub(super) fn send_alarm_acks(&mut self, now: Instant) {
        for (device_id, sn, alarm_device) in std::mem::take(&mut self.alarm_acks) {
            let Some(peer) = self.devices.get(&device_id).and_then(|d| d.binding) else { continue };
            let xml = manscdp::alarm_response(sn, &alarm_device, "GB2312");
            self.send_manscdp(now, &device_id, peer, &xml, transaction::Purpose::Fire);
        }
    }

    /// A MANSCDP serial number for a new request.
    pub(super) fn new_sn(&mut self) -> u32 {
        (self.rng.next_u64() % 999_999) as u32 + 1
    }

    /// Sends MANSCDP `xml` (declared GB2312, written as GB18030) to `device_id` at `peer` in a
    /// MESSAGE client transaction for `purpose`; false when too many are in flight.
    pub(super) fn send_manscdp(&mut self, now: Instant, device_id: &str, peer: Peer, xml: &str, purpose: transaction::Purpose) -> bool {
        let body = encode_body(xml, encoding_rs::GB18030);
        let call_id = self.new_call_id();
        let (from_tag, branch) = (self.rng.hex(), self.rng.hex());
        let cseq = (self.rng.next_u64() % 10_000) as u32 + 1;
        let bytes = self.build_request("MESSAGE", device_id, peer, &call_id, &from_tag, None, cseq, &branch, vec![], Some((MANSCDP, &body)));
        let key = transaction::TxKey { call_id, cseq, method: "MESSAGE".into() };
        self.start_transaction(now, key, peer, bytes, purpose, transaction::TRANSACTION_TIMEOUT)
    }

    fn send_query(&mut self, now: Instant, device_id: &str, cmd: QueryCmd) {
        let Some(peer) = self.devices.get(device_id).filter(|d| d.registered(now)).and_then(|d| d.binding) else { return };
        let sn = self.new_sn();
        let xml = manscdp::query(cmd.name(), sn, device_id, "GB2312");
        let purpose = transaction::Purpose::Query { device_id: device_id.to_string(), cmd, sn };
        let started = self.send_manscdp(now, device_id, peer, &xml, purpose);
        if let Some(d) = self.devices.get_mut(device_id) {
            d.queries.start(cmd, sn, now);
        }
        if !started {
            self.query_failed(now, device_id, cmd, Some(sn), "too many transactions in flight".into());
        }
    }

    /// A query failed (answered with an error, not answered, or its answer unreadable):
    /// note it on the device and retry after the backoff. `sn`: only if still that query.
    pub(super) fn query_failed(&mut self, now: Instant, device_id: &str, cmd: QueryCmd, sn: Option<u32>, error: String) {
        let Some(d) = self.devices.get_mut(device_id) else { return };
        let waiting = d.queries.waiting_sn(cmd);
        if waiting.is_none() || (sn.is_some() && waiting != sn) {
            return;
        }
        let retry_in = d.queries.fail(cmd, now);
        d.last_error = Some(error.clone());
        self.counters.query_failures += 1;
        self.emit(Event::QueryFailed { device_id: device_id.to_string(), cmd, error, retry_in });
    }

    pub(super) fn sync(&mut self, now: Instant, device_id: &str) -> bool {
        let Some(d) = self.devices.get_mut(device_id) else { return false };
        d.queries.ask_all(now);
        self.run_queries(now, device_id);
        true
    }
}

fn parse_body(body: &[u8]) -> Result<Manscdp, manscdp::ManscdpError> {
    let (text, _) = decode_body(body);
    manscdp::parse(&text)
}

/// Everything after the head of a datagram, when it is longer than the body parsed by
/// Content-Length.
fn udp_tail(raw: &[u8], body_len: usize) -> Option<&[u8]> {
    let start = raw.iter().position(|b| !matches!(b, b'\r' | b'\n'))?;
    let raw = &raw[start..];
    let (end, sep) = crate::proto::sip::message::find_head_end(raw)?;
    let tail = &raw[end + sep..];
    (tail.len() > body_len).then_some(tail)
}
