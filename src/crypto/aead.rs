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

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};

use super::CryptoError;

/// Bytes of the random nonce.
pub const NONCE_BYTES: usize = 24;
/// Bytes of the Poly1305 tag.
pub const TAG_BYTES: usize = 16;
/// Bytes a sealed message adds to its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_BYTES + TAG_BYTES;

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
    let cipher = XChaCha20Poly1305::new(key.into());
    let body: &mut [u8] = &mut buf[NONCE_BYTES..];
    let tag = cipher
        .encrypt_inout_detached(&XNonce::from(nonce), aad, body.into())
        .map_err(|_| CryptoError::Authentication)?;
    buf.extend_from_slice(tag.as_slice());
    Ok(buf)
}

/// Verify and decrypt a message produced by [`seal`] with the same `key` and `aad`.
pub fn open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(CryptoError::Truncated(sealed.len()));
    }
    let (nonce, rest) = sealed.split_at(NONCE_BYTES);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_BYTES);
    let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| CryptoError::Authentication)?;
    let tag: [u8; TAG_BYTES] = tag.try_into().map_err(|_| CryptoError::Authentication)?;
    let mut buf = ciphertext.to_vec();
    let cipher = XChaCha20Poly1305::new(key.into());
    cipher
        .decrypt_inout_detached(
            &XNonce::from(nonce),
            aad,
            buf.as_mut_slice().into(),
            &Tag::from(tag),
        )
        .map_err(|_| CryptoError::Authentication)?;
    Ok(buf)
}

/// [`open`] in place: the ciphertext inside `sealed` is decrypted where it lies and returned
/// as a part of it (after the nonce, before the tag). On an error nothing is decrypted.
pub fn open_in_place<'a>(
    key: &[u8; 32],
    aad: &[u8],
    sealed: &'a mut [u8],
) -> Result<&'a [u8], CryptoError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(CryptoError::Truncated(sealed.len()));
    }
    let (nonce, rest) = sealed.split_at_mut(NONCE_BYTES);
    let body_len = rest.len() - TAG_BYTES;
    let (body, tag) = rest.split_at_mut(body_len);
    let nonce: [u8; NONCE_BYTES] = (&*nonce)
        .try_into()
        .map_err(|_| CryptoError::Authentication)?;
    let tag: [u8; TAG_BYTES] = (&*tag)
        .try_into()
        .map_err(|_| CryptoError::Authentication)?;
    XChaCha20Poly1305::new(key.into())
        .decrypt_inout_detached(
            &XNonce::from(nonce),
            aad,
            (&mut *body).into(),
            &Tag::from(tag),
        )
        .map_err(|_| CryptoError::Authentication)?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
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
        let before = forged.clone();
        assert!(open_in_place(&key, b"blob", &mut forged).is_err());
        assert_eq!(forged, before, "nothing decrypted on failure");
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
