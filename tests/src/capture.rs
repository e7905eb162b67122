//! `tcpdump` run inside a namespace for the lifetime of a guard, and the BGP messages it saw:
//! the wire is the one witness every daemon agrees on (GoBGP, for one, does not log the
//! NOTIFICATION it receives in OpenConfirm).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;

use crate::daemon::Daemon;
use crate::netns::Netns;
use crate::pcap::{bgp_messages, tcp_streams};
use crate::wait::wait_until;

/// One BGP message seen on the wire.
#[derive(Debug, Clone)]
pub struct WireMessage {
    /// The sender.
    pub src: SocketAddr,
    /// The receiver.
    pub dst: SocketAddr,
    /// The message, header included.
    pub bytes: Vec<u8>,
}

impl WireMessage {
    /// The message type (1 OPEN, 2 UPDATE, 3 NOTIFICATION, 4 KEEPALIVE).
    pub fn kind(&self) -> u8 {
        self.bytes[18]
    }

    /// `(code, subcode)` if this is a NOTIFICATION.
    pub fn notification(&self) -> Option<(u8, u8)> {
        (self.kind() == 3 && self.bytes.len() >= 21).then(|| (self.bytes[19], self.bytes[20]))
    }
}

/// A running `tcpdump -w` of TCP port 179 on one interface of a namespace.
#[derive(Debug)]
pub struct Capture {
    daemon: Daemon,
    file: PathBuf,
}

impl Capture {
    /// Starts capturing BGP on `ifname` in `ns` into `dir/<name>.pcap`; returns once tcpdump
    /// listens.
    pub fn start(ns: &Netns, ifname: &str, dir: &Path, name: &str) -> Result<Capture> {
        let file = dir.join(format!("{name}.pcap"));
        let log = dir.join(format!("{name}.tcpdump.log"));
        let mut cmd = ns.command("tcpdump");
        cmd.args(["-i", ifname, "-U", "-s", "0", "-n", "-w"])
            .arg(&file)
            .args(["tcp", "port", "179"]);
        let daemon = Daemon::spawn("tcpdump", cmd, &log)?;
        wait_until(Duration::from_secs(10), "tcpdump listens", &[], || {
            Ok(daemon.log().contains("listening on"))
        })?;
        Ok(Capture { daemon, file })
    }

    /// The pcap file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Every BGP message captured so far, grouped by TCP stream in order of appearance.
    pub fn messages(&self) -> Result<Vec<WireMessage>> {
        let pcap = std::fs::read(&self.file)?;
        let mut out = Vec::new();
        for s in tcp_streams(&pcap)? {
            for m in bgp_messages(&s.data)? {
                out.push(WireMessage {
                    src: s.src,
                    dst: s.dst,
                    bytes: m.to_vec(),
                });
            }
        }
        Ok(out)
    }

    /// Stops tcpdump (SIGTERM, so it flushes) and waits for it.
    pub fn stop(&mut self) -> Result<()> {
        self.daemon.stop("TERM", Duration::from_secs(10)).map(drop)
    }
}
