//! TLS (rustls, ring) for the HTTP, Flight and admin listeners.
//!
//! Each listener with a `tls` section gets its certificate through [`Certs`], which a reload
//! swaps in place: connections already open keep the certificate they were made with, new ones
//! get the new one. The admin listener may also require client certificates signed by a
//! configured CA. HTTP/2 is negotiated by ALPN.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// ALPN of the HTTP and admin listeners: HTTP/2 first, then HTTP/1.1.
pub const HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN of the Flight listener: gRPC is HTTP/2 only.
pub const GRPC_ALPN: &[&[u8]] = &[b"h2"];

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A listener's certificate and key, replaceable while it serves.
pub struct Certs {
    current: arc_swap::ArcSwap<CertifiedKey>,
}

impl std::fmt::Debug for Certs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Certs")
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl Certs {
    /// Reads the certificate chain and key `config` names.
    pub fn load(config: &TlsConfig) -> Result<Arc<Certs>, String> {
        Ok(Arc::new(Certs { current: arc_swap::ArcSwap::from_pointee(certified_key(config)?) }))
    }

    /// Puts a certificate read by [`certified_key`] in place for new connections (a reload).
    pub fn install(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }
}

/// Reads the certificate chain and private key `config` names, and checks they match.
pub fn certified_key(config: &TlsConfig) -> Result<CertifiedKey, String> {
    let chain = certificates(&config.cert)?;
    let key = PrivateKeyDer::from_pem_file(&config.key)
        .map_err(|e| format!("{}: not a PEM private key: {e}", config.key.display()))?;
    let key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{}: unusable private key: {e}", config.key.display()))?;
    let certified = CertifiedKey::new(chain, key);
    certified
        .keys_match()
        .map_err(|e| format!("{} and {} do not belong together: {e}", config.cert.display(), config.key.display()))?;
    Ok(certified)
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(chain)
}

/// The acceptor of a listener: its certificate from `certs`, ALPN `alpn`, and client
/// certificates required when `config` names a client CA.
pub fn acceptor(certs: Arc<Certs>, config: &TlsConfig, alpn: &[&[u8]]) -> Result<TlsAcceptor, String> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &config.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca)? {
                roots.add(cert).map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut server = builder.with_cert_resolver(certs);
    server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(server)))
}
