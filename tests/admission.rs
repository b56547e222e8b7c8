//! Who may open a session (PROTOCOL section 5 and docs/security.md): pages
//! of other origins and, when the server requires them, sessions without a
//! valid join token are answered 403 before a session exists; everyone
//! else gets in as before.

mod common;

use std::time::Duration;

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use quicmatch::client::with_token;
use quicmatch::protocol::Gender;
use wtransport::endpoint::ConnectOptions;

const SECRET: &str = "a-join-token-secret-of-32-bytes!";

/// Opens a WebTransport session to `url` as a page of `origin` would (the
/// browser sends its `Origin` header); whether it was let in.
async fn open_as_page(server: &TestServer, url: &str, origin: &str) -> bool {
    let endpoint = raw_endpoint(server, None);
    let options = ConnectOptions::builder(url)
        .add_header("origin", origin)
        .build();
    tokio::time::timeout(STEP, endpoint.connect(options))
        .await
        .expect("an answer in time")
        .is_ok()
}

/// A token for `claims`, signed with the HS256 `secret`.
fn hs256(secret: &str, claims: serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token")
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

protocol_test! {
    async fn pages_of_other_origins_are_refused_before_a_session_exists() {
        let server = start_server(&["--cert-name", "chat.example.org"]).await;
        let signal = url(&server);
        // Loopback pages and the server's own names are let in by default.
        for origin in ["http://localhost:5000", "http://127.0.0.1:8080", "https://chat.example.org"] {
            assert!(open_as_page(&server, &signal, origin).await, "{origin}");
        }
        // Any other page is refused, and no session was ever admitted.
        for origin in ["https://evil.example", "null"] {
            assert!(!open_as_page(&server, &signal, origin).await, "{origin}");
        }
        wait_counts(&server, (0, 0, 0, 0)).await;
        // Native clients send no Origin and get in.
        let mut ann = connect(&server).await;
        ping(&mut ann, 1).await;
        server.shutdown().await;
    }
}

protocol_test! {
    async fn allowed_origins_replace_the_default_list() {
        let server = start_server(&["--allowed-origin", "https://app.example.org"]).await;
        let signal = url(&server);
        assert!(open_as_page(&server, &signal, "https://app.example.org").await);
        assert!(!open_as_page(&server, &signal, "http://localhost:5000").await);
        server.shutdown().await;
    }
}

protocol_test! {
    async fn join_tokens_are_required_when_configured() {
        let server = start_server(&["--jwt-secret", SECRET]).await;
        let signal = url(&server);
        let hashes = server.hashes();
        let attempt = |url: String| {
            let hashes = hashes.clone();
            async move {
                tokio::time::timeout(
                    STEP,
                    quicmatch::client::Client::connect(
                        &url,
                        quicmatch::client::Verification::CertificateHashes(hashes),
                    ),
                )
                .await
                .expect("an answer in time")
            }
        };
        let exp = unix_now() + 300;
        // No token, an expired one, a forged one, one without exp: refused.
        let refused = [
            signal.clone(),
            with_token(&signal, &hs256(SECRET, serde_json::json!({ "exp": unix_now() - 3600 }))),
            with_token(&signal, &hs256("a-different-secret-of-32-bytes!!", serde_json::json!({ "exp": exp }))),
            with_token(&signal, &hs256(SECRET, serde_json::json!({ "sub": "no-exp" }))),
            with_token(&signal, "not-a-token"),
        ];
        for url in refused {
            assert!(attempt(url.clone()).await.is_err(), "{url}");
        }
        wait_counts(&server, (0, 0, 0, 0)).await;
        // A valid token lets the session in, and it works as any other.
        let token = hs256(SECRET, serde_json::json!({ "exp": exp, "sub": "user-7" }));
        let mut ann = attempt(with_token(&signal, &token)).await.expect("admitted");
        let mut bob = attempt(with_token(&signal, &token)).await.expect("admitted");
        join(&mut ann, "Ann", Gender::Female).await;
        let id = match_id(&join(&mut bob, "Bob", Gender::Male).await);
        assert_eq!(match_id(&next_msg(&mut ann).await), id);
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_tokens_signed_with_a_public_key_pair() {
    for (algorithm, key) in [
        (
            Algorithm::ES256,
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        ),
        (
            Algorithm::EdDSA,
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519),
        ),
    ] {
        let key = key.expect("key pair");
        let dir = std::env::temp_dir().join(format!(
            "quicmatch-jwt-{}-{algorithm:?}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let public = dir.join("public.pem");
        std::fs::write(&public, key.public_key_pem()).expect("write key");
        let server = start_server(&["--jwt-public-key", public.to_str().expect("path")]).await;
        let private = key.serialize_pem();
        let encoding = match algorithm {
            Algorithm::ES256 => EncodingKey::from_ec_pem(private.as_bytes()),
            _ => EncodingKey::from_ed_pem(private.as_bytes()),
        }
        .expect("private key");
        let token = encode(
            &Header::new(algorithm),
            &serde_json::json!({ "exp": unix_now() + 300 }),
            &encoding,
        )
        .expect("token");
        let hash = server.certificate_hash().expect("self-signed");
        let mut ann = try_connect(&with_token(&url(&server), &token), hash)
            .await
            .unwrap_or_else(|e| panic!("{algorithm:?} token refused: {e}"));
        ping(&mut ann, 1).await;
        // A token of the same claims signed with another key is refused.
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let forged = encode(
            &Header::new(Algorithm::ES256),
            &serde_json::json!({ "exp": unix_now() + 300 }),
            &EncodingKey::from_ec_pem(other.serialize_pem().as_bytes()).expect("key"),
        )
        .expect("token");
        assert!(
            try_connect(&with_token(&url(&server), &forged), hash)
                .await
                .is_err()
        );
        server.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
