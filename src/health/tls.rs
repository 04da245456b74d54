//! TLS for health requests to `https` listens. Certificates are not checked against a trust
//! store: verification is about the path from nginx to the backend, and test or internal
//! sites often use self-signed certificates. The SNI is still sent, so nginx picks the right
//! `server {}`, and whether the certificate names it, and is within its dates, is recorded
//! ([`WrongName`]): a site that the change serves with another site's certificate, or an
//! expired one, loses every browser.

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
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(why) = problem(end_entity, server_name, now.as_secs()) {
            if let Ok(mut slot) = self.wrong_name.lock() {
                *slot = Some(why);
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

/// What browsers refuse in certificate `der` for `server_name` at `now` (seconds since the
/// epoch): its dates (an old file of a renewal put back), else its names.
pub fn problem(der: &[u8], server_name: &ServerName<'_>, now: u64) -> Option<String> {
    if let Some(why) = out_of_date(der, now) {
        return Some(why);
    }
    let ServerName::DnsName(name) = server_name else {
        return None;
    };
    let der = CertificateDer::from(der);
    let named = webpki::EndEntityCert::try_from(&der)
        .and_then(|cert| cert.verify_is_valid_for_subject_name(server_name));
    let names = match named {
        Err(webpki::Error::CertNotValidForName(ctx)) => match ctx.presented.is_empty() {
            true => "no host name in its subjectAltName".to_string(),
            false => format!("it names {}", list_names(&ctx.presented)),
        },
        // Browsers read names only from subjectAltName, which an X.509 v1 certificate
        // (`openssl x509 -req` without an extension file) cannot have.
        Err(webpki::Error::UnsupportedCertVersion) => {
            "an X.509 v1 certificate: no subjectAltName".to_string()
        }
        _ => return None,
    };
    Some(format!(
        "the certificate nginx sent does not name {} ({names}): browsers refuse it",
        name.as_ref()
    ))
}

/// The DER of the first certificate in PEM text (`openssl s_client`'s output).
pub fn first_pem_certificate(text: &str) -> Option<Vec<u8>> {
    let begin = "-----BEGIN CERTIFICATE-----";
    let body = &text[text.find(begin)? + begin.len()..];
    let body = &body[..body.find("-----END CERTIFICATE-----")?];
    base64_decode(body)
}

/// Standard base64, whitespace ignored; `None` for anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        if c == b'=' {
            break;
        }
        acc = acc << 6 | u32::from(value(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Why a certificate is outside its validity dates at `now` (seconds since the epoch), when
/// it is: `the certificate nginx sent expired at 2026-12-06T10:00:00Z: browsers refuse it`.
fn out_of_date(cert: &[u8], now: u64) -> Option<String> {
    let (not_before, not_after) = validity(cert)?;
    let at = |t: u64| {
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t))
    };
    if now > not_after {
        return Some(format!(
            "the certificate nginx sent expired at {}: browsers refuse it",
            at(not_after)
        ));
    }
    (now < not_before).then(|| {
        format!(
            "the certificate nginx sent is not valid before {}: browsers refuse it",
            at(not_before)
        )
    })
}

/// A certificate's notBefore and notAfter (seconds since the epoch), read from its DER:
/// `Certificate { TBSCertificate { [0] version, serial, signature, issuer, validity, ... } }`.
fn validity(der: &[u8]) -> Option<(u64, u64)> {
    let (0x30, cert, _) = tlv(der)? else {
        return None;
    };
    let (0x30, tbs, _) = tlv(cert)? else {
        return None;
    };
    let mut rest = tbs;
    let (tag, _, after) = tlv(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    // serial, signature algorithm, issuer
    for want in [0x02, 0x30, 0x30] {
        let (tag, _, after) = tlv(rest)?;
        if tag != want {
            return None;
        }
        rest = after;
    }
    let (0x30, dates, _) = tlv(rest)? else {
        return None;
    };
    let (t1, before, more) = tlv(dates)?;
    let (t2, after, _) = tlv(more)?;
    Some((der_time(t1, before)?, der_time(t2, after)?))
}

/// One DER element: its tag, its content, what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        n if n < 0x80 => (usize::from(n), rest),
        0x81..=0x84 => {
            let n = usize::from(first - 0x80);
            let bytes = rest.get(..n)?;
            let len = bytes
                .iter()
                .fold(0usize, |acc, &b| acc << 8 | usize::from(b));
            (len, &rest[n..])
        }
        _ => return None,
    };
    Some((tag, rest.get(..len)?, &rest[len..]))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, 0x17) or GeneralizedTime (`YYYYMMDDHHMMSSZ`, 0x18) as seconds
/// since the epoch.
fn der_time(tag: u8, text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, rest) = match (tag, text.len()) {
        (0x17, 12) => {
            let yy: u64 = text[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (0x18, 14) => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    let field = |i: usize| rest.get(i..i + 2)?.parse::<u64>().ok();
    let (month, day, h, m, sec) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || year < 1970 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm), from 1970-01-01.
    let (y, mo) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

/// The names a certificate presents, as webpki writes them (`DnsName("b.test")`,
/// `IpAddress(127.0.0.1)`), bare.
fn list_names(presented: &[String]) -> String {
    let bare = |p: &String| {
        let inner = ["DnsName(", "IpAddress(", "UniformResourceIdentifier("]
            .iter()
            .find_map(|kind| p.strip_prefix(kind)?.strip_suffix(')'))
            .unwrap_or(p);
        inner.trim_matches('"').to_string()
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

/// [`client_config`] offering TLS 1.2 alone: whether a TLS 1.2 client still gets a
/// handshake (`ssl_ciphers` applies to TLS 1.2 only; TLS 1.3 keeps its own suites).
pub fn client_config_tls12() -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let schemes = provider
        .signature_verification_algorithms
        .supported_schemes();
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny {
            schemes,
            wrong_name: WrongName::default(),
        }))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name to send as SNI: a DNS name, or an IP (for which rustls sends no SNI).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_string()).map_err(|e| format!("invalid TLS name {host}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificates_names_are_said_bare() {
        let presented = [
            "DnsName(\"b.test\")".to_string(),
            "IpAddress(127.79.0.1)".to_string(),
            "IpAddress(2001::db8)".to_string(),
            "DirectoryName".to_string(),
        ];
        assert_eq!(
            list_names(&presented),
            "b.test, 127.79.0.1, 2001::db8, DirectoryName"
        );
    }

    #[test]
    fn der_times_read_as_seconds_since_the_epoch() {
        assert_eq!(der_time(0x17, b"261207100000Z"), Some(1_796_637_600));
        assert_eq!(der_time(0x17, b"990228235959Z"), Some(920_246_399));
        assert_eq!(der_time(0x18, b"20500101000000Z"), Some(2_524_608_000));
        assert_eq!(der_time(0x17, b"261307100000Z"), None);
        assert_eq!(der_time(0x17, b"2612071000Z"), None);
        assert_eq!(der_time(0x18, b"261207100000Z"), None);
    }

    #[test]
    fn base64_reads_back() {
        assert_eq!(base64_decode("aGVs\nbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(base64_decode("YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(base64_decode("a!b"), None);
    }

    #[test]
    fn truncated_der_reads_as_nothing() {
        assert_eq!(validity(&[]), None);
        assert_eq!(validity(&[0x30, 0x82, 0xff]), None);
        assert_eq!(validity(&[0x30, 0x03, 0x30, 0x01, 0x02]), None);
    }
}
