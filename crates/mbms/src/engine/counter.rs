//! The replay counter of each MUK, reserved in persisted blocks (see
//! [`super::store`]).

use std::collections::HashMap;

use crate::ids::MukId;

use super::store::EngineStore;
use super::EngineError;

#[derive(Clone, Copy, Debug)]
struct Block {
    /// The next counter to hand out.
    next: u64,
    /// The persisted high-water mark: counters up to here may be handed out.
    reserved: u64,
}

/// Per-MUK counters. A counter is handed out only from a block whose upper
/// end the store has already persisted.
#[derive(Debug)]
pub(crate) struct MukCounters {
    block: u32,
    muks: HashMap<MukId, Block>,
}

impl MukCounters {
    pub(crate) fn new(block: u32) -> Self {
        MukCounters {
            block: block.max(1),
            muks: HashMap::new(),
        }
    }

    /// Make sure `n` counters of `muk` can be handed out without touching the
    /// store, persisting a new high-water mark first if needed. On error
    /// nothing changes in memory.
    pub(crate) fn ensure(
        &mut self,
        store: &mut impl EngineStore,
        muk: &MukId,
        n: u32,
    ) -> Result<(), EngineError> {
        let b = match self.muks.get(muk) {
            Some(b) => *b,
            None => {
                let persisted = store.muk_counter_reserved(muk)?;
                let r = u64::from(persisted.unwrap_or(0));
                Block {
                    next: r + 1,
                    reserved: r,
                }
            }
        };
        let n = u64::from(n);
        let available = (b.reserved + 1).saturating_sub(b.next);
        let b = if available >= n {
            b
        } else {
            let want = (b.reserved + u64::from(self.block)).max(b.next - 1 + n);
            let upto = want.min(u64::from(u32::MAX));
            if upto < b.next - 1 + n {
                return Err(EngineError::MukCounterExhausted { muk: muk.clone() });
            }
            // `upto` fits in u32 (capped above).
            store.reserve_muk_counters(muk, upto as u32)?;
            Block {
                next: b.next,
                reserved: upto,
            }
        };
        self.muks.insert(muk.clone(), b);
        Ok(())
    }

    /// Hand out the next counter of `muk`; `ensure` must have made room.
    pub(crate) fn take(&mut self, muk: &MukId) -> Option<u32> {
        let b = self.muks.get_mut(muk)?;
        if b.next > b.reserved {
            return None;
        }
        let c = u32::try_from(b.next).ok()?;
        b.next += 1;
        Some(c)
    }

    /// Allocate one counter (reserving a block first if needed).
    pub(crate) fn allocate(
        &mut self,
        store: &mut impl EngineStore,
        muk: &MukId,
    ) -> Result<u32, EngineError> {
        self.ensure(store, muk, 1)?;
        self.take(muk)
            .ok_or_else(|| EngineError::MukCounterExhausted { muk: muk.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::store::MemoryStore;

    #[test]
    fn blocks_are_persisted_before_use_and_resume_after_restart() {
        let muk = MukId::new("bmsc.home1.net", "x@bsf");
        let mut store = MemoryStore::new();
        let mut c = MukCounters::new(4);
        let mut seen = vec![];
        for _ in 0..6 {
            let v = c.allocate(&mut store, &muk).unwrap();
            assert!(store.high_water(&muk).unwrap() >= v);
            seen.push(v);
        }
        assert_eq!(seen, [1, 2, 3, 4, 5, 6]);
        assert_eq!(store.high_water(&muk), Some(8));
        // Crash: the rest of the block is skipped.
        let mut c = MukCounters::new(4);
        assert_eq!(c.allocate(&mut store, &muk).unwrap(), 9);
        assert_eq!(store.high_water(&muk), Some(12));
        // A failing store hands out nothing beyond the persisted block.
        store.set_fail_writes(true);
        for want in 10..=12 {
            assert_eq!(c.allocate(&mut store, &muk).unwrap(), want);
        }
        assert!(matches!(
            c.allocate(&mut store, &muk),
            Err(EngineError::Store(_))
        ));
        store.set_fail_writes(false);
        assert_eq!(c.allocate(&mut store, &muk).unwrap(), 13);
    }

    #[test]
    fn exhaustion_is_an_error() {
        let muk = MukId::new("bmsc.home1.net", "y@bsf");
        let mut store = MemoryStore::new();
        store.reserve_muk_counters(&muk, u32::MAX - 1).unwrap();
        let mut c = MukCounters::new(32);
        assert_eq!(c.allocate(&mut store, &muk).unwrap(), u32::MAX);
        assert!(matches!(
            c.allocate(&mut store, &muk),
            Err(EngineError::MukCounterExhausted { .. })
        ));
    }
}
