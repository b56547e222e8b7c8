//! Real QUIC Initials that never go further: what a handshake flood sends.
//!
//! Each is the first datagram of a genuine client connection (a TLS
//! ClientHello offering WebTransport's ALPN, with a fresh connection id),
//! made by quinn's sans-I/O state machine and then abandoned, so the server
//! sees exactly what a browser's first packet looks like and never hears
//! from that connection again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use wtransport::tls::rustls;

/// Makes Initials for one server.
pub struct Initials {
    server: SocketAddr,
    config: quinn_proto::ClientConfig,
    buf: Vec<u8>,
}

impl Initials {
    /// Initials for `server`.
    pub fn new(server: SocketAddr) -> anyhow::Result<Initials> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            // Never used: the handshake never gets as far as a certificate.
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        tls.alpn_protocols = vec![wtransport::tls::WEBTRANSPORT_ALPN.to_vec()];
        let crypto = quinn_proto::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls))?;
        Ok(Initials {
            server,
            config: quinn_proto::ClientConfig::new(Arc::new(crypto)),
            buf: Vec::with_capacity(1500),
        })
    }

    /// The next Initial: one UDP payload, a new connection each time.
    pub fn next(&mut self) -> anyhow::Result<&[u8]> {
        // A fresh endpoint each time: nothing of the abandoned connection
        // is kept.
        let mut endpoint = quinn_proto::Endpoint::new(
            Arc::new(quinn_proto::EndpointConfig::default()),
            None,
            false,
            None,
        );
        let now = Instant::now();
        let (_, mut connection) =
            endpoint.connect(now, self.config.clone(), self.server, "localhost")?;
        self.buf.clear();
        let transmit = connection
            .poll_transmit(now, 1, &mut self.buf)
            .ok_or_else(|| anyhow::anyhow!("the client had nothing to send"))?;
        Ok(&self.buf[..transmit.size])
    }
}
