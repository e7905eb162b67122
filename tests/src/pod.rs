//! Pods wired the way Calico's CNI plugin wires them, so `tabby node` finds what it would find
//! on a real node (shared/DESIGN.md §4).
//!
//! The pod is a network namespace with `eth0`: its addresses as /32 and /128, an IPv4 default
//! route via 169.254.1.1 (answered by proxy ARP on the host side) and an IPv6 default route
//! via fe80::ecee:eeff:feee:eeee (the host side's link-local address, from its MAC
//! ee:ee:ee:ee:ee:ee). The host side lives in the node's namespace, named `cali` + the first
//! 11 hex digits of SHA-1 of `<namespace>.<name>`.

use std::net::IpAddr;

use anyhow::Result;
use sha1::{Digest, Sha1};

use crate::netns::Netns;

/// The host-side interface name Calico's CNI plugin gives a pod.
pub fn host_interface(namespace: &str, name: &str) -> String {
    let digest = Sha1::digest(format!("{namespace}.{name}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("cali{}", &hex[..11])
}

/// A pod: its namespace (deleted on drop, taking its veth along) and addresses.
#[derive(Debug)]
pub struct Pod {
    /// The pod's network namespace.
    pub netns: Netns,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Host-side interface, in the node's namespace.
    pub host_if: String,
    /// Addresses.
    pub ips: Vec<IpAddr>,
}

impl Pod {
    /// Creates the pod's namespace and veth, and wires both sides.
    pub fn wire(node: &Netns, namespace: &str, name: &str, ips: &[IpAddr]) -> Result<Pod> {
        let netns = Netns::new("pod")?;
        let host_if = host_interface(namespace, name);
        node.ip(&[
            "link",
            "add",
            &host_if,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            netns.name(),
        ])?;
        node.ip(&[
            "link",
            "set",
            &host_if,
            "address",
            "ee:ee:ee:ee:ee:ee",
            "up",
        ])?;
        netns.ip(&["link", "set", "eth0", "up"])?;
        for ip in ips {
            match ip {
                IpAddr::V4(a) => {
                    netns.ip(&["addr", "add", &format!("{a}/32"), "dev", "eth0"])?;
                }
                IpAddr::V6(a) => {
                    netns.ip(&[
                        "-6",
                        "addr",
                        "add",
                        &format!("{a}/128"),
                        "dev",
                        "eth0",
                        "nodad",
                    ])?;
                }
            }
        }
        if ips.iter().any(IpAddr::is_ipv4) {
            netns.ip(&[
                "route",
                "add",
                "169.254.1.1",
                "dev",
                "eth0",
                "scope",
                "link",
            ])?;
            netns.ip(&[
                "route",
                "add",
                "default",
                "via",
                "169.254.1.1",
                "dev",
                "eth0",
            ])?;
        }
        if ips.iter().any(IpAddr::is_ipv6) {
            netns.ip(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                "fe80::ecee:eeff:feee:eeee",
                "dev",
                "eth0",
            ])?;
        }
        Ok(Pod {
            netns,
            namespace: namespace.into(),
            name: name.into(),
            host_if,
            ips: ips.to_vec(),
        })
    }

    /// The Pod object a CNI-using cluster would have, scheduled on `node`.
    pub fn manifest(&self, node: &str) -> String {
        let ips: Vec<String> = self
            .ips
            .iter()
            .map(|ip| format!("  - ip: \"{ip}\""))
            .collect();
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {}\n  namespace: {}\n  labels:\n    app: {}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n    image: none\nstatus:\n  podIP: \"{}\"\n  podIPs:\n{}\n",
            self.name,
            self.namespace,
            self.name,
            self.ips.first().map(ToString::to_string).unwrap_or_default(),
            ips.join("\n"),
        )
    }

    /// Starts pinging `to` (IPv4) from inside the pod 10 times a second, `count` pings, in
    /// the background; [`Pinging::summary`] waits for the end.
    pub fn ping_loop(&self, to: IpAddr, count: u32) -> Result<Pinging> {
        let child = self
            .netns
            .command("ping")
            .args(["-4", "-i", "0.1", "-c", &count.to_string(), "-W", "1"])
            .arg(to.to_string())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        Ok(Pinging(child))
    }

    /// Pings `to` once from inside the pod; true when it answered.
    pub fn ping(&self, to: IpAddr) -> bool {
        let family = if to.is_ipv6() { "-6" } else { "-4" };
        self.netns
            .command("ping")
            .args([family, "-c", "1", "-W", "1", &to.to_string()])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }
}

/// A ping running in the background (see [`Pod::ping_loop`]).
#[derive(Debug)]
pub struct Pinging(std::process::Child);

impl Pinging {
    /// Waits for the pings to end; ping's summary line (`N packets transmitted, M received,
    /// L% packet loss, ...`).
    pub fn summary(self) -> Result<String> {
        let out = self.0.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or("no ping summary")
            .to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed independently: `printf %s default.nginx | sha1sum | cut -c1-11`.
    #[test]
    fn host_interface_follows_calicos_sha1_rule() {
        assert_eq!(host_interface("default", "nginx"), "calic440f455693");
    }
}
