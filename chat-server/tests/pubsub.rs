//! The Redis pub/sub connection: each room with local members is subscribed
//! once, and a burst of rooms costs a few round trips, not one per room.
//! Counted on Redis itself, with MONITOR.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use support::{Client, Server, WAIT, fresh_database, redis_url, unique};

/// One command as MONITOR showed it: its name and the channels it named.
type Command = (String, Vec<String>);

/// The `(UN)SUBSCRIBE` commands Redis received for channels containing `mark`.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Command>>>);

impl Seen {
    async fn watch(mark: String) -> Seen {
        let client = redis::Client::open(redis_url()).expect("redis url");
        let monitor = client.get_async_monitor().await.expect("MONITOR");
        let seen = Seen::default();
        let sink = seen.clone();
        tokio::spawn(async move {
            let mut lines = monitor.into_on_message::<String>();
            while let Some(line) = lines.next().await {
                // 1700000000.123456 [0 127.0.0.1:5555] "SUBSCRIBE" "chat:room:x" ...
                let Some((_, args)) = line.split_once("] ") else {
                    continue;
                };
                let mut words = args.split(' ').map(|w| w.trim_matches('"').to_owned());
                let Some(command) = words.next() else {
                    continue;
                };
                let channels: Vec<String> = words.filter(|w| w.contains(&mark)).collect();
                if command.ends_with("SUBSCRIBE") && !channels.is_empty() {
                    sink.0.lock().unwrap().push((command, channels));
                }
            }
        });
        seen
    }

    /// Waits (bounded) until `command` has named `n` channels; returns how many
    /// commands it took and every channel named.
    async fn wait_for(&self, command: &str, n: usize) -> (usize, Vec<String>) {
        let counted = || {
            let seen = self.0.lock().unwrap();
            let mine: Vec<_> = seen.iter().filter(|(c, _)| c == command).collect();
            let channels: Vec<String> = mine.iter().flat_map(|(_, ch)| ch.clone()).collect();
            (mine.len(), channels)
        };
        let _ = tokio::time::timeout(WAIT, async {
            while counted().1.len() < n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        counted()
    }
}

#[tokio::test]
async fn a_burst_of_new_rooms_is_subscribed_and_unsubscribed_in_batches() {
    let db = fresh_database().await;
    let server = Server::clustered(&db, &[]).await;
    let mark = unique("burst");
    let seen = Seen::watch(mark.clone()).await;

    // N clients, each first into a room of its own, all connecting at once.
    let n = 64;
    let (addr, mark_ref) = (server.addr, &mark);
    let connects = (0..n).map(|i| async move {
        Client::connect(addr, &format!("user=u{i}&room={mark_ref}-{i}")).await
    });
    let mut clients = join_all(connects).await;
    for c in &mut clients {
        c.recv_type("joined").await;
    }
    let (commands, mut channels) = seen.wait_for("SUBSCRIBE", n).await;
    channels.sort();
    let mut expected: Vec<String> = (0..n).map(|i| format!("chat:room:{mark}-{i}")).collect();
    expected.sort();
    assert_eq!(channels, expected, "every room subscribed exactly once");
    assert!(
        commands <= n / 2,
        "{n} new rooms took {commands} SUBSCRIBE commands: one round trip each"
    );

    // All leave at once: every room unsubscribed once, in few commands.
    drop(clients);
    let (commands, mut channels) = seen.wait_for("UNSUBSCRIBE", n).await;
    channels.sort();
    assert_eq!(channels, expected, "every room unsubscribed exactly once");
    assert!(
        commands <= n / 2,
        "{n} emptied rooms took {commands} UNSUBSCRIBE commands: one round trip each"
    );
    server.stop().await.unwrap();
}
