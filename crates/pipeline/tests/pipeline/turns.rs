//! Turns: the seed's Quick Start, nothing stored on failure, concurrent
//! turns, the reject policy, windows and streaming.

use super::*;

async fn quick_start(store: Arc<dyn Store>) {
    let pipe = Pipeline::builder(Arc::clone(&store), Arc::new(OfflineProvider::new())).build();
    let first = pipe
        .execute("user-123-conversation", Role::User, "Hi, I'm Alice")
        .await
        .unwrap();
    assert_eq!(first.version, 1, "one write per turn");
    let second = pipe
        .execute("user-123-conversation", Role::User, "What's my name?")
        .await
        .unwrap();
    assert_eq!(second.reply.text(), "Your name is Alice");
    assert_eq!(second.context_messages, 2, "the first turn was sent");

    let id = SessionId::new("user-123-conversation").unwrap();
    let state = store.load(&id).await.unwrap().unwrap();
    let texts = texts(&state.messages);
    assert_eq!(texts, ALICE_TURNS);
    assert_eq!(state.version, 2, "one write per turn");
    let counted = &state.counters;
    assert_eq!(counted[counters::TURNS], 2);
    assert_eq!(counted[counters::MODEL_CALLS], 2);
    assert_eq!(
        counted[counters::PROMPT_TOKENS],
        first.usage.prompt_tokens + second.usage.prompt_tokens
    );
    assert_eq!(
        counted[counters::COMPLETION_TOKENS],
        first.usage.completion_tokens + second.usage.completion_tokens
    );
    assert!(
        state.metadata.is_empty(),
        "usage no longer lives in metadata"
    );
    // Every stored message carries its token count: later windows count nothing.
    assert!(state.messages.iter().all(|m| m.token_count.is_some()));
}

#[tokio::test]
async fn quick_start_on_memory() {
    quick_start(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_on_redis() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::builder().connect(&server.url()).await.unwrap();
    quick_start(Arc::new(store)).await;
}

#[tokio::test]
async fn a_failed_turn_stores_nothing() {
    let store = memory();
    let provider = Arc::new(Scripted::new(vec![
        reply(Message::assistant("first")),
        Err(Error::Status {
            status: 500,
            attempts: 3,
            message: "down".into(),
        }),
    ]));
    let pipe = Pipeline::builder(Arc::clone(&store), provider).build();
    pipe.execute("s", Role::User, "one").await.unwrap();
    let err = pipe.execute("s", Role::User, "two").await.unwrap_err();
    assert!(matches!(err, Error::Status { status: 500, .. }), "{err}");
    let state = store
        .load(&SessionId::new("s").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        state.messages.len(),
        2,
        "the failed turn left something behind"
    );
    assert!(matches!(
        pipe.execute("", Role::User, "x").await,
        Err(Error::Store(statestore_core::Error::InvalidId { .. }))
    ));
}

async fn concurrent_turns(store: Arc<dyn Store>) {
    // Two pipelines on one store stand for two app instances: their
    // in-process locks do not see each other, so the store's versions decide.
    let a = Pipeline::builder(Arc::clone(&store), Arc::new(OfflineProvider::new()))
        .concurrency(Concurrency::Retry { attempts: 100 })
        .build();
    let b = Pipeline::builder(Arc::clone(&store), Arc::new(OfflineProvider::new()))
        .concurrency(Concurrency::Retry { attempts: 100 })
        .build();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..24 {
        let pipe = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move {
            pipe.execute("shared", Role::User, format!("message {i}"))
                .await
        });
    }
    let (mut spent, mut calls) = (Usage::default(), 0);
    while let Some(r) = tasks.join_next().await {
        let done = r.unwrap().unwrap();
        spent += done.usage;
        calls += done.model_calls;
    }
    let state = store
        .load(&SessionId::new("shared").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.messages.len(), 48, "a turn was lost");
    for pair in state.messages.chunks(2) {
        assert_eq!(pair[0].role, Role::User);
        assert_eq!(pair[1].role, Role::Assistant);
        assert_eq!(
            pair[1].text(),
            format!("You said: {}", pair[0].text()),
            "turns interleaved"
        );
    }
    assert_eq!(state.counters[counters::TURNS], 24, "usage lost an update");
    // Discarded attempts are paid for, and counted, too.
    assert_eq!(state.counters[counters::MODEL_CALLS], calls);
    assert_eq!(state.counters[counters::PROMPT_TOKENS], spent.prompt_tokens);
    assert_eq!(
        state.counters[counters::COMPLETION_TOKENS],
        spent.completion_tokens
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_turns_on_memory() {
    concurrent_turns(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_turns_on_redis() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::builder().connect(&server.url()).await.unwrap();
    concurrent_turns(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_policy_reports_busy_instead_of_retrying() {
    let store = memory();
    let a = Pipeline::builder(Arc::clone(&store), Arc::new(OfflineProvider::new()))
        .concurrency(Concurrency::Reject)
        .build();
    let b = Pipeline::builder(Arc::clone(&store), Arc::new(OfflineProvider::new()))
        .concurrency(Concurrency::Reject)
        .build();
    let mut busy = 0;
    let mut ok = 0;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let pipe = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move { pipe.execute("contended", Role::User, "hi").await });
    }
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(_) => ok += 1,
            Err(Error::Busy { attempts: 1, .. }) => busy += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok + busy, 40);
    let state = store
        .load(&SessionId::new("contended").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.messages.len(), ok * 2, "a rejected turn was stored");
}

#[tokio::test]
async fn a_bounded_window_sends_only_the_tail() {
    let store = memory();
    let provider = Arc::new(Scripted::new(vec![]));
    let pipe = Pipeline::builder(Arc::clone(&store), provider.clone())
        .window(WindowPolicy::default().max_messages(5))
        .system_prompt("be brief")
        .build();
    for i in 0..10 {
        pipe.execute("w", Role::User, format!("q{i}"))
            .await
            .unwrap();
    }
    let requests = provider.requests.lock().unwrap();
    let last = requests.last().unwrap();
    assert_eq!(last.messages.len(), 6, "system prompt + 5 messages");
    assert_eq!(last.messages[0].text(), "be brief");
    assert_eq!(last.messages[5].text(), "q9");
}

#[tokio::test]
async fn streaming_delivers_text_and_stores_the_whole_reply() {
    let store = memory();
    let pipe = Pipeline::builder(Arc::clone(&store), Arc::new(OfflineProvider::new())).build();
    let mut streamed = String::new();
    let mut done_events = 0;
    let done = pipe
        .execute_streaming(
            "s",
            Role::User,
            "stream this",
            &mut |e: StreamEvent<'_>| match e {
                StreamEvent::Delta(d) => streamed.push_str(d),
                StreamEvent::Restart => streamed.clear(),
                StreamEvent::Done => done_events += 1,
                _ => {}
            },
        )
        .await
        .unwrap();
    assert_eq!(streamed, "You said: stream this");
    assert_eq!(done_events, 1, "one Done, at the end");
    assert_eq!(done.reply.text(), streamed);
    let state = store
        .load(&SessionId::new("s").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.messages[1].text(), streamed);
}
