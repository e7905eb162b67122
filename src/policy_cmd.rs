//! `tabby policy explain`: what network policy does with a connection, and which policies
//! decide it, computed from the same rule IR the nodes program into the kernel.

use crate::datastore_cmd::Source;
use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use serde_json::json;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;
use tabby_acl::{Direction, Packet, Verdict};
use tabby_datastore::{Event, Kind, Resource};
use tabby_felix::policy::PolicyFeed;

/// `tabby policy` flags.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// The verdict of policy on one connection, and the policies that decide it.
    Explain(ExplainArgs),
}

/// `tabby policy explain` flags.
#[derive(Debug, Args)]
struct ExplainArgs {
    #[command(flatten)]
    source: Source,
    /// The client: `NAMESPACE/POD` or an address.
    #[arg(long)]
    from: String,
    /// The server: `NAMESPACE/POD` or an address.
    #[arg(long)]
    to: String,
    /// `PORT/PROTOCOL` (tcp, udp, sctp), or `icmp` for a ping.
    #[arg(long, default_value = "80/tcp")]
    port: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Seconds to wait for the datastore to be in sync.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

/// Runs `tabby policy`.
pub fn run(args: PolicyArgs) -> ExitCode {
    let PolicyCommand::Explain(args) = args.command;
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tabby: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(explain(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tabby: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// One side of the connection.
#[derive(Debug, Clone)]
struct Party {
    name: String,
    addrs: Vec<IpAddr>,
    /// `(namespace, pod, node)` when it is a pod of the datastore.
    pod: Option<(String, String, String)>,
}

fn pods(events: &[Event]) -> Vec<(String, String, String, Vec<IpAddr>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Update {
                key,
                object: Some(o),
            } if key.kind == Kind::Pod => match o.as_ref() {
                Resource::Pod(p) => {
                    let node = p.spec.as_ref()?.node_name.clone()?;
                    let addrs = p
                        .status
                        .as_ref()
                        .and_then(|s| s.pod_ips.as_ref())
                        .map(|ips| ips.iter().filter_map(|i| i.ip.parse().ok()).collect())
                        .unwrap_or_default();
                    let ns = key.namespace.clone().unwrap_or_default();
                    Some((ns, key.name.clone(), node, addrs))
                }
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn party(spec: &str, events: &[Event]) -> anyhow::Result<Party> {
    let pods = pods(events);
    if let Ok(addr) = spec.parse::<IpAddr>() {
        let pod = pods.iter().find(|(_, _, _, a)| a.contains(&addr));
        return Ok(Party {
            name: spec.to_string(),
            addrs: vec![addr],
            pod: pod.map(|(ns, n, node, _)| (ns.clone(), n.clone(), node.clone())),
        });
    }
    let Some((ns, name)) = spec.split_once('/') else {
        bail!("{spec:?} is neither NAMESPACE/POD nor an address");
    };
    let Some((_, _, node, addrs)) = pods.iter().find(|(n, p, _, _)| n == ns && p == name) else {
        bail!("no pod {spec} (with a node) in the datastore");
    };
    if addrs.is_empty() {
        bail!("pod {spec} has no address yet (status.podIPs)");
    }
    Ok(Party {
        name: spec.to_string(),
        addrs: addrs.clone(),
        pod: Some((ns.to_string(), name.to_string(), node.clone())),
    })
}

fn packet(port: &str, src: IpAddr, dst: IpAddr) -> anyhow::Result<Packet> {
    if port.eq_ignore_ascii_case("icmp") || port.eq_ignore_ascii_case("ping") {
        return Ok(Packet::ping(src, dst));
    }
    let (number, proto) = port.split_once('/').unwrap_or((port, "tcp"));
    let number: u16 = number
        .parse()
        .with_context(|| format!("{port:?} is not PORT/PROTOCOL"))?;
    let proto = match proto.to_ascii_lowercase().as_str() {
        "tcp" => 6,
        "udp" => 17,
        "sctp" => 132,
        other => bail!("unknown protocol {other:?} (tcp, udp, sctp, or icmp)"),
    };
    Ok(Packet::l4(proto, src, dst, number))
}

/// The verdict of the node hosting `party` in `dir`, or `None` when policy there has no say
/// (not a pod of the datastore).
fn side(events: &[Event], party: &Party, dir: Direction, pkt: &Packet) -> Option<Verdict> {
    let (ns, name, node) = party.pod.as_ref()?;
    let mut feed = PolicyFeed::new(node);
    for e in events {
        feed.apply(e);
    }
    let rs = feed.ruleset();
    let key = format!("{ns}/{name}");
    let iface = rs.endpoints.iter().find(|(_, ep)| ep.key == key)?.0.clone();
    rs.verdict(&iface, dir, pkt)
}

fn describe(v: &Option<Verdict>) -> (bool, String) {
    match v {
        None => (
            true,
            "no policy applies here (not a pod tabby knows)".into(),
        ),
        Some(Verdict::Allow(Some(p))) => (true, format!("allowed by {p}")),
        Some(Verdict::Allow(None)) => (true, "allowed: no policy selects it".into()),
        Some(Verdict::Deny(Some(p))) => (false, format!("denied by {p}")),
        Some(Verdict::Deny(None)) => (
            false,
            "denied: policies select it and none allows this (end of tier)".into(),
        ),
    }
}

async fn explain(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let mut ds = args.source.start().await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
    let mut events: Vec<Event> = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, ds.next()).await {
            Ok(Some(Event::InSync)) => break,
            Ok(Some(e @ Event::Update { .. })) => events.push(e),
            Ok(Some(_)) => {}
            Ok(None) => bail!("the datastore stopped before it was in sync"),
            Err(_) => bail!("the datastore was not in sync after {} s", args.timeout),
        }
    }
    let from = party(&args.from, &events)?;
    let to = party(&args.to, &events)?;
    let (src, dst) = from
        .addrs
        .iter()
        .find_map(|s| {
            to.addrs
                .iter()
                .find(|d| d.is_ipv4() == s.is_ipv4())
                .map(|d| (*s, *d))
        })
        .context("the two sides have no address of the same family")?;
    let pkt = packet(&args.port, src, dst)?;
    let egress = side(&events, &from, Direction::Egress, &pkt);
    let ingress = side(&events, &to, Direction::Ingress, &pkt);
    let (out_ok, out_why) = describe(&egress);
    let (in_ok, in_why) = describe(&ingress);
    let allowed = out_ok && in_ok;
    if args.json {
        let doc = json!({
            "from": from.name, "to": to.name, "src": src.to_string(), "dst": dst.to_string(),
            "port": args.port, "allowed": allowed,
            "egress": { "allowed": out_ok, "why": out_why },
            "ingress": { "allowed": in_ok, "why": in_why },
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "{} -> {} ({src} -> {dst} {}): {}",
            from.name,
            to.name,
            args.port,
            if allowed { "ALLOWED" } else { "DENIED" }
        );
        println!("  egress  of {}: {out_why}", from.name);
        println!("  ingress of {}: {in_why}", to.name);
    }
    Ok(if allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
