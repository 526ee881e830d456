//! Counts statements and pings at the wire: a TCP proxy between the pool and Postgres that reads
//! the client's messages. An `Execute` runs a statement, and so does a simple `Query`; a `Sync`
//! with nothing before it is the whole of sqlx's connection ping. Once a connection has prepared
//! its statements, each statement and each ping is one round trip.

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
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    statements: AtomicUsize,
    pings: AtomicUsize,
}

/// Round trips seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub statements: usize,
    pub pings: usize,
}

impl std::ops::Sub for Seen {
    type Output = Self;
    fn sub(self, before: Self) -> Self {
        Self {
            statements: self.statements - before.statements,
            pings: self.pings - before.pings,
        }
    }
}

impl RoundTrips {
    /// Starts a proxy to the server of `upstream` and returns options that connect through it
    /// (without TLS, so the messages can be read).
    pub async fn proxy(upstream: &PgConnectOptions) -> (Self, PgConnectOptions) {
        let target = format!("{}:{}", upstream.get_host(), upstream.get_port());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let counts = Arc::new(Counts::default());
        let counter = Arc::clone(&counts);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                // No Nagle delay added by the proxy itself (the benchmarks time through it).
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                tokio::spawn(pump(client, server, Arc::clone(&counter)));
            }
        });
        let options = upstream
            .clone()
            .host("127.0.0.1")
            .port(port)
            .ssl_mode(PgSslMode::Disable);
        (Self { counts }, options)
    }

    pub fn get(&self) -> Seen {
        Seen {
            statements: self.counts.statements.load(Ordering::SeqCst),
            pings: self.counts.pings.load(Ordering::SeqCst),
        }
    }
}

async fn pump(client: TcpStream, server: TcpStream, counts: Arc<Counts>) {
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
            let (statements, pings) = parser.feed(&buf[..n]);
            counts.statements.fetch_add(statements, Ordering::SeqCst);
            counts.pings.fetch_add(pings, Ordering::SeqCst);
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
    /// Messages since the last `Sync`: none means a bare `Sync`, a ping.
    since_sync: usize,
}

impl Parser {
    /// Returns the (statements, pings) completed in `bytes`.
    fn feed(&mut self, bytes: &[u8]) -> (usize, usize) {
        self.pending.extend_from_slice(bytes);
        let (mut statements, mut pings) = (0, 0);
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
            if self.started {
                match self.pending[0] {
                    b'S' if self.since_sync == 0 => pings += 1,
                    // An Execute runs a statement (a statement's first use on a connection
                    // also sends Parse/Describe/Sync to prepare it: not counted); so does a
                    // simple Query (BEGIN, COMMIT).
                    b'E' | b'Q' => statements += 1,
                    _ => {}
                }
                self.since_sync = match self.pending[0] {
                    b'S' | b'Q' => 0,
                    _ => self.since_sync + 1,
                };
            }
            self.started = true;
            self.pending.drain(..total);
        }
        (statements, pings)
    }
}

/// A TCP route to Postgres whose connections can go silent: once frozen, each connection open
/// at that moment forwards nothing either way and closes nothing, as a half-open connection or
/// a blackholed path does; connections made afterwards go through. Held, every connection
/// keeps what it reads until resumed, as a pooler that queues a client does.
#[derive(Clone)]
pub struct Route {
    open: Arc<std::sync::Mutex<Vec<Arc<std::sync::atomic::AtomicBool>>>>,
    held: Arc<tokio::sync::watch::Sender<bool>>,
    /// Bytes whose sight freezes the connection that carries them, once.
    trigger: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
}

impl Route {
    /// Starts the route and returns options that connect through it.
    pub async fn to(upstream: &PgConnectOptions) -> (Self, PgConnectOptions) {
        let target = format!("{}:{}", upstream.get_host(), upstream.get_port());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let route = Self {
            open: Arc::default(),
            held: Arc::new(tokio::sync::watch::channel(false).0),
            trigger: Arc::default(),
        };
        let open = Arc::clone(&route.open);
        let held = Arc::clone(&route.held);
        let trigger = Arc::clone(&route.trigger);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                let frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
                open.lock().unwrap().push(Arc::clone(&frozen));
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let gate = || Gate {
                    frozen: Arc::clone(&frozen),
                    held: held.subscribe(),
                    trigger: Arc::clone(&trigger),
                };
                tokio::spawn(forward(client_read, server_write, gate()));
                tokio::spawn(forward(server_read, client_write, gate()));
            }
        });
        let options = upstream
            .clone()
            .host("127.0.0.1")
            .port(port)
            .ssl_mode(PgSslMode::Disable);
        (route, options)
    }

    /// Freezes every connection open now.
    pub fn freeze(&self) {
        for frozen in self.open.lock().unwrap().iter() {
            frozen.store(true, Ordering::SeqCst);
        }
    }

    /// Holds what every connection reads, either way, until [`resume`](Self::resume).
    pub fn hold(&self) {
        self.held.send_replace(true);
    }

    pub fn resume(&self) {
        self.held.send_replace(false);
    }

    /// Freezes the first connection that carries `bytes` (in either direction), as it does.
    pub fn freeze_on(&self, bytes: &[u8]) {
        *self.trigger.lock().unwrap() = Some(bytes.to_vec());
    }
}

/// Whether a connection of a [`Route`] may forward.
struct Gate {
    frozen: Arc<std::sync::atomic::AtomicBool>,
    held: tokio::sync::watch::Receiver<bool>,
    trigger: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
}

/// Copies `from` to `to` until either closes; waits while held; holds what it reads, for good,
/// once frozen.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut gate: Gate,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        {
            let mut trigger = gate.trigger.lock().unwrap();
            if trigger
                .as_ref()
                .is_some_and(|t| buf[..n].windows(t.len()).any(|w| w == t.as_slice()))
            {
                *trigger = None;
                gate.frozen.store(true, Ordering::SeqCst);
            }
        }
        if gate.held.wait_for(|held| !held).await.is_err() || gate.frozen.load(Ordering::SeqCst) {
            // Silent from now on, but the sockets stay open.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
