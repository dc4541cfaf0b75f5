//! Close codes: 1001 shutdown, 1008 auth, 1009 frame too large, 1013 connection
//! limit, 4000 slow consumer; and JWT auth that works.

mod support;
use support::Connect;

use serde_json::json;
use support::{Server, TempDir, http_get, room, token};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn jwt_auth_accepts_valid_tokens_and_closes_1008_otherwise() {
    let dir = TempDir::new();
    let db = dir.file("h.db");
    let server = Server::start(&["--sqlite-path", &db, "--jwt-secret", "k3y"]).await;
    let r = room();

    let mut ok = server
        .client(&format!(
            "token={}&user=mallory&room={r}",
            token("k3y", "alice", 60)
        ))
        .await;
    assert_eq!(ok.recv_type("joined").await["user"], "alice");

    let cases = [
        (String::new(), "missing token"),
        (
            format!("token={}", token("k3y", "alice", -60)),
            "invalid token: expired",
        ),
        (
            format!("token={}", token("wrong", "alice", 60)),
            "invalid token: bad signature",
        ),
        ("token=garbage".to_owned(), "invalid token"),
    ];
    for (query, reason) in cases {
        let mut c = server.client(&query).await;
        let (code, got) = c.expect_close().await;
        assert_eq!(code, 1008, "{query}");
        assert!(got.starts_with(reason), "{query}: {got}");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn invalid_user_name_closes_1008() {
    let dir = TempDir::new();
    let server = Server::start(&["--sqlite-path", &dir.file("h.db")]).await;
    let mut c = server.client("user=not%20valid").await;
    assert_eq!(c.expect_close().await, (1008, "invalid user".to_owned()));
    // A missing name becomes a guest.
    let r = room();
    let mut g = server.client(&format!("room={r}")).await;
    assert!(
        g.recv_type("joined").await["user"]
            .as_str()
            .unwrap()
            .starts_with("guest-")
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn oversized_frame_closes_1009() {
    let dir = TempDir::new();
    let server = Server::start(&[
        "--sqlite-path",
        &dir.file("h.db"),
        "--max-frame-bytes",
        "1024",
    ])
    .await;
    let mut c = server.client("user=big").await;
    assert_eq!(c.request(json!({"type":"ping"})).await["type"], "pong");
    c.send_raw(Message::Text(
        format!("{{\"type\":\"ping\",\"pad\":\"{}\"}}", "x".repeat(2000)).into(),
    ))
    .await;
    assert_eq!(c.expect_close().await, (1009, "frame too large".to_owned()));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn connection_limit_closes_1013_and_frees_on_disconnect() {
    let dir = TempDir::new();
    let server =
        Server::start(&["--sqlite-path", &dir.file("h.db"), "--max-connections", "1"]).await;
    let mut first = server.client("user=one").await;
    assert_eq!(first.request(json!({"type":"ping"})).await["type"], "pong");
    let mut second = server.client("user=two").await;
    assert_eq!(
        second.expect_close().await,
        (1013, "server at connection limit".to_owned())
    );
    drop(first);
    // The slot frees once the first session ends (bounded retry, no timing assumed).
    let mut admitted = false;
    for _ in 0..200 {
        let mut c = server.client("user=three").await;
        c.send(json!({"type":"ping"})).await;
        if let Some(Ok(Message::Text(_))) =
            tokio::time::timeout(support::WAIT, futures::StreamExt::next(c.ws_mut()))
                .await
                .unwrap()
        {
            admitted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(admitted);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn slow_consumer_is_closed_4000_and_recovers_with_since() {
    let dir = TempDir::new();
    let server = Server::start(&[
        "--sqlite-path",
        &dir.file("h.db"),
        "--outbound-queue",
        "8",
        "--max-body-bytes",
        "60000",
        "--rate-per-sec",
        "100000",
        "--rate-burst",
        "100000",
    ])
    .await;
    let r = room();
    let mut slow = server.client(&format!("user=slow&room={r}")).await;
    slow.recv_type("joined").await;
    let mut fast = server.client(&format!("user=fast&room={r}")).await;
    fast.recv_type("joined").await;
    // ~25 MB: more than the socket buffers can hide, so the queue overflows.
    // Pipelined three at a time (3 messages + 3 acks fit the sender's own queue),
    // so group commit keeps the fsyncs few.
    let body = "z".repeat(50_000);
    let mut last = 0;
    for round in 0..170 {
        // Stop as soon as the server gave up on the slow client: it waits only a
        // bounded time (5 s) for a peer that reads nothing to take its close frame.
        let (_, metrics) = http_get(server.addr, "/metrics").await.unwrap();
        if metrics.contains("chat_slow_consumer_disconnects_total 1") {
            break;
        }
        for i in 0..3 {
            fast.send(json!({"type":"send","room":r,"body":body,"ref":format!("f{round}-{i}")}))
                .await;
        }
        let mut acks = 0;
        while acks < 3 {
            let v = fast.recv().await;
            assert_ne!(v["type"], "error", "{v}");
            if v["type"] == "ack" {
                last = last.max(v["seq"].as_u64().unwrap());
                acks += 1;
            }
        }
    }
    assert_eq!(
        slow.expect_close().await,
        (4000, "slow consumer".to_owned())
    );
    let (_, metrics) = http_get(server.addr, "/metrics").await.unwrap();
    assert!(
        metrics.contains("chat_slow_consumer_disconnects_total 1"),
        "{metrics}"
    );
    // The rest of the room was unaffected, and the slow client loses nothing.
    let mut again = server.client("user=slow").await;
    again.send(json!({"type":"join","room":r,"since":0})).await;
    again.recv_type("joined").await;
    for seq in 1..=last {
        assert_eq!(again.recv_type("message").await["seq"], seq);
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_1001_going_away() {
    let dir = TempDir::new();
    let mut server = Server::start(&["--sqlite-path", &dir.file("h.db")]).await;
    let r = room();
    let mut c = server.client(&format!("user=u&room={r}")).await;
    c.recv_type("joined").await;
    c.send_acked(&r, "before shutdown").await;
    server.trigger_stop();
    assert_eq!(c.expect_close().await, (1001, "going away".to_owned()));
    server.stop().await.unwrap();
}
