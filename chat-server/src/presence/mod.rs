//! Presence: who is in a room, cluster-wide.
//!
//! Entries are per connection (a user with two tabs is there twice), and listings
//! are sorted distinct user names. [`Local`] is this instance's own view; the
//! memory implementation is just that, the Redis one mirrors it into a sorted set
//! per room with expiry scores refreshed by a heartbeat, so a dead instance's
//! entries vanish within the TTL without anyone cleaning up after it.

pub mod memory;
pub mod redis;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

pub use crate::BoxFuture;

/// A member listing, shared by every join it answers.
pub type Members = Arc<[String]>;

#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    #[error("presence (redis): {0}")]
    Redis(#[from] ::redis::RedisError),
}

/// The contract of a presence implementation:
/// - `add` and `remove` are idempotent set operations keyed by `(room, conn)`:
///   repeating one after an error whose outcome is unknown is safe;
/// - an `Err` means the change may not have reached the shared view; the local
///   view ([`Local`]) is always updated, and the Redis heartbeat re-asserts it, so
///   a failed `add` heals within one heartbeat and a failed `remove` within the TTL;
/// - entries of an instance that stopped heartbeating vanish within the TTL.
pub trait Presence: Send + Sync + 'static {
    /// Records that connection `conn` of `user` is in `room`, and lists the room
    /// as [`members`](Presence::members) would right after: a join needs both.
    fn add<'a>(
        &'a self,
        room: &'a str,
        conn: u64,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Members, PresenceError>>;
    /// Forgets connection `conn` in `room`.
    fn remove<'a>(&'a self, room: &'a str, conn: u64) -> BoxFuture<'a, Result<(), PresenceError>>;
    /// Sorted, distinct user names in the room on every instance, as of a moment
    /// after the call began (so it includes a preceding `add` of the caller).
    fn members<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Members, PresenceError>>;
}

/// This instance's connections per room: room → conn → user.
#[derive(Default)]
pub struct Local {
    rooms: Mutex<HashMap<String, HashMap<u64, String>>>,
}

impl Local {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashMap<u64, String>>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add(&self, room: &str, conn: u64, user: &str) {
        self.lock()
            .entry(room.to_owned())
            .or_default()
            .insert(conn, user.to_owned());
    }

    /// Removes an entry, returning its user.
    pub fn remove(&self, room: &str, conn: u64) -> Option<String> {
        let mut rooms = self.lock();
        let members = rooms.get_mut(room)?;
        let user = members.remove(&conn);
        if members.is_empty() {
            rooms.remove(room);
        }
        user
    }

    pub fn users(&self, room: &str) -> Members {
        let rooms = self.lock();
        let users: BTreeSet<&String> = rooms
            .get(room)
            .map(|m| m.values().collect())
            .unwrap_or_default();
        users.into_iter().cloned().collect()
    }

    pub fn has_room(&self, room: &str) -> bool {
        self.lock().contains_key(room)
    }

    /// Every (room, conn, user), for heartbeats.
    pub fn snapshot(&self) -> Vec<(String, u64, String)> {
        self.lock()
            .iter()
            .flat_map(|(room, m)| m.iter().map(|(c, u)| (room.clone(), *c, u.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_lists_sorted_distinct_users() {
        let l = Local::default();
        l.add("r", 1, "zed");
        l.add("r", 2, "amy");
        l.add("r", 3, "amy");
        assert_eq!(&*l.users("r"), ["amy", "zed"]);
        assert_eq!(l.remove("r", 2).as_deref(), Some("amy"));
        assert_eq!(&*l.users("r"), ["amy", "zed"]);
        l.remove("r", 3);
        l.remove("r", 1);
        assert!(l.users("r").is_empty());
        assert!(l.snapshot().is_empty());
    }
}
