//! One chat-server instance to load: its `ws://` URL and, once resolved, the
//! socket address every client of that instance connects to.
//!
//! The name is resolved once at start-up rather than per client: a DNS lookup
//! per connection would measure the resolver, and a bad host name should fail
//! the run before the first batch, not 500 times.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use url::Url;

use crate::auth::Credential;
use crate::error::LoadError;

#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    url: Url,
}

impl Endpoint {
    /// Value parser for `--url`: `ws://` or `wss://host[:port]/path[?query]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = Url::parse(text).map_err(|e| format!("'{text}' is not a URL: {e}"))?;
        match url.scheme() {
            "ws" | "wss" => {}
            other => {
                return Err(format!(
                    "scheme '{other}' is not ws:// or wss:// (e.g. ws://127.0.0.1:8080/ws)"
                ));
            }
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("'{text}' has no host"));
        }
        Ok(Self { url })
    }

    /// A `wss://` endpoint.
    pub fn is_tls(&self) -> bool {
        self.url.scheme() == "wss"
    }

    pub fn is_loopback(&self) -> bool {
        match self.url.host_str() {
            Some("localhost") => true,
            Some(host) => host
                .trim_matches(|c| c == '[' || c == ']')
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()),
            None => false,
        }
    }

    /// The host:port clients connect to (the first IPv4 address if there is one,
    /// because `--source-ips` binds IPv4 sources).
    pub async fn resolve(&self) -> Result<SocketAddr, LoadError> {
        let host = self.url.host_str().unwrap_or_default();
        let port = self.url.port_or_known_default().unwrap_or(80);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| LoadError::Resolve {
                url: self.to_string(),
                source: e,
            })?
            .collect();
        addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .ok_or_else(|| LoadError::Resolve {
                url: self.to_string(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
            })
    }

    /// The request URL of one connection: the endpoint plus `user` or `token`
    /// and, when the room should be joined by the upgrade itself, `room`.
    pub fn request_url(&self, credential: &Credential, room: Option<&str>) -> String {
        let mut url = self.url.clone();
        {
            let mut query = url.query_pairs_mut();
            let (name, value) = credential.query_pair();
            query.append_pair(name, value);
            if let Some(room) = room {
                query.append_pair("room", room);
            }
        }
        url.into()
    }
}

impl Endpoint {
    /// The request URL of a Socket.IO connection: the endpoint with
    /// `EIO=4&transport=websocket` added unless its query has `EIO` already.
    pub fn engineio_url(&self) -> String {
        let mut url = self.url.clone();
        if !url.query_pairs().any(|(name, _)| name == "EIO") {
            url.query_pairs_mut()
                .append_pair("EIO", "4")
                .append_pair("transport", "websocket");
        }
        url.into()
    }

    /// The HTTP base of the instance for its REST API: `ws` → `http`, `wss` →
    /// `https`, without the query; relative paths resolve next to the
    /// WebSocket path (`ws://h/chat/ws` → `http://h/chat/api/...`).
    pub fn http_base(&self) -> Result<Url, String> {
        let mut url = self.url.clone();
        let scheme = if url.scheme() == "wss" {
            "https"
        } else {
            "http"
        };
        url.set_scheme(scheme)
            .map_err(|()| format!("{} has no HTTP equivalent", self.url))?;
        url.set_query(None);
        Ok(url)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ws_and_wss_only() {
        assert!(!Endpoint::parse("ws://127.0.0.1:8080/ws").unwrap().is_tls());
        assert!(Endpoint::parse("wss://x/ws").unwrap().is_tls());
        assert!(
            Endpoint::parse("http://x/ws")
                .unwrap_err()
                .contains("not ws://")
        );
        assert!(Endpoint::parse("127.0.0.1:8080").is_err());
    }

    #[test]
    fn request_url_keeps_an_existing_query() {
        let e = Endpoint::parse("ws://localhost:9/ws?x=1").unwrap();
        let user = Credential::User("u1".into());
        assert_eq!(
            e.request_url(&user, Some("r1")),
            "ws://localhost:9/ws?x=1&user=u1&room=r1"
        );
        assert_eq!(
            e.request_url(&user, None),
            "ws://localhost:9/ws?x=1&user=u1"
        );
        assert_eq!(
            e.request_url(&Credential::Token("a.b.c".into()), Some("r1")),
            "ws://localhost:9/ws?x=1&token=a.b.c&room=r1"
        );
        assert!(e.is_loopback());
        assert!(
            !Endpoint::parse("ws://example.com/ws")
                .unwrap()
                .is_loopback()
        );
        assert!(Endpoint::parse("ws://[::1]:80/ws").unwrap().is_loopback());
    }

    #[test]
    fn socketio_urls_get_the_engineio_query() {
        let e = Endpoint::parse("ws://h:9/socket.io/").unwrap();
        assert_eq!(
            e.engineio_url(),
            "ws://h:9/socket.io/?EIO=4&transport=websocket"
        );
        let given = "ws://h:9/socket.io/?EIO=4&transport=websocket";
        assert_eq!(Endpoint::parse(given).unwrap().engineio_url(), given);
    }

    #[test]
    fn the_rest_api_sits_next_to_the_websocket_path() {
        let e = Endpoint::parse("ws://localhost:9/chat/ws?x=1").unwrap();
        let api = e.http_base().unwrap().join("api/rooms/r/messages").unwrap();
        assert_eq!(api.as_str(), "http://localhost:9/chat/api/rooms/r/messages");
    }
}
