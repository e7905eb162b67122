//! `tabby node`: the node agent (shared/DESIGN.md §1, §5).

use crate::datastore_cmd::Source;
use crate::http::{self, Handler, Response};
use crate::speaker_cmd::{peer_json_of_kind, rfc3339};
use anyhow::Context as _;
use clap::{Args as ClapArgs, ValueEnum};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use tabby_felix::agent::{self, AgentOptions, Shared};
use tabby_felix::policy::Backend;

/// How policy is programmed (`--dataplane`).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Dataplane {
    /// nftables (table `inet tabby`).
    Nftables,
    /// iptables (chains `tabby-*`).
    Iptables,
}

/// `tabby node` flags.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(flatten)]
    source: Source,
    /// This node's name, as the Node object is named.
    #[arg(long, env = "NODENAME")]
    node_name: String,
    /// Network policy backend: nftables (table `inet tabby`) or iptables (chains `tabby-*`).
    #[arg(long, value_enum, default_value_t = Dataplane::Nftables)]
    dataplane: Dataplane,
    /// Address of the HTTP endpoints (/livez, /readyz, /metrics, /status).
    #[arg(long, default_value = "127.0.0.1:9099")]
    http_listen: SocketAddr,
    /// Hold time proposed to BGP peers, in seconds.
    #[arg(long, default_value_t = 90)]
    hold_time: u16,
    /// Where the kernel's sysctls are (the host's /proc/sys mounted elsewhere lets an
    /// unprivileged container write them: its own /proc/sys is read-only).
    #[arg(long, default_value = "/proc/sys")]
    sysctl_root: std::path::PathBuf,
}

/// Runs `tabby node`.
pub fn run(args: Args) -> ExitCode {
    if args.node_name.is_empty() {
        eprintln!("tabby: --node-name must not be empty");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tabby: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("tabby: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let http_listener = tokio::net::TcpListener::bind(args.http_listen)
        .await
        .with_context(|| format!("cannot listen on {} for HTTP", args.http_listen))?;
    let datastore = args.source.start().await?;
    let shared = Arc::new(Shared::default());
    let handler: Handler = {
        let shared = Arc::clone(&shared);
        let backend = match args.dataplane {
            Dataplane::Nftables => "nftables",
            Dataplane::Iptables => "iptables",
        };
        Arc::new(move |path| route(&shared, backend, path))
    };
    let mut options = AgentOptions::new(&args.node_name);
    options.namespace = args.source.namespace.clone();
    options.hold_time = args.hold_time;
    options.interfaces.sysctl_root = args.sysctl_root.clone();
    options.policy = Some(match args.dataplane {
        Dataplane::Nftables => Backend::Nftables,
        Dataplane::Iptables => Backend::Iptables,
    });
    tracing::info!(node = %args.node_name, http = %args.http_listen, "node agent starting");
    let stop = async {
        if let Err(e) = crate::speaker_cmd::stop_signal().await {
            tracing::error!(error = %e, "cannot wait for signals");
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = http::serve(http_listener, handler) => Ok(()),
        result = agent::run(options, datastore, Arc::clone(&shared), stop) => {
            result.context("node agent")?;
            tracing::info!("stopped: peers got a CEASE; kernel routes stay for the next start");
            Ok(())
        }
    }
}

/// The HTTP endpoints of an agent (and of a reflector, whose backend is `none`).
pub(crate) fn route(shared: &Shared, backend: &str, path: &str) -> Response {
    match path {
        "/livez" => Response::text(200, "ok\n"),
        "/readyz" => {
            let s = shared.snapshot();
            if s.ready() {
                Response::text(200, "ready\n")
            } else {
                let why = if !s.in_sync {
                    "datastore not in sync"
                } else if !s.connected {
                    "datastore unreachable"
                } else if s.policy.as_ref().is_some_and(|p| !p.programmed) {
                    "policy not programmed"
                } else {
                    "routes not programmed yet"
                };
                Response::text(503, format!("not ready: {why}\n"))
            }
        }
        "/metrics" => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: {
                let s = shared.snapshot();
                shared.metrics.render(&s.routes, s.policy.as_ref())
            },
        },
        "/status" => Response::json(&status_json(shared, backend)),
        _ => Response::text(404, "not found\n"),
    }
}

/// The `/status` document (DESIGN §5).
fn status_json(shared: &Shared, backend: &str) -> Value {
    let s = shared.snapshot();
    let peers: Vec<Value> = s
        .peers
        .iter()
        .map(|p| peer_json_of_kind(&p.status, p.kind))
        .collect();
    json!({
        "node": s.node,
        "ready": s.ready(),
        "datastore": { "in_sync": s.in_sync, "connected": s.connected },
        "bgp": {
            "router_id": s.router_id.map(|r| r.to_string()),
            "asn": s.asn,
            "peers": peers,
            "originated": s.originated,
        },
        "routes": {
            "installed": s.routes.routes_programmed,
            "deferred": s.routes.routes_deferred,
            "learned": s.learned,
            "drift_repairs": s.routes.drift_repairs,
        },
        "dataplane": {
            "backend": backend,
            "endpoints": s.endpoints,
            "policies": s.policies,
            "policies_refused": s.policies_refused,
            "policy": s.policy.as_ref().map(|p| json!({
                "programmed": p.programmed,
                "chains": p.chains,
                "sets": p.sets,
                "set_members": p.members,
                "drift_repairs": p.drift_repairs,
                "last_error": p.last_error,
            })),
        },
        "at": s.at.map(rfc3339),
    })
}
