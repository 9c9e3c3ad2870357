//! gzip on a thread of its own, joined to the tar side by a bounded channel of chunks.
//!
//! Export writes its tar stream into a [`ChunkWriter`]; a [`Compressor`] on another thread
//! gzips the chunks into the output. Import reads its tar stream from a [`ChunkReader`]; a
//! [`Decompressor`] on another thread gunzips the archive into it. Either way at most
//! [`CHUNKS_IN_FLIGHT`] chunks of [`CHUNK_BYTES`] wait between the two threads, and emptied
//! buffers go back to be reused, so memory stays constant whatever the archive's size.
//!
//! Invariants: a compressor writes the gzip trailer only after the tar side has marked the
//! stream complete ([`ChunkWriter::end`]), so a failed export can never pass for a complete
//! archive; a decompressor reads to the end of the input, so the checksum of every gzip member
//! is verified before the reader sees the end of the stream.

use std::io::{self, BufRead, BufWriter, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use flate2::Compression;
use flate2::bufread::MultiGzDecoder;
use flate2::write::GzEncoder;

/// Bytes of tar stream handed between the tar side and the gzip thread at once.
pub const CHUNK_BYTES: usize = 1 << 20;
/// Chunks that may wait between the tar side and the gzip thread.
pub const CHUNKS_IN_FLIGHT: usize = 8;
/// Buffer between the compressor and the output.
const OUTPUT_BUFFER_BYTES: usize = 1 << 20;

/// A message from the tar side to the compressor.
enum Chunk {
    Data(Vec<u8>),
    /// The archive is complete: write the gzip trailer.
    End,
}

const COMPRESSOR_STOPPED: &str = "the compressor stopped";

/// The two ends of an export's pipe: the tar side's writer and the compressor to run on its
/// own thread.
pub(super) fn compress_pipe() -> (ChunkWriter, Compressor) {
    let (tx, rx) = sync_channel(CHUNKS_IN_FLIGHT);
    let (spare_tx, spare_rx) = sync_channel(CHUNKS_IN_FLIGHT + 2);
    let writer = ChunkWriter {
        tx,
        spare: spare_rx,
        buf: Vec::with_capacity(CHUNK_BYTES),
    };
    let compressor = Compressor {
        rx,
        spare: spare_tx,
    };
    (writer, compressor)
}

/// Collects the tar stream into chunks for the compressor, reusing the buffers it returns.
/// Dropped without [`ChunkWriter::end`], it stops the compressor without a gzip trailer.
pub(super) struct ChunkWriter {
    tx: SyncSender<Chunk>,
    spare: Receiver<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send_buf(&mut self) -> io::Result<()> {
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK_BYTES));
        let full = std::mem::replace(&mut self.buf, next);
        self.tx
            .send(Chunk::Data(full))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, COMPRESSOR_STOPPED))
    }

    /// Send what is buffered and mark the stream complete.
    pub(super) fn end(mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.send_buf()?;
        }
        self.tx
            .send(Chunk::End)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, COMPRESSOR_STOPPED))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK_BYTES - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK_BYTES {
            self.send_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The output behind the compressor: counts bytes, and once aborted writes nothing more (the
/// encoder's drop would otherwise write a gzip trailer after a failure).
struct Output {
    inner: Box<dyn Write + Send>,
    written: u64,
    aborted: bool,
}

impl Write for Output {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.aborted {
            return Err(io::Error::other("export aborted"));
        }
        let n = self.inner.write(data)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.aborted {
            return Ok(());
        }
        self.inner.flush()
    }
}

/// Why a compressor stopped without completing the archive.
pub(super) enum CompressError {
    /// The tar side stopped without finishing.
    Aborted,
    /// Compressing or writing the output failed.
    Io(io::Error),
}

/// The compressor's end of an export's pipe.
pub(super) struct Compressor {
    rx: Receiver<Chunk>,
    spare: SyncSender<Vec<u8>>,
}

impl Compressor {
    /// Gzip chunks into `out` (at `level`; `None`: the tar as it is) until the stream is
    /// marked complete; returns the bytes written.
    pub(super) fn run(
        self,
        out: Box<dyn Write + Send>,
        level: Option<u32>,
    ) -> Result<u64, CompressError> {
        let output = BufWriter::with_capacity(
            OUTPUT_BUFFER_BYTES,
            Output {
                inner: out,
                written: 0,
                aborted: false,
            },
        );
        let buffered = match level {
            Some(level) => {
                let mut gz = GzEncoder::new(output, Compression::new(level));
                if let Err(e) = self.pump(&mut gz) {
                    gz.get_mut().get_mut().aborted = true;
                    return Err(e);
                }
                gz.finish().map_err(CompressError::Io)?
            }
            None => {
                let mut plain = output;
                if let Err(e) = self.pump(&mut plain) {
                    plain.get_mut().aborted = true;
                    return Err(e);
                }
                plain
            }
        };
        let mut output = buffered
            .into_inner()
            .map_err(|e| CompressError::Io(e.into_error()))?;
        output.flush().map_err(CompressError::Io)?;
        Ok(output.written)
    }

    /// Write the chunks into `w` until the stream is marked complete.
    fn pump(&self, w: &mut impl Write) -> Result<(), CompressError> {
        loop {
            match self.rx.recv() {
                Ok(Chunk::Data(mut buf)) => {
                    w.write_all(&buf).map_err(CompressError::Io)?;
                    buf.clear();
                    let _ = self.spare.try_send(buf);
                }
                Ok(Chunk::End) => return Ok(()),
                Err(_) => return Err(CompressError::Aborted),
            }
        }
    }
}

/// What the decompressor thread sends.
enum Piece {
    Data(Vec<u8>),
    End,
    Failed(io::Error),
}

/// The two ends of an import's pipe: the decompressor to run on its own thread and the tar
/// side's reader.
pub(super) fn decompress_pipe() -> (Decompressor, ChunkReader) {
    let (tx, pieces) = sync_channel(CHUNKS_IN_FLIGHT);
    let (spare_tx, spare_rx) = sync_channel(CHUNKS_IN_FLIGHT + 2);
    let reader = ChunkReader {
        rx: pieces,
        spare: spare_tx,
        cur: Vec::new(),
        pos: 0,
        ended: false,
        failed: None,
    };
    let decompressor = Decompressor {
        tx,
        spare: spare_rx,
    };
    (decompressor, reader)
}

/// The decompressor's end of an import's pipe.
pub(super) struct Decompressor {
    tx: SyncSender<Piece>,
    spare: Receiver<Vec<u8>>,
}

impl Decompressor {
    /// Gunzip everything, to the end, so the checksum of every gzip member is verified. Stops
    /// early when the reader is dropped.
    pub(super) fn run<R: BufRead>(self, input: R) {
        let Self { tx, spare } = self;
        let mut gz = MultiGzDecoder::new(input);
        loop {
            let mut buf = spare.try_recv().unwrap_or_default();
            buf.resize(CHUNK_BYTES, 0);
            let mut filled = 0;
            while filled < buf.len() {
                match gz.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.send(Piece::Failed(e));
                        return;
                    }
                }
            }
            let eof = filled < buf.len();
            buf.truncate(filled);
            if filled > 0 && tx.send(Piece::Data(buf)).is_err() {
                return; // the reader stopped
            }
            if eof {
                let _ = tx.send(Piece::End);
                return;
            }
        }
    }
}

/// The decompressed stream, from the decompressor thread.
pub(super) struct ChunkReader {
    rx: Receiver<Piece>,
    spare: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    ended: bool,
    failed: Option<(io::ErrorKind, String)>,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if let Some((kind, msg)) = &self.failed {
                return Err(io::Error::new(*kind, msg.clone()));
            }
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Piece::Data(v)) => {
                    let old = std::mem::replace(&mut self.cur, v);
                    self.pos = 0;
                    let _ = self.spare.try_send(old);
                }
                Ok(Piece::End) => self.ended = true,
                Ok(Piece::Failed(e)) => self.failed = Some((e.kind(), e.to_string())),
                Err(_) => {
                    self.failed = Some((io::ErrorKind::Other, "the decompressor stopped".into()))
                }
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shared buffer to compress into.
    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn compress(data: &[u8], end: bool) -> (Result<u64, CompressError>, Vec<u8>) {
        let out = Shared::default();
        let (mut writer, compressor) = compress_pipe();
        let sink = Box::new(out.clone());
        let handle = std::thread::spawn(move || compressor.run(sink, Some(6)));
        writer.write_all(data).unwrap();
        if end {
            writer.end().unwrap();
        } else {
            drop(writer);
        }
        let r = handle.join().unwrap();
        let bytes = out.0.lock().unwrap().clone();
        (r, bytes)
    }

    #[test]
    fn round_trip_through_both_pipes() {
        let data: Vec<u8> = (0..3 * CHUNK_BYTES + 17).map(|i| (i % 251) as u8).collect();
        let (r, gz) = compress(&data, true);
        assert_eq!(r.ok(), Some(gz.len() as u64));
        let (decompressor, mut reader) = decompress_pipe();
        let handle = std::thread::spawn(move || decompressor.run(&gz[..]));
        let mut back = Vec::new();
        reader.read_to_end(&mut back).unwrap();
        handle.join().unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn an_unfinished_stream_gets_no_trailer() {
        // Incompressible, so part of it gets past the output buffer.
        let mut x = 1u32;
        let data: Vec<u8> = (0..3 * CHUNK_BYTES)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8
            })
            .collect();
        let (r, gz) = compress(&data, false);
        assert!(matches!(r, Err(CompressError::Aborted)));
        assert!(!gz.is_empty());
        let (decompressor, mut reader) = decompress_pipe();
        let handle = std::thread::spawn(move || decompressor.run(&gz[..]));
        assert!(reader.read_to_end(&mut Vec::new()).is_err());
        handle.join().unwrap();
    }
}
