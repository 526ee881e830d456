//! Real HTTP over loopback: the router served by `axum::serve` with connect info, and a client
//! that connects from a chosen loopback address (any of 127.0.0.0/8 is this machine), so that
//! per-address rules see many clients.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use axum::{Router, body::Body, http::Request};
use http::header;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;

use super::Reply;

/// Every request of a test is bounded by this; a request that takes longer fails the test.
pub const REQUEST_BOUND: Duration = Duration::from_secs(60);

/// Serves `router` on a fresh port of 127.0.0.1, with the peer address in each request.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

/// The `n`th client address: 127.1.x.y, never 127.0.0.1.
pub fn client(n: u32) -> IpAddr {
    let n = n + 1;
    IpAddr::V4(Ipv4Addr::new(127, 1, (n >> 8) as u8, n as u8))
}

/// Sends `request` to `server` on a new connection from `from`, and reads the whole response.
pub async fn send_from(server: SocketAddr, from: IpAddr, mut request: Request<Body>) -> Reply {
    let exchange = async {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from, 0)).unwrap();
        let stream = socket.connect(server).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        request
            .headers_mut()
            .insert(header::HOST, server.to_string().parse().unwrap());
        let response = sender.send_request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    };
    tokio::time::timeout(REQUEST_BOUND, exchange)
        .await
        .expect("a request took longer than its bound")
}

/// An open Server-Sent Events stream, read as its events arrive.
pub struct EventStream {
    body: axum::body::Body,
    buffer: String,
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
}

/// One event: its name (`message` when none) and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: String,
    pub data: String,
}

/// Opens `path` on `server` as an event stream, from `from`, with `headers`.
pub async fn open_events(
    server: SocketAddr,
    from: IpAddr,
    path: &str,
    headers: &[(http::HeaderName, String)],
) -> EventStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let stream = socket.connect(server).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = Request::get(path)
        .header(header::HOST, server.to_string())
        .header(header::ACCEPT, "text/event-stream");
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = tokio::time::timeout(
        REQUEST_BOUND,
        sender.send_request(request.body(Body::empty()).unwrap()),
    )
    .await
    .expect("the stream did not answer")
    .unwrap();
    let (parts, body) = response.into_parts();
    EventStream {
        body: axum::body::Body::new(body),
        buffer: String::new(),
        status: parts.status,
        headers: parts.headers,
    }
}

impl EventStream {
    /// The next event within `within`: `Some` event, or `None` when the stream closed.
    /// Panics when nothing arrives in time.
    pub async fn next(&mut self, within: Duration) -> Option<Event> {
        tokio::time::timeout(within, self.next_event())
            .await
            .unwrap_or_else(|_| panic!("no event within {within:?}"))
    }

    /// `true` if nothing but comments arrives within `within` (the stream stays open).
    pub async fn quiet_for(&mut self, within: Duration) -> bool {
        tokio::time::timeout(within, self.next_event())
            .await
            .is_err()
    }

    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = "message".to_owned();
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = value.trim_start().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push(value.strip_prefix(' ').unwrap_or(value).to_owned());
                    }
                }
                if data.is_empty() {
                    // A heartbeat comment, a lone retry, or an event without a data line,
                    // which a browser's EventSource never dispatches either.
                    continue;
                }
                return Some(Event {
                    name,
                    data: data.join("\n"),
                });
            }
            let frame = self.body.frame().await?.ok()?;
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }
}
