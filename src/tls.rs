//! TLS pieces shared by rollbackd's clients (PostgreSQL in `pg::tls`,
//! Prometheus in `source::config`): rustls with ring, certificates read from
//! PEM files, and the verifiers libpq's and Prometheus's settings call for.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// The one crypto provider.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why a PEM file cannot be used. The caller names the setting and the
/// file; this says what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PemError {
    /// It cannot be read (the I/O error's words are the message).
    #[error("{0}")]
    Read(std::io::Error),
    #[error("no PEM certificate in it (-----BEGIN CERTIFICATE-----)")]
    NoCertificate,
    #[error("no PEM private key in it (PKCS#8, RSA or EC)")]
    NoKey,
    #[error(
        "the key is encrypted; rollbackd does not decrypt keys: store it unencrypted \
         (openssl pkey -in {path} -out NEW), readable by rollbackd's user alone"
    )]
    Encrypted { path: String },
    /// rustls refused what it holds.
    #[error("{0}")]
    Refused(String),
}

/// Which of a client certificate's two files cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientCertError {
    #[error("cert_file: {0}")]
    CertFile(PemError),
    #[error("key_file: {0}")]
    KeyFile(PemError),
    #[error("cert_file and key_file do not belong together (another key)")]
    Mismatch,
}

/// Every certificate in a PEM file.
pub(crate) fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let pem = std::fs::read(path).map_err(PemError::Read)?;
    CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .ok()
        .filter(|c| !c.is_empty())
        .ok_or(PemError::NoCertificate)
}

/// The private key in a PEM file (PKCS#8, RSA or EC), refusing an
/// encrypted one by name.
pub(crate) fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let pem = std::fs::read(path).map_err(PemError::Read)?;
    if pem.windows(9).any(|w| w == b"ENCRYPTED") {
        return Err(PemError::Encrypted {
            path: path.display().to_string(),
        });
    }
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| PemError::NoKey)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Accepts any certificate: TLS against eavesdropping only (libpq's
/// `require` without a root certificate, Prometheus's
/// `insecure_skip_verify`). The handshake's signatures are still checked.
#[derive(Debug)]
pub(crate) struct AcceptAny(pub Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The system's roots plus the CAs of `ca_file`, re-read when the file
/// changes (as Prometheus's own `tls_config` does); the certificate must
/// carry `server_name` when one is set, else the URL's host.
#[derive(Debug)]
pub(crate) struct ReloadingVerifier {
    ca_file: Option<PathBuf>,
    server_name: Option<ServerName<'static>>,
    provider: Arc<CryptoProvider>,
    current: Mutex<(Option<SystemTime>, Arc<dyn ServerCertVerifier>)>,
}

impl ReloadingVerifier {
    /// Reads `ca_file` now: `Err` when it cannot be used.
    pub(crate) fn new(
        ca_file: Option<PathBuf>,
        server_name: Option<ServerName<'static>>,
    ) -> Result<ReloadingVerifier, PemError> {
        let provider = provider();
        let verifier = Self::build(ca_file.as_deref(), &provider)?;
        let stamp = ca_file.as_deref().and_then(modified);
        Ok(ReloadingVerifier {
            ca_file,
            server_name,
            provider,
            current: Mutex::new((stamp, verifier)),
        })
    }

    fn build(
        ca_file: Option<&Path>,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Arc<dyn ServerCertVerifier>, PemError> {
        let extra = match ca_file {
            Some(path) => certificates(path)?,
            None => Vec::new(),
        };
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
            .map(|v| Arc::new(v) as Arc<dyn ServerCertVerifier>)
            .map_err(|e| PemError::Refused(e.to_string()))
    }

    /// The verifier for the file as it is now; a file that became
    /// unusable keeps the last good one, said in the log.
    fn verifier(&self) -> Arc<dyn ServerCertVerifier> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(path) = &self.ca_file {
            let stamp = modified(path);
            if stamp != current.0 {
                match Self::build(Some(path), &self.provider) {
                    Ok(verifier) => {
                        tracing::info!(file = %path.display(), "CA file changed: re-read");
                        *current = (stamp, verifier);
                    }
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "CA file changed but cannot be used: keeping the previous CAs");
                        current.0 = stamp;
                    }
                }
            }
        }
        current.1.clone()
    }
}

impl ServerCertVerifier for ReloadingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = self.server_name.as_ref().unwrap_or(server_name);
        self.verifier()
            .verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verifier().supported_verify_schemes()
    }
}

/// When the certificate and key files were last changed.
type Stamps = (Option<SystemTime>, Option<SystemTime>);

/// A client certificate and key re-read when either file changes.
#[derive(Debug)]
pub(crate) struct ReloadingClientCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Mutex<(Stamps, Arc<CertifiedKey>)>,
}

impl ReloadingClientCert {
    /// Reads both files now: `Err` names the one that cannot be used.
    pub(crate) fn new(
        cert_file: PathBuf,
        key_file: PathBuf,
    ) -> Result<ReloadingClientCert, ClientCertError> {
        let provider = provider();
        let key = Self::load(&cert_file, &key_file, &provider)?;
        let stamp = (modified(&cert_file), modified(&key_file));
        Ok(ReloadingClientCert {
            cert_file,
            key_file,
            provider,
            current: Mutex::new((stamp, key)),
        })
    }

    fn load(
        cert_file: &Path,
        key_file: &Path,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Arc<CertifiedKey>, ClientCertError> {
        let chain = certificates(cert_file).map_err(ClientCertError::CertFile)?;
        let key = private_key(key_file).map_err(ClientCertError::KeyFile)?;
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| ClientCertError::KeyFile(PemError::Refused(e.to_string())))?;
        let certified = CertifiedKey::new(chain, signing);
        match certified.keys_match() {
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                return Err(ClientCertError::Mismatch)
            }
            Err(rustls::Error::InconsistentKeys(_)) | Ok(()) => {}
            Err(e) => return Err(ClientCertError::CertFile(PemError::Refused(e.to_string()))),
        }
        Ok(Arc::new(certified))
    }
}

impl ResolvesClientCert for ReloadingClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let stamp = (modified(&self.cert_file), modified(&self.key_file));
        if stamp != current.0 {
            match Self::load(&self.cert_file, &self.key_file, &self.provider) {
                Ok(key) => {
                    tracing::info!(file = %self.cert_file.display(), "client certificate changed: re-read");
                    *current = (stamp, key);
                }
                Err(e) => {
                    tracing::warn!(file = %self.cert_file.display(), error = %e, "client certificate changed but cannot be used: keeping the previous one");
                    current.0 = stamp;
                }
            }
        }
        Some(current.1.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// `verify-ca` (and a root certificate under weaker modes): the chain must
/// lead to a trusted root; the name is not checked. webpki checks the name
/// only after the chain, so a name error means the chain was good.
#[derive(Debug)]
pub(crate) struct ChainOnly(pub Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
