//! Every error code: bad input gets an `error` frame and the connection stays open.
//! (`unavailable` is covered where a backend goes down: tests/redis_restart.rs.)

mod support;
use support::Connect;

use serde_json::{Value, json};
use support::{Server, TempDir, room};
use tokio_tungstenite::tungstenite::Message;

fn assert_error(v: &Value, code: &str, reference: Option<&str>) {
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    match reference {
        Some(r) => assert_eq!(v["ref"], r, "{v}"),
        None => assert!(v.get("ref").is_none(), "{v}"),
    }
}

#[tokio::test]
async fn every_input_error_gets_its_code_and_the_connection_stays_open() {
    let dir = TempDir::new();
    let db = dir.file("h.db");
    let server = Server::start(&["--sqlite-path", &db, "--max-rooms-per-connection", "2"]).await;
    let r = room();
    let mut c = server.client("user=erin").await;

    c.send_raw(Message::Text("{not json".into())).await;
    assert_error(&c.recv().await, "bad_request", None);
    let v = c.request(json!({"type":"shout","ref":"x1"})).await;
    assert_error(&v, "bad_request", Some("x1"));
    let v = c.request(json!({"type":"send","room":r,"ref":"x2"})).await;
    assert_error(&v, "bad_request", Some("x2"));
    c.send_raw(Message::Text("[1,2]".into())).await;
    assert_error(&c.recv().await, "bad_request", None);
    c.send_raw(Message::Binary(vec![1u8, 2, 3].into())).await;
    assert_error(&c.recv().await, "bad_request", None);
    for limit in [0, 201] {
        let v = c
            .request(json!({"type":"history","room":r,"limit":limit}))
            .await;
        assert_error(&v, "bad_request", None);
    }

    let v = c.request(json!({"type":"join","room":"no spaces"})).await;
    assert_error(&v, "invalid_room", None);
    let v = c
        .request(json!({"type":"send","room":"x".repeat(65),"body":"b","ref":"x3"}))
        .await;
    assert_error(&v, "invalid_room", Some("x3"));

    let v = c
        .request(json!({"type":"send","room":r,"body":"b","ref":"x4"}))
        .await;
    assert_error(&v, "not_member", Some("x4"));
    let v = c.request(json!({"type":"leave","room":r})).await;
    assert_error(&v, "not_member", None);

    c.join(&r).await;
    let v = c
        .request(json!({"type":"send","room":r,"body":"é".repeat(2049),"ref":"x5"}))
        .await;
    assert_error(&v, "too_large", Some("x5"));
    // Exactly the limit is fine.
    c.send_acked(&r, &"a".repeat(4096)).await;

    c.join(&room()).await;
    let v = c.request(json!({"type":"join","room":room()})).await;
    assert_error(&v, "too_many_rooms", None);

    assert_eq!(
        c.request(json!({"type":"ping"})).await,
        json!({"type":"pong"})
    );
    let (_, metrics) = support::http_get(server.addr, "/metrics").await.unwrap();
    assert!(
        metrics.contains("chat_errors_total{code=\"bad_request\"} 7"),
        "{metrics}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn frames_beyond_the_rate_are_dropped_with_rate_limited() {
    let dir = TempDir::new();
    let db = dir.file("h.db");
    let server = Server::start(&[
        "--sqlite-path",
        &db,
        "--rate-per-sec",
        "1",
        "--rate-burst",
        "3",
    ])
    .await;
    let r = room();
    let mut c = server.client(&format!("user=fast&room={r}")).await;
    c.recv_type("joined").await;
    for i in 0..10 {
        c.send(json!({"type":"send","room":r,"body":"b","ref":format!("q{i}")}))
            .await;
    }
    let mut limited = 0;
    let mut answered = 0;
    let mut acked = 0;
    while answered < 10 {
        let v = c.recv().await;
        match v["type"].as_str() {
            Some("ack") => {
                acked += 1;
                answered += 1;
            }
            Some("error") => {
                assert_eq!(v["code"], "rate_limited", "{v}");
                // Dropped unread: its ref is not known.
                assert!(v.get("ref").is_none(), "{v}");
                limited += 1;
                answered += 1;
            }
            _ => {}
        }
    }
    assert!(
        limited >= 1,
        "10 frames against a burst of 3 must be limited"
    );
    assert_eq!(acked + limited, 10);
    server.stop().await.unwrap();
}
