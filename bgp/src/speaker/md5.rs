//! TCP-MD5 signatures for BGP sessions (RFC 2385), with Linux's `TCP_MD5SIG` socket option.
//!
//! A key is per peer address and per socket:
//! - on the **listening** socket, [`set_key`] once per keyed peer: connections accepted from
//!   that address inherit the key, and SYNs from it without a valid signature are dropped by
//!   the kernel (so a peer with a wrong or no password never reaches `accept`);
//! - on an **outgoing** socket (`tokio::net::TcpSocket`), [`set_key`] for the peer before
//!   `connect`.
//!
//! When a peer's password is removed, [`clear_key`] it on the listener (a session already up
//! keeps its key until it closes, as with BIRD; the next connection is unsigned).
//!
//! RFC 2385 §4: the key is an octet string the operator configures (Calico takes it from
//! `BGPPeer.spec.password.secretKeyRef` / `BGPConfiguration.spec.nodeMeshPassword`); Linux caps
//! it at 80 bytes (`TCP_MD5SIG_MAXKEYLEN`). The system call lives in `tabby-sys`, the one crate
//! allowed `unsafe` (STYLE.md 8); this module owns the checks and the error vocabulary.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsFd;

/// The longest key Linux accepts.
pub const MAX_KEY_LEN: usize = tabby_sys::tcp_md5::MAX_KEY_LEN;

/// Why a TCP-MD5 key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Md5Error {
    /// The password is empty: an empty key would delete the peer's key instead of setting one.
    #[error("TCP-MD5 password is empty")]
    EmptyKey,
    /// The password is longer than Linux allows.
    #[error("TCP-MD5 password is {len} bytes long; Linux accepts at most {MAX_KEY_LEN}")]
    KeyTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The kernel refused to set the key (or the peer's address does not fit the socket's
    /// family, e.g. an IPv6 peer on an IPv4 socket).
    #[error("cannot set the TCP-MD5 key for peer {peer}: {source}")]
    Set {
        /// The peer.
        peer: IpAddr,
        /// What the kernel said.
        source: io::Error,
    },
    /// The kernel refused to remove the key.
    #[error("cannot remove the TCP-MD5 key for peer {peer}: {source}")]
    Clear {
        /// The peer.
        peer: IpAddr,
        /// What the kernel said.
        source: io::Error,
    },
}

/// A TCP-MD5 key: 1 to [`MAX_KEY_LEN`] bytes. Its `Debug` output never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Md5Key(Vec<u8>);

impl Md5Key {
    /// A key from the password's bytes (a Kubernetes Secret's decoded value, as is).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Md5Key, Md5Error> {
        let bytes = bytes.into();
        match bytes.len() {
            0 => Err(Md5Error::EmptyKey),
            len if len > MAX_KEY_LEN => Err(Md5Error::KeyTooLong { len }),
            _ => Ok(Md5Key(bytes)),
        }
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Md5Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Md5Key(<{} bytes>)", self.0.len())
    }
}

/// Signs connections with `peer` on `socket` with `key`: on a listening socket, the ones it
/// accepts from `peer`; on an unconnected socket, the one it will `connect`. Setting a key again
/// replaces it. An IPv4 peer on a dual-stack IPv6 listener is handled (as its v4-mapped address).
pub fn set_key(socket: &impl AsFd, peer: IpAddr, key: &Md5Key) -> Result<(), Md5Error> {
    tabby_sys::tcp_md5::set_tcp_md5sig(socket.as_fd(), peer, key.as_bytes())
        .map_err(|source| Md5Error::Set { peer, source })
}

/// Removes the key for `peer` from `socket`: later connections with `peer` are unsigned.
/// Removing a key that is not set is not an error.
pub fn clear_key(socket: &impl AsFd, peer: IpAddr) -> Result<(), Md5Error> {
    match tabby_sys::tcp_md5::set_tcp_md5sig(socket.as_fd(), peer, &[]) {
        // ENOENT: there was no key to delete.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        result => result.map_err(|source| Md5Error::Clear { peer, source }),
    }
}

#[cfg(test)]
mod tests {
    //! Real sockets on loopback, in-process (Linux; TCP-MD5 needs no privilege). A refused
    //! handshake is silent (the kernel drops the SYN), so "cannot connect" is "not connected
    //! within [`REFUSED`]".

    use super::*;
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpSocket, TcpStream};

    /// How long a connection that the kernel drops is given before the test calls it refused.
    const REFUSED: Duration = Duration::from_millis(1500);
    /// How long a connection that should work may take.
    const ACCEPTED: Duration = Duration::from_secs(5);

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn key(password: &str) -> Md5Key {
        Md5Key::new(password).unwrap()
    }

    /// A listener on 127.0.0.1 (v4) or ::1 (v6) with `key` for `peer`, if any.
    fn listener(addr: &str, peer: IpAddr, key: Option<&Md5Key>) -> TcpListener {
        let addr: SocketAddr = addr.parse().unwrap();
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4().unwrap()
        } else {
            TcpSocket::new_v6().unwrap()
        };
        if let Some(key) = key {
            set_key(&socket, peer, key).unwrap();
        }
        socket.bind(addr).unwrap();
        socket.listen(16).unwrap()
    }

    /// Connects to `to`, signing with `key` if any; `None` if not connected within `within`.
    async fn connect(to: SocketAddr, key: Option<&Md5Key>, within: Duration) -> Option<TcpStream> {
        let socket = if to.is_ipv4() {
            TcpSocket::new_v4().unwrap()
        } else {
            TcpSocket::new_v6().unwrap()
        };
        if let Some(key) = key {
            set_key(&socket, to.ip(), key).unwrap();
        }
        tokio::time::timeout(within, socket.connect(to))
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// Whether a client with `client_key` gets a connection accepted by a listener keyed with
    /// `listener_key` for 127.0.0.1, and bytes through it both ways.
    async fn exchange(listener_key: Option<&Md5Key>, client_key: Option<&Md5Key>) -> bool {
        let listener = listener("127.0.0.1:0", LOCALHOST, listener_key);
        let to = listener.local_addr().unwrap();
        let within = if listener_key == client_key {
            ACCEPTED
        } else {
            REFUSED
        };
        let server = async {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4];
            stream.read_exact(&mut buf).await.unwrap();
            stream.write_all(b"pong").await.unwrap();
            buf
        };
        let client = async {
            let mut stream = connect(to, client_key, within).await?;
            stream.write_all(b"ping").await.ok()?;
            let mut buf = [0u8; 4];
            stream.read_exact(&mut buf).await.ok()?;
            Some(buf)
        };
        // A refused client gives up after `within`; the server then never accepts.
        match tokio::time::timeout(within + Duration::from_millis(500), async {
            tokio::join!(server, client)
        })
        .await
        {
            Ok((server_got, client_got)) => &server_got == b"ping" && client_got == Some(*b"pong"),
            Err(_) => false,
        }
    }

    #[tokio::test]
    async fn a_client_with_the_listeners_key_connects_and_exchanges_bytes() {
        let k = key("s3cret");
        assert!(exchange(Some(&k), Some(&k)).await);
    }

    #[tokio::test]
    async fn a_client_with_a_wrong_key_is_never_accepted() {
        assert!(!exchange(Some(&key("s3cret")), Some(&key("guess"))).await);
    }

    #[tokio::test]
    async fn a_client_without_a_key_is_never_accepted_by_a_keyed_listener() {
        assert!(!exchange(Some(&key("s3cret")), None).await);
    }

    #[tokio::test]
    async fn a_signing_client_is_never_accepted_by_a_listener_without_a_key() {
        assert!(!exchange(None, Some(&key("s3cret"))).await);
    }

    #[tokio::test]
    async fn a_dual_stack_listener_keys_an_ipv4_peer() {
        let k = key("s3cret");
        let listener = listener("[::]:0", LOCALHOST, Some(&k));
        let port = listener.local_addr().unwrap().port();
        let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let accept = tokio::spawn(async move { listener.accept().await.is_ok() });
        assert!(
            connect(to, None, REFUSED).await.is_none(),
            "unsigned got in"
        );
        assert!(
            connect(to, Some(&k), ACCEPTED).await.is_some(),
            "signed kept out"
        );
        assert!(accept.await.unwrap());
    }

    #[tokio::test]
    async fn a_cleared_key_lets_unsigned_clients_in_again() {
        let k = key("s3cret");
        let listener = listener("127.0.0.1:0", LOCALHOST, Some(&k));
        let to = listener.local_addr().unwrap();
        clear_key(&listener, LOCALHOST).unwrap();
        assert!(connect(to, None, ACCEPTED).await.is_some());
    }

    #[test]
    fn clearing_a_key_that_is_not_set_is_not_an_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        clear_key(&listener, LOCALHOST).unwrap();
    }

    #[test]
    fn an_empty_password_is_refused() {
        assert!(matches!(Md5Key::new(""), Err(Md5Error::EmptyKey)));
    }

    #[test]
    fn a_password_of_81_bytes_is_refused_and_80_is_accepted() {
        assert!(matches!(
            Md5Key::new(vec![b'x'; 81]),
            Err(Md5Error::KeyTooLong { len: 81 })
        ));
        assert!(Md5Key::new(vec![b'x'; 80]).is_ok());
    }

    #[test]
    fn an_ipv6_peer_on_an_ipv4_socket_is_an_error_naming_the_peer() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer: IpAddr = "2001:db8::1".parse().unwrap();
        let err = set_key(&listener, peer, &key("k")).unwrap_err();
        assert!(err.to_string().contains("2001:db8::1"), "{err}");
    }

    #[test]
    fn a_key_never_shows_in_debug_output() {
        assert_eq!(format!("{:?}", key("s3cret")), "Md5Key(<6 bytes>)");
    }
}
