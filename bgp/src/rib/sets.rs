//! Interned attribute sets and routes, and the attributes each leaves with.

use super::export::{self, Class};
use super::paths::{Route, Stored};
use super::RibConfig;
use crate::wire::{NextHop, PathAttributes};
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::net::Ipv4Addr;
use std::sync::Arc;

/// (source attribute set's address, class, originator) of a memoised export.
type ExportKey = (usize, Class, Option<Ipv4Addr>);

#[derive(Debug)]
pub(super) struct Sets {
    attrs: HashSet<Arc<PathAttributes>>,
    /// Keyed by next hop and the attribute set's address; the value holds the set, so the
    /// address cannot be reused while the entry lives.
    routes: HashMap<(Option<NextHop>, usize), Arc<Route>>,
    /// Export attributes already computed: (source set, class, originator) -> the set it
    /// leaves with. The source `Arc` is kept in the value for the same reason.
    exports: HashMap<ExportKey, (Arc<PathAttributes>, Arc<PathAttributes>)>,
    held_after_gc: usize,
}

impl Sets {
    pub(super) fn new() -> Sets {
        Sets {
            attrs: HashSet::new(),
            routes: HashMap::new(),
            exports: HashMap::new(),
            held_after_gc: 0,
        }
    }

    /// Number of distinct attribute sets held.
    pub(super) fn len(&self) -> usize {
        self.attrs.len()
    }

    /// Interns an attribute set: equal sets share one allocation.
    pub(super) fn attrs(&mut self, attrs: PathAttributes) -> Arc<PathAttributes> {
        if let Some(a) = self.attrs.get(&attrs) {
            return Arc::clone(a);
        }
        self.collect_garbage();
        let a = Arc::new(attrs);
        self.attrs.insert(Arc::clone(&a));
        a
    }

    /// Interns a route.
    pub(super) fn route(
        &mut self,
        next_hop: Option<NextHop>,
        attrs: &Arc<PathAttributes>,
    ) -> Arc<Route> {
        let key = (next_hop, Arc::as_ptr(attrs) as usize);
        if let Some(r) = self.routes.get(&key) {
            return Arc::clone(r);
        }
        let r = Arc::new(Route {
            next_hop,
            attrs: Arc::clone(attrs),
        });
        self.routes.insert(key, Arc::clone(&r));
        r
    }

    /// The attributes `best` leaves with towards peers of `class`, computed once.
    pub(super) fn exported(
        &mut self,
        config: &RibConfig,
        class: Class,
        best: &Stored,
    ) -> Arc<PathAttributes> {
        let originator = best.from.as_ref().map(|f| f.router_id);
        let key = (Arc::as_ptr(best.attrs()) as usize, class, originator);
        if let Some((_, a)) = self.exports.get(&key) {
            return Arc::clone(a);
        }
        let a = self.attrs(export::attributes(config, class, best));
        self.exports
            .insert(key, (Arc::clone(best.attrs()), Arc::clone(&a)));
        a
    }

    /// Forgets what nothing uses any more, once the sets held have doubled since the last
    /// time: amortised constant time per insertion.
    fn collect_garbage(&mut self) {
        let held = self.attrs.len() + self.routes.len();
        if held <= 1024 || held <= 2 * self.held_after_gc {
            return;
        }
        // Outside holders first, so that what only they held is free to go next: routes
        // no path holds, then exports whose source only the interner and the exports hold.
        self.routes.retain(|_, r| Arc::strong_count(r) > 1);
        let mut memo_refs: HashMap<usize, usize> = HashMap::new();
        for (source, _) in self.exports.values() {
            *memo_refs.entry(Arc::as_ptr(source) as usize).or_default() += 1;
        }
        self.exports.retain(|_, (source, _)| {
            let memo = memo_refs
                .get(&(Arc::as_ptr(source) as usize))
                .copied()
                .unwrap_or(0);
            Arc::strong_count(source) > 1 + memo
        });
        self.attrs.retain(|a| Arc::strong_count(a) > 1);
        self.held_after_gc = self.attrs.len() + self.routes.len();
    }
}
