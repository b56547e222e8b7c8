//! The STUN and TURN servers handed out in `Matched`, with TURN credentials
//! minted per match by the TURN REST scheme (coturn's `use-auth-secret`).

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::config::Config;
use crate::protocol::IceServer;

/// The ICE servers of a configuration; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct IceServers {
    stun_urls: Vec<String>,
    turn: Option<Turn>,
}

#[derive(Debug, Clone)]
struct Turn {
    urls: Vec<String>,
    secret: String,
    ttl_secs: u64,
    label: String,
}

impl IceServers {
    /// Reads the STUN/TURN settings of `config`.
    pub fn from_config(config: &Config) -> Self {
        let turn = match (&config.turn_secret, config.turn_urls.is_empty()) {
            (Some(secret), false) => Some(Turn {
                urls: config.turn_urls.clone(),
                secret: secret.clone(),
                ttl_secs: config.turn_ttl_secs,
                label: config.turn_label.clone(),
            }),
            _ => None,
        };
        IceServers {
            stun_urls: config.stun_urls.clone(),
            turn,
        }
    }

    /// The list for one match, at `now_unix` seconds: TURN credentials expire
    /// `ttl` seconds later.
    pub fn for_match(&self, now_unix: u64) -> Vec<IceServer> {
        let mut servers = Vec::with_capacity(2);
        if !self.stun_urls.is_empty() {
            servers.push(IceServer {
                urls: self.stun_urls.clone(),
                username: None,
                credential: None,
            });
        }
        if let Some(turn) = &self.turn {
            let username = format!("{}:{}", now_unix.saturating_add(turn.ttl_secs), turn.label);
            let credential = turn_credential(&turn.secret, &username);
            servers.push(IceServer {
                urls: turn.urls.clone(),
                username: Some(username),
                credential: Some(credential),
            });
        }
        servers
    }
}

/// base64(HMAC-SHA1(secret, username)): what a TURN server with a shared secret checks.
pub fn turn_credential(secret: &str, username: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn credential_matches_rfc2202_vector() {
        // RFC 2202 test case 2: key "Jefe", data "what do ya want for nothing?".
        let expected = base64::engine::general_purpose::STANDARD
            .encode(hex("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"));
        assert_eq!(
            turn_credential("Jefe", "what do ya want for nothing?"),
            expected
        );
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn minted_per_match_with_expiry_and_label() {
        let config = Config::parse_from([
            "quicmatch",
            "--stun",
            "stun:a:3478,stun:b:3478",
            "--turn",
            "turn:t:3478",
            "--turn-secret",
            "s3cret",
            "--turn-ttl-secs",
            "600",
            "--turn-label",
            "qm",
        ]);
        let servers = IceServers::from_config(&config).for_match(1_000);
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].urls, vec!["stun:a:3478", "stun:b:3478"]);
        assert_eq!(servers[0].username, None);
        assert_eq!(servers[1].username.as_deref(), Some("1600:qm"));
        assert_eq!(
            servers[1].credential,
            Some(turn_credential("s3cret", "1600:qm"))
        );
    }

    #[test]
    fn none_configured_is_empty() {
        let config = Config::parse_from(["quicmatch"]);
        assert!(IceServers::from_config(&config).for_match(0).is_empty());
    }
}
