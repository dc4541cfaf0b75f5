//! Which protocol the clients speak (`--protocol`): the one place where the
//! generator's code asks "native or Socket.IO?".
//!
//! * `native`: docs/protocol.md (`wire`), with acks and per-room seqs,
//!   audited by seq (`audit`).
//! * `socketio`: the Socket.IO chat dialect (`socketio`) over Engine.IO v4,
//!   without acks or seqs, audited by stamp (`stamp_audit`).
//!
//! Everything else (timetable, stamps, histograms, report) is shared.

use clap::ValueEnum;
use futures::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::audit::{Audited, Member};
use crate::auth::Credential;
use crate::endpoint::Endpoint;
use crate::socketio::{self, HandshakeError};
use crate::stamp::Stamp;
use crate::stamp_audit::StampMember;
use crate::wire::{self, FrameError, Inbound};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// chat-server's protocol (docs/protocol.md).
    #[default]
    Native,
    /// A Socket.IO 4 server over Engine.IO v4 on a WebSocket (see the README).
    #[value(name = "socketio")]
    SocketIo,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Native => "native",
            Protocol::SocketIo => "socketio",
        }
    }

    /// Whether the server answers each send (with an `ack` or an `error`).
    pub fn acks(self) -> bool {
        self == Protocol::Native
    }

    /// The audit record of a new client.
    pub fn member(self, client: u32) -> Audited {
        match self {
            Protocol::Native => Audited::Seq(Member::new()),
            Protocol::SocketIo => Audited::Stamp(StampMember::new(client)),
        }
    }

    /// The request URL of one connection. Native: the endpoint plus the
    /// credential and, when the upgrade itself joins, the room. Socket.IO:
    /// the endpoint with `EIO=4&transport=websocket` (the room is joined by
    /// an event; the dialect has no credential).
    pub fn request_url(
        self,
        endpoint: &Endpoint,
        credential: &Credential,
        room: Option<&str>,
    ) -> String {
        match self {
            Protocol::Native => endpoint.request_url(credential, room),
            Protocol::SocketIo => endpoint.engineio_url(),
        }
    }

    /// Reads a server frame.
    pub fn parse(self, text: &str) -> Result<Inbound<'_>, FrameError> {
        match self {
            Protocol::Native => Inbound::parse(text),
            Protocol::SocketIo => socketio::parse(text),
        }
    }

    /// The frame that sends message `stamp` to `room`.
    pub fn send(self, room: &str, stamp: &Stamp, body_size: usize) -> String {
        match self {
            Protocol::Native => wire::send(room, stamp, body_size),
            Protocol::SocketIo => socketio::send(room, stamp, body_size),
        }
    }

    /// What the start-up probe sends after the upgrade to get an answer
    /// (Engine.IO servers speak first).
    pub fn probe_frame(self) -> Option<String> {
        match self {
            Protocol::Native => Some(wire::ping()),
            Protocol::SocketIo => None,
        }
    }

    /// Everything a fresh connection sends before waiting for its join to
    /// be confirmed. Native joins by the upgrade's query, or, on a rejoin
    /// (`since`), by a `join` frame; Socket.IO opens its session and emits
    /// `join` and the join probe.
    pub async fn open<S>(
        self,
        ws: &mut S,
        room: &str,
        client: u32,
        since: Option<u64>,
    ) -> Result<(), HandshakeError>
    where
        S: futures::StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
            + SinkExt<Message, Error = tokio_tungstenite::tungstenite::Error>
            + Unpin,
    {
        match self {
            Protocol::Native => {
                if let Some(since) = since {
                    ws.send(Message::text(wire::join(room, Some(since))))
                        .await?;
                }
                Ok(())
            }
            Protocol::SocketIo => socketio::handshake(ws, room, client).await,
        }
    }
}
