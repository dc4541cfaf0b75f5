//! Two instances sharing Redis and PostgreSQL.

mod support;
use support::Connect;

use serde_json::json;
use sqlx::Connection;
use support::{Server, fresh_database, http_json, room, seqs};

#[tokio::test]
async fn messages_cross_instances_in_seq_order_and_are_persisted_at_ack() {
    let db = fresh_database().await;
    let fast = ["--rate-per-sec", "100000", "--rate-burst", "100000"];
    let a = Server::clustered(&db, &[&fast[..], &["--instance-id", "a"]].concat()).await;
    let b = Server::clustered(&db, &[&fast[..], &["--instance-id", "b"]].concat()).await;
    let r = room();

    let mut on_a = a.client(&format!("user=alice&room={r}")).await;
    assert_eq!(on_a.recv_type("joined").await["members"], json!(["alice"]));
    let mut on_b = b.client(&format!("user=bob&room={r}")).await;
    // Presence is cluster-wide: bob on B sees alice on A, and A hears of bob.
    assert_eq!(
        on_b.recv_type("joined").await["members"],
        json!(["alice", "bob"])
    );
    let p = on_a.recv_type("presence").await;
    assert_eq!(
        p,
        json!({"type":"presence","room":r,"event":"join","user":"bob"})
    );
    let (status, members) = http_json(a.addr, &format!("/api/rooms/{r}/members")).await;
    assert_eq!(status, 200);
    assert_eq!(members, json!({"room": r, "members": ["alice", "bob"]}));

    // Sends from B (pipelined, then all acks) arrive on A in seq order, no gaps.
    let n = 200u64;
    for i in 1..=n {
        on_b.send(json!({"type":"send","room":r,"body":format!("b{i}"),"ref":format!("r{i}")}))
            .await;
    }
    let mut acked = Vec::new();
    while acked.len() < n as usize {
        let v = on_b.recv().await;
        assert_ne!(v["type"], "error", "{v}");
        if v["type"] == "ack" {
            acked.push(v["seq"].as_u64().unwrap());
        }
    }
    for i in 1..=n {
        let m = on_a.recv_type("message").await;
        assert_eq!(m["seq"], i);
        assert_eq!(m["user"], "bob");
        assert_eq!(m["body"], format!("b{i}"));
    }
    // Ack implies persisted: every acked seq is in PostgreSQL now.
    let mut pg = sqlx::PgConnection::connect(&db).await.unwrap();
    let stored: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE room = $1 AND seq = ANY($2)")
            .bind(&r)
            .bind(acked.iter().map(|s| *s as i64).collect::<Vec<_>>())
            .fetch_one(&mut pg)
            .await
            .unwrap();
    assert_eq!(stored, n as i64);

    // History and since-recovery through the other instance.
    let h = on_a
        .request(json!({"type":"history","room":r,"limit":3}))
        .await;
    assert_eq!(seqs(&h), vec![n - 2, n - 1, n]);
    let (_, page) = http_json(
        a.addr,
        &format!("/api/rooms/{r}/messages?after=10&before=14&limit=200"),
    )
    .await;
    assert_eq!(seqs(&page), vec![11, 12, 13]);

    // A client that dropped at seq 150 rejoins on A with since and misses nothing;
    // a message sent meanwhile on B follows at the seam, once.
    let mut back = a.client("user=carol").await;
    back.send(json!({"type":"join","room":r,"since":150})).await;
    assert_eq!(back.recv_type("joined").await["last_seq"], n);
    on_b.send_acked(&r, "live").await;
    for i in 151..=n + 1 {
        let m = back.recv_type("message").await;
        assert_eq!(m["seq"], i);
    }
    let pong = back.request(json!({"type":"ping"})).await;
    assert_eq!(pong, json!({"type":"pong"}));

    // Leave: presence leave is seen on the other instance.
    let left = on_b.request(json!({"type":"leave","room":r})).await;
    assert_eq!(left, json!({"type":"left","room":r}));
    assert_eq!(on_a.recv_type("presence").await["user"], "carol");
    let p = on_a.recv_type("presence").await;
    assert_eq!(
        p,
        json!({"type":"presence","room":r,"event":"leave","user":"bob"})
    );

    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn a_room_first_used_on_one_instance_continues_on_the_other() {
    let db = fresh_database().await;
    let a = Server::clustered(&db, &[]).await;
    let r = room();
    let mut c = a.client(&format!("user=u1&room={r}")).await;
    c.recv_type("joined").await;
    for _ in 0..3 {
        c.send_acked(&r, "x").await;
    }
    a.stop().await.unwrap();
    let b = Server::clustered(&db, &[]).await;
    let mut d = b.client(&format!("user=u2&room={r}")).await;
    assert_eq!(d.recv_type("joined").await["last_seq"], 3);
    assert_eq!(d.send_acked(&r, "y").await, 4);
    b.stop().await.unwrap();
}

#[tokio::test]
async fn presence_ignores_expired_entries_of_dead_instances() {
    let db = fresh_database().await;
    let a = Server::clustered(&db, &[]).await;
    let r = room();
    let mut c = a.client(&format!("user=alive&room={r}")).await;
    c.recv_type("joined").await;
    // An instance that died left its entry behind, with an expiry in the past.
    let client = redis::Client::open(support::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let past = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        - 1;
    let _: i64 = redis::cmd("ZADD")
        .arg(format!("chat:presence:{r}"))
        .arg(past)
        .arg("dead-node|7|ghost")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        http_json(a.addr, &format!("/api/rooms/{r}/members"))
            .await
            .1["members"],
        json!(["alive"])
    );
    a.stop().await.unwrap();
}
