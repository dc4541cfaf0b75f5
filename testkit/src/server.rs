//! A chat-server in the test process: `chat_server::run` on a listener bound to
//! 127.0.0.1:0, configured by the same flags as the binary, stopped through the
//! shutdown future `run` takes.

use std::net::SocketAddr;
use std::time::Duration;

use chat_server::Config;
use clap::Parser;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{WAIT, http_get};

pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Starts a server with these flags (after the program name) on the current
    /// runtime, and waits until `/readyz` answers 200.
    pub async fn start(args: &[&str]) -> Server {
        let config = Config::parse_from(std::iter::once("chat-server").chain(args.iter().copied()));
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let listener =
            chat_server::bind(loopback, config.listen_backlog).expect("bind a loopback port");
        let addr = listener.local_addr().expect("the listener's address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(chat_server::run(listener, config, async move {
            let _ = stopped.await;
        }));
        let server = Server {
            addr,
            stop: Some(stop),
            task,
        };
        server.wait_ready().await;
        server
    }

    /// A server on the shared Redis and `database_url`, plus extra flags.
    pub async fn clustered(database_url: &str, extra: &[&str]) -> Server {
        let redis = crate::redis_url();
        let mut args = vec![
            "--redis-url",
            redis.as_str(),
            "--database-url",
            database_url,
        ];
        args.extend_from_slice(extra);
        Server::start(&args).await
    }

    async fn wait_ready(&self) {
        let ready = async {
            loop {
                if let Ok((200, _)) = http_get(self.addr, "/readyz").await {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        if tokio::time::timeout(WAIT, ready).await.is_err() {
            panic!("chat-server on {} never became ready", self.addr);
        }
    }

    /// The WebSocket URL of its `/ws` endpoint.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Starts the graceful shutdown without waiting for it.
    pub fn trigger_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down gracefully; what `run` returned. (Dropping a `Server` starts
    /// the shutdown too: its stop sender goes away.)
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.trigger_stop();
        tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("chat-server stopped in time")
            .expect("the server task did not panic")
    }
}
