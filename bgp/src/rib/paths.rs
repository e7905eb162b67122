//! How the table stores paths: 24 bytes each, the only path of a destination (the common
//! case) inline, with its next hop and attributes in one interned [`Route`].

use super::{Path, PathFrom};
use crate::wire::{NextHop, PathAttributes};
use std::sync::Arc;

/// What a path says, apart from where it came from: interned, so the paths of one UPDATE
/// (and of every UPDATE with the same next hop and attributes) share one.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Route {
    pub(super) next_hop: Option<NextHop>,
    pub(super) attrs: Arc<PathAttributes>,
}

/// A path as the table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stored {
    /// The peer it came from; `None`: originated here.
    pub(super) from: Option<Arc<PathFrom>>,
    pub(super) route: Arc<Route>,
    pub(super) path_id: u32,
    /// Kept for a restarting peer until it sends End-of-RIB (RFC 4724 §4.2).
    pub(super) stale: bool,
}

impl Stored {
    pub(super) fn attrs(&self) -> &Arc<PathAttributes> {
        &self.route.attrs
    }

    pub(super) fn next_hop(&self) -> Option<NextHop> {
        self.route.next_hop
    }

    /// The path as the API shows it.
    pub(super) fn to_path(&self) -> Path {
        Path {
            from: self.from.clone(),
            path_id: self.path_id,
            next_hop: self.route.next_hop,
            attrs: Arc::clone(&self.route.attrs),
            stale: self.stale,
        }
    }

    /// What peers are sent depends on this and nothing else of the path (the stale mark
    /// only matters to the decision): equal keys, equal exports. Pointers are enough: a
    /// path's route and source are allocated before the path they replace is dropped.
    pub(super) fn export_key(&self) -> (usize, usize, u32) {
        let from = self.from.as_ref().map_or(0, |f| Arc::as_ptr(f) as usize);
        (Arc::as_ptr(&self.route) as usize, from, self.path_id)
    }
}

/// The paths of one destination, best first once ranked.
#[derive(Debug, Clone, Default)]
pub(super) enum Paths {
    /// None: the destination waits to be withdrawn from peers, or its slot is free.
    #[default]
    Empty,
    One(Stored),
    /// Two or more (a boxed slice, not a `Vec`, so that the enum stays as small as a path).
    Many(Box<[Stored]>),
}

impl Paths {
    pub(super) fn as_slice(&self) -> &[Stored] {
        match self {
            Paths::Empty => &[],
            Paths::One(p) => std::slice::from_ref(p),
            Paths::Many(v) => v,
        }
    }

    pub(super) fn as_mut_slice(&mut self) -> &mut [Stored] {
        match self {
            Paths::Empty => &mut [],
            Paths::One(p) => std::slice::from_mut(p),
            Paths::Many(v) => v,
        }
    }

    pub(super) fn first(&self) -> Option<&Stored> {
        self.as_slice().first()
    }

    pub(super) fn is_empty(&self) -> bool {
        matches!(self, Paths::Empty)
    }

    fn from_vec(mut v: Vec<Stored>) -> Paths {
        match v.len() {
            0 => Paths::Empty,
            1 => v.pop().map_or(Paths::Empty, Paths::One),
            _ => Paths::Many(v.into_boxed_slice()),
        }
    }

    fn into_vec(self) -> Vec<Stored> {
        match self {
            Paths::Empty => Vec::new(),
            Paths::One(p) => vec![p],
            Paths::Many(v) => v.into_vec(),
        }
    }

    pub(super) fn push(&mut self, path: Stored) {
        *self = match std::mem::take(self) {
            Paths::Empty => Paths::One(path),
            other => {
                let mut v = other.into_vec();
                v.push(path);
                Paths::from_vec(v)
            }
        };
    }

    /// Removes the `i`-th path.
    pub(super) fn remove(&mut self, i: usize) -> Option<Stored> {
        if i >= self.as_slice().len() {
            return None;
        }
        let mut v = std::mem::take(self).into_vec();
        let removed = v.remove(i);
        *self = Paths::from_vec(v);
        Some(removed)
    }

    pub(super) fn retain(&mut self, keep: impl FnMut(&Stored) -> bool) {
        let mut v = std::mem::take(self).into_vec();
        v.retain(keep);
        *self = Paths::from_vec(v);
    }
}
