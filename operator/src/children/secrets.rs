//! The cluster's generated credentials: the PostgreSQL and Redis passwords and
//! the JWT key, and the URLs derived from the passwords.
//!
//! Values are generated once and never rotated: PostgreSQL stores its password in
//! the data volume on first start, and every issued JWT is signed with the key, so
//! regenerating either would break a running cluster. [`Credentials::resolve`]
//! therefore keeps every value already present in the Secret and only fills in
//! keys that are missing (a new cluster, or auth switched on later).
//!
//! The values are wrapped so that `Debug` never prints them; they reach the API
//! server only inside the Secret object.
//!
//! The Secret is owned by the ChatCluster only when PostgreSQL's retention
//! policy is Delete. Under Retain the data outlives the ChatCluster, and so
//! must its password: an ownerReference would let the garbage collector delete
//! the Secret, which with foreground deletion (Argo CD's default) happens
//! before the operator's finalizer could do anything about it.

use std::collections::BTreeMap;
use std::fmt;

use crds::{BackendMode, ChatCluster, RetentionPolicy};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};

use crate::app_role::APP_USER;
use crate::children::redis::REDIS_PORT;
use crate::meta::{Component, Names, child_meta};

/// Secret key of the managed PostgreSQL password.
pub const POSTGRES_PASSWORD_KEY: &str = "postgres-password";
/// Secret key of the password of the chat-server's role ([`APP_USER`]).
pub const POSTGRES_APP_PASSWORD_KEY: &str = "postgres-app-password";
/// Secret key of the managed PostgreSQL URL (`DATABASE_URL`): the chat-server's
/// role and password, never the superuser's.
pub const DATABASE_URL_KEY: &str = "database-url";
/// Secret key of the managed Redis password (`requirepass`).
pub const REDIS_PASSWORD_KEY: &str = "redis-password";
/// Secret key of the managed Redis URL (`REDIS_URL`), derived from the password.
pub const REDIS_URL_KEY: &str = "redis-url";
/// Secret key of the JWT signing key (`CHAT_JWT_SECRET`).
pub const JWT_SECRET_KEY: &str = "jwt-secret";

/// The PostgreSQL superuser (the image's `POSTGRES_USER`) and the database.
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
            creds.fill(POSTGRES_PASSWORD_KEY, PASSWORD_LEN, &mut generated);
            creds.fill(POSTGRES_APP_PASSWORD_KEY, PASSWORD_LEN, &mut generated);
            // The URL is derived, so it always follows the (kept) password.
            let url = format!(
                "postgres://{APP_USER}:{}@{}:{POSTGRES_PORT}/{POSTGRES_DB}",
                creds.values[POSTGRES_APP_PASSWORD_KEY],
                names.host(&names.postgres()),
            );
            creds.values.insert(DATABASE_URL_KEY.into(), url);
        }
        if cc.spec.redis.mode == BackendMode::Managed {
            creds.fill(REDIS_PASSWORD_KEY, PASSWORD_LEN, &mut generated);
            let url = format!(
                "redis://:{}@{}:{REDIS_PORT}",
                creds.values[REDIS_PASSWORD_KEY],
                names.host(&names.redis()),
            );
            creds.values.insert(REDIS_URL_KEY.into(), url);
        }
        if cc.spec.server.auth.enabled {
            creds.fill(JWT_SECRET_KEY, JWT_KEY_LEN, &mut generated);
        }
        (creds, generated)
    }

    /// Generates `key` (a `len`-character token) unless it is already there.
    fn fill(&mut self, key: &'static str, len: usize, generated: &mut Vec<&'static str>) {
        if !self.values.contains_key(key) {
            self.values.insert(key.into(), random_token(len));
            generated.push(key);
        }
    }

    /// The keys a new cluster's Secret would hold, all with empty values: what
    /// `operator render` builds from unless asked to show secrets, so its output
    /// holds no credential and is the same on every run.
    pub fn redacted(cc: &ChatCluster) -> Self {
        let (creds, _) = Self::resolve(cc, None);
        Self {
            values: creds
                .values
                .into_keys()
                .map(|k| (k, String::new()))
                .collect(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// A short digest of one value (empty when absent): a pod-template
    /// annotation that restarts a workload when the value changes, without
    /// showing it.
    pub fn digest_of(&self, key: &str) -> String {
        let Some(value) = self.values.get(key) else {
            return String::new();
        };
        Sha256::digest(value.as_bytes())
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
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
        let mut metadata = child_meta(cc, names.secret(), Component::Server);
        if cc.spec.postgres.storage.retention_policy == RetentionPolicy::Retain {
            metadata.owner_references = None;
        }
        Secret {
            metadata,
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
    use crate::meta::test_cluster;
    use crds::SecretKeyRef;

    #[test]
    fn managed_redis_gets_a_password_in_its_url() {
        let (creds, generated) = Credentials::resolve(&test_cluster(), None);
        assert!(generated.contains(&REDIS_PASSWORD_KEY));
        let password = creds.get(REDIS_PASSWORD_KEY).unwrap();
        assert_eq!(password.len(), PASSWORD_LEN);
        assert_eq!(
            creds.get(REDIS_URL_KEY).unwrap(),
            format!("redis://:{password}@demo-redis.ns.svc:6379")
        );
        assert_eq!(creds.digest_of(REDIS_PASSWORD_KEY).len(), 16);
        assert!(!creds.digest_of(REDIS_PASSWORD_KEY).contains(password));
    }

    #[test]
    fn new_cluster_gets_a_password_and_url() {
        let (creds, generated) = Credentials::resolve(&test_cluster(), None);
        assert_eq!(
            generated,
            vec![
                POSTGRES_PASSWORD_KEY,
                POSTGRES_APP_PASSWORD_KEY,
                REDIS_PASSWORD_KEY
            ]
        );
        let password = creds.get(POSTGRES_APP_PASSWORD_KEY).unwrap();
        assert_eq!(password.len(), PASSWORD_LEN);
        assert_ne!(Some(password), creds.get(POSTGRES_PASSWORD_KEY));
        assert_eq!(
            creds.get(DATABASE_URL_KEY).unwrap(),
            format!("postgres://chat_app:{password}@demo-postgres.ns.svc:5432/chat"),
            "the chat-server connects as its own role, not the superuser"
        );
        assert!(creds.get(JWT_SECRET_KEY).is_none());
    }

    #[test]
    fn existing_values_are_never_regenerated() {
        let cc = test_cluster();
        let (first, _) = Credentials::resolve(&cc, None);
        let secret = first.to_secret(&cc);
        let (second, generated) = Credentials::resolve(&cc, Some(&secret));
        assert!(generated.is_empty());
        assert_eq!(first, second);
    }

    #[test]
    fn enabling_auth_adds_only_the_jwt_key() {
        let mut cc = test_cluster();
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
    fn external_backends_need_no_password() {
        let mut cc = test_cluster();
        let reference = SecretKeyRef {
            name: "pg".into(),
            key: "url".into(),
        };
        cc.spec.postgres.mode = BackendMode::External;
        cc.spec.postgres.secret_ref = Some(reference.clone());
        cc.spec.redis.mode = BackendMode::External;
        cc.spec.redis.secret_ref = Some(reference);
        let (creds, generated) = Credentials::resolve(&cc, None);
        assert!(generated.is_empty());
        assert!(creds.is_empty());
    }

    #[test]
    fn debug_output_redacts_values() {
        let (creds, _) = Credentials::resolve(&test_cluster(), None);
        let printed = format!("{creds:?}");
        assert!(printed.contains(POSTGRES_PASSWORD_KEY));
        assert!(!printed.contains(creds.get(POSTGRES_PASSWORD_KEY).unwrap()));
    }

    #[test]
    fn the_secret_is_owned_only_when_its_data_goes_with_the_cluster() {
        let mut cc = test_cluster();
        cc.metadata.uid = Some("uid-1".into());
        let (creds, _) = Credentials::resolve(&cc, None);
        assert!(creds.to_secret(&cc).metadata.owner_references.is_none());
        cc.spec.postgres.storage.retention_policy = RetentionPolicy::Delete;
        let owners = creds.to_secret(&cc).metadata.owner_references.unwrap();
        assert_eq!(owners[0].uid, "uid-1");
    }

    #[test]
    fn tokens_are_random() {
        assert_ne!(random_token(32), random_token(32));
    }
}
