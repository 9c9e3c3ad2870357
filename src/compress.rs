//! zstd compression of blob payloads; a payload that does not shrink is stored raw.
//!
//! Pure. Compressor contexts are reused per thread by the caller (one per rayon worker).

use crate::format::{Compression, FormatError};

/// A reusable compressor.
pub struct Compressor {
    inner: zstd::bulk::Compressor<'static>,
    buf: Vec<u8>,
}

/// Largest zstd frame worth storing for `raw_len` bytes of data: it must save more than 1/64.
pub fn max_frame_bytes(raw_len: usize) -> usize {
    (raw_len - raw_len / 64).saturating_sub(1)
}

impl Compressor {
    /// A compressor at `level`.
    pub fn new(level: i32) -> std::io::Result<Self> {
        Ok(Self {
            inner: zstd::bulk::Compressor::new(level)?,
            buf: Vec::new(),
        })
    }

    /// Compress `data` into the start of `dst` if the frame is worth it (no larger than
    /// [`max_frame_bytes`]) and fits; returns its length, or `None` to store `data` raw. zstd
    /// gives up as soon as the frame outgrows that room, so `dst` never needs more than
    /// `max_frame_bytes(data.len())` bytes and incompressible data costs no large buffer.
    pub fn compress_into(&mut self, data: &[u8], dst: &mut [u8]) -> Option<usize> {
        let room = max_frame_bytes(data.len()).min(dst.len());
        match self.inner.compress_to_buffer(data, &mut dst[..room]) {
            Ok(n) if n <= max_frame_bytes(data.len()) => Some(n),
            _ => None,
        }
    }

    /// Compress `data`; returns the payload and how it is encoded. Raw when zstd would not
    /// save more than 1/64 of the size.
    pub fn compress<'a>(&'a mut self, data: &'a [u8]) -> (&'a [u8], Compression) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(max_frame_bytes(data.len()), 0);
        let n = self.compress_into(data, &mut buf);
        self.buf = buf;
        match n {
            Some(n) => (&self.buf[..n], Compression::Zstd),
            None => (data, Compression::None),
        }
    }
}

thread_local! {
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decompress a payload to exactly `raw_len` bytes.
pub fn decompress(
    payload: &[u8],
    compression: Compression,
    raw_len: usize,
) -> Result<Vec<u8>, FormatError> {
    match compression {
        Compression::None => {
            if payload.len() != raw_len {
                return Err(FormatError::invalid("blob", "raw length mismatch"));
            }
            Ok(payload.to_vec())
        }
        Compression::Zstd => {
            if raw_len > crate::format::MAX_BLOB_BYTES as usize {
                return Err(FormatError::invalid("blob", "too large"));
            }
            // One decompression context per thread: creating one per blob was a visible
            // share of a restore's CPU time.
            let out = DECOMPRESSOR
                .with(|d| -> std::io::Result<Vec<u8>> {
                    let mut d = d.borrow_mut();
                    if d.is_none() {
                        *d = Some(zstd::bulk::Decompressor::new()?);
                    }
                    match d.as_mut() {
                        Some(d) => d.decompress(payload, raw_len),
                        None => zstd::bulk::decompress(payload, raw_len),
                    }
                })
                .map_err(|e| FormatError::invalid("blob", format!("zstd: {e}")))?;
            if out.len() != raw_len {
                return Err(FormatError::invalid("blob", "decompressed length mismatch"));
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressible_shrinks_random_stays_raw() {
        let mut c = Compressor::new(3).unwrap();
        let text = b"hello world ".repeat(1000);
        let (p, m) = c.compress(&text);
        assert_eq!(m, Compression::Zstd);
        let p = p.to_vec();
        assert!(p.len() < text.len() / 10);
        assert_eq!(decompress(&p, m, text.len()).unwrap(), text);
        let random: Vec<u8> = (0..10_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let (p, m) = c.compress(&random);
        if m == Compression::None {
            assert_eq!(p, &random[..]);
        }
        assert!(decompress(p, m, random.len() + 1).is_err());
        assert!(decompress(b"garbage", Compression::Zstd, 10).is_err());
    }
}
