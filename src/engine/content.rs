//! Saving a stream's content as data blobs, for backup (a file) and import (a tar entry)
//! alike: read a window, cut it with the repository's chunker, save the chunks (on rayon when
//! there are several), keep the uncut tail for the next window, until the end of the stream.
//!
//! One loop for both, so the same bytes give the same chunks whichever way they come in. The
//! window is at least twice the largest chunk, so the chunker always has a full chunk to cut
//! before the end of the stream. It reads only from the `Read` it is given and writes only
//! through the saver; what a read error means is the caller's to say.

use std::io::{self, Read};

use rayon::prelude::*;

use super::EngineError;
use super::saver::Saver;
use crate::chunker::Chunker;
use crate::format::BlobKind;
use crate::id::BlobId;

/// Bytes read from a stream per chunking window (at least twice the largest chunk).
pub const READ_WINDOW_BYTES: usize = 8 << 20;
/// Smallest buffer a window grows from.
const MIN_BUFFER_BYTES: usize = 4096;

/// The window for `chunker`: [`READ_WINDOW_BYTES`], or twice its largest chunk if more.
pub(crate) fn window_bytes(chunker: &Chunker) -> usize {
    READ_WINDOW_BYTES.max(2 * chunker.max_bytes())
}

/// A buffer for a stream of about `size_hint` bytes: no larger than the stream needs (many
/// small files are read at once), no larger than the window.
pub(crate) fn buffer_for(size_hint: u64, chunker: &Chunker) -> Vec<u8> {
    let hint = usize::try_from(size_hint).unwrap_or(usize::MAX);
    vec![
        0u8;
        hint.saturating_add(1)
            .clamp(MIN_BUFFER_BYTES, window_bytes(chunker))
    ]
}

/// What stopped [`save_content`].
pub(crate) enum ContentError {
    /// Reading the stream failed: a file to skip for backup, a damaged archive for import.
    Read(io::Error),
    /// Saving a chunk failed.
    Save(EngineError),
}

/// Read `r` to its end, cut it into chunks with `chunker` and save each as a data blob.
/// Returns the blob ids in order and the bytes read. `buf` holds the window; it grows, by
/// doubling, up to the window when it is smaller, and may be reused for the next stream.
/// `on_window` is told the bytes of each window once its chunks are saved.
pub(crate) fn save_content(
    saver: &Saver<'_>,
    chunker: &Chunker,
    r: &mut impl Read,
    buf: &mut Vec<u8>,
    mut on_window: impl FnMut(u64),
) -> Result<(Vec<BlobId>, u64), ContentError> {
    let window = window_bytes(chunker);
    let mut filled = 0usize;
    let mut eof = false;
    let mut content = Vec::new();
    let mut size = 0u64;
    loop {
        while !eof && filled < window {
            if filled == buf.len() {
                buf.resize((buf.len() * 2).clamp(MIN_BUFFER_BYTES, window), 0);
            }
            match r.read(&mut buf[filled..]) {
                Ok(0) => eof = true,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ContentError::Read(e)),
            }
        }
        let cut = save_cuts(saver, chunker, &buf[..filled], eof, &mut content)?;
        on_window(cut as u64);
        size += cut as u64;
        buf.copy_within(cut..filled, 0);
        filled -= cut;
        if eof && filled == 0 {
            return Ok((content, size));
        }
    }
}

/// Cut `window` and save its complete chunks, appending their ids to `content`; returns the
/// bytes cut (the rest waits for more of the stream).
fn save_cuts(
    saver: &Saver<'_>,
    chunker: &Chunker,
    window: &[u8],
    eof: bool,
    content: &mut Vec<BlobId>,
) -> Result<usize, ContentError> {
    let cuts = chunker.cuts(window, eof);
    let mut chunks = Vec::with_capacity(cuts.len());
    let mut off = 0;
    for len in cuts {
        chunks.push(&window[off..off + len]);
        off += len;
    }
    // One chunk (most small files) is saved here: handing it to rayon would only add a
    // round trip to the pool.
    if let [chunk] = chunks[..] {
        content.push(
            saver
                .save(BlobKind::Data, chunk)
                .map_err(ContentError::Save)?,
        );
    } else {
        let ids: Result<Vec<BlobId>, EngineError> = chunks
            .par_iter()
            .map(|c| saver.save(BlobKind::Data, c))
            .collect();
        content.extend(ids.map_err(ContentError::Save)?);
    }
    Ok(off)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::engine::saver::run_uploader;
    use crate::repo::tests::memory_repo;

    /// Gives at most 1000 bytes a read, and `Interrupted` every seventh read; fails with
    /// `fail_at` bytes given, if set.
    struct Trickle<'a> {
        data: &'a [u8],
        reads: usize,
        fail_at: Option<usize>,
        given: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            if self.reads.is_multiple_of(7) {
                return Err(io::ErrorKind::Interrupted.into());
            }
            if self.fail_at.is_some_and(|at| self.given >= at) {
                return Err(io::Error::other("disk on fire"));
            }
            let n = out.len().min(1000).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            self.given += n;
            Ok(n)
        }
    }

    fn trickle(data: &[u8], fail_at: Option<usize>) -> Trickle<'_> {
        Trickle {
            data,
            reads: 0,
            fail_at,
            given: 0,
        }
    }

    /// Deterministic bytes that chunk like real content.
    fn noise(len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new()
            .update(b"content test")
            .finalize_xof()
            .fill(&mut out);
        out
    }

    #[test]
    fn windows_chunk_as_the_whole_stream_would() {
        let repo = memory_repo();
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(&dir.path().join("c.sqlite")).unwrap();
        let chunker = repo.chunker();
        // More than two windows, not a whole number of chunks.
        let data = noise(2 * window_bytes(&chunker) + window_bytes(&chunker) / 3 + 1234);
        let mut off = 0;
        let mut expected = Vec::new();
        for len in chunker.cuts(&data, true) {
            expected.push(repo.keys().blob_id(BlobKind::Data, &data[off..off + len]));
            off += len;
        }
        let (saver, rx) = Saver::new(&repo, &catalog);
        let stats = saver.stats.clone();
        std::thread::scope(|scope| {
            let uploader = scope.spawn(|| run_uploader(&repo, &catalog, rx, &stats));
            for mut buf in [buffer_for(0, &chunker), vec![0; window_bytes(&chunker)]] {
                let mut told = 0;
                let r = save_content(&saver, &chunker, &mut trickle(&data, None), &mut buf, |n| {
                    told += n
                });
                let Ok((ids, size)) = r else {
                    panic!("save failed")
                };
                assert_eq!(
                    (ids.len(), size, told),
                    (expected.len(), data.len() as u64, size)
                );
                assert!(ids == expected);
                assert!(buf.len() <= window_bytes(&chunker));
            }
            let mut buf = buffer_for(0, &chunker);
            // In the first window, and in a later one.
            for at in [5000, window_bytes(&chunker) + 5000] {
                let failed = save_content(
                    &saver,
                    &chunker,
                    &mut trickle(&data, Some(at)),
                    &mut buf,
                    |_| {},
                );
                assert!(
                    matches!(failed, Err(ContentError::Read(e)) if e.to_string() == "disk on fire")
                );
            }
            let empty = save_content(&saver, &chunker, &mut trickle(&[], None), &mut buf, |_| {});
            assert!(matches!(empty, Ok((ids, 0)) if ids.is_empty()));
            saver.finish().unwrap();
            uploader.join().unwrap().unwrap();
        });
    }

    #[test]
    fn buffers_fit_the_stream_up_to_a_window() {
        let chunker = memory_repo().chunker();
        let window = window_bytes(&chunker);
        assert_eq!(window, READ_WINDOW_BYTES);
        assert_eq!(buffer_for(0, &chunker).len(), MIN_BUFFER_BYTES);
        assert_eq!(buffer_for(10_000, &chunker).len(), 10_001);
        assert_eq!(buffer_for(u64::MAX, &chunker).len(), window);
    }
}
