//! Just enough packet parsing to turn a `tcpdump -w` capture of BGP sessions into the BGP
//! messages each side sent: classic pcap (not pcapng), Ethernet, IPv4/IPv6, TCP reassembly
//! by sequence number, BGP message framing, and a one-line description of each message for
//! fixture comments.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{bail, Context, Result};

/// The bytes one side sent on one TCP connection, in order.
#[derive(Debug, Clone)]
pub struct Stream {
    /// The sender.
    pub src: SocketAddr,
    /// The receiver.
    pub dst: SocketAddr,
    /// The reassembled payload.
    pub data: Vec<u8>,
}

struct Building {
    src: SocketAddr,
    dst: SocketAddr,
    base: Option<u32>,
    segments: BTreeMap<u32, Vec<u8>>,
    first_seqs: Vec<u32>,
}

fn u16_at(b: &[u8], i: usize) -> Result<u16> {
    Ok(u16::from_be_bytes(
        b.get(i..i + 2).context("truncated")?.try_into()?,
    ))
}

fn u32_at(b: &[u8], i: usize) -> Result<u32> {
    Ok(u32::from_be_bytes(
        b.get(i..i + 4).context("truncated")?.try_into()?,
    ))
}

/// The TCP streams (one per direction per connection) of a classic pcap file with Ethernet
/// link type, in the order their first packet appears.
pub fn tcp_streams(pcap: &[u8]) -> Result<Vec<Stream>> {
    let magic = pcap.get(0..4).context("not a pcap file")?;
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => bail!("not a classic pcap file (pcapng is not supported)"),
    };
    let rd32 = |i: usize| -> Result<u32> {
        let b: [u8; 4] = pcap.get(i..i + 4).context("truncated pcap")?.try_into()?;
        Ok(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let linktype = rd32(20)?;
    if linktype != 1 {
        bail!("pcap link type {linktype}, want 1 (Ethernet)");
    }
    let mut streams: Vec<Building> = Vec::new();
    let mut off = 24;
    while off + 16 <= pcap.len() {
        let incl = usize::try_from(rd32(off + 8)?)?;
        // A capture still being written may end inside a record: stop there.
        let Some(frame) = pcap.get(off + 16..off + 16 + incl) else {
            break;
        };
        off += 16 + incl;
        if let Some((src, dst, seq, syn, payload)) = parse_frame(frame)? {
            let idx = match streams.iter().rposition(|s| s.src == src && s.dst == dst) {
                Some(i)
                    if !(syn && streams[i].base.is_some() && streams[i].first_seqs[0] != seq) =>
                {
                    i
                }
                _ => {
                    streams.push(Building {
                        src,
                        dst,
                        base: None,
                        segments: BTreeMap::new(),
                        first_seqs: vec![seq],
                    });
                    streams.len() - 1
                }
            };
            let s = &mut streams[idx];
            if syn {
                s.base = Some(seq.wrapping_add(1));
                s.first_seqs[0] = seq;
            }
            if !payload.is_empty() {
                s.segments.entry(seq).or_insert_with(|| payload.to_vec());
            }
        }
    }
    Ok(streams
        .into_iter()
        .map(|s| {
            let base = s
                .base
                .or_else(|| s.segments.keys().next().copied())
                .unwrap_or(0);
            let mut by_offset: Vec<(u32, &Vec<u8>)> = s
                .segments
                .iter()
                .map(|(seq, p)| (seq.wrapping_sub(base), p))
                .collect();
            by_offset.sort_by_key(|(o, _)| *o);
            let mut data: Vec<u8> = Vec::new();
            for (o, p) in by_offset {
                let o = o as usize;
                if o > data.len() {
                    break; // a hole: a segment was not captured
                }
                let skip = data.len() - o;
                if skip < p.len() {
                    data.extend_from_slice(&p[skip..]);
                }
            }
            Stream {
                src: s.src,
                dst: s.dst,
                data,
            }
        })
        .collect())
}

type Segment<'a> = (SocketAddr, SocketAddr, u32, bool, &'a [u8]);

fn parse_frame(f: &[u8]) -> Result<Option<Segment<'_>>> {
    let ethertype = u16_at(f, 12)?;
    let ip = &f[14..];
    let (src, dst, proto, l4) = match ethertype {
        0x0800 => {
            let ihl = usize::from(ip.first().context("truncated")? & 0x0f) * 4;
            let total = usize::from(u16_at(ip, 2)?);
            let src = Ipv4Addr::from(u32_at(ip, 12)?);
            let dst = Ipv4Addr::from(u32_at(ip, 16)?);
            let end = total.min(ip.len());
            (
                IpAddr::V4(src),
                IpAddr::V4(dst),
                ip[9],
                ip.get(ihl..end).context("truncated")?,
            )
        }
        0x86dd => {
            let plen = usize::from(u16_at(ip, 4)?);
            let src: [u8; 16] = ip.get(8..24).context("truncated")?.try_into()?;
            let dst: [u8; 16] = ip.get(24..40).context("truncated")?.try_into()?;
            let end = (40 + plen).min(ip.len());
            (
                IpAddr::V6(Ipv6Addr::from(src)),
                IpAddr::V6(Ipv6Addr::from(dst)),
                ip[6],
                ip.get(40..end).context("truncated")?,
            )
        }
        _ => return Ok(None),
    };
    if proto != 6 {
        return Ok(None);
    }
    let sport = u16_at(l4, 0)?;
    let dport = u16_at(l4, 2)?;
    let seq = u32_at(l4, 4)?;
    let doff = usize::from(l4.get(12).context("truncated")? >> 4) * 4;
    let syn = l4.get(13).context("truncated")? & 0x02 != 0;
    let payload = l4.get(doff..).context("truncated")?;
    Ok(Some((
        SocketAddr::new(src, sport),
        SocketAddr::new(dst, dport),
        seq,
        syn,
        payload,
    )))
}

/// Splits a BGP byte stream into messages (each with its 19-byte header). A trailing partial
/// message is dropped.
pub fn bgp_messages(data: &[u8]) -> Result<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 19 <= data.len() {
        if data[i..i + 16].iter().any(|b| *b != 0xff) {
            bail!("no BGP marker at offset {i}");
        }
        let len = usize::from(u16_at(data, i + 16)?);
        if len < 19 {
            bail!("BGP length {len} at offset {i}");
        }
        if i + len > data.len() {
            break;
        }
        out.push(&data[i..i + len]);
        i += len;
    }
    Ok(out)
}

fn family(afi: u16, safi: u8) -> String {
    let a = match afi {
        1 => "ipv4".to_owned(),
        2 => "ipv6".to_owned(),
        n => format!("afi{n}"),
    };
    let s = match safi {
        1 => "unicast".to_owned(),
        n => format!("safi{n}"),
    };
    format!("{a}/{s}")
}

fn prefixes(afi: u16, mut b: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = b.split_first() {
        let n = usize::from(len).div_ceil(8);
        let Some(bytes) = rest.get(..n) else { break };
        let mut full = [0u8; 16];
        full[..n.min(16)].copy_from_slice(&bytes[..n.min(16)]);
        let addr = if afi == 2 {
            IpAddr::V6(Ipv6Addr::from(full))
        } else {
            IpAddr::V4(Ipv4Addr::new(full[0], full[1], full[2], full[3]))
        };
        out.push(format!("{addr}/{len}"));
        b = &rest[n..];
    }
    out
}

fn attr_name(code: u8) -> String {
    match code {
        1 => "ORIGIN".into(),
        2 => "AS_PATH".into(),
        3 => "NEXT_HOP".into(),
        4 => "MULTI_EXIT_DISC".into(),
        5 => "LOCAL_PREF".into(),
        6 => "ATOMIC_AGGREGATE".into(),
        7 => "AGGREGATOR".into(),
        8 => "COMMUNITIES".into(),
        9 => "ORIGINATOR_ID".into(),
        10 => "CLUSTER_LIST".into(),
        14 => "MP_REACH_NLRI".into(),
        15 => "MP_UNREACH_NLRI".into(),
        16 => "EXTENDED_COMMUNITIES".into(),
        17 => "AS4_PATH".into(),
        18 => "AS4_AGGREGATOR".into(),
        32 => "LARGE_COMMUNITY".into(),
        n => format!("attr{n}"),
    }
}

/// A one-line description of a BGP message, for the comment above it in a fixture.
/// Assumes the sender's view of 4-octet AS only where it matters for naming (it does not).
pub fn describe(msg: &[u8]) -> String {
    describe_inner(msg).unwrap_or_else(|e| format!("undecodable message: {e}"))
}

fn describe_inner(msg: &[u8]) -> Result<String> {
    let body = &msg[19..];
    Ok(match msg[18] {
        1 => {
            let my_as = u16_at(body, 1)?;
            let hold = u16_at(body, 3)?;
            let id = Ipv4Addr::from(u32_at(body, 5)?);
            let plen = usize::from(body[9]);
            let mut caps = Vec::new();
            let mut p = body.get(10..10 + plen).context("truncated")?;
            while p.len() >= 2 {
                let (ptype, len) = (p[0], usize::from(p[1]));
                let mut c = p.get(2..2 + len).context("truncated")?;
                if ptype == 2 {
                    while c.len() >= 2 {
                        let (code, clen) = (c[0], usize::from(c[1]));
                        let v = c.get(2..2 + clen).context("truncated")?;
                        caps.push(match code {
                            1 => format!("MP {}", family(u16_at(v, 0)?, v[3])),
                            2 => "route-refresh".into(),
                            5 => "extended-next-hop".into(),
                            6 => "extended-message".into(),
                            64 => "graceful-restart".into(),
                            65 => format!("4-octet-AS {}", u32_at(v, 0)?),
                            69 => "add-path".into(),
                            70 => "enhanced-route-refresh".into(),
                            71 => "long-lived-graceful-restart".into(),
                            73 => "fqdn".into(),
                            n => format!("cap{n}"),
                        });
                        c = &c[2 + clen..];
                    }
                }
                p = &p[2 + len..];
            }
            format!(
                "OPEN my-AS {my_as} hold {hold} id {id}; capabilities: {}",
                caps.join(", ")
            )
        }
        2 => {
            let wlen = usize::from(u16_at(body, 0)?);
            let withdrawn = prefixes(1, body.get(2..2 + wlen).context("truncated")?);
            let alen = usize::from(u16_at(body, 2 + wlen)?);
            let mut attrs = body.get(4 + wlen..4 + wlen + alen).context("truncated")?;
            let nlri = prefixes(1, &body[4 + wlen + alen..]);
            let mut parts = Vec::new();
            if !withdrawn.is_empty() {
                parts.push(format!("withdrawn {}", withdrawn.join(" ")));
            }
            let mut names = Vec::new();
            while attrs.len() >= 3 {
                let (flags, code) = (attrs[0], attrs[1]);
                let (len, hdr) = if flags & 0x10 != 0 {
                    (usize::from(u16_at(attrs, 2)?), 4)
                } else {
                    (usize::from(attrs[2]), 3)
                };
                let v = attrs.get(hdr..hdr + len).context("truncated")?;
                match code {
                    14 => {
                        let afi = u16_at(v, 0)?;
                        let nhlen = usize::from(v[3]);
                        let nlri = prefixes(afi, v.get(5 + nhlen..).context("truncated")?);
                        names.push(format!(
                            "MP_REACH_NLRI({} nh {}B: {})",
                            family(afi, v[2]),
                            nhlen,
                            nlri.join(" ")
                        ));
                    }
                    15 => {
                        let afi = u16_at(v, 0)?;
                        let w = prefixes(afi, &v[3..]);
                        names.push(format!(
                            "MP_UNREACH_NLRI({}: {})",
                            family(afi, v[2]),
                            w.join(" ")
                        ));
                    }
                    c => names.push(attr_name(c)),
                }
                attrs = &attrs[hdr + len..];
            }
            if names.is_empty() && parts.is_empty() && nlri.is_empty() {
                return Ok("UPDATE End-of-RIB ipv4/unicast".into());
            }
            if names.len() == 1
                && names[0].starts_with("MP_UNREACH_NLRI(")
                && names[0].ends_with(": )")
            {
                let fam = names[0]
                    .trim_start_matches("MP_UNREACH_NLRI(")
                    .trim_end_matches(": )");
                return Ok(format!("UPDATE End-of-RIB {fam}"));
            }
            if !names.is_empty() {
                parts.push(format!("attributes {}", names.join(", ")));
            }
            if !nlri.is_empty() {
                parts.push(format!("NLRI {}", nlri.join(" ")));
            }
            format!("UPDATE {}", parts.join("; "))
        }
        3 => {
            let (code, sub) = (body[0], body[1]);
            let name = match (code, sub) {
                (2, 2) => "OPEN Message Error / Bad Peer AS",
                (2, 7) => "OPEN Message Error / Unsupported Capability",
                (4, 0) => "Hold Timer Expired",
                (6, 2) => "Cease / Administrative Shutdown",
                (6, 4) => "Cease / Administrative Reset",
                (6, 6) => "Cease / Other Configuration Change",
                (6, _) => "Cease",
                _ => "",
            };
            format!(
                "NOTIFICATION {code}/{sub} {name} ({} data bytes)",
                body.len() - 2
            )
        }
        4 => "KEEPALIVE".into(),
        5 => "ROUTE-REFRESH".into(),
        t => format!("message type {t}"),
    })
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEPALIVE: &str = "ffffffffffffffffffffffffffffffff001304";
    /// BIRD's IPv4 End-of-RIB: an UPDATE with nothing in it.
    const EOR: &str = "ffffffffffffffffffffffffffffffff00170200000000";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
            .collect()
    }

    #[test]
    fn back_to_back_messages_split_at_their_lengths() -> Result<()> {
        let stream = unhex(&format!("{KEEPALIVE}{EOR}{KEEPALIVE}"));
        let msgs = bgp_messages(&stream)?;
        assert_eq!(msgs.len(), 3);
        assert_eq!(hex(msgs[1]), EOR);
        Ok(())
    }

    #[test]
    fn a_trailing_partial_message_is_left_out() -> Result<()> {
        let stream = unhex(&format!("{KEEPALIVE}{}", &EOR[..30]));
        assert_eq!(bgp_messages(&stream)?.len(), 1);
        Ok(())
    }

    #[test]
    fn an_empty_update_is_named_end_of_rib() {
        assert_eq!(describe(&unhex(EOR)), "UPDATE End-of-RIB ipv4/unicast");
    }
}
