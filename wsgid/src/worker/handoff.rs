//! Lossless hand-off of the request flow when a worker leaves.
//!
//! Mongrel2's PUSH socket keeps routing requests to a worker until its I/O thread sees that
//! worker's TCP connection end; every frame it routed there in the meantime (in its pipe, in
//! flight, in the worker's receive buffer) is lost when the worker closes its PULL socket.
//! Instead, the worker half-closes its request connections (`shutdown(SHUT_WR)` on the TCP
//! sockets libzmq connected to the `--recv` endpoints): Mongrel2 reads end-of-file, stops
//! routing there and closes its side, while everything it already sent keeps arriving in the
//! worker's PULL socket, which is read until that close (a `DISCONNECTED` monitor event).
//! Only then is the PULL socket closed: nothing can be on its way any more.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::RawFd;

/// The addresses of the `tcp://host:port` endpoints among `endpoints` (others are skipped).
pub fn tcp_peers(endpoints: &[String]) -> Vec<SocketAddr> {
    endpoints
        .iter()
        .filter_map(|e| e.strip_prefix("tcp://"))
        .filter_map(|hp| hp.to_socket_addrs().ok())
        .flatten()
        .collect()
}

/// The open TCP sockets of this process whose peer is one of `peers`.
pub fn connections_to(peers: &[SocketAddr]) -> Vec<RawFd> {
    if peers.is_empty() {
        return Vec::new();
    }
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<RawFd>().ok())
        .filter(|&fd| peer_of(fd).is_some_and(|p| peers.contains(&p)))
        .collect()
}

/// The remote address of socket `fd` (None for anything but a connected IP socket).
fn peer_of(fd: RawFd) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is plain data; getpeername writes at most `len` bytes into it.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: a valid pointer/length pair; an fd that is not a socket just fails.
    let r = unsafe { libc::getpeername(fd, (&raw mut ss).cast(), &mut len) };
    if r != 0 {
        return None;
    }
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a: libc::sockaddr_in = unsafe { *(&raw const ss).cast() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(a.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a: libc::sockaddr_in6 = unsafe { *(&raw const ss).cast() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::new(IpAddr::V6(ip), u16::from_be(a.sin6_port)))
        }
        _ => None,
    }
}

/// Ends the sending direction of `fd` (the peer reads end-of-file; reading goes on).
pub fn half_close(fd: RawFd) -> bool {
    // SAFETY: shutdown neither closes nor frees the descriptor libzmq owns.
    unsafe { libc::shutdown(fd, libc::SHUT_WR) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_connection_to_a_listener_and_half_closes_it() {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let peers = tcp_peers(&[format!("tcp://{addr}"), "ipc:///tmp/x".into()]);
        assert_eq!(peers, vec![addr]);
        assert!(connections_to(&peers).is_empty());
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let fds = connections_to(&peers);
        assert_eq!(fds.len(), 1, "{fds:?}");
        assert!(half_close(fds[0]));
        let mut buf = [0u8; 4];
        assert_eq!(
            server.read(&mut buf).unwrap(),
            0,
            "the peer reads end-of-file"
        );
    }
}
