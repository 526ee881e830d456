//! Counts database round trips at the wire: a TCP proxy between the pool and Postgres that
//! counts the client's `Sync` messages (the end of every extended-protocol exchange, and the
//! whole of sqlx's connection ping) and simple `Query` messages. Each is one round trip.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use sqlx::postgres::{PgConnectOptions, PgSslMode};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

#[derive(Clone)]
pub struct RoundTrips {
    count: Arc<AtomicUsize>,
}

impl RoundTrips {
    /// Starts a proxy to the server of `upstream` and returns options that connect through it
    /// (without TLS, so the messages can be read).
    pub async fn proxy(upstream: &PgConnectOptions) -> (Self, PgConnectOptions) {
        let target = format!("{}:{}", upstream.get_host(), upstream.get_port());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let count = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&count);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                tokio::spawn(pump(client, server, Arc::clone(&counter)));
            }
        });
        let options = upstream
            .clone()
            .host("127.0.0.1")
            .port(port)
            .ssl_mode(PgSslMode::Disable);
        (Self { count }, options)
    }

    pub fn get(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

async fn pump(client: TcpStream, server: TcpStream, count: Arc<AtomicUsize>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async move {
        let mut parser = Parser::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            count.fetch_add(parser.feed(&buf[..n]), Ordering::SeqCst);
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let downstream = async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upstream, downstream);
}

/// Splits the client's byte stream into protocol messages. The first message (startup) has no
/// type byte; every later one is a type byte and a 4-byte length that counts itself.
#[derive(Default)]
struct Parser {
    started: bool,
    pending: Vec<u8>,
}

impl Parser {
    fn feed(&mut self, bytes: &[u8]) -> usize {
        self.pending.extend_from_slice(bytes);
        let mut round_trips = 0;
        loop {
            let header = if self.started { 5 } else { 4 };
            if self.pending.len() < header {
                break;
            }
            let at = header - 4;
            let len = u32::from_be_bytes(self.pending[at..at + 4].try_into().unwrap()) as usize;
            let total = at + len;
            if self.pending.len() < total {
                break;
            }
            if self.started && matches!(self.pending[0], b'S' | b'Q') {
                round_trips += 1;
            }
            self.started = true;
            self.pending.drain(..total);
        }
        round_trips
    }
}
