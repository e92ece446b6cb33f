//! One RTP port for every stream (`rtp.port`): each media shard binds it with SO_REUSEPORT and a
//! classic BPF program, attached to the group with SO_ATTACH_REUSEPORT_CBPF, picks the socket of
//! the shard that owns the packet's SSRC (bytes 8..12 of the UDP payload), with the same hash
//! `owner_of` places streams by. A datagram too short or not RTP version 2 goes to the first
//! media shard, which counts and drops it. No hand-off, no lock: each packet arrives where its
//! stream lives.

use std::os::fd::{FromRawFd, OwnedFd};

/// Multiplier of the SSRC hash: 32-bit, so a classic BPF program (32-bit ALU) computes it too.
pub const SSRC_HASH_MUL: u32 = 0x9E37_79B1;
/// The hash keeps the high half of the product (its low bits are poor for sequential SSRCs).
const SSRC_HASH_SHIFT: u32 = 16;
/// The RTP header's fixed part: what a packet needs to have an SSRC.
const RTP_HEADER_BYTES: u32 = 12;

/// Which of `n` buckets an SSRC falls in (0-based): media shard `1 + bucket`.
pub fn ssrc_bucket(ssrc: u32, n: usize) -> usize {
    (ssrc.wrapping_mul(SSRC_HASH_MUL) >> SSRC_HASH_SHIFT) as usize % n.max(1)
}

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter { code: code as u16, jt: 0, jf: 0, k }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code: code as u16, jt, jf, k }
}

/// Receive buffer of each shard's socket of the single port. Every camera of the shard shares
/// it, so it holds what per-stream sockets hold between them: 1000 cameras' I-frames arriving
/// together are ~43,000 datagrams, each charged ~4.6 KB of kernel memory, while the shard also
/// faults in its first GOP caches; with 64 MiB the loadtest's cold start lost packets, with
/// this none (docs/PERFORMANCE.md). Kernel memory is used only while a backlog lasts. The
/// kernel caps a plain SO_RCVBUF at net.core.rmem_max (often 208 KiB or 4 MiB); with
/// CAP_NET_ADMIN, SO_RCVBUFFORCE goes past it.
pub const SINGLE_PORT_RCVBUF_BYTES: usize = 256 << 20;

fn set_big_recv_buffer(s: &socket2::Socket) {
    let want = SINGLE_PORT_RCVBUF_BYTES as libc::c_int;
    // SAFETY: setsockopt with a valid fd and an int option value that outlives the call.
    let forced = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(s),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&want as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    };
    if !forced {
        let _ = s.set_recv_buffer_size(SINGLE_PORT_RCVBUF_BYTES);
    }
    let got = s.recv_buffer_size().unwrap_or(0);
    // The kernel reports twice what it was asked (bookkeeping included).
    if got < SINGLE_PORT_RCVBUF_BYTES {
        tracing::warn!(
            got_bytes = got,
            want_bytes = SINGLE_PORT_RCVBUF_BYTES,
            "single RTP port: small receive buffer (no CAP_NET_ADMIN, capped at net.core.rmem_max); raise net.core.rmem_max or bursts of many cameras are dropped by the kernel"
        );
    }
}

/// The socket-selecting program for `n` sockets bound in shard order.
pub fn program(n: usize) -> Vec<libc::sock_filter> {
    use libc::{
        BPF_A, BPF_ABS, BPF_ALU, BPF_AND, BPF_B, BPF_JEQ, BPF_JGE, BPF_JMP, BPF_K, BPF_LD, BPF_LEN, BPF_MOD, BPF_MUL, BPF_RET, BPF_RSH, BPF_W,
    };
    vec![
        /* 0 */ stmt(BPF_LD | BPF_W | BPF_LEN, 0),
        /* 1 */ jump(BPF_JMP | BPF_JGE | BPF_K, RTP_HEADER_BYTES, 0, 8),
        /* 2 */ stmt(BPF_LD | BPF_B | BPF_ABS, 0),
        /* 3 */ stmt(BPF_ALU | BPF_AND | BPF_K, 0xC0),
        /* 4 */ jump(BPF_JMP | BPF_JEQ | BPF_K, 0x80, 0, 5),
        /* 5 */ stmt(BPF_LD | BPF_W | BPF_ABS, 8),
        /* 6 */ stmt(BPF_ALU | BPF_MUL | BPF_K, SSRC_HASH_MUL),
        /* 7 */ stmt(BPF_ALU | BPF_RSH | BPF_K, SSRC_HASH_SHIFT),
        /* 8 */ stmt(BPF_ALU | BPF_MOD | BPF_K, n.max(1) as u32),
        /* 9 */ stmt(BPF_RET | BPF_A, 0),
        /* 10 */ stmt(BPF_RET | BPF_K, 0),
    ]
}

/// `n` UDP sockets on `ip:port` in one SO_REUSEPORT group, bound in order (the group's socket
/// i is media shard i + 1), the steering program attached.
pub fn bind_group(ip: std::net::IpAddr, port: u16, n: usize) -> std::io::Result<Vec<OwnedFd>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = std::net::SocketAddr::new(ip, port);
    let domain = if ip.is_ipv6() { Domain::IPV6 } else { Domain::IPV4 };
    let mut group = Vec::with_capacity(n);
    for _ in 0..n {
        let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_port(true)?;
        set_big_recv_buffer(&s);
        s.bind(&addr.into())?;
        group.push(s);
    }
    let filter = program(n);
    let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr() as *mut libc::sock_filter };
    // SAFETY: the program outlives the call (the kernel copies it); the fd is ours and open.
    let r = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&group[0]),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: each fd comes from a socket we own and hand over exactly once.
    Ok(group.into_iter().map(|s| unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(s)) }).collect())
}

/// Listen backlog of each shard's TCP listener of the single port.
pub const TCP_LISTEN_BACKLOG: i32 = 1_024;

/// `n` TCP listeners on `ip:port` in one SO_REUSEPORT group: the kernel spreads connections
/// over them (by address; the SSRC comes later, in the first frame).
pub fn bind_tcp_group(ip: std::net::IpAddr, port: u16, n: usize) -> std::io::Result<Vec<OwnedFd>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = std::net::SocketAddr::new(ip, port);
    let domain = if ip.is_ipv6() { Domain::IPV6 } else { Domain::IPV4 };
    let mut group = Vec::with_capacity(n);
    for _ in 0..n {
        let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.bind(&addr.into())?;
        s.listen(TCP_LISTEN_BACKLOG)?;
        group.push(OwnedFd::from(s));
    }
    Ok(group)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the classic BPF subset `program` uses on a datagram, as the kernel would.
    fn run(prog: &[libc::sock_filter], data: &[u8]) -> u32 {
        use libc::{
            BPF_A, BPF_ABS, BPF_ALU, BPF_AND, BPF_B, BPF_JEQ, BPF_JGE, BPF_JMP, BPF_K, BPF_LD, BPF_LEN, BPF_MOD, BPF_MUL, BPF_RET, BPF_RSH, BPF_W,
        };
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let i = prog[pc];
            let code = u32::from(i.code);
            pc += 1;
            match code {
                c if c == BPF_LD | BPF_W | BPF_LEN => a = data.len() as u32,
                c if c == BPF_LD | BPF_B | BPF_ABS => match data.get(i.k as usize) {
                    Some(b) => a = u32::from(*b),
                    None => return 0, // the kernel ends the program: no socket chosen
                },
                c if c == BPF_LD | BPF_W | BPF_ABS => match data.get(i.k as usize..i.k as usize + 4) {
                    Some(w) => a = u32::from_be_bytes([w[0], w[1], w[2], w[3]]),
                    None => return 0,
                },
                c if c == BPF_ALU | BPF_AND | BPF_K => a &= i.k,
                c if c == BPF_ALU | BPF_MUL | BPF_K => a = a.wrapping_mul(i.k),
                c if c == BPF_ALU | BPF_RSH | BPF_K => a >>= i.k,
                c if c == BPF_ALU | BPF_MOD | BPF_K => a %= i.k,
                c if c == BPF_JMP | BPF_JGE | BPF_K => pc += usize::from(if a >= i.k { i.jt } else { i.jf }),
                c if c == BPF_JMP | BPF_JEQ | BPF_K => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                c if c == BPF_RET | BPF_A => return a,
                c if c == BPF_RET | BPF_K => return i.k,
                other => panic!("instruction {other:#x} not in the subset"),
            }
        }
    }

    #[test]
    fn the_program_and_owner_of_agree_for_many_ssrcs_and_shard_counts() {
        let mut rng = crate::proto::testutil::Rng::new(14);
        for n in 1..=8 {
            let prog = program(n);
            for i in 0..5_000u32 {
                let ssrc = if i < 2_000 { 200_000_000 + i } else { rng.next_u64() as u32 };
                let mut packet = vec![0x80, 96, 0, 1, 0, 0, 0, 0];
                packet.extend_from_slice(&ssrc.to_be_bytes());
                packet.extend_from_slice(&[0; 20]);
                let bucket = run(&prog, &packet) as usize;
                assert_eq!(bucket, ssrc_bucket(ssrc, n), "ssrc {ssrc}, {n} shards");
                assert_eq!(1 + bucket, super::super::owner_of(ssrc, n));
            }
            // Not RTP, or too short: the first socket.
            assert_eq!(run(&prog, &[0x80; 11]), 0);
            assert_eq!(run(&prog, b"GET / HTTP/1.1\r\n"), 0);
        }
    }
}
