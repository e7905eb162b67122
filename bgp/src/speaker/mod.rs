//! The tokio shell around the [`fsm`](crate::fsm): a BGP speaker with a listener, one task
//! per configured peer, and the API the rest of tabby uses.
//!
//! ```text
//!                      Speaker (API: add/update/remove peer, originate/withdraw, status)
//!                        |  commands (bounded mpsc, per peer)        ^ status (shared)
//!                        v                                           |
//!  listener task --Incoming(stream)--> session task (one per peer: fsm::Peer) --+
//!                                        |  ^ ConnEvent (bounded mpsc)          | lock
//!                                        v  |                                   v
//!                   per connection: connect, reader, writer tasks     Rib (one, shared):
//!                                                                     Adj-RIBs-In, Loc-RIB,
//!  session tasks <-- Notify (per peer: "your outbox has routes") ---- outboxes per peer
//!  subscribers   <-- Selected (broadcast: multipath set changes) ----
//! ```
//!
//! The [`Rib`](crate::rib::Rib) is sans-IO and called under a mutex by whoever has news
//! (a session with an UPDATE, the API with an origination); it coalesces what each peer must
//! be sent into that peer's outbox and names the peers to wake. A session task drains its
//! outbox when its connection has room, so a slow peer delays only itself, and what it is
//! sent while it is slow is coalesced, never queued without bound.
//!
//! Every task is owned by a handle that aborts it on drop: the speaker owns the listener and
//! the session tasks; a session task owns its connections' tasks. Shutdown is a message: a
//! session task told to stop sends a CEASE, lets its writers flush, and returns.

mod listener;
mod md5;
mod session;
mod task;

pub use crate::rib::{
    Hop, NextHopMode, Origination, Path, PathFrom, PeerKind, ReceivedRoute, Selected,
};

use crate::fsm::{ConfigError, State, Timers};
use crate::prefix::{Family, Prefix};
use crate::rib::{Rib, RibConfig};
use crate::wire::{cease, Notification};
use session::{Command, PeerShared};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use task::TaskHandle;
use tokio::sync::{broadcast, mpsc, Notify};

/// The standard BGP port.
pub const BGP_PORT: u16 = 179;

/// How long a stopping session may take to flush its CEASE.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Settings of the speaker as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeakerConfig {
    /// Our BGP Identifier.
    pub router_id: Ipv4Addr,
    /// Our AS.
    pub local_as: u32,
    /// Where to accept connections; `None`: accept none (every peer must be active).
    pub listen: Option<SocketAddr>,
    /// Source address of outgoing connections, unless the peer sets its own.
    pub local_address: Option<IpAddr>,
    /// IPv4 next hop for originated IPv4 prefixes on sessions over IPv6.
    pub next_hop_v4: Option<Ipv4Addr>,
    /// IPv6 next hop for originated IPv6 prefixes on sessions over IPv4.
    pub next_hop_v6: Option<Ipv6Addr>,
    /// Restart time advertised with the graceful restart capability; `None`: not advertised.
    pub graceful_restart: Option<u16>,
    /// We restarted with our forwarding state kept (RFC 4724 §4.1): advertise the Restart
    /// State bit and hold our first advertisement until the peers that are up sent their
    /// End-of-RIB, or `selection_deferral` passed.
    pub restarting: bool,
    /// Upper bound of the deferral of a restarting speaker.
    pub selection_deferral: Duration,
    /// How long a restarted peer's stale routes may wait for its End-of-RIB.
    pub stale_time: Duration,
    /// Our cluster ID when we are a route reflector (RFC 4456).
    pub cluster_id: Option<Ipv4Addr>,
    /// FSM timers of every peer.
    pub timers: Timers,
}

impl SpeakerConfig {
    /// A configuration listening on `[::]:179` (which also accepts IPv4 on Linux), with
    /// graceful restart advertised at 120 s and default timers.
    pub fn new(router_id: Ipv4Addr, local_as: u32) -> SpeakerConfig {
        SpeakerConfig {
            router_id,
            local_as,
            listen: Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), BGP_PORT)),
            local_address: None,
            next_hop_v4: None,
            next_hop_v6: None,
            graceful_restart: Some(120),
            restarting: false,
            selection_deferral: Duration::from_secs(120),
            stale_time: Duration::from_secs(360),
            cluster_id: None,
            timers: Timers::default(),
        }
    }
}

/// What to do when a peer sends more prefixes than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixLimit {
    /// Most routes accepted from the peer.
    pub max: u32,
    /// `None`: log a warning when crossed. `Some(t)`: end the session with a CEASE "Maximum
    /// Number of Prefixes Reached" (RFC 4486) and retry after `t`.
    pub restart_after: Option<Duration>,
}

/// One configured peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's address; connections from elsewhere are refused.
    pub address: IpAddr,
    /// The peer's port for outgoing connections.
    pub port: u16,
    /// The AS the peer must announce.
    pub remote_as: u32,
    /// Never connect; wait for the peer.
    pub passive: bool,
    /// Proposed hold time in seconds (0, or 3 and more).
    pub hold_time: u16,
    /// Source address of outgoing connections (overrides the speaker's).
    pub local_address: Option<IpAddr>,
    /// Families to negotiate.
    pub families: Vec<Family>,
    /// The peer is a route reflection client of ours (needs the speaker's cluster ID).
    pub rr_client: bool,
    /// Which next hop routes leave with towards the peer.
    pub next_hop_mode: NextHopMode,
    /// Restart time advertised to this peer, overriding the speaker's.
    pub restart_time: Option<u16>,
    /// Limit on the routes the peer may send.
    pub prefix_limit: Option<PrefixLimit>,
    /// TCP-MD5 key (RFC 2385).
    pub password: Option<String>,
}

impl PeerConfig {
    /// An active peer on port 179 with hold time 90 s and both unicast families.
    pub fn new(address: IpAddr, remote_as: u32) -> PeerConfig {
        PeerConfig {
            address: canonical(address),
            port: BGP_PORT,
            remote_as,
            passive: false,
            hold_time: 90,
            local_address: None,
            families: Family::ALL.to_vec(),
            rr_client: false,
            next_hop_mode: NextHopMode::Auto,
            restart_time: None,
            prefix_limit: None,
            password: None,
        }
    }
}

/// Why the speaker refused a request.
#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    /// The listening socket could not be set up.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A peer with this address is configured already.
    #[error("peer {0} is already configured")]
    PeerExists(IpAddr),
    /// No peer with this address is configured.
    #[error("peer {0} is not configured")]
    NoSuchPeer(IpAddr),
    /// The peer's TCP-MD5 password cannot be used.
    #[error("peer {address}: {source}")]
    Password {
        /// The peer.
        address: IpAddr,
        /// The cause.
        source: md5::Md5Error,
    },
    /// The peer's configuration is not usable.
    #[error("peer {address}: {source}")]
    Config {
        /// The peer.
        address: IpAddr,
        /// The cause.
        source: ConfigError,
    },
}

/// A snapshot of one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's address.
    pub address: IpAddr,
    /// The peer's configured AS.
    pub remote_as: u32,
    /// RFC 4271 state.
    pub state: State,
    /// When the peer entered `state`.
    pub since: SystemTime,
    /// Routes currently received from the peer (its Adj-RIB-In).
    pub received: u64,
    /// Routes received and in the table (not refused as loops).
    pub accepted: u64,
    /// Routes of a restarting peer kept stale.
    pub stale: u64,
    /// Prefixes currently advertised to the peer.
    pub advertised: u64,
    /// UPDATE messages received on this peer's sessions.
    pub updates_received: u64,
    /// UPDATE messages sent on this peer's sessions.
    pub updates_sent: u64,
    /// Times the session reached Established.
    pub established_count: u64,
    /// Why the last session or attempt ended.
    pub last_error: Option<String>,
    /// The peer's BGP Identifier, once known.
    pub peer_id: Option<Ipv4Addr>,
    /// Our address and port on the Established session.
    pub local: Option<SocketAddr>,
    /// Families negotiated on the Established session.
    pub families: Vec<Family>,
    /// Negotiated hold time of the Established session.
    pub hold_time: Option<u16>,
}

/// What every session task shares with the speaker.
#[derive(Debug, Clone)]
pub(crate) struct SpeakerContext {
    pub(crate) config: Arc<SpeakerConfig>,
    rib: Arc<Mutex<Rib>>,
    events: broadcast::Sender<Selected>,
    /// Per peer: wakes its session task when its outbox has something.
    wakers: Arc<Mutex<HashMap<IpAddr, Arc<Notify>>>>,
    /// Mirrors [`Rib::deferring`] for the sessions' Restart State bit, without the lock.
    deferring: Arc<AtomicBool>,
}

fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; what it guards stays consistent, since
    // every change under these locks is completed before anything can panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SpeakerContext {
    /// Runs `f` on the table, then publishes what it changed: multipath sets to the
    /// subscribers, a wake-up to each peer with something to send.
    pub(crate) fn with_rib<R>(&self, f: impl FnOnce(&mut Rib) -> R) -> R {
        let (r, woken, changes, deferring) = {
            let mut rib = relock(&self.rib);
            let r = f(&mut rib);
            (r, rib.take_woken(), rib.take_changes(), rib.deferring())
        };
        self.deferring.store(deferring, Ordering::Relaxed);
        for change in changes {
            // No subscriber is not an error.
            let _ = self.events.send(change);
        }
        if !woken.is_empty() {
            let wakers = relock(&self.wakers);
            for peer in woken {
                if let Some(w) = wakers.get(&peer) {
                    w.notify_one();
                }
            }
        }
        r
    }

    /// Reads the table.
    pub(crate) fn read_rib<R>(&self, f: impl FnOnce(&Rib) -> R) -> R {
        f(&relock(&self.rib))
    }

    /// True while a restarting speaker defers its first advertisement.
    pub(crate) fn deferring(&self) -> bool {
        self.deferring.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct PeerEntry {
    config: PeerConfig,
    commands: mpsc::Sender<Command>,
    shared: Arc<Mutex<PeerShared>>,
    task: TaskHandle,
}

#[derive(Debug)]
pub(crate) struct Shared {
    peers: Mutex<HashMap<IpAddr, PeerEntry>>,
}

impl Shared {
    fn peers(&self) -> MutexGuard<'_, HashMap<IpAddr, PeerEntry>> {
        relock(&self.peers)
    }

    /// The command channel of the peer at `address`, if configured.
    pub(crate) fn commands_for(&self, address: IpAddr) -> Option<mpsc::Sender<Command>> {
        self.peers().get(&address).map(|e| e.commands.clone())
    }
}

/// A running BGP speaker. Dropping it aborts every task without notifying peers; call
/// [`Speaker::shutdown`] to stop cleanly.
#[derive(Debug)]
pub struct Speaker {
    shared: Arc<Shared>,
    ctx: SpeakerContext,
    originated: Mutex<BTreeMap<Prefix, Origination>>,
    local_addr: Option<SocketAddr>,
    /// The listening socket, for per-peer TCP-MD5 keys.
    listen_fd: Option<OwnedFd>,
    _listener: Option<TaskHandle>,
    _deferral: Option<TaskHandle>,
}

/// Addresses as one peer is known by: IPv4-mapped IPv6 addresses become IPv4.
pub(crate) fn canonical(addr: IpAddr) -> IpAddr {
    addr.to_canonical()
}

impl Speaker {
    /// Binds the listener (if any) and starts the speaker with no peers.
    pub async fn start(config: SpeakerConfig) -> Result<Speaker, SpeakerError> {
        let (events, _) = broadcast::channel(4096);
        let rib = Rib::new(RibConfig {
            router_id: config.router_id,
            local_as: config.local_as,
            cluster_id: config.cluster_id,
            next_hop_v4: config.next_hop_v4,
            next_hop_v6: config.next_hop_v6,
            restarting: config.restarting,
        });
        let ctx = SpeakerContext {
            deferring: Arc::new(AtomicBool::new(config.restarting)),
            config: Arc::new(config),
            rib: Arc::new(Mutex::new(rib)),
            events,
            wakers: Arc::new(Mutex::new(HashMap::new())),
        };
        // The deferral of a restarting speaker ends when the awaited End-of-RIBs are in; this
        // is only its upper bound.
        let deferral = ctx.config.restarting.then(|| {
            let ctx = ctx.clone();
            TaskHandle::spawn(async move {
                tokio::time::sleep(ctx.config.selection_deferral).await;
                if ctx.deferring() {
                    tracing::warn!("selection deferral timer expired before every End-of-RIB");
                }
                ctx.with_rib(Rib::end_deferral);
            })
        });
        let shared = Arc::new(Shared {
            peers: Mutex::new(HashMap::new()),
        });
        let (listener, local_addr, listen_fd) = match ctx.config.listen {
            Some(addr) => {
                let (task, bound, fd) = listener::spawn(addr, Arc::clone(&shared))
                    .map_err(|source| SpeakerError::Listen { addr, source })?;
                (Some(task), Some(bound), Some(fd))
            }
            None => (None, None, None),
        };
        Ok(Speaker {
            shared,
            ctx,
            originated: Mutex::new(BTreeMap::new()),
            local_addr,
            listen_fd,
            _listener: listener,
            _deferral: deferral,
        })
    }

    /// The address the listener is bound to (with the actual port when 0 was asked for).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The speaker's configuration.
    pub fn config(&self) -> &SpeakerConfig {
        &self.ctx.config
    }

    /// Adds a peer and starts its session task.
    pub fn add_peer(&self, config: PeerConfig) -> Result<(), SpeakerError> {
        let config = PeerConfig {
            address: canonical(config.address),
            ..config
        };
        let mut peers = self.shared.peers();
        if peers.contains_key(&config.address) {
            return Err(SpeakerError::PeerExists(config.address));
        }
        self.set_listener_key(config.address, config.password.as_deref())?;
        let entry = self.spawn_peer(config)?;
        peers.insert(entry.config.address, entry);
        Ok(())
    }

    /// Sets (or with `None` removes) the TCP-MD5 key of `address` on the listener.
    fn set_listener_key(
        &self,
        address: IpAddr,
        password: Option<&str>,
    ) -> Result<(), SpeakerError> {
        let Some(fd) = &self.listen_fd else {
            return Ok(());
        };
        let err = |source| SpeakerError::Password { address, source };
        match password {
            Some(p) => md5::set_key(fd, address, &md5::Md5Key::new(p).map_err(err)?).map_err(err),
            None => md5::clear_key(fd, address).map_err(err),
        }
    }

    fn spawn_peer(&self, config: PeerConfig) -> Result<PeerEntry, SpeakerError> {
        let address = config.address;
        let fsm_config = session::fsm_config(&self.ctx.config, &config);
        fsm_config
            .validate()
            .map_err(|source| SpeakerError::Config { address, source })?;
        let (commands, commands_rx) = mpsc::channel(16);
        let shared = Arc::new(Mutex::new(PeerShared::new(&config)));
        let waker = Arc::new(Notify::new());
        let task = session::spawn(
            config.clone(),
            self.ctx.clone(),
            Arc::clone(&shared),
            commands_rx,
            Arc::clone(&waker),
        )
        .map_err(|source| SpeakerError::Config { address, source })?;
        relock(&self.ctx.wakers).insert(address, waker);
        Ok(PeerEntry {
            config,
            commands,
            shared,
            task,
        })
    }

    /// Changes a peer's configuration. A change that affects the session resets it with a
    /// CEASE "Other Configuration Change" (RFC 4486); other peers are not touched.
    pub async fn update_peer(&self, config: PeerConfig) -> Result<(), SpeakerError> {
        let config = PeerConfig {
            address: canonical(config.address),
            ..config
        };
        let address = config.address;
        let fsm_config = session::fsm_config(&self.ctx.config, &config);
        fsm_config
            .validate()
            .map_err(|source| SpeakerError::Config { address, source })?;
        let commands = {
            let mut peers = self.shared.peers();
            let entry = peers
                .get_mut(&address)
                .ok_or(SpeakerError::NoSuchPeer(address))?;
            if entry.config == config {
                return Ok(());
            }
            if entry.config.password != config.password {
                self.set_listener_key(address, config.password.as_deref())?;
            }
            entry.config = config.clone();
            entry.commands.clone()
        };
        // The task only ends when the entry is removed; a send error means it is gone anyway.
        let _ = commands.send(Command::Reconfigure(Box::new(config))).await;
        Ok(())
    }

    /// Removes a peer: its session gets a CEASE "Peer De-configured" (RFC 4486) and its
    /// task ends; other peers are not touched.
    pub async fn remove_peer(&self, address: IpAddr) -> Result<(), SpeakerError> {
        let address = canonical(address);
        let entry = self
            .shared
            .peers()
            .remove(&address)
            .ok_or(SpeakerError::NoSuchPeer(address))?;
        relock(&self.ctx.wakers).remove(&address);
        if entry.config.password.is_some() {
            if let Err(error) = self.set_listener_key(address, None) {
                tracing::warn!(%error, "cannot remove the TCP-MD5 key of a removed peer");
            }
        }
        // RFC 8538: a Hard Reset when the peer would otherwise keep our routes as stale.
        stop_peer(
            entry,
            Stop::Hard(Notification::cease(cease::PEER_DECONFIGURED)),
        )
        .await;
        self.ctx.with_rib(|rib| rib.remove_peer(address));
        Ok(())
    }

    /// Stops every session and ends the speaker, so that peers doing graceful restart keep
    /// our routes while we restart: a CEASE "Administrative Shutdown" to peers that
    /// exchanged the Graceful Notification bit (RFC 8538) or that do no graceful restart at
    /// all, and a close without NOTIFICATION to peers that do graceful restart only after
    /// a lost connection (RFC 4724 §4.2). The kernel routes of the node stay in place.
    pub async fn shutdown(self) {
        let entries: Vec<PeerEntry> = self.shared.peers().drain().map(|(_, e)| e).collect();
        let stops = entries.into_iter().map(|e| stop_peer(e, Stop::Graceful));
        futures_join_all(stops).await;
    }

    /// Originates `prefix` towards every Established peer, with `next_hop` or (when `None`)
    /// the session's own address. Replaces an earlier origination of the same prefix.
    pub fn originate(&self, prefix: Prefix, next_hop: Option<IpAddr>) {
        self.originate_with(
            prefix,
            Origination {
                next_hop: next_hop.map(canonical),
                ..Origination::default()
            },
        );
    }

    /// Originates `prefix` with the given next hop and communities; replaces an earlier
    /// origination of it (and does nothing when it is the same).
    pub fn originate_with(&self, prefix: Prefix, origination: Origination) {
        {
            let mut originated = relock(&self.originated);
            if originated.get(&prefix) == Some(&origination) {
                return;
            }
            originated.insert(prefix, origination.clone());
        }
        self.ctx.with_rib(|rib| rib.originate(prefix, &origination));
    }

    /// Stops originating `prefix`. Returns false if it was not originated.
    pub fn withdraw(&self, prefix: Prefix) -> bool {
        let removed = relock(&self.originated).remove(&prefix).is_some();
        if removed {
            self.ctx.with_rib(|rib| rib.withdraw(prefix));
        }
        removed
    }

    /// The originated prefixes.
    pub fn originated(&self) -> Vec<(Prefix, Option<IpAddr>)> {
        relock(&self.originated)
            .iter()
            .map(|(p, o)| (*p, o.next_hop))
            .collect()
    }

    /// A stream of the changes of every prefix's multipath set: what the kernel should
    /// forward by. A receiver that falls behind gets `Lagged` and should resynchronise from
    /// [`Speaker::selected`].
    pub fn subscribe(&self) -> broadcast::Receiver<Selected> {
        self.ctx.events.subscribe()
    }

    /// The multipath set of every prefix learned from peers, in prefix order.
    pub fn selected(&self) -> Vec<Selected> {
        self.ctx.read_rib(Rib::selected)
    }

    /// The whole table: every prefix with its paths, best first.
    pub fn table(&self) -> Vec<(Prefix, Vec<Path>)> {
        self.ctx.read_rib(Rib::table)
    }

    /// Number of prefixes in the table.
    pub fn prefixes(&self) -> usize {
        self.ctx.read_rib(Rib::len)
    }

    /// Number of distinct attribute sets the table holds (interned once each).
    pub fn attribute_sets(&self) -> usize {
        self.ctx.read_rib(Rib::attribute_sets)
    }

    /// True while a restarting speaker waits for its peers' End-of-RIB before advertising
    /// (and before the routes it kept in the kernel may be replaced by what it learned).
    pub fn deferring(&self) -> bool {
        self.ctx.read_rib(Rib::deferring)
    }

    /// True when the peer's session is up and its End-of-RIB arrived for every family.
    pub fn end_of_rib_received(&self, address: IpAddr) -> bool {
        self.ctx
            .read_rib(|rib| rib.end_of_rib_received(canonical(address)))
    }

    /// Asks the peer to send its routes again (ROUTE-REFRESH, RFC 2918). Returns false when
    /// the peer is not configured.
    pub async fn refresh(&self, address: IpAddr) -> bool {
        let Some(commands) = self.shared.commands_for(canonical(address)) else {
            return false;
        };
        commands.send(Command::Refresh).await.is_ok()
    }

    /// Snapshots of every peer, by address.
    pub fn peers(&self) -> Vec<PeerStatus> {
        let mut all: Vec<PeerStatus> = self
            .shared
            .peers()
            .values()
            .map(|e| session::lock(&e.shared).status.clone())
            .collect();
        all.sort_by_key(|s| s.address);
        all
    }

    /// Snapshot of one peer.
    pub fn peer(&self, address: IpAddr) -> Option<PeerStatus> {
        let peers = self.shared.peers();
        peers
            .get(&canonical(address))
            .map(|e| session::lock(&e.shared).status.clone())
    }

    /// The routes a peer announced (its Adj-RIB-In), in prefix order.
    pub fn routes(&self, address: IpAddr) -> Option<Vec<ReceivedRoute>> {
        let address = canonical(address);
        if !self.shared.peers().contains_key(&address) {
            return None;
        }
        Some(self.ctx.read_rib(|rib| rib.received(address)))
    }
}

/// How a session task stops.
#[derive(Debug, Clone)]
pub(crate) enum Stop {
    /// Send this NOTIFICATION, as a Hard Reset (RFC 8538) when the Graceful Notification
    /// bit was exchanged.
    Hard(Notification),
    /// Let the peer keep our routes for a graceful restart (see [`Speaker::shutdown`]).
    Graceful,
}

async fn stop_peer(entry: PeerEntry, how: Stop) {
    let PeerEntry { commands, task, .. } = entry;
    if commands.send(Command::Stop(how)).await.is_ok() {
        task.join(STOP_GRACE).await;
    }
}

/// Awaits every future concurrently (a small stand-in for `futures::future::join_all`).
async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(
    futures: impl IntoIterator<Item = F>,
) {
    let mut set = tokio::task::JoinSet::new();
    for f in futures {
        set.spawn(f);
    }
    while set.join_next().await.is_some() {}
}
