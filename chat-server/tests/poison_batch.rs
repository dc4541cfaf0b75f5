//! A row PostgreSQL cannot hold, inside a group commit: it is refused alone, and
//! the rest of its batch (other rooms' messages) commits.

mod support;

use std::sync::Arc;

use chat_server::metrics::Metrics;
use chat_server::protocol::ChatMessage;
use chat_server::store::batcher::{Batcher, Commit, CommitError, Stop};
use chat_server::store::postgres::PostgresStore;
use chat_server::store::{HistoryStore, Range};
use support::{WAIT, fresh_database};
use tokio_util::sync::CancellationToken;

async fn outcome(commit: Commit) -> Result<(), CommitError> {
    tokio::time::timeout(WAIT, commit)
        .await
        .expect("committed in time")
        .expect("the batcher answers")
}

fn msg(room: &str, body: &str) -> ChatMessage {
    ChatMessage {
        room: room.into(),
        seq: 1,
        user: "u".into(),
        body: body.into(),
        ts: 1,
    }
}

#[tokio::test]
async fn a_poison_row_is_refused_alone_and_its_batch_commits() {
    let db = fresh_database().await;
    let store = Arc::new(PostgresStore::connect(&db).await.unwrap());
    let shutdown = CancellationToken::new();
    let (batcher, task) = Batcher::spawn(
        store.clone(),
        (100, 100),
        Arc::new(Metrics::new()),
        None,
        Stop {
            shutdown: shutdown.clone(),
            give_up: CancellationToken::new(),
        },
    );
    // Reserved first, submitted without an await in between: one batch.
    let (s1, s2, s3) = (
        batcher.reserve().await.unwrap(),
        batcher.reserve().await.unwrap(),
        batcher.reserve().await.unwrap(),
    );
    let good = s1.submit(msg("a", "fine"));
    let poison = s2.submit(msg("p", "x\u{0}y"));
    let other = s3.submit(msg("b", "also fine"));

    assert_eq!(outcome(good).await, Ok(()));
    match outcome(poison).await {
        Err(CommitError::Refused(reason)) => assert!(reason.contains("0x00"), "{reason}"),
        other => panic!("the poison row is refused, got {other:?}"),
    }
    assert_eq!(outcome(other).await, Ok(()));
    assert!(
        !batcher.store_down(),
        "a refused row does not mark the store down"
    );

    let all = Range {
        after: Some(0),
        before: None,
        limit: 10,
    };
    assert_eq!(store.range("a", all).await.unwrap(), vec![msg("a", "fine")]);
    assert_eq!(
        store.range("b", all).await.unwrap(),
        vec![msg("b", "also fine")]
    );
    assert!(store.range("p", all).await.unwrap().is_empty());

    // Later batches are unaffected.
    let later = batcher.reserve().await.unwrap().submit(ChatMessage {
        seq: 2,
        ..msg("a", "later")
    });
    assert_eq!(outcome(later).await, Ok(()));
    shutdown.cancel();
    drop(batcher);
    task.await.unwrap();
}
