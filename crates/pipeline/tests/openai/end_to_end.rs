//! End to end: the pipeline over a real HTTP provider and a real store.

use super::*;
use crate::streaming::{STREAM, Seen, recorder, restarted_once, text_stream};

/// The seed's Quick Start through `Pipeline` and `OpenAiProvider` against
/// the local server: the second request must carry the first turn.
async fn two_turns_over_http(store: Arc<dyn statestore_core::Store>) {
    let server = Server::start(vec![
        Reply::json(
            200,
            completion(
                json!({"role": "assistant", "content": "Nice to meet you, Alice!"}),
                "stop",
                Some((20, 6)),
            ),
        ),
        Reply::json(
            200,
            completion(
                json!({"role": "assistant", "content": "Your name is Alice"}),
                "stop",
                Some((40, 5)),
            ),
        ),
    ])
    .await;
    let provider = Arc::new(builder(&server).build().unwrap());
    let pipe = pipeline::Pipeline::builder(Arc::clone(&store), provider)
        .system_prompt("You are helpful.")
        .build();
    pipe.execute("user-123-conversation", Role::User, "Hi, I'm Alice")
        .await
        .unwrap();
    let second = pipe
        .execute("user-123-conversation", Role::User, "What's my name?")
        .await
        .unwrap();
    assert_eq!(second.reply.text(), "Your name is Alice");
    assert_eq!(
        second.usage,
        Usage {
            prompt_tokens: 40,
            completion_tokens: 5
        }
    );

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let sent = requests[1].json();
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "Hi, I'm Alice"},
            {"role": "assistant", "content": "Nice to meet you, Alice!"},
            {"role": "user", "content": "What's my name?"},
        ]),
        "the second request did not carry the first turn"
    );
    let id = statestore_core::SessionId::new("user-123-conversation").unwrap();
    let state = store.load(&id).await.unwrap().unwrap();
    assert_eq!(state.messages.len(), 4);
    assert_eq!(state.counters["prompt_tokens"], 60);
    assert_eq!(state.counters["completion_tokens"], 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_two_turns_on_memory() {
    two_turns_over_http(Arc::new(statestore_memory::MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_two_turns_on_redis() {
    let redis = redis_test_server::RedisServer::start().unwrap();
    let store = statestore_redis::RedisStore::builder()
        .connect(&redis.url())
        .await
        .unwrap();
    two_turns_over_http(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_provider_failure_stores_nothing() {
    let server = Server::start(vec![
        Reply::raw(500, "boom"),
        Reply::raw(500, "boom"),
        Reply::raw(500, "boom"),
    ])
    .await;
    let provider = Arc::new(builder(&server).build().unwrap());
    let store: Arc<dyn statestore_core::Store> = Arc::new(statestore_memory::MemoryStore::new());
    let pipe = pipeline::Pipeline::builder(Arc::clone(&store), provider).build();
    let err = pipe.execute("s", Role::User, "hello").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Status {
                status: 500,
                attempts: 3,
                ..
            }
        ),
        "{err}"
    );
    let id = statestore_core::SessionId::new("s").unwrap();
    assert!(
        store.load(&id).await.unwrap().is_none(),
        "a failed turn created the session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_a_restarted_stream_reaches_the_caller_and_only_the_reply_is_stored() {
    let server = Server::start(vec![
        Reply::sse_then_close(&STREAM[..3]),
        text_stream(&["Salut", " !"]),
    ])
    .await;
    let provider = Arc::new(builder(&server).build().unwrap());
    let store: Arc<dyn statestore_core::Store> = Arc::new(statestore_memory::MemoryStore::new());
    let pipe = pipeline::Pipeline::builder(Arc::clone(&store), provider).build();
    let mut seen = Vec::new();
    let executed = pipe
        .execute_streaming("s", Role::User, "Salut", &mut recorder(&mut seen))
        .await
        .unwrap();
    assert_eq!(executed.reply.text(), "Salut !");
    let mut expected = restarted_once();
    expected.push(Seen::Done);
    assert_eq!(seen, expected);
    assert_eq!(server.count(), 2);

    let id = statestore_core::SessionId::new("s").unwrap();
    let state = store.load(&id).await.unwrap().unwrap();
    let texts: Vec<String> = state
        .messages
        .iter()
        .map(|m| m.text().into_owned())
        .collect();
    assert_eq!(texts, ["Salut", "Salut !"]);
    assert_eq!(state.counters["completion_tokens"], 2);
}
