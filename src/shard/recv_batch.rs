//! Several datagrams per receive call (recvmmsg): for the single RTP port, where one socket
//! carries every camera of the shard, and for the streams' own sockets, taken after a gather
//! pause (`stream_sockets`), when a socket may hold several. The buffers are allocated once
//! and reused.

use std::net::SocketAddr;
use std::os::fd::RawFd;

/// Datagrams per call at most.
pub const RECV_BATCH_DATAGRAMS: usize = 32;

pub struct RecvBatch {
    bufs: Box<[u8]>,
    iovs: Box<[libc::iovec]>,
    addrs: Box<[libc::sockaddr_storage]>,
    msgs: Box<[libc::mmsghdr]>,
    datagram_bytes_max: usize,
}

impl RecvBatch {
    /// Room for `RECV_BATCH_DATAGRAMS` datagrams of up to `datagram_bytes_max` each.
    pub fn new(datagram_bytes_max: usize) -> RecvBatch {
        let mut bufs = vec![0u8; RECV_BATCH_DATAGRAMS * datagram_bytes_max].into_boxed_slice();
        // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value.
        let mut addrs: Box<[libc::sockaddr_storage]> = (0..RECV_BATCH_DATAGRAMS).map(|_| unsafe { std::mem::zeroed() }).collect();
        let mut iovs: Box<[libc::iovec]> = (0..RECV_BATCH_DATAGRAMS)
            .map(|i| libc::iovec { iov_base: bufs[i * datagram_bytes_max..].as_mut_ptr().cast(), iov_len: datagram_bytes_max })
            .collect();
        let msgs = (0..RECV_BATCH_DATAGRAMS)
            .map(|i| {
                // SAFETY: mmsghdr is plain data; all zeroes is an empty header, filled in below.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
                m.msg_hdr.msg_iov = &mut iovs[i];
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        // The headers point into the boxed slices, whose heap memory stays put when `RecvBatch`
        // moves and lives as long as it.
        RecvBatch { bufs, iovs, addrs, msgs, datagram_bytes_max }
    }

    /// Takes what is queued on `fd` without waiting (up to `RECV_BATCH_DATAGRAMS`); how many.
    /// `WouldBlock` when nothing is.
    pub fn recv(&mut self, fd: RawFd) -> std::io::Result<usize> {
        for m in self.msgs.iter_mut() {
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            m.msg_hdr.msg_flags = 0;
            m.msg_len = 0;
        }
        debug_assert_eq!(self.iovs.len(), self.msgs.len());
        // SAFETY: every header points at a buffer and an address of this batch, alive and
        // sized as the header says, for the length of the call.
        let n = unsafe { libc::recvmmsg(fd, self.msgs.as_mut_ptr(), RECV_BATCH_DATAGRAMS as u32, libc::MSG_DONTWAIT, std::ptr::null_mut()) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Datagram `i` of the last call and who sent it. A datagram larger than
    /// `datagram_bytes_max` comes truncated (as with a single receive into such a buffer).
    pub fn get(&self, i: usize) -> (&[u8], SocketAddr) {
        let m = &self.msgs[i];
        let len = (m.msg_len as usize).min(self.datagram_bytes_max);
        let start = i * self.datagram_bytes_max;
        let from = socket_addr(&self.addrs[i]).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        (&self.bufs[start..start + len], from)
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

/// `data` as a packet of its own, copied to the end of `slab` (a fresh one of `slab_bytes`
/// when it has no room left): packets share slabs, the batch's buffers are reused at once.
pub fn copy_into_slab(slab: &mut bytes::BytesMut, data: &[u8], slab_bytes: usize) -> bytes::Bytes {
    if slab.capacity() - slab.len() < data.len() {
        *slab = bytes::BytesMut::with_capacity(slab_bytes.max(data.len()));
    }
    slab.extend_from_slice(data);
    slab.split().freeze()
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
                got.extend((0..n).map(|i| batch.get(i)).map(|(d, from)| (d.to_vec(), from)));
            }
        }
        for (i, (data, from)) in got.iter().take(5).enumerate() {
            assert_eq!((data.len(), data[0], *from), (10 + i, i as u8, tx.local_addr().unwrap()));
        }
        assert_eq!(got[5].0, vec![9u8; 100], "truncated to the buffer");
        assert_eq!(batch.recv(rx.as_raw_fd()).unwrap_err().kind(), std::io::ErrorKind::WouldBlock);
    }
}
