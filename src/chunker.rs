//! Content-defined chunking (FastCDC v2020) over byte slices, with a secret gear table so that
//! cut points, and so chunk lengths, cannot be predicted from known content.
//!
//! Pure: the caller owns buffers and I/O. [`Chunker::cuts`] finds the chunk boundaries in a
//! window; when the window does not end the stream the last, unfinished chunk is left for the
//! next window, which gives exactly the chunks of chunking the whole stream at once (a cut
//! depends only on the bytes from the chunk's start to at most `max_bytes` after it).
//!
//! Two gear tables exist, by repository format version (docs/format.md, "Chunking"):
//! - versions 1 and 2: the `fastcdc` crate's public table with every entry XORed with one
//!   64-bit seed ([`GearTable::seeded`]). One value keys every entry, so the table of a
//!   repository is the public table shifted by a constant, and that constant can be recovered
//!   from known content (docs/crypto.md);
//! - version 3: 256 independent 64-bit entries drawn from the repository key
//!   ([`GearTable::keyed`]), 16,384 secret bits of which the 48 low bits of each entry reach a
//!   cut decision. The scan is the `fastcdc` crate's own (`cut_gear`) over our table, so the
//!   speed is the crate's (`cargo bench --bench stages -- chunk`).

use std::sync::Arc;

use fastcdc::v2020::{Normalization, cut_gear, get_gear_with_seed, select_masks};

use crate::format::config::ChunkerParams;

/// A gear table and its left-shifted twin (`gear[b] << 1`), which the two-bytes-a-step scan
/// of FastCDC v2020 uses for even positions.
#[derive(Clone, PartialEq, Eq, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct GearTable {
    gear: [u64; 256],
    gear_ls: [u64; 256],
}

impl std::fmt::Debug for GearTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GearTable(..)")
    }
}

impl GearTable {
    /// The table of format versions 1 and 2: the public FastCDC table XORed with `seed`.
    pub fn seeded(seed: u64) -> Self {
        let (g, gl) = get_gear_with_seed(seed);
        let mut gear = [0u64; 256];
        let mut gear_ls = [0u64; 256];
        gear.copy_from_slice(&g);
        gear_ls.copy_from_slice(&gl);
        Self { gear, gear_ls }
    }

    /// The table of format version 3: 2,048 bytes of key stream, read as 256 little-endian
    /// u64 entries. `stream` comes from `MasterKey::chunker_gear_stream`.
    pub fn keyed(stream: &[u8; 2048]) -> Self {
        let mut gear = [0u64; 256];
        for (g, b) in gear.iter_mut().zip(stream.chunks_exact(8)) {
            let mut w = [0u8; 8];
            w.copy_from_slice(b);
            *g = u64::from_le_bytes(w);
        }
        let gear_ls = gear.map(|g| g << 1);
        Self { gear, gear_ls }
    }

    /// Entry `byte` of the table.
    pub fn entry(&self, byte: u8) -> u64 {
        self.gear[byte as usize]
    }
}

/// A keyed chunker. Cloning is cheap (the table is shared).
#[derive(Clone, Debug)]
pub struct Chunker {
    params: ChunkerParams,
    table: Arc<GearTable>,
    mask_s: u64,
    mask_l: u64,
}

impl Chunker {
    /// A chunker with validated parameters and a secret gear table.
    pub fn new(params: ChunkerParams, table: GearTable) -> Self {
        let (mask_s, mask_l) = select_masks(params.avg_bytes as usize, Normalization::Level1);
        Self {
            params,
            table: Arc::new(table),
            mask_s,
            mask_l,
        }
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
        let t = &*self.table;
        let mut lens = Vec::new();
        let mut start = 0;
        while start < window.len() {
            let (_, len) = cut_gear(
                &window[start..],
                p.min_bytes as usize,
                p.avg_bytes as usize,
                p.max_bytes as usize,
                self.mask_s,
                self.mask_l,
                self.mask_s << 1,
                self.mask_l << 1,
                &t.gear,
                &t.gear_ls,
            );
            if len == 0 {
                break;
            }
            lens.push(len);
            start += len;
        }
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
            let c = Chunker::new(small(), GearTable::seeded(seed));
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
            let c = Chunker::new(small(), GearTable::seeded(99));
            let d = data(len, 7);
            prop_assert_eq!(stream_cuts(&c, &d, window), c.cuts(&d, true));
        }

        #[test]
        fn resynchronises_after_an_insert(pos in 0usize..40_000) {
            let c = Chunker::new(small(), GearTable::seeded(5));
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
        let a = Chunker::new(small(), GearTable::seeded(1)).cuts(&d, true);
        let b = Chunker::new(small(), GearTable::seeded(2)).cuts(&d, true);
        assert_ne!(a, b);
    }

    fn keyed(n: u8) -> GearTable {
        let mut stream = [0u8; 2048];
        let mut h = blake3::Hasher::new_derive_key("coffer chunker test");
        h.update(&[n]);
        h.finalize_xof().fill(&mut stream);
        GearTable::keyed(&stream)
    }

    fn ends(lens: &[usize]) -> std::collections::BTreeSet<usize> {
        lens.iter()
            .scan(0, |s, l| {
                *s += l;
                Some(*s)
            })
            .collect()
    }

    #[test]
    fn seeded_table_cuts_like_the_fastcdc_crate() {
        // Versions 1 and 2 keep their cut points, so they keep deduplicating with what they
        // stored before version 3 existed.
        let d = data(300_000, 9);
        for seed in [0, 1, 0xdead_beef_1234_5678] {
            let ours = Chunker::new(small(), GearTable::seeded(seed)).cuts(&d, true);
            let theirs: Vec<usize> = fastcdc::v2020::FastCDC::with_level_and_seed(
                &d,
                256,
                1024,
                4096,
                Normalization::Level1,
                seed,
            )
            .map(|c| c.length)
            .collect();
            assert_eq!(ours, theirs, "seed {seed}");
        }
    }

    #[test]
    fn same_file_in_two_repositories_has_different_boundaries() {
        let d = data(400_000, 4);
        let a = ends(&Chunker::new(small(), keyed(1)).cuts(&d, true));
        let b = ends(&Chunker::new(small(), keyed(2)).cuts(&d, true));
        let shared = a.intersection(&b).count();
        // Only the end of the file is certainly shared; by chance a few more may be.
        assert!(
            shared * 10 < a.len().min(b.len()),
            "{shared} of {} / {} boundaries shared",
            a.len(),
            b.len()
        );
    }

    #[test]
    fn a_known_file_does_not_reveal_the_keyed_table() {
        // The seeded table of versions 1 and 2 is the public table XORed with one value: any
        // single entry learned gives every other entry.
        let s = GearTable::seeded(0x1234_5678_9abc_def1);
        let public = GearTable::seeded(0);
        let delta = s.entry(0) ^ public.entry(0);
        assert!((0..=255u8).all(|b| s.entry(b) ^ public.entry(b) == delta));

        // The keyed table has independent entries. A file made of the bytes 0..128 only
        // touches those entries: a table that agrees with the key's on them and is unrelated
        // elsewhere cuts that file exactly the same, so the file and its boundaries cannot
        // tell the two apart, yet the two cut other content differently.
        let k = keyed(7);
        let other = keyed(8);
        let mut mixed = other.clone();
        for b in 0..128u8 {
            mixed.gear[b as usize] = k.gear[b as usize];
            mixed.gear_ls[b as usize] = k.gear_ls[b as usize];
        }
        let known: Vec<u8> = data(300_000, 11).iter().map(|b| b & 0x7f).collect();
        let unknown: Vec<u8> = data(300_000, 12).iter().map(|b| b | 0x80).collect();
        let ck = Chunker::new(small(), k.clone());
        let cm = Chunker::new(small(), mixed);
        assert_eq!(ck.cuts(&known, true), cm.cuts(&known, true));
        assert_ne!(ck.cuts(&unknown, true), cm.cuts(&unknown, true));
        // And the differences between two keys' tables are not one constant.
        let deltas: std::collections::HashSet<u64> =
            (0..=255u8).map(|b| k.entry(b) ^ other.entry(b)).collect();
        assert_eq!(deltas.len(), 256);
    }

    proptest! {
        #[test]
        fn keyed_chunks_cover_input_and_respect_bounds(len in 0usize..60_000, n in any::<u8>()) {
            let c = Chunker::new(small(), keyed(n));
            let d = data(len, u64::from(n) + 1);
            let lens = c.cuts(&d, true);
            prop_assert_eq!(lens.iter().sum::<usize>(), len);
            for (i, l) in lens.iter().enumerate() {
                prop_assert!(*l <= 4096);
                prop_assert!(*l >= 256 || i == lens.len() - 1);
            }
            prop_assert_eq!(stream_cuts(&c, &d, 5000), lens);
        }
    }
}
