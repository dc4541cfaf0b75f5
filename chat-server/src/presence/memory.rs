//! In-process presence for the embedded mode: the local view is the whole truth.
//! Limit: one instance; entries live as long as their connections.

use super::{BoxFuture, Local, Members, Presence, PresenceError};

#[derive(Default)]
pub struct MemoryPresence {
    local: Local,
}

impl Presence for MemoryPresence {
    fn add<'a>(
        &'a self,
        room: &'a str,
        conn: u64,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Members, PresenceError>> {
        self.local.add(room, conn, user);
        self.members(room)
    }

    fn remove<'a>(&'a self, room: &'a str, conn: u64) -> BoxFuture<'a, Result<(), PresenceError>> {
        self.local.remove(room, conn);
        Box::pin(async { Ok(()) })
    }

    fn members<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Members, PresenceError>> {
        let users = self.local.users(room);
        Box::pin(async move { Ok(users) })
    }
}
