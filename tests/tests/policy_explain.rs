//! `tabby policy explain`: the verdict of policy on one connection and the policy that
//! decides it, from a file datastore (no root needed: nothing is programmed).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Command;
use tabby_tests::tabby::tabby_bin;
use tabby_tests::TestDir;

const PODS: &str = "apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, labels: {app: web}}
spec: {nodeName: node1, containers: [{name: c, image: none, ports: [{name: http, containerPort: 8080}]}]}
status: {podIPs: [{ip: 10.244.1.10}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default, labels: {app: client}}
spec: {nodeName: node2, containers: [{name: c, image: none}]}
status: {podIPs: [{ip: 10.244.2.10}]}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: default, labels: {app: other}}
spec: {nodeName: node2, containers: [{name: c, image: none}]}
status: {podIPs: [{ip: 10.244.2.11}]}
";

const DENY_AND_ALLOW: &str = "apiVersion: crd.projectcalico.org/v1
kind: GlobalNetworkPolicy
metadata: {name: default-deny}
spec: {selector: all(), types: [Ingress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-clients, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}], ports: [{port: http}]}]
";

fn explain(dir: &TestDir, from: &str, to: &str, port: &str) -> (bool, String) {
    let out = Command::new(tabby_bin().unwrap())
        .args(["policy", "explain", "--datastore"])
        .arg(format!("file:{}", dir.path().display()))
        .args(["--from", from, "--to", to, "--port", port])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn datastore(tag: &str, policies: &str) -> TestDir {
    let dir = TestDir::new(tag).unwrap();
    std::fs::write(dir.join("pods.yaml"), PODS).unwrap();
    std::fs::write(dir.join("policies.yaml"), policies).unwrap();
    dir
}

#[test]
fn without_policy_a_connection_is_allowed_and_nothing_decides_it() {
    let dir = datastore("pe1", "");
    let (ok, text) = explain(&dir, "default/client", "default/web", "8080/tcp");
    assert!(ok, "{text}");
    assert!(
        text.contains("ALLOWED") && text.contains("no policy selects it"),
        "{text}"
    );
}

#[test]
fn an_allowed_connection_names_the_policy_that_allows_it() {
    let dir = datastore("pe2", DENY_AND_ALLOW);
    let (ok, text) = explain(&dir, "default/client", "default/web", "8080/tcp");
    assert!(ok, "{text}");
    assert!(
        text.contains("allowed by knp.default.default/web-from-clients"),
        "{text}"
    );
}

#[test]
fn a_denied_connection_says_no_policy_allows_it() {
    let dir = datastore("pe3", DENY_AND_ALLOW);
    let (ok, text) = explain(&dir, "default/other", "default/web", "8080/tcp");
    assert!(!ok, "{text}");
    assert!(
        text.contains("DENIED") && text.contains("end of tier"),
        "{text}"
    );
}

#[test]
fn a_named_port_opens_only_its_port() {
    let dir = datastore("pe4", DENY_AND_ALLOW);
    let (ok, text) = explain(&dir, "default/client", "10.244.1.10", "9090/tcp");
    assert!(!ok, "{text}");
    let (ok, text) = explain(&dir, "default/client", "10.244.1.10", "8080/udp");
    assert!(!ok, "{text}");
}

#[test]
fn an_unknown_pod_is_a_clear_error() {
    let dir = datastore("pe5", "");
    let (ok, text) = explain(&dir, "default/nope", "default/web", "80/tcp");
    assert!(!ok);
    assert!(text.contains("no pod default/nope"), "{text}");
}
