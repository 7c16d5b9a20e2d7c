#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]
use super::*;
use crate::Key;
use statestore_core::Role;

fn scope(id: &SessionId) -> Scope<'_> {
    Scope {
        id,
        owner: Some("alice"),
        context: "tenant",
        epoch: Some(&[7; 16]),
    }
}

fn ring(id: &str, byte: u8) -> KeyRing {
    KeyRing::new(Key::from_bytes(id, &[byte; 32]).unwrap())
}

#[test]
fn the_header_is_authenticated_byte_by_byte() {
    let keys = ring("k1", 1);
    let sealer = Sealer {
        keys: Some(&keys),
        compression: Compression::none(),
    };
    let id = SessionId::new("s").unwrap();
    let sealed = sealer.seal_bytes(b"hello", &scope(&id), &Place::SystemPrompt);
    assert_eq!(
        sealer
            .open_bytes(&sealed, &scope(&id), &Place::SystemPrompt, false)
            .unwrap(),
        b"hello"
    );
    for i in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 0x01;
        assert!(
            sealer
                .open_bytes(&bad, &scope(&id), &Place::SystemPrompt, false)
                .is_err(),
            "byte {i}"
        );
    }
}

#[test]
fn compression_is_used_only_when_it_helps() {
    let sealer = Sealer {
        keys: None,
        compression: Compression::zstd().threshold(10),
    };
    let id = SessionId::new("s").unwrap();
    let text = "the same words again and again ".repeat(20);
    let sealed = sealer.seal_bytes(text.as_bytes(), &scope(&id), &Place::SystemPrompt);
    assert_eq!(sealed[2], CODEC_ZSTD);
    assert!(sealed.len() < text.len() / 4);
    let opened = sealer
        .open_bytes(&sealed, &scope(&id), &Place::SystemPrompt, true)
        .unwrap();
    assert_eq!(opened, text.as_bytes());
    let random: Vec<u8> = (0..50)
        .flat_map(|_| chacha20poly1305::XChaCha20Poly1305::generate_nonce(&mut OsRng))
        .collect();
    let sealed = sealer.seal_bytes(&random, &scope(&id), &Place::SystemPrompt);
    assert_eq!(
        sealed[2], CODEC_NONE,
        "incompressible bytes are stored as they are"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Any body round-trips, compressed or not, encrypted or not; any
    /// single changed byte of an encrypted envelope, or another
    /// session or place, is refused — never accepted, never a panic.
    #[test]
    fn round_trip_and_any_single_byte_tamper_is_refused(
        body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
        repeat in 1usize..4,
        session in "[a-z{}:*]{1,12}",
        key in "[a-z]{0,8}",
        position in 0u64..1000,
        at in proptest::prelude::any::<proptest::sample::Index>(),
        flip in 1u8..=255,
        encrypt in proptest::prelude::any::<bool>(),
    ) {
        let body = body.repeat(repeat);
        let keys = ring("k1", 1);
        let sealer = Sealer {
            keys: encrypt.then_some(&keys),
            compression: Compression::zstd().threshold(64),
        };
        let id = SessionId::new(&session).unwrap();
        let places = [
            Place::Metadata(&key),
            Place::Message { position, role: Role::User, token_count: None, timestamp: None },
            Place::Summary { index: position, covers: 0..position, token_count: None, created_at: Timestamp::from_unix_millis(position) },
            Place::SystemPrompt,
        ];
        for place in &places {
            let sealed = sealer.seal(&body, &scope(&id), place);
            proptest::prop_assert!(sealed.starts_with(PREFIX));
            let opened = sealer.open(&sealed, &scope(&id), place, true);
            proptest::prop_assert_eq!(opened.as_deref(), Ok(body.as_slice()));
            if !encrypt {
                continue;
            }
            let mut bytes = decode_text(&sealed).unwrap();
            let i = at.index(bytes.len());
            bytes[i] ^= flip;
            proptest::prop_assert!(sealer.open_bytes(&bytes, &scope(&id), place, false).is_err(), "byte {i} changed");
            let other = SessionId::new(format!("{session}x")).unwrap();
            proptest::prop_assert_eq!(
                sealer.open(&sealed, &scope(&other), place, false),
                Err(Fault::Integrity("k1".into()))
            );
            for elsewhere in places.iter().filter(|p| p.field() != place.field()) {
                proptest::prop_assert!(sealer.open(&sealed, &scope(&id), elsewhere, false).is_err());
            }
        }
    }
}
