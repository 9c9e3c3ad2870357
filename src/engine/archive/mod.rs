//! Export and import: snapshots to and from gzip tar archives in the layout of the old nightly
//! backups, and the retention of those archives on disk. One concept a file: `export` walks a
//! snapshot into tar entries and `export_file` puts the archive on disk atomically (with the
//! `latest` link); `tar_writer` writes GNU tar records, `pax` encodes and decodes PAX records,
//! `name` turns snapshot times into archive names and back, and `gzip_pipe` runs gzip or
//! gunzip on its own thread behind a bounded channel. `import` drives an import into a
//! snapshot, `import_entry` turns each tar entry into a node with saved content, and
//! `import_tree` assembles those nodes and saves the trees bottom-up. `prune` deletes old
//! archives as the old tool's retention did.
//!
//! It reads snapshots through the engine (`load_tree`, the engine's blob reader) and saves
//! through the engine's saver; it never parses arguments.

pub mod export;
mod export_file;
mod gzip_pipe;
pub mod import;
mod import_entry;
mod import_tree;
mod name;
mod pax;
pub mod prune;
mod tar_writer;
