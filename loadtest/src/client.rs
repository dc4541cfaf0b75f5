//! One simulated user: connect and join, send on a timetable, receive and
//! audit everything, reconnect after 1001/4000/4001, drain, close.
//!
//! A client is a single task that owns its socket (no split, no lock): one
//! `select!` waits on the next frame, the next send time and the run's
//! cancellation. Timers are pinned once and reset, never recreated per frame,
//! and the frames already read are handled in one turn of the loop.
//!
//! Open loop: message `k` is due at `joined + phase + k/rate` whatever the
//! server does; a late send still carries its *scheduled* time, so a stall
//! shows up in the latencies instead of silently lowering the send rate (a
//! send that leaves up to a timer tick early carries the time it left, see
//! `pacing`). Sends never answered, and messages due but never sent, are
//! handed back as lost so the histograms get their lower bounds.
//! Closed loop (`--closed-loop`): message `k+1` waits for the ack of `k`, and
//! latency counts from the actual send, like the seed's test.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::{FutureExt, SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{sleep_until, timeout_at};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, client_async_tls_with_config};

use crate::audit::{Audited, Receipt};
use crate::auth;
use crate::engineio;
use crate::pacing::{stamp_time, timer_deadline};
use crate::shard::Shard;
use crate::socketio::HandshakeError;
use crate::stamp::Stamp;
use crate::tls::Tls;
use crate::wire::{self, Inbound};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Small buffers: thousands of connections, small frames. tungstenite
/// zero-fills the free part of its read buffer (up to `read_buffer_size`)
/// before every read attempt, including the one that finds the socket empty:
/// with 16 KiB that was the largest single user-space cost of the receive
/// path, and still 8% of the instructions per delivery with 2 KiB. So the
/// buffer is sized to the run's frames ([`read_buffer`]), and a longer frame
/// still gets a buffer of its own length (read a buffer at a time).
fn ws_config(body_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(read_buffer(body_size))
        .write_buffer_size(0)
}

/// Room for two deliveries of `body_size` plus their JSON (about 150 bytes
/// with chat-server's names), a power of two from 512 B to 16 KiB.
fn read_buffer(body_size: usize) -> usize {
    (2 * (body_size + 256))
        .next_power_of_two()
        .clamp(512, 16 * 1024)
}

/// Frames handled in one go once the socket has data, before the client
/// looks at its send timer again (sends must not wait behind a long burst).
const FRAMES_PER_TURN: usize = 64;

/// Why a connection did not reach `joined`; the `kind` is a report key.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("timeout")]
    Timeout,
    #[error("{0}")]
    Io(std::io::Error),
    #[error("http {0}")]
    Http(u16),
    #[error("websocket: {0}")]
    Ws(String),
    #[error("closed {0} before joined")]
    Closed(String),
    #[error("join error {0}")]
    JoinRejected(String),
    #[error("cannot mint a token: {0}")]
    Token(String),
    /// The run ended (or was interrupted) first.
    #[error("still connecting when the run ended")]
    Cancelled,
}

impl ConnectError {
    fn kind(&self) -> String {
        match self {
            ConnectError::Io(e) => match e.kind() {
                std::io::ErrorKind::ConnectionRefused => "refused".into(),
                std::io::ErrorKind::ConnectionReset => "reset".into(),
                std::io::ErrorKind::AddrNotAvailable => "no source port".into(),
                kind => format!("io {kind}"),
            },
            ConnectError::Ws(_) => "websocket".into(),
            ConnectError::Token(_) => "token".into(),
            other => other.to_string(),
        }
    }
}

impl From<HandshakeError> for ConnectError {
    fn from(e: HandshakeError) -> Self {
        match e {
            HandshakeError::Ws(e) => e.into(),
            HandshakeError::Closed(code) => ConnectError::Closed(code),
            HandshakeError::Refused(reason) => ConnectError::JoinRejected(reason),
            HandshakeError::Frame(e) => ConnectError::Ws(e.to_string()),
        }
    }
}

impl From<tungstenite::Error> for ConnectError {
    fn from(e: tungstenite::Error) -> Self {
        match e {
            tungstenite::Error::Io(io) => ConnectError::Io(io),
            tungstenite::Error::Http(response) => ConnectError::Http(response.status().as_u16()),
            other => ConnectError::Ws(other.to_string()),
        }
    }
}

/// How the main loop ended.
enum Next {
    Continue,
    /// The connection is gone; close code (or `abnormal`) and whether to reconnect.
    Lost {
        code: String,
        reconnect: bool,
    },
}

/// The client's place in "everyone in the room has finished sending".
struct SenderSlot {
    shard: Rc<Shard>,
    room: usize,
    held: bool,
}

impl SenderSlot {
    fn release(&mut self) {
        if std::mem::take(&mut self.held) {
            self.shard.shared.rooms[self.room].sender_done();
        }
    }
}

impl Drop for SenderSlot {
    fn drop(&mut self) {
        self.release();
    }
}

pub struct Client {
    shard: Rc<Shard>,
    id: u32,
    room: usize,
    room_name: String,
    user: String,
    target: usize,
    source: Option<SocketAddr>,
    member: Audited,
    /// Index of the next message to send.
    next_msg: u32,
    /// Sends on the current connection not yet answered by `ack` or `error`:
    /// `(k, scheduled µs)`, oldest first.
    pending: VecDeque<(u32, u64)>,
    /// Sends that will never be answered (their connection was lost, or the
    /// run ended first) and messages that fell due but were never sent.
    lost: Vec<Stamp>,
    /// Origin of the send timetable (first `joined` + phase); `None` until then.
    timetable: Option<Instant>,
    slot: SenderSlot,
    reconnects_left: u32,
    room_all_sent: bool,
    /// Socket.IO: the server pinged; a pong is due.
    pong_due: bool,
}

/// What a client hands back at the end.
pub struct Outcome {
    pub room: usize,
    pub member: Audited,
    /// Sends never answered and messages due but never sent (see `audit::LostSend`).
    pub lost: Vec<Stamp>,
}

/// Runs one client to the end; returns its room, its audit record and its
/// lost sends.
pub async fn run(shard: Rc<Shard>, id: u32) -> Outcome {
    let plan = &shard.shared.plan;
    let room = plan.room_of(id) as usize;
    let member = plan.protocol.member(id);
    let mut client = Client {
        room_name: plan.room_name(room as u32),
        user: plan.user_name(id),
        target: plan.target_of(id),
        source: plan.source_of(id),
        reconnects_left: plan.max_reconnects,
        slot: SenderSlot {
            shard: shard.clone(),
            room,
            held: true,
        },
        shard,
        id,
        room,
        member,
        next_msg: 0,
        pending: VecDeque::new(),
        lost: Vec::new(),
        timetable: None,
        room_all_sent: false,
        pong_due: false,
    };
    client.run().await;
    client.finish_timetable(Instant::now());
    let mut lost = client.lost;
    lost.extend(client.pending.into_iter().map(|(n, scheduled_us)| Stamp {
        client: client.id,
        n,
        scheduled_us,
    }));
    Outcome {
        room: client.room,
        member: client.member,
        lost,
    }
}

impl Client {
    async fn run(&mut self) {
        let shared = self.shard.shared.clone();
        let scheduled_start = shared.at(shared.plan.start_of(self.id));
        self.shard.recorder.borrow_mut().counters.attempted += 1;
        let mut ws = match self.connect(None).await {
            Ok(ws) => ws,
            Err(e) => {
                self.shard.recorder.borrow_mut().connect_error(&e.kind());
                return;
            }
        };
        let joined_at = Instant::now();
        {
            let mut rec = self.shard.recorder.borrow_mut();
            rec.counters.connected += 1;
            let us = joined_at
                .saturating_duration_since(scheduled_start)
                .as_micros() as u64;
            rec.connect.saturating_record(us);
        }
        self.timetable = Some(joined_at + shared.plan.phase(self.id));

        // Polled last (see the select below), so a delivery does not pay for it.
        let cancelled = shared.cancel.cancelled();
        tokio::pin!(cancelled);
        let send_timer = sleep_until(timer_deadline(self.due(0)).into());
        tokio::pin!(send_timer);
        let mut all_sent_rx = shared.rooms[self.room].watch_all_sent();
        let all_sent = all_sent_rx.wait_for(|done| *done);
        tokio::pin!(all_sent);
        let send_deadline = shared.at(shared.plan.send_deadline);

        loop {
            self.check_sending_over(send_deadline);
            if self.complete() || shared.cancel.is_cancelled() {
                break;
            }
            let can_send = self.slot.held
                && self.next_msg < shared.plan.messages
                && (!shared.plan.closed_loop || self.pending.is_empty());
            let next = tokio::select! {
                // Sends first: a flood of frames must not delay the timetable.
                // Cancellation last: it is checked above on every turn, and
                // its future is polled only when nothing else is ready.
                biased;
                () = &mut send_timer, if can_send => {
                    let due = self.due(self.next_msg);
                    match self.send(&mut ws, due).await {
                        Ok(()) => {
                            let next = timer_deadline(self.due(self.next_msg));
                            send_timer.as_mut().reset(next.into());
                            Next::Continue
                        }
                        Err(_) => Next::Lost { code: "abnormal".into(), reconnect: true },
                    }
                }
                // Completes once (the sender lives as long as the run).
                _ = &mut all_sent, if !self.room_all_sent => {
                    self.room_all_sent = true;
                    Next::Continue
                }
                frame = ws.next() => {
                    // The frames already read are handled here, without a
                    // turn of the select (timers, cancellation) per frame.
                    let mut next = self.on_frame(frame);
                    for _ in 1..FRAMES_PER_TURN {
                        let Next::Continue = next else { break };
                        match ws.next().now_or_never() {
                            Some(frame) => next = self.on_frame(frame),
                            None => break,
                        }
                    }
                    self.answer_ping(&mut ws).await.unwrap_or(next)
                }
                () = &mut cancelled => break,
            };
            if let Next::Lost { code, reconnect } = next {
                self.shard.recorder.borrow_mut().close(&code);
                self.opened(false);
                match reconnect {
                    true => match self.reconnect().await {
                        Some(new) => ws = new,
                        None => return,
                    },
                    false => return,
                }
            }
        }
        self.opened(false);
        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    }

    /// When message `k` is due (only called once the timetable is set).
    fn due(&self, k: u32) -> Instant {
        let origin = self.timetable.unwrap_or(self.shard.shared.origin);
        origin + self.shard.shared.plan.period().mul_f64(f64::from(k))
    }

    /// Once every message is sent (or the send window closed) and answered,
    /// this client no longer holds its room open.
    fn check_sending_over(&mut self, send_deadline: Instant) {
        if !self.slot.held {
            return;
        }
        let plan = &self.shard.shared.plan;
        let (messages, closed_loop) = (plan.messages, plan.closed_loop);
        let now = Instant::now();
        // Open loop sends every message due within the window, however late
        // (it is charged from its slot); closed loop stops at the deadline.
        let over =
            self.due(self.next_msg) >= send_deadline || (closed_loop && now >= send_deadline);
        if self.next_msg < messages && over {
            self.finish_timetable(now);
        }
        if self.next_msg >= messages && self.pending.is_empty() {
            self.slot.release();
        }
    }

    /// Sending is over at `now`: messages due after the send window are not
    /// owed (`after_window`); in open loop, those that fell due and were
    /// never sent are lost, timed from their slot; the rest stay `unsent`.
    fn finish_timetable(&mut self, now: Instant) {
        let Some(_) = self.timetable else {
            return; // never joined: every message is unsent
        };
        let shared = self.shard.shared.clone();
        let plan = &shared.plan;
        let window_end = shared.at(plan.send_deadline);
        let mut after_window = 0;
        for k in self.next_msg..plan.messages {
            let due = self.due(k);
            if due >= window_end {
                after_window += 1;
            } else if due <= now && !plan.closed_loop {
                self.lost.push(Stamp {
                    client: self.id,
                    n: k,
                    scheduled_us: shared.micros(due),
                });
            }
        }
        self.shard.recorder.borrow_mut().counters.after_window += after_window;
        self.next_msg = plan.messages;
    }

    /// Done: nothing more to send, the room is all sent, and this member has
    /// caught up: seen the room's last acked seq (native), or each member's
    /// last message it is owed (Socket.IO).
    fn complete(&mut self) -> bool {
        if self.slot.held || !self.room_all_sent {
            return false;
        }
        let shared = &self.shard.shared;
        let room = &shared.rooms[self.room];
        match &mut self.member {
            Audited::Seq(member) => member.highest() >= room.max_acked(),
            Audited::Stamp(member) => member.caught_up(&room.members, &shared.sent),
        }
    }

    /// Answers the server's ping once the frames at hand are handled;
    /// `Some` when the connection is lost meanwhile.
    async fn answer_ping(&mut self, ws: &mut Ws) -> Option<Next> {
        if !std::mem::take(&mut self.pong_due) {
            return None;
        }
        let pong = ws.send(Message::text(engineio::PONG)).await;
        pong.is_err().then(|| Next::Lost {
            code: "abnormal".into(),
            reconnect: true,
        })
    }

    fn opened(&self, open: bool) {
        let counters = &mut self.shard.recorder.borrow_mut().counters;
        match open {
            true => counters.open += 1,
            false => counters.open = counters.open.saturating_sub(1),
        }
    }

    /// Connects and joins (see `Protocol::open`): natively, with `since:
    /// None` the room is joined by the upgrade query, with `Some(s)` by a
    /// `join` frame with `since` (a rejoin).
    async fn connect(&mut self, since: Option<u64>) -> Result<Ws, ConnectError> {
        let shared = self.shard.shared.clone();
        let deadline = Instant::now() + shared.plan.connect_timeout;
        let attempt = async {
            let target = &shared.plan.targets[self.target];
            let room = since.is_none().then_some(self.room_name.as_str());
            let credential = auth::credential(shared.plan.tokens.as_ref(), &self.user)
                .map_err(|e| ConnectError::Token(e.to_string()))?;
            let protocol = shared.plan.protocol;
            let url = protocol.request_url(&target.endpoint, &credential, room);
            let stream = self.tcp(target.addr).await.map_err(ConnectError::Io)?;
            let connector = shared.plan.tls.as_ref().map(Tls::connector);
            let (mut ws, _) = client_async_tls_with_config(
                url,
                stream,
                Some(ws_config(shared.plan.body_size)),
                connector,
            )
            .await?;
            protocol
                .open(&mut ws, &self.room_name, self.id, since)
                .await?;
            self.await_joined(&mut ws).await.map(|()| ws)
        };
        let ws = tokio::select! {
            () = shared.cancel.cancelled() => Err(ConnectError::Cancelled),
            r = timeout_at(deadline.into(), attempt) => r.unwrap_or(Err(ConnectError::Timeout)),
        };
        // A close before `joined` (1008 bad token, 1013 full, ...) is a close
        // the client saw, so it is counted with the others as well.
        if let Err(ConnectError::Closed(code)) = &ws {
            self.shard.recorder.borrow_mut().close(code);
        }
        let ws = ws?;
        self.opened(true);
        Ok(ws)
    }

    async fn tcp(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(source) = self.source {
            defer_port_choice(&socket)?;
            socket.bind(source)?;
        }
        socket.set_nodelay(true)?;
        socket.connect(addr).await
    }

    /// Reads frames until the join to this client's room is confirmed
    /// (`joined`, or the Socket.IO join probe). Anything else that arrives
    /// meanwhile is handled (and counted) as usual.
    async fn await_joined(&mut self, ws: &mut Ws) -> Result<(), ConnectError> {
        loop {
            if std::mem::take(&mut self.pong_due) {
                ws.send(Message::text(engineio::PONG)).await?;
            }
            let text = match ws.next().await {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => {
                    return Err(ConnectError::Closed(close_code(frame.as_ref())));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => return Err(ConnectError::Closed("abnormal".into())),
            };
            let at = self.shard.shared.micros(Instant::now());
            match self.shard.shared.plan.protocol.parse(&text) {
                Ok(inbound)
                    if self
                        .member
                        .join_confirmed(&inbound, &self.room_name, self.id, at) =>
                {
                    return Ok(());
                }
                Ok(Inbound::Error {
                    code,
                    reference: None,
                }) => {
                    self.shard.recorder.borrow_mut().error_frame(&code);
                    return Err(ConnectError::JoinRejected(code.into_owned()));
                }
                _ => self.on_text(&text),
            }
        }
    }

    /// After a lost connection: back off, connect to the next instance, rejoin
    /// with `since`. `None` when out of attempts or time.
    async fn reconnect(&mut self) -> Option<Ws> {
        let shared = self.shard.shared.clone();
        let mut backoff = Duration::from_millis(100);
        // Sends in flight on the lost connection will never be answered.
        let id = self.id;
        self.lost
            .extend(self.pending.drain(..).map(|(n, scheduled_us)| Stamp {
                client: id,
                n,
                scheduled_us,
            }));
        while self.reconnects_left > 0 {
            self.reconnects_left -= 1;
            tokio::select! {
                () = shared.cancel.cancelled() => return None,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
            self.target = (self.target + 1) % shared.plan.targets.len();
            shared.connected_to[self.id as usize].store(self.target as u32, Ordering::Relaxed);
            match self.connect(Some(self.member.since())).await {
                Ok(ws) => {
                    self.shard.recorder.borrow_mut().counters.reconnects += 1;
                    return Some(ws);
                }
                Err(ConnectError::Cancelled) => return None,
                Err(e) => {
                    tracing::debug!(client = self.id, error = %e, "reconnect failed");
                    self.shard.recorder.borrow_mut().counters.reconnect_failures += 1;
                }
            }
        }
        None
    }

    async fn send(&mut self, ws: &mut Ws, due: Instant) -> Result<(), tungstenite::Error> {
        let shared = &self.shard.shared;
        let now = Instant::now();
        let scheduled = if shared.plan.closed_loop {
            now
        } else {
            stamp_time(due, now)
        };
        let stamp = Stamp {
            client: self.id,
            n: self.next_msg,
            scheduled_us: shared.micros(scheduled),
        };
        let protocol = shared.plan.protocol;
        let frame = protocol.send(&self.room_name, &stamp, shared.plan.body_size);
        ws.send(Message::text(frame)).await?;
        self.next_msg += 1;
        match protocol.acks() {
            true => self.pending.push_back((stamp.n, stamp.scheduled_us)),
            false => self.shard.wrote(self.room, stamp),
        }
        let mut rec = self.shard.recorder.borrow_mut();
        rec.counters.sent += 1;
        rec.scheduled.mark(stamp.scheduled_us);
        rec.written.mark(shared.micros(now));
        rec.send_lag
            .saturating_record(now.saturating_duration_since(scheduled).as_micros() as u64);
        Ok(())
    }

    fn on_frame(&mut self, frame: Option<Result<Message, tungstenite::Error>>) -> Next {
        match frame {
            Some(Ok(Message::Text(text))) => self.on_text(&text),
            Some(Ok(Message::Binary(_))) => {
                self.shard.recorder.borrow_mut().counters.bad_frames += 1
            }
            Some(Ok(Message::Close(frame))) => {
                let reconnect = frame
                    .as_ref()
                    .is_some_and(|f| wire::reconnects_after(u16::from(f.code)));
                let code = close_code(frame.as_ref());
                return Next::Lost { code, reconnect };
            }
            Some(Ok(_)) => {} // ping/pong: tungstenite answers pings itself
            Some(Err(_)) | None => {
                return Next::Lost {
                    code: "abnormal".into(),
                    reconnect: true,
                };
            }
        }
        Next::Continue
    }

    /// The receive path: one borrowed parse, counters, audit, histograms.
    fn on_text(&mut self, text: &str) {
        let now = Instant::now();
        let shared = &self.shard.shared;
        let mut rec = self.shard.recorder.borrow_mut();
        match shared.plan.protocol.parse(text) {
            Ok(Inbound::Message { room, seq, body }) => {
                let at = shared.micros(now);
                rec.counters.messages += 1;
                rec.delivery_at(at);
                if room != self.room_name {
                    rec.counters.foreign += 1;
                    return;
                }
                let stamp = Stamp::parse_body(&body);
                let mut ledgers = self.shard.ledgers.borrow_mut();
                let ledger = &mut ledgers[self.room];
                let receipt = match (&mut self.member, seq, stamp) {
                    (Audited::Seq(member), Some(seq), stamp) => {
                        match stamp {
                            Some(stamp) => ledger.seen(seq, stamp),
                            None => ledger.seen_seq(seq),
                        }
                        Some(member.receive(seq))
                    }
                    (Audited::Stamp(member), None, Some(stamp)) => Some(member.receive(stamp)),
                    (Audited::Stamp(_), None, None) => None,
                    // A seq where none belongs, or none where one does.
                    (_, _, _) => {
                        rec.counters.bad_frames += 1;
                        return;
                    }
                };
                match (stamp, receipt) {
                    (Some(stamp), Some(receipt)) => {
                        if matches!(
                            receipt,
                            Receipt::InOrder | Receipt::AfterGap { .. } | Receipt::OutOfOrder
                        ) {
                            let latency = at.saturating_sub(stamp.scheduled_us);
                            rec.delivery.saturating_record(latency);
                            let sender = shared
                                .connected_to
                                .get(stamp.client as usize)
                                .map_or(usize::MAX, |t| t.load(Ordering::Relaxed) as usize);
                            rec.delivery_via(self.target, sender, latency);
                            if let Some(window) = &self.shard.window {
                                window.borrow_mut().saturating_record(latency);
                            }
                            if let Some(second) = &self.shard.second {
                                second.borrow_mut().delivery.saturating_record(latency);
                            }
                        }
                    }
                    _ => rec.counters.foreign += 1,
                }
            }
            Ok(Inbound::Ack { reference, seq, .. }) => {
                rec.counters.acked += 1;
                shared.rooms[self.room].acked(seq);
                let mut ledgers = self.shard.ledgers.borrow_mut();
                match reference.as_deref().and_then(Stamp::parse_reference) {
                    Some((n, scheduled_us)) => {
                        answered(&mut self.pending, n);
                        let stamp = Stamp {
                            client: self.id,
                            n,
                            scheduled_us,
                        };
                        ledgers[self.room].acked(seq, stamp);
                        let latency = shared.micros(now).saturating_sub(scheduled_us);
                        rec.ack.saturating_record(latency);
                        rec.target(self.target).ack.saturating_record(latency);
                        if let Some(second) = &self.shard.second {
                            second.borrow_mut().ack.saturating_record(latency);
                        }
                    }
                    None => ledgers[self.room].seen_seq(seq),
                }
            }
            Ok(Inbound::Error { code, reference }) => {
                rec.error_frame(&code);
                if let Some((n, _)) = reference.as_deref().and_then(Stamp::parse_reference) {
                    rec.counters.rejected += 1;
                    answered(&mut self.pending, n);
                }
            }
            Ok(Inbound::Presence) => rec.counters.presence += 1,
            Ok(Inbound::Ping) => self.pong_due = true,
            // Other members' join probes, and rejoins already confirmed.
            Ok(Inbound::Joined { .. } | Inbound::Probe { .. } | Inbound::Other) => {}
            Err(e) => {
                tracing::debug!(client = self.id, error = %e, "bad frame");
                rec.counters.bad_frames += 1;
            }
        }
    }
}

/// Send `n` was answered (acked or rejected): it is no longer pending.
fn answered(pending: &mut VecDeque<(u32, u64)>, n: u32) {
    if let Some(i) = pending.iter().position(|&(k, _)| k == n) {
        pending.remove(i);
    }
}

/// IP_BIND_ADDRESS_NO_PORT: with a bound source address, let the kernel pick
/// the source port at connect time for the full 4-tuple, instead of at bind
/// time from the ~28k ports that are free for *every* destination.
#[cfg(target_os = "linux")]
fn defer_port_choice(socket: &TcpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a pointer to a live c_int of the
    // size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn defer_port_choice(_: &TcpSocket) -> std::io::Result<()> {
    Ok(())
}

pub(crate) fn close_code(frame: Option<&tungstenite::protocol::CloseFrame>) -> String {
    match frame {
        Some(f) => u16::from(f.code).to_string(),
        None => "1005".into(),
    }
}
