//! The floor to compare gmv against: a receiver that binds the same ports (one per stream, or
//! the single port with the engine's own SO_REUSEPORT group and steering program) and only
//! drains and counts datagrams: epoll + recvmmsg, one thread per core, and after a round that
//! found datagrams a pause as long as the engine's `rtp.gather_us` before looking again (the
//! same wake-ups for the same load; without a pause a bare thread, faster than the generator,
//! wakes every 5 datagrams: docs/PERFORMANCE.md). It runs as a child process
//! (`--bare-receiver`) so its CPU is measured like the engine's, and writes its count to a
//! file every `COUNT_EVERY` (a new file renamed over the old).

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Datagrams per recvmmsg call, and the size of each buffer.
const BATCH_MSGS: usize = 32;
const DATAGRAM_BYTES_MAX: usize = 9_000;
const EPOLL_EVENTS_MAX: usize = 256;
const EPOLL_WAIT_MS: i32 = 100;
const COUNT_EVERY: Duration = Duration::from_millis(100);
/// Kernel receive buffer per socket, as gmv asks for its per-stream sockets.
const RCVBUF_BYTES: usize = 2 << 20;

/// Binds, drains and counts until `run_for` has passed; never returns. `rcvbuf_bytes` replaces
/// the receive buffer the engine's sockets of that kind ask for (to see what it costs).
pub fn serve(ports: &[u16], single_port: Option<u16>, threads: usize, rcvbuf_bytes: Option<usize>, gather: Duration, count_file: &std::path::Path, run_for: Duration) -> ! {
    let threads = threads.max(1);
    let ip: std::net::IpAddr = std::net::Ipv4Addr::LOCALHOST.into();
    let sockets: Vec<OwnedFd> = match single_port {
        Some(port) => {
            let group = gmv::shard::steer::bind_group(ip, port, threads).expect("bind the single port group");
            if let Some(bytes) = rcvbuf_bytes {
                group.iter().for_each(|s| force_rcvbuf(s, bytes));
            }
            group
        }
        None => ports
            .iter()
            .map(|&p| {
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).expect("socket");
                let _ = s.set_recv_buffer_size(rcvbuf_bytes.unwrap_or(RCVBUF_BYTES));
                s.bind(&std::net::SocketAddr::new(ip, p).into()).unwrap_or_else(|e| panic!("bind {p}: {e}"));
                OwnedFd::from(s)
            })
            .collect(),
    };
    let count = Arc::new(AtomicU64::new(0));
    let mut per_thread: Vec<Vec<OwnedFd>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, s) in sockets.into_iter().enumerate() {
        per_thread[i % threads].push(s);
    }
    for (core, socks) in per_thread.into_iter().enumerate() {
        let count = count.clone();
        std::thread::spawn(move || drain(core, socks, gather, &count));
    }
    let deadline = Instant::now() + run_for;
    // Written whole and renamed over: a reader never sees the file truncated between writes
    // (a count read as 0 under load).
    let tmp = count_file.with_extension("tmp");
    while Instant::now() < deadline {
        std::thread::sleep(COUNT_EVERY);
        if std::fs::write(&tmp, count.load(Ordering::Relaxed).to_string()).is_ok() {
            let _ = std::fs::rename(&tmp, count_file);
        }
    }
    std::process::exit(0);
}

fn force_rcvbuf(s: &OwnedFd, bytes: usize) {
    let want = bytes.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: setsockopt on an fd we own with an int that outlives the call.
    unsafe {
        libc::setsockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, (&want as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>() as libc::socklen_t);
    }
}

fn drain(core: usize, sockets: Vec<OwnedFd>, gather: Duration, count: &AtomicU64) {
    // SAFETY: plain libc calls on fds this thread owns; buffers outlive each call.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        let epoll = libc::epoll_create1(0);
        assert!(epoll >= 0, "epoll_create1");
        for s in &sockets {
            let fd = s.as_raw_fd();
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
            let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: fd as u64 };
            libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut ev);
        }
        let mut bufs = vec![0u8; BATCH_MSGS * DATAGRAM_BYTES_MAX];
        let mut iovs: Vec<libc::iovec> = (0..BATCH_MSGS)
            .map(|i| libc::iovec { iov_base: bufs.as_mut_ptr().add(i * DATAGRAM_BYTES_MAX).cast(), iov_len: DATAGRAM_BYTES_MAX })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                let mut m: libc::mmsghdr = std::mem::zeroed();
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EPOLL_EVENTS_MAX];
        let mut flowing = false;
        loop {
            if std::mem::take(&mut flowing) && !gather.is_zero() {
                std::thread::sleep(gather);
            }
            let n = libc::epoll_wait(epoll, events.as_mut_ptr(), EPOLL_EVENTS_MAX as i32, EPOLL_WAIT_MS);
            flowing = n > 0;
            for ev in events.iter().take(n.max(0) as usize) {
                let fd = ev.u64 as i32;
                loop {
                    let got = libc::recvmmsg(fd, msgs.as_mut_ptr(), BATCH_MSGS as u32, libc::MSG_DONTWAIT, std::ptr::null_mut());
                    if got <= 0 {
                        break;
                    }
                    count.fetch_add(got as u64, Ordering::Relaxed);
                    if (got as usize) < BATCH_MSGS {
                        break;
                    }
                }
            }
        }
    }
}
