//! The hub: this instance's rooms, and the ordered fan-out of their events.
//!
//! Each room with local members has one actor task that owns its member list and
//! the last seq it forwarded. Everything about a room goes through that actor's
//! mailbox (broker events, joins, leaves), so ordering needs no locks: members get
//! messages in seq order, each frame is the broker's shared bytes, and a member's
//! queue is written with `try_send` (a full one is closed as a slow consumer).
//!
//! One mechanism keeps the stream gap-free: when a live seq jumps past the next
//! expected one (published before we subscribed, or missed while the pub/sub
//! connection was down), the actor reads the missing seqs from the history store
//! (waiting a bounded time for their commit) and forwards them first. Joins with
//! `since` use the same read: the member is registered in buffering mode, the
//! session streams the stored range up to the actor's seq at registration, and
//! the actor then releases the buffered live frames after it.
//!
//! A seq that stays missing for `gap_wait` is given up: the reader stores a
//! *tombstone* under it (insert-if-absent), then reads again. Either the real
//! message won the race (it is delivered), or the tombstone did, and then the late
//! commit conflicts and its sender is told `unavailable` instead of getting an ack.
//! So a skipped seq is never acked, however slow the store is. If the store cannot
//! be read at all, the room does not skip: it stops forwarding (live frames are
//! dropped, as they will be read back from the store) and retries every
//! `FILL_RETRY` until the gap is filled.
//!
//! The mailboxes are unbounded on purpose: the broker's single pub/sub reader must
//! never wait on one room. A backlog only builds while a room fills a gap, which is
//! bounded in time (`gap_wait`, then tombstones); member queues, where clients set
//! the pace, are the bounded ones.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::broker::{Broker, BrokerError, Deliver, Publish, RoomEvent};
use crate::metrics::Metrics;
use crate::outbound::Outbound;
use crate::protocol::{ChatMessage, MessageParts};
use crate::store::{HistoryStore, Range, StoreError};

const GAP_POLL: Duration = Duration::from_millis(10);
/// How often a room whose gap could not be read from the store tries again.
const FILL_RETRY: Duration = Duration::from_secs(1);
/// How long a replay waits for room in a member's queue before it closes the
/// member as a slow consumer (the join holds one of `join_concurrency` turns).
const REPLAY_SEND_WAIT: Duration = Duration::from_secs(5);
/// Rows per store read when replaying a range.
const PAGE: u32 = 500;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("broker unavailable: {0}")]
    Broker(#[from] BrokerError),
    #[error("history store unavailable: {0}")]
    Store(#[from] StoreError),
    #[error("the room stopped")]
    Stopped,
}

enum Command {
    Join {
        conn: u64,
        out: Outbound,
        reply: oneshot::Sender<Result<u64, HubError>>,
    },
    Live {
        conn: u64,
        delivered: u64,
    },
    Leave {
        conn: u64,
    },
    Event(RoomEvent),
    Resync,
    Stop,
}

struct Entry {
    tx: mpsc::UnboundedSender<Command>,
    members: usize,
    /// The last seq the room's actor forwarded (0 before it subscribed).
    last: Arc<AtomicU64>,
}

/// The registry of local rooms; the broker delivers into it.
#[derive(Default)]
pub struct Rooms {
    map: Mutex<HashMap<String, Entry>>,
}

impl Rooms {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Deliver for Rooms {
    fn deliver(&self, room: &str, event: RoomEvent) {
        if let Some(entry) = self.lock().get(room) {
            let _ = entry.tx.send(Command::Event(event));
        }
    }

    fn resync(&self) {
        for entry in self.lock().values() {
            let _ = entry.tx.send(Command::Resync);
        }
    }
}

/// Rooms, broker and store together: what sessions talk to.
#[derive(Clone)]
pub struct Hub {
    rooms: Arc<Rooms>,
    broker: Arc<dyn Broker>,
    store: Arc<dyn HistoryStore>,
    metrics: Arc<Metrics>,
    /// How long a missing seq is waited for (its commit may be in flight) before
    /// it is given up with a tombstone.
    gap_wait: Duration,
}

impl Hub {
    pub fn new(
        rooms: Arc<Rooms>,
        broker: Arc<dyn Broker>,
        store: Arc<dyn HistoryStore>,
        metrics: Arc<Metrics>,
        gap_wait: Duration,
    ) -> Hub {
        Hub {
            rooms,
            broker,
            store,
            metrics,
            gap_wait,
        }
    }

    /// Registers `conn` in `room` in buffering mode; returns the room's last seq.
    /// Call [`Hub::live`] next (after sending `joined` and any catch-up).
    pub async fn join(&self, room: &str, conn: u64, out: Outbound) -> Result<u64, HubError> {
        let tx = {
            let mut map = self.rooms.lock();
            let entry = map.entry(room.to_owned()).or_insert_with(|| {
                let last = Arc::new(AtomicU64::new(0));
                Entry {
                    tx: RoomActor::spawn(room.to_owned(), self.clone(), last.clone()),
                    members: 0,
                    last,
                }
            });
            entry.members += 1;
            let tx = entry.tx.clone();
            self.metrics.rooms_local.set(map.len() as i64);
            tx
        };
        let (reply, rx) = oneshot::channel();
        let result = match tx.send(Command::Join { conn, out, reply }) {
            Ok(()) => rx.await.unwrap_or(Err(HubError::Stopped)),
            Err(_) => Err(HubError::Stopped),
        };
        if result.is_err() {
            self.leave(room, conn);
        }
        result
    }

    /// Ends buffering: frames after seq `delivered` are released to the member.
    pub fn live(&self, room: &str, conn: u64, delivered: u64) {
        if let Some(entry) = self.rooms.lock().get(room) {
            let _ = entry.tx.send(Command::Live { conn, delivered });
        }
    }

    pub fn leave(&self, room: &str, conn: u64) {
        let mut map = self.rooms.lock();
        let Some(entry) = map.get_mut(room) else {
            return;
        };
        let _ = entry.tx.send(Command::Leave { conn });
        entry.members -= 1;
        if entry.members == 0 {
            let _ = entry.tx.send(Command::Stop);
            map.remove(room);
        }
        self.metrics.rooms_local.set(map.len() as i64);
    }

    /// Assigns a seq and publishes; seeds the room's counter first if needed.
    /// `(conn, n)` names this publish, so the broker's retry is idempotent.
    pub async fn publish(
        &self,
        room: &str,
        parts: &MessageParts,
        conn: u64,
        n: u64,
    ) -> Result<u64, HubError> {
        let floor = self
            .rooms
            .lock()
            .get(room)
            .map_or(0, |e| e.last.load(Ordering::Relaxed));
        let publish = Publish {
            room,
            parts,
            conn,
            n,
            floor,
        };
        match self.broker.publish(publish).await {
            Err(BrokerError::Unseeded) => {
                self.seed(room).await?;
                Ok(self.broker.publish(publish).await?)
            }
            other => Ok(other?),
        }
    }

    /// The room's latest seq. A counter that is missing, or behind the highest
    /// stored seq (Redis lost writes), is raised to the stored seq first. If the
    /// store cannot be read, an existing counter is trusted.
    async fn last_seq(&self, room: &str) -> Result<u64, HubError> {
        let (counter, stored) = tokio::join!(self.broker.last_seq(room), self.store.max_seq(room));
        let counter = counter?;
        let stored = match (stored, counter) {
            (Ok(stored), _) => stored,
            (Err(e), Some(seq)) => {
                tracing::warn!(room, error = %e, "cannot check the seq counter against the history store");
                return Ok(seq);
            }
            (Err(e), None) => return Err(e.into()),
        };
        match counter {
            Some(seq) if seq >= stored => Ok(seq),
            _ => {
                self.raise_counter(room, stored, counter).await?;
                Ok(self.broker.last_seq(room).await?.unwrap_or(stored))
            }
        }
    }

    async fn seed(&self, room: &str) -> Result<(), HubError> {
        let stored = self.store.max_seq(room).await?;
        self.raise_counter(room, stored, None).await
    }

    /// After a commit conflict: the room's counter is behind the store (it went
    /// backwards), so raise it past the highest stored seq.
    pub async fn repair_counter(&self, room: &str) -> Result<(), HubError> {
        let stored = self.store.max_seq(room).await?;
        let counter = self.broker.last_seq(room).await?;
        self.raise_counter(room, stored, counter).await
    }

    async fn raise_counter(
        &self,
        room: &str,
        stored: u64,
        counter: Option<u64>,
    ) -> Result<(), HubError> {
        match counter {
            None => tracing::info!(
                room,
                stored,
                "seeding the room's seq counter from the history store"
            ),
            Some(seq) if seq < stored => tracing::warn!(
                room,
                counter = seq,
                stored,
                "the room's seq counter is behind the history store (Redis lost writes); raising it"
            ),
            Some(_) => return Ok(()),
        }
        Ok(self.broker.raise_seq(room, stored).await?)
    }

    /// Streams stored messages with `after < seq <= upto` to `out`, in order, each
    /// frame via `out.send` (waiting for queue room). Returns the last seq covered.
    pub async fn replay(
        &self,
        room: &str,
        after: u64,
        upto: u64,
        out: &Outbound,
    ) -> Result<u64, HubError> {
        let deadline = Instant::now() + self.gap_wait;
        let mut next = after;
        while next < upto {
            let rows = self.next_rows(room, next, upto, deadline).await?;
            for msg in &rows {
                if !msg.is_tombstone() {
                    if !out.send(render(msg), REPLAY_SEND_WAIT).await {
                        return Ok(next);
                    }
                    self.metrics.messages_delivered.inc();
                }
                next = msg.seq;
            }
        }
        Ok(next)
    }

    /// The stored rows after `after` (at most up to `upto`) that follow it without
    /// a hole; never empty while `after < upto`. A hole may be a commit still in
    /// flight, so it is waited for until `deadline`; after that its seqs are given up
    /// with tombstones (returned among the rows: skip them).
    async fn next_rows(
        &self,
        room: &str,
        after: u64,
        upto: u64,
        deadline: Instant,
    ) -> Result<Vec<ChatMessage>, HubError> {
        loop {
            let range = Range {
                after: Some(after),
                before: Some(upto.saturating_add(1)),
                limit: PAGE,
            };
            let mut rows = self.store.range(room, range).await?;
            let contiguous = rows
                .iter()
                .zip(after + 1..)
                .take_while(|(m, want)| m.seq == *want)
                .count();
            if contiguous > 0 {
                rows.truncate(contiguous);
                return Ok(rows);
            }
            if Instant::now() >= deadline {
                let to = rows.first().map_or(upto, |m| m.seq - 1);
                let to = to.min(after + u64::from(PAGE));
                tracing::warn!(
                    room,
                    from = after + 1,
                    to,
                    wait = ?self.gap_wait,
                    "seqs not committed in time; giving them up"
                );
                let tombstones: Vec<ChatMessage> = (after + 1..=to)
                    .map(|seq| ChatMessage::tombstone(room, seq))
                    .collect();
                // Insert-if-absent: a commit that got there first wins.
                self.store.insert(&tombstones).await?;
                continue;
            }
            tokio::time::sleep(GAP_POLL).await;
        }
    }
}

/// A stored message as a `message` frame.
pub fn render(msg: &ChatMessage) -> Utf8Bytes {
    MessageParts::new(&msg.room, &msg.user, &msg.body, msg.ts)
        .frame(msg.seq)
        .into()
}

struct Member {
    out: Outbound,
    /// `Some` while the session replays history: live frames wait here.
    buffer: Option<Vec<(u64, Utf8Bytes)>>,
}

struct RoomActor {
    room: String,
    hub: Hub,
    members: HashMap<u64, Member>,
    /// The last seq forwarded; `None` until subscribed.
    last: Option<u64>,
    /// `last` for publishers on this instance (their floor).
    shared_last: Arc<AtomicU64>,
    /// A gap could not be read from the store: live frames are dropped (they are
    /// read back from the store) until a retry fills the gap.
    stalled: bool,
    /// This actor's own mailbox, to schedule a retry.
    me: mpsc::WeakUnboundedSender<Command>,
}

impl RoomActor {
    fn spawn(
        room: String,
        hub: Hub,
        shared_last: Arc<AtomicU64>,
    ) -> mpsc::UnboundedSender<Command> {
        let (tx, rx) = mpsc::unbounded_channel();
        let actor = RoomActor {
            room,
            hub,
            members: HashMap::new(),
            last: None,
            shared_last,
            stalled: false,
            me: tx.downgrade(),
        };
        tokio::spawn(actor.run(rx));
        tx
    }

    fn set_last(&mut self, seq: u64) {
        self.last = Some(seq);
        self.shared_last.store(seq, Ordering::Relaxed);
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        while let Some(cmd) = rx.recv().await {
            match cmd {
                Command::Join { conn, out, reply } => {
                    let result = match self.last {
                        Some(last) => Ok(last),
                        None => self.subscribe().await,
                    };
                    if result.is_ok() {
                        self.members.insert(
                            conn,
                            Member {
                                out,
                                buffer: Some(Vec::new()),
                            },
                        );
                    }
                    let _ = reply.send(result);
                }
                Command::Live { conn, delivered } => self.go_live(conn, delivered),
                Command::Leave { conn } => {
                    self.members.remove(&conn);
                }
                Command::Event(RoomEvent::Message { seq, frame }) => self.message(seq, frame).await,
                Command::Event(RoomEvent::Presence { origin, frame }) => {
                    self.fan_out(0, &frame, origin)
                }
                Command::Resync => self.resync().await,
                Command::Stop => break,
            }
        }
        if self.last.is_some() {
            self.hub.broker.unsubscribe(&self.room).await;
        }
    }

    /// Subscribes, then reads the counter: every seq above it arrives live.
    async fn subscribe(&mut self) -> Result<u64, HubError> {
        self.hub.broker.subscribe(&self.room).await?;
        match self.hub.last_seq(&self.room).await {
            Ok(last) => {
                self.set_last(last);
                Ok(last)
            }
            Err(e) => {
                self.hub.broker.unsubscribe(&self.room).await;
                Err(e)
            }
        }
    }

    async fn message(&mut self, seq: u64, frame: Utf8Bytes) {
        let Some(last) = self.last else { return };
        if seq <= last || self.stalled {
            // Published before our baseline, a replayed duplicate, or (stalled)
            // to be read back from the store by the pending retry.
            return;
        }
        if seq > last + 1 && !self.fill(last, seq - 1).await {
            return;
        }
        self.fan_out(seq, &frame, None);
        self.set_last(seq);
    }

    /// Forwards stored seqs `after+1..=upto` (a gap in the live stream). On a store
    /// error nothing is skipped: the room stalls at the last seq it forwarded and
    /// retries later. Returns whether the gap was filled.
    async fn fill(&mut self, after: u64, upto: u64) -> bool {
        let deadline = Instant::now() + self.hub.gap_wait;
        let mut next = after;
        while next < upto {
            match self.hub.next_rows(&self.room, next, upto, deadline).await {
                Ok(rows) => {
                    for msg in &rows {
                        if !msg.is_tombstone() {
                            self.fan_out(msg.seq, &render(msg), None);
                        }
                        next = msg.seq;
                    }
                    self.set_last(next);
                }
                Err(e) => {
                    tracing::warn!(room = %self.room, from = next + 1, upto, error = %e, "gap fill failed; retrying");
                    self.stall();
                    return false;
                }
            }
        }
        true
    }

    fn stall(&mut self) {
        self.stalled = true;
        let me = self.me.clone();
        tokio::spawn(async move {
            tokio::time::sleep(FILL_RETRY).await;
            if let Some(tx) = me.upgrade() {
                let _ = tx.send(Command::Resync);
            }
        });
    }

    /// After a broker reconnect (or a stall): catch up to the counter. A counter
    /// below what was forwarded went backwards (Redis lost writes): raise it.
    async fn resync(&mut self) {
        let Some(last) = self.last else { return };
        self.stalled = false;
        match self.hub.last_seq(&self.room).await {
            Ok(current) if current > last => {
                self.fill(last, current).await;
            }
            Ok(current) if current < last => {
                tracing::warn!(room = %self.room, current, last, "the room's seq counter went backwards; raising it");
                if let Err(e) = self.hub.broker.raise_seq(&self.room, last).await {
                    tracing::warn!(room = %self.room, error = %e, "raising the seq counter failed");
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(room = %self.room, error = %e, "resync failed; retrying");
                self.stall();
            }
        }
    }

    /// Queues `frame` to every member but `except`; `seq` 0 marks presence. A frame
    /// buffered for a joining member counts as delivered when `go_live` queues it.
    fn fan_out(&mut self, seq: u64, frame: &Utf8Bytes, except: Option<u64>) {
        let mut delivered = 0;
        self.members.retain(|conn, member| {
            if Some(*conn) == except {
                return true;
            }
            match &mut member.buffer {
                Some(buffer) if buffer.len() < member.out.capacity() => {
                    buffer.push((seq, frame.clone()));
                    true
                }
                Some(_) => {
                    member.out.close_slow();
                    false
                }
                None => {
                    let queued = member.out.push(frame.clone());
                    if queued && seq > 0 {
                        delivered += 1;
                    }
                    queued
                }
            }
        });
        self.hub.metrics.messages_delivered.inc_by(delivered);
    }

    fn go_live(&mut self, conn: u64, delivered: u64) {
        let Some(member) = self.members.get_mut(&conn) else {
            return;
        };
        let Some(buffer) = member.buffer.take() else {
            return;
        };
        for (seq, frame) in buffer {
            if seq != 0 && seq <= delivered {
                continue;
            }
            if !member.out.push(frame) {
                self.members.remove(&conn);
                return;
            }
            if seq > 0 {
                self.hub.metrics.messages_delivered.inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::memory::MemoryBroker;
    use crate::store::sqlite::SqliteStore;

    #[tokio::test]
    async fn a_frame_buffered_for_a_joining_member_counts_once() {
        let dir = std::env::temp_dir().join(format!("chat-hub-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Arc::new(SqliteStore::open(&dir.join("h.db")).await.unwrap());
        let rooms = Arc::new(Rooms::default());
        let broker = Arc::new(MemoryBroker::new(rooms.clone()));
        let metrics = Arc::new(Metrics::new());
        let hub = Hub::new(
            rooms,
            broker,
            store,
            metrics.clone(),
            Duration::from_secs(1),
        );

        let (out, rx) = Outbound::new(8, metrics.clone());
        assert_eq!(hub.join("r", 1, out).await.unwrap(), 0);
        // Published while the member is still buffering (before `live`).
        let parts = MessageParts::new("r", "u", "b", 1);
        assert_eq!(hub.publish("r", &parts, 7, 1).await.unwrap(), 1);
        hub.live("r", 1, 0);
        let frame = tokio::time::timeout(Duration::from_secs(10), rx.recv_async())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(frame.as_str(), parts.frame(1));
        assert_eq!(metrics.messages_delivered.get(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }
}
