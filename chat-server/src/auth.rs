//! Who is connecting: a JWT (HS256) when a secret is configured, else the `user`
//! query parameter or a generated guest name.
//!
//! Failures carry the close reason the client sees with code 1008.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;

use crate::protocol::valid_name;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing token")]
    MissingToken,
    #[error("invalid token: expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("invalid token: sub breaks the name rule")]
    BadSubject,
    #[error("invalid user")]
    InvalidUser,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

/// Verifies HS256 tokens against one secret.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    pub fn new(secret: &str) -> Verifier {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 0;
        Verifier {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// The user named by a token's `sub` claim.
    pub fn verify(&self, token: &str) -> Result<String, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                ErrorKind::MissingRequiredClaim(c) => {
                    AuthError::Invalid(format!("missing claim {c}"))
                }
                _ => AuthError::Invalid(e.to_string()),
            },
        )?;
        if !valid_name(&data.claims.sub) {
            return Err(AuthError::BadSubject);
        }
        Ok(data.claims.sub)
    }
}

/// Resolves the connecting user from the query parameters.
pub fn resolve_user(
    verifier: Option<&Verifier>,
    token: Option<&str>,
    user: Option<&str>,
) -> Result<String, AuthError> {
    match verifier {
        Some(v) => v.verify(token.ok_or(AuthError::MissingToken)?),
        None => match user {
            Some(u) if valid_name(u) => Ok(u.to_owned()),
            Some(_) => Err(AuthError::InvalidUser),
            None => Ok(format!("guest-{}", rand::random_range(1..1_000_000u32))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde::Serialize;

    #[derive(Serialize)]
    struct C<'a> {
        sub: &'a str,
        exp: u64,
    }

    fn token(secret: &str, sub: &str, exp: u64) -> String {
        jsonwebtoken::encode(
            &Header::default(),
            &C { sub, exp },
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn tokens() {
        let v = Verifier::new("s3cret");
        assert_eq!(
            v.verify(&token("s3cret", "alice", now() + 60)),
            Ok("alice".into())
        );
        assert_eq!(
            v.verify(&token("s3cret", "alice", now() - 60)),
            Err(AuthError::Expired)
        );
        assert!(matches!(
            v.verify(&token("other", "alice", now() + 60)),
            Err(AuthError::Invalid(_))
        ));
        assert_eq!(
            v.verify(&token("s3cret", "a b", now() + 60)),
            Err(AuthError::BadSubject)
        );
        assert!(matches!(v.verify("garbage"), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn anonymous_users() {
        assert_eq!(resolve_user(None, None, Some("bob")), Ok("bob".into()));
        assert_eq!(
            resolve_user(None, None, Some("b b")),
            Err(AuthError::InvalidUser)
        );
        assert!(
            resolve_user(None, None, None)
                .unwrap()
                .starts_with("guest-")
        );
        let v = Verifier::new("k");
        assert_eq!(
            resolve_user(Some(&v), None, Some("bob")),
            Err(AuthError::MissingToken)
        );
    }
}
