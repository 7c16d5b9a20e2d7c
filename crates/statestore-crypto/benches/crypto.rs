//! What the layer costs, and what compression saves.
//!
//! ```text
//! cargo bench -p statestore-crypto --bench crypto
//! ```
//!
//! - `crypto/turn(memory)` and `crypto/turn(redis)`: one pipeline-style turn
//!   (`load_recent_with(20)` + an `Expect::Version` append of two 1 KB
//!   messages) on the plain store and through the layer.
//! - `crypto/seal`, `crypto/open`: MB/s of sealing and opening the bodies
//!   of a realistic conversation mix (user 300 B, assistant 1.2 KB, every
//!   third turn a tool call with a 3 KB JSON result).
//! - `crypto/codec`: zstd levels against lz4_flex (pure Rust) on the same
//!   mix, compressing each body alone as the layer does; the sizes are
//!   printed as `bench-metric:` lines.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::cast_possible_truncation,
    clippy::indexing_slicing,
    reason = "benchmark code"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use redis_test_server::RedisServer;
use statestore_core::{Append, Expect, IdempotencyKey, Message, SessionId, Store, ToolCall};
use statestore_crypto::{__bench, Compression, Encrypted, Key, KeyRing};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn ring() -> KeyRing {
    KeyRing::new(Key::from_bytes("bench", &[7; 32]).unwrap())
}

/// Deterministic English-like text: words drawn with a skewed frequency
/// from a small vocabulary, in sentences, as chat text is.
struct Words(u64);

const VOCABULARY: &[&str] = &[
    "the",
    "to",
    "and",
    "of",
    "a",
    "in",
    "is",
    "that",
    "for",
    "it",
    "you",
    "with",
    "on",
    "this",
    "as",
    "be",
    "are",
    "can",
    "your",
    "or",
    "if",
    "will",
    "not",
    "use",
    "data",
    "function",
    "value",
    "request",
    "user",
    "file",
    "error",
    "return",
    "should",
    "when",
    "we",
    "have",
    "from",
    "by",
    "an",
    "which",
    "example",
    "time",
    "how",
    "model",
    "code",
    "each",
    "would",
    "more",
    "also",
    "because",
    "first",
    "then",
    "configuration",
    "server",
    "response",
    "string",
    "make",
    "sure",
    "need",
    "result",
    "test",
    "case",
    "any",
    "new",
    "there",
    "here",
    "some",
    "like",
    "what",
    "their",
    "other",
    "into",
    "after",
    "before",
    "only",
    "these",
    "so",
    "just",
    "database",
    "query",
    "field",
    "option",
    "default",
    "performance",
    "memory",
    "session",
    "connection",
    "timeout",
    "retry",
    "key",
    "list",
    "call",
    "tool",
    "output",
    "input",
    "line",
    "step",
    "change",
    "version",
    "update",
    "check",
    "run",
    "build",
    "install",
    "package",
    "because",
    "instead",
    "however",
    "therefore",
    "simple",
    "quickly",
    "carefully",
    "Paris",
    "Alice",
    "weather",
    "temperature",
    "account",
    "invoice",
    "payment",
    "schedule",
    "meeting",
];

impl Words {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn word(&mut self) -> &'static str {
        // Skewed: low indexes (common words) far more often.
        let r = (self.next() % 1000) as f64 / 1000.0;
        VOCABULARY[((r * r) * VOCABULARY.len() as f64) as usize]
    }

    fn text(&mut self, bytes: usize) -> String {
        let mut out = String::with_capacity(bytes + 64);
        while out.len() < bytes {
            let n = 6 + self.next() % 14;
            let mut sentence = String::new();
            for i in 0..n {
                let w = self.word();
                if i == 0 {
                    let mut c = w.chars();
                    if let Some(f) = c.next() {
                        sentence.extend(f.to_uppercase());
                        sentence.push_str(c.as_str());
                    }
                } else {
                    sentence.push(' ');
                    sentence.push_str(w);
                }
            }
            sentence.push_str(if self.next().is_multiple_of(5) {
                "? "
            } else {
                ". "
            });
            out.push_str(&sentence);
        }
        out.truncate(bytes);
        out
    }

    /// A ~3 KB tool result: search hits as JSON.
    fn tool_result(&mut self) -> String {
        let mut hits = Vec::new();
        let mut len = 0;
        while len < 3000 {
            let hit = serde_json::json!({
                "title": self.text(40),
                "url": format!("https://docs.example.com/{}/{}-{}", self.word(), self.word(), self.next() % 10_000),
                "snippet": self.text(160),
                "score": (self.next() % 1000) as f64 / 1000.0,
                "updated": format!("2025-0{}-{:02}", 1 + self.next() % 9, 1 + self.next() % 28),
            });
            len += hit.to_string().len();
            hits.push(hit);
        }
        serde_json::json!({ "query": self.text(30), "results": hits }).to_string()
    }
}

/// The realistic mix: 30 turns; user 300 B, assistant 1.2 KB, every third
/// turn a tool call (arguments ~60 B) and its 3 KB JSON result.
fn conversation() -> Vec<Message> {
    let mut words = Words(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::new();
    for turn in 0..30 {
        out.push(Message::user(words.text(300)));
        if turn % 3 == 2 {
            let id = format!("call_{turn}");
            let args = serde_json::json!({"query": words.text(40), "limit": 5}).to_string();
            out.push(
                Message::assistant("").with_tool_calls(vec![ToolCall::new(&id, "search", args)]),
            );
            out.push(Message::tool(&id, words.tool_result()));
        }
        out.push(Message::assistant(words.text(1200)));
    }
    out
}

/// The bodies the layer seals for the mix, as it serializes them.
fn bodies() -> Vec<Vec<u8>> {
    conversation()
        .iter()
        .map(|m| {
            serde_json::to_vec(&serde_json::json!({
                "content": m.content,
                "tool_calls": m.tool_calls(),
                "tool_call_id": m.tool_call_id(),
            }))
            .unwrap()
        })
        .collect()
}

fn kib_message(words: &mut Words, role_user: bool) -> Message {
    let text = words.text(1024);
    if role_user {
        Message::user(text)
    } else {
        Message::assistant(text)
    }
}

/// One pipeline-style turn: a windowed read that also looks the turn up,
/// then one version-guarded, keyed append of two 1 KB messages.
async fn turn(store: &dyn Store, id: &SessionId, q: &Message, a: &Message) {
    let key = IdempotencyKey::random();
    let read = store
        .load_recent_with(id, 20, Some(&key))
        .await
        .unwrap()
        .unwrap();
    black_box(&read.messages);
    store
        .append_with(
            id,
            Append::new([q.clone(), a.clone()])
                .expect(Expect::Version(read.version))
                .key(key),
        )
        .await
        .unwrap();
}

/// Turns on `store`, the session reset (40 messages) every 200 turns
/// outside the timed region.
fn bench_turns(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    store: &dyn Store,
) {
    let mut words = Words(42);
    let history: Vec<Message> = (0..40)
        .map(|i| kib_message(&mut words, i % 2 == 0))
        .collect();
    let (q, a) = (
        kib_message(&mut words, true),
        kib_message(&mut words, false),
    );
    let id = SessionId::new(format!("turn-{name}")).unwrap();
    group.bench_function(BenchmarkId::from_parameter(name), |b| {
        b.to_async(rt).iter_custom(|iters| {
            let (history, q, a, id) = (&history, &q, &a, &id);
            async move {
                let mut total = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    store.delete(id).await.unwrap();
                    store
                        .append(id, history.clone(), Expect::Any)
                        .await
                        .unwrap();
                    let n = 200.min(iters - done);
                    let start = Instant::now();
                    for _ in 0..n {
                        turn(store, id, q, a).await;
                    }
                    total += start.elapsed();
                    done += n;
                }
                total
            }
        });
    });
}

fn per_turn(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("crypto/turn(memory, 1 KB messages)");
    let plain: Arc<dyn Store> = Arc::new(statestore_memory::MemoryStore::new());
    bench_turns(&mut group, &rt, "plain", &*plain);
    // Compression is off by default; the benchmark measures it explicitly.
    let layered = Encrypted::builder(Arc::clone(&plain), ring())
        .compression(Compression::zstd())
        .build();
    bench_turns(&mut group, &rt, "encrypted+zstd", &layered);
    let uncompressed = Encrypted::builder(Arc::clone(&plain), ring())
        .compression(Compression::none())
        .build();
    bench_turns(&mut group, &rt, "encrypted", &uncompressed);
    group.finish();
    interleaved(
        &rt,
        "memory",
        &*plain,
        &[("encrypted+zstd", &layered), ("encrypted", &uncompressed)],
    );

    let server = RedisServer::start().unwrap();
    let mut group = c.benchmark_group("crypto/turn(redis, 1 KB messages)");
    let redis: Arc<dyn Store> = Arc::new(
        rt.block_on(statestore_redis::RedisStore::builder().connect(&server.url()))
            .unwrap(),
    );
    bench_turns(&mut group, &rt, "plain", &*redis);
    // Compression is off by default; the benchmark measures it explicitly.
    let layered = Encrypted::builder(Arc::clone(&redis), ring())
        .compression(Compression::zstd())
        .build();
    bench_turns(&mut group, &rt, "encrypted+zstd", &layered);
    group.finish();
    let uncompressed = Encrypted::builder(Arc::clone(&redis), ring())
        .compression(Compression::none())
        .build();
    interleaved(
        &rt,
        "redis",
        &*redis,
        &[("encrypted+zstd", &layered), ("encrypted", &uncompressed)],
    );
}

/// The layer's overhead measured in alternation with the plain store (a
/// shared VM's load moves between criterion's sequential runs): 30 rounds
/// of 100 turns each, plain and layered in turn; medians per turn.
fn interleaved(
    rt: &tokio::runtime::Runtime,
    backend: &str,
    plain: &dyn Store,
    layered: &[(&str, &dyn Store)],
) {
    let mut words = Words(42);
    let history: Vec<Message> = (0..40)
        .map(|i| kib_message(&mut words, i % 2 == 0))
        .collect();
    let (q, a) = (
        kib_message(&mut words, true),
        kib_message(&mut words, false),
    );
    let mut stores: Vec<(&str, &dyn Store)> = vec![("plain", plain)];
    stores.extend_from_slice(layered);
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); stores.len()];
    rt.block_on(async {
        for _ in 0..30 {
            for (i, (name, store)) in stores.iter().enumerate() {
                let id = SessionId::new(format!("interleaved-{name}")).unwrap();
                store.delete(&id).await.unwrap();
                store
                    .append(&id, history.clone(), Expect::Any)
                    .await
                    .unwrap();
                turn(*store, &id, &q, &a).await;
                let start = Instant::now();
                for _ in 0..100 {
                    turn(*store, &id, &q, &a).await;
                }
                times[i].push(start.elapsed().as_secs_f64() * 1e6 / 100.0);
            }
        }
    });
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let base = median(&mut times[0]);
    println!(
        "bench-metric: crypto/interleaved({backend})/plain = {base:.1} µs per turn (median of 30 rounds of 100)"
    );
    for (i, (name, _)) in stores.iter().enumerate().skip(1) {
        let t = median(&mut times[i]);
        println!(
            "bench-metric: crypto/interleaved({backend})/{name} = {t:.1} µs per turn, +{:.1} % over plain",
            (t / base - 1.0) * 100.0
        );
        if i == 1 {
            // The default layer against the plain store: the issue's target.
            println!(
                "bench-metric: crypto/layer÷plain({backend})/{name} = {:.3} ({t:.1} µs ÷ {base:.1} µs per turn)",
                t / base
            );
        }
    }
}

fn seal_and_open(c: &mut Criterion) {
    let bodies = bodies();
    let total: usize = bodies.iter().map(Vec::len).sum();
    let keys = ring();
    let variants: [(&str, Option<&KeyRing>, Compression); 3] = [
        ("encrypt+zstd", Some(&keys), Compression::zstd()),
        ("encrypt", Some(&keys), Compression::none()),
        ("zstd", None, Compression::zstd()),
    ];
    let mut group = c.benchmark_group("crypto/seal");
    group.throughput(Throughput::BytesDecimal(total as u64));
    for (name, keys, compression) in variants {
        group.bench_function(name, |b| {
            b.iter(|| {
                for body in &bodies {
                    black_box(__bench::seal(keys, compression, body));
                }
            });
        });
    }
    group.finish();
    let mut group = c.benchmark_group("crypto/open");
    group.throughput(Throughput::BytesDecimal(total as u64));
    for (name, keys, compression) in variants {
        let sealed: Vec<String> = bodies
            .iter()
            .map(|b| __bench::seal(keys, compression, b).unwrap())
            .collect();
        group.bench_function(name, |b| {
            b.iter(|| {
                for s in &sealed {
                    black_box(__bench::open(keys, s));
                }
            });
        });
    }
    group.finish();
    print_sizes(&bodies, &keys);
}

/// Stored sizes of the mix (each message as the store keeps it: its JSON).
fn print_sizes(bodies: &[Vec<u8>], keys: &KeyRing) {
    let rt = runtime();
    let messages = conversation();
    let id = SessionId::new("sizes").unwrap();
    let stored = |store: &dyn Store| {
        rt.block_on(async {
            store
                .append(&id, messages.clone(), Expect::Any)
                .await
                .unwrap();
        });
    };
    let raw_size = |plain: &Arc<dyn Store>| -> usize {
        let state = rt.block_on(plain.load(&id)).unwrap().unwrap();
        state
            .messages
            .iter()
            .map(|m| serde_json::to_vec(&**m).unwrap().len())
            .sum()
    };
    let plain: Arc<dyn Store> = Arc::new(statestore_memory::MemoryStore::new());
    stored(&*plain);
    let base = raw_size(&plain);
    println!(
        "bench-metric: crypto/sizes/plain = {base} bytes as stored without the layer ({} messages, bodies {} bytes)",
        messages.len(),
        bodies.iter().map(Vec::len).sum::<usize>()
    );
    for (name, make) in [
        ("encrypted+zstd", Some(Compression::zstd())),
        ("encrypted", Some(Compression::none())),
        ("compressed only", None),
    ] {
        let inner: Arc<dyn Store> = Arc::new(statestore_memory::MemoryStore::new());
        match make {
            Some(c) => stored(
                &Encrypted::builder(Arc::clone(&inner), keys.clone())
                    .compression(c)
                    .build(),
            ),
            None => stored(&statestore_crypto::Compressed::new(Arc::clone(&inner))),
        }
        let size = raw_size(&inner);
        println!(
            "bench-metric: crypto/sizes/{name} = {size} bytes stored, {:.1} % of plain",
            size as f64 * 100.0 / base as f64
        );
    }
}

fn codecs(c: &mut Criterion) {
    let bodies = bodies();
    let total: usize = bodies.iter().map(Vec::len).sum();
    let mut group = c.benchmark_group("crypto/codec");
    group.throughput(Throughput::Bytes(total as u64));
    for level in [-5, -1, 1, 3, 9] {
        let packed: usize = bodies.iter().map(|b| zstd_len(b, level)).sum();
        println!(
            "bench-metric: crypto/codec/zstd-{level} = {packed} of {total} bytes ({:.1} %)",
            packed as f64 * 100.0 / total as f64
        );
        let mut compressor = zstd::bulk::Compressor::new(level).unwrap();
        group.bench_function(format!("zstd-{level} compress"), |b| {
            b.iter(|| {
                for body in &bodies {
                    black_box(compressor.compress(body).unwrap());
                }
            });
        });
    }
    let packed: usize = bodies
        .iter()
        .map(|b| lz4_flex::compress_prepend_size(b).len())
        .sum();
    println!(
        "bench-metric: crypto/codec/lz4_flex = {packed} of {total} bytes ({:.1} %)",
        packed as f64 * 100.0 / total as f64
    );
    group.bench_function("lz4_flex compress", |b| {
        b.iter(|| {
            for body in &bodies {
                black_box(lz4_flex::compress_prepend_size(body));
            }
        });
    });
    let zstd_packed: Vec<Vec<u8>> = bodies
        .iter()
        .map(|b| zstd::bulk::compress(b, 3).unwrap())
        .collect();
    let mut decompressor = zstd::bulk::Decompressor::new().unwrap();
    group.bench_function("zstd-3 decompress", |b| {
        b.iter(|| {
            for (p, body) in zstd_packed.iter().zip(&bodies) {
                black_box(decompressor.decompress(p, body.len()).unwrap());
            }
        });
    });
    let lz4_packed: Vec<Vec<u8>> = bodies
        .iter()
        .map(|b| lz4_flex::compress_prepend_size(b))
        .collect();
    group.bench_function("lz4_flex decompress", |b| {
        b.iter(|| {
            for p in &lz4_packed {
                black_box(lz4_flex::decompress_size_prepended(p).unwrap());
            }
        });
    });
    group.finish();
}

fn zstd_len(body: &[u8], level: i32) -> usize {
    zstd::bulk::compress(body, level)
        .unwrap()
        .len()
        .min(body.len())
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = codecs, seal_and_open, per_turn
}
criterion_main!(benches);
