//! Rebalancing (`--rebalance`): two instances on real Redis, every member of a
//! room connected to instance A, B idle but for the sender. A is far above the
//! mean, so it closes some members with 4001; each of them reconnects to B (as a
//! load balancer would send it) and rejoins with `since`. The members send too,
//! one message at a time. The audit: every member ends up with every seq exactly
//! once, in order, and no member was moved before the ack of a message of its
//! that the room saw.

mod support;
use support::Connect;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use support::{Client, Server, WAIT, fresh_database, http_get, room};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

const MEMBERS: usize = 12;
/// Members A must shed at least: with the sender on B there are 13 connections,
/// and A stops once it is within mean × 1.2 = 7.8, so it keeps at most 7. At most
/// 3 go per interval (`--rebalance-max-closes`), so this takes two intervals.
const MOVES: usize = 5;
/// Messages sent after the last rebalanced member is back, so the live path
/// after the rejoin is audited too.
const AFTER: u64 = 10;

/// What one member saw.
#[derive(Default)]
struct Seen {
    seqs: Vec<u64>,
    /// Bodies of the room's messages.
    bodies: HashSet<String>,
    /// Close codes and reasons it was closed with (then it reconnected).
    closes: Vec<(u16, String)>,
    /// Its own messages it had sent and not yet seen acked when it was closed.
    unacked_at_close: Vec<String>,
}

/// Counts of members closed with 4001 and of those back in the room.
#[derive(Default)]
struct Moves {
    closed: AtomicUsize,
    rejoined: AtomicUsize,
}

/// One member: joins on `servers[0]`, and on a 4001 close reconnects to the
/// other server with `since` = the last seq it saw. Until the sender announces
/// its last seq, it answers each of the sender's messages with one of its own
/// when its previous one is acked. Returns once it has seen the announced seq
/// and has no send outstanding.
async fn member(
    servers: [std::net::SocketAddr; 2],
    name: String,
    room: String,
    mut last_seq: watch::Receiver<u64>,
    moves: Arc<Moves>,
) -> Seen {
    let mut seen = Seen::default();
    let mut on = 0;
    let mut sent = 0;
    let mut pending: Option<String> = None;
    loop {
        let mut c = Client::connect(servers[on], &format!("user={name}")).await;
        // `since` 0 on the first join too: the sender may have started already.
        let since = seen.seqs.last().copied().unwrap_or(0);
        c.send(json!({"type": "join", "room": room, "since": since}))
            .await;
        loop {
            let last = *last_seq.borrow();
            if last > 0 && seen.seqs.last() >= Some(&last) && pending.is_none() {
                return seen;
            }
            tokio::select! {
                // The sender gone without announcing: the test failed already.
                changed = last_seq.changed() => if changed.is_err() { return seen },
                msg = c.ws_mut().next() => match msg {
                    Some(Ok(Message::Text(text))) => {
                        let v: Value = serde_json::from_str(&text).expect("frame is JSON");
                        match v["type"].as_str() {
                            Some("joined") if !seen.closes.is_empty() => {
                                moves.rejoined.fetch_add(1, Ordering::SeqCst);
                            }
                            Some("message") => {
                                seen.seqs.push(v["seq"].as_u64().expect("seq"));
                                seen.bodies.insert(v["body"].as_str().expect("body").to_owned());
                                if v["user"] == "sender" && pending.is_none() && *last_seq.borrow() == 0 {
                                    sent += 1;
                                    let body = format!("{name}-{sent}");
                                    c.send(json!({"type": "send", "room": room, "body": body, "ref": body})).await;
                                    pending = Some(body);
                                }
                            }
                            Some("ack") => {
                                assert_eq!(v["ref"].as_str(), pending.as_deref(), "{name}: {v}");
                                pending = None;
                            }
                            Some("error") => panic!("{name}: {v}"),
                            _ => {}
                        }
                    }
                    Some(Ok(Message::Close(Some(frame)))) => {
                        let code = u16::from(frame.code);
                        seen.closes.push((code, frame.reason.to_string()));
                        assert_eq!(code, 4001, "{name} closed with {code} {}", frame.reason);
                        moves.closed.fetch_add(1, Ordering::SeqCst);
                        seen.unacked_at_close.extend(pending.take());
                        // Finish the closing handshake, then go elsewhere.
                        while let Some(Ok(_)) = c.ws_mut().next().await {}
                        on = 1 - on;
                        break;
                    }
                    Some(Ok(_)) => {}
                    other => panic!("{name}: connection ended without a close frame: {other:?}"),
                },
            }
        }
    }
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_above_the_mean_sheds_members_who_rejoin_elsewhere_and_lose_nothing() {
    let db = fresh_database().await;
    let flags = [
        "--rebalance",
        "--rebalance-interval-secs",
        "1",
        "--rebalance-tolerance",
        "0.2",
        "--rebalance-max-closes",
        "3",
        "--rate-per-sec",
        "100000",
        "--rate-burst",
        "100000",
    ];
    let a = Server::clustered(&db, &[&flags[..], &["--instance-id", "a"]].concat()).await;
    let b = Server::clustered(&db, &[&flags[..], &["--instance-id", "b"]].concat()).await;
    let r = room();

    // The sender is on B and joins first, so it is in the room before anyone.
    let mut sender = b.client("user=sender").await;
    sender.join(&r).await;
    let (announce, last_seq) = watch::channel(0u64);
    let moves = Arc::new(Moves::default());
    let members: Vec<_> = (0..MEMBERS)
        .map(|i| {
            tokio::spawn(member(
                [a.addr, b.addr],
                format!("m{i}"),
                r.clone(),
                last_seq.clone(),
                moves.clone(),
            ))
        })
        .collect();

    // Send until rebalancing has moved MOVES members and every one of them is back,
    // then AFTER more. The bound only keeps a broken server from hanging the test.
    let mut seq = 0;
    let mut after = 0;
    let sending = async {
        while after < AFTER {
            seq = sender.send_acked(&r, &format!("m{seq}")).await;
            let closed = moves.closed.load(Ordering::SeqCst);
            if closed >= MOVES && moves.rejoined.load(Ordering::SeqCst) == closed {
                after += 1;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let sent = tokio::time::timeout(WAIT * 2, sending).await;
    assert!(
        sent.is_ok(),
        "not {MOVES} members rebalanced and back within the bound: {} closed, {} rejoined",
        moves.closed.load(Ordering::SeqCst),
        moves.rejoined.load(Ordering::SeqCst)
    );
    announce.send(seq).unwrap();

    let mut closes = 0;
    let mut everyone = Vec::new();
    for (i, m) in members.into_iter().enumerate() {
        let seen = tokio::time::timeout(WAIT, m)
            .await
            .unwrap_or_else(|_| panic!("m{i} did not see seq {seq} in time"))
            .expect("member task");
        let last = *seen.seqs.last().expect("m{i} saw messages");
        assert!(last >= seq, "m{i} stopped at seq {last} < {seq}");
        assert_eq!(
            seen.seqs,
            (1..=last).collect::<Vec<_>>(),
            "m{i} (closed {:?}) lost or repeated messages",
            seen.closes
        );
        for (code, reason) in &seen.closes {
            assert_eq!((*code, reason.as_str()), (4001, "rebalance"));
        }
        closes += seen.closes.len() as u64;
        everyone.push(seen);
    }
    // A member is moved only after the acks of the sends the server took from
    // it: a message of its that the room saw was acked before the close.
    for seen in &everyone {
        for body in &seen.unacked_at_close {
            let published = everyone.iter().any(|s| s.bodies.contains(body));
            assert!(
                !published,
                "{body} was delivered, but its sender was moved before its ack"
            );
        }
    }
    assert!(closes >= MOVES as u64, "{closes} members closed with 4001");
    // Only A was above the mean; the metric counts exactly the closes the members saw.
    let (_, on_a) = http_get(a.addr, "/metrics").await.unwrap();
    let (_, on_b) = http_get(b.addr, "/metrics").await.unwrap();
    assert_eq!(metric(&on_a, "chat_rebalance_closes_total"), closes);
    assert_eq!(metric(&on_b, "chat_rebalance_closes_total"), 0);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn rebalancing_without_redis_is_refused_with_the_reason() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = <chat_server::Config as clap::Parser>::parse_from(["chat-server", "--rebalance"]);
    let err = chat_server::run(listener, config, async {})
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "--rebalance needs --redis-url (there is no cluster without it)"
    );
}
