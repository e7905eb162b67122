//! `tabby datastore dump`: what a user runs to see what tabby reads from a directory.

#![allow(clippy::expect_used)]

use std::process::Command;
use tabby_tests::tabby::tabby_bin;

fn dump(dir: &std::path::Path, format: &str) -> std::process::Output {
    Command::new(tabby_bin().expect("tabby binary"))
        .args(["datastore", "dump", "--output", format, "--datastore"])
        .arg(format!("file:{}", dir.display()))
        .output()
        .expect("run tabby")
}

fn dir_with(files: &[(&str, &str)]) -> tempdir::Dir {
    let d = tempdir::Dir::new();
    for (name, text) in files {
        std::fs::write(d.0.join(name), text).expect("write");
    }
    d
}

mod tempdir {
    /// A scratch directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            let p = std::env::temp_dir().join(format!(
                "tabby-dump-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).expect("mkdir");
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

const POOL: &str = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: pods\nspec:\n  cidr: 10.244.0.0/16\n";
const BAD_PEER: &str = "apiVersion: crd.projectcalico.org/v1\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: 10.0.0.300\n  asNumber: 65000\n";

#[test]
fn dump_prints_typed_objects_as_json_and_exits_zero_when_all_is_valid() {
    let d = dir_with(&[("pool.yaml", POOL)]);
    let out = dump(&d.0, "json");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["objects"][0]["apiVersion"], "crd.projectcalico.org/v1");
    assert_eq!(doc["objects"][0]["spec"]["cidr"], "10.244.0.0/16");
    assert_eq!(doc["errors"], serde_json::json!([]));
}

#[test]
fn dump_names_the_file_object_and_field_of_an_error_and_exits_3() {
    let d = dir_with(&[("pool.yaml", POOL), ("peer.yaml", BAD_PEER)]);
    let out = dump(&d.0, "yaml");
    assert_eq!(out.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("# IPPool pods"), "{stdout}");
    assert!(
        stderr.contains("peer.yaml:1")
            && stderr.contains("BGPPeer tor")
            && stderr.contains("spec.peerIP"),
        "{stderr}"
    );
}
