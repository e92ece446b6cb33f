//! RFC 3261 §17 transactions, as state driven by `now`: client transactions retransmit over
//! UDP (INVITE Timer A, non-INVITE Timer E) and give up (Timer B/F); server transactions keep
//! their last response so a retransmitted request is answered again, not handled twice.

use super::Peer;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// RFC 3261 timers.
pub const T1: Duration = Duration::from_millis(500);
pub const T2: Duration = Duration::from_secs(4);
/// Timer F (and B): a transaction without a final answer gives up after 64·T1.
pub const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(32);
/// Client transactions in flight; more requests are refused (counted).
pub const CLIENT_TRANSACTIONS_MAX: usize = 4096;
/// Server transactions remembered for retransmissions; the oldest is forgotten first.
pub const SERVER_TRANSACTIONS_MAX: usize = 8192;
/// How long a server transaction answers retransmissions (Timer J: 64·T1).
pub const SERVER_TRANSACTION_TTL: Duration = TRANSACTION_TIMEOUT;

/// A client transaction is found by what a response copies back: Call-ID, CSeq number and
/// method (our Call-IDs are unique, and devices that mangle Via branches are common).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TxKey {
    pub call_id: String,
    pub cseq: u32,
    pub method: String,
}

/// What a transaction's outcome means to the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    Query {
        device_id: String,
        cmd: super::query::QueryCmd,
        sn: u32,
    },
    Invite {
        handle: super::PlayHandle,
    },
    /// DeviceControl or a MANSRTSP INFO: its final answer is the result.
    Control {
        handle: super::ControlHandle,
    },
    /// A request answered by a MESSAGE of its own (DeviceStatus, RecordCmd, DeviceConfig...).
    Ask {
        device_id: String,
        cmd_type: &'static str,
        sn: u32,
    },
    /// A voice broadcast's Notify MESSAGE: its 2xx starts the wait for the device's INVITE.
    Broadcast {
        handle: super::BroadcastHandle,
    },
    /// A SUBSCRIBE (made or refreshed).
    Subscribe {
        device_id: String,
        kind: super::subscribe::SubKind,
    },
    /// A RecordInfo query: the answers come in MESSAGEs of their own.
    Records {
        device_id: String,
        sn: u32,
    },
    /// A REGISTER to an upper platform (cascade), by the serial of its entry (an upstream
    /// changed or removed under the same id is another entry).
    UpstreamRegister {
        upstream: u64,
    },
    /// A keepalive MESSAGE to an upper platform.
    UpstreamKeepalive {
        upstream: u64,
    },
    /// BYE, CANCEL: nobody waits for the answer.
    Fire,
}

#[derive(Debug)]
pub struct ClientTx {
    pub to: Peer,
    pub bytes: Vec<u8>,
    pub purpose: Purpose,
    invite: bool,
    /// Next retransmission (UDP only, until a provisional answer for INVITE).
    retransmit_at: Option<Instant>,
    interval: Duration,
    pub deadline: Instant,
    pub provisional: bool,
    /// When it was sent first (its latency is the final answer's time less this).
    pub started: Instant,
}

/// Upper bounds of the transaction latency buckets, ms (a last bucket takes the rest).
pub const LATENCY_BOUNDS_MS: [u64; 12] = [5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000];
/// Methods timed apart; others are timed as "other".
pub const TIMED_METHODS: [&str; 5] = ["INVITE", "MESSAGE", "SUBSCRIBE", "INFO", "other"];

/// Time from a request's first sending to its final answer, per bucket (not cumulative).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    pub counts: [u64; LATENCY_BOUNDS_MS.len() + 1],
    pub sum_ms: u64,
    pub count: u64,
}

impl LatencyHistogram {
    pub fn observe(&mut self, ms: u64) {
        let bucket = LATENCY_BOUNDS_MS.iter().position(|b| ms <= *b).unwrap_or(LATENCY_BOUNDS_MS.len());
        self.counts[bucket] += 1;
        self.sum_ms += ms;
        self.count += 1;
    }
}

/// Answered transactions' latencies by method (`TIMED_METHODS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latencies {
    pub by_method: [LatencyHistogram; TIMED_METHODS.len()],
}

impl Latencies {
    pub fn observe(&mut self, method: &str, latency: Duration) {
        let i = TIMED_METHODS.iter().position(|m| *m == method).unwrap_or(TIMED_METHODS.len() - 1);
        self.by_method[i].observe(latency.as_millis() as u64);
    }
}

#[derive(Debug, Default)]
pub struct ClientTransactions {
    txs: HashMap<TxKey, ClientTx>,
}

pub enum Finished {
    Answered(TxKey, ClientTx),
    TimedOut(TxKey, ClientTx),
}

impl ClientTransactions {
    pub fn is_full(&self) -> bool {
        self.txs.len() >= CLIENT_TRANSACTIONS_MAX
    }

    /// Starts a transaction; the caller sends `bytes` once now. False when full.
    pub fn start(&mut self, now: Instant, key: TxKey, to: Peer, bytes: Vec<u8>, purpose: Purpose, timeout: Duration) -> bool {
        if self.is_full() {
            return false;
        }
        let invite = key.method == "INVITE";
        // Reliable transports are not retransmitted (RFC 3261 §17.1.1.2).
        let retransmit_at = matches!(to, Peer::Udp(_)).then_some(now + T1);
        self.txs.insert(key, ClientTx { to, bytes, purpose, invite, retransmit_at, interval: T1, deadline: now + timeout, provisional: false, started: now });
        true
    }

    pub fn get(&self, key: &TxKey) -> Option<&ClientTx> {
        self.txs.get(key)
    }

    /// A response arrived from `from` for `key`: provisional ones stop INVITE retransmission,
    /// final ones end the transaction. None when no transaction matches (or the sender is not
    /// the one we asked, which is counted by the caller).
    pub fn on_response(&mut self, now: Instant, key: &TxKey, status: u16) -> Option<Finished> {
        let tx = self.txs.get_mut(key)?;
        if status < 200 {
            tx.provisional = true;
            if tx.invite {
                tx.retransmit_at = None;
            } else if tx.retransmit_at.is_some() {
                // Proceeding: keep retransmitting at T2 (RFC 3261 §17.1.2.2).
                tx.interval = T2;
                tx.retransmit_at = Some(now + T2);
            }
            return None;
        }
        let (key, tx) = self.txs.remove_entry(key)?;
        Some(Finished::Answered(key, tx))
    }

    /// Retransmissions due now (pushed to `out`) and transactions that timed out.
    pub fn on_timeout(&mut self, now: Instant, out: &mut Vec<(Peer, Vec<u8>)>) -> Vec<Finished> {
        let mut expired = Vec::new();
        for (key, tx) in self.txs.iter_mut() {
            if now >= tx.deadline {
                expired.push(key.clone());
                continue;
            }
            if let Some(at) = tx.retransmit_at
                && now >= at
            {
                out.push((tx.to, tx.bytes.clone()));
                // INVITE doubles without a cap (Timer A); non-INVITE caps at T2 (Timer E).
                tx.interval = if tx.invite { tx.interval * 2 } else { (tx.interval * 2).min(T2) };
                tx.retransmit_at = Some(now + tx.interval);
            }
        }
        expired.into_iter().filter_map(|k| self.txs.remove_entry(&k)).map(|(k, tx)| Finished::TimedOut(k, tx)).collect()
    }

    /// Ends every transaction sent to `to` (its connection could not be made).
    pub fn abandon(&mut self, to: Peer) -> Vec<(TxKey, ClientTx)> {
        let keys: Vec<TxKey> = self.txs.iter().filter(|(_, tx)| tx.to == to).map(|(k, _)| k.clone()).collect();
        keys.into_iter().filter_map(|k| self.txs.remove_entry(&k)).collect()
    }

    pub fn next_timeout(&self) -> Option<Instant> {
        self.txs.values().map(|tx| tx.retransmit_at.map_or(tx.deadline, |r| r.min(tx.deadline))).min()
    }
}

/// A request as a retransmission of it would look: same source, branch, CSeq and method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerKey {
    pub source: std::net::SocketAddr,
    pub branch: String,
    pub cseq: u32,
    pub method: String,
}

#[derive(Debug, Default)]
pub struct ServerTransactions {
    responses: HashMap<ServerKey, (Vec<u8>, Instant)>,
    /// Insertion order, for forgetting the oldest first.
    order: VecDeque<ServerKey>,
}

impl ServerTransactions {
    /// The response already sent for this request, if it is a retransmission.
    pub fn retransmitted(&self, key: &ServerKey) -> Option<&[u8]> {
        self.responses.get(key).map(|(r, _)| r.as_slice())
    }

    pub fn remember(&mut self, now: Instant, key: ServerKey, response: Vec<u8>) {
        while self.responses.len() >= SERVER_TRANSACTIONS_MAX {
            let Some(old) = self.order.pop_front() else { break };
            self.responses.remove(&old);
        }
        if self.responses.insert(key.clone(), (response, now + SERVER_TRANSACTION_TTL)).is_none() {
            self.order.push_back(key);
        }
    }

    pub fn expire(&mut self, now: Instant) {
        while let Some(front) = self.order.front() {
            match self.responses.get(front) {
                Some((_, until)) if *until > now => break,
                _ => {
                    let k = self.order.pop_front().expect("front exists");
                    self.responses.remove(&k);
                }
            }
        }
    }
}
