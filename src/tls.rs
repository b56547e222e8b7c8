//! The server's TLS identity: a configured PEM chain and key, or a self-signed
//! ECDSA P-256 certificate short-lived enough (at most 14 days) for browsers to
//! pin by hash with `serverCertificateHashes`, renewed while the server runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use wtransport::Identity;
use wtransport::tls::{Certificate, CertificateChain, PrivateKey};

use crate::config::Config;
use wtransport::tls::WEBTRANSPORT_ALPN;
use wtransport::tls::rustls;
use wtransport::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Longest validity Chromium accepts for a certificate pinned by hash.
pub const MAX_PINNED_VALIDITY: Duration = Duration::from_secs(14 * 24 * 3600);
/// Validity of each self-signed certificate (plus an hour's backdating).
pub const SELF_SIGNED_VALIDITY: Duration = Duration::from_secs(13 * 24 * 3600);
/// Backdating of `not_before`, for clients whose clocks run a little slow.
const BACKDATE: Duration = Duration::from_secs(3600);
/// A self-signed certificate is replaced when this much validity is left.
const RENEW_BEFORE_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Where the certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// PEM files of a real certificate chain and its key.
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
    /// A self-signed certificate for these names (plus the loopback names).
    SelfSigned {
        /// Extra subject alternative names.
        names: Vec<String>,
    },
}

impl CertSource {
    /// `--cert`/`--key`, else `certs/cert.pem` + `certs/key.pem` when both
    /// exist (unless `--self-signed`), else self-signed.
    pub fn from_config(config: &Config) -> CertSource {
        if let (Some(cert), Some(key)) = (&config.cert, &config.key) {
            return CertSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            };
        }
        let (cert, key) = (Path::new("certs/cert.pem"), Path::new("certs/key.pem"));
        if !config.self_signed && cert.is_file() && key.is_file() {
            return CertSource::Files {
                cert: cert.to_owned(),
                key: key.to_owned(),
            };
        }
        CertSource::SelfSigned {
            names: config.cert_names.clone(),
        }
    }
}

/// A loaded identity and what clients need to know about it.
pub struct TlsIdentity {
    /// Certificate chain and key for the endpoint.
    pub identity: Identity,
    /// SHA-256 of the leaf certificate's DER when it is self-signed (browsers
    /// pin it); `None` for a CA-issued certificate.
    pub pinned_hash: Option<[u8; 32]>,
    /// When to replace a self-signed certificate; `None` for files.
    pub renew_in: Option<Duration>,
}

/// Loads or makes the identity described by `source`.
pub async fn load(source: &CertSource) -> anyhow::Result<TlsIdentity> {
    match source {
        CertSource::Files { cert, key } => {
            let identity = Identity::load_pemfiles(cert, key)
                .await
                .with_context(|| format!("loading {} and {}", cert.display(), key.display()))?;
            Ok(TlsIdentity {
                identity,
                pinned_hash: None,
                renew_in: None,
            })
        }
        CertSource::SelfSigned { names } => self_signed(names, SELF_SIGNED_VALIDITY),
    }
}

/// Makes a self-signed ECDSA P-256 certificate for `localhost`, `127.0.0.1`,
/// `::1` and `names`, valid from an hour ago for `validity`.
pub fn self_signed(names: &[String], validity: Duration) -> anyhow::Result<TlsIdentity> {
    anyhow::ensure!(
        validity + BACKDATE <= MAX_PINNED_VALIDITY,
        "pinned certificates may be valid for at most 14 days"
    );
    let mut sans = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    sans.extend(names.iter().cloned());
    let mut params = rcgen::CertificateParams::new(sans).context("certificate names")?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "quicmatch self-signed");
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + validity;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = params.self_signed(&key)?;
    let der = cert.der().to_vec();
    let hash: [u8; 32] = Sha256::digest(&der).into();
    let identity = Identity::new(
        CertificateChain::single(Certificate::from_der(der)?),
        PrivateKey::from_der_pkcs8(key.serialize_der()),
    );
    Ok(TlsIdentity {
        identity,
        pinned_hash: Some(hash),
        renew_in: Some(validity.saturating_sub(RENEW_BEFORE_EXPIRY)),
    })
}

/// The TLS settings of the WebTransport endpoints: TLS 1.3 only, ALPN `h3`,
/// and the suites TLS_AES_128_GCM_SHA256 and TLS_CHACHA20_POLY1305_SHA256,
/// in the client's order. Leaving out TLS_AES_256_GCM_SHA384, which rustls
/// clients list first, saves its SHA-384 (in software on common CPUs, where
/// SHA-256 has instructions) and AES-256's extra rounds on every packet;
/// every TLS 1.3 client implements AES-128-GCM (RFC 8446 §9.1), browsers
/// already prefer it, and a client without AES hardware still gets
/// ChaCha20 if it asks for it first.
pub fn server_tls_config(identity: &Identity) -> anyhow::Result<rustls::ServerConfig> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.retain(|suite| {
        matches!(
            suite.suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
        )
    });
    let chain = identity
        .certificate_chain()
        .as_slice()
        .iter()
        .map(|cert| CertificateDer::from(cert.der().to_vec()))
        .collect();
    let key = PrivateKeyDer::try_from(identity.private_key().secret_der().to_vec())
        .map_err(|error| anyhow::anyhow!("private key: {error}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![WEBTRANSPORT_ALPN.to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Runs a TLS handshake in memory between a rustls client offering
    /// `suites` (in that order) and the server's configuration; returns the
    /// suite the server chose.
    fn negotiate(suites: &[rustls::CipherSuite]) -> Option<rustls::CipherSuite> {
        let tls = self_signed(&[], SELF_SIGNED_VALIDITY).unwrap();
        let leaf = tls.identity.certificate_chain().as_slice()[0]
            .der()
            .to_vec();
        let server_config = Arc::new(server_tls_config(&tls.identity).unwrap());

        let mut provider = rustls::crypto::ring::default_provider();
        let all = std::mem::take(&mut provider.cipher_suites);
        provider.cipher_suites = suites
            .iter()
            .filter_map(|&wanted| all.iter().find(|suite| suite.suite() == wanted).copied())
            .collect();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(leaf)).unwrap();
        let mut client_config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client_config.alpn_protocols = vec![WEBTRANSPORT_ALPN.to_vec()];
        let mut client =
            rustls::ClientConnection::new(Arc::new(client_config), "localhost".try_into().unwrap())
                .unwrap();
        let mut server = rustls::ServerConnection::new(server_config).unwrap();

        for _ in 0..10 {
            let mut bytes = Vec::new();
            client.write_tls(&mut bytes).unwrap();
            server.read_tls(&mut bytes.as_slice()).unwrap();
            if server.process_new_packets().is_err() {
                return None;
            }
            bytes.clear();
            server.write_tls(&mut bytes).unwrap();
            client.read_tls(&mut bytes.as_slice()).unwrap();
            client.process_new_packets().unwrap();
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
        }
        assert!(!server.is_handshaking(), "handshake did not finish");
        assert_eq!(server.alpn_protocol(), Some(&WEBTRANSPORT_ALPN[..]));
        server.negotiated_cipher_suite().map(|suite| suite.suite())
    }

    #[test]
    fn aes_128_unless_the_client_prefers_chacha20() {
        use rustls::CipherSuite::*;
        // rustls's default order, as the native client and the load generator send it.
        let rustls_order = [
            TLS13_AES_256_GCM_SHA384,
            TLS13_AES_128_GCM_SHA256,
            TLS13_CHACHA20_POLY1305_SHA256,
        ];
        assert_eq!(negotiate(&rustls_order), Some(TLS13_AES_128_GCM_SHA256));
        // A client without AES hardware.
        let chacha_first = [TLS13_CHACHA20_POLY1305_SHA256, TLS13_AES_128_GCM_SHA256];
        assert_eq!(
            negotiate(&chacha_first),
            Some(TLS13_CHACHA20_POLY1305_SHA256)
        );
        // AES-256 alone is not offered by any conforming client, and refused.
        assert_eq!(negotiate(&[TLS13_AES_256_GCM_SHA384]), None);
    }

    #[test]
    fn self_signed_is_pinnable() {
        let tls = self_signed(&["example.test".into()], SELF_SIGNED_VALIDITY).unwrap();
        let leaf = &tls.identity.certificate_chain().as_slice()[0];
        assert_eq!(tls.pinned_hash, Some(*leaf.hash().as_ref()));
        let (_, x509) = x509_parser::parse_x509_certificate(leaf.der()).unwrap();
        let validity =
            x509.validity().not_after.timestamp() - x509.validity().not_before.timestamp();
        assert!(validity as u64 <= MAX_PINNED_VALIDITY.as_secs());
        let key = x509.public_key().parsed().unwrap();
        assert!(
            matches!(key, x509_parser::public_key::PublicKey::EC(_)),
            "ECDSA key"
        );
        assert_eq!(tls.renew_in, Some(Duration::from_secs(6 * 24 * 3600)));
        assert!(self_signed(&[], MAX_PINNED_VALIDITY).is_err());
    }
}
