//! SIP over TCP: connections framed by Content-Length and fed to the endpoint as messages.
//! Bounded so that idle or slow strangers cannot lock devices out: a total cap with room kept
//! for connections a device registered on, a cap per source address on connections nobody
//! registered on yet, a head timeout for a message begun, and an idle timeout for
//! connections that never register.

use super::Control;
use crate::proto::sip::StreamFramer;
use crate::proto::sip::endpoint::{Command, ConnId, Peer};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalSender};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// SIP TCP connections at once.
pub const SIP_TCP_CONNS_MAX: usize = 10_000;
/// Of those, connections no device has registered on (the rest is kept for devices).
pub const SIP_TCP_UNBOUND_CONNS_MAX: usize = 8_000;
/// Unregistered connections from one source IP.
pub const SIP_TCP_UNBOUND_PER_SOURCE_MAX: usize = 32;
/// A message begun must be complete within this.
pub const SIP_TCP_HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection nobody registers on is closed after this.
pub const SIP_TCP_UNBOUND_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A registered device's connection silent for this many keepalive intervals is closed.
pub const SIP_TCP_BOUND_IDLE_KEEPALIVES: u32 = 4;
/// Messages queued to one connection before it counts as stuck.
pub const SIP_TCP_SEND_QUEUE_MSGS_MAX: usize = 64;
const SIP_TCP_READ_BYTES: usize = 16 * 1024;

struct Conn {
    tx: LocalSender<Vec<u8>>,
    ip: IpAddr,
}

#[derive(Default)]
pub struct TcpConns {
    conns: HashMap<ConnId, Conn>,
    by_source: HashMap<IpAddr, Vec<ConnId>>,
    next_id: ConnId,
}

impl TcpConns {
    /// Queues bytes for a connection; false if it is gone or its queue is full.
    pub fn send(&self, conn: ConnId, bytes: Vec<u8>) -> bool {
        self.conns.get(&conn).is_some_and(|c| c.tx.try_send(bytes).is_ok())
    }

    fn remove(&mut self, id: ConnId) {
        if let Some(c) = self.conns.remove(&id)
            && let Some(list) = self.by_source.get_mut(&c.ip)
        {
            list.retain(|x| *x != id);
            if list.is_empty() {
                self.by_source.remove(&c.ip);
            }
        }
    }
}

impl Control {
    /// Whether a new connection from `ip` may be taken now.
    fn tcp_admits(&self, ip: IpAddr) -> bool {
        let tcp = self.tcp.borrow();
        let ep = self.endpoint.borrow();
        let total = tcp.conns.len();
        let unbound = total.saturating_sub(ep.bound_conn_count());
        let unbound_from_ip = tcp.by_source.get(&ip).map_or(0, |l| l.iter().filter(|c| !ep.is_bound_conn(**c)).count());
        total < SIP_TCP_CONNS_MAX && unbound < SIP_TCP_UNBOUND_CONNS_MAX && unbound_from_ip < SIP_TCP_UNBOUND_PER_SOURCE_MAX
    }

    pub(super) async fn tcp_accept_loop(self: Rc<Self>, listener: glommio::net::TcpListener) {
        loop {
            let stream = match listener.accept().await {
                Ok(s) => s,
                Err(error) => {
                    self.warn_limited(|| tracing::warn!(%error, "SIP TCP accept failed"));
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(addr) = stream.peer_addr() else { continue };
            if !self.is_active() {
                self.counters.borrow_mut().standby_dropped += 1;
                continue; // a standby serves no SIP: dropping it closes it
            }
            if !self.tcp_admits(addr.ip()) {
                self.counters.borrow_mut().tcp_refused += 1;
                self.warn_limited(|| tracing::warn!(%addr, "SIP TCP connection refused: too many unregistered connections"));
                continue; // dropping it closes it
            }
            self.counters.borrow_mut().tcp_accepted += 1;
            let (tx, rx) = local_channel::new_bounded::<Vec<u8>>(SIP_TCP_SEND_QUEUE_MSGS_MAX);
            let id = {
                let mut tcp = self.tcp.borrow_mut();
                tcp.next_id += 1;
                let id = tcp.next_id;
                tcp.conns.insert(id, Conn { tx, ip: addr.ip() });
                tcp.by_source.entry(addr.ip()).or_default().push(id);
                id
            };
            let (reader, mut writer) = futures_lite::io::split(stream);
            let writer_task = glommio::spawn_local(async move {
                while let Some(bytes) = rx.recv().await {
                    if writer.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
            })
            .detach();
            let me = self.clone();
            glommio::spawn_local(async move {
                me.tcp_read(reader, id, addr).await;
                me.tcp.borrow_mut().remove(id);
                me.command(Command::ConnClosed { conn: id });
                writer_task.cancel();
            })
            .detach();
        }
    }

    async fn tcp_read(self: &Rc<Self>, mut reader: impl futures_lite::AsyncRead + Unpin, id: ConnId, addr: SocketAddr) {
        let peer = Peer::Tcp { conn: id, addr };
        let bound_idle = self.endpoint.borrow().config().keepalive_interval * SIP_TCP_BOUND_IDLE_KEEPALIVES;
        let accepted = Instant::now();
        let mut last_message = accepted;
        let mut partial_since: Option<Instant> = None;
        let mut framer = StreamFramer::default();
        let mut buf = vec![0u8; SIP_TCP_READ_BYTES];
        loop {
            let now = Instant::now();
            let bound = self.endpoint.borrow().is_bound_conn(id);
            let deadline = match partial_since {
                Some(t) => t + SIP_TCP_HEAD_TIMEOUT,
                None if bound => last_message + bound_idle,
                None => accepted + SIP_TCP_UNBOUND_IDLE_TIMEOUT,
            };
            if now >= deadline {
                self.counters.borrow_mut().tcp_timeouts += 1;
                tracing::info!(%addr, bound, partial = partial_since.is_some(), "SIP TCP connection timed out; closing");
                return;
            }
            let read = glommio::timer::timeout(deadline - now, async { Ok(reader.read(&mut buf).await) }).await;
            let n = match read {
                Err(_) => continue, // the deadline is looked at again (a device may have registered)
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => n,
            };
            framer.push(&buf[..n]);
            let mut completed = false;
            loop {
                match framer.next_message() {
                    Ok(Some(message)) => {
                        completed = true;
                        self.input(|ep, now| ep.handle_datagram(now, peer, &message));
                    }
                    Ok(None) => break,
                    Err(error) => {
                        self.warn_limited(|| tracing::warn!(%addr, %error, "SIP TCP stream unframeable; closing"));
                        return;
                    }
                }
            }
            let now = Instant::now();
            if completed {
                last_message = now;
            }
            partial_since = match (framer.buffered(), completed) {
                (0, _) => None,
                (_, true) => Some(now),
                (_, false) => partial_since.or(Some(now)),
            };
        }
    }
}
