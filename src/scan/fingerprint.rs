//! Keyed fingerprints of secret content.
//!
//! A plain SHA-256 of a short password can be brute-forced, so nothing that leaves the process is
//! an unkeyed digest: every fingerprint is an HMAC-SHA256 under a key that is either shared by the
//! pods of a deployment (`--fingerprint-key-file`, so their fingerprints can be compared) or drawn
//! at random when the process starts. Fingerprints are compared in full inside the process and
//! shown shortened (16 hex digits) outside it.

use std::fmt;
use std::io::{self, Read};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

/// Number of hex digits shown outside the process: 64 bits tell versions apart and reveal nothing.
const SHOWN_HEX_DIGITS: usize = 16;

/// The HMAC key every fingerprint of this process is computed under. Shared, not copied:
/// every group's task and target's reconciler holds one.
#[derive(Clone)]
pub struct FingerprintKey(std::sync::Arc<Keyed>);

/// The key and the HMAC it keys.
struct Keyed {
    /// Raw key bytes; never printed (see the `Debug` impl).
    bytes: Zeroizing<Vec<u8>>,
    /// The HMAC with the key taken in (its two padded key blocks hashed once, not per digest).
    keyed: HmacSha256,
}

impl fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FingerprintKey(..)")
    }
}

impl FingerprintKey {
    /// A key from bytes read out of `--fingerprint-key-file`.
    pub fn new(bytes: Vec<u8>) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        let keyed = HmacSha256::new_from_slice(&bytes).expect("HMAC takes keys of any length");
        FingerprintKey(std::sync::Arc::new(Keyed {
            bytes: Zeroizing::new(bytes),
            keyed,
        }))
    }

    /// A fresh random key: fingerprints are then comparable within this process only.
    pub(crate) fn random() -> io::Result<Self> {
        let mut bytes = vec![0u8; 32];
        getrandom::fill(&mut bytes).map_err(io::Error::other)?;
        Ok(FingerprintKey::new(bytes))
    }

    /// The raw key (for the state file; never logged).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0.bytes
    }

    fn mac(&self) -> HmacSha256 {
        self.0.keyed.clone()
    }

    /// Fingerprints bytes held in memory.
    pub fn digest(&self, content: &[u8]) -> Fingerprint {
        let mut mac = self.mac();
        mac.update(content);
        Fingerprint(mac.finalize().into_bytes().into())
    }

    /// Fingerprints everything `reader` yields, streaming (a large file is never held in memory);
    /// the read buffer is wiped afterwards.
    pub fn digest_reader(&self, mut reader: impl Read) -> io::Result<Fingerprint> {
        let mut mac = self.mac();
        let mut buf = Zeroizing::new(vec![0u8; 64 * 1024]);
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            mac.update(&buf[..n]);
        }
        Ok(Fingerprint(mac.finalize().into_bytes().into()))
    }

    /// Fingerprints a list of named parts (a file set: relative path and per-file fingerprint),
    /// framed so that no two different lists give the same input.
    pub(crate) fn digest_parts<'a>(
        &self,
        parts: impl IntoIterator<Item = (&'a [u8], &'a Fingerprint)>,
    ) -> Fingerprint {
        let mut mac = self.mac();
        for (name, fp) in parts {
            mac.update(&(name.len() as u64).to_le_bytes());
            mac.update(name);
            mac.update(&fp.0);
        }
        Fingerprint(mac.finalize().into_bytes().into())
    }
}

/// A keyed fingerprint. `Display` shows the shortened form that may leave the process.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The full fingerprint (compared in the process, kept in the state file).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The shortened hex form used in `/status`, logs and the exec environment.
    pub(crate) fn short(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(SHOWN_HEX_DIGITS);
        for b in &self.0[..SHOWN_HEX_DIGITS / 2] {
            s.push(HEX[usize::from(b >> 4)] as char);
            s.push(HEX[usize::from(b & 0xf)] as char);
        }
        s
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_content_same_fingerprint() {
        let key = FingerprintKey::new(b"k".to_vec());
        let a = key.digest_reader(&b"hunter2"[..]).unwrap();
        let b = key.digest(b"hunter2");
        assert_eq!(a, b);
        assert_eq!(a.short().len(), 16);
    }

    #[test]
    fn different_keys_differ_and_no_plain_digest_is_shown() {
        let a = FingerprintKey::new(b"k1".to_vec()).digest(b"hunter2");
        let b = FingerprintKey::new(b"k2".to_vec()).digest(b"hunter2");
        assert_ne!(a, b);
        // sha256("hunter2") starts with f52fbd32b2b3b86f; the keyed form must not.
        assert!(!a.short().starts_with("f52fbd32"));
    }

    #[test]
    fn part_framing_distinguishes_boundaries() {
        let key = FingerprintKey::new(b"k".to_vec());
        let fp = key.digest(b"x");
        let one = key.digest_parts([(&b"ab"[..], &fp)]);
        let two = key.digest_parts([(&b"a"[..], &fp)]);
        assert_ne!(one, two);
    }
}
