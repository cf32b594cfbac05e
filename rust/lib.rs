//! opencode-addons core: a memory-bounded event ring and a crash-safe JSONL store.
//!
//! The pure-Rust modules know nothing about Python; the `python` module (feature `python`) is
//! the only one that does.

mod block;
mod block_preparer;
#[cfg(target_arch = "x86_64")]
mod compress_escape;
mod copy;
#[cfg(all(test, target_arch = "x86_64"))]
mod escape_testing;
pub mod event;
pub mod external;
pub mod fork;
pub mod interner;
pub mod json;
pub mod jsonl;
pub mod keys;
pub mod once;
mod pack;
pub mod query;
pub mod ring;
mod ring_worker;
#[cfg(target_arch = "x86_64")]
mod shuffle_escape;
// Used by the Python layer only; its tests run without it.
#[cfg_attr(not(feature = "python"), allow(dead_code))]
mod side_escape;

#[cfg(feature = "python")]
mod python;
