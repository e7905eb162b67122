//! Network policy in the node agent: the datastore's namespaces, pods, host endpoints,
//! policies and FelixConfiguration fed to tabby-acl's compiler ([`PolicyFeed`], pure), and the
//! compiled ruleset applied by the nftables or iptables backend on a thread of its own
//! ([`PolicyApplier`]: the backends run `nft`, `iptables-restore` and `ipset` processes).
//!
//! ```text
//!  agent task: Event -> PolicyFeed (Compiler) --ruleset after each in-sync batch--+
//!                                                                                 v
//!  applier thread: latest ruleset -> Dataplane::apply (only the difference)
//!                  nft monitor (another tool touched `inet tabby`) -> Dataplane::repair
//!                  an apply that failed -> retried every second, not ready meanwhile
//! ```
//!
//! Nothing is programmed before the datastore is in sync (the agent sends the first ruleset
//! then). Stopping the agent leaves the rules in place: the drop of unknown workload
//! interfaces keeps the node closed while it is down.

use std::collections::BTreeMap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tabby_acl::{Compiler, Dataplane, Endpoint, Exec, Policy, Ruleset, Settings};
use tabby_datastore::{Event, Kind, Resource};

/// The policy backend (`tabby node --dataplane`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// nftables: table `inet tabby`.
    Nftables,
    /// iptables: chains `tabby-*` and ipsets.
    Iptables,
}

impl Backend {
    /// The name `/status` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Nftables => "nftables",
            Backend::Iptables => "iptables",
        }
    }
}

/// The compiler's inputs, from the datastore stream.
#[derive(Debug)]
pub struct PolicyFeed {
    compiler: Compiler,
    node: String,
    felix: BTreeMap<String, Settings>,
    /// The effective settings (node's FelixConfiguration, else `default`), kept so a pod
    /// event does not rebuild them.
    settings: Settings,
    /// Policies refused, by name, with why (shown once each, and in `/status`).
    refused: BTreeMap<String, String>,
}

impl PolicyFeed {
    /// An empty feed for node `node`.
    pub fn new(node: &str) -> PolicyFeed {
        PolicyFeed {
            compiler: Compiler::new(Settings::default()),
            node: node.to_string(),
            felix: BTreeMap::new(),
            settings: Settings::default(),
            refused: BTreeMap::new(),
        }
    }

    fn effective_settings(&self) -> Settings {
        self.felix
            .get(&format!("node.{}", self.node))
            .or_else(|| self.felix.get("default"))
            .cloned()
            .unwrap_or_default()
    }

    /// Applies one datastore event. Returns true when the ruleset may have changed.
    pub fn apply(&mut self, event: &Event) -> bool {
        let Event::Update { key, object } = event else {
            return false;
        };
        let ns = key.namespace.as_deref().unwrap_or("default");
        match (key.kind, object.as_deref()) {
            (Kind::Namespace, Some(Resource::Namespace(n))) => {
                let labels = n.metadata.labels.clone().unwrap_or_default();
                self.compiler.upsert_namespace(&key.name, labels);
            }
            (Kind::Namespace, None) => self.compiler.remove_namespace(&key.name),
            (Kind::Pod, Some(Resource::Pod(p))) => {
                let local =
                    p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&self.node);
                let prefix = local.then_some(self.settings.interface_prefix.as_str());
                match Endpoint::from_pod(p, prefix) {
                    Some(ep) => self.compiler.upsert_endpoint(ep),
                    None => self.compiler.remove_endpoint(&format!("{ns}/{}", key.name)),
                }
            }
            (Kind::Pod, None) => self.compiler.remove_endpoint(&format!("{ns}/{}", key.name)),
            (Kind::HostEndpoint, Some(Resource::HostEndpoint(h))) => {
                let local = h.spec.node.as_deref() == Some(self.node.as_str());
                self.compiler
                    .upsert_endpoint(Endpoint::from_host_endpoint(h, local));
            }
            (Kind::HostEndpoint, None) => {
                self.compiler.remove_endpoint(&format!("hep/{}", key.name));
            }
            (Kind::K8sNetworkPolicy, o) => {
                let name = Policy::k8s_name(ns, &key.name);
                let policy = match o {
                    Some(Resource::K8sNetworkPolicy(p)) => Some(Policy::from_k8s(p)),
                    _ => None,
                };
                self.set_policy(name, policy);
            }
            (Kind::NetworkPolicy, o) => {
                let name = Policy::calico_name(ns, &key.name);
                let policy = match o {
                    Some(Resource::NetworkPolicy(p)) => Some(Policy::from_calico(p)),
                    _ => None,
                };
                self.set_policy(name, policy);
            }
            (Kind::GlobalNetworkPolicy, o) => {
                let name = Policy::global_name(&key.name);
                let policy = match o {
                    Some(Resource::GlobalNetworkPolicy(p)) => Some(Policy::from_calico_global(p)),
                    _ => None,
                };
                self.set_policy(name, policy);
            }
            (Kind::FelixConfiguration, o) => {
                match o {
                    Some(Resource::FelixConfiguration(f)) => {
                        self.felix.insert(
                            key.name.clone(),
                            Settings::from_felix_configuration(&f.spec),
                        );
                    }
                    _ => {
                        self.felix.remove(&key.name);
                    }
                }
                self.settings = self.effective_settings();
                self.compiler.set_settings(self.settings.clone());
            }
            _ => return false,
        }
        true
    }

    /// A policy is set (`Some(Ok)`), refused (`Some(Err)`: reported and skipped; an earlier
    /// version of it goes too, since it no longer says what the user wants) or deleted.
    fn set_policy(&mut self, name: String, policy: Option<Result<Policy, tabby_acl::ModelError>>) {
        match policy {
            Some(Ok(p)) => {
                self.refused.remove(&name);
                self.compiler.upsert_policy(p);
            }
            Some(Err(e)) => {
                let why = e.to_string();
                if self.refused.get(&name) != Some(&why) {
                    tracing::warn!(policy = %name, error = %why, "policy skipped");
                }
                self.refused.insert(name.clone(), why);
                self.compiler.remove_policy(&name);
            }
            None => {
                self.refused.remove(&name);
                self.compiler.remove_policy(&name);
            }
        }
    }

    /// The ruleset to program.
    pub fn ruleset(&self) -> Ruleset {
        self.compiler.ruleset()
    }

    /// Policies in force.
    pub fn policies(&self) -> usize {
        self.compiler.policy_names().count()
    }

    /// Policies refused, with why.
    pub fn refused(&self) -> &BTreeMap<String, String> {
        &self.refused
    }
}

/// What the applier last did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyStatus {
    /// The last ruleset is in the kernel.
    pub programmed: bool,
    /// A ruleset has been received (the datastore was in sync).
    pub started: bool,
    /// Why the last apply failed.
    pub last_error: Option<String>,
    /// Local endpoints of the applied ruleset.
    pub endpoints: usize,
    /// Policy chains of the applied ruleset.
    pub chains: usize,
    /// Sets of the applied ruleset.
    pub sets: usize,
    /// Set members of the applied ruleset.
    pub members: usize,
    /// Applies that wrote something.
    pub applies: u64,
    /// Total seconds spent in applies.
    pub apply_seconds: f64,
    /// Repairs after another tool changed our rules.
    pub drift_repairs: u64,
}

enum Msg {
    Ruleset(Box<Ruleset>),
    Drift,
    /// The agent stops (the nft monitor holds a sender too, so the channel alone would
    /// never close).
    Stop,
}

/// The applier thread; dropping it stops the thread and leaves the rules in place.
#[derive(Debug)]
pub struct PolicyApplier {
    tx: Option<mpsc::Sender<Msg>>,
    status: Arc<Mutex<PolicyStatus>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _monitor: Option<tabby_acl::nft::Monitor>,
}

/// How long a failed apply waits before it is retried.
const RETRY: Duration = Duration::from_secs(1);
/// How often iptables rules are read back and repaired (there is no monitor for them).
const IPTABLES_CHECK: Duration = Duration::from_secs(10);

impl PolicyApplier {
    /// Starts the applier for `backend` in the current network namespace.
    pub fn start(backend: Backend) -> PolicyApplier {
        let (tx, rx) = mpsc::channel();
        let status = Arc::new(Mutex::new(PolicyStatus::default()));
        let exec = Exec::host();
        let monitor = match backend {
            Backend::Nftables => {
                let drift = tx.clone();
                match tabby_acl::nft::Monitor::spawn(&exec, move || {
                    let _ = drift.send(Msg::Drift);
                }) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        tracing::warn!(error = %e, "nft monitor not running: drift is repaired only on the next change");
                        None
                    }
                }
            }
            Backend::Iptables => None,
        };
        let dataplane: Box<dyn Dataplane + Send> = match backend {
            Backend::Nftables => Box::new(tabby_acl::nft::NftApplier::new(exec)),
            Backend::Iptables => Box::new(tabby_acl::iptables::IptablesApplier::new(exec)),
        };
        let shared = Arc::clone(&status);
        let periodic = (backend == Backend::Iptables).then_some(IPTABLES_CHECK);
        let thread = std::thread::Builder::new()
            .name("policy".into())
            .spawn(move || run(dataplane, rx, shared, periodic))
            .ok();
        if thread.is_none() {
            lock(&status).last_error = Some("cannot start the policy thread".into());
        }
        PolicyApplier {
            tx: Some(tx),
            status,
            thread,
            _monitor: monitor,
        }
    }

    /// Programs `rs` (replacing any ruleset not applied yet).
    pub fn set(&self, rs: Ruleset) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Ruleset(Box::new(rs)));
        }
    }

    /// The applier's status.
    pub fn status(&self) -> PolicyStatus {
        lock(&self.status).clone()
    }
}

impl Drop for PolicyApplier {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Msg::Stop);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock(s: &Mutex<PolicyStatus>) -> std::sync::MutexGuard<'_, PolicyStatus> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn run(
    mut dataplane: Box<dyn Dataplane + Send>,
    rx: mpsc::Receiver<Msg>,
    status: Arc<Mutex<PolicyStatus>>,
    periodic: Option<Duration>,
) {
    let mut pending: Option<Box<Ruleset>> = None;
    let mut drift = false;
    let mut last_check = Instant::now();
    loop {
        let wait = if pending.is_some() {
            RETRY
        } else {
            periodic.unwrap_or(Duration::from_secs(3600))
        };
        match rx.recv_timeout(wait) {
            Ok(Msg::Ruleset(rs)) => pending = Some(rs),
            Ok(Msg::Drift) => drift = true,
            Ok(Msg::Stop) => return,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        // Only the latest ruleset matters.
        while let Ok(msg) = rx.try_recv() {
            match msg {
                Msg::Ruleset(rs) => pending = Some(rs),
                Msg::Drift => drift = true,
                Msg::Stop => return,
            }
        }
        if let Some(rs) = pending.take() {
            let started = Instant::now();
            let result = dataplane.apply(&rs);
            let took = started.elapsed().as_secs_f64();
            let mut s = lock(&status);
            s.started = true;
            match result {
                Ok(stats) => {
                    if stats.wrote {
                        s.applies += 1;
                        s.apply_seconds += took;
                    }
                    s.programmed = true;
                    s.last_error = None;
                    s.endpoints = rs.endpoints.len();
                    s.chains = stats.chains;
                    s.sets = stats.sets;
                    s.members = stats.members;
                }
                Err(e) => {
                    if s.last_error.as_deref() != Some(&e.to_string()) {
                        tracing::error!(error = %e, "cannot program policy; not ready, retrying");
                    }
                    s.programmed = false;
                    s.last_error = Some(e.to_string());
                    pending = Some(rs);
                }
            }
            drift = false;
            last_check = Instant::now();
            continue;
        }
        let check_due = periodic.is_some_and(|p| last_check.elapsed() >= p);
        if (drift || check_due) && lock(&status).started {
            drift = false;
            last_check = Instant::now();
            match dataplane.repair() {
                Ok(true) => {
                    tracing::warn!("policy rules changed by another tool: repaired");
                    lock(&status).drift_repairs += 1;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "policy drift check failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::{json, Value};
    use tabby_datastore::Key;

    fn set(feed: &mut PolicyFeed, doc: Value) -> bool {
        let (key, object) = Resource::from_document(doc, "default").unwrap();
        feed.apply(&Event::Update {
            key,
            object: Some(Arc::new(object)),
        })
    }

    fn delete(feed: &mut PolicyFeed, kind: Kind, ns: Option<&str>, name: &str) -> bool {
        feed.apply(&Event::Update {
            key: Key::new(kind, ns, name),
            object: None,
        })
    }

    fn pod(name: &str, node: &str, ip: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "none"}]},
            "status": {"podIPs": [{"ip": ip}]},
        })
    }

    fn deny_all() -> Value {
        json!({
            "apiVersion": "crd.projectcalico.org/v1", "kind": "GlobalNetworkPolicy",
            "metadata": {"name": "deny"},
            "spec": {"selector": "all()", "types": ["Ingress"]},
        })
    }

    #[test]
    fn only_pods_of_this_node_become_local_endpoints() {
        let mut feed = PolicyFeed::new("node1");
        set(&mut feed, pod("a", "node1", "10.244.1.10"));
        set(&mut feed, pod("b", "node2", "10.244.2.10"));
        let rs = feed.ruleset();
        let keys: Vec<&str> = rs.endpoints.values().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, vec!["default/a"]);
    }

    #[test]
    fn events_of_other_kinds_do_not_change_the_ruleset() {
        let mut feed = PolicyFeed::new("node1");
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node1"}});
        assert!(!set(&mut feed, node));
        assert!(set(&mut feed, pod("a", "node1", "10.244.1.10")));
        assert!(!feed.apply(&Event::InSync));
    }

    #[test]
    fn a_policy_applies_and_its_deletion_removes_it() {
        let mut feed = PolicyFeed::new("node1");
        set(&mut feed, pod("a", "node1", "10.244.1.10"));
        set(&mut feed, deny_all());
        assert_eq!(feed.policies(), 1);
        assert!(delete(&mut feed, Kind::GlobalNetworkPolicy, None, "deny"));
        assert_eq!(feed.policies(), 0);
    }

    #[test]
    fn an_unsupported_policy_is_refused_and_replaces_its_earlier_version() {
        let mut feed = PolicyFeed::new("node1");
        set(&mut feed, deny_all());
        let mut other_tier = deny_all();
        other_tier["spec"]["tier"] = json!("security");
        set(&mut feed, other_tier);
        assert_eq!(feed.policies(), 0);
        assert_eq!(feed.refused().len(), 1);
        set(&mut feed, deny_all());
        assert_eq!((feed.policies(), feed.refused().len()), (1, 0));
    }

    #[test]
    fn the_nodes_felix_configuration_sets_the_interface_prefix_of_new_endpoints() {
        let mut feed = PolicyFeed::new("node1");
        let felix = |name: &str, prefix: &str| {
            json!({
                "apiVersion": "crd.projectcalico.org/v1", "kind": "FelixConfiguration",
                "metadata": {"name": name}, "spec": {"interfacePrefix": prefix},
            })
        };
        set(&mut feed, felix("default", "tap"));
        set(&mut feed, felix("node.node1", "veth"));
        set(&mut feed, pod("a", "node1", "10.244.1.10"));
        let rs = feed.ruleset();
        assert!(
            rs.endpoints.keys().all(|i| i.starts_with("veth")),
            "{:?}",
            rs.endpoints.keys()
        );
    }
}
