//! The history store failing or crawling while members need to read a gap from
//! it: a slow commit must never be both skipped by a reader and acked to its
//! sender, and a gap that cannot be read is retried, never skipped.

mod support;
use support::Connect;

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Connection;
use support::{
    Client, Proxy, ProxyMode, Server, allow_connections, fresh_database, http_json, room,
};

/// Collects frames until `done` says so; returns them.
async fn frames_until(c: &mut Client, mut done: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    while !done(&seen) {
        seen.push(c.recv().await);
    }
    seen
}

/// The next `message` of `room` past `after` (an echo of an earlier send may
/// still be on its way: a message and its ack travel separate paths).
async fn next_message(c: &mut Client, room: &str, after: u64) -> Value {
    loop {
        let v = c.recv_type("message").await;
        if v["room"] == room && v["seq"].as_u64().unwrap() > after {
            return v;
        }
    }
}

fn message_seqs(frames: &[Value], room: &str) -> Vec<u64> {
    frames
        .iter()
        .filter(|v| v["type"] == "message" && v["room"] == room)
        .map(|v| v["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_commit_slower_than_the_gap_wait_is_never_acked_and_skipped() {
    let db = fresh_database().await;
    let server = Server::clustered(&db, &["--gap-wait-ms", "300"]).await;
    let r = room();
    let mut sender = server.client(&format!("user=sid&room={r}")).await;
    sender.recv_type("joined").await;
    assert_eq!(sender.send_acked(&r, "one").await, 1);

    // Hold every insert into the history behind a table lock; reads go on.
    let mut locker = sqlx::PgConnection::connect(&db).await.unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE messages IN EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    sender
        .send(json!({"type":"send","room":r,"body":"two","ref":"slow"}))
        .await;
    assert_eq!(next_message(&mut sender, &r, 1).await["seq"], 2); // published, not committed

    // A member catching up from seq 1 meets the uncommitted seq 2 and waits for
    // it longer than the gap wait.
    let mut reader = server.client("user=rae").await;
    reader.send(json!({"type":"join","room":r,"since":1})).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();

    let outcome = frames_until(&mut sender, |f| f.iter().any(|v| v["ref"] == "slow")).await;
    let acked = outcome
        .iter()
        .any(|v| v["ref"] == "slow" && v["type"] == "ack");
    // Whatever won the race, the reader's stream and the ack agree; then it goes on.
    assert_eq!(sender.send_acked(&r, "three").await, 3);
    let got = frames_until(&mut reader, |f| message_seqs(f, &r).contains(&3)).await;
    let seen = message_seqs(&got, &r);
    if acked {
        assert_eq!(seen, [2, 3], "an acked message reaches the reader");
    } else {
        assert_eq!(seen, [3], "a message given up is refused, not acked");
    }
    let (_, page) = http_json(server.addr, &format!("/api/rooms/{r}/messages")).await;
    let stored: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(stored.contains(&2), acked, "{page}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_gap_that_cannot_be_read_is_retried_not_skipped() {
    let proxy = Proxy::redis().await;
    let db = fresh_database().await;
    // The watcher's instance reaches Redis through the proxy, the sender's directly.
    let via_proxy = proxy.redis_url();
    let watched = Server::start(&["--redis-url", &via_proxy, "--database-url", &db]).await;
    let sending = Server::clustered(&db, &[]).await;
    let r = room();
    let mut watcher = watched.client(&format!("user=wyn&room={r}")).await;
    watcher.recv_type("joined").await;
    let mut sender = sending.client(&format!("user=sol&room={r}")).await;
    sender.recv_type("joined").await;
    assert_eq!(sender.send_acked(&r, "one").await, 1);
    assert_eq!(watcher.recv_type("message").await["seq"], 1);

    // The watcher's instance loses Redis (and so misses seq 2 live) while the
    // store is unreachable too, so the gap cannot be filled when Redis is back.
    proxy.set(ProxyMode::Cut);
    allow_connections(&db, false).await;
    sender
        .send(json!({"type":"send","room":r,"body":"two","ref":"gap"}))
        .await;
    assert_eq!(next_message(&mut sender, &r, 1).await["seq"], 2);
    proxy.set(ProxyMode::Pass);
    support::readyz_until(&watched, 503).await; // store down; Redis reconnecting
    tokio::time::sleep(Duration::from_millis(1500)).await; // a failed fill, at least
    allow_connections(&db, true).await;

    let ack = frames_until(&mut sender, |f| f.iter().any(|v| v["ref"] == "gap")).await;
    assert!(
        ack.iter().any(|v| v["ref"] == "gap" && v["type"] == "ack"),
        "{ack:?}"
    );
    let v = watcher.recv_type("message").await;
    assert_eq!(
        (v["seq"].clone(), v["body"].clone()),
        (json!(2), json!("two"))
    );
    assert_eq!(sender.send_acked(&r, "three").await, 3);
    assert_eq!(watcher.recv_type("message").await["seq"], 3);
    watched.stop().await.unwrap();
    sending.stop().await.unwrap();
}

#[tokio::test]
async fn writes_pending_when_the_store_stays_down_through_shutdown_are_stored_later() {
    let db = fresh_database().await;
    let mut first = Server::clustered(&db, &["--shutdown-grace-secs", "4"]).await;
    let r = room();
    let mut sender = first.client(&format!("user=sam&room={r}")).await;
    sender.recv_type("joined").await;
    assert_eq!(sender.send_acked(&r, "one").await, 1);

    // The store goes away: the next message is published (members see it live)
    // but cannot be committed, and stays pending through the whole grace period.
    allow_connections(&db, false).await;
    sender
        .send(json!({"type":"send","room":r,"body":"two","ref":"pending"}))
        .await;
    assert_eq!(next_message(&mut sender, &r, 1).await["body"], "two");
    support::readyz_until(&first, 503).await;
    first.trigger_stop();
    let (code, _) = sender.expect_close().await;
    assert_eq!(code, 1001);
    first.stop().await.unwrap();

    // Once the store is back, another instance stores what the first one held.
    allow_connections(&db, true).await;
    let second = Server::clustered(&db, &[]).await;
    let stored = async {
        loop {
            let (_, page) = http_json(second.addr, &format!("/api/rooms/{r}/messages")).await;
            let bodies: Vec<String> = page["messages"]
                .as_array()
                .map(|ms| {
                    ms.iter()
                        .map(|m| m["body"].as_str().unwrap().to_owned())
                        .collect()
                })
                .unwrap_or_default();
            if bodies.len() >= 2 {
                return bodies;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let bodies = tokio::time::timeout(Duration::from_secs(20), stored)
        .await
        .expect("the pending message was stored by the second instance");
    assert_eq!(bodies, ["one", "two"]);
    second.stop().await.unwrap();
}
