//! The wire protocol of docs/protocol.md: client frames, server frames, names.
//!
//! Everything that crosses the socket is defined here, so the contract has one home.
//! `message` frames are hot: they are rendered once per message as a prefix and a
//! suffix around the seq ([`MessageParts`]), so the broker can splice in the seq it
//! assigns and every instance forwards the resulting bytes unchanged.

use serde::{Deserialize, Serialize};

/// Longest room or user name.
pub const MAX_NAME_LEN: usize = 64;

/// Longest `ref` of a `send`, in bytes. A `ref` is kept per pending ack and echoed
/// back, so it is bounded; a longer one is refused without being echoed.
pub const MAX_REF_LEN: usize = 128;

/// The name rule for rooms and users, as error messages quote it.
pub const NAME_RULE: &str = "^[A-Za-z0-9_.:-]{1,64}$";

/// Whether `name` follows [`NAME_RULE`].
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// A frame from the client.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientFrame {
    Join {
        room: String,
        #[serde(default)]
        since: Option<u64>,
    },
    Leave {
        room: String,
    },
    Send {
        room: String,
        body: String,
        #[serde(rename = "ref", default)]
        reference: Option<String>,
    },
    History {
        room: String,
        #[serde(default)]
        before: Option<u64>,
        #[serde(default)]
        limit: Option<u32>,
    },
    Ping,
}

/// Why a text frame could not be parsed, with the request's `ref` when it had one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub message: String,
    pub reference: Option<String>,
}

impl ClientFrame {
    /// Parses one text frame. Errors carry a readable reason and the `ref`, if any
    /// (and if it is within [`MAX_REF_LEN`]).
    pub fn parse(text: &str) -> Result<ClientFrame, ParseError> {
        let frame = serde_json::from_str(text).map_err(|err| {
            let value: Option<serde_json::Value> = serde_json::from_str(text).ok();
            let reference = value
                .as_ref()
                .and_then(|v| v.get("ref"))
                .and_then(|r| r.as_str())
                .filter(|r| r.len() <= MAX_REF_LEN)
                .map(str::to_owned);
            let message = match &value {
                None => format!("malformed JSON: {err}"),
                Some(v) if !v.is_object() => "a frame must be a JSON object".to_owned(),
                Some(v) if v.get("type").is_none() => "missing field `type`".to_owned(),
                Some(_) => format!("invalid frame: {err}"),
            };
            ParseError { message, reference }
        })?;
        match &frame {
            ClientFrame::Send {
                reference: Some(r), ..
            } if r.len() > MAX_REF_LEN => Err(ParseError {
                message: format!("ref is {} bytes; the limit is {MAX_REF_LEN}", r.len()),
                reference: None,
            }),
            _ => Ok(frame),
        }
    }
}

/// WebSocket close codes the server sends (docs/protocol.md, "Close codes").
/// A client reconnects after `GOING_AWAY`, `SLOW_CONSUMER` and `REBALANCE`, and
/// rejoins with `since`.
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_INVALID_DATA: u16 = 1007;
pub const CLOSE_POLICY: u16 = 1008;
pub const CLOSE_TOO_BIG: u16 = 1009;
pub const CLOSE_TRY_AGAIN: u16 = 1013;
pub const CLOSE_SLOW_CONSUMER: u16 = 4000;
/// Rebalancing (`--rebalance`) asks the client to reconnect elsewhere.
pub const CLOSE_REBALANCE: u16 = 4001;

/// Error codes of `error` frames (and of the HTTP API's error bodies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    InvalidRoom,
    NotMember,
    TooLarge,
    TooManyRooms,
    RateLimited,
    Unavailable,
    /// HTTP API only: auth is on and the request has no valid token.
    Unauthorized,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::BadRequest,
        ErrorCode::InvalidRoom,
        ErrorCode::NotMember,
        ErrorCode::TooLarge,
        ErrorCode::TooManyRooms,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
        ErrorCode::Unauthorized,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::NotMember => "not_member",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Unauthorized => "unauthorized",
        }
    }
}

/// One chat message, as stored and as sent in `message` frames and `history` lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "message")]
pub struct ChatMessage {
    pub room: String,
    pub seq: u64,
    pub user: String,
    pub body: String,
    pub ts: u64,
}

impl ChatMessage {
    /// A placeholder stored for a seq that was given up as never committed, so that
    /// its late commit conflicts instead of being acked (see `hub`). Its empty user
    /// breaks the name rule, so no real message looks like one.
    pub fn tombstone(room: &str, seq: u64) -> ChatMessage {
        ChatMessage {
            room: room.to_owned(),
            seq,
            user: String::new(),
            body: String::new(),
            ts: 0,
        }
    }

    pub fn is_tombstone(&self) -> bool {
        self.user.is_empty()
    }
}

/// `presence.event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceEvent {
    Join,
    Leave,
}

/// A frame from the server (all but `message`, which goes through [`MessageParts`]).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerFrame<'a> {
    Joined {
        room: &'a str,
        user: &'a str,
        members: &'a [String],
        last_seq: u64,
    },
    Left {
        room: &'a str,
    },
    Presence {
        room: &'a str,
        event: PresenceEvent,
        user: &'a str,
    },
    Ack {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
        room: &'a str,
        seq: u64,
    },
    History {
        room: &'a str,
        messages: &'a [ChatMessage],
    },
    Error {
        code: ErrorCode,
        message: &'a str,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
    Pong,
}

impl ServerFrame<'_> {
    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        // Only strings, integers and string slices: serialization cannot fail.
        serde_json::to_string(self).expect("server frames always serialize")
    }
}

/// A `message` frame rendered around its future seq:
/// `{"type":"message","room":R,"seq":` + seq + `,"user":U,"body":B,"ts":T}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageParts {
    pub prefix: String,
    pub suffix: String,
}

impl MessageParts {
    pub fn new(room: &str, user: &str, body: &str, ts: u64) -> MessageParts {
        MessageParts {
            prefix: message_prefix(room),
            suffix: format!(
                ",\"user\":{},\"body\":{},\"ts\":{ts}}}",
                json_string(user),
                json_string(body)
            ),
        }
    }

    /// The final frame for `seq` (what the broker builds in Lua or in memory).
    pub fn frame(&self, seq: u64) -> String {
        let mut out = String::with_capacity(self.prefix.len() + self.suffix.len() + 20);
        out.push_str(&self.prefix);
        out.push_str(&seq.to_string());
        out.push_str(&self.suffix);
        out
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("strings always serialize")
}

/// `{"type":"message","room":R,"seq":` for `room`.
pub fn message_prefix(room: &str) -> String {
    format!(
        "{{\"type\":\"message\",\"room\":{},\"seq\":",
        json_string(room)
    )
}

/// The seq of a rendered `message` frame of `room`, read without a full parse.
pub fn message_seq(room: &str, frame: &str) -> Option<u64> {
    let rest = frame.strip_prefix("{\"type\":\"message\",\"room\":\"")?;
    let rest = rest.strip_prefix(room)?;
    let rest = rest.strip_prefix("\",\"seq\":")?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rule() {
        assert!(valid_name("lobby"));
        assert!(valid_name("a.b:c-d_e9"));
        assert!(valid_name(&"x".repeat(64)));
        assert!(!valid_name(""));
        assert!(!valid_name(&"x".repeat(65)));
        assert!(!valid_name("has space"));
        assert!(!valid_name("slash/"));
        assert!(!valid_name("é"));
        assert!(!valid_name("quote\""));
    }

    #[test]
    fn parses_every_client_frame() {
        assert_eq!(
            ClientFrame::parse(r#"{"type":"join","room":"lobby","since":41}"#).unwrap(),
            ClientFrame::Join {
                room: "lobby".into(),
                since: Some(41)
            }
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"join","room":"lobby"}"#).unwrap(),
            ClientFrame::Join {
                room: "lobby".into(),
                since: None
            }
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"leave","room":"ops","extra":1}"#).unwrap(),
            ClientFrame::Leave { room: "ops".into() }
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"send","room":"l","body":"hi","ref":"c1"}"#).unwrap(),
            ClientFrame::Send {
                room: "l".into(),
                body: "hi".into(),
                reference: Some("c1".into())
            }
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"history","room":"l","before":100,"limit":20}"#).unwrap(),
            ClientFrame::History {
                room: "l".into(),
                before: Some(100),
                limit: Some(20)
            }
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"ping"}"#).unwrap(),
            ClientFrame::Ping
        );
    }

    #[test]
    fn bad_frames_explain_and_keep_ref() {
        let e = ClientFrame::parse("{nope").unwrap_err();
        assert!(e.message.starts_with("malformed JSON"), "{}", e.message);
        let e = ClientFrame::parse("[1]").unwrap_err();
        assert_eq!(e.message, "a frame must be a JSON object");
        let e = ClientFrame::parse(r#"{"room":"x"}"#).unwrap_err();
        assert_eq!(e.message, "missing field `type`");
        let e = ClientFrame::parse(r#"{"type":"shout","ref":"r9"}"#).unwrap_err();
        assert!(e.message.contains("unknown variant"), "{}", e.message);
        assert_eq!(e.reference.as_deref(), Some("r9"));
        let e = ClientFrame::parse(r#"{"type":"send","room":"x","ref":"r1"}"#).unwrap_err();
        assert!(e.message.contains("missing field `body`"), "{}", e.message);
        assert_eq!(e.reference.as_deref(), Some("r1"));
        let e = ClientFrame::parse(r#"{"type":"join","room":5}"#).unwrap_err();
        assert!(e.message.contains("invalid type"), "{}", e.message);
    }

    #[test]
    fn long_refs_are_refused_and_never_echoed() {
        let ok = "r".repeat(MAX_REF_LEN);
        let frame = format!(r#"{{"type":"send","room":"l","body":"b","ref":"{ok}"}}"#);
        assert!(ClientFrame::parse(&frame).is_ok());
        let long = "r".repeat(MAX_REF_LEN + 1);
        let frame = format!(r#"{{"type":"send","room":"l","body":"b","ref":"{long}"}}"#);
        let e = ClientFrame::parse(&frame).unwrap_err();
        assert_eq!(e.message, "ref is 129 bytes; the limit is 128");
        assert_eq!(e.reference, None);
        // Nor on a frame that fails for another reason.
        let frame = format!(r#"{{"type":"send","room":"l","ref":"{long}"}}"#);
        assert_eq!(ClientFrame::parse(&frame).unwrap_err().reference, None);
    }

    #[test]
    fn deeply_nested_json_is_a_parse_error() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let e = ClientFrame::parse(&nested(100_000)).unwrap_err();
        assert!(e.message.starts_with("malformed JSON"), "{}", e.message);
        // Under an ignored field too: serde_json's recursion limit, not the stack.
        let frame = format!(r#"{{"type":"ping","x":{}}}"#, nested(100_000));
        let e = ClientFrame::parse(&frame).unwrap_err();
        assert!(e.message.contains("recursion limit"), "{}", e.message);
    }

    #[test]
    fn message_parts_match_serde_and_seq_is_readable() {
        let parts = MessageParts::new("lobby", "alice", "he said \"hi\"\n", 1764097200123);
        let frame = parts.frame(42);
        let msg = ChatMessage {
            room: "lobby".into(),
            seq: 42,
            user: "alice".into(),
            body: "he said \"hi\"\n".into(),
            ts: 1764097200123,
        };
        assert_eq!(frame, serde_json::to_string(&msg).unwrap());
        assert_eq!(message_seq("lobby", &frame), Some(42));
        assert_eq!(message_seq("lobb", &frame), None);
        assert_eq!(message_seq("lobby", "{\"type\":\"presence\"}"), None);
    }

    #[test]
    fn server_frames_render_as_documented() {
        let members = vec!["alice".to_owned(), "bob".to_owned()];
        let joined = ServerFrame::Joined {
            room: "lobby",
            user: "alice",
            members: &members,
            last_seq: 41,
        };
        assert_eq!(
            joined.to_json(),
            r#"{"type":"joined","room":"lobby","user":"alice","members":["alice","bob"],"last_seq":41}"#
        );
        let ack = ServerFrame::Ack {
            reference: None,
            room: "lobby",
            seq: 42,
        };
        assert_eq!(ack.to_json(), r#"{"type":"ack","room":"lobby","seq":42}"#);
        let err = ServerFrame::Error {
            code: ErrorCode::NotMember,
            message: "m",
            reference: Some("c1"),
        };
        assert_eq!(
            err.to_json(),
            r#"{"type":"error","code":"not_member","message":"m","ref":"c1"}"#
        );
        assert_eq!(ServerFrame::Pong.to_json(), r#"{"type":"pong"}"#);
        let p = ServerFrame::Presence {
            room: "r",
            event: PresenceEvent::Leave,
            user: "u",
        };
        assert_eq!(
            p.to_json(),
            r#"{"type":"presence","room":"r","event":"leave","user":"u"}"#
        );
    }

    #[test]
    fn error_code_names_match_serde() {
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_string(&code).unwrap(),
                format!("\"{}\"", code.as_str())
            );
        }
    }
}
