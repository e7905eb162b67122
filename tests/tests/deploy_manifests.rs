//! The manifests in `deploy/` against a real kube-apiserver (tests/k8s/control-plane.sh, one
//! control plane per test): the CRDs are applied for real, then the base kustomization and
//! every component are rendered by kubectl's kustomize and sent with
//! `kubectl apply --dry-run=server --validate=strict`, which runs the API server's decoding,
//! defaulting, validation (CRD schemas included) and admission without storing anything.
//!
//! Needs no root (only `control-plane.sh up` installs etcd from Debian when it is missing, which
//! does). The first `control-plane.sh build` on a machine takes ~15 minutes; `scripts/test.sh`
//! runs it before the tests.

use anyhow::{bail, ensure, Context, Result};
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use tabby_tests::TestDir;

fn repo() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests.parent().unwrap_or(tests).to_path_buf()
}

fn deploy() -> PathBuf {
    repo().join("deploy")
}

/// The components in `deploy/components/`, each a kustomize Component.
const COMPONENTS: [&str; 2] = ["label-gated", "route-reflector"];

/// A running etcd + kube-apiserver, stopped and removed on drop.
struct ControlPlane {
    dir: TestDir,
    env: HashMap<String, String>,
}

impl ControlPlane {
    fn up(tag: &str) -> Result<ControlPlane> {
        let dir = TestDir::new(tag)?;
        let script = repo().join("tests/k8s/control-plane.sh");
        let status = Command::new("bash")
            .arg(&script)
            .arg("up")
            .arg(dir.join("cp"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .with_context(|| format!("cannot run {}", script.display()))?;
        let cp_dir = dir.join("cp");
        let text = std::fs::read_to_string(cp_dir.join("env")).unwrap_or_default();
        // From here on, Drop stops whatever `up` started, also when it half failed.
        let cp = ControlPlane {
            env: text
                .lines()
                .filter_map(|l| l.strip_prefix("export "))
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.trim_matches(['"', '\'']).to_string()))
                .collect(),
            dir,
        };
        ensure!(status.success(), "control-plane.sh up failed ({status})");
        Ok(cp)
    }

    fn var(&self, name: &str) -> Result<&str> {
        self.env
            .get(name)
            .map(String::as_str)
            .with_context(|| format!("{name} is not in the control plane's env"))
    }

    /// Runs kubectl as the admin (`system:masters`) with `stdin`; its stdout, or an error with
    /// its stderr.
    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut child = Command::new(self.var("KUBECTL")?)
            .arg("--kubeconfig")
            .arg(self.var("KUBECONFIG_ADMIN")?)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run kubectl")?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())
                .context("writing kubectl's stdin")?;
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().context("waiting for kubectl")?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed ({}):\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Applies the CRDs for real (the custom resources of the components need them) and waits
    /// until they are served.
    fn install_crds(&self) -> Result<()> {
        let crds = deploy().join("crds/calico.yaml");
        self.kubectl(&["apply", "-f", &crds.to_string_lossy()], None)?;
        self.kubectl(
            &[
                "wait",
                "--for=condition=established",
                "--timeout=60s",
                "crd",
                "--all",
            ],
            None,
        )?;
        Ok(())
    }

    /// Renders a kustomization directory with kubectl's built-in kustomize.
    fn kustomize(&self, dir: &Path) -> Result<String> {
        self.kubectl(&["kustomize", &dir.to_string_lossy()], None)
    }

    /// `kubectl apply --dry-run=server --validate=strict` of `yaml`; the objects' names.
    fn dry_run(&self, yaml: &str) -> Result<BTreeSet<String>> {
        let out = self.kubectl(
            &[
                "apply",
                "--dry-run=server",
                "--validate=strict",
                "-o",
                "name",
                "-f",
                "-",
            ],
            Some(yaml),
        )?;
        Ok(out.lines().map(str::to_string).collect())
    }

    /// Whether `user` may `verb` `resource` (in `namespace`, if any), as the API server's RBAC
    /// answers it.
    fn can_i(&self, user: &str, verb: &str, resource: &str, namespace: Option<&str>) -> bool {
        let mut args = vec!["auth", "can-i", verb, resource, "--as", user];
        if let Some(ns) = namespace {
            args.extend(["-n", ns]);
        }
        // `auth can-i` prints "yes" and exits 0, or prints "no" and exits 1.
        self.kubectl(&args, None)
            .is_ok_and(|out| out.trim() == "yes")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("tests/k8s/control-plane.sh"))
            .arg("down")
            .arg(self.dir.join("cp"))
            .stdout(Stdio::null())
            .status();
    }
}

/// `to` relative to the directory `from` (both absolute): kustomize accepts only relative paths
/// to other kustomizations.
fn relative(from: &Path, to: &Path) -> Result<PathBuf> {
    let from = from
        .canonicalize()
        .with_context(|| format!("{}", from.display()))?;
    let to = to
        .canonicalize()
        .with_context(|| format!("{}", to.display()))?;
    let (a, b): (Vec<Component>, Vec<Component>) =
        (from.components().collect(), to.components().collect());
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..a.len() {
        out.push("..");
    }
    for c in &b[common..] {
        out.push(c);
    }
    Ok(out)
}

/// A user's own kustomization in `dir` (outside deploy/: kustomize refuses an overlay inside its
/// base) made of the deploy/ base and `components`.
fn variant(dir: &Path, components: &[&str]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut text = String::from(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n",
    );
    text += &format!("- {}\n", relative(dir, &deploy())?.display());
    if !components.is_empty() {
        text += "components:\n";
        for c in components {
            let path = deploy().join("components").join(c);
            text += &format!("- {}\n", relative(dir, &path)?.display());
        }
    }
    std::fs::write(dir.join("kustomization.yaml"), text)?;
    Ok(())
}

#[test]
fn the_base_and_every_component_pass_a_server_side_dry_run() -> Result<()> {
    let cp = ControlPlane::up("deploy-dry-run")?;
    cp.install_crds()?;

    // `kubectl apply -k deploy/` exactly as docs/deploy.md installs it.
    let base = cp.dry_run(&cp.kustomize(&deploy())?)?;
    for object in [
        "daemonset.apps/tabby-node",
        "serviceaccount/tabby",
        "clusterrole.rbac.authorization.k8s.io/tabby",
        "customresourcedefinition.apiextensions.k8s.io/bgppeers.crd.projectcalico.org",
    ] {
        ensure!(base.contains(object), "{object} not in the base: {base:?}");
    }

    // Each component alone, then all together.
    let mut variants: Vec<Vec<&str>> = COMPONENTS.iter().map(|c| vec![*c]).collect();
    variants.push(COMPONENTS.to_vec());
    let mut seen = BTreeSet::new();
    for components in variants {
        let dir = cp.dir.join(&format!("variant-{}", components.join("-")));
        variant(&dir, &components)?;
        let objects = cp
            .dry_run(&cp.kustomize(&dir)?)
            .with_context(|| format!("deploy/ with components {components:?}"))?;
        seen.extend(objects);
    }
    for object in [
        "deployment.apps/tabby-route-reflector",
        "serviceaccount/tabby-route-reflector",
        "bgppeer.crd.projectcalico.org/peer-with-route-reflectors",
    ] {
        ensure!(seen.contains(object), "{object} in no variant: {seen:?}");
    }
    Ok(())
}

#[test]
fn an_invalid_manifest_fails_the_server_side_dry_run() -> Result<()> {
    let cp = ControlPlane::up("deploy-invalid")?;
    cp.install_crds()?;
    let base = cp.kustomize(&deploy())?;
    // The check must bite: a DaemonSet field of the wrong type, and a BGPPeer field that its
    // CRD's schema does not know.
    let broken = base.replacen("hostNetwork: true", "hostNetwork: sometimes", 1);
    ensure!(
        broken != base,
        "the base has no `hostNetwork: true` to break"
    );
    match cp.dry_run(&broken) {
        Ok(_) => bail!("a DaemonSet with hostNetwork: sometimes passed"),
        Err(e) => ensure!(format!("{e:#}").contains("hostNetwork"), "{e:#}"),
    }
    let peer = "apiVersion: crd.projectcalico.org/v1\nkind: BGPPeer\nmetadata:\n  name: p\nspec:\n  peerIP: 10.0.0.1\n  asNumber: 64512\n  noSuchField: 1\n";
    match cp.dry_run(peer) {
        Ok(_) => bail!("a BGPPeer with an unknown field passed"),
        Err(e) => ensure!(format!("{e:#}").contains("noSuchField"), "{e:#}"),
    }
    Ok(())
}

#[test]
fn the_service_accounts_may_read_what_tabby_reads_and_write_nothing() -> Result<()> {
    let cp = ControlPlane::up("deploy-rbac")?;
    cp.install_crds()?;
    // Stored for real this time (no controllers run, so nothing starts): RBAC is evaluated
    // against stored roles and bindings.
    let dir = cp.dir.join("variant-all");
    variant(&dir, &COMPONENTS)?;
    cp.kubectl(&["apply", "-f", "-"], Some(&cp.kustomize(&dir)?))?;

    let mut wrong = Vec::new();
    for sa in ["tabby", "tabby-route-reflector"] {
        let user = format!("system:serviceaccount:kube-system:{sa}");
        let mut expect = |allowed: bool, verb: &str, resource: &str, ns: Option<&str>| {
            if cp.can_i(&user, verb, resource, ns) != allowed {
                wrong.push(format!(
                    "{sa} {} {verb} {resource} in {ns:?}",
                    if allowed { "cannot" } else { "can" }
                ));
            }
        };
        // What the datastore watches (datastore/src/kubernetes.rs, api_resource).
        for resource in [
            "nodes",
            "namespaces",
            "pods",
            "networkpolicies.networking.k8s.io",
            "bgpconfigurations.crd.projectcalico.org",
            "bgppeers.crd.projectcalico.org",
            "ippools.crd.projectcalico.org",
            "ipamblocks.crd.projectcalico.org",
            "networkpolicies.crd.projectcalico.org",
            "globalnetworkpolicies.crd.projectcalico.org",
            "felixconfigurations.crd.projectcalico.org",
            "hostendpoints.crd.projectcalico.org",
        ] {
            expect(true, "list", resource, None);
            expect(true, "watch", resource, None);
            for verb in ["create", "update", "patch", "delete"] {
                expect(false, verb, resource, None);
            }
        }
        // BGP passwords: Secrets of tabby's own namespace only, and only read.
        expect(true, "watch", "secrets", Some("kube-system"));
        expect(false, "list", "secrets", Some("default"));
        expect(false, "create", "secrets", Some("kube-system"));
        // Nothing else.
        expect(false, "list", "configmaps", Some("kube-system"));
        expect(false, "create", "events", Some("kube-system"));
        expect(false, "patch", "nodes/status", None);
    }
    ensure!(
        wrong.is_empty(),
        "RBAC is not least privilege:\n{}",
        wrong.join("\n")
    );
    Ok(())
}

#[test]
fn every_file_in_deploy_is_part_of_a_kustomization() -> Result<()> {
    // A manifest that no kustomization names would escape the dry runs above.
    let mut unlisted = Vec::new();
    let mut dirs = vec![deploy()];
    while let Some(dir) = dirs.pop() {
        let listing = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap_or_default();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if path.is_dir() {
                // A directory is either named by its parent (`crds` is, as crds/calico.yaml) or
                // a kustomization of its own (the components).
                if !path.join("kustomization.yaml").exists() && !listing.contains(&name) {
                    unlisted.push(path.display().to_string());
                }
                dirs.push(path);
            } else if name.ends_with(".yaml") && name != "kustomization.yaml" {
                let parent = dir.file_name().map(|n| n.to_string_lossy().into_owned());
                let named_here = listing.contains(&name);
                let named_by_parent = dir.parent().is_some_and(|p| {
                    std::fs::read_to_string(p.join("kustomization.yaml")).is_ok_and(|t| {
                        t.contains(&format!("{}/{name}", parent.clone().unwrap_or_default()))
                    })
                });
                if !named_here && !named_by_parent {
                    unlisted.push(path.display().to_string());
                }
            }
        }
    }
    ensure!(
        unlisted.is_empty(),
        "not in any kustomization: {unlisted:?}"
    );
    Ok(())
}
