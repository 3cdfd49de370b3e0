//! TLS towards a server (Lumberjack over tokio-rustls; Loki hands the same rustls config to
//! reqwest): the server's CA (`ca_file`, else the platform's trust store), an optional client
//! certificate (`cert_file` + `key_file`, for servers that require mutual TLS), and
//! `verify: false` for test setups only (a warning is logged when it is used).
//!
//! Files are read when the output is built, so a missing or malformed file is an error at
//! startup that names the file, not a failure at the first connection.

use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use schemars::JsonSchema;
use serde::Deserialize;

/// TLS settings.
#[derive(Debug, Clone, Deserialize, serde::Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Use TLS (default `true` once a `tls:` section is given).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// PEM file with the CA certificate(s) that signed the server's certificate; default: the
    /// system's trust store.
    pub ca_file: Option<String>,
    /// PEM client certificate (chain) for mutual TLS; requires `key_file`.
    pub cert_file: Option<String>,
    /// PEM private key of `cert_file` (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<String>,
    /// Check the server's certificate and name (default `true`). `false` is for tests only.
    #[serde(default = "yes")]
    pub verify: bool,
    /// Name to verify the server's certificate against (default: the host name dialed).
    pub server_name: Option<String>,
}

fn yes() -> bool {
    true
}

impl TlsConfig {
    /// Checks the combination of keys, for config validation: (key, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => v.push(("key_file", "`cert_file` needs `key_file`".to_owned())),
            (None, Some(_)) => v.push(("cert_file", "`key_file` needs `cert_file`".to_owned())),
            _ => {}
        }
        v
    }

    /// Builds the rustls client configuration (reads the files).
    pub fn client_config(&self) -> anyhow::Result<Arc<ClientConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS: no usable protocol versions")?;
        let builder = if !self.verify {
            tracing::warn!(
                "tls.verify is false: the server's certificate is not checked (tests only)"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        } else if let Some(ca) = &self.ca_file {
            let mut roots = RootCertStore::empty();
            let certs = read_certs(ca)?;
            for c in certs {
                roots
                    .add(c)
                    .with_context(|| format!("TLS: invalid CA certificate in {ca}"))?;
            }
            builder.with_root_certificates(roots)
        } else {
            use rustls_platform_verifier::BuilderVerifierExt;
            builder
                .with_platform_verifier()
                .context("TLS: cannot load the platform's trust store")?
        };
        let config = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .with_context(|| format!("TLS: cannot read a PEM private key from {key}"))?;
                builder.with_client_auth_cert(chain, key).with_context(|| {
                    format!("TLS: client certificate {cert} does not fit its key")
                })?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => bail!("TLS: `cert_file` and `key_file` go together"),
        };
        Ok(Arc::new(config))
    }

    /// The name to present (SNI) and verify for `host`.
    pub fn server_name(&self, host: &str) -> anyhow::Result<ServerName<'static>> {
        let name = self.server_name.as_deref().unwrap_or(host);
        ServerName::try_from(name.to_owned())
            .with_context(|| format!("TLS: `{name}` is not a valid server name"))
    }
}

fn read_certs(path: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("TLS: cannot read {path}"))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("TLS: invalid PEM in {path}"))?;
    if certs.is_empty() {
        bail!("TLS: no certificate found in {path}");
    }
    Ok(certs)
}

/// Accepts any server certificate (`verify: false`), still checking handshake signatures.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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
