//! The tokio shell around the [`fsm`](crate::fsm): a BGP speaker with a listener, one task
//! per configured peer, and the API the rest of tabby uses.
//!
//! ```text
//!                      Speaker (API: add/update/remove peer, originate/withdraw, status)
//!                        |  commands (bounded mpsc, per peer)        ^ status + Adj-RIB-In
//!                        v                                           | (shared snapshots)
//!  listener task --Incoming(stream)--> session task (one per peer: fsm::Peer, Adj-RIBs)
//!                                        |  ^ ConnEvent (bounded mpsc)      | RouteEvent
//!                                        v  |                              v (broadcast)
//!                   per connection: connect task, reader task, writer task (bounded mpsc)
//!  originated routes: watch channel from the Speaker to every session task
//! ```
//!
//! Every task is owned by a handle that aborts it on drop: the speaker owns the listener and
//! the session tasks; a session task owns its connections' tasks. Shutdown is a message: a
//! session task told to stop sends a CEASE, lets its writers flush, and returns.

mod listener;
mod rib;
mod session;
mod task;

pub use rib::{ReceivedRoute, RouteChange};

use crate::fsm::{ConfigError, State, Timers};
use crate::prefix::{Family, Prefix};
use crate::wire::{cease, Notification};
use session::{Command, PeerShared};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use task::TaskHandle;
use tokio::sync::{broadcast, mpsc, watch};

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
            timers: Timers::default(),
        }
    }
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
    /// Routes received and accepted (no import policy yet: equal to `received`).
    pub accepted: u64,
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

/// A change of some peer's Adj-RIB-In, as sent to [`Speaker::subscribe`]rs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEvent {
    /// The peer.
    pub peer: IpAddr,
    /// The change.
    pub change: RouteChange,
}

/// What every session task shares with the speaker.
#[derive(Debug, Clone)]
pub(crate) struct SpeakerContext {
    pub(crate) config: Arc<SpeakerConfig>,
    pub(crate) originated: watch::Receiver<Arc<Originated>>,
    pub(crate) events: broadcast::Sender<RouteEvent>,
}

/// Originated prefixes and their requested next hops.
pub(crate) type Originated = BTreeMap<Prefix, Option<IpAddr>>;

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
        // A poisoned lock only means a panic elsewhere; the map itself stays consistent.
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
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
    originated: watch::Sender<Arc<Originated>>,
    local_addr: Option<SocketAddr>,
    _listener: Option<TaskHandle>,
}

/// Addresses as one peer is known by: IPv4-mapped IPv6 addresses become IPv4.
pub(crate) fn canonical(addr: IpAddr) -> IpAddr {
    addr.to_canonical()
}

impl Speaker {
    /// Binds the listener (if any) and starts the speaker with no peers.
    pub async fn start(config: SpeakerConfig) -> Result<Speaker, SpeakerError> {
        let (originated, originated_rx) = watch::channel(Arc::new(Originated::new()));
        let (events, _) = broadcast::channel(4096);
        let ctx = SpeakerContext {
            config: Arc::new(config),
            originated: originated_rx,
            events,
        };
        let shared = Arc::new(Shared {
            peers: Mutex::new(HashMap::new()),
        });
        let (listener, local_addr) = match ctx.config.listen {
            Some(addr) => {
                let (task, bound) = listener::spawn(addr, Arc::clone(&shared))
                    .map_err(|source| SpeakerError::Listen { addr, source })?;
                (Some(task), Some(bound))
            }
            None => (None, None),
        };
        Ok(Speaker {
            shared,
            ctx,
            originated,
            local_addr,
            _listener: listener,
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
        let entry = self.spawn_peer(config)?;
        peers.insert(entry.config.address, entry);
        Ok(())
    }

    fn spawn_peer(&self, config: PeerConfig) -> Result<PeerEntry, SpeakerError> {
        let address = config.address;
        let fsm_config = session::fsm_config(&self.ctx.config, &config);
        fsm_config
            .validate()
            .map_err(|source| SpeakerError::Config { address, source })?;
        let (commands, commands_rx) = mpsc::channel(16);
        let shared = Arc::new(Mutex::new(PeerShared::new(&config)));
        let task = session::spawn(
            config.clone(),
            self.ctx.clone(),
            Arc::clone(&shared),
            commands_rx,
        )
        .map_err(|source| SpeakerError::Config { address, source })?;
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
            entry.config = config.clone();
            entry.commands.clone()
        };
        // The task only ends when the entry is removed; a send error means it is gone anyway.
        let _ = commands.send(Command::Reconfigure(config)).await;
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
        stop_peer(entry, Notification::cease(cease::PEER_DECONFIGURED)).await;
        Ok(())
    }

    /// Stops every session with a CEASE "Administrative Shutdown" (RFC 4486) and ends the
    /// speaker.
    pub async fn shutdown(self) {
        let entries: Vec<PeerEntry> = self.shared.peers().drain().map(|(_, e)| e).collect();
        let stops = entries
            .into_iter()
            .map(|e| stop_peer(e, Notification::cease(cease::ADMINISTRATIVE_SHUTDOWN)));
        futures_join_all(stops).await;
    }

    /// Originates `prefix` towards every Established peer, with `next_hop` or (when `None`)
    /// the session's own address. Replaces an earlier origination of the same prefix.
    pub fn originate(&self, prefix: Prefix, next_hop: Option<IpAddr>) {
        self.originated.send_modify(|o| {
            Arc::make_mut(o).insert(prefix, next_hop.map(canonical));
        });
    }

    /// Stops originating `prefix`. Returns false if it was not originated.
    pub fn withdraw(&self, prefix: Prefix) -> bool {
        let mut removed = false;
        self.originated.send_if_modified(|o| {
            removed = Arc::make_mut(o).remove(&prefix).is_some();
            removed
        });
        removed
    }

    /// The originated prefixes.
    pub fn originated(&self) -> Vec<(Prefix, Option<IpAddr>)> {
        self.originated
            .borrow()
            .iter()
            .map(|(p, nh)| (*p, *nh))
            .collect()
    }

    /// A stream of every change of every peer's Adj-RIB-In. A receiver that falls behind
    /// gets `Lagged` and should resynchronise from [`Speaker::routes`].
    pub fn subscribe(&self) -> broadcast::Receiver<RouteEvent> {
        self.ctx.events.subscribe()
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
        let peers = self.shared.peers();
        let entry = peers.get(&canonical(address))?;
        let shared = session::lock(&entry.shared);
        Some(shared.rib_in.routes().cloned().collect())
    }
}

async fn stop_peer(entry: PeerEntry, notification: Notification) {
    let PeerEntry { commands, task, .. } = entry;
    if commands.send(Command::Stop(notification)).await.is_ok() {
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
