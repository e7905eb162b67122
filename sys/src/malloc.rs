//! The C allocator's handling of large blocks, and its number of arenas.
//!
//! glibc serves blocks above a threshold with their own mappings, so that freeing one
//! returns it to the system and growing one is a `mremap`, not a copy. The threshold moves
//! up (to 32 MiB) each time such a block is freed, after which large tables grow inside the
//! heap: each doubling copies, and the old copy stays resident until the heap above it is
//! free. A routing table that grows to a million routes then holds its growth's leftovers
//! (measured: 88 instead of 62 bytes per path, bgp/benches/rib). A fixed threshold keeps
//! every large block in its own mapping.

/// Limits the allocator to `arenas` heaps (glibc's `M_ARENA_MAX`). glibc gives threads
/// up to eight arenas per CPU; memory freed in one is not reused by another, so a process
/// whose work moves between a few threads (a tokio runtime) holds more than it uses
/// (measured: 689 against 504 bytes per path, 200 sessions of 64 routes, `tabby bench rib`).
/// Returns false when the allocator refused (or is not glibc's).
pub fn limit_arenas(arenas: usize) -> bool {
    limit_arenas_impl(arenas)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_arenas_impl(arenas: usize) -> bool {
    let n = libc::c_int::try_from(arenas.max(1)).unwrap_or(libc::c_int::MAX);
    #[allow(unsafe_code)]
    // SAFETY: as in map_large_blocks_impl: a tunable, no memory touched.
    let rc = unsafe { libc::mallopt(libc::M_ARENA_MAX, n) };
    rc == 1
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_arenas_impl(_arenas: usize) -> bool {
    false
}

/// The threshold tabby sets: small enough for every growing table, large enough that the
/// many small allocations of sessions stay in the heap.
pub const LARGE_BLOCK: usize = 128 * 1024;

/// Serves blocks of at least [`LARGE_BLOCK`] bytes from their own mappings, always (glibc's
/// `M_MMAP_THRESHOLD`; setting it also stops glibc from raising it). Returns false when the
/// allocator refused (or is not glibc's, where this does nothing).
pub fn map_large_blocks() -> bool {
    map_large_blocks_impl()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn map_large_blocks_impl() -> bool {
    let threshold = libc::c_int::try_from(LARGE_BLOCK).unwrap_or(libc::c_int::MAX);
    #[allow(unsafe_code)]
    // SAFETY: mallopt only sets a tunable of the allocator; any value is accepted or
    // refused with 0, and no memory is touched.
    let rc = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, threshold) };
    rc == 1
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn map_large_blocks_impl() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_accepts_the_threshold() {
        assert!(map_large_blocks());
    }

    #[test]
    fn glibc_accepts_an_arena_limit() {
        assert!(limit_arenas(2));
    }
}
