//! PEM material of a version: is it usable, and when do its certificates expire?
//!
//! A writer that replaces a certificate and then its key (or the other way round) passes through
//! a version whose key does not match its certificate; reloading nginx into it fails ("key values
//! mismatch"). So every PEM block must parse, and every private key of a group that holds
//! certificates must match one of them (its public part equals a certificate's subject public
//! key). A version that fails is held back, not reloaded.
//!
//! Keys are compared through the public part they carry: RSA keys (PKCS#1 or PKCS#8) always do;
//! EC keys (SEC1 or PKCS#8) do when written by OpenSSL, Go or cert-manager; PKCS#8 v2 keys carry
//! it for any algorithm. Keys without it (encrypted keys, PKCS#8 v1 Ed25519) are reported as not
//! checked and do not block. Nothing here ever prints key or certificate bytes.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use der::Decode;
use der::asn1::ObjectIdentifier;
use x509_cert::Certificate;

const RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

/// Certificate files named in a message about a key that matches none.
const LISTED: usize = 5;

/// A public key in a comparable form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PublicKey {
    /// RSA modulus and exponent, without leading zero bytes.
    Rsa(Vec<u8>, Vec<u8>),
    /// Any other algorithm: the raw subjectPublicKey bits (an EC point, an Ed25519 key).
    Raw(Vec<u8>),
}

/// The first certificate of a file.
#[derive(Debug, Clone)]
pub(crate) struct Leaf {
    /// The file.
    pub path: PathBuf,
    /// The certificate (public material), for comparisons with what an app serves.
    pub der: Vec<u8>,
    /// Its serial number, hexadecimal as openssl prints it.
    pub serial: String,
    /// Its `notAfter`.
    pub not_after: SystemTime,
}

/// A certificate's serial number in hexadecimal, two digits per byte as openssl prints it
/// (`openssl x509 -serial`, nginx's `$ssl_client_serial`), without DER's sign byte.
pub(crate) fn serial_hex(cert: &Certificate) -> String {
    let bytes = cert.tbs_certificate().serial_number().as_bytes();
    let start = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    bytes[start..].iter().map(|b| format!("{b:02X}")).collect()
}

/// What the PEM files of one version hold.
#[derive(Debug, Default)]
pub(crate) struct PemCheck {
    /// Public keys of the certificates, with their file.
    certs: Vec<(PathBuf, PublicKey)>,
    /// Public parts of the private keys, with their file.
    keys: Vec<(PathBuf, PublicKey)>,
    /// Earliest `notAfter` of the certificates of each file.
    pub expiry: Vec<(PathBuf, SystemTime)>,
    /// The first certificate of each file (a leaf comes before its chain): what an app that
    /// serves this file presents. Kept only with `keep_leaves`.
    pub leaves: Vec<Leaf>,
    /// Whether to keep `leaves`.
    pub keep_leaves: bool,
    /// Where each file's entry of `expiry` is, and whether it has a leaf: looked up once per
    /// certificate (a group of thousands of certificate files).
    seen: std::collections::HashMap<PathBuf, (usize, bool)>,
    /// Why the version is not usable.
    pub problems: Vec<String>,
    /// What could not be checked.
    pub notes: Vec<String>,
}

impl PemCheck {
    /// A check that keeps the first certificate of each file (`leaves`) when `leaves` is true.
    pub(crate) fn new(leaves: bool) -> Self {
        PemCheck {
            keep_leaves: leaves,
            ..PemCheck::default()
        }
    }

    /// Inspects one file; files without a PEM header are ignored.
    pub(crate) fn add_file(&mut self, path: &Path, content: &[u8]) {
        if !contains(content, b"-----BEGIN ") {
            return;
        }
        let shown = crate::text::path(path);
        let mut rest = content;
        let mut index = 0;
        while let Some(start) = find(rest, b"-----BEGIN ") {
            index += 1;
            let block = &rest[start..];
            let label_end = find(&block[11..], b"-----").map(|i| i + 11);
            let Some(label) = label_end.and_then(|e| std::str::from_utf8(&block[11..e]).ok())
            else {
                self.problems
                    .push(format!("{shown}: PEM block {index} has a broken header"));
                return;
            };
            let footer = format!("-----END {label}-----");
            let Some(end) = find(block, footer.as_bytes()).map(|i| i + footer.len()) else {
                self.problems.push(format!(
                    "{shown}: PEM block {index} ({}) has no end: the file is cut short",
                    crate::text::value(label)
                ));
                return;
            };
            self.add_block(path, index, &block[..end]);
            rest = &block[end..];
        }
    }

    fn add_block(&mut self, path: &Path, index: usize, block: &[u8]) {
        let shown = crate::text::path(path);
        // The DER of a private key is the key itself: wiped when dropped.
        let (label, der) = match der::pem::decode_vec(block) {
            Ok((label, der)) => (label.to_string(), zeroize::Zeroizing::new(der)),
            Err(e) => {
                self.problems
                    .push(format!("{shown}: PEM block {index} does not decode ({e})"));
                return;
            }
        };
        let parsed = match label.as_str() {
            "CERTIFICATE" => self.add_certificate(path, &der),
            "PRIVATE KEY" => private_key_pkcs8(&der).map(|k| self.add_key(path, k)),
            "RSA PRIVATE KEY" => private_key_pkcs1(&der).map(|k| self.add_key(path, Some(k))),
            "EC PRIVATE KEY" => private_key_sec1(&der).map(|k| self.add_key(path, k)),
            "ENCRYPTED PRIVATE KEY" => {
                self.notes.push(format!(
                    "{shown}: encrypted private key: not checked against the certificates"
                ));
                Ok(())
            }
            _ => Ok(()), // CA bundles, parameters, CSRs: nothing to check.
        };
        if let Err(e) = parsed {
            self.problems.push(format!(
                "{shown}: PEM block {index} ({}) does not parse ({e})",
                crate::text::value(&label)
            ));
        }
    }

    fn add_certificate(&mut self, path: &Path, der: &[u8]) -> der::Result<()> {
        let cert = Certificate::from_der(der)?;
        let tbs = cert.tbs_certificate();
        let not_after = tbs.validity().not_after.to_system_time();
        match self.seen.get_mut(path) {
            Some((at, _)) => {
                let t = &mut self.expiry[*at].1;
                *t = (*t).min(not_after);
            }
            None => {
                self.seen
                    .insert(path.to_path_buf(), (self.expiry.len(), false));
                self.expiry.push((path.to_path_buf(), not_after));
            }
        }
        if let Some((_, leaf)) = self.seen.get_mut(path)
            && self.keep_leaves
            && !*leaf
        {
            *leaf = true;
            self.leaves.push(Leaf {
                path: path.to_path_buf(),
                der: der.to_vec(),
                serial: serial_hex(&cert),
                not_after,
            });
        }
        let spki = tbs.subject_public_key_info();
        let bits = spki.subject_public_key.raw_bytes();
        let key = if spki.algorithm.oid == RSA {
            let rsa = pkcs1::RsaPublicKey::<der::asn1::UintRef<'_>>::from_der(bits)?;
            PublicKey::Rsa(
                trim(rsa.modulus.as_bytes()),
                trim(rsa.public_exponent.as_bytes()),
            )
        } else {
            PublicKey::Raw(bits.to_vec())
        };
        self.certs.push((path.to_path_buf(), key));
        Ok(())
    }

    fn add_key(&mut self, path: &Path, key: Option<PublicKey>) {
        match key {
            Some(k) => self.keys.push((path.to_path_buf(), k)),
            None => self.notes.push(format!(
                "{}: the private key does not carry its public part: not checked against the certificates",
                crate::text::path(path)
            )),
        }
    }

    /// Finishes the check: keys that match none of the group's certificates are problems.
    pub(crate) fn finish(mut self) -> PemCheck {
        if !self.certs.is_empty() {
            let certs: std::collections::HashSet<&PublicKey> =
                self.certs.iter().map(|(_, c)| c).collect();
            let mut listed: Vec<String> = self
                .certs
                .iter()
                .take(LISTED)
                .map(|(p, _)| crate::text::path(p))
                .collect();
            if self.certs.len() > LISTED {
                listed.push(format!("{} more", self.certs.len() - LISTED));
            }
            for (path, key) in &self.keys {
                if !certs.contains(key) {
                    self.problems.push(format!(
                        "{}: the private key matches no certificate ({}): a writer may be half-way through \
                         replacing them",
                        crate::text::path(path),
                        listed.join(", ")
                    ));
                }
            }
        }
        self
    }
}

fn private_key_pkcs1(der: &[u8]) -> der::Result<PublicKey> {
    let k = pkcs1::RsaPrivateKey::<der::asn1::UintRef<'_>>::from_der(der)?;
    Ok(PublicKey::Rsa(
        trim(k.modulus.as_bytes()),
        trim(k.public_exponent.as_bytes()),
    ))
}

fn private_key_sec1(der: &[u8]) -> der::Result<Option<PublicKey>> {
    let k = sec1::EcPrivateKey::from_der(der)?;
    Ok(k.public_key.map(|p| PublicKey::Raw(p.to_vec())))
}

fn private_key_pkcs8(der: &[u8]) -> der::Result<Option<PublicKey>> {
    let info = pkcs8::PrivateKeyInfoRef::from_der(der)?;
    if let Some(public) = &info.public_key {
        return Ok(Some(PublicKey::Raw(public.raw_bytes().to_vec())));
    }
    let inner = info.private_key.as_bytes();
    match info.algorithm.oid {
        oid if oid == RSA => private_key_pkcs1(inner).map(Some),
        oid if oid == EC => private_key_sec1(inner),
        _ => Ok(None),
    }
}

fn trim(bytes: &[u8]) -> Vec<u8> {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes[first..].to_vec()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_truncation_are_problems() {
        let mut c = PemCheck::default();
        c.add_file(
            Path::new("/v/a.crt"),
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        c.add_file(Path::new("/v/b.crt"), b"-----BEGIN CERTIFICATE-----\nMIIB");
        c.add_file(Path::new("/v/plain.txt"), b"password");
        let c = c.finish();
        assert_eq!(c.problems.len(), 2, "{:?}", c.problems);
        assert!(c.problems[0].contains("a.crt"));
        assert!(c.problems[1].contains("cut short"));
    }

    #[test]
    fn key_without_certificates_is_fine() {
        let mut c = PemCheck::default();
        c.keys
            .push((PathBuf::from("/v/jwt.key"), PublicKey::Raw(vec![1, 2])));
        assert!(c.finish().problems.is_empty());
    }

    #[test]
    fn rsa_comparison_ignores_leading_zeros() {
        assert_eq!(trim(&[0, 0, 1, 2]), vec![1, 2]);
        assert_eq!(
            PublicKey::Rsa(trim(&[0, 5]), vec![1]),
            PublicKey::Rsa(vec![5], vec![1])
        );
    }
}
