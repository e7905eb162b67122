//! The Kubernetes backend (`--datastore kubernetes`): one kube-rs watcher per kind.
//!
//! The watchers list, then watch from the list's resourceVersion with bookmarks, relist on
//! 410 Gone, and back off exponentially with jitter (800 ms to 30 s) on errors. Each relist
//! is diffed against what was already emitted, so consumers see only real changes. While the
//! API cannot be reached the stream says `Connected(false)` and the consumer keeps serving
//! its last good state.

use crate::resource::{Key, Kind, Resource};
use crate::stream::{DatastoreError, Emitter, Event};
use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::Api;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;

/// How often a lost API is probed.
const PROBE: std::time::Duration = std::time::Duration::from_secs(2);

/// How to reach the API.
#[derive(Debug, Clone, Default)]
pub struct KubernetesOptions {
    /// A kubeconfig file; without it, `KUBECONFIG`, `~/.kube/config`, or the in-cluster
    /// service account.
    pub kubeconfig: Option<PathBuf>,
    /// The namespace tabby runs in, where BGP password Secrets are read.
    pub namespace: String,
}

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    /// The kubeconfig could not be read.
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: kube::config::KubeconfigError,
    },
    /// No configuration could be inferred.
    #[error("no Kubernetes configuration (no --kubeconfig, KUBECONFIG, ~/.kube/config or in-cluster service account): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    /// The client could not be built.
    #[error("building the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A client from the options.
pub async fn client(options: &KubernetesOptions) -> Result<kube::Client, KubernetesError> {
    let config = match &options.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                KubernetesError::Kubeconfig {
                    path: path.clone(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|source| KubernetesError::Kubeconfig {
                    path: path.clone(),
                    source,
                })?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// The API resource (group, version, plural) of a kind.
pub fn api_resource(kind: Kind) -> ApiResource {
    let (group, version, plural) = match kind {
        Kind::Node => ("", "v1", "nodes"),
        Kind::Namespace => ("", "v1", "namespaces"),
        Kind::Pod => ("", "v1", "pods"),
        Kind::Secret => ("", "v1", "secrets"),
        Kind::K8sNetworkPolicy => ("networking.k8s.io", "v1", "networkpolicies"),
        Kind::BGPConfiguration => (crate::calico::GROUP, "v1", "bgpconfigurations"),
        Kind::BGPPeer => (crate::calico::GROUP, "v1", "bgppeers"),
        Kind::IPPool => (crate::calico::GROUP, "v1", "ippools"),
        Kind::IPAMBlock => (crate::calico::GROUP, "v1", "ipamblocks"),
        Kind::NetworkPolicy => (crate::calico::GROUP, "v1", "networkpolicies"),
        Kind::GlobalNetworkPolicy => (crate::calico::GROUP, "v1", "globalnetworkpolicies"),
        Kind::FelixConfiguration => (crate::calico::GROUP, "v1", "felixconfigurations"),
        Kind::HostEndpoint => (crate::calico::GROUP, "v1", "hostendpoints"),
    };
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: kind.api_version().into(),
        kind: kind.name().into(),
        plural: plural.into(),
    }
}

/// The backend's state between watcher events (sans-IO): turns watcher events into stream
/// events.
#[derive(Debug, Default)]
pub struct KubeState {
    emitter: Emitter,
    /// Objects listed since a kind's `Init`, until its `InitDone`.
    listing: HashMap<Kind, BTreeMap<Key, Arc<Resource>>>,
    /// Kinds whose first listing is complete.
    listed: HashSet<Kind>,
    /// The last error reported per object, so a relist does not repeat it.
    reported: HashMap<Key, String>,
    connected: bool,
}

impl KubeState {
    /// A state that has seen nothing.
    pub fn new() -> KubeState {
        KubeState {
            connected: true,
            ..KubeState::default()
        }
    }

    /// The typed object, or the key (when known) of an invalid one, whose error goes to
    /// `out` unless it was already reported.
    fn decode(
        &mut self,
        kind: Kind,
        object: DynamicObject,
        out: &mut Vec<Event>,
    ) -> Result<(Key, Arc<Resource>), Option<Key>> {
        let mut doc = serde_json::to_value(&object).map_err(|_| None)?;
        // Items of a list carry no apiVersion and kind: the watch knows them.
        if let Some(obj) = doc.as_object_mut() {
            obj.insert("apiVersion".into(), kind.api_version().into());
            obj.insert("kind".into(), kind.name().into());
        }
        match Resource::from_document(doc, "") {
            Ok((key, resource)) => {
                self.reported.remove(&key);
                Ok((key, Arc::new(resource)))
            }
            Err(e) => {
                let message = e.to_string();
                let key = e.key().cloned();
                let seen = key.as_ref().and_then(|k| self.reported.get(k)) == Some(&message);
                if !seen {
                    if let Some(k) = &key {
                        self.reported.insert(k.clone(), message.clone());
                    }
                    out.push(Event::Error(DatastoreError::Object {
                        origin: "kubernetes".into(),
                        key: key.clone(),
                        message,
                    }));
                }
                Err(key)
            }
        }
    }

    /// The stream events for one watcher event of `kind`.
    pub fn handle(&mut self, kind: Kind, event: watcher::Event<DynamicObject>) -> Vec<Event> {
        let mut out = Vec::new();
        // kube-rs announces Init before it tries to list, so only data proves the API is back.
        if !self.connected && !matches!(event, watcher::Event::Init) {
            out.extend(self.reconnected());
        }
        match event {
            watcher::Event::Init => {
                self.listing.insert(kind, BTreeMap::new());
            }
            watcher::Event::InitApply(object) => match self.decode(kind, object, &mut out) {
                Ok((key, resource)) => {
                    self.listing.entry(kind).or_default().insert(key, resource);
                }
                Err(Some(key)) => {
                    // An invalid object keeps its last good state across a relist.
                    if let Some(old) = self.emitter.get(&key).cloned() {
                        self.listing.entry(kind).or_default().insert(key, old);
                    }
                }
                Err(None) => {}
            },
            watcher::Event::InitDone => {
                let fresh = self.listing.remove(&kind).unwrap_or_default();
                out.extend(self.emitter.replace(&[kind], fresh));
                self.listed.insert(kind);
                if self.listed.len() == Kind::ALL.len() {
                    out.extend(self.emitter.in_sync());
                }
            }
            watcher::Event::Apply(object) => {
                if let Ok((key, resource)) = self.decode(kind, object, &mut out) {
                    out.extend(self.emitter.upsert(key, resource));
                }
            }
            watcher::Event::Delete(object) => {
                let namespace = object
                    .metadata
                    .namespace
                    .as_deref()
                    .filter(|_| kind.namespaced());
                let key = Key::new(
                    kind,
                    namespace,
                    object.metadata.name.as_deref().unwrap_or_default(),
                );
                self.reported.remove(&key);
                out.extend(self.emitter.delete(&key));
            }
        }
        out
    }

    /// The API answered again (a watcher delivered data, or a probe succeeded).
    pub fn reconnected(&mut self) -> Option<Event> {
        if self.connected {
            return None;
        }
        self.connected = true;
        Some(Event::Connected(true))
    }

    /// Whether the API is believed reachable.
    pub fn connected(&self) -> bool {
        self.connected
    }

    /// A watcher error: the first since things worked says disconnected.
    pub fn error(&mut self, kind: Kind, error: &watcher::Error) -> Vec<Event> {
        let mut out = Vec::new();
        if self.connected {
            self.connected = false;
            out.push(Event::Connected(false));
            out.push(Event::Error(DatastoreError::Source(format!(
                "watching {kind}: {error}"
            ))));
        }
        out
    }
}

/// Runs the watchers until the receiver is dropped.
pub(crate) async fn run(client: kube::Client, namespace: String, tx: mpsc::Sender<Event>) {
    let streams = Kind::ALL.into_iter().map(|kind| {
        let ar = api_resource(kind);
        let api: Api<DynamicObject> = if kind == Kind::Secret {
            // Only tabby's own namespace: BGP passwords live there, and RBAC grants no more.
            Api::namespaced_with(client.clone(), &namespace, &ar)
        } else {
            Api::all_with(client.clone(), &ar)
        };
        watcher(api, watcher::Config::default())
            .default_backoff()
            .map(move |event| (kind, event))
            .boxed()
    });
    let mut merged = futures::stream::select_all(streams);
    let mut state = KubeState::new();
    loop {
        // While the API is lost, probe it: a watcher that resumes without a relist delivers
        // nothing until something changes, so its silence says nothing.
        let probe = async {
            if state.connected() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(PROBE).await;
            while client.apiserver_version().await.is_err() {
                tokio::time::sleep(PROBE).await;
            }
        };
        let next = tokio::select! {
            next = merged.next() => next,
            () = probe => {
                if let Some(e) = state.reconnected() {
                    if tx.send(e).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            () = tx.closed() => return,
        };
        let Some((kind, event)) = next else { return };
        let events = match event {
            Ok(event) => state.handle(kind, event),
            Err(error) => {
                tracing::warn!(%kind, %error, "Kubernetes watch failed; backing off");
                state.error(kind, &error)
            }
        };
        for e in events {
            if tx.send(e).await.is_err() {
                return;
            }
        }
    }
}
