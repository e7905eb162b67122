//! The file backend (`--datastore file:DIR`): every `*.yaml` / `*.yml` under a directory,
//! several documents per file, watched and applied live.
//!
//! A file that does not parse is reported with its line and its previously good objects are
//! kept until it parses again; an invalid object is reported and its previously good state
//! kept; the same object in two files is reported and the first file in path order wins.

use crate::resource::{DecodeError, Key, Kind, Resource};
use crate::stream::{DatastoreError, Emitter, Event};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long to wait after a change before rescanning, so an editor's burst of writes (or a
/// ConfigMap's symlink swap) is read once.
const SETTLE: Duration = Duration::from_millis(50);
/// A slow safety rescan in case a change notification was missed.
const RESCAN: Duration = Duration::from_secs(30);

/// One document of a file: where it starts and what it became.
pub type Document = (usize, Result<(Key, Resource), DecodeError>);

/// What one file last gave.
#[derive(Debug, Default)]
struct FileState {
    /// Contents last read, to skip reparsing an unchanged file.
    contents: String,
    /// The last good objects of the file, with the line each starts at.
    good: BTreeMap<Key, (usize, Arc<Resource>)>,
    /// Errors found in the current contents.
    errors: Vec<DatastoreError>,
}

/// The file backend's state, sans-IO apart from reading files: [`FileSource::scan`] reads the
/// directory and returns the events that bring the stream up to date.
#[derive(Debug)]
pub struct FileSource {
    dir: PathBuf,
    default_namespace: String,
    files: BTreeMap<PathBuf, FileState>,
    emitter: Emitter,
    reported: BTreeSet<String>,
    readable: bool,
    /// The directory was readable, then was not.
    lost: bool,
}

/// Splits a YAML stream into documents at `---` lines, with the 1-based line each starts on.
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let is_separator = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if is_separator {
            docs.push((start, std::mem::take(&mut current)));
            start = i + 2;
            // Content after the marker on the same line belongs to the new document.
            current.push_str(line.trim_start_matches('-'));
            current.push('\n');
        } else if line == "..." {
            docs.push((start, std::mem::take(&mut current)));
            start = i + 2;
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs.push((start, current));
    docs
}

/// Parses a file's contents into its documents, each decoded and validated. `Err` (line,
/// message) when it is not YAML.
pub fn parse_file(text: &str, default_namespace: &str) -> Result<Vec<Document>, (usize, String)> {
    let mut out = Vec::new();
    for (start, doc) in documents(text) {
        let value = match crate::resource::parse_yaml(&doc) {
            Ok(v) => v,
            Err(e) => {
                let line = e.location().map_or(0, |l| l.line() as usize);
                let message = e
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or("invalid YAML")
                    .to_string();
                return Err((start + line.saturating_sub(1), message));
            }
        };
        if value.is_null() {
            continue;
        }
        out.push((start, Resource::from_document(value, default_namespace)));
    }
    Ok(out)
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Hidden entries (editors' swap files, a ConfigMap's `..data` timestamped copies)
        // are skipped; a ConfigMap's visible names are symlinks into them.
        if name.starts_with('.') {
            continue;
        }
        let meta = std::fs::metadata(&path)?;
        if meta.is_dir() {
            yaml_files(&path, out)?;
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            out.push(path);
        }
    }
    Ok(())
}

impl FileSource {
    /// A source reading `dir`; namespaced objects without a namespace go to
    /// `default_namespace`.
    pub fn new(dir: impl Into<PathBuf>, default_namespace: impl Into<String>) -> FileSource {
        FileSource {
            dir: dir.into(),
            default_namespace: default_namespace.into(),
            files: BTreeMap::new(),
            emitter: Emitter::new(),
            reported: BTreeSet::new(),
            readable: false,
            lost: false,
        }
    }

    /// The directory read.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the last scan could read the directory.
    pub fn readable(&self) -> bool {
        self.readable
    }

    /// Reads the directory and returns the events since the last scan: errors not reported
    /// before, then updates; `InSync` after the first scan.
    pub fn scan(&mut self) -> Vec<Event> {
        let mut paths = Vec::new();
        let mut events = Vec::new();
        if let Err(e) = yaml_files(&self.dir, &mut paths) {
            // An unreadable directory changes nothing: keep serving what was read.
            if self.readable {
                events.push(Event::Connected(false));
                self.lost = true;
            }
            self.readable = false;
            let err = DatastoreError::Source(format!("reading {}: {e}", self.dir.display()));
            events.extend(self.report(vec![err]));
            return events;
        }
        if self.lost {
            events.push(Event::Connected(true));
            self.lost = false;
        }
        self.readable = true;
        paths.sort();
        let present: BTreeSet<&PathBuf> = paths.iter().collect();
        self.files.retain(|p, _| present.contains(p));
        for path in &paths {
            let contents = match std::fs::read_to_string(path) {
                Ok(c) => c,
                // Vanished between listing and reading, or unreadable: keep its last state.
                Err(_) => continue,
            };
            let state = self.files.entry(path.clone()).or_default();
            if state.contents == contents && !state.good.is_empty() {
                continue;
            }
            Self::read_file(path, contents, &self.default_namespace, state);
        }
        // Union in path order; the first file defining an object wins.
        let mut merged: BTreeMap<Key, Arc<Resource>> = BTreeMap::new();
        let mut origin: HashMap<Key, &PathBuf> = HashMap::new();
        let mut errors = Vec::new();
        for (path, state) in &self.files {
            errors.extend(state.errors.iter().cloned());
            for (key, (_, object)) in &state.good {
                if let Some(winner) = origin.get(key) {
                    errors.push(DatastoreError::Duplicate {
                        key: key.clone(),
                        winner: (*winner).clone(),
                        loser: path.clone(),
                    });
                    continue;
                }
                origin.insert(key.clone(), path);
                merged.insert(key.clone(), object.clone());
            }
        }
        events.extend(self.report(errors));
        events.extend(self.emitter.replace(&Kind::ALL, merged));
        events.extend(self.emitter.in_sync());
        events
    }

    fn read_file(path: &Path, contents: String, default_namespace: &str, state: &mut FileState) {
        state.errors.clear();
        match parse_file(&contents, default_namespace) {
            Err((line, message)) => {
                // Keep the file's previous objects (and its previous contents, so the file is
                // read again when it changes).
                state.errors.push(DatastoreError::File {
                    path: path.to_path_buf(),
                    line,
                    message,
                });
                state.contents = contents;
            }
            Ok(docs) => {
                let mut good = BTreeMap::new();
                for (line, doc) in docs {
                    match doc {
                        Ok((key, object)) => {
                            if good.contains_key(&key) {
                                state.errors.push(DatastoreError::Object {
                                    origin: format!("{}:{line}", path.display()),
                                    key: Some(key.clone()),
                                    message: format!("{key} is defined twice in this file; the first one is used"),
                                });
                                continue;
                            }
                            good.insert(key, (line, Arc::new(object)));
                        }
                        Err(e) => {
                            if let Some(key) = e.key() {
                                // An object that turned invalid keeps its last good state.
                                if let Some(previous) = state.good.get(key) {
                                    good.insert(key.clone(), previous.clone());
                                }
                            }
                            state.errors.push(DatastoreError::Object {
                                origin: format!("{}:{line}", path.display()),
                                key: e.key().cloned(),
                                message: e.to_string(),
                            });
                        }
                    }
                }
                state.good = good;
                state.contents = contents;
            }
        }
    }

    /// Errors not reported by the previous scan.
    fn report(&mut self, errors: Vec<DatastoreError>) -> Vec<Event> {
        let now: BTreeSet<String> = errors.iter().map(ToString::to_string).collect();
        let fresh = errors
            .into_iter()
            .filter(|e| !self.reported.contains(&e.to_string()))
            .map(Event::Error)
            .collect();
        self.reported = now;
        fresh
    }
}

/// Runs a file source: scans, then rescans on every change under the directory (and every
/// 30 s as a safety net), sending events until the receiver is dropped. A directory that
/// vanishes is polled every second and watched again when it comes back (a new inode).
pub(crate) async fn run(mut source: FileSource, tx: mpsc::Sender<Event>) {
    let (notify_tx, mut changes) = mpsc::channel::<()>(1);
    let mut watcher: Option<notify::RecommendedWatcher> = None;
    loop {
        for event in source.scan() {
            if tx.send(event).await.is_err() {
                return;
            }
        }
        if !source.readable() {
            watcher = None;
        } else if watcher.is_none() {
            watcher = watch(source.dir(), notify_tx.clone());
        }
        let wait = if source.readable() {
            RESCAN
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            _ = changes.recv() => tokio::time::sleep(SETTLE).await,
            () = tokio::time::sleep(wait) => {}
            () = tx.closed() => return,
        }
        // Changes that arrived while settling are covered by the scan below.
        let _ = changes.try_recv();
    }
}

fn watch(dir: &Path, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let mut watcher = notify::recommended_watcher(move |_event| {
        // A full channel already means "rescan pending".
        let _ = tx.try_send(());
    })
    .map_err(|e| tracing::warn!(error = %e, "no file watcher; rescanning every 30 s only"))
    .ok()?;
    if let Err(e) = watcher.watch(dir, notify::RecursiveMode::Recursive) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch; rescanning every 30 s only");
        return None;
    }
    Some(watcher)
}
