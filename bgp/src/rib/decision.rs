//! The decision process: which of a prefix's paths is best (RFC 4271 §9.1.2.2 with the
//! tie-breakers of RFC 4456 §9), and which paths are as good as the best for multipath.

use super::paths::Stored as Path;
use crate::wire::Origin;
use std::cmp::{Ordering, Reverse};
use std::net::Ipv4Addr;

/// LOCAL_PREF of a path for comparison: paths from external peers carry none and get the
/// default, as every implementation does.
const DEFAULT_LOCAL_PREF: u32 = 100;

fn origin_rank(o: Option<Origin>) -> u8 {
    match o {
        Some(Origin::Igp) => 0,
        Some(Origin::Egp) => 1,
        Some(Origin::Incomplete) | None => 2,
    }
}

fn local_pref(p: &Path) -> u32 {
    match &p.from {
        Some(f) if f.ebgp => DEFAULT_LOCAL_PREF,
        _ => p.attrs().local_pref.unwrap_or(DEFAULT_LOCAL_PREF),
    }
}

fn path_len(p: &Path) -> usize {
    p.attrs().as_path.as_ref().map_or(0, |a| a.path_len())
}

fn neighbour_as(p: &Path) -> Option<u32> {
    p.attrs().as_path.as_ref().and_then(|a| a.first_as())
}

/// Compares the steps of RFC 4271 §9.1.2.2 that make paths equally good for multipath:
/// local origination, LOCAL_PREF, AS_PATH length, ORIGIN, MED (only between paths from the
/// same neighbouring AS, §9.1.2.2 c) and external over internal. `Less` means `a` is better.
pub(crate) fn compare_multipath(a: &Path, b: &Path) -> Ordering {
    // Our own routes first (a "weight" in other implementations' words).
    let remote = |p: &Path| p.from.is_some();
    let internal = |p: &Path| !p.from.as_ref().is_some_and(|f| f.ebgp);
    remote(a)
        .cmp(&remote(b))
        .then_with(|| Reverse(local_pref(a)).cmp(&Reverse(local_pref(b))))
        .then_with(|| path_len(a).cmp(&path_len(b)))
        .then_with(|| origin_rank(a.attrs().origin).cmp(&origin_rank(b.attrs().origin)))
        .then_with(|| {
            if neighbour_as(a) == neighbour_as(b) {
                a.attrs().med.unwrap_or(0).cmp(&b.attrs().med.unwrap_or(0))
            } else {
                Ordering::Equal
            }
        })
        .then_with(|| internal(a).cmp(&internal(b)))
}

/// The full comparison: [`compare_multipath`], then fresh over stale (the routes a
/// graceful-restart helper keeps only win when nothing fresher is as good), the lowest
/// ORIGINATOR_ID or router ID and the shortest CLUSTER_LIST (RFC 4456 §9), the lowest peer
/// address, the lowest path identifier.
pub(crate) fn compare(a: &Path, b: &Path) -> Ordering {
    let id = |p: &Path| {
        p.attrs()
            .originator_id
            .or(p.from.as_ref().map(|f| f.router_id))
            .unwrap_or(Ipv4Addr::UNSPECIFIED)
    };
    let addr = |p: &Path| p.from.as_ref().map(|f| f.address);
    compare_multipath(a, b)
        .then_with(|| a.stale.cmp(&b.stale))
        .then_with(|| id(a).cmp(&id(b)))
        .then_with(|| {
            a.attrs()
                .cluster_list
                .len()
                .cmp(&b.attrs().cluster_list.len())
        })
        .then_with(|| addr(a).cmp(&addr(b)))
        .then_with(|| a.path_id.cmp(&b.path_id))
}

/// Orders `paths` best first with deterministic MED: the best of each neighbouring AS is
/// found first (MED compared within the AS), then those winners are ranked, so the result
/// does not depend on the order paths arrived in (MED makes the plain comparison
/// intransitive). Returns how many leading paths form the multipath set.
pub(crate) fn rank(paths: &mut [Path]) -> usize {
    if paths.len() > 1 {
        // Within one neighbouring AS the comparison is a total order; sorting by (AS, path)
        // puts each AS's best first in its run.
        paths.sort_by(|a, b| {
            neighbour_as(a)
                .cmp(&neighbour_as(b))
                .then_with(|| compare(a, b))
        });
        let mut winners: Vec<usize> = Vec::new();
        for i in 0..paths.len() {
            if i == 0 || neighbour_as(&paths[i]) != neighbour_as(&paths[i - 1]) {
                winners.push(i);
            }
        }
        let best = winners
            .iter()
            .copied()
            .min_by(|&x, &y| compare(&paths[x], &paths[y]))
            .unwrap_or(0);
        paths.swap(0, best);
        // The rest only matters for the multipath set and for display: best first is enough,
        // but keep a stable order behind it.
        let (head, tail) = paths.split_at_mut(1);
        tail.sort_by(|a, b| {
            let worse = |p: &Path| compare_multipath(&head[0], p) != Ordering::Equal;
            worse(a).cmp(&worse(b)).then_with(|| compare(a, b))
        });
    }
    multipath(paths)
}

/// How many leading paths of ranked `paths` form the multipath set.
pub(crate) fn multipath(paths: &[Path]) -> usize {
    match paths.first() {
        None => 0,
        Some(best) => {
            1 + paths[1..]
                .iter()
                .take_while(|p| compare_multipath(best, p) == Ordering::Equal)
                .count()
        }
    }
}
