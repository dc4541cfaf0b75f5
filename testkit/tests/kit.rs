//! The kit itself: what the other crates' tests take for granted.

use chat_testkit::{Server, TempDir, fresh_database, http_get, unique};

#[tokio::test]
async fn an_embedded_server_serves_until_stopped_and_stops_cleanly() {
    let dir = TempDir::new();
    let sqlite = dir.file("history.db");
    let server = Server::start(&["--sqlite-path", &sqlite]).await;
    let addr = server.addr;
    assert_eq!(server.ws_url(), format!("ws://{addr}/ws"));
    let (status, _) = http_get(addr, "/readyz").await.expect("GET /readyz");
    assert_eq!(status, 200);
    server.stop().await.expect("run() returned Ok");
    assert!(
        http_get(addr, "/readyz").await.is_err(),
        "nothing listens on {addr} after stop"
    );
    assert!(
        std::path::Path::new(&sqlite).exists(),
        "history in the scratch dir"
    );
    let path = dir.0.clone();
    drop(dir);
    assert!(!path.exists(), "the scratch directory is removed on drop");
}

#[tokio::test]
async fn each_test_gets_its_own_database_and_names() {
    let (a, b) = (fresh_database().await, fresh_database().await);
    assert_ne!(a, b);
    assert_ne!(unique("room"), unique("room"));
    let server = Server::clustered(&a, &[]).await;
    let (status, body) = http_get(server.addr, "/readyz").await.expect("GET /readyz");
    assert_eq!(status, 200, "{body}");
    server.stop().await.expect("run() returned Ok");
}
