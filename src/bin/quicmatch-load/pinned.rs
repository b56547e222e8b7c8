//! How the generator trusts the server: by the SHA-256 hash of its
//! certificate (fetched from the sidecar, or given with
//! `--cert-hash`), or not at all with `--insecure`.
//!
//! The server's signature over the handshake (TLS 1.3 CertificateVerify)
//! is not verified. Verifying an ECDSA P-256 signature costs about three
//! times what making it costs the server (docs/performance.md §16), which
//! alone made the generator's CPU per session set-up exceed the server's;
//! the generator only ever connects to loopback addresses, where no one
//! can stand between it and the server, and its job is to measure the
//! server. Every real client verifies it: the native client and browsers
//! (whose tests run against the same server).

use std::sync::Arc;

use sha2::{Digest, Sha256};
use wtransport::tls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use wtransport::tls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use wtransport::tls::rustls::{self, DigitallySignedStruct, SignatureScheme};

/// Accepts a certificate whose hash is pinned (any, without pins).
#[derive(Debug)]
pub struct PinnedCertificate {
    hashes: Option<Vec<[u8; 32]>>,
}

impl PinnedCertificate {
    /// Trusts certificates with one of `hashes`, or any for `None`.
    pub fn new(hashes: Option<&[[u8; 32]]>) -> Arc<PinnedCertificate> {
        Arc::new(PinnedCertificate {
            hashes: hashes.map(<[_]>::to_vec),
        })
    }
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(hashes) = &self.hashes else {
            return Ok(ServerCertVerified::assertion());
        };
        let hash: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if hashes.contains(&hash) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is offered.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Not verified: see the module's documentation.
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::ECDSA_NISTP384_SHA384,
            SignatureScheme::ED25519,
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::RSA_PKCS1_SHA256,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verify(pins: &PinnedCertificate, der: &[u8]) -> bool {
        pins.verify_server_cert(
            &CertificateDer::from(der.to_vec()),
            &[],
            &ServerName::try_from("localhost").unwrap(),
            &[],
            UnixTime::now(),
        )
        .is_ok()
    }

    #[test]
    fn only_pinned_certificates_pass() {
        let der = b"a certificate";
        let hash: [u8; 32] = Sha256::digest(der).into();
        assert!(verify(&PinnedCertificate::new(Some(&[hash])), der));
        assert!(!verify(&PinnedCertificate::new(Some(&[[0; 32]])), der));
        assert!(!verify(&PinnedCertificate::new(Some(&[])), der));
        assert!(verify(&PinnedCertificate::new(None), der));
    }
}
