//! `tabby node` and `tabby route-reflector` run inside a node's namespace against a file
//! datastore, with their HTTP endpoints on 127.0.0.1:9099 of that namespace.

use crate::cmd::run;
use crate::daemon::Daemon;
use crate::netns::{command_in, Netns};
use crate::tabby::tabby_bin;
use crate::wait::Diagnose;
use anyhow::Result;
use serde_json::Value;
use std::net::IpAddr;
use std::path::Path;

/// A running `tabby node` or `tabby route-reflector`; killed on drop.
#[derive(Debug)]
pub struct Agent {
    /// The namespace it runs in.
    pub ns: String,
    /// Its node name.
    pub name: String,
    /// The process.
    pub daemon: Daemon,
}

impl Agent {
    /// Starts `tabby node --node-name name` in `ns`, logging to `log`.
    pub fn node(ns: &Netns, name: &str, datastore: &Path, log: &Path) -> Result<Agent> {
        Agent::start("node", ns, name, datastore, log, &[])
    }

    /// Starts `tabby node` as [`Agent::node`] does, with extra environment variables.
    pub fn node_with_env(
        ns: &Netns,
        name: &str,
        datastore: &Path,
        log: &Path,
        env: &[(&str, String)],
    ) -> Result<Agent> {
        Agent::start("node", ns, name, datastore, log, env)
    }

    /// Starts `tabby route-reflector --node-name name` in `ns`, logging to `log`.
    pub fn reflector(ns: &Netns, name: &str, datastore: &Path, log: &Path) -> Result<Agent> {
        Agent::start("route-reflector", ns, name, datastore, log, &[])
    }

    fn start(
        what: &str,
        ns: &Netns,
        name: &str,
        datastore: &Path,
        log: &Path,
        env: &[(&str, String)],
    ) -> Result<Agent> {
        let mut cmd = command_in(ns.name(), &tabby_bin()?.to_string_lossy());
        cmd.args([
            what,
            "--node-name",
            name,
            "--http-listen",
            "127.0.0.1:9099",
            "--hold-time",
            "9",
        ]);
        cmd.arg("--datastore")
            .arg(format!("file:{}", datastore.display()));
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info,tabby_felix=debug,tabby_bgp=debug");
        }
        for (key, value) in env {
            cmd.env(key, value);
        }
        let daemon = Daemon::spawn(name, cmd, log)?;
        Ok(Agent {
            ns: ns.name().to_string(),
            name: name.to_string(),
            daemon,
        })
    }

    /// Its `/status` document.
    pub fn status(&self) -> Result<Value> {
        let out =
            run(command_in(&self.ns, &tabby_bin()?.to_string_lossy()).args(["status", "--json"]))?;
        Ok(serde_json::from_str(&out)?)
    }

    /// Its sessions, as `/status` lists them.
    pub fn peers(&self) -> Result<Vec<Value>> {
        Ok(self.status()?["bgp"]["peers"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// True when the session with `peer` is Established and of `kind`.
    pub fn established(&self, peer: IpAddr, kind: &str) -> Result<bool> {
        Ok(self.peers()?.iter().any(|p| {
            p["peer"] == peer.to_string() && p["state"] == "Established" && p["kind"] == kind
        }))
    }

    /// `ip route show proto 44` of its namespace.
    pub fn routes(&self, v6: bool) -> Result<String> {
        let family = if v6 { "-6" } else { "-4" };
        run(command_in(&self.ns, "ip").args([family, "route", "show", "proto", "44"]))
    }
}

impl Diagnose for Agent {
    fn diagnose(&self) -> String {
        format!(
            "--- tabby {} ---\nstatus: {}\nroutes v4:\n{}\nroutes v6:\n{}\nlog:\n{}",
            self.name,
            self.status()
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string()),
            self.routes(false).unwrap_or_default(),
            self.routes(true).unwrap_or_default(),
            self.daemon.log_tail(40),
        )
    }
}
