//! tabby-route-reflector: the standalone route reflector (shared/DESIGN.md §1).
//!
//! A reflector is a node of the datastore, as in Calico: a `Node` whose annotation
//! `projectcalico.org/RouteReflectorClusterID` names its cluster, and whose sessions come
//! from the same resources a node's do (the node-to-node mesh does not apply to it; the
//! `BGPPeer`s that select it, or that it selects, do). Its iBGP peers that are not reflectors
//! of its cluster are its clients (RFC 4456). It runs the node agent's calc and BGP wiring,
//! and nothing of its dataplane: no routes, no interfaces, no policy, no originated blocks.
//!
//! It always starts as a restarting speaker (RFC 4724 §4.1): it cannot know whether its
//! clients still hold the routes it reflected before, so it holds its first advertisement
//! until the clients that are up sent their End-of-RIB. A client doing graceful restart
//! thus never receives a partial table followed by End-of-RIB, which would make it drop the
//! routes of clients not yet back.

#![warn(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tabby_bgp::speaker::Selected;
use tabby_datastore::{Datastore, Event};
use tabby_felix::agent::{PeerView, Shared, Snapshot};
use tabby_felix::bgp_sync::{self, Bgp, BgpOptions, Said};
use tabby_felix::calc::Calc;
use tabby_felix::metrics::PeerLabels;
use tokio::sync::broadcast;

/// How long changes gather before one reconcile applies them together.
const BATCH: Duration = Duration::from_millis(20);
/// How often the status snapshot is refreshed when nothing happens.
const REFRESH: Duration = Duration::from_secs(1);

/// Settings of the reflector.
#[derive(Debug, Clone)]
pub struct ReflectorOptions {
    /// The reflector's node name (`--node-name`).
    pub node_name: String,
    /// The namespace of BGP password Secrets.
    pub namespace: String,
    /// Hold time proposed to peers.
    pub hold_time: u16,
}

/// Why the reflector stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReflectorError {
    /// The datastore stream ended.
    #[error("the datastore stopped")]
    DatastoreStopped,
}

/// Runs the reflector until `shutdown` completes or the datastore stops.
pub async fn run(
    options: ReflectorOptions,
    mut datastore: Datastore,
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ReflectorError> {
    let mut calc = Calc::with_secret_namespace(&options.node_name, &options.namespace);
    let mut bgp: Option<Bgp> = None;
    let mut said = Said::default();
    let mut connected = true;
    let mut dirty = false;
    let mut batch_deadline: Option<tokio::time::Instant> = None;
    let mut told_not_reflector = false;
    let mut refresh = tokio::time::interval(REFRESH);
    tokio::pin!(shutdown);
    loop {
        if dirty && batch_deadline.is_none() {
            batch_deadline = Some(tokio::time::Instant::now() + BATCH);
        }
        let batch = async {
            match batch_deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => break,
            event = datastore.next() => match event {
                Some(Event::Connected(up)) => connected = up,
                Some(Event::Error(e)) => tracing::warn!(error = %e, "datastore"),
                Some(e) => {
                    calc.apply(&e);
                    dirty = true;
                }
                None => return Err(ReflectorError::DatastoreStopped),
            },
            () = batch => {
                dirty = false;
                batch_deadline = None;
                if calc.in_sync() {
                    let is_reflector = calc.node_info().rr_cluster_id.is_some();
                    if !is_reflector && !told_not_reflector {
                        tracing::warn!(
                            node = %options.node_name,
                            "the node has no projectcalico.org/RouteReflectorClusterID annotation: it runs as a plain BGP speaker and reflects nothing"
                        );
                    }
                    told_not_reflector = !is_reflector;
                    let bgp_options = BgpOptions {
                        hold_time: options.hold_time,
                        originate: false,
                    };
                    let _: Option<broadcast::Receiver<Selected>> =
                        bgp_sync::sync(&mut bgp, &calc, bgp_options, true, &mut said).await;
                }
                publish(&shared, &calc, &bgp, connected);
            }
            _ = refresh.tick() => publish(&shared, &calc, &bgp, connected),
        }
    }
    if let Some(b) = bgp {
        b.speaker.shutdown().await;
    }
    Ok(())
}

fn publish(shared: &Shared, calc: &Calc, bgp: &Option<Bgp>, connected: bool) {
    let node = calc.node_info();
    let peers: Vec<PeerView> = bgp
        .as_ref()
        .map(|b| {
            b.peer_views()
                .into_iter()
                .map(|(status, kind)| PeerView { status, kind })
                .collect()
        })
        .unwrap_or_default();
    let m = &shared.metrics;
    for p in &peers {
        let labels = PeerLabels {
            peer: p.status.address.to_string(),
            kind: p.kind.to_string(),
        };
        let up = p.status.state == tabby_bgp::fsm::State::Established;
        m.bgp_established.get_or_create(&labels).set(i64::from(up));
        m.prefixes_received
            .get_or_create(&labels)
            .set(i64::try_from(p.status.received).unwrap_or(0));
        m.prefixes_advertised
            .get_or_create(&labels)
            .set(i64::try_from(p.status.advertised).unwrap_or(0));
    }
    let snapshot = Snapshot {
        node: calc.node_name().to_string(),
        in_sync: calc.in_sync(),
        connected,
        // Nothing to program: ready once the datastore is in sync.
        programmed: calc.in_sync(),
        router_id: node.router_id,
        asn: Some(node.asn.0),
        peers,
        learned: bgp.as_ref().map_or(0, |b| b.speaker.prefixes()),
        at: Some(SystemTime::now()),
        ..Snapshot::default()
    };
    m.ready.set(i64::from(snapshot.ready()));
    *shared.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
}
