//! The free blocks of one writer, shared by all its recordings.
//!
//! A recording owns only the block it is filling. When that block is full it goes to the writer
//! and the recording takes the next one from here; the writer puts written blocks back once per
//! batch. Owning a spare per recording instead (the earlier design) kept a second 7.5 KiB block
//! idle in every open recording; the blocks actually in flight are only those of the last
//! batch or two, a few per hundred calls.

use std::sync::Mutex;

use super::writer::Block;

/// Free blocks kept after a batch, at least: enough for a few dozen recordings to roll over
/// before the writer's next batch without allocating.
const MIN_KEEP: usize = 16;

/// Free blocks shared by the recordings of one writer.
#[derive(Debug, Default)]
pub(crate) struct BlockPool {
    free: Mutex<Vec<Box<Block>>>,
}

impl BlockPool {
    /// A block for frames from `first_frame` on. Never waits: when the pool is empty, or the
    /// writer is putting blocks back at this instant (`try_lock` fails), a new block is
    /// allocated; the writer trims the surplus later. Called once per block (0.24 s of a
    /// call), not per frame.
    pub(crate) fn take(&self, first_frame: u64) -> Box<Block> {
        let reused = match self.free.try_lock() {
            Ok(mut free) => free.pop(),
            Err(_) => None,
        };
        let mut block = reused.unwrap_or_else(|| Block::new_boxed(first_frame));
        block.reset(first_frame);
        block
    }

    /// The writer puts back the blocks it has written (`returned` is left empty) and keeps at
    /// most `keep` free (twice what its recent batches needed, at least [`MIN_KEEP`]), so the
    /// blocks a disk stall piled up are freed once the writer has caught up.
    pub(crate) fn put_back(&self, returned: &mut Vec<Box<Block>>, keep: usize) {
        let keep = keep.max(MIN_KEEP);
        let surplus = {
            // A recording that panicked while holding the lock cannot leave the Vec invalid.
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            free.append(returned);
            let kept = free.len().min(keep);
            free.split_off(kept)
        };
        // Freed outside the lock, so that recordings are not kept waiting on `free`.
        drop(surplus);
    }

    /// Free blocks in the pool now (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.free.lock().map_or(0, |free| free.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_come_back_reset_and_a_stall_surplus_is_trimmed() {
        let pool = BlockPool::default();
        let mut block = pool.take(7);
        assert_eq!((block.first_frame, block.len), (7, 0));
        block.len = 100;
        let mut written = vec![block];
        pool.put_back(&mut written, 2);
        assert!(written.is_empty());
        assert_eq!(pool.len(), 1);
        let again = pool.take(40);
        assert_eq!((again.first_frame, again.len), (40, 0));
        assert_eq!(pool.len(), 0);

        // A stall: 100 blocks written in one batch are all kept for the next one...
        let mut written: Vec<_> = (0..100).map(|_| Block::new_boxed(0)).collect();
        pool.put_back(&mut written, 200);
        assert_eq!(pool.len(), 100);
        // ... and once batches are small again, the pool shrinks to what they need.
        pool.put_back(&mut vec![again], 2);
        assert_eq!(pool.len(), MIN_KEEP);
    }
}
