//! A consistency check of the table's bookkeeping, for tests and fuzzing.

use super::{Feed, Rib};
use std::net::IpAddr;

impl Rib {
    /// Checks the table's bookkeeping (for tests and fuzzing): every peer's advertised count
    /// matches its bits, the index holds exactly the slots in use, free slots hold nothing
    /// and no peer holds them, and a destination's log position names it.
    #[doc(hidden)]
    pub fn audit(&self) -> Result<(), String> {
        let feeds: Vec<(&IpAddr, &Feed, u64)> = self
            .peers
            .iter()
            .filter_map(|(a, e)| e.feed.as_ref().map(|f| (a, f, e.advertised)))
            .collect();
        if feeds.len() != self.feeds {
            return Err(format!(
                "{} feeds counted, {} exist",
                self.feeds,
                feeds.len()
            ));
        }
        for (address, feed, advertised) in &feeds {
            let ones = feed.sent.ones().count() as u64;
            if ones != *advertised {
                return Err(format!(
                    "{address}: {advertised} advertised, {ones} bits set"
                ));
            }
        }
        let free: std::collections::HashSet<u32> = self.free.iter().copied().collect();
        let (mut live, mut tombstones) = (0, 0);
        for (slot, dest) in self.dests.iter().enumerate() {
            let slot = slot as u32;
            let held = feeds.iter().any(|(_, f, _)| f.sent.get(slot));
            let indexed = self.find(&dest.prefix) == Some(slot);
            if free.contains(&slot) {
                if indexed || !dest.paths.is_empty() || held {
                    return Err(format!("free slot {slot} in use"));
                }
                continue;
            }
            if !indexed {
                return Err(format!("{} (slot {slot}) not in the index", dest.prefix));
            }
            if let Some(p) = self.log.slot_position(dest.queued) {
                if self.log.get(p) != Some(slot) {
                    return Err(format!(
                        "{} (slot {slot}) queued at {p}, not in the log",
                        dest.prefix
                    ));
                }
            }
            live += usize::from(!dest.paths.is_empty());
            tombstones += usize::from(dest.paths.is_empty());
        }
        if live != self.live
            || tombstones != self.tombstones
            || self.index.len() + free.len() != self.dests.len()
        {
            return Err(format!(
                "{live} live ({} counted), {tombstones} without paths ({} counted), {} indexed, \
                 {} free, {} slots",
                self.live,
                self.tombstones,
                self.index.len(),
                free.len(),
                self.dests.len()
            ));
        }
        Ok(())
    }
}
