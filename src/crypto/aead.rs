//! XChaCha20-Poly1305 sealing with a random 24-byte nonce per message.
//!
//! Layout of a sealed message:
//! ```text
//! +----------------+----------------------+-------------+
//! | nonce (24)     | ciphertext (n)       | tag (16)    |
//! +----------------+----------------------+-------------+
//! ```
//! The associated data names the object kind, so a sealed index cannot be passed off as a
//! snapshot or a tree as a pack header.

use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroizing;

use super::CryptoError;

/// Bytes of the random nonce.
pub const NONCE_BYTES: usize = 24;
/// Bytes of the Poly1305 tag.
pub const TAG_BYTES: usize = 16;
/// Bytes a sealed message adds to its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_BYTES + TAG_BYTES;

/// XChaCha20-Poly1305 as its draft defines it (draft-irtf-cfrg-xchacha-03, section 2.3): the
/// key of a message is HChaCha20 of the key and the nonce's first 16 bytes, its ChaCha20-Poly1305
/// nonce four zero bytes and the nonce's last 8. The ChaCha20-Poly1305 is aws-lc's (assembly;
/// its AVX2 code on the project's machine, per `perf`); the tests check every result against RustCrypto's
/// `XChaCha20Poly1305`, which sealed every repository before 2026-12-05.
fn message_key(
    key: &[u8; 32],
    nonce: &[u8; NONCE_BYTES],
) -> Result<(LessSafeKey, Nonce), CryptoError> {
    let (first, last) = nonce.split_at(16);
    let first: [u8; 16] = first.try_into().map_err(|_| CryptoError::Authentication)?;
    let sub = Zeroizing::new(<[u8; 32]>::from(chacha20::hchacha::<chacha20::R20>(
        &(*key).into(),
        &first.into(),
    )));
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(last);
    let unbound =
        UnboundKey::new(&CHACHA20_POLY1305, &sub[..]).map_err(|_| CryptoError::Authentication)?;
    Ok((LessSafeKey::new(unbound), Nonce::assume_unique_for_key(n)))
}

/// Encrypt and authenticate `plaintext` under `key`, bound to `aad`.
pub fn seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut buf = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
    buf.resize(NONCE_BYTES, 0);
    buf.extend_from_slice(plaintext);
    seal_in_place(key, aad, buf)
}

/// [`seal`] without a copy: `buf` is [`NONCE_BYTES`] bytes of room for the nonce followed by
/// the plaintext. The nonce is written into the room, the plaintext is encrypted where it is
/// and the tag appended, so `buf` becomes the sealed message.
pub fn seal_in_place(key: &[u8; 32], aad: &[u8], mut buf: Vec<u8>) -> Result<Vec<u8>, CryptoError> {
    if buf.len() < NONCE_BYTES {
        return Err(CryptoError::Truncated(buf.len()));
    }
    let mut nonce = [0u8; NONCE_BYTES];
    super::random_bytes(&mut nonce)?;
    buf[..NONCE_BYTES].copy_from_slice(&nonce);
    let (k, n) = message_key(key, &nonce)?;
    let tag = k
        .seal_in_place_separate_tag(n, Aad::from(aad), &mut buf[NONCE_BYTES..])
        .map_err(|_| CryptoError::Authentication)?;
    buf.extend_from_slice(tag.as_ref());
    Ok(buf)
}

/// Verify and decrypt a message produced by [`seal`] with the same `key` and `aad`.
pub fn open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(CryptoError::Truncated(sealed.len()));
    }
    let (nonce, rest) = sealed.split_at(NONCE_BYTES);
    let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| CryptoError::Authentication)?;
    let (k, n) = message_key(key, &nonce)?;
    let mut buf = rest.to_vec();
    let len = k
        .open_in_place(n, Aad::from(aad), &mut buf)
        .map_err(|_| CryptoError::Authentication)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

/// [`open`] in place: the ciphertext inside `sealed` is decrypted where it lies and returned
/// as a part of it (after the nonce, before the tag). On an error the ciphertext and tag are
/// zeroed: no unauthenticated plaintext is ever left in the buffer.
pub fn open_in_place<'a>(
    key: &[u8; 32],
    aad: &[u8],
    sealed: &'a mut [u8],
) -> Result<&'a [u8], CryptoError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(CryptoError::Truncated(sealed.len()));
    }
    let (nonce, rest) = sealed.split_at_mut(NONCE_BYTES);
    let nonce: [u8; NONCE_BYTES] = (&*nonce)
        .try_into()
        .map_err(|_| CryptoError::Authentication)?;
    let (k, n) = message_key(key, &nonce)?;
    if k.open_in_place(n, Aad::from(aad), rest).is_err() {
        rest.fill(0);
        return Err(CryptoError::Authentication);
    }
    Ok(&rest[..rest.len() - TAG_BYTES])
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    use chacha20poly1305::{XChaCha20Poly1305, XNonce};
    use proptest::prelude::*;

    /// The draft's test vector for XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha-03, A.3.1).
    #[test]
    fn the_drafts_test_vector_opens() {
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one \
tip for the future, sunscreen would be it.";
        let aad = hex("50515253c0c1c2c3c4c5c6c7");
        let key: [u8; 32] = hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
            .try_into()
            .unwrap();
        let nonce = hex("404142434445464748494a4b4c4d4e4f5051525354555657");
        let ciphertext = hex(
            "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb\
             731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452\
             2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9\
             21f9664c97637da9768812f615c68b13b52e",
        );
        let tag = hex("c0875924c1c7987947deafd8780acf49");
        let sealed = [nonce, ciphertext, tag].concat();
        assert_eq!(open(&key, &aad, &sealed).unwrap(), plaintext);
    }

    proptest! {
        /// Sealed here, opened by RustCrypto's XChaCha20Poly1305 (which sealed every
        /// repository before 2026-12-05), and the other way round.
        #[test]
        fn rustcrypto_opens_what_we_seal_and_we_open_what_it_sealed(
            data in proptest::collection::vec(any::<u8>(), 0..4096),
            key in any::<[u8; 32]>(),
            nonce in any::<[u8; 24]>(),
            aad in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let reference = XChaCha20Poly1305::new(&key.into());
            let ours = seal(&key, &aad, &data).unwrap();
            let n = XNonce::from(<[u8; 24]>::try_from(&ours[..NONCE_BYTES]).unwrap());
            let opened = reference
                .decrypt(&n, Payload { msg: &ours[NONCE_BYTES..], aad: &aad })
                .unwrap();
            prop_assert_eq!(&opened, &data);
            let theirs = reference
                .encrypt(&XNonce::from(nonce), Payload { msg: &data, aad: &aad })
                .unwrap();
            let sealed = [&nonce[..], &theirs[..]].concat();
            prop_assert_eq!(open(&key, &aad, &sealed).unwrap(), data.clone());
            let mut in_place = sealed.clone();
            prop_assert_eq!(open_in_place(&key, &aad, &mut in_place).unwrap(), &data[..]);
        }

        #[test]
        fn open_of_seal_is_identity(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let key = [7u8; 32];
            let sealed = seal(&key, b"blob", &data).unwrap();
            prop_assert_eq!(sealed.len(), data.len() + SEAL_OVERHEAD);
            prop_assert_eq!(open(&key, b"blob", &sealed).unwrap(), data);
        }

        #[test]
        fn seal_in_place_equals_seal(
            data in proptest::collection::vec(any::<u8>(), 0..2048),
            room in proptest::collection::vec(any::<u8>(), NONCE_BYTES),
        ) {
            let key = [9u8; 32];
            let mut buf = room;
            buf.extend_from_slice(&data);
            let sealed = seal_in_place(&key, b"blob", buf).unwrap();
            prop_assert_eq!(sealed.len(), data.len() + SEAL_OVERHEAD);
            prop_assert_eq!(open(&key, b"blob", &sealed).unwrap(), data);
        }

        #[test]
        fn any_flipped_bit_is_an_error(
            data in proptest::collection::vec(any::<u8>(), 0..512),
            bit in any::<usize>(),
        ) {
            let key = [9u8; 32];
            let mut sealed = seal(&key, b"index", &data).unwrap();
            let bit = bit % (sealed.len() * 8);
            sealed[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(open(&key, b"index", &sealed).is_err());
        }
    }

    #[test]
    fn open_in_place_matches_open() {
        let key = [3u8; 32];
        let sealed = seal(&key, b"blob", b"hello in place").unwrap();
        let mut buf = sealed.clone();
        assert_eq!(
            open_in_place(&key, b"blob", &mut buf).unwrap(),
            b"hello in place"
        );
        let mut forged = sealed.clone();
        forged[30] ^= 1;
        let nonce = forged[..NONCE_BYTES].to_vec();
        assert!(open_in_place(&key, b"blob", &mut forged).is_err());
        assert_eq!(forged[..NONCE_BYTES], nonce[..]);
        assert!(
            forged[NONCE_BYTES..].iter().all(|&b| b == 0),
            "nothing unauthenticated left on failure"
        );
        assert!(open_in_place(&key, b"other", &mut sealed.clone()).is_err());
        assert!(matches!(
            open_in_place(&key, b"blob", &mut [0u8; SEAL_OVERHEAD - 1]),
            Err(CryptoError::Truncated(39))
        ));
    }

    #[test]
    fn seal_in_place_needs_room_for_the_nonce() {
        assert!(seal_in_place(&[1u8; 32], b"x", vec![0; NONCE_BYTES - 1]).is_err());
    }

    #[test]
    fn wrong_key_aad_or_truncation_fail() {
        let sealed = seal(&[1u8; 32], b"snapshot", b"hello").unwrap();
        assert!(open(&[2u8; 32], b"snapshot", &sealed).is_err());
        assert!(open(&[1u8; 32], b"index", &sealed).is_err());
        assert!(open(&[1u8; 32], b"snapshot", &sealed[..sealed.len() - 1]).is_err());
        assert!(matches!(
            open(&[1u8; 32], b"snapshot", &sealed[..10]),
            Err(CryptoError::Truncated(10))
        ));
    }
}
