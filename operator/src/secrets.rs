//! The cluster's generated credentials: the PostgreSQL password and the JWT key.
//!
//! Values are generated once and never rotated: PostgreSQL stores its password in
//! the data volume on first start, and every issued JWT is signed with the key, so
//! regenerating either would break a running cluster. [`Credentials::resolve`]
//! therefore keeps every value already present in the Secret and only fills in
//! keys that are missing (a new cluster, or auth switched on later).
//!
//! The values are wrapped so that `Debug` never prints them; they reach the API
//! server only inside the Secret object.

use std::collections::BTreeMap;
use std::fmt;

use crds::{BackendMode, ChatCluster};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use rand::Rng;
use rand::distr::Alphanumeric;

use crate::meta::{Component, Names, child_meta};

/// Secret key of the managed PostgreSQL password.
pub const POSTGRES_PASSWORD_KEY: &str = "postgres-password";
/// Secret key of the managed PostgreSQL URL (`DATABASE_URL`), derived from the password.
pub const DATABASE_URL_KEY: &str = "database-url";
/// Secret key of the JWT signing key (`CHAT_JWT_SECRET`).
pub const JWT_SECRET_KEY: &str = "jwt-secret";

/// The PostgreSQL role and database the chat-server uses.
pub const POSTGRES_USER: &str = "chat";
pub const POSTGRES_DB: &str = "chat";
pub const POSTGRES_PORT: i32 = 5432;

const PASSWORD_LEN: usize = 32;
const JWT_KEY_LEN: usize = 48;

/// The generated values of one cluster's Secret. `Debug` redacts them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    values: BTreeMap<String, String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("keys", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Credentials {
    /// Reads the values out of an existing Secret; undecodable entries are ignored
    /// (and therefore regenerated only if they are keys the operator needs).
    pub fn from_secret(secret: &Secret) -> Self {
        let values = secret
            .data
            .iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.0.clone()).ok()?)))
            .collect();
        Self { values }
    }

    /// The credentials this cluster needs, keeping every existing value and
    /// generating only the missing ones. Returns the keys that were generated.
    pub fn resolve(cc: &ChatCluster, existing: Option<&Secret>) -> (Self, Vec<&'static str>) {
        let mut creds = existing.map(Self::from_secret).unwrap_or_default();
        let mut generated = Vec::new();
        let names = Names::of(cc);
        if cc.spec.postgres.mode == BackendMode::Managed {
            if !creds.values.contains_key(POSTGRES_PASSWORD_KEY) {
                creds
                    .values
                    .insert(POSTGRES_PASSWORD_KEY.into(), random_token(PASSWORD_LEN));
                generated.push(POSTGRES_PASSWORD_KEY);
            }
            // The URL is derived, so it always follows the (kept) password.
            let url = format!(
                "postgres://{POSTGRES_USER}:{}@{}:{POSTGRES_PORT}/{POSTGRES_DB}",
                creds.values[POSTGRES_PASSWORD_KEY],
                names.host(&names.postgres()),
            );
            creds.values.insert(DATABASE_URL_KEY.into(), url);
        }
        if cc.spec.server.auth.enabled && !creds.values.contains_key(JWT_SECRET_KEY) {
            creds
                .values
                .insert(JWT_SECRET_KEY.into(), random_token(JWT_KEY_LEN));
            generated.push(JWT_SECRET_KEY);
        }
        (creds, generated)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// A stable digest input: the values feed the pod-template hash, so a changed
    /// secret rolls the pods, without the values themselves leaving this module.
    pub fn digest_input(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// True when nothing needs storing (External PostgreSQL, auth off).
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The Secret object holding these values.
    pub fn to_secret(&self, cc: &ChatCluster) -> Secret {
        let names = Names::of(cc);
        Secret {
            metadata: child_meta(cc, names.secret(), Component::Server),
            type_: Some("Opaque".into()),
            data: Some(
                self.values
                    .iter()
                    .map(|(k, v)| (k.clone(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }
}

/// A random alphanumeric token: URL-safe, so it can sit in `DATABASE_URL` as is.
fn random_token(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::SecretKeyRef;

    fn cluster() -> ChatCluster {
        crate::meta::test_cluster()
    }

    #[test]
    fn new_cluster_gets_a_password_and_url() {
        let (creds, generated) = Credentials::resolve(&cluster(), None);
        assert_eq!(generated, vec![POSTGRES_PASSWORD_KEY]);
        let password = creds.get(POSTGRES_PASSWORD_KEY).unwrap();
        assert_eq!(password.len(), PASSWORD_LEN);
        assert_eq!(
            creds.get(DATABASE_URL_KEY).unwrap(),
            format!("postgres://chat:{password}@demo-postgres.ns.svc:5432/chat")
        );
        assert!(creds.get(JWT_SECRET_KEY).is_none());
    }

    #[test]
    fn existing_values_are_never_regenerated() {
        let cc = cluster();
        let (first, _) = Credentials::resolve(&cc, None);
        let secret = first.to_secret(&cc);
        let (second, generated) = Credentials::resolve(&cc, Some(&secret));
        assert!(generated.is_empty());
        assert_eq!(first, second);
    }

    #[test]
    fn enabling_auth_adds_only_the_jwt_key() {
        let mut cc = cluster();
        let (first, _) = Credentials::resolve(&cc, None);
        cc.spec.server.auth.enabled = true;
        let (second, generated) = Credentials::resolve(&cc, Some(&first.to_secret(&cc)));
        assert_eq!(generated, vec![JWT_SECRET_KEY]);
        assert_eq!(
            second.get(POSTGRES_PASSWORD_KEY),
            first.get(POSTGRES_PASSWORD_KEY)
        );
        assert_eq!(second.get(JWT_SECRET_KEY).unwrap().len(), JWT_KEY_LEN);
    }

    #[test]
    fn external_postgres_needs_no_password() {
        let mut cc = cluster();
        cc.spec.postgres.mode = BackendMode::External;
        cc.spec.postgres.secret_ref = Some(SecretKeyRef {
            name: "pg".into(),
            key: "url".into(),
        });
        let (creds, generated) = Credentials::resolve(&cc, None);
        assert!(generated.is_empty());
        assert!(creds.is_empty());
    }

    #[test]
    fn debug_output_redacts_values() {
        let (creds, _) = Credentials::resolve(&cluster(), None);
        let printed = format!("{creds:?}");
        assert!(printed.contains(POSTGRES_PASSWORD_KEY));
        assert!(!printed.contains(creds.get(POSTGRES_PASSWORD_KEY).unwrap()));
    }

    #[test]
    fn tokens_are_random() {
        assert_ne!(random_token(32), random_token(32));
    }
}
