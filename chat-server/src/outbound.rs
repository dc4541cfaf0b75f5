//! A connection's bounded outbound queue and the close signal that ends it.
//!
//! Fan-out must never wait on a slow socket, so room fan-out uses [`Outbound::push`]
//! (try_send): a full queue closes that connection with 4000 at once. The session's
//! own replies to a request may wait for room ([`Outbound::send`]). The first close
//! reason wins; the writer task sends it as the WebSocket close frame.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::protocol::CLOSE_SLOW_CONSUMER;

/// Why a connection is being closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: String,
}

struct Shared {
    closed: CancellationToken,
    reason: OnceLock<CloseReason>,
    metrics: Arc<Metrics>,
}

/// The sending side of one connection's outbound queue. The queue (flume's) grows
/// as frames wait in it, so an idle connection's costs a few hundred bytes.
#[derive(Clone)]
pub struct Outbound {
    tx: flume::Sender<Utf8Bytes>,
    shared: Arc<Shared>,
}

impl Outbound {
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> (Outbound, flume::Receiver<Utf8Bytes>) {
        let (tx, rx) = flume::bounded(capacity.max(1));
        let shared = Arc::new(Shared {
            closed: CancellationToken::new(),
            reason: OnceLock::new(),
            metrics,
        });
        (Outbound { tx, shared }, rx)
    }

    /// Queues a frame without waiting. A full queue closes the connection with
    /// 4000 "slow consumer"; returns whether the frame was queued.
    pub fn push(&self, frame: Utf8Bytes) -> bool {
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(flume::TrySendError::Full(_)) => {
                self.close_slow();
                false
            }
            Err(flume::TrySendError::Disconnected(_)) => false,
        }
    }

    /// Queues a frame, waiting up to `wait` for room (for a session's own, paced
    /// output: a replay). A client that takes nothing for that long is closed with
    /// 4000 "slow consumer", so it cannot hold a join's turn forever.
    pub async fn send(&self, frame: Utf8Bytes, wait: Duration) -> bool {
        tokio::select! {
            r = tokio::time::timeout(wait, self.tx.send_async(frame)) => match r {
                Ok(sent) => sent.is_ok(),
                Err(_) => {
                    self.close_slow();
                    false
                }
            },
            _ = self.shared.closed.cancelled() => false,
        }
    }

    pub fn capacity(&self) -> usize {
        self.tx.capacity().unwrap_or(usize::MAX)
    }

    pub fn close_slow(&self) {
        if self.close(CLOSE_SLOW_CONSUMER, "slow consumer") {
            self.shared.metrics.slow_consumers.inc();
        }
    }

    /// Asks the writer to close with `code`; false if a close was already asked.
    pub fn close(&self, code: u16, reason: &str) -> bool {
        let first = self
            .shared
            .reason
            .set(CloseReason {
                code,
                reason: reason.to_owned(),
            })
            .is_ok();
        self.shared.closed.cancel();
        first
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closed.is_cancelled()
    }

    /// Resolves once a close was asked.
    pub async fn closed(&self) {
        self.shared.closed.cancelled().await
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.reason.get().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_closes_as_slow_consumer_once() {
        let metrics = Arc::new(Metrics::new());
        let (out, _rx) = Outbound::new(2, metrics.clone());
        assert!(out.push("a".into()));
        assert!(out.push("b".into()));
        assert!(!out.push("c".into()));
        assert!(!out.push("d".into()));
        assert!(out.is_closed());
        assert_eq!(
            out.close_reason(),
            Some(CloseReason {
                code: 4000,
                reason: "slow consumer".into()
            })
        );
        assert_eq!(metrics.slow_consumers.get(), 1);
        assert!(!out.close(1001, "going away"));
    }

    #[tokio::test]
    async fn a_paced_send_gives_up_on_a_client_that_reads_nothing() {
        let metrics = Arc::new(Metrics::new());
        let (out, rx) = Outbound::new(1, metrics.clone());
        assert!(out.send("a".into(), Duration::from_millis(10)).await);
        assert!(!out.send("b".into(), Duration::from_millis(10)).await);
        assert_eq!(out.close_reason().map(|c| c.code), Some(4000));
        assert_eq!(metrics.slow_consumers.get(), 1);
        assert_eq!(rx.recv_async().await.ok().as_deref(), Some("a"));
    }
}
