//! Test certificates, generated at test time (nothing secret is checked in): a CA, server and client
//! leaves it signs, and the broken ones the negative tests need (another CA, expired, not yet valid).
//! [`Pki::write`] puts them in a directory as PEM files, as a deployment would mount them.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// A certificate and its key, in PEM.
#[derive(Debug, Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// Paths of a certificate and its key written by [`Pki::write`].
#[derive(Debug, Clone)]
pub struct Files {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// When a leaf is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From yesterday for a year.
    Now,
    /// Ended yesterday.
    Expired,
    /// Starts tomorrow.
    NotYetValid,
}

/// A certificate authority that signs leaves.
pub struct Ca {
    pub pem: Pem,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        valid(&mut params, Validity::Now);
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("self-signed ca");
        let pem = Pem { cert: cert.pem(), key: key.serialize_pem() };
        Self { pem, issuer: Issuer::new(params, key) }
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    pub fn server(&self, validity: Validity) -> Pem {
        self.leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth, validity)
    }

    /// A server certificate from this CA naming only `name` (not `localhost` nor `127.0.0.1`):
    /// a client checking host names must refuse it on loopback.
    pub fn server_named(&self, name: &str) -> Pem {
        self.leaf_for(vec![name.to_owned()], name, ExtendedKeyUsagePurpose::ServerAuth, Validity::Now)
    }

    /// A client certificate with common name `name`.
    pub fn client(&self, name: &str, validity: Validity) -> Pem {
        self.leaf(name, ExtendedKeyUsagePurpose::ClientAuth, validity)
    }

    fn leaf(&self, name: &str, usage: ExtendedKeyUsagePurpose, validity: Validity) -> Pem {
        self.leaf_for(vec!["localhost".to_owned(), "127.0.0.1".to_owned()], name, usage, validity)
    }

    fn leaf_for(&self, names: Vec<String>, name: &str, usage: ExtendedKeyUsagePurpose, validity: Validity) -> Pem {
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![usage];
        valid(&mut params, validity);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed leaf");
        Pem { cert: cert.pem(), key: key.serialize_pem() }
    }
}

fn valid(params: &mut CertificateParams, validity: Validity) {
    let now = OffsetDateTime::now_utc();
    let (from, to) = match validity {
        Validity::Now => (now - Duration::days(1), now + Duration::days(365)),
        Validity::Expired => (now - Duration::days(30), now - Duration::days(1)),
        Validity::NotYetValid => (now + Duration::days(1), now + Duration::days(30)),
    };
    params.not_before = from;
    params.not_after = to;
}

/// Everything the TLS tests use, in one directory: `ca.pem` (the trusted CA), `server.{pem,key}`,
/// `client.{pem,key}`, and the refused ones: `rogue-client.*` (signed by another CA),
/// `expired-client.*`, `future-client.*`, `expired-server.*`, `rogue-ca.pem`.
#[derive(Debug)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub rogue_ca: PathBuf,
    pub server: Files,
    pub client: Files,
    pub rogue_client: Files,
    pub expired_client: Files,
    pub future_client: Files,
    pub expired_server: Files,
    /// The CA, to sign more leaves (a rotated server certificate).
    pub authority: Ca,
}

impl Pki {
    /// Generates the set and writes it under `dir`.
    pub fn write(dir: &Path) -> Self {
        let ca = Ca::new("spanline test ca");
        let rogue = Ca::new("rogue ca");
        let put = |name: &str, pem: &Pem| {
            let files = Files { cert: dir.join(format!("{name}.pem")), key: dir.join(format!("{name}.key")) };
            std::fs::write(&files.cert, &pem.cert).expect("write cert");
            std::fs::write(&files.key, &pem.key).expect("write key");
            files
        };
        let server = put("server", &ca.server(Validity::Now));
        let client = put("client", &ca.client("spanline-test-client", Validity::Now));
        let rogue_client = put("rogue-client", &rogue.client("rogue", Validity::Now));
        let expired_client = put("expired-client", &ca.client("expired", Validity::Expired));
        let future_client = put("future-client", &ca.client("future", Validity::NotYetValid));
        let expired_server = put("expired-server", &ca.server(Validity::Expired));
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, &ca.pem.cert).expect("write ca");
        let rogue_ca = dir.join("rogue-ca.pem");
        std::fs::write(&rogue_ca, &rogue.pem.cert).expect("write rogue ca");
        Self {
            dir: dir.to_owned(),
            ca: ca_path,
            rogue_ca,
            server,
            client,
            rogue_client,
            expired_client,
            future_client,
            expired_server,
            authority: ca,
        }
    }
}
