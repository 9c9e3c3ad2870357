//! A file of a snapshot as a `Read`: its data blobs loaded in order, [`BLOBS_IN_FLIGHT`] at a
//! time in parallel on rayon, each verified by the repository as it is loaded.
//!
//! Export hands it to tar, which has already written the file's size into the header, so the
//! reader checks that the blobs add up to exactly that size and calls a difference corruption.
//! The engine error behind a failed read is kept ([`BlobReader::take_failure`]), because tar
//! only passes on an `io::Error`.

use std::collections::VecDeque;
use std::io::{self, Read};

use rayon::prelude::*;

use super::{EngineError, Progress, display_bytes};
use crate::catalog::Catalog;
use crate::id::BlobId;
use crate::repo::{RepoError, Repository};

/// Blobs of one file loaded and verified in parallel.
const BLOBS_IN_FLIGHT: usize = 8;

/// Load and verify one data blob.
pub(super) fn load_data(
    repo: &Repository,
    catalog: &Catalog,
    id: &BlobId,
) -> Result<Vec<u8>, EngineError> {
    let loc = catalog.blob_location(id)?.ok_or_else(|| {
        RepoError::corrupt(
            format!("blob {id}"),
            "not in the index (run `coffer check`)",
        )
    })?;
    Ok(repo.load_blob(&loc)?)
}

/// A file's content as a `Read`: its blobs loaded in order, a window at a time, checked to
/// add up to the size the tar header announced.
pub(super) struct BlobReader<'a> {
    repo: &'a Repository,
    catalog: &'a Catalog,
    progress: &'a Progress,
    ids: &'a [BlobId],
    next: usize,
    ready: VecDeque<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    expected: u64,
    produced: u64,
    /// The file's path in the snapshot, for errors.
    path: &'a [u8],
    /// The engine error behind an `io::Error` returned to tar.
    failure: Option<EngineError>,
    /// Blobs already read (a window of a remote export), used before loading.
    cache: Option<&'a std::collections::HashMap<BlobId, Vec<u8>>>,
}

impl<'a> BlobReader<'a> {
    /// The content made of the blobs `ids`, which must hold `expected` bytes; `path` names the
    /// file in errors.
    pub(super) fn new(
        repo: &'a Repository,
        catalog: &'a Catalog,
        progress: &'a Progress,
        ids: &'a [BlobId],
        expected: u64,
        path: &'a [u8],
    ) -> Self {
        Self {
            repo,
            catalog,
            progress,
            ids,
            next: 0,
            ready: VecDeque::new(),
            cur: Vec::new(),
            pos: 0,
            expected,
            produced: 0,
            path,
            failure: None,
            cache: None,
        }
    }

    /// Take blobs from `cache` when they are there.
    pub(super) fn with_cache(
        mut self,
        cache: &'a std::collections::HashMap<BlobId, Vec<u8>>,
    ) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The engine error behind the last failed read, if a read failed.
    pub(super) fn take_failure(&mut self) -> Option<EngineError> {
        self.failure.take()
    }

    fn fail(&mut self, e: EngineError) -> io::Error {
        let err = io::Error::other(e.to_string());
        self.failure = Some(e);
        err
    }

    fn fail_size(&mut self, msg: String) -> io::Error {
        let object = format!("file {}", display_bytes(self.path));
        self.fail(EngineError::Repo(RepoError::corrupt(object, msg)))
    }

    fn next_blob(&mut self) -> Result<Option<Vec<u8>>, EngineError> {
        if self.ready.is_empty()
            && let Some(cache) = self.cache
            && let Some(blob) = self.ids.get(self.next).and_then(|id| cache.get(id))
        {
            self.next += 1;
            return Ok(Some(blob.clone()));
        }
        if self.ready.is_empty() && self.next < self.ids.len() {
            let end = (self.next + BLOBS_IN_FLIGHT).min(self.ids.len());
            let window = &self.ids[self.next..end];
            let (repo, catalog) = (self.repo, self.catalog);
            let loaded: Vec<Result<Vec<u8>, EngineError>> = if window.len() == 1 {
                vec![load_data(repo, catalog, &window[0])]
            } else {
                window
                    .par_iter()
                    .map(|id| load_data(repo, catalog, id))
                    .collect()
            };
            for blob in loaded {
                self.ready.push_back(blob?);
            }
            self.next = end;
        }
        Ok(self.ready.pop_front())
    }
}

impl Read for BlobReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.next_blob() {
                Ok(Some(blob)) => {
                    self.progress.add_bytes(blob.len() as u64);
                    self.cur = blob;
                    self.pos = 0;
                }
                Ok(None) if self.produced == self.expected => return Ok(0),
                Ok(None) => {
                    let msg = format!(
                        "its blobs hold {} bytes, the tree says {}",
                        self.produced, self.expected
                    );
                    return Err(self.fail_size(msg));
                }
                Err(e) => return Err(self.fail(e)),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        if self.produced + n as u64 > self.expected {
            let msg = format!("its blobs hold more than the {} bytes", self.expected);
            return Err(self.fail_size(msg));
        }
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        self.produced += n as u64;
        Ok(n)
    }
}
