//! Backend outages: a Redis restart (our own redis-server on a free port) and a
//! PostgreSQL outage (the test database refusing connections). While a backend is
//! down, /readyz is 503 with the reason and sends get `unavailable`; afterwards the
//! server reconnects by itself, resubscribes, and nothing acked is lost.

mod support;
use support::Connect;

use std::time::Duration;

use serde_json::json;
use support::{
    Server, allow_connections, free_port, fresh_database, http_json, readyz_until, room, seqs,
    start_redis, try_send,
};

#[tokio::test]
async fn redis_restart_reconnects_resubscribes_and_loses_nothing() {
    let port = free_port();
    let mut redis = start_redis(port).await;
    let redis_url = format!("redis://127.0.0.1:{port}/");
    let db = fresh_database().await;
    let server = Server::start(&[
        "--redis-url",
        &redis_url,
        "--database-url",
        &db,
        "--presence-ttl-secs",
        "3",
    ])
    .await;
    let r = room();
    let mut sender = server.client(&format!("user=s&room={r}")).await;
    sender.recv_type("joined").await;
    let mut watcher = server.client(&format!("user=w&room={r}")).await;
    watcher.recv_type("joined").await;
    for i in 1..=3 {
        assert_eq!(sender.send_acked(&r, &format!("m{i}")).await, i);
    }

    redis.kill().await.unwrap();
    let body = readyz_until(&server, 503).await;
    assert_eq!(body["status"], "not_ready");
    assert!(body["reason"].as_str().unwrap().contains("redis"), "{body}");
    assert_eq!(
        try_send(&mut sender, &r, "while down").await,
        Err("unavailable".into())
    );

    // Redis comes back empty (no persistence): the counter is reseeded from the
    // history, so seqs continue instead of restarting at 1.
    let _redis = start_redis(port).await;
    readyz_until(&server, 200).await;
    let mut seq = Err(String::new());
    for _ in 0..100 {
        seq = try_send(&mut sender, &r, "after restart").await;
        if seq.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seq, Ok(4));
    // The watcher stayed connected and gets the stream without gaps.
    for i in 1..=4 {
        assert_eq!(watcher.recv_type("message").await["seq"], i);
    }
    // Presence comes back with the heartbeat.
    let members = async {
        loop {
            let (_, v) = http_json(server.addr, &format!("/api/rooms/{r}/members")).await;
            if v["members"] == json!(["s", "w"]) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(support::WAIT, members)
        .await
        .expect("presence restored");
    let (_, page) = http_json(server.addr, &format!("/api/rooms/{r}/messages")).await;
    let bodies: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, vec!["m1", "m2", "m3", "after restart"]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn postgres_outage_refuses_sends_then_recovers() {
    let db = fresh_database().await;
    let server = Server::clustered(&db, &[]).await;
    let r = room();
    let mut c = server.client(&format!("user=p&room={r}")).await;
    c.recv_type("joined").await;
    assert_eq!(c.send_acked(&r, "one").await, 1);

    allow_connections(&db, false).await;
    let body = readyz_until(&server, 503).await;
    assert_eq!(body["status"], "not_ready");
    let (status, health) = http_json(server.addr, "/actuator/health").await;
    assert_eq!((status, &health["status"]), (503, &json!("DOWN")));
    // A send accepted before the failure was noticed waits for its commit; once
    // the store is known down, sends are refused at once with `unavailable`.
    let mut pending = std::collections::HashSet::new();
    let mut refused = false;
    for i in 0..200 {
        let reference = format!("down{i}");
        c.send(json!({"type":"send","room":r,"body":"while down","ref":reference}))
            .await;
        pending.insert(reference);
        while let Some(v) = c.recv_within(Duration::from_millis(50)).await {
            if v["type"] == "error" {
                assert_eq!(v["code"], "unavailable", "{v}");
                pending.remove(v["ref"].as_str().unwrap());
                refused = true;
            }
        }
        if refused {
            break;
        }
    }
    assert!(refused, "sends are refused while the store is down");

    allow_connections(&db, true).await;
    readyz_until(&server, 200).await;
    // Everything accepted before the outage was noticed is answered: acked (and
    // then stored) or refused.
    let mut acked = Vec::new();
    while !pending.is_empty() {
        let v = c.recv().await;
        if let Some(reference) = v["ref"].as_str().filter(|r| pending.contains(*r)) {
            pending.remove(reference);
            if v["type"] == "ack" {
                acked.push(v["seq"].as_u64().unwrap());
            }
        }
    }
    let mut seq = Err(String::new());
    for _ in 0..100 {
        seq = try_send(&mut c, &r, "back").await;
        if seq.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seq = seq.expect("sends accepted again");

    let (_, page) = http_json(server.addr, &format!("/api/rooms/{r}/messages?limit=200")).await;
    let stored = seqs(&page);
    assert!(stored.contains(&1) && stored.contains(&seq));
    for s in acked {
        assert!(stored.contains(&s), "acked seq {s} is stored");
    }
    server.stop().await.unwrap();
}
