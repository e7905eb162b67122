//! The listening socket: hands connections from configured peers to their session task and
//! closes the others (RFC 4271 §8.2.1.1: a connection from an unconfigured address gets no
//! session).

use super::session::Command;
use super::task::TaskHandle;
use super::{canonical, Shared};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};

/// How many refused source addresses are remembered for logging once each.
const LOGGED_SOURCES: usize = 4096;
/// Pending connections the kernel queues before the accept loop takes them (capped by
/// `net.core.somaxconn`). A reflector's clients all connect at once when it starts: with
/// 128, the 2,000 sessions of a thousand dual-stack clients overflowed it ~2,500 times
/// (dropped connections, retried by the clients); with 4096, never (docs/benchmarks.md,
/// "Route reflector convergence").
const BACKLOG: u32 = 4096;

/// Binds `addr` and spawns the accept loop. Returns the task, the bound address, and a
/// second descriptor of the listening socket (for per-peer TCP-MD5 keys).
pub(crate) fn spawn(
    addr: SocketAddr,
    shared: Arc<Shared>,
) -> std::io::Result<(TaskHandle, SocketAddr, OwnedFd)> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(BACKLOG)?;
    let bound = listener.local_addr()?;
    let fd = listener.as_fd().try_clone_to_owned()?;
    tracing::info!(%bound, "BGP listener up");
    Ok((TaskHandle::spawn(accept_loop(listener, shared)), bound, fd))
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut logged: HashSet<IpAddr> = HashSet::new();
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let source = canonical(remote.ip());
        match shared.commands_for(source) {
            Some(commands) => {
                if let Err(error) = commands.try_send(Command::Incoming(stream)) {
                    tracing::warn!(peer = %source, %error, "session busy, connection dropped");
                }
            }
            None => {
                drop(stream);
                if logged.len() >= LOGGED_SOURCES {
                    logged.clear();
                }
                if logged.insert(source) {
                    tracing::warn!(
                        %source,
                        "connection from an unconfigured address refused (logged once per address)"
                    );
                }
            }
        }
    }
}
