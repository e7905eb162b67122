//! What each peer still has to be sent, without a copy of the table per peer.
//!
//! Every change of a destination's best path is appended, as the destination's slot number,
//! to one [`Log`] that all peers read, each from its own cursor. A destination already in
//! the log where no peer has read yet is not appended again, so changes coalesce. A peer
//! that comes up (or asks for a refresh) first walks every slot of the table, then reads
//! the log from where it stood when the walk began. What a peer holds is one bit per slot
//! ([`Bits`]), so that it is sent a withdrawal only for what it was sent.

use crate::prefix::Family;
use std::collections::VecDeque;

/// Marks a destination not in the log.
pub(super) const NEVER: u32 = u32::MAX;

/// The changes of best paths, as slot numbers, in order.
#[derive(Debug, Default)]
pub(super) struct Log {
    entries: VecDeque<u32>,
    /// Position of `entries[0]`.
    base: u64,
    /// The furthest any peer has read: entries from here on are unread by every peer.
    read_max: u64,
}

impl Log {
    /// The position the next entry gets.
    pub(super) fn end(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn get(&self, position: u64) -> Option<u32> {
        let i = usize::try_from(position.checked_sub(self.base)?).ok()?;
        self.entries.get(i).copied()
    }

    /// Appends a slot; returns its position as a destination keeps it: the low 32 bits,
    /// which identify it in the log's window (never 2^32 entries long: 16 GiB).
    pub(super) fn push(&mut self, slot: u32) -> u32 {
        if self.end() as u32 == NEVER {
            // A position the destinations cannot name: an entry of no slot.
            self.entries.push_back(NEVER);
        }
        let position = self.end() as u32;
        self.entries.push_back(slot);
        position
    }

    /// The full position of a destination's entry; `None` for [`NEVER`]. Only meaningful
    /// while the entry is in the log, which [`Log::before`] lets the table ensure.
    pub(super) fn slot_position(&self, queued: u32) -> Option<u64> {
        if queued == NEVER {
            return None;
        }
        let back = (self.end() as u32).wrapping_sub(queued);
        self.end().checked_sub(u64::from(back))
    }

    /// True when the entry at `queued` is still ahead of every peer's cursor: a change of
    /// its destination needs no new entry.
    pub(super) fn unread(&self, queued: u32) -> bool {
        self.slot_position(queued)
            .is_some_and(|p| p >= self.read_max && p >= self.base)
    }

    /// The entries before `position`, with their positions.
    pub(super) fn before(&self, position: u64) -> impl Iterator<Item = (u64, u32)> + '_ {
        let n = usize::try_from(position.saturating_sub(self.base)).unwrap_or(usize::MAX);
        (self.base..).zip(self.entries.iter().copied()).take(n)
    }

    /// A peer's cursor reached `position`.
    pub(super) fn read_to(&mut self, position: u64) {
        self.read_max = self.read_max.max(position);
    }

    /// Forgets the entries before `position` (every cursor is past them).
    pub(super) fn forget_before(&mut self, position: u64) {
        let n = usize::try_from(position.saturating_sub(self.base))
            .unwrap_or(usize::MAX)
            .min(self.entries.len());
        self.entries.drain(..n);
        self.base += n as u64;
        if self.entries.capacity() > 4 * self.entries.len().max(1024) {
            self.entries.shrink_to(2 * self.entries.len());
        }
    }
}

/// One bit per slot.
#[derive(Debug, Default, Clone)]
pub(super) struct Bits(Vec<u64>);

impl Bits {
    /// Sets every bit set in `other`.
    pub(super) fn union(&mut self, other: &Bits) {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (w, o) in self.0.iter_mut().zip(&other.0) {
            *w |= o;
        }
    }

    pub(super) fn get(&self, i: u32) -> bool {
        self.0
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Sets bit `i`; true when it was clear.
    pub(super) fn set(&mut self, i: u32) -> bool {
        let w = (i / 64) as usize;
        if self.0.len() <= w {
            self.0.resize(w + 1, 0);
        }
        let was = self.0[w] & (1 << (i % 64)) != 0;
        self.0[w] |= 1 << (i % 64);
        !was
    }

    /// Clears bit `i`; true when it was set.
    pub(super) fn clear(&mut self, i: u32) -> bool {
        let was = self.get(i);
        if let Some(w) = self.0.get_mut((i / 64) as usize) {
            *w &= !(1 << (i % 64));
        }
        was
    }

    /// The set bits, in order.
    pub(super) fn ones(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &word)| {
            (0..64u32)
                .filter(move |b| word & (1 << b) != 0)
                .map(move |b| w as u32 * 64 + b)
        })
    }
}

/// Where a peer stands in the table and the log.
#[derive(Debug)]
pub(super) struct Feed {
    /// The next log position to read.
    pub(super) cursor: u64,
    /// The next slot of a table walk (the initial table, or a refresh), done before the log.
    pub(super) walk: Option<u32>,
    /// End-of-RIB markers to send when the walk is done (only after the initial table).
    pub(super) end_of_rib: Vec<Family>,
    /// Slots whose destination the peer was sent (and not withdrawn).
    pub(super) sent: Bits,
    /// Caught up, waiting to be woken by the next change.
    pub(super) idle: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_unread_until_a_cursor_passes_it() {
        let mut log = Log::default();
        let a = log.push(7);
        assert!(log.unread(a));
        log.read_to(u64::from(a) + 1);
        assert!(!log.unread(a));
        assert!(!log.unread(NEVER));
    }

    #[test]
    fn positions_past_32_bits_are_found_again() {
        let start = u64::from(u32::MAX) - 2;
        let mut log = Log {
            base: start,
            read_max: start,
            ..Log::default()
        };
        let a = log.push(1);
        let b = log.push(2);
        let c = log.push(3);
        assert_eq!(log.slot_position(a), Some(start));
        assert_ne!(c, NEVER, "the position 2^32 - 1 is skipped");
        assert_eq!(log.slot_position(c), Some(start + 3));
        assert_eq!(log.get(u64::from(u32::MAX)), Some(NEVER));
        assert!(log.unread(b) && log.unread(c));
    }

    #[test]
    fn forgotten_entries_keep_the_positions_of_the_rest() {
        let mut log = Log::default();
        for slot in 0..10 {
            log.push(slot);
        }
        log.forget_before(4);
        assert_eq!(
            (log.get(3), log.get(4), log.get(9)),
            (None, Some(4), Some(9))
        );
        assert_eq!(log.end(), 10);
    }

    #[test]
    fn bits_report_their_changes_and_list_the_set_ones() {
        let mut bits = Bits::default();
        assert!(bits.set(70));
        assert!(!bits.set(70));
        assert!(bits.set(3));
        assert_eq!(bits.ones().collect::<Vec<_>>(), vec![3, 70]);
        assert!(bits.clear(70));
        assert!(!bits.clear(70));
        assert!(!bits.clear(5000));
    }
}
