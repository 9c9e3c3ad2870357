//! The file system side: turning what is on disk into tree nodes (metadata, xattrs, symlink
//! targets) and turning nodes back into files, directories, links and special files.
//!
//! Restore never follows a symlink it did not expect: files are opened with `O_NOFOLLOW`,
//! directories are checked not to be symlinks, and names are checked before they are joined.

pub mod meta;
pub mod write;
