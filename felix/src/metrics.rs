//! The node agent's Prometheus metrics (`GET /metrics`), named after Felix's where one exists.

use crate::policy::PolicyStatus;
use crate::routes::manager::APPLY_LATENCY_BUCKETS;
use crate::routes::RouteStats;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of per-peer metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PeerLabels {
    /// The peer's address.
    pub peer: String,
    /// `mesh`, `peer`, `rr-client` or `reflector`.
    pub kind: String,
}

/// Every metric of the agent.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Routes tabby has in the kernel.
    pub routes_programmed: Gauge,
    /// Local workload endpoints.
    pub endpoints: Gauge,
    /// 1 when the BGP session is Established.
    pub bgp_established: Family<PeerLabels, Gauge>,
    /// Prefixes the peer announces to us.
    pub prefixes_received: Family<PeerLabels, Gauge>,
    /// Prefixes we announce to the peer.
    pub prefixes_advertised: Family<PeerLabels, Gauge>,
    /// 1 when ready (in sync and programmed).
    pub ready: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            registry: Registry::default(),
            routes_programmed: Gauge::default(),
            endpoints: Gauge::default(),
            bgp_established: Family::default(),
            prefixes_received: Family::default(),
            prefixes_advertised: Family::default(),
            ready: Gauge::default(),
        };
        registry.register(
            "tabby_routes_programmed",
            "Routes tabby has in the kernel",
            m.routes_programmed.clone(),
        );
        registry.register(
            "tabby_workload_endpoints",
            "Local workload endpoints",
            m.endpoints.clone(),
        );
        registry.register(
            "tabby_bgp_session_established",
            "1 when the BGP session is Established",
            m.bgp_established.clone(),
        );
        registry.register(
            "tabby_bgp_prefixes_received",
            "Prefixes the peer announces",
            m.prefixes_received.clone(),
        );
        registry.register(
            "tabby_bgp_prefixes_advertised",
            "Prefixes announced to the peer",
            m.prefixes_advertised.clone(),
        );
        registry.register(
            "tabby_ready",
            "1 when in sync and programmed",
            m.ready.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The Prometheus text exposition of every metric, with the route manager's apply
    /// latency histogram (Felix: `felix_int_dataplane_apply_time_seconds`).
    pub fn render(&self, routes: &RouteStats, policy: Option<&PolicyStatus>) -> String {
        let mut out = String::new();
        if let Some(p) = policy {
            // Counters and gauges of the policy applier (Felix has the same figures under
            // iptables/nftables-specific names).
            out.push_str(&format!(
                "# HELP tabby_policy_apply_seconds Time spent applying policy changes.\n# TYPE tabby_policy_apply_seconds summary\ntabby_policy_apply_seconds_sum {}\ntabby_policy_apply_seconds_count {}\n",
                p.apply_seconds, p.applies
            ));
            out.push_str(&format!(
                "# HELP tabby_policy_drift_repairs Policy rules repaired after another tool changed them.\n# TYPE tabby_policy_drift_repairs counter\ntabby_policy_drift_repairs_total {}\n",
                p.drift_repairs
            ));
            for (name, help, value) in [
                ("tabby_policy_chains", "Policy chains programmed", p.chains),
                ("tabby_policy_sets", "IP sets programmed", p.sets),
                (
                    "tabby_policy_set_members",
                    "Members of the IP sets programmed",
                    p.members,
                ),
                (
                    "tabby_policy_endpoints",
                    "Local endpoints with policy programmed",
                    p.endpoints,
                ),
            ] {
                out.push_str(&format!(
                    "# HELP {name} {help}.\n# TYPE {name} gauge\n{name} {value}\n"
                ));
            }
            out.push_str(&format!(
                "# HELP tabby_policy_programmed 1 when the last policy ruleset is in the kernel.\n# TYPE tabby_policy_programmed gauge\ntabby_policy_programmed {}\n",
                u8::from(p.programmed)
            ));
        }
        out.push_str("# HELP felix_int_dataplane_apply_time_seconds Time taken to apply a batch of dataplane changes.\n");
        out.push_str("# TYPE felix_int_dataplane_apply_time_seconds histogram\n");
        for (bound, count) in APPLY_LATENCY_BUCKETS
            .iter()
            .zip(&routes.apply_seconds_buckets)
        {
            out.push_str(&format!(
                "felix_int_dataplane_apply_time_seconds_bucket{{le=\"{bound}\"}} {count}\n"
            ));
        }
        out.push_str(&format!(
            "felix_int_dataplane_apply_time_seconds_bucket{{le=\"+Inf\"}} {}\n",
            routes.applies
        ));
        out.push_str(&format!(
            "felix_int_dataplane_apply_time_seconds_sum {}\n",
            routes.apply_seconds_sum
        ));
        out.push_str(&format!(
            "felix_int_dataplane_apply_time_seconds_count {}\n",
            routes.applies
        ));
        out.push_str(&format!(
            "# TYPE tabby_route_drift_repairs counter\ntabby_route_drift_repairs_total {}\n",
            routes.drift_repairs
        ));
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_with_felix_names_and_peer_labels() {
        let m = Metrics::new();
        let stats = RouteStats {
            applies: 1,
            drift_repairs: 1,
            apply_seconds_buckets: vec![1; APPLY_LATENCY_BUCKETS.len() + 1],
            ..RouteStats::default()
        };
        m.bgp_established
            .get_or_create(&PeerLabels {
                peer: "10.0.0.2".into(),
                kind: "mesh".into(),
            })
            .set(1);
        let policy = PolicyStatus {
            programmed: true,
            drift_repairs: 2,
            members: 7,
            ..PolicyStatus::default()
        };
        let text = m.render(&stats, Some(&policy));
        assert!(
            text.contains("tabby_policy_drift_repairs_total 2"),
            "{text}"
        );
        assert!(text.contains("tabby_policy_set_members 7"), "{text}");
        assert!(
            text.contains("felix_int_dataplane_apply_time_seconds_count 1"),
            "{text}"
        );
        assert!(text.contains("tabby_route_drift_repairs_total 1"), "{text}");
        assert!(
            text.contains("tabby_bgp_session_established{peer=\"10.0.0.2\",kind=\"mesh\"} 1"),
            "{text}"
        );
    }
}
