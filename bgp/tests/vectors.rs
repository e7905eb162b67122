//! Messages captured from real BIRD 2 and GoBGP sessions (bgp/tests/fixtures/*.hex, written by
//! `cargo test -p tabby-tests --test capture -- --ignored`; provenance in each file's header).
//!
//! Each message is checked both ways: decoded, it must match the description written beside
//! it by the capture tool (an independent parser); encoded again, it must give the captured
//! bytes, except where the sender laid the message out differently than tabby does (attribute
//! order, extended length on short attributes, one capability per optional parameter), and
//! then it must at least decode to the same message.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use tabby_bgp::wire::{Capability, Context, Message, NextHop};
use tabby_bgp::Family;

struct Vector {
    file: String,
    description: String,
    bytes: Vec<u8>,
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or_else(|e| panic!("hex {s}: {e}")))
        .collect()
}

fn vectors() -> Vec<Vector> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "hex"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        let mut description = String::new();
        for line in text.lines() {
            if let Some(comment) = line.strip_prefix("# ") {
                if let Some((n, d)) = comment.split_once(": ") {
                    if n.chars().all(|c| c.is_ascii_digit()) {
                        description = d.to_string();
                    }
                }
            } else if !line.trim().is_empty() && !line.starts_with('#') && !line.starts_with(' ') {
                out.push(Vector {
                    file: path
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    description: std::mem::take(&mut description),
                    bytes: unhex(line.trim()),
                });
            }
        }
    }
    out
}

/// Both captured speakers negotiated 4-octet AS and are external peers.
fn ctx() -> Context {
    Context {
        ebgp: true,
        ..Context::modern()
    }
}

fn family(name: &str) -> Family {
    match name {
        "ipv4/unicast" => Family::Ipv4Unicast,
        "ipv6/unicast" => Family::Ipv6Unicast,
        other => panic!("family {other}"),
    }
}

fn prefixes(list: &str) -> Vec<String> {
    list.split(", ")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Checks a decoded message against the capture tool's description of it.
fn check_description(v: &Vector, msg: &Message) {
    let d = v.description.as_str();
    let ctx = format!("{}: {d}", v.file);
    match msg {
        Message::Keepalive => assert_eq!(d, "KEEPALIVE", "{ctx}"),
        Message::Notification(n) => {
            let want = format!("NOTIFICATION {}/{}", n.code, n.subcode);
            assert!(d.starts_with(&want), "{ctx}: decoded {n:?}");
        }
        Message::RouteRefresh(_) => assert!(d.starts_with("ROUTE-REFRESH"), "{ctx}"),
        Message::Open(o) => {
            let head = format!(
                "OPEN my-AS {} hold {} id {};",
                o.my_as, o.hold_time, o.bgp_id
            );
            assert!(d.starts_with(&head), "{ctx}: decoded {o:?}");
            let caps = d.split_once("capabilities: ").map(|x| x.1).unwrap_or("");
            let names: Vec<String> = o
                .capabilities
                .iter()
                .map(|c| match c {
                    Capability::Multiprotocol { afi, safi } => format!(
                        "MP {}/{}",
                        if *afi == 1 { "ipv4" } else { "ipv6" },
                        if *safi == 1 { "unicast" } else { "?" }
                    ),
                    Capability::RouteRefresh => "route-refresh".into(),
                    Capability::EnhancedRouteRefresh => "enhanced-route-refresh".into(),
                    Capability::GracefulRestart(_) => "graceful-restart".into(),
                    Capability::FourOctetAs(asn) => format!("4-octet-AS {asn}"),
                    Capability::ExtendedNextHop(_) => "extended-next-hop".into(),
                    Capability::ExtendedMessage => "extended-message".into(),
                    Capability::AddPath(_) => "add-path".into(),
                    Capability::Unknown { code: 71, .. } => "long-lived-graceful-restart".into(),
                    Capability::Unknown { code: 73, .. } => "fqdn".into(),
                    Capability::Unknown { code, .. } => format!("unknown {code}"),
                })
                .collect();
            assert_eq!(names.join(", "), caps, "{ctx}");
        }
        Message::Update(u) => {
            assert!(
                u.errors.is_empty(),
                "{ctx}: a real peer's UPDATE must be clean: {:?}",
                u.errors
            );
            if let Some(fam) = d.strip_prefix("UPDATE End-of-RIB ") {
                assert_eq!(u.is_end_of_rib(), Some(family(fam)), "{ctx}");
                return;
            }
            if let Some(list) = d.strip_prefix("UPDATE withdrawn ") {
                let got: Vec<String> = u.withdrawn.iter().map(|n| n.prefix.to_string()).collect();
                assert_eq!(got, prefixes(list), "{ctx}");
                return;
            }
            let rest = d
                .strip_prefix("UPDATE attributes ")
                .unwrap_or_else(|| panic!("{ctx}"));
            let (attrs, nlri) = rest.split_once("; NLRI ").unwrap_or((rest, ""));
            let got: Vec<String> = u.nlri.iter().map(|n| n.prefix.to_string()).collect();
            assert_eq!(got, prefixes(nlri), "{ctx}");
            // Attribute names, with the MP attributes' insides.
            let mut i = 0;
            let names: Vec<&str> = std::iter::from_fn(|| {
                if i >= attrs.len() {
                    return None;
                }
                let s = &attrs[i..];
                let end = match (s.find('('), s.find(", ")) {
                    (Some(p), Some(c)) if p < c => s.find(')').map(|e| e + 1).unwrap_or(s.len()),
                    (_, Some(c)) => c,
                    _ => s.len(),
                };
                i += end + 2;
                Some(&s[..end])
            })
            .collect();
            let a = &u.attrs;
            for name in names {
                match name.split('(').next().unwrap_or("") {
                    "ORIGIN" => assert!(a.origin.is_some(), "{ctx}"),
                    "AS_PATH" => assert!(a.as_path.is_some(), "{ctx}"),
                    "NEXT_HOP" => assert!(a.next_hop.is_some(), "{ctx}"),
                    "COMMUNITIES" => assert!(!a.communities.is_empty(), "{ctx}"),
                    "LARGE_COMMUNITY" => assert!(!a.large_communities.is_empty(), "{ctx}"),
                    "MULTI_EXIT_DISC" => assert!(a.med.is_some(), "{ctx}"),
                    "LOCAL_PREF" => assert!(a.local_pref.is_some(), "{ctx}"),
                    "MP_REACH_NLRI" => {
                        let inner = &name["MP_REACH_NLRI(".len()..name.len() - 1];
                        let (head, list) = inner.split_once(": ").unwrap_or((inner, ""));
                        let mut words = head.split(' ');
                        let fam = family(words.next().unwrap_or(""));
                        let nh_len = words.nth(1).unwrap_or("");
                        let r = u
                            .mp_reach
                            .as_ref()
                            .unwrap_or_else(|| panic!("{ctx}: no MP_REACH"));
                        assert_eq!(r.family, fam, "{ctx}");
                        let len = match r.next_hop {
                            NextHop::V4(_) => "4B",
                            NextHop::V6 {
                                link_local: None, ..
                            } => "16B",
                            NextHop::V6 {
                                link_local: Some(_),
                                ..
                            } => "32B",
                        };
                        assert_eq!(len, nh_len, "{ctx}");
                        let got: Vec<String> =
                            r.nlri.iter().map(|n| n.prefix.to_string()).collect();
                        assert_eq!(got, prefixes(list), "{ctx}");
                    }
                    "MP_UNREACH_NLRI" => {
                        let inner = &name["MP_UNREACH_NLRI(".len()..name.len() - 1];
                        let (fam, list) = inner.split_once(": ").unwrap_or((inner, ""));
                        let un = u
                            .mp_unreach
                            .as_ref()
                            .unwrap_or_else(|| panic!("{ctx}: no MP_UNREACH"));
                        assert_eq!(un.family, family(fam), "{ctx}");
                        let got: Vec<String> =
                            un.withdrawn.iter().map(|n| n.prefix.to_string()).collect();
                        assert_eq!(got, prefixes(list), "{ctx}");
                    }
                    other => panic!("{ctx}: attribute {other} not checked by this test"),
                }
            }
        }
    }
}

/// Why tabby's encoding of a message may differ from the captured one and still be right.
fn layout_differs(bytes: &[u8]) -> bool {
    match bytes.get(18) {
        Some(1) => {
            // More than one optional parameter (GoBGP puts each capability in its own).
            let params = &bytes[29..];
            params.len() >= 2 && usize::from(params[1]) + 2 < params.len()
        }
        Some(2) => {
            let wlen = usize::from(u16::from_be_bytes([bytes[19], bytes[20]]));
            let at = 21 + wlen;
            let alen = usize::from(u16::from_be_bytes([bytes[at], bytes[at + 1]]));
            let mut attrs = &bytes[at + 2..at + 2 + alen];
            let mut last = 0u8;
            while attrs.len() >= 3 {
                let (flags, code) = (attrs[0], attrs[1]);
                let (len, hdr) = if flags & 0x10 != 0 {
                    (usize::from(u16::from_be_bytes([attrs[2], attrs[3]])), 4)
                } else {
                    (usize::from(attrs[2]), 3)
                };
                // Not sorted by type code, or extended length for a short value.
                if code < last || (hdr == 4 && len <= 255) {
                    return true;
                }
                last = code;
                attrs = &attrs[hdr + len..];
            }
            false
        }
        _ => false,
    }
}

#[test]
fn fixtures_exist_for_bird_and_gobgp() {
    let v = vectors();
    assert!(
        v.iter().any(|v| v.file.starts_with("bird2")),
        "no BIRD fixtures"
    );
    assert!(
        v.iter().any(|v| v.file.starts_with("gobgp")),
        "no GoBGP fixtures"
    );
    assert!(
        v.iter()
            .filter(|v| v.description.starts_with("UPDATE"))
            .count()
            >= 10
    );
}

#[test]
fn captured_messages_decode_to_what_the_capture_describes() {
    for v in vectors() {
        let msg = Message::decode(&v.bytes, &ctx())
            .unwrap_or_else(|n| panic!("{}: {}: {n:?}", v.file, v.description));
        check_description(&v, &msg);
    }
}

#[test]
fn captured_messages_encode_back_to_the_captured_bytes() {
    let mut identical = 0;
    for v in vectors() {
        let Ok(msg) = Message::decode(&v.bytes, &ctx()) else {
            continue;
        };
        let again = msg.to_bytes(&ctx());
        if again == v.bytes {
            identical += 1;
            continue;
        }
        assert!(
            layout_differs(&v.bytes),
            "{}: {}: tabby encodes it differently for no known reason\n captured {:02x?}\n tabby    {:02x?}",
            v.file,
            v.description,
            v.bytes,
            again
        );
        assert_eq!(
            Message::decode(&again, &ctx()).as_ref(),
            Ok(&msg),
            "{}: {}",
            v.file,
            v.description
        );
    }
    eprintln!("{identical} captured messages re-encoded byte for byte");
    assert!(
        identical >= 10,
        "only {identical} messages re-encoded byte for byte"
    );
}

#[test]
fn bird_tagged_route_carries_its_communities_and_large_community() {
    let v = vectors();
    let tagged = v
        .iter()
        .find(|v| {
            v.file.starts_with("bird2_ebgp_ipv4") && v.description.ends_with("NLRI 10.1.0.0/24")
        })
        .unwrap_or_else(|| panic!("fixture missing"));
    let Ok(Message::Update(u)) = Message::decode(&tagged.bytes, &ctx()) else {
        panic!("decode")
    };
    assert_eq!(
        u.attrs.communities,
        vec![(65000 << 16) | 100, (65000 << 16) | 101]
    );
    let lc = u.attrs.large_communities[0];
    assert_eq!((lc.global, lc.local1, lc.local2), (4_200_000_000, 1, 2));
    assert_eq!(
        u.attrs.as_path.as_ref().and_then(|p| p.first_as()),
        Some(4_200_000_001)
    );
    assert_eq!(u.attrs.next_hop, Some(Ipv4Addr::new(10, 0, 0, 1)));
}
