//! The Redis broker: seq assignment and fan-out across instances.
//!
//! Publishing is one Lua script: INCR the room's counter, splice the seq between
//! the frame's prefix and suffix, PUBLISH the frame on the room's channel, return
//! the seq. Being atomic, it makes publish order equal seq order.
//!
//! Each instance holds ONE pub/sub connection, owned by one task. Subscriptions are
//! reference-counted there and only rooms with local members are subscribed. When
//! the connection drops, the task reconnects with backoff, resubscribes every room
//! and asks the hub to resync (fill what was missed from the history store).
//! Commands use a [`ConnectionManager`], which reconnects by itself.
//!
//! Keys: `chat:seq:{room}` (counter), channel `chat:room:{room}`.
//! Limits: one Redis (no cluster); a pub/sub client far behind is disconnected by
//! Redis (`client-output-buffer-limit pubsub`), which this task treats as a drop.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use redis::{AsyncCommands, Script};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{BoxFuture, Broker, BrokerError, Deliver, decode_event, encode_presence};
use crate::protocol::MessageParts;

const CHANNEL_PREFIX: &str = "chat:room:";
const PUBLISH_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local seq = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[3], ARGV[1] .. seq .. ARGV[2])
return seq
"#;
const TIMEOUT: Duration = Duration::from_secs(2);

fn channel(room: &str) -> String {
    format!("{CHANNEL_PREFIX}{room}")
}

fn counter_key(room: &str) -> String {
    format!("chat:seq:{room}")
}

/// A command connection with short timeouts, so a dead Redis fails requests fast.
pub async fn connection_manager(
    client: redis::Client,
) -> Result<ConnectionManager, redis::RedisError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT))
        .set_number_of_retries(1);
    ConnectionManager::new_with_config(client, config).await
}

enum SubCommand {
    Subscribe(String, oneshot::Sender<Result<(), BrokerError>>),
    Unsubscribe(String),
}

pub struct RedisBroker {
    conn: ConnectionManager,
    script: Script,
    node: String,
    commands: mpsc::UnboundedSender<SubCommand>,
    pubsub_up: Arc<AtomicBool>,
}

impl RedisBroker {
    /// Connects (failing if Redis is unreachable now) and starts the pub/sub task.
    pub async fn connect(
        client: redis::Client,
        deliver: Arc<dyn Deliver>,
        node: String,
        shutdown: CancellationToken,
    ) -> Result<RedisBroker, BrokerError> {
        let conn = connection_manager(client.clone()).await?;
        let (commands, rx) = mpsc::unbounded_channel();
        let pubsub_up = Arc::new(AtomicBool::new(false));
        let task = PubSubTask {
            client,
            deliver,
            node: node.clone(),
            rx,
            up: pubsub_up.clone(),
            counts: HashMap::new(),
        };
        tokio::spawn(task.run(shutdown));
        Ok(RedisBroker {
            conn,
            script: Script::new(PUBLISH_LUA),
            node,
            commands,
            pubsub_up,
        })
    }
}

impl Broker for RedisBroker {
    fn publish<'a>(
        &'a self,
        room: &'a str,
        parts: &'a MessageParts,
    ) -> BoxFuture<'a, Result<u64, BrokerError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let seq: i64 = self
                .script
                .key(counter_key(room))
                .arg(&parts.prefix)
                .arg(&parts.suffix)
                .arg(channel(room))
                .invoke_async(&mut conn)
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
            let mut conn = self.conn.clone();
            let _: i64 = conn
                .publish(channel(room), encode_presence(&self.node, origin, &frame))
                .await?;
            Ok(())
        })
    }

    fn subscribe<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            self.commands
                .send(SubCommand::Subscribe(room.to_owned(), tx))
                .map_err(|_| BrokerError::Disconnected)?;
            rx.await.map_err(|_| BrokerError::Disconnected)?
        })
    }

    fn unsubscribe<'a>(&'a self, room: &'a str) -> BoxFuture<'a, ()> {
        let _ = self.commands.send(SubCommand::Unsubscribe(room.to_owned()));
        Box::pin(async {})
    }

    fn last_seq<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Option<u64>, BrokerError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            Ok(conn.get(counter_key(room)).await?)
        })
    }

    fn seed_seq<'a>(&'a self, room: &'a str, floor: u64) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let _: Option<String> = redis::cmd("SET")
                .arg(counter_key(room))
                .arg(floor)
                .arg("NX")
                .query_async(&mut conn)
                .await?;
            Ok(())
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let ping: Result<String, _> = redis::cmd("PING").query_async(&mut conn).await;
            if let Err(e) = ping {
                return Err(format!("redis unreachable: {e}"));
            }
            if !self.pubsub_up.load(Ordering::Relaxed) {
                return Err("redis pub/sub connection is down".into());
            }
            Ok(())
        })
    }
}

/// Owns the pub/sub connection and the subscription counts.
struct PubSubTask {
    client: redis::Client,
    deliver: Arc<dyn Deliver>,
    node: String,
    rx: mpsc::UnboundedReceiver<SubCommand>,
    up: Arc<AtomicBool>,
    counts: HashMap<String, usize>,
}

impl PubSubTask {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        let mut connected_before = false;
        loop {
            let connect = tokio::time::timeout(TIMEOUT, self.client.get_async_pubsub());
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
            self.up.store(true, Ordering::Relaxed);
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
            self.up.store(false, Ordering::Relaxed);
            tracing::warn!("redis pub/sub connection lost; reconnecting");
        }
    }

    /// Applies one (un)subscribe; false when the connection turned out broken.
    async fn command(&mut self, sink: &mut PubSubSink, cmd: SubCommand) -> bool {
        match cmd {
            SubCommand::Subscribe(room, reply) => {
                if let Some(n) = self.counts.get_mut(&room) {
                    *n += 1;
                    let _ = reply.send(Ok(()));
                    return true;
                }
                match tokio::time::timeout(TIMEOUT, sink.subscribe(channel(&room))).await {
                    Ok(Ok(())) => {
                        self.counts.insert(room, 1);
                        let _ = reply.send(Ok(()));
                        true
                    }
                    Ok(Err(e)) => {
                        let _ = reply.send(Err(e.into()));
                        false
                    }
                    Err(_) => {
                        let _ = reply.send(Err(BrokerError::Disconnected));
                        false
                    }
                }
            }
            SubCommand::Unsubscribe(room) => {
                self.release(&room);
                if !self.counts.contains_key(&room) {
                    return tokio::time::timeout(TIMEOUT, sink.unsubscribe(channel(&room)))
                        .await
                        .is_ok_and(|r| r.is_ok());
                }
                true
            }
        }
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
