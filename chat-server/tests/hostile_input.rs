//! Hostile input against an instance on real Redis and PostgreSQL: each gets its
//! documented error or close code, and nothing it sends stops other rooms.

mod support;
use support::Connect;

use serde_json::{Value, json};
use support::{Client, Server, fresh_database, http_json, room, seqs};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

fn assert_error(v: &Value, code: &str, message_has: &str) {
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["code"], code, "{v}");
    let message = v["message"].as_str().unwrap_or_default();
    assert!(message.contains(message_has), "{v}");
}

async fn joined(server: &Server, user: &str, room: &str) -> Client {
    let mut c = server.client(&format!("user={user}&room={room}")).await;
    c.recv_type("joined").await;
    c
}

#[tokio::test]
async fn a_nul_body_is_refused_and_other_rooms_keep_working() {
    let db = fresh_database().await;
    let server = Server::clustered(&db, &[]).await;
    let (r1, r2) = (room(), room());
    let mut attacker = joined(&server, "mallory", &r1).await;
    let mut other = joined(&server, "olive", &r2).await;

    let v = attacker
        .request(json!({"type":"send","room":r1,"body":"x\u{0}y","ref":"nul"}))
        .await;
    assert_error(&v, "bad_request", "U+0000");
    assert_eq!(v["ref"], "nul");

    // The instance still accepts and stores messages, in both rooms.
    assert_eq!(other.send_acked(&r2, "still here").await, 1);
    assert_eq!(attacker.send_acked(&r1, "clean").await, 1);
    assert_eq!(http_json(server.addr, "/readyz").await.0, 200);
    let (_, page) = http_json(server.addr, &format!("/api/rooms/{r1}/messages")).await;
    assert_eq!(seqs(&page), vec![1]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_long_ref_is_refused_without_being_echoed() {
    let db = fresh_database().await;
    let server = Server::clustered(&db, &[]).await;
    let r = room();
    let mut c = joined(&server, "rex", &r).await;
    let long = "r".repeat(60 * 1024);
    let v = c
        .request(json!({"type":"send","room":r,"body":"b","ref":long}))
        .await;
    assert_error(&v, "bad_request", "ref is 61440 bytes; the limit is 128");
    assert!(v.get("ref").is_none(), "the ref is not echoed");
    // Nothing was published.
    assert_eq!(c.send_acked(&r, "after").await, 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn binary_frames_count_against_the_rate_limit() {
    let db = fresh_database().await;
    let server = Server::clustered(&db, &["--rate-per-sec", "1", "--rate-burst", "5"]).await;
    let r = room();
    let mut c = joined(&server, "bob", &r).await;
    for _ in 0..20 {
        c.send_raw(Message::Binary(vec![0u8; 1024].into())).await;
    }
    let mut codes = Vec::new();
    for _ in 0..20 {
        let v = c.recv_type("error").await;
        codes.push(v["code"].as_str().unwrap().to_owned());
    }
    let limited = codes.iter().filter(|c| *c == "rate_limited").count();
    let refused = codes.iter().filter(|c| *c == "bad_request").count();
    assert!(
        limited >= 14,
        "binary frames beyond the burst are rate limited: {codes:?}"
    );
    assert!((1..=6).contains(&refused), "{codes:?}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_1007() {
    let db = fresh_database().await;
    let server = Server::clustered(&db, &[]).await;
    let r = room();
    let mut c = joined(&server, "ivy", &r).await;
    let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    c.send_raw(Message::Frame(frame)).await;
    let (code, reason) = c.expect_close().await;
    assert_eq!(code, 1007, "{reason}");
    assert!(reason.contains("UTF-8"), "{reason}");
    // The instance is unaffected.
    let mut d = joined(&server, "dan", &r).await;
    assert_eq!(d.send_acked(&r, "fine").await, 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn deeply_nested_json_is_a_bad_request() {
    let db = fresh_database().await;
    let server = Server::clustered(&db, &[]).await;
    let r = room();
    let mut c = joined(&server, "nia", &r).await;
    let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    c.send_raw(Message::Text(nested(30_000).into())).await;
    assert_error(&c.recv().await, "bad_request", "malformed JSON");
    let under_a_field = format!(r#"{{"type":"ping","x":{}}}"#, nested(30_000));
    c.send_raw(Message::Text(under_a_field.into())).await;
    assert_error(&c.recv().await, "bad_request", "recursion limit");
    assert_eq!(c.send_acked(&r, "fine").await, 1);
    server.stop().await.unwrap();
}
