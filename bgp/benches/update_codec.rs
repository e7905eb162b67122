//! UPDATE decode and encode throughput, in prefixes per second.
//!
//! The workload is a Calico-shaped table: 10,000 IPv4 /26 blocks and 10,000 IPv6 /122
//! blocks with one attribute set each (ORIGIN, AS_PATH, NEXT_HOP, LOCAL_PREF, a community),
//! packed into 4096-octet UPDATEs as a speaker sends a full table.
//! Run: `cargo bench -p tabby-bgp --bench update_codec`.
#![allow(missing_docs)]

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use tabby_bgp::wire::{
    frame, AsPath, Context, Message, NextHop, Nlri, Origin, PathAttributes, Update,
};
use tabby_bgp::{Family, Prefix};

const BLOCKS: u32 = 10_000;

fn attrs() -> PathAttributes {
    PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::sequence([64512])),
        local_pref: Some(100),
        communities: vec![0xfc00_0001],
        ..PathAttributes::default()
    }
}

fn v4_blocks() -> Vec<Nlri> {
    (0..BLOCKS)
        .filter_map(|i| Prefix::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (i << 6))), 26).ok())
        .map(Nlri::from)
        .collect()
}

fn v6_blocks() -> Vec<Nlri> {
    (0..BLOCKS)
        .filter_map(|i| {
            let a = (0xfd00u128 << 112) | (u128::from(i) << 6);
            Prefix::new(IpAddr::V6(Ipv6Addr::from(a)), 122).ok()
        })
        .map(Nlri::from)
        .collect()
}

fn encode_table(ctx: &Context, family: Family, nlri: &[Nlri]) -> BytesMut {
    let nh = match family {
        Family::Ipv4Unicast => NextHop::V4(Ipv4Addr::new(10, 0, 0, 1)),
        Family::Ipv6Unicast => NextHop::V6 {
            global: "fd00::1".parse().unwrap_or(Ipv6Addr::LOCALHOST),
            link_local: None,
        },
    };
    let mut out = BytesMut::with_capacity(nlri.len() * 8);
    Update::encode_announce(ctx, family, &attrs(), nh, nlri, &mut out);
    out
}

fn decode_all(ctx: &Context, mut buf: &[u8]) -> usize {
    let mut prefixes = 0;
    while let Ok(Some(len)) = frame(buf, ctx) {
        if let Ok(Message::Update(u)) = Message::decode(&buf[..len], ctx) {
            prefixes += u.announced().count();
        }
        buf = &buf[len..];
    }
    prefixes
}

fn bench(c: &mut Criterion) {
    let ctx = Context::modern();
    for (family, nlri) in [
        (Family::Ipv4Unicast, v4_blocks()),
        (Family::Ipv6Unicast, v6_blocks()),
    ] {
        let table = encode_table(&ctx, family, &nlri);
        let mut group = c.benchmark_group(format!("update_{family}"));
        group.throughput(Throughput::Elements(u64::from(BLOCKS)));
        group.bench_function("decode", |b| {
            b.iter(|| black_box(decode_all(&ctx, black_box(&table))))
        });
        group.bench_function("encode", |b| {
            b.iter(|| black_box(encode_table(&ctx, family, black_box(&nlri))))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
