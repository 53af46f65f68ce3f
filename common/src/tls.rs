//! TLS for Spanline's listeners (rustls): a certificate chain and key from PEM files, an optional
//! client CA that makes client certificates required (mTLS), TLS 1.2 or 1.3 as the floor, and the
//! files watched so a rotated certificate is served to new connections without a restart
//! ([`crate::reload`]). Connections already open keep the certificate they started with.

use std::{path::PathBuf, sync::Arc, time::Duration};

use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::reload::{DEFAULT_INTERVAL, ReloadMetrics, Watched};

/// The lowest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

/// TLS settings of a listener. With no `cert_file` the listener speaks plaintext.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerTls {
    /// PEM certificate chain, leaf first. Empty (the default) serves plaintext.
    pub cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the certificate. Required with `cert_file`.
    pub key_file: String,
    /// PEM CA certificates that sign client certificates. Set, every client must present a valid
    /// certificate signed by one of them (mTLS). Default empty: no client certificate asked.
    pub client_ca_file: String,
    /// Lowest TLS version accepted: `"1.2"` (default) or `"1.3"`.
    pub min_version: TlsVersion,
    /// How often the files are read again for a rotated certificate (also at once on SIGHUP).
    /// Default `10s`.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl Default for ServerTls {
    fn default() -> Self {
        Self {
            cert_file: String::new(),
            key_file: String::new(),
            client_ca_file: String::new(),
            min_version: TlsVersion::Tls12,
            reload_interval: DEFAULT_INTERVAL,
        }
    }
}

impl ServerTls {
    pub fn enabled(&self) -> bool {
        !self.cert_file.is_empty()
    }

    /// Checks the settings hang together; `section` names them in the message (`receivers.tls`).
    pub fn validate(&self, section: &str) -> Result<(), String> {
        if self.cert_file.is_empty() != self.key_file.is_empty() {
            return Err(format!("{section}.cert_file and {section}.key_file go together"));
        }
        if !self.enabled() && !self.client_ca_file.is_empty() {
            return Err(format!("{section}.client_ca_file needs {section}.cert_file and key_file"));
        }
        if self.reload_interval < Duration::from_secs(1) {
            return Err(format!("{section}.reload_interval must be at least 1s"));
        }
        Ok(())
    }

    /// Loads the files (an error names the file) and watches them. `alpn` lists the protocols
    /// offered, `h2` first for gRPC.
    pub fn acceptor(
        &self,
        what: &'static str,
        alpn: &[&[u8]],
        metrics: ReloadMetrics,
        token: CancellationToken,
    ) -> Result<TlsAcceptor, String> {
        let mut paths = vec![PathBuf::from(&self.cert_file), PathBuf::from(&self.key_file)];
        if !self.client_ca_file.is_empty() {
            paths.push(PathBuf::from(&self.client_ca_file));
        }
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let (version, files) = (self.min_version, self.clone());
        let build = move |contents: &[Vec<u8>]| server_config(&files, version, &alpn, contents);
        Watched::start(what, paths, self.reload_interval, build, metrics, token).map(TlsAcceptor)
    }
}

/// Accepts TLS connections with the current certificate.
#[derive(Clone, Debug)]
pub struct TlsAcceptor(Watched<ServerConfig>);

impl TlsAcceptor {
    /// The TLS handshake on an accepted connection. The caller bounds how long it may take.
    pub async fn accept(&self, stream: TcpStream) -> std::io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
        tokio_rustls::TlsAcceptor::from(self.0.get()).accept(stream).await
    }
}

/// The crypto provider every Spanline TLS endpoint uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// PEM certificates from `bytes`; none is an error naming `file`.
pub fn certificates(file: &str, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{file}: not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{file}: no certificate in it"));
    }
    Ok(certs)
}

fn server_config(
    files: &ServerTls,
    version: TlsVersion,
    alpn: &[Vec<u8>],
    contents: &[Vec<u8>],
) -> Result<ServerConfig, String> {
    let chain = certificates(&files.cert_file, &contents[0])?;
    // The key file's content never reaches an error message: only its name.
    let key = PrivateKeyDer::from_pem_slice(&contents[1])
        .map_err(|_| format!("{}: no PEM private key in it", files.key_file))?;
    let versions: &[&rustls::SupportedProtocolVersion] = match version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| format!("tls versions: {e}"))?;
    let builder = match contents.get(2) {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(&files.client_ca_file, ca)? {
                roots.add(cert).map_err(|e| format!("{}: {e}", files.client_ca_file))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| format!("{}: {e}", files.client_ca_file))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("{} and {} do not make a usable certificate: {e}", files.cert_file, files.key_file))?;
    config.alpn_protocols = alpn.to_vec();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_in_pairs() {
        let mut tls = ServerTls { cert_file: "c.pem".into(), ..ServerTls::default() };
        assert!(tls.validate("receivers.tls").expect_err("no key").contains("receivers.tls.key_file"));
        tls.key_file = "k.pem".into();
        tls.validate("receivers.tls").expect("pair");
        let ca_only = ServerTls { client_ca_file: "ca.pem".into(), ..ServerTls::default() };
        assert!(ca_only.validate("x").is_err());
    }

    #[test]
    fn a_key_that_is_not_pem_is_named_not_quoted() {
        let files = ServerTls { cert_file: "c.pem".into(), key_file: "k.pem".into(), ..ServerTls::default() };
        let bogus_cert = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec();
        let err = server_config(&files, TlsVersion::Tls12, &[], &[bogus_cert, b"s3cret-key-bytes".to_vec()])
            .expect_err("bad key");
        assert!(err.contains("k.pem") && !err.contains("s3cret"), "{err}");
    }
}
