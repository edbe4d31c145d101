//! `--tls-cert` and `--tls-key`: the certificate chain and key, read from
//! PEM files at start, as the rustls configuration `serve` takes.

use std::path::Path;
use std::sync::Arc;

use push_live::rustls::ServerConfig;
use push_live::rustls::pki_types::pem::PemObject as _;
use push_live::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Reads the chain at `cert` and the key at `key` (PEM) into a TLS server
/// configuration (rustls on ring, TLS 1.2 and 1.3; ALPN is filled in by
/// `ServeConfig::with_tls`).
///
/// # Errors
/// A message naming the flag and the file: unreadable, no certificate or no
/// private key in it, PEM that does not parse, or a key that is not the
/// certificate's.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let read = |flag: &str, path: &Path| {
        std::fs::read(path)
            .map_err(|err| format!("{flag} {}: cannot read it: {err}", path.display()))
    };
    let pem = read("--tls-cert", cert)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("--tls-cert {}: not valid PEM: {err}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "--tls-cert {}: no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)",
            cert.display()
        ));
    }
    let pem = read("--tls-key", key)?;
    let private = PrivateKeyDer::from_pem_slice(&pem).map_err(|err| {
        format!(
            "--tls-key {}: no private key in it ({err}; expected PEM: -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)",
            key.display()
        )
    })?;
    let provider = Arc::new(push_live::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("TLS: {err}"))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|err| {
            format!(
                "--tls-cert {} with --tls-key {}: {err}",
                cert.display(),
                key.display()
            )
        })?;
    Ok(Arc::new(config))
}
