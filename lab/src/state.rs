//! Where a lab lives: its names in the kernel and its files under `/run/tabby-lab/<name>/`.
//!
//! Everything a lab creates is found from its name alone, so `lab down` works after a crash
//! or a `kill -9` of `lab up`: every netns is named `tlab.<lab>.<...>` (lab names have no
//! `.`, so one lab's prefix never matches another's), every interface lives inside those
//! namespaces (so interface names never collide between labs, and need not carry the lab's
//! name within their 15 characters), and every process runs inside one of them, its pid in
//! `pids/`.
//!
//! ```text
//! /run/tabby-lab/<name>/
//!   lab.json          the resolved topology (written before anything is created)
//!   datastore/        the file datastore every tabby process reads
//!   logs/<host>.log   one log per process
//!   pids/<host>.pid   one pid per process
//!   bird/<host>.conf  BIRD configs (and their control sockets, .ctl)
//!   gobgp/<host>.toml GoBGP configs
//! ```

use crate::topology::{Lab, Pod};
use std::path::{Path, PathBuf};

/// Root of all labs' state.
pub const STATE_ROOT: &str = "/run/tabby-lab";

/// Prefix of every netns of every lab.
pub const NETNS_PREFIX: &str = "tlab";

/// The names and paths of one lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    name: String,
    dir: PathBuf,
}

impl Layout {
    /// The layout of the lab named `name` under [`STATE_ROOT`].
    pub fn new(name: &str) -> Layout {
        Layout::under(Path::new(STATE_ROOT), name)
    }

    /// The layout of the lab named `name` under `root`.
    pub fn under(root: &Path, name: &str) -> Layout {
        Layout {
            name: name.to_string(),
            dir: root.join(name),
        }
    }

    /// The lab's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lab's state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The resolved topology.
    pub fn lab_file(&self) -> PathBuf {
        self.dir.join("lab.json")
    }

    /// The datastore directory.
    pub fn datastore(&self) -> PathBuf {
        self.dir.join("datastore")
    }

    /// The log of a process.
    pub fn log(&self, host: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{host}.log"))
    }

    /// The pid file of a process.
    pub fn pid_file(&self, host: &str) -> PathBuf {
        self.dir.join("pids").join(format!("{host}.pid"))
    }

    /// The pid files directory.
    pub fn pids_dir(&self) -> PathBuf {
        self.dir.join("pids")
    }

    /// A BIRD config.
    pub fn bird_conf(&self, host: &str) -> PathBuf {
        self.dir.join("bird").join(format!("{host}.conf"))
    }

    /// A BIRD control socket.
    pub fn bird_ctl(&self, host: &str) -> PathBuf {
        self.dir.join("bird").join(format!("{host}.ctl"))
    }

    /// A GoBGP config.
    pub fn gobgp_conf(&self, host: &str) -> PathBuf {
        self.dir.join("gobgp").join(format!("{host}.toml"))
    }

    /// The prefix of all this lab's netns names.
    pub fn netns_prefix(&self) -> String {
        format!("{NETNS_PREFIX}.{}.", self.name)
    }

    /// The netns of a node, reflector or peer.
    pub fn host_netns(&self, host: &str) -> String {
        format!("{}{host}", self.netns_prefix())
    }

    /// The netns of a segment's switch (its bridge).
    pub fn switch_netns(&self, segment: &str) -> String {
        format!("{}sw.{segment}", self.netns_prefix())
    }

    /// The netns of a pod. Kubernetes namespaces have no `.`, so `ns.name` is unambiguous.
    pub fn pod_netns(&self, pod: &Pod) -> String {
        format!("{}pod.{}.{}", self.netns_prefix(), pod.namespace, pod.name)
    }

    /// Reads the resolved topology of a running lab.
    pub fn read_lab(&self) -> Result<Lab, std::io::Error> {
        let text = std::fs::read_to_string(self.lab_file())?;
        serde_json::from_str(&text)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

/// The names of the labs that have state or namespaces on this machine.
pub fn labs() -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(STATE_ROOT)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    for ns in crate::sys::netns_list().unwrap_or_default() {
        if let Some(rest) = ns.strip_prefix(&format!("{NETNS_PREFIX}.")) {
            if let Some((lab, _)) = rest.split_once('.') {
                out.push(lab.to_string());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_labs_netns_prefix_never_matches_anothers() {
        let a = Layout::new("a");
        let ab = Layout::new("a-b");
        assert!(!ab.host_netns("node1").starts_with(&a.netns_prefix()));
        assert_eq!(a.switch_netns("rack1"), "tlab.a.sw.rack1");
    }
}
