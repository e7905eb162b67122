//! Speakers against each other over loopback addresses (127.0.0.x and ::1), on ephemeral
//! ports. Deadlines are generous: they bound a hang, they do not measure speed.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tabby_bgp::fsm::{State, Timers};
use tabby_bgp::speaker::{PeerConfig, Speaker, SpeakerConfig};
use tabby_bgp::wire::NextHop;
use tabby_bgp::Prefix;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(30);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn prefix(s: &str) -> Prefix {
    s.parse().unwrap()
}

async fn speaker(addr: &str, router_id: &str, asn: u32) -> Speaker {
    let mut config = SpeakerConfig::new(router_id.parse().unwrap(), asn);
    config.listen = Some(SocketAddr::new(ip(addr), 0));
    config.local_address = Some(ip(addr));
    config.timers = Timers {
        connect_retry: Duration::from_secs(1),
        idle_hold: Duration::from_secs(1),
        idle_hold_max: Duration::from_secs(4),
        ..Timers::default()
    };
    Speaker::start(config).await.unwrap()
}

/// The configuration for peering with `other` (its address and listening port).
fn peer_of(other: &Speaker, remote_as: u32) -> PeerConfig {
    let addr = other.local_addr().unwrap();
    PeerConfig {
        port: addr.port(),
        ..PeerConfig::new(addr.ip(), remote_as)
    }
}

fn addr_of(s: &Speaker) -> IpAddr {
    s.local_addr().unwrap().ip()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !check() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn state(s: &Speaker, peer: &Speaker) -> Option<State> {
    s.peer(addr_of(peer)).map(|p| p.state)
}

async fn with_timeout<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f).await.expect("deadline")
}

/// Two speakers peered with each other.
async fn pair(a: (&str, &str, u32), b: (&str, &str, u32)) -> (Speaker, Speaker) {
    let sa = speaker(a.0, a.1, a.2).await;
    let sb = speaker(b.0, b.1, b.2).await;
    sa.add_peer(peer_of(&sb, b.2)).unwrap();
    sb.add_peer(peer_of(&sa, a.2)).unwrap();
    eventually("both sessions are Established", || {
        state(&sa, &sb) == Some(State::Established) && state(&sb, &sa) == Some(State::Established)
    })
    .await;
    (sa, sb)
}

#[tokio::test]
async fn two_speakers_reach_established_over_loopback() {
    let (a, b) = pair(
        ("127.0.0.2", "10.0.0.2", 65000),
        ("127.0.0.3", "10.0.0.3", 65000),
    )
    .await;
    let status = a.peer(addr_of(&b)).unwrap();
    assert_eq!(status.peer_id, Some("10.0.0.3".parse().unwrap()));
    assert_eq!(status.established_count, 1);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn originated_prefix_appears_at_the_other_speaker_and_its_withdraw_is_seen() {
    let (a, b) = pair(
        ("127.0.0.4", "10.0.0.4", 65000),
        ("127.0.0.5", "10.0.0.5", 65000),
    )
    .await;
    let mut events = b.subscribe();
    a.originate(prefix("10.44.0.0/26"), None);
    let a_addr = addr_of(&a);
    eventually("the route is received", || {
        b.routes(a_addr)
            .is_some_and(|r| r.iter().any(|r| r.nlri.prefix == prefix("10.44.0.0/26")))
    })
    .await;
    let route = b.routes(a_addr).unwrap().remove(0);
    assert_eq!(
        route.next_hop,
        Some(NextHop::V4("127.0.0.4".parse().unwrap()))
    );
    assert_eq!(route.attrs.local_pref, Some(100));
    assert_eq!(b.peer(a_addr).unwrap().received, 1);
    assert!(a.withdraw(prefix("10.44.0.0/26")));
    eventually("the route is withdrawn", || {
        b.routes(a_addr).is_some_and(|r| r.is_empty())
    })
    .await;
    // Subscribers see the multipath set of the prefix appear, then empty.
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        if event.prefix == prefix("10.44.0.0/26") {
            seen.push(event.hops.len());
        }
    }
    assert_eq!(seen, vec![1, 0]);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn ebgp_route_carries_the_origin_as_and_ipv6_uses_the_configured_next_hop() {
    let mut config = SpeakerConfig::new("10.0.0.6".parse().unwrap(), 65006);
    config.listen = Some(SocketAddr::new(ip("127.0.0.6"), 0));
    config.local_address = Some(ip("127.0.0.6"));
    config.next_hop_v6 = Some("fd00::6".parse().unwrap());
    let a = Speaker::start(config).await.unwrap();
    let b = speaker("127.0.0.7", "10.0.0.7", 65007).await;
    a.add_peer(peer_of(&b, 65007)).unwrap();
    b.add_peer(peer_of(&a, 65006)).unwrap();
    a.originate(prefix("10.66.0.0/24"), None);
    a.originate(prefix("fd66::/64"), None);
    let a_addr = addr_of(&a);
    eventually("both routes are received", || {
        b.routes(a_addr).is_some_and(|r| r.len() == 2)
    })
    .await;
    let routes = b.routes(a_addr).unwrap();
    let v6 = routes
        .iter()
        .find(|r| r.nlri.prefix == prefix("fd66::/64"))
        .unwrap();
    assert_eq!(v6.next_hop.map(|n| n.addr()), Some(ip("fd00::6")));
    assert_eq!(
        v6.attrs.as_path.as_ref().and_then(|p| p.first_as()),
        Some(65006)
    );
    assert_eq!(v6.attrs.local_pref, None);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn ipv6_session_over_the_loopback_carries_ipv6_routes() {
    let (a, b) = pair(("::1", "10.0.0.8", 65000), ("::1", "10.0.0.9", 65000)).await;
    a.originate(prefix("fd08::/64"), None);
    eventually("the IPv6 route is received", || {
        b.routes(ip("::1")).is_some_and(|r| {
            r.iter().any(|r| {
                r.nlri.prefix == prefix("fd08::/64")
                    && r.next_hop.map(|n| n.addr()) == Some(ip("::1"))
            })
        })
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn removed_peer_gets_cease_peer_deconfigured_and_other_sessions_stay_up() {
    let a = speaker("127.0.0.10", "10.0.0.10", 65000).await;
    let b = speaker("127.0.0.11", "10.0.0.11", 65000).await;
    let c = speaker("127.0.0.12", "10.0.0.12", 65000).await;
    for (x, y) in [(&a, &b), (&b, &a), (&a, &c), (&c, &a)] {
        x.add_peer(peer_of(y, 65000)).unwrap();
    }
    eventually("all sessions are Established", || {
        [(&a, &b), (&b, &a), (&a, &c), (&c, &a)]
            .iter()
            .all(|(x, y)| state(x, y) == Some(State::Established))
    })
    .await;
    with_timeout(a.remove_peer(addr_of(&c))).await.unwrap();
    eventually("the removed peer saw the CEASE", || {
        c.peer(addr_of(&a))
            .and_then(|p| p.last_error)
            .is_some_and(|e| e.contains("Peer De-configured"))
    })
    .await;
    assert!(a.peer(addr_of(&c)).is_none());
    let ab = a.peer(addr_of(&b)).unwrap();
    assert_eq!((ab.state, ab.established_count), (State::Established, 1));
    // The removed peer keeps trying; it never gets a session again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_ne!(state(&c, &a), Some(State::Established));
    assert_eq!(a.peer(addr_of(&b)).unwrap().established_count, 1);
    a.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;
}

#[tokio::test]
async fn connection_from_an_unconfigured_address_gets_no_session() {
    let a = speaker("127.0.0.13", "10.0.0.13", 65000).await;
    let stranger = speaker("127.0.0.14", "10.0.0.14", 65000).await;
    stranger
        .add_peer(PeerConfig {
            passive: false,
            ..peer_of(&a, 65000)
        })
        .unwrap();
    // A raw connection from yet another address: closed without a byte (no OPEN).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(ip("127.0.0.15"), 0)).unwrap();
    let mut stream = with_timeout(socket.connect(a.local_addr().unwrap()))
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = with_timeout(stream.read(&mut buf)).await.unwrap_or(0);
    assert_eq!(n, 0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_ne!(state(&stranger, &a), Some(State::Established));
    assert!(a.peers().is_empty());
    a.shutdown().await;
    stranger.shutdown().await;
}

#[tokio::test]
async fn shutdown_sends_cease_administrative_shutdown() {
    let (a, b) = pair(
        ("127.0.0.16", "10.0.0.16", 65000),
        ("127.0.0.17", "10.0.0.17", 65000),
    )
    .await;
    let a_addr = addr_of(&a);
    with_timeout(a.shutdown()).await;
    eventually("the peer saw the CEASE", || {
        b.peer(a_addr)
            .and_then(|p| p.last_error)
            .is_some_and(|e| e.contains("Administrative Shutdown"))
    })
    .await;
    b.shutdown().await;
}

#[tokio::test]
async fn wrong_remote_as_is_refused_with_bad_peer_as() {
    let a = speaker("127.0.0.18", "10.0.0.18", 65000).await;
    let b = speaker("127.0.0.19", "10.0.0.19", 65001).await;
    a.add_peer(peer_of(&b, 65099)).unwrap();
    b.add_peer(PeerConfig {
        passive: true,
        ..peer_of(&a, 65000)
    })
    .unwrap();
    eventually("the refusal is reported on both sides", || {
        let at_a = a.peer(addr_of(&b)).and_then(|p| p.last_error);
        let at_b = b.peer(addr_of(&a)).and_then(|p| p.last_error);
        at_a.is_some_and(|e| e.contains("sent") && e.contains("Bad Peer AS"))
            && at_b.is_some_and(|e| e.contains("received") && e.contains("Bad Peer AS"))
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn updating_a_peer_resets_only_that_session() {
    let (a, b) = pair(
        ("127.0.0.20", "10.0.0.20", 65000),
        ("127.0.0.21", "10.0.0.21", 65000),
    )
    .await;
    let b_addr = addr_of(&b);
    a.update_peer(PeerConfig {
        hold_time: 30,
        ..peer_of(&b, 65000)
    })
    .await
    .unwrap();
    eventually("the session is back with the new hold time", || {
        a.peer(b_addr)
            .is_some_and(|p| p.state == State::Established && p.hold_time == Some(30))
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

/// A speaker at `addr` originating `count` IPv4 /30s (about 800 fill an UPDATE).
async fn speaker_with_table(addr: &str, router_id: &str, count: u32) -> Speaker {
    let s = speaker(addr, router_id, 65000).await;
    for i in 0..count {
        let p = Prefix::new(
            IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i * 4)),
            30,
        );
        s.originate(p.unwrap(), None);
    }
    s
}

/// A hand-driven iBGP peer of `a` at `addr`: completes the OPEN exchange (IPv4 unicast, route
/// refresh) with the given hold time and reads A's OPEN and KEEPALIVE, and no more. Its
/// receive buffer is the smallest the kernel allows, so A's writes back up quickly.
async fn silent_peer(a: &Speaker, addr: &str, router_id: &str, hold_time: u16) -> TcpStream {
    use tabby_bgp::wire::{Capability, Context, Message, Open};
    use tokio::io::AsyncWriteExt;

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind(SocketAddr::new(ip(addr), 0)).unwrap();
    let listener = socket.listen(1).unwrap();
    let port = listener.local_addr().unwrap().port();
    a.add_peer(PeerConfig {
        port,
        hold_time,
        ..PeerConfig::new(ip(addr), 65000)
    })
    .unwrap();
    let (mut stream, _) = with_timeout(listener.accept()).await.unwrap();
    let ctx = Context::modern();
    let open = Message::Open(Open {
        version: 4,
        my_as: 65000,
        hold_time,
        bgp_id: router_id.parse().unwrap(),
        capabilities: vec![
            Capability::multiprotocol(tabby_bgp::Family::Ipv4Unicast),
            Capability::RouteRefresh,
            Capability::FourOctetAs(65000),
        ],
    });
    stream.write_all(&open.to_bytes(&ctx)).await.unwrap();
    stream
        .write_all(&Message::Keepalive.to_bytes(&ctx))
        .await
        .unwrap();
    let mut head = [0u8; 64];
    let _ = with_timeout(stream.read(&mut head)).await.unwrap();
    eventually("the session is Established", || {
        a.peer(ip(addr)).map(|p| p.state) == Some(State::Established)
    })
    .await;
    stream
}

/// A hand-driven peer: completes the OPEN exchange, then keeps the session alive with
/// KEEPALIVEs and asks for the whole table again and again, but never reads what it is sent.
#[tokio::test]
async fn peer_that_stops_reading_loses_its_session_after_the_hold_time() {
    use tabby_bgp::wire::{Context, Message, RouteRefresh};
    use tokio::io::AsyncWriteExt;

    let a = speaker_with_table("127.0.0.61", "10.0.0.61", 20_000).await;
    let mut stream = silent_peer(&a, "127.0.0.62", "10.0.0.62", 3).await;
    let ctx = Context::modern();
    let refresh = Message::RouteRefresh(RouteRefresh {
        afi: 1,
        subtype: 0,
        safi: 1,
    });
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let p = a.peer(ip("127.0.0.62")).unwrap();
        if p.state != State::Established && p.established_count >= 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled session stayed up"
        );
        // Keep A's hold timer fed and its writer busy; ignore write errors once A closes.
        // Each refresh queues the whole table (about 100 kB) again.
        let _ = stream.write_all(&Message::Keepalive.to_bytes(&ctx)).await;
        for _ in 0..20 {
            let _ = stream.write_all(&refresh.to_bytes(&ctx)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    a.shutdown().await;
}

/// A hand-driven peer that completes the OPEN exchange and keeps the session alive, but never
/// reads the table it is sent: what it has not taken stays in the speaker's table. Only what
/// the socket holds unsent (128 KiB, about 26,000 of these prefixes) and the batch or two in
/// the writer's hands leave it: 28,672 prefixes here. Without the socket's limit the kernel
/// takes the whole table (about 1 MB), and without the writer's back-pressure its queue takes
/// 64 batches more (93,184).
#[tokio::test]
async fn a_peer_that_does_not_read_is_sent_only_what_its_connection_can_hold() {
    const TABLE: u32 = 200_000;
    let a = speaker_with_table("127.0.0.63", "10.0.0.63", TABLE).await;
    let _stream = silent_peer(&a, "127.0.0.64", "10.0.0.64", 90).await;
    // Wait until the speaker has stopped taking from the table: the same count for a second.
    let advertised = || a.peer(ip("127.0.0.64")).unwrap().advertised;
    let mut last = advertised();
    let mut steady = 0;
    while steady < 10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = advertised();
        steady = if now == last { steady + 1 } else { 0 };
        last = now;
    }
    let p = a.peer(ip("127.0.0.64")).unwrap();
    assert_eq!(p.state, State::Established, "the session stayed up");
    assert!(last > 0, "the speaker sent nothing");
    assert!(
        last < 50_000,
        "{last} of {TABLE} prefixes left the table for a peer that reads nothing"
    );
    a.shutdown().await;
}
