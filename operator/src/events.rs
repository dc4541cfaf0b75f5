//! The Kubernetes Events the ChatCluster controller records, one variant each.
//!
//! An Event's reason is part of the operator's interface: `kubectl describe`,
//! alerts and the tests match on it. Listing every reason here, with the
//! Event type and action that go with it, keeps them from drifting apart from
//! one call site to the next (a reason is always Normal or always Warning), and
//! [`Context::event`](crate::controller::Context::event) is the one place that
//! builds the Event.

use kube::runtime::events::EventType;

/// Why an Event was recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventReason {
    /// A reconcile failed; it is retried with backoff.
    ReconcileFailed,
    /// The spec breaks a rule the operator cannot build around.
    InvalidSpec,
    /// A Secret an External backend references is missing or lacks its key.
    SecretNotFound,
    /// The PostgreSQL password is gone but its data volume is not.
    PasswordMissing,
    /// Credentials were generated into the cluster's Secret.
    SecretGenerated,
    /// The children were applied for the first time.
    Provisioned,
    /// The pod template changed; the chat-server pods roll.
    ConfigChanged,
    /// The status's phase changed.
    PhaseChanged,
    /// The Redis StatefulSet was recreated for a new claim template.
    RedisRecreated,
    /// An optional child the spec no longer asks for was deleted.
    Removed,
    /// Retention policy Delete: PostgreSQL's claims were deleted.
    VolumesDeleted,
    /// Retention policy Retain: PostgreSQL's claims and Secret were kept.
    VolumesRetained,
}

impl EventReason {
    /// The reason as Kubernetes shows it (also the Ready condition's reason
    /// while a cluster waits on one of the validation reasons).
    pub fn as_str(self) -> &'static str {
        match self {
            EventReason::ReconcileFailed => "ReconcileFailed",
            EventReason::InvalidSpec => "InvalidSpec",
            EventReason::SecretNotFound => "SecretNotFound",
            EventReason::PasswordMissing => "PasswordMissing",
            EventReason::SecretGenerated => "SecretGenerated",
            EventReason::Provisioned => "Provisioned",
            EventReason::ConfigChanged => "ConfigChanged",
            EventReason::PhaseChanged => "PhaseChanged",
            EventReason::RedisRecreated => "RedisRecreated",
            EventReason::Removed => "Removed",
            EventReason::VolumesDeleted => "VolumesDeleted",
            EventReason::VolumesRetained => "VolumesRetained",
        }
    }

    /// Warning for what needs someone's attention, Normal for the rest.
    pub fn event_type(self) -> EventType {
        match self {
            EventReason::ReconcileFailed
            | EventReason::InvalidSpec
            | EventReason::SecretNotFound
            | EventReason::PasswordMissing => EventType::Warning,
            EventReason::SecretGenerated
            | EventReason::Provisioned
            | EventReason::ConfigChanged
            | EventReason::PhaseChanged
            | EventReason::RedisRecreated
            | EventReason::Removed
            | EventReason::VolumesDeleted
            | EventReason::VolumesRetained => EventType::Normal,
        }
    }

    /// What the operator was doing (the Event's `action`).
    pub fn action(self) -> &'static str {
        match self {
            EventReason::ReconcileFailed
            | EventReason::PhaseChanged
            | EventReason::RedisRecreated => "Reconcile",
            EventReason::InvalidSpec
            | EventReason::SecretNotFound
            | EventReason::PasswordMissing => "Validate",
            EventReason::SecretGenerated | EventReason::Provisioned => "Provision",
            EventReason::ConfigChanged => "Rollout",
            EventReason::Removed => "Prune",
            EventReason::VolumesDeleted | EventReason::VolumesRetained => "Cleanup",
        }
    }
}
