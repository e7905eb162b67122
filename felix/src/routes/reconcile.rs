//! The sans-IO core of the route manager: the desired table, a mirror of the kernel's main
//! table, and the reconciler that turns the difference into an ordered list of changes.
//!
//! Nothing here does I/O or reads a clock. The netlink driver ([`super::netlink`]) parses
//! kernel messages into [`KernelRoute`]s and [`Link`]s, asks [`reconcile`] for a [`Plan`], and
//! writes the plan's [`Change`]s.
//!
//! Ownership (shared/DESIGN.md §4, Felix's rule): a kernel route in the main table is ours when
//! it carries our protocol, or when it leaves through a workload interface (a CNI plugin may have
//! written the pod's route first, with any protocol). Kernel-made routes (`proto kernel`: the
//! connected subnets, IPv6 `fe80::/64`) and link-local or multicast destinations are never ours,
//! even on workload interfaces. Every other route is never touched.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Dst, NextHop, Route, Target};

/// The kernel's main routing table (`RT_TABLE_MAIN`).
pub const MAIN_TABLE: u32 = 254;
/// `RTPROT_KERNEL`: routes the kernel makes itself (connected subnets, link-local).
pub const PROTO_KERNEL: u8 = 2;
/// `RT_SCOPE_UNIVERSE`.
pub const SCOPE_UNIVERSE: u8 = 0;
/// `RT_SCOPE_LINK`.
pub const SCOPE_LINK: u8 = 253;

/// The metric a route gets when none is given: 0 for IPv4, 1024 for IPv6
/// (`IP6_RT_PRIO_USER`). tabby never sets a metric, so its routes always have this one.
pub fn default_metric(addr: IpAddr) -> u32 {
    match addr {
        IpAddr::V4(_) => 0,
        IpAddr::V6(_) => 1024,
    }
}

impl Dst {
    /// The destination with its host bits cleared and its length capped at the family's
    /// maximum, so `10.0.0.5/24` and `10.0.0.0/24` are the same key.
    pub fn normalized(self) -> Dst {
        match self.addr {
            IpAddr::V4(a) => {
                let len = self.len.min(32);
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                Dst {
                    addr: IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask)),
                    len,
                }
            }
            IpAddr::V6(a) => {
                let len = self.len.min(128);
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                Dst {
                    addr: IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask)),
                    len,
                }
            }
        }
    }

    /// A host route: `/32` for IPv4, `/128` for IPv6.
    pub fn host(addr: IpAddr) -> Dst {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        Dst { addr, len }
    }

    /// Link-local or multicast: never a route tabby owns.
    fn is_link_local_or_multicast(&self) -> bool {
        match self.addr {
            IpAddr::V4(a) => a.is_link_local() || a.is_multicast(),
            IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80 || a.is_multicast(),
        }
    }
}

impl std::fmt::Display for Dst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The desired routes, one per destination, all in the main table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    routes: BTreeMap<Dst, Target>,
    /// The destinations of learned routes by gateway (IP-in-IP hops aside): whose next hops
    /// to resolve again when the kernel's routes to a gateway change.
    by_gateway: BTreeMap<IpAddr, BTreeSet<Dst>>,
}

impl RouteTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the whole desired set and returns the destinations whose target changed
    /// (added, removed or different). Destinations are normalised; when two routes name the
    /// same destination the last one wins; a `Via` with no next hop means no route. Next hops
    /// are deduplicated and sorted, so their order does not matter.
    pub fn replace_all(&mut self, routes: Vec<Route>) -> BTreeSet<Dst> {
        let mut next = BTreeMap::new();
        for route in routes {
            let dst = route.dst.normalized();
            let target = match route.target {
                Target::Via(mut hops) => {
                    // IP-in-IP (tunl0) is IPv4 only: an IPv6 route goes via the underlay.
                    if dst.addr.is_ipv6() {
                        for hop in &mut hops {
                            hop.ipip = false;
                        }
                    }
                    hops.sort();
                    hops.dedup();
                    if hops.is_empty() {
                        continue;
                    }
                    Target::Via(hops)
                }
                other => other,
            };
            next.insert(dst, target);
        }
        let mut changed = BTreeSet::new();
        for (dst, target) in &next {
            if self.routes.get(dst) != Some(target) {
                changed.insert(*dst);
            }
        }
        for dst in self.routes.keys() {
            if !next.contains_key(dst) {
                changed.insert(*dst);
            }
        }
        let mut by_gateway: BTreeMap<IpAddr, BTreeSet<Dst>> = BTreeMap::new();
        for (dst, target) in &next {
            if let Target::Via(hops) = target {
                for h in hops.iter().filter(|h| !h.ipip) {
                    by_gateway.entry(h.gateway).or_default().insert(*dst);
                }
            }
        }
        self.routes = next;
        self.by_gateway = by_gateway;
        changed
    }

    /// Destinations of learned routes with a gateway inside `net`: a change of the kernel's
    /// routes to `net` may change how those gateways are reached.
    pub fn dsts_via_gateways_in(&self, net: Dst) -> Vec<Dst> {
        let net = net.normalized();
        let last = match net.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(
                u32::from(a) | u32::MAX.checked_shr(u32::from(net.len)).unwrap_or(0),
            )),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(
                u128::from(a) | u128::MAX.checked_shr(u32::from(net.len)).unwrap_or(0),
            )),
        };
        self.by_gateway
            .range(net.addr..=last)
            .flat_map(|(_, dsts)| dsts.iter().copied())
            .filter(|d| *d != net)
            .collect()
    }

    /// The target wanted for `dst`.
    pub fn get(&self, dst: &Dst) -> Option<&Target> {
        self.routes.get(dst)
    }

    /// Number of desired routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// No route is desired.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// All desired routes, by destination.
    pub fn iter(&self) -> impl Iterator<Item = (&Dst, &Target)> {
        self.routes.iter()
    }

    /// Destinations whose route depends on the interface `name` (workload routes on it, and
    /// IP-in-IP routes when it is the tunnel device).
    pub fn dsts_using(&self, name: &str, tunnel: &str) -> Vec<Dst> {
        self.routes
            .iter()
            .filter(|(_, t)| match t {
                Target::Workload { iface } => iface == name,
                Target::Via(hops) => name == tunnel && hops.iter().any(|h| h.ipip),
                Target::Blackhole => false,
            })
            .map(|(d, _)| *d)
            .collect()
    }
}

/// The type of a kernel route (`rtm_type`), as far as tabby cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteKind {
    /// `RTN_UNICAST`.
    Unicast,
    /// `RTN_BLACKHOLE`.
    Blackhole,
    /// Anything else (`unreachable`, `prohibit`, `local`, ...), by number.
    Other(u8),
}

/// One next hop of a kernel multipath route (`RTA_MULTIPATH`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KernelNextHop {
    /// Gateway (`RTA_GATEWAY` or `RTA_VIA`).
    pub gateway: Option<IpAddr>,
    /// Output interface index (0 when none).
    pub oif: u32,
    /// `RTNH_F_ONLINK`.
    pub onlink: bool,
}

/// A route as the kernel reports it, reduced to what the reconciler compares.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KernelRoute {
    /// Destination.
    pub dst: Dst,
    /// Table id.
    pub table: u32,
    /// Route protocol (`rtm_protocol`).
    pub protocol: u8,
    /// Route type.
    pub kind: RouteKind,
    /// Scope (`rtm_scope`; IPv6 always reports universe).
    pub scope: u8,
    /// TOS (IPv4; part of the route's key).
    pub tos: u8,
    /// Metric (`RTA_PRIORITY`; 0 when absent; part of the route's key).
    pub priority: u32,
    /// Output interface (`RTA_OIF`) of a single-path route.
    pub oif: Option<u32>,
    /// Gateway of a single-path route.
    pub gateway: Option<IpAddr>,
    /// `RTNH_F_ONLINK` of a single-path route.
    pub onlink: bool,
    /// Next hops of a multipath route (empty for single-path routes).
    pub multipath: Vec<KernelNextHop>,
}

impl KernelRoute {
    /// What identifies the route inside its table, as the kernel's replace sees it:
    /// destination, TOS and metric.
    pub fn key(&self) -> RouteKey {
        RouteKey {
            dst: self.dst,
            tos: self.tos,
            priority: self.priority,
        }
    }

    fn oifs(&self) -> impl Iterator<Item = u32> + '_ {
        self.oif
            .into_iter()
            .chain(self.multipath.iter().map(|h| h.oif))
    }
}

/// The key of a route in the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteKey {
    /// Destination.
    pub dst: Dst,
    /// TOS.
    pub tos: u8,
    /// Metric.
    pub priority: u32,
}

impl RouteKey {
    /// The key every tabby route has: TOS 0 and the family's default metric.
    pub fn ours(dst: Dst) -> Self {
        RouteKey {
            dst,
            tos: 0,
            priority: default_metric(dst.addr),
        }
    }
}

/// A network interface as the reconciler needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Administratively up (`IFF_UP`); the kernel refuses routes through a down device.
    pub up: bool,
}

/// The interfaces of the namespace, by name and by index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Links {
    by_name: BTreeMap<String, Link>,
    by_index: BTreeMap<u32, String>,
}

impl Links {
    /// No interfaces.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an interface (new or changed). Returns the names whose state changed (the old
    /// name too, when an index was renamed).
    pub fn upsert(&mut self, name: &str, link: Link) -> Vec<String> {
        let mut changed = Vec::new();
        if let Some(old) = self.by_index.get(&link.index).cloned() {
            if old != name {
                self.by_name.remove(&old);
                changed.push(old);
            }
        }
        if let Some(prev) = self.by_name.get(name) {
            if prev.index != link.index {
                self.by_index.remove(&prev.index);
            }
        }
        if self.by_name.get(name) != Some(&link) {
            changed.push(name.to_string());
        }
        self.by_index.insert(link.index, name.to_string());
        self.by_name.insert(name.to_string(), link);
        changed
    }

    /// Forgets the interface with this index; returns its name if it was known.
    pub fn remove(&mut self, index: u32) -> Option<String> {
        let name = self.by_index.remove(&index)?;
        if self.by_name.get(&name).map(|l| l.index) == Some(index) {
            self.by_name.remove(&name);
        }
        Some(name)
    }

    /// The interface called `name`.
    pub fn get(&self, name: &str) -> Option<&Link> {
        self.by_name.get(name)
    }

    /// The name of the interface with this index.
    pub fn name(&self, index: u32) -> Option<&str> {
        self.by_index.get(&index).map(String::as_str)
    }

    /// The index of `name` when it exists and is up.
    fn usable(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).filter(|l| l.up).map(|l| l.index)
    }
}

/// Which kernel routes are tabby's (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    /// The route protocol tabby writes (44).
    pub protocol: u8,
    /// Name prefixes of workload interfaces (`cali`).
    pub workload_prefixes: Vec<String>,
    /// The IP-in-IP device (`tunl0`).
    pub tunnel_device: String,
}

impl Default for Ownership {
    fn default() -> Self {
        Ownership {
            protocol: super::TABBY_PROTOCOL,
            workload_prefixes: vec!["cali".to_string()],
            tunnel_device: "tunl0".to_string(),
        }
    }
}

impl Ownership {
    /// Is `name` a workload interface?
    pub fn is_workload(&self, name: &str) -> bool {
        self.workload_prefixes
            .iter()
            .any(|p| !p.is_empty() && name.starts_with(p.as_str()))
    }

    /// Is this kernel route tabby's to change or delete?
    pub fn owns(&self, route: &KernelRoute, links: &Links) -> bool {
        if route.table != MAIN_TABLE {
            return false;
        }
        if route.protocol == self.protocol {
            return true;
        }
        route.protocol != PROTO_KERNEL
            && route.kind == RouteKind::Unicast
            && !route.dst.is_link_local_or_multicast()
            && route
                .oifs()
                .any(|i| links.name(i).is_some_and(|n| self.is_workload(n)))
    }
}

/// A desired route with its interfaces resolved to indexes: exactly what gets written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Resolved {
    /// Destination.
    pub dst: Dst,
    /// What it does.
    pub action: ResolvedTarget,
}

/// The target of a [`Resolved`] route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ResolvedTarget {
    /// `dev <oif> scope link`.
    Device {
        /// Interface index.
        oif: u32,
    },
    /// `blackhole`.
    Blackhole,
    /// `via <gateway> [dev <oif> onlink]`, ECMP when several.
    Via(Vec<ResolvedHop>),
}

/// One resolved next hop: `via <gateway> [dev <oif>] [onlink]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResolvedHop {
    /// Gateway.
    pub gateway: IpAddr,
    /// `dev <oif>`: the IP-in-IP device (with `onlink`), or the device of the route a
    /// recursive next hop was resolved through; `None` lets the kernel pick it.
    pub oif: Option<u32>,
    /// `onlink`: the gateway is taken as on the link without a route to it.
    pub onlink: bool,
}

/// Why a desired route is not written yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deferred {
    /// Its interface does not exist or is down; it is written when the link appears.
    MissingInterface(String),
    /// No next hop of the route can be resolved: the node has no usable route to any of
    /// its gateways. It is written when a route to one appears.
    UnreachableGateway(Vec<IpAddr>),
}

/// How the node reaches an address, by its best route in the main table (see
/// [`GatewayRoutes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// The route has no gateway (a connected subnet, or a device route): the address is a
    /// gateway the kernel accepts as it is.
    Connected,
    /// The route goes via gateways; an address reached this way is replaced by them
    /// (recursive next hop).
    Via(Vec<ResolvedHop>),
    /// The route is a blackhole, unreachable, prohibit... : the address cannot be reached.
    Unusable,
}

/// The routes of the kernel's main table that cover some gateways, for resolving next hops
/// recursively, as Calico's BIRD does (`gateway recursive` in its `bird.cfg`): a learned
/// route whose gateway is not on a connected subnet goes via the gateways of the node's best
/// route to that gateway (a route learned from the top-of-rack router, a static or default
/// route, another learned route). The kernel itself refuses such a gateway ("Nexthop has
/// invalid gateway").
///
/// Built once per reconcile for the gateways of the destinations being reconciled, so a
/// batch of many routes through few gateways (the usual case: a gateway per node) looks each
/// gateway up once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayRoutes {
    /// For each gateway, the destinations in the mirror that contain it, longest prefix
    /// first, each with how its best (lowest metric) route reaches it.
    covers: BTreeMap<IpAddr, Vec<(Dst, Reach)>>,
}

impl GatewayRoutes {
    /// Looks up `gateways` in the mirror.
    pub fn new(kernel: &KernelTable, gateways: impl IntoIterator<Item = IpAddr>) -> Self {
        let mut covers = BTreeMap::new();
        for gw in gateways {
            if covers.contains_key(&gw) {
                continue;
            }
            let max = if gw.is_ipv4() { 32 } else { 128 };
            let mut found = Vec::new();
            for len in (0..=max).rev() {
                let net = Dst { addr: gw, len }.normalized();
                // The kernel uses the route of lowest metric (TOS-specific routes aside).
                let best = kernel
                    .routes_to(net)
                    .into_iter()
                    .filter(|r| r.tos == 0)
                    .min_by_key(|r| r.priority);
                if let Some(r) = best {
                    found.push((net, reach(r)));
                }
            }
            covers.insert(gw, found);
        }
        GatewayRoutes { covers }
    }

    /// How the node reaches `gateway` for the route to `dst`: by the longest covering route
    /// other than `dst`'s own (a route never resolves through itself). `None` when no route
    /// covers it, or `gateway` was not looked up.
    pub fn reach(&self, gateway: IpAddr, dst: Dst) -> Option<&Reach> {
        self.covers
            .get(&gateway)?
            .iter()
            .find(|(net, _)| *net != dst)
            .map(|(_, r)| r)
    }
}

fn reach(r: &KernelRoute) -> Reach {
    if r.kind != RouteKind::Unicast {
        return Reach::Unusable;
    }
    let hop = |gateway: IpAddr, oif: Option<u32>, onlink: bool| ResolvedHop {
        gateway,
        oif: oif.filter(|i| *i != 0),
        onlink,
    };
    let mut hops: Vec<ResolvedHop> = r
        .gateway
        .map(|g| hop(g, r.oif, r.onlink))
        .into_iter()
        .chain(
            r.multipath
                .iter()
                .filter_map(|h| h.gateway.map(|g| hop(g, Some(h.oif), h.onlink))),
        )
        .collect();
    if hops.is_empty() {
        return Reach::Connected;
    }
    hops.sort();
    Reach::Via(hops)
}

/// The next hops a learned route to `dst` is written with: each gateway as it is when the
/// node reaches it directly (connected), the gateways of the node's best route to it when
/// not (recursive), none for a gateway without a usable route. An IP-in-IP hop is
/// `dev tunl0 onlink` and needs no route. Sorted, one hop per gateway.
pub fn resolve_next_hops(
    dst: Dst,
    hops: &[NextHop],
    tunnel: Option<u32>,
    gateways: &GatewayRoutes,
) -> Vec<ResolvedHop> {
    let mut out = Vec::with_capacity(hops.len());
    for NextHop { gateway, ipip } in hops {
        if *ipip && dst.addr.is_ipv4() {
            if let Some(oif) = tunnel {
                out.push(ResolvedHop {
                    gateway: *gateway,
                    oif: Some(oif),
                    onlink: true,
                });
            }
            continue;
        }
        match gateways.reach(*gateway, dst) {
            Some(Reach::Connected) => out.push(ResolvedHop {
                gateway: *gateway,
                oif: None,
                onlink: false,
            }),
            Some(Reach::Via(via)) => out.extend(
                via.iter()
                    .filter(|h| h.gateway.is_ipv4() == dst.addr.is_ipv4())
                    .cloned(),
            ),
            Some(Reach::Unusable) | None => {}
        }
    }
    out.sort();
    // One hop per gateway (two gateways behind one router both resolve to the router).
    out.dedup_by(|a, b| a.gateway == b.gateway);
    out
}

/// Resolves a desired route against the current links and, for learned routes, the routes
/// to their gateways.
pub fn resolve(
    dst: Dst,
    target: &Target,
    links: &Links,
    own: &Ownership,
    gateways: &GatewayRoutes,
) -> Result<Resolved, Deferred> {
    let action = match target {
        Target::Workload { iface } => ResolvedTarget::Device {
            oif: links
                .usable(iface)
                .ok_or_else(|| Deferred::MissingInterface(iface.clone()))?,
        },
        Target::Blackhole => ResolvedTarget::Blackhole,
        Target::Via(hops) => {
            let tunnel = if dst.addr.is_ipv4() && hops.iter().any(|h| h.ipip) {
                Some(
                    links
                        .usable(&own.tunnel_device)
                        .ok_or_else(|| Deferred::MissingInterface(own.tunnel_device.clone()))?,
                )
            } else {
                None
            };
            let out = resolve_next_hops(dst, hops, tunnel, gateways);
            if out.is_empty() {
                return Err(Deferred::UnreachableGateway(
                    hops.iter().map(|h| h.gateway).collect(),
                ));
            }
            ResolvedTarget::Via(out)
        }
    };
    Ok(Resolved { dst, action })
}

impl Resolved {
    /// Does the kernel route already do exactly this (with our protocol and key)?
    pub fn matches(&self, k: &KernelRoute, protocol: u8) -> bool {
        if k.table != MAIN_TABLE
            || k.protocol != protocol
            || k.dst != self.dst
            || k.key() != RouteKey::ours(self.dst)
        {
            return false;
        }
        // IPv6 reports every route with universe scope, whatever was asked.
        let scope_ok = |want: u8| self.dst.addr.is_ipv6() || k.scope == want;
        match &self.action {
            ResolvedTarget::Device { oif } => {
                k.kind == RouteKind::Unicast
                    && scope_ok(SCOPE_LINK)
                    && k.oif == Some(*oif)
                    && k.gateway.is_none()
                    && k.multipath.is_empty()
            }
            ResolvedTarget::Blackhole => k.kind == RouteKind::Blackhole,
            ResolvedTarget::Via(hops) => {
                if k.kind != RouteKind::Unicast || !scope_ok(SCOPE_UNIVERSE) {
                    return false;
                }
                let hop_ok =
                    |h: &ResolvedHop, gw: Option<IpAddr>, oif: Option<u32>, onlink: bool| {
                        gw == Some(h.gateway)
                            && onlink == h.onlink
                            && h.oif.is_none_or(|want| oif == Some(want))
                    };
                match hops.as_slice() {
                    [one] => k.multipath.is_empty() && hop_ok(one, k.gateway, k.oif, k.onlink),
                    many => {
                        k.gateway.is_none()
                            && k.multipath.len() == many.len()
                            && many.iter().all(|h| {
                                k.multipath
                                    .iter()
                                    .any(|n| hop_ok(h, n.gateway, Some(n.oif), n.onlink))
                            })
                    }
                }
            }
        }
    }

    /// The kernel route this becomes once written (what a dump will report, up to
    /// attributes the reconciler does not compare).
    pub fn to_kernel(&self, protocol: u8) -> KernelRoute {
        let mut k = KernelRoute {
            dst: self.dst,
            table: MAIN_TABLE,
            protocol,
            kind: RouteKind::Unicast,
            scope: SCOPE_UNIVERSE,
            tos: 0,
            priority: default_metric(self.dst.addr),
            oif: None,
            gateway: None,
            onlink: false,
            multipath: Vec::new(),
        };
        match &self.action {
            ResolvedTarget::Device { oif } => {
                k.oif = Some(*oif);
                if self.dst.addr.is_ipv4() {
                    k.scope = SCOPE_LINK;
                }
            }
            ResolvedTarget::Blackhole => k.kind = RouteKind::Blackhole,
            ResolvedTarget::Via(hops) => match hops.as_slice() {
                [one] => {
                    k.gateway = Some(one.gateway);
                    k.oif = one.oif;
                    k.onlink = one.onlink;
                }
                many => {
                    k.multipath = many
                        .iter()
                        .map(|h| KernelNextHop {
                            gateway: Some(h.gateway),
                            oif: h.oif.unwrap_or(0),
                            onlink: h.onlink,
                        })
                        .collect();
                }
            },
        }
        k
    }
}

/// One write to the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Delete exactly this route (`RTM_DELROUTE`).
    Delete(KernelRoute),
    /// Write this route, replacing whatever has its key (`RTM_NEWROUTE`,
    /// `NLM_F_CREATE | NLM_F_REPLACE`).
    Replace(Resolved),
}

impl Change {
    /// The destination the change is about.
    pub fn dst(&self) -> Dst {
        match self {
            Change::Delete(k) => k.dst,
            Change::Replace(r) => r.dst,
        }
    }
}

/// The outcome of a reconciliation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Changes in the order they must be written: all deletions, then all writes. (Within a
    /// destination a deletion only ever removes a route with a key other than ours, so the
    /// order never opens a gap for a route that is wanted.)
    pub changes: Vec<Change>,
    /// Desired routes that cannot be written yet (their interface is missing or down).
    pub deferred: Vec<(Dst, Deferred)>,
    /// Desired routes not written because a route tabby does not own holds the same key
    /// (same destination, TOS and metric): writing ours would replace it.
    pub conflicts: Vec<Dst>,
    /// Desired routes already correct in the kernel.
    pub in_place: usize,
}

/// Reconciles one destination: what to write so the kernel's routes to `dst` (all of them,
/// any owner, main table) end up as `want`.
pub fn reconcile_dst(
    dst: Dst,
    want: Option<&Target>,
    kernel: &[&KernelRoute],
    links: &Links,
    own: &Ownership,
    gateways: &GatewayRoutes,
) -> Plan {
    let mut plan = Plan::default();
    let owned: Vec<&KernelRoute> = kernel
        .iter()
        .copied()
        .filter(|k| own.owns(k, links))
        .collect();
    let resolved = match want.map(|t| resolve(dst, t, links, own, gateways)) {
        None => None,
        Some(Err(why)) => {
            plan.deferred.push((dst, why));
            None
        }
        Some(Ok(r)) => Some(r),
    };
    let Some(want) = resolved else {
        // Not wanted (or not writable yet): everything of ours goes, so a stale route never
        // sends a pod's traffic to the wrong interface.
        plan.changes
            .extend(owned.into_iter().map(|k| Change::Delete(k.clone())));
        return plan;
    };
    let key = RouteKey::ours(dst);
    if let Some(keep) = owned.iter().find(|k| want.matches(k, own.protocol)) {
        plan.in_place = 1;
        plan.changes.extend(
            owned
                .iter()
                .filter(|k| !std::ptr::eq(**k, *keep))
                .map(|k| Change::Delete((*k).clone())),
        );
        return plan;
    }
    // Owned routes under other keys (another metric) go; one under our key is replaced.
    plan.changes.extend(
        owned
            .iter()
            .filter(|k| k.key() != key)
            .map(|k| Change::Delete((*k).clone())),
    );
    let foreign_holds_key = kernel
        .iter()
        .any(|k| k.table == MAIN_TABLE && k.key() == key && !own.owns(k, links));
    if foreign_holds_key {
        plan.conflicts.push(dst);
    } else {
        plan.changes.push(Change::Replace(want));
    }
    plan
}

/// A mirror of the kernel's main table (both families), kept from a dump and then from
/// netlink notifications. Keyed like the kernel keys routes: destination, TOS, metric.
#[derive(Debug, Clone, Default)]
pub struct KernelTable {
    routes: BTreeMap<RouteKey, KernelRoute>,
}

impl KernelTable {
    /// An empty mirror.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the whole mirror (after a dump). Routes of other tables are dropped.
    pub fn reset(&mut self, routes: impl IntoIterator<Item = KernelRoute>) {
        self.routes.clear();
        for r in routes {
            self.insert(r);
        }
    }

    /// A route was added or replaced (`RTM_NEWROUTE`).
    pub fn insert(&mut self, route: KernelRoute) {
        if route.table == MAIN_TABLE {
            self.routes.insert(route.key(), route);
        }
    }

    /// A route was deleted (`RTM_DELROUTE`).
    pub fn remove(&mut self, route: &KernelRoute) {
        if route.table == MAIN_TABLE {
            self.routes.remove(&route.key());
        }
    }

    /// The kernel drops the routes through a device that goes down or away, and IPv4 does not
    /// say so with notifications: forget them here. Returns their destinations.
    pub fn remove_through(&mut self, index: u32) -> Vec<Dst> {
        let gone: Vec<RouteKey> = self
            .routes
            .iter()
            .filter(|(_, r)| r.oifs().any(|i| i == index))
            .map(|(k, _)| *k)
            .collect();
        gone.iter()
            .filter_map(|k| self.routes.remove(k))
            .map(|r| r.dst)
            .collect()
    }

    /// All routes to `dst`.
    pub fn routes_to(&self, dst: Dst) -> Vec<&KernelRoute> {
        let lo = RouteKey {
            dst,
            tos: 0,
            priority: 0,
        };
        let hi = RouteKey {
            dst,
            tos: u8::MAX,
            priority: u32::MAX,
        };
        self.routes.range(lo..=hi).map(|(_, r)| r).collect()
    }

    /// All routes.
    pub fn iter(&self) -> impl Iterator<Item = &KernelRoute> {
        self.routes.values()
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// No routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// Reconciles `dsts` (or, with `None`, every destination desired or owned: the start-up
/// mark-and-sweep and the safety resync).
pub fn reconcile(
    desired: &RouteTable,
    kernel: &KernelTable,
    links: &Links,
    own: &Ownership,
    dsts: Option<&BTreeSet<Dst>>,
) -> Plan {
    let all: BTreeSet<Dst>;
    let dsts = match dsts {
        Some(d) => d,
        None => {
            all = desired
                .iter()
                .map(|(d, _)| *d)
                .chain(kernel.iter().filter(|k| own.owns(k, links)).map(|k| k.dst))
                .collect();
            &all
        }
    };
    let gateways = GatewayRoutes::new(
        kernel,
        dsts.iter()
            .filter_map(|d| match desired.get(d) {
                Some(Target::Via(hops)) => Some(hops.iter().map(|h| h.gateway)),
                _ => None,
            })
            .flatten(),
    );
    let mut plan = Plan::default();
    let mut writes = Vec::new();
    for dst in dsts {
        let routes = kernel.routes_to(*dst);
        let one = reconcile_dst(*dst, desired.get(dst), &routes, links, own, &gateways);
        for change in one.changes {
            match change {
                Change::Delete(_) => plan.changes.push(change),
                Change::Replace(_) => writes.push(change),
            }
        }
        plan.deferred.extend(one.deferred);
        plan.conflicts.extend(one.conflicts);
        plan.in_place += one.in_place;
    }
    plan.changes.extend(writes);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    fn dst(s: &str) -> Dst {
        let (a, l) = s.split_once('/').unwrap_or((s, "32"));
        Dst {
            addr: v4(a),
            len: l.parse().unwrap_or(32),
        }
    }

    fn links() -> Links {
        let mut l = Links::new();
        l.upsert("eth0", Link { index: 2, up: true });
        l.upsert(
            "cali1",
            Link {
                index: 10,
                up: true,
            },
        );
        l.upsert(
            "cali2",
            Link {
                index: 11,
                up: true,
            },
        );
        l.upsert("tunl0", Link { index: 5, up: true });
        l
    }

    fn kroute(d: &str, protocol: u8, oif: Option<u32>) -> KernelRoute {
        let dst = dst(d);
        KernelRoute {
            dst,
            table: MAIN_TABLE,
            protocol,
            kind: RouteKind::Unicast,
            scope: if oif.is_some() {
                SCOPE_LINK
            } else {
                SCOPE_UNIVERSE
            },
            tos: 0,
            priority: default_metric(dst.addr),
            oif,
            gateway: None,
            onlink: false,
            multipath: vec![],
        }
    }

    fn workload(d: &str, iface: &str) -> Route {
        Route {
            dst: dst(d),
            target: Target::Workload {
                iface: iface.to_string(),
            },
        }
    }

    fn plan(routes: Vec<Route>, kernel: Vec<KernelRoute>, links: &Links) -> Plan {
        let mut t = RouteTable::new();
        t.replace_all(routes);
        let mut k = KernelTable::new();
        k.reset(kernel);
        reconcile(&t, &k, links, &Ownership::default(), None)
    }

    #[test]
    fn a_missing_workload_route_is_written_with_the_interface_index() {
        let p = plan(vec![workload("10.65.0.5/32", "cali1")], vec![], &links());
        assert_eq!(
            p.changes,
            vec![Change::Replace(Resolved {
                dst: dst("10.65.0.5/32"),
                action: ResolvedTarget::Device { oif: 10 },
            })]
        );
    }

    #[test]
    fn a_route_already_in_place_is_adopted_without_a_write() {
        let r = workload("10.65.0.5/32", "cali1");
        let k = kroute("10.65.0.5/32", 44, Some(10));
        let p = plan(vec![r], vec![k], &links());
        assert!(p.changes.is_empty());
        assert_eq!(p.in_place, 1);
    }

    #[test]
    fn a_cni_route_on_a_workload_interface_is_replaced_in_place() {
        let p = plan(
            vec![workload("10.65.0.5/32", "cali1")],
            vec![kroute("10.65.0.5/32", 4, Some(10))],
            &links(),
        );
        assert!(matches!(p.changes.as_slice(), [Change::Replace(_)]));
    }

    #[test]
    fn a_cni_route_under_another_metric_is_deleted_before_ours_is_written() {
        let mut cni = kroute("10.65.0.5/32", 4, Some(10));
        cni.priority = 100;
        let p = plan(
            vec![workload("10.65.0.5/32", "cali1")],
            vec![cni.clone()],
            &links(),
        );
        assert_eq!(p.changes.len(), 2);
        assert_eq!(p.changes[0], Change::Delete(cni));
        assert!(matches!(p.changes[1], Change::Replace(_)));
    }

    #[test]
    fn routes_of_other_protocols_elsewhere_are_never_touched() {
        let mut gw = kroute("10.9.0.0/24", 4, Some(2));
        gw.gateway = Some(v4("10.0.0.254"));
        let p = plan(
            vec![],
            vec![gw, kroute("10.0.0.0/24", 2, Some(2))],
            &links(),
        );
        assert!(p.changes.is_empty());
    }

    #[test]
    fn a_foreign_route_holding_our_key_is_a_conflict_and_is_not_overwritten() {
        let mut gw = kroute("10.9.0.0/24", 4, Some(2));
        gw.gateway = Some(v4("10.0.0.254"));
        let route = Route {
            dst: dst("10.9.0.0/24"),
            target: Target::Blackhole,
        };
        let p = plan(vec![route], vec![gw], &links());
        assert!(p.changes.is_empty());
        assert_eq!(p.conflicts, vec![dst("10.9.0.0/24")]);
    }

    #[test]
    fn stale_protocol_44_routes_are_swept_and_wanted_ones_kept() {
        let wanted = kroute("10.65.0.5/32", 44, Some(10));
        let stale = kroute("10.65.0.6/32", 44, Some(11));
        let mut stale_learned = kroute("10.70.0.0/26", 44, None);
        stale_learned.gateway = Some(v4("10.0.0.12"));
        let p = plan(
            vec![workload("10.65.0.5/32", "cali1")],
            vec![wanted, stale.clone(), stale_learned.clone()],
            &links(),
        );
        assert_eq!(
            p.changes,
            vec![Change::Delete(stale), Change::Delete(stale_learned)]
        );
        assert_eq!(p.in_place, 1);
    }

    #[test]
    fn a_workload_route_without_its_interface_is_deferred() {
        let p = plan(vec![workload("10.65.0.5/32", "cali9")], vec![], &links());
        assert!(p.changes.is_empty());
        assert_eq!(
            p.deferred,
            vec![(
                dst("10.65.0.5/32"),
                Deferred::MissingInterface("cali9".into())
            )]
        );
    }

    #[test]
    fn a_workload_route_on_a_down_interface_is_deferred() {
        let mut l = links();
        l.upsert(
            "cali1",
            Link {
                index: 10,
                up: false,
            },
        );
        let p = plan(vec![workload("10.65.0.5/32", "cali1")], vec![], &l);
        assert_eq!(p.deferred.len(), 1);
    }

    #[test]
    fn an_ip_moving_to_another_interface_is_rewritten_on_the_new_one() {
        let p = plan(
            vec![workload("10.65.0.5/32", "cali2")],
            vec![kroute("10.65.0.5/32", 44, Some(10))],
            &links(),
        );
        assert_eq!(
            p.changes,
            vec![Change::Replace(Resolved {
                dst: dst("10.65.0.5/32"),
                action: ResolvedTarget::Device { oif: 11 },
            })]
        );
    }

    #[test]
    fn an_ip_moving_to_an_interface_not_there_yet_loses_its_old_route() {
        let old = kroute("10.65.0.5/32", 44, Some(10));
        let p = plan(
            vec![workload("10.65.0.5/32", "cali9")],
            vec![old.clone()],
            &links(),
        );
        assert_eq!(p.changes, vec![Change::Delete(old)]);
        assert_eq!(p.deferred.len(), 1);
    }

    #[test]
    fn ecmp_next_hops_match_in_any_order() {
        let hops = |a: &str, b: &str| {
            Target::Via(vec![
                NextHop {
                    gateway: v4(a),
                    ipip: false,
                },
                NextHop {
                    gateway: v4(b),
                    ipip: false,
                },
            ])
        };
        let mut k = kroute("10.70.0.0/26", 44, None);
        k.multipath = vec![
            KernelNextHop {
                gateway: Some(v4("10.0.0.13")),
                oif: 2,
                onlink: false,
            },
            KernelNextHop {
                gateway: Some(v4("10.0.0.12")),
                oif: 2,
                onlink: false,
            },
        ];
        let route = Route {
            dst: dst("10.70.0.0/26"),
            target: hops("10.0.0.12", "10.0.0.13"),
        };
        let connected = kroute("10.0.0.0/24", PROTO_KERNEL, Some(2));
        let p = plan(vec![route], vec![k, connected], &links());
        assert!(p.changes.is_empty(), "{p:?}");
        assert_eq!(p.in_place, 1);
    }

    #[test]
    fn an_ipip_route_goes_via_the_tunnel_onlink_and_waits_for_it() {
        let route = Route {
            dst: dst("10.70.0.0/26"),
            target: Target::Via(vec![NextHop {
                gateway: v4("10.0.1.12"),
                ipip: true,
            }]),
        };
        let p = plan(vec![route.clone()], vec![], &links());
        let Some(Change::Replace(r)) = p.changes.first() else {
            panic!("expected a write, got {p:?}");
        };
        let k = r.to_kernel(44);
        assert_eq!((k.oif, k.onlink), (Some(5), true));
        let mut no_tunnel = links();
        no_tunnel.remove(5);
        let p = plan(vec![route], vec![], &no_tunnel);
        assert!(p.changes.is_empty());
        assert_eq!(p.deferred.len(), 1);
    }

    #[test]
    fn ipv6_routes_match_whatever_scope_the_kernel_reports() {
        let d = Dst {
            addr: "fd00:65::5"
                .parse()
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            len: 128,
        };
        let route = Route {
            dst: d,
            target: Target::Workload {
                iface: "cali1".into(),
            },
        };
        let k = KernelRoute {
            dst: d,
            table: MAIN_TABLE,
            protocol: 44,
            kind: RouteKind::Unicast,
            scope: SCOPE_UNIVERSE,
            tos: 0,
            priority: 1024,
            oif: Some(10),
            gateway: None,
            onlink: false,
            multipath: vec![],
        };
        let p = plan(vec![route], vec![k], &links());
        assert!(p.changes.is_empty(), "{p:?}");
    }

    #[test]
    fn kernel_and_link_local_routes_on_workload_interfaces_are_not_ours() {
        let ll = KernelRoute {
            dst: Dst {
                addr: "fe80::"
                    .parse()
                    .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                len: 64,
            },
            ..kroute("10.0.0.0/24", 3, Some(10))
        };
        let p = plan(
            vec![],
            vec![ll, kroute("10.66.0.0/24", 2, Some(10))],
            &links(),
        );
        assert!(p.changes.is_empty());
    }

    #[test]
    fn a_routes_of_another_protocol_on_a_workload_interface_not_wanted_is_deleted() {
        let cni = kroute("10.65.0.7/32", 4, Some(10));
        let p = plan(vec![], vec![cni.clone()], &links());
        assert_eq!(p.changes, vec![Change::Delete(cni)]);
    }

    #[test]
    fn deletions_come_before_writes_across_destinations() {
        let stale = kroute("10.65.0.9/32", 44, Some(10));
        let p = plan(
            vec![workload("10.65.0.1/32", "cali1")],
            vec![stale],
            &links(),
        );
        assert!(matches!(
            p.changes.as_slice(),
            [Change::Delete(_), Change::Replace(_)]
        ));
    }

    #[test]
    fn replace_all_reports_only_the_destinations_that_changed() {
        let mut t = RouteTable::new();
        t.replace_all(vec![
            workload("10.65.0.1/32", "cali1"),
            workload("10.65.0.2/32", "cali2"),
        ]);
        let changed = t.replace_all(vec![
            workload("10.65.0.1/32", "cali1"),
            workload("10.65.0.3/32", "cali2"),
        ]);
        assert_eq!(
            changed.into_iter().collect::<Vec<_>>(),
            vec![dst("10.65.0.2/32"), dst("10.65.0.3/32")]
        );
    }

    #[test]
    fn destinations_are_normalised() {
        assert_eq!(dst("10.65.0.77/26").normalized(), dst("10.65.0.64/26"));
        assert_eq!(dst("10.65.0.77/0").normalized(), dst("0.0.0.0/0"));
    }

    #[test]
    fn the_mirror_forgets_routes_through_a_vanished_link() {
        let mut k = KernelTable::new();
        k.reset(vec![
            kroute("10.65.0.5/32", 44, Some(10)),
            kroute("10.65.0.6/32", 44, Some(11)),
        ]);
        assert_eq!(k.remove_through(10), vec![dst("10.65.0.5/32")]);
        assert_eq!(k.len(), 1);
    }

    fn via_route(d: &str, gateways: &[&str]) -> Route {
        Route {
            dst: dst(d),
            target: Target::Via(
                gateways
                    .iter()
                    .map(|g| NextHop {
                        gateway: v4(g),
                        ipip: false,
                    })
                    .collect(),
            ),
        }
    }

    /// A node on 10.0.1.0/24 (eth0) whose default route goes to its top-of-rack router.
    fn rack_kernel() -> Vec<KernelRoute> {
        let mut default = kroute("0.0.0.0/0", 3, Some(2));
        default.scope = SCOPE_UNIVERSE;
        default.gateway = Some(v4("10.0.1.254"));
        vec![kroute("10.0.1.0/24", PROTO_KERNEL, Some(2)), default]
    }

    fn hop(gw: &str, oif: Option<u32>) -> ResolvedHop {
        ResolvedHop {
            gateway: v4(gw),
            oif,
            onlink: false,
        }
    }

    fn written_hops(p: &Plan) -> Vec<ResolvedHop> {
        match p.changes.as_slice() {
            [Change::Replace(Resolved {
                action: ResolvedTarget::Via(hops),
                ..
            })] => hops.clone(),
            other => panic!("expected one write, got {other:?}"),
        }
    }

    #[test]
    fn a_gateway_on_a_connected_subnet_is_written_as_it_is() {
        let p = plan(
            vec![via_route("10.244.2.0/24", &["10.0.1.12"])],
            rack_kernel(),
            &links(),
        );
        assert_eq!(written_hops(&p), vec![hop("10.0.1.12", None)]);
    }

    #[test]
    fn a_gateway_in_another_rack_resolves_through_the_default_route() {
        let p = plan(
            vec![via_route("10.244.3.0/24", &["10.0.2.11"])],
            rack_kernel(),
            &links(),
        );
        assert_eq!(written_hops(&p), vec![hop("10.0.1.254", Some(2))]);
    }

    #[test]
    fn a_gateway_resolves_through_its_longest_matching_route() {
        let mut k = rack_kernel();
        let mut rack2 = kroute("10.0.2.0/24", 186, Some(2));
        rack2.scope = SCOPE_UNIVERSE;
        rack2.gateway = Some(v4("10.0.1.253"));
        k.push(rack2);
        let p = plan(
            vec![via_route("10.244.3.0/24", &["10.0.2.11"])],
            k,
            &links(),
        );
        assert_eq!(written_hops(&p), vec![hop("10.0.1.253", Some(2))]);
    }

    #[test]
    fn a_gateway_resolves_through_every_next_hop_of_an_ecmp_route() {
        let mut k = vec![kroute("10.0.1.0/24", PROTO_KERNEL, Some(2))];
        let mut default = kroute("0.0.0.0/0", 186, None);
        default.scope = SCOPE_UNIVERSE;
        default.multipath = ["10.0.1.253", "10.0.1.254"]
            .iter()
            .map(|g| KernelNextHop {
                gateway: Some(v4(g)),
                oif: 2,
                onlink: false,
            })
            .collect();
        k.push(default);
        let p = plan(
            vec![via_route("10.244.3.0/24", &["10.0.2.11"])],
            k,
            &links(),
        );
        assert_eq!(
            written_hops(&p),
            vec![hop("10.0.1.253", Some(2)), hop("10.0.1.254", Some(2))]
        );
    }

    #[test]
    fn gateways_behind_one_router_become_one_next_hop() {
        let p = plan(
            vec![via_route("10.244.3.0/24", &["10.0.2.11", "10.0.2.12"])],
            rack_kernel(),
            &links(),
        );
        assert_eq!(written_hops(&p), vec![hop("10.0.1.254", Some(2))]);
    }

    #[test]
    fn a_route_never_resolves_through_itself() {
        // A learned 10.0.0.0/8 via 10.0.2.11: the gateway is inside the route itself, so the
        // default route resolves it, not the route being written.
        let mut k = rack_kernel();
        let mut own = kroute("10.0.0.0/8", 44, Some(2));
        own.scope = SCOPE_UNIVERSE;
        own.gateway = Some(v4("10.0.1.99"));
        k.push(own);
        let p = plan(vec![via_route("10.0.0.0/8", &["10.0.2.11"])], k, &links());
        assert_eq!(written_hops(&p), vec![hop("10.0.1.254", Some(2))]);
    }

    #[test]
    fn a_gateway_without_a_route_defers_the_route_and_removes_its_old_one() {
        let mut old = kroute("10.244.3.0/24", 44, Some(2));
        old.scope = SCOPE_UNIVERSE;
        old.gateway = Some(v4("10.0.1.254"));
        let p = plan(
            vec![via_route("10.244.3.0/24", &["10.0.2.11"])],
            vec![kroute("10.0.1.0/24", PROTO_KERNEL, Some(2)), old.clone()],
            &links(),
        );
        assert_eq!(p.changes, vec![Change::Delete(old)]);
        assert_eq!(
            p.deferred,
            vec![(
                dst("10.244.3.0/24"),
                Deferred::UnreachableGateway(vec![v4("10.0.2.11")])
            )]
        );
    }

    #[test]
    fn a_gateway_behind_a_blackhole_defers_the_route() {
        let mut k = rack_kernel();
        let mut bh = kroute("10.0.2.0/24", 3, None);
        bh.kind = RouteKind::Blackhole;
        k.push(bh);
        let p = plan(
            vec![via_route("10.244.3.0/24", &["10.0.2.11"])],
            k,
            &links(),
        );
        assert!(p.changes.is_empty(), "{p:?}");
        assert_eq!(p.deferred.len(), 1);
    }

    #[test]
    fn an_ecmp_route_keeps_the_next_hops_that_resolve() {
        let mut k = vec![kroute("10.0.1.0/24", PROTO_KERNEL, Some(2))];
        let mut rack2 = kroute("10.0.2.0/24", 3, Some(2));
        rack2.scope = SCOPE_UNIVERSE;
        rack2.gateway = Some(v4("10.0.1.254"));
        k.push(rack2);
        let p = plan(
            vec![via_route("10.244.9.0/24", &["10.0.2.11", "10.0.9.11"])],
            k,
            &links(),
        );
        assert_eq!(written_hops(&p), vec![hop("10.0.1.254", Some(2))]);
    }

    #[test]
    fn a_recursive_route_already_in_place_is_adopted() {
        let mut k = rack_kernel();
        let mut installed = kroute("10.244.3.0/24", 44, Some(2));
        installed.scope = SCOPE_UNIVERSE;
        installed.gateway = Some(v4("10.0.1.254"));
        k.push(installed);
        let p = plan(
            vec![via_route("10.244.3.0/24", &["10.0.2.11"])],
            k,
            &links(),
        );
        assert!(p.changes.is_empty(), "{p:?}");
        assert_eq!(p.in_place, 1);
    }

    #[test]
    fn a_change_of_the_route_to_a_gateway_finds_the_routes_through_it() {
        let mut t = RouteTable::new();
        t.replace_all(vec![
            via_route("10.244.3.0/24", &["10.0.2.11"]),
            via_route("10.244.4.0/24", &["10.0.2.12", "10.0.1.12"]),
            via_route("10.244.2.0/24", &["10.0.1.12"]),
            workload("10.244.1.5/32", "cali1"),
        ]);
        let mut rack2 = t.dsts_via_gateways_in(dst("10.0.2.0/24"));
        rack2.sort();
        assert_eq!(rack2, vec![dst("10.244.3.0/24"), dst("10.244.4.0/24")]);
        assert_eq!(t.dsts_via_gateways_in(dst("0.0.0.0/0")).len(), 4);
        assert!(t.dsts_via_gateways_in(dst("10.244.3.0/24")).is_empty());
        let host = t.dsts_via_gateways_in(dst("10.0.1.12/32"));
        assert_eq!(host.len(), 2);
    }

    #[test]
    fn a_written_route_matches_itself_once_mirrored() {
        let l = links();
        let own = Ownership::default();
        for target in [
            Target::Blackhole,
            Target::Workload {
                iface: "cali1".into(),
            },
            Target::Via(vec![NextHop {
                gateway: v4("10.0.0.12"),
                ipip: false,
            }]),
            Target::Via(vec![
                NextHop {
                    gateway: v4("10.0.0.12"),
                    ipip: true,
                },
                NextHop {
                    gateway: v4("10.0.0.13"),
                    ipip: true,
                },
            ]),
        ] {
            let mut k = KernelTable::new();
            k.reset(vec![kroute("10.0.0.0/24", PROTO_KERNEL, Some(2))]);
            let gws = GatewayRoutes::new(&k, [v4("10.0.0.12"), v4("10.0.0.13")]);
            let r = resolve(dst("10.70.0.0/26"), &target, &l, &own, &gws);
            let Ok(r) = r else {
                panic!("unresolved {target:?}")
            };
            assert!(r.matches(&r.to_kernel(44), 44), "{target:?}");
        }
    }
}
