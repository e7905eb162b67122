//! One task per configured peer: drives its [`fsm::Peer`](crate::fsm::Peer), owns its TCP
//! connections, hands what the peer sends to the [`Rib`](crate::rib::Rib), writes what the
//! RIB queued for the peer, runs the peer's graceful-restart and prefix-limit timers, and
//! publishes its status.

use super::task::TaskHandle;
use super::{canonical, md5, PeerConfig, PeerStatus, SpeakerConfig, SpeakerContext, Stop};
use crate::fsm::{self, Action, ConfigError, ConnId, DownReason, Peer, Session, State};
use crate::prefix::Family;
use crate::rib::{PeerKind, PeerRestart, PeerSession};
use crate::wire::{self, cease, code, Capability, Context, Message, Notification, RouteRefresh};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, Notify};
use tracing::Instrument;

/// Messages queued to one connection's writer.
const WRITE_QUEUE: usize = 64;
/// Route batches a session lets queue to its writer before it takes another from the table.
const BATCHES_QUEUED: usize = 1;
/// Bytes a connection's socket may hold that TCP has not sent yet (`TCP_NOTSENT_LOWAT`). The
/// kernel's send buffer otherwise grows to `tcp_wmem`'s maximum (4 MiB by default) with what a
/// slow peer has not taken, per connection, outside our accounting; what is not yet sent is
/// better left in the table, where a later change to a prefix replaces it. In-flight data is
/// not limited by this, so a long fat link still fills.
const NOTSENT_LOWAT: u32 = 128 * 1024;
/// Events from connection tasks to the session task.
const EVENT_QUEUE: usize = 256;
/// How long a connection's writer may stay full before a session is up.
const WRITE_STALL: Duration = Duration::from_secs(30);
/// How long closing connections may take to flush when the session stops.
const FLUSH_GRACE: Duration = Duration::from_secs(2);

/// What the speaker tells a session task.
#[derive(Debug)]
pub(crate) enum Command {
    /// The peer connected to us.
    Incoming(TcpStream),
    /// New configuration (boxed: a command channel allocates room for 32 commands).
    Reconfigure(Box<PeerConfig>),
    /// Ask the peer for its routes again (ROUTE-REFRESH).
    Refresh,
    /// Close everything and end the task.
    Stop(Stop),
}

/// What connection tasks tell the session task.
#[derive(Debug)]
enum ConnEvent {
    Connected(ConnId, TcpStream),
    ConnectFailed(ConnId, String),
    /// One whole message (header included).
    Message(ConnId, Vec<u8>),
    /// The header of the next message is bad (RFC 4271 §6.1).
    BadHeader(ConnId, Notification),
    Closed(ConnId, Option<String>),
}

/// What the speaker reads about a peer.
#[derive(Debug)]
pub(crate) struct PeerShared {
    pub(crate) status: PeerStatus,
}

impl PeerShared {
    pub(crate) fn new(config: &PeerConfig) -> PeerShared {
        PeerShared {
            status: PeerStatus {
                address: config.address,
                remote_as: config.remote_as,
                state: State::Idle,
                since: SystemTime::now(),
                received: 0,
                accepted: 0,
                stale: 0,
                advertised: 0,
                updates_received: 0,
                updates_sent: 0,
                established_count: 0,
                last_error: None,
                peer_id: None,
                local: None,
                families: Vec::new(),
                hold_time: None,
            },
        }
    }
}

/// Locks a peer's shared state (a poisoned lock still holds consistent snapshots).
pub(crate) fn lock(shared: &Mutex<PeerShared>) -> MutexGuard<'_, PeerShared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// The FSM configuration of a peer.
pub(crate) fn fsm_config(speaker: &SpeakerConfig, peer: &PeerConfig) -> fsm::Config {
    fsm::Config {
        passive: peer.passive,
        hold_time: peer.hold_time,
        families: peer.families.clone(),
        graceful_restart: speaker
            .graceful_restart
            .map(|t| peer.restart_time.unwrap_or(t)),
        restarting: speaker.restarting,
        timers: speaker.timers.clone(),
        ..fsm::Config::new(speaker.local_as, speaker.router_id, peer.remote_as)
    }
}

/// Starts the session task of a peer.
pub(crate) fn spawn(
    config: PeerConfig,
    ctx: SpeakerContext,
    shared: Arc<Mutex<PeerShared>>,
    commands: mpsc::Receiver<Command>,
    waker: Arc<Notify>,
) -> Result<TaskHandle, ConfigError> {
    let fsm = Peer::new(fsm_config(&ctx.config, &config))?;
    let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
    let task = SessionTask {
        config,
        ctx,
        shared,
        fsm,
        conns: HashMap::new(),
        closing: Vec::new(),
        events_tx,
        established: None,
        waker,
        opening: false,
        stale_until: None,
        restart_at: None,
        over_limit: false,
    };
    let span = tracing::info_span!("bgp_peer", peer = %task.config.address);
    Ok(TaskHandle::spawn(
        task.run(commands, events).instrument(span),
    ))
}

/// The I/O side of one connection.
#[derive(Debug, Default)]
struct ConnIo {
    connect: Option<TaskHandle>,
    reader: Option<TaskHandle>,
    writer: Option<(mpsc::Sender<Bytes>, TaskHandle)>,
    local: Option<SocketAddr>,
}

/// The Established session's facts.
#[derive(Debug)]
struct Up {
    conn: ConnId,
    session: Session,
    /// The peer's graceful restart capability.
    restart: Option<PeerRestart>,
}

struct SessionTask {
    config: PeerConfig,
    ctx: SpeakerContext,
    shared: Arc<Mutex<PeerShared>>,
    fsm: Peer,
    conns: HashMap<ConnId, ConnIo>,
    /// Writers of closed connections, flushing their last messages.
    closing: Vec<TaskHandle>,
    events_tx: mpsc::Sender<ConnEvent>,
    established: Option<Up>,
    /// Rung when the RIB queued something for this peer.
    waker: Arc<Notify>,
    /// The RIB knows we are in OpenConfirm.
    opening: bool,
    /// When the stale routes of the restarting peer go (its restart time, then the stale
    /// time once it is back).
    stale_until: Option<Instant>,
    /// When to start again after a prefix-limit CEASE.
    restart_at: Option<Instant>,
    /// The peer is over its prefix limit (warned once per crossing).
    over_limit: bool,
}

impl SessionTask {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::Receiver<ConnEvent>,
    ) {
        self.fsm.start(Instant::now());
        loop {
            self.fsm.set_restarting(self.ctx.deferring());
            self.run_actions().await;
            self.publish_state();
            self.closing.retain(|t| !t.is_finished());
            let deadline = [self.fsm.poll_timeout(), self.stale_until, self.restart_at]
                .into_iter()
                .flatten()
                .min();
            let sleep = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                    None => std::future::pending().await,
                }
            };
            let waker = Arc::clone(&self.waker);
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Incoming(stream)) => {
                        let id = self.fsm.incoming(Instant::now());
                        self.attach(id, stream);
                    }
                    Some(Command::Reconfigure(config)) => self.reconfigure(*config).await,
                    Some(Command::Refresh) => self.request_refresh().await,
                    Some(Command::Stop(how)) => {
                        self.stop(how).await;
                        return;
                    }
                    None => {
                        let n = Notification::cease(cease::ADMINISTRATIVE_SHUTDOWN);
                        self.stop(Stop::Hard(n)).await;
                        return;
                    }
                },
                Some(event) = events.recv() => self.handle_event(event),
                () = sleep => self.timeout(Instant::now()),
                () = waker.notified(), if self.established.is_some() => self.flush_outbox().await,
            }
        }
    }

    fn timeout(&mut self, now: Instant) {
        if self.stale_until.is_some_and(|t| t <= now) {
            self.stale_until = None;
            tracing::info!("restart or stale time of the peer ran out; dropping its stale routes");
            let address = self.config.address;
            self.ctx.with_rib(|rib| rib.sweep_stale(address, None));
            self.publish_counts();
        }
        if self.restart_at.is_some_and(|t| t <= now) {
            self.restart_at = None;
            tracing::info!("prefix-limit back-off over; starting the session again");
            self.fsm.start(now);
        }
        self.fsm.handle_timeout(now);
    }

    /// Ends the task. The speaker forgets the peer's routes afterwards unless it is shutting
    /// down as a whole.
    async fn stop(&mut self, how: Stop) {
        let restart = self.established.as_ref().and_then(|u| u.restart.clone());
        let graceful_notification = restart.as_ref().is_some_and(|r| r.notification)
            && self.ctx.config.graceful_restart.is_some();
        match how {
            Stop::Hard(n) => {
                let n = if graceful_notification {
                    Notification::hard_reset(&n)
                } else {
                    n
                };
                tracing::info!(reason = %n, "stopping session");
                self.fsm.stop(n);
            }
            Stop::Graceful if restart.is_some() && !graceful_notification => {
                // RFC 4724 §4.2: the peer keeps our routes only if the session ends without
                // a NOTIFICATION.
                tracing::info!("stopping session without NOTIFICATION for graceful restart");
                self.fsm.stop_silently();
            }
            Stop::Graceful => {
                let n = Notification::cease(cease::ADMINISTRATIVE_SHUTDOWN);
                tracing::info!(reason = %n, "stopping session");
                self.fsm.stop(n);
            }
        }
        self.run_actions().await;
        self.publish_state();
        for writer in std::mem::take(&mut self.closing) {
            writer.join(FLUSH_GRACE).await;
        }
    }

    /// RFC 2918: a ROUTE-REFRESH per family, when the peer advertised the capability.
    async fn request_refresh(&mut self) {
        let Some(up) = &self.established else { return };
        let supported = up
            .session
            .peer_capabilities
            .iter()
            .any(|c| matches!(c, Capability::RouteRefresh));
        if !supported {
            tracing::warn!("the peer did not advertise route refresh; not asking");
            return;
        }
        let conn = up.conn;
        let ctx = up.session.context.clone();
        let mut buf = BytesMut::new();
        for family in up.session.families.clone() {
            let (afi, safi) = family.afi_safi();
            let request = RouteRefresh {
                afi,
                subtype: 0,
                safi,
            };
            Message::RouteRefresh(request).encode(&ctx, &mut buf);
        }
        tracing::info!("sending ROUTE-REFRESH");
        self.send(conn, buf.freeze()).await;
    }

    async fn reconfigure(&mut self, config: PeerConfig) {
        if config == self.config {
            return;
        }
        tracing::info!("peer reconfigured, resetting the session");
        self.fsm
            .stop(Notification::cease(cease::OTHER_CONFIGURATION_CHANGE));
        self.run_actions().await;
        match Peer::new(fsm_config(&self.ctx.config, &config)) {
            Ok(fsm) => {
                self.fsm = fsm;
                self.config = config;
                self.over_limit = false;
                self.restart_at = None;
                lock(&self.shared).status.remote_as = self.config.remote_as;
                self.fsm.start(Instant::now());
            }
            Err(error) => {
                // The speaker validated the configuration before sending it.
                tracing::error!(%error, "new peer configuration refused; peer stays stopped");
            }
        }
    }

    fn handle_event(&mut self, event: ConnEvent) {
        let now = Instant::now();
        match event {
            ConnEvent::Connected(id, stream) => {
                if self.conns.contains_key(&id) {
                    self.attach(id, stream);
                    self.fsm.connected(id, now);
                }
            }
            ConnEvent::ConnectFailed(id, error) => {
                if self.conns.remove(&id).is_some() {
                    tracing::debug!(%error, "connect failed");
                    self.fsm.connect_failed(id, now);
                }
            }
            ConnEvent::Message(id, bytes) => self.receive(id, &bytes, now),
            ConnEvent::BadHeader(id, notification) => {
                if self.conns.contains_key(&id) {
                    self.fsm.protocol_error(id, notification, now);
                }
            }
            ConnEvent::Closed(id, error) => {
                if self.conns.contains_key(&id) {
                    tracing::debug!(?error, %id, "connection closed");
                    self.fsm.closed(id, now);
                }
            }
        }
    }

    /// The codec context of a connection: the negotiated one once Established.
    fn context(&self, id: ConnId) -> Context {
        match &self.established {
            Some(up) if up.conn == id => up.session.context.clone(),
            _ => Context::default(),
        }
    }

    fn receive(&mut self, id: ConnId, bytes: &[u8], now: Instant) {
        if !self.conns.contains_key(&id) {
            return;
        }
        let ctx = self.context(id);
        // The reader frames permissively; the length limit of the session applies here.
        if let Err(n) = wire::frame(bytes, &ctx) {
            self.fsm.protocol_error(id, n, now);
            return;
        }
        match Message::decode(bytes, &ctx) {
            Ok(message) => {
                if matches!(message, Message::Update(_)) {
                    lock(&self.shared).status.updates_received += 1;
                }
                self.fsm.handle_message(id, message, now);
            }
            Err(n) => {
                tracing::warn!(error = %n, "malformed message");
                self.fsm.protocol_error(id, n, now);
            }
        }
    }

    /// Starts the reader and writer of a connected stream.
    fn attach(&mut self, id: ConnId, stream: TcpStream) {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY not set");
        }
        if let Err(error) = socket2::SockRef::from(&stream).set_tcp_notsent_lowat(NOTSENT_LOWAT) {
            tracing::debug!(%error, "TCP_NOTSENT_LOWAT not set");
        }
        let local = stream
            .local_addr()
            .ok()
            .map(|a| SocketAddr::new(canonical(a.ip()), a.port()));
        let (read, write) = stream.into_split();
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let io = self.conns.entry(id).or_default();
        io.connect = None;
        io.local = local;
        io.reader = Some(TaskHandle::spawn(read_loop(
            id,
            read,
            self.events_tx.clone(),
        )));
        io.writer = Some((tx, TaskHandle::spawn(write_loop(write, rx))));
    }

    fn connect(&mut self, id: ConnId) {
        let remote = SocketAddr::new(self.config.address, self.config.port);
        let local = self.config.local_address.or(self.ctx.config.local_address);
        let limit = self.ctx.config.timers.connect_retry;
        let events = self.events_tx.clone();
        let password = self.config.password.clone();
        let task = TaskHandle::spawn(async move {
            let connecting = connect(remote, local, password.as_deref());
            let event = match tokio::time::timeout(limit, connecting).await {
                Ok(Ok(stream)) => ConnEvent::Connected(id, stream),
                Ok(Err(error)) => ConnEvent::ConnectFailed(id, error.to_string()),
                Err(_) => ConnEvent::ConnectFailed(id, "connect timed out".to_string()),
            };
            let _ = events.send(event).await;
        });
        self.conns.insert(
            id,
            ConnIo {
                connect: Some(task),
                ..ConnIo::default()
            },
        );
    }

    async fn send(&mut self, id: ConnId, bytes: Bytes) {
        let Some((tx, _)) = self.conns.get(&id).and_then(|io| io.writer.as_ref()) else {
            return;
        };
        let tx = tx.clone();
        let limit = self.stall_limit(id);
        if tokio::time::timeout(limit, tx.send(bytes)).await.is_err() {
            self.stalled(id, limit);
        }
    }

    /// Waits until the connection's writer has at most [`BATCHES_QUEUED`] messages queued;
    /// false when the connection is gone or stalled (and closed).
    async fn writer_drained(&mut self, id: ConnId) -> bool {
        let Some((tx, _)) = self.conns.get(&id).and_then(|io| io.writer.as_ref()) else {
            return false;
        };
        let tx = tx.clone();
        let limit = self.stall_limit(id);
        let room = tokio::time::timeout(limit, tx.reserve_many(WRITE_QUEUE - BATCHES_QUEUED))
            .await
            .map(|r| r.is_ok());
        match room {
            Ok(open) => open,
            Err(_) => {
                self.stalled(id, limit);
                false
            }
        }
    }

    /// How long a write may wait. Waiting is the back-pressure of a slow peer, but not for
    /// ever: while this task waits it runs no timers, so a peer that stops reading for longer
    /// than the hold time (or WRITE_STALL before a session is up) loses the connection, as if
    /// its hold timer had expired on our side.
    fn stall_limit(&self, id: ConnId) -> Duration {
        self.established
            .as_ref()
            .filter(|up| up.conn == id && up.session.hold_time > 0)
            .map_or(WRITE_STALL, |up| {
                Duration::from_secs(u64::from(up.session.hold_time))
            })
    }

    fn stalled(&mut self, id: ConnId, limit: Duration) {
        tracing::warn!(stalled_for = ?limit, "peer stopped reading; closing the connection");
        self.close(id);
        self.fsm.closed(id, Instant::now());
    }

    fn close(&mut self, id: ConnId) {
        if let Some(io) = self.conns.remove(&id) {
            // Dropping the sender lets the writer flush what is queued and shut the socket.
            if let Some((tx, writer)) = io.writer {
                drop(tx);
                self.closing.push(writer);
            }
        }
    }

    async fn run_actions(&mut self) {
        while let Some(action) = self.fsm.poll_action() {
            match action {
                Action::Connect(id) => self.connect(id),
                Action::Send(id, message) => {
                    if let Message::Notification(n) = &message {
                        tracing::info!(notification = %n, "sending NOTIFICATION");
                    }
                    let mut buf = BytesMut::new();
                    message.encode(&self.context(id), &mut buf);
                    self.send(id, buf.freeze()).await;
                }
                Action::Close(id) => self.close(id),
                Action::Established(session) => self.established(*session).await,
                Action::Update(_, update) => {
                    let address = self.config.address;
                    self.ctx.with_rib(|rib| rib.update(address, &update));
                    self.publish_counts();
                    self.check_prefix_limit();
                }
                Action::RouteRefresh(_, _) => {
                    // RFC 2918 §4: send the whole Adj-RIB-Out again.
                    let address = self.config.address;
                    self.ctx.with_rib(|rib| rib.refresh(address));
                }
                Action::Down {
                    reason,
                    was_established,
                } => self.down(reason, was_established),
            }
        }
    }

    /// The session (or an attempt) ended. A peer that does graceful restart keeps its
    /// routes, stale, for its restart time (RFC 4724 §4.2): after a lost connection, or
    /// after any NOTIFICATION but a Hard Reset when both sides set the Graceful
    /// Notification bit (RFC 8538 §3).
    fn down(&mut self, reason: DownReason, was_established: bool) {
        tracing::warn!(%reason, was_established, "session down");
        lock(&self.shared).status.last_error = Some(reason.to_string());
        let address = self.config.address;
        if self.opening {
            self.opening = false;
            self.ctx.with_rib(|rib| rib.peer_not_opening(address));
        }
        let up = self.established.take();
        if !was_established {
            return;
        }
        let keep = self.graceful_families(up.as_ref(), &reason);
        if keep.is_empty() {
            self.stale_until = None;
        } else {
            let restart_time = up
                .as_ref()
                .and_then(|u| u.restart.as_ref())
                .map_or(0, |r| r.restart_time);
            tracing::info!(
                restart_time,
                families = ?keep,
                "peer may be restarting; keeping its routes as stale"
            );
            self.stale_until = Some(Instant::now() + Duration::from_secs(u64::from(restart_time)));
        }
        self.ctx.with_rib(|rib| rib.peer_down(address, &keep));
        self.publish_counts();
    }

    /// The families whose routes stay for a graceful restart of the peer.
    fn graceful_families(&self, up: Option<&Up>, reason: &DownReason) -> Vec<Family> {
        let Some(up) = up else { return Vec::new() };
        let Some(restart) = &up.restart else {
            return Vec::new();
        };
        if restart.restart_time == 0 || self.ctx.config.graceful_restart.is_none() {
            return Vec::new();
        }
        let graceful = match reason {
            DownReason::ConnectionLost => true,
            DownReason::NotificationReceived(n) | DownReason::NotificationSent(n) => {
                restart.notification && !n.is_hard_reset()
            }
        };
        if !graceful {
            return Vec::new();
        }
        restart
            .families
            .iter()
            .map(|(f, _)| *f)
            .filter(|f| up.session.families.contains(f))
            .collect()
    }

    /// Applies the prefix limit after the peer's routes changed.
    fn check_prefix_limit(&mut self) {
        let Some(limit) = self.config.prefix_limit else {
            return;
        };
        let received = lock(&self.shared).status.received;
        if received <= u64::from(limit.max) {
            self.over_limit = false;
            return;
        }
        match limit.restart_after {
            None => {
                if !self.over_limit {
                    tracing::warn!(received, limit = limit.max, "peer exceeds its prefix limit");
                }
                self.over_limit = true;
            }
            Some(back_off) => {
                tracing::warn!(
                    received,
                    limit = limit.max,
                    ?back_off,
                    "peer exceeds its prefix limit; ending the session"
                );
                // RFC 4486 §4: AFI, SAFI and the limit as data. The limit counts every
                // family; the first one of the session is named.
                let family = self
                    .established
                    .as_ref()
                    .and_then(|u| u.session.families.first().copied())
                    .unwrap_or(Family::Ipv4Unicast);
                let (afi, safi) = family.afi_safi();
                let mut data = afi.to_be_bytes().to_vec();
                data.push(safi);
                data.extend_from_slice(&limit.max.to_be_bytes());
                self.fsm
                    .stop(Notification::new(code::CEASE, cease::MAX_PREFIXES, data));
                self.restart_at = Some(Instant::now() + back_off);
            }
        }
    }

    fn publish_counts(&self) {
        let address = self.config.address;
        let counts = self.ctx.read_rib(|rib| rib.counts(address));
        let mut shared = lock(&self.shared);
        shared.status.received = counts.received;
        shared.status.accepted = counts.accepted;
        shared.status.stale = counts.stale;
        shared.status.advertised = counts.advertised;
    }

    async fn established(&mut self, session: Session) {
        let local = self.conns.get(&session.conn).and_then(|io| io.local);
        let Some(local) = local else {
            // Cannot happen: the FSM only establishes attached connections.
            return;
        };
        tracing::info!(
            peer = %self.config.address,
            peer_id = %session.peer_id,
            hold_time = session.hold_time,
            families = ?session.families,
            "session Established"
        );
        {
            let mut shared = lock(&self.shared);
            let s = &mut shared.status;
            s.established_count += 1;
            s.peer_id = Some(session.peer_id);
            s.local = Some(local);
            s.families = session.families.clone();
            s.hold_time = Some(session.hold_time);
        }
        let restart = peer_restart(&session);
        let kind = if session.context.ebgp {
            PeerKind::External
        } else if self.config.rr_client && self.ctx.config.cluster_id.is_some() {
            PeerKind::Client
        } else {
            PeerKind::Internal
        };
        let peer = PeerSession {
            address: self.config.address,
            router_id: session.peer_id,
            remote_as: session.peer_as,
            kind,
            next_hop_mode: self.config.next_hop_mode,
            local_addr: local.ip(),
            families: session.families.clone(),
            restart: restart.clone(),
        };
        // Stale routes of a restart wait at most the stale time for the End-of-RIB.
        if self.stale_until.is_some() {
            self.stale_until = Some(Instant::now() + self.ctx.config.stale_time);
        }
        self.opening = false;
        self.established = Some(Up {
            conn: session.conn,
            session,
            restart,
        });
        self.ctx.with_rib(|rib| rib.peer_up(peer));
        self.publish_counts();
        self.flush_outbox().await;
    }

    /// Sends the next batch of what the RIB has for the peer. With more waiting, the task
    /// wakes itself rather than looping here, so that its timers and the peer's messages
    /// are served between batches.
    async fn flush_outbox(&mut self) {
        let Some(up) = &self.established else { return };
        let conn = up.conn;
        let ctx = up.session.context.clone();
        let address = self.config.address;
        // What a slow peer has not taken stays in the table, not in our queue: a batch is
        // taken only once the writer has at most a few messages left.
        if !self.writer_drained(conn).await {
            return;
        }
        let outbox = self
            .ctx
            .with_rib(|rib| rib.take_outbox(address, crate::rib::BATCH));
        if outbox.more {
            self.waker.notify_one();
        }
        if outbox.is_empty() {
            return;
        }
        let mut buf = BytesMut::new();
        let messages = outbox.encode(&ctx, &mut buf);
        drop(outbox);
        lock(&self.shared).status.updates_sent += messages as u64;
        self.publish_counts();
        self.send(conn, buf.freeze()).await;
    }

    fn publish_state(&mut self) {
        if !self.opening && self.established.is_none() {
            if let Some(session) = self.fsm.opening() {
                let restart = peer_restart(session);
                let address = self.config.address;
                self.opening = true;
                self.ctx
                    .with_rib(|rib| rib.peer_opening(address, restart.as_ref()));
            }
        }
        let state = self.fsm.state();
        let mut shared = lock(&self.shared);
        if shared.status.state != state {
            tracing::debug!(from = %shared.status.state, to = %state, "state change");
            shared.status.state = state;
            shared.status.since = SystemTime::now();
            if state != State::Established {
                shared.status.local = None;
                shared.status.hold_time = None;
                shared.status.families.clear();
            }
        }
    }
}

/// The graceful restart capability of the peer's OPEN, in the RIB's terms.
fn peer_restart(session: &Session) -> Option<PeerRestart> {
    session.peer_capabilities.iter().find_map(|c| match c {
        Capability::GracefulRestart(gr) => Some(PeerRestart {
            restart_time: gr.restart_time,
            restarting: gr.restarting,
            notification: gr.notification,
            families: gr
                .families
                .iter()
                .filter_map(|(afi, safi, fwd)| {
                    Family::from_afi_safi(*afi, *safi).map(|f| (f, *fwd))
                })
                .collect(),
        }),
        _ => None,
    })
}

/// Opens a TCP connection from `local` (port chosen by the kernel) to `remote`, signed with
/// TCP-MD5 when there is a password.
async fn connect(
    remote: SocketAddr,
    local: Option<IpAddr>,
    password: Option<&str>,
) -> std::io::Result<TcpStream> {
    let socket = match remote {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(password) = password {
        let key = md5::Md5Key::new(password).map_err(std::io::Error::other)?;
        md5::set_key(&socket, remote.ip(), &key).map_err(std::io::Error::other)?;
    }
    if let Some(local) = local.filter(|l| l.is_ipv4() == remote.is_ipv4()) {
        socket.bind(SocketAddr::new(local, 0))?;
    }
    socket.connect(remote).await
}

/// Reads messages and hands each whole one to the session task.
async fn read_loop(id: ConnId, mut read: OwnedReadHalf, events: mpsc::Sender<ConnEvent>) {
    // Frame with the largest length any session may use; the session task checks the
    // negotiated limit.
    let permissive = Context {
        extended_message: true,
        ..Context::default()
    };
    let mut buf = BytesMut::with_capacity(wire::MAX_MESSAGE_LEN);
    loop {
        match wire::frame(&buf, &permissive) {
            Ok(Some(len)) => {
                let message = buf.split_to(len).to_vec();
                if events.send(ConnEvent::Message(id, message)).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(None) => {}
            Err(notification) => {
                let _ = events.send(ConnEvent::BadHeader(id, notification)).await;
                return;
            }
        }
        let event = match read.read_buf(&mut buf).await {
            Ok(0) => ConnEvent::Closed(id, None),
            Ok(_) => continue,
            Err(error) => ConnEvent::Closed(id, Some(error.to_string())),
        };
        let _ = events.send(event).await;
        return;
    }
}

/// Writes what the session task queues; flushes and shuts the socket down when the queue
/// closes.
async fn write_loop(mut write: OwnedWriteHalf, mut queue: mpsc::Receiver<Bytes>) {
    while let Some(bytes) = queue.recv().await {
        if write.write_all(&bytes).await.is_err() {
            return;
        }
    }
    let _ = write.shutdown().await;
}
