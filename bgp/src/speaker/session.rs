//! One task per configured peer: drives its [`fsm::Peer`](crate::fsm::Peer), owns its TCP
//! connections, keeps its Adj-RIB-In and Adj-RIB-Out, and publishes its status.

use super::rib::{AdjRibIn, AdjRibOut, Outbound, RouteChange};
use super::task::TaskHandle;
use super::{
    canonical, Originated, PeerConfig, PeerStatus, RouteEvent, SpeakerConfig, SpeakerContext,
};
use crate::fsm::{self, Action, ConfigError, ConnId, Peer, Session, State};
use crate::wire::{self, cease, Context, Message, Notification};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tracing::Instrument;

/// Messages queued to one connection's writer.
const WRITE_QUEUE: usize = 64;
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
    /// New configuration.
    Reconfigure(PeerConfig),
    /// Send this NOTIFICATION (a CEASE), close everything, end the task.
    Stop(Notification),
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
    pub(crate) rib_in: AdjRibIn,
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
            rib_in: AdjRibIn::default(),
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
        graceful_restart: speaker.graceful_restart,
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
        rib_out: AdjRibOut::default(),
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

/// The Established session's I/O facts.
#[derive(Debug)]
struct Up {
    conn: ConnId,
    session: Session,
    outbound: Outbound,
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
    rib_out: AdjRibOut,
}

impl SessionTask {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::Receiver<ConnEvent>,
    ) {
        let mut originated = self.ctx.originated.clone();
        self.fsm.start(Instant::now());
        loop {
            self.run_actions().await;
            self.publish_state();
            self.closing.retain(|t| !t.is_finished());
            let deadline = self.fsm.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Incoming(stream)) => {
                        let id = self.fsm.incoming(Instant::now());
                        self.attach(id, stream);
                    }
                    Some(Command::Reconfigure(config)) => self.reconfigure(config).await,
                    Some(Command::Stop(notification)) => {
                        self.stop(notification).await;
                        return;
                    }
                    None => {
                        self.stop(Notification::cease(cease::ADMINISTRATIVE_SHUTDOWN)).await;
                        return;
                    }
                },
                Some(event) = events.recv() => self.handle_event(event),
                () = sleep => self.fsm.handle_timeout(Instant::now()),
                changed = originated.changed(), if self.established.is_some() => {
                    if changed.is_ok() {
                        self.sync_routes().await;
                    }
                }
            }
        }
    }

    async fn stop(&mut self, notification: Notification) {
        tracing::info!(reason = %notification, "stopping session");
        self.fsm.stop(notification);
        self.run_actions().await;
        self.publish_state();
        for writer in std::mem::take(&mut self.closing) {
            writer.join(FLUSH_GRACE).await;
        }
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
        let task = TaskHandle::spawn(async move {
            let event = match tokio::time::timeout(limit, connect(remote, local)).await {
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
        // Waiting here is the back-pressure of a slow peer, but not for ever: while this task
        // waits it runs no timers, so a peer that stops reading for longer than the hold time
        // (or WRITE_STALL before a session is up) loses the connection, as if its hold timer had
        // expired on our side.
        let limit = self
            .established
            .as_ref()
            .filter(|up| up.conn == id && up.session.hold_time > 0)
            .map_or(WRITE_STALL, |up| {
                Duration::from_secs(u64::from(up.session.hold_time))
            });
        let tx = tx.clone();
        if tokio::time::timeout(limit, tx.send(bytes)).await.is_err() {
            tracing::warn!(stalled_for = ?limit, "peer stopped reading; closing the connection");
            self.close(id);
            self.fsm.closed(id, Instant::now());
        }
    }

    fn close(&mut self, id: ConnId) {
        if let Some(io) = self.conns.remove(&id) {
            // Dropping the sender lets the writer flush what is queued and shut the socket.
            if let Some((tx, writer)) = io.writer {
                drop(tx);
                self.closing.push(writer);
            }
        }
        if self.established.as_ref().is_some_and(|up| up.conn == id) {
            self.established = None;
            self.rib_out.clear();
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
                    let families = self
                        .established
                        .as_ref()
                        .map(|up| up.session.families.clone())
                        .unwrap_or_default();
                    let changes = {
                        let mut shared = lock(&self.shared);
                        let changes = shared.rib_in.apply(&update, &families);
                        let n = shared.rib_in.len() as u64;
                        shared.status.received = n;
                        shared.status.accepted = n;
                        changes
                    };
                    self.publish(changes);
                }
                Action::RouteRefresh(_, _) => {
                    // RFC 2918 §4: send the whole Adj-RIB-Out again.
                    self.rib_out.clear();
                    self.sync_routes().await;
                }
                Action::Down {
                    reason,
                    was_established,
                } => {
                    tracing::warn!(%reason, was_established, "session down");
                    {
                        let mut shared = lock(&self.shared);
                        shared.status.last_error = Some(reason.to_string());
                        if was_established {
                            shared.rib_in.clear();
                            shared.status.received = 0;
                            shared.status.accepted = 0;
                            shared.status.advertised = 0;
                        }
                    }
                    if was_established {
                        self.publish(vec![RouteChange::Cleared]);
                    }
                    self.established = None;
                    self.rib_out.clear();
                }
            }
        }
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
        let outbound = Outbound {
            local_as: self.ctx.config.local_as,
            context: session.context.clone(),
            families: session.families.clone(),
            local_addr: local.ip(),
            next_hop_v4: self.ctx.config.next_hop_v4,
            next_hop_v6: self.ctx.config.next_hop_v6,
        };
        {
            let mut shared = lock(&self.shared);
            let s = &mut shared.status;
            s.established_count += 1;
            s.peer_id = Some(session.peer_id);
            s.local = Some(local);
            s.families = session.families.clone();
            s.hold_time = Some(session.hold_time);
        }
        let families = session.families.clone();
        let conn = session.conn;
        self.established = Some(Up {
            conn,
            session,
            outbound,
        });
        self.rib_out.clear();
        self.sync_routes().await;
        // RFC 4724 §2: End-of-RIB after the initial table, per family.
        let mut buf = BytesMut::new();
        let ctx = self.context(conn);
        for family in families {
            Message::Update(wire::Update::end_of_rib(family)).encode(&ctx, &mut buf);
        }
        self.send(conn, buf.freeze()).await;
    }

    /// Brings the peer's Adj-RIB-Out to the originated routes.
    async fn sync_routes(&mut self) {
        let Some(up) = &self.established else { return };
        let originated: Arc<Originated> = self.ctx.originated.borrow().clone();
        let mut buf = BytesMut::new();
        let messages = self.rib_out.sync(&up.outbound, &originated, &mut buf);
        let conn = up.conn;
        {
            let mut shared = lock(&self.shared);
            shared.status.updates_sent += messages as u64;
            shared.status.advertised = self.rib_out.len() as u64;
        }
        if !buf.is_empty() {
            self.send(conn, buf.freeze()).await;
        }
    }

    fn publish(&self, changes: Vec<RouteChange>) {
        for change in changes {
            // No subscriber is not an error.
            let _ = self.ctx.events.send(RouteEvent {
                peer: self.config.address,
                change,
            });
        }
    }

    fn publish_state(&self) {
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

/// Opens a TCP connection from `local` (port chosen by the kernel) to `remote`.
async fn connect(remote: SocketAddr, local: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = match remote {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
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
