//! The operator's errors.
//!
//! Every variant maps to a short, bounded [`Error::metric_label`], so the
//! `errors by reason` metric cannot explode in cardinality, and every message
//! names the object involved but never a secret value.

/// Everything that can go wrong while reconciling or rendering.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed (network, conflict, validation, permissions).
    #[error("{action} {object}: {source}")]
    Kube {
        action: &'static str,
        object: String,
        #[source]
        source: kube::Error,
    },

    /// The ChatCluster's spec breaks a rule the operator cannot build around.
    #[error("invalid ChatCluster {name}: {}", problems.join("; "))]
    InvalidSpec { name: String, problems: Vec<String> },

    /// Some children could not be applied (or pruned); the others were. The
    /// messages are also in the status's Reconciled condition.
    #[error("{} child object(s) failed: {}", .0.len(), .0.join("; "))]
    Children(Vec<String>),

    /// A Secret referenced by an External backend is missing or lacks its key.
    #[error("{backend} secret {secret}: {reason}")]
    MissingSecret {
        backend: &'static str,
        secret: String,
        reason: String,
    },

    /// PostgreSQL's password is gone from the Secret but its data volume is
    /// not: PostgreSQL fixed its password when that volume was initialised, so
    /// a new one would lock everyone out of the data.
    #[error(
        "Secret {secret} has no {key}, but PostgreSQL's data volume {claim} exists, and its password was fixed when that volume was initialised: the operator will not generate a new one. Restore the Secret {secret} with the original {key} (from a backup), or, to start over with an empty database, delete the claim {claim}"
    )]
    PasswordMissing {
        secret: String,
        key: &'static str,
        claim: String,
    },

    /// The finalizer machinery failed (adding or removing the finalizer, or cleanup).
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),

    /// The ChatCluster CRD is missing or does not serve this operator's version.
    #[error(
        "the ChatCluster CRD is not installed ({0}); install it with `kubectl apply --server-side -f crds/chatcluster.yaml` (or `operator crd | kubectl apply --server-side -f -`)"
    )]
    CrdNotInstalled(String),

    /// Leader election could not start or run.
    #[error("leader election: {0}")]
    Election(String),

    /// `operator render` could not read or parse its input.
    #[error("{0}")]
    Input(String),
}

impl Error {
    /// Every value of [`Error::metric_label`]: the metric shows each reason at
    /// zero from the start, so `rate()` over it and dashboards find a series
    /// before the first failure of that kind.
    pub const METRIC_LABELS: &[&str] = &[
        "kube",
        "invalid_spec",
        "missing_secret",
        "finalizer",
        "crd_not_installed",
        "input",
        "election",
    ];

    /// A bounded label for the `errors by reason` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } | Error::Children(_) => "kube",
            Error::InvalidSpec { .. } => "invalid_spec",
            Error::MissingSecret { .. } | Error::PasswordMissing { .. } => "missing_secret",
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.metric_label(),
                _ => "finalizer",
            },
            Error::CrdNotInstalled(_) => "crd_not_installed",
            Error::Input(_) => "input",
            Error::Election(_) => "election",
        }
    }

    /// Wraps a kube error with what was being done to which object.
    pub fn kube(
        action: &'static str,
        object: impl Into<String>,
    ) -> impl FnOnce(kube::Error) -> Self {
        let object = object.into();
        move |source| Error::Kube {
            action,
            object,
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finalizer_errors_report_the_inner_label() {
        let inner = Error::MissingSecret {
            backend: "postgres",
            secret: "pg".into(),
            reason: "not found".into(),
        };
        let e = Error::Finalizer(Box::new(kube::runtime::finalizer::Error::ApplyFailed(
            inner,
        )));
        assert_eq!(e.metric_label(), "missing_secret");
    }

    #[test]
    fn metric_labels_lists_every_label_once() {
        let one_of_each = [
            Error::Children(vec![]),
            Error::InvalidSpec {
                name: "demo".into(),
                problems: vec![],
            },
            Error::MissingSecret {
                backend: "postgres",
                secret: "pg".into(),
                reason: "not found".into(),
            },
            Error::PasswordMissing {
                secret: "demo".into(),
                key: "postgres-password",
                claim: "data-demo-postgres-0".into(),
            },
            Error::Finalizer(Box::new(kube::runtime::finalizer::Error::UnnamedObject)),
            Error::CrdNotInstalled("x".into()),
            Error::Election("x".into()),
            Error::Input("x".into()),
        ];
        let mut labels: Vec<&str> = one_of_each.iter().map(Error::metric_label).collect();
        labels.sort_unstable();
        labels.dedup();
        let mut listed = Error::METRIC_LABELS.to_vec();
        listed.sort_unstable();
        assert_eq!(labels, listed);
    }
}
