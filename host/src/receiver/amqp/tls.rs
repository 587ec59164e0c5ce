//! TLS for `amqps://` (rustls, ring): which certificate authorities are trusted, and what a
//! failed handshake means.
//!
//! **Trust.** The system's roots, as `rustls-native-certs` reads them: the platform store, or
//! in its place the PEM file `SSL_CERT_FILE` and the directories `SSL_CERT_DIR` when either is
//! set (OpenSSL's convention). On top of them, the CA certificates of the source's or sink's
//! `ca-file` (PEM; a path relative to the pipeline file), for a broker whose certificate a
//! private CA signed.
//!
//! **Classification.** A certificate this host does not trust (an unknown issuer, a name it is
//! not valid for, expired, revoked, malformed) will fail the same way on every retry: it is a
//! fatal error whose message names the endpoint, says why the certificate is not trusted and
//! how to trust its CA. Any other handshake failure (the connection dropped, a timeout) is
//! transient, as a refused connection is.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::net::TcpStream;

use super::config::AmqpEndpoint;
use crate::receiver::ReceiverError;

/// Extra trusted CA certificates (from `ca-file`), shared by every connection of a source or
/// sink.
pub type ExtraRoots = Arc<Vec<CertificateDer<'static>>>;

/// Reads the CA certificates of `path` (PEM, one or more `CERTIFICATE` sections), when a
/// source or sink with `ca-file` is built. `key` names the key for the message.
pub fn load_ca_file(path: &Path, key: &str) -> Result<ExtraRoots, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("key `{key}`: cannot read {}: {e}", path.display()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("key `{key}`: {} is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "key `{key}`: {} holds no certificate (expected PEM `-----BEGIN CERTIFICATE-----` sections)",
            path.display()
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in &certs {
        roots.add(cert.clone()).map_err(|e| {
            format!(
                "key `{key}`: {}: a certificate cannot be a trust anchor: {e}",
                path.display()
            )
        })?;
    }
    Ok(Arc::new(certs))
}

/// Runs the TLS handshake with `endpoint` over `tcp`, trusting the system's roots and `extra`.
/// Called by every `amqps://` connect; the error is classified (see the module's doc).
pub async fn handshake(
    tcp: TcpStream,
    endpoint: &AmqpEndpoint,
    extra: &[CertificateDer<'static>],
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ReceiverError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    for cert in extra {
        let _ = roots.add(cert.clone());
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ReceiverError::Fatal(format!("amqp {endpoint}: TLS set-up: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone()).map_err(|e| {
        ReceiverError::Fatal(format!(
            "amqp {endpoint}: {:?} is not a TLS server name: {e}",
            endpoint.host
        ))
    })?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| classify(endpoint, &e))
}

/// What a failed handshake means: an untrusted certificate is fatal, the rest transient.
pub fn classify(endpoint: &AmqpEndpoint, e: &std::io::Error) -> ReceiverError {
    let cert = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|r| match r {
            rustls::Error::InvalidCertificate(c) => Some(c),
            _ => None,
        });
    let Some(cert) = cert else {
        return ReceiverError::Transient(format!("amqp {endpoint}: TLS handshake: {e}"));
    };
    use rustls::CertificateError as C;
    let why = match cert {
        C::UnknownIssuer => {
            "it is not signed by a certificate authority this host trusts".to_owned()
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => format!(
            "it is not valid for the host name {:?} (it was issued for another name)",
            endpoint.host
        ),
        C::Expired | C::ExpiredContext { .. } => "it has expired".to_owned(),
        C::NotValidYet | C::NotValidYetContext { .. } => "it is not valid yet".to_owned(),
        C::Revoked => "it was revoked".to_owned(),
        other => format!("{other:?}"),
    };
    ReceiverError::Fatal(format!(
        "amqp {endpoint}: the broker's TLS certificate is not trusted: {why} ({e}); to trust a private CA, give its PEM file as `ca-file` (or set SSL_CERT_FILE); to reach another name, fix the host in `url`"
    ))
}
