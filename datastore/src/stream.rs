//! The one stream of typed updates both backends produce, and the [`Emitter`] that keeps it
//! exact: it remembers what it emitted, so a consumer sees only real changes whatever the
//! backend re-reads (a relist, a rescan, a reconnect).

use crate::resource::{Key, Kind, Resource};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// One item of the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An object was added or changed (`Some`), or deleted (`None`).
    Update {
        /// Which object.
        key: Key,
        /// Its new state.
        object: Option<Arc<Resource>>,
    },
    /// Everything that existed when the backend started has been sent; sent once.
    InSync,
    /// Something could not be read. It is skipped; every other object still arrives, and an
    /// object that was valid before keeps its last valid state.
    Error(DatastoreError),
    /// The backend lost (`false`) or regained (`true`) its source. While it is lost, the
    /// consumer keeps its state and reports itself not ready.
    Connected(bool),
}

/// What went wrong reading the datastore.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatastoreError {
    /// A file that does not parse as YAML; its previous objects are kept.
    #[error("{}:{line}: {message} (its previous objects are kept until it parses again)", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A document or object that cannot be used; skipped.
    #[error("{origin}: {message}")]
    Object {
        /// Where it came from: `file:line`, or the Kubernetes API.
        origin: String,
        /// The object, when known.
        key: Option<Key>,
        /// What is wrong.
        message: String,
    },
    /// The same object in two files; the first in path order wins.
    #[error("{key} is defined in both {} and {}; using the one in {}", winner.display(), loser.display(), winner.display())]
    Duplicate {
        /// The object.
        key: Key,
        /// The file used.
        winner: PathBuf,
        /// The file ignored.
        loser: PathBuf,
    },
    /// The source cannot be reached or read.
    #[error("{0}")]
    Source(String),
}

/// Remembers what was emitted and turns fresh states into the events that lead there.
/// Sans-IO: it returns events; the backend sends them.
#[derive(Debug, Default)]
pub struct Emitter {
    emitted: BTreeMap<Key, Arc<Resource>>,
    in_sync: bool,
}

impl Emitter {
    /// An emitter that has emitted nothing.
    pub fn new() -> Emitter {
        Emitter::default()
    }

    /// The object as last emitted.
    pub fn get(&self, key: &Key) -> Option<&Arc<Resource>> {
        self.emitted.get(key)
    }

    /// Everything as last emitted.
    pub fn objects(&self) -> impl Iterator<Item = (&Key, &Arc<Resource>)> {
        self.emitted.iter()
    }

    /// An object's new state; an event when it differs from what was emitted.
    pub fn upsert(&mut self, key: Key, object: Arc<Resource>) -> Option<Event> {
        if self.emitted.get(&key).is_some_and(|old| **old == *object) {
            return None;
        }
        self.emitted.insert(key.clone(), object.clone());
        Some(Event::Update {
            key,
            object: Some(object),
        })
    }

    /// An object is gone; an event when it had been emitted.
    pub fn delete(&mut self, key: &Key) -> Option<Event> {
        self.emitted.remove(key)?;
        Some(Event::Update {
            key: key.clone(),
            object: None,
        })
    }

    /// The complete current state of the given kinds (a relist or a rescan): the events that
    /// turn what was emitted for those kinds into it. Deletes come first, then adds and
    /// updates, each in key order, so the result is deterministic.
    pub fn replace(&mut self, kinds: &[Kind], fresh: BTreeMap<Key, Arc<Resource>>) -> Vec<Event> {
        let gone: Vec<Key> = self
            .emitted
            .keys()
            .filter(|k| kinds.contains(&k.kind) && !fresh.contains_key(*k))
            .cloned()
            .collect();
        let mut events: Vec<Event> = gone.iter().filter_map(|k| self.delete(k)).collect();
        events.extend(fresh.into_iter().filter_map(|(k, o)| self.upsert(k, o)));
        events
    }

    /// The in-sync marker, the first time only.
    pub fn in_sync(&mut self) -> Option<Event> {
        if self.in_sync {
            return None;
        }
        self.in_sync = true;
        Some(Event::InSync)
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Update {
                key,
                object: Some(_),
            } => write!(f, "set {key}"),
            Event::Update { key, object: None } => write!(f, "delete {key}"),
            Event::InSync => f.write_str("in sync"),
            Event::Error(e) => write!(f, "error: {e}"),
            Event::Connected(up) => f.write_str(if *up { "connected" } else { "disconnected" }),
        }
    }
}
