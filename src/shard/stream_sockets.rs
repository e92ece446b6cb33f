//! The UDP sockets of streams that have a port of their own, taken through one epoll set per
//! shard: one wake (an io_uring poll of the set) finds every socket with datagrams queued, and
//! after a round that found some the shard waits `rtp.gather_us` before looking again, as the
//! single port does. One io_uring receive per socket instead woke the shard for nearly every
//! datagram (docs/PERFORMANCE.md). What is queued on a socket is taken in one recvmmsg into
//! the receive loop's slab, like the single port's batches (`recv_batch`).

use super::recv_batch::{GatherPause, RecvBatch};
use super::source::Origin;
use super::stream::{Stream, UDP_DATAGRAM_BYTES_MAX, UDP_DATAGRAMS_PER_TURN_MAX};
use super::{Shard, TurnBudget};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

/// Ready sockets taken from the epoll set per call; more wait for the next call of the round.
const READY_SOCKETS_PER_CALL_MAX: usize = 256;
/// After the set itself fails (never seen), wait this long before trying again.
const SET_FAILED_PAUSE: Duration = Duration::from_millis(100);

struct Registered {
    socket: OwnedFd,
    stream: Weak<Stream>,
}

/// A shard's per-stream UDP sockets. The port pool bounds how many (one per port of the
/// shard's slice of `rtp.port_min..=port_max`).
pub struct StreamSockets {
    epoll: OwnedFd,
    /// By token: a socket's token is never used again, so an event read before a stream
    /// closed cannot reach a socket that took its descriptor number since.
    registered: RefCell<HashMap<u64, Registered, rustc_hash::FxBuildHasher>>,
    next_token: Cell<u64>,
    recv_errors: Cell<u64>,
}

impl StreamSockets {
    fn new() -> std::io::Result<StreamSockets> {
        // SAFETY: epoll_create1 takes no pointers; a descriptor it returns is ours alone.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(StreamSockets { epoll, registered: Default::default(), next_token: Cell::new(0), recv_errors: Cell::new(0) })
    }

    /// The shard's set, made (and its receive task started) on first use.
    fn of(shard: &Rc<Shard>) -> std::io::Result<Rc<StreamSockets>> {
        if let Some(s) = shard.stream_sockets.get() {
            return Ok(s.clone());
        }
        let sockets = Rc::new(StreamSockets::new()?);
        let _ = shard.stream_sockets.set(sockets.clone());
        glommio::spawn_local(receive(shard.clone(), sockets.clone())).detach();
        Ok(sockets)
    }

    /// `socket`'s datagrams go to `stream` from now on, until `remove` with the token returned.
    pub fn add(shard: &Rc<Shard>, socket: OwnedFd, stream: Weak<Stream>) -> std::io::Result<u64> {
        let sockets = StreamSockets::of(shard)?;
        let token = sockets.next_token.get();
        sockets.next_token.set(token + 1);
        let mut event = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token };
        // SAFETY: both descriptors are open; the event is read during the call only.
        if unsafe { libc::epoll_ctl(sockets.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, socket.as_raw_fd(), &mut event) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        sockets.registered.borrow_mut().insert(token, Registered { socket, stream });
        Ok(token)
    }

    /// Closes the socket `add` returned `token` for (its datagrams are no longer taken).
    pub fn remove(shard: &Shard, token: u64) {
        if let Some(sockets) = shard.stream_sockets.get() {
            sockets.forget(token);
        }
    }

    fn forget(&self, token: u64) {
        let Some(gone) = self.registered.borrow_mut().remove(&token) else { return };
        // Closing the last descriptor of a socket takes it out of the set too; saying so
        // first keeps the set exact even if the descriptor were shared.
        // SAFETY: both descriptors are open; a null event is allowed for EPOLL_CTL_DEL.
        unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_DEL, gone.socket.as_raw_fd(), std::ptr::null_mut()) };
    }

    /// Tokens of sockets with datagrams queued (at most `events.len()`), without waiting.
    fn ready(&self, events: &mut [libc::epoll_event]) -> std::io::Result<usize> {
        let max = events.len().min(i32::MAX as usize) as i32;
        // SAFETY: the kernel writes at most `max` events into the slice.
        let n = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), max, 0) };
        match n {
            n if n >= 0 => Ok(n as usize),
            _ => Err(std::io::Error::last_os_error()),
        }
    }

    /// The socket and stream of `token`, if still registered. A socket whose stream is gone
    /// without being closed (never expected) is closed here, or it would stay ready forever.
    fn socket_of(&self, token: u64) -> Option<(RawFd, Rc<Stream>)> {
        let found = self.registered.borrow().get(&token).map(|r| (r.socket.as_raw_fd(), r.stream.upgrade()));
        match found? {
            (fd, Some(stream)) => Some((fd, stream)),
            (_, None) => {
                self.forget(token);
                None
            }
        }
    }

    fn holds(&self, token: u64) -> bool {
        self.registered.borrow().contains_key(&token)
    }

    pub fn recv_errors(&self) -> u64 {
        self.recv_errors.get()
    }

    fn count_recv_error(&self) -> u64 {
        self.recv_errors.set(self.recv_errors.get() + 1);
        self.recv_errors.get()
    }
}

/// The shard's per-stream UDP sockets, forever: take what every ready socket has queued, then
/// (after a round that found datagrams) wait `rtp.gather_us`, or else wait for the set to
/// become readable.
async fn receive(shard: Rc<Shard>, sockets: Rc<StreamSockets>) {
    let mut batch = RecvBatch::new(UDP_DATAGRAM_BYTES_MAX);
    let mut turn = TurnBudget::new(UDP_DATAGRAMS_PER_TURN_MAX);
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; READY_SOCKETS_PER_CALL_MAX];
    let mut gather = GatherPause::new(shard.config.rtp.gather_us);
    loop {
        let n = match sockets.ready(&mut events) {
            Ok(0) => {
                if gather.pause_if_flowing().await {
                    continue;
                }
                if let Err(error) = glommio::net::poll_readable(sockets.epoll.as_raw_fd()).await {
                    tracing::warn!(shard = shard.index, %error, "waiting for the streams' UDP sockets failed");
                    glommio::timer::sleep(SET_FAILED_PAUSE).await;
                }
                continue;
            }
            Ok(n) => n,
            Err(error) => {
                tracing::warn!(shard = shard.index, %error, "asking which stream UDP sockets are ready failed");
                glommio::timer::sleep(SET_FAILED_PAUSE).await;
                continue;
            }
        };
        gather.took();
        let mut delivered = 0usize;
        let mut now = Instant::now();
        for event in &events[..n] {
            let token = event.u64;
            // Looked up now, after the last yield: the stream may have closed meanwhile.
            let Some((fd, stream)) = sockets.socket_of(token) else { continue };
            let taken = match batch.recv(fd) {
                Ok(taken) => taken,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
                Err(error) => {
                    let recv_errors = sockets.count_recv_error();
                    if recv_errors.is_power_of_two() {
                        tracing::warn!(shard = shard.index, ssrc = stream.spec.ssrc, %error, recv_errors, "RTP UDP receive failed");
                    }
                    0
                }
            };
            for i in 0..taken {
                if !sockets.holds(token) {
                    break; // closed while this batch was delivered
                }
                let (packet, peer) = batch.take(i);
                stream.on_packet(packet, "udp", Origin::Udp(peer), now);
                delivered += 1;
                if turn.spend().await {
                    now = Instant::now();
                }
            }
        }
        if delivered == 0 {
            // Ready sockets that gave nothing (closed meanwhile, a receive error): the other
            // tasks run before the set is asked again.
            futures_lite::future::yield_now().await;
        }
    }
}
