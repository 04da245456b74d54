//! TLS for health requests to `https` listens. Certificates are not checked against a trust
//! store: verification is about the path from nginx to the backend, and test or internal
//! sites often use self-signed certificates. The SNI is still sent, so nginx picks the right
//! `server {}`, and whether the certificate names it is recorded ([`WrongName`]): a site that
//! the change serves with another site's certificate loses every browser.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

/// Where a handshake leaves what is wrong with the certificate's names, when something is:
/// `the certificate nginx sent does not name a.test (it names b.test, www.b.test)`.
pub type WrongName = Arc<Mutex<Option<String>>>;

#[derive(Debug)]
struct AcceptAny {
    schemes: Vec<SignatureScheme>,
    wrong_name: WrongName,
}

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let ServerName::DnsName(name) = server_name {
            let named = webpki::EndEntityCert::try_from(end_entity)
                .and_then(|cert| cert.verify_is_valid_for_subject_name(server_name));
            let names = match named {
                Err(webpki::Error::CertNotValidForName(ctx)) => match ctx.presented.is_empty() {
                    true => Some("no host name in its subjectAltName".to_string()),
                    false => Some(format!("it names {}", list_names(&ctx.presented))),
                },
                // Browsers read names only from subjectAltName, which an X.509 v1
                // certificate (`openssl x509 -req` without an extension file) cannot have.
                Err(webpki::Error::UnsupportedCertVersion) => {
                    Some("an X.509 v1 certificate: no subjectAltName".to_string())
                }
                _ => None,
            };
            if let Some(names) = names {
                if let Ok(mut slot) = self.wrong_name.lock() {
                    *slot = Some(format!(
                        "the certificate nginx sent does not name {} ({names}): browsers refuse it",
                        name.as_ref()
                    ));
                }
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

/// The names a certificate presents, as webpki writes them (`DnsName("b.test")`), bare.
fn list_names(presented: &[String]) -> String {
    let bare = |p: &String| match (p.find('"'), p.rfind('"')) {
        (Some(a), Some(b)) if b > a => p[a + 1..b].to_string(),
        _ => p.clone(),
    };
    presented.iter().map(bare).collect::<Vec<_>>().join(", ")
}

/// A client configuration that accepts any server certificate, and says in `wrong_name`
/// when the certificate does not name the SNI it was sent.
pub fn client_config(wrong_name: WrongName) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let schemes = provider
        .signature_verification_algorithms
        .supported_schemes();
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny {
            schemes,
            wrong_name,
        }))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name to send as SNI: a DNS name, or an IP (for which rustls sends no SNI).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_string()).map_err(|e| format!("invalid TLS name {host}: {e}"))
}
