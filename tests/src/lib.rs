//! Helpers for tabby's end-to-end tests: network namespaces that clean up after themselves,
//! real BGP peers (BIRD 2, GoBGP) and the `tabby` binary run inside them.
//!
//! Everything a test creates is owned by a guard that undoes it on drop, also when the test
//! fails: [`Netns`] deletes its namespace (killing what still runs inside), [`Daemon`] kills its
//! process and prints its log tail when the test panics, [`TestDir`] removes its directory.
//! Names are unique per process and per call, so tests run in parallel.
//!
//! Tests need root. Set `TABBY_SKIP_NETNS=1` to skip them (see [`skip`]); without it a
//! non-root run fails loudly, because a silently skipped interop suite proves nothing.

pub mod agent;
pub mod bird;
pub mod capture;
pub mod cmd;
pub mod daemon;
pub mod gobgp;
pub mod netns;
pub mod pcap;
pub mod peer;
pub mod pod;
pub mod tabby;
pub mod topo;
pub mod wait;

pub use agent::Agent;
pub use bird::{Bird, BirdConfig, BirdRoute};
pub use capture::{Capture, WireMessage};
pub use daemon::{Daemon, TestDir};
pub use gobgp::{Gobgp, GobgpConfig, GobgpRoute};
pub use netns::Netns;
pub use peer::{canonical_prefix, Family, Neighbor, PeerDaemon};
pub use pod::Pod;
pub use tabby::{Tabby, TabbyConfig, TabbyPeer};
pub use topo::{Lan, Node};
pub use wait::{wait_until, Diagnose, CONVERGE};

/// Whether netns tests must be skipped: true (and a message on stderr) when
/// `TABBY_SKIP_NETNS=1`; an error when not running as root, because CI runs as root and a
/// skipped interop test must never look like a passing one.
pub fn skip() -> anyhow::Result<bool> {
    if std::env::var("TABBY_SKIP_NETNS").as_deref() == Ok("1") {
        eprintln!("TABBY_SKIP_NETNS=1: skipping a test that needs root and network namespaces");
        return Ok(true);
    }
    let status = std::fs::read_to_string("/proc/self/status")?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if uid != "0" {
        anyhow::bail!(
            "tabby-tests need root (effective uid is {uid}): they create network namespaces; \
             run as root, or set TABBY_SKIP_NETNS=1 to skip them"
        );
    }
    Ok(false)
}
