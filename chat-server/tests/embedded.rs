//! The embedded mode: no Redis, no PostgreSQL; in-process broker and SQLite.

mod support;
use support::Connect;

use serde_json::json;
use support::{Server, TempDir, http_json, room, seqs};

#[tokio::test]
async fn embedded_mode_chats_persists_and_recovers() {
    let dir = TempDir::new();
    let db = dir.file("history.db");
    let server = Server::start(&["--sqlite-path", &db]).await;
    let r = room();

    let mut alice = server.client(&format!("user=alice&room={r}")).await;
    let joined = alice.recv_type("joined").await;
    assert_eq!(joined["last_seq"], 0);
    assert_eq!(joined["members"], json!(["alice"]));

    let mut bob = server.client("user=bob").await;
    let joined = bob.join(&r).await;
    assert_eq!(joined["members"], json!(["alice", "bob"]));
    let p = alice.recv_type("presence").await;
    assert_eq!(
        p,
        json!({"type":"presence","room":r,"event":"join","user":"bob"})
    );

    for i in 1..=5u64 {
        assert_eq!(alice.send_acked(&r, &format!("m{i}")).await, i);
    }
    for i in 1..=5u64 {
        let m = bob.recv_type("message").await;
        assert_eq!(m["seq"], i);
        assert_eq!(m["body"], format!("m{i}"));
        assert_eq!(m["user"], "alice");
    }
    let h = bob
        .request(json!({"type":"history","room":r,"before":4,"limit":2}))
        .await;
    assert_eq!(seqs(&h), vec![2, 3]);
    assert_eq!(h["messages"][0]["type"], "message");

    // Restart on the same file: history survives and seqs continue.
    drop(alice);
    drop(bob);
    server.stop().await.unwrap();
    let server = Server::start(&["--sqlite-path", &db]).await;
    let mut carol = server.client("user=carol").await;
    carol.send(json!({"type":"join","room":r,"since":2})).await;
    let joined = carol.recv_type("joined").await;
    assert_eq!(joined["last_seq"], 5);
    for i in 3..=5u64 {
        assert_eq!(carol.recv_type("message").await["seq"], i);
    }
    assert_eq!(carol.send_acked(&r, "after restart").await, 6);
    let (status, body) = http_json(server.addr, &format!("/api/rooms/{r}/messages?after=4")).await;
    assert_eq!(status, 200);
    let bodies: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, vec!["m5", "after restart"]);
    server.stop().await.unwrap();
}
