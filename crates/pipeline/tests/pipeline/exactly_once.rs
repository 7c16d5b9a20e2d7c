//! One load and one write per turn, and exactly-once turns: a lost write
//! reply, a replayed turn, the same turn run twice at once.

use super::*;

/// A real memory store that counts the calls made to it and can lose the
/// reply of its next `append_with` *after* the real write (a timeout on the
/// way back).
#[derive(Debug, Default)]
struct Watched {
    inner: MemoryStore,
    calls: Mutex<std::collections::BTreeMap<&'static str, usize>>,
    lose_next_reply: std::sync::atomic::AtomicBool,
    /// Fails the next window load with a timeout (nothing read).
    fail_next_load: std::sync::atomic::AtomicBool,
}

impl Watched {
    fn count(&self, name: &'static str) {
        *self.calls.lock().unwrap().entry(name).or_default() += 1;
    }
    fn take_calls(&self) -> Vec<(&'static str, usize)> {
        std::mem::take(&mut *self.calls.lock().unwrap())
            .into_iter()
            .collect()
    }
}

#[async_trait]
impl Store for Watched {
    async fn load(
        &self,
        id: &SessionId,
    ) -> statestore_core::Result<Option<statestore_core::ConversationState>> {
        self.count("load");
        self.inner.load(id).await
    }
    async fn load_with(
        &self,
        id: &SessionId,
        options: statestore_core::Load,
    ) -> statestore_core::Result<Option<statestore_core::ConversationState>> {
        self.count("load_with");
        self.inner.load_with(id, options).await
    }
    async fn load_recent(
        &self,
        id: &SessionId,
        n: usize,
    ) -> statestore_core::Result<Option<statestore_core::RecentState>> {
        self.count("load_recent");
        self.inner.load_recent(id, n).await
    }
    async fn load_recent_with(
        &self,
        id: &SessionId,
        n: usize,
        lookup: Option<&IdempotencyKey>,
    ) -> statestore_core::Result<Option<statestore_core::RecentState>> {
        self.count("load_recent_with");
        self.inner.load_recent_with(id, n, lookup).await
    }
    async fn load_recent_as(
        &self,
        id: &SessionId,
        read: statestore_core::Recent,
    ) -> statestore_core::Result<Option<statestore_core::RecentState>> {
        // What the pipeline's `Traced` wrapper calls for every window load.
        self.count("load_recent_as");
        if self.fail_next_load.swap(false, Ordering::SeqCst) {
            return Err(statestore_core::Error::Timeout {
                operation: "load",
                after: std::time::Duration::from_secs(2),
            });
        }
        self.inner.load_recent_as(id, read).await
    }
    async fn save_with(
        &self,
        state: &statestore_core::ConversationState,
        options: statestore_core::Save,
    ) -> statestore_core::Result<u64> {
        self.count("save");
        self.inner.save_with(state, options).await
    }
    async fn append(
        &self,
        id: &SessionId,
        messages: Vec<Message>,
        expect: Expect,
    ) -> statestore_core::Result<u64> {
        self.count("append");
        self.inner.append(id, messages, expect).await
    }
    async fn append_with(
        &self,
        id: &SessionId,
        append: statestore_core::Append,
    ) -> statestore_core::Result<statestore_core::Appended> {
        self.count("append_with");
        let appended = self.inner.append_with(id, append).await?;
        if self.lose_next_reply.swap(false, Ordering::SeqCst) {
            return Err(statestore_core::Error::Timeout {
                operation: "append",
                after: std::time::Duration::from_secs(2),
            });
        }
        Ok(appended)
    }
    async fn fork(&self, source: &SessionId, target: &SessionId) -> statestore_core::Result<u64> {
        self.count("fork");
        self.inner.fork(source, target).await
    }
    async fn delete_with(
        &self,
        id: &SessionId,
        options: statestore_core::Delete,
    ) -> statestore_core::Result<bool> {
        self.count("delete");
        self.inner.delete_with(id, options).await
    }
    async fn exists(&self, id: &SessionId) -> statestore_core::Result<bool> {
        self.count("exists");
        self.inner.exists(id).await
    }
    async fn list(
        &self,
        query: &statestore_core::ListQuery,
    ) -> statestore_core::Result<statestore_core::ListPage> {
        self.count("list");
        self.inner.list(query).await
    }
    async fn merge_metadata(
        &self,
        id: &SessionId,
        patch: statestore_core::Metadata,
        expect: Expect,
    ) -> statestore_core::Result<u64> {
        self.count("merge_metadata");
        self.inner.merge_metadata(id, patch, expect).await
    }
    async fn add_summary_with(
        &self,
        id: &SessionId,
        add: statestore_core::AddSummary,
    ) -> statestore_core::Result<u64> {
        self.count("add_summary");
        self.inner.add_summary_with(id, add).await
    }
    async fn touch(&self, id: &SessionId) -> statestore_core::Result<bool> {
        self.count("touch");
        self.inner.touch(id).await
    }

    async fn put_pending(
        &self,
        id: &SessionId,
        key: &IdempotencyKey,
        pending: &statestore_core::Pending,
    ) -> statestore_core::Result<()> {
        self.count("put_pending");
        self.inner.put_pending(id, key, pending).await
    }
    async fn load_pending(
        &self,
        id: &SessionId,
        key: &IdempotencyKey,
    ) -> statestore_core::Result<Option<statestore_core::Pending>> {
        self.count("load_pending");
        self.inner.load_pending(id, key).await
    }
}

/// The offline provider, counting the calls it answers.
#[derive(Debug, Default)]
struct Counted {
    inner: OfflineProvider,
    calls: AtomicUsize,
}

#[async_trait]
impl Provider for Counted {
    fn name(&self) -> &str {
        "counted"
    }
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.chat(request).await
    }
}

#[tokio::test]
async fn an_execute_is_one_load_and_one_write() {
    let store = Arc::new(Watched::default());
    for policy in [
        WindowPolicy::default().max_messages(4),
        WindowPolicy::default().token_budget(10_000, 100),
        WindowPolicy::default(),
    ] {
        let pipe = Pipeline::builder(store.clone(), Arc::new(OfflineProvider::new()))
            .window(policy)
            .build();
        for i in 0..4 {
            pipe.execute("counted", Role::User, format!("turn {i}"))
                .await
                .unwrap();
            assert_eq!(
                store.take_calls(),
                [("append_with", 1), ("load_recent_as", 1)],
                "{policy:?}, turn {i}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execute_is_two_round_trips_on_redis() {
    // Needs the Redis store's keyed, counting `append_with`.
    let server = RedisServer::start().unwrap();
    let store = Arc::new(RedisStore::builder().connect(&server.url()).await.unwrap());
    let pipe = Pipeline::builder(store, Arc::new(OfflineProvider::new())).build();
    pipe.execute("rt", Role::User, "warm up").await.unwrap();
    for i in 0..3 {
        server.reset_stats().unwrap();
        pipe.execute("rt", Role::User, format!("turn {i}"))
            .await
            .unwrap();
        let mut stats = server.command_stats().unwrap();
        // The measurement's own commands.
        stats.retain(|name, _| !matches!(name.as_str(), "info" | "config|resetstat" | "config"));
        // Commands a script runs are counted too: keep those only a client
        // sends (each one a round trip).
        let client: Vec<(String, u64)> = stats
            .into_iter()
            .filter(|(name, _)| {
                matches!(
                    name.as_str(),
                    "evalsha"
                        | "eval"
                        | "script|load"
                        | "multi"
                        | "exec"
                        | "watch"
                        | "scan"
                        | "ping"
                        | "hello"
                        | "select"
                        | "auth"
                        | "client|setinfo"
                )
            })
            .collect();
        // The load is one transaction of plain reads (`MULTI`, the reads,
        // `EXEC`: one round trip, no script), the write one script.
        assert_eq!(
            client,
            [
                ("evalsha".to_owned(), 1),
                ("exec".to_owned(), 1),
                ("multi".to_owned(), 1)
            ],
            "turn {i}"
        );
        let round_trips = client.iter().map(|(name, n)| match name.as_str() {
            "multi" => 0,
            _ => *n,
        });
        assert_eq!(round_trips.sum::<u64>(), 2, "turn {i}");
    }
}

#[tokio::test]
async fn a_turn_whose_write_reply_was_lost_is_retried_with_its_id_and_stored_once() {
    let store = Arc::new(Watched::default());
    let provider = Arc::new(Counted::default());
    let pipe = Pipeline::builder(store.clone(), provider.clone()).build();
    pipe.execute("lost", Role::User, "Hi, I'm Alice")
        .await
        .unwrap();

    store.lose_next_reply.store(true, Ordering::SeqCst);
    let err = pipe
        .execute("lost", Role::User, "What's my name?")
        .await
        .unwrap_err();
    assert_eq!(err.write_outcome(), WriteOutcome::Unknown, "{err}");
    assert!(err.is_transient());
    let turn_id = err
        .turn_id()
        .expect("an unknown outcome names its turn")
        .clone();
    assert!(err.to_string().contains(turn_id.as_str()), "{err}");
    assert_eq!(provider.calls.load(Ordering::SeqCst), 2);

    let retried = pipe
        .execute_with(
            "lost",
            Role::User,
            "What's my name?",
            ExecOptions::new().turn_id(turn_id.clone()),
        )
        .await
        .unwrap();
    assert!(retried.replayed);
    assert_eq!(retried.turn_id, turn_id);
    assert_eq!(retried.reply.text(), "Your name is Alice");
    assert_eq!(retried.stored, 2);
    assert_eq!(retried.usage, Usage::default(), "nothing spent on a replay");
    assert_eq!(
        provider.calls.load(Ordering::SeqCst),
        2,
        "the model was asked again"
    );

    let state = store
        .inner
        .load(&SessionId::new("lost").unwrap())
        .await
        .unwrap()
        .unwrap();
    let texts = texts(&state.messages);
    assert_eq!(texts, ALICE_TURNS, "the turn is stored once");
    assert_eq!(state.counters[counters::TURNS], 2);
    assert_eq!(retried.version, state.version);

    // A new turn id is a new turn.
    let again = pipe
        .execute("lost", Role::User, "What's my name?")
        .await
        .unwrap();
    assert!(!again.replayed);
    assert_ne!(again.turn_id, turn_id);
}

/// Arms a [`FaultProxy`] in the last hook before the turn's write, so the
/// write is the request whose reply is lost.
struct LoseTheWriteReply {
    proxy: Arc<FaultProxy>,
    armed: AtomicBool,
}

#[async_trait]
impl Middleware for LoseTheWriteReply {
    async fn after(&self, _ctx: &ExecContext, _response: &mut ChatResponse) -> Result<(), Error> {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.proxy.drop_next_reply();
        }
        Ok(())
    }
}

/// The same failure on real Redis: a proxy between the store and the
/// server lets the turn's write through and drops the connection before
/// its reply. The caller retries with the turn id: one stored turn, one
/// model call, the same reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_whose_write_reply_is_lost_on_redis_is_retried_with_its_id_and_stored_once() {
    let server = RedisServer::start().unwrap();
    let proxy = Arc::new(FaultProxy::start(server.port()).await.unwrap());
    let store = RedisStore::builder()
        .response_timeout(std::time::Duration::from_secs(5))
        .connect(&proxy.url())
        .await
        .unwrap();
    let provider = Arc::new(Counted::default());
    let lose = Arc::new(LoseTheWriteReply {
        proxy: Arc::clone(&proxy),
        armed: AtomicBool::new(false),
    });
    let pipe = Pipeline::builder(Arc::new(store), provider.clone())
        .middleware(lose.clone())
        .build();
    pipe.execute("lost", Role::User, "Hi, I'm Alice")
        .await
        .unwrap();

    lose.armed.store(true, Ordering::SeqCst);
    let turn_id = IdempotencyKey::random();
    let options = || ExecOptions::new().turn_id(turn_id.clone());
    let err = pipe
        .execute_with("lost", Role::User, "What's my name?", options())
        .await
        .unwrap_err();
    assert_eq!(proxy.dropped_replies(), 1, "the write's reply was lost");
    assert_eq!(err.write_outcome(), WriteOutcome::Unknown, "{err}");
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.turn_id(), Some(&turn_id));
    assert_eq!(provider.calls.load(Ordering::SeqCst), 2);

    // Retry with the same turn id until the store answers again.
    let mut retried = None;
    for _ in 0..100 {
        match pipe
            .execute_with("lost", Role::User, "What's my name?", options())
            .await
        {
            Ok(done) => {
                retried = Some(done);
                break;
            }
            Err(e) => {
                assert!(e.is_transient(), "{e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    let retried = retried.expect("the store answered again");
    assert!(
        retried.replayed,
        "the turn had landed: replayed, not run again"
    );
    assert_eq!(retried.reply.text(), "Your name is Alice");
    assert_eq!(
        provider.calls.load(Ordering::SeqCst),
        2,
        "no second model call"
    );

    let direct = RedisStore::builder().connect(&server.url()).await.unwrap();
    let state = direct
        .load(&SessionId::new("lost").unwrap())
        .await
        .unwrap()
        .unwrap();
    let texts = texts(&state.messages);
    assert_eq!(texts, ALICE_TURNS, "the turn is stored exactly once");
    assert_eq!(state.counters[counters::TURNS], 2);
    assert_eq!(state.counters[counters::MODEL_CALLS], 2);
    assert_eq!(retried.version, state.version);
}

#[tokio::test]
async fn a_replayed_turn_outside_the_window_is_read_back_and_streamed() {
    let store = memory();
    let provider = Arc::new(Counted::default());
    let pipe = Pipeline::builder(Arc::clone(&store), provider.clone())
        .window(WindowPolicy::default().max_messages(2))
        .build();
    let key = IdempotencyKey::new("turn-1").unwrap();
    let first = pipe
        .execute_with(
            "old",
            Role::User,
            "I'm Bob",
            ExecOptions::new().turn_id(key.clone()),
        )
        .await
        .unwrap();
    assert!(!first.replayed);
    for i in 0..5 {
        pipe.execute("old", Role::User, format!("more {i}"))
            .await
            .unwrap();
    }
    assert_eq!(provider.calls.load(Ordering::SeqCst), 6);

    let mut events = Vec::new();
    let replayed = pipe
        .execute_streaming_with(
            "old",
            Role::User,
            "I'm Bob",
            ExecOptions::new().turn_id(key),
            &mut |e: StreamEvent<'_>| events.push(format!("{e:?}")),
        )
        .await
        .unwrap();
    assert!(replayed.replayed);
    assert_eq!(replayed.reply, first.reply);
    assert_eq!(replayed.reply.text(), "Nice to meet you, Bob!");
    assert_eq!(replayed.version, first.version);
    assert_eq!(
        events,
        [r#"Delta("Nice to meet you, Bob!")"#, "Done"],
        "the stored reply is streamed"
    );
    assert_eq!(provider.calls.load(Ordering::SeqCst), 6, "no model call");
    let state = store
        .load(&SessionId::new("old").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.messages.len(), 12);
}

/// Runs the same turn (same turn id) on another app instance between this
/// attempt's load and its write, once.
struct Twin {
    other: Pipeline,
    ran: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Middleware for Twin {
    async fn before(&self, ctx: &ExecContext, _: &mut ChatRequest) -> Result<(), Error> {
        if !self.ran.swap(true, Ordering::SeqCst) {
            let done = self
                .other
                .execute_with(
                    ctx.session_id.as_str(),
                    Role::User,
                    "hi",
                    ExecOptions::new().turn_id(ctx.turn_id.clone()),
                )
                .await?;
            assert!(!done.replayed);
        }
        Ok(())
    }
}

#[tokio::test]
async fn the_same_turn_run_twice_at_once_is_stored_once() {
    let store = memory();
    let other = Pipeline::builder(
        Arc::clone(&store),
        Arc::new(Scripted::new(vec![reply(Message::assistant(
            "from the twin",
        ))])),
    )
    .build();
    let pipe = Pipeline::builder(
        Arc::clone(&store),
        Arc::new(Scripted::new(vec![reply(Message::assistant("from here"))])),
    )
    .middleware(Arc::new(Twin {
        other,
        ran: std::sync::atomic::AtomicBool::new(false),
    }))
    .build();
    let mut events = Vec::new();
    let done = pipe
        .execute_streaming_with(
            "twice",
            Role::User,
            "hi",
            ExecOptions::new().turn_id(IdempotencyKey::new("t-1").unwrap()),
            &mut |e: StreamEvent<'_>| events.push(format!("{e:?}")),
        )
        .await
        .unwrap();
    assert!(done.replayed);
    assert_eq!(done.reply.text(), "from the twin", "the stored turn wins");
    assert_eq!(done.model_calls, 1);
    assert_eq!(done.discarded_usage, done.usage, "its spend stored nowhere");
    assert_eq!(
        events,
        [
            r#"Delta("from here")"#,
            "Restart",
            r#"Delta("from the twin")"#,
            "Done"
        ]
    );
    let state = store
        .load(&SessionId::new("twice").unwrap())
        .await
        .unwrap()
        .unwrap();
    let texts = texts(&state.messages);
    assert_eq!(texts, ["hi", "from the twin"]);
    assert_eq!(state.counters[counters::TURNS], 1);
}

/// The seed's context-window pattern — load, keep the newest messages,
/// save — between a turn and its retry: the retry is never answered with
/// another turn's reply, and never runs the turn again. On every backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_the_seeds_trim_never_returns_another_turns_reply() {
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start().unwrap();
    let stores: Vec<(&str, Arc<dyn Store>)> = vec![
        ("memory", memory()),
        (
            "sqlite",
            Arc::new(
                statestore_sqlite::SqliteStore::open(dir.path().join("s.db"))
                    .await
                    .unwrap(),
            ),
        ),
        (
            "redis",
            Arc::new(RedisStore::builder().connect(&server.url()).await.unwrap()),
        ),
    ];
    for (name, store) in stores {
        let provider = Arc::new(Counted::default());
        let pipe = Pipeline::builder(Arc::clone(&store), provider.clone()).build();
        let id = SessionId::new("trimmed").unwrap();
        let turns = ["Hi, I'm Alice", "What's my name?", "What's my name?"];
        let mut replies = Vec::new();
        for (t, text) in turns.iter().enumerate() {
            let done = pipe
                .execute_with(
                    "trimmed",
                    Role::User,
                    *text,
                    ExecOptions::new().turn_id(IdempotencyKey::new(format!("t{t}")).unwrap()),
                )
                .await
                .unwrap();
            replies.push(done.reply.text().into_owned());
        }
        assert_eq!(replies[0], "Nice to meet you, Alice!", "{name}");

        // Before the trim a retry replays each turn's own reply.
        let again = pipe
            .execute_with(
                "trimmed",
                Role::User,
                "Hi, I'm Alice",
                ExecOptions::new().turn_id(IdempotencyKey::new("t0").unwrap()),
            )
            .await
            .unwrap();
        assert!(again.replayed, "{name}");
        assert_eq!(again.reply.text(), replies[0], "{name}");

        let mut state = store.load(&id).await.unwrap().unwrap();
        state.keep_last(4);
        store
            .save(&state, Expect::Version(state.version))
            .await
            .unwrap();
        let before = store.load(&id).await.unwrap().unwrap();
        for t in 0..3 {
            let turn_id = IdempotencyKey::new(format!("t{t}")).unwrap();
            let retried = pipe
                .execute_with(
                    "trimmed",
                    Role::User,
                    turns[t],
                    ExecOptions::new().turn_id(turn_id.clone()),
                )
                .await;
            // The trim kept the last two turns: their replies are found by
            // their stamps; the first turn's reply is gone.
            match retried {
                Ok(done) => {
                    assert!(t > 0, "{name}: t0's reply was trimmed away");
                    assert!(done.replayed, "{name}: t{t} ran again");
                    assert_eq!(done.reply.text(), replies[t], "{name}: t{t}");
                    assert_eq!(done.stored, 2, "{name}: t{t}");
                }
                Err(e) => {
                    assert_eq!(t, 0, "{name}: t{t}: {e}");
                    assert!(
                        matches!(&e, Error::TurnRewritten { turn_id: k, .. } if *k == turn_id),
                        "{name}: t{t}: {e}"
                    );
                    assert_eq!(e.write_outcome(), WriteOutcome::Written, "{name}");
                    assert!(!e.is_transient(), "{name}");
                }
            }
        }
        let after = store.load(&id).await.unwrap().unwrap();
        assert_eq!(
            (after.version, texts(&after.messages)),
            (before.version, texts(&before.messages)),
            "{name}: a retry wrote"
        );
        assert_eq!(
            provider.calls.load(Ordering::SeqCst),
            3,
            "{name}: a retry asked the model"
        );
    }
}

/// A retry of a turn whose earlier attempt may have landed, failing before
/// the store said whether it did, is an unknown outcome — not "nothing
/// written", which would invite a new turn id and a second copy.
#[tokio::test]
async fn a_retry_that_fails_before_its_lookup_is_an_unknown_outcome() {
    let store = Arc::new(Watched::default());
    let provider = Arc::new(Counted::default());
    let pipe = Pipeline::builder(store.clone(), provider.clone()).build();
    let turn_id = IdempotencyKey::new("t-lookup").unwrap();
    let chosen = || ExecOptions::new().turn_id(turn_id.clone());

    // The write is applied, its reply lost.
    store.lose_next_reply.store(true, Ordering::SeqCst);
    let err = pipe
        .execute_with("lookup", Role::User, "Hi, I'm Alice", chosen())
        .await
        .unwrap_err();
    assert_eq!(err.write_outcome(), WriteOutcome::Unknown, "{err}");

    // The retry's load times out: still unknown, and it names the turn.
    store.fail_next_load.store(true, Ordering::SeqCst);
    let err = pipe
        .execute_with("lookup", Role::User, "Hi, I'm Alice", chosen())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Lookup { .. }), "{err}");
    assert_eq!(err.write_outcome(), WriteOutcome::Unknown, "{err}");
    assert_eq!(err.turn_id(), Some(&turn_id));
    assert!(err.is_transient(), "{err}");

    // A turn id the pipeline made cannot have been stored before.
    store.fail_next_load.store(true, Ordering::SeqCst);
    let err = pipe
        .execute("lookup", Role::User, "Hello again")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Store(_)), "{err}");
    assert_eq!(err.write_outcome(), WriteOutcome::NotWritten, "{err}");

    // And the retry that gets through replays the stored turn.
    let done = pipe
        .execute_with("lookup", Role::User, "Hi, I'm Alice", chosen())
        .await
        .unwrap();
    assert!(done.replayed);
    assert_eq!(done.reply.text(), "Nice to meet you, Alice!");
    assert_eq!(provider.calls.load(Ordering::SeqCst), 1);
}

/// A turn with k tool rounds is one load, k progress records and one
/// write; a turn without tools still one load and one write.
#[tokio::test]
async fn a_turn_with_k_tool_rounds_is_one_load_k_records_and_one_write() {
    use crate::tools::{Weather, weather_call};
    let store = Arc::new(Watched::default());
    let provider = Arc::new(Scripted::new(vec![
        weather_call("c1", "Paris", ""),
        weather_call("c2", "Oslo", ""),
        reply(Message::assistant("Sunny in both.")),
        reply(Message::assistant("No tools this time.")),
    ]));
    let pipe = Pipeline::builder(store.clone(), provider)
        .tools(Arc::new(Weather {
            calls: AtomicUsize::new(0),
        }))
        .build();
    pipe.execute("rounds", Role::User, "weather?")
        .await
        .unwrap();
    assert_eq!(
        store.take_calls(),
        [
            ("append_with", 1),
            ("load_recent_as", 1),
            ("put_pending", 2)
        ]
    );
    pipe.execute("rounds", Role::User, "thanks").await.unwrap();
    assert_eq!(
        store.take_calls(),
        [("append_with", 1), ("load_recent_as", 1)]
    );
}

/// A turn that failed in its second tool round is retried with its turn
/// id: the first round's tool does not run again, the model is not asked
/// for it again, and the stored turn is whole, every model call counted.
#[tokio::test]
async fn a_turn_retried_after_a_failed_round_resumes_from_the_last_completed_one() {
    use crate::tools::weather_call;

    /// Fails the first run of the call for Oslo.
    #[derive(Default)]
    struct Flaky {
        runs: Mutex<Vec<String>>,
    }
    #[async_trait]
    impl ToolHandler for Flaky {
        fn specs(&self) -> Vec<ToolSpec> {
            crate::tools::Weather {
                calls: AtomicUsize::new(0),
            }
            .specs()
        }
        async fn call(&self, call: &ToolCall) -> Result<String, BoxError> {
            let mut runs = self.runs.lock().unwrap();
            runs.push(call.arguments.clone());
            if call.arguments == "Oslo" && runs.iter().filter(|a| *a == "Oslo").count() == 1 {
                return Err("the weather service is down".into());
            }
            Ok(format!("sunny in {}", call.arguments))
        }
    }

    let store = memory();
    let provider = Arc::new(Scripted::new(vec![
        weather_call("c1", "Paris", ""),
        weather_call("c2", "Oslo", ""),
        // The retry: the model is asked for round 2 again, not round 1.
        weather_call("c3", "Oslo", ""),
        reply(Message::assistant("Sunny in both.")),
    ]));
    let tools = Arc::new(Flaky::default());
    let pipe = Pipeline::builder(Arc::clone(&store), provider.clone())
        .tools(tools.clone())
        .build();
    let turn = IdempotencyKey::new("weather-1").unwrap();
    let options = || ExecOptions::new().turn_id(turn.clone());
    let err = pipe
        .execute_with("resume", Role::User, "weather?", options())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Tool { .. }), "{err}");
    let done = pipe
        .execute_with("resume", Role::User, "weather?", options())
        .await
        .unwrap();
    assert!(!done.replayed);
    assert_eq!(done.reply.text(), "Sunny in both.");
    assert_eq!(
        *tools.runs.lock().unwrap(),
        ["Paris", "Oslo", "Oslo"],
        "Paris ran once"
    );
    let requests = provider.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 4);
    // The retry's first request already holds round 1.
    let tools_sent = |r: &ChatRequest| r.messages.iter().filter(|m| m.role == Role::Tool).count();
    assert_eq!(tools_sent(&requests[2]), 1);
    let state = store
        .load(&SessionId::new("resume").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        texts(&state.messages),
        [
            "weather?",
            "",
            "sunny in Paris",
            "",
            "sunny in Oslo",
            "Sunny in both."
        ]
    );
    // Round 1's call counted through the recorded progress; the call that
    // asked for the failed round was spent by a run that failed.
    assert_eq!(state.counters[counters::MODEL_CALLS], 3);
    assert_eq!(done.model_calls, 3);
    assert_eq!(state.counters[counters::TURNS], 1);
    // Nothing is left to resume, and a retry now is a replay.
    let again = pipe
        .execute_with("resume", Role::User, "weather?", options())
        .await
        .unwrap();
    assert!(again.replayed);
}

/// On Redis, a turn with k tool rounds is 2 + k round trips: the load, one
/// progress record per round, the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_with_k_tool_rounds_is_two_plus_k_round_trips_on_redis() {
    use crate::tools::{Weather, weather_call};
    let server = RedisServer::start().unwrap();
    let store = Arc::new(RedisStore::builder().connect(&server.url()).await.unwrap());
    let provider = Arc::new(Scripted::new(vec![
        reply(Message::assistant("warmed up")),
        weather_call("c1", "Paris", ""),
        weather_call("c2", "Oslo", ""),
        weather_call("c3", "Rome", ""),
        reply(Message::assistant("Sunny everywhere.")),
    ]));
    let pipe = Pipeline::builder(store, provider)
        .tools(Arc::new(Weather {
            calls: AtomicUsize::new(0),
        }))
        .build();
    pipe.execute("rt-tools", Role::User, "warm up")
        .await
        .unwrap();
    server.reset_stats().unwrap();
    pipe.execute("rt-tools", Role::User, "weather?")
        .await
        .unwrap();
    let stats = server.command_stats().unwrap();
    let count = |name: &str| stats.get(name).copied().unwrap_or(0);
    // One transaction (the load: plain reads), three progress scripts and
    // the write's script.
    assert_eq!(
        (count("multi"), count("exec"), count("evalsha")),
        (1, 1, 3 + 1),
        "{stats:?}"
    );
    assert_eq!(count("exec") + count("evalsha"), 2 + 3, "round trips");
}
