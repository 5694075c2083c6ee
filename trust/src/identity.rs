//! What a node's certificate says, and the checks both ends make.
//!
//! A node certificate is an Ed25519 end-entity certificate signed by the cluster CA (made by
//! `cargo xtask` with rcgen). It names the node twice, as DNS names under [`NAME_SUFFIX`]:
//! `<name>.node.xylem` and `id-<id>.node.xylem`, so a certificate binds exactly one (id, name)
//! pair; it carries both the server- and client-auth key usages, since every node is both.
//!
//! Checks:
//! - at boot, [`Identity::self_check`]: the node's own certificate chains to the CA, is valid
//!   now (CMOS RTC), names the configured id and name, and matches the private key (a signature
//!   made with the key verifies under the certificate). A node that fails it refuses to start
//!   the cluster stack and says which check failed;
//! - for a peer, [`check_peer`]: its certificate (already verified by the handshake to chain
//!   to the CA and be valid now) names the peer the node expected — the one the TCP source
//!   address belongs to (server side), or the one it dialled (client side).

use alloc::format;
use alloc::string::String;
use core::time::Duration;

use ed25519_dalek::Signer as _;
use pki_types::{CertificateDer, DnsName, PrivateKeyDer, ServerName, UnixTime};

use crate::provider;

/// The DNS suffix every node name lives under.
pub const NAME_SUFFIX: &str = "node.xylem";

/// A node as the cluster configuration names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerName {
    /// Numeric id (also its fabric address).
    pub id: u64,
    /// Its name (`[a-z0-9-]`, as the node config requires).
    pub name: String,
}

impl PeerName {
    /// A peer.
    pub fn new(id: u64, name: &str) -> PeerName {
        PeerName {
            id,
            name: String::from(name),
        }
    }

    /// `<name>.node.xylem`: the name a client dials and the server presents.
    pub fn dns_name(&self) -> String {
        format!("{}.{NAME_SUFFIX}", self.name)
    }

    /// `id-<id>.node.xylem`: binds the numeric id.
    pub fn id_dns_name(&self) -> String {
        format!("id-{}.{NAME_SUFFIX}", self.id)
    }

    /// The TLS server name of this node.
    pub fn server_name(&self) -> Result<ServerName<'static>, IdentityError> {
        let dns = DnsName::try_from(self.dns_name())
            .map_err(|_| IdentityError::BadName(self.name.clone()))?;
        Ok(ServerName::DnsName(dns))
    }
}

/// Why a certificate or key was refused. Each names the check that failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityError {
    /// The bytes are not a certificate webpki can parse.
    Malformed(String),
    /// The CA certificate cannot be a trust anchor.
    BadCa(String),
    /// The certificate is not signed by the cluster CA.
    NotFromClusterCa,
    /// Not yet valid or expired at `now_unix_s` (RTC time).
    OutsideValidity { now_unix_s: u64 },
    /// The certificate does not name this (id, name): `expected` is the missing DNS name.
    NameMismatch { expected: String },
    /// The name is not usable as a DNS label.
    BadName(String),
    /// The private key is not an Ed25519 PKCS#8 key.
    BadKey,
    /// The private key does not belong to the certificate.
    KeyMismatch,
    /// The peer sent no certificate.
    NoCertificate,
    /// Another certificate problem webpki reports (its words).
    Invalid(String),
}

impl core::fmt::Display for IdentityError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            IdentityError::Malformed(why) => write!(f, "certificate unreadable: {why}"),
            IdentityError::BadCa(why) => write!(f, "CA certificate unusable: {why}"),
            IdentityError::NotFromClusterCa => f.write_str("certificate not from the cluster CA"),
            IdentityError::OutsideValidity { now_unix_s } => {
                write!(f, "certificate not valid at RTC time {now_unix_s}")
            }
            IdentityError::NameMismatch { expected } => {
                write!(f, "certificate does not name {expected}")
            }
            IdentityError::BadName(name) => write!(f, "name {name:?} is not a DNS label"),
            IdentityError::BadKey => f.write_str("private key is not Ed25519 PKCS#8"),
            IdentityError::KeyMismatch => f.write_str("private key does not match the certificate"),
            IdentityError::NoCertificate => f.write_str("peer presented no certificate"),
            IdentityError::Invalid(why) => write!(f, "certificate invalid: {why}"),
        }
    }
}

fn map_webpki(error: webpki::Error, now_unix_s: u64) -> IdentityError {
    match error {
        webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey => {
            IdentityError::NotFromClusterCa
        }
        webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => {
            IdentityError::OutsideValidity { now_unix_s }
        }
        other => IdentityError::Invalid(format!("{other:?}")),
    }
}

fn unix_time(now_unix_s: u64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(now_unix_s))
}

/// Checks that `cert` chains to `ca`, is valid at `now_unix_s` for both key usages, and names
/// `who` (both DNS names).
pub fn check_certificate(
    cert: &CertificateDer<'_>,
    ca: &CertificateDer<'_>,
    who: &PeerName,
    now_unix_s: u64,
) -> Result<(), IdentityError> {
    let anchor =
        webpki::anchor_from_trusted_cert(ca).map_err(|e| IdentityError::BadCa(format!("{e:?}")))?;
    let ee = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| IdentityError::Malformed(format!("{e:?}")))?;
    for usage in [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ] {
        ee.verify_for_usage(
            provider::ALGORITHMS.all,
            core::slice::from_ref(&anchor),
            &[],
            unix_time(now_unix_s),
            usage,
            None,
            None,
        )
        .map_err(|e| map_webpki(e, now_unix_s))?;
    }
    check_names(&ee, who)
}

/// Checks that an already chain-verified certificate names `who`.
pub fn check_peer(cert: &CertificateDer<'_>, who: &PeerName) -> Result<(), IdentityError> {
    let ee = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| IdentityError::Malformed(format!("{e:?}")))?;
    check_names(&ee, who)
}

fn check_names(ee: &webpki::EndEntityCert<'_>, who: &PeerName) -> Result<(), IdentityError> {
    for expected in [who.dns_name(), who.id_dns_name()] {
        let dns = DnsName::try_from(expected.clone())
            .map_err(|_| IdentityError::BadName(who.name.clone()))?;
        ee.verify_is_valid_for_subject_name(&ServerName::DnsName(dns))
            .map_err(|_| IdentityError::NameMismatch { expected })?;
    }
    Ok(())
}

/// A node's own identity: who it is configured to be, and what fw_cfg handed it.
#[derive(Debug)]
pub struct Identity {
    /// The configured id and name.
    pub me: PeerName,
    /// Its certificate (DER).
    pub cert: CertificateDer<'static>,
    /// Its private key (PKCS#8 DER).
    pub key: PrivateKeyDer<'static>,
    /// The cluster CA certificate (DER).
    pub ca: CertificateDer<'static>,
}

impl Identity {
    /// The boot-time check (module docs): chain, validity, names, key.
    pub fn self_check(&self, now_unix_s: u64) -> Result<(), IdentityError> {
        check_certificate(&self.cert, &self.ca, &self.me, now_unix_s)?;
        let key = provider::load_ed25519(&self.key).map_err(|_| IdentityError::BadKey)?;
        let challenge = b"xylem identity self-check";
        let signature = key.sign(challenge).to_bytes();
        let ee = webpki::EndEntityCert::try_from(&self.cert)
            .map_err(|e| IdentityError::Malformed(format!("{e:?}")))?;
        ee.verify_signature(provider::ALGORITHMS.all[0], challenge, &signature)
            .map_err(|_| IdentityError::KeyMismatch)
    }
}
