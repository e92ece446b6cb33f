//! Several datagrams per receive call (recvmmsg): for the single RTP port, where one socket
//! carries every camera of the shard, and for the streams' own sockets, taken after a gather
//! pause (`stream_sockets`), when a socket may hold several. The kernel writes the datagrams
//! straight into a slab that packets are cut from (no copy of a packet in user space); a slab
//! whose packets have all been dropped is reused from its start, so it stays in cache.

use bytes::{Buf, Bytes, BytesMut};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::RawFd;

/// Datagrams per call at most.
pub const RECV_BATCH_DATAGRAMS: usize = 32;
/// Room for a datagram in the slab: a 1500-byte MTU's datagram fits whole. The rest of a
/// larger one (up to the batch's `datagram_bytes_max`) lands in an overflow buffer and the
/// packet is put together by a copy.
pub const RECV_SLOT_BYTES: usize = 1_536;
/// A receive loop's slab: room for a whole batch several times over, so a batch of a few
/// datagrams (a stream's own socket) is followed by others in the same slab.
pub const RECV_SLAB_BYTES: usize = 4 * RECV_BATCH_DATAGRAMS * RECV_SLOT_BYTES;

pub struct RecvBatch {
    /// Packets are split off its front; its spare capacity is where the kernel writes.
    slab: BytesMut,
    overflow: Box<[u8]>,
    /// Two a message: its slot in the slab, its part of the overflow buffer.
    iovs: Box<[libc::iovec]>,
    addrs: Box<[libc::sockaddr_storage]>,
    msgs: Box<[libc::mmsghdr]>,
    datagram_bytes_max: usize,
    slot_bytes: usize,
    /// Datagrams the last call received, and how far into its slots packets were cut.
    received: usize,
    cut_to: usize,
}

impl RecvBatch {
    /// Room for `RECV_BATCH_DATAGRAMS` datagrams of up to `datagram_bytes_max` each.
    pub fn new(datagram_bytes_max: usize) -> RecvBatch {
        let slot_bytes = datagram_bytes_max.min(RECV_SLOT_BYTES);
        let overflow_bytes = datagram_bytes_max - slot_bytes;
        let mut overflow = vec![0u8; RECV_BATCH_DATAGRAMS * overflow_bytes].into_boxed_slice();
        // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value.
        let mut addrs: Box<[libc::sockaddr_storage]> = (0..RECV_BATCH_DATAGRAMS).map(|_| unsafe { std::mem::zeroed() }).collect();
        let mut iovs: Box<[libc::iovec]> = (0..RECV_BATCH_DATAGRAMS)
            .flat_map(|i| {
                let rest = libc::iovec { iov_base: overflow[i * overflow_bytes..].as_mut_ptr().cast(), iov_len: overflow_bytes };
                // The slot's address is set before each call, in the slab as it is then.
                [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: slot_bytes }, rest]
            })
            .collect();
        let msgs = (0..RECV_BATCH_DATAGRAMS)
            .map(|i| {
                // SAFETY: mmsghdr is plain data; all zeroes is an empty header, filled in below.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
                m.msg_hdr.msg_iov = &mut iovs[2 * i];
                m.msg_hdr.msg_iovlen = if overflow_bytes > 0 { 2 } else { 1 };
                m
            })
            .collect();
        // The headers point into the boxed slices, whose heap memory stays put when `RecvBatch`
        // moves and lives as long as it.
        RecvBatch {
            slab: BytesMut::with_capacity(RECV_SLAB_BYTES),
            overflow,
            iovs,
            addrs,
            msgs,
            datagram_bytes_max,
            slot_bytes,
            received: 0,
            cut_to: 0,
        }
    }

    /// Takes what is queued on `fd` without waiting (up to `RECV_BATCH_DATAGRAMS`); how many.
    /// `WouldBlock` when nothing is. The datagrams of the call before that were not taken are
    /// gone.
    pub fn recv(&mut self, fd: RawFd) -> std::io::Result<usize> {
        self.received = 0;
        self.cut_to = 0;
        self.make_room();
        let slots = self.slab.spare_capacity_mut().as_mut_ptr();
        for (i, m) in self.msgs.iter_mut().enumerate() {
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            m.msg_hdr.msg_flags = 0;
            m.msg_len = 0;
            // In bounds: `make_room` left room for every slot.
            self.iovs[2 * i].iov_base = slots.wrapping_add(i * self.slot_bytes).cast();
        }
        debug_assert_eq!(self.iovs.len(), 2 * self.msgs.len());
        // SAFETY: every header points at an address of this batch and at two buffers the
        // batch owns alone (a slot in the slab's spare capacity, a part of the overflow),
        // alive and sized as the header says, for the length of the call.
        let n = unsafe { libc::recvmmsg(fd, self.msgs.as_mut_ptr(), RECV_BATCH_DATAGRAMS as u32, libc::MSG_DONTWAIT, std::ptr::null_mut()) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        self.received = n as usize;
        Ok(self.received)
    }

    /// Datagram `i` of the last call as a packet of its own, and who sent it; taken in order
    /// (a datagram skipped is gone). A datagram larger than `datagram_bytes_max` comes
    /// truncated (as with a single receive into such a buffer).
    pub fn take(&mut self, i: usize) -> (Bytes, SocketAddr) {
        assert!(i < self.received && i * self.slot_bytes >= self.cut_to, "datagram {i} taken out of order or not received");
        let len = (self.msgs[i].msg_len as usize).min(self.datagram_bytes_max);
        let from = socket_addr(&self.addrs[i]).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let slot = i * self.slot_bytes;
        // The slots before this one that were not filled (shorter datagrams, skipped ones)
        // are passed over; zeroed first, as only written bytes may be counted in the slab.
        let gap = slot - self.cut_to;
        self.slab.spare_capacity_mut()[..gap].fill(MaybeUninit::new(0));
        let in_slot = len.min(self.slot_bytes);
        // SAFETY: the gap was just written; the kernel wrote `in_slot` bytes of the slot.
        unsafe { self.slab.set_len(gap + in_slot) };
        self.slab.advance(gap);
        self.cut_to = slot + in_slot;
        let packet = if len <= self.slot_bytes {
            self.slab.split().freeze()
        } else {
            let rest = &self.overflow[i * (self.datagram_bytes_max - self.slot_bytes)..][..len - self.slot_bytes];
            let mut whole = BytesMut::with_capacity(len);
            whole.extend_from_slice(&self.slab);
            whole.extend_from_slice(rest);
            self.slab.advance(in_slot);
            whole.freeze()
        };
        (packet, from)
    }

    /// Room for every slot of a call at the slab's front: the slab starts over when its
    /// packets are all gone (in cache still), or a new one is allocated.
    fn make_room(&mut self) {
        debug_assert!(self.slab.is_empty(), "every packet taken is split off");
        let needed = RECV_BATCH_DATAGRAMS * self.slot_bytes;
        if self.slab.capacity() < needed && !self.slab.try_reclaim(RECV_SLAB_BYTES) {
            self.slab = BytesMut::with_capacity(RECV_SLAB_BYTES);
        }
    }
}

/// `rtp.gather_us` for a receive loop: after a receive that found datagrams has emptied what
/// the loop reads, it waits this long before looking again instead of arming a wake for the
/// next datagram, so a wake takes a batch (the executor parked and woken less often; measured
/// in docs/PERFORMANCE.md). The single port's loop and the streams' own sockets' share it.
pub struct GatherPause {
    pause: std::time::Duration,
    /// Datagrams came since the loop last found nothing queued: more are likely on the way.
    flowing: bool,
}

impl GatherPause {
    pub fn new(gather_us: u32) -> GatherPause {
        GatherPause { pause: std::time::Duration::from_micros(u64::from(gather_us)), flowing: false }
    }

    /// A receive found datagrams.
    pub fn took(&mut self) {
        self.flowing = true;
    }

    /// Nothing is queued: pauses and returns true (look again) when datagrams came since the
    /// last time; false when the loop should wait for the next datagram instead.
    pub async fn pause_if_flowing(&mut self) -> bool {
        if !std::mem::take(&mut self.flowing) || self.pause.is_zero() {
            return false;
        }
        glommio::timer::sleep(self.pause).await;
        true
    }
}

/// The IPv4 or IPv6 address the kernel wrote.
fn socket_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in (it is large enough).
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::from((u32::from_be(a.sin_addr.s_addr).to_be_bytes(), u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6 (it is large enough).
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::from((a.sin6_addr.s6_addr, u16::from_be(a.sin6_port))))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn takes_what_is_queued_in_one_call_and_would_block_after() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut batch = RecvBatch::new(100);
        assert_eq!(batch.recv(rx.as_raw_fd()).unwrap_err().kind(), std::io::ErrorKind::WouldBlock);
        for i in 0..5u8 {
            tx.send_to(&vec![i; 10 + usize::from(i)], rx.local_addr().unwrap()).unwrap();
        }
        tx.send_to(&[9u8; 150], rx.local_addr().unwrap()).unwrap();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < 6 && std::time::Instant::now() < deadline {
            if let Ok(n) = batch.recv(rx.as_raw_fd()) {
                got.extend((0..n).map(|i| batch.take(i)).map(|(d, from)| (d.to_vec(), from)));
            }
        }
        for (i, (data, from)) in got.iter().take(5).enumerate() {
            assert_eq!((data.len(), data[0], *from), (10 + i, i as u8, tx.local_addr().unwrap()));
        }
        assert_eq!(got[5].0, vec![9u8; 100], "truncated to the buffer");
        assert_eq!(batch.recv(rx.as_raw_fd()).unwrap_err().kind(), std::io::ErrorKind::WouldBlock);
    }

    fn pair() -> (std::net::UdpSocket, std::net::UdpSocket) {
        (std::net::UdpSocket::bind("127.0.0.1:0").unwrap(), std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
    }

    /// Receives until `want` datagrams came (a deadline bounds it), keeping the packets.
    fn recv_all(batch: &mut RecvBatch, rx: &std::net::UdpSocket, want: usize) -> Vec<Bytes> {
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < want && std::time::Instant::now() < deadline {
            if let Ok(n) = batch.recv(rx.as_raw_fd()) {
                got.extend((0..n).map(|i| batch.take(i).0));
            }
        }
        got
    }

    /// A datagram past the slot is put together from its slot and the overflow; datagrams
    /// skipped are passed over and the next ones come whole.
    #[test]
    fn large_datagrams_whole_and_skipped_ones_passed_over() {
        let (rx, tx) = pair();
        let mut batch = RecvBatch::new(9_000);
        let big: Vec<u8> = (0..5_000u32).map(|i| i as u8).collect();
        tx.send_to(&big, rx.local_addr().unwrap()).unwrap();
        tx.send_to(&[1u8; 20], rx.local_addr().unwrap()).unwrap();
        tx.send_to(&[2u8; 30], rx.local_addr().unwrap()).unwrap();
        tx.send_to(&[3u8; RECV_SLOT_BYTES], rx.local_addr().unwrap()).unwrap();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut seen = 0;
        while seen < 4 && std::time::Instant::now() < deadline {
            if let Ok(n) = batch.recv(rx.as_raw_fd()) {
                for i in 0..n {
                    // The second datagram (20 bytes of 1) is skipped.
                    if seen + i != 1 {
                        got.push(batch.take(i).0);
                    }
                }
                seen += n;
            }
        }
        assert_eq!(got.iter().map(|p| p.to_vec()).collect::<Vec<_>>(), vec![big, vec![2u8; 30], vec![3u8; RECV_SLOT_BYTES]]);
    }

    /// Once its packets are gone the slab is written again from its start (it stays in
    /// cache); a packet still held keeps its bytes however many datagrams come after it.
    #[test]
    fn a_slab_is_reused_when_free_and_never_under_a_held_packet() {
        let (rx, tx) = pair();
        let mut batch = RecvBatch::new(9_000);
        tx.send_to(&[7u8; 100], rx.local_addr().unwrap()).unwrap();
        let first = recv_all(&mut batch, &rx, 1);
        let start = first[0].as_ptr();
        drop(first);
        // Enough datagrams to run through the slab several times over.
        let rounds = 3 * RECV_SLAB_BYTES / 1_000;
        let mut send_one = |round: usize| {
            tx.send_to(&[(round % 251) as u8; 1_000], rx.local_addr().unwrap()).unwrap();
            recv_all(&mut batch, &rx, 1).pop().expect("a datagram on loopback")
        };
        let reused = (0..rounds).filter(|round| send_one(*round).as_ptr() == start).count();
        assert!(reused >= 2, "the slab was written from its start again {reused} times");
        let held = send_one(5);
        let held_range = held.as_ptr_range();
        for round in 0..rounds {
            let packet = send_one(round);
            let range = packet.as_ptr_range();
            assert!(range.end <= held_range.start || range.start >= held_range.end, "a packet written over a held one");
        }
        assert_eq!(held.to_vec(), vec![5u8; 1_000]);
    }
}
