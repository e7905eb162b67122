//! The netlink side of the route manager: kernel messages to and from the reconciler's plain
//! types, and the requests that dump and write routes. No decisions are made here.

use std::net::IpAddr;

use futures::stream::{Stream, StreamExt, TryStreamExt};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteNextHop,
    RouteNextHopFlags, RouteProtocol, RouteScope, RouteType, RouteVia,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use rtnetlink::Handle;

use super::reconcile::{
    Change, KernelNextHop, KernelRoute, Link, Resolved, ResolvedTarget, RouteKind, MAIN_TABLE,
    SCOPE_LINK, SCOPE_UNIVERSE,
};
use super::Dst;

/// `ENOENT`: the kernel's "no such route" answer to a delete (ESRCH on IPv4, ENOENT on IPv6).
const ENOENT: i32 = 2;
/// `ESRCH`.
const ESRCH: i32 = 3;

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn via_addr(v: &RouteVia) -> Option<IpAddr> {
    match v {
        RouteVia::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteVia::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Parses a route message (dump answer or notification). `None` for families other than
/// IPv4/IPv6 and for routes without a usable destination.
pub fn parse_route(msg: &RouteMessage) -> Option<KernelRoute> {
    let h = &msg.header;
    let (zero, max): (IpAddr, u8) = match h.address_family {
        AddressFamily::Inet => (IpAddr::V4(0.into()), 32),
        AddressFamily::Inet6 => (IpAddr::V6(0u128.into()), 128),
        _ => return None,
    };
    if h.destination_prefix_length > max || h.flags.contains(RouteFlags::Cloned) {
        return None;
    }
    let mut route = KernelRoute {
        dst: Dst {
            addr: zero,
            len: h.destination_prefix_length,
        },
        table: u32::from(h.table),
        protocol: u8::from(h.protocol),
        kind: match h.kind {
            RouteType::Unicast => RouteKind::Unicast,
            RouteType::BlackHole => RouteKind::Blackhole,
            other => RouteKind::Other(u8::from(other)),
        },
        scope: u8::from(h.scope),
        tos: h.tos,
        priority: 0,
        oif: None,
        gateway: None,
        onlink: h.flags.contains(RouteFlags::Onlink),
        multipath: Vec::new(),
    };
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => route.dst.addr = route_addr(a)?,
            RouteAttribute::Table(t) => route.table = *t,
            RouteAttribute::Priority(p) => route.priority = *p,
            RouteAttribute::Oif(i) => route.oif = Some(*i),
            RouteAttribute::Gateway(a) => route.gateway = route_addr(a),
            RouteAttribute::Via(v) => route.gateway = via_addr(v),
            RouteAttribute::MultiPath(hops) => {
                route.multipath = hops.iter().map(parse_hop).collect();
            }
            _ => {}
        }
    }
    Some(route)
}

fn parse_hop(hop: &RouteNextHop) -> KernelNextHop {
    let mut gateway = None;
    for attr in &hop.attributes {
        match attr {
            RouteAttribute::Gateway(a) => gateway = route_addr(a),
            RouteAttribute::Via(v) => gateway = via_addr(v),
            _ => {}
        }
    }
    KernelNextHop {
        gateway,
        oif: hop.interface_index,
        onlink: hop.flags.contains(RouteNextHopFlags::Onlink),
    }
}

/// Parses a link message into its name and state.
pub fn parse_link(msg: &LinkMessage) -> Option<(String, Link)> {
    let name = msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })?;
    Some((
        name,
        Link {
            index: msg.header.index,
            up: msg.header.flags.contains(LinkFlags::Up),
        },
    ))
}

fn family(addr: IpAddr) -> AddressFamily {
    if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn header(dst: Dst, protocol: u8, kind: RouteType, scope: u8) -> RouteHeader {
    RouteHeader {
        address_family: family(dst.addr),
        destination_prefix_length: dst.len,
        table: RouteHeader::RT_TABLE_MAIN,
        protocol: RouteProtocol::from(protocol),
        kind,
        scope: RouteScope::from(scope),
        ..Default::default()
    }
}

/// The `RTM_NEWROUTE` body that writes a resolved route.
pub fn new_route_message(r: &Resolved, protocol: u8) -> RouteMessage {
    let (kind, scope) = match &r.action {
        ResolvedTarget::Device { .. } => (RouteType::Unicast, SCOPE_LINK),
        ResolvedTarget::Blackhole => (RouteType::BlackHole, SCOPE_UNIVERSE),
        ResolvedTarget::Via(_) => (RouteType::Unicast, SCOPE_UNIVERSE),
    };
    let mut msg = RouteMessage::default();
    msg.header = header(r.dst, protocol, kind, scope);
    msg.attributes
        .push(RouteAttribute::Destination(r.dst.addr.into()));
    match &r.action {
        ResolvedTarget::Device { oif } => msg.attributes.push(RouteAttribute::Oif(*oif)),
        ResolvedTarget::Blackhole => {}
        ResolvedTarget::Via(hops) => match hops.as_slice() {
            [one] => {
                msg.attributes
                    .push(RouteAttribute::Gateway(one.gateway.into()));
                if let Some(oif) = one.oif {
                    msg.attributes.push(RouteAttribute::Oif(oif));
                }
                if one.onlink {
                    msg.header.flags.insert(RouteFlags::Onlink);
                }
            }
            many => {
                let hops = many
                    .iter()
                    .map(|h| {
                        let mut nh = RouteNextHop::default();
                        nh.attributes
                            .push(RouteAttribute::Gateway(h.gateway.into()));
                        if let Some(oif) = h.oif {
                            nh.interface_index = oif;
                        }
                        if h.onlink {
                            nh.flags.insert(RouteNextHopFlags::Onlink);
                        }
                        nh
                    })
                    .collect();
                msg.attributes.push(RouteAttribute::MultiPath(hops));
            }
        },
    }
    msg
}

/// The `RTM_DELROUTE` body that deletes exactly this kernel route (its protocol, type, key
/// and, for a single-path route, its next hop), and no other route to the same destination.
pub fn del_route_message(k: &KernelRoute) -> RouteMessage {
    let kind = match k.kind {
        RouteKind::Unicast => RouteType::Unicast,
        RouteKind::Blackhole => RouteType::BlackHole,
        RouteKind::Other(n) => RouteType::from(n),
    };
    let mut msg = RouteMessage::default();
    // Scope "nowhere" matches any scope on delete (what `ip route del` sends).
    msg.header = header(k.dst, k.protocol, kind, 255);
    msg.header.tos = k.tos;
    msg.attributes
        .push(RouteAttribute::Destination(k.dst.addr.into()));
    msg.attributes.push(RouteAttribute::Priority(k.priority));
    if k.multipath.is_empty() {
        if let Some(oif) = k.oif {
            if k.kind == RouteKind::Unicast {
                msg.attributes.push(RouteAttribute::Oif(oif));
            }
        }
        if let Some(gw) = k.gateway {
            msg.attributes.push(RouteAttribute::Gateway(gw.into()));
        }
    }
    msg
}

/// The request for one change.
pub fn change_request(change: &Change, protocol: u8) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut req = match change {
        Change::Replace(r) => {
            let mut m = NetlinkMessage::from(RouteNetlinkMessage::NewRoute(new_route_message(
                r, protocol,
            )));
            m.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
            m
        }
        Change::Delete(k) => {
            let mut m = NetlinkMessage::from(RouteNetlinkMessage::DelRoute(del_route_message(k)));
            m.header.flags = NLM_F_REQUEST | NLM_F_ACK;
            m
        }
    };
    req.finalize();
    req
}

/// A failed netlink request: the kernel's errno, or a broken connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The kernel refused the request with this errno.
    #[error("kernel answered errno {0}")]
    Errno(i32),
    /// The netlink connection is gone.
    #[error("netlink connection closed")]
    Closed,
}

impl RequestError {
    /// The route to delete was already gone: as good as deleted.
    pub fn is_no_such_route(&self) -> bool {
        matches!(self, RequestError::Errno(e) if *e == ESRCH || *e == ENOENT)
    }
}

/// Sends every change in order on one connection (the kernel handles a socket's messages in
/// order, so deletions before writes hold), then collects the answers. Returns one result per
/// change, in the same order. Requests are pipelined in chunks so the acks never overflow the
/// socket's receive buffer.
pub async fn apply(
    handle: &mut Handle,
    changes: &[Change],
    protocol: u8,
) -> Vec<Result<(), RequestError>> {
    const IN_FLIGHT: usize = 512;
    let mut results = Vec::with_capacity(changes.len());
    for chunk in changes.chunks(IN_FLIGHT) {
        let mut pending = Vec::with_capacity(chunk.len());
        for change in chunk {
            pending.push(handle.request(change_request(change, protocol)));
        }
        for p in pending {
            results.push(match p {
                Err(_) => Err(RequestError::Closed),
                Ok(stream) => ack(stream).await,
            });
        }
    }
    results
}

async fn ack(
    stream: impl Stream<Item = NetlinkMessage<RouteNetlinkMessage>>,
) -> Result<(), RequestError> {
    let mut stream = std::pin::pin!(stream);
    while let Some(msg) = stream.next().await {
        if let NetlinkPayload::Error(e) = msg.payload {
            if let Some(code) = e.code {
                return Err(RequestError::Errno(-code.get()));
            }
        }
    }
    Ok(())
}

/// Dumps the main-table routes of both families.
pub async fn dump_routes(handle: &Handle) -> Result<Vec<KernelRoute>, rtnetlink::Error> {
    let mut out = Vec::new();
    for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut msg = RouteMessage::default();
        msg.header.address_family = fam;
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetRoute(msg));
        req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut h = handle.clone();
        let mut stream = std::pin::pin!(h.request(req)?);
        while let Some(m) = stream.next().await {
            match m.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) => {
                    if let Some(k) = parse_route(&r) {
                        if k.table == MAIN_TABLE {
                            out.push(k);
                        }
                    }
                }
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(rtnetlink::Error::NetlinkError(e))
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// Dumps all links.
pub async fn dump_links(handle: &Handle) -> Result<Vec<(String, Link)>, rtnetlink::Error> {
    let links: Vec<LinkMessage> = handle.link().get().execute().try_collect().await?;
    Ok(links.iter().filter_map(parse_link).collect())
}
