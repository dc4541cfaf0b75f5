//! With auth on, the JSON API wants the same JWT as the WebSocket.

mod support;
use support::Connect;

use serde_json::Value;
use support::{Server, TempDir, http_get_with, room, token};

async fn get(server: &Server, path: &str, headers: &[&str]) -> (u16, Value) {
    let (status, body) = http_get_with(server.addr, path, headers).await.unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

#[tokio::test]
async fn history_and_members_need_a_valid_token_when_auth_is_on() {
    let dir = TempDir::new();
    let server = Server::start(&["--sqlite-path", &dir.file("h.db"), "--jwt-secret", "k3y"]).await;
    let r = room();
    let good = token("k3y", "alice", 60);
    let mut c = server.client(&format!("token={good}&room={r}")).await;
    c.recv_type("joined").await;
    assert_eq!(c.send_acked(&r, "secret plans").await, 1);

    for path in [
        format!("/api/rooms/{r}/messages"),
        format!("/api/rooms/{r}/members"),
    ] {
        let (status, v) = get(&server, &path, &[]).await;
        assert_eq!(
            (status, v["code"].as_str()),
            (401, Some("unauthorized")),
            "{v}"
        );
        assert_eq!(v["message"], "missing token", "{v}");

        let bad = format!("Authorization: Bearer {}", token("other", "alice", 60));
        let (status, v) = get(&server, &path, &[&bad]).await;
        assert_eq!(status, 401, "{v}");
        assert!(
            v["message"].as_str().unwrap().starts_with("invalid token"),
            "{v}"
        );

        let expired = format!("{path}?token={}", token("k3y", "alice", -60));
        let (status, v) = get(&server, &expired, &[]).await;
        assert_eq!(
            (status, v["message"].as_str()),
            (401, Some("invalid token: expired"))
        );

        let bearer = format!("Authorization: Bearer {good}");
        let (status, v) = get(&server, &path, &[&bearer]).await;
        assert_eq!(status, 200, "{v}");
        let (status, _) = get(&server, &format!("{path}?token={good}"), &[]).await;
        assert_eq!(status, 200);
    }
    let bearer = format!("Authorization: Bearer {good}");
    let (_, v) = get(&server, &format!("/api/rooms/{r}/messages"), &[&bearer]).await;
    assert_eq!(v["messages"][0]["body"], "secret plans");
    // Probes and metrics stay open for kubelet and Prometheus.
    assert_eq!(get(&server, "/readyz", &[]).await.0, 200);
    assert_eq!(get(&server, "/metrics", &[]).await.0, 200);
    server.stop().await.unwrap();
}
