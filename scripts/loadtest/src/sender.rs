//! Paced sending of many streams with sendmmsg: the frame interval is cut into 1 ms slots,
//! each stream sends its frame in its own slot, so the load is smooth rather than bursty.

use crate::capture::{Capture, TS_PER_FRAME};
use gmv::proto::testutil::Rng;
use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const SLOT: Duration = Duration::from_millis(1);
const SLOTS_PER_FRAME: u64 = 1000 / crate::capture::FPS as u64;
/// Messages per sendmmsg call.
const BATCH_MSGS_MAX: usize = 512;

#[derive(Debug, Clone, Copy, Default)]
pub struct Impairment {
    /// Per-packet probabilities in percent.
    pub loss_pct: f64,
    pub reorder_pct: f64,
    pub dup_pct: f64,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SendStats {
    pub packets: u64,
    pub bytes: u64,
    pub dropped_on_purpose: u64,
    pub send_errors: u64,
    pub late_slots: u64,
}

impl SendStats {
    pub fn merge(self, o: SendStats) -> SendStats {
        SendStats {
            packets: self.packets + o.packets,
            bytes: self.bytes + o.bytes,
            dropped_on_purpose: self.dropped_on_purpose + o.dropped_on_purpose,
            send_errors: self.send_errors + o.send_errors,
            late_slots: self.late_slots + o.late_slots,
        }
    }
}

pub struct Target {
    pub ssrc: u32,
    pub dest: SocketAddrV4,
}

/// Sends until `until`; returns what went out. With `clock`, when each picture of the first
/// target finished sending is noted there.
pub fn run(capture: &Capture, targets: &[Target], until: Instant, imp: Impairment, seed: u64, clock: Option<&crate::frame_clock::FrameClock>) -> SendStats {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind sender");
    let fd = sock.as_raw_fd();
    let big: libc::c_int = 4 << 20;
    // SAFETY: setsockopt with a valid fd and an int option value.
    unsafe {
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, &big as *const _ as *const libc::c_void, std::mem::size_of::<libc::c_int>() as u32);
    }
    let mut rng = Rng::new(seed);
    let mut stats = SendStats::default();
    let mut seqs: Vec<u16> = targets.iter().map(|t| t.ssrc as u16).collect();
    let mut arena: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut msgs: Vec<(usize, usize, usize)> = Vec::new(); // (offset, len, target)
    let start = Instant::now();
    let frames = capture.frames.len() as u64;
    for tick in 0u64.. {
        let due = start + SLOT * tick as u32;
        let now = Instant::now();
        if due > until {
            break;
        }
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > SLOT * 2 {
            stats.late_slots += 1;
        }
        let frame_no = tick / SLOTS_PER_FRAME;
        let (lap, fi) = (frame_no / frames, (frame_no % frames) as usize);
        let lap_ts = (lap * frames * u64::from(TS_PER_FRAME)) as u32;
        arena.clear();
        msgs.clear();
        for (i, t) in targets.iter().enumerate() {
            if i as u64 % SLOTS_PER_FRAME != tick % SLOTS_PER_FRAME {
                continue;
            }
            let first = msgs.len();
            for template in &capture.frames[fi] {
                let seq = seqs[i];
                seqs[i] = seq.wrapping_add(1);
                if rng.below(1_000_000) < (imp.loss_pct * 10_000.0) as usize {
                    stats.dropped_on_purpose += 1;
                    continue;
                }
                let off = arena.len();
                crate::capture::patch(template, t.ssrc, seq, lap_ts, &mut arena);
                msgs.push((off, template.len(), i));
                if rng.below(1_000_000) < (imp.dup_pct * 10_000.0) as usize {
                    msgs.push((off, template.len(), i));
                }
            }
            if msgs.len() - first >= 2 && rng.below(1_000_000) < (imp.reorder_pct * 10_000.0) as usize {
                let j = first + rng.below(msgs.len() - first - 1);
                msgs.swap(j, j + 1);
            }
        }
        for chunk in msgs.chunks(BATCH_MSGS_MAX) {
            send_batch(fd, &arena, chunk, targets, &mut stats);
        }
        if let Some(clock) = clock.filter(|_| tick % SLOTS_PER_FRAME == 0) {
            clock.sent(frame_no);
        }
    }
    stats
}

fn sockaddr(a: &SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
        sin_zero: [0; 8],
    }
}

fn send_batch(fd: i32, arena: &[u8], msgs: &[(usize, usize, usize)], targets: &[Target], stats: &mut SendStats) {
    let mut addrs: Vec<libc::sockaddr_in> = msgs.iter().map(|m| sockaddr(&targets[m.2].dest)).collect();
    let mut iovs: Vec<libc::iovec> =
        msgs.iter().map(|m| libc::iovec { iov_base: arena[m.0..].as_ptr() as *mut libc::c_void, iov_len: m.1 }).collect();
    let mut hdrs: Vec<libc::mmsghdr> = (0..msgs.len())
        .map(|i| {
            // SAFETY: msghdr is plain data; zeroed is a valid empty header.
            let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
            h.msg_name = &mut addrs[i] as *mut _ as *mut libc::c_void;
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
            libc::mmsghdr { msg_hdr: h, msg_len: 0 }
        })
        .collect();
    let mut done = 0;
    while done < hdrs.len() {
        // SAFETY: every header points into `addrs`/`iovs`/`arena`, alive for this call.
        let n = unsafe { libc::sendmmsg(fd, hdrs[done..].as_mut_ptr(), (hdrs.len() - done) as u32, 0) };
        if n <= 0 {
            stats.send_errors += (hdrs.len() - done) as u64;
            return;
        }
        for h in &hdrs[done..done + n as usize] {
            stats.packets += 1;
            stats.bytes += u64::from(h.msg_len);
        }
        done += n as usize;
    }
}
