//! Any string → session id: never panics; a valid id round-trips through
//! JSON and through the Redis key layout (one non-empty hash tag, decodes
//! back to itself) under any legal prefix.
#![no_main]

use libfuzzer_sys::fuzz_target;
use statestore_core::SessionId;

fuzz_target!(|input: (&str, &str)| {
    let (prefix, raw) = input;
    let Ok(id) = SessionId::new(raw) else { return };
    assert_eq!(id.as_str(), raw);
    let json = serde_json::to_string(&id).expect("ids serialize");
    let back: SessionId = serde_json::from_str(&json).expect("ids deserialize");
    assert_eq!(back, id);
    statestore_redis::fuzzing::check_key_encoding(prefix, &id);
});
