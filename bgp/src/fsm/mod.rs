//! The BGP session state machine of RFC 4271 §8, sans-IO.
//!
//! A [`Peer`] is everything tabby knows about one configured neighbour: its configuration,
//! the (up to two) TCP connections that exist towards it, and the timers. It does no I/O and
//! reads no clock: the shell feeds it events (a connection came up, a message arrived, a
//! connection closed) together with `now`, asks [`Peer::poll_timeout`] when to call
//! [`Peer::handle_timeout`] next, and drains [`Action`]s with [`Peer::poll_action`]
//! (connect, send a message, close a connection, the session is up, the session went down).
//! The shape is quinn-proto's `Connection`.
//!
//! # Connections and states
//!
//! RFC 4271 describes one FSM per TCP connection and lets two of them exist at once for a
//! peer until collision detection (§6.8) keeps one. Here the [`Peer`] owns at most two
//! connections, each identified by a [`ConnId`] the peer allocates, one initiated by us
//! ([`Direction::Outgoing`]) and one by the remote side ([`Direction::Incoming`]).
//! The state the peer reports ([`Peer::state`]) is the RFC state of its most advanced
//! connection: `Connect` while an outgoing connection is being set up, `OpenSent`,
//! `OpenConfirm` and `Established` as the OPEN exchange progresses; with no connection it is
//! `Active` (waiting for the ConnectRetry timer or an incoming connection) or `Idle`
//! (stopped, or holding back after a failure).
//!
//! # Back-off
//!
//! In the spirit of the DampPeerOscillations option (RFC 4271 §8.1.1), each session attempt
//! that fails after a connection was made (an OPEN refused, a NOTIFICATION, a hold timer, a
//! lost Established session) sends the peer to `Idle` for an IdleHold time that starts at
//! [`Timers::idle_hold`] and doubles with each consecutive failure up to
//! [`Timers::idle_hold_max`]. A session that stays Established for [`Timers::stable`]
//! resets the count. Connections that simply fail to connect are retried every
//! [`Timers::connect_retry`], as the ConnectRetry timer of §8.2.2 prescribes.

use crate::prefix::Family;
use crate::wire::{
    code, fsm as fsm_error, open_error, AddPath, AddPathMode, Capability, Context, GracefulRestart,
    Message, Notification, Open, RouteRefresh, Update, AS_TRANS,
};
use std::collections::VecDeque;
use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

#[cfg(test)]
mod tests;

/// Session states (RFC 4271 §8.2.2), with the RFC's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum State {
    /// Not trying: stopped, or holding back after a failure.
    Idle,
    /// A TCP connection to the peer is being set up.
    Connect,
    /// Waiting for the peer to connect, or for the ConnectRetry timer.
    Active,
    /// OPEN sent, waiting for the peer's OPEN.
    OpenSent,
    /// OPENs exchanged, waiting for the peer's KEEPALIVE.
    OpenConfirm,
    /// The session is up: UPDATEs flow.
    Established,
}

impl State {
    /// The RFC 4271 name of the state.
    pub fn name(self) -> &'static str {
        match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::Active => "Active",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Identifies one TCP connection of a [`Peer`]; allocated by the peer, unique for its
/// lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// Who initiated a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Direction {
    /// We connected to the peer.
    Outgoing,
    /// The peer connected to us.
    Incoming,
}

/// Timer settings of a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timers {
    /// ConnectRetryTime: how long an outgoing connection may take, and how long to wait
    /// before the next one after a failure (RFC 4271 §10 suggests 120 s; routers use less).
    pub connect_retry: Duration,
    /// The hold timer of OpenSent (RFC 4271 §8.2.2 suggests 4 minutes).
    pub open_hold: Duration,
    /// IdleHold time after the first failed session attempt.
    pub idle_hold: Duration,
    /// Largest IdleHold time the back-off reaches.
    pub idle_hold_max: Duration,
    /// How long a session must stay Established to reset the back-off.
    pub stable: Duration,
}

impl Default for Timers {
    fn default() -> Timers {
        Timers {
            connect_retry: Duration::from_secs(5),
            open_hold: Duration::from_secs(240),
            idle_hold: Duration::from_secs(5),
            idle_hold_max: Duration::from_secs(120),
            stable: Duration::from_secs(60),
        }
    }
}

/// What the state machine needs to know about the local speaker and the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Our AS.
    pub local_as: u32,
    /// Our BGP Identifier.
    pub router_id: Ipv4Addr,
    /// The AS the peer must announce.
    pub remote_as: u32,
    /// Never initiate a connection; only accept the peer's.
    pub passive: bool,
    /// The hold time we propose, in seconds: 0, or 3 and more.
    pub hold_time: u16,
    /// Families advertised with the multiprotocol capability.
    pub families: Vec<Family>,
    /// Advertise graceful restart (RFC 4724) with this restart time in seconds (at most 4095).
    pub graceful_restart: Option<u16>,
    /// Set the Restart State bit: we restarted and defer our first advertisement (RFC 4724
    /// §4.1). Changes take effect on the next OPEN.
    pub restarting: bool,
    /// Set the Graceful Notification bit (RFC 8538): a NOTIFICATION other than a Hard Reset
    /// also starts a graceful restart.
    pub graceful_notification: bool,
    /// Advertise extended messages (RFC 8654).
    pub extended_message: bool,
    /// ADD-PATH (RFC 7911) modes we advertise, per family.
    pub add_path: Vec<(Family, AddPathMode)>,
    /// Timer settings.
    pub timers: Timers,
}

impl Config {
    /// A configuration with the defaults tabby uses: hold time 90 s, IPv4 and IPv6 unicast,
    /// graceful restart with 120 s, extended messages, no ADD-PATH, default timers.
    pub fn new(local_as: u32, router_id: Ipv4Addr, remote_as: u32) -> Config {
        Config {
            local_as,
            router_id,
            remote_as,
            passive: false,
            hold_time: 90,
            families: Family::ALL.to_vec(),
            graceful_restart: Some(120),
            restarting: false,
            graceful_notification: true,
            extended_message: true,
            add_path: Vec::new(),
            timers: Timers::default(),
        }
    }

    /// True when the peer is in another AS.
    pub fn is_ebgp(&self) -> bool {
        self.local_as != self.remote_as
    }

    /// Checks the values a peer cannot work with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if matches!(self.hold_time, 1 | 2) {
            return Err(ConfigError::HoldTime(self.hold_time));
        }
        if self.router_id.is_unspecified() {
            return Err(ConfigError::RouterId);
        }
        if self.local_as == 0 {
            return Err(ConfigError::Asn(self.local_as));
        }
        if self.remote_as == 0 {
            return Err(ConfigError::Asn(self.remote_as));
        }
        if self.families.is_empty() {
            return Err(ConfigError::NoFamily);
        }
        Ok(())
    }
}

/// A peer configuration the state machine refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The hold time is 1 or 2 seconds (RFC 4271 §4.2 allows 0 or at least 3).
    #[error("hold time {0} s is not allowed: use 0 or at least 3 s (RFC 4271 §4.2)")]
    HoldTime(u16),
    /// The router id is 0.0.0.0 (RFC 6286 §2.1).
    #[error("router id 0.0.0.0 is not a valid BGP Identifier")]
    RouterId,
    /// An AS number is 0 (RFC 7607).
    #[error("AS number {0} is not valid")]
    Asn(u32),
    /// No address family is enabled.
    #[error("no address family enabled for the peer")]
    NoFamily,
}

/// What a session negotiated, handed over when it reaches Established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The connection carrying the session.
    pub conn: ConnId,
    /// Who initiated that connection.
    pub direction: Direction,
    /// Negotiated hold time in seconds; 0: no hold timer and no keepalives.
    pub hold_time: u16,
    /// Keepalive interval in seconds (a third of the hold time; 0 when the hold time is 0).
    pub keepalive_time: u16,
    /// The codec context of the session.
    pub context: Context,
    /// Families both sides advertised (IPv4 unicast alone when the peer sent no
    /// multiprotocol capability, RFC 4760 §8).
    pub families: Vec<Family>,
    /// The peer's BGP Identifier.
    pub peer_id: Ipv4Addr,
    /// The peer's AS.
    pub peer_as: u32,
    /// The capabilities the peer advertised.
    pub peer_capabilities: Vec<Capability>,
}

/// Why a session (or a session attempt) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// The peer sent this NOTIFICATION.
    NotificationReceived(Notification),
    /// We sent this NOTIFICATION (an error we found, a timer, or a stop).
    NotificationSent(Notification),
    /// The TCP connection closed or failed.
    ConnectionLost,
}

impl fmt::Display for DownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownReason::NotificationReceived(n) => write!(f, "received NOTIFICATION: {n}"),
            DownReason::NotificationSent(n) => write!(f, "sent NOTIFICATION: {n}"),
            DownReason::ConnectionLost => f.write_str("connection lost"),
        }
    }
}

/// What the shell must do, in order.
// Actions live briefly in a queue; boxing every sent message would cost more than it saves.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to the peer, then report [`Peer::connected`] or
    /// [`Peer::connect_failed`].
    Connect(ConnId),
    /// Send a message on a connection.
    Send(ConnId, Message),
    /// Close a connection after what was sent on it is flushed; forget the id.
    Close(ConnId),
    /// The session reached Established.
    Established(Box<Session>),
    /// An UPDATE arrived on the Established session.
    Update(ConnId, Box<Update>),
    /// A ROUTE-REFRESH arrived on the Established session.
    RouteRefresh(ConnId, RouteRefresh),
    /// The peer fell back to Idle or Active from OpenSent or a later state.
    Down {
        /// Why.
        reason: DownReason,
        /// The session had reached Established (received routes must be flushed).
        was_established: bool,
    },
}

/// Per-connection state: the RFC states a connection passes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ConnState {
    Connecting,
    OpenSent,
    OpenConfirm,
    Established,
}

#[derive(Debug, Clone)]
struct Conn {
    id: ConnId,
    direction: Direction,
    state: ConnState,
    hold: Option<Instant>,
    keepalive: Option<Instant>,
    hold_time: u16,
    session: Option<Box<Session>>,
}

impl Conn {
    fn hold_duration(&self) -> Duration {
        Duration::from_secs(u64::from(self.hold_time))
    }

    fn keepalive_duration(&self) -> Duration {
        Duration::from_secs(u64::from(self.hold_time / 3).max(1))
    }

    fn restart_hold(&mut self, now: Instant) {
        self.hold = (self.hold_time > 0).then(|| now + self.hold_duration());
    }
}

/// One configured neighbour: the session FSM of RFC 4271 §8 over up to two connections.
#[derive(Debug)]
pub struct Peer {
    config: Config,
    enabled: bool,
    conns: Vec<Conn>,
    next_id: u64,
    /// The last connection id allocated when the current session came up: a connection with
    /// a higher id was opened after it (see `receive_open`).
    opened_before_session: u64,
    connect_retry: Option<Instant>,
    idle_hold: Option<Instant>,
    stable_at: Option<Instant>,
    failures: u32,
    actions: VecDeque<Action>,
}

impl Peer {
    /// A stopped peer (state Idle); [`Peer::start`] begins connecting or listening.
    pub fn new(config: Config) -> Result<Peer, ConfigError> {
        config.validate()?;
        Ok(Peer {
            config,
            enabled: false,
            conns: Vec::new(),
            next_id: 0,
            opened_before_session: 0,
            connect_retry: None,
            idle_hold: None,
            stable_at: None,
            failures: 0,
            actions: VecDeque::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The RFC 4271 state of the peer: that of its most advanced connection.
    pub fn state(&self) -> State {
        match self.conns.iter().map(|c| c.state).max() {
            Some(ConnState::Established) => State::Established,
            Some(ConnState::OpenConfirm) => State::OpenConfirm,
            Some(ConnState::OpenSent) => State::OpenSent,
            Some(ConnState::Connecting) => State::Connect,
            None if !self.enabled || self.idle_hold.is_some() => State::Idle,
            None => State::Active,
        }
    }

    /// The Established session, if there is one.
    pub fn session(&self) -> Option<&Session> {
        self.conns
            .iter()
            .filter(|c| c.state == ConnState::Established)
            .find_map(|c| c.session.as_deref())
    }

    /// The session negotiated on a connection in OpenConfirm (the peer's OPEN is known, the
    /// session not yet up), if there is one.
    pub fn opening(&self) -> Option<&Session> {
        self.conns
            .iter()
            .filter(|c| c.state == ConnState::OpenConfirm)
            .find_map(|c| c.session.as_deref())
    }

    /// Sets the Restart State bit of the OPENs sent from now on.
    pub fn set_restarting(&mut self, restarting: bool) {
        self.config.restarting = restarting;
    }

    /// Consecutive failed session attempts (drives the IdleHold back-off).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The OPEN we send (RFC 4271 §4.2, capabilities of RFC 5492).
    pub fn local_open(&self) -> Open {
        let c = &self.config;
        let mut capabilities: Vec<Capability> = c
            .families
            .iter()
            .map(|f| Capability::multiprotocol(*f))
            .collect();
        capabilities.push(Capability::RouteRefresh);
        capabilities.push(Capability::FourOctetAs(c.local_as));
        if let Some(restart_time) = c.graceful_restart {
            capabilities.push(Capability::GracefulRestart(GracefulRestart {
                restarting: c.restarting,
                notification: c.graceful_notification,
                restart_time: restart_time.min(0x0fff),
                // Forwarding state is always kept: the node agent leaves its kernel routes in
                // place across restarts, and a reflector is not on the forwarding path.
                families: c
                    .families
                    .iter()
                    .map(|f| {
                        let (afi, safi) = f.afi_safi();
                        (afi, safi, true)
                    })
                    .collect(),
            }));
        }
        if c.extended_message {
            capabilities.push(Capability::ExtendedMessage);
        }
        if !c.add_path.is_empty() {
            capabilities.push(Capability::AddPath(
                c.add_path
                    .iter()
                    .map(|(f, mode)| {
                        let (afi, safi) = f.afi_safi();
                        AddPath {
                            afi,
                            safi,
                            mode: *mode,
                        }
                    })
                    .collect(),
            ));
        }
        Open {
            version: 4,
            // RFC 6793 §4.1: AS_TRANS in the 2-octet field when the AS does not fit.
            my_as: u16::try_from(c.local_as).unwrap_or(AS_TRANS),
            hold_time: c.hold_time,
            bgp_id: c.router_id,
            capabilities,
        }
    }

    /// ManualStart (RFC 4271 §8.1.2): begin connecting (or, passive, accepting).
    pub fn start(&mut self, now: Instant) {
        if self.enabled {
            return;
        }
        self.enabled = true;
        self.idle_hold = None;
        self.begin(now);
    }

    /// ManualStop (RFC 4271 §8.1.2): sends `notification` (normally a CEASE of RFC 4486) on
    /// every connection past the TCP handshake, closes them all and stays Idle.
    pub fn stop(&mut self, notification: Notification) {
        let was_established = self.state() == State::Established;
        let mut sent = false;
        for conn in std::mem::take(&mut self.conns) {
            if conn.state >= ConnState::OpenSent {
                self.actions.push_back(Action::Send(
                    conn.id,
                    Message::Notification(notification.clone()),
                ));
                sent = true;
            }
            self.actions.push_back(Action::Close(conn.id));
        }
        if sent {
            self.actions.push_back(Action::Down {
                reason: DownReason::NotificationSent(notification),
                was_established,
            });
        }
        self.enabled = false;
        self.connect_retry = None;
        self.idle_hold = None;
        self.stable_at = None;
    }

    /// ManualStop without a NOTIFICATION: closes every connection and stays Idle. A peer
    /// that does graceful restart without RFC 8538 keeps our routes only when the session
    /// ends this way (RFC 4724 §4.2), so a restarting speaker stops its sessions so.
    pub fn stop_silently(&mut self) {
        let was_established = self.state() == State::Established;
        let had_session = self.conns.iter().any(|c| c.state >= ConnState::OpenSent);
        for conn in std::mem::take(&mut self.conns) {
            self.actions.push_back(Action::Close(conn.id));
        }
        if had_session {
            self.actions.push_back(Action::Down {
                reason: DownReason::ConnectionLost,
                was_established,
            });
        }
        self.enabled = false;
        self.connect_retry = None;
        self.idle_hold = None;
        self.stable_at = None;
    }

    /// The peer connected to us (TcpConnectionConfirmed). Returns the id of the new
    /// connection; when the peer is Idle the actions already hold its [`Action::Close`].
    pub fn incoming(&mut self, now: Instant) -> ConnId {
        let id = self.alloc();
        // RFC 4271 §8.2.2 Idle: connections are refused; this is what holds a flapping peer
        // back during IdleHold.
        if !self.enabled || self.idle_hold.is_some() {
            self.actions.push_back(Action::Close(id));
            return id;
        }
        // A newer connection from the peer supersedes an older one that never came up (the
        // peer gave up on it, e.g. after restarting).
        if let Some(pos) = self
            .conns
            .iter()
            .position(|c| c.direction == Direction::Incoming && c.state != ConnState::Established)
        {
            let old = self.conns.remove(pos);
            self.actions.push_back(Action::Close(old.id));
        }
        if self.conns.len() >= 2 {
            self.actions.push_back(Action::Close(id));
            return id;
        }
        self.conns.push(Conn {
            id,
            direction: Direction::Incoming,
            state: ConnState::Connecting,
            hold: None,
            keepalive: None,
            hold_time: 0,
            session: None,
        });
        self.open_sent(id, now);
        id
    }

    /// An outgoing connection came up (Tcp_CR_Acked).
    pub fn connected(&mut self, conn: ConnId, now: Instant) {
        if self
            .find(conn)
            .is_some_and(|i| self.conns[i].state == ConnState::Connecting)
        {
            self.open_sent(conn, now);
        }
    }

    /// An outgoing connection could not be set up (TcpConnectionFails in Connect): the peer
    /// becomes Active and retries when the ConnectRetry timer expires (RFC 4271 §8.2.2).
    pub fn connect_failed(&mut self, conn: ConnId, now: Instant) {
        if let Some(i) = self.find(conn) {
            self.conns.remove(i);
            if !self.has_open_conn() && self.enabled && self.idle_hold.is_none() {
                self.connect_retry = Some(now + self.config.timers.connect_retry);
            }
        }
    }

    /// A connection closed or failed (TcpConnectionFails).
    pub fn closed(&mut self, conn: ConnId, now: Instant) {
        let Some(i) = self.find(conn) else { return };
        match self.conns[i].state {
            ConnState::Connecting => self.connect_failed(conn, now),
            // RFC 4271 §8.2.2 OpenSent: TcpConnectionFails -> Active, ConnectRetry restarted.
            ConnState::OpenSent => {
                self.conns.remove(i);
                if !self.has_open_conn() {
                    self.actions.push_back(Action::Down {
                        reason: DownReason::ConnectionLost,
                        was_established: false,
                    });
                    self.close_all();
                    if self.enabled && !self.config.passive {
                        self.connect_retry = Some(now + self.config.timers.connect_retry);
                    }
                }
            }
            ConnState::OpenConfirm | ConnState::Established => {
                self.fail(i, None, DownReason::ConnectionLost, now);
            }
        }
    }

    /// A message arrived on a connection (already decoded with the connection's context).
    pub fn handle_message(&mut self, conn: ConnId, message: Message, now: Instant) {
        let Some(i) = self.find(conn) else { return };
        let state = self.conns[i].state;
        match (state, message) {
            (ConnState::Connecting, _) => {}
            (_, Message::Notification(n)) => {
                self.fail(i, None, DownReason::NotificationReceived(n), now);
            }
            (ConnState::OpenSent, Message::Open(open)) => self.receive_open(i, open, now),
            (ConnState::OpenSent, _) => {
                let n = Notification::new(code::FSM, fsm_error::UNEXPECTED_IN_OPENSENT, Vec::new());
                self.fail(i, Some(n.clone()), DownReason::NotificationSent(n), now);
            }
            (ConnState::OpenConfirm, Message::Keepalive) => self.establish(i, now),
            (ConnState::OpenConfirm, _) => {
                let n =
                    Notification::new(code::FSM, fsm_error::UNEXPECTED_IN_OPENCONFIRM, Vec::new());
                self.fail(i, Some(n.clone()), DownReason::NotificationSent(n), now);
            }
            (ConnState::Established, Message::Keepalive) => self.conns[i].restart_hold(now),
            (ConnState::Established, Message::Update(update)) => {
                self.conns[i].restart_hold(now);
                self.actions
                    .push_back(Action::Update(conn, Box::new(update)));
            }
            (ConnState::Established, Message::RouteRefresh(rr)) => {
                self.conns[i].restart_hold(now);
                self.actions.push_back(Action::RouteRefresh(conn, rr));
            }
            (ConnState::Established, Message::Open(_)) => {
                let n =
                    Notification::new(code::FSM, fsm_error::UNEXPECTED_IN_ESTABLISHED, Vec::new());
                self.fail(i, Some(n.clone()), DownReason::NotificationSent(n), now);
            }
        }
    }

    /// A message on a connection could not be decoded; `notification` is the error the codec
    /// reported (BGPHeaderErr, BGPOpenMsgErr, UpdateMsgErr of RFC 4271 §8.1.5). It is sent
    /// and the connection is closed.
    pub fn protocol_error(&mut self, conn: ConnId, notification: Notification, now: Instant) {
        let Some(i) = self.find(conn) else { return };
        if self.conns[i].state == ConnState::Connecting {
            return;
        }
        let reason = DownReason::NotificationSent(notification.clone());
        self.fail(i, Some(notification), reason, now);
    }

    /// The next instant [`Peer::handle_timeout`] must be called at, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let conn_timers = self.conns.iter().flat_map(|c| [c.hold, c.keepalive]);
        [self.connect_retry, self.idle_hold, self.stable_at]
            .into_iter()
            .chain(conn_timers)
            .flatten()
            .min()
    }

    /// Runs the timers that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Hold timers first: a dead connection must not send a keepalive.
        while let Some(i) = self
            .conns
            .iter()
            .position(|c| c.hold.is_some_and(|t| t <= now))
        {
            // RFC 4271 §6.5: Hold Timer Expired, no subcode.
            let n = Notification::new(code::HOLD_TIMER_EXPIRED, 0, Vec::new());
            self.fail(i, Some(n.clone()), DownReason::NotificationSent(n), now);
        }
        for conn in &mut self.conns {
            if conn.keepalive.is_some_and(|t| t <= now) {
                self.actions
                    .push_back(Action::Send(conn.id, Message::Keepalive));
                conn.keepalive = Some(now + conn.keepalive_duration());
            }
        }
        if self.stable_at.is_some_and(|t| t <= now) {
            self.stable_at = None;
            self.failures = 0;
        }
        if self.idle_hold.is_some_and(|t| t <= now) {
            // AutomaticStart after the IdleHold time (RFC 4271 §8.1.1).
            self.idle_hold = None;
            if self.enabled {
                self.begin(now);
            }
        }
        if self.connect_retry.is_some_and(|t| t <= now) {
            self.connect_retry = None;
            if self.enabled && !self.has_open_conn() {
                // RFC 4271 §8.2.2 Connect/Active: ConnectRetryTimer_Expires: drop the
                // connection being set up and initiate a new one.
                let stale: Vec<ConnId> = self.conns.iter().map(|c| c.id).collect();
                self.conns.clear();
                for id in stale {
                    self.actions.push_back(Action::Close(id));
                }
                self.begin(now);
            }
        }
    }

    /// The next action for the shell, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn alloc(&mut self) -> ConnId {
        self.next_id += 1;
        ConnId(self.next_id)
    }

    fn find(&self, conn: ConnId) -> Option<usize> {
        self.conns.iter().position(|c| c.id == conn)
    }

    /// Some connection is past the TCP handshake.
    fn has_open_conn(&self) -> bool {
        self.conns.iter().any(|c| c.state >= ConnState::OpenSent)
    }

    /// Leaves Idle: connect (active mode) or wait for the peer (passive mode).
    fn begin(&mut self, now: Instant) {
        if self.config.passive || self.has_open_conn() {
            return;
        }
        if self
            .conns
            .iter()
            .any(|c| c.direction == Direction::Outgoing)
        {
            return;
        }
        let id = self.alloc();
        self.conns.push(Conn {
            id,
            direction: Direction::Outgoing,
            state: ConnState::Connecting,
            hold: None,
            keepalive: None,
            hold_time: 0,
            session: None,
        });
        self.actions.push_back(Action::Connect(id));
        self.connect_retry = Some(now + self.config.timers.connect_retry);
    }

    /// The TCP connection is up: send OPEN, arm the large hold timer of OpenSent.
    fn open_sent(&mut self, conn: ConnId, now: Instant) {
        let open = self.local_open();
        let open_hold = self.config.timers.open_hold;
        if let Some(i) = self.find(conn) {
            let c = &mut self.conns[i];
            c.state = ConnState::OpenSent;
            c.hold = Some(now + open_hold);
            self.actions
                .push_back(Action::Send(conn, Message::Open(open)));
            self.connect_retry = None;
        }
    }

    /// OPEN validation (RFC 4271 §6.2, RFC 6793 §4.1, RFC 6286 §2.2).
    fn validate_open(&self, open: &Open) -> Result<(), Notification> {
        if open.version != 4 {
            // The data is the largest version we support.
            return Err(Notification::new(
                code::OPEN_MESSAGE,
                open_error::UNSUPPORTED_VERSION,
                4u16.to_be_bytes(),
            ));
        }
        // With the 4-octet AS capability the real AS is in the capability and the 2-octet
        // field holds AS_TRANS (or the same AS); without it, a 4-octet AS cannot be matched
        // because the field holds AS_TRANS.
        let asn = open.asn();
        if asn != self.config.remote_as {
            let data = match u16::try_from(asn) {
                Ok(two) => two.to_be_bytes().to_vec(),
                Err(_) => asn.to_be_bytes().to_vec(),
            };
            return Err(Notification::new(
                code::OPEN_MESSAGE,
                open_error::BAD_PEER_AS,
                data,
            ));
        }
        let id_clash = !self.config.is_ebgp() && open.bgp_id == self.config.router_id;
        if open.bgp_id.is_unspecified() || id_clash {
            return Err(Notification::new(
                code::OPEN_MESSAGE,
                open_error::BAD_BGP_IDENTIFIER,
                open.bgp_id.octets(),
            ));
        }
        if matches!(open.hold_time, 1 | 2) {
            return Err(Notification::new(
                code::OPEN_MESSAGE,
                open_error::UNACCEPTABLE_HOLD_TIME,
                Vec::new(),
            ));
        }
        Ok(())
    }

    fn receive_open(&mut self, i: usize, open: Open, now: Instant) {
        if let Err(n) = self.validate_open(&open) {
            self.fail(i, Some(n.clone()), DownReason::NotificationSent(n), now);
            return;
        }
        let id = self.conns[i].id;
        // RFC 4271 §6.8: collision detection against a connection whose peer identifier is
        // known (OpenConfirm) or that is already Established.
        let other = self
            .conns
            .iter()
            .find(|c| c.id != id && c.state >= ConnState::OpenConfirm)
            .map(|c| (c.id, c.state, c.direction));
        if let Some((other_id, other_state, other_direction)) = other {
            let restarted = open
                .capabilities
                .iter()
                .any(|c| matches!(c, Capability::GracefulRestart(gr) if gr.restarting));
            // A connection that already existed when the session came up is one side of a
            // collision race, not the peer back from a restart: a peer that is still in its
            // restart (a route reflector deferring its first advertisement, say) sends the
            // Restart State bit on both of its racing connections, and taking the second for a
            // restart would close the connection the peer keeps.
            let opened_after_session = id.0 > self.opened_before_session;
            let loser =
                if other_state == ConnState::Established && restarted && opened_after_session {
                    // RFC 4724 §4.2: the peer restarted (Restart State bit): its old session is
                    // gone; the new connection replaces it.
                    other_id
                } else if other_direction == self.conns[i].direction {
                    other_id
                } else if u32::from(self.config.router_id) < u32::from(open.bgp_id) {
                    // The connection initiated by the higher BGP Identifier survives.
                    if self.conns[i].direction == Direction::Outgoing {
                        id
                    } else {
                        other_id
                    }
                } else if self.conns[i].direction == Direction::Incoming {
                    id
                } else {
                    other_id
                };
            // Against an Established connection the BGP Identifier rule applies too (RFC 4271
            // §6.8 allows it, "CollisionDetectEstablishedState"): when both sides raced, one
            // may have reached Established on the connection the other resolved against;
            // both following the rule keeps the same connection on both sides, where closing
            // "the newly created connection" would leave none.
            if let Some(j) = self.find(loser) {
                let conn = self.conns.remove(j);
                if conn.state == ConnState::Established && restarted && opened_after_session {
                    self.actions.push_back(Action::Close(conn.id));
                } else {
                    let cease =
                        Notification::cease(crate::wire::cease::CONNECTION_COLLISION_RESOLUTION);
                    self.actions
                        .push_back(Action::Send(conn.id, Message::Notification(cease)));
                    self.actions.push_back(Action::Close(conn.id));
                }
                if conn.state == ConnState::Established {
                    // The session ends; the surviving connection brings up the next one. For
                    // graceful restart this is a lost connection (RFC 4724 §4.2).
                    self.actions.push_back(Action::Down {
                        reason: DownReason::ConnectionLost,
                        was_established: true,
                    });
                    self.stable_at = None;
                }
            }
            if loser == id {
                return;
            }
        }
        let Some(i) = self.find(id) else { return };
        let session = self.negotiate(&self.conns[i], open);
        let c = &mut self.conns[i];
        c.hold_time = session.hold_time;
        c.state = ConnState::OpenConfirm;
        c.restart_hold(now);
        c.keepalive = (c.hold_time > 0).then(|| now + c.keepalive_duration());
        c.session = Some(session);
        self.actions.push_back(Action::Send(id, Message::Keepalive));
    }

    fn negotiate(&self, conn: &Conn, open: Open) -> Box<Session> {
        let c = &self.config;
        // RFC 4271 §4.2: the smaller of the two hold times; 0 stays 0.
        let hold_time = c.hold_time.min(open.hold_time);
        let has = |f: &dyn Fn(&Capability) -> bool| open.capabilities.iter().any(f);
        let four_octet_as = has(&|c| matches!(c, Capability::FourOctetAs(_)));
        let extended_message =
            c.extended_message && has(&|c| matches!(c, Capability::ExtendedMessage));
        let peer_mp: Vec<Family> = open
            .capabilities
            .iter()
            .filter_map(|cap| match cap {
                Capability::Multiprotocol { afi, safi } => Family::from_afi_safi(*afi, *safi),
                _ => None,
            })
            .collect();
        let peer_has_mp = has(&|c| matches!(c, Capability::Multiprotocol { .. }));
        let families: Vec<Family> = c
            .families
            .iter()
            .copied()
            .filter(|f| {
                if peer_has_mp {
                    peer_mp.contains(f)
                } else {
                    // RFC 4760 §8: a speaker without the capability does IPv4 unicast.
                    *f == Family::Ipv4Unicast
                }
            })
            .collect();
        // RFC 7911 §4: we receive path ids where we can receive and the peer can send.
        let peer_add_path: Vec<AddPath> = open
            .capabilities
            .iter()
            .filter_map(|cap| match cap {
                Capability::AddPath(entries) => Some(entries.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        let mut add_path_receive = Vec::new();
        let mut add_path_send = Vec::new();
        for (family, mode) in &c.add_path {
            let (afi, safi) = family.afi_safi();
            let Some(theirs) = peer_add_path
                .iter()
                .find(|e| e.afi == afi && e.safi == safi)
                .map(|e| e.mode)
            else {
                continue;
            };
            let can = |m: AddPathMode, want: AddPathMode| m == want || m == AddPathMode::Both;
            if can(*mode, AddPathMode::Receive) && can(theirs, AddPathMode::Send) {
                add_path_receive.push(*family);
            }
            if can(*mode, AddPathMode::Send) && can(theirs, AddPathMode::Receive) {
                add_path_send.push(*family);
            }
        }
        Box::new(Session {
            conn: conn.id,
            direction: conn.direction,
            hold_time,
            keepalive_time: hold_time / 3,
            context: Context {
                four_octet_as,
                extended_message,
                add_path_receive,
                add_path_send,
                extended_next_hop: false,
                ebgp: c.is_ebgp(),
            },
            families,
            peer_id: open.bgp_id,
            peer_as: open.asn(),
            peer_capabilities: open.capabilities,
        })
    }

    /// OpenConfirm + KEEPALIVE: the session is up.
    fn establish(&mut self, i: usize, now: Instant) {
        let c = &mut self.conns[i];
        c.state = ConnState::Established;
        c.restart_hold(now);
        if let Some(session) = c.session.clone() {
            self.actions.push_back(Action::Established(session));
        }
        self.stable_at = Some(now + self.config.timers.stable);
        self.opened_before_session = self.next_id;
        // An outgoing connection still in its TCP handshake (its SYN lost to a full accept
        // queue, say) would reach the peer after the session is up: an RFC 4271 §6.8 peer
        // closes it, and a graceful-restart helper such as BIRD takes it for our restart and
        // ends the Established session. The peer has seen nothing of it yet: drop it.
        let mut i = 0;
        while i < self.conns.len() {
            let c = &self.conns[i];
            if c.direction == Direction::Outgoing && c.state == ConnState::Connecting {
                let id = c.id;
                self.conns.remove(i);
                self.actions.push_back(Action::Close(id));
            } else {
                i += 1;
            }
        }
    }

    /// Closes every connection without a word (they are not past the TCP handshake, or the
    /// NOTIFICATION has been queued already).
    fn close_all(&mut self) {
        for conn in std::mem::take(&mut self.conns) {
            self.actions.push_back(Action::Close(conn.id));
        }
    }

    /// Ends connection `i`, sending `notification` first when given. When no other
    /// connection is past the TCP handshake (or `i` carried the Established session) the
    /// peer falls back: every connection closes, the back-off grows and the peer
    /// waits in Idle for the IdleHold time.
    fn fail(
        &mut self,
        i: usize,
        notification: Option<Notification>,
        reason: DownReason,
        now: Instant,
    ) {
        let conn = self.conns.remove(i);
        if let Some(n) = notification {
            self.actions
                .push_back(Action::Send(conn.id, Message::Notification(n)));
        }
        self.actions.push_back(Action::Close(conn.id));
        let was_established = conn.state == ConnState::Established;
        if self.has_open_conn() {
            // Another connection is on its way to a session (a collision's survivor, or the
            // peer reconnecting): let it go on.
            if was_established {
                self.actions.push_back(Action::Down {
                    reason,
                    was_established,
                });
                self.stable_at = None;
            }
            return;
        }
        self.close_all();
        let collision = is_collision_loss(&reason);
        self.actions.push_back(Action::Down {
            reason,
            was_established,
        });
        self.stable_at = None;
        self.connect_retry = None;
        if collision {
            // Both sides resolved one collision against different connections (one had
            // already reached Established on the connection the other dropped, RFC 4271
            // §6.8): neither is left, and nothing is wrong with the peer. Try again at once.
            if self.enabled {
                self.idle_hold = Some(now);
            }
            return;
        }
        self.failures = self.failures.saturating_add(1);
        if self.enabled {
            let t = &self.config.timers;
            let shift = (self.failures - 1).min(16);
            let hold = t.idle_hold.saturating_mul(1 << shift).min(t.idle_hold_max);
            self.idle_hold = Some(now + hold);
        }
    }
}

/// A session lost to the peer's connection collision resolution.
fn is_collision_loss(reason: &DownReason) -> bool {
    matches!(reason,
        DownReason::NotificationReceived(n) | DownReason::NotificationSent(n)
            if n.code == crate::wire::code::CEASE
                && n.subcode == crate::wire::cease::CONNECTION_COLLISION_RESOLUTION)
}
