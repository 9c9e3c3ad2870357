//! Streaming OpenPGP (RFC 4880) passphrase encryption, compatible with `gpg -d`.
//!
//! Owns the byte layout of the `.gpg` files that `gpg --symmetric` (and offen/docker-volume-backup
//! with `GPG_PASSPHRASE`) produce, so a stream written through [`PgpWriter`] decrypts with
//! `gpg --batch --passphrase PASS -d file.gpg`. Encoder only: there is no decoder here.
//!
//! ```text
//! SKESK v4 (tag 3)   version 4 | AES-256 (9) | S2K 3: SHA-256 (8), salt[8], count 0xFF
//!                    (no encrypted session key: the S2K output is the session key)
//! SEIPD v1 (tag 18)  version 1 | AES-256 OpenPGP CFB, zero IV, no resync, over:
//!   +-- random prefix[16] | prefix[14..16]
//!   +-- Literal Data (tag 11): 'b' | name len | name | date 0 | data...
//!   +-- MDC (tag 19): 0xD3 0x14 | SHA-1(prefix .. literal packet .. 0xD3 0x14)
//! ```
//!
//! Both the SEIPD and the literal packet have unknown lengths, so each is streamed with partial
//! body lengths (RFC 4880 §4.2.2.4) of [`CHUNK`] bytes; the last piece uses a normal length.
//! Memory use is two `CHUNK` buffers regardless of the stream's size. All headers are new-format.

use std::io::{self, Write};

use aes::Aes256;
use aes::cipher::{BlockCipherEncrypt, KeyInit};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

/// Size of one partial body piece: 2^16 bytes (header octet `0xF0`).
pub const CHUNK: usize = 1 << CHUNK_POWER;
const CHUNK_POWER: u8 = 16;
/// New-format partial body length octet for a `CHUNK`-byte piece (224 + power of two).
const PARTIAL_HEADER: u8 = 224 + CHUNK_POWER;

const TAG_SKESK: u8 = 3;
const TAG_LITERAL: u8 = 11;
const TAG_SEIPD: u8 = 18;
const TAG_MDC: u8 = 19;
const CIPHER_AES256: u8 = 9;
const S2K_ITERATED_SALTED: u8 = 3;
const HASH_SHA256: u8 = 8;
/// Coded S2K count: (16 + (c & 15)) << ((c >> 4) + 6) = 65 011 712 bytes hashed.
const S2K_COUNT_CODED: u8 = 0xFF;
const BLOCK: usize = 16;
const MDC_LEN: usize = 20;

/// New-format packet tag octet.
const fn tag(t: u8) -> u8 {
    0xC0 | t
}

/// Number of bytes an iterated+salted S2K hashes for a coded count octet.
fn s2k_count(coded: u8) -> usize {
    (16 + usize::from(coded & 15)) << (usize::from(coded >> 4) + 6)
}

/// Append a new-format normal (non-partial) body length.
fn push_length(out: &mut Vec<u8>, len: usize) -> io::Result<()> {
    if len < 192 {
        out.push(len as u8);
    } else if len < 8384 {
        let l = len - 192;
        out.push(((l >> 8) + 192) as u8);
        out.push((l & 0xFF) as u8);
    } else {
        let l = u32::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "packet too long"))?;
        out.push(0xFF);
        out.extend_from_slice(&l.to_be_bytes());
    }
    Ok(())
}

fn random(buf: &mut [u8]) -> io::Result<()> {
    getrandom::fill(buf)
        .map_err(|e| io::Error::other(format!("random number generator failed: {e}")))
}

/// Iterated and salted S2K (RFC 4880 §3.7.1.3) with SHA-256: a 32-byte AES-256 key.
fn s2k_sha256(passphrase: &[u8], salt: &[u8; 8], count: usize) -> Zeroizing<[u8; 32]> {
    let mut unit = Zeroizing::new(Vec::with_capacity(salt.len() + passphrase.len()));
    unit.extend_from_slice(salt);
    unit.extend_from_slice(passphrase);
    // At least one full salt||passphrase is hashed even if the count is smaller.
    let total = count.max(unit.len());
    // A buffer of whole repetitions, so every slice of it starting at 0 is a valid stream piece.
    let reps = ((64 * 1024) / unit.len()).max(1);
    let mut buf = Zeroizing::new(Vec::with_capacity(reps * unit.len()));
    for _ in 0..reps {
        buf.extend_from_slice(&unit);
    }
    let mut hasher = Sha256::new();
    let mut left = total;
    while left > 0 {
        let n = left.min(buf.len());
        hasher.update(&buf[..n]);
        left -= n;
    }
    let mut digest = hasher.finalize();
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&digest);
    digest.as_mut_slice().zeroize();
    key
}

/// OpenPGP CFB without resync: plain CFB-128 with a zero IV over the whole plaintext stream.
struct Cfb {
    cipher: Aes256,
    /// Keystream block E(C_prev), overwritten byte by byte with the ciphertext C.
    reg: aes::Block,
    pos: usize,
}

impl Cfb {
    fn new(cipher: Aes256) -> Self {
        // pos == BLOCK makes the first byte encrypt the zero IV.
        Self {
            cipher,
            reg: aes::Block::default(),
            pos: BLOCK,
        }
    }

    fn encrypt(&mut self, mut data: &mut [u8]) {
        // Finish a started block byte by byte, then whole blocks, then a started tail.
        while self.pos < BLOCK && !data.is_empty() {
            self.encrypt_bytes(&mut data[..1]);
            data = &mut data[1..];
        }
        let (blocks, tail) = data.as_chunks_mut::<BLOCK>();
        for block in blocks {
            self.cipher.encrypt_block(&mut self.reg);
            // Whole-word XOR: byte stores into `reg` would stall the next block's load.
            let keystream = u128::from_ne_bytes(self.reg.into());
            *block = (keystream ^ u128::from_ne_bytes(*block)).to_ne_bytes();
            self.reg = (*block).into();
        }
        self.encrypt_bytes(tail);
    }

    fn encrypt_bytes(&mut self, data: &mut [u8]) {
        for b in data {
            if self.pos == BLOCK {
                self.cipher.encrypt_block(&mut self.reg);
                self.pos = 0;
            }
            *b ^= self.reg[self.pos];
            self.reg[self.pos] = *b;
            self.pos += 1;
        }
    }
}

/// The SEIPD layer: hashes and encrypts plaintext, frames ciphertext with partial lengths.
struct Seipd<W: Write> {
    inner: W,
    cfb: Cfb,
    mdc: Sha1,
    /// Pending SEIPD body bytes (ciphertext, plus the version octet at the start).
    out: Vec<u8>,
}

impl<W: Write> Seipd<W> {
    /// Hash and encrypt `data`, emitting full pieces as partial bodies.
    fn plain(&mut self, data: &[u8]) -> io::Result<()> {
        self.mdc.update(data);
        self.encrypt(data)
    }

    /// Encrypt `data` without hashing it (only the MDC digest itself).
    fn encrypt(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            // Flush lazily, only when more bytes follow, so the final piece is never empty.
            if self.out.len() == CHUNK {
                self.inner.write_all(&[PARTIAL_HEADER])?;
                self.inner.write_all(&self.out)?;
                self.out.clear();
            }
            let n = data.len().min(CHUNK - self.out.len());
            let start = self.out.len();
            self.out.extend_from_slice(&data[..n]);
            self.cfb.encrypt(&mut self.out[start..]);
            data = &data[n..];
        }
        Ok(())
    }

    /// Append the MDC packet and write the last piece with a normal length.
    fn finish(mut self) -> io::Result<W> {
        self.plain(&[tag(TAG_MDC), MDC_LEN as u8])?;
        let digest = self.mdc.clone().finalize();
        self.encrypt(&digest)?;
        let mut header = Vec::with_capacity(5);
        push_length(&mut header, self.out.len())?;
        self.inner.write_all(&header)?;
        self.inner.write_all(&self.out)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

/// Streams `gpg -d`-compatible passphrase-encrypted OpenPGP data into `inner`.
///
/// Bytes are buffered in pieces of [`CHUNK`]; `flush` only flushes `inner` (a partial piece
/// cannot be emitted early). [`PgpWriter::finish`] must be called to produce a complete message.
/// After any I/O error the writer is poisoned and every later call fails.
pub struct PgpWriter<W: Write> {
    seipd: Seipd<W>,
    /// Pending Literal Data body bytes (plaintext; starts with the literal header fields).
    lit: Vec<u8>,
    poisoned: bool,
}

impl<W: Write> PgpWriter<W> {
    /// Write the packet headers to `inner` and return a writer for the plaintext.
    pub fn new(inner: W, passphrase: &[u8]) -> io::Result<Self> {
        Self::with_file_name(inner, passphrase, b"")
    }

    /// Like [`PgpWriter::new`], recording `file_name` (at most 255 bytes) in the literal packet.
    pub fn with_file_name(mut inner: W, passphrase: &[u8], file_name: &[u8]) -> io::Result<Self> {
        let name_len = u8::try_from(file_name.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "OpenPGP file name longer than 255 bytes",
            )
        })?;
        let mut salt = [0u8; 8];
        random(&mut salt)?;
        let key = s2k_sha256(passphrase, &salt, s2k_count(S2K_COUNT_CODED));
        let cipher = Aes256::new_from_slice(key.as_slice())
            .map_err(|_| io::Error::other("AES-256 key has the wrong length"))?;

        // Symmetric-Key Encrypted Session Key packet, version 4, no encrypted session key.
        let mut head = vec![
            tag(TAG_SKESK),
            13,
            4,
            CIPHER_AES256,
            S2K_ITERATED_SALTED,
            HASH_SHA256,
        ];
        head.extend_from_slice(&salt);
        head.push(S2K_COUNT_CODED);
        // SEIPD packet header; its body starts with the version octet in the first piece.
        head.push(tag(TAG_SEIPD));
        inner.write_all(&head)?;

        let mut out = Vec::with_capacity(CHUNK);
        out.push(1);
        let mut seipd = Seipd {
            inner,
            cfb: Cfb::new(cipher),
            mdc: Sha1::new(),
            out,
        };

        let mut prefix = [0u8; BLOCK + 2];
        random(&mut prefix[..BLOCK])?;
        prefix[BLOCK] = prefix[BLOCK - 2];
        prefix[BLOCK + 1] = prefix[BLOCK - 1];
        seipd.plain(&prefix)?;
        seipd.plain(&[tag(TAG_LITERAL)])?;

        let mut lit = Vec::with_capacity(CHUNK);
        lit.push(b'b');
        lit.push(name_len);
        lit.extend_from_slice(file_name);
        lit.extend_from_slice(&[0, 0, 0, 0]);
        Ok(Self {
            seipd,
            lit,
            poisoned: false,
        })
    }

    fn check(&self) -> io::Result<()> {
        if self.poisoned {
            return Err(io::Error::other("OpenPGP writer failed earlier"));
        }
        Ok(())
    }

    fn push(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            // Flush lazily, so a full buffer at `finish` goes out with a normal length.
            if self.lit.len() == CHUNK {
                self.seipd.plain(&[PARTIAL_HEADER])?;
                self.seipd.plain(&self.lit)?;
                self.lit.clear();
            }
            let n = data.len().min(CHUNK - self.lit.len());
            self.lit.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        Ok(())
    }

    /// Write the last literal piece and the MDC packet; return the inner writer (flushed).
    pub fn finish(mut self) -> io::Result<W> {
        self.check()?;
        let mut header = Vec::with_capacity(5);
        push_length(&mut header, self.lit.len())?;
        self.seipd.plain(&header)?;
        self.seipd.plain(&self.lit)?;
        self.seipd.finish()
    }
}

impl<W: Write> Write for PgpWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check()?;
        match self.push(buf) {
            Ok(()) => Ok(buf.len()),
            Err(e) => {
                self.poisoned = true;
                Err(e)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.check()?;
        self.seipd.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::{Command, Output};

    /// Whether to run the gpg tests: `false` prints a note; a missing gpg under CI=true panics.
    fn have_gpg() -> bool {
        let ok = Command::new("gpg")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "gpg is required for the OpenPGP tests under CI"
            );
            eprintln!("note: gpg not found; skipping the OpenPGP round-trip test");
        }
        ok
    }

    /// A throwaway GNUPGHOME whose gpg-agent is stopped on drop.
    struct GpgHome(tempfile::TempDir);

    impl GpgHome {
        fn new() -> Self {
            let dir = tempfile::Builder::new()
                .prefix("gpg")
                .tempdir()
                .expect("tempdir");
            let mut perms = std::fs::metadata(dir.path()).expect("stat").permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o700);
            std::fs::set_permissions(dir.path(), perms).expect("chmod");
            Self(dir)
        }

        /// Decrypt `ciphertext` with `gpg -d`.
        fn decrypt(&self, ciphertext: &[u8], passphrase: &str) -> Output {
            let input = self.0.path().join("in.gpg");
            std::fs::write(&input, ciphertext).expect("write ciphertext");
            let out = Command::new("gpg")
                .env("GNUPGHOME", self.0.path())
                .args([
                    "--batch",
                    "--no-tty",
                    "--no-symkey-cache",
                    "--pinentry-mode",
                ])
                .args(["loopback", "--passphrase", passphrase, "-d"])
                .arg(&input)
                .output()
                .expect("run gpg");
            std::fs::remove_file(&input).expect("remove ciphertext");
            out
        }

        fn path(&self) -> &Path {
            self.0.path()
        }
    }

    impl Drop for GpgHome {
        fn drop(&mut self) {
            let _ = Command::new("gpgconf")
                .env("GNUPGHOME", self.path())
                .args(["--kill", "gpg-agent"])
                .output();
        }
    }

    fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    }

    /// Encrypt `data`, feeding it in writes of varying sizes (1 byte up to ~100 KiB).
    fn encrypt(data: &[u8], passphrase: &str) -> Vec<u8> {
        let mut w = PgpWriter::new(Vec::new(), passphrase.as_bytes()).expect("new");
        let mut rest = data;
        let mut step = 1usize;
        while !rest.is_empty() {
            let n = step.min(rest.len());
            w.write_all(&rest[..n]).expect("write");
            rest = &rest[n..];
            step = (step * 7 + 3) % 100_003;
        }
        w.finish().expect("finish")
    }

    #[test]
    fn gpg_round_trip() {
        if !have_gpg() {
            return;
        }
        let home = GpgHome::new();
        let pass = "correct horse battery staple";
        // Literal body = 6 header bytes + data; the SEIPD body = 1 + 18 + (tag, length, body) + 22.
        // 65483: SEIPD body exactly CHUNK; CHUNK - 6: literal body exactly CHUNK.
        let sizes = [
            0,
            1,
            511,
            512,
            CHUNK - 7,
            CHUNK - 6,
            CHUNK - 5,
            65_483,
            65_484,
            65_485,
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            2 * CHUNK - 6,
            3 * 1024 * 1024 + 13,
        ];
        for (i, &size) in sizes.iter().enumerate() {
            let data = pseudo_random(size, 0x9E37_79B9_7F4A_7C15 ^ i as u64);
            let ct = encrypt(&data, pass);
            let out = home.decrypt(&ct, pass);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "gpg failed for size {size}: {stderr}");
            assert!(
                !stderr.contains("integrity"),
                "gpg integrity warning for {size}: {stderr}"
            );
            assert_eq!(out.stdout.len(), size, "length mismatch for size {size}");
            assert!(out.stdout == data, "content mismatch for size {size}");
        }
    }

    #[test]
    fn gpg_round_trip_with_file_name() {
        if !have_gpg() {
            return;
        }
        let home = GpgHome::new();
        let data = pseudo_random(100_000, 7);
        let mut w = PgpWriter::with_file_name(Vec::new(), b"pw", b"backup.tar.gz").expect("new");
        w.write_all(&data).expect("write");
        let out = home.decrypt(&w.finish().expect("finish"), "pw");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == data);
    }

    #[test]
    fn gpg_rejects_wrong_passphrase() {
        if !have_gpg() {
            return;
        }
        let home = GpgHome::new();
        let data = pseudo_random(10_000, 42);
        let ct = encrypt(&data, "right");
        let out = home.decrypt(&ct, "wrong");
        assert!(!out.status.success(), "gpg accepted a wrong passphrase");
        assert!(out.stdout != data);
    }

    #[test]
    fn header_bytes() {
        let ct = PgpWriter::new(Vec::new(), b"x")
            .and_then(|w| w.finish())
            .expect("encrypt");
        // SKESK: tag 3, length 13, v4, AES-256, S2K 3, SHA-256, salt[8], count.
        assert_eq!(&ct[..6], &[0xC3, 13, 4, 9, 3, 8]);
        assert_eq!(ct[14], 0xFF);
        // SEIPD: tag 18, one-octet length, version 1; body = 1 + 18 + (1 + 1 + 6) + 22 = 49.
        assert_eq!(ct[15], 0xD2);
        assert_eq!(ct[16], 49);
        assert_eq!(ct[17], 1);
        assert_eq!(ct.len(), 17 + 49);

        // A stream longer than one piece starts the SEIPD body with a partial length.
        let mut w = PgpWriter::new(Vec::new(), b"x").expect("new");
        w.write_all(&vec![0u8; 3 * CHUNK]).expect("write");
        let ct = w.finish().expect("finish");
        assert_eq!(&ct[15..18], &[0xD2, PARTIAL_HEADER, 1]);
        assert_eq!(ct[17 + CHUNK], PARTIAL_HEADER);
    }

    #[test]
    fn lengths_and_s2k() {
        assert_eq!(s2k_count(0xFF), 65_011_712);
        assert_eq!(s2k_count(0x60), 65_536);
        let enc = |n| {
            let mut v = Vec::new();
            push_length(&mut v, n).expect("length");
            v
        };
        assert_eq!(enc(191), [191]);
        assert_eq!(enc(192), [192, 0]);
        assert_eq!(enc(8383), [223, 255]);
        assert_eq!(enc(8384), [255, 0, 0, 0x20, 0xC0]);
        // Count below one salt||passphrase still hashes it whole: plain SHA-256 of the unit.
        let key = s2k_sha256(b"pw", &[1; 8], 0);
        let direct = Sha256::digest([1, 1, 1, 1, 1, 1, 1, 1, b'p', b'w']);
        assert_eq!(key.as_slice(), direct.as_slice());
    }
}
