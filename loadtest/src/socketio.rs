//! The Socket.IO chat dialect of `--protocol socketio`: the one every
//! Socket.IO chat tutorial writes, over Engine.IO v4 on a WebSocket
//! (`engineio`).
//!
//! * The client emits `join` with the room name, and `send` with
//!   `{room, body}`: `42["join","r"]`, `42["send",{"room":"r","body":"…"}]`.
//! * The server emits `message` with the object it received to everyone in
//!   the room, the sender included: `42["message",{"room":"r","body":"…"}]`.
//! * No acks, no seqs, no history.
//!
//! A join is never answered, so the client confirms its own: right after
//! `join` it sends a *join probe*, a message with the body `join:<client>`.
//! The server handles one socket's events in order, so when the probe comes
//! back the join is done; that instant is the member's join point for the
//! stamp audit (`stamp_audit`). Other members' probes are skipped.
//!
//! Session: the server opens with `0{..}`, the client connects the default
//! namespace with `40` and waits for `40{"sid":..}`, then joins. The server
//! pings (`2`) every `pingInterval`; the client answers `3`.
//!
//! Like `wire`, a delivery is parsed borrowed from the frame, without
//! allocating; a send is written straight into the one `String` it needs.

use std::borrow::Cow;
use std::fmt;

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::engineio::{self, Packet};
use crate::stamp::Stamp;
use crate::wire::{FrameError, Inbound, borrowed, need};

/// The body of a join probe, before the client id.
const PROBE: &str = "join:";

/// Reads a server frame.
pub fn parse(text: &str) -> Result<Inbound<'_>, FrameError> {
    Ok(match Packet::decode(text)? {
        Packet::Ping => Inbound::Ping,
        Packet::Event(json) => event(json)?,
        Packet::ConnectError(_) => Inbound::Error {
            code: Cow::Borrowed("connect_error"),
            reference: None,
        },
        Packet::Open | Packet::Connected | Packet::Disconnected | Packet::Other => Inbound::Other,
    })
}

/// `["message",{"room":..,"body":..}]`; other events are valid but not the
/// dialect's, and ignored.
fn event(json: &str) -> Result<Inbound<'_>, FrameError> {
    let Event(message) = serde_json::from_str(json)?;
    let Some(Payload { room, body }) = message else {
        return Ok(Inbound::Other);
    };
    let room = need("message", "room", room)?;
    let body = need("message", "body", body)?;
    Ok(match body.strip_prefix(PROBE).map(str::parse::<u32>) {
        Some(Ok(client)) => Inbound::Probe { room, client },
        _ => Inbound::Message {
            room,
            seq: None,
            body,
        },
    })
}

/// An event: `Some` payload for `message`, `None` for any other name.
struct Event<'a>(Option<Payload<'a>>);

#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(default, borrow, deserialize_with = "borrowed")]
    room: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    body: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Name<'a>(#[serde(borrow)] Cow<'a, str>);

impl<'de> Deserialize<'de> for Event<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Array;
        impl<'de> Visitor<'de> for Array {
            type Value = Event<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event array [name, ...args]")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let Name(name) = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("event without a name"))?;
                let payload = match &*name {
                    "message" => Some(
                        seq.next_element()?
                            .ok_or_else(|| de::Error::custom("message without an argument"))?,
                    ),
                    _ => None,
                };
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Event(payload))
            }
        }
        d.deserialize_seq(Array)
    }
}

/// `42["send",{"room":R,"body":B}]` for the message `stamp`, its body padded
/// to `body_size`. Room names and stamps need no JSON escaping (see
/// `wire::send`).
pub fn send(room: &str, stamp: &Stamp, body_size: usize) -> String {
    let mut frame = send_head(room, body_size);
    stamp.write_body(&mut frame, body_size);
    frame.push_str(r#""}]"#);
    frame
}

/// The join probe of `client`: a `send` whose body is `join:<client>`.
pub fn probe(room: &str, client: u32) -> String {
    let mut frame = send_head(room, 16);
    frame.push_str(PROBE);
    frame.push_str(itoa::Buffer::new().format(client));
    frame.push_str(r#""}]"#);
    frame
}

fn send_head(room: &str, body_size: usize) -> String {
    const HEAD: &str = r#"["send",{"room":""#;
    let mut frame = String::with_capacity(48 + room.len() + body_size.max(32));
    frame.push_str(engineio::EVENT);
    frame.push_str(HEAD);
    frame.push_str(room);
    frame.push_str(r#"","body":""#);
    frame
}

/// `42["join",R]`
pub fn join(room: &str) -> String {
    let mut frame = String::with_capacity(16 + room.len());
    frame.push_str(engineio::EVENT);
    frame.push_str(r#"["join",""#);
    frame.push_str(room);
    frame.push_str(r#""]"#);
    frame
}

/// Why a session did not get as far as the join.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error(transparent)]
    Ws(#[from] tungstenite::Error),
    /// The server closed the WebSocket (its close code).
    #[error("closed {0} before joined")]
    Closed(String),
    /// `44{..}`: the server refused the namespace.
    #[error("connect error {0}")]
    Refused(String),
    #[error("not Engine.IO: {0}")]
    Frame(#[from] FrameError),
}

/// Opens the Socket.IO session on a fresh WebSocket and joins `room`: waits
/// for the open packet, connects the default namespace, waits until it is
/// connected, then sends `join` and the join probe of `client`. The caller
/// waits for the probe to come back.
pub async fn handshake<S>(ws: &mut S, room: &str, client: u32) -> Result<(), HandshakeError>
where
    S: StreamExt<Item = Result<Message, tungstenite::Error>>
        + SinkExt<Message, Error = tungstenite::Error>
        + Unpin,
{
    let mut connected = false;
    while !connected {
        let text = match ws.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                return Err(HandshakeError::Closed(crate::client::close_code(
                    frame.as_ref(),
                )));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => return Err(HandshakeError::Closed("abnormal".into())),
        };
        match Packet::decode(&text).map_err(FrameError::from)? {
            Packet::Open => ws.send(Message::text(engineio::CONNECT)).await?,
            Packet::Ping => ws.send(Message::text(engineio::PONG)).await?,
            Packet::Connected => connected = true,
            Packet::ConnectError(json) => return Err(HandshakeError::Refused(json.to_owned())),
            _ => {}
        }
    }
    ws.send(Message::text(join(room))).await?;
    ws.send(Message::text(probe(room, client))).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_deliveries_borrowed() {
        let frame = r#"42["message",{"room":"run-r1","body":"3:1:2....."}]"#;
        let Inbound::Message { room, seq, body } = parse(frame).unwrap() else {
            panic!()
        };
        assert_eq!((&*room, seq, &*body), ("run-r1", None, "3:1:2....."));
        assert!(matches!((room, body), (Cow::Borrowed(_), Cow::Borrowed(_))));
        // Extra fields and arguments are skipped.
        let extra = r#"42["message",{"user":"u","room":"r","body":"b","ts":1},{"x":[1]}]"#;
        assert!(matches!(parse(extra).unwrap(), Inbound::Message { .. }));
    }

    #[test]
    fn recognizes_probes_pings_and_session_packets() {
        assert_eq!(
            parse(r#"42["message",{"room":"r","body":"join:17"}]"#).unwrap(),
            Inbound::Probe {
                room: "r".into(),
                client: 17
            }
        );
        assert_eq!(parse("2").unwrap(), Inbound::Ping);
        assert_eq!(
            parse(r#"0{"sid":"x","pingInterval":25000}"#).unwrap(),
            Inbound::Other
        );
        assert_eq!(parse(r#"40{"sid":"y"}"#).unwrap(), Inbound::Other);
        assert_eq!(parse(r#"42["typing","r"]"#).unwrap(), Inbound::Other);
        assert!(matches!(
            parse(r#"44{"message":"no"}"#).unwrap(),
            Inbound::Error { .. }
        ));
    }

    #[test]
    fn rejects_malformed_frames() {
        assert!(matches!(parse(""), Err(FrameError::Packet(_))));
        assert!(matches!(
            parse(r#"{"type":"message"}"#),
            Err(FrameError::Packet(_))
        ));
        assert!(matches!(
            parse(r#"42["message"]"#),
            Err(FrameError::Json(_))
        ));
        assert!(matches!(
            parse(r#"42["message",7]"#),
            Err(FrameError::Json(_))
        ));
        assert!(matches!(parse("42[]"), Err(FrameError::Json(_))));
        assert!(matches!(
            parse(r#"42["message",{"room":"r"}]"#),
            Err(FrameError::Missing { field: "body", .. })
        ));
    }

    #[test]
    fn encodes_what_a_json_encoder_would() {
        let stamp = Stamp {
            client: 3,
            n: 1,
            scheduled_us: 2,
        };
        assert_eq!(join("a.b:c_d-1"), r#"42["join","a.b:c_d-1"]"#);
        assert_eq!(
            send("run-r1", &stamp, 0),
            r#"42["send",{"room":"run-r1","body":"3:1:2"}]"#
        );
        let frame = send("r", &stamp, 40);
        let json: serde_json::Value = serde_json::from_str(&frame[2..]).unwrap();
        assert_eq!(
            json,
            serde_json::json!(["send", {"room": "r", "body": stamp.body(40)}])
        );
        assert_eq!(probe("r", 9), r#"42["send",{"room":"r","body":"join:9"}]"#);
        let Inbound::Probe { client, .. } =
            parse(&probe("r", 9).replace("send", "message")).unwrap()
        else {
            panic!()
        };
        assert_eq!(client, 9);
    }
}
