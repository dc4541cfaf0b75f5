//! Engine.IO v4 framing, with the Socket.IO v5 packets it carries, over a
//! WebSocket: just what `--protocol socketio` needs.
//!
//! On a WebSocket every text frame is one Engine.IO packet: a type digit and
//! its data (`0{"sid":..}` open, `2` ping, `3` pong, `4…` message). A message
//! holds one Socket.IO packet: a type digit, then for the default namespace
//! `/` directly an optional ack id and the JSON data (`40` connect, `40{"sid":..}`
//! connected, `42["event",arg]` event, `44{..}` connect error). Packets of
//! other namespaces, acks and binary packets are not part of the dialect and
//! decode as [`Packet::Other`].
//!
//! Decoding only slices the frame's text (no allocation); the event's JSON is
//! left to the dialect ([`crate::socketio`]) to parse, borrowed.

/// An Engine.IO packet, with the Socket.IO packet inside a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// `0{handshake}`: the server opened the session.
    Open,
    /// `2`: the server's heartbeat, to be answered with [`PONG`].
    Ping,
    /// `40{"sid":..}`: the default namespace is connected.
    Connected,
    /// `41`: the server disconnected the namespace.
    Disconnected,
    /// `42[...]`: an event of the default namespace; the JSON array.
    Event(&'a str),
    /// `44{"message":..}`: the server refused the namespace; its JSON.
    ConnectError(&'a str),
    /// Pong, close, upgrade, noop, acks, binary and other namespaces.
    Other,
}

/// Why a frame is not an Engine.IO packet (counted as `bad_frames`).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("empty Engine.IO packet")]
    Empty,
    #[error("unknown Engine.IO packet type '{0}'")]
    UnknownType(char),
    #[error("Engine.IO message without a Socket.IO packet")]
    EmptyMessage,
}

/// The answer to [`Packet::Ping`].
pub const PONG: &str = "3";
/// Socket.IO CONNECT to the default namespace, sent after [`Packet::Open`].
pub const CONNECT: &str = "40";
/// The head of an event of the default namespace, before its JSON array.
pub const EVENT: &str = "42";

impl<'a> Packet<'a> {
    pub fn decode(text: &'a str) -> Result<Self, PacketError> {
        let bytes = text.as_bytes();
        let Some(&kind) = bytes.first() else {
            return Err(PacketError::Empty);
        };
        Ok(match kind {
            b'0' => Packet::Open,
            b'2' => Packet::Ping,
            b'1' | b'3' | b'5' | b'6' => Packet::Other,
            b'4' => return Self::socketio(&text[1..]),
            _ => return Err(PacketError::UnknownType(char::from(kind))),
        })
    }

    /// The Socket.IO packet inside an Engine.IO message.
    fn socketio(text: &'a str) -> Result<Self, PacketError> {
        let Some(&kind) = text.as_bytes().first() else {
            return Err(PacketError::EmptyMessage);
        };
        let rest = &text[1..];
        if rest.starts_with('/') {
            return Ok(Packet::Other); // another namespace
        }
        Ok(match kind {
            b'0' => Packet::Connected,
            b'1' => Packet::Disconnected,
            // An ack id may sit between the type and the data; the dialect
            // has no acks, so it is skipped.
            b'2' => Packet::Event(rest.trim_start_matches(|c: char| c.is_ascii_digit())),
            b'4' => Packet::ConnectError(rest),
            _ => Packet::Other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_packets_of_a_session() {
        let open = r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
        assert_eq!(Packet::decode(open), Ok(Packet::Open));
        assert_eq!(Packet::decode("2"), Ok(Packet::Ping));
        assert_eq!(Packet::decode("3"), Ok(Packet::Other));
        assert_eq!(
            Packet::decode(r#"40{"sid":"wZX3oN0bSVIhsaknAAAI"}"#),
            Ok(Packet::Connected)
        );
        assert_eq!(
            Packet::decode(r#"42["message",{"room":"r","body":"b"}]"#),
            Ok(Packet::Event(r#"["message",{"room":"r","body":"b"}]"#))
        );
        assert_eq!(
            Packet::decode(r#"4212["message",1]"#),
            Ok(Packet::Event(r#"["message",1]"#))
        );
        assert_eq!(
            Packet::decode(r#"44{"message":"Not authorized"}"#),
            Ok(Packet::ConnectError(r#"{"message":"Not authorized"}"#))
        );
        assert_eq!(Packet::decode("41"), Ok(Packet::Disconnected));
        assert_eq!(
            Packet::decode(r#"42/admin,["message",1]"#),
            Ok(Packet::Other)
        );
        assert_eq!(Packet::decode("43[1]"), Ok(Packet::Other));
    }

    #[test]
    fn rejects_what_is_not_engineio() {
        assert_eq!(Packet::decode(""), Err(PacketError::Empty));
        assert_eq!(Packet::decode("4"), Err(PacketError::EmptyMessage));
        assert_eq!(
            Packet::decode(r#"{"type":"message"}"#),
            Err(PacketError::UnknownType('{'))
        );
    }
}
