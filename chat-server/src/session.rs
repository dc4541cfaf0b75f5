//! One WebSocket connection: a reader that handles client frames in order and a
//! writer that drains the bounded outbound queue into the socket.
//!
//! The reader never blocks on commits: a `send` is published, its commit is
//! awaited in a set of pending acks polled alongside the socket, so a client can
//! pipeline sends. The writer batches queued frames into one flush and sends the
//! close frame when the connection is closed for any reason (1001 shutdown, 1009
//! too large, 4000 slow consumer).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::stream::{FuturesUnordered, SplitSink};
use futures::{SinkExt, StreamExt};

use crate::app::App;
use crate::clock::now_ms;
use crate::outbound::Outbound;
use crate::protocol::{
    CLOSE_GOING_AWAY, CLOSE_INVALID_DATA, CLOSE_NORMAL, CLOSE_REBALANCE, CLOSE_TOO_BIG,
    ChatMessage, ClientFrame, ErrorCode, MessageParts, NAME_RULE, PresenceEvent, ServerFrame,
    valid_name,
};
use crate::rate::TokenBucket;
use crate::rebalance;
use crate::store::Range;
use crate::store::batcher::CommitError;

/// Frames written per flush at most.
const WRITE_BATCH: usize = 256;
/// How long a closing connection waits for the client's close reply.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(5);

/// A `send` that was published and whose commit has resolved: what its `ack` (or
/// `error`) frame needs.
struct PendingAck {
    /// The client's `ref`, echoed back (at most `MAX_REF_LEN` bytes).
    reference: Option<String>,
    room: String,
    /// The seq the broker assigned: the message was delivered under it.
    seq: u64,
    /// `Ok` once durable: then, and only then, the client gets an `ack`.
    outcome: Result<(), CommitError>,
}

/// The steps of a join taken so far, for [`Session::abandon_join`] to undo.
struct JoinUndo {
    /// Registered with the room's actor.
    in_hub: bool,
    /// Has (or may have) a presence entry.
    in_presence: bool,
    /// Its `presence` join was announced to the room.
    announced: bool,
}

/// A commit being awaited (Sync too, because the session is borrowed across awaits).
type AckFuture = std::pin::Pin<Box<dyn std::future::Future<Output = PendingAck> + Send + Sync>>;

/// The reader's state of one connection. It talks to the hub for rooms and
/// ordering, and to presence, the broker (through the hub's publish) and the
/// batcher directly: each is one await on the request path, and routing them
/// through the hub would add a hop to every join and send without adding order.
struct Session {
    app: Arc<App>,
    /// This instance's id for the connection (presence entries, publish ids).
    conn: u64,
    /// The authenticated (or guest) user name.
    user: String,
    /// The connection's bounded outbound queue; the writer task drains it.
    out: Outbound,
    /// Rooms joined on this connection (bounded by `--max-rooms-per-connection`).
    rooms: HashSet<String>,
    /// The per-connection rate limit on client frames.
    bucket: TokenBucket,
    /// Commits being awaited, polled alongside the socket so sends pipeline.
    acks: FuturesUnordered<AckFuture>,
    /// Publishes so far: names each publish for the broker's idempotent retry.
    published: u64,
}

/// Serves one upgraded connection until it closes.
pub async fn serve(socket: WebSocket, app: Arc<App>, user: String, rooms: Vec<String>) {
    let conn = app.next_conn_id();
    let (out, rx) = Outbound::new(app.config.outbound_queue, app.metrics.clone());
    let (sink, mut stream) = socket.split();
    let writer = tokio::spawn(write_loop(sink, rx, out.clone(), app.clone()));
    let rebalance = app
        .rebalancer
        .as_ref()
        .map(|r| r.register(conn, out.clone()));
    app.metrics.connections.inc();
    app.metrics.connections_opened.inc();
    tracing::debug!(conn, %user, "connected");

    let bucket = TokenBucket::new(
        app.config.rate_per_sec,
        app.config.rate_burst,
        Instant::now(),
    );
    let mut s = Session {
        app: app.clone(),
        conn,
        user,
        out: out.clone(),
        rooms: HashSet::new(),
        bucket,
        acks: FuturesUnordered::new(),
        published: 0,
    };
    for room in rooms {
        Box::pin(s.join(room, None)).await;
    }
    loop {
        tokio::select! {
            _ = out.closed() => break,
            _ = app.shutdown.cancelled() => {
                out.close(CLOSE_GOING_AWAY, "going away");
                break;
            }
            Some(ack) = s.acks.next(), if !s.acks.is_empty() => s.acked(ack),
            _ = rebalance::asked(rebalance.as_ref()) => {
                // Acks first, so that moving loses the client no ack.
                s.settle_acks().await;
                if let Some(r) = &rebalance {
                    r.close(&out);
                }
                break;
            }
            msg = stream.next() => match msg {
                None | Some(Ok(Message::Close(_))) => break,
                // Boxed: the request handlers' states would otherwise sit inline
                // in every idle connection's task.
                Some(Ok(Message::Text(text))) => Box::pin(s.frame(&text)).await,
                Some(Ok(Message::Binary(_))) => s.binary(),
                Some(Ok(_)) => {} // ping/pong: answered by the WebSocket layer
                Some(Err(e)) => {
                    if let Some((code, reason)) = close_for(e) {
                        out.close(code, reason);
                    }
                    break;
                }
            },
        }
    }
    // Commits already queued still complete; acks can no longer be delivered.
    s.leave_all().await;
    out.close(CLOSE_NORMAL, "");
    // Finish the closing handshake: while the writer sends our close frame, keep
    // reading (and discarding) until the client answers it. Closing a socket with
    // unread input makes the kernel send a reset, which destroys the close frame
    // still in flight, and the client would see a crash instead of 1001 or 4000.
    let abort = writer.abort_handle();
    let handshake = async {
        let drain = async {
            while let Some(Ok(msg)) = stream.next().await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
            }
        };
        let _ = tokio::join!(writer, drain);
    };
    if tokio::time::timeout(CLOSE_HANDSHAKE, handshake)
        .await
        .is_err()
    {
        // A peer that never reads keeps the writer blocked: give up on it.
        abort.abort();
    }
    app.metrics.connections.dec();
    tracing::debug!(conn, "disconnected");
}

/// The close code for a read error caused by the client's input, if it was.
fn close_for(e: axum::Error) -> Option<(u16, &'static str)> {
    let inner = e.into_inner();
    match inner.downcast_ref::<tungstenite::Error>()? {
        tungstenite::Error::Capacity(_) => Some((CLOSE_TOO_BIG, "frame too large")),
        tungstenite::Error::Utf8(_) => Some((CLOSE_INVALID_DATA, "text frame is not valid UTF-8")),
        _ => None,
    }
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    rx: flume::Receiver<Utf8Bytes>,
    out: Outbound,
    app: Arc<App>,
) {
    // Made once, not per frame: each is a waiter registered with a token.
    let closed = out.closed();
    let shutdown = app.shutdown.cancelled();
    tokio::pin!(closed, shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut closed => break,
            _ = &mut shutdown => {
                out.close(CLOSE_GOING_AWAY, "going away");
                break;
            }
            frame = rx.recv_async() => {
                let Ok(frame) = frame else { break };
                if sink.feed(Message::Text(frame)).await.is_err() {
                    return;
                }
                let mut n = 1;
                while n < WRITE_BATCH {
                    let Ok(frame) = rx.try_recv() else { break };
                    if sink.feed(Message::Text(frame)).await.is_err() {
                        return;
                    }
                    n += 1;
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
        }
    }
    if let Some(close) = out.close_reason().filter(|c| c.code != CLOSE_NORMAL) {
        if close.code == CLOSE_REBALANCE {
            // What the session queued before it moved the client (its last acks)
            // goes out before the close frame.
            while let Ok(frame) = rx.try_recv() {
                if sink.feed(Message::Text(frame)).await.is_err() {
                    return;
                }
            }
        }
        let frame = CloseFrame {
            code: close.code,
            reason: close.reason.into(),
        };
        let _ = sink.send(Message::Close(Some(frame))).await;
    } else {
        let _ = sink.send(Message::Close(None)).await;
    }
}

impl Session {
    fn push(&self, frame: ServerFrame<'_>) {
        self.out.push(frame.to_json().into());
    }

    fn error(&self, code: ErrorCode, message: &str, reference: Option<&str>) {
        self.app.metrics.error(code);
        self.push(ServerFrame::Error {
            code,
            message,
            reference,
        });
    }

    /// Takes a token for one client frame, of any kind; false (and a
    /// `rate_limited` error) when the frame must be dropped unread.
    fn admit(&mut self) -> bool {
        if self.bucket.try_take(Instant::now()) {
            return true;
        }
        let message = format!(
            "more than {} frames per second (bursts of {}); frame dropped unread",
            self.app.config.rate_per_sec, self.app.config.rate_burst
        );
        self.error(ErrorCode::RateLimited, &message, None);
        false
    }

    fn binary(&mut self) {
        if self.admit() {
            self.error(
                ErrorCode::BadRequest,
                "binary frames are not supported; send JSON text frames",
                None,
            );
        }
    }

    async fn frame(&mut self, text: &str) {
        if !self.admit() {
            return;
        }
        match ClientFrame::parse(text) {
            Err(e) => self.error(ErrorCode::BadRequest, &e.message, e.reference.as_deref()),
            Ok(ClientFrame::Ping) => self.push(ServerFrame::Pong),
            Ok(ClientFrame::Join { room, since }) => self.join(room, since).await,
            Ok(ClientFrame::Leave { room }) => self.leave(room).await,
            Ok(ClientFrame::Send {
                room,
                body,
                reference,
            }) => self.send(room, body, reference).await,
            Ok(ClientFrame::History {
                room,
                before,
                limit,
            }) => self.history(room, before, limit).await,
        }
    }

    fn check_room(&self, room: &str, reference: Option<&str>) -> bool {
        if valid_name(room) {
            return true;
        }
        let message = format!(
            "room name must match {NAME_RULE} (got {:?})",
            truncate(room)
        );
        self.error(ErrorCode::InvalidRoom, &message, reference);
        false
    }

    async fn join(&mut self, room: String, since: Option<u64>) {
        if !self.check_room(&room, None) {
            return;
        }
        let rejoin = self.rooms.contains(&room);
        if !rejoin && self.rooms.len() >= self.app.config.max_rooms_per_connection {
            let message = format!(
                "a connection may be in at most {} rooms",
                self.app.config.max_rooms_per_connection
            );
            return self.error(ErrorCode::TooManyRooms, &message, None);
        }
        let app = self.app.clone();
        let wait = app.config.join_queue_wait();
        let queued = tokio::time::timeout(wait, app.joins.acquire()).await;
        let Ok(Ok(_turn)) = queued else {
            let reason = format!("too many joins in progress; waited {wait:?} for a turn");
            return self.refuse_join(&room, &reason);
        };
        let hub = &self.app.hub;
        if rejoin {
            // A second join restarts the room's stream from `since`.
            hub.leave(&room, self.conn);
            self.rooms.remove(&room);
        }
        // A rejoining member is still present (and was announced).
        let mut undo = JoinUndo {
            in_hub: false,
            in_presence: rejoin,
            announced: rejoin,
        };
        let last_seq = match hub.join(&room, self.conn, self.out.clone()).await {
            Ok(seq) => seq,
            Err(e) => return self.abandon_join(&room, undo, &e.to_string()).await,
        };
        undo.in_hub = true;
        let presence = &self.app.presence;
        let members = if rejoin {
            presence.members(&room)
        } else {
            presence.add(&room, self.conn, &self.user)
        };
        // Removing an entry that was never added is harmless.
        undo.in_presence = true;
        let members = match members.await {
            Ok(m) => m,
            Err(e) => return self.abandon_join(&room, undo, &e.to_string()).await,
        };
        self.rooms.insert(room.clone());
        self.push(ServerFrame::Joined {
            room: &room,
            user: &self.user,
            members: &members,
            last_seq,
        });
        if !rejoin {
            self.announce(&room, PresenceEvent::Join).await;
            undo.announced = true;
        }
        let delivered = match since {
            Some(since) if since < last_seq => {
                match hub.replay(&room, since, last_seq, &self.out).await {
                    Ok(seq) => seq,
                    Err(e) => {
                        let reason = format!("cannot replay after seq {since}: {e}");
                        return self.abandon_join(&room, undo, &reason).await;
                    }
                }
            }
            _ => last_seq,
        };
        self.app.hub.live(&room, self.conn, delivered);
    }

    /// A join that failed part-way: refuses it and undoes the steps it took.
    async fn abandon_join(&mut self, room: &str, undo: JoinUndo, reason: &str) {
        self.refuse_join(room, reason);
        self.rooms.remove(room);
        if undo.in_hub {
            self.app.hub.leave(room, self.conn);
        }
        if undo.in_presence {
            self.remove_presence(room).await;
        }
        if undo.announced {
            self.announce(room, PresenceEvent::Leave).await;
        }
    }

    /// A join that could not be served: one WARN line, and `unavailable`.
    fn refuse_join(&self, room: &str, reason: &str) {
        tracing::warn!(conn = self.conn, user = %self.user, room, reason, "join refused");
        self.error(
            ErrorCode::Unavailable,
            &format!("cannot join {room}: {reason}; retry the join (with since)"),
            None,
        );
    }

    async fn announce(&self, room: &str, event: PresenceEvent) {
        let frame = ServerFrame::Presence {
            room,
            event,
            user: &self.user,
        }
        .to_json();
        if let Err(e) = self
            .app
            .broker
            .publish_presence(room, self.conn, frame)
            .await
        {
            tracing::warn!(room, error = %e, "presence event not published");
        }
    }

    async fn drop_presence(&self, room: &str) {
        self.remove_presence(room).await;
        self.announce(room, PresenceEvent::Leave).await;
    }

    async fn remove_presence(&self, room: &str) {
        if let Err(e) = self.app.presence.remove(room, self.conn).await {
            tracing::warn!(room, error = %e, "presence entry not removed (it expires)");
        }
    }

    async fn leave(&mut self, room: String) {
        if !self.check_room(&room, None) {
            return;
        }
        if !self.rooms.remove(&room) {
            return self.error(ErrorCode::NotMember, &format!("not in room {room}"), None);
        }
        self.app.hub.leave(&room, self.conn);
        self.drop_presence(&room).await;
        self.push(ServerFrame::Left { room: &room });
    }

    /// Leaves every room at once: the presence updates run concurrently, so a
    /// dead Redis costs one timeout, not one per room (shutdown has a deadline).
    async fn leave_all(&mut self) {
        let rooms = std::mem::take(&mut self.rooms);
        for room in &rooms {
            self.app.hub.leave(room, self.conn);
        }
        futures::future::join_all(rooms.iter().map(|room| self.drop_presence(room))).await;
    }

    async fn send(&mut self, room: String, body: String, reference: Option<String>) {
        let r = reference.as_deref();
        if !self.check_room(&room, r) {
            return;
        }
        if !self.rooms.contains(&room) {
            return self.error(
                ErrorCode::NotMember,
                &format!("join room '{room}' before sending to it"),
                r,
            );
        }
        if body.len() > self.app.config.max_body_bytes {
            let message = format!(
                "body is {} bytes; the limit is {}",
                body.len(),
                self.app.config.max_body_bytes
            );
            return self.error(ErrorCode::TooLarge, &message, r);
        }
        if body.contains('\0') {
            return self.error(
                ErrorCode::BadRequest,
                "body contains U+0000 (NUL), which the history store cannot hold",
                r,
            );
        }
        let batcher = &self.app.batcher;
        if batcher.store_down() {
            return self.error(
                ErrorCode::Unavailable,
                "history store is down; message not accepted",
                r,
            );
        }
        // Reserve the commit slot first: a published message always gets stored.
        let Some(slot) = batcher.reserve().await else {
            return self.error(
                ErrorCode::Unavailable,
                "server is shutting down; message not accepted",
                r,
            );
        };
        let ts = now_ms();
        let parts = MessageParts::new(&room, &self.user, &body, ts);
        self.published += 1;
        let publish = self
            .app
            .hub
            .publish(&room, &parts, self.conn, self.published);
        let seq = match publish.await {
            Ok(seq) => seq,
            Err(e) => {
                return self.error(
                    ErrorCode::Unavailable,
                    &format!("message not accepted: {e}"),
                    r,
                );
            }
        };
        self.app.metrics.messages_received.inc();
        let commit = slot.submit(ChatMessage {
            room: room.clone(),
            seq,
            user: self.user.clone(),
            body,
            ts,
        });
        self.acks.push(Box::pin(async move {
            let outcome = commit.await.unwrap_or(Err(CommitError::Aborted));
            PendingAck {
                reference,
                room,
                seq,
                outcome,
            }
        }));
    }

    /// Delivers the acks of the sends already accepted (for at most
    /// [`rebalance::SETTLE`]), reading nothing new meanwhile.
    async fn settle_acks(&mut self) {
        let settle = async {
            while let Some(ack) = self.acks.next().await {
                self.acked(ack);
            }
        };
        let _ = tokio::time::timeout(rebalance::SETTLE, settle).await;
    }

    fn acked(&self, ack: PendingAck) {
        let reference = ack.reference.as_deref();
        match ack.outcome {
            Ok(()) => self.push(ServerFrame::Ack {
                reference,
                room: &ack.room,
                seq: ack.seq,
            }),
            Err(e) => {
                if let CommitError::Conflict(_) = e {
                    // The seq was taken: the room's counter went backwards.
                    let (hub, room) = (self.app.hub.clone(), ack.room.clone());
                    tokio::spawn(async move {
                        if let Err(e) = hub.repair_counter(&room).await {
                            tracing::warn!(room, error = %e, "raising the seq counter failed");
                        }
                    });
                }
                self.error(
                    ErrorCode::Unavailable,
                    &format!("message {} not stored: {e}", ack.seq),
                    reference,
                )
            }
        }
    }

    async fn history(&mut self, room: String, before: Option<u64>, limit: Option<u32>) {
        if !self.check_room(&room, None) {
            return;
        }
        let max = self.app.config.history_max_limit;
        let limit = limit.unwrap_or(50.min(max));
        if !(1..=max).contains(&limit) {
            return self.error(
                ErrorCode::BadRequest,
                &format!("limit must be within 1..={max}"),
                None,
            );
        }
        match self
            .app
            .store
            .range(
                &room,
                Range {
                    after: None,
                    before,
                    limit,
                },
            )
            .await
        {
            Ok(mut messages) => {
                messages.retain(|m| !m.is_tombstone());
                self.push(ServerFrame::History {
                    room: &room,
                    messages: &messages,
                })
            }
            Err(e) => self.error(
                ErrorCode::Unavailable,
                &format!("history unavailable: {e}"),
                None,
            ),
        }
    }
}

/// A name cut to a printable length for error messages.
fn truncate(s: &str) -> String {
    s.chars().take(70).collect()
}
