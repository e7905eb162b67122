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

use crate::bgp_sync::{self, Bgp, BgpOptions, Said};
use crate::calc::Calc;
use crate::interfaces::{InterfaceConfig, InterfaceManager, TunnelConfig};
use crate::learned::Learned;
use crate::metrics::{Metrics, PeerLabels};
use crate::policy::{Backend, PolicyApplier, PolicyFeed, PolicyStatus};
use crate::routes::{RouteManager, RouteManagerConfig, RouteStats};

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tabby_bgp::speaker::{PeerStatus, Selected};

use tabby_datastore::{Datastore, Event};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

/// How long changes gather before one reconcile applies them together.
const BATCH: Duration = Duration::from_millis(20);
/// How often the status snapshot is refreshed when nothing happens.
const REFRESH: Duration = Duration::from_secs(1);
/// The longest the routes of a previous run are kept while BGP restarts: the restart time
/// tabby advertises, after which its peers drop what it announced too.
const PRESERVE_LIMIT: Duration = Duration::from_secs(120);

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
    /// Network policy backend; `None`: no policy is programmed.
    pub policy: Option<Backend>,
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
            policy: Some(Backend::Nftables),
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
    /// Network policies in force.
    pub policies: usize,
    /// Network policies refused (invalid or unsupported).
    pub policies_refused: usize,
    /// The policy applier, when policy is programmed.
    pub policy: Option<PolicyStatus>,
    /// When the snapshot was taken.
    pub at: Option<SystemTime>,
}

impl Snapshot {
    /// Ready: in sync, connected, and programmed (routes and policy).
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

/// Runs the agent until `shutdown` completes or the datastore stops.
pub async fn run(
    options: AgentOptions,
    mut datastore: Datastore,
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    let routes = RouteManager::start(options.routes.clone()).await?;
    let mut feed = PolicyFeed::new(&options.node_name);
    let policy = options.policy.map(PolicyApplier::start);
    // The ruleset is compiled only when a policy input changed (most batches are route
    // changes); the first in-sync batch always sends one.
    let mut policy_dirty = true;
    let interfaces = InterfaceManager::start(options.interfaces.clone()).await?;
    let mut calc = Calc::with_secret_namespace(&options.node_name, &options.namespace);
    // Routes a previous run left in the kernel stay until BGP can replace them (graceful
    // restart), at most PRESERVE_LIMIT.
    let mut learned = Learned::with_preserved(routes.preserved());
    let preserve_until = tokio::time::Instant::now() + PRESERVE_LIMIT;
    if learned.preserved() > 0 {
        tracing::info!(
            routes = learned.preserved(),
            "keeping the BGP routes of the previous run while BGP restarts"
        );
    }
    let mut bgp: Option<Bgp> = None;
    let mut route_events: Option<broadcast::Receiver<Selected>> = None;
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
                    policy_dirty |= feed.apply(&e);
                    dirty = true;
                }
                None => return Err(AgentError::DatastoreStopped),
            },
            event = route_event => {
                match event {
                    Ok(e) => dirty |= learned.apply(&e),
                    Err(RecvError::Lagged(_)) => {
                        // Missed changes: take the speaker's current sets.
                        if let Some(b) = &bgp {
                            learned.replace_all(&b.speaker.selected());
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
                    // Nothing is programmed before the datastore is in sync.
                    if let (Some(p), true) = (&policy, policy_dirty) {
                        p.set(feed.ruleset());
                        policy_dirty = false;
                    }
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
                publish(&shared, &calc, &learned, &bgp, &routes, connected, (&feed, policy.as_ref()));
            }
            _ = refresh.tick() => {
                dirty |= release_preserved(&mut learned, &bgp, preserve_until);
                publish(&shared, &calc, &learned, &bgp, &routes, connected, (&feed, policy.as_ref()));
            }
        }
    }
    if let Some(b) = bgp {
        // Peers are told so that they keep our routes while we restart (graceful restart);
        // kernel routes stay for the next start to adopt.
        b.speaker.shutdown().await;
    }
    Ok(())
}

/// Lets go of the routes preserved from the previous run that BGP can now replace: once the
/// speaker's deferral is over, those whose gateways are not peers still owing their
/// End-of-RIB; all of them after `until`. Returns true when some went.
fn release_preserved(
    learned: &mut Learned,
    bgp: &Option<Bgp>,
    until: tokio::time::Instant,
) -> bool {
    if learned.preserved() == 0 {
        return false;
    }
    if tokio::time::Instant::now() >= until {
        tracing::info!("graceful restart time over; dropping the routes of the previous run");
        return learned.release_preserved(|_| false);
    }
    match bgp {
        Some(b) if !b.speaker.deferring() => learned.release_preserved(|gw| {
            b.peers.contains_key(gw) && !b.speaker.end_of_rib_received(*gw)
        }),
        _ => false,
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
    route_events: &mut Option<broadcast::Receiver<Selected>>,
    routes: &RouteManager,
    said: &mut Said,
) {
    let bgp_options = BgpOptions {
        hold_time: options.hold_time,
        originate: true,
    };
    // Forwarding state of a previous run is in the kernel: a new speaker restarts gracefully.
    let restarting = learned.preserved() > 0;
    if let Some(events) = bgp_sync::sync(bgp, calc, bgp_options, restarting, said).await {
        *route_events = Some(events);
        if let Some(b) = bgp {
            learned.replace_all(&b.speaker.selected());
        }
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
    (feed, policy): (&PolicyFeed, Option<&PolicyApplier>),
) {
    let policy_status = policy.map(PolicyApplier::status);
    let policy_ok = policy_status.as_ref().is_none_or(|p| p.programmed);
    let node = calc.node_info();
    let stats = routes.stats();
    let sync = routes.sync_state();
    let peers: Vec<PeerView> = bgp
        .as_ref()
        .map(|b| {
            b.peer_views()
                .into_iter()
                .map(|(status, kind)| PeerView { status, kind })
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
        programmed: calc.in_sync() && sync.in_sync && policy_ok,
        router_id: node.router_id,
        asn: Some(node.asn.0),
        peers,
        endpoints: calc.endpoints().len(),
        policies: feed.policies(),
        policies_refused: feed.refused().len(),
        policy: policy_status,
        learned: learned.len(),
        originated: bgp
            .as_ref()
            .map(|b| b.originated.keys().map(ToString::to_string).collect())
            .unwrap_or_default(),
        routes: stats,
        at: Some(SystemTime::now()),
    };
    m.ready.set(i64::from(snapshot.ready()));
    *shared.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
}
