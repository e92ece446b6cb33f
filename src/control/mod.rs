//! The control executor's GB28181 side: a SIP UDP endpoint, the device registry, client
//! transactions (queries, INVITE, BYE) and play sessions. Everything here runs on the one
//! control executor; media shards are reached only by messages.

pub mod play;
pub mod registry;
pub mod requests;
pub mod sip_text;

use crate::proto::sip::{self, SipMsg};
use crate::shard::Shard;
use glommio::channels::local_channel::{self, LocalSender};
use glommio::net::UdpSocket;
use registry::Registry;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Client transactions waiting for a response; more are refused.
pub const PENDING_TRANSACTIONS_MAX: usize = 4096;
/// RFC 3261 timers for UDP retransmission.
pub const T1: Duration = Duration::from_millis(500);
pub const T2: Duration = Duration::from_secs(4);
/// Non-INVITE transactions give up after this.
pub const NON_INVITE_TIMEOUT: Duration = Duration::from_secs(8);

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct SipCounters {
    pub received: u64,
    pub malformed: u64,
    pub registers: u64,
    pub auth_failures: u64,
    pub refused: u64,
    pub keepalives: u64,
    pub responses_unmatched: u64,
}

pub struct Control {
    pub shard: Rc<Shard>,
    sock: UdpSocket,
    /// Advertised address (host_ip + SIP port) for Via/Contact.
    pub local: SocketAddr,
    pub registry: RefCell<Registry>,
    challenges: RefCell<HashMap<String, requests::Challenge>>,
    pending: RefCell<HashMap<String, LocalSender<SipMsg>>>,
    pub sessions: RefCell<BTreeMap<(String, String), play::Session>>,
    pub counters: RefCell<SipCounters>,
    counter: Cell<u64>,
}

impl Control {
    /// Binds the SIP socket and starts its loops; None when SIP is disabled.
    pub fn start(shard: Rc<Shard>) -> std::io::Result<Option<Rc<Control>>> {
        let config = shard.config.clone();
        if config.sip.listen.is_empty() {
            return Ok(None);
        }
        let listen: SocketAddr = config.sip.listen.parse().map_err(std::io::Error::other)?;
        let sock = UdpSocket::bind(listen).map_err(|e| std::io::Error::other(e.to_string()))?;
        let port = sock.local_addr().map_err(|e| std::io::Error::other(e.to_string()))?.port();
        let host: std::net::IpAddr = config.sip.host_ip.parse().map_err(std::io::Error::other)?;
        let control = Rc::new(Control {
            shard,
            sock,
            local: SocketAddr::new(host, port),
            registry: RefCell::new(Registry::load(&config.data_dir)),
            challenges: RefCell::new(HashMap::new()),
            pending: RefCell::new(HashMap::new()),
            sessions: RefCell::new(BTreeMap::new()),
            counters: RefCell::new(SipCounters::default()),
            counter: Cell::new(0),
        });
        tracing::info!(%listen, domain = %config.sip.domain, server_id = %config.node_id, "SIP listening");
        glommio::spawn_local(control.clone().recv_loop()).detach();
        glommio::spawn_local(control.clone().housekeeping()).detach();
        Ok(Some(control))
    }

    pub fn next(&self) -> u64 {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        n
    }

    pub fn random(&self) -> String {
        sip_text::random_hex(self.next())
    }

    pub fn keepalive(&self) -> Duration {
        Duration::from_secs(self.shard.config.sip.keepalive_interval_s)
    }

    pub async fn send(&self, to: SocketAddr, bytes: &[u8]) {
        if let Err(error) = self.sock.send_to(bytes, to).await {
            tracing::warn!(%to, %error, "SIP send failed");
        }
    }

    async fn recv_loop(self: Rc<Self>) {
        let mut buf = vec![0u8; sip::message::SIP_MESSAGE_BYTES_MAX];
        loop {
            let (n, source) = match self.sock.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(error) => {
                    tracing::warn!(%error, "SIP receive failed");
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            self.counters.borrow_mut().received += 1;
            if buf[..n].iter().all(|b| b.is_ascii_whitespace()) {
                continue; // CRLF keep-alive
            }
            match sip::parse(&buf[..n]) {
                Ok(msg) if msg.is_request() => {
                    let me = self.clone();
                    glommio::spawn_local(async move { me.on_request(msg, source).await }).detach();
                }
                Ok(msg) => self.on_response(msg),
                Err(error) => {
                    self.counters.borrow_mut().malformed += 1;
                    tracing::debug!(%source, %error, "malformed SIP message");
                }
            }
        }
    }

    fn on_response(&self, msg: SipMsg) {
        let key = match (msg.call_id(), msg.cseq()) {
            (Some(c), Some((n, m))) => transaction_key(&c, n, &m),
            _ => return,
        };
        let pending = self.pending.borrow();
        match pending.get(&key) {
            Some(tx) => {
                let _ = tx.try_send(msg);
            }
            None => {
                drop(pending);
                self.counters.borrow_mut().responses_unmatched += 1;
            }
        }
    }

    /// Sends a request and waits for its final response, retransmitting over UDP
    /// (T1 doubling to T2) until a provisional or final answer, or `timeout`.
    pub async fn transact(&self, to: SocketAddr, call_id: &str, cseq: u32, method: &str, bytes: &[u8], timeout: Duration) -> Option<SipMsg> {
        let key = transaction_key(call_id, cseq, method);
        let (tx, rx) = local_channel::new_bounded(8);
        {
            let mut pending = self.pending.borrow_mut();
            if pending.len() >= PENDING_TRANSACTIONS_MAX {
                tracing::warn!(method, "too many SIP transactions in flight");
                return None;
            }
            pending.insert(key.clone(), tx);
        }
        let deadline = Instant::now() + timeout;
        let mut interval = T1;
        let mut answered = false;
        self.send(to, bytes).await;
        let result = loop {
            let now = Instant::now();
            if now >= deadline {
                break None;
            }
            let wait = interval.min(deadline - now);
            match glommio::timer::timeout(wait, async { Ok(rx.recv().await) }).await {
                Ok(Some(resp)) if resp.status().unwrap_or(0) >= 200 => break Some(resp),
                Ok(Some(_)) => answered = true,
                Ok(None) => break None,
                Err(_) if !answered => {
                    self.send(to, bytes).await;
                    interval = (interval * 2).min(T2);
                }
                Err(_) => {}
            }
        };
        self.pending.borrow_mut().remove(&key);
        result
    }

    async fn housekeeping(self: Rc<Self>) {
        let mut tick: u64 = 0;
        let mut online: HashMap<String, bool> = HashMap::new();
        loop {
            glommio::timer::sleep(Duration::from_secs(1)).await;
            tick += 1;
            let keepalive = self.keepalive();
            {
                let mut reg = self.registry.borrow_mut();
                for (id, d) in reg.devices.iter() {
                    let now_online = d.online(keepalive);
                    if online.insert(id.clone(), now_online) == Some(true) && !now_online {
                        tracing::warn!(device_id = %id, "device offline (no keepalive or registration expired)");
                    }
                }
                reg.save();
            }
            self.challenges.borrow_mut().retain(|_, c| c.issued.elapsed() < requests::CHALLENGE_TTL);
            if tick % play::SESSION_CHECK_INTERVAL_S == 0 {
                play::check_sessions(&self).await;
            }
        }
    }
}

pub fn transaction_key(call_id: &str, cseq: u32, method: &str) -> String {
    format!("{call_id}|{cseq}|{}", method.to_ascii_uppercase())
}
