//! The interface manager: workload interface sysctls, global forwarding, `tunl0`.
//!
//! On every workload interface (name starts with a configured prefix, `cali` by default) as it
//! appears, the sysctls of shared/DESIGN.md §4 ([`workload_sysctls`]); once at start, IPv4 and
//! IPv6 forwarding ([`global_sysctls`]); and, when IP-in-IP is in use, the `tunl0` device
//! ([`InterfaceManager::ensure_tunnel`]).
//!
//! Driven by link notifications (`RTNLGRP_LINK`, its own socket): a link index not seen before
//! with a workload name is configured once. Sysctls are written as `/proc/sys` files (no
//! `sysctl` process). They are per network namespace, so the manager configures the namespace
//! it was started in.
//!
//! ```text
//!   InterfaceManager (handle) --Command (bounded)--> task <-- link notifications -- netlink
//!          ^                                           |
//!          +------------- Arc<Counters> ---------------+--> /proc/sys/... writes
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::tasks::AbortOnDrop;
use futures::channel::mpsc::UnboundedReceiver;
use futures::{StreamExt, TryStreamExt};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::sys::SocketAddr;
use rtnetlink::{Handle, LinkIpIp, LinkUnspec, MulticastGroup};
use tokio::sync::{mpsc, oneshot};

use crate::routes::netlink::parse_link;

/// One kernel setting: a path under `/proc/sys` and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctl {
    /// Path components below `/proc/sys` (an interface name is one component, dots and all).
    pub components: Vec<String>,
    /// Value to write.
    pub value: &'static str,
}

impl Sysctl {
    fn new(components: &[&str], value: &'static str) -> Self {
        Sysctl {
            components: components.iter().map(|c| c.to_string()).collect(),
            value,
        }
    }

    /// The file to write, under `root` (normally `/proc/sys`). An interface name is used as
    /// is: `/proc/sys/net/ipv4/conf/eth0.100/forwarding`.
    pub fn path(&self, root: &Path) -> PathBuf {
        let mut p = root.to_path_buf();
        p.extend(&self.components);
        p
    }

    /// The dotted name `sysctl(8)` uses, where a `.` inside a component is written `/`:
    /// `net.ipv4.conf.eth0/100.forwarding`.
    pub fn name(&self) -> String {
        self.components
            .iter()
            .map(|c| c.replace('.', "/"))
            .collect::<Vec<_>>()
            .join(".")
    }

    fn is_ipv6(&self) -> bool {
        self.components.get(1).is_some_and(|c| c == "ipv6")
    }
}

/// The sysctls of a workload interface (shared/DESIGN.md §4): proxy ARP answering at once
/// (the pod's default gateway 169.254.1.1 is answered by proxy ARP), forwarding, local
/// routing, and for IPv6 no router advertisements and proxy NDP.
pub fn workload_sysctls(iface: &str) -> Vec<Sysctl> {
    vec![
        Sysctl::new(&["net", "ipv4", "conf", iface, "proxy_arp"], "1"),
        Sysctl::new(&["net", "ipv4", "neigh", iface, "proxy_delay"], "0"),
        Sysctl::new(&["net", "ipv4", "conf", iface, "forwarding"], "1"),
        Sysctl::new(&["net", "ipv4", "conf", iface, "route_localnet"], "1"),
        // accept_ra before forwarding: the interface never takes a router advertisement.
        Sysctl::new(&["net", "ipv6", "conf", iface, "accept_ra"], "0"),
        Sysctl::new(&["net", "ipv6", "conf", iface, "proxy_ndp"], "1"),
        Sysctl::new(&["net", "ipv6", "conf", iface, "forwarding"], "1"),
    ]
}

/// The node-wide sysctls: IPv4 and IPv6 forwarding.
pub fn global_sysctls() -> Vec<Sysctl> {
    vec![
        Sysctl::new(&["net", "ipv4", "ip_forward"], "1"),
        Sysctl::new(&["net", "ipv6", "conf", "all", "forwarding"], "1"),
    ]
}

/// Writes sysctls under `root`. IPv6 settings are skipped when the kernel has no IPv6
/// (`root/net/ipv6` missing); a missing interface directory means the interface went away
/// meanwhile, which is not an error. Returns the number of failed writes.
pub fn write_sysctls(root: &Path, sysctls: &[Sysctl]) -> usize {
    let ipv6 = root.join("net/ipv6").exists();
    let mut failures = 0;
    for s in sysctls {
        if s.is_ipv6() && !ipv6 {
            continue;
        }
        let path = s.path(root);
        match std::fs::write(&path, s.value) {
            Ok(()) => tracing::trace!(sysctl = %s.name(), value = s.value, "sysctl set"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(sysctl = %s.name(), "sysctl missing (interface gone?)");
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(sysctl = %s.name(), error = %e, "could not set sysctl");
            }
        }
    }
    failures
}

/// Configuration of the interface manager.
#[derive(Debug, Clone)]
pub struct InterfaceConfig {
    /// Name prefixes of workload interfaces (`cali`).
    pub workload_prefixes: Vec<String>,
    /// Where sysctls live (`/proc/sys`).
    pub sysctl_root: PathBuf,
    /// Set global forwarding at start.
    pub global_forwarding: bool,
}

impl Default for InterfaceConfig {
    fn default() -> Self {
        InterfaceConfig {
            workload_prefixes: vec!["cali".to_string()],
            sysctl_root: PathBuf::from("/proc/sys"),
            global_forwarding: true,
        }
    }
}

/// The IP-in-IP device tabby sets up when a pool uses IP-in-IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelConfig {
    /// Device name (`tunl0`, the kernel's fallback IP-in-IP device).
    pub name: String,
    /// MTU (1480: 1500 less the outer IPv4 header).
    pub mtu: u32,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        TunnelConfig {
            name: "tunl0".to_string(),
            mtu: 1480,
        }
    }
}

/// Errors of the interface manager.
#[derive(Debug, thiserror::Error)]
pub enum InterfaceError {
    /// A netlink socket could not be opened or bound.
    #[error("netlink socket: {0}")]
    Socket(#[from] std::io::Error),
    /// A netlink request failed.
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    /// The kernel cannot make IP-in-IP devices (built without `CONFIG_NET_IPIP`).
    #[error("the kernel has no IP-in-IP support (CONFIG_NET_IPIP) to create {0}")]
    TunnelUnsupported(String),
    /// The tunnel device could not be found after creating it.
    #[error("tunnel device {0} missing after creation")]
    TunnelMissing(String),
    /// The manager's task has stopped.
    #[error("interface manager stopped")]
    Stopped,
}

#[derive(Debug, Default)]
struct Counters {
    interfaces_configured: AtomicU64,
    sysctl_failures: AtomicU64,
}

/// Counters of the interface manager.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InterfaceStats {
    /// Workload interfaces configured (counter).
    pub interfaces_configured: u64,
    /// Sysctl writes that failed (counter).
    pub sysctl_failures: u64,
}

enum Command {
    EnsureTunnel(TunnelConfig, oneshot::Sender<Result<u32, InterfaceError>>),
}

/// Handle of the interface manager; dropping it stops the manager.
#[derive(Debug)]
pub struct InterfaceManager {
    commands: mpsc::Sender<Command>,
    counters: Arc<Counters>,
    _tasks: AbortOnDrop,
}

impl InterfaceManager {
    /// Sets global forwarding, subscribes to link notifications, configures the workload
    /// interfaces that already exist, and starts the manager. Must be called inside a tokio
    /// runtime, in the network namespace to manage.
    pub async fn start(config: InterfaceConfig) -> Result<InterfaceManager, InterfaceError> {
        let counters = Arc::new(Counters::default());
        if config.global_forwarding {
            let failures = write_sysctls(&config.sysctl_root, &global_sysctls());
            counters
                .sysctl_failures
                .fetch_add(failures as u64, Ordering::Relaxed);
        }
        let (conn, handle, _) = rtnetlink::new_connection()?;
        let conn_task = tokio::spawn(conn);
        let (mconn, _mhandle, events) =
            rtnetlink::new_multicast_connection(&[MulticastGroup::Link])?;
        let mconn_task = tokio::spawn(mconn);
        let mut task = Task {
            config,
            handle,
            events,
            seen: BTreeMap::new(),
            tunnel: None,
            counters: counters.clone(),
        };
        // Subscribed first, dumped second: no interface falls between the two.
        let links: Vec<_> = task.handle.link().get().execute().try_collect().await?;
        for l in &links {
            if let Some((name, link)) = parse_link(l) {
                task.on_link(&name, link.index);
            }
        }
        let (tx, rx) = mpsc::channel(4);
        let main = tokio::spawn(task.run(rx));
        Ok(InterfaceManager {
            commands: tx,
            counters,
            _tasks: AbortOnDrop(vec![main, conn_task, mconn_task]),
        })
    }

    /// Makes sure the IP-in-IP device exists, is up and has the MTU (created as
    /// `ip link add <name> type ipip` when missing; the kernel's fallback `tunl0` is used
    /// when present). It is re-created if it vanishes later. Returns its index.
    pub async fn ensure_tunnel(&self, tunnel: TunnelConfig) -> Result<u32, InterfaceError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::EnsureTunnel(tunnel, tx))
            .await
            .map_err(|_| InterfaceError::Stopped)?;
        rx.await.map_err(|_| InterfaceError::Stopped)?
    }

    /// Counters for metrics.
    pub fn stats(&self) -> InterfaceStats {
        InterfaceStats {
            interfaces_configured: self.counters.interfaces_configured.load(Ordering::Relaxed),
            sysctl_failures: self.counters.sysctl_failures.load(Ordering::Relaxed),
        }
    }
}

struct Task {
    config: InterfaceConfig,
    handle: Handle,
    events: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
    /// Workload interfaces configured, by index (a re-created interface has a new index).
    seen: BTreeMap<u32, String>,
    tunnel: Option<TunnelConfig>,
    counters: Arc<Counters>,
}

impl Task {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    None => return,
                    Some(Command::EnsureTunnel(tunnel, reply)) => {
                        let result = ensure_tunnel(&self.handle, &tunnel).await;
                        self.tunnel = Some(tunnel);
                        let _ = reply.send(result);
                    }
                },
                ev = self.events.next() => match ev {
                    None => {
                        tracing::error!("netlink link socket closed; interface manager stops");
                        return;
                    }
                    Some((msg, _)) => self.on_event(msg).await,
                },
            }
        }
    }

    async fn on_event(&mut self, msg: NetlinkMessage<RouteNetlinkMessage>) {
        match msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                if let Some((name, link)) = parse_link(&l) {
                    self.on_link(&name, link.index);
                }
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => {
                self.seen.remove(&l.header.index);
                let name = parse_link(&l).map(|(n, _)| n);
                if let (Some(tunnel), Some(name)) = (&self.tunnel, name) {
                    if tunnel.name == name {
                        tracing::warn!(device = %name, "tunnel device deleted; re-creating it");
                        if let Err(e) = ensure_tunnel(&self.handle, tunnel).await {
                            tracing::error!(device = %name, error = %e, "could not re-create the tunnel device");
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn on_link(&mut self, name: &str, index: u32) {
        let workload = self
            .config
            .workload_prefixes
            .iter()
            .any(|p| !p.is_empty() && name.starts_with(p.as_str()));
        if !workload || self.seen.get(&index).is_some_and(|n| n == name) {
            return;
        }
        // /proc/sys writes are a few microseconds each: done inline.
        let failures = write_sysctls(&self.config.sysctl_root, &workload_sysctls(name));
        self.seen.insert(index, name.to_string());
        self.counters
            .interfaces_configured
            .fetch_add(1, Ordering::Relaxed);
        self.counters
            .sysctl_failures
            .fetch_add(failures as u64, Ordering::Relaxed);
        tracing::debug!(iface = name, "workload interface configured");
    }
}

/// `EEXIST`.
const EEXIST: i32 = 17;
/// `EOPNOTSUPP`: the answer to a link kind the kernel does not know.
const EOPNOTSUPP: i32 = 95;

async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>, InterfaceError> {
    let mut links = handle.link().get().match_name(name).execute();
    match links.try_next().await {
        Ok(l) => Ok(l.map(|l| l.header.index)),
        // ENODEV: no such link.
        Err(rtnetlink::Error::NetlinkError(e)) if e.code.is_some_and(|c| c.get() == -19) => {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

async fn ensure_tunnel(handle: &Handle, tunnel: &TunnelConfig) -> Result<u32, InterfaceError> {
    if link_index(handle, &tunnel.name).await?.is_none() {
        // Creating an ipip link makes the kernel load the module itself (rtnl-link-ipip).
        match handle
            .link()
            .add(LinkIpIp::new(&tunnel.name).build())
            .execute()
            .await
        {
            Ok(()) => tracing::info!(device = %tunnel.name, "tunnel device created"),
            Err(rtnetlink::Error::NetlinkError(e))
                if e.code.is_some_and(|c| c.get() == -EEXIST) => {}
            Err(rtnetlink::Error::NetlinkError(e))
                if e.code.is_some_and(|c| c.get() == -EOPNOTSUPP) =>
            {
                return Err(InterfaceError::TunnelUnsupported(tunnel.name.clone()))
            }
            Err(e) => return Err(e.into()),
        }
    }
    let index = link_index(handle, &tunnel.name)
        .await?
        .ok_or_else(|| InterfaceError::TunnelMissing(tunnel.name.clone()))?;
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .mtu(tunnel.mtu)
                .up()
                .build(),
        )
        .execute()
        .await?;
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_sysctls_cover_design_section_4() {
        let names: Vec<String> = workload_sysctls("cali1234")
            .iter()
            .map(|s| format!("{}={}", s.name(), s.value))
            .collect();
        assert_eq!(
            names,
            [
                "net.ipv4.conf.cali1234.proxy_arp=1",
                "net.ipv4.neigh.cali1234.proxy_delay=0",
                "net.ipv4.conf.cali1234.forwarding=1",
                "net.ipv4.conf.cali1234.route_localnet=1",
                "net.ipv6.conf.cali1234.accept_ra=0",
                "net.ipv6.conf.cali1234.proxy_ndp=1",
                "net.ipv6.conf.cali1234.forwarding=1",
            ]
        );
    }

    #[test]
    fn a_dotted_interface_name_is_a_slash_in_the_sysctl_name_and_a_dot_in_the_path() {
        let s = &workload_sysctls("cali.100")[2];
        assert_eq!(s.name(), "net.ipv4.conf.cali/100.forwarding");
        assert_eq!(
            s.path(Path::new("/proc/sys")),
            Path::new("/proc/sys/net/ipv4/conf/cali.100/forwarding")
        );
    }

    #[test]
    fn sysctls_are_written_under_the_root_and_ipv6_is_skipped_without_ipv6() {
        let dir = std::env::temp_dir().join(format!("tabby-sysctl-{}", std::process::id()));
        let conf = dir.join("net/ipv4/conf/cali1");
        let neigh = dir.join("net/ipv4/neigh/cali1");
        std::fs::create_dir_all(&conf).unwrap_or_default();
        std::fs::create_dir_all(&neigh).unwrap_or_default();
        let failures = write_sysctls(&dir, &workload_sysctls("cali1"));
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        assert_eq!(failures, 0);
        assert_eq!(read(conf.join("proxy_arp")), "1");
        assert_eq!(read(neigh.join("proxy_delay")), "0");
        assert!(!dir.join("net/ipv6").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
