//! Entry points for the fuzz targets in `fuzz/` (feature `__fuzzing`);
//! not a public API.

use statestore_core::SessionId;

/// Checks the key layout's promises for `id` under `prefix`; panics on
/// a violation (that is what the fuzzer looks for).
pub fn check_key_encoding(prefix: &str, id: &SessionId) {
    let Ok(keys) = crate::keys::Keys::new(prefix) else {
        return;
    };
    let session = keys.session(id);
    for key in session.all() {
        let open = key.find('{');
        let close = key.find('}');
        assert!(
            matches!((open, close), (Some(o), Some(c)) if o < c && c > o + 1),
            "{key:?} has no non-empty hash tag"
        );
        assert_eq!(key.matches('{').count(), 1, "{key:?}");
        assert_eq!(key.matches('}').count(), 1, "{key:?}");
    }
    assert_eq!(
        keys.id_from_header_key(session.header.as_bytes()).as_ref(),
        Some(id),
        "the header key does not decode back to its id"
    );
}
