//! Crash points for the kill tests: with `OPENCODE_ADDONS_CRASH_AT=<point>[:<n>]` in the
//! environment, the process sends itself SIGKILL the `n`-th time (default the first) it reaches
//! `<point>` of sealing, carrying forward, compressing or deleting a segment. Unset (always, outside
//! the tests) a crash point is one load of an already-initialized value.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The environment variable the kill tests set.
pub const ENV: &str = "OPENCODE_ADDONS_CRASH_AT";

struct Target {
    point: String,
    nth: u64,
    seen: AtomicU64,
}

fn target() -> Option<&'static Target> {
    static TARGET: OnceLock<Option<Target>> = OnceLock::new();
    TARGET
        .get_or_init(|| {
            let value = std::env::var(ENV).ok()?;
            let (point, nth) = match value.rsplit_once(':') {
                Some((point, nth)) => (point.to_string(), nth.parse().ok()?),
                None => (value, 1),
            };
            Some(Target {
                point,
                nth,
                seen: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// SIGKILLs this process here if the environment asks for it.
pub fn point(name: &str) {
    if let Some(target) = target() {
        if target.point == name && target.seen.fetch_add(1, Ordering::SeqCst) + 1 == target.nth {
            // SAFETY: kill(getpid(), SIGKILL) has no memory-safety preconditions.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }
}
