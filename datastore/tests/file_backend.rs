//! The file backend: the shared stream semantics (tests/common), and what it does with bad
//! files and objects.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::path::PathBuf;
use std::time::Duration;
use tabby_datastore::{Datastore, DatastoreError, Event};

/// A directory of YAML files; "cut" renames it away.
struct Dir {
    root: tempfile::TempDir,
    away: bool,
}

impl Dir {
    fn new() -> Dir {
        Dir {
            root: tempfile::tempdir().unwrap(),
            away: false,
        }
    }

    /// Where the files are now (tabby reads `resources`).
    fn path(&self) -> PathBuf {
        self.root
            .path()
            .join(if self.away { "away" } else { "resources" })
    }

    fn write(&self, file: &str, text: &str) {
        std::fs::create_dir_all(self.path()).unwrap();
        // Write then rename, as a careful editor (or kubectl cp) does: never a half file.
        let tmp = self.root.path().join(".tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.path().join(file)).unwrap();
    }
}

fn file_of(yaml: &str) -> String {
    let kind = yaml
        .lines()
        .find_map(|l| l.strip_prefix("kind: "))
        .unwrap_or("x");
    let name = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("name: "))
        .unwrap_or("x");
    format!("{kind}-{name}.yaml")
}

impl Source for Dir {
    async fn put(&mut self, yaml: &str) {
        self.write(&file_of(yaml), yaml);
    }

    async fn remove(&mut self, kind: &str, name: &str) {
        std::fs::remove_file(self.path().join(format!("{kind}-{name}.yaml"))).unwrap();
    }

    async fn start(&mut self) -> Datastore {
        std::fs::create_dir_all(self.path()).unwrap();
        Datastore::file(self.path(), "default")
    }

    async fn cut(&mut self) {
        std::fs::rename(self.path(), self.root.path().join("away")).unwrap();
        self.away = true;
        // Let a scan see the directory gone.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    async fn restore(&mut self) {
        std::fs::rename(self.path(), self.root.path().join("resources")).unwrap();
        self.away = false;
    }
}

#[tokio::test]
async fn initial_listing_is_followed_by_in_sync() {
    common::initial_listing_is_followed_by_in_sync(&mut Dir::new()).await;
}

#[tokio::test]
async fn adds_updates_and_deletes_arrive_once_each() {
    common::adds_updates_and_deletes_arrive_once_each(&mut Dir::new()).await;
}

#[tokio::test]
async fn rewriting_an_object_unchanged_sends_nothing() {
    common::rewriting_an_object_unchanged_sends_nothing(&mut Dir::new()).await;
}

#[tokio::test]
async fn reconnect_delivers_only_what_changed_while_away() {
    common::reconnect_delivers_only_what_changed_while_away(&mut Dir::new()).await;
}

/// Collects events for a moment.
async fn drain(ds: &mut Datastore, for_ms: u64) -> Vec<Event> {
    let mut out = Vec::new();
    let end = tokio::time::Instant::now() + Duration::from_millis(for_ms);
    while let Ok(Some(e)) = tokio::time::timeout_at(end, ds.next()).await {
        out.push(e);
    }
    out
}

fn errors(events: &[Event]) -> Vec<&DatastoreError> {
    events
        .iter()
        .filter_map(|e| {
            if let Event::Error(err) = e {
                Some(err)
            } else {
                None
            }
        })
        .collect()
}

fn described(events: &[Event]) -> Vec<String> {
    let mut v: Vec<String> = events.iter().filter_map(describe).collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_malformed_file_is_reported_with_its_line_and_keeps_its_objects() {
    let mut d = Dir::new();
    d.write(
        "pools.yaml",
        &format!(
            "{}---\n{}",
            pool("a", "10.1.0.0/16"),
            pool("b", "10.2.0.0/16")
        ),
    );
    let mut ds = d.start().await;
    initial(&mut ds, 2).await;
    d.write("pools.yaml", "apiVersion: crd.projectcalico.org/v1\nkind: IPPool\nmetadata:\n  name: a\nspec: [unclosed\n");
    let events = drain(&mut ds, 1000).await;
    let errs = errors(&events);
    assert_eq!(errs.len(), 1, "{events:?}");
    match errs[0] {
        DatastoreError::File { path, line, .. } => {
            assert!(path.ends_with("pools.yaml"));
            assert!((5..=6).contains(line), "line {line}");
        }
        other => panic!("{other:?}"),
    }
    assert!(described(&events).is_empty(), "objects kept: {events:?}");
    // Fixed: only the real difference arrives.
    d.write("pools.yaml", &pool("a", "10.1.0.0/16"));
    assert_eq!(next_events(&mut ds, 1).await, ["delete IPPool b"]);
}

#[tokio::test]
async fn an_invalid_cidr_is_reported_naming_object_and_field_and_the_rest_arrives() {
    let mut d = Dir::new();
    d.write(
        "pools.yaml",
        &format!(
            "{}---\n{}",
            pool("bad", "10.1.0.0/33"),
            pool("good", "10.2.0.0/16")
        ),
    );
    let mut ds = d.start().await;
    let events = drain(&mut ds, 1000).await;
    assert_eq!(
        described(&events),
        ["in sync", "set IPPool good 10.2.0.0/16"]
    );
    let msg = errors(&events)
        .first()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(msg.contains("pools.yaml:1"), "{msg}");
    assert!(msg.contains("IPPool bad"), "{msg}");
    assert!(msg.contains("spec.cidr"), "{msg}");
}

#[tokio::test]
async fn an_object_that_turns_invalid_keeps_its_last_good_state() {
    let mut d = Dir::new();
    d.write("a.yaml", &pool("a", "10.1.0.0/16"));
    let mut ds = d.start().await;
    initial(&mut ds, 1).await;
    d.write("a.yaml", &pool("a", "not-a-cidr"));
    let events = drain(&mut ds, 1000).await;
    assert_eq!(errors(&events).len(), 1);
    assert!(described(&events).is_empty(), "no delete: {events:?}");
}

#[tokio::test]
async fn an_unknown_kind_is_reported_and_the_rest_arrives() {
    let mut d = Dir::new();
    let unknown = "apiVersion: example.com/v1\nkind: Gadget\nmetadata:\n  name: g\n";
    d.write(
        "mixed.yaml",
        &format!("{unknown}---\n{}", pool("a", "10.1.0.0/16")),
    );
    let mut ds = d.start().await;
    let events = drain(&mut ds, 1000).await;
    assert_eq!(described(&events), ["in sync", "set IPPool a 10.1.0.0/16"]);
    let msg = errors(&events)
        .first()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        msg.contains("Gadget") && msg.contains("mixed.yaml:1"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_duplicate_across_files_is_reported_and_the_first_file_wins() {
    let mut d = Dir::new();
    d.write("1-first.yaml", &pool("a", "10.1.0.0/16"));
    d.write("2-second.yaml", &pool("a", "10.9.0.0/16"));
    let mut ds = d.start().await;
    let events = drain(&mut ds, 1000).await;
    assert_eq!(described(&events), ["in sync", "set IPPool a 10.1.0.0/16"]);
    match errors(&events).first() {
        Some(DatastoreError::Duplicate { winner, loser, .. }) => {
            assert!(winner.ends_with("1-first.yaml") && loser.ends_with("2-second.yaml"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn projectcalico_v3_objects_are_read_as_the_crd_kinds() {
    let mut d = Dir::new();
    d.write(
        "v3.yaml",
        &pool("a", "10.1.0.0/16").replace("crd.projectcalico.org/v1", "projectcalico.org/v3"),
    );
    let mut ds = d.start().await;
    assert_eq!(
        initial(&mut ds, 1).await,
        ["set IPPool a 10.1.0.0/16", "in sync"]
    );
}

#[tokio::test]
async fn errors_are_reported_once_not_on_every_rescan() {
    let mut d = Dir::new();
    d.write("bad.yaml", "kind: [\n");
    d.write("a.yaml", &pool("a", "10.1.0.0/16"));
    let mut ds = d.start().await;
    let first = drain(&mut ds, 800).await;
    assert_eq!(errors(&first).len(), 1);
    // Another file changes: a rescan, but bad.yaml's error is not news.
    d.write("b.yaml", &pool("b", "10.2.0.0/16"));
    let second = drain(&mut ds, 800).await;
    assert!(errors(&second).is_empty(), "{second:?}");
    assert_eq!(described(&second), ["set IPPool b 10.2.0.0/16"]);
}

#[tokio::test]
async fn namespaced_objects_without_a_namespace_go_to_the_default_one() {
    let mut d = Dir::new();
    d.write(
        "np.yaml",
        "apiVersion: crd.projectcalico.org/v1\nkind: NetworkPolicy\nmetadata:\n  name: allow\nspec:\n  selector: all()\n",
    );
    let mut ds = d.start().await;
    let events = drain(&mut ds, 1000).await;
    let keys: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::Update {
                key,
                object: Some(_),
            } => Some(key.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(keys, ["NetworkPolicy.crd.projectcalico.org default/allow"]);
}

#[tokio::test]
async fn a_vanished_directory_reports_disconnected_and_keeps_every_object() {
    let mut d = Dir::new();
    d.write("a.yaml", &pool("a", "10.1.0.0/16"));
    let mut ds = d.start().await;
    initial(&mut ds, 1).await;
    d.cut().await;
    let events = drain(&mut ds, 1200).await;
    assert!(events.contains(&Event::Connected(false)), "{events:?}");
    assert!(described(&events).is_empty(), "nothing deleted: {events:?}");
    d.restore().await;
    let events = drain(&mut ds, 2500).await;
    assert!(events.contains(&Event::Connected(true)), "{events:?}");
    assert!(described(&events).is_empty(), "nothing changed: {events:?}");
}
