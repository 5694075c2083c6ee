//! Cluster identities for QEMU nodes (issue #15.1): a cluster CA and, per node, an Ed25519
//! certificate and key made with rcgen, written as DER files that QEMU hands the node as
//! fw_cfg file items (`opt/xylem/cert`, `opt/xylem/key`, `opt/xylem/ca`; the kernel's
//! `identity` module reads them).
//!
//! A node certificate names the node as `<name>.node.xylem` and `id-<id>.node.xylem` (the
//! names `trust::identity` checks), carries both the server- and client-auth key usages, and
//! is valid from 2025 to 2045 unless a test asks for another window. Each cluster run makes
//! a fresh CA in its own directory, so no key outlives the run; a second CA ("rogue") makes
//! certificates that look right but chain to nobody the cluster trusts.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_ED25519,
};

/// fw_cfg names of the three items.
pub const FW_CFG_CERT: &str = "opt/xylem/cert";
pub const FW_CFG_KEY: &str = "opt/xylem/key";
pub const FW_CFG_CA: &str = "opt/xylem/ca";

/// A certificate authority that signs node certificates.
pub struct ClusterCa {
    name: String,
    dir: PathBuf,
    cert: rcgen::Certificate,
    key: KeyPair,
    issued: std::cell::Cell<u32>,
}

/// The files of one node's identity.
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA the node trusts (normally the one that issued `cert`).
    pub ca: PathBuf,
}

impl NodeIdentity {
    /// The fw_cfg file items for QEMU: (name, file).
    pub fn fw_cfg(&self) -> Vec<(String, PathBuf)> {
        vec![
            (FW_CFG_CERT.into(), self.cert.clone()),
            (FW_CFG_KEY.into(), self.key.clone()),
            (FW_CFG_CA.into(), self.ca.clone()),
        ]
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))
}

impl ClusterCa {
    /// A new CA named `name`, its certificate written to `<dir>/<name>-ca.der`.
    pub fn create(dir: &Path, name: &str) -> Result<ClusterCa, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let key = KeyPair::generate_for(&PKCS_ED25519).map_err(|e| e.to_string())?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("xylem {name} CA"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = rcgen::date_time_ymd(2025, 1, 1);
        params.not_after = rcgen::date_time_ymd(2045, 1, 1);
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        let ca = ClusterCa {
            name: name.into(),
            dir: dir.to_path_buf(),
            cert,
            key,
            issued: std::cell::Cell::new(0),
        };
        write(&ca.cert_path(), ca.cert.der())?;
        Ok(ca)
    }

    /// Where the CA certificate is.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.der", self.name))
    }

    /// Issues a certificate (valid 2025–2045) and a fresh key for node `id` named `name`.
    pub fn issue(&self, id: u64, name: &str) -> Result<NodeIdentity, String> {
        self.issue_valid(id, name, (2025, 2045))
    }

    /// Issues with the validity years `(from, until)` (January 1st of each).
    pub fn issue_valid(
        &self,
        id: u64,
        name: &str,
        years: (i32, i32),
    ) -> Result<NodeIdentity, String> {
        let key = KeyPair::generate_for(&PKCS_ED25519).map_err(|e| e.to_string())?;
        let names = vec![format!("{name}.node.xylem"), format!("id-{id}.node.xylem")];
        let mut params = CertificateParams::new(names).map_err(|e| e.to_string())?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} (id {id})"));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = rcgen::date_time_ymd(years.0, 1, 1);
        params.not_after = rcgen::date_time_ymd(years.1, 1, 1);
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(|e| e.to_string())?;
        // Every issue gets new file names: a re-issued node keeps its old files untouched.
        let serial = self.issued.get();
        self.issued.set(serial + 1);
        let stem = format!("{}-node{id}-{serial}", self.name);
        let identity = NodeIdentity {
            cert: self.dir.join(format!("{stem}.cert.der")),
            key: self.dir.join(format!("{stem}.key.der")),
            ca: self.cert_path(),
        };
        write(&identity.cert, cert.der())?;
        write(&identity.key, &key.serialize_der())?;
        Ok(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_distinct_files_and_keys() {
        let dir = std::env::temp_dir().join(format!("xylem-certs-{}", std::process::id()));
        let ca = ClusterCa::create(&dir, "cluster").unwrap();
        let a = ca.issue(2, "worker-2").unwrap();
        let b = ca.issue(2, "worker-2").unwrap();
        assert_ne!(a.cert, b.cert);
        assert_ne!(
            std::fs::read(&a.key).unwrap(),
            std::fs::read(&b.key).unwrap()
        );
        assert_eq!(a.ca, ca.cert_path());
        let items = a.fw_cfg();
        assert_eq!(items[0].0, FW_CFG_CERT);
        assert!(std::fs::read(&items[2].1).unwrap().len() > 100);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
