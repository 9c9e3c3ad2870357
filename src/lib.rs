//! coffer: content-addressed, deduplicating, encrypted snapshots of directories and Docker
//! volumes.
//!
//! Layers point one way: `cli -> engine -> {repo, catalog, source} -> storage`, and
//! `repo -> {format, crypto, chunker, compress}`. The pure modules (`format`, `crypto`,
//! `chunker`, `compress`) do no I/O.

pub mod catalog;
pub mod chunker;
pub mod cli;
pub mod compress;
pub mod crypto;
pub mod daemon;
pub mod docker;
pub mod engine;
pub mod error;
pub mod format;
pub mod id;
pub mod repo;
pub mod runtime;
pub mod source;
pub mod storage;
