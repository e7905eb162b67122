//! Light route reflector clients for `tabby bench reflector --light`: one task per session
//! that speaks just enough BGP (OPEN, KEEPALIVE, one UPDATE with its block) and counts the
//! blocks it receives in a bitset instead of keeping a table, so that thousands of clients fit
//! in one process (full speakers each hold the whole table: memory grows with N²). They do
//! not listen, so the reflector's own connection attempts are refused and the sessions are
//! the ones the clients open.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tabby_bgp::wire::{
    self, AsPath, Capability, Context, Message, NextHop, Nlri, Open, Origin, PathAttributes, Update,
};
use tabby_bgp::{Family, Prefix};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// What one client's session needs to know.
#[derive(Debug, Clone)]
pub(crate) struct LightSession {
    /// Client index (the owner of `block`).
    pub(crate) index: u32,
    /// Its address (session source, next hop of its block, router ID for IPv4).
    pub(crate) local: IpAddr,
    /// The router ID.
    pub(crate) router_id: std::net::Ipv4Addr,
    /// The reflector.
    pub(crate) reflector: IpAddr,
    /// Its block.
    pub(crate) block: Prefix,
    /// The family of the session.
    pub(crate) family: Family,
}

/// What a session saw.
#[derive(Debug, Default)]
struct Seen {
    /// Blocks received, by owner index.
    bits: Vec<u64>,
    count: u32,
    wrong_next_hops: u64,
    established_first: Option<SystemTime>,
    established: u32,
    converged: Option<SystemTime>,
    errors: BTreeMap<String, u64>,
}

/// Runs `sessions` (from `n` clients) until every one holds the blocks of all `n - 1` other
/// clients, or `timeout`; the same JSON shape as the full clients'.
pub(crate) async fn run(
    sessions: Vec<LightSession>,
    n: u32,
    timeout: Duration,
    owner: fn(&Prefix) -> Option<(u32, NextHop)>,
    started: SystemTime,
) -> anyhow::Result<Value> {
    let seen: Vec<Arc<Mutex<Seen>>> = sessions
        .iter()
        .map(|_| {
            Arc::new(Mutex::new(Seen {
                bits: vec![0; n.div_ceil(64) as usize],
                ..Seen::default()
            }))
        })
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (s, seen) in sessions.iter().cloned().zip(seen.iter().cloned()) {
        // No listener: with thousands of clients the descriptors run out (a listener and an
        // accepted connection per session on top of ours). The reflector's own connection
        // attempts are refused; it keeps the session the client opens.
        tasks.spawn(session_loop(s, seen, n, owner));
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let expected = n.saturating_sub(1);
    loop {
        let done = seen.iter().all(|s| lock(s).count >= expected);
        if done || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats: Vec<std::sync::MutexGuard<'_, Seen>> = seen.iter().map(|s| lock(s)).collect();
    let per_client = |f: &dyn Fn(&Seen) -> Option<SystemTime>| -> Vec<Option<SystemTime>> {
        let mut out: Vec<Option<SystemTime>> = vec![None; n as usize];
        let mut halves = vec![0u8; n as usize];
        for (s, st) in sessions.iter().zip(&stats) {
            let i = s.index as usize;
            halves[i] += 1;
            out[i] = match (out[i], f(st)) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (_, b) if halves[i] == 1 => b,
                _ => None,
            };
        }
        out
    };
    let done = per_client(&|s| s.converged);
    let converged = done.iter().filter(|d| d.is_some()).count();
    let firsts: Vec<Option<SystemTime>> = stats.iter().map(|s| s.established_first).collect();
    let first_up = firsts.iter().flatten().min().copied();
    let last_up = firsts.iter().flatten().max().copied();
    let last_done = done.iter().flatten().max().copied();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for st in &stats {
        for (e, c) in &st.errors {
            *errors.entry(e.clone()).or_default() += c;
        }
    }
    let since = |t: Option<SystemTime>| t.map(|t| seconds(started, t));
    let all_up = firsts.iter().all(Option::is_some);
    Ok(json!({
        "clients": n,
        "light_clients": true,
        "sessions": sessions.len(),
        "sessions_established": stats.iter().filter(|s| s.established > 0).count(),
        "session_flaps": stats.iter().map(|s| u64::from(s.established.saturating_sub(1))).sum::<u64>(),
        "session_errors": errors,
        "prefixes": 2 * n,
        "converged": converged == n as usize,
        "clients_converged": converged,
        "min_prefixes_held": stats.iter().map(|s| s.count).min().unwrap_or(0) * 2 + 2,
        "first_established_s": since(first_up),
        "last_established_s": since(last_up),
        "converged_at_s": since(last_done),
        "converge_s": match (last_up, last_done) {
            (Some(up), Some(done)) if converged == n as usize && all_up => Some(seconds(up, done)),
            _ => None,
        },
        "routes_checked": stats.iter().map(|s| u64::from(s.count)).sum::<u64>(),
        "routes_wrong": stats.iter().map(|s| s.wrong_next_hops).sum::<u64>(),
    }))
}

fn lock(s: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn seconds(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// Connects, and reconnects after a second when the session ends.
async fn session_loop(
    s: LightSession,
    seen: Arc<Mutex<Seen>>,
    n: u32,
    owner: fn(&Prefix) -> Option<(u32, NextHop)>,
) {
    loop {
        if let Err(e) = session(&s, &seen, n, owner).await {
            *lock(&seen).errors.entry(e.to_string()).or_default() += 1;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn session(
    s: &LightSession,
    seen: &Mutex<Seen>,
    n: u32,
    owner: fn(&Prefix) -> Option<(u32, NextHop)>,
) -> anyhow::Result<()> {
    let socket = match s.local {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(s.local, 0))?;
    let mut stream = socket
        .connect(SocketAddr::new(s.reflector, tabby_bgp::speaker::BGP_PORT))
        .await?;
    let ctx = Context {
        four_octet_as: true,
        ..Context::default()
    };
    let open = Open {
        version: 4,
        my_as: 64512,
        hold_time: 90,
        bgp_id: s.router_id,
        capabilities: vec![
            Capability::multiprotocol(s.family),
            Capability::FourOctetAs(64512),
        ],
    };
    let mut out = bytes::BytesMut::new();
    Message::Open(open).encode(&ctx, &mut out);
    Message::Keepalive.encode(&ctx, &mut out);
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
    Update::encode_announce(
        &ctx,
        s.family,
        &attrs,
        next_hop,
        &[Nlri::from(s.block)],
        &mut out,
    );
    stream.write_all(&out).await?;
    let mut buf = bytes::BytesMut::with_capacity(1 << 16);
    let mut keepalive = tokio::time::interval(Duration::from_secs(30));
    let expected = n.saturating_sub(1);
    let mut up = false;
    loop {
        while let Some(len) = wire::frame(&buf, &ctx).map_err(|e| anyhow::anyhow!("{e}"))? {
            let msg = buf.split_to(len);
            match Message::decode(&msg, &ctx).map_err(|e| anyhow::anyhow!("{e}"))? {
                Message::Open(_) => {}
                Message::Keepalive if !up => {
                    up = true;
                    let mut st = lock(seen);
                    st.established += 1;
                    st.established_first.get_or_insert_with(SystemTime::now);
                }
                Message::Update(u) => {
                    let mut st = lock(seen);
                    for (_, nh, nlri) in u.announced() {
                        let Some((i, want)) = owner(&nlri.prefix) else {
                            continue;
                        };
                        if nh != Some(want) {
                            st.wrong_next_hops += 1;
                        }
                        let (w, b) = ((i / 64) as usize, i % 64);
                        if let Some(word) = st.bits.get_mut(w) {
                            if *word & (1 << b) == 0 {
                                *word |= 1 << b;
                                st.count += 1;
                            }
                        }
                    }
                    if st.count >= expected && st.converged.is_none() {
                        st.converged = Some(SystemTime::now());
                    }
                }
                Message::Notification(n) => anyhow::bail!("received NOTIFICATION: {n}"),
                _ => {}
            }
        }
        tokio::select! {
            read = stream.read_buf(&mut buf) => {
                if read? == 0 {
                    anyhow::bail!("connection lost");
                }
            }
            _ = keepalive.tick() => {
                let mut k = bytes::BytesMut::new();
                Message::Keepalive.encode(&ctx, &mut k);
                stream.write_all(&k).await?;
            }
        }
    }
}
