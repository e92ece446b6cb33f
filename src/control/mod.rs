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
/// SIP over TCP: connections at once, and messages queued to one before it counts as stuck.
pub const TCP_CONNS_MAX: usize = 10_000;
pub const TCP_SEND_QUEUE_MSGS_MAX: usize = 64;
const TCP_READ_BYTES: usize = 16 * 1024;

/// Where a SIP message came from / goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Udp(SocketAddr),
    /// A connection accepted on the SIP TCP listener (responses and requests reuse it).
    Tcp {
        conn: u64,
        addr: SocketAddr,
    },
}

impl Peer {
    pub fn addr(&self) -> SocketAddr {
        match *self {
            Peer::Udp(a) | Peer::Tcp { addr: a, .. } => a,
        }
    }

    pub fn transport(&self) -> &'static str {
        match self {
            Peer::Udp(_) => "UDP",
            Peer::Tcp { .. } => "TCP",
        }
    }
}

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
    tcp_conns: RefCell<HashMap<u64, LocalSender<Vec<u8>>>>,
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
        let tcp = glommio::net::TcpListener::bind(listen).map_err(|e| std::io::Error::other(e.to_string()))?;
        let port = sock.local_addr().map_err(|e| std::io::Error::other(e.to_string()))?.port();
        let host: std::net::IpAddr = config.sip.host_ip.parse().map_err(std::io::Error::other)?;
        let control = Rc::new(Control {
            shard,
            sock,
            local: SocketAddr::new(host, port),
            registry: RefCell::new(Registry::load(&config.data_dir)),
            challenges: RefCell::new(HashMap::new()),
            pending: RefCell::new(HashMap::new()),
            tcp_conns: RefCell::new(HashMap::new()),
            sessions: RefCell::new(BTreeMap::new()),
            counters: RefCell::new(SipCounters::default()),
            counter: Cell::new(0),
        });
        tracing::info!(%listen, domain = %config.sip.domain, server_id = %config.node_id, "SIP listening");
        glommio::spawn_local(control.clone().recv_loop()).detach();
        glommio::spawn_local(control.clone().tcp_accept_loop(tcp)).detach();
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

    pub async fn send(&self, to: Peer, bytes: &[u8]) {
        match to {
            Peer::Udp(addr) => {
                if let Err(error) = self.sock.send_to(bytes, addr).await {
                    tracing::warn!(%addr, %error, "SIP send failed");
                }
            }
            Peer::Tcp { conn, addr } => {
                let sent = self.tcp_conns.borrow().get(&conn).is_some_and(|tx| tx.try_send(bytes.to_vec()).is_ok());
                if !sent {
                    tracing::warn!(%addr, "SIP TCP connection gone or stuck; message dropped");
                }
            }
        }
    }

    /// A parsed message from either transport.
    fn dispatch(self: &Rc<Self>, data: &[u8], source: Peer) {
        self.counters.borrow_mut().received += 1;
        if data.iter().all(|b| b.is_ascii_whitespace()) {
            return; // CRLF keep-alive
        }
        match sip::parse(data) {
            Ok(msg) if msg.is_request() => {
                let me = self.clone();
                glommio::spawn_local(async move { me.on_request(msg, source).await }).detach();
            }
            Ok(msg) => self.on_response(msg),
            Err(error) => {
                self.counters.borrow_mut().malformed += 1;
                tracing::debug!(?source, %error, "malformed SIP message");
            }
        }
    }

    async fn tcp_accept_loop(self: Rc<Self>, listener: glommio::net::TcpListener) {
        loop {
            let stream = match listener.accept().await {
                Ok(s) => s,
                Err(error) => {
                    tracing::warn!(%error, "SIP TCP accept failed");
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if self.tcp_conns.borrow().len() >= TCP_CONNS_MAX {
                self.counters.borrow_mut().refused += 1;
                continue;
            }
            let id = self.next();
            glommio::spawn_local(self.clone().tcp_conn(stream, id)).detach();
        }
    }

    async fn tcp_conn(self: Rc<Self>, stream: glommio::net::TcpStream, id: u64) {
        use futures_lite::{AsyncReadExt, AsyncWriteExt};
        let Ok(addr) = stream.peer_addr() else { return };
        let (mut reader, mut writer) = futures_lite::io::split(stream);
        let (tx, rx) = local_channel::new_bounded::<Vec<u8>>(TCP_SEND_QUEUE_MSGS_MAX);
        self.tcp_conns.borrow_mut().insert(id, tx);
        let writer_task = glommio::spawn_local(async move {
            while let Some(bytes) = rx.recv().await {
                if writer.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        })
        .detach();
        let peer = Peer::Tcp { conn: id, addr };
        let mut framer = sip::StreamFramer::default();
        let mut buf = vec![0u8; TCP_READ_BYTES];
        'read: loop {
            let n = match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            framer.push(&buf[..n]);
            loop {
                match framer.next_message() {
                    Ok(Some(message)) => self.dispatch(&message, peer),
                    Ok(None) => break,
                    Err(error) => {
                        self.counters.borrow_mut().malformed += 1;
                        tracing::info!(%addr, %error, "closing SIP TCP connection");
                        break 'read;
                    }
                }
            }
        }
        self.tcp_conns.borrow_mut().remove(&id);
        writer_task.cancel();
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
            self.dispatch(&buf[..n], Peer::Udp(source));
        }
    }

    fn on_response(self: &Rc<Self>, msg: SipMsg) {
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
                // A 200 to INVITE sent again means our ACK was lost: ACK again (RFC 3261 §13.2.2.4).
                if msg.status() == Some(200)
                    && msg.cseq().is_some_and(|(_, m)| m == "INVITE")
                    && let Some(call_id) = msg.call_id()
                {
                    let me = self.clone();
                    glommio::spawn_local(async move { me.ack_again(&call_id).await }).detach();
                    return;
                }
                self.counters.borrow_mut().responses_unmatched += 1;
            }
        }
    }

    /// Sends a request and waits for its final response, retransmitting over UDP
    /// (T1 doubling to T2) until a provisional or final answer, or `timeout`.
    pub async fn transact(&self, to: Peer, call_id: &str, cseq: u32, method: &str, bytes: &[u8], timeout: Duration) -> Option<SipMsg> {
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
        // Reliable transports are not retransmitted (RFC 3261 §17.1.1.2).
        let mut answered = matches!(to, Peer::Tcp { .. });
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
            if tick.is_multiple_of(play::SESSION_CHECK_INTERVAL_S) {
                play::check_sessions(&self).await;
            }
        }
    }
}

pub fn transaction_key(call_id: &str, cseq: u32, method: &str) -> String {
    format!("{call_id}|{cseq}|{}", method.to_ascii_uppercase())
}
