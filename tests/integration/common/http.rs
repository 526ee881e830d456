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
