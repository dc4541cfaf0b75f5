//! The broker: assigns each room's seq and carries room events between instances.
//!
//! [`Broker`] is the seam between the hub and the transport. Both implementations
//! splice the seq into a pre-rendered `message` frame ([`MessageParts`]) at the
//! moment they assign it, so the frame is serialized once and every instance
//! forwards the same bytes. Incoming events go to a [`Deliver`] (the hub's room
//! registry), in channel order, which for a room is seq order.
//!
//! - [`memory::MemoryBroker`]: one process; counters and fan-out in memory.
//! - [`redis::RedisBroker`]: a Lua script INCRs and PUBLISHes atomically; one pub/sub
//!   connection per instance SUBSCRIBEs only to rooms with local members.
//!
//! A room's counter can be missing (a new room, or Redis restarted without
//! persistence). Then publishing reports [`BrokerError::Unseeded`] and the hub
//! seeds the counter from the highest stored seq, so seqs never go backwards.
//! A counter can also be *behind* (Redis restarted from an AOF written every
//! second, or a failover to a lagging replica). Each publish therefore carries the
//! highest seq its instance has seen in the room, and a counter at or below it
//! jumps past it; a counter behind what only the store knows shows up as a commit
//! conflict, after which the hub raises it to the stored maximum.

pub mod memory;
pub mod redis;

use axum::extract::ws::Utf8Bytes;

pub use crate::BoxFuture;
use crate::protocol::{MessageParts, message_seq};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("the room's seq counter is not initialized")]
    Unseeded,
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("redis pub/sub connection is down")]
    Disconnected,
}

/// Something that happened in a room, as it arrives from the broker.
#[derive(Debug, Clone)]
pub enum RoomEvent {
    /// A rendered `message` frame with its seq.
    Message { seq: u64, frame: Utf8Bytes },
    /// A rendered `presence` frame; `origin` is the local connection that caused it
    /// (it is not sent back there), `None` when it came from another instance.
    Presence {
        origin: Option<u64>,
        frame: Utf8Bytes,
    },
}

/// Receives room events from the broker (implemented by the hub's room registry).
pub trait Deliver: Send + Sync + 'static {
    fn deliver(&self, room: &str, event: RoomEvent);
    /// The broker reconnected: events may have been missed, every room should
    /// compare its last seq with the broker's counter.
    fn resync(&self);
}

/// One publish: what to publish and what the publisher knows.
#[derive(Debug, Clone, Copy)]
pub struct Publish<'a> {
    pub room: &'a str,
    pub parts: &'a MessageParts,
    /// The publishing connection; it has at most one publish in flight.
    pub conn: u64,
    /// Counts the connection's publishes: a retry of the same publish (same
    /// `conn` and `n`) returns the seq already assigned instead of publishing twice.
    pub n: u64,
    /// The highest seq the publisher has seen in the room: the new seq is above it
    /// even if the broker's counter went backwards.
    pub floor: u64,
}

/// The contract of a broker implementation:
/// - seqs of a room are assigned 1, 2, 3, … without reuse, and events of a room reach
///   every subscriber in seq order;
/// - `publish` is idempotent per `(conn, n)`: repeating it after an error whose
///   outcome is unknown either returns the seq it was given or publishes it now;
/// - an `Err` means the operation did not happen, except for `publish`, where it may
///   have (and a repeat tells).
pub trait Broker: Send + Sync + 'static {
    /// Assigns the room's next seq and publishes `parts.frame(seq)`; returns the seq.
    fn publish<'a>(&'a self, publish: Publish<'a>) -> BoxFuture<'a, Result<u64, BrokerError>>;
    /// Publishes a rendered presence frame caused by local connection `origin`.
    fn publish_presence<'a>(
        &'a self,
        room: &'a str,
        origin: u64,
        frame: String,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// Starts receiving the room's events; resolves once the subscription is active.
    /// Subscriptions are counted: each `subscribe` needs one `unsubscribe`.
    fn subscribe<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<(), BrokerError>>;
    fn unsubscribe<'a>(&'a self, room: &'a str) -> BoxFuture<'a, ()>;
    /// The room's latest seq; `None` when its counter is missing.
    fn last_seq<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Option<u64>, BrokerError>>;
    /// Raises the room's counter to at least `floor`, creating it if missing.
    fn raise_seq<'a>(&'a self, room: &'a str, floor: u64)
    -> BoxFuture<'a, Result<(), BrokerError>>;
    /// `Err` when the broker is not usable (for readiness).
    fn check(&self) -> BoxFuture<'_, Result<(), BrokerError>>;
}

/// Wire form of a presence event: `P<node>|<conn>\n<frame>`. Message events are the
/// bare `message` frame (it starts with `{`).
pub(crate) fn encode_presence(node: &str, origin: u64, frame: &str) -> String {
    format!("P{node}|{origin}\n{frame}")
}

/// Parses an event of `room` published on the wire; `node` is this instance.
pub(crate) fn decode_event(node: &str, room: &str, payload: String) -> Option<RoomEvent> {
    if payload.starts_with('{') {
        let seq = message_seq(room, &payload)?;
        return Some(RoomEvent::Message {
            seq,
            frame: payload.into(),
        });
    }
    let rest = payload.strip_prefix('P')?;
    let (header, frame) = rest.split_once('\n')?;
    let (origin_node, conn) = header.rsplit_once('|')?;
    let origin = if origin_node == node {
        conn.parse().ok()
    } else {
        None
    };
    Some(RoomEvent::Presence {
        origin,
        frame: frame.to_owned().into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_events_round_trip() {
        let parts = MessageParts::new("r1", "u", "b", 5);
        match decode_event("n1", "r1", parts.frame(7)) {
            Some(RoomEvent::Message { seq, frame }) => {
                assert_eq!(seq, 7);
                assert_eq!(frame.as_str(), parts.frame(7));
            }
            other => panic!("{other:?}"),
        }
        let wire = encode_presence("n1", 42, "{\"type\":\"presence\"}");
        match decode_event("n1", "r1", wire.clone()) {
            Some(RoomEvent::Presence { origin, frame }) => {
                assert_eq!(origin, Some(42));
                assert_eq!(frame.as_str(), "{\"type\":\"presence\"}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode_event("n2", "r1", wire),
            Some(RoomEvent::Presence { origin: None, .. })
        ));
        assert!(decode_event("n1", "r1", "garbage".into()).is_none());
    }
}
