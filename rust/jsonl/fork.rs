//! Fork detection. A child made by `fork()` inherits the store's mapping, its file lock (the
//! same open file) and none of its helper threads; writing, syncing or trimming the file from
//! there would corrupt the parent's log or wait forever on a thread that does not exist. A store
//! remembers the fork generation it was opened in and refuses to act in a later one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

static FORKS: AtomicU64 = AtomicU64::new(0);
static WATCH: Once = Once::new();

extern "C" fn in_child_after_fork() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// The current fork generation (0 in the process that first asked, +1 per fork since).
pub fn generation() -> u64 {
    WATCH.call_once(|| {
        // SAFETY: registers a handler that only bumps an atomic counter.
        unsafe { libc::pthread_atfork(None, None, Some(in_child_after_fork)) };
    });
    FORKS.load(Ordering::Relaxed)
}

/// Whether this process was forked since `opened_in`.
pub fn forked_since(opened_in: u64) -> bool {
    FORKS.load(Ordering::Relaxed) != opened_in
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forked_child_sees_a_new_generation() {
        let opened_in = generation();
        assert!(!forked_since(opened_in));
        // SAFETY: the child only reads an atomic and exits without running destructors.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = if forked_since(opened_in) { 0 } else { 1 };
            // SAFETY: leaving the child at once, as after any fork in a threaded program.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for the child we made.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert!(!forked_since(opened_in));
    }
}
