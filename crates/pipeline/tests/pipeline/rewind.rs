//! Rewinds and the turns they take away: a retry of a rewound turn is
//! `TurnRewound` — never run again, never another turn's reply — on the
//! memory store and on real Redis.

use super::*;

async fn retry_of_a_rewound_turn_is_refused(store: Arc<dyn Store>) {
    let provider = Arc::new(Scripted::new(vec![
        reply(Message::assistant("a1")),
        reply(Message::assistant("a2")),
        reply(Message::assistant("a2 again")),
    ]));
    let pipeline = Pipeline::builder(Arc::clone(&store), provider.clone()).build();
    let first = ExecOptions::new().turn_id(IdempotencyKey::new("t1").unwrap());
    let second = ExecOptions::new().turn_id(IdempotencyKey::new("t2").unwrap());
    pipeline
        .execute_with("s", Role::User, "q1", first)
        .await
        .unwrap();
    pipeline
        .execute_with("s", Role::User, "q2", second.clone())
        .await
        .unwrap();
    let id = SessionId::new("s").unwrap();

    // Back to the end of turn one; then turn two's caller retries it.
    store
        .rewind(&id, 2, statestore_core::Expect::Any)
        .await
        .unwrap();
    let retried = pipeline.execute_with("s", Role::User, "q2", second).await;
    match retried {
        Err(Error::TurnRewound { turn_id, .. }) => assert_eq!(turn_id.as_str(), "t2"),
        other => panic!("a retry of a rewound turn: {other:?}"),
    }
    assert_eq!(
        provider.requests.lock().unwrap().len(),
        2,
        "the model was not asked again"
    );
    let state = store.load(&id).await.unwrap().unwrap();
    assert_eq!(texts(&state.messages), ["q1", "a1"]);

    // A new turn goes on from the rewound history.
    pipeline
        .execute("s", Role::User, "q2 edited")
        .await
        .unwrap();
    let state = store.load(&id).await.unwrap().unwrap();
    assert_eq!(
        texts(&state.messages),
        ["q1", "a1", "q2 edited", "a2 again"]
    );
}

#[tokio::test]
async fn a_rewound_turn_is_not_run_again_on_memory() {
    retry_of_a_rewound_turn_is_refused(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewound_turn_is_not_run_again_on_redis() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::builder().connect(&server.url()).await.unwrap();
    retry_of_a_rewound_turn_is_refused(Arc::new(store)).await;
}

/// Three turns, stored under ids t1..t3, answered a1..a3.
async fn three_turns(store: &Arc<dyn Store>, provider: Arc<Scripted>) -> Pipeline {
    let pipeline = Pipeline::builder(Arc::clone(store), provider).build();
    for i in 1..=3 {
        let options = ExecOptions::new().turn_id(IdempotencyKey::new(format!("t{i}")).unwrap());
        let q = format!("q{i}");
        pipeline
            .execute_with("s", Role::User, q, options)
            .await
            .unwrap();
    }
    pipeline
}

fn answers(texts: &[&str]) -> Arc<Scripted> {
    Arc::new(Scripted::new(
        texts
            .iter()
            .map(|t| reply(Message::assistant(*t)))
            .collect(),
    ))
}

#[tokio::test]
async fn regenerate_asks_again_in_place_and_a_retry_replays() {
    let store = memory();
    let provider = answers(&["a1", "a2", "a3", "a2 again"]);
    let pipeline = three_turns(&store, provider.clone()).await;
    let id = SessionId::new("s").unwrap();
    let turns = pipeline::stored_turns(&store.load(&id).await.unwrap().unwrap().messages, 0);
    assert_eq!(turns.len(), 3);
    assert_eq!((turns[1].start, turns[1].end), (2, 4));

    let redo = pipeline::Redo::new().turn_id(IdempotencyKey::new("t2-again").unwrap());
    let done = pipeline
        .regenerate("s", pipeline::TurnRef::Index(1), redo.clone())
        .await
        .unwrap();
    assert_eq!(done.reply.text(), "a2 again");
    let state = store.load(&id).await.unwrap().unwrap();
    assert_eq!(texts(&state.messages), ["q1", "a1", "q2", "a2 again"]);
    // A retry of the regenerate: the new turn, replayed; nothing asked.
    let again = pipeline
        .regenerate("s", pipeline::TurnRef::Index(1), redo)
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.reply.text(), "a2 again");
    assert_eq!(provider.requests.lock().unwrap().len(), 4);
    // The turns it took away are not run again.
    let old = ExecOptions::new().turn_id(IdempotencyKey::new("t3").unwrap());
    let retried = pipeline.execute_with("s", Role::User, "q3", old).await;
    assert!(
        matches!(retried, Err(Error::TurnRewound { .. })),
        "{retried:?}"
    );
    let missing = pipeline
        .regenerate("s", pipeline::TurnRef::Index(9), pipeline::Redo::new())
        .await;
    assert!(
        matches!(missing, Err(Error::NoSuchTurn { .. })),
        "{missing:?}"
    );
}

#[tokio::test]
async fn edit_into_a_branch_leaves_the_original() {
    let store = memory();
    let provider = answers(&["a1", "a2", "a3", "edited answer"]);
    let pipeline = three_turns(&store, provider).await;
    let branch = SessionId::new("s-branch").unwrap();
    let turn = pipeline::TurnRef::Id(IdempotencyKey::new("t2").unwrap());
    let redo = pipeline::Redo::new().into(branch.clone());
    pipeline.edit("s", turn, "q2 edited", redo).await.unwrap();
    let original = store
        .load(&SessionId::new("s").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        texts(&original.messages),
        ["q1", "a1", "q2", "a2", "q3", "a3"]
    );
    let branched = store.load(&branch).await.unwrap().unwrap();
    assert_eq!(
        texts(&branched.messages),
        ["q1", "a1", "q2 edited", "edited answer"]
    );
}
