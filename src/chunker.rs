//! Content-defined chunking (FastCDC v2020) over byte slices, with the gear table seeded from a
//! secret so that cut points, and so chunk lengths, cannot be predicted from known content.
//!
//! Pure: the caller owns buffers and I/O. [`Chunker::cuts`] finds the chunk boundaries in a
//! window; when the window does not end the stream the last, unfinished chunk is left for the
//! next window, which gives exactly the chunks of chunking the whole stream at once (a cut
//! depends only on the bytes from the chunk's start to at most `max_bytes` after it).

use fastcdc::v2020::{FastCDC, Normalization};

use crate::format::config::ChunkerParams;

/// A seeded chunker.
#[derive(Clone, Copy, Debug)]
pub struct Chunker {
    params: ChunkerParams,
    seed: u64,
}

impl Chunker {
    /// A chunker with validated parameters and a secret seed.
    pub fn new(params: ChunkerParams, seed: u64) -> Self {
        Self { params, seed }
    }

    /// The largest chunk this chunker emits.
    pub fn max_bytes(&self) -> usize {
        self.params.max_bytes as usize
    }

    /// Lengths of the complete chunks at the start of `window`. With `at_eof` the whole window
    /// is cut; otherwise the trailing chunk is left out unless it is a full `max_bytes` chunk,
    /// and the caller keeps those bytes for the next window. The window should hold at least
    /// `max_bytes` bytes when not at EOF, or no progress is made.
    pub fn cuts(&self, window: &[u8], at_eof: bool) -> Vec<usize> {
        let p = &self.params;
        let mut lens: Vec<usize> = FastCDC::with_level_and_seed(
            window,
            p.min_bytes as usize,
            p.avg_bytes as usize,
            p.max_bytes as usize,
            Normalization::Level1,
            self.seed,
        )
        .map(|c| c.length)
        .collect();
        if !at_eof
            && let Some(&last) = lens.last()
            && last < p.max_bytes as usize
        {
            lens.pop();
        }
        lens
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small() -> ChunkerParams {
        ChunkerParams {
            min_bytes: 256,
            avg_bytes: 1024,
            max_bytes: 4096,
        }
    }

    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn stream_cuts(c: &Chunker, d: &[u8], window: usize) -> Vec<usize> {
        let mut out = vec![];
        let mut start = 0;
        while start < d.len() {
            let end = (start + window).min(d.len());
            let lens = c.cuts(&d[start..end], end == d.len());
            assert!(!lens.is_empty(), "no progress");
            start += lens.iter().sum::<usize>();
            out.extend(lens);
        }
        out
    }

    proptest! {
        #[test]
        fn chunks_cover_input_and_respect_bounds(len in 0usize..60_000, seed in any::<u64>()) {
            let c = Chunker::new(small(), seed);
            let d = data(len, seed);
            let lens = c.cuts(&d, true);
            prop_assert_eq!(lens.iter().sum::<usize>(), len);
            for (i, l) in lens.iter().enumerate() {
                prop_assert!(*l <= 4096);
                prop_assert!(*l >= 256 || i == lens.len() - 1);
            }
        }

        #[test]
        fn windowed_equals_whole(len in 0usize..60_000, window in 4096usize..20_000) {
            let c = Chunker::new(small(), 99);
            let d = data(len, 7);
            prop_assert_eq!(stream_cuts(&c, &d, window), c.cuts(&d, true));
        }

        #[test]
        fn resynchronises_after_an_insert(pos in 0usize..40_000) {
            let c = Chunker::new(small(), 5);
            let d = data(50_000, 3);
            let mut e = d.clone();
            e.splice(pos..pos, *b"inserted bytes");
            let ends = |lens: Vec<usize>| -> Vec<usize> {
                lens.iter().scan(0, |s, l| { *s += l; Some(*s) }).collect()
            };
            let a = ends(c.cuts(&d, true));
            let b: Vec<usize> = ends(c.cuts(&e, true)).into_iter().map(|x| x - 14).collect();
            // Boundaries well after the edit are the same.
            let tail_a: Vec<_> = a.iter().filter(|&&x| x > pos + 3 * 4096).collect();
            let tail_b: Vec<_> = b.iter().filter(|&&x| x > pos + 3 * 4096).collect();
            prop_assert_eq!(tail_a, tail_b);
        }
    }

    #[test]
    fn seed_changes_cut_points() {
        let d = data(200_000, 1);
        let a = Chunker::new(small(), 1).cuts(&d, true);
        let b = Chunker::new(small(), 2).cuts(&d, true);
        assert_ne!(a, b);
    }
}
