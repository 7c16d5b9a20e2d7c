//! A TCP proxy that loses replies on request, to test what a client sees
//! when a connection drops after its request reached the server.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Bytes read at once in each direction.
const BUFFER: usize = 64 * 1024;

/// A TCP proxy on a free loopback port in front of one server (a
/// [`RedisServer`](crate::RedisServer) or cluster node), forwarding bytes
/// both ways until told to [`drop_next_reply`](Self::drop_next_reply):
/// then it forwards the next chunk a client sends (one request, for a
/// client that sends one at a time) to the server, waits until the server
/// starts answering — so the request was executed — and closes both
/// connections instead of passing the reply on. The client sees its
/// connection drop with the outcome of its request unknown; later
/// connections are forwarded normally.
///
/// It runs on the tokio runtime it was started on and stops when dropped.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use redis_test_server::{FaultProxy, RedisServer};
///
/// let server = RedisServer::start()?;
/// let proxy = FaultProxy::start(server.port()).await?;
/// // Connect a client to proxy.url() instead of server.url(), then:
/// proxy.drop_next_reply();
/// // ... the client's next request is executed, its reply lost.
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    drop_next: AtomicBool,
    connections: AtomicU64,
    dropped: AtomicU64,
}

impl FaultProxy {
    /// Starts a proxy to `127.0.0.1:upstream_port` on a free loopback port.
    ///
    /// # Errors
    ///
    /// When no loopback port can be bound.
    pub async fn start(upstream_port: u16) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            upstream: SocketAddr::from((Ipv4Addr::LOCALHOST, upstream_port)),
            drop_next: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(FaultProxy {
            port,
            shared,
            accept,
        })
    }

    /// The port the proxy listens on (on `127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT` of the proxy (no credentials, no TLS).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Arms the switch: the next chunk any client sends is forwarded, and
    /// that connection and its server connection are closed as soon as the
    /// server starts to reply, the reply unforwarded. Fires once.
    pub fn drop_next_reply(&self) {
        self.shared.drop_next.store(true, Ordering::SeqCst);
    }

    /// Whether the switch is armed and has not fired yet.
    pub fn is_armed(&self) -> bool {
        self.shared.drop_next.load(Ordering::SeqCst)
    }

    /// Client connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Replies dropped by the switch so far.
    pub fn dropped_replies(&self) -> u64 {
        self.shared.dropped.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every
        // connection task.
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut relays = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                shared.connections.fetch_add(1, Ordering::SeqCst);
                relays.spawn(relay(client, Arc::clone(&shared)));
            }
            Some(_) = relays.join_next(), if !relays.is_empty() => {}
        }
    }
}

/// Forwards one client connection until either side closes (or the switch
/// fires); errors just end the connection, as a network failure would.
async fn relay(mut client: TcpStream, shared: Arc<Shared>) {
    let Ok(mut server) = TcpStream::connect(shared.upstream).await else {
        return;
    };
    let (mut from_client, mut to_client) = client.split();
    let (mut from_server, mut to_server) = server.split();
    let mut up = vec![0u8; BUFFER];
    let mut down = vec![0u8; BUFFER];
    let mut cutting = false;
    loop {
        tokio::select! {
            read = from_client.read(&mut up), if !cutting => {
                let Ok(n @ 1..) = read else { return };
                let Some(chunk) = up.get(..n) else { return };
                if to_server.write_all(chunk).await.is_err() {
                    return;
                }
                cutting = shared.drop_next.swap(false, Ordering::SeqCst);
            }
            read = from_server.read(&mut down) => {
                let Ok(n @ 1..) = read else { return };
                if cutting {
                    // The server executed the request: lose its reply and
                    // close both connections (dropped on return).
                    shared.dropped.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                let Some(chunk) = down.get(..n) else { return };
                if to_client.write_all(chunk).await.is_err() {
                    return;
                }
            }
        }
    }
}
