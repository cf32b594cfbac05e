//! The background compressor of compressing rings: one thread for the process, started on first
//! use and running at a lower priority, packing sealed blocks so the appending thread only hands
//! them over.
//!
//! A job carries the block's bytes (shared with the ring, which keeps reading them meanwhile),
//! the ring's codec and its inbox; the packed result goes to the inbox and the ring takes it in
//! at its next append or read. A ring dropped meanwhile just never collects it. In a child made
//! by `fork()` the thread does not exist: `submit` refuses there (the ring then packs in the
//! appending thread) unless the child started its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, OnceLock};

use crate::block::BlockBuf;
use crate::fork;
use crate::pack::{Codec, Packed, Piece, Work};

/// A sealed block's bytes, shared by the ring (which reads them until the packed form comes
/// back) and the job packing them.
pub(crate) struct Sealed {
    pub bytes: BlockBuf,
    claimed: AtomicBool,
}

impl Sealed {
    pub(crate) fn new(bytes: BlockBuf) -> Self {
        Self {
            bytes,
            claimed: AtomicBool::new(false),
        }
    }

    /// Whoever claims a block first packs it (the background thread or `compress_pending`);
    /// false if it was already claimed.
    pub(crate) fn claim(&self) -> bool {
        !self.claimed.swap(true, Ordering::AcqRel)
    }
}

/// A sealed block to pack.
pub(crate) struct Job {
    pub serial: u64,
    pub sealed: Arc<Sealed>,
    pub pieces: Vec<Piece>,
    /// Absolute index of the block's first record in `pieces`.
    pub first: u64,
    pub codec: Arc<Codec>,
    pub inbox: Arc<Inbox>,
}

/// A packed block (`None`: not worth packing, keep it raw), by the block's serial number.
pub(crate) struct Done {
    pub serial: u64,
    pub packed: Option<Packed>,
}

/// Where a ring's finished jobs wait for it.
#[derive(Default)]
pub(crate) struct Inbox {
    ready: AtomicBool,
    done: Mutex<Vec<Done>>,
}

impl Inbox {
    fn deliver(&self, done: Done) {
        let mut list = self.done.lock().unwrap_or_else(|p| p.into_inner());
        list.push(done);
        self.ready.store(true, Ordering::Release);
    }

    /// Finished jobs, if any; never blocks (an inbox locked by a thread that no longer exists,
    /// in a fork child, just looks empty).
    pub(crate) fn take(&self) -> Vec<Done> {
        if !self.ready.load(Ordering::Acquire) {
            return Vec::new();
        }
        match self.done.try_lock() {
            Ok(mut list) => {
                self.ready.store(false, Ordering::Release);
                std::mem::take(&mut *list)
            }
            Err(_) => Vec::new(),
        }
    }
}

struct Worker {
    jobs: Sender<Job>,
    generation: u64,
}

static WORKER: OnceLock<Option<Worker>> = OnceLock::new();

fn start() -> Option<Worker> {
    let (jobs, queue) = channel::<Job>();
    let generation = fork::generation();
    std::thread::Builder::new()
        .name("oa-ring-compress".into())
        .spawn(move || {
            lower_priority();
            let mut work = Work::new();
            for job in queue {
                if Arc::strong_count(&job.sealed) == 1 || !job.sealed.claim() {
                    // The ring let go of the block (evicted, or the ring is gone), or
                    // `compress_pending` packs it: nothing to do.
                    continue;
                }
                let packed = work.as_mut().and_then(|work| {
                    job.codec
                        .pack(work, &job.sealed.bytes, &job.pieces, job.first)
                });
                let Job {
                    serial,
                    sealed,
                    inbox,
                    ..
                } = job;
                // Let go of the bytes first, so the ring can reuse the buffer once it takes the
                // result in.
                drop(sealed);
                inbox.deliver(Done { serial, packed });
            }
        })
        .ok()?;
    Some(Worker { jobs, generation })
}

/// Makes this thread yield to the process's other threads (nice 10, Linux sets it per thread):
/// compression uses idle CPU instead of the host's. A busy machine delays it, which only keeps
/// blocks uncompressed (no larger than in a ring that does not compress) until it catches up.
fn lower_priority() {
    // SAFETY: plain system calls on this thread's own id; failure leaves the priority as it is.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}

/// Hands `job` to the background thread; gives it back if there is none to take it (it could
/// not be started, or this is a fork child of the process that started it).
pub(crate) fn submit(job: Job) -> Result<(), Job> {
    let Some(worker) = WORKER.get_or_init(start) else {
        return Err(job);
    };
    if fork::forked_since(worker.generation) {
        return Err(job);
    }
    worker.jobs.send(job).map_err(|failed| failed.0)
}
