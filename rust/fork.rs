//! Fork detection. A child made by `fork()` inherits the store's mapping, its file lock (the
//! same open file) and none of its helper threads; writing, syncing or trimming the file from
//! there would corrupt the parent's log or wait forever on a thread that does not exist. A store
//! remembers the fork generation it was opened in and refuses to act in a later one. A
//! compressing ring does the same with its background compressor (`ring_worker.rs`): in a later
//! generation it compresses in the appending thread instead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Once;

static FORKS: AtomicU64 = AtomicU64::new(0);
static WATCH: Once = Once::new();

extern "C" fn in_child_after_fork() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// The current fork generation (0 in the process that first asked, +1 per fork since).
pub fn generation() -> u64 {
    WATCH.call_once(|| {
        // SAFETY: the child handler is a plain `extern "C" fn` that only bumps an atomic, which
        // is async-signal-safe as code running in a fork child must be; no pointers are passed.
        unsafe { libc::pthread_atfork(None, None, Some(in_child_after_fork)) };
    });
    FORKS.load(Ordering::Relaxed)
}

/// Whether this process was forked since `opened_in`.
pub fn forked_since(opened_in: u64) -> bool {
    FORKS.load(Ordering::Relaxed) != opened_in
}

/// Waits for a helper thread started in fork generation `started_in` to end (the caller has
/// told it to). In a later generation, a fork child where the thread does not exist, it lets go
/// of the handle instead of waiting forever.
pub fn join_helper(handle: Option<std::thread::JoinHandle<()>>, started_in: u64) {
    let Some(handle) = handle else { return };
    if forked_since(started_in) {
        std::mem::forget(handle);
    } else {
        let _ = handle.join();
    }
}

/// Lets go of a helper thread's channel ends in a fork child, without closing them. The thread
/// is not in the child, and it may have held a channel's lock at the fork, which then stays
/// locked there; closing a channel takes that lock (a child hung so: gdb showed
/// `SyncWaker::disconnect` waiting). What the channels hold stays with them, unfreed.
pub fn abandon_channels<S, R>(sender: Option<Sender<S>>, receiver: &mut Receiver<R>) {
    std::mem::forget(sender);
    let (_, unused) = std::sync::mpsc::channel();
    std::mem::forget(std::mem::replace(receiver, unused));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forked_child_sees_a_new_generation() {
        let opened_in = generation();
        assert!(!forked_since(opened_in));
        // SAFETY: the child only reads an atomic and calls `_exit`, both async-signal-safe, so
        // the other test threads (whose locks it inherits in any state) do not matter.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = if forked_since(opened_in) { 0 } else { 1 };
            // SAFETY: `_exit` is async-signal-safe and runs no destructors or atexit handlers, the
            // only safe way out of a fork child of a threaded program.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: `pid` is the child we made and `status` a live `c_int` waitpid writes into.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert!(!forked_since(opened_in));
    }
}
