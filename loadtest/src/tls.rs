//! `wss://` endpoints, for testing through a TLS ingress: rustls (with ring)
//! trusting the system's root certificates plus, with `--ca-file`, those of a
//! PEM file (a private CA, a test ingress).
//!
//! The client configuration is built once per run and shared by every
//! connection; `ws://` endpoints ignore it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio_tungstenite::Connector;

/// Why TLS could not be set up (the run fails before connecting).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificates in {path}: {reason}", path = .path.display())]
    CaFile { path: PathBuf, reason: String },
    #[error("{path} holds no certificate", path = .path.display())]
    EmptyCaFile { path: PathBuf },
    #[error(
        "no trusted root certificates: the system has none (install ca-certificates) \
         and no --ca-file was given"
    )]
    NoRoots,
    #[error("cannot configure TLS: {0}")]
    Config(#[from] rustls::Error),
}

/// The TLS side of every `wss://` connection of the run.
#[derive(Clone)]
pub struct Tls(Connector);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls(rustls)")
    }
}

impl Tls {
    pub fn new(ca_file: Option<&Path>) -> Result<Self, TlsError> {
        connector(ca_file).map(Self)
    }

    pub fn connector(&self) -> Connector {
        self.0.clone()
    }
}

fn connector(ca_file: Option<&Path>) -> Result<Connector, TlsError> {
    let mut roots = RootCertStore::empty();
    // A broken system store is not fatal: --ca-file may be all that is needed.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let ca_error = |reason: String| TlsError::CaFile {
            path: path.to_owned(),
            reason,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| ca_error(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ca_error(e.to_string()))?;
        if certs.is_empty() {
            return Err(TlsError::EmptyCaFile {
                path: path.to_owned(),
            });
        }
        for cert in certs {
            roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
        }
    }
    if roots.is_empty() {
        return Err(TlsError::NoRoots);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Connector::Rustls(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let missing = Tls::new(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/ca.pem"),
            "{missing}"
        );
        let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls/ca.pem");
        assert!(Tls::new(Some(Path::new(ca))).is_ok());
        let key_only = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls/localhost.key");
        let err = Tls::new(Some(Path::new(key_only))).unwrap_err();
        assert!(err.to_string().contains("no certificate"), "{err}");
    }
}
