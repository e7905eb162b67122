//! The routing table of a speaker, without I/O: the Adj-RIBs-In of every peer and the
//! Loc-RIB (RFC 4271 §3.2), the decision process (§9.1), what each peer is sent (§9.1.3 and
//! the reflection rules of RFC 4456), the stale routes of graceful restart (RFC 4724) and the
//! deferred first advertisement of a restarting speaker.
//!
//! The speaker's tasks call it under a lock: sessions hand it decoded UPDATEs and session
//! ups and downs; it answers with what changed, in two drains:
//! - [`Rib::take_changes`]: prefixes whose multipath set (what the kernel should forward
//!   by) changed;
//! - [`Rib::take_woken`] and [`Rib::take_outbox`]: the peers with something to send, and
//!   per peer the next batch of prefixes to announce or withdraw, ready to pack, their
//!   attributes interned so equal attribute sets are one allocation and one UPDATE.
//!
//! Nothing here stores an Adj-RIB-Out: what a peer is sent is a function of the best path
//! and the peer, computed when its session has room to send it. Best-path changes go to
//! one log that every peer reads from its own cursor (see `feed`), coalesced while no peer
//! has read them, and each peer keeps one bit per destination for what it holds. A
//! reflector with a thousand clients thus holds its table once, not a thousand times, and a
//! change costs one log entry, not one queue entry per peer.
//!
//! Memory per path is what a million-route table is about: a destination takes 56 bytes in
//! a slot array plus 5 in the prefix index, its only path (the common case) inline, and the
//! path's next hop and attributes are one interned allocation shared by every path of an
//! UPDATE.

mod audit;
mod decision;
mod export;
mod feed;
pub mod outbox;
mod paths;
mod sets;
#[cfg(test)]
mod tests;

pub use export::NextHopMode;
pub use outbox::{Announced, Outbox};

use crate::prefix::{Family, Prefix};
use crate::wire::{AsPath, LargeCommunity, NextHop, Nlri, Origin, PathAttributes, Update};
use feed::{Bits, Feed, Log};
use foldhash::{HashMap, HashMapExt, HashSet};
use hashbrown::HashTable;
use paths::{Paths, Route, Stored};
use sets::Sets;
use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// Settings of the table as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RibConfig {
    /// Our BGP Identifier.
    pub router_id: Ipv4Addr,
    /// Our AS.
    pub local_as: u32,
    /// Our cluster ID when we are a route reflector (RFC 4456 §7).
    pub cluster_id: Option<Ipv4Addr>,
    /// IPv4 next hop for sessions over IPv6 (our own routes and next-hop-self).
    pub next_hop_v4: Option<Ipv4Addr>,
    /// IPv6 next hop for sessions over IPv4.
    pub next_hop_v6: Option<Ipv6Addr>,
    /// We restarted and kept forwarding state (RFC 4724 §4.1): hold the first advertisement
    /// until the peers that are up sent their End-of-RIB.
    pub restarting: bool,
}

/// How a peer relates to us, for the advertisement rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum PeerKind {
    /// Another AS.
    External,
    /// Our AS, not a route reflection client (a mesh peer, or a reflector we are a client of).
    Internal,
    /// Our AS, a client of ours (only when we are a reflector).
    Client,
}

/// The graceful restart capability a peer sent (RFC 4724 §3, RFC 8538 §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRestart {
    /// Seconds the peer asks us to keep its routes after a session loss.
    pub restart_time: u16,
    /// The peer says it has restarted (R bit).
    pub restarting: bool,
    /// The peer does graceful restart after NOTIFICATIONs too (N bit).
    pub notification: bool,
    /// Families the peer restarts gracefully, with whether it kept their forwarding state.
    pub families: Vec<(Family, bool)>,
}

/// Facts of an Established session the table needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSession {
    /// The peer's address.
    pub address: IpAddr,
    /// The peer's BGP Identifier.
    pub router_id: Ipv4Addr,
    /// The peer's AS.
    pub remote_as: u32,
    /// How it relates to us.
    pub kind: PeerKind,
    /// Which next hop it is sent.
    pub next_hop_mode: NextHopMode,
    /// Our address on the session's connection.
    pub local_addr: IpAddr,
    /// Families negotiated.
    pub families: Vec<Family>,
    /// The peer's graceful restart capability, if it sent one.
    pub restart: Option<PeerRestart>,
}

/// Where a path came from, when not from us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathFrom {
    /// The peer's address.
    pub address: IpAddr,
    /// The peer's BGP Identifier.
    pub router_id: Ipv4Addr,
    /// The peer is external.
    pub ebgp: bool,
    /// How the peer relates to us.
    pub kind: PeerKind,
}

/// One path to a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// The peer it came from (shared by all its paths of one session); `None`: originated
    /// here.
    pub from: Option<Arc<PathFrom>>,
    /// Its ADD-PATH identifier (0 without ADD-PATH).
    pub path_id: u32,
    /// Its next hop (`None` for our own routes that use the session's address).
    pub next_hop: Option<NextHop>,
    /// Its attributes (interned; NEXT_HOP is held in `next_hop`, not here).
    pub attrs: Arc<PathAttributes>,
    /// Kept for a restarting peer until it sends End-of-RIB (RFC 4724 §4.2).
    pub stale: bool,
}

/// What a peer is sent for one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// The next hop.
    pub next_hop: NextHop,
    /// The attributes (interned: equal sets are pointer-equal, so they pack together).
    pub attrs: Arc<PathAttributes>,
}

/// One path of a multipath set: a next hop to forward to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hop {
    /// The peer that announced the path.
    pub peer: IpAddr,
    /// The path's next hop.
    pub next_hop: NextHop,
}

/// The forwarding decision for one prefix: the paths learned from peers that are as good as
/// the best (empty when the prefix is unreachable or the best path is our own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// The prefix.
    pub prefix: Prefix,
    /// Its multipath set, best path first.
    pub hops: Vec<Hop>,
}

/// A route of ours to originate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origination {
    /// Next hop to announce; `None`: each session's own address.
    pub next_hop: Option<IpAddr>,
    /// COMMUNITIES to attach (RFC 1997).
    pub communities: Vec<u32>,
    /// LARGE_COMMUNITY values to attach (RFC 8092).
    pub large_communities: Vec<LargeCommunity>,
}

/// A route a peer announced, as the speaker's API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedRoute {
    /// The prefix and, on ADD-PATH sessions, its path identifier.
    pub nlri: Nlri,
    /// The next hop the peer gave.
    pub next_hop: Option<NextHop>,
    /// The path attributes.
    pub attrs: Arc<PathAttributes>,
    /// Kept from a previous session of a restarting peer.
    pub stale: bool,
    /// The best path of its prefix.
    pub best: bool,
}

/// Counters of one peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerCounts {
    /// Routes the peer announced and did not withdraw (accepted or not).
    pub received: u64,
    /// Of those, the ones in the table (not refused as loops).
    pub accepted: u64,
    /// Prefixes we advertise to the peer.
    pub advertised: u64,
    /// Routes kept stale for a restarting peer.
    pub stale: u64,
}

#[derive(Debug, Default)]
struct PeerEntry {
    session: Option<PeerSession>,
    /// Facts of the last session, shared by its paths (which may outlive it, stale).
    from: Option<Arc<PathFrom>>,
    /// Paths of the peer in the table (no per-peer index of them is kept: a table holds
    /// each path once, and what concerns one peer is found by a scan, on session changes).
    accepted: u64,
    /// Of those, the stale ones.
    stale_paths: u64,
    refused: HashSet<Nlri>,
    disabled: BTreeSet<Family>,
    /// Families with stale paths.
    stale: BTreeSet<Family>,
    /// Families whose End-of-RIB arrived on the current session.
    eor: BTreeSet<Family>,
    /// In OpenConfirm with a peer we may wait for.
    opening: bool,
    /// Prefixes the peer was sent and not withdrawn (the set bits of its feed).
    advertised: u64,
    /// What it still has to be sent; `None` while down or held.
    feed: Option<Feed>,
    /// Up while we defer our first advertisement: the full table follows when it ends.
    held: bool,
}

impl PeerEntry {
    /// A peer whose End-of-RIB a restarting speaker waits for: up (or about to be) and not
    /// restarting itself (RFC 4724 §4.1: a restarting peer waits for us too).
    fn awaited(&self) -> bool {
        match &self.session {
            Some(s) => {
                let restarting = s.restart.as_ref().is_some_and(|r| r.restarting);
                let complete = s.families.iter().all(|f| self.eor.contains(f));
                s.restart.is_some() && !restarting && !complete
            }
            None => self.opening,
        }
    }
}

/// A prefix and its paths, in a slot of the table (48 bytes).
#[derive(Debug)]
struct Dest {
    /// Best first, the multipath set leading.
    paths: Paths,
    prefix: Prefix,
    /// Log position of its last best-path change, while that is in the log (see
    /// [`Log::slot_position`]; [`feed::NEVER`]: not in the log).
    queued: u32,
}

impl Dest {
    fn new(prefix: Prefix) -> Dest {
        Dest {
            paths: Paths::Empty,
            prefix,
            queued: feed::NEVER,
        }
    }
}

/// The table. See the module documentation.
#[derive(Debug)]
pub struct Rib {
    config: RibConfig,
    peers: HashMap<IpAddr, PeerEntry>,
    /// The destinations, by slot; a slot whose destination has no path and is held by
    /// to no peer is free for reuse.
    dests: Vec<Dest>,
    /// Slots by prefix (a table of slot numbers, hashed by the slot's prefix: 5 bytes per
    /// entry where a map from prefix to slot would take 25).
    index: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    free: Vec<u32>,
    /// Destinations with a path.
    live: usize,
    /// The log's length after its last compaction.
    log_after_compaction: usize,
    /// Destinations in the index without a path (waiting for a sweep).
    tombstones: usize,
    tombstones_after_sweep: usize,
    sets: Sets,
    log: Log,
    /// Peers with a feed: with none, best-path changes need no log entry.
    feeds: usize,
    /// Peers caught up since the log last grew, woken by its next growth.
    idle: Vec<IpAddr>,
    grew: bool,
    changes: Vec<Selected>,
    woken: Vec<IpAddr>,
    deferring: bool,
}

/// Destinations without paths that never trigger a sweep (a few in tests, so that they
/// sweep).
const SWEEP_MIN: usize = if cfg!(test) { 4 } else { 1024 };

/// A log shorter than this is never compacted.
const LOG_MIN: usize = 4096;

/// How many prefixes a session takes at once: a few kilobytes of UPDATEs, enough for large
/// writes, and small enough that hundreds of sessions with a batch in flight each stay small
/// (larger batches were slower and took more memory in `tabby bench rib`).
pub const BATCH: usize = 1024;

impl Rib {
    /// An empty table.
    pub fn new(config: RibConfig) -> Rib {
        let deferring = config.restarting;
        Rib {
            config,
            peers: HashMap::new(),
            dests: Vec::new(),
            index: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            free: Vec::new(),
            live: 0,
            log_after_compaction: 0,
            tombstones: 0,
            tombstones_after_sweep: 0,
            sets: Sets::new(),
            log: Log::default(),
            feeds: 0,
            idle: Vec::new(),
            grew: false,
            changes: Vec::new(),
            woken: Vec::new(),
            deferring,
        }
    }

    /// The settings.
    pub fn config(&self) -> &RibConfig {
        &self.config
    }

    /// True while a restarting speaker holds its first advertisement back.
    pub fn deferring(&self) -> bool {
        self.deferring
    }

    /// Number of distinct attribute sets held.
    pub fn attribute_sets(&self) -> usize {
        self.sets.len()
    }

    // ---- slots ---------------------------------------------------------------------------

    fn find(&self, prefix: &Prefix) -> Option<u32> {
        let hash = self.hasher.hash_one(prefix);
        let dests = &self.dests;
        self.index
            .find(hash, |&slot| dests[slot as usize].prefix == *prefix)
            .copied()
    }

    /// The prefix's slot, and whether it was there already.
    fn find_or_insert(&mut self, prefix: Prefix) -> (u32, bool) {
        if let Some(slot) = self.find(&prefix) {
            return (slot, true);
        }
        let slot = match self.free.pop() {
            Some(slot) => {
                self.dests[slot as usize] = Dest::new(prefix);
                slot
            }
            None => {
                self.dests.push(Dest::new(prefix));
                // More than 4 billion destinations do not fit in memory first.
                u32::try_from(self.dests.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let (dests, hasher) = (&self.dests, &self.hasher);
        self.index
            .insert_unique(hasher.hash_one(prefix), slot, |&s| {
                hasher.hash_one(dests[s as usize].prefix)
            });
        (slot, false)
    }

    /// A destination lost its last path: its slot is free once no peer holds it (was sent
    /// it and not yet its withdrawal). Such slots are found by a sweep, when they are many.
    fn emptied(&mut self, slot: u32) {
        if self.feeds == 0 {
            self.free_slot(slot);
        } else {
            self.tombstones += 1;
            self.maybe_sweep();
        }
    }

    fn free_slot(&mut self, slot: u32) {
        let Some(dest) = self.dests.get(slot as usize) else {
            return;
        };
        let hash = self.hasher.hash_one(dest.prefix);
        if let Ok(entry) = self.index.find_entry(hash, |&s| s == slot) {
            entry.remove();
            self.free.push(slot);
        }
    }

    /// Sweeps once the destinations without paths are a quarter of the slots (and more
    /// than twice what the last sweep left): a sweep costs a pass over every peer's bits,
    /// paid for by the withdrawals that made the work.
    fn maybe_sweep(&mut self) {
        let threshold = (self.dests.len() / 4)
            .max(2 * self.tombstones_after_sweep)
            .max(SWEEP_MIN);
        if self.tombstones >= threshold {
            self.sweep();
        }
    }

    /// Frees every slot whose destination has no path and that no peer holds.
    fn sweep(&mut self) {
        let mut held = Bits::default();
        for feed in self.peers.values().filter_map(|e| e.feed.as_ref()) {
            held.union(&feed.sent);
        }
        let empty: Vec<u32> = self
            .index
            .iter()
            .copied()
            .filter(|&slot| self.dests[slot as usize].paths.is_empty() && !held.get(slot))
            .collect();
        for slot in empty {
            self.free_slot(slot);
            self.tombstones -= 1;
        }
        self.tombstones_after_sweep = self.tombstones;
    }

    // ---- peers ---------------------------------------------------------------------------

    /// A session reached OpenConfirm with a peer that sent `restart`: a restarting speaker
    /// will wait for its End-of-RIB.
    pub fn peer_opening(&mut self, address: IpAddr, restart: Option<&PeerRestart>) {
        let entry = self.peers.entry(address).or_default();
        entry.opening = restart.is_some_and(|r| !r.restarting);
    }

    /// A session that was opening failed before Established.
    pub fn peer_not_opening(&mut self, address: IpAddr) {
        if let Some(entry) = self.peers.get_mut(&address) {
            entry.opening = false;
        }
        self.check_deferral();
    }

    /// A session reached Established: the peer gets the whole table (unless we defer), then
    /// End-of-RIB for each family. Stale paths of families the peer did not keep forwarding
    /// state for go now (RFC 4724 §4.2).
    pub fn peer_up(&mut self, session: PeerSession) {
        let address = session.address;
        self.drop_feed(address);
        let from = Arc::new(PathFrom {
            address,
            router_id: session.router_id,
            ebgp: session.kind == PeerKind::External,
            kind: session.kind,
        });
        let entry = self.peers.entry(address).or_default();
        let kept: BTreeSet<Family> = session
            .restart
            .as_ref()
            .map(|r| r.families.iter().filter(|(_, f)| *f).map(|(f, _)| *f))
            .into_iter()
            .flatten()
            .collect();
        let gone: Vec<Family> = entry.stale.difference(&kept).copied().collect();
        entry.session = Some(session);
        entry.from = Some(from);
        entry.eor.clear();
        entry.disabled.clear();
        entry.opening = false;
        entry.held = self.deferring;
        for family in gone {
            self.sweep_stale(address, Some(family));
        }
        if !self.deferring {
            self.start_feed(address, true);
        }
        self.check_deferral();
    }

    /// The session went down. The peer's paths of `keep` families stay, marked stale, for a
    /// graceful restart (RFC 4724 §4.2); every other path of the peer goes.
    pub fn peer_down(&mut self, address: IpAddr, keep: &[Family]) {
        self.drop_feed(address);
        let Some(entry) = self.peers.get_mut(&address) else {
            return;
        };
        entry.session = None;
        entry.opening = false;
        entry.held = false;
        entry.eor.clear();
        entry.refused.clear();
        for family in keep {
            entry.stale.insert(*family);
        }
        for (prefix, path_id, stale) in self.paths_of(address, None) {
            if keep.contains(&prefix.family()) {
                if !stale {
                    self.mark_stale(address, prefix, path_id);
                }
            } else {
                self.remove_path(address, prefix, path_id);
            }
        }
        self.check_deferral();
    }

    /// Forgets a peer and everything it announced.
    pub fn remove_peer(&mut self, address: IpAddr) {
        self.peer_down(address, &[]);
        self.peers.remove(&address);
        self.woken.retain(|a| *a != address);
        self.check_deferral();
    }

    /// Drops the stale paths of a peer, of one family or all (its End-of-RIB arrived, or its
    /// restart or stale time ran out).
    pub fn sweep_stale(&mut self, address: IpAddr, family: Option<Family>) {
        let Some(entry) = self.peers.get_mut(&address) else {
            return;
        };
        let families: Vec<Family> = match family {
            Some(f) => entry.stale.take(&f).into_iter().collect(),
            None => std::mem::take(&mut entry.stale).into_iter().collect(),
        };
        if families.is_empty() || entry.stale_paths == 0 {
            return;
        }
        for (prefix, path_id, stale) in self.paths_of(address, Some(&families)) {
            if stale {
                self.remove_path(address, prefix, path_id);
            }
        }
    }

    /// The paths of a peer in the table, of `families` or all: (prefix, path id, stale).
    fn paths_of(&self, address: IpAddr, families: Option<&[Family]>) -> Vec<(Prefix, u32, bool)> {
        let mut out = Vec::new();
        for dest in &self.dests {
            if families.is_some_and(|f| !f.contains(&dest.prefix.family())) {
                continue;
            }
            for p in dest.paths.as_slice() {
                if p.from.as_ref().is_some_and(|f| f.address == address) {
                    out.push((dest.prefix, p.path_id, p.stale));
                }
            }
        }
        out
    }

    fn mark_stale(&mut self, address: IpAddr, prefix: Prefix, path_id: u32) {
        let mut marked = false;
        self.modify(prefix, |paths| {
            for p in paths.as_mut_slice() {
                if !p.stale && same_source(p, address, path_id) {
                    p.stale = true;
                    marked = true;
                }
            }
        });
        if marked {
            if let Some(e) = self.peers.get_mut(&address) {
                e.stale_paths += 1;
            }
        }
    }

    /// Families of a peer with stale paths.
    pub fn stale_families(&self, address: IpAddr) -> Vec<Family> {
        self.peers
            .get(&address)
            .map(|e| e.stale.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Counters of a peer.
    pub fn counts(&self, address: IpAddr) -> PeerCounts {
        let Some(e) = self.peers.get(&address) else {
            return PeerCounts::default();
        };
        let live = if e.session.is_some() {
            e.accepted.saturating_sub(e.stale_paths)
        } else {
            0
        };
        PeerCounts {
            received: live + e.refused.len() as u64,
            accepted: live,
            advertised: e.advertised,
            stale: e.stale_paths,
        }
    }

    /// True when the peer's End-of-RIB arrived for every family of its session.
    pub fn end_of_rib_received(&self, address: IpAddr) -> bool {
        self.peers.get(&address).is_some_and(|e| {
            e.session
                .as_ref()
                .is_some_and(|s| s.families.iter().all(|f| e.eor.contains(f)))
        })
    }

    // ---- feeds ---------------------------------------------------------------------------

    /// Starts the peer on a walk of the whole table, then the log from its current end;
    /// `end_of_rib`: the initial table, End-of-RIB follows it. A peer with a feed already
    /// walks again (a refresh) and keeps an End-of-RIB it still owes.
    fn start_feed(&mut self, address: IpAddr, end_of_rib: bool) {
        let end = self.log.end();
        let Some(entry) = self.peers.get_mut(&address) else {
            return;
        };
        let Some(session) = &entry.session else {
            return;
        };
        let families = if end_of_rib {
            session.families.clone()
        } else {
            Vec::new()
        };
        match &mut entry.feed {
            Some(feed) => {
                feed.walk = Some(0);
                feed.idle = false;
                if end_of_rib {
                    feed.end_of_rib = families;
                }
            }
            None => {
                entry.feed = Some(Feed {
                    cursor: end,
                    walk: Some(0),
                    end_of_rib: families,
                    sent: Bits::default(),
                    idle: false,
                });
                entry.advertised = 0;
                self.feeds += 1;
                // Entries before `end` are not this peer's to read: a change of their
                // destinations after its walk passed them needs a new entry.
                self.log.read_to(end);
            }
        }
        self.woken.push(address);
    }

    /// Ends the peer's feed: what it was sent no longer holds slots.
    fn drop_feed(&mut self, address: IpAddr) {
        let Some(feed) = self.peers.get_mut(&address).and_then(|e| {
            e.advertised = 0;
            e.feed.take()
        }) else {
            return;
        };
        self.feeds -= 1;
        drop(feed);
        // It may have been the slowest reader: the next batch compacts.
        self.log_after_compaction = 0;
        if self.feeds == 0 {
            self.forget_log_before(self.log.end());
            self.sweep();
        } else {
            self.maybe_sweep();
        }
    }

    /// Compacts the log once it is long (more than half the table) and has doubled since
    /// the last compaction: with a peer that does not read, every other peer's batch would
    /// otherwise scan every peer's cursor for nothing.
    fn maybe_compact_log(&mut self) {
        let len = self.log.len();
        if len > LOG_MIN && len > self.dests.len() / 2 && len >= 2 * self.log_after_compaction {
            self.compact_log();
            self.log_after_compaction = self.log.len();
        }
    }

    /// Forgets the log entries every feed has read.
    fn compact_log(&mut self) {
        let oldest = self
            .peers
            .values()
            .filter_map(|e| e.feed.as_ref().map(|f| f.cursor))
            .min()
            .unwrap_or_else(|| self.log.end());
        self.forget_log_before(oldest);
    }

    /// Forgets log entries, and that destinations are in the log where their last entry
    /// goes (so a destination's position always lies in the log's window).
    fn forget_log_before(&mut self, position: u64) {
        for (at, slot) in self.log.before(position) {
            if let Some(dest) = self.dests.get_mut(slot as usize) {
                if dest.queued == at as u32 {
                    dest.queued = feed::NEVER;
                }
            }
        }
        self.log.forget_before(position);
    }

    // ---- deferral ------------------------------------------------------------------------

    fn check_deferral(&mut self) {
        if !self.deferring {
            return;
        }
        let any_up = self.peers.values().any(|e| e.session.is_some());
        let waiting = self.peers.values().any(PeerEntry::awaited);
        if any_up && !waiting {
            self.end_deferral();
        }
    }

    /// Ends the deferral of a restarting speaker (every awaited End-of-RIB arrived, or the
    /// deferral timer ran out): every peer that is up gets the table.
    pub fn end_deferral(&mut self) {
        if !self.deferring {
            return;
        }
        self.deferring = false;
        let held: Vec<IpAddr> = self
            .peers
            .iter()
            .filter(|(_, e)| e.held)
            .map(|(a, _)| *a)
            .collect();
        for address in held {
            if let Some(e) = self.peers.get_mut(&address) {
                e.held = false;
            }
            self.start_feed(address, true);
        }
    }

    // ---- routes in -----------------------------------------------------------------------

    /// Applies an UPDATE from an Established peer (already corrected by RFC 7606: its
    /// treat-as-withdraw NLRI are among the withdrawals, a family it disables is dropped
    /// for the rest of the session).
    pub fn update(&mut self, address: IpAddr, update: &Update) {
        let Some(entry) = self.peers.get_mut(&address) else {
            return;
        };
        let Some(kind) = entry.session.as_ref().map(|s| s.kind) else {
            return;
        };
        let newly_disabled: Vec<Family> = update
            .disabled_families()
            .filter(|f| entry.disabled.insert(*f))
            .collect();
        for family in newly_disabled {
            self.drop_family(address, family);
        }
        if let Some(family) = update.is_end_of_rib() {
            if let Some(entry) = self.peers.get_mut(&address) {
                entry.eor.insert(family);
            }
            self.sweep_stale(address, Some(family));
            self.check_deferral();
            return;
        }
        for (_, nlri) in update.withdrawals() {
            self.withdraw_path(address, *nlri);
        }
        let mut attrs = update.attrs.clone();
        attrs.next_hop = None;
        let refused = self.refuses(kind, &attrs);
        let attrs = self.sets.attrs(attrs);
        let Some(from) = self.peers.get(&address).and_then(|e| e.from.clone()) else {
            return;
        };
        // The families the session takes routes of, read once per UPDATE.
        let accepted: Vec<Family> = self
            .peers
            .get(&address)
            .and_then(|e| {
                let s = e.session.as_ref()?;
                Some(
                    s.families
                        .iter()
                        .filter(|f| !e.disabled.contains(f))
                        .copied()
                        .collect(),
                )
            })
            .unwrap_or_default();
        // One UPDATE has one next hop per family: the route is interned once per change.
        let mut route: Option<Arc<Route>> = None;
        for (family, next_hop, nlri) in update.announced() {
            if !accepted.contains(&family) {
                continue;
            }
            match next_hop {
                Some(nh) if !refused => {
                    if let Some(e) = self.peers.get_mut(&address) {
                        if !e.refused.is_empty() {
                            e.refused.remove(nlri);
                        }
                    }
                    let route = match &route {
                        Some(r) if r.next_hop == Some(nh) => Arc::clone(r),
                        _ => {
                            let r = self.sets.route(Some(nh), &attrs);
                            route = Some(Arc::clone(&r));
                            r
                        }
                    };
                    let path = Stored {
                        from: Some(Arc::clone(&from)),
                        route,
                        path_id: nlri.path_id.unwrap_or(0),
                        stale: false,
                    };
                    self.put_path(address, nlri.prefix, path);
                }
                _ => {
                    // A loop (RFC 4271 §9.1.2, RFC 4456 §8): the announcement replaces
                    // what the peer had for the NLRI, so that goes.
                    self.withdraw_path(address, *nlri);
                    if let Some(e) = self.peers.get_mut(&address) {
                        e.refused.insert(*nlri);
                    }
                }
            }
        }
    }

    /// Loop checks of received routes: our AS in an external route's path (RFC 4271
    /// §9.1.2), our router ID as ORIGINATOR_ID or our cluster ID in the CLUSTER_LIST of an
    /// internal one (RFC 4456 §8).
    fn refuses(&self, kind: PeerKind, attrs: &PathAttributes) -> bool {
        if kind == PeerKind::External {
            return attrs
                .as_path
                .as_ref()
                .is_some_and(|p| p.contains(self.config.local_as));
        }
        attrs.originator_id == Some(self.config.router_id)
            || self
                .config
                .cluster_id
                .is_some_and(|c| attrs.cluster_list.contains(&c))
    }

    fn withdraw_path(&mut self, address: IpAddr, nlri: Nlri) {
        if let Some(e) = self.peers.get_mut(&address) {
            if !e.refused.is_empty() {
                e.refused.remove(&nlri);
            }
        }
        self.remove_path(address, nlri.prefix, nlri.path_id.unwrap_or(0));
    }

    fn drop_family(&mut self, address: IpAddr, family: Family) {
        match self.peers.get_mut(&address) {
            Some(e) => e.refused.retain(|n| n.prefix.family() != family),
            None => return,
        }
        for (prefix, path_id, _) in self.paths_of(address, Some(&[family])) {
            self.remove_path(address, prefix, path_id);
        }
    }

    /// Adds or replaces the peer's path to `prefix`, keeping the peer's counters.
    fn put_path(&mut self, address: IpAddr, prefix: Prefix, path: Stored) {
        let mut replaced = None;
        self.modify(prefix, |paths| {
            match paths
                .as_slice()
                .iter()
                .position(|p| same_source(p, address, path.path_id))
            {
                Some(i) => {
                    let slot = &mut paths.as_mut_slice()[i];
                    replaced = Some(slot.stale);
                    *slot = path;
                }
                None => paths.push(path),
            }
        });
        if let Some(e) = self.peers.get_mut(&address) {
            match replaced {
                None => e.accepted += 1,
                Some(true) => e.stale_paths = e.stale_paths.saturating_sub(1),
                Some(false) => {}
            }
        }
    }

    /// Removes the peer's path to `prefix`, if it has one, keeping the peer's counters.
    fn remove_path(&mut self, address: IpAddr, prefix: Prefix, path_id: u32) {
        let has = self.find(&prefix).is_some_and(|slot| {
            self.dests[slot as usize]
                .paths
                .as_slice()
                .iter()
                .any(|p| same_source(p, address, path_id))
        });
        if !has {
            return;
        }
        let mut removed = None;
        self.modify(prefix, |paths| {
            if let Some(i) = paths
                .as_slice()
                .iter()
                .position(|p| same_source(p, address, path_id))
            {
                removed = paths.remove(i).map(|p| p.stale);
            }
        });
        if let (Some(stale), Some(e)) = (removed, self.peers.get_mut(&address)) {
            e.accepted = e.accepted.saturating_sub(1);
            if stale {
                e.stale_paths = e.stale_paths.saturating_sub(1);
            }
        }
    }

    // ---- our own routes ------------------------------------------------------------------

    /// Originates `prefix` (replacing an earlier origination of it).
    pub fn originate(&mut self, prefix: Prefix, origination: &Origination) {
        let attrs = self.sets.attrs(PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::default()),
            communities: origination.communities.clone(),
            large_communities: origination.large_communities.clone(),
            ..PathAttributes::default()
        });
        let next_hop = origination
            .next_hop
            .and_then(|nh| export::next_hop_for(prefix.family(), nh));
        let path = Stored {
            from: None,
            route: self.sets.route(next_hop, &attrs),
            path_id: 0,
            stale: false,
        };
        self.modify(prefix, |paths| {
            paths.retain(|p| p.from.is_some());
            paths.push(path);
        });
    }

    /// Stops originating `prefix`.
    pub fn withdraw(&mut self, prefix: Prefix) {
        if self.find(&prefix).is_some() {
            self.modify(prefix, |paths| paths.retain(|p| p.from.is_some()));
        }
    }

    // ---- the decision and its consequences -----------------------------------------------

    /// Changes a prefix's paths, reruns the decision process and queues the result.
    fn modify(&mut self, prefix: Prefix, change: impl FnOnce(&mut Paths)) {
        let (slot, existed) = self.find_or_insert(prefix);
        let dest = &mut self.dests[slot as usize];
        let old_best = dest.paths.first().map(Stored::export_key);
        let old_hops = hops(dest);
        let was_live = !dest.paths.is_empty();
        change(&mut dest.paths);
        let is_live = !dest.paths.is_empty();
        decision::rank(dest.paths.as_mut_slice());
        let new_best = dest.paths.first().map(Stored::export_key);
        let new_hops = hops(dest);
        match (was_live, is_live) {
            (false, true) => {
                self.live += 1;
                if existed {
                    // Back before a sweep freed its slot.
                    self.tombstones -= 1;
                }
            }
            (true, false) => self.live -= 1,
            (false, false) if !existed => self.free_slot(slot),
            _ => {}
        }
        if old_hops != new_hops {
            self.changes.push(Selected {
                prefix,
                hops: new_hops,
            });
        }
        if old_best != new_best && self.feeds > 0 {
            let dest = &mut self.dests[slot as usize];
            if !self.log.unread(dest.queued) {
                dest.queued = self.log.push(slot);
                self.grew = true;
            }
        }
        if was_live && !is_live {
            self.emptied(slot);
        }
    }

    // ---- drains --------------------------------------------------------------------------

    /// Multipath sets changed since the last call, in the order they changed.
    pub fn take_changes(&mut self) -> Vec<Selected> {
        std::mem::take(&mut self.changes)
    }

    /// Peers with something new to send since the last call.
    pub fn take_woken(&mut self) -> Vec<IpAddr> {
        let mut woken = std::mem::take(&mut self.woken);
        if std::mem::take(&mut self.grew) {
            for address in self.idle.drain(..) {
                if let Some(feed) = self.peers.get_mut(&address).and_then(|e| e.feed.as_mut()) {
                    if feed.idle {
                        feed.idle = false;
                        woken.push(address);
                    }
                }
            }
        }
        woken.sort_unstable();
        woken.dedup();
        woken
    }

    /// The next batch (at most `limit` prefixes) of what the peer's session has to send;
    /// empty while it is down or held. `more` says whether another batch waits.
    pub fn take_outbox(&mut self, address: IpAddr, limit: usize) -> Outbox {
        let mut out = Outbox::default();
        let mut withdrawn_empty = false;
        {
            let Rib {
                config,
                peers,
                dests,
                sets,
                log,
                idle,
                ..
            } = self;
            let Some(entry) = peers.get_mut(&address) else {
                return out;
            };
            let (Some(session), Some(feed), false) =
                (entry.session.as_ref(), entry.feed.as_mut(), entry.held)
            else {
                return out;
            };
            let mut step = Step {
                config,
                session,
                sets,
                feed_sent: &mut feed.sent,
                advertised: &mut entry.advertised,
                memo: None,
                out: &mut out,
                withdrawn_empty: &mut withdrawn_empty,
            };
            let mut taken = 0;
            if let Some(start) = feed.walk {
                let end = (start as usize).saturating_add(limit).min(dests.len());
                for (slot, dest) in dests.iter().enumerate().take(end).skip(start as usize) {
                    // A destination with a log entry ahead of the cursor is sent when the
                    // cursor gets there, as it is then: the walk and the log never both
                    // send it, so a prefix is in a batch once.
                    if log
                        .slot_position(dest.queued)
                        .is_some_and(|p| p >= feed.cursor)
                    {
                        continue;
                    }
                    step.run(dest, slot as u32);
                }
                taken = end - start as usize;
                if end >= dests.len() {
                    feed.walk = None;
                    step.out.end_of_rib = std::mem::take(&mut feed.end_of_rib);
                } else {
                    feed.walk = Some(end as u32);
                }
            }
            if feed.walk.is_none() {
                while taken < limit && feed.cursor < log.end() {
                    let position = feed.cursor;
                    feed.cursor += 1;
                    let Some(slot) = log.get(position) else {
                        continue;
                    };
                    match dests.get(slot as usize) {
                        // Only its last entry counts: the destination is read as it is now.
                        Some(dest) if dest.queued == position as u32 => {
                            step.run(dest, slot);
                            taken += 1;
                        }
                        _ => {}
                    }
                }
                log.read_to(feed.cursor);
            }
            let more = feed.walk.is_some() || feed.cursor < log.end();
            step.out.more = more;
            if !more && !feed.idle {
                feed.idle = true;
                idle.push(address);
            }
        }
        if withdrawn_empty {
            self.maybe_sweep();
        }
        self.maybe_compact_log();
        out
    }

    /// Queues the whole table for the peer again (it sent a ROUTE-REFRESH, RFC 2918 §4).
    /// A refresh is not the initial table: no End-of-RIB unless enhanced route refresh
    /// (RFC 7313) was negotiated, which tabby does not advertise.
    pub fn refresh(&mut self, address: IpAddr) {
        if self.peers.get(&address).is_some_and(|e| e.feed.is_some()) {
            self.start_feed(address, false);
        }
    }

    // ---- snapshots -----------------------------------------------------------------------

    fn live(&self) -> impl Iterator<Item = &Dest> {
        self.dests.iter().filter(|d| !d.paths.is_empty())
    }

    /// The multipath set of every prefix that has one, in prefix order.
    pub fn selected(&self) -> Vec<Selected> {
        let mut all: Vec<Selected> = self
            .live()
            .map(|dest| Selected {
                prefix: dest.prefix,
                hops: hops(dest),
            })
            .filter(|s| !s.hops.is_empty())
            .collect();
        all.sort_by_key(|s| s.prefix);
        all
    }

    /// The paths of a prefix, best first.
    pub fn paths(&self, prefix: &Prefix) -> Vec<Path> {
        self.find(prefix)
            .map(|slot| {
                let paths = self.dests[slot as usize].paths.as_slice();
                paths.iter().map(Stored::to_path).collect()
            })
            .unwrap_or_default()
    }

    /// Every prefix with its paths, best first, in prefix order.
    pub fn table(&self) -> Vec<(Prefix, Vec<Path>)> {
        let mut all: Vec<(Prefix, Vec<Path>)> = self
            .live()
            .map(|d| {
                let paths = d.paths.as_slice().iter().map(Stored::to_path).collect();
                (d.prefix, paths)
            })
            .collect();
        all.sort_by_key(|(p, _)| *p);
        all
    }

    /// Number of prefixes in the table.
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when the table holds no prefix.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The routes a peer announced (those in the table, stale ones included), in prefix
    /// order.
    pub fn received(&self, address: IpAddr) -> Vec<ReceivedRoute> {
        let mut out: Vec<ReceivedRoute> = Vec::new();
        for dest in self.live() {
            for (i, p) in dest.paths.as_slice().iter().enumerate() {
                if p.from.as_ref().is_some_and(|f| f.address == address) {
                    out.push(ReceivedRoute {
                        nlri: Nlri {
                            prefix: dest.prefix,
                            path_id: (p.path_id != 0).then_some(p.path_id),
                        },
                        next_hop: p.next_hop(),
                        attrs: Arc::clone(p.attrs()),
                        stale: p.stale,
                        best: i == 0,
                    });
                }
            }
        }
        out.sort_by_key(|r| r.nlri);
        out
    }
}

/// One peer's side of a batch: decides what it is sent for a destination and keeps its
/// bits and counters.
struct Step<'a> {
    config: &'a RibConfig,
    session: &'a PeerSession,
    sets: &'a mut Sets,
    feed_sent: &'a mut Bits,
    advertised: &'a mut u64,
    /// The last export computed: destinations of one UPDATE arrive together and share it.
    memo: Option<((usize, export::Class, usize), Arc<PathAttributes>)>,
    out: &'a mut Outbox,
    /// A destination without paths was withdrawn: its slot may be free now.
    withdrawn_empty: &'a mut bool,
}

impl Step<'_> {
    fn run(&mut self, dest: &Dest, slot: u32) {
        let decided = dest.paths.first().and_then(|best| {
            let decision = export::decide(self.config, self.session, &dest.prefix, best)?;
            Some((best, decision))
        });
        match decided {
            Some((best, decision)) => {
                let key = (
                    Arc::as_ptr(best.attrs()) as usize,
                    decision.class,
                    best.from.as_ref().map_or(0, |f| Arc::as_ptr(f) as usize),
                );
                if self.memo.as_ref().is_none_or(|(k, _)| *k != key) {
                    let attrs = self.sets.exported(self.config, decision.class, best);
                    self.memo = Some((key, attrs));
                }
                if let Some((_, attrs)) = &self.memo {
                    self.out.announce(dest.prefix, decision.next_hop, attrs);
                }
                if self.feed_sent.set(slot) {
                    *self.advertised += 1;
                }
            }
            None if self.feed_sent.clear(slot) => {
                *self.advertised = self.advertised.saturating_sub(1);
                self.out.withdraw(dest.prefix);
                *self.withdrawn_empty |= dest.paths.is_empty();
            }
            None => {}
        }
    }
}

fn same_source(p: &Stored, address: IpAddr, path_id: u32) -> bool {
    p.path_id == path_id && p.from.as_ref().is_some_and(|f| f.address == address)
}

/// The forwarding hops of a destination: its multipath set, when the best path is a peer's.
fn hops(dest: &Dest) -> Vec<Hop> {
    let mut hops: Vec<Hop> = Vec::new();
    let paths = dest.paths.as_slice();
    for p in paths.iter().take(decision::multipath(paths)) {
        let (Some(from), Some(next_hop)) = (&p.from, p.next_hop()) else {
            // Our own route is best: nothing learned is forwarded by.
            return Vec::new();
        };
        let hop = Hop {
            peer: from.address,
            next_hop,
        };
        if !hops.iter().any(|h| h.next_hop == hop.next_hop) {
            hops.push(hop);
        }
    }
    hops
}
