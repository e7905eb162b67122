//! tabby-datastore: the resources tabby reads, and the backends that stream them.
//!
//! Both backends serve the same typed objects ([`Resource`]: Kubernetes `Node`, `Namespace`,
//! `Pod`, `Secret`, `NetworkPolicy` and Calico's kinds) as one stream of [`Event`]s: updates
//! keyed by (kind, namespace/name), then an `InSync` marker after the initial listing.
//! Consumers see only real changes: the [`Emitter`] diffs every fresh listing against what it
//! already emitted. Invalid input is reported as an [`Event::Error`] naming the file or object
//! and the field, and skipped; it never stops the stream.
//!
//! - [`file`]: a directory of YAML files, watched.
//! - [`kubernetes`]: the Kubernetes API (kube-rs watchers).

pub mod asn;
pub mod calico;
pub mod crd;
pub mod facts;
pub mod file;
pub mod kubernetes;
pub mod resource;
pub mod stream;
pub mod validate;

pub use asn::AsNumber;
pub use resource::{DecodeError, Key, Kind, Resource};
pub use stream::{DatastoreError, Emitter, Event};

use std::path::PathBuf;
use std::str::FromStr;
use tokio::sync::mpsc;

/// How many events may wait for the consumer.
const QUEUE: usize = 1024;

/// Which datastore to read (`--datastore`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatastoreSpec {
    /// `file:DIR`.
    File(PathBuf),
    /// `kubernetes`.
    Kubernetes,
}

impl FromStr for DatastoreSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<DatastoreSpec, String> {
        match s.split_once(':') {
            Some(("file", dir)) if !dir.is_empty() => Ok(DatastoreSpec::File(dir.into())),
            None if s == "kubernetes" => Ok(DatastoreSpec::Kubernetes),
            _ => Err(format!("{s:?}: expected file:DIR or kubernetes")),
        }
    }
}

/// A running backend and its stream. Dropping it stops the backend.
#[derive(Debug)]
pub struct Datastore {
    events: mpsc::Receiver<Event>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Datastore {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Datastore {
    /// Starts the file backend on `dir`; namespaced objects without a namespace go to
    /// `default_namespace`.
    pub fn file(dir: impl Into<PathBuf>, default_namespace: &str) -> Datastore {
        let (tx, events) = mpsc::channel(QUEUE);
        let source = file::FileSource::new(dir, default_namespace);
        let task = tokio::spawn(file::run(source, tx));
        Datastore { events, task }
    }

    /// Starts the Kubernetes backend. BGP password Secrets are read from `namespace`.
    pub async fn kubernetes(
        options: &kubernetes::KubernetesOptions,
    ) -> Result<Datastore, kubernetes::KubernetesError> {
        let client = kubernetes::client(options).await?;
        let (tx, events) = mpsc::channel(QUEUE);
        let task = tokio::spawn(kubernetes::run(client, options.namespace.clone(), tx));
        Ok(Datastore { events, task })
    }

    /// The next event; `None` once the backend has stopped.
    pub async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }
}
