//! Signing keys: ECDSA P-256 key pairs, the private half kept in cosign's encrypted key
//! format (`ENCRYPTED SIGSTORE PRIVATE KEY`: PKCS#8 sealed with NaCl secretbox under a
//! scrypt-derived key, as `cosign generate-key-pair` writes it; encryption and decryption are
//! the `sigstore` crate's), the public half as a PKIX `PUBLIC KEY` PEM.
//!
//! A key's id is the lowercase hex SHA-256 of its DER (PKIX) public key. Cosign's bundle
//! `publicKey.hint` is the standard base64 of the same hash; [`PublicKey::hint`] gives that
//! form and [`key_id_from_hint`] maps either form back to the id.

use super::SignError;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePublicKey as _, LineEnding};
use sigstore::crypto::signing_key::ecdsa::{ECDSAKeys, EllipticCurve};

/// A trusted (or to-be-trusted) ECDSA P-256 public key.
#[derive(Clone)]
pub struct PublicKey {
    key: VerifyingKey,
    der: Vec<u8>,
    /// The uncompressed SEC1 point, as aws-lc verifies with it.
    point: Vec<u8>,
    key_id: String,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey").field("key_id", &self.key_id).finish()
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}
impl Eq for PublicKey {}

impl PublicKey {
    fn from_verifying_key(key: VerifyingKey) -> Result<Self, SignError> {
        let der = key.to_public_key_der().map_err(|e| SignError::Key(format!("encoding public key: {e}")))?.into_vec();
        let key_id = crate::oci::Digest::sha256(&der).hex().to_string();
        let point = key.to_encoded_point(false).as_bytes().to_vec();
        Ok(PublicKey { key, der, point, key_id })
    }

    /// Reads a PKIX `-----BEGIN PUBLIC KEY-----` PEM holding a P-256 key.
    pub fn from_pem(pem: &str) -> Result<Self, SignError> {
        let key = VerifyingKey::from_public_key_pem(pem.trim())
            .map_err(|e| SignError::Key(format!("not a PEM-encoded ECDSA P-256 public key: {e}")))?;
        Self::from_verifying_key(key)
    }

    /// Reads a DER-encoded PKIX (SubjectPublicKeyInfo) P-256 key.
    pub fn from_der(der: &[u8]) -> Result<Self, SignError> {
        let key = VerifyingKey::from_public_key_der(der)
            .map_err(|e| SignError::Key(format!("not a DER-encoded ECDSA P-256 public key: {e}")))?;
        Self::from_verifying_key(key)
    }

    /// The PKIX PEM (`-----BEGIN PUBLIC KEY-----`), LF line endings.
    pub fn to_pem(&self) -> Result<String, SignError> {
        self.key.to_public_key_pem(LineEnding::LF).map_err(|e| SignError::Key(format!("encoding public key: {e}")))
    }

    /// The DER-encoded PKIX public key.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// Hex SHA-256 of [`PublicKey::der`].
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Cosign's bundle hint for this key: standard base64 of SHA-256 of the DER public key.
    pub fn hint(&self) -> String {
        let bytes = hex::decode(&self.key_id).unwrap_or_default();
        STANDARD.encode(bytes)
    }

    /// Checks an ECDSA-P256-SHA256 signature over `message`. DER (ASN.1) signatures, as
    /// cosign and sigstore-go write them, and fixed-size `r || s` are both accepted; a
    /// high-S signature (Go does not normalise S) is accepted as well.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        // aws-lc: about 5x faster than the pure-Rust p256 verifier on this CPU (the catalog
        // rebuild checks three signatures per plugin version). It accepts high-S values, as
        // cosign does. DER (ASN.1) signatures as cosign writes them; 64-byte r||s as well.
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
        if UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.point).verify(message, signature).is_ok() {
            return true;
        }
        signature.len() == 64
            && UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.point).verify(message, signature).is_ok()
    }
}

/// Maps a bundle hint to a key id: accepts cosign's base64 form and the hex form.
pub fn key_id_from_hint(hint: &str) -> Option<String> {
    let hint = hint.trim();
    if hint.len() == 64 && hint.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(hint.to_ascii_lowercase());
    }
    let bytes = STANDARD
        .decode(hint)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(hint))
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(hint))
        .ok()?;
    (bytes.len() == 32).then(|| hex::encode(bytes))
}

/// An ECDSA P-256 signing key with its public key and its encrypted PEM form.
pub struct KeyPair {
    signing: SigningKey,
    public: PublicKey,
    encrypted_pem: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair").field("key_id", &self.public.key_id).finish_non_exhaustive()
    }
}

impl KeyPair {
    fn from_sigstore(keys: &ECDSAKeys, encrypted_pem: String) -> Result<Self, SignError> {
        if !matches!(keys, ECDSAKeys::P256(_)) {
            return Err(SignError::Key(format!("{keys} key: only ECDSA P-256 keys are supported")));
        }
        let der = keys.as_inner().private_key_to_der().map_err(|e| SignError::Key(e.to_string()))?;
        let signing = SigningKey::from_pkcs8_der(&der)
            .map_err(|e| SignError::Key(format!("not a PKCS#8 ECDSA P-256 private key: {e}")))?;
        let public = PublicKey::from_verifying_key(*signing.verifying_key())?;
        Ok(KeyPair { signing, public, encrypted_pem })
    }

    /// Reads cosign's encrypted private key PEM (`ENCRYPTED SIGSTORE PRIVATE KEY` or the
    /// older `ENCRYPTED COSIGN PRIVATE KEY`). Takes ≈ 85 ms (scrypt).
    pub fn from_encrypted_pem(pem: &str, password: &[u8]) -> Result<Self, SignError> {
        if !pem.contains("-----BEGIN ENCRYPTED") {
            return Err(SignError::Key(
                "not an encrypted cosign private key (expected -----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----)".into(),
            ));
        }
        let keys = ECDSAKeys::from_encrypted_pem(pem.as_bytes(), password)
            .map_err(|e| SignError::KeyDecrypt(e.to_string()))?;
        Self::from_sigstore(&keys, normalise_newlines(pem))
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    pub fn key_id(&self) -> &str {
        self.public.key_id()
    }

    /// The private key in cosign's encrypted format, as generated or loaded.
    pub fn encrypted_private_pem(&self) -> &str {
        &self.encrypted_pem
    }

    /// ECDSA-P256-SHA256 over `message`, DER-encoded. Nonces are RFC 6979 (deterministic),
    /// so the same key and message give the same signature.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let sig: Signature = self.signing.sign(message);
        sig.to_der().as_bytes().to_vec()
    }
}

fn normalise_newlines(s: &str) -> String {
    s.replace("\r\n", "\n")
}

/// Generates an ECDSA P-256 key pair; the private key is encrypted under `password` in
/// cosign's format (an empty password is allowed, as in cosign).
pub fn generate_key(password: &[u8]) -> Result<KeyPair, SignError> {
    let keys = ECDSAKeys::new(EllipticCurve::P256).map_err(|e| SignError::Key(format!("generating key: {e}")))?;
    let pem = keys
        .as_inner()
        .private_key_to_encrypted_pem(password)
        .map_err(|e| SignError::Key(format!("encrypting private key: {e}")))?;
    KeyPair::from_sigstore(&keys, normalise_newlines(&pem))
}

/// A key pair without the encrypted form: tests skip scrypt, which is slow unoptimised.
#[cfg(test)]
pub(crate) fn test_key() -> KeyPair {
    let keys = ECDSAKeys::new(EllipticCurve::P256).expect("generate key");
    KeyPair::from_sigstore(&keys, String::new()).expect("P-256 key")
}

/// Reads an encrypted cosign private key (see [`KeyPair::from_encrypted_pem`]).
pub fn load_private_key(pem: &str, password: &[u8]) -> Result<KeyPair, SignError> {
    KeyPair::from_encrypted_pem(pem, password)
}

/// Reads the encrypted private key at `path`, creating one on first use (cosign's
/// encrypted format, mode 0600, with the public half beside it as `<path>.pub`, mode 0644;
/// both written atomically). Errors are messages naming the path.
pub fn load_or_create_key(path: &std::path::Path, password: &[u8]) -> Result<KeyPair, String> {
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    match std::fs::read_to_string(path) {
        Ok(pem) => return load_private_key(&pem, password).map_err(|e| at(&e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(at(&e)),
    }
    let key = generate_key(password).map_err(|e| at(&e))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| at(&e))?;
    }
    let public = path.with_extension("pub");
    let pem = key.public_key().to_pem().map_err(|e| at(&e))?;
    crate::content::fs::write_atomic(&public, pem.as_bytes(), 0o644).map_err(|e| at(&e))?;
    crate::content::fs::write_atomic(path, key.encrypted_private_pem().as_bytes(), 0o600).map_err(|e| at(&e))?;
    Ok(key)
}

/// Reads a PKIX public key PEM (see [`PublicKey::from_pem`]).
pub fn load_public_key(pem: &str) -> Result<PublicKey, SignError> {
    PublicKey::from_pem(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_takes_der_fixed_size_and_high_s_signatures_and_nothing_else() {
        let k = test_key();
        let der = k.sign(b"payload");
        assert!(k.public_key().verify(b"payload", &der));
        assert!(!k.public_key().verify(b"payload!", &der), "another message");
        assert!(!test_key().public_key().verify(b"payload", &der), "another key");
        let sig = Signature::from_der(&der).unwrap();
        assert!(k.public_key().verify(b"payload", &sig.to_bytes()), "fixed-size r || s");
        // Go's ECDSA does not normalise S: the high-S twin of a valid signature verifies too.
        let (r, s) = (sig.r(), sig.s());
        let high = Signature::from_scalars(r, -*s).unwrap();
        assert!(k.public_key().verify(b"payload", high.to_der().as_bytes()));
        let mut bad = der.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(!k.public_key().verify(b"payload", &bad), "a changed byte");
        assert!(!k.public_key().verify(b"payload", b"not a signature"));
    }
}
