//! Who may open a session: the page's origin and, when the operator asks
//! for them, join tokens. Decided from the session request alone (path,
//! query, `Origin` header), before anything is allocated for the session; a
//! plain function of its inputs, tested on its own.
//!
//! - **Origins.** A browser names the page that opens a session in its
//!   `Origin` header. By default a page may connect when its host is loopback
//!   (`localhost`, `127.0.0.1`, `[::1]`, any port) or one of the server's own
//!   names (`--cert-name`, the host of `--public-url`); `--allowed-origin`
//!   replaces that list (`*` allows any). A request without `Origin` (a
//!   native client) passes this check.
//! - **Join tokens.** With `--jwt-secret` (HS256) and/or `--jwt-public-key`
//!   (a PEM key, ES256 or EdDSA), every session must carry a JSON Web Token
//!   in its URL's query, `/signal?token=…`, signed with one of them and with
//!   an `exp` claim in the future. Its `sub`, if any, names the session in
//!   the logs.

use std::collections::HashSet;

use anyhow::Context;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;

use crate::config::Config;
use crate::protocol::SIGNAL_PATH;

/// What to answer a session request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let it in; the token's `sub`, if it had one.
    Admit {
        /// The token's subject.
        subject: Option<String>,
    },
    /// Not the session path: 404.
    NotFound,
    /// Not allowed: 403, for this reason (logged, never sent).
    Forbidden(&'static str),
}

/// The origins allowed to open sessions.
#[derive(Debug, Clone)]
enum Origins {
    /// `--allowed-origin '*'`.
    Any,
    /// Exact origins (`scheme://host[:port]`, lower case) from
    /// `--allowed-origin`.
    Listed(HashSet<String>),
    /// The default: loopback hosts and these names (lower case).
    LoopbackAnd(HashSet<String>),
}

/// One key a token may be signed with.
struct TokenKey {
    key: DecodingKey,
    validation: Validation,
}

/// The admission rules of one server.
pub struct Admission {
    origins: Origins,
    keys: Vec<TokenKey>,
}

/// The claims read from a token (`exp` is checked by the validation).
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
}

impl Admission {
    /// The rules `config` asks for; an error for an unreadable key.
    pub fn from_config(config: &Config) -> anyhow::Result<Admission> {
        let origins = if config.allowed_origins.iter().any(|o| o == "*") {
            Origins::Any
        } else if !config.allowed_origins.is_empty() {
            Origins::Listed(
                config
                    .allowed_origins
                    .iter()
                    .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                    .collect(),
            )
        } else {
            let mut names: HashSet<String> = config
                .cert_names
                .iter()
                .map(|n| n.to_ascii_lowercase())
                .collect();
            if let Some(host) = config.public_url.as_deref().and_then(url_host) {
                names.insert(host.to_ascii_lowercase());
            }
            Origins::LoopbackAnd(names)
        };
        let mut keys = Vec::new();
        if let Some(secret) = &config.jwt_secret {
            anyhow::ensure!(secret.len() >= 32, "--jwt-secret must be at least 32 bytes");
            keys.push(TokenKey {
                key: DecodingKey::from_secret(secret.as_bytes()),
                validation: validation(Algorithm::HS256),
            });
        }
        if let Some(path) = &config.jwt_public_key {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading --jwt-public-key {}", path.display()))?;
            let key = match DecodingKey::from_ec_pem(&pem) {
                Ok(key) => TokenKey {
                    key,
                    validation: validation(Algorithm::ES256),
                },
                Err(_) => TokenKey {
                    key: DecodingKey::from_ed_pem(&pem).with_context(|| {
                        format!(
                            "{} is neither an ES256 (P-256) nor an EdDSA (Ed25519) public key in PEM",
                            path.display()
                        )
                    })?,
                    validation: validation(Algorithm::EdDSA),
                },
            };
            keys.push(key);
        }
        Ok(Admission { origins, keys })
    }

    /// Whether sessions must carry a token.
    pub fn requires_token(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The verdict on a session request for `path` (with its query) from a
    /// page of `origin` (none for a native client).
    pub fn check(&self, path: &str, origin: Option<&str>) -> Decision {
        let (path_only, query) = path.split_once('?').unwrap_or((path, ""));
        if path_only != SIGNAL_PATH {
            return Decision::NotFound;
        }
        if let Some(origin) = origin
            && !self.origin_allowed(origin)
        {
            return Decision::Forbidden("origin not allowed");
        }
        if self.keys.is_empty() {
            return Decision::Admit { subject: None };
        }
        let Some(token) = query_param(query, "token") else {
            return Decision::Forbidden("no join token");
        };
        for key in &self.keys {
            if let Ok(data) = decode::<Claims>(token, &key.key, &key.validation) {
                return Decision::Admit {
                    subject: data.claims.sub,
                };
            }
        }
        Decision::Forbidden("join token invalid or expired")
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        match &self.origins {
            Origins::Any => true,
            Origins::Listed(allowed) => allowed.contains(&origin),
            Origins::LoopbackAnd(names) => {
                url_host(&origin).is_some_and(|host| is_loopback_host(host) || names.contains(host))
            }
        }
    }
}

/// Token validation for `algorithm`: `exp` required and in the future (with
/// a minute of leeway for clocks), no audience or issuer checked.
fn validation(algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.set_required_spec_claims(&["exp"]);
    validation.validate_exp = true;
    validation.leeway = 60;
    validation
}

/// The host of `scheme://host[:port][/…]`: a name, an IPv4 address, or an
/// IPv6 address in brackets.
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = if authority.starts_with('[') {
        &authority[..=authority.find(']')?]
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host)
    };
    (!host.is_empty()).then_some(host)
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The value of `name` in a query string (`a=1&token=…`), as given: a JSON
/// Web Token needs no percent-decoding.
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name && !value.is_empty()).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use jsonwebtoken::{EncodingKey, Header, encode};

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn admission(args: &[&str]) -> Admission {
        let mut argv = vec!["quicmatch"];
        argv.extend_from_slice(args);
        Admission::from_config(&Config::parse_from(argv)).expect("admission")
    }

    fn token(secret: &str, exp_from_now: i64, sub: Option<&str>) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let claims = serde_json::json!({ "exp": now + exp_from_now, "sub": sub });
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn default_origins_are_loopback_and_the_servers_own_names() {
        let a = admission(&["--cert-name", "chat.example.org"]);
        let admit = Decision::Admit { subject: None };
        for origin in [
            "http://localhost:5000",
            "https://127.0.0.1",
            "http://[::1]:8080",
            "https://chat.example.org",
            "https://CHAT.example.org:443/",
        ] {
            assert_eq!(a.check("/signal", Some(origin)), admit, "{origin}");
        }
        for origin in [
            "https://evil.example",
            "null",
            "https://chat.example.org.evil.com",
        ] {
            assert_eq!(
                a.check("/signal", Some(origin)),
                Decision::Forbidden("origin not allowed"),
                "{origin}"
            );
        }
        // Native clients send no Origin.
        assert_eq!(a.check("/signal", None), admit);
        assert_eq!(a.check("/other", None), Decision::NotFound);
        assert_eq!(a.check("/signal?x=1", None), admit);
    }

    #[test]
    fn allowed_origins_replace_the_default() {
        let a = admission(&["--allowed-origin", "https://app.example.org"]);
        assert!(matches!(
            a.check("/signal", Some("https://app.example.org")),
            Decision::Admit { .. }
        ));
        assert!(matches!(
            a.check("/signal", Some("http://localhost:5000")),
            Decision::Forbidden(_)
        ));
        assert!(matches!(
            a.check("/signal", Some("http://app.example.org")),
            Decision::Forbidden(_)
        ));
        let any = admission(&["--allowed-origin", "*"]);
        assert!(matches!(
            any.check("/signal", Some("null")),
            Decision::Admit { .. }
        ));
        let public = admission(&["--public-url", "https://node.example.net:4433/signal"]);
        assert!(matches!(
            public.check("/signal", Some("https://node.example.net")),
            Decision::Admit { .. }
        ));
    }

    #[test]
    fn tokens_must_be_signed_unexpired_and_present() {
        let a = admission(&["--jwt-secret", SECRET]);
        assert!(a.requires_token());
        let good = token(SECRET, 300, Some("user-42"));
        assert_eq!(
            a.check(&format!("/signal?token={good}"), None),
            Decision::Admit {
                subject: Some("user-42".into())
            }
        );
        assert_eq!(
            a.check("/signal", None),
            Decision::Forbidden("no join token")
        );
        let expired = token(SECRET, -3600, None);
        let forged = token("another-secret-another-secret-xx", 300, None);
        for bad in [expired.as_str(), forged.as_str(), "not.a.token"] {
            assert_eq!(
                a.check(&format!("/signal?token={bad}"), None),
                Decision::Forbidden("join token invalid or expired")
            );
        }
        // A token does not excuse a wrong origin.
        assert_eq!(
            a.check(
                &format!("/signal?token={good}"),
                Some("https://evil.example")
            ),
            Decision::Forbidden("origin not allowed")
        );
    }

    #[test]
    fn a_short_secret_is_refused() {
        let config = Config::parse_from(["quicmatch", "--jwt-secret", "short"]);
        assert!(Admission::from_config(&config).is_err());
    }
}
