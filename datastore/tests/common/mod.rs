//! The stream semantics every backend must have, written once against a [`Source`] that a
//! backend's test implements (shared/DESIGN.md §3; issue "datastore", Must show).
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use tabby_datastore::{Datastore, Event, Resource};

/// A place objects live in, and a way to cut tabby off from it.
pub trait Source {
    /// Creates or replaces an object (a YAML document).
    async fn put(&mut self, yaml: &str);
    /// Deletes an object.
    async fn remove(&mut self, kind: &str, name: &str);
    /// Starts a datastore on this source.
    async fn start(&mut self) -> Datastore;
    /// Makes the source unreachable for the running datastore.
    async fn cut(&mut self);
    /// Makes it reachable again.
    async fn restore(&mut self);
}

pub fn pool(name: &str, cidr: &str) -> String {
    format!(
        "apiVersion: crd.projectcalico.org/v1\nkind: IPPool\nmetadata:\n  name: {name}\nspec:\n  cidr: {cidr}\n  ipipMode: Never\n"
    )
}

/// An event as the tests compare it: `set IPPool a 10.0.0.0/16`, `delete IPPool a`,
/// `in sync`. The scenarios are written with IPPools; other kinds (a real cluster's own
/// namespaces), errors and connection changes are left out (tests look at them separately).
pub fn describe(e: &Event) -> Option<String> {
    match e {
        Event::Update {
            key,
            object: Some(o),
        } => match &**o {
            Resource::IPPool(p) => Some(format!("set IPPool {} {}", key.name, p.spec.cidr)),
            _ => None,
        },
        Event::Update { key, object: None } => match key.kind {
            tabby_datastore::Kind::IPPool => Some(format!("delete IPPool {}", key.name)),
            _ => None,
        },
        Event::InSync => Some("in sync".into()),
        Event::Error(_) | Event::Connected(_) => None,
    }
}

/// Waits for `n` described events (20 s at most), then makes sure nothing more comes for a
/// while: each change must arrive exactly once.
pub async fn next_events(ds: &mut Datastore, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while out.len() < n {
        let e = tokio::time::timeout_at(deadline, ds.next())
            .await
            .unwrap_or_else(|_| panic!("waited for {n} events, got {out:?}"))
            .unwrap_or_else(|| panic!("stream ended after {out:?}"));
        out.extend(describe(&e));
    }
    quiet(ds, &out).await;
    out
}

/// Nothing described arrives for 1.5 s.
pub async fn quiet(ds: &mut Datastore, so_far: &[String]) {
    let end = tokio::time::Instant::now() + Duration::from_millis(1500);
    while let Ok(Some(e)) = tokio::time::timeout_at(end, ds.next()).await {
        if let Some(d) = describe(&e) {
            panic!("unexpected extra event {d:?} after {so_far:?}");
        }
    }
}

/// Events up to and including the next `in sync`, the rest sorted (backends may list in any
/// order).
pub async fn initial(ds: &mut Datastore, objects: usize) -> Vec<String> {
    let mut events = next_events(ds, objects + 1).await;
    assert_eq!(
        events.pop().as_deref(),
        Some("in sync"),
        "in sync comes after the listing"
    );
    events.sort();
    events.push("in sync".into());
    events
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

pub async fn initial_listing_is_followed_by_in_sync(s: &mut impl Source) {
    s.put(&pool("a", "10.1.0.0/16")).await;
    s.put(&pool("b", "10.2.0.0/16")).await;
    let mut ds = s.start().await;
    assert_eq!(
        initial(&mut ds, 2).await,
        [
            "set IPPool a 10.1.0.0/16",
            "set IPPool b 10.2.0.0/16",
            "in sync"
        ]
    );
}

pub async fn adds_updates_and_deletes_arrive_once_each(s: &mut impl Source) {
    s.put(&pool("a", "10.1.0.0/16")).await;
    let mut ds = s.start().await;
    initial(&mut ds, 1).await;
    s.put(&pool("b", "10.2.0.0/16")).await;
    assert_eq!(next_events(&mut ds, 1).await, ["set IPPool b 10.2.0.0/16"]);
    s.put(&pool("a", "10.3.0.0/16")).await;
    assert_eq!(next_events(&mut ds, 1).await, ["set IPPool a 10.3.0.0/16"]);
    s.remove("IPPool", "b").await;
    assert_eq!(next_events(&mut ds, 1).await, ["delete IPPool b"]);
}

pub async fn rewriting_an_object_unchanged_sends_nothing(s: &mut impl Source) {
    s.put(&pool("a", "10.1.0.0/16")).await;
    let mut ds = s.start().await;
    initial(&mut ds, 1).await;
    s.put(&pool("a", "10.1.0.0/16")).await;
    quiet(&mut ds, &[]).await;
}

pub async fn reconnect_delivers_only_what_changed_while_away(s: &mut impl Source) {
    s.put(&pool("keep", "10.1.0.0/16")).await;
    s.put(&pool("change", "10.2.0.0/16")).await;
    s.put(&pool("drop", "10.3.0.0/16")).await;
    let mut ds = s.start().await;
    initial(&mut ds, 3).await;
    s.cut().await;
    // Changes made while tabby cannot see the source.
    s.put(&pool("change", "10.22.0.0/16")).await;
    s.remove("IPPool", "drop").await;
    s.put(&pool("new", "10.4.0.0/16")).await;
    s.restore().await;
    let events = next_events(&mut ds, 3).await;
    assert_eq!(
        sorted(events),
        [
            "delete IPPool drop",
            "set IPPool change 10.22.0.0/16",
            "set IPPool new 10.4.0.0/16"
        ],
        "only the differences, and no second in sync"
    );
}
