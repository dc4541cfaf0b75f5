//! Ports for the processes a test starts itself (a Redis to kill, a proxy):
//! servers in the test process bind 127.0.0.1:0 and need none.

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}
