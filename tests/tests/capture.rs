//! Captures the BGP messages BIRD 2 and GoBGP send each other and writes them as hex codec
//! fixtures to `bgp/tests/fixtures/`, with their provenance. Ignored by default: it rewrites
//! committed files. Run it with
//! `cargo test -p tabby-tests --test capture -- --ignored capture`.
//!
//! One BIRD (AS 4200000001) and one GoBGP (AS 4200000002) on a veth pair hold two eBGP
//! sessions with 4-octet AS numbers: one over IPv4 carrying IPv4 and IPv6 unicast (IPv6 in
//! MP_REACH_NLRI with an IPv6 next hop), one over IPv6 carrying IPv6 unicast. Each side
//! originates routes with communities and large communities, then withdraws some, then shuts
//! one session down administratively (Cease); finally BIRD is reconfigured with a wrong AS
//! for GoBGP and refuses its OPEN (Bad Peer AS). tcpdump on BIRD's interface records it all.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, Result};
use tabby_tests::cmd::{output, sh};
use tabby_tests::pcap::{bgp_messages, describe, hex, tcp_streams};
use tabby_tests::{
    skip, wait_until, Bird, BirdConfig, BirdRoute, Capture, Diagnose, Family, Gobgp, GobgpConfig,
    GobgpRoute, Lan, Neighbor, PeerDaemon, TestDir, CONVERGE,
};

const BIRD_AS: u32 = 4_200_000_001;
const GOBGP_AS: u32 = 4_200_000_002;

fn bird_route(prefix: &str, tagged: bool) -> BirdRoute {
    let mut r = BirdRoute::new(prefix);
    if tagged {
        r.communities = vec![(65000, 100), (65000, 101)];
        r.large_communities = vec![(4_200_000_000, 1, 2)];
    }
    r
}

fn gobgp_route(prefix: &str, next_hop: Option<IpAddr>, tagged: bool) -> GobgpRoute {
    let mut r = GobgpRoute::new(prefix, next_hop);
    if tagged {
        r.communities = vec!["65000:200".into(), "65000:201".into()];
        r.large_communities = vec!["4200000000:3:4".into()];
    }
    r
}

fn version(program: &str) -> Result<String> {
    let out = output(std::process::Command::new(program).arg("--version"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(text.trim().to_owned())
}

#[test]
#[ignore = "rewrites the committed fixtures in bgp/tests/fixtures"]
fn capture_writes_the_messages_of_bird_and_gobgp_as_codec_fixtures() -> Result<()> {
    if skip()? {
        return Ok(());
    }
    let dir = TestDir::new("cap")?;
    let lan = Lan::pair("cap")?;
    let (b, g) = (&lan.nodes[0], &lan.nodes[1]);
    let mut capture = Capture::start(&b.ns, &b.ifname, dir.path(), "bgp")?;

    let session = |local: IpAddr, remote: IpAddr, asn: u32, families: Vec<Family>| Neighbor {
        address: remote,
        asn,
        local,
        families,
        passive: false,
    };
    let mut bc = BirdConfig::new(b.v4, BIRD_AS);
    bc.neighbors = vec![
        session(
            b.addr(false),
            g.addr(false),
            GOBGP_AS,
            vec![Family::V4, Family::V6],
        ),
        session(b.addr(true), g.addr(true), GOBGP_AS, vec![Family::V6]),
    ];
    bc.routes = vec![
        bird_route("10.1.0.0/24", true),
        bird_route("10.1.1.0/24", false),
        bird_route("fd01::/64", true),
        bird_route("fd01:1::/64", false),
    ];
    let mut gc = GobgpConfig::new(g.v4, GOBGP_AS);
    gc.neighbors = vec![
        session(
            g.addr(false),
            b.addr(false),
            BIRD_AS,
            vec![Family::V4, Family::V6],
        ),
        session(g.addr(true), b.addr(true), BIRD_AS, vec![Family::V6]),
    ];
    let nh6 = Some(g.addr(true));
    gc.routes = vec![
        gobgp_route("10.2.0.0/24", None, true),
        gobgp_route("10.2.1.0/24", None, false),
        gobgp_route("fd02::/64", nh6, true),
        gobgp_route("fd02:1::/64", nh6, false),
    ];
    let mut bird = Bird::start(&b.ns, dir.path(), bc.clone())?;
    let mut gobgp = Gobgp::start(&g.ns, dir.path(), gc)?;
    let parties: [&dyn Diagnose; 2] = [&bird, &gobgp];
    let (b4, b6, g4, g6) = (b.addr(false), b.addr(true), g.addr(false), g.addr(true));

    wait_until(
        CONVERGE,
        "both sessions carry every route",
        &parties,
        || {
            Ok(bird.routes_from(g4)?.len() == 4
                && bird.routes_from(g6)?.len() == 2
                && gobgp.has_route_from(b4, "10.1.0.0/24")?
                && gobgp.has_route_from(b4, "fd01::/64")?
                && gobgp.has_route_from(b6, "fd01:1::/64")?)
        },
    )?;

    bird.withdraw("10.1.0.0/24")?;
    bird.withdraw("fd01::/64")?;
    gobgp.withdraw("10.2.0.0/24")?;
    gobgp.withdraw("fd02::/64")?;
    let parties: [&dyn Diagnose; 2] = [&bird, &gobgp];
    wait_until(CONVERGE, "the withdraws are seen", &parties, || {
        Ok(!bird.has_route_from(g4, "10.2.0.0/24")?
            && !bird.has_route_from(g6, "fd02::/64")?
            && !gobgp.has_route_from(b4, "10.1.0.0/24")?
            && !gobgp.has_route_from(b4, "fd01::/64")?)
    })?;

    // Administrative shutdown: GoBGP on the IPv6 session (with an RFC 8203 reason), BIRD
    // on the IPv4 one.
    gobgp.gobgp(&[
        "neighbor",
        &b6.to_string(),
        "disable",
        "--reason",
        "tabby fixture",
    ])?;
    bird.birdc(&["disable", &Bird::protocol_name(g4)])?;
    let notified = |from: IpAddr, to: IpAddr, code: (u8, u8)| -> Result<bool> {
        Ok(capture
            .messages()?
            .iter()
            .any(|m| m.src.ip() == from && m.dst.ip() == to && m.notification() == Some(code)))
    };
    wait_until(
        CONVERGE,
        "both Cease notifications are on the wire",
        &parties,
        || Ok(notified(g6, b6, (6, 2))? && notified(b4, g4, (6, 2))?),
    )?;

    // Bad Peer AS: BIRD expects another AS from GoBGP on the IPv4 session.
    let mut wrong = bird.config().clone();
    wrong.neighbors[0].asn = 65009;
    bird.reconfigure(wrong)?;
    bird.birdc(&["enable", &Bird::protocol_name(g4)])?;
    let parties: [&dyn Diagnose; 2] = [&bird, &gobgp];
    wait_until(
        CONVERGE,
        "BIRD's Bad Peer AS is on the wire",
        &parties,
        || notified(b4, g4, (2, 2)),
    )?;
    capture.stop()?;

    let pcap = std::fs::read(capture.file())?;
    let streams = tcp_streams(&pcap)?;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bgp/tests/fixtures");
    std::fs::create_dir_all(&fixtures)?;
    let date = sh(&["date", "-u", "+%Y-%m-%d"])?.trim().to_owned();
    let (bird_version, gobgp_version) = (version("bird")?, version("gobgpd")?);
    let outputs = [
        ("bird2", "BIRD", &bird_version, b4, g4, "ipv4"),
        ("bird2", "BIRD", &bird_version, b6, g6, "ipv6"),
        ("gobgp", "GoBGP", &gobgp_version, g4, b4, "ipv4"),
        ("gobgp", "GoBGP", &gobgp_version, g6, b6, "ipv6"),
    ];
    for (file_tag, daemon, daemon_version, from, to, transport) in outputs {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "# BGP messages sent by {daemon} ({daemon_version}) on an eBGP session over {transport}, \
             captured with tcpdump on {date} by tests/tests/capture.rs (tabby-tests)."
        );
        let _ = writeln!(
            text,
            "# Sender {from} AS {}, receiver {to} AS {}; 4-octet AS; hold time 9; families: {}.",
            if daemon == "BIRD" { BIRD_AS } else { GOBGP_AS },
            if daemon == "BIRD" { GOBGP_AS } else { BIRD_AS },
            if transport == "ipv4" {
                "ipv4 unicast, ipv6 unicast (MP-BGP)"
            } else {
                "ipv6 unicast (MP-BGP)"
            },
        );
        let _ = writeln!(
            text,
            "# Routes: BIRD originates 10.1.0.0/24 and fd01::/64 with communities (65000,100) \
             (65000,101) and large community (4200000000,1,2), and 10.1.1.0/24 and fd01:1::/64 \
             bare; GoBGP likewise 10.2.0.0/24 and fd02::/64 with 65000:200 65000:201 and \
             4200000000:3:4, 10.2.1.0/24 and fd02:1::/64 bare (IPv6 next hop fd00::2)."
        );
        let _ = writeln!(
            text,
            "# Sequence: session up; the tagged routes withdrawn on both sides; GoBGP disables \
             the IPv6 session, BIRD the IPv4 one (Cease / Administrative Shutdown); BIRD is then \
             reconfigured to expect AS 65009 on the IPv4 session and refuses GoBGP's OPEN (Bad \
             Peer AS)."
        );
        let _ = writeln!(
            text,
            "# Format: one message per line, lower-case hex including the 19-byte header; the \
             `# ` line above each names it. A line `# connection N` starts each TCP connection; \
             connections that repeat an earlier one message for message are left out."
        );
        let mut n = 0;
        let mut connection = 0;
        let mut seen: Vec<Vec<&[u8]>> = Vec::new();
        for s in streams
            .iter()
            .filter(|s| s.src.ip() == from && s.dst.ip() == to)
        {
            let msgs = bgp_messages(&s.data)?;
            // Retries while the other side refuses repeat the same OPEN: keep one.
            if msgs.is_empty() || seen.contains(&msgs) {
                continue;
            }
            seen.push(msgs.clone());
            connection += 1;
            let _ = writeln!(text, "# connection {connection}: {} -> {}", s.src, s.dst);
            for m in msgs {
                n += 1;
                let _ = writeln!(text, "# {n}: {}", describe(m));
                let _ = writeln!(text, "{}", hex(m));
            }
        }
        anyhow::ensure!(
            n > 0,
            "no messages from {from} to {to} in {}",
            capture.file().display()
        );
        let path = fixtures.join(format!("{file_tag}_ebgp_{transport}_session.hex"));
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {} ({n} messages)", path.display());
    }
    Ok(())
}
