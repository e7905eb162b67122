//! `tabby speaker`: a standalone BGP speaker with peers and originated prefixes from the
//! command line, and the HTTP endpoints `/livez`, `/readyz`, `/status` and `/routes`.

use crate::http::{self, Handler, Response};
use anyhow::Context as _;
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tabby_bgp::speaker::{
    NextHopMode, PeerConfig, PeerStatus, PrefixLimit, ReceivedRoute, Speaker, SpeakerConfig,
    SpeakerError,
};
use tabby_bgp::wire::{Origin, SegmentKind};
use tabby_bgp::Prefix;

/// Flags of `tabby speaker`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// BGP Identifier.
    #[arg(long, value_name = "A.B.C.D")]
    router_id: Ipv4Addr,
    /// Local AS number.
    #[arg(long, value_name = "N")]
    asn: u32,
    /// Address to accept BGP connections on (default: `::`, or `0.0.0.0` without IPv6).
    #[arg(long, value_name = "ADDR")]
    listen: Option<IpAddr>,
    /// TCP port to listen on and to connect to.
    #[arg(long, default_value_t = 179)]
    port: u16,
    /// TCP port of the peers, when it differs from --port.
    #[arg(long)]
    peer_port: Option<u16>,
    /// Source address of outgoing connections.
    #[arg(long, value_name = "ADDR")]
    local_address: Option<IpAddr>,
    /// A peer, as ADDR:AS followed by options separated by `:` (IPv6 as [ADDR]:AS or bare):
    /// `passive`, `rr-client` (a route reflection client, with --cluster-id),
    /// `next-hop-self`, `next-hop-keep`, `password=SECRET` (TCP-MD5), `max-prefixes=N`
    /// (warn above N), `max-prefixes=N/SECONDS` (CEASE above N, retry after SECONDS).
    /// Repeatable.
    #[arg(long = "peer", value_name = "ADDR:AS[:OPTION...]", value_parser = parse_peer)]
    peers: Vec<PeerSpec>,
    /// Be a route reflector with this cluster ID (RFC 4456); peers marked `rr-client` are
    /// its clients.
    #[arg(long, value_name = "A.B.C.D")]
    cluster_id: Option<Ipv4Addr>,
    /// Restart time advertised with graceful restart (RFC 4724), seconds; 0 disables
    /// graceful restart.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u16).range(0..=4095))]
    graceful_restart_time: u16,
    /// Start as a restarting speaker (RFC 4724 §4.1): Restart State bit set, first
    /// advertisement held until the peers that are up sent End-of-RIB.
    #[arg(long)]
    restarting: bool,
    /// A prefix to originate to every peer. Repeatable.
    #[arg(long = "originate", value_name = "PREFIX")]
    originate: Vec<Prefix>,
    /// IPv6 next hop for IPv6 prefixes announced over IPv4 sessions.
    #[arg(long, value_name = "ADDR")]
    next_hop_v6: Option<Ipv6Addr>,
    /// IPv4 next hop for IPv4 prefixes announced over IPv6 sessions.
    #[arg(long, value_name = "ADDR")]
    next_hop_v4: Option<Ipv4Addr>,
    /// Hold time proposed to every peer, in seconds (0, or 3 and more).
    #[arg(long, default_value_t = 90, value_parser = parse_hold_time)]
    hold_time: u16,
    /// Address of the HTTP endpoints.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9099")]
    http_listen: SocketAddr,
}

/// One `--peer` flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    address: IpAddr,
    asn: u32,
    passive: bool,
    rr_client: bool,
    next_hop_mode: NextHopMode,
    password: Option<String>,
    prefix_limit: Option<PrefixLimit>,
}

const PEER_OPTIONS: [&str; 6] = [
    "passive",
    "rr-client",
    "next-hop-self",
    "next-hop-keep",
    "password=",
    "max-prefixes=",
];

fn parse_peer(s: &str) -> Result<PeerSpec, String> {
    let usage = || format!("{s:?} is not ADDR:AS[:OPTION...]");
    // Options are words after the AS; an IPv6 address has colons too, so options are
    // split off the end while they look like one.
    let mut rest = s;
    let mut options = Vec::new();
    while let Some((head, last)) = rest.rsplit_once(':') {
        let is_option = PEER_OPTIONS
            .iter()
            .any(|o| last == o.trim_end_matches('=') || (o.ends_with('=') && last.starts_with(o)));
        if !is_option {
            break;
        }
        options.push(last);
        rest = head;
    }
    let (addr, asn) = rest.rsplit_once(':').ok_or_else(usage)?;
    let addr = addr
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(addr);
    let address: IpAddr = addr.parse().map_err(|_| usage())?;
    let asn: u32 = asn.parse().map_err(|_| usage())?;
    if asn == 0 {
        return Err(format!("{s:?}: AS 0 is not valid"));
    }
    let mut spec = PeerSpec {
        address: address.to_canonical(),
        asn,
        passive: false,
        rr_client: false,
        next_hop_mode: NextHopMode::Auto,
        password: None,
        prefix_limit: None,
    };
    for option in options {
        match option {
            "passive" => spec.passive = true,
            "rr-client" => spec.rr_client = true,
            "next-hop-self" => spec.next_hop_mode = NextHopMode::Self_,
            "next-hop-keep" => spec.next_hop_mode = NextHopMode::Keep,
            o => {
                if let Some(p) = o.strip_prefix("password=") {
                    spec.password = Some(p.to_string());
                } else if let Some(limit) = o.strip_prefix("max-prefixes=") {
                    spec.prefix_limit =
                        Some(parse_limit(limit).map_err(|e| format!("{s:?}: {e}"))?);
                }
            }
        }
    }
    Ok(spec)
}

fn parse_limit(s: &str) -> Result<PrefixLimit, String> {
    let bad = || format!("max-prefixes={s} is not N or N/SECONDS");
    let (max, restart) = match s.split_once('/') {
        Some((max, secs)) => (max, Some(secs.parse::<u64>().map_err(|_| bad())?)),
        None => (s, None),
    };
    Ok(PrefixLimit {
        max: max.parse().map_err(|_| bad())?,
        restart_after: restart.map(Duration::from_secs),
    })
}

fn parse_hold_time(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(1 | 2) => Err("hold time must be 0 or at least 3 seconds".to_string()),
        Ok(t) => Ok(t),
        Err(e) => Err(e.to_string()),
    }
}

/// Runs the speaker: exit 0 after a clean stop, 2 for a bad configuration, 1 for a runtime
/// failure.
pub fn run(args: Args) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            tracing::error!(%error, "cannot start the runtime");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        match serve(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(Failure::Config(error)) => {
                tracing::error!("{error:#}");
                ExitCode::from(2)
            }
            Err(Failure::Runtime(error)) => {
                tracing::error!("{error:#}");
                ExitCode::from(1)
            }
        }
    })
}

enum Failure {
    Config(anyhow::Error),
    Runtime(anyhow::Error),
}

async fn start_speaker(args: &Args) -> Result<Speaker, Failure> {
    let mut config = SpeakerConfig::new(args.router_id, args.asn);
    config.local_address = args.local_address;
    config.next_hop_v4 = args.next_hop_v4;
    config.next_hop_v6 = args.next_hop_v6;
    config.cluster_id = args.cluster_id;
    config.graceful_restart =
        (args.graceful_restart_time > 0).then_some(args.graceful_restart_time);
    config.restarting = args.restarting;
    if args.graceful_restart_time > 0 {
        config.selection_deferral = Duration::from_secs(u64::from(args.graceful_restart_time));
    }
    let explicit = args.listen.map(|ip| SocketAddr::new(ip, args.port));
    config.listen =
        Some(explicit.unwrap_or(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), args.port)));
    match Speaker::start(config.clone()).await {
        Ok(s) => Ok(s),
        // Without IPv6 in the namespace, fall back to IPv4 only.
        Err(SpeakerError::Listen { .. }) if explicit.is_none() => {
            config.listen = Some(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), args.port));
            Speaker::start(config)
                .await
                .map_err(|e| Failure::Runtime(e.into()))
        }
        Err(e) => Err(Failure::Runtime(e.into())),
    }
}

async fn serve(args: Args) -> Result<(), Failure> {
    if args.router_id.is_unspecified() {
        return Err(Failure::Config(anyhow::anyhow!(
            "--router-id 0.0.0.0 is not valid"
        )));
    }
    if args.asn == 0 {
        return Err(Failure::Config(anyhow::anyhow!("--asn 0 is not valid")));
    }
    let http_listener = tokio::net::TcpListener::bind(args.http_listen)
        .await
        .with_context(|| format!("cannot listen on {} for HTTP", args.http_listen))
        .map_err(Failure::Runtime)?;
    let speaker = Arc::new(start_speaker(&args).await?);
    for peer in &args.peers {
        let config = PeerConfig {
            port: args.peer_port.unwrap_or(args.port),
            passive: peer.passive,
            hold_time: args.hold_time,
            rr_client: peer.rr_client,
            next_hop_mode: peer.next_hop_mode,
            password: peer.password.clone(),
            prefix_limit: peer.prefix_limit,
            ..PeerConfig::new(peer.address, peer.asn)
        };
        speaker
            .add_peer(config)
            .map_err(|e| Failure::Config(e.into()))?;
    }
    for prefix in &args.originate {
        speaker.originate(*prefix, None);
    }
    tracing::info!(
        router_id = %args.router_id,
        asn = args.asn,
        bgp = ?speaker.local_addr(),
        http = %args.http_listen,
        peers = args.peers.len(),
        "speaker running"
    );
    let handler: Handler = {
        let speaker = Arc::clone(&speaker);
        Arc::new(move |path| route(&speaker, path))
    };
    let http_server = http::serve(http_listener, handler);
    tokio::select! {
        () = http_server => {}
        result = stop_signal() => {
            result.map_err(Failure::Runtime)?;
        }
    }
    tracing::info!("stopping: peers doing graceful restart keep our routes for the restart time");
    match Arc::try_unwrap(speaker) {
        Ok(speaker) => speaker.shutdown().await,
        Err(_) => {
            return Err(Failure::Runtime(anyhow::anyhow!(
                "speaker still in use at stop"
            )))
        }
    }
    Ok(())
}

pub async fn stop_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
    Ok(())
}

fn route(speaker: &Speaker, path: &str) -> Response {
    match path {
        "/livez" => Response::text(200, "ok\n"),
        // A standalone speaker is ready as soon as it listens and has its peers configured.
        "/readyz" => Response::text(200, "ready\n"),
        "/status" => Response::json(&status_json(speaker)),
        "/routes" => Response::json(&routes_json(speaker)),
        _ => Response::text(404, "not found\n"),
    }
}

/// The `/status` document (DESIGN §5).
pub fn status_json(speaker: &Speaker) -> Value {
    let config = speaker.config();
    let peers: Vec<Value> = speaker.peers().iter().map(peer_json).collect();
    json!({
        "node": config.router_id.to_string(),
        "ready": true,
        "bgp": {
            "router_id": config.router_id.to_string(),
            "asn": config.local_as,
            "listen": speaker.local_addr().map(|a| a.to_string()),
            "peers": peers,
            "originated": speaker.originated().iter().map(|(p, _)| p.to_string()).collect::<Vec<_>>(),
        },
        "routes": { "installed": 0 },
    })
}

fn peer_json(p: &PeerStatus) -> Value {
    peer_json_of_kind(p, "peer")
}

/// A peer of `/status`, with its kind (`mesh`, `peer`, `rr-client`, `reflector`).
pub fn peer_json_of_kind(p: &PeerStatus, kind: &str) -> Value {
    json!({
        "peer": p.address.to_string(),
        "asn": p.remote_as,
        "kind": kind,
        "state": p.state.name(),
        "since": rfc3339(p.since),
        "received": p.received,
        "accepted": p.accepted,
        "stale": p.stale,
        "advertised": p.advertised,
        "last_error": p.last_error,
        "peer_id": p.peer_id.map(|i| i.to_string()),
        "local_address": p.local.map(|a| a.ip().to_string()),
        "hold_time": p.hold_time,
        "families": p.families.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
        "updates_received": p.updates_received,
        "updates_sent": p.updates_sent,
        "established_count": p.established_count,
    })
}

/// The `/routes` document: per peer, the routes it announced.
pub fn routes_json(speaker: &Speaker) -> Value {
    let peers: Vec<Value> = speaker
        .peers()
        .iter()
        .map(|p| {
            let routes: Vec<Value> = speaker
                .routes(p.address)
                .unwrap_or_default()
                .iter()
                .map(route_json)
                .collect();
            json!({ "peer": p.address.to_string(), "asn": p.remote_as, "routes": routes })
        })
        .collect();
    json!({ "peers": peers })
}

fn route_json(r: &ReceivedRoute) -> Value {
    let a = &r.attrs;
    let as_path: Vec<u32> = a
        .as_path
        .iter()
        .flat_map(|p| p.segments.iter())
        .filter(|s| matches!(s.kind, SegmentKind::Sequence | SegmentKind::Set))
        .flat_map(|s| s.asns.iter().copied())
        .collect();
    json!({
        "prefix": r.nlri.prefix.to_string(),
        "path_id": r.nlri.path_id,
        "best": r.best,
        "stale": r.stale,
        "next_hop": r.next_hop.map(|n| n.addr().to_string()),
        "as_path": as_path,
        "origin": a.origin.map(|o| match o {
            Origin::Igp => "igp",
            Origin::Egp => "egp",
            Origin::Incomplete => "incomplete",
        }),
        "med": a.med,
        "local_pref": a.local_pref,
        "communities": a.communities.iter().map(|c| format!("{}:{}", c >> 16, c & 0xffff)).collect::<Vec<_>>(),
        "large_communities": a.large_communities.iter()
            .map(|c| format!("{}:{}:{}", c.global, c.local1, c.local2)).collect::<Vec<_>>(),
        "originator_id": a.originator_id.map(|i| i.to_string()),
        "cluster_list": a.cluster_list.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
    })
}

/// `time` as RFC 3339 UTC with second precision.
pub fn rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn peer_flag_parses_ipv4_with_passive() {
        let spec = parse_peer("10.0.0.2:65001:passive").unwrap();
        assert_eq!(spec.address, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(
            (spec.asn, spec.passive, spec.rr_client),
            (65001, true, false)
        );
    }

    #[test]
    fn peer_flag_takes_options_after_an_ipv6_address() {
        let spec =
            parse_peer("fd00::2:65001:rr-client:password=s3cret:max-prefixes=10/30").unwrap();
        assert_eq!(spec.address, "fd00::2".parse::<IpAddr>().unwrap());
        assert!(spec.rr_client);
        assert_eq!(spec.password.as_deref(), Some("s3cret"));
        assert_eq!(
            spec.prefix_limit,
            Some(PrefixLimit {
                max: 10,
                restart_after: Some(Duration::from_secs(30))
            })
        );
    }

    #[test]
    fn peer_flag_with_a_bad_prefix_limit_is_refused() {
        assert!(parse_peer("10.0.0.2:65001:max-prefixes=ten").is_err());
    }

    #[test]
    fn peer_flag_parses_bare_and_bracketed_ipv6() {
        assert_eq!(
            parse_peer("fd00::2:65001").unwrap().address,
            "fd00::2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(parse_peer("[fd00::2]:65001").unwrap().asn, 65001);
    }

    #[test]
    fn peer_flag_without_as_is_refused() {
        assert!(parse_peer("10.0.0.2").is_err());
        assert!(parse_peer("10.0.0.2:0").is_err());
    }

    #[test]
    fn hold_time_of_two_seconds_is_refused() {
        assert!(parse_hold_time("2").is_err());
        assert_eq!(parse_hold_time("0"), Ok(0));
    }

    #[test]
    fn rfc3339_formats_a_known_instant() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
