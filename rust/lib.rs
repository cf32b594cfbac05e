//! opencode-addons core: a memory-bounded event ring and a crash-safe JSONL store.
//!
//! The pure-Rust modules know nothing about Python; the `python` module (feature `python`) is
//! the only one that does.

pub mod event;
pub mod interner;
pub mod json;
pub mod jsonl;
pub mod keys;
pub mod query;
pub mod ring;

#[cfg(feature = "python")]
mod python;
