//! Cluster-wide presence in Redis sorted sets.
//!
//! Key `chat:presence:{room}`, member `<node>|<conn>|<user>`, score = expiry time
//! (ms). Readers count entries whose score is in the future. A heartbeat rewrites
//! every local entry each TTL/3 (which also restores them after a Redis restart)
//! and trims expired ones, so a dead instance's entries disappear within the TTL.
//!
//! A listing is O(room size), and every join needs one: in a reconnect storm of
//! N clients into one room that is O(N²) work for Redis, enough to time joins out.
//! So listings of a room are coalesced: one read at a time per room, and a caller
//! whose call began before the latest read started takes that read's result (it
//! is as fresh as one of its own, so it includes the caller's own entry). A join
//! that finds no read of its room in flight sends its listing with its entry, in
//! one round trip, and serves as that room's read meanwhile.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{BoxFuture, Local, Members, Presence, PresenceError};
use crate::clock::now_ms;
use crate::redis_commands::Commands;

fn key(room: &str) -> String {
    format!("chat:presence:{room}")
}

/// A connection's entry in a room's set: `<node>|<conn>|<user>`.
fn entry(node: &str, conn: u64, user: &str) -> String {
    format!("{node}|{conn}|{user}")
}

/// The latest listing of a room: when its read started, and what it returned.
type Listing = Arc<tokio::sync::Mutex<Option<(Instant, Members)>>>;

pub struct RedisPresence {
    commands: Commands,
    node: String,
    ttl: Duration,
    local: Arc<Local>,
    /// Per room: the lock one read at a time holds, and the latest listing.
    listings: Mutex<HashMap<String, Listing>>,
}

impl RedisPresence {
    /// Creates the presence store and starts its heartbeat.
    pub fn start(
        commands: Commands,
        node: String,
        ttl: Duration,
        shutdown: CancellationToken,
    ) -> RedisPresence {
        let presence = RedisPresence {
            commands,
            node,
            ttl,
            local: Arc::new(Local::default()),
            listings: Mutex::new(HashMap::new()),
        };
        let heartbeat = Heartbeat {
            commands: presence.commands.clone(),
            node: presence.node.clone(),
            ttl,
            local: presence.local.clone(),
        };
        tokio::spawn(heartbeat.run(shutdown));
        presence
    }
}

impl Presence for RedisPresence {
    fn add<'a>(
        &'a self,
        room: &'a str,
        conn: u64,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Members, PresenceError>> {
        Box::pin(async move {
            self.local.add(room, conn, user);
            let ttl = self.ttl.as_millis() as u64;
            let mut pipe = redis::pipe();
            pipe.zadd(key(room), entry(&self.node, conn, user), now_ms() + ttl)
                .ignore()
                .pexpire(key(room), (ttl * 2) as i64)
                .ignore();
            // No read of this room in flight: the listing rides along with the
            // add (one round trip). Otherwise the join waits for the coalesced
            // read like any other caller, so a storm still reads once at a time.
            let listing = self.listing(room);
            let Ok(mut latest) = listing.try_lock() else {
                self.commands.pipeline::<()>(&pipe).await?;
                return self.members(room).await;
            };
            let started = Instant::now();
            live_entries(&mut pipe, room, now_ms());
            let (entries,): (Vec<String>,) = self.commands.pipeline(&pipe).await?;
            let members = users(entries);
            *latest = Some((started, members.clone()));
            Ok(members)
        })
    }

    fn remove<'a>(&'a self, room: &'a str, conn: u64) -> BoxFuture<'a, Result<(), PresenceError>> {
        Box::pin(async move {
            let Some(user) = self.local.remove(room, conn) else {
                return Ok(());
            };
            if !self.local.has_room(room) {
                self.lock_listings().remove(room);
            }
            let mut pipe = redis::pipe();
            pipe.zrem(key(room), entry(&self.node, conn, &user))
                .ignore();
            self.commands.pipeline::<()>(&pipe).await?;
            Ok(())
        })
    }

    fn members<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Members, PresenceError>> {
        Box::pin(async move {
            let asked = Instant::now();
            let listing = self.listing(room);
            let mut latest = listing.lock().await;
            if let Some((started, members)) = &*latest
                && *started >= asked
            {
                return Ok(members.clone());
            }
            let started = Instant::now();
            let members = self.read(room).await?;
            *latest = Some((started, members.clone()));
            drop(latest);
            if !self.local.has_room(room) {
                self.lock_listings().remove(room);
            }
            Ok(members)
        })
    }
}

impl RedisPresence {
    fn lock_listings(&self) -> std::sync::MutexGuard<'_, HashMap<String, Listing>> {
        self.listings.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn listing(&self, room: &str) -> Listing {
        self.lock_listings()
            .entry(room.to_owned())
            .or_default()
            .clone()
    }

    /// One listing read from Redis.
    async fn read(&self, room: &str) -> Result<Members, PresenceError> {
        let mut pipe = redis::pipe();
        live_entries(&mut pipe, room, now_ms());
        let (entries,): (Vec<String>,) = self.commands.pipeline(&pipe).await?;
        Ok(users(entries))
    }
}

struct Heartbeat {
    commands: Commands,
    node: String,
    ttl: Duration,
    local: Arc<Local>,
}

impl Heartbeat {
    async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval((self.ttl / 3).max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(e) = self.beat().await {
                        tracing::warn!(error = %e, "presence heartbeat failed");
                    }
                }
            }
        }
    }

    async fn beat(&self) -> Result<(), redis::RedisError> {
        let entries = self.local.snapshot();
        if entries.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let ttl = self.ttl.as_millis() as u64;
        let mut pipe = redis::pipe();
        let mut rooms = BTreeSet::new();
        for (room, conn, user) in &entries {
            pipe.zadd(key(room), entry(&self.node, *conn, user), now + ttl)
                .ignore();
            rooms.insert(room);
        }
        for room in rooms {
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(key(room))
                .arg("-inf")
                .arg(now)
                .ignore();
            pipe.pexpire(key(room), (ttl * 2) as i64).ignore();
        }
        self.commands.pipeline(&pipe).await
    }
}

/// Queues the read of the room's entries that have not expired at `now`.
fn live_entries(pipe: &mut redis::Pipeline, room: &str, now: u64) {
    pipe.cmd("ZRANGEBYSCORE")
        .arg(key(room))
        .arg(format!("({now}"))
        .arg("+inf");
}

/// Sorted distinct user names of `node|conn|user` entries.
fn users(entries: Vec<String>) -> Members {
    let users: BTreeSet<String> = entries
        .into_iter()
        .filter_map(|e| e.splitn(3, '|').nth(2).map(str::to_owned))
        .collect();
    users.into_iter().collect()
}
