//! The rustls crypto provider: one TLS 1.3 suite, one key exchange, one signature scheme, all
//! over RustCrypto crates in soft (no SIMD, no SSE) arithmetic, so it runs in the kernel.
//!
//! - Suite: `TLS13_CHACHA20_POLY1305_SHA256` (RFC 8446 §B.4) — ChaCha20-Poly1305 needs no AES
//!   hardware, and it is the AEAD the datagram sealing uses too.
//! - Key exchange: X25519 (RFC 7748).
//! - Signatures: Ed25519 (RFC 8032), for the handshake and for certificates.
//! - Hash / HMAC / HKDF: SHA-256; HKDF comes from rustls' `HkdfUsingHmac` over our HMAC.
//!
//! Why our own rather than `rustls-rustcrypto` (alpha): docs/decisions/0002-tls-provider.md.
//! Randomness is not ours to take: the caller passes the [`SecureRandom`] (RDRAND/RDSEED in
//! the kernel, a seeded generator in host tests).

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::Signer as _;
use hmac::Mac;
use pki_types::{alg_id, AlgorithmIdentifier, InvalidSignature, PrivateKeyDer};
use pki_types::{SignatureVerificationAlgorithm, SubjectPublicKeyInfoDer};
use rustls::crypto::cipher::{
    make_tls13_aad, AeadKey, InboundOpaqueMessage, InboundPlainMessage, Iv, MessageDecrypter,
    MessageEncrypter, Nonce, OutboundOpaqueMessage, OutboundPlainMessage, PrefixedPayload,
    Tls13AeadAlgorithm, UnsupportedOperationError,
};
use rustls::crypto::tls13::HkdfUsingHmac;
use rustls::crypto::{
    hash, hmac as rhmac, ActiveKeyExchange, CryptoProvider, KeyProvider, SecureRandom,
    SharedSecret, SupportedKxGroup, WebPkiSupportedAlgorithms,
};
use rustls::sign::{Signer, SigningKey};
use rustls::{
    CipherSuite, CipherSuiteCommon, ConnectionTrafficSecrets, ContentType, Error, NamedGroup,
    ProtocolVersion, SignatureAlgorithm, SignatureScheme, SupportedCipherSuite, Tls13CipherSuite,
};
use sha2::Digest;

/// The provider with `random` as its only source of randomness. Build it once per node: the
/// key-exchange group that holds `random` is allocated for the program's lifetime (rustls
/// wants `&'static` groups).
pub fn provider(random: &'static dyn SecureRandom) -> CryptoProvider {
    let kx: &'static RandomX25519 = Box::leak(Box::new(RandomX25519 { random }));
    CryptoProvider {
        cipher_suites: vec![TLS13_CHACHA20_POLY1305_SHA256],
        kx_groups: vec![kx],
        signature_verification_algorithms: ALGORITHMS,
        secure_random: random,
        key_provider: &Ed25519Keys,
    }
}

/// The certificate and handshake signature algorithms we verify (Ed25519 only).
pub static ALGORITHMS: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[&Ed25519Verify],
    mapping: &[(SignatureScheme::ED25519, &[&Ed25519Verify])],
};

/// The one suite.
pub static TLS13_CHACHA20_POLY1305_SHA256: SupportedCipherSuite =
    SupportedCipherSuite::Tls13(&Tls13CipherSuite {
        common: CipherSuiteCommon {
            suite: CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            hash_provider: &Sha256,
            // RFC 8446 §5.5 sets no practical limit for ChaCha20-Poly1305.
            confidentiality_limit: u64::MAX,
        },
        hkdf_provider: &HkdfUsingHmac(&HmacSha256),
        aead_alg: &ChaChaAead,
        quic: None,
    });

// ---- hash -------------------------------------------------------------------------------

struct Sha256;

impl hash::Hash for Sha256 {
    fn start(&self) -> Box<dyn hash::Context> {
        Box::new(Sha256Context(sha2::Sha256::new()))
    }

    fn hash(&self, data: &[u8]) -> hash::Output {
        hash::Output::new(&sha2::Sha256::digest(data)[..])
    }

    fn algorithm(&self) -> hash::HashAlgorithm {
        hash::HashAlgorithm::SHA256
    }

    fn output_len(&self) -> usize {
        32
    }
}

struct Sha256Context(sha2::Sha256);

impl hash::Context for Sha256Context {
    fn fork_finish(&self) -> hash::Output {
        hash::Output::new(&self.0.clone().finalize()[..])
    }

    fn fork(&self) -> Box<dyn hash::Context> {
        Box::new(Sha256Context(self.0.clone()))
    }

    fn finish(self: Box<Self>) -> hash::Output {
        hash::Output::new(&self.0.finalize()[..])
    }

    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
}

// ---- HMAC (HKDF is rustls' HkdfUsingHmac over it) ----------------------------------------

struct HmacSha256;

impl rhmac::Hmac for HmacSha256 {
    fn with_key(&self, key: &[u8]) -> Box<dyn rhmac::Key> {
        // HMAC accepts keys of any length (RFC 2104 hashes long ones).
        let mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("any key length");
        Box::new(HmacKey(mac))
    }

    fn hash_output_len(&self) -> usize {
        32
    }
}

struct HmacKey(hmac::Hmac<sha2::Sha256>);

impl rhmac::Key for HmacKey {
    fn sign_concat(&self, first: &[u8], middle: &[&[u8]], last: &[u8]) -> rhmac::Tag {
        let mut mac = self.0.clone();
        mac.update(first);
        for part in middle {
            mac.update(part);
        }
        mac.update(last);
        rhmac::Tag::new(&mac.finalize().into_bytes()[..])
    }

    fn tag_len(&self) -> usize {
        32
    }
}

// ---- AEAD: TLS 1.3 record protection (RFC 8446 §5.2) ---------------------------------------

const TAG_BYTES: usize = 16;

struct ChaChaAead;

impl Tls13AeadAlgorithm for ChaChaAead {
    fn encrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageEncrypter> {
        Box::new(RecordCipher {
            cipher: ChaCha20Poly1305::new_from_slice(key.as_ref()).expect("32-byte key"),
            iv,
        })
    }

    fn decrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageDecrypter> {
        Box::new(RecordCipher {
            cipher: ChaCha20Poly1305::new_from_slice(key.as_ref()).expect("32-byte key"),
            iv,
        })
    }

    fn key_len(&self) -> usize {
        32
    }

    fn extract_keys(
        &self,
        key: AeadKey,
        iv: Iv,
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        Ok(ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv })
    }
}

struct RecordCipher {
    cipher: ChaCha20Poly1305,
    iv: Iv,
}

impl RecordCipher {
    fn nonce(&self, seq: u64) -> chacha20poly1305::Nonce {
        chacha20poly1305::Nonce::from(Nonce::new(&self.iv, seq).0)
    }
}

impl MessageEncrypter for RecordCipher {
    fn encrypt(
        &mut self,
        msg: OutboundPlainMessage<'_>,
        seq: u64,
    ) -> Result<OutboundOpaqueMessage, Error> {
        // TLSInnerPlaintext: content, then the real content type; no padding.
        let total = self.encrypted_payload_len(msg.payload.len());
        let mut payload = PrefixedPayload::with_capacity(total);
        payload.extend_from_chunks(&msg.payload);
        payload.extend_from_slice(&msg.typ.to_array());
        let aad = make_tls13_aad(total);
        let nonce = self.nonce(seq);
        let text_len = msg.payload.len() + 1;
        let buf = payload.as_mut();
        let header = buf.len() - text_len;
        let tag = self
            .cipher
            .encrypt_in_place_detached(&nonce, &aad, &mut buf[header..])
            .map_err(|_| Error::EncryptError)?;
        payload.extend_from_slice(&tag);
        Ok(OutboundOpaqueMessage::new(
            ContentType::ApplicationData,
            ProtocolVersion::TLSv1_2,
            payload,
        ))
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        payload_len + 1 + TAG_BYTES
    }
}

impl MessageDecrypter for RecordCipher {
    fn decrypt<'a>(
        &mut self,
        mut msg: InboundOpaqueMessage<'a>,
        seq: u64,
    ) -> Result<InboundPlainMessage<'a>, Error> {
        let len = msg.payload.len();
        if len < TAG_BYTES {
            return Err(Error::DecryptError);
        }
        let aad = make_tls13_aad(len);
        let nonce = self.nonce(seq);
        let (text, tag) = msg.payload.split_at_mut(len - TAG_BYTES);
        let tag = chacha20poly1305::Tag::clone_from_slice(tag);
        self.cipher
            .decrypt_in_place_detached(&nonce, &aad, text, &tag)
            .map_err(|_| Error::DecryptError)?;
        msg.payload.truncate(len - TAG_BYTES);
        msg.into_tls13_unpadded_message()
    }
}

// ---- key exchange: X25519 --------------------------------------------------------------------

/// X25519 whose secrets come from the provider's [`SecureRandom`] (rustls calls
/// [`SupportedKxGroup::start`] without one, so the group holds it).
#[derive(Debug)]
struct RandomX25519 {
    random: &'static dyn SecureRandom,
}

impl SupportedKxGroup for RandomX25519 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        let mut seed = [0u8; 32];
        self.random
            .fill(&mut seed)
            .map_err(|_| Error::FailedToGetRandomBytes)?;
        let secret = x25519_dalek::StaticSecret::from(seed);
        zeroize::Zeroize::zeroize(&mut seed);
        let public = x25519_dalek::PublicKey::from(&secret);
        Ok(Box::new(X25519Exchange {
            secret,
            public: public.to_bytes(),
        }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

struct X25519Exchange {
    secret: x25519_dalek::StaticSecret,
    public: [u8; 32],
}

impl ActiveKeyExchange for X25519Exchange {
    fn complete(self: Box<Self>, peer_pub_key: &[u8]) -> Result<SharedSecret, Error> {
        let peer: [u8; 32] = peer_pub_key
            .try_into()
            .map_err(|_| Error::from(rustls::PeerMisbehaved::InvalidKeyShare))?;
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(peer));
        // RFC 8446 §7.4.2: an all-zero shared secret (a small-order point) must be refused.
        if !shared.was_contributory() {
            return Err(rustls::PeerMisbehaved::InvalidKeyShare.into());
        }
        Ok(SharedSecret::from(&shared.as_bytes()[..]))
    }

    fn pub_key(&self) -> &[u8] {
        &self.public
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

// ---- signatures: Ed25519 -------------------------------------------------------------------

/// Verifies Ed25519 signatures for webpki (certificates) and rustls (CertificateVerify).
#[derive(Debug)]
struct Ed25519Verify;

impl SignatureVerificationAlgorithm for Ed25519Verify {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        let key: [u8; 32] = public_key.try_into().map_err(|_| InvalidSignature)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|_| InvalidSignature)?;
        let signature =
            ed25519_dalek::Signature::from_slice(signature).map_err(|_| InvalidSignature)?;
        // Strict: refuses malleable signatures and small-order keys.
        key.verify_strict(message, &signature)
            .map_err(|_| InvalidSignature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ED25519
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ED25519
    }
}

/// Loads Ed25519 private keys (PKCS#8 v1 or v2).
#[derive(Debug)]
struct Ed25519Keys;

impl KeyProvider for Ed25519Keys {
    fn load_private_key(
        &self,
        key_der: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn SigningKey>, Error> {
        let key = load_ed25519(&key_der)?;
        Ok(Arc::new(Ed25519SigningKey(Arc::new(key))))
    }
}

/// Parses an Ed25519 PKCS#8 private key.
pub fn load_ed25519(key_der: &PrivateKeyDer<'_>) -> Result<ed25519_dalek::SigningKey, Error> {
    match key_der {
        PrivateKeyDer::Pkcs8(der) => {
            ed25519_dalek::SigningKey::from_pkcs8_der(der.secret_pkcs8_der())
                .map_err(|_| Error::General("not an Ed25519 PKCS#8 key".into()))
        }
        _ => Err(Error::General("the key is not PKCS#8".into())),
    }
}

#[derive(Debug)]
struct Ed25519SigningKey(Arc<ed25519_dalek::SigningKey>);

impl SigningKey for Ed25519SigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ED25519)
            .then(|| Box::new(Ed25519Signer(self.0.clone())) as Box<dyn Signer>)
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        // SubjectPublicKeyInfo for Ed25519 (RFC 8410 §4): a fixed 12-byte prefix + the key.
        const PREFIX: [u8; 12] = [
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        let mut der = Vec::with_capacity(44);
        der.extend_from_slice(&PREFIX);
        der.extend_from_slice(self.0.verifying_key().as_bytes());
        Some(SubjectPublicKeyInfoDer::from(der))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ED25519
    }
}

#[derive(Debug)]
struct Ed25519Signer(Arc<ed25519_dalek::SigningKey>);

impl Signer for Ed25519Signer {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        Ok(self.0.sign(message).to_bytes().to_vec())
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}
