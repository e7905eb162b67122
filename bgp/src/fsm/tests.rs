//! FSM tests: single behaviours driven by hand, and two peers driven against each other on
//! virtual time over an in-memory network (the shape of quinn-proto's `Pair`). Messages
//! cross the network as bytes through the real codec.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::wire::{cease, Message};
use std::collections::{HashMap, VecDeque};

const A_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn config(local_as: u32, router_id: Ipv4Addr, remote_as: u32) -> Config {
    Config::new(local_as, router_id, remote_as)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Side {
    A,
    B,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

enum Wire {
    Bytes(Vec<u8>),
    Closed,
}

/// Two peers on virtual time, connected by a lossless zero-latency network.
struct Pair {
    a: Peer,
    b: Peer,
    now: Instant,
    /// (side, local conn) -> remote conn.
    links: HashMap<(Side, ConnId), ConnId>,
    /// Deliveries to (side, conn), in order.
    inflight: VecDeque<(Side, ConnId, Wire)>,
    /// Every action taken, with the time and the side.
    log: Vec<(Instant, Side, Action)>,
    /// Side whose outgoing messages are lost (a silent peer).
    mute: Option<Side>,
    /// Side that refuses TCP connections (nothing listening).
    unreachable: Option<Side>,
}

impl Pair {
    fn new(a: Config, b: Config) -> Pair {
        Pair {
            a: Peer::new(a).unwrap(),
            b: Peer::new(b).unwrap(),
            now: Instant::now(),
            links: HashMap::new(),
            inflight: VecDeque::new(),
            log: Vec::new(),
            mute: None,
            unreachable: None,
        }
    }

    /// An iBGP pair in AS 65000, both active.
    fn ibgp() -> Pair {
        Pair::new(config(65000, A_ID, 65000), config(65000, B_ID, 65000))
    }

    fn peer(&mut self, side: Side) -> &mut Peer {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    fn start(&mut self) {
        let now = self.now;
        self.a.start(now);
        self.b.start(now);
        self.drive();
    }

    /// Processes actions and deliveries until nothing moves.
    fn drive(&mut self) {
        loop {
            let mut moved = false;
            for side in [Side::A, Side::B] {
                while let Some(action) = self.peer(side).poll_action() {
                    moved = true;
                    self.act(side, action);
                }
            }
            if let Some((side, conn, wire)) = self.inflight.pop_front() {
                moved = true;
                let now = self.now;
                match wire {
                    Wire::Bytes(bytes) => match Message::decode(&bytes, &Context::default()) {
                        Ok(msg) => self.peer(side).handle_message(conn, msg, now),
                        Err(n) => self.peer(side).protocol_error(conn, n, now),
                    },
                    Wire::Closed => self.peer(side).closed(conn, now),
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn act(&mut self, side: Side, action: Action) {
        let now = self.now;
        match &action {
            Action::Connect(conn) => {
                let other = side.other();
                if self.unreachable == Some(other) {
                    self.peer(side).connect_failed(*conn, now);
                } else {
                    let remote = self.peer(other).incoming(now);
                    self.links.insert((side, *conn), remote);
                    self.links.insert((other, remote), *conn);
                    self.peer(side).connected(*conn, now);
                }
            }
            Action::Send(conn, msg) if self.mute != Some(side) => {
                if let Some(remote) = self.links.get(&(side, *conn)) {
                    let bytes = msg.to_bytes(&Context::default());
                    self.inflight
                        .push_back((side.other(), *remote, Wire::Bytes(bytes)));
                }
            }
            Action::Close(conn) => {
                if let Some(remote) = self.links.remove(&(side, *conn)) {
                    self.links.remove(&(side.other(), remote));
                    self.inflight
                        .push_back((side.other(), remote, Wire::Closed));
                }
            }
            _ => {}
        }
        self.log.push((now, side, action));
    }

    /// Moves virtual time to the next timer of either side and runs it.
    fn step(&mut self) -> bool {
        let next = [self.a.poll_timeout(), self.b.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next else { return false };
        self.now = self.now.max(next);
        let now = self.now;
        self.a.handle_timeout(now);
        self.b.handle_timeout(now);
        self.drive();
        true
    }

    /// Steps until virtual time has advanced by `d`.
    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(next) = [self.a.poll_timeout(), self.b.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
        {
            if next > end {
                break;
            }
            self.step();
        }
        self.now = end;
    }

    fn both_established(&self) -> bool {
        self.a.state() == State::Established && self.b.state() == State::Established
    }

    fn sent_by(&self, side: Side) -> impl Iterator<Item = (Instant, &Message)> {
        self.log.iter().filter_map(move |(t, s, a)| match a {
            Action::Send(_, m) if *s == side => Some((*t, m)),
            _ => None,
        })
    }

    fn notifications_sent_by(&self, side: Side) -> Vec<Notification> {
        self.sent_by(side)
            .filter_map(|(_, m)| match m {
                Message::Notification(n) => Some(n.clone()),
                _ => None,
            })
            .collect()
    }

    fn downs(&self, side: Side) -> Vec<DownReason> {
        self.log
            .iter()
            .filter_map(|(_, s, a)| match a {
                Action::Down { reason, .. } if *s == side => Some(reason.clone()),
                _ => None,
            })
            .collect()
    }

    fn sessions(&self, side: Side) -> Vec<Session> {
        self.log
            .iter()
            .filter_map(|(_, s, a)| match a {
                Action::Established(session) if *s == side => Some((**session).clone()),
                _ => None,
            })
            .collect()
    }
}

/// Drives a single passive peer through an incoming connection; returns the peer, the
/// connection id, and the time.
fn passive_peer_with_connection(config: Config) -> (Peer, ConnId, Instant) {
    let now = Instant::now();
    let mut peer = Peer::new(Config {
        passive: true,
        ..config
    })
    .unwrap();
    peer.start(now);
    let conn = peer.incoming(now);
    (peer, conn, now)
}

fn drain(peer: &mut Peer) -> Vec<Action> {
    std::iter::from_fn(|| peer.poll_action()).collect()
}

/// An active iBGP peer with router ID `id` that has started connecting (its connection, still
/// in the TCP handshake) and has accepted a connection from the peer; and the time.
fn active_peer_with_both_connections(id: Ipv4Addr) -> (Peer, ConnId, ConnId, Instant) {
    let now = Instant::now();
    let mut peer = Peer::new(config(65000, id, 65000)).unwrap();
    peer.start(now);
    let own = next_connect(&mut peer);
    let incoming = peer.incoming(now);
    (peer, own, incoming, now)
}

/// The connection the peer's pending actions open (the other actions are dropped).
fn next_connect(peer: &mut Peer) -> ConnId {
    drain(peer)
        .into_iter()
        .find_map(|a| match a {
            Action::Connect(c) => Some(c),
            _ => None,
        })
        .expect("the peer connects")
}

fn sent_notification(actions: &[Action]) -> Option<Notification> {
    actions.iter().find_map(|a| match a {
        Action::Send(_, Message::Notification(n)) => Some(n.clone()),
        _ => None,
    })
}

fn open_from(asn: u32, id: Ipv4Addr, hold_time: u16) -> Open {
    let mut peer = Peer::new(config(asn, Ipv4Addr::new(192, 0, 2, 1), 65000)).unwrap();
    let mut open = peer.local_open();
    open.hold_time = hold_time;
    open.bgp_id = id;
    let _ = drain(&mut peer);
    open
}

#[test]
fn active_and_passive_peers_reach_established() {
    let mut pair = Pair::new(
        config(65000, A_ID, 65000),
        Config {
            passive: true,
            ..config(65000, B_ID, 65000)
        },
    );
    pair.start();
    assert!(pair.both_established());
    assert_eq!(pair.sessions(Side::A)[0].direction, Direction::Outgoing);
    assert_eq!(pair.sessions(Side::B)[0].direction, Direction::Incoming);
}

#[test]
fn two_passive_peers_never_connect() {
    let mut pair = Pair::new(
        Config {
            passive: true,
            ..config(65000, A_ID, 65000)
        },
        Config {
            passive: true,
            ..config(65000, B_ID, 65000)
        },
    );
    pair.start();
    pair.run_for(Duration::from_secs(600));
    assert_eq!(pair.a.state(), State::Active);
    assert!(!pair
        .log
        .iter()
        .any(|(_, _, a)| matches!(a, Action::Connect(_))));
}

#[test]
fn collision_keeps_the_connection_from_the_higher_identifier() {
    let mut pair = Pair::ibgp();
    pair.start();
    assert!(pair.both_established());
    // B (10.0.0.2) has the higher identifier: the surviving connection is the one B opened.
    assert_eq!(pair.a.session().unwrap().direction, Direction::Incoming);
    assert_eq!(pair.b.session().unwrap().direction, Direction::Outgoing);
    let collision = Notification::cease(cease::CONNECTION_COLLISION_RESOLUTION);
    let ceased: Vec<_> = [Side::A, Side::B]
        .into_iter()
        .flat_map(|s| pair.notifications_sent_by(s))
        .collect();
    // Each side may detect the collision; both close the same connection (the one A opened).
    assert!(!ceased.is_empty());
    assert!(ceased.iter().all(|n| *n == collision));
}

#[test]
fn a_new_connection_of_the_peer_in_the_same_direction_replaces_its_established_session() {
    // The peer opened a connection again while its session with us is up: for the peer, the
    // old one is gone (it restarted, or lost the connection without us noticing).
    let mut pair = Pair::new(
        config(65000, A_ID, 65000),
        Config {
            passive: true,
            ..config(65000, B_ID, 65000)
        },
    );
    pair.start();
    let established = pair.b.session().unwrap().conn;
    let now = pair.now;
    let second = pair.b.incoming(now);
    let open = pair.a.local_open();
    pair.b.handle_message(second, Message::Open(open), now);
    let actions = drain(&mut pair.b);
    assert!(actions.contains(&Action::Close(established)));
    assert!(actions.contains(&Action::Down {
        reason: DownReason::ConnectionLost,
        was_established: true
    }));
    assert!(actions.contains(&Action::Send(second, Message::Keepalive)));
}

#[test]
fn a_collision_race_lost_while_established_keeps_the_higher_identifiers_connection() {
    // A (lower identifier) reached Established on the connection it opened, then the OPEN
    // of B's connection arrives: B keeps its own (RFC 4271 §6.8), so A must too, or the two
    // would close different connections and keep none.
    let mut pair = Pair::new(
        config(65000, A_ID, 65000),
        Config {
            passive: true,
            ..config(65000, B_ID, 65000)
        },
    );
    pair.start();
    let established = pair.a.session().unwrap().conn;
    let now = pair.now;
    let from_b = pair.a.incoming(now);
    let open = pair.b.local_open();
    pair.a.handle_message(from_b, Message::Open(open), now);
    let actions = drain(&mut pair.a);
    assert_eq!(
        sent_notification(&actions),
        Some(Notification::cease(cease::CONNECTION_COLLISION_RESOLUTION))
    );
    assert!(actions.contains(&Action::Close(established)));
    assert!(actions.contains(&Action::Send(from_b, Message::Keepalive)));
}

#[test]
fn a_peer_back_with_the_restart_state_bit_replaces_its_established_session() {
    // RFC 4724 §4.2: A restarted (its old session is gone for it) and connects; B still holds
    // the old session, on the connection B opened. The identifier rule alone would refuse A.
    let mut pair = Pair::new(
        Config {
            passive: true,
            ..config(65000, A_ID, 65000)
        },
        config(65000, B_ID, 65000),
    );
    pair.start();
    let established = pair.b.session().unwrap().conn;
    let now = pair.now;
    let from_a = pair.b.incoming(now);
    pair.a.set_restarting(true);
    let open = pair.a.local_open();
    pair.b.handle_message(from_a, Message::Open(open), now);
    let actions = drain(&mut pair.b);
    assert!(actions.contains(&Action::Close(established)));
    assert!(
        sent_notification(&actions).is_none(),
        "the old connection is dead anyway"
    );
    assert!(actions.contains(&Action::Send(from_a, Message::Keepalive)));
}

#[test]
fn a_restarting_peers_racing_connection_is_a_collision_not_a_restart() {
    // B (higher identifier) and A (lower, still restarting: the Restart State bit on every
    // OPEN) connect to each other at once. B's session comes up on the connection B opened;
    // A's OPEN then arrives on the connection A opened, which B accepted before the session
    // was up. A keeps B's connection (RFC 4271 §6.8), so B must too: this is no restart.
    let (mut b, own, from_a, now) = active_peer_with_both_connections(B_ID);
    b.connected(own, now);
    let mut a = Peer::new(config(65000, A_ID, 65000)).unwrap();
    a.set_restarting(true);
    let open = a.local_open();
    b.handle_message(own, Message::Open(open.clone()), now);
    b.handle_message(own, Message::Keepalive, now);
    assert_eq!(b.session().unwrap().conn, own);
    let _ = drain(&mut b);
    b.handle_message(from_a, Message::Open(open), now);
    let actions = drain(&mut b);
    assert!(actions.contains(&Action::Close(from_a)), "{actions:?}");
    assert!(!actions.contains(&Action::Close(own)), "{actions:?}");
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Down { .. })),
        "{actions:?}"
    );
    assert_eq!(b.session().unwrap().conn, own);
}

#[test]
fn a_collision_with_an_established_session_from_the_higher_identifier_closes_the_new_one() {
    // B (higher identifier) is Established on the connection B opened; a connection A opens
    // later loses by the identifier rule.
    let mut pair = Pair::new(
        Config {
            passive: true,
            ..config(65000, A_ID, 65000)
        },
        config(65000, B_ID, 65000),
    );
    pair.start();
    let established = pair.b.session().unwrap().conn;
    let now = pair.now;
    let from_a = pair.b.incoming(now);
    let open = pair.a.local_open();
    pair.b.handle_message(from_a, Message::Open(open), now);
    let actions = drain(&mut pair.b);
    assert!(actions.contains(&Action::Close(from_a)));
    assert_eq!(pair.b.session().unwrap().conn, established);
}

#[test]
fn an_outgoing_connection_still_connecting_is_dropped_when_a_session_comes_up_on_another() {
    // A connects to B, but its SYN is slow; meanwhile B connects to A and the session comes
    // up on that connection. A's attempt must not reach B after the session is up.
    let (mut a, outgoing, from_b, now) = active_peer_with_both_connections(B_ID);
    a.handle_message(from_b, Message::Open(open_from(65000, A_ID, 90)), now);
    a.handle_message(from_b, Message::Keepalive, now);
    assert_eq!(a.state(), State::Established);
    let actions = drain(&mut a);
    assert!(actions.contains(&Action::Close(outgoing)), "{actions:?}");
    // The handshake completing afterwards changes nothing and sends nothing.
    a.connected(outgoing, now);
    let after = drain(&mut a);
    assert!(after.is_empty(), "{after:?}");
    assert_eq!(a.session().unwrap().conn, from_b);
}

#[test]
fn hold_time_negotiation_uses_the_smaller_value() {
    let mut pair = Pair::new(
        config(65000, A_ID, 65000),
        Config {
            hold_time: 30,
            ..config(65000, B_ID, 65000)
        },
    );
    pair.start();
    for side in [Side::A, Side::B] {
        let session = &pair.sessions(side)[0];
        assert_eq!((session.hold_time, session.keepalive_time), (30, 10));
    }
}

#[test]
fn hold_time_zero_on_one_side_disables_keepalives() {
    let mut pair = Pair::new(
        config(65000, A_ID, 65000),
        Config {
            hold_time: 0,
            ..config(65000, B_ID, 65000)
        },
    );
    pair.start();
    assert!(pair.both_established());
    let keepalives_before = pair
        .sent_by(Side::A)
        .filter(|(_, m)| **m == Message::Keepalive)
        .count();
    pair.run_for(Duration::from_secs(3600));
    let keepalives_after = pair
        .sent_by(Side::A)
        .filter(|(_, m)| **m == Message::Keepalive)
        .count();
    assert_eq!(keepalives_before, keepalives_after);
    assert!(pair.both_established());
}

#[test]
fn keepalive_is_sent_every_third_of_hold_time() {
    let mut pair = Pair::ibgp();
    pair.start();
    let up = pair.now;
    pair.run_for(Duration::from_secs(300));
    let times: Vec<Duration> = pair
        .sent_by(Side::A)
        .filter(|(t, m)| **m == Message::Keepalive && *t > up)
        .map(|(t, _)| t - up)
        .collect();
    let expected: Vec<Duration> = (1..=10).map(|k| Duration::from_secs(30 * k)).collect();
    assert_eq!(times, expected);
    assert!(pair.both_established());
}

#[test]
fn hold_timer_expiry_sends_notification_code_4() {
    let mut pair = Pair::ibgp();
    pair.start();
    pair.mute = Some(Side::B);
    pair.run_for(Duration::from_secs(91));
    let expired = Notification::new(code::HOLD_TIMER_EXPIRED, 0, Vec::new());
    assert_eq!(pair.notifications_sent_by(Side::A).last(), Some(&expired));
    assert_eq!(
        pair.downs(Side::A),
        vec![DownReason::NotificationSent(expired)]
    );
    assert_eq!(pair.a.state(), State::Idle);
}

#[test]
fn opensent_uses_the_large_hold_timer() {
    let (mut peer, _conn, now) = passive_peer_with_connection(config(65000, A_ID, 65000));
    assert_eq!(peer.state(), State::OpenSent);
    assert_eq!(peer.poll_timeout(), Some(now + Duration::from_secs(240)));
    let _ = drain(&mut peer);
    peer.handle_timeout(now + Duration::from_secs(240));
    let actions = drain(&mut peer);
    assert_eq!(
        sent_notification(&actions).map(|n| n.code),
        Some(code::HOLD_TIMER_EXPIRED)
    );
}

#[test]
fn open_with_wrong_peer_as_is_refused_with_bad_peer_as() {
    let mut pair = Pair::new(config(65001, A_ID, 65000), config(65000, B_ID, 65099));
    pair.start();
    let bad = Notification::new(
        code::OPEN_MESSAGE,
        open_error::BAD_PEER_AS,
        65001u16.to_be_bytes(),
    );
    assert!(pair.notifications_sent_by(Side::B).contains(&bad));
    assert!(pair
        .downs(Side::A)
        .contains(&DownReason::NotificationReceived(bad)));
    assert_eq!(pair.a.state(), State::Idle);
    assert_eq!(pair.b.state(), State::Idle);
}

#[test]
fn four_octet_as_peer_is_matched_through_its_capability() {
    let mut pair = Pair::new(
        config(4_200_000_001, A_ID, 65000),
        config(65000, B_ID, 4_200_000_001),
    );
    pair.start();
    assert!(pair.both_established());
    let session = &pair.sessions(Side::B)[0];
    assert_eq!(session.peer_as, 4_200_000_001);
    assert!(session.context.four_octet_as);
    assert!(session.context.ebgp);
    assert_eq!(pair.a.local_open().my_as, AS_TRANS);
}

#[test]
fn two_octet_speaker_sending_as_trans_does_not_match_a_four_octet_as() {
    let (mut peer, conn, now) = passive_peer_with_connection(config(65000, A_ID, 4_200_000_001));
    let mut open = open_from(65000, B_ID, 90);
    open.my_as = AS_TRANS;
    open.capabilities
        .retain(|c| !matches!(c, Capability::FourOctetAs(_)));
    peer.handle_message(conn, Message::Open(open), now);
    let n = sent_notification(&drain(&mut peer)).unwrap();
    assert_eq!(
        (n.code, n.subcode),
        (code::OPEN_MESSAGE, open_error::BAD_PEER_AS)
    );
    assert_eq!(n.data, AS_TRANS.to_be_bytes());
}

#[test]
fn open_with_hold_time_of_two_seconds_is_refused_with_unacceptable_hold_time() {
    let (mut peer, conn, now) = passive_peer_with_connection(config(65000, A_ID, 65000));
    peer.handle_message(conn, Message::Open(open_from(65000, B_ID, 2)), now);
    let n = sent_notification(&drain(&mut peer)).unwrap();
    assert_eq!(
        (n.code, n.subcode),
        (code::OPEN_MESSAGE, open_error::UNACCEPTABLE_HOLD_TIME)
    );
}

#[test]
fn configured_hold_time_of_one_second_is_rejected() {
    let err = Peer::new(Config {
        hold_time: 1,
        ..config(65000, A_ID, 65000)
    })
    .unwrap_err();
    assert_eq!(err, ConfigError::HoldTime(1));
}

#[test]
fn open_with_zero_identifier_is_refused_with_bad_bgp_identifier() {
    let (mut peer, conn, now) = passive_peer_with_connection(config(65000, A_ID, 65000));
    peer.handle_message(
        conn,
        Message::Open(open_from(65000, Ipv4Addr::UNSPECIFIED, 90)),
        now,
    );
    let n = sent_notification(&drain(&mut peer)).unwrap();
    assert_eq!(
        (n.code, n.subcode),
        (code::OPEN_MESSAGE, open_error::BAD_BGP_IDENTIFIER)
    );
}

#[test]
fn ibgp_open_with_our_own_identifier_is_refused_with_bad_bgp_identifier() {
    let (mut peer, conn, now) = passive_peer_with_connection(config(65000, A_ID, 65000));
    peer.handle_message(conn, Message::Open(open_from(65000, A_ID, 90)), now);
    let n = sent_notification(&drain(&mut peer)).unwrap();
    assert_eq!(
        (n.code, n.subcode),
        (code::OPEN_MESSAGE, open_error::BAD_BGP_IDENTIFIER)
    );
}

#[test]
fn ebgp_open_with_our_own_identifier_is_accepted() {
    let (mut peer, conn, now) = passive_peer_with_connection(config(65000, A_ID, 65001));
    peer.handle_message(conn, Message::Open(open_from(65001, A_ID, 90)), now);
    assert_eq!(sent_notification(&drain(&mut peer)), None);
    assert_eq!(peer.state(), State::OpenConfirm);
}

#[test]
fn open_with_version_3_is_refused_with_unsupported_version() {
    let (mut peer, conn, now) = passive_peer_with_connection(config(65000, A_ID, 65000));
    let open = Open {
        version: 3,
        ..open_from(65000, B_ID, 90)
    };
    peer.handle_message(conn, Message::Open(open), now);
    let n = sent_notification(&drain(&mut peer)).unwrap();
    assert_eq!(
        (n.code, n.subcode),
        (code::OPEN_MESSAGE, open_error::UNSUPPORTED_VERSION)
    );
    assert_eq!(n.data, vec![0, 4]);
}

#[test]
fn keepalive_before_open_is_an_fsm_error() {
    let (mut peer, conn, now) = passive_peer_with_connection(config(65000, A_ID, 65000));
    peer.handle_message(conn, Message::Keepalive, now);
    let n = sent_notification(&drain(&mut peer)).unwrap();
    assert_eq!(
        (n.code, n.subcode),
        (code::FSM, fsm_error::UNEXPECTED_IN_OPENSENT)
    );
}

#[test]
fn notification_received_takes_the_session_down_with_its_reason() {
    let mut pair = Pair::ibgp();
    pair.start();
    let shutdown = Notification::cease(cease::ADMINISTRATIVE_SHUTDOWN);
    pair.a.stop(shutdown.clone());
    pair.drive();
    assert_eq!(pair.a.state(), State::Idle);
    assert_eq!(pair.b.state(), State::Idle);
    assert_eq!(
        pair.downs(Side::B),
        vec![DownReason::NotificationReceived(shutdown)]
    );
    assert!(pair.log.iter().any(|(_, s, a)| *s == Side::B
        && matches!(
            a,
            Action::Down {
                was_established: true,
                ..
            }
        )));
}

#[test]
fn stopped_peer_refuses_incoming_connections() {
    let now = Instant::now();
    let mut peer = Peer::new(config(65000, A_ID, 65000)).unwrap();
    let conn = peer.incoming(now);
    assert_eq!(drain(&mut peer), vec![Action::Close(conn)]);
    assert_eq!(peer.state(), State::Idle);
}

#[test]
fn failed_connect_is_retried_when_the_connect_retry_timer_expires() {
    let mut pair = Pair::ibgp();
    pair.unreachable = Some(Side::B);
    pair.b
        .stop(Notification::cease(cease::ADMINISTRATIVE_SHUTDOWN));
    pair.a.start(pair.now);
    pair.drive();
    assert_eq!(pair.a.state(), State::Active);
    pair.run_for(Duration::from_secs(5));
    let connects = pair
        .log
        .iter()
        .filter(|(_, _, a)| matches!(a, Action::Connect(_)))
        .count();
    assert_eq!(connects, 2);
    pair.unreachable = None;
    pair.b.start(pair.now);
    pair.run_for(Duration::from_secs(5));
    assert!(pair.both_established());
}

#[test]
fn repeated_failures_double_the_idle_hold_time_up_to_the_cap() {
    let now = Instant::now();
    let mut peer = Peer::new(config(65000, A_ID, 65000)).unwrap();
    peer.start(now);
    let mut now = now;
    let mut waits = Vec::new();
    for _ in 0..7 {
        let conn = next_connect(&mut peer);
        peer.connected(conn, now);
        let refusal = Notification::new(code::OPEN_MESSAGE, open_error::BAD_PEER_AS, Vec::new());
        peer.handle_message(conn, Message::Notification(refusal), now);
        assert_eq!(peer.state(), State::Idle);
        let wake = peer.poll_timeout().unwrap();
        waits.push((wake - now).as_secs());
        now = wake;
        peer.handle_timeout(now);
    }
    assert_eq!(waits, vec![5, 10, 20, 40, 80, 120, 120]);
}

#[test]
fn a_session_lost_to_the_peers_collision_resolution_is_retried_at_once() {
    // The race of RFC 4271 §6.8: we reached Established on the connection the peer then
    // dropped as the collision's loser (and we dropped its other one as colliding with our
    // Established session). No connection is left; waiting the idle hold would only delay.
    let mut pair = Pair::ibgp();
    pair.start();
    let conn = pair.a.session().unwrap().conn;
    let now = pair.now;
    let collision = Notification::cease(cease::CONNECTION_COLLISION_RESOLUTION);
    pair.a
        .handle_message(conn, Message::Notification(collision), now);
    let _ = drain(&mut pair.a);
    assert_eq!(pair.a.failures(), 0);
    assert_eq!(pair.a.poll_timeout(), Some(now));
    pair.a.handle_timeout(now);
    assert!(drain(&mut pair.a)
        .iter()
        .any(|a| matches!(a, Action::Connect(_))));
}

#[test]
fn a_session_that_stays_up_resets_the_back_off() {
    let mut pair = Pair::ibgp();
    pair.start();
    pair.a
        .stop(Notification::cease(cease::ADMINISTRATIVE_RESET));
    pair.drive();
    assert_eq!(pair.b.failures(), 1);
    pair.a.start(pair.now);
    pair.run_for(Duration::from_secs(10));
    assert!(pair.both_established());
    pair.run_for(Duration::from_secs(61));
    assert_eq!(pair.b.failures(), 0);
}

#[test]
fn session_comes_back_after_the_peer_restarts() {
    let mut pair = Pair::ibgp();
    pair.start();
    pair.b
        .stop(Notification::cease(cease::ADMINISTRATIVE_RESET));
    pair.drive();
    pair.b.start(pair.now);
    pair.run_for(Duration::from_secs(30));
    assert!(pair.both_established());
}

#[test]
fn context_negotiates_extended_message_only_when_both_sides_advertise_it() {
    let mut pair = Pair::new(
        config(65000, A_ID, 65000),
        Config {
            extended_message: false,
            ..config(65000, B_ID, 65000)
        },
    );
    pair.start();
    assert!(!pair.sessions(Side::A)[0].context.extended_message);
    let mut pair = Pair::ibgp();
    pair.start();
    assert!(pair.sessions(Side::A)[0].context.extended_message);
    assert!(!pair.sessions(Side::A)[0].context.ebgp);
}

#[test]
fn families_are_those_both_sides_advertise() {
    let mut pair = Pair::new(
        config(65000, A_ID, 65000),
        Config {
            families: vec![Family::Ipv6Unicast],
            ..config(65000, B_ID, 65000)
        },
    );
    pair.start();
    assert_eq!(
        pair.sessions(Side::A)[0].families,
        vec![Family::Ipv6Unicast]
    );
}

#[test]
fn peer_without_multiprotocol_capability_gets_ipv4_unicast() {
    let (mut peer, conn, now) = passive_peer_with_connection(config(65000, A_ID, 65000));
    let mut open = open_from(65000, B_ID, 90);
    open.capabilities
        .retain(|c| !matches!(c, Capability::Multiprotocol { .. }));
    peer.handle_message(conn, Message::Open(open), now);
    peer.handle_message(conn, Message::Keepalive, now);
    assert_eq!(peer.session().unwrap().families, vec![Family::Ipv4Unicast]);
}

#[test]
fn add_path_is_negotiated_per_direction() {
    let mut pair = Pair::new(
        Config {
            add_path: vec![(Family::Ipv4Unicast, AddPathMode::Both)],
            ..config(65000, A_ID, 65000)
        },
        Config {
            add_path: vec![(Family::Ipv4Unicast, AddPathMode::Send)],
            ..config(65000, B_ID, 65000)
        },
    );
    pair.start();
    let ctx = &pair.sessions(Side::A)[0].context;
    assert_eq!(ctx.add_path_receive, vec![Family::Ipv4Unicast]);
    assert!(ctx.add_path_send.is_empty());
}

#[test]
fn update_in_established_is_handed_to_the_shell() {
    let mut pair = Pair::ibgp();
    pair.start();
    let conn = pair.a.session().unwrap().conn;
    let now = pair.now;
    pair.a.handle_message(
        conn,
        Message::Update(Update::end_of_rib(Family::Ipv4Unicast)),
        now,
    );
    assert!(matches!(pair.a.poll_action(), Some(Action::Update(c, _)) if c == conn));
}
