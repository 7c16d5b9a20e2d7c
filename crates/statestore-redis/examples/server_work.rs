//! The store calls whose cost inside redis-server `cargo xtask bench
//! --server-work` (and `cargo xtask server-work`, in CI) counts, made
//! through the real `RedisStore` API against the server at `REDIS_URL`:
//! `load`, `load_recent(20)`, `load_recent_with(21, key)`, appends of two
//! messages (guarded by version; keyed; keyed with the pipeline's four
//! counters), `fork`, a plain turn and an execute's turn, beside `GET` and
//! `SET` of the whole-blob baseline, at each history length given.
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cargo run -p statestore-redis --example server_work
//! ```
//!
//! Run like that (as `cargo xtask examples` does) it makes every call a few
//! times at 10 messages and checks the replies: a smoke test of the driver.
//! With `--driven` it is xtask's driver (`xtask/src/bench/server_work`),
//! talking over stdin and stdout, one line each, tab-separated:
//!
//! 1. It prepares a part of a measurement — the sessions it works on,
//!    after `--warm-up` calls (10) on sessions of their own, which load the
//!    scripts and fill the server's caches — and prints
//!    `server-work<TAB>ready<TAB><operation><TAB><messages><TAB><calls>`,
//!    then waits for `go` (xtask has dumped callgrind's counters).
//! 2. It makes the calls, prints `server-work<TAB>done` and waits for
//!    `next` (xtask has dumped the counters again: the instructions between
//!    the two dumps are the calls').
//! 3. It deletes what it made and goes on; `server-work<TAB>end` ends.
//!
//! A measurement comes in several parts (the same operation and length,
//! each with its own `ready`) when its sessions would not fit the server's
//! memory at once; xtask adds them up.
//!
//! Options: `--lengths 10,100,1000` (history lengths, in messages),
//! `--calls 1000` (per measurement, a fifth as many where the history is
//! 1 MB or more and the call's cost grows with it: `load`, `fork`, the
//! blob's `GET` and `SET`), `--warm-up 10`.
//!
//! # What each call works on
//!
//! Every history is written once per length as a template session, by the
//! store: the short messages of the Redis suite (about 60 B) appended 1,000
//! at a time for the plain calls; for the keyed calls (`load_recent_with`,
//! the keyed appends, the execute's turn) the same history as executes
//! leave it, its last (up to) 64 turns written by keyed appends with the
//! four counters, so that the store's ring of 64 remembered keys is as
//! full as at that length (full from 128 messages on).
//!
//! A call works on a copy of the template, made unmeasured: every key of
//! the session copied (`COPY`), not `Store::fork`, which starts a new
//! session without its source's remembered writes. A write takes its own
//! copy, for at most `length / 200` writes (one below 400 messages), so
//! the history grows by at most 1 % while measured. Reads, the fork's
//! sources and the blob's keys go round 20 copies (see `Driver::part`).
//! The realistic mix (`benches/common/realistic_mix.rs`, about 950 B per
//! message) is measured for the plain turn and the blob baseline. Session
//! ids, keys and values have the same lengths at every length and in every
//! run, and the idempotency keys are the same sequence, so that the server
//! does the same work each time.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the driver's protocol is its stdout"
)]

use std::error::Error;
use std::io::BufRead;

use statestore_core::{Append, Expect, IdempotencyKey, Message, SessionId, Store, Version};
use statestore_redis::RedisStore;

/// The short messages of the Redis suite.
#[path = "../benches/common/short_messages.rs"]
mod short_messages;

/// The realistic conversation of the realistic-mix comparisons.
#[path = "../benches/common/realistic_mix.rs"]
#[allow(dead_code, reason = "the mix's description is the suites' to print")]
mod realistic_mix;

type Result<T = ()> = std::result::Result<T, Box<dyn Error>>;

/// The counters an execute adds to (`pipeline::counters`: prompt and
/// completion tokens, model calls, turns), with the increments of the
/// pipeline's benchmark (`benches/execute.rs`, `store_calls`).
const COUNTERS: [(&str, u64); 4] = [
    ("prompt_tokens", 120),
    ("completion_tokens", 8),
    ("model_calls", 1),
    ("turns", 1),
];

/// The deepest the store's ring of remembered keys goes: the keyed
/// template's last turns are keyed, this many at most.
const KEYED_TURNS: usize = 64;

/// A part holds at most about this many bytes of messages in copies (or
/// fork targets) at once.
const PART_BYTES: usize = 20 << 20;

/// The keys of a session, as suffixes of `<prefix>{<id>}:` (see
/// `statestore-redis`'s `keys.rs`): header, messages, summaries, metadata,
/// remembered writes.
const SESSION_KEYS: [&str; 5] = ["h", "m", "s", "d", "w"];

/// The list indexes every session is in (no user id), after the prefix.
const INDEXES: [&str; 2] = ["{ix}:ids", "{ix}:recent"];

/// Reads go round this many copies of their session (see `Driver::part`).
const SPREAD: usize = 20;

/// At and above this many bytes of history (10,000 short messages, 1,000
/// of the realistic mix), the calls whose cost grows with the history
/// (`load`, `fork`, the blob's `GET` and `SET`) are a fifth as many: each
/// is millions of instructions, and the count per call is as exact over
/// 200 of them.
const LONG_BYTES: usize = 1_000_000;

/// What a measurement calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Load,
    LoadRecent,
    LoadRecentWith,
    Append,
    AppendKeyed,
    AppendCounted,
    Fork,
    Turn,
    ExecuteTurn,
    Get,
    Set,
}

/// Which messages the history and the appended turn are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mix {
    Short,
    Realistic,
}

impl Mix {
    fn history(self, len: usize) -> Vec<Message> {
        match self {
            Mix::Short => short_messages::history(len),
            Mix::Realistic => realistic_mix::history(len),
        }
    }

    fn turn(self) -> Vec<Message> {
        match self {
            Mix::Short => short_messages::turn(),
            Mix::Realistic => realistic_mix::turn(),
        }
    }

    /// About how many bytes a message of the mix is stored in.
    fn message_bytes(self) -> usize {
        match self {
            Mix::Short => 100,
            Mix::Realistic => 1_000,
        }
    }

    fn tag(self) -> char {
        match self {
            Mix::Short => 's',
            Mix::Realistic => 'r',
        }
    }
}

/// The measurements, in the order they run and the table lists them: the
/// operation as the table names it, what it calls, on which messages.
const MEASUREMENTS: [(&str, Op, Mix); 14] = [
    ("load", Op::Load, Mix::Short),
    ("load_recent(20)", Op::LoadRecent, Mix::Short),
    ("load_recent_with(21, key)", Op::LoadRecentWith, Mix::Short),
    ("append 2, guarded", Op::Append, Mix::Short),
    ("append 2, keyed", Op::AppendKeyed, Mix::Short),
    ("append 2, keyed, 4 counters", Op::AppendCounted, Mix::Short),
    ("fork", Op::Fork, Mix::Short),
    ("turn: load_recent(20) + append 2", Op::Turn, Mix::Short),
    (
        "execute's turn: load_recent_with(21, key) + keyed append, 4 counters",
        Op::ExecuteTurn,
        Mix::Short,
    ),
    ("blob GET", Op::Get, Mix::Short),
    ("blob SET", Op::Set, Mix::Short),
    ("turn, realistic mix", Op::Turn, Mix::Realistic),
    ("blob GET, realistic mix", Op::Get, Mix::Realistic),
    ("blob SET, realistic mix", Op::Set, Mix::Realistic),
];

impl Op {
    /// Whether the call writes the session it works on (then it works on
    /// copies).
    fn writes(self) -> bool {
        matches!(
            self,
            Op::Append | Op::AppendKeyed | Op::AppendCounted | Op::Turn | Op::ExecuteTurn
        )
    }

    /// Whether it works on the keyed template.
    fn keyed(self) -> bool {
        matches!(
            self,
            Op::LoadRecentWith | Op::AppendKeyed | Op::AppendCounted | Op::ExecuteTurn
        )
    }

    /// Whether its cost grows with the history.
    fn whole_history(self) -> bool {
        matches!(self, Op::Load | Op::Fork | Op::Get | Op::Set)
    }
}

/// The command line.
struct Options {
    driven: bool,
    lengths: Vec<usize>,
    calls: usize,
    warm_up: usize,
}

impl Options {
    fn parse() -> Result<Options> {
        let mut options = Options {
            driven: false,
            lengths: vec![10],
            calls: 3,
            warm_up: 2,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--driven" => {
                    options.driven = true;
                    options.calls = 1_000;
                    options.warm_up = 10;
                }
                "--lengths" => {
                    options.lengths = value()?
                        .split(',')
                        .map(str::parse)
                        .collect::<std::result::Result<_, _>>()?;
                }
                "--calls" => options.calls = value()?.parse()?,
                "--warm-up" => options.warm_up = value()?.parse()?,
                other => return Err(format!("unknown argument {other:?}").into()),
            }
        }
        if options.calls == 0 || options.lengths.contains(&0) {
            return Err("--calls and every length must be at least 1".into());
        }
        Ok(options)
    }
}

/// What a call works on: a copy of the template (fork, unmeasured) and its
/// version; for the blob baseline, a key holding a copy of the blob.
struct Copy {
    id: SessionId,
    version: Version,
    blob: String,
}

/// The driver: the store, a plain connection for the blob baseline (its
/// keys under the store's prefix, its value at each length and mix), and
/// the counter the idempotency keys are made from.
struct Driver {
    store: RedisStore,
    conn: redis::aio::MultiplexedConnection,
    prefix: String,
    blobs: Vec<((Mix, usize), Vec<u8>)>,
    templates: Vec<Template>,
    options: Options,
    keys: u64,
}

/// A template session: its version, its scores in the list indexes, and
/// the key of its last keyed write (if any), which its clones must
/// remember too.
struct Template {
    id: SessionId,
    version: Version,
    scores: Vec<(String, f64)>,
    last_key: Option<IdempotencyKey>,
}

/// The history length of a template, from its id.
fn template_len(id: &SessionId) -> usize {
    id.as_str()
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_default()
}

fn id(kind: char, mix: Mix, n: usize) -> Result<SessionId> {
    // One length for every id: the server hashes and compares the same
    // number of bytes whatever the history length or copy.
    Ok(SessionId::new(format!("{kind}{}-{n:07}", mix.tag()))?)
}

impl Driver {
    /// The next idempotency key: 32 hex digits, as `IdempotencyKey::random`
    /// makes them, but the same sequence in every run.
    fn key(&mut self) -> Result<IdempotencyKey> {
        self.keys += 1;
        Ok(IdempotencyKey::new(format!(
            "{:016x}{:016x}",
            0x5e7f_0000_u64, self.keys
        ))?)
    }

    /// The keyed append of an execute: `messages`, guarded by `expect`,
    /// under a new key, with the four counters when `counted`.
    fn keyed_append(
        &mut self,
        messages: Vec<Message>,
        expect: Expect,
        counted: bool,
    ) -> Result<Append> {
        let mut append = Append::new(messages).expect(expect).key(self.key()?);
        if counted {
            for (name, delta) in COUNTERS {
                append = append.count(name, delta);
            }
        }
        Ok(append)
    }

    /// The templates of `len` messages of `mix`: plain (appends of 1,000)
    /// and keyed (the last up to 64 turns keyed, with counters); and the
    /// blob baseline's value.
    async fn prepare(&mut self, mix: Mix, len: usize) -> Result {
        let history = mix.history(len);
        let plain = id('p', mix, len)?;
        let keyed = id('k', mix, len)?;
        for id in [&plain, &keyed] {
            self.store.delete(id).await?;
        }
        for chunk in history.chunks(1000) {
            self.store
                .append(&plain, chunk.to_vec(), Expect::Any)
                .await?;
        }
        let turns = (len / 2).min(KEYED_TURNS);
        let (before, turned) = history.split_at(len - 2 * turns);
        let mut expect = Expect::Absent;
        for chunk in before.chunks(1000) {
            let version = self.store.append(&keyed, chunk.to_vec(), expect).await?;
            expect = Expect::Version(version);
        }
        let mut last_key = None;
        for turn in turned.chunks(2) {
            let append = self.keyed_append(turn.to_vec(), expect, true)?;
            last_key = append.key.clone();
            let appended = self.store.append_with(&keyed, append).await?;
            expect = Expect::Version(appended.version);
        }
        for (id, last_key) in [(plain, None), (keyed, last_key)] {
            let loaded = self.store.load(&id).await?.ok_or("template vanished")?;
            assert_eq!(loaded.messages.len(), len, "template {id}");
            let mut scores = Vec::new();
            for index in INDEXES {
                let index = format!("{}{index}", self.prefix);
                let score: Option<f64> = redis::cmd("ZSCORE")
                    .arg(&index)
                    .arg(id.as_str())
                    .query_async(&mut self.conn)
                    .await?;
                let score = score.ok_or_else(|| format!("{id} is not in {index}"))?;
                scores.push((index, score));
            }
            self.templates.retain(|t| t.id != id);
            self.templates.push(Template {
                id,
                version: loaded.version,
                scores,
                last_key,
            });
        }
        self.blobs.retain(|(at, _)| *at != (mix, len));
        self.blobs.push(((mix, len), serde_json::to_vec(&history)?));
        Ok(())
    }

    /// The blob baseline's value at `len` messages of `mix`.
    fn blob(&self, mix: Mix, len: usize) -> Result<&[u8]> {
        Ok(self
            .blobs
            .iter()
            .find(|(at, _)| *at == (mix, len))
            .map(|(_, blob)| blob.as_slice())
            .ok_or("no blob prepared")?)
    }

    /// One call of `op` on `copy` (for `fork`, its source; the target is
    /// `target`).
    async fn call(
        &mut self,
        op: Op,
        mix: Mix,
        len: usize,
        copy: &mut Copy,
        target: &SessionId,
    ) -> Result {
        let store = &self.store;
        let id = &copy.id;
        match op {
            Op::Load => {
                let state = store.load(id).await?.ok_or("no session")?;
                assert_eq!(state.messages.len(), len);
            }
            Op::LoadRecent => {
                let recent = store.load_recent(id, 20).await?.ok_or("no session")?;
                assert_eq!(recent.messages.len(), len.min(20));
            }
            Op::LoadRecentWith => {
                let key = self.key()?;
                let recent = self
                    .store
                    .load_recent_with(id, 21, Some(&key))
                    .await?
                    .ok_or("no session")?;
                assert!(recent.replay.is_none());
            }
            Op::Append => {
                copy.version = store
                    .append(id, mix.turn(), Expect::Version(copy.version))
                    .await?;
            }
            Op::AppendKeyed | Op::AppendCounted => {
                let expect = Expect::Version(copy.version);
                let append = self.keyed_append(mix.turn(), expect, op == Op::AppendCounted)?;
                let appended = self.store.append_with(id, append).await?;
                assert!(!appended.replayed);
                copy.version = appended.version;
            }
            Op::Fork => {
                store.fork(id, target).await?;
            }
            Op::Turn => {
                let recent = store.load_recent(id, 20).await?.ok_or("no session")?;
                copy.version = store
                    .append(id, mix.turn(), Expect::Version(recent.version))
                    .await?;
            }
            Op::ExecuteTurn => {
                let key = self.key()?;
                let recent = self
                    .store
                    .load_recent_with(id, 21, Some(&key))
                    .await?
                    .ok_or("no session")?;
                let mut append = Append::new(mix.turn())
                    .expect(Expect::Version(recent.version))
                    .key(key);
                for (name, delta) in COUNTERS {
                    append = append.count(name, delta);
                }
                let appended = self.store.append_with(id, append).await?;
                copy.version = appended.version;
            }
            Op::Get => {
                let blob: Vec<u8> = redis::cmd("GET")
                    .arg(&copy.blob)
                    .query_async(&mut self.conn)
                    .await?;
                assert_eq!(blob.len(), self.blob(mix, len)?.len());
            }
            Op::Set => {
                // The same bytes every time: the history stays `len` long.
                let blob = self.blob(mix, len)?.to_vec();
                redis::cmd("SET")
                    .arg(&copy.blob)
                    .arg(blob)
                    .exec_async(&mut self.conn)
                    .await?;
            }
        }
        Ok(())
    }

    /// `n` copies of `template` (clones; for the blob baseline, keys
    /// holding its value), made unmeasured.
    async fn copies(
        &mut self,
        op: Op,
        mix: Mix,
        len: usize,
        template: &SessionId,
        n: usize,
    ) -> Result<Vec<Copy>> {
        let mut copies = Vec::with_capacity(n);
        for i in 0..n {
            let copy = Copy {
                id: id('c', mix, i)?,
                version: 0,
                blob: format!("{}blob{}-{i:07}", self.prefix, mix.tag()),
            };
            if matches!(op, Op::Get | Op::Set) {
                let blob = self.blob(mix, len)?.to_vec();
                redis::cmd("SET")
                    .arg(&copy.blob)
                    .arg(blob)
                    .exec_async(&mut self.conn)
                    .await?;
                copies.push(copy);
            } else {
                let version = self.clone_session(template, &copy.id, i == 0).await?;
                copies.push(Copy { version, ..copy });
            }
        }
        Ok(copies)
    }

    /// Makes `to` an exact copy of the template `from` and returns its
    /// version; with `check`, checks through the store that it is one.
    ///
    /// Not `Store::fork`: a fork is a new session (version 1) that does not
    /// remember its source's keyed writes, and a measured call must find
    /// the session as the template's history left it. So the session's
    /// keys are copied (`COPY`; the layout is `statestore-redis`'s
    /// `keys.rs`), and the copy is entered in the list indexes with the
    /// template's scores. If the layout changes, the check fails.
    async fn clone_session(
        &mut self,
        from: &SessionId,
        to: &SessionId,
        check: bool,
    ) -> Result<Version> {
        let template = self
            .templates
            .iter()
            .find(|t| t.id == *from)
            .ok_or("no such template")?;
        self.store.delete(to).await?;
        let mut pipe = redis::pipe();
        let (source, copy) = (from.as_str(), to.as_str());
        for suffix in SESSION_KEYS {
            pipe.cmd("COPY")
                .arg(format!("{}{{{source}}}:{suffix}", self.prefix))
                .arg(format!("{}{{{copy}}}:{suffix}", self.prefix))
                .ignore();
        }
        for (index, score) in &template.scores {
            pipe.cmd("ZADD")
                .arg(index)
                .arg(*score)
                .arg(to.as_str())
                .ignore();
        }
        pipe.exec_async(&mut self.conn).await?;
        let (version, last_key, len) = (
            template.version,
            template.last_key.clone(),
            template_len(from),
        );
        if check {
            let state = self
                .store
                .load(to)
                .await?
                .ok_or("the clone does not load")?;
            let recent = self
                .store
                .load_recent_with(to, 1, last_key.as_ref())
                .await?
                .ok_or("the clone does not load")?;
            if state.version != version
                || state.messages.len() != len
                || recent.replay.is_some() != last_key.is_some()
            {
                return Err(format!(
                    "the clone {to} of {from} differs from it: has the key layout of \
                     statestore-redis (keys.rs) changed?"
                )
                .into());
            }
        }
        Ok(version)
    }

    /// Deletes what [`Self::copies`] made.
    async fn delete(&mut self, copies: &[Copy]) -> Result {
        for copy in copies {
            self.store.delete(&copy.id).await?;
            redis::cmd("DEL")
                .arg(&copy.blob)
                .exec_async(&mut self.conn)
                .await?;
        }
        Ok(())
    }

    /// `calls` calls of `op`, in parts: each announced (`ready`) and, when
    /// driven, started by xtask (`go`).
    async fn measure(&mut self, name: &str, op: Op, mix: Mix, len: usize) -> Result {
        let calls = if op.whole_history() && len * mix.message_bytes() >= LONG_BYTES {
            self.options.calls.div_ceil(5)
        } else {
            self.options.calls
        };
        let template = if op.keyed() {
            id('k', mix, len)?
        } else {
            id('p', mix, len)?
        };
        // Warm-up: the same calls, on copies of their own.
        let warm_up = self.options.warm_up;
        self.part(op, mix, len, &template, warm_up, None).await?;
        // The copies one part may hold, and the calls they take.
        let room = (PART_BYTES / (len * mix.message_bytes())).max(1);
        let per_part = if op.writes() {
            room * per_copy(op, len)
        } else if op == Op::Fork {
            // Room for the targets and the sources.
            (room / 2).max(1)
        } else {
            calls
        };
        let mut done = 0;
        while done < calls {
            let n = per_part.min(calls - done);
            self.part(op, mix, len, &template, n, Some(name)).await?;
            done += n;
        }
        if !self.options.driven {
            println!("{name} at {len} messages: {calls} calls made");
        }
        Ok(())
    }

    /// One part: `n` calls, announced as `name` (`None`: the warm-up,
    /// unannounced), with the copies and fork targets they need made before
    /// and deleted after.
    ///
    /// A write takes its own copy, [`per_copy`] writes each. Reads (and the
    /// fork's sources, and the blob's `GET` and `SET`) go round the same
    /// [`SPREAD`] copies: where a key falls in the server's hash tables
    /// depends on a seed each server draws at start, and a key that shares
    /// its bucket costs a comparison more per lookup; over several keys,
    /// that evens out, and every run counts nearly the same.
    async fn part(
        &mut self,
        op: Op,
        mix: Mix,
        len: usize,
        template: &SessionId,
        n: usize,
        name: Option<&str>,
    ) -> Result {
        let room = (PART_BYTES / (len * mix.message_bytes())).max(1);
        let spread = if op.writes() {
            n.div_ceil(per_copy(op, len))
        } else {
            SPREAD.min(room).min(n)
        };
        let mut copies = self.copies(op, mix, len, template, spread).await?;
        let targets: Vec<SessionId> = if op == Op::Fork {
            (0..n).map(|i| id('f', mix, i)).collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        for target in &targets {
            self.store.delete(target).await?;
        }
        if let Some(name) = name {
            self.ready(name, len, n)?;
        }
        let none = id('x', mix, 0)?;
        for i in 0..n {
            let at = if op.writes() {
                i / per_copy(op, len)
            } else {
                i % spread
            };
            let copy = copies.get_mut(at).ok_or("fewer copies than calls")?;
            let target = targets.get(i).unwrap_or(&none);
            self.call(op, mix, len, copy, target).await?;
        }
        if name.is_some() {
            self.done()?;
        }
        self.delete(&copies).await?;
        for target in &targets {
            self.store.delete(target).await?;
        }
        Ok(())
    }

    /// Announces a part and, when driven, waits for xtask's `go`.
    fn ready(&self, name: &str, len: usize, n: usize) -> Result {
        if !self.options.driven {
            return Ok(());
        }
        println!("server-work\tready\t{name}\t{len}\t{n}");
        expect_line("go")
    }

    /// Says a part's calls are done and, when driven, waits for xtask's
    /// `next`: nothing else may reach the server before xtask has read
    /// its counters.
    fn done(&self) -> Result {
        if !self.options.driven {
            return Ok(());
        }
        println!("server-work\tdone");
        expect_line("next")
    }
}

/// Reads a line from xtask, which must be `expected`.
fn expect_line(expected: &str) -> Result {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() == expected {
        Ok(())
    } else {
        Err(format!("expected `{expected}` from xtask, got {line:?}").into())
    }
}

/// How many measured writes one copy takes: the history grows by at most
/// 1 % (two messages per write).
fn per_copy(op: Op, len: usize) -> usize {
    if op.writes() { (len / 200).max(1) } else { 1 }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result {
    let options = Options::parse()?;
    let Ok(url) = std::env::var("REDIS_URL") else {
        eprintln!("set REDIS_URL, e.g. redis://127.0.0.1:6379");
        std::process::exit(2);
    };
    // A fixed prefix: every key has the same length in every run. The
    // smoke test (not driven) shares its server with other examples:
    // a prefix of its own, the same length.
    let prefix = if options.driven {
        "sw:0000000:".to_owned()
    } else {
        format!("sw:{:07}:", std::process::id() % 10_000_000)
    };
    let store = RedisStore::builder().prefix(&prefix).connect(&url).await?;
    let client = redis::Client::open(url.as_str())?;
    let conn = client.get_multiplexed_async_connection().await?;
    let mut driver = Driver {
        store,
        conn,
        prefix,
        blobs: Vec::new(),
        templates: Vec::new(),
        options,
        keys: 0,
    };
    let lengths = driver.options.lengths.clone();
    for len in lengths {
        for mix in [Mix::Short, Mix::Realistic] {
            driver.prepare(mix, len).await?;
        }
        for (name, op, mix) in MEASUREMENTS {
            driver.measure(name, op, mix, len).await?;
        }
        for mix in [Mix::Short, Mix::Realistic] {
            for kind in ['p', 'k'] {
                driver.store.delete(&id(kind, mix, len)?).await?;
            }
        }
    }
    if driver.options.driven {
        println!("server-work\tend");
    }
    Ok(())
}
