//! Light BGP clients for the benchmarks (`tabby bench reflector --light`, `tabby bench rib`):
//! one task per session that speaks just enough BGP (OPEN with the multiprotocol and 4-octet
//! AS capabilities, KEEPALIVE, its own routes in packed UPDATEs and an End-of-RIB) and counts
//! the distinct prefixes it receives in a bitset instead of keeping a table. Thousands of
//! clients fit in one process (full speakers each hold the whole table: memory grows with
//! N²), and a million-route feed costs the clients little CPU, so that a benchmark measures
//! the reflector rather than its clients. They do not listen, so the reflector's own
//! connection attempts are refused and the sessions are the ones the clients open.
//!
//! Every prefix of a scenario has an index (its slot, given by [`Expect::owner`] together
//! with the next hop it must arrive with); a session's bitset has a bit per slot. The
//! prefixes a session announces itself are set from the start, so a session is complete
//! when all [`Expect::per_session`] bits are set, and records when that happened.

use bytes::{Buf, Bytes, BytesMut};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tabby_bgp::wire::{
    self, AsPath, Capability, Context, Message, NextHop, Nlri, Open, Origin, PathAttributes, Update,
};
use tabby_bgp::{Family, Prefix};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// A prefix's slot and the next hop it must be reflected with; `None`: not the scenario's.
pub(crate) type Owner = Arc<dyn Fn(&Prefix) -> Option<(u32, NextHop)> + Send + Sync>;

/// What every session of a run expects to receive.
#[derive(Clone)]
pub(crate) struct Expect {
    /// Every slot is below this.
    pub(crate) slots: u32,
    /// Distinct slots a session holds when complete (its own announced ones included).
    pub(crate) per_session: u32,
    /// The slot of a prefix and its expected next hop.
    pub(crate) owner: Owner,
}

/// What one client's session needs to know.
#[derive(Debug, Clone)]
pub(crate) struct LightSession {
    /// Client index (a client may have a session per family).
    pub(crate) index: u32,
    /// Its address (session source, next hop of what it announces).
    pub(crate) local: IpAddr,
    /// The router ID.
    pub(crate) router_id: Ipv4Addr,
    /// The reflector.
    pub(crate) reflector: IpAddr,
    /// The family of the session.
    pub(crate) family: Family,
    /// The hold time it offers; KEEPALIVEs go every third of it.
    pub(crate) hold_time: u16,
    /// What it announces, with `local` as the next hop.
    pub(crate) announce: Vec<Prefix>,
    /// Announce only once the session is Established (after the reflector's OPEN and
    /// KEEPALIVE), as fast as the socket takes it; otherwise right behind the OPEN.
    pub(crate) announce_when_established: bool,
}

/// What a session saw, as [`LightClients::snapshot`] returns it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Seen {
    /// The session's client index.
    pub(crate) index: u32,
    /// Distinct slots held (own announced ones included).
    pub(crate) count: u32,
    /// Announced NLRI received that are the scenario's, each checked for its next hop.
    pub(crate) checked: u64,
    /// Of those, the ones with another next hop.
    pub(crate) wrong_next_hops: u64,
    /// Announced NLRI received that are not the scenario's.
    pub(crate) unexpected: u64,
    /// Withdrawn NLRI received.
    pub(crate) withdrawn: u64,
    /// When the session first reached Established.
    pub(crate) established_first: Option<SystemTime>,
    /// How many times it reached Established.
    pub(crate) established: u32,
    /// It is Established now.
    pub(crate) up: bool,
    /// When it first held all it expects (cleared if a withdrawal takes one away).
    pub(crate) converged: Option<SystemTime>,
    /// Why sessions ended, and how often.
    pub(crate) errors: BTreeMap<String, u64>,
}

/// A session's state: what it saw and its bitset.
struct State {
    seen: Seen,
    bits: Vec<u64>,
    /// The bits of what it announces itself, and their number: where a new connection starts.
    own: (Vec<u64>, u32),
    per_session: u32,
}

impl State {
    /// Sets a slot's bit; true if it was clear.
    fn set(&mut self, slot: u32) -> bool {
        let (w, b) = ((slot / 64) as usize, slot % 64);
        match self.bits.get_mut(w) {
            Some(word) if *word & (1 << b) == 0 => {
                *word |= 1 << b;
                self.seen.count += 1;
                true
            }
            _ => false,
        }
    }

    fn announced(&mut self, expect: &Expect, prefix: &Prefix, next_hop: Option<NextHop>) {
        let Some((slot, want)) = (expect.owner)(prefix) else {
            self.seen.unexpected += 1;
            return;
        };
        self.seen.checked += 1;
        if next_hop != Some(want) {
            self.seen.wrong_next_hops += 1;
        }
        self.set(slot);
    }

    fn withdrawn(&mut self, expect: &Expect, prefix: &Prefix) {
        self.seen.withdrawn += 1;
        let Some((slot, _)) = (expect.owner)(prefix) else {
            return;
        };
        let (w, b) = ((slot / 64) as usize, slot % 64);
        if let Some(word) = self.bits.get_mut(w) {
            if *word & (1 << b) != 0 {
                *word &= !(1 << b);
                self.seen.count -= 1;
            }
        }
    }

    /// A new connection holds only what it announces: what a previous one received is gone
    /// with it (RFC 4271 §8.2.2, routes of a closed session are removed).
    fn restart(&mut self) {
        self.bits.clone_from(&self.own.0);
        self.seen.count = self.own.1;
        self.check_complete();
    }

    /// After a message: record completion, or forget it if a withdrawal undid it.
    fn check_complete(&mut self) {
        if self.seen.count >= self.per_session {
            self.seen.converged.get_or_insert_with(SystemTime::now);
        } else {
            self.seen.converged = None;
        }
    }
}

/// Running light client sessions; dropping it ends them.
pub(crate) struct LightClients {
    states: Vec<Arc<Mutex<State>>>,
    _tasks: tokio::task::JoinSet<()>,
}

impl LightClients {
    /// Encodes each session's UPDATEs (before any clock a caller starts at Established), then
    /// starts every session. Must be called within a tokio runtime.
    pub(crate) fn start(sessions: Vec<LightSession>, expect: &Expect) -> LightClients {
        let mut states = Vec::with_capacity(sessions.len());
        let mut tasks = tokio::task::JoinSet::new();
        for s in sessions {
            let mut state = State {
                seen: Seen {
                    index: s.index,
                    ..Seen::default()
                },
                bits: vec![0; expect.slots.div_ceil(64) as usize],
                own: (Vec::new(), 0),
                per_session: expect.per_session,
            };
            for p in &s.announce {
                if let Some((slot, _)) = (expect.owner)(p) {
                    state.set(slot);
                }
            }
            state.own = (state.bits.clone(), state.seen.count);
            state.check_complete();
            let state = Arc::new(Mutex::new(state));
            let updates = encode_updates(&s);
            // No listener: with thousands of clients the descriptors run out (a listener and
            // an accepted connection per session on top of ours). The reflector's own
            // connection attempts are refused; it keeps the session the client opens.
            tasks.spawn(session_loop(s, updates, Arc::clone(&state), expect.clone()));
            states.push(state);
        }
        LightClients {
            states,
            _tasks: tasks,
        }
    }

    /// What each session saw so far, in the order they were given.
    pub(crate) fn snapshot(&self) -> Vec<Seen> {
        self.states.iter().map(|s| lock(s).seen.clone()).collect()
    }

    /// Every session has been Established at least once.
    pub(crate) fn all_established(&self) -> bool {
        self.states
            .iter()
            .all(|s| lock(s).seen.established_first.is_some())
    }

    /// Every session holds all it expects.
    pub(crate) fn all_converged(&self) -> bool {
        self.states.iter().all(|s| lock(s).seen.converged.is_some())
    }

    /// Polls every 20 ms until every session holds all it expects; false at `deadline`.
    pub(crate) async fn wait_converged(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            if self.all_converged() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The session and route figures shared by the benchmarks' JSON, over `seen`.
pub(crate) fn totals(seen: &[Seen]) -> Value {
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for s in seen {
        for (e, c) in &s.errors {
            *errors.entry(e.clone()).or_default() += c;
        }
    }
    json!({
        "light_clients": true,
        "sessions": seen.len(),
        "sessions_established": seen.iter().filter(|s| s.up).count(),
        "session_flaps": seen.iter().map(|s| u64::from(s.established.saturating_sub(1))).sum::<u64>(),
        "session_errors": errors,
        "routes_checked": seen.iter().map(|s| s.checked).sum::<u64>(),
        "routes_wrong": seen.iter().map(|s| s.wrong_next_hops).sum::<u64>(),
        "routes_unexpected": seen.iter().map(|s| s.unexpected).sum::<u64>(),
        "routes_withdrawn": seen.iter().map(|s| s.withdrawn).sum::<u64>(),
    })
}

fn lock(s: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// The session's routes in maximally packed UPDATEs, then its End-of-RIB (RFC 4724 §2).
fn encode_updates(s: &LightSession) -> Bytes {
    let ctx = Context::modern();
    let attrs = PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::default()),
        local_pref: Some(100),
        ..PathAttributes::default()
    };
    let next_hop = match s.local {
        IpAddr::V4(a) => NextHop::V4(a),
        IpAddr::V6(a) => NextHop::V6 {
            global: a,
            link_local: None,
        },
    };
    let nlri: Vec<Nlri> = s.announce.iter().copied().map(Nlri::from).collect();
    let mut out = BytesMut::with_capacity(nlri.len() * 5 + 4096);
    if !nlri.is_empty() {
        Update::encode_announce(&ctx, s.family, &attrs, next_hop, &nlri, &mut out);
    }
    Message::Update(Update::end_of_rib(s.family)).encode(&ctx, &mut out);
    out.freeze()
}

/// Connects, and reconnects after a second when the session ends.
async fn session_loop(s: LightSession, updates: Bytes, state: Arc<Mutex<State>>, expect: Expect) {
    loop {
        let result = session(&s, &updates, &state, &expect).await;
        {
            let mut st = lock(&state);
            st.seen.up = false;
            if let Err(e) = result {
                *st.seen.errors.entry(e.to_string()).or_default() += 1;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn session(
    s: &LightSession,
    updates: &Bytes,
    state: &Mutex<State>,
    expect: &Expect,
) -> anyhow::Result<()> {
    let socket = match s.local {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(s.local, 0))?;
    let stream = socket
        .connect(SocketAddr::new(s.reflector, tabby_bgp::speaker::BGP_PORT))
        .await?;
    stream.set_nodelay(true)?;
    lock(state).restart();
    let (mut rd, mut wr) = stream.into_split();
    let ctx = Context::modern();
    let open = Open {
        version: 4,
        my_as: 64512,
        hold_time: s.hold_time,
        bgp_id: s.router_id,
        capabilities: vec![
            Capability::multiprotocol(s.family),
            Capability::FourOctetAs(64512),
        ],
    };
    let mut hello = BytesMut::new();
    Message::Open(open).encode(&ctx, &mut hello);
    Message::Keepalive.encode(&ctx, &mut hello);
    let keepalive = Bytes::from(Message::Keepalive.to_bytes(&ctx));

    // What to write, in order: a writer drains it while the reader goes on reading, so a
    // feeder's long write never stops it from reading. At most the hello, the UPDATEs and
    // KEEPALIVEs are queued; a KEEPALIVE that finds the queue full is not needed.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let _ = tx.try_send(hello.freeze());
    if !s.announce_when_established {
        let _ = tx.try_send(updates.clone());
    }
    let writer = async move {
        while let Some(b) = rx.recv().await {
            wr.write_all(&b).await?;
        }
        anyhow::Ok(())
    };
    let reader = async {
        let period = Duration::from_secs(u64::from(s.hold_time / 3).max(1));
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let mut buf = BytesMut::with_capacity(1 << 16);
        let mut up = false;
        loop {
            let mut at = 0;
            while let Some(len) =
                wire::frame(&buf[at..], &ctx).map_err(|e| anyhow::anyhow!("{e}"))?
            {
                let msg = &buf[at..at + len];
                at += len;
                match Message::decode(msg, &ctx).map_err(|e| anyhow::anyhow!("{e}"))? {
                    Message::Keepalive if !up => {
                        up = true;
                        let mut st = lock(state);
                        st.seen.established += 1;
                        st.seen.up = true;
                        st.seen
                            .established_first
                            .get_or_insert_with(SystemTime::now);
                        drop(st);
                        if s.announce_when_established {
                            let _ = tx.try_send(updates.clone());
                        }
                    }
                    Message::Update(u) => {
                        let mut st = lock(state);
                        for (_, nh, nlri) in u.announced() {
                            st.announced(expect, &nlri.prefix, nh);
                        }
                        for (_, nlri) in u.withdrawals() {
                            st.withdrawn(expect, &nlri.prefix);
                        }
                        st.check_complete();
                    }
                    Message::Notification(n) => anyhow::bail!("received NOTIFICATION: {n}"),
                    _ => {}
                }
            }
            buf.advance(at);
            if buf.capacity() - buf.len() < 8192 {
                buf.reserve(1 << 16);
            }
            tokio::select! {
                read = rd.read_buf(&mut buf) => {
                    if read? == 0 {
                        anyhow::bail!("connection lost");
                    }
                }
                _ = ticks.tick() => {
                    let _ = tx.try_send(keepalive.clone());
                }
            }
        }
    };
    tokio::select! {
        r = writer => r,
        r = reader => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slots are the last octet of 10.0.0.x/32, next hop 10.0.0.x.
    fn expect(slots: u32) -> Expect {
        Expect {
            slots,
            per_session: slots,
            owner: Arc::new(move |p: &Prefix| match p.addr() {
                IpAddr::V4(a) if u32::from(a.octets()[3]) < slots => {
                    Some((u32::from(a.octets()[3]), NextHop::V4(a)))
                }
                _ => None,
            }),
        }
    }

    fn host(i: u8) -> Prefix {
        Prefix::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)), 32).unwrap_or_else(|_| unreachable!())
    }

    fn state(expect: &Expect, own: &[u8]) -> State {
        let mut st = State {
            seen: Seen::default(),
            bits: vec![0; expect.slots.div_ceil(64) as usize],
            own: (Vec::new(), 0),
            per_session: expect.per_session,
        };
        for i in own {
            st.set(u32::from(*i));
        }
        st.own = (st.bits.clone(), st.seen.count);
        st
    }

    fn nh(i: u8) -> Option<NextHop> {
        Some(NextHop::V4(Ipv4Addr::new(10, 0, 0, i)))
    }

    #[test]
    fn a_session_converges_when_it_holds_every_slot_counting_each_once() {
        let e = expect(3);
        let mut st = state(&e, &[0]);
        st.announced(&e, &host(1), nh(1));
        st.announced(&e, &host(1), nh(1));
        st.check_complete();
        assert_eq!(st.seen.count, 2);
        assert!(st.seen.converged.is_none());
        st.announced(&e, &host(2), nh(2));
        st.check_complete();
        assert!(st.seen.converged.is_some());
        assert_eq!((st.seen.checked, st.seen.wrong_next_hops), (3, 0));
    }

    #[test]
    fn a_withdrawal_clears_its_slot_and_the_convergence() {
        let e = expect(2);
        let mut st = state(&e, &[0]);
        st.announced(&e, &host(1), nh(1));
        st.check_complete();
        assert!(st.seen.converged.is_some());
        st.withdrawn(&e, &host(1));
        st.withdrawn(&e, &host(1));
        st.check_complete();
        assert_eq!((st.seen.count, st.seen.withdrawn), (1, 2));
        assert!(st.seen.converged.is_none());
    }

    #[test]
    fn wrong_next_hops_and_foreign_prefixes_are_counted_apart() {
        let e = expect(2);
        let mut st = state(&e, &[]);
        st.announced(&e, &host(1), nh(7));
        st.announced(&e, &host(1), None);
        st.announced(&e, &host(9), nh(9));
        assert_eq!(st.seen.wrong_next_hops, 2);
        assert_eq!(st.seen.unexpected, 1);
        assert_eq!(st.seen.count, 1);
    }

    #[test]
    fn a_new_connection_holds_only_what_the_session_announces() {
        let e = expect(3);
        let mut st = state(&e, &[2]);
        st.announced(&e, &host(0), nh(0));
        st.announced(&e, &host(1), nh(1));
        st.check_complete();
        assert!(st.seen.converged.is_some());
        st.restart();
        assert_eq!(st.seen.count, 1);
        assert_eq!(st.bits, st.own.0);
        assert!(st.seen.converged.is_none());
    }
}
