//! A scripted HTTP/1.1 server: answers each request with the next scripted
//! reply and records what it read.

use super::*;

/// One request as the server read it.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) method: String,
    pub(crate) path: String,
    /// Header names in lower case.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Recorded {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the request body is JSON")
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Body {
    /// Sent with a `Content-Length`.
    Full(Vec<u8>),
    /// Sent with `Transfer-Encoding: chunked`, one chunk at a time.
    Chunks(Vec<Vec<u8>>),
    /// Like `Chunks`, then nothing more while the connection stays open.
    ChunksThenHang(Vec<Vec<u8>>),
    /// Like `Chunks`, then the connection is closed without ending the
    /// body (a connection dropped mid-stream).
    ChunksThenClose(Vec<Vec<u8>>),
    /// Like `Chunks`, then waits (a few seconds at most) for the client to
    /// hang up, counting it in [`Server::hangups`] if it does; else sends
    /// `rest` and ends the body. A client that stops reading after
    /// `chunks` hangs up; one that keeps reading gets `rest`.
    ChunksThenWatch {
        chunks: Vec<Vec<u8>>,
        rest: Vec<Vec<u8>>,
    },
    /// No answer at all while the connection stays open.
    Hang,
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Body,
}

pub(crate) fn sse_text(events: &[&str]) -> Vec<u8> {
    events
        .iter()
        .map(|e| format!("data: {e}\n\n"))
        .collect::<String>()
        .into_bytes()
}

impl Reply {
    pub(crate) fn json(status: u16, body: Value) -> Self {
        Self::raw(status, &body.to_string()).header("content-type", "application/json")
    }

    pub(crate) fn raw(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Body::Full(body.as_bytes().to_vec()),
        }
    }

    pub(crate) fn hang() -> Self {
        Self {
            status: 200,
            headers: Vec::new(),
            body: Body::Hang,
        }
    }

    /// An event stream of `events` (each becomes `data: …\n\n`), cut into
    /// pieces of `piece` bytes wherever that falls (mid-line, mid-character).
    pub(crate) fn sse(events: &[&str], piece: usize) -> Self {
        let text: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
        let chunks = text.as_bytes().chunks(piece).map(<[u8]>::to_vec).collect();
        Self::sse_body(Body::Chunks(chunks))
    }

    /// `events` in one piece, then silence on an open connection.
    pub(crate) fn sse_then_hang(events: &[&str]) -> Self {
        Self::sse_body(Body::ChunksThenHang(vec![sse_text(events)]))
    }

    /// `events` in one piece, then the connection closes mid-body.
    pub(crate) fn sse_then_close(events: &[&str]) -> Self {
        Self::sse_body(Body::ChunksThenClose(vec![sse_text(events)]))
    }

    /// `events`, then the [watch](Body::ChunksThenWatch) for the client
    /// hanging up, then `rest` if it did not.
    pub(crate) fn sse_then_watch(events: &[&str], rest: &[&str]) -> Self {
        Self::sse_body(Body::ChunksThenWatch {
            chunks: vec![sse_text(events)],
            rest: vec![sse_text(rest)],
        })
    }

    pub(crate) fn sse_body(body: Body) -> Self {
        Self {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            body,
        }
    }

    pub(crate) fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

pub(crate) struct Server {
    pub(crate) port: u16,
    pub(crate) requests: Arc<Mutex<Vec<Recorded>>>,
    /// Connections the client closed while a [watch](Body::ChunksThenWatch)
    /// waited.
    hangups: Arc<AtomicUsize>,
    /// Requests answered to the end (or to the client's hanging up).
    served: Arc<AtomicUsize>,
}

impl Server {
    /// Answers the n-th request with `script[n]`, and every request after
    /// the script's end with its last reply.
    pub(crate) async fn start(script: Vec<Reply>) -> Self {
        assert!(!script.is_empty());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(script);
        let hangups = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&requests);
        let served = Arc::new(AtomicUsize::new(0));
        let hung_up = Arc::clone(&hangups);
        let done = Arc::clone(&served);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let script = Arc::clone(&script);
                let seen = Arc::clone(&seen);
                let hung_up = Arc::clone(&hung_up);
                let done = Arc::clone(&done);
                tokio::spawn(async move {
                    // An error answering (the client hung up mid-write)
                    // still ends the request.
                    let read = serve(stream, &script, &seen, &hung_up).await;
                    if !matches!(read, Ok(false)) {
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        Self {
            port,
            requests,
            hangups,
            served,
        }
    }

    pub(crate) fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub(crate) fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// How many times the client hung up while a watch waited, once every
    /// request so far is answered: a watch ends when the client hangs up,
    /// or a few seconds later when it does not. (Waits as long as a reply
    /// that hangs: not for those.)
    pub(crate) async fn hangups(&self) -> usize {
        while self.served.load(Ordering::SeqCst) < self.count() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.hangups.load(Ordering::SeqCst)
    }
}

/// Reads one request from `stream`, records it, and answers it; `true`
/// once a request was read.
pub(crate) async fn serve(
    mut stream: TcpStream,
    script: &[Reply],
    seen: &Mutex<Vec<Recorded>>,
    hangups: &AtomicUsize,
) -> std::io::Result<bool> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut tmp).await?;
        if n == 0 {
            return Ok(false);
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let path = request_line.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut tmp).await?;
        if n == 0 {
            return Ok(false);
        }
        body.extend_from_slice(&tmp[..n]);
    }
    let reply = {
        let mut seen = seen.lock().unwrap();
        seen.push(Recorded {
            method,
            path,
            headers,
            body,
        });
        script[(seen.len() - 1).min(script.len() - 1)].clone()
    };

    let hang = || tokio::time::sleep(Duration::from_secs(60));
    let mut head = format!(
        "HTTP/1.1 {} Scripted\r\nconnection: close\r\n",
        reply.status
    );
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let then_hang = matches!(reply.body, Body::ChunksThenHang(_));
    let then_close = matches!(reply.body, Body::ChunksThenClose(_));
    match reply.body {
        Body::Hang => hang().await,
        Body::Full(bytes) => {
            head.push_str(&format!("content-length: {}\r\n\r\n", bytes.len()));
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&bytes).await?;
        }
        Body::ChunksThenWatch { chunks, rest } => {
            head.push_str("transfer-encoding: chunked\r\n\r\n");
            stream.write_all(head.as_bytes()).await?;
            write_chunks(&mut stream, chunks).await?;
            // The request was read whole and the client sends nothing
            // more: a read ends only when it hangs up.
            let watch = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut tmp));
            if let Ok(Ok(0) | Err(_)) = watch.await {
                hangups.fetch_add(1, Ordering::SeqCst);
                return Ok(true);
            }
            write_chunks(&mut stream, rest).await?;
            stream.write_all(b"0\r\n\r\n").await?;
        }
        Body::Chunks(chunks) | Body::ChunksThenHang(chunks) | Body::ChunksThenClose(chunks) => {
            head.push_str("transfer-encoding: chunked\r\n\r\n");
            stream.write_all(head.as_bytes()).await?;
            write_chunks(&mut stream, chunks).await?;
            if then_hang {
                hang().await;
            }
            if then_close {
                // Dropped without the last chunk: the body never ends.
                return Ok(true);
            }
            stream.write_all(b"0\r\n\r\n").await?;
        }
    }
    stream.flush().await?;
    stream.shutdown().await?;
    Ok(true)
}

/// `chunks` in chunked transfer encoding, one at a time.
async fn write_chunks(stream: &mut TcpStream, chunks: Vec<Vec<u8>>) -> std::io::Result<()> {
    for chunk in chunks {
        stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await?;
        stream.write_all(&chunk).await?;
        stream.write_all(b"\r\n").await?;
        stream.flush().await?;
        // Let the client see the pieces one by one.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}
