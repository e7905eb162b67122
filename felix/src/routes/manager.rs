//! The route manager task: owns the desired table, the kernel mirror and two netlink sockets,
//! and runs the reconciler when something changes.
//!
//! ```text
//!   RouteManager (handle) --Command (bounded)--> task ---- requests ---> netlink socket A
//!          ^                                      |  ^                   (dump, write, acks)
//!          +------ watch<SyncState> --------------+  +-- notifications -- netlink socket B
//!          +------ Arc<Counters> -----------------+      (RTNLGRP_LINK, IPV4_ROUTE, IPV6_ROUTE)
//! ```
//!
//! What makes a destination dirty: a new desired set (the destinations whose target changed),
//! a route notification for it (someone else's change, or the echo of ours, which reconciles
//! to nothing), a link that appeared, went up, went down or vanished (the destinations routed
//! through it), and a change of the kernel's routes to a network holding a learned route's
//! gateway (that route's next hops are resolved again: recursive next hops). Dirty destinations are reconciled together after a short debounce; nothing
//! scans the whole table on that path. A full dump and reconcile runs at start (the
//! mark-and-sweep), after a notification overrun, and as a slow safety resync.
//!
//! Nothing is written before the first [`RouteManager::set_desired`]: the caller sends it once
//! its datastore is in sync (shared/DESIGN.md §2).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::tasks::AbortOnDrop;
use futures::channel::mpsc::UnboundedReceiver;
use futures::StreamExt;
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::sys::{AsyncSocket, SocketAddr};
use rtnetlink::{Handle, MulticastGroup};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::netlink as nl;
use super::reconcile::{reconcile, Change, Deferred, KernelTable, Links, Ownership, RouteTable};
use super::{Dst, Route};

/// Configuration of the route manager.
#[derive(Debug, Clone)]
pub struct RouteManagerConfig {
    /// Route protocol of tabby's routes (44).
    pub protocol: u8,
    /// Name prefixes of workload interfaces (`cali`).
    pub workload_prefixes: Vec<String>,
    /// The IP-in-IP device (`tunl0`).
    pub tunnel_device: String,
    /// How long to gather changes before reconciling them together.
    pub debounce: Duration,
    /// Period of the full safety resync (dump and reconcile everything).
    pub resync_interval: Duration,
    /// First delay before retrying changes the kernel refused (doubles up to 30 s).
    pub retry_delay: Duration,
}

impl Default for RouteManagerConfig {
    fn default() -> Self {
        RouteManagerConfig {
            protocol: super::TABBY_PROTOCOL,
            workload_prefixes: vec!["cali".to_string()],
            tunnel_device: "tunl0".to_string(),
            debounce: Duration::from_millis(5),
            resync_interval: Duration::from_secs(90),
            retry_delay: Duration::from_millis(500),
        }
    }
}

/// Errors of the route manager.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// A netlink socket could not be opened or bound.
    #[error("netlink socket: {0}")]
    Socket(#[from] std::io::Error),
    /// The initial dump of links or routes failed.
    #[error("netlink dump: {0}")]
    Dump(#[from] rtnetlink::Error),
    /// The manager's task has stopped.
    #[error("route manager stopped")]
    Stopped,
}

/// Upper bounds (seconds) of the apply latency histogram buckets (Felix's
/// `felix_int_dataplane_apply_time_seconds` covers the same range).
pub const APPLY_LATENCY_BUCKETS: [f64; 10] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

#[derive(Debug, Default)]
struct Counters {
    routes_programmed: AtomicU64,
    routes_deferred: AtomicU64,
    route_conflicts: AtomicU64,
    changes_applied: AtomicU64,
    change_failures: AtomicU64,
    drift_repairs: AtomicU64,
    resyncs: AtomicU64,
    applies: AtomicU64,
    apply_nanos_sum: AtomicU64,
    /// Cumulative counts per bucket, plus the `+Inf` bucket last.
    apply_buckets: [AtomicU64; APPLY_LATENCY_BUCKETS.len() + 1],
}

/// A snapshot of the route manager's counters, for metrics and status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteStats {
    /// Desired routes that are in the kernel as wanted (gauge).
    pub routes_programmed: u64,
    /// Desired routes waiting for their interface (gauge).
    pub routes_deferred: u64,
    /// Desired routes blocked by a route tabby does not own under the same key (gauge).
    pub route_conflicts: u64,
    /// Route writes and deletions done (counter).
    pub changes_applied: u64,
    /// Route writes and deletions the kernel refused (counter; they are retried).
    pub change_failures: u64,
    /// Destinations repaired after someone else changed or deleted them (counter).
    pub drift_repairs: u64,
    /// Full dumps and reconciles, the start-up one included (counter).
    pub resyncs: u64,
    /// Number of applies (the histogram's count).
    pub applies: u64,
    /// Total time spent applying, seconds (the histogram's sum).
    pub apply_seconds_sum: f64,
    /// Cumulative apply counts per [`APPLY_LATENCY_BUCKETS`] bound, then `+Inf`.
    pub apply_seconds_buckets: Vec<u64>,
}

impl Counters {
    fn observe_apply(&self, d: Duration) {
        self.applies.fetch_add(1, Ordering::Relaxed);
        self.apply_nanos_sum.fetch_add(
            d.as_nanos().try_into().unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let secs = d.as_secs_f64();
        for (i, bound) in APPLY_LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.apply_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.apply_buckets[APPLY_LATENCY_BUCKETS.len()].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> RouteStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RouteStats {
            routes_programmed: get(&self.routes_programmed),
            routes_deferred: get(&self.routes_deferred),
            route_conflicts: get(&self.route_conflicts),
            changes_applied: get(&self.changes_applied),
            change_failures: get(&self.change_failures),
            drift_repairs: get(&self.drift_repairs),
            resyncs: get(&self.resyncs),
            applies: get(&self.applies),
            apply_seconds_sum: get(&self.apply_nanos_sum) as f64 / 1e9,
            apply_seconds_buckets: self.apply_buckets.iter().map(get).collect(),
        }
    }
}

/// Where the manager is, published after every apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncState {
    /// The last desired set (by [`RouteManager::set_desired`] count) that has been applied.
    pub generation: u64,
    /// The kernel matches the desired set, as far as it can: nothing dirty, nothing waiting
    /// for a retry. Routes deferred for a missing interface do not count against it.
    pub in_sync: bool,
}

enum Command {
    SetDesired(Vec<Route>, u64),
}

/// Handle of the route manager. Dropping it stops the manager (routes stay in the kernel,
/// to be adopted by the next start).
#[derive(Debug)]
pub struct RouteManager {
    commands: mpsc::Sender<Command>,
    state: watch::Receiver<SyncState>,
    counters: Arc<Counters>,
    generation: AtomicU64,
    preserved: Vec<(Dst, Vec<IpAddr>)>,
    _tasks: AbortOnDrop,
}

impl RouteManager {
    /// Opens the netlink sockets in the current network namespace, subscribes to link and
    /// route notifications, dumps links and routes, and starts the manager. Must be called
    /// inside a tokio runtime.
    pub async fn start(config: RouteManagerConfig) -> Result<RouteManager, RouteError> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        let conn_task = tokio::spawn(conn);
        let (mut mconn, _mhandle, events) = rtnetlink::new_multicast_connection(&[
            MulticastGroup::Link,
            MulticastGroup::Ipv4Route,
            MulticastGroup::Ipv6Route,
        ])?;
        // Room for bursts of notifications (100k routes changing at once); an overrun is
        // survived by a full resync anyway.
        if let Err(e) = mconn
            .socket_mut()
            .socket_mut()
            .set_rx_buf_sz(32 * 1024 * 1024)
        {
            tracing::debug!(error = %e, "could not enlarge the netlink notification buffer");
        }
        let mconn_task = tokio::spawn(mconn);

        let own = Ownership {
            protocol: config.protocol,
            workload_prefixes: config.workload_prefixes.clone(),
            tunnel_device: config.tunnel_device.clone(),
        };
        let mut task = Task {
            handle,
            events,
            config,
            own,
            desired: None,
            kernel: KernelTable::new(),
            links: Links::new(),
            dirty: BTreeSet::new(),
            drifted: BTreeSet::new(),
            full: true,
            fresh_dump: true,
            swept: false,
            status: BTreeMap::new(),
            unreachable: BTreeSet::new(),
            gauges: Gauges::default(),
            deadline: None,
            retry: None,
            retry_delay: Duration::ZERO,
            generation: 0,
            counters: Arc::new(Counters::default()),
            state: watch::channel(SyncState::default()).0,
        };
        // Subscribed first, dumped second: a change racing the dump is seen as a
        // notification afterwards.
        task.dump().await?;
        let preserved = task.gateway_routes();
        let counters = task.counters.clone();
        let state = task.state.subscribe();
        let (tx, rx) = mpsc::channel(16);
        let main = tokio::spawn(task.run(rx));
        Ok(RouteManager {
            commands: tx,
            state,
            counters,
            generation: AtomicU64::new(0),
            preserved,
            _tasks: AbortOnDrop(vec![main, conn_task, mconn_task]),
        })
    }

    /// The routes via gateways that carried our protocol when the manager started: the
    /// forwarding state a previous run left for this one (BGP-learned routes). The agent
    /// keeps them wanted while its BGP speaker restarts gracefully.
    pub fn preserved(&self) -> &[(Dst, Vec<IpAddr>)] {
        &self.preserved
    }

    /// Sets the full desired set of routes (main table). The manager diffs it against the
    /// previous set and the kernel, and writes only what differs. The first call also sweeps
    /// stale protocol-44 routes (and adopts the ones still wanted).
    pub async fn set_desired(&self, routes: Vec<Route>) -> Result<(), RouteError> {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.commands
            .send(Command::SetDesired(routes, generation))
            .await
            .map_err(|_| RouteError::Stopped)
    }

    /// Counters for metrics.
    pub fn stats(&self) -> RouteStats {
        self.counters.snapshot()
    }

    /// The current sync state.
    pub fn sync_state(&self) -> SyncState {
        *self.state.borrow()
    }

    /// Waits until the last desired set has been applied and the kernel matches it (routes
    /// waiting for their interface aside). For readiness and tests.
    pub async fn wait_in_sync(&self) -> Result<(), RouteError> {
        let want = self.generation.load(Ordering::SeqCst);
        let mut rx = self.state.clone();
        rx.wait_for(|s| s.generation >= want && s.in_sync)
            .await
            .map(|_| ())
            .map_err(|_| RouteError::Stopped)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DstStatus {
    Programmed,
    Deferred,
    Conflict,
    Failed,
}

#[derive(Debug, Clone, Copy, Default)]
struct Gauges {
    programmed: u64,
    deferred: u64,
    conflicts: u64,
}

struct Task {
    handle: Handle,
    events: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
    config: RouteManagerConfig,
    own: Ownership,
    /// `None` until the first desired set: nothing is written before it.
    desired: Option<RouteTable>,
    kernel: KernelTable,
    links: Links,
    dirty: BTreeSet<Dst>,
    /// The dirty destinations that only a notification (not our own wish) made dirty.
    drifted: BTreeSet<Dst>,
    /// A full dump and reconcile is due.
    full: bool,
    /// The mirror was just dumped (at start): the first full reconcile needs no new dump.
    fresh_dump: bool,
    /// The start-up mark-and-sweep has run.
    swept: bool,
    /// Outcome of each desired destination at its last reconcile.
    status: BTreeMap<Dst, DstStatus>,
    /// Destinations deferred for want of a route to their gateways, already logged.
    unreachable: BTreeSet<Dst>,
    gauges: Gauges,
    deadline: Option<Instant>,
    retry: Option<Instant>,
    retry_delay: Duration,
    generation: u64,
    counters: Arc<Counters>,
    state: watch::Sender<SyncState>,
}

impl Task {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut resync = tokio::time::interval_at(
            Instant::now() + self.config.resync_interval,
            self.config.resync_interval,
        );
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = match (self.deadline, self.retry) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    None => return,
                    Some(Command::SetDesired(routes, generation)) => {
                        let table = self.desired.get_or_insert_with(RouteTable::new);
                        let changed = table.replace_all(routes);
                        self.generation = generation;
                        for d in &changed {
                            self.drifted.remove(d);
                        }
                        self.dirty.extend(changed);
                        self.schedule();
                    }
                },
                ev = self.events.next() => match ev {
                    None => {
                        tracing::error!("netlink notification socket closed; route manager stops");
                        return;
                    }
                    Some((msg, _)) => self.on_event(msg),
                },
                _ = resync.tick() => {
                    self.full = true;
                    self.schedule();
                }
                _ = sleep_until(wake), if wake.is_some() => {
                    if self.retry.is_some_and(|r| r <= Instant::now()) {
                        self.retry = None;
                    }
                    self.deadline = None;
                    self.reconcile().await;
                }
            }
        }
    }

    fn schedule(&mut self) {
        if self.deadline.is_none() {
            self.deadline = Some(Instant::now() + self.config.debounce);
        }
    }

    fn mark(&mut self, dst: Dst, drift: bool) {
        let dst = dst.normalized();
        if self.dirty.insert(dst) && drift {
            self.drifted.insert(dst);
        }
        self.schedule();
    }

    /// The kernel's routes to `dst` changed: reconcile it (a change by someone else is
    /// drift), and the learned routes whose gateways it covers, since their next hops may
    /// resolve differently now (recursive next hops, [`super::reconcile::GatewayRoutes`]).
    fn kernel_changed(&mut self, dst: Dst, drift: bool) {
        self.mark(dst, drift);
        let dependents = match &self.desired {
            Some(t) => t.dsts_via_gateways_in(dst),
            None => return,
        };
        for d in dependents {
            self.mark(d, false);
        }
    }

    fn on_event(&mut self, msg: NetlinkMessage<RouteNetlinkMessage>) {
        match msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) => {
                if let Some(k) = nl::parse_route(&r) {
                    let dst = k.dst;
                    let relevant = k.table == super::reconcile::MAIN_TABLE;
                    self.kernel.insert(k);
                    if relevant {
                        self.kernel_changed(dst, true);
                    }
                }
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRoute(r)) => {
                if let Some(k) = nl::parse_route(&r) {
                    self.kernel.remove(&k);
                    if k.table == super::reconcile::MAIN_TABLE {
                        self.kernel_changed(k.dst, true);
                    }
                }
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                if let Some((name, link)) = nl::parse_link(&l) {
                    let index = link.index;
                    let up = link.up;
                    let changed = self.links.upsert(&name, link);
                    if !changed.is_empty() {
                        if !up {
                            for d in self.kernel.remove_through(index) {
                                self.kernel_changed(d, false);
                            }
                        }
                        for n in changed {
                            self.link_changed(&n);
                        }
                    }
                }
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => {
                let index = l.header.index;
                for d in self.kernel.remove_through(index) {
                    self.kernel_changed(d, false);
                }
                if let Some(name) = self.links.remove(index) {
                    self.link_changed(&name);
                }
            }
            NetlinkPayload::Overrun(_) => {
                tracing::warn!("netlink notifications overran; full route resync");
                self.full = true;
                self.schedule();
            }
            _ => {}
        }
    }

    fn link_changed(&mut self, name: &str) {
        let dsts = match &self.desired {
            Some(t) => t.dsts_using(name, &self.config.tunnel_device),
            None => return,
        };
        for d in dsts {
            self.mark(d, false);
        }
    }

    /// Our routes via gateways in the kernel mirror, with their gateways.
    fn gateway_routes(&self) -> Vec<(Dst, Vec<IpAddr>)> {
        self.kernel
            .iter()
            .filter(|r| r.protocol == self.own.protocol)
            .filter_map(|r| {
                let mut gateways: Vec<IpAddr> = r
                    .gateway
                    .into_iter()
                    .chain(r.multipath.iter().filter_map(|h| h.gateway))
                    .collect();
                gateways.sort();
                gateways.dedup();
                (!gateways.is_empty()).then_some((r.dst, gateways))
            })
            .collect()
    }

    async fn dump(&mut self) -> Result<(), rtnetlink::Error> {
        let links = nl::dump_links(&self.handle).await?;
        let mut table = Links::new();
        for (name, link) in links {
            table.upsert(&name, link);
        }
        self.links = table;
        let routes = nl::dump_routes(&self.handle).await?;
        self.kernel.reset(routes);
        self.counters.resyncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn reconcile(&mut self) {
        if self.desired.is_none() {
            // Nothing is written before the first desired set; the mirror stays fresh from
            // notifications.
            self.dirty.clear();
            self.drifted.clear();
            return;
        }
        let started = Instant::now();
        let full = std::mem::take(&mut self.full);
        let initial = !self.swept;
        if full && !self.fresh_dump {
            if let Err(e) = self.dump().await {
                tracing::warn!(error = %e, "route resync dump failed; retrying");
                self.full = true;
                self.arm_retry();
                return;
            }
        }
        self.fresh_dump = false;
        let Some(desired) = &self.desired else { return };
        let mut dsts = std::mem::take(&mut self.dirty);
        let drifted = std::mem::take(&mut self.drifted);
        if full {
            // The mark-and-sweep (at start) and the safety resync: everything desired or ours.
            dsts.extend(desired.iter().map(|(d, _)| *d));
            dsts.extend(
                self.kernel
                    .iter()
                    .filter(|k| self.own.owns(k, &self.links))
                    .map(|k| k.dst),
            );
            self.status.clear();
            self.gauges = Gauges::default();
        }
        let plan = reconcile(desired, &self.kernel, &self.links, &self.own, Some(&dsts));
        let results = nl::apply(&mut self.handle, &plan.changes, self.own.protocol).await;
        let mut failed = BTreeSet::new();
        let mut repaired = BTreeSet::new();
        for (change, result) in plan.changes.iter().zip(results) {
            let dst = change.dst();
            let ok = match (&result, change) {
                (Ok(()), _) => true,
                (Err(e), Change::Delete(_)) if e.is_no_such_route() => true,
                (Err(e), _) => {
                    tracing::warn!(%dst, error = %e, ?change, "kernel refused a route change");
                    false
                }
            };
            if ok {
                match change {
                    Change::Delete(k) => self.kernel.remove(k),
                    Change::Replace(r) => self.kernel.insert(r.to_kernel(self.own.protocol)),
                }
                self.counters
                    .changes_applied
                    .fetch_add(1, Ordering::Relaxed);
                if drifted.contains(&dst) || (full && !initial) {
                    repaired.insert(dst);
                }
            } else {
                self.counters
                    .change_failures
                    .fetch_add(1, Ordering::Relaxed);
                failed.insert(dst);
            }
        }
        self.swept = true;
        if !repaired.is_empty() {
            tracing::info!(
                count = repaired.len(),
                "repaired routes changed by someone else"
            );
        }
        self.counters
            .drift_repairs
            .fetch_add(repaired.len() as u64, Ordering::Relaxed);
        for (dst, why) in &plan.deferred {
            match why {
                // Once per destination until it is written: a missing route to a gateway
                // is worth knowing, and must not fill the log on every reconcile.
                Deferred::UnreachableGateway(gateways) => {
                    if self.unreachable.insert(*dst) {
                        tracing::warn!(
                            %dst,
                            ?gateways,
                            "learned route deferred: no route to its gateway; written when one appears"
                        );
                    }
                }
                Deferred::MissingInterface(_) => tracing::debug!(%dst, ?why, "route deferred"),
            }
        }
        for dst in &plan.conflicts {
            tracing::warn!(%dst, "route not written: a route of another owner holds its key");
        }
        // Per-destination outcome, for the gauges.
        let deferred: BTreeSet<Dst> = plan.deferred.iter().map(|(d, _)| *d).collect();
        let conflicts: BTreeSet<Dst> = plan.conflicts.iter().copied().collect();
        let desired_now: Vec<(Dst, bool)> = dsts
            .iter()
            .map(|d| {
                (
                    *d,
                    self.desired.as_ref().is_some_and(|t| t.get(d).is_some()),
                )
            })
            .collect();
        for (dst, wanted) in desired_now {
            if !deferred.contains(&dst) && self.unreachable.remove(&dst) && wanted {
                tracing::info!(%dst, "learned route written: its gateway is reachable now");
            }
            let status = if !wanted {
                None
            } else if deferred.contains(&dst) {
                Some(DstStatus::Deferred)
            } else if conflicts.contains(&dst) {
                Some(DstStatus::Conflict)
            } else if failed.contains(&dst) {
                Some(DstStatus::Failed)
            } else {
                Some(DstStatus::Programmed)
            };
            self.set_status(dst, status);
        }
        self.counters
            .routes_programmed
            .store(self.gauges.programmed, Ordering::Relaxed);
        self.counters
            .routes_deferred
            .store(self.gauges.deferred, Ordering::Relaxed);
        self.counters
            .route_conflicts
            .store(self.gauges.conflicts, Ordering::Relaxed);
        if failed.is_empty() {
            self.retry_delay = Duration::ZERO;
        } else {
            self.dirty.extend(failed);
            self.arm_retry();
        }
        self.counters.observe_apply(started.elapsed());
        let in_sync = self.dirty.is_empty() && !self.full && self.retry.is_none();
        self.state.send_replace(SyncState {
            generation: self.generation,
            in_sync,
        });
    }

    fn set_status(&mut self, dst: Dst, status: Option<DstStatus>) {
        let old = match status {
            Some(s) => self.status.insert(dst, s),
            None => self.status.remove(&dst),
        };
        for (s, delta) in [(old, -1i64), (status, 1)] {
            let gauge = match s {
                Some(DstStatus::Programmed) => &mut self.gauges.programmed,
                Some(DstStatus::Deferred) => &mut self.gauges.deferred,
                Some(DstStatus::Conflict) => &mut self.gauges.conflicts,
                Some(DstStatus::Failed) | None => continue,
            };
            *gauge = gauge.saturating_add_signed(delta);
        }
    }

    fn arm_retry(&mut self) {
        self.retry_delay = if self.retry_delay.is_zero() {
            self.config.retry_delay
        } else {
            (self.retry_delay * 2).min(Duration::from_secs(30))
        };
        self.retry = Some(Instant::now() + self.retry_delay);
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
