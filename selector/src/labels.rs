//! Label sets a selector matches against, and combinators that present Calico's view of them.
//!
//! # How Calico gives pods their namespace's labels
//!
//! Calico does not merge maps. A pod's workload endpoint carries the pod's own labels plus
//! [`NAMESPACE_LABEL`] (`projectcalico.org/namespace: <ns>`), `projectcalico.org/orchestrator`
//! and `projectcalico.org/serviceaccount`. Its namespace becomes a profile `kns.<ns>` whose
//! labels are the namespace's labels under [`NAMESPACE_LABEL_PREFIX`] (`pcns.<key>`) plus
//! `pcns.projectcalico.org/name: <ns>`. Felix looks a key up in the endpoint's own labels
//! first and then in its profiles' labels, in order: [`Layered`] is that lookup, [`Prefixed`]
//! presents a namespace's labels under `pcns.`.
//!
//! A rule's `namespaceSelector` is then rewritten to a selector over those endpoint labels:
//! every key gets the `pcns.` prefix, `all()` becomes `has(projectcalico.org/namespace)` and
//! `global()` becomes `!has(projectcalico.org/namespace)`; see
//! [`Selector::namespace_selector_for_endpoints`](crate::Selector::namespace_selector_for_endpoints).

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

/// Label on every Calico workload endpoint naming its namespace.
pub const NAMESPACE_LABEL: &str = "projectcalico.org/namespace";
/// Prefix under which a namespace's labels appear on its pods (Calico's `pcns.`).
pub const NAMESPACE_LABEL_PREFIX: &str = "pcns.";
/// Label Calico adds to a namespace's (and service account's) profile carrying its name.
pub const NAME_LABEL: &str = "projectcalico.org/name";

/// A set of labels: key to value.
pub trait Labels {
    /// The value of `key`, or `None` when the label is absent.
    fn get(&self, key: &str) -> Option<&str>;
}

impl<L: Labels + ?Sized> Labels for &L {
    fn get(&self, key: &str) -> Option<&str> {
        (**self).get(key)
    }
}

impl Labels for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<&str> {
        BTreeMap::get(self, key).map(String::as_str)
    }
}

impl<S: BuildHasher> Labels for HashMap<String, String, S> {
    fn get(&self, key: &str) -> Option<&str> {
        HashMap::get(self, key).map(String::as_str)
    }
}

/// Two label sets seen as one: a key is looked up in `own` first, then in `parent`.
///
/// This is Felix's inheritance: an endpoint's own labels win over those of its profiles.
/// Nest it for several parents: `Layered::new(own, Layered::new(first, second))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layered<A, B> {
    own: A,
    parent: B,
}

impl<A: Labels, B: Labels> Layered<A, B> {
    /// Layers `own` over `parent`.
    pub fn new(own: A, parent: B) -> Self {
        Layered { own, parent }
    }
}

impl<A: Labels, B: Labels> Labels for Layered<A, B> {
    fn get(&self, key: &str) -> Option<&str> {
        self.own.get(key).or_else(|| self.parent.get(key))
    }
}

/// A label set seen with every key under a prefix: `Prefixed::new("pcns.", ns_labels)` has
/// `pcns.team` when `ns_labels` has `team`, and nothing without the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefixed<P, L> {
    prefix: P,
    labels: L,
}

impl<P: AsRef<str>, L: Labels> Prefixed<P, L> {
    /// Presents `labels` under `prefix`.
    pub fn new(prefix: P, labels: L) -> Self {
        Prefixed { prefix, labels }
    }
}

impl<P: AsRef<str>, L: Labels> Labels for Prefixed<P, L> {
    fn get(&self, key: &str) -> Option<&str> {
        key.strip_prefix(self.prefix.as_ref())
            .and_then(|k| self.labels.get(k))
    }
}
