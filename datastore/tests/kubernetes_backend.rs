//! The Kubernetes backend against a real kube-apiserver and etcd (tests/k8s/control-plane.sh,
//! one control plane per test, with the watch cache off so a compaction really gives 410
//! Gone). tabby reads as user `tabby`, with exactly the rights of deploy/rbac.yaml, through a
//! TCP proxy the test can cut to simulate losing the API.
//!
//! Needs root-free but real processes: etcd and kube-apiserver (built once per machine by
//! `tests/k8s/control-plane.sh build`, which `up` runs when needed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tabby_datastore::kubernetes::KubernetesOptions;
use tabby_datastore::{Datastore, Event};
use tokio::net::{TcpListener, TcpStream};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A running control plane, torn down on drop.
struct ControlPlane {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
}

impl ControlPlane {
    fn up() -> ControlPlane {
        let dir = tempfile::Builder::new()
            .prefix("tabby-k8s-test-")
            .tempdir()
            .unwrap();
        let script = repo().join("tests/k8s/control-plane.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("up")
            .arg(dir.path().join("cp"))
            .env("TABBY_K8S_APISERVER_ARGS", "--watch-cache=false")
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "control-plane.sh up failed");
        let text = std::fs::read_to_string(dir.path().join("cp/env")).unwrap();
        let env = text
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches(['"', '\'']).to_string()))
            .collect();
        let cp = ControlPlane { dir, env };
        cp.kubectl(
            &[
                "apply",
                "-f",
                repo().join("deploy/crds/calico.yaml").to_str().unwrap(),
            ],
            None,
        );
        cp.kubectl(
            &[
                "wait",
                "--for",
                "condition=established",
                "--timeout=60s",
                "crd",
                "--all",
            ],
            None,
        );
        cp.kubectl(
            &[
                "apply",
                "-f",
                repo().join("deploy/rbac.yaml").to_str().unwrap(),
            ],
            None,
        );
        // deploy/rbac.yaml grants the ServiceAccount; the test's token is user `tabby`.
        cp.kubectl(
            &[
                "create",
                "clusterrolebinding",
                "tabby-user",
                "--clusterrole=tabby",
                "--user=tabby",
            ],
            None,
        );
        cp.kubectl(
            &[
                "create",
                "rolebinding",
                "tabby-user-secrets",
                "-n",
                "kube-system",
                "--role=tabby-secrets",
                "--user=tabby",
            ],
            None,
        );
        cp
    }

    fn var(&self, k: &str) -> &str {
        self.env
            .get(k)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{k} not in env"))
    }

    /// Runs kubectl as admin (or as `as_user`'s kubeconfig); panics on failure.
    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        self.kubectl_as(self.var("KUBECONFIG_ADMIN"), args, stdin)
            .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
    }

    fn kubectl_as(
        &self,
        kubeconfig: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, String> {
        let mut child = Command::new(self.var("KUBECTL"))
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn compact(&self) {
        let script = repo().join("tests/k8s/control-plane.sh");
        let ok = Command::new("bash")
            .arg(script)
            .arg("compact")
            .arg(self.dir.path().join("cp"))
            .status()
            .unwrap();
        assert!(ok.success(), "compact failed");
    }

    fn server_port(&self) -> u16 {
        self.var("K8S_SERVER")
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// A kubeconfig for user `tabby` that reaches the API through `port`.
    fn tabby_kubeconfig(&self, port: u16) -> PathBuf {
        let path = self.dir.path().join(format!("tabby-via-{port}.kubeconfig"));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority: {}\nusers:\n- name: tabby\n  user:\n    token: {}\ncontexts:\n- name: test\n  context: {{cluster: test, user: tabby}}\ncurrent-context: test\n",
            self.var("K8S_CA"),
            self.var("K8S_TABBY_TOKEN"),
        );
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let script = repo().join("tests/k8s/control-plane.sh");
        let _ = Command::new("bash")
            .arg(script)
            .arg("down")
            .arg(self.dir.path().join("cp"))
            .status();
    }
}

/// A TCP proxy to the API server that can be cut: a network partition between tabby and
/// the API, while the test keeps talking to the API directly.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let generation = Arc::new(generation);
        let (c, g) = (cut.clone(), generation.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if c.load(Ordering::SeqCst) {
                    continue; // dropped: connection refused by closing
                }
                let mut changed = g.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    tokio::select! {
                        _ = tokio::io::copy(&mut cr, &mut sw) => {}
                        _ = tokio::io::copy(&mut sr, &mut cw) => {}
                        _ = changed.changed() => {} // cut: drop both sides
                    }
                });
            }
        });
        Proxy {
            port,
            cut,
            generation,
            task,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Cluster {
    cp: ControlPlane,
    proxy: Proxy,
}

impl Cluster {
    async fn new() -> Cluster {
        let cp = tokio::task::spawn_blocking(ControlPlane::up).await.unwrap();
        let proxy = Proxy::start(cp.server_port()).await;
        Cluster { cp, proxy }
    }

    fn options(&self) -> KubernetesOptions {
        KubernetesOptions {
            kubeconfig: Some(self.cp.tabby_kubeconfig(self.proxy.port)),
            namespace: "kube-system".into(),
        }
    }
}

impl Source for Cluster {
    async fn put(&mut self, yaml: &str) {
        self.cp.kubectl(&["apply", "-f", "-"], Some(yaml));
    }

    async fn remove(&mut self, kind: &str, name: &str) {
        self.cp
            .kubectl(&["delete", &kind.to_lowercase(), name], None);
    }

    async fn start(&mut self) -> Datastore {
        Datastore::kubernetes(&self.options()).await.unwrap()
    }

    async fn cut(&mut self) {
        self.proxy.cut();
    }

    async fn restore(&mut self) {
        // Compact etcd first: the watch's resourceVersion is now too old, so tabby must get
        // 410 Gone and relist, and still deliver only the differences.
        self.cp.compact();
        self.proxy.restore();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_listing_is_followed_by_in_sync() {
    common::initial_listing_is_followed_by_in_sync(&mut Cluster::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adds_updates_and_deletes_arrive_once_each() {
    common::adds_updates_and_deletes_arrive_once_each(&mut Cluster::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewriting_an_object_unchanged_sends_nothing() {
    common::rewriting_an_object_unchanged_sends_nothing(&mut Cluster::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_after_compaction_delivers_only_what_changed_while_away() {
    // Cluster::restore compacts etcd before the API comes back: the watch must relist.
    common::reconnect_delivers_only_what_changed_while_away(&mut Cluster::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_api_reports_disconnected_and_keeps_every_object() {
    let mut c = Cluster::new().await;
    c.put(&pool("a", "10.1.0.0/16")).await;
    let mut ds = c.start().await;
    initial(&mut ds, 1).await;
    c.cut().await;
    let mut saw_disconnect = false;
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Ok(Some(e)) = tokio::time::timeout_at(end, ds.next()).await {
        assert!(
            describe(&e).is_none(),
            "nothing may be deleted or changed: {e:?}"
        );
        if e == Event::Connected(false) {
            saw_disconnect = true;
            break;
        }
    }
    assert!(
        saw_disconnect,
        "no Connected(false) within 20 s of losing the API"
    );
    c.restore().await;
    let end = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let e = tokio::time::timeout_at(end, ds.next())
            .await
            .expect("no reconnect within 40 s")
            .unwrap();
        assert!(describe(&e).is_none(), "nothing changed: {e:?}");
        if e == Event::Connected(true) {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_object_is_reported_and_the_rest_arrives() {
    let mut c = Cluster::new().await;
    c.put(&pool("good", "10.1.0.0/16")).await;
    // The CRD schema says "string"; tabby's validation says it is not a CIDR.
    c.put(&pool("bad", "10.1.0.0/99")).await;
    let mut ds = c.start().await;
    let mut described = Vec::new();
    let mut errors = Vec::new();
    while !described.contains(&"in sync".to_string()) {
        let e = tokio::time::timeout(Duration::from_secs(20), ds.next())
            .await
            .unwrap()
            .unwrap();
        if let Event::Error(err) = &e {
            errors.push(err.to_string());
        }
        described.extend(describe(&e));
    }
    assert_eq!(described, ["set IPPool good 10.1.0.0/16", "in sync"]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("IPPool bad") && errors[0].contains("spec.cidr"),
        "{}",
        errors[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_schemas_keep_every_field_the_rust_types_write() {
    let c = Cluster::new().await;
    c.cp.kubectl(&["create", "namespace", "shop"], None);
    // Fully populated objects of every Calico kind, as tabby's types serialise them.
    let dir = repo().join("datastore/tests/objects");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let yaml = std::fs::read_to_string(&path).unwrap();
        let doc = tabby_datastore::resource::parse_yaml(&yaml).unwrap();
        let (key, typed) = tabby_datastore::Resource::from_document(doc, "default").unwrap();
        let written = typed.to_json();
        c.cp.kubectl(
            &["apply", "-f", "-"],
            Some(&serde_json::to_string(&written).unwrap()),
        );
        let mut get = vec![
            "get".to_string(),
            format!("{}.{}", plural(key.kind), "crd.projectcalico.org"),
            key.name.clone(),
            "-o".into(),
            "json".into(),
        ];
        if let Some(ns) = &key.namespace {
            get.extend(["-n".to_string(), ns.clone()]);
        }
        let args: Vec<&str> = get.iter().map(String::as_str).collect();
        let read: serde_json::Value = serde_json::from_str(&c.cp.kubectl(&args, None)).unwrap();
        let (_, read_typed) = tabby_datastore::Resource::from_document(read, "default").unwrap();
        assert_eq!(
            read_typed.to_json()["spec"],
            typed.to_json()["spec"],
            "{}: the API server dropped or changed fields",
            path.display()
        );
        count += 1;
    }
    assert_eq!(count, 8, "one object per Calico kind");
}

fn plural(kind: tabby_datastore::Kind) -> String {
    tabby_datastore::kubernetes::api_resource(kind).plural
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tabby_may_read_what_it_needs_and_write_nothing() {
    let c = Cluster::new().await;
    let tabby = c.cp.var("KUBECONFIG_TABBY").to_string();
    for resource in [
        "nodes",
        "pods",
        "namespaces",
        "networkpolicies.networking.k8s.io",
        "ippools.crd.projectcalico.org",
        "bgppeers.crd.projectcalico.org",
    ] {
        c.cp.kubectl_as(&tabby, &["get", resource, "-A"], None)
            .unwrap_or_else(|e| panic!("tabby cannot list {resource}: {e}"));
    }
    c.cp.kubectl_as(&tabby, &["get", "secrets", "-n", "kube-system"], None)
        .expect("secrets in its namespace");
    assert!(
        c.cp.kubectl_as(&tabby, &["get", "secrets", "-n", "default"], None)
            .is_err(),
        "secrets elsewhere"
    );
    assert!(
        c.cp.kubectl_as(&tabby, &["get", "configmaps", "-A"], None)
            .is_err(),
        "kinds it does not read"
    );
    let write = c.cp.kubectl_as(
        &tabby,
        &["apply", "-f", "-"],
        Some(&pool("x", "10.9.0.0/16")),
    );
    assert!(
        write.is_err_and(|e| e.contains("forbidden")),
        "tabby may not write"
    );
}
