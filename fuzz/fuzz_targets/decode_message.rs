//! Stored bytes → message / state: never panics; what decodes re-encodes
//! to something that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use statestore_core::{SessionId, codec};

fuzz_target!(|data: &[u8]| {
    let Ok(id) = SessionId::new("fuzz") else {
        return;
    };
    if let Ok(message) = codec::decode_message(&id, data) {
        let bytes = codec::encode_message(&id, &message).expect("a decoded message encodes");
        let again = codec::decode_message(&id, &bytes).expect("an encoded message decodes");
        assert_eq!(again, message);
    }
    if let Ok(state) = codec::decode_state(&id, data) {
        let bytes = codec::encode_state(&state).expect("a decoded state encodes");
        let again = codec::decode_state(&id, &bytes).expect("an encoded state decodes");
        assert_eq!(again, state);
    }
});
