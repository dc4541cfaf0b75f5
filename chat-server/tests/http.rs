//! The HTTP surface: page, probes, metrics, history and members APIs.

mod support;
use support::Connect;

use serde_json::json;
use support::{Server, TempDir, http_get, http_json, room, seqs};

#[tokio::test]
async fn http_endpoints() {
    let dir = TempDir::new();
    let server = Server::start(&["--sqlite-path", &dir.file("h.db")]).await;
    let addr = server.addr;

    let (status, page) = http_get(addr, "/").await.unwrap();
    assert_eq!(status, 200);
    assert!(
        page.contains("<html") && page.contains("/ws"),
        "the built-in chat page"
    );
    assert_eq!(
        http_get(addr, "/healthz").await.unwrap(),
        (200, "ok".to_owned())
    );
    assert_eq!(
        http_json(addr, "/readyz").await,
        (200, json!({"status":"ready"}))
    );
    assert_eq!(
        http_json(addr, "/actuator/health").await,
        (200, json!({"status":"UP"}))
    );

    let r = room();
    let mut c = server.client(&format!("user=hank&room={r}")).await;
    c.recv_type("joined").await;
    for i in 1..=5 {
        c.send_acked(&r, &format!("h{i}")).await;
    }
    let (status, v) = http_json(addr, &format!("/api/rooms/{r}/messages")).await;
    assert_eq!(status, 200);
    assert_eq!(v["room"], r);
    assert_eq!(seqs(&v), vec![1, 2, 3, 4, 5]);
    assert_eq!(
        v["messages"][0],
        json!({"type":"message","room":r,"seq":1,"user":"hank","body":"h1","ts":v["messages"][0]["ts"]})
    );
    assert_eq!(
        seqs(
            &http_json(addr, &format!("/api/rooms/{r}/messages?limit=2"))
                .await
                .1
        ),
        vec![4, 5]
    );
    assert_eq!(
        seqs(
            &http_json(addr, &format!("/api/rooms/{r}/messages?before=3"))
                .await
                .1
        ),
        vec![1, 2]
    );
    assert_eq!(
        seqs(
            &http_json(addr, &format!("/api/rooms/{r}/messages?after=3"))
                .await
                .1
        ),
        vec![4, 5]
    );
    assert_eq!(
        seqs(
            &http_json(addr, &format!("/api/rooms/{r}/messages?after=1&limit=2"))
                .await
                .1
        ),
        vec![2, 3]
    );
    assert_eq!(
        seqs(
            &http_json(addr, &format!("/api/rooms/{r}/messages?after=1&before=4"))
                .await
                .1
        ),
        vec![2, 3]
    );

    let (status, v) = http_json(addr, "/api/rooms/bad%20room/messages").await;
    assert_eq!((status, &v["code"]), (400, &json!("invalid_room")));
    let (status, v) = http_json(addr, &format!("/api/rooms/{r}/messages?limit=0")).await;
    assert_eq!((status, &v["code"]), (400, &json!("bad_request")));
    let (status, v) = http_json(addr, &format!("/api/rooms/{r}/messages?before=soon")).await;
    assert_eq!((status, &v["code"]), (400, &json!("bad_request")));
    assert_eq!(
        http_json(addr, &format!("/api/rooms/{r}/members")).await,
        (200, json!({"room": r, "members": ["hank"]}))
    );
    let (status, v) = http_json(addr, "/api/rooms/bad%20room/members").await;
    assert_eq!((status, &v["code"]), (400, &json!("invalid_room")));

    let (status, metrics) = http_get(addr, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    for line in [
        "chat_connections 1",
        "chat_connections_opened_total 1",
        "chat_messages_received_total 5",
        "chat_messages_delivered_total 5",
        "chat_persist_latency_seconds_count 5",
        "chat_rooms_local 1",
        "chat_slow_consumer_disconnects_total 0",
        "chat_errors_total{code=\"unavailable\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    let rss = metrics
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .unwrap();
    assert!(rss.parse::<u64>().unwrap() > 0);
    let (status, alias) = http_get(addr, "/actuator/prometheus").await.unwrap();
    assert_eq!(status, 200);
    assert!(alias.contains("chat_messages_received_total 5"));
    server.stop().await.unwrap();
}
