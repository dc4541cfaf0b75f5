//! The Redis broker: seq assignment and fan-out across instances.
//!
//! Publishing is one Lua script: INCR the room's counter (jumping past the
//! publisher's floor if the counter went backwards), splice the seq between the
//! frame's prefix and suffix, PUBLISH the frame on the room's channel, remember the
//! seq under the publishing connection's key, return the seq. Being atomic, it
//! makes publish order equal seq order. The remembered seq makes a retry after a
//! lost reply (the script ran, the answer did not arrive) return that seq instead
//! of publishing again, so the message still gets its commit slot and its ack.
//!
//! Each instance holds ONE pub/sub connection, owned by one task. Subscriptions are
//! reference-counted there and only rooms with local members are subscribed. The
//! task takes every (un)subscribe queued at once and sends them as one command:
//! the first join of a room waits for a SUBSCRIBE round trip, and one at a time
//! these capped new rooms at one per round trip (1,000 first joins with Redis
//! 2 ms away took 4.6 s). When
//! the connection drops, the task reconnects with backoff, resubscribes every room
//! and asks the hub to resync (fill what was missed from the history store).
//! Commands go through [`Commands`] (shared with presence, retried once on a
//! broken connection).
//!
//! Keys: `chat:seq:{room}` (counter), channel `chat:room:{room}`,
//! `chat:pub:{node}:{conn}` (the connection's last publish, `n:seq`, for 60 s).
//! Limits: one Redis (no cluster); a pub/sub client far behind is disconnected by
//! Redis (`client-output-buffer-limit pubsub`), which this task treats as a drop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use redis::aio::PubSubSink;
use redis::{AsyncCommands, Script};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::{BoxFuture, Broker, BrokerError, Deliver, Publish, decode_event, encode_presence};
use crate::redis_commands::Commands;

const CHANNEL_PREFIX: &str = "chat:room:";
/// KEYS: counter, publish record. ARGV: prefix, suffix, channel, floor, n.
const PUBLISH_LUA: &str = r#"
local done = redis.call('GET', KEYS[2])
if done then
  local n, seq = string.match(done, '^(%d+):(%d+)$')
  if n == ARGV[5] then return tonumber(seq) end
end
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local seq = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[4])
if seq <= floor then
  seq = floor + 1
  redis.call('SET', KEYS[1], seq)
end
redis.call('PUBLISH', ARGV[3], ARGV[1] .. seq .. ARGV[2])
redis.call('SET', KEYS[2], ARGV[5] .. ':' .. seq, 'EX', 60)
return seq
"#;
/// KEYS: counter. ARGV: floor.
const RAISE_LUA: &str = r#"
local seq = tonumber(redis.call('GET', KEYS[1]) or '-1')
if seq < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 0
"#;

fn channel(room: &str) -> String {
    format!("{CHANNEL_PREFIX}{room}")
}

fn counter_key(room: &str) -> String {
    format!("chat:seq:{room}")
}

enum SubCommand {
    Subscribe(String, oneshot::Sender<Result<(), BrokerError>>),
    Unsubscribe(String),
}

pub struct RedisBroker {
    commands: Commands,
    publish: Script,
    raise: Script,
    node: String,
    subscriptions: mpsc::UnboundedSender<SubCommand>,
    /// Whether the pub/sub connection is up (subscribed to every room).
    pubsub_up: watch::Receiver<bool>,
}

impl RedisBroker {
    /// Starts the pub/sub task; commands go over `commands`.
    pub fn start(
        client: redis::Client,
        commands: Commands,
        deliver: Arc<dyn Deliver>,
        node: String,
        shutdown: CancellationToken,
    ) -> RedisBroker {
        let (subscriptions, rx) = mpsc::unbounded_channel();
        let (up, pubsub_up) = watch::channel(false);
        let task = PubSubTask {
            timeout: commands.timeout(),
            client,
            deliver,
            node: node.clone(),
            rx,
            up,
            counts: HashMap::new(),
        };
        tokio::spawn(task.run(shutdown));
        RedisBroker {
            commands,
            publish: Script::new(PUBLISH_LUA),
            raise: Script::new(RAISE_LUA),
            node,
            subscriptions,
            pubsub_up,
        }
    }
}

impl RedisBroker {
    async fn subscribe_once(&self, room: &str) -> Result<(), BrokerError> {
        let (tx, rx) = oneshot::channel();
        self.subscriptions
            .send(SubCommand::Subscribe(room.to_owned(), tx))
            .map_err(|_| BrokerError::Disconnected)?;
        rx.await.map_err(|_| BrokerError::Disconnected)?
    }
}

impl Broker for RedisBroker {
    fn publish<'a>(&'a self, p: Publish<'a>) -> BoxFuture<'a, Result<u64, BrokerError>> {
        Box::pin(async move {
            let record = format!("chat:pub:{}:{}", self.node, p.conn);
            let (counter, channel) = (counter_key(p.room), channel(p.room));
            let seq: i64 = self
                .commands
                .run(|mut conn| {
                    let mut call = self.publish.prepare_invoke();
                    call.key(&counter)
                        .key(&record)
                        .arg(&p.parts.prefix)
                        .arg(&p.parts.suffix)
                        .arg(&channel)
                        .arg(p.floor)
                        .arg(p.n);
                    async move { call.invoke_async(&mut conn).await }
                })
                .await?;
            u64::try_from(seq).map_err(|_| BrokerError::Unseeded)
        })
    }

    fn publish_presence<'a>(
        &'a self,
        room: &'a str,
        origin: u64,
        frame: String,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let payload = encode_presence(&self.node, origin, &frame);
            let _: i64 = self
                .commands
                .run(|mut conn| {
                    let (channel, payload) = (channel(room), payload.clone());
                    async move { conn.publish(channel, payload).await }
                })
                .await?;
            Ok(())
        })
    }

    /// A subscribe that meets a broken pub/sub connection waits (up to the command
    /// timeout) for the reconnect and is sent once more, like every command: a
    /// join during a reconnect is served, not refused.
    fn subscribe<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            match self.subscribe_once(room).await {
                Err(BrokerError::Disconnected) => {
                    let mut up = self.pubsub_up.clone();
                    let wait = self.commands.timeout();
                    let reconnected = tokio::time::timeout(wait, up.wait_for(|up| *up))
                        .await
                        .is_ok_and(|up| up.is_ok());
                    if !reconnected {
                        return Err(BrokerError::Disconnected);
                    }
                    self.subscribe_once(room).await
                }
                other => other,
            }
        })
    }

    fn unsubscribe<'a>(&'a self, room: &'a str) -> BoxFuture<'a, ()> {
        let _ = self
            .subscriptions
            .send(SubCommand::Unsubscribe(room.to_owned()));
        Box::pin(async {})
    }

    fn last_seq<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Option<u64>, BrokerError>> {
        Box::pin(async move {
            let key = counter_key(room);
            let seq = self
                .commands
                .run(|mut conn| {
                    let key = key.clone();
                    async move { conn.get(key).await }
                })
                .await?;
            Ok(seq)
        })
    }

    fn raise_seq<'a>(
        &'a self,
        room: &'a str,
        floor: u64,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let key = counter_key(room);
            let _: i64 = self
                .commands
                .run(|mut conn| {
                    let mut call = self.raise.prepare_invoke();
                    call.key(&key).arg(floor);
                    async move { call.invoke_async(&mut conn).await }
                })
                .await?;
            Ok(())
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            let _: String = self
                .commands
                .run(|mut conn| async move { redis::cmd("PING").query_async(&mut conn).await })
                .await?;
            if !*self.pubsub_up.borrow() {
                return Err(BrokerError::Disconnected);
            }
            Ok(())
        })
    }
}

/// (Un)subscribes sent as one command at most: bounds the time one command
/// holds the pub/sub task away from delivering.
const BATCH: usize = 256;

/// What a batch of (un)subscribes has gathered and not sent yet.
#[derive(Default)]
struct Pending {
    /// Rooms this batch counted for the first time: to SUBSCRIBE.
    new_rooms: Vec<String>,
    /// Everyone waiting on that SUBSCRIBE.
    replies: Vec<oneshot::Sender<Result<(), BrokerError>>>,
    /// Rooms whose count fell to zero: to UNSUBSCRIBE.
    unsubscribe: Vec<String>,
}

/// Owns the pub/sub connection and the subscription counts.
struct PubSubTask {
    /// Bounds the connect and each (un)subscribe, like every command.
    timeout: Duration,
    client: redis::Client,
    deliver: Arc<dyn Deliver>,
    node: String,
    rx: mpsc::UnboundedReceiver<SubCommand>,
    up: watch::Sender<bool>,
    counts: HashMap<String, usize>,
}

impl PubSubTask {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        let mut connected_before = false;
        loop {
            let connect = tokio::time::timeout(self.timeout, self.client.get_async_pubsub());
            let pubsub = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = connect => r,
            };
            let (mut sink, mut stream) = match pubsub {
                Ok(Ok(p)) => p.split(),
                failed => {
                    let reason = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "connect timed out".into(),
                    };
                    tracing::warn!(%reason, "redis pub/sub connect failed; retrying");
                    if !self.wait_down(backoff, &shutdown).await {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            let rooms: Vec<String> = self.counts.keys().map(|r| channel(r)).collect();
            if !rooms.is_empty() && sink.subscribe(&rooms).await.is_err() {
                tracing::warn!("redis resubscribe failed; reconnecting");
                if !self.wait_down(backoff, &shutdown).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
            backoff = Duration::from_millis(100);
            self.up.send_replace(true);
            if connected_before {
                tracing::info!(
                    rooms = rooms.len(),
                    "redis pub/sub reconnected and resubscribed"
                );
                self.deliver.resync();
            }
            connected_before = true;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    cmd = self.rx.recv() => match cmd {
                        None => return,
                        Some(cmd) => if !self.command(&mut sink, cmd).await {
                            break;
                        },
                    },
                    msg = stream.next() => match msg {
                        None => break,
                        Some(msg) => {
                            let Some(room) = msg.get_channel_name().strip_prefix(CHANNEL_PREFIX) else {
                                continue;
                            };
                            let Ok(payload) = String::from_utf8(msg.get_payload_bytes().to_vec()) else {
                                continue;
                            };
                            match decode_event(&self.node, room, payload) {
                                Some(event) => self.deliver.deliver(room, event),
                                None => tracing::warn!(room, "undecodable event on the room channel"),
                            }
                        }
                    },
                }
            }
            self.up.send_replace(false);
            tracing::warn!("redis pub/sub connection lost; reconnecting");
        }
    }

    /// Applies `first` and every (un)subscribe queued behind it, at most
    /// [`BATCH`]: consecutive subscribes go out as one SUBSCRIBE, consecutive
    /// unsubscribes as one UNSUBSCRIBE, in the order they came. A burst of joins
    /// into new rooms (a reconnect storm, many small rooms) so waits for a few
    /// round trips instead of one per room, in turn. False when the connection
    /// turned out broken; the commands after the failure are then settled as
    /// [`wait_down`](Self::wait_down) settles them.
    async fn command(&mut self, sink: &mut PubSubSink, first: SubCommand) -> bool {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match self.rx.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(_) => break,
            }
        }
        let mut pending = Pending::default();
        let mut commands = batch.into_iter();
        let mut up = true;
        for cmd in commands.by_ref() {
            match cmd {
                SubCommand::Subscribe(room, reply) => {
                    if !pending.unsubscribe.is_empty() {
                        up = self.flush(sink, &mut pending).await;
                    }
                    if !up {
                        let _ = reply.send(Err(BrokerError::Disconnected));
                        break;
                    }
                    match self.counts.get_mut(&room) {
                        Some(n) if !pending.new_rooms.contains(&room) => {
                            *n += 1;
                            let _ = reply.send(Ok(()));
                            continue;
                        }
                        Some(n) => *n += 1,
                        None => {
                            self.counts.insert(room.clone(), 1);
                            pending.new_rooms.push(room);
                        }
                    }
                    pending.replies.push(reply);
                }
                SubCommand::Unsubscribe(room) => {
                    if !pending.new_rooms.is_empty() {
                        up = self.flush(sink, &mut pending).await;
                    }
                    self.release(&room);
                    if !up {
                        break;
                    }
                    if !self.counts.contains_key(&room) {
                        pending.unsubscribe.push(room);
                    }
                }
            }
        }
        if up {
            up = self.flush(sink, &mut pending).await;
        }
        for cmd in commands {
            match cmd {
                SubCommand::Subscribe(_, reply) => {
                    let _ = reply.send(Err(BrokerError::Disconnected));
                }
                SubCommand::Unsubscribe(room) => self.release(&room),
            }
        }
        up
    }

    /// Sends what `pending` holds; false when the connection turned out broken.
    /// A failed SUBSCRIBE counts none of its rooms and answers every waiter
    /// `Disconnected`.
    async fn flush(&mut self, sink: &mut PubSubSink, pending: &mut Pending) -> bool {
        if !pending.unsubscribe.is_empty() {
            let channels: Vec<String> =
                pending.unsubscribe.drain(..).map(|r| channel(&r)).collect();
            return tokio::time::timeout(self.timeout, sink.unsubscribe(channels))
                .await
                .is_ok_and(|r| r.is_ok());
        }
        if pending.new_rooms.is_empty() {
            return true;
        }
        let channels: Vec<String> = pending.new_rooms.iter().map(|r| channel(r)).collect();
        let up = tokio::time::timeout(self.timeout, sink.subscribe(channels))
            .await
            .is_ok_and(|r| r.is_ok());
        if !up {
            for room in &pending.new_rooms {
                self.counts.remove(room);
            }
        }
        pending.new_rooms.clear();
        for reply in pending.replies.drain(..) {
            // Disconnected: the waiter's subscribe waits for the reconnect and
            // asks once more.
            let _ = reply.send(if up {
                Ok(())
            } else {
                Err(BrokerError::Disconnected)
            });
        }
        up
    }

    fn release(&mut self, room: &str) {
        if let Some(n) = self.counts.get_mut(room) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(room);
            }
        }
    }

    /// While disconnected: refuse subscribes, count unsubscribes, for `backoff`.
    /// False on shutdown.
    async fn wait_down(&mut self, backoff: Duration, shutdown: &CancellationToken) -> bool {
        let sleep = tokio::time::sleep(backoff);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = &mut sleep => return true,
                cmd = self.rx.recv() => match cmd {
                    None => return false,
                    Some(SubCommand::Subscribe(_, reply)) => {
                        let _ = reply.send(Err(BrokerError::Disconnected));
                    }
                    Some(SubCommand::Unsubscribe(room)) => self.release(&room),
                },
            }
        }
    }
}
