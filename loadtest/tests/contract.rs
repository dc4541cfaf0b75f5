//! The contract between chat-load and chat-server, checked in both directions
//! without a network: every frame chat-load writes goes through the server's own
//! parser, and every frame the server renders goes through chat-load's decoder.
//! chat-load keeps its own allocation-free decoder (`wire`), so this test is what
//! keeps the two in step with docs/protocol.md.

use chat_server::protocol::{
    self as server, ChatMessage, ClientFrame, ErrorCode, MessageParts, PresenceEvent, ServerFrame,
};
use loadtest::stamp::Stamp;
use loadtest::wire::{self, Inbound};

#[test]
fn the_clients_frames_parse_as_the_server_reads_them() {
    let stamp = Stamp {
        client: 7,
        n: 3,
        scheduled_us: 1_234_567,
    };
    let frame = wire::send("room-1", &stamp, 64);
    let Ok(ClientFrame::Send {
        room,
        body,
        reference,
    }) = ClientFrame::parse(&frame)
    else {
        panic!("the server does not read {frame}");
    };
    assert_eq!(room, "room-1");
    assert!(body.len() >= 64);
    assert_eq!(Stamp::parse_body(&body), Some(stamp));
    let reference = reference.expect("a send carries its ref");
    assert!(reference.len() <= server::MAX_REF_LEN);
    assert_eq!(Stamp::parse_reference(&reference), Some((3, 1_234_567)));

    assert_eq!(
        ClientFrame::parse(&wire::join("room-1", Some(41))),
        Ok(ClientFrame::Join {
            room: "room-1".into(),
            since: Some(41)
        })
    );
    assert_eq!(
        ClientFrame::parse(&wire::join("room-1", None)),
        Ok(ClientFrame::Join {
            room: "room-1".into(),
            since: None
        })
    );
    assert_eq!(
        ClientFrame::parse(&wire::leave("room-1")),
        Ok(ClientFrame::Leave {
            room: "room-1".into()
        })
    );
    assert_eq!(ClientFrame::parse(&wire::ping()), Ok(ClientFrame::Ping));
}

#[test]
fn the_servers_frames_decode_as_chat_load_reads_them() {
    let stamp = Stamp {
        client: 2,
        n: 9,
        scheduled_us: 55,
    };
    let body = stamp.body(0);
    // Deliveries: plain, and with escapes (the decoder's slow path).
    for (user, body) in [("ann", body.as_str()), ("a\"n", "line\nbreak \u{e9}")] {
        let frame = MessageParts::new("room-1", user, body, 1_700_000_000_000).frame(12);
        assert_eq!(
            Inbound::parse(&frame).ok(),
            Some(Inbound::Message {
                room: "room-1".into(),
                seq: Some(12),
                body: body.into(),
            }),
            "{frame}"
        );
    }
    let members = ["ann".to_string(), "bob".to_string()];
    let cases = [
        (
            ServerFrame::Joined {
                room: "room-1",
                user: "ann",
                members: &members,
                last_seq: 40,
            },
            Inbound::Joined {
                room: "room-1".into(),
                last_seq: 40,
            },
        ),
        (
            ServerFrame::Ack {
                reference: Some("7:3"),
                room: "room-1",
                seq: 41,
            },
            Inbound::Ack {
                reference: Some("7:3".into()),
                room: "room-1".into(),
                seq: 41,
            },
        ),
        (
            ServerFrame::Presence {
                room: "room-1",
                event: PresenceEvent::Join,
                user: "bob",
            },
            Inbound::Presence,
        ),
        (ServerFrame::Left { room: "room-1" }, Inbound::Other),
        (ServerFrame::Pong, Inbound::Other),
        (
            ServerFrame::History {
                room: "room-1",
                messages: &[ChatMessage {
                    room: "room-1".into(),
                    seq: 1,
                    user: "ann".into(),
                    body: "hi".into(),
                    ts: 1,
                }],
            },
            Inbound::Other,
        ),
    ];
    for (frame, want) in cases {
        let json = frame.to_json();
        assert_eq!(Inbound::parse(&json).ok(), Some(want), "{json}");
    }
    for code in ErrorCode::ALL {
        let json = ServerFrame::Error {
            code,
            message: "why",
            reference: Some("1:2"),
        }
        .to_json();
        assert_eq!(
            Inbound::parse(&json).ok(),
            Some(Inbound::Error {
                code: code.as_str().into(),
                reference: Some("1:2".into()),
            }),
            "{json}"
        );
    }
}

#[test]
fn chat_load_reconnects_after_the_close_codes_the_server_means_it_to() {
    assert_eq!(wire::CLOSE_GOING_AWAY, server::CLOSE_GOING_AWAY);
    assert_eq!(wire::CLOSE_SLOW_CONSUMER, server::CLOSE_SLOW_CONSUMER);
    assert_eq!(wire::CLOSE_REBALANCE, server::CLOSE_REBALANCE);
    let all = [
        server::CLOSE_NORMAL,
        server::CLOSE_GOING_AWAY,
        server::CLOSE_INVALID_DATA,
        server::CLOSE_POLICY,
        server::CLOSE_TOO_BIG,
        server::CLOSE_TRY_AGAIN,
        server::CLOSE_SLOW_CONSUMER,
        server::CLOSE_REBALANCE,
    ];
    let reconnecting: Vec<u16> = all
        .into_iter()
        .filter(|&c| wire::reconnects_after(c))
        .collect();
    assert_eq!(
        reconnecting,
        [
            server::CLOSE_GOING_AWAY,
            server::CLOSE_SLOW_CONSUMER,
            server::CLOSE_REBALANCE
        ]
    );
}
