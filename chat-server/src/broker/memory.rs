//! The in-process broker of the embedded mode.
//!
//! Limits: one process only (no other instance sees its rooms); one counter per
//! room ever used is kept in memory (a few dozen bytes each). Seq assignment and
//! hand-off to the room happen under one lock, so delivery order is seq order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{BoxFuture, Broker, BrokerError, Deliver, Publish, RoomEvent};

pub struct MemoryBroker {
    counters: Mutex<HashMap<String, u64>>,
    deliver: Arc<dyn Deliver>,
}

impl MemoryBroker {
    pub fn new(deliver: Arc<dyn Deliver>) -> MemoryBroker {
        MemoryBroker {
            counters: Mutex::new(HashMap::new()),
            deliver,
        }
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Broker for MemoryBroker {
    /// Cannot fail halfway, so `n` needs no bookkeeping; the counter cannot go
    /// backwards, so neither does `floor`.
    fn publish<'a>(&'a self, p: Publish<'a>) -> BoxFuture<'a, Result<u64, BrokerError>> {
        let result = (|| {
            let mut counters = self.counters();
            let seq = counters.get_mut(p.room).ok_or(BrokerError::Unseeded)?;
            *seq += 1;
            let seq = *seq;
            self.deliver.deliver(
                p.room,
                RoomEvent::Message {
                    seq,
                    frame: p.parts.frame(seq).into(),
                },
            );
            Ok(seq)
        })();
        Box::pin(async move { result })
    }

    fn publish_presence<'a>(
        &'a self,
        room: &'a str,
        origin: u64,
        frame: String,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.deliver.deliver(
            room,
            RoomEvent::Presence {
                origin: Some(origin),
                frame: frame.into(),
            },
        );
        Box::pin(async { Ok(()) })
    }

    fn subscribe<'a>(&'a self, _room: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async { Ok(()) })
    }

    fn unsubscribe<'a>(&'a self, _room: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    fn last_seq<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Option<u64>, BrokerError>> {
        let seq = self.counters().get(room).copied();
        Box::pin(async move { Ok(seq) })
    }

    fn raise_seq<'a>(
        &'a self,
        room: &'a str,
        floor: u64,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        let mut counters = self.counters();
        let seq = counters.entry(room.to_owned()).or_insert(floor);
        *seq = (*seq).max(floor);
        Box::pin(async { Ok(()) })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async { Ok(()) })
    }
}
