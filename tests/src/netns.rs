//! A network namespace that exists as long as its guard.

use std::cell::Cell;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Result;

use crate::cmd::{output, run};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `tb-` + up to 4 characters of `tag` + `-` + the
/// pid and a counter in base 36. At most 15 characters, so it fits where an interface name
/// must (IFNAMSIZ), though we never name interfaces after it.
pub fn unique_name(tag: &str) -> String {
    let tag: String = tag
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(4)
        .collect();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("tb-{tag}-{}{}", base36(std::process::id()), base36(n));
    debug_assert!(name.len() <= 15, "{name} is too long");
    name
}

fn base36(mut n: u32) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

/// A command that runs `program` inside the namespace named `ns` (see [`Netns::command`]).
pub fn command_in(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

/// A network namespace created by `ip netns add`; on drop, every process still inside is
/// killed and the namespace deleted (which also deletes the veths it holds).
#[derive(Debug)]
pub struct Netns {
    name: String,
    next_if: Cell<u32>,
}

impl Netns {
    /// Creates a namespace named after `tag` (see [`unique_name`]) with loopback up.
    pub fn new(tag: &str) -> Result<Netns> {
        let name = unique_name(tag);
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns {
            name,
            next_if: Cell::new(0),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        if std::path::Path::new("/proc/sys/net/ipv6").exists() {
            // A new veth's link-local address runs DAD, and the first IPv6 neighbour lookup
            // over it waits for that: 2 s before the first IPv6 packet crosses.
            ns.exec(&[
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ])?;
        }
        Ok(ns)
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`, which execs the
    /// program, so the child's pid is the program's).
    pub fn command(&self, program: &str) -> Command {
        command_in(&self.name, program)
    }

    /// Runs a command (program and arguments) inside the namespace; returns its stdout.
    pub fn exec(&self, words: &[&str]) -> Result<String> {
        let (program, args) = words
            .split_first()
            .ok_or_else(|| anyhow::anyhow!("empty command"))?;
        run(self.command(program).args(args))
    }

    /// Runs `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// A fresh interface name in this namespace: `eth0`, `eth1`, ...
    pub fn next_ifname(&self) -> String {
        let n = self.next_if.get();
        self.next_if.set(n + 1);
        format!("eth{n}")
    }

    /// The pids of the processes inside the namespace.
    pub fn pids(&self) -> Vec<u32> {
        output(Command::new("ip").args(["netns", "pids", &self.name]))
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for pid in self.pids() {
            let _ = crate::cmd::signal(pid, "KILL");
        }
        // A killed process leaves the namespace when it is reaped; `ip netns del` only
        // unmounts the name, so deleting now is safe either way.
        if let Err(e) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("tabby-tests: cannot delete netns {}: {e}", self.name);
        }
    }
}
