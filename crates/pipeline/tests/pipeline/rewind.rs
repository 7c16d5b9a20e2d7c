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
