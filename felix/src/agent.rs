//! The node agent's main loop: datastore events into the calc; the calc's desired state into
//! the BGP speaker (peers, originated blocks), the route manager and the interface manager;
//! routes learned over BGP back into the route manager.
//!
//! ```text
//!  Datastore ──events──▶ Calc ──peers, blocks──▶ Speaker ◀──BGP──▶ peers
//!                          │                        │ route events
//!                          │ endpoints, blocks      ▼
//!                          └────────────────────▶ routes() ◀── Learned
//!                                                   │ desired routes (batched)
//!                                                   ▼
//!                                             RouteManager ──netlink──▶ kernel
//! ```
//!
//! Nothing is written to the kernel or announced before the datastore is in sync. Updates
//! are batched: every event marks the state dirty and one reconcile runs shortly after.
//! On shutdown peers get a CEASE and kernel routes stay for the next start to adopt.

use crate::calc::{Calc, PeerKind};
use crate::interfaces::{InterfaceConfig, InterfaceManager, TunnelConfig};
use crate::learned::Learned;
use crate::metrics::{Metrics, PeerLabels};
use crate::routes::{RouteManager, RouteManagerConfig, RouteStats};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tabby_bgp::speaker::{PeerConfig, PeerStatus, Speaker, SpeakerConfig};
use tabby_bgp::{Family, Prefix};
use tabby_datastore::{Datastore, Event};
use tokio::sync::broadcast::error::RecvError;

/// How long changes gather before one reconcile applies them together.
const BATCH: Duration = Duration::from_millis(20);
/// How often the status snapshot is refreshed when nothing happens.
const REFRESH: Duration = Duration::from_secs(1);

/// Settings of the agent.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// This node's name (`--node-name`).
    pub node_name: String,
    /// The namespace tabby runs in (BGP password Secrets).
    pub namespace: String,
    /// Hold time proposed to peers.
    pub hold_time: u16,
    /// Route manager settings (protocol 44, workload prefixes).
    pub routes: RouteManagerConfig,
    /// Interface manager settings.
    pub interfaces: InterfaceConfig,
}

impl AgentOptions {
    /// Defaults for a node.
    pub fn new(node_name: &str) -> AgentOptions {
        AgentOptions {
            node_name: node_name.to_string(),
            namespace: crate::calc::DEFAULT_SECRET_NAMESPACE.to_string(),
            hold_time: 90,
            routes: RouteManagerConfig::default(),
            interfaces: InterfaceConfig::default(),
        }
    }
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The route manager could not start.
    #[error("route manager: {0}")]
    Routes(#[from] crate::routes::RouteError),
    /// The interface manager could not start.
    #[error("interface manager: {0}")]
    Interfaces(#[from] crate::interfaces::InterfaceError),
    /// The datastore stream ended.
    #[error("the datastore stopped")]
    DatastoreStopped,
}

/// One peer as `/status` shows it.
#[derive(Debug, Clone)]
pub struct PeerView {
    /// Session status from the speaker.
    pub status: PeerStatus,
    /// `mesh`, `peer`, `rr-client`, `reflector`.
    pub kind: &'static str,
}

/// What the HTTP endpoints read: refreshed by the agent after every reconcile and every
/// second.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The node.
    pub node: String,
    /// The datastore finished its initial listing.
    pub in_sync: bool,
    /// The datastore's source is reachable.
    pub connected: bool,
    /// The kernel matches the desired routes.
    pub programmed: bool,
    /// BGP router ID and AS, once known.
    pub router_id: Option<Ipv4Addr>,
    /// Local AS.
    pub asn: Option<u32>,
    /// Sessions.
    pub peers: Vec<PeerView>,
    /// Route manager counters.
    pub routes: RouteStats,
    /// Local workload endpoints.
    pub endpoints: usize,
    /// Prefixes learned over BGP.
    pub learned: usize,
    /// Originated blocks.
    pub originated: Vec<String>,
    /// When the snapshot was taken.
    pub at: Option<SystemTime>,
}

impl Snapshot {
    /// Ready: in sync, connected, and programmed.
    pub fn ready(&self) -> bool {
        self.in_sync && self.connected && self.programmed
    }
}

/// State shared with the HTTP endpoints.
#[derive(Debug, Default)]
pub struct Shared {
    /// The latest snapshot.
    pub snapshot: Mutex<Snapshot>,
    /// Metrics.
    pub metrics: Metrics,
}

impl Shared {
    /// The latest snapshot.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The running speaker and what it was started with.
struct Bgp {
    speaker: Speaker,
    router_id: Ipv4Addr,
    asn: u32,
    port: u16,
    peers: BTreeMap<IpAddr, PeerConfig>,
    kinds: BTreeMap<IpAddr, PeerKind>,
    originated: BTreeSet<Prefix>,
}

fn prefix_of(dst: &crate::routes::Dst) -> Option<Prefix> {
    Prefix::new(dst.addr, dst.len).ok()
}

/// Runs the agent until `shutdown` completes or the datastore stops.
pub async fn run(
    options: AgentOptions,
    mut datastore: Datastore,
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    let routes = RouteManager::start(options.routes.clone()).await?;
    let interfaces = InterfaceManager::start(options.interfaces.clone()).await?;
    let mut calc = Calc::with_secret_namespace(&options.node_name, &options.namespace);
    let mut learned = Learned::new();
    let mut bgp: Option<Bgp> = None;
    let mut route_events: Option<tokio::sync::broadcast::Receiver<tabby_bgp::speaker::RouteEvent>> =
        None;
    let mut connected = true;
    let mut dirty = false;
    let mut batch_deadline: Option<tokio::time::Instant> = None;
    let mut tunnel_up = false;
    let mut said = Said::default();
    tokio::pin!(shutdown);
    let mut refresh = tokio::time::interval(REFRESH);
    loop {
        // The first change starts the batch window; later changes join it rather than push it
        // back, so a steady stream of events cannot starve the reconcile.
        if dirty && batch_deadline.is_none() {
            batch_deadline = Some(tokio::time::Instant::now() + BATCH);
        }
        let batch = async {
            match batch_deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending::<()>().await,
            }
        };
        let route_event = async {
            match route_events.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => break,
            event = datastore.next() => match event {
                Some(Event::Connected(up)) => connected = up,
                Some(Event::Error(e)) => tracing::warn!(error = %e, "datastore"),
                Some(e) => {
                    if let Event::Update { key, object: Some(o) } = &e {
                        let unsupported = o.unsupported_fields();
                        if !unsupported.is_empty()
                            && said.first(format!("{key} {unsupported:?}"))
                        {
                            tracing::info!(object = %key, fields = ?unsupported, "fields tabby does not implement yet are ignored");
                        }
                    }
                    calc.apply(&e);
                    dirty = true;
                }
                None => return Err(AgentError::DatastoreStopped),
            },
            event = route_event => {
                match event {
                    Ok(e) => dirty |= learned.apply(&e),
                    Err(RecvError::Lagged(_)) => {
                        // Missed events: rebuild from the speaker's Adj-RIBs-In.
                        if let Some(b) = &bgp {
                            for peer in b.peers.keys() {
                                learned.replace_peer(*peer, &b.speaker.routes(*peer).unwrap_or_default());
                            }
                        }
                        dirty = true;
                    }
                    Err(RecvError::Closed) => route_events = None,
                }
            }
            () = batch => {
                dirty = false;
                batch_deadline = None;
                if calc.in_sync() {
                    reconcile(
                        &options,
                        &calc,
                        &mut learned,
                        &mut bgp,
                        &mut route_events,
                        &routes,
                        &mut said,
                    )
                    .await;
                    if !tunnel_up && needs_tunnel(&calc) {
                        match interfaces.ensure_tunnel(TunnelConfig::default()).await {
                            Ok(_) => tunnel_up = true,
                            Err(e) => tracing::warn!(error = %e, "cannot set up tunl0"),
                        }
                    }
                }
                publish(&shared, &calc, &learned, &bgp, &routes, connected);
            }
            _ = refresh.tick() => publish(&shared, &calc, &learned, &bgp, &routes, connected),
        }
    }
    if let Some(b) = bgp {
        // CEASE to every peer; kernel routes stay for the next start to adopt.
        b.speaker.shutdown().await;
    }
    Ok(())
}

/// Warnings already given, so a condition that persists is logged once (shared/DESIGN.md §3:
/// unsupported fields are "logged once"), not on every update or reconcile.
#[derive(Debug, Default)]
struct Said(BTreeSet<String>);

impl Said {
    /// True the first time `what` is said.
    fn first(&mut self, what: String) -> bool {
        self.0.insert(what)
    }
}

fn needs_tunnel(calc: &Calc) -> bool {
    calc.blocks().iter().any(|b| {
        b.pool
            .as_ref()
            .is_some_and(|p| p.ipip != tabby_datastore::calico::EncapMode::Never)
    })
}

/// Applies the calc's desired state: speaker identity, peers, originated blocks, routes.
async fn reconcile(
    options: &AgentOptions,
    calc: &Calc,
    learned: &mut Learned,
    bgp: &mut Option<Bgp>,
    route_events: &mut Option<tokio::sync::broadcast::Receiver<tabby_bgp::speaker::RouteEvent>>,
    routes: &RouteManager,
    said: &mut Said,
) {
    let node = calc.node_info();
    let desired = calc.bgp();
    if let Some(router_id) = node.router_id {
        let asn = node.asn.0;
        let port = desired.listen_port;
        let restart = bgp
            .as_ref()
            .is_some_and(|b| b.router_id != router_id || b.asn != asn || b.port != port);
        if restart {
            tracing::info!("router ID, AS or port changed: restarting the BGP speaker");
            if let Some(b) = bgp.take() {
                b.speaker.shutdown().await;
            }
            *learned = Learned::new();
        }
        if bgp.is_none() {
            let mut config = SpeakerConfig::new(router_id, asn);
            config.listen = Some(SocketAddr::new(IpAddr::from([0u16; 8]), port));
            config.next_hop_v4 = node.ipv4.map(|(a, _)| a);
            config.next_hop_v6 = node.ipv6.map(|(a, _)| a);
            let started = match Speaker::start(config.clone()).await {
                // A node without IPv6 cannot listen on `::`; listen on IPv4 only.
                Err(tabby_bgp::speaker::SpeakerError::Listen { .. }) => {
                    config.listen = Some(SocketAddr::new(IpAddr::from([0u8; 4]), port));
                    Speaker::start(config).await
                }
                other => other,
            };
            match started {
                Ok(speaker) => {
                    *route_events = Some(speaker.subscribe());
                    *bgp = Some(Bgp {
                        speaker,
                        router_id,
                        asn,
                        port,
                        peers: BTreeMap::new(),
                        kinds: BTreeMap::new(),
                        originated: BTreeSet::new(),
                    });
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the BGP speaker; retrying on the next change")
                }
            }
        }
    }
    if let Some(b) = bgp.as_mut() {
        // Peers: add, change or remove only what differs; other sessions are untouched.
        let mut want: BTreeMap<IpAddr, PeerConfig> = BTreeMap::new();
        for (ip, peer) in &desired.peers {
            if (peer.password.is_some() || peer.password_missing)
                && said.first(format!("password {ip}"))
            {
                tracing::warn!(peer = %ip, "BGP passwords (TCP-MD5) are not implemented yet; peering without");
            }
            let mut config = PeerConfig::new(*ip, peer.asn.0);
            config.port = peer.port;
            config.hold_time = peer.keepalive_time.map_or(options.hold_time, |k| {
                u16::try_from(k.as_secs() * 3).unwrap_or(u16::MAX).max(3)
            });
            config.local_address = match ip {
                IpAddr::V4(_) => node.ipv4.map(|(a, _)| IpAddr::V4(a)),
                IpAddr::V6(_) => node.ipv6.map(|(a, _)| IpAddr::V6(a)),
            };
            // As Calico's BIRD configuration: IPv4 sessions carry IPv4, IPv6 sessions IPv6.
            config.families = vec![if ip.is_ipv4() {
                Family::Ipv4Unicast
            } else {
                Family::Ipv6Unicast
            }];
            want.insert(*ip, config);
            b.kinds.insert(*ip, peer.kind);
        }
        let gone: Vec<IpAddr> = b
            .peers
            .keys()
            .filter(|ip| !want.contains_key(ip))
            .copied()
            .collect();
        for ip in gone {
            let _ = b.speaker.remove_peer(ip).await;
            b.peers.remove(&ip);
            b.kinds.remove(&ip);
            learned.forget_peer(ip);
        }
        for (ip, config) in want {
            match b.peers.get(&ip) {
                Some(old) if *old == config => {}
                Some(_) => {
                    if let Err(e) = b.speaker.update_peer(config.clone()).await {
                        tracing::warn!(peer = %ip, error = %e, "cannot update peer");
                    }
                    b.peers.insert(ip, config);
                }
                None => match b.speaker.add_peer(config.clone()) {
                    Ok(()) => {
                        b.peers.insert(ip, config);
                    }
                    Err(e) => tracing::warn!(peer = %ip, error = %e, "cannot add peer"),
                },
            }
        }
        // Originated blocks follow the calc.
        let want: BTreeSet<Prefix> = calc.originated().iter().filter_map(prefix_of).collect();
        for p in b.originated.difference(&want) {
            b.speaker.withdraw(*p);
        }
        for p in want.difference(&b.originated) {
            b.speaker.originate(*p, None);
        }
        b.originated = want;
    }
    let desired_routes = calc.routes(&learned.routes());
    if let Err(e) = routes.set_desired(desired_routes).await {
        tracing::error!(error = %e, "route manager stopped");
    }
}

fn publish(
    shared: &Shared,
    calc: &Calc,
    learned: &Learned,
    bgp: &Option<Bgp>,
    routes: &RouteManager,
    connected: bool,
) {
    let node = calc.node_info();
    let stats = routes.stats();
    let sync = routes.sync_state();
    let peers: Vec<PeerView> = bgp
        .as_ref()
        .map(|b| {
            b.speaker
                .peers()
                .into_iter()
                .map(|status| PeerView {
                    kind: b.kinds.get(&status.address).map_or("peer", |k| k.as_str()),
                    status,
                })
                .collect()
        })
        .unwrap_or_default();
    let m = &shared.metrics;
    m.routes_programmed
        .set(i64::try_from(stats.routes_programmed).unwrap_or(i64::MAX));
    m.endpoints
        .set(i64::try_from(calc.endpoints().len()).unwrap_or(i64::MAX));
    for p in &peers {
        let labels = PeerLabels {
            peer: p.status.address.to_string(),
            kind: p.kind.to_string(),
        };
        let up = p.status.state == tabby_bgp::fsm::State::Established;
        m.bgp_established.get_or_create(&labels).set(i64::from(up));
        m.prefixes_received
            .get_or_create(&labels)
            .set(i64::try_from(p.status.received).unwrap_or(0));
        m.prefixes_advertised
            .get_or_create(&labels)
            .set(i64::try_from(p.status.advertised).unwrap_or(0));
    }
    let snapshot = Snapshot {
        node: calc.node_name().to_string(),
        in_sync: calc.in_sync(),
        connected,
        programmed: calc.in_sync() && sync.in_sync,
        router_id: node.router_id,
        asn: Some(node.asn.0),
        peers,
        endpoints: calc.endpoints().len(),
        learned: learned.len(),
        originated: bgp
            .as_ref()
            .map(|b| b.originated.iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
        routes: stats,
        at: Some(SystemTime::now()),
    };
    m.ready.set(i64::from(snapshot.ready()));
    *shared.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_is_given_once_per_subject() {
        let mut said = Said::default();
        assert!(said.first("password 10.0.0.2".into()));
        assert!(!said.first("password 10.0.0.2".into()));
        assert!(said.first("password 10.0.0.3".into()));
    }
}
