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
//! The mailboxes are unbounded on purpose: the broker's single pub/sub reader must
//! never wait on one room. A backlog only builds while a room fills a gap, which is
//! bounded in time (`GAP_WAIT`); member queues, where clients set the pace, are the
//! bounded ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::broker::{Broker, BrokerError, Deliver, RoomEvent};
use crate::metrics::Metrics;
use crate::outbound::Outbound;
use crate::protocol::{ChatMessage, MessageParts};
use crate::store::{HistoryStore, Range, StoreError};

/// How long a missing seq is waited for (its commit may be in flight) before it is
/// skipped as lost (its publisher died between publish and commit: never acked).
const GAP_WAIT: Duration = Duration::from_secs(5);
const GAP_POLL: Duration = Duration::from_millis(10);
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
}

impl Hub {
    pub fn new(
        rooms: Arc<Rooms>,
        broker: Arc<dyn Broker>,
        store: Arc<dyn HistoryStore>,
        metrics: Arc<Metrics>,
    ) -> Hub {
        Hub {
            rooms,
            broker,
            store,
            metrics,
        }
    }

    /// Registers `conn` in `room` in buffering mode; returns the room's last seq.
    /// Call [`Hub::live`] next (after sending `joined` and any catch-up).
    pub async fn join(&self, room: &str, conn: u64, out: Outbound) -> Result<u64, HubError> {
        let tx = {
            let mut map = self.rooms.lock();
            let entry = map.entry(room.to_owned()).or_insert_with(|| Entry {
                tx: RoomActor::spawn(room.to_owned(), self.clone()),
                members: 0,
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
    pub async fn publish(&self, room: &str, parts: &MessageParts) -> Result<u64, HubError> {
        match self.broker.publish(room, parts).await {
            Err(BrokerError::Unseeded) => {
                self.seed(room).await?;
                Ok(self.broker.publish(room, parts).await?)
            }
            other => Ok(other?),
        }
    }

    /// The room's latest seq, seeding a missing counter from the store.
    async fn last_seq(&self, room: &str) -> Result<u64, HubError> {
        match self.broker.last_seq(room).await? {
            Some(seq) => Ok(seq),
            None => {
                self.seed(room).await?;
                Ok(self.broker.last_seq(room).await?.unwrap_or(0))
            }
        }
    }

    async fn seed(&self, room: &str) -> Result<(), HubError> {
        let floor = self.store.max_seq(room).await?;
        tracing::info!(
            room,
            floor,
            "seeding the room's seq counter from the history store"
        );
        Ok(self.broker.seed_seq(room, floor).await?)
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
        let deadline = Instant::now() + GAP_WAIT;
        let mut next = after;
        while next < upto {
            let rows = self.next_rows(room, next, upto, deadline).await?;
            let Some(last) = rows.last() else {
                return Ok(upto);
            };
            next = last.seq;
            for msg in &rows {
                if !out.send(render(msg)).await {
                    return Ok(next);
                }
                self.metrics.messages_delivered.inc();
            }
        }
        Ok(next)
    }

    /// The stored rows after `after` (at most up to `upto`) that follow it without
    /// a hole. A hole may be a commit still in flight, so it is waited for until
    /// `deadline`; after that the rows beyond it are returned (the missing seqs were
    /// never committed, so never acked). Empty: nothing more is stored.
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
                if let Some(first) = rows.first() {
                    tracing::warn!(
                        room,
                        from = after + 1,
                        to = first.seq - 1,
                        "seqs never committed; skipping them"
                    );
                }
                return Ok(rows);
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
}

impl RoomActor {
    fn spawn(room: String, hub: Hub) -> mpsc::UnboundedSender<Command> {
        let (tx, rx) = mpsc::unbounded_channel();
        let actor = RoomActor {
            room,
            hub,
            members: HashMap::new(),
            last: None,
        };
        tokio::spawn(actor.run(rx));
        tx
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
                self.last = Some(last);
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
        if seq <= last {
            return; // published before our baseline, or a replayed duplicate
        }
        if seq > last + 1 {
            self.fill(last, seq - 1).await;
        }
        self.fan_out(seq, &frame, None);
        self.last = Some(seq);
    }

    /// Forwards stored seqs `after+1..=upto` (a gap in the live stream).
    async fn fill(&mut self, after: u64, upto: u64) {
        let deadline = Instant::now() + GAP_WAIT;
        let mut next = after;
        while next < upto {
            match self.hub.next_rows(&self.room, next, upto, deadline).await {
                Ok(rows) if !rows.is_empty() => {
                    for msg in &rows {
                        self.fan_out(msg.seq, &render(msg), None);
                    }
                    next = rows[rows.len() - 1].seq;
                }
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(room = %self.room, from = next + 1, upto, error = %e, "gap fill failed");
                    break;
                }
            }
        }
        self.last = Some(upto);
    }

    /// After a broker reconnect: catch up to the counter.
    async fn resync(&mut self) {
        let Some(last) = self.last else { return };
        match self.hub.last_seq(&self.room).await {
            Ok(current) if current > last => self.fill(last, current).await,
            Ok(_) => {}
            Err(e) => tracing::warn!(room = %self.room, error = %e, "resync failed"),
        }
    }

    /// Queues `frame` to every member but `except`; `seq` 0 marks presence.
    fn fan_out(&mut self, seq: u64, frame: &Utf8Bytes, except: Option<u64>) {
        let mut delivered = 0;
        self.members.retain(|conn, member| {
            if Some(*conn) == except {
                return true;
            }
            let queued = match &mut member.buffer {
                Some(buffer) if buffer.len() < member.out.capacity() => {
                    buffer.push((seq, frame.clone()));
                    true
                }
                Some(_) => {
                    member.out.close_slow();
                    false
                }
                None => member.out.push(frame.clone()),
            };
            if queued && seq > 0 {
                delivered += 1;
            }
            queued
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
