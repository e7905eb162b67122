//! The RIB of a route reflector: one peer announces N IPv4 prefixes (UPDATEs of 500 prefixes
//! with one attribute set, as a full table arrives), reflected to 10 clients; the time covers
//! the decision process, the export decisions and packing every client's UPDATEs. It also
//! prints the table's memory per path (resident memory growth), for docs/benchmarks.md.
//! Run: `cargo bench -p tabby-bgp --bench rib`.
#![allow(missing_docs)]

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::net::{IpAddr, Ipv4Addr};
use tabby_bgp::rib::{PeerKind, PeerSession, Rib, RibConfig};
use tabby_bgp::speaker::NextHopMode;
use tabby_bgp::wire::{AsPath, Context, Nlri, Origin, PathAttributes, Update};
use tabby_bgp::{Family, Prefix};

/// Resident memory of this process, bytes (from /proc; the workspace forbids the `unsafe` a
/// counting allocator would need). Measured around building a fresh table, so the growth is
/// the table's.
fn resident() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

const CLIENTS: u8 = 10;

fn session(n: u8, kind: PeerKind) -> PeerSession {
    PeerSession {
        address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)),
        router_id: Ipv4Addr::new(10, 0, 0, n),
        remote_as: 65000,
        kind,
        next_hop_mode: NextHopMode::Auto,
        local_addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        families: vec![Family::Ipv4Unicast],
        restart: None,
    }
}

fn reflector() -> Rib {
    let mut rib = Rib::new(RibConfig {
        router_id: Ipv4Addr::new(10, 0, 0, 1),
        local_as: 65000,
        cluster_id: Some(Ipv4Addr::new(10, 0, 0, 1)),
        next_hop_v4: None,
        next_hop_v6: None,
        restarting: false,
    });
    rib.peer_up(session(2, PeerKind::Client));
    for n in 0..CLIENTS {
        rib.peer_up(session(10 + n, PeerKind::Client));
    }
    for n in 0..CLIENTS {
        let _ = rib.take_outbox(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10 + n)), usize::MAX);
    }
    rib
}

fn updates(n: u32) -> Vec<Update> {
    let prefixes: Vec<Nlri> = (0..n)
        .map(|i| {
            let a = Ipv4Addr::from(0x0b00_0000 + (i << 8));
            Nlri::from(Prefix::new(IpAddr::V4(a), 24).unwrap_or_else(|_| unreachable!()))
        })
        .collect();
    prefixes
        .chunks(500)
        .map(|chunk| Update {
            attrs: PathAttributes {
                origin: Some(Origin::Igp),
                as_path: Some(AsPath::sequence([65100])),
                next_hop: Some(Ipv4Addr::new(10, 0, 0, 2)),
                local_pref: Some(100),
                ..PathAttributes::default()
            },
            nlri: chunk.to_vec(),
            ..Update::default()
        })
        .collect()
}

fn ingest(rib: &mut Rib, updates: &[Update]) -> usize {
    let source = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    let ctx = Context::modern();
    let mut bytes = 0;
    for u in updates {
        rib.update(source, u);
        drop(rib.take_changes());
        drop(rib.take_woken());
    }
    for n in 0..CLIENTS {
        let outbox = rib.take_outbox(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10 + n)), usize::MAX);
        let mut buf = BytesMut::new();
        outbox.encode(&ctx, &mut buf);
        bytes += buf.len();
    }
    bytes
}

fn memory_per_path(n: u32) {
    let updates = updates(n);
    let before = resident();
    // The table alone: a source and no client (what clients cost is transient: their
    // pending UPDATEs).
    let mut rib = Rib::new(RibConfig {
        router_id: Ipv4Addr::new(10, 0, 0, 1),
        local_as: 65000,
        cluster_id: Some(Ipv4Addr::new(10, 0, 0, 1)),
        next_hop_v4: None,
        next_hop_v6: None,
        restarting: false,
    });
    rib.peer_up(session(2, PeerKind::Client));
    for u in &updates {
        rib.update(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), u);
        // As the speaker does after every change: the changes go to subscribers.
        drop(rib.take_changes());
        drop(rib.take_woken());
    }
    let after = resident();
    println!(
        "rib memory: {} paths, {} bytes per path, {} attribute sets",
        rib.len(),
        after.saturating_sub(before) / rib.len().max(1),
        rib.attribute_sets()
    );
}

fn bench(c: &mut Criterion) {
    // As `tabby` does at start (tabby-sys::malloc).
    tabby_sys::malloc::map_large_blocks();
    memory_per_path(1_000_000);
    let n = 20_000;
    let updates = updates(n);
    let mut group = c.benchmark_group("rib");
    group.throughput(Throughput::Elements(u64::from(n)));
    group.sample_size(10);
    group.bench_function("reflect_20k_prefixes_to_10_clients", |b| {
        b.iter_batched(
            reflector,
            |mut rib| ingest(&mut rib, &updates),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
