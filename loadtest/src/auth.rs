//! Credentials for a server with auth on (`CHAT_JWT_SECRET` set).
//!
//! Such a server ignores `?user=` and takes the user from the `sub` claim of an
//! HS256 JWT in `?token=`. The load tool knows the shared secret, so it mints
//! one token per connection itself instead of needing a token service: the
//! signature is one HMAC over ~100 bytes, cheap next to a TCP + WebSocket
//! handshake, and minting per connection means nothing per client is stored.
//! A reconnect simply mints again.
//!
//! Every token of a run carries the same `exp`, fixed when the plan is made and
//! far enough out to cover the whole run (see [`Tokens::new`]), so a token never
//! expires under a slow run and a reconnect late in the run is still accepted.
//!
//! The secret never reaches a log or the report: [`Secret`] prints as
//! `Secret(..)` and `--help` hides the value of `CHAT_LOAD_JWT_SECRET`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// Slack on top of the run's own end deadline: covers a clock that differs a
/// little between generator and server, and the time before the first batch.
const EXP_SLACK: Duration = Duration::from_secs(3600);

/// The HS256 secret shared with the server, redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Value parser for `--jwt-secret`: any non-empty string.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("the JWT secret must not be empty".into());
        }
        Ok(Self(text.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// How a connection says who it is: the query pair of its upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// Auth off: `?user=<name>`.
    User(String),
    /// Auth on: `?token=<JWT>` whose `sub` is the user.
    Token(String),
}

impl Credential {
    pub fn query_pair(&self) -> (&'static str, &str) {
        match self {
            Credential::User(user) => ("user", user),
            Credential::Token(token) => ("token", token),
        }
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
}

/// Mints the tokens of one run.
#[derive(Clone)]
pub struct Tokens {
    key: EncodingKey,
    header: Header,
    exp: u64,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("exp", &self.exp)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// Tokens valid until `run_length` (the plan's end deadline) plus an hour
    /// of slack from now.
    pub fn new(secret: &Secret, run_length: Duration) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            key: EncodingKey::from_secret(secret.0.as_bytes()),
            header: Header::new(Algorithm::HS256),
            exp: (now + run_length + EXP_SLACK).as_secs(),
        }
    }

    /// `exp` of every token (seconds since the Unix epoch).
    pub fn exp(&self) -> u64 {
        self.exp
    }

    /// A signed token whose `sub` is `user`.
    pub fn mint(&self, user: &str) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = Claims {
            sub: user,
            exp: self.exp,
        };
        jsonwebtoken::encode(&self.header, &claims, &self.key)
    }
}

/// The credential of `user`: a fresh token when `tokens` is set, else the name.
pub fn credential(
    tokens: Option<&Tokens>,
    user: &str,
) -> Result<Credential, jsonwebtoken::errors::Error> {
    Ok(match tokens {
        Some(tokens) => Credential::Token(tokens.mint(user)?),
        None => Credential::User(user.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    #[derive(serde::Deserialize)]
    struct Decoded {
        sub: String,
        exp: u64,
    }

    fn decode(token: &str, secret: &str) -> jsonwebtoken::errors::Result<Decoded> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        jsonwebtoken::decode::<Decoded>(
            token,
            &DecodingKey::from_secret(secret.as_bytes()),
            &validation,
        )
        .map(|data| data.claims)
    }

    #[test]
    fn tokens_name_the_user_and_outlive_the_run() {
        let secret = Secret::parse("s3cret").unwrap();
        let tokens = Tokens::new(&secret, Duration::from_secs(600));
        let token = tokens.mint("run-u7").unwrap();
        let claims = decode(&token, "s3cret").unwrap();
        assert_eq!(claims.sub, "run-u7");
        assert_eq!(claims.exp, tokens.exp());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(claims.exp >= now + 600, "exp {} now {now}", claims.exp);
        assert!(decode(&token, "other").is_err(), "signed with the secret");
    }

    #[test]
    fn the_secret_is_never_printed() {
        let secret = Secret::parse("hunter2").unwrap();
        let tokens = Tokens::new(&secret, Duration::ZERO);
        assert!(!format!("{secret:?} {tokens:?}").contains("hunter2"));
        assert!(Secret::parse("").is_err());
    }

    #[test]
    fn credentials_choose_the_query_parameter() {
        let tokens = Tokens::new(&Secret::parse("k").unwrap(), Duration::ZERO);
        assert_eq!(credential(None, "u1").unwrap().query_pair(), ("user", "u1"));
        let with_token = credential(Some(&tokens), "u1").unwrap();
        let (name, value) = with_token.query_pair();
        assert_eq!(name, "token");
        assert_eq!(decode(value, "k").unwrap().sub, "u1");
    }
}
