//! opencode-addons core: a memory-bounded event ring and a crash-safe JSONL store.
//!
//! The pure-Rust modules know nothing about Python; `python.rs` (feature `python`) is the only
//! file that does.

#[cfg(feature = "python")]
mod python;
