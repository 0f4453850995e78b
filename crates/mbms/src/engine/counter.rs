//! MUK replay counters under one persisted high-water mark (see
//! [`super::store`]).
//!
//! The MGV-F needs each MUK's counters to increase (`PROFILE.md` section 7);
//! they need not be consecutive nor differ between MUKs. So every UE keeps
//! its next counter in memory, all of them start at the same floor, and one
//! engine-wide mark bounds every counter ever put in a message: before a
//! message uses counter `c`, `c <= mark` is durable. After a restart every UE
//! starts above the persisted mark, so no (MUK, counter) pair repeats. A
//! rotation of a million UEs needs one store write (each UE's counter moves by
//! one), not one per MUK.

use super::store::EngineStore;
use super::EngineError;

#[derive(Debug)]
pub(crate) struct CounterMark {
    block: u32,
    /// The persisted mark: every counter handed out is at most this.
    reserved: u32,
    /// Where UEs registered in this run start.
    floor: u32,
}

impl CounterMark {
    /// Read the persisted mark.
    pub(crate) fn load(store: &impl EngineStore, block: u32) -> Result<Self, EngineError> {
        let reserved = store.counter_reserved()?.unwrap_or(0);
        Ok(CounterMark {
            block: block.max(1),
            reserved,
            floor: reserved.saturating_add(1),
        })
    }

    /// The first counter of a UE new to this run.
    pub(crate) fn floor(&self) -> u32 {
        self.floor
    }

    /// Make every counter up to `highest` usable (persisting a new mark, a
    /// block ahead, when needed). `None` means beyond `u32::MAX`.
    pub(crate) fn ensure(
        &mut self,
        store: &mut impl EngineStore,
        highest: Option<u32>,
    ) -> Result<(), EngineError> {
        let Some(highest) = highest else {
            return Err(EngineError::CounterExhausted);
        };
        if highest <= self.reserved {
            return Ok(());
        }
        let upto = highest.max(self.reserved.saturating_add(self.block));
        let upto = upto.max(highest);
        let got = store.reserve_counter_block(self.block, upto)?;
        self.reserved = got.max(upto);
        Ok(())
    }

    /// Reserve a fresh block above every mark any engine on the store
    /// reserved so far, and make its first counter the floor: UEs taken
    /// over from another BM-SC instance (which may have used counters up to
    /// its own mark) start there. Returns the new floor.
    pub(crate) fn fresh_block(&mut self, store: &mut impl EngineStore) -> Result<u32, EngineError> {
        let upto = self
            .reserved
            .checked_add(self.block)
            .ok_or(EngineError::CounterExhausted)?;
        let got = store.reserve_counter_block(self.block, upto)?.max(upto);
        self.reserved = got;
        self.floor = self.floor.max(got - self.block + 1);
        Ok(self.floor)
    }

    /// Whether `c` may be put in a message.
    pub(crate) fn covers(&self, c: u32) -> bool {
        c <= self.reserved && c >= 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::store::MemoryStore;

    #[test]
    fn marks_are_persisted_before_use_and_resume_after_restart() {
        let mut store = MemoryStore::new();
        let mut m = CounterMark::load(&store, 4).unwrap();
        assert_eq!(m.floor(), 1);
        assert!(!m.covers(1));
        m.ensure(&mut store, Some(1)).unwrap();
        assert_eq!(store.counter_mark(), Some(4));
        assert!(m.covers(4) && !m.covers(5));
        // Within the block: no write.
        let writes = store.writes();
        m.ensure(&mut store, Some(3)).unwrap();
        assert_eq!(store.writes(), writes);
        // Beyond it: at least a block ahead, at least what is needed.
        m.ensure(&mut store, Some(100)).unwrap();
        assert_eq!(store.counter_mark(), Some(100));
        m.ensure(&mut store, Some(101)).unwrap();
        assert_eq!(store.counter_mark(), Some(104));
        // Crash: the next run starts above the mark.
        let m = CounterMark::load(&store, 4).unwrap();
        assert_eq!(m.floor(), 105);
        // A failing store hands out nothing beyond the persisted mark.
        let mut m = CounterMark::load(&store, 4).unwrap();
        store.set_fail_writes(true);
        assert!(matches!(
            m.ensure(&mut store, Some(105)),
            Err(EngineError::Store(_))
        ));
        assert!(!m.covers(105));
        assert!(matches!(
            m.ensure(&mut store, None),
            Err(EngineError::CounterExhausted)
        ));
    }

    #[test]
    fn a_fresh_block_starts_above_the_persisted_mark() {
        let mut store = MemoryStore::new();
        let mut m = CounterMark::load(&store, 10).unwrap();
        m.ensure(&mut store, Some(1)).unwrap();
        assert_eq!(store.counter_mark(), Some(10));
        let floor = m.fresh_block(&mut store).unwrap();
        assert_eq!(floor, 11);
        assert_eq!(store.counter_mark(), Some(20));
        assert!(m.covers(20) && !m.covers(21));
        assert_eq!(m.floor(), 11);
    }
}
