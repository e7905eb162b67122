//! `tabby route-reflector`: the standalone route reflector (shared/DESIGN.md §1, §5).

use crate::datastore_cmd::Source;
use crate::http::{self, Handler};
use anyhow::Context as _;
use clap::Args as ClapArgs;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use tabby_felix::agent::Shared;
use tabby_route_reflector::ReflectorOptions;

/// `tabby route-reflector` flags.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(flatten)]
    source: Source,
    /// The reflector's node name: a Node with the annotation
    /// `projectcalico.org/RouteReflectorClusterID`.
    #[arg(long, env = "NODENAME")]
    node_name: String,
    /// Address of the HTTP endpoints (/livez, /readyz, /metrics, /status).
    #[arg(long, default_value = "127.0.0.1:9099")]
    http_listen: SocketAddr,
    /// Hold time proposed to BGP peers, in seconds.
    #[arg(long, default_value_t = 90)]
    hold_time: u16,
}

/// Runs `tabby route-reflector`.
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
        Arc::new(move |path| crate::node_cmd::route(&shared, "none", path))
    };
    let options = ReflectorOptions {
        node_name: args.node_name.clone(),
        namespace: args.source.namespace.clone(),
        hold_time: args.hold_time,
    };
    tracing::info!(node = %args.node_name, http = %args.http_listen, "route reflector starting");
    let stop = async {
        if let Err(e) = crate::speaker_cmd::stop_signal().await {
            tracing::error!(error = %e, "cannot wait for signals");
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = http::serve(http_listener, handler) => Ok(()),
        result = tabby_route_reflector::run(options, datastore, Arc::clone(&shared), stop) => {
            result.context("route reflector")?;
            tracing::info!("stopped");
            Ok(())
        }
    }
}
