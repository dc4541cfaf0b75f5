//! The slice of docs/protocol.md the load generator speaks.
//!
//! Inbound frames are parsed into one flat struct that borrows from the frame's
//! text: strings without escapes stay `Cow::Borrowed`, fields the generator does
//! not need (`user`, `ts`, `members`, …) are skipped by serde without being
//! built. That keeps the per-delivery cost to one JSON scan and no allocation,
//! which is what lets one core drive hundreds of thousands of deliveries/s.
//!
//! Deliveries, nearly every frame of a run, first get a cheaper reading
//! (`fast_message`): chat-server (like the floor) writes them with their
//! fields in one order, so a frame of exactly that shape whose strings have
//! no escapes is sliced at its quotes (found with `memchr`) instead of going
//! through serde, which was about a quarter of the generator's instructions
//! per delivery. Any other frame, order, or escape takes the serde path, so
//! the result is the same either way.

use std::borrow::Cow;
use std::fmt;

/// Close codes after which a client reconnects and rejoins with `since`
/// (docs/protocol.md, "Close codes"): the server is going away, closed a slow
/// consumer, or asks the client to move to another instance.
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_SLOW_CONSUMER: u16 = 4000;
pub const CLOSE_REBALANCE: u16 = 4001;

/// Whether a close with `code` asks the client to come back.
pub fn reconnects_after(code: u16) -> bool {
    matches!(
        code,
        CLOSE_GOING_AWAY | CLOSE_SLOW_CONSUMER | CLOSE_REBALANCE
    )
}

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use crate::stamp::{Stamp, leading_number};

/// A server frame, reduced to what the generator measures.
#[derive(Debug, PartialEq)]
pub enum Inbound<'a> {
    Joined {
        room: Cow<'a, str>,
        last_seq: u64,
    },
    /// A delivery; `seq` is `None` in a protocol without seqs.
    Message {
        room: Cow<'a, str>,
        seq: Option<u64>,
        body: Cow<'a, str>,
    },
    /// `--protocol socketio`: the join probe of `client` came back (see `socketio`).
    Probe {
        room: Cow<'a, str>,
        client: u32,
    },
    /// `--protocol socketio`: the server's heartbeat, answered with a pong.
    Ping,
    Ack {
        reference: Option<Cow<'a, str>>,
        room: Cow<'a, str>,
        seq: u64,
    },
    Error {
        code: Cow<'a, str>,
        reference: Option<Cow<'a, str>>,
    },
    Presence,
    /// `left`, `history`, `pong` (and Socket.IO's session packets): valid,
    /// not measured.
    Other,
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    room: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    last_seq: Option<u64>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    body: Option<Cow<'a, str>>,
    #[serde(default, rename = "ref", borrow, deserialize_with = "borrowed")]
    reference: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    code: Option<Cow<'a, str>>,
}

/// `Option<Cow<str>>` that borrows when it can: serde's own impl for a Cow
/// nested in an Option always allocates.
pub(crate) fn borrowed<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    struct Text;
    impl<'de> Visitor<'de> for Text {
        type Value = Option<Cow<'de, str>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_owned())))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v)))
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(Text)
        }
    }
    d.deserialize_option(Text)
}

/// Why a frame could not be understood (counted as `bad_frame` in the report).
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("'{kind}' frame without '{field}'")]
    Missing {
        kind: &'static str,
        field: &'static str,
    },
    #[error("unknown frame type")]
    UnknownType,
    #[error(transparent)]
    Packet(#[from] crate::engineio::PacketError),
}

impl<'a> Inbound<'a> {
    pub fn parse(text: &'a str) -> Result<Self, FrameError> {
        if let Some(message) = fast_message(text) {
            return Ok(message);
        }
        let f: Frame<'a> = serde_json::from_str(text)?;
        Ok(match &*f.kind {
            "message" => Inbound::Message {
                room: need("message", "room", f.room)?,
                seq: Some(need("message", "seq", f.seq)?),
                body: need("message", "body", f.body)?,
            },
            "ack" => Inbound::Ack {
                reference: f.reference,
                room: need("ack", "room", f.room)?,
                seq: need("ack", "seq", f.seq)?,
            },
            "joined" => Inbound::Joined {
                room: need("joined", "room", f.room)?,
                last_seq: need("joined", "last_seq", f.last_seq)?,
            },
            "error" => Inbound::Error {
                code: need("error", "code", f.code)?,
                reference: f.reference,
            },
            "presence" => Inbound::Presence,
            "left" | "history" | "pong" => Inbound::Other,
            _ => return Err(FrameError::UnknownType),
        })
    }
}

/// `{"type":"message","room":R,"seq":N,"user":U,"body":B,"ts":T}` with no
/// escape in `R`, `U`, `B`, read by slicing; `None` for anything else.
fn fast_message(text: &str) -> Option<Inbound<'_>> {
    let rest = text.strip_prefix(r#"{"type":"message","room":""#)?;
    let (room, rest) = plain_string(rest)?;
    let (seq, rest) = number(rest.strip_prefix(r#","seq":"#)?)?;
    let (_user, rest) = plain_string(rest.strip_prefix(r#","user":""#)?)?;
    let (body, rest) = plain_string(rest.strip_prefix(r#","body":""#)?)?;
    let (_ts, rest) = number(rest.strip_prefix(r#","ts":"#)?)?;
    (rest == "}").then_some(Inbound::Message {
        room: Cow::Borrowed(room),
        seq: Some(seq),
        body: Cow::Borrowed(body),
    })
}

/// The string up to the next `"` and what follows that quote; `None` if an
/// escape (or no quote) comes first.
fn plain_string(text: &str) -> Option<(&str, &str)> {
    let end = memchr::memchr2(b'"', b'\\', text.as_bytes())?;
    (text.as_bytes()[end] == b'"').then(|| (&text[..end], &text[end + 1..]))
}

/// A JSON unsigned integer that fits a u64 (digits only: no sign, fraction or
/// exponent, no leading zero) and what follows it.
fn number(text: &str) -> Option<(u64, &str)> {
    let (value, rest) = leading_number(text.as_bytes())?;
    let digits = text.len() - rest.len();
    if digits > 1 && text.starts_with('0') {
        return None;
    }
    let rest = &text[digits..];
    // `1.5` or `1e3` is a JSON number, but not an integer: leave it to serde.
    (!rest.starts_with(['.', 'e', 'E'])).then_some((value, rest))
}

pub(crate) fn need<T>(
    kind: &'static str,
    field: &'static str,
    value: Option<T>,
) -> Result<T, FrameError> {
    value.ok_or(FrameError::Missing { kind, field })
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Outbound<'a> {
    Join {
        room: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
    },
    Leave {
        room: &'a str,
    },
    Ping,
}

fn encode(frame: &Outbound<'_>) -> String {
    serde_json::to_string(frame).expect("plain structs of strings and integers always serialize")
}

/// `{"type":"join","room":R[,"since":S]}`
pub fn join(room: &str, since: Option<u64>) -> String {
    encode(&Outbound::Join { room, since })
}

/// `{"type":"send","room":R,"body":B,"ref":F}` for the message `stamp`, its
/// body padded to `body_size`: written straight into the one `String` the
/// frame needs. Nothing in it needs JSON escaping: room names follow the
/// server's name rule `[A-Za-z0-9_.:-]` (the run id is checked), and stamps
/// are digits, `:` and `.`.
pub fn send(room: &str, stamp: &Stamp, body_size: usize) -> String {
    const HEAD: &str = r#"{"type":"send","room":""#;
    let mut frame = String::with_capacity(HEAD.len() + room.len() + body_size.max(32) + 48);
    frame.push_str(HEAD);
    frame.push_str(room);
    frame.push_str(r#"","body":""#);
    stamp.write_body(&mut frame, body_size);
    frame.push_str(r#"","ref":""#);
    stamp.write_reference(&mut frame);
    frame.push_str(r#""}"#);
    frame
}

/// `{"type":"leave","room":R}`
pub fn leave(room: &str) -> String {
    encode(&Outbound::Leave { room })
}

/// `{"type":"ping"}`
pub fn ping() -> String {
    encode(&Outbound::Ping)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_protocol_examples() {
        let msg = r#"{"type":"message","room":"lobby","seq":42,"user":"alice","body":"hello","ts":1764097200123}"#;
        let Inbound::Message { room, seq, body } = Inbound::parse(msg).unwrap() else {
            panic!()
        };
        assert_eq!((&*room, seq, &*body), ("lobby", Some(42), "hello"));
        assert!(
            matches!(room, Cow::Borrowed(_)),
            "no allocation for plain strings"
        );
        assert!(
            matches!(body, Cow::Borrowed(_)),
            "no allocation for plain strings"
        );

        let joined = r#"{"type":"joined","room":"lobby","user":"alice","members":["alice","bob"],"last_seq":41}"#;
        assert_eq!(
            Inbound::parse(joined).unwrap(),
            Inbound::Joined {
                room: "lobby".into(),
                last_seq: 41
            }
        );

        let ack = r#"{"type":"ack","ref":"c1-17","room":"lobby","seq":42}"#;
        assert_eq!(
            Inbound::parse(ack).unwrap(),
            Inbound::Ack {
                reference: Some("c1-17".into()),
                room: "lobby".into(),
                seq: 42
            }
        );
        let err = r#"{"type":"error","code":"not_member","message":"join room 'ops' first","ref":"c1-18"}"#;
        assert_eq!(
            Inbound::parse(err).unwrap(),
            Inbound::Error {
                code: "not_member".into(),
                reference: Some("c1-18".into())
            }
        );
        assert_eq!(
            Inbound::parse(r#"{"type":"presence","room":"lobby","event":"join","user":"carol"}"#)
                .unwrap(),
            Inbound::Presence
        );
        assert_eq!(
            Inbound::parse(r#"{"type":"pong"}"#).unwrap(),
            Inbound::Other
        );
        let null_ref = r#"{"type":"ack","ref":null,"room":"r","seq":1}"#;
        assert!(matches!(
            Inbound::parse(null_ref).unwrap(),
            Inbound::Ack {
                reference: None,
                ..
            }
        ));
    }

    #[test]
    fn the_fast_path_reads_what_serde_reads() {
        let frames = [
            r#"{"type":"message","room":"lobby","seq":42,"user":"alice","body":"hello","ts":1764097200123}"#,
            r#"{"type":"message","room":"r","seq":1,"user":"u","body":"","ts":0}"#,
            r#"{"type":"message","room":"r","seq":18446744073709551615,"user":"u","body":"3:1:2....","ts":1}"#,
        ];
        for frame in frames {
            let fast = fast_message(frame).expect("chat-server's shape");
            let f: Frame = serde_json::from_str(frame).unwrap();
            let slow = Inbound::Message {
                room: f.room.unwrap(),
                seq: f.seq,
                body: f.body.unwrap(),
            };
            assert_eq!(fast, slow, "{frame}");
        }
        // Other shapes take the serde path, with the same meaning.
        for frame in [
            r#"{"type":"message","room":"r","seq":1,"user":"u","body":"a\"b","ts":1}"#,
            r#"{"type":"message","room":"r","seq":1,"user":"u\u00e9","body":"b","ts":1}"#,
            r#"{"type":"message","seq":1,"room":"r","user":"u","body":"b","ts":1}"#,
            r#"{"type":"message","room":"r","seq":1,"user":"u","body":"b","ts":1,"x":2}"#,
            r#"{"type":"message","room":"r","seq":1,"user":"u","body":"b","ts":1.5}"#,
            r#"{"type":"message","room":"r","seq":01,"user":"u","body":"b","ts":1}"#,
            r#"{"type":"message","room":"r","seq":99999999999999999999,"user":"u","body":"b","ts":1}"#,
            r#"{"type":"message","room":"r","seq":1,"user":"u","body":"b","ts":1} "#,
            r#"{"type":"message","room":"r","seq":-1,"user":"u","body":"b","ts":1}"#,
        ] {
            assert_eq!(fast_message(frame), None, "{frame}");
        }
        let reordered = r#"{"type":"message","seq":1,"room":"r","user":"u","body":"b","ts":1}"#;
        assert!(matches!(
            Inbound::parse(reordered),
            Ok(Inbound::Message { seq: Some(1), .. })
        ));
        let escaped = r#"{"type":"message","room":"r","seq":1,"user":"u","body":"a\"b","ts":1}"#;
        let Ok(Inbound::Message { body, .. }) = Inbound::parse(escaped) else {
            panic!()
        };
        assert_eq!(body, "a\"b");
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let msg = r#"{"type":"message","room":"r","seq":1,"user":"u","body":"a\"b","ts":1}"#;
        let Inbound::Message { body, .. } = Inbound::parse(msg).unwrap() else {
            panic!()
        };
        assert_eq!(body, "a\"b");
    }

    #[test]
    fn rejects_malformed_frames() {
        assert!(matches!(
            Inbound::parse("not json"),
            Err(FrameError::Json(_))
        ));
        assert!(matches!(
            Inbound::parse(r#"{"type":"nope"}"#),
            Err(FrameError::UnknownType)
        ));
        assert!(matches!(
            Inbound::parse(r#"{"type":"message","room":"r","body":"b"}"#),
            Err(FrameError::Missing { field: "seq", .. })
        ));
    }

    #[test]
    fn encodes_requests() {
        assert_eq!(join("lobby", None), r#"{"type":"join","room":"lobby"}"#);
        assert_eq!(leave("lobby"), r#"{"type":"leave","room":"lobby"}"#);
        assert_eq!(
            join("lobby", Some(41)),
            r#"{"type":"join","room":"lobby","since":41}"#
        );
        let stamp = Stamp {
            client: 3,
            n: 1,
            scheduled_us: 2,
        };
        assert_eq!(
            send("run-r1", &stamp, 0),
            r#"{"type":"send","room":"run-r1","body":"3:1:2","ref":"1:2"}"#
        );
        // Exactly what a JSON encoder makes of the same fields.
        let frame = send("a.b:c_d-1", &stamp, 40);
        let expected = serde_json::json!({
            "type": "send",
            "room": "a.b:c_d-1",
            "body": stamp.body(40),
            "ref": stamp.reference(),
        });
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&frame).unwrap(),
            expected
        );
    }
}
