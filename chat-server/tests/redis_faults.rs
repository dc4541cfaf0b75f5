//! Redis failing in the ways real ones do: a restart (SIGKILL) that breaks every
//! open connection, a reply lost after the publish script ran, a Redis that hangs
//! (takes commands, never answers), and a counter that went backwards (AOF
//! `everysec`, a failover to a lagging replica).

mod support;
use support::Connect;

use serde_json::json;
use support::{
    Proxy, ProxyMode, Server, free_port, fresh_database, http_json, readyz_until, redis_url, room,
    seqs, start_redis, try_send,
};

fn bodies(page: &serde_json::Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_first_join_and_send_after_a_redis_restart_succeed() {
    let port = free_port();
    let mut redis = start_redis(port).await;
    let redis_url = format!("redis://127.0.0.1:{port}/");
    let db = fresh_database().await;
    let server = Server::start(&["--redis-url", &redis_url, "--database-url", &db]).await;
    let r = room();
    let mut c = server.client(&format!("user=early&room={r}")).await;
    c.recv_type("joined").await;
    assert_eq!(c.send_acked(&r, "before").await, 1);

    redis.kill().await.unwrap(); // SIGKILL
    readyz_until(&server, 503).await;
    let _redis = start_redis(port).await;
    readyz_until(&server, 200).await;

    // Ready means ready: the very first join (presence) and send (publish) work.
    let fresh = room();
    let mut d = server.client("user=late").await;
    let v = d.request(json!({"type":"join","room":fresh})).await;
    assert_eq!(v["type"], "joined", "{v}");
    assert_eq!(v["members"], json!(["late"]), "{v}");
    assert_eq!(try_send(&mut d, &fresh, "first").await, Ok(1));
    assert_eq!(try_send(&mut c, &r, "after").await, Ok(2));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_publish_whose_reply_is_lost_is_still_acked_and_stored() {
    let proxy = Proxy::redis().await;
    let db = fresh_database().await;
    let via_proxy = proxy.redis_url();
    let server = Server::start(&["--redis-url", &via_proxy, "--database-url", &db]).await;
    let r = room();
    let mut c = server.client(&format!("user=lou&room={r}")).await;
    c.recv_type("joined").await;
    assert_eq!(c.send_acked(&r, "one").await, 1);

    // The script runs (seq 2 is taken and published) but its reply is held past
    // the command timeout (2 s); the retry must learn the seq, not lose the message.
    proxy.set(ProxyMode::HoldReplies);
    c.send(json!({"type":"send","room":r,"body":"two","ref":"lost-reply"}))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(3000)).await;
    proxy.set(ProxyMode::Pass);
    let outcome = loop {
        let v = c.recv().await;
        if v["ref"] == "lost-reply" {
            break v;
        }
    };
    assert_eq!(outcome["type"], "ack", "{outcome}");
    assert_eq!(outcome["seq"], 2, "{outcome}");
    assert_eq!(c.send_acked(&r, "three").await, 3);
    let (_, page) = http_json(server.addr, &format!("/api/rooms/{r}/messages")).await;
    assert_eq!(bodies(&page), ["one", "two", "three"]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_join_while_redis_hangs_is_refused_after_the_redis_timeout_then_served() {
    let proxy = Proxy::redis().await;
    let db = fresh_database().await;
    let via_proxy = proxy.redis_url();
    let server = Server::start(&[
        "--redis-url",
        &via_proxy,
        "--database-url",
        &db,
        "--redis-timeout-ms",
        "300",
    ])
    .await;
    let mut c = server.client("user=hal").await;

    // Redis takes the commands and never answers (a hung or paused process):
    // the join is refused with `unavailable`, not left waiting.
    proxy.set(ProxyMode::HoldReplies);
    let r = room();
    let v = c.request(json!({"type":"join","room":r})).await;
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["code"], "unavailable", "{v}");
    assert!(v["message"].as_str().unwrap().contains(&r), "{v}");

    // Redis answers again: the same join, retried as the error says, is served.
    proxy.set(ProxyMode::Pass);
    let joined = async {
        loop {
            let v = c.request(json!({"type":"join","room":r})).await;
            if v["type"] == "joined" {
                return v;
            }
            assert_eq!(v["code"], "unavailable", "{v}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    let v = tokio::time::timeout(support::WAIT, joined)
        .await
        .expect("joined once Redis answers");
    assert_eq!(v["members"], json!(["hal"]), "{v}");
    assert_eq!(try_send(&mut c, &r, "back").await, Ok(1));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_counter_that_went_backwards_is_detected_and_raised() {
    let db = fresh_database().await;
    let a = Server::clustered(&db, &[]).await;
    let b = Server::clustered(&db, &[]).await;
    let r = room();
    let mut sender = a.client(&format!("user=sam&room={r}")).await;
    sender.recv_type("joined").await;
    let mut watcher = b.client(&format!("user=wes&room={r}")).await;
    watcher.recv_type("joined").await;
    for i in 1..=5 {
        assert_eq!(sender.send_acked(&r, &format!("m{i}")).await, i);
    }
    for i in 1..=5 {
        assert_eq!(watcher.recv_type("message").await["seq"], i);
    }

    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let rewind = async |conn: &mut redis::aio::MultiplexedConnection| {
        let _: () = redis::cmd("SET")
            .arg(format!("chat:seq:{r}"))
            .arg(2)
            .query_async(conn)
            .await
            .unwrap();
    };

    // The sender's instance has seen seq 5: the next seq is 6, not a taken 3.
    rewind(&mut conn).await;
    assert_eq!(try_send(&mut sender, &r, "m6").await, Ok(6));
    let v = watcher.recv_type("message").await;
    assert_eq!(
        (v["seq"].clone(), v["body"].clone()),
        (json!(6), json!("m6"))
    );

    // A room first used on an instance after the rewind is checked against the store.
    rewind(&mut conn).await;
    let c = Server::clustered(&db, &[]).await;
    let mut late = c.client(&format!("user=liz&room={r}")).await;
    assert_eq!(late.recv_type("joined").await["last_seq"], 6);
    assert_eq!(try_send(&mut late, &r, "m7").await, Ok(7));
    assert_eq!(watcher.recv_type("message").await["seq"], 7);

    let (_, page) = http_json(a.addr, &format!("/api/rooms/{r}/messages")).await;
    assert_eq!(seqs(&page), (1..=7).collect::<Vec<u64>>());
    assert_eq!(bodies(&page), ["m1", "m2", "m3", "m4", "m5", "m6", "m7"]);
    for s in [a, b, c] {
        s.stop().await.unwrap();
    }
}
