//! The routing table of a speaker, without I/O: the Adj-RIBs-In of every peer and the
//! Loc-RIB (RFC 4271 §3.2), the decision process (§9.1), what each peer is sent (§9.1.3 and
//! the reflection rules of RFC 4456), the stale routes of graceful restart (RFC 4724) and the
//! deferred first advertisement of a restarting speaker.
//!
//! The speaker's tasks call it under a lock: sessions hand it decoded UPDATEs and session
//! ups and downs; it answers with what changed, in two drains:
//! - [`Rib::take_changes`]: prefixes whose multipath set (what the kernel should forward
//!   by) changed;
//! - [`Rib::take_woken`] and [`Rib::take_outbox`]: per peer, the prefixes to announce or
//!   withdraw, coalesced (a prefix that changes twice before the session writes is sent once)
//!   and ready to pack, their attributes interned so equal attribute sets are one allocation
//!   and one UPDATE.
//!
//! Nothing here stores an Adj-RIB-Out: what a peer was sent is a function of the best path
//! and the peer, so a best-path change computes the old and new export and sends the
//! difference. A reflector with a thousand clients thus holds its table once, not a thousand
//! times.

mod decision;
mod export;
pub mod outbox;
#[cfg(test)]
mod tests;

pub use export::NextHopMode;

use crate::prefix::{Family, Prefix};
use crate::wire::{AsPath, LargeCommunity, NextHop, Nlri, Origin, PathAttributes, Update};
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::collections::BTreeSet;
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

/// What a session has to send: prefixes to announce (`Some`) or withdraw (`None`), and the
/// families whose End-of-RIB follows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outbox {
    /// Coalesced changes, by prefix.
    pub routes: HashMap<Prefix, Option<Export>>,
    /// End-of-RIB markers to send after `routes` (RFC 4724 §2).
    pub end_of_rib: Vec<Family>,
}

impl Outbox {
    /// Nothing to send.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.end_of_rib.is_empty()
    }

    /// Appends the UPDATEs of the outbox to `buf` for a session of context `ctx`: see
    /// [`outbox::encode`]. Returns the number of messages.
    pub fn encode(&self, ctx: &crate::wire::Context, buf: &mut bytes::BytesMut) -> usize {
        outbox::encode(ctx, self, buf)
    }
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
    advertised: u64,
    outbox: Outbox,
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

#[derive(Debug, Default)]
struct Dest {
    /// Best first; the first `multipath` form the multipath set.
    paths: Vec<Path>,
    multipath: usize,
}

/// (source attribute set's address, class, originator) of a memoised export.
type ExportKey = (usize, export::Class, Option<Ipv4Addr>);

/// The table. See the module documentation.
#[derive(Debug)]
pub struct Rib {
    config: RibConfig,
    peers: HashMap<IpAddr, PeerEntry>,
    table: HashMap<Prefix, Dest>,
    interner: HashSet<Arc<PathAttributes>>,
    interned_after_gc: usize,
    /// Export attributes already computed: (source attribute set, class, originator) ->
    /// the set it leaves with. The source `Arc` is kept in the value so the pointer key
    /// cannot be reused while the entry lives.
    exports: HashMap<ExportKey, (Arc<PathAttributes>, Arc<PathAttributes>)>,
    changes: Vec<Selected>,
    woken: BTreeSet<IpAddr>,
    deferring: bool,
}

impl Rib {
    /// An empty table.
    pub fn new(config: RibConfig) -> Rib {
        let deferring = config.restarting;
        Rib {
            config,
            peers: HashMap::new(),
            table: HashMap::new(),
            interner: HashSet::new(),
            interned_after_gc: 0,
            exports: HashMap::new(),
            changes: Vec::new(),
            woken: BTreeSet::new(),
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

    /// Interns an attribute set: equal sets share one allocation.
    fn intern(&mut self, attrs: PathAttributes) -> Arc<PathAttributes> {
        if let Some(a) = self.interner.get(&attrs) {
            return Arc::clone(a);
        }
        // Forget sets nothing uses any more once the interner has doubled since the last
        // sweep: amortised constant time per insertion.
        if self.interner.len() > 1024 && self.interner.len() > 2 * self.interned_after_gc {
            // Export entries whose source set only they still hold go first, so that their
            // sets are free to go too.
            self.exports
                .retain(|_, (source, _)| Arc::strong_count(source) > 2);
            self.interner.retain(|a| Arc::strong_count(a) > 1);
            self.interned_after_gc = self.interner.len();
        }
        let a = Arc::new(attrs);
        self.interner.insert(Arc::clone(&a));
        a
    }

    /// Number of distinct attribute sets held.
    pub fn attribute_sets(&self) -> usize {
        self.interner.len()
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
        entry.outbox = Outbox::default();
        entry.advertised = 0;
        entry.held = self.deferring;
        for family in gone {
            self.sweep_stale(address, Some(family));
        }
        if !self.deferring {
            self.send_table(address);
        }
        self.check_deferral();
    }

    /// The session went down. The peer's paths of `keep` families stay, marked stale, for a
    /// graceful restart (RFC 4724 §4.2); every other path of the peer goes.
    pub fn peer_down(&mut self, address: IpAddr, keep: &[Family]) {
        let Some(entry) = self.peers.get_mut(&address) else {
            return;
        };
        entry.session = None;
        entry.opening = false;
        entry.held = false;
        entry.outbox = Outbox::default();
        entry.advertised = 0;
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
        self.woken.remove(&address);
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
        for (prefix, dest) in &self.table {
            if families.is_some_and(|f| !f.contains(&prefix.family())) {
                continue;
            }
            for p in &dest.paths {
                if p.from.as_ref().is_some_and(|f| f.address == address) {
                    out.push((*prefix, p.path_id, p.stale));
                }
            }
        }
        out
    }

    fn mark_stale(&mut self, address: IpAddr, prefix: Prefix, path_id: u32) {
        let mut marked = false;
        self.modify(prefix, |paths| {
            for p in paths.iter_mut() {
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
            self.send_table(address);
        }
    }

    fn send_table(&mut self, address: IpAddr) {
        let Some(session) = self.peers.get(&address).and_then(|e| e.session.clone()) else {
            return;
        };
        let mut routes = HashMap::with_capacity(self.table.len());
        let mut cache = export::Cache::default();
        let prefixes: Vec<Prefix> = self.table.keys().copied().collect();
        for prefix in prefixes {
            let Some(best) = self
                .table
                .get(&prefix)
                .and_then(|d| d.paths.first())
                .cloned()
            else {
                continue;
            };
            if let Some(e) = self.export(&mut cache, &session, &prefix, &best) {
                routes.insert(prefix, Some(e));
            }
        }
        if let Some(entry) = self.peers.get_mut(&address) {
            entry.advertised = routes.len() as u64;
            entry.outbox.routes = routes;
            entry.outbox.end_of_rib = session.families.clone();
            self.woken.insert(address);
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
        let Some(session) = entry.session.clone() else {
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
        let refused = self.refuses(&session, &attrs);
        let attrs = self.intern(attrs);
        let Some(from) = self.peers.get(&address).and_then(|e| e.from.clone()) else {
            return;
        };
        let disabled = self
            .peers
            .get(&address)
            .map(|e| e.disabled.clone())
            .unwrap_or_default();
        for (family, next_hop, nlri) in update.announced() {
            if !session.families.contains(&family) || disabled.contains(&family) {
                continue;
            }
            match next_hop {
                Some(nh) if !refused => {
                    if let Some(e) = self.peers.get_mut(&address) {
                        e.refused.remove(nlri);
                    }
                    let path = Path {
                        from: Some(Arc::clone(&from)),
                        path_id: nlri.path_id.unwrap_or(0),
                        next_hop: Some(nh),
                        attrs: Arc::clone(&attrs),
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
    fn refuses(&self, session: &PeerSession, attrs: &PathAttributes) -> bool {
        if session.kind == PeerKind::External {
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
            e.refused.remove(&nlri);
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
    fn put_path(&mut self, address: IpAddr, prefix: Prefix, path: Path) {
        let mut replaced = None;
        self.modify(prefix, |paths| {
            match paths
                .iter()
                .position(|p| same_source(p, address, path.path_id))
            {
                Some(i) => {
                    replaced = Some(paths[i].stale);
                    paths[i] = path;
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
        let has = self
            .table
            .get(&prefix)
            .is_some_and(|d| d.paths.iter().any(|p| same_source(p, address, path_id)));
        if !has {
            return;
        }
        let mut removed = None;
        self.modify(prefix, |paths| {
            if let Some(i) = paths.iter().position(|p| same_source(p, address, path_id)) {
                removed = Some(paths.remove(i).stale);
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
        let attrs = self.intern(PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::default()),
            communities: origination.communities.clone(),
            large_communities: origination.large_communities.clone(),
            ..PathAttributes::default()
        });
        let next_hop = origination
            .next_hop
            .and_then(|nh| export::next_hop_for(prefix.family(), nh));
        let path = Path {
            from: None,
            path_id: 0,
            next_hop,
            attrs,
            stale: false,
        };
        self.modify(prefix, |paths| {
            paths.retain(|p| p.from.is_some());
            paths.push(path);
        });
    }

    /// Stops originating `prefix`.
    pub fn withdraw(&mut self, prefix: Prefix) {
        self.modify(prefix, |paths| paths.retain(|p| p.from.is_some()));
    }

    // ---- the decision and its consequences -----------------------------------------------

    /// Changes a prefix's paths, reruns the decision process and propagates the result.
    fn modify(&mut self, prefix: Prefix, change: impl FnOnce(&mut Vec<Path>)) {
        let dest = self.table.entry(prefix).or_default();
        // Most prefixes have one path: no room for four (Vec's first growth) per prefix.
        if dest.paths.capacity() == 0 {
            dest.paths.reserve_exact(1);
        }
        let old_best = dest.paths.first().cloned();
        let old_hops = hops(dest);
        change(&mut dest.paths);
        dest.multipath = decision::rank(&mut dest.paths);
        let new_best = dest.paths.first().cloned();
        let new_hops = hops(dest);
        if dest.paths.is_empty() {
            self.table.remove(&prefix);
        }
        if old_hops != new_hops {
            self.changes.push(Selected {
                prefix,
                hops: new_hops,
            });
        }
        if old_best != new_best {
            self.propagate(&prefix, old_best.as_ref(), new_best.as_ref());
        }
    }

    /// Sends each peer the difference the best-path change makes to what it is sent.
    fn propagate(&mut self, prefix: &Prefix, old: Option<&Path>, new: Option<&Path>) {
        // Decide per peer first (borrowing the peers), then intern the few attribute sets
        // the decisions need (one per class and best path), then queue.
        let decide = |s: &PeerSession, best: Option<&Path>| {
            best.and_then(|p| export::decide(&self.config, s, prefix, p))
        };
        let decisions: Vec<(IpAddr, Option<export::Decision>, Option<export::Decision>)> = self
            .peers
            .iter()
            .filter(|(_, e)| !e.held)
            .filter_map(|(a, e)| {
                e.session
                    .as_ref()
                    .map(|s| (*a, decide(s, old), decide(s, new)))
            })
            .filter(|(_, before, after)| before.is_some() || after.is_some())
            .collect();
        if decisions.is_empty() {
            return;
        }
        let mut old_cache = export::Cache::default();
        let mut new_cache = export::Cache::default();
        for (address, before, after) in decisions {
            let before = match (before, old) {
                (Some(d), Some(p)) => Some(self.exported(&mut old_cache, d, p)),
                _ => None,
            };
            let after = match (after, new) {
                (Some(d), Some(p)) => Some(self.exported(&mut new_cache, d, p)),
                _ => None,
            };
            if before == after {
                continue;
            }
            let Some(entry) = self.peers.get_mut(&address) else {
                continue;
            };
            match (&before, &after) {
                (None, Some(_)) => entry.advertised += 1,
                (Some(_), None) => entry.advertised = entry.advertised.saturating_sub(1),
                _ => {}
            }
            entry.outbox.routes.insert(*prefix, after);
            self.woken.insert(address);
        }
    }

    /// The export of `best` under `decision`, its attributes computed once per class.
    fn exported(
        &mut self,
        cache: &mut export::Cache,
        decision: export::Decision,
        best: &Path,
    ) -> Export {
        let attrs = match cache.get(decision.class) {
            Some(a) => a,
            None => {
                let originator = best.from.as_ref().map(|f| f.router_id);
                let key = (
                    Arc::as_ptr(&best.attrs) as usize,
                    decision.class,
                    originator,
                );
                let a = match self.exports.get(&key) {
                    Some((_, a)) => Arc::clone(a),
                    None => {
                        let a = self.intern(export::attributes(&self.config, decision.class, best));
                        self.exports
                            .insert(key, (Arc::clone(&best.attrs), Arc::clone(&a)));
                        a
                    }
                };
                cache.put(decision.class, Arc::clone(&a));
                a
            }
        };
        Export {
            next_hop: decision.next_hop,
            attrs,
        }
    }

    fn export(
        &mut self,
        cache: &mut export::Cache,
        to: &PeerSession,
        prefix: &Prefix,
        best: &Path,
    ) -> Option<Export> {
        let decision = export::decide(&self.config, to, prefix, best)?;
        Some(self.exported(cache, decision, best))
    }

    // ---- drains --------------------------------------------------------------------------

    /// Multipath sets changed since the last call, in the order they changed.
    pub fn take_changes(&mut self) -> Vec<Selected> {
        std::mem::take(&mut self.changes)
    }

    /// Peers with something new in their outbox since the last call.
    pub fn take_woken(&mut self) -> Vec<IpAddr> {
        std::mem::take(&mut self.woken).into_iter().collect()
    }

    /// What the peer's session has to send; empty while it is down or held.
    pub fn take_outbox(&mut self, address: IpAddr) -> Outbox {
        match self.peers.get_mut(&address) {
            Some(e) if e.session.is_some() && !e.held => std::mem::take(&mut e.outbox),
            _ => Outbox::default(),
        }
    }

    /// Queues the whole table for the peer again (it sent a ROUTE-REFRESH, RFC 2918 §4).
    pub fn refresh(&mut self, address: IpAddr) {
        if self.peers.get(&address).is_some_and(|e| !e.held) {
            self.send_table(address);
            // A refresh is not the initial table: no End-of-RIB unless enhanced route
            // refresh (RFC 7313) was negotiated, which tabby does not advertise.
            if let Some(e) = self.peers.get_mut(&address) {
                e.outbox.end_of_rib.clear();
            }
        }
    }

    // ---- snapshots -----------------------------------------------------------------------

    /// The multipath set of every prefix that has one, in prefix order.
    pub fn selected(&self) -> Vec<Selected> {
        let mut all: Vec<Selected> = self
            .table
            .iter()
            .map(|(prefix, dest)| Selected {
                prefix: *prefix,
                hops: hops(dest),
            })
            .filter(|s| !s.hops.is_empty())
            .collect();
        all.sort_by_key(|s| s.prefix);
        all
    }

    /// The paths of a prefix, best first.
    pub fn paths(&self, prefix: &Prefix) -> Vec<Path> {
        self.table
            .get(prefix)
            .map(|d| d.paths.clone())
            .unwrap_or_default()
    }

    /// Every prefix with its paths, best first, in prefix order.
    pub fn table(&self) -> Vec<(Prefix, Vec<Path>)> {
        let mut all: Vec<(Prefix, Vec<Path>)> = self
            .table
            .iter()
            .map(|(p, d)| (*p, d.paths.clone()))
            .collect();
        all.sort_by_key(|(p, _)| *p);
        all
    }

    /// Number of prefixes in the table.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when the table holds no prefix.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The routes a peer announced (those in the table, stale ones included), in prefix
    /// order.
    pub fn received(&self, address: IpAddr) -> Vec<ReceivedRoute> {
        let mut out: Vec<ReceivedRoute> = Vec::new();
        for (prefix, dest) in &self.table {
            for (i, p) in dest.paths.iter().enumerate() {
                if p.from.as_ref().is_some_and(|f| f.address == address) {
                    out.push(ReceivedRoute {
                        nlri: Nlri {
                            prefix: *prefix,
                            path_id: (p.path_id != 0).then_some(p.path_id),
                        },
                        next_hop: p.next_hop,
                        attrs: Arc::clone(&p.attrs),
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

fn same_source(p: &Path, address: IpAddr, path_id: u32) -> bool {
    p.path_id == path_id && p.from.as_ref().is_some_and(|f| f.address == address)
}

/// The forwarding hops of a destination: its multipath set, when the best path is a peer's.
fn hops(dest: &Dest) -> Vec<Hop> {
    let mut hops: Vec<Hop> = Vec::new();
    for p in dest.paths.iter().take(dest.multipath) {
        let (Some(from), Some(next_hop)) = (&p.from, p.next_hop) else {
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
