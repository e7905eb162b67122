//! The Linux `TCP_MD5SIG` socket option (RFC 2385 keys), which neither `std`, `socket2`, `nix`
//! nor `rustix` exposes.
//!
//! One key per peer address and socket. A key set on a listening socket applies to the
//! connections it accepts from that address (the kernel copies it to the accepted socket); a
//! key set on an unconnected socket before `connect` signs that connection. Once a socket has
//! a key for an address, segments from that address without a valid signature are dropped by
//! the kernel, SYNs included, so an unkeyed or wrongly keyed peer never gets a connection.
//!
//! From `include/uapi/linux/tcp.h`:
//!
//! ```text
//! struct tcp_md5sig {
//!     struct __kernel_sockaddr_storage tcpm_addr;  /* 128 bytes: the peer */
//!     __u8  tcpm_flags;                            /* TCP_MD5SIG_EXT only; 0 here */
//!     __u8  tcpm_prefixlen;                        /* TCP_MD5SIG_EXT only; 0 here */
//!     __u16 tcpm_keylen;                           /* 0 deletes the key */
//!     int   tcpm_ifindex;                          /* TCP_MD5SIG_EXT only; 0 here */
//!     __u8  tcpm_key[TCP_MD5SIG_MAXKEYLEN];        /* 80 */
//! };
//! ```

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

/// The longest key Linux accepts (`TCP_MD5SIG_MAXKEYLEN`).
pub const MAX_KEY_LEN: usize = 80;

/// `struct tcp_md5sig`, with the address kept as the bytes of a `sockaddr_in` or
/// `sockaddr_in6` at the start of the 128-byte `sockaddr_storage` (same offsets as the C
/// struct: the storage is 128 bytes, so the fields after it need no padding).
#[repr(C)]
struct TcpMd5Sig {
    addr: [u8; 128],
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; MAX_KEY_LEN],
}

const _: () = assert!(std::mem::size_of::<TcpMd5Sig>() == 216);
const _: () = assert!(std::mem::size_of::<libc::sockaddr_storage>() == 128);

/// Sets (non-empty `key`) or deletes (empty `key`) the TCP-MD5 key for `peer` on `socket`.
///
/// The address is written in the socket's own family: an IPv4 peer on an IPv6 socket becomes
/// its IPv4-mapped address (the kernel then keys the IPv4 connections a dual-stack listener
/// accepts), and an IPv4-mapped IPv6 peer on an IPv4 socket becomes its IPv4 address.
///
/// Errors: `InvalidInput` for a key longer than [`MAX_KEY_LEN`], an IPv6 peer on an IPv4
/// socket, or a socket that is not IPv4 or IPv6; otherwise what the kernel says (`ENOENT`
/// when deleting a key that is not set, `EINVAL` for a v4-mapped peer on an IPv6-only socket).
pub fn set_tcp_md5sig(socket: BorrowedFd<'_>, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TCP-MD5 key of {} bytes (at most {MAX_KEY_LEN})", key.len()),
        ));
    }
    let mut sig = TcpMd5Sig {
        addr: [0; 128],
        flags: 0,
        prefixlen: 0,
        keylen: 0,
        ifindex: 0,
        key: [0; MAX_KEY_LEN],
    };
    match (socket_domain(socket)?, peer) {
        (libc::AF_INET, IpAddr::V4(v4)) => write_v4(&mut sig.addr, v4),
        (libc::AF_INET, IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => write_v4(&mut sig.addr, v4),
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("IPv6 peer {v6} on an IPv4 socket"),
                ))
            }
        },
        (libc::AF_INET6, IpAddr::V4(v4)) => write_v6(&mut sig.addr, v4.to_ipv6_mapped()),
        (libc::AF_INET6, IpAddr::V6(v6)) => write_v6(&mut sig.addr, v6),
        (domain, _) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not an IPv4 or IPv6 socket (domain {domain})"),
            ))
        }
    }
    sig.key[..key.len()].copy_from_slice(key);
    // Cannot truncate: key.len() <= 80 was checked above.
    sig.keylen = key.len() as u16;
    #[allow(unsafe_code)]
    // SAFETY: `sig` is a fully initialised `#[repr(C)]` value of the size and layout the
    // kernel expects for TCP_MD5SIG; the pointer and length describe exactly that value, which
    // outlives the call; the kernel only reads it. `socket` is a valid open descriptor for the
    // duration of the borrow.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            std::ptr::addr_of!(sig).cast::<libc::c_void>(),
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The socket's address family (`SO_DOMAIN`).
fn socket_domain(socket: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    let mut domain: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    #[allow(unsafe_code)]
    // SAFETY: `domain` and `len` are valid, writable and live across the call; `len` holds the
    // size of `domain`, so the kernel writes at most that many bytes. `socket` is a valid open
    // descriptor for the duration of the borrow.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            std::ptr::addr_of_mut!(domain).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(domain)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `struct sockaddr_in` { sa_family_t (host order), port (0), 4 address bytes, zero }.
fn write_v4(storage: &mut [u8; 128], addr: Ipv4Addr) {
    storage[0..2].copy_from_slice(&(libc::AF_INET as libc::sa_family_t).to_ne_bytes());
    storage[4..8].copy_from_slice(&addr.octets());
}

/// `struct sockaddr_in6` { sa_family_t (host order), port (0), flowinfo (0), 16 address
/// bytes, scope id (0) }.
fn write_v6(storage: &mut [u8; 128], addr: Ipv6Addr) {
    storage[0..2].copy_from_slice(&(libc::AF_INET6 as libc::sa_family_t).to_ne_bytes());
    storage[8..24].copy_from_slice(&addr.octets());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_key_longer_than_80_bytes_is_refused_before_the_kernel_sees_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err =
            set_tcp_md5sig(listener.as_fd(), Ipv4Addr::LOCALHOST.into(), &[7; 81]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn an_80_byte_key_is_accepted_and_can_be_deleted() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = Ipv4Addr::new(127, 0, 0, 2).into();
        set_tcp_md5sig(listener.as_fd(), peer, &[7; 80]).unwrap();
        set_tcp_md5sig(listener.as_fd(), peer, &[]).unwrap();
        // Deleting again: the kernel has nothing to delete.
        let err = set_tcp_md5sig(listener.as_fd(), peer, &[]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn an_ipv6_peer_on_an_ipv4_socket_is_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = set_tcp_md5sig(listener.as_fd(), Ipv6Addr::LOCALHOST.into(), b"k").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_udp_socket_is_refused_by_the_kernel() {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(set_tcp_md5sig(udp.as_fd(), Ipv4Addr::LOCALHOST.into(), b"k").is_err());
    }
}
