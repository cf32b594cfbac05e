//! `BlockPreparer`: the next ring block, mapped and faulted in ahead on another thread.
//!
//! A growing ring opens a fresh 256 KiB block every few hundred records. Faulting a block's
//! pages in (`MAP_POPULATE`, in `block.rs`) is kernel work, about 2 µs a page in a VM, which is
//! a tenth of an append's time until the ring is full and reuses its own blocks. With a preparer,
//! a helper thread makes the next block while the current one fills, and the appending thread
//! takes it ready. It never waits for one: a block that is not ready yet is made in place, and
//! the prepared one is used for the block after. One block is asked for at a time (the ring
//! counts it in its memory), and a ring that has a spare block of its own asks for none; a batch
//! known to be coming (`request_many`) has the blocks it will fill asked for at once, so that
//! they are made while the batch is encoded and written; a store asks after each batch for the
//! blocks of a next one of its size (`Store::append_many`).

use std::collections::VecDeque;
use std::sync::mpsc::{self, TryRecvError};
use std::thread::JoinHandle;

use crate::block::BlockBuf;
use crate::fork;

pub(crate) struct BlockPreparer {
    requests: Option<mpsc::Sender<usize>>,
    /// Blocks made (None: the kernel refused the memory).
    ready: mpsc::Receiver<Option<BlockBuf>>,
    /// The capacities of the blocks asked for and not taken yet, in order.
    pending: VecDeque<usize>,
    /// Blocks made here that the ring took (for tests: that made blocks are used).
    #[cfg(test)]
    taken: u64,
    handle: Option<JoinHandle<()>>,
    /// The fork generation the thread runs in (a fork child has no such thread).
    started_in: u64,
}

impl BlockPreparer {
    /// None if the thread cannot be started (the ring then makes every block itself).
    pub(crate) fn start() -> Option<Self> {
        let (requests, inbox) = mpsc::channel::<usize>();
        let (made, ready) = mpsc::channel::<Option<BlockBuf>>();
        let handle = std::thread::Builder::new()
            .name("opencode-addons-ring-blocks".into())
            .stack_size(64 << 10)
            .spawn(move || {
                for capacity in inbox {
                    if made.send(BlockBuf::with_capacity(capacity)).is_err() {
                        return;
                    }
                }
            })
            .ok()?;
        Some(Self {
            requests: Some(requests),
            ready,
            pending: VecDeque::new(),
            #[cfg(test)]
            taken: 0,
            handle: Some(handle),
            started_in: fork::generation(),
        })
    }

    /// Asks for a block of `capacity` bytes, unless one is asked for already.
    pub(crate) fn request(&mut self, capacity: usize) {
        self.request_many(capacity, 1);
    }

    /// Has `count` blocks of `capacity` bytes asked for, counting those asked for already.
    pub(crate) fn request_many(&mut self, capacity: usize, count: usize) {
        if fork::forked_since(self.started_in) {
            return;
        }
        while self.pending.len() < count {
            let sent = self
                .requests
                .as_ref()
                .is_some_and(|requests| requests.send(capacity).is_ok());
            if !sent {
                return;
            }
            self.pending.push_back(capacity);
        }
    }

    /// The block asked for, if it is made and holds `size` bytes; never waits.
    pub(crate) fn take(&mut self, size: usize) -> Option<BlockBuf> {
        if *self.pending.front()? < size {
            return None;
        }
        match self.ready.try_recv() {
            Ok(block) => {
                self.pending.pop_front();
                #[cfg(test)]
                {
                    self.taken += u64::from(block.is_some());
                }
                block
            }
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => {
                self.pending.clear();
                None
            }
        }
    }

    /// Blocks made here that the ring took.
    #[cfg(test)]
    pub(crate) fn taken(&self) -> u64 {
        self.taken
    }

    /// How many blocks are asked for (made or about to be).
    #[cfg(test)]
    pub(crate) fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Memory of the blocks asked for (made or about to be).
    pub(crate) fn pending_bytes(&self) -> usize {
        self.pending
            .iter()
            .map(|&capacity| BlockBuf::mapped_size(capacity).unwrap_or(0))
            .sum()
    }
}

impl Drop for BlockPreparer {
    fn drop(&mut self) {
        if fork::forked_since(self.started_in) {
            // A fork child: a block the thread made stays with its channel, unmapped at exit.
            fork::abandon_channels(self.requests.take(), &mut self.ready);
        } else {
            // Closing the channel ends the thread's loop; a block it made and nobody took is
            // unmapped with the receiver.
            self.requests.take();
        }
        fork::join_helper(self.handle.take(), self.started_in);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_for(preparer: &mut BlockPreparer, size: usize) -> BlockBuf {
        for _ in 0..10_000 {
            if let Some(block) = preparer.take(size) {
                return block;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        panic!("the prepared block never came");
    }

    #[test]
    fn prepares_one_block_at_a_time_and_never_waits() {
        let mut preparer = BlockPreparer::start().unwrap();
        assert!(preparer.take(1).is_none(), "nothing asked for");
        assert_eq!(preparer.pending_bytes(), 0);
        preparer.request(10_000);
        preparer.request(50_000); // one at a time: ignored
        assert_eq!(preparer.pending_bytes(), 12_288);
        assert!(preparer.take(20_000).is_none(), "too small for the record");
        let mut block = wait_for(&mut preparer, 10_000);
        assert_eq!((block.capacity(), block.len()), (10_000, 0));
        assert!(block.push(&[7u8; 10_000]));
        assert_eq!((preparer.pending_bytes(), preparer.taken()), (0, 1));
        assert!(preparer.take(1).is_none(), "taken already");
    }

    #[test]
    fn prepares_the_blocks_of_a_batch_in_order() {
        let mut preparer = BlockPreparer::start().unwrap();
        preparer.request(4096);
        preparer.request_many(8192, 3); // two more: one is asked for already
        assert_eq!(preparer.pending_bytes(), 4096 + 2 * 8192);
        preparer.request(4096); // asked for already
        assert_eq!(preparer.pending_bytes(), 4096 + 2 * 8192);
        let capacities: Vec<usize> = (0..3)
            .map(|_| wait_for(&mut preparer, 1).capacity())
            .collect();
        assert_eq!(capacities, [4096, 8192, 8192]);
        assert_eq!((preparer.pending_bytes(), preparer.taken()), (0, 3));
    }

    #[test]
    fn dropping_with_a_block_made_and_not_taken_ends_the_thread() {
        let mut preparer = BlockPreparer::start().unwrap();
        preparer.request(4096);
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(preparer);
    }
}
