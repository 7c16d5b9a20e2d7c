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

fn legacy(id: &SessionId) -> Scope<'_> {
    Scope {
        id,
        owner: None,
        context: "",
        epoch: None,
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
        limits: Limits::default(),
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
        limits: Limits::default(),
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
            limits: Limits::default(),
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

fn sealer(keys: Option<&KeyRing>, compression: Compression) -> Sealer<'_> {
    Sealer {
        keys,
        compression,
        limits: Limits::default(),
    }
}

/// Written by the previous release (format 1, no key check value) with
/// key `k1` = 32 × 0x01 for session `s`: the system prompt, and message 3
/// (assistant, compressed).
const FORMAT_1_PROMPT: &str =
    "sealed:AQEAAmsx/c8VdE2owaDROXD1bXh2IIUJIGKZAnlOCy7ePL9VpyekXsMNl7X5JCNya1aiRkCFr0ZzO7tf5A";
const FORMAT_1_MESSAGE: &str = "sealed:AQEBAmsxA8yAWIu/QvVtsMVdNqRGnxdXn+1O5D9D+58GNhm3xddcJ7joGlDJ0pjJ5u08A6lZ1UiPYtVgD2VTDoVmB1cphd//jeM3O0XyA5S+tk3c";

fn assistant_at(position: u64) -> Place<'static> {
    Place::Message {
        position,
        role: Role::Assistant,
        token_count: None,
        timestamp: None,
    }
}

#[test]
fn format_1_envelopes_still_open_and_a_wrong_key_there_is_integrity() {
    let keys = ring("k1", 1);
    let id = SessionId::new("s").unwrap();
    let open = sealer(Some(&keys), Compression::none());
    assert_eq!(
        open.open(FORMAT_1_PROMPT, &legacy(&id), &Place::SystemPrompt, true)
            .unwrap(),
        b"hello, format 1"
    );
    assert_eq!(
        open.open(FORMAT_1_MESSAGE, &legacy(&id), &assistant_at(3), true)
            .unwrap(),
        "format 1, compressed. ".repeat(8).as_bytes()
    );
    // No check value to compare: another key under k1 is an Integrity.
    let other = ring("k1", 2);
    assert_eq!(
        sealer(Some(&other), Compression::none()).open(
            FORMAT_1_PROMPT,
            &legacy(&id),
            &Place::SystemPrompt,
            true
        ),
        Err(Fault::Integrity("k1".into()))
    );
    // Read only while migrating, and never in a session with an epoch.
    assert_eq!(
        open.open(FORMAT_1_PROMPT, &legacy(&id), &Place::SystemPrompt, false),
        Err(Fault::Unbound)
    );
    assert_eq!(
        open.open(FORMAT_1_PROMPT, &scope(&id), &Place::SystemPrompt, true),
        Err(Fault::Unbound)
    );
    // Still bound to its place.
    assert_eq!(
        open.open(FORMAT_1_MESSAGE, &legacy(&id), &assistant_at(4), true),
        Err(Fault::Integrity("k1".into()))
    );
}

#[test]
fn format_2_carries_the_check_value_and_tells_a_wrong_key_from_tampering() {
    let keys = ring("k1", 1);
    let id = SessionId::new("s").unwrap();
    let seal = sealer(Some(&keys), Compression::none());
    let sealed = seal.seal_bytes(b"hello", &scope(&id), &Place::SystemPrompt);
    assert_eq!(sealed[0], 2, "format 2 is written");
    let check = keys.current().check_value();
    assert_eq!(&sealed[6..10], check.as_slice(), "after the key id `k1`");
    // Another key under the same id: WrongKey, not Integrity.
    let other = ring("k1", 2);
    assert_eq!(
        sealer(Some(&other), Compression::none()).open_bytes(
            &sealed,
            &scope(&id),
            &Place::SystemPrompt,
            false
        ),
        Err(Fault::WrongKey("k1".into()))
    );
    // The right key, changed bytes (body, tag, nonce) or another place:
    // Integrity.
    for i in [10, 20, 34, sealed.len() - 1] {
        let mut bad = sealed.clone();
        bad[i] ^= 0x40;
        assert_eq!(
            seal.open_bytes(&bad, &scope(&id), &Place::SystemPrompt, false),
            Err(Fault::Integrity("k1".into())),
            "byte {i}"
        );
    }
    assert_eq!(
        seal.open_bytes(&sealed, &scope(&id), &Place::Metadata("x"), false),
        Err(Fault::Integrity("k1".into()))
    );
    // A newer format is refused as such.
    let mut future = sealed.clone();
    future[0] = 3;
    assert_eq!(
        seal.open_bytes(&future, &scope(&id), &Place::SystemPrompt, false),
        Err(Fault::Format(3))
    );
}

/// A zstd frame of `size` zero bytes, compressed as it is written (never
/// held whole).
pub(crate) fn zeros_frame(size: u64) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
    encoder.set_pledged_src_size(Some(size)).unwrap();
    encoder.include_contentsize(true).unwrap();
    let chunk = vec![0u8; 1 << 16];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64);
        encoder
            .write_all(&chunk[..usize::try_from(n).unwrap()])
            .unwrap();
        left -= n;
    }
    encoder.finish().unwrap()
}

#[test]
fn one_value_just_over_the_per_value_limit_fails_one_just_under_opens() {
    let keys = ring("k1", 1);
    let id = SessionId::new("s").unwrap();
    let cap = Compression::DEFAULT_MAX_DECOMPRESSED_BYTES;
    // A writer with a higher limit compresses what the reader may refuse.
    let writer = Sealer {
        keys: Some(&keys),
        compression: Compression::zstd(),
        limits: Limits {
            per_value: u64::MAX,
            per_load: u64::MAX,
        },
    };
    let reader = sealer(Some(&keys), Compression::none());
    for (size, opens) in [(cap - 1, true), (cap, true), (cap + 1, false)] {
        let body = vec![b'a'; usize::try_from(size).unwrap()];
        let sealed = writer.seal_bytes(&body, &scope(&id), &Place::SystemPrompt);
        assert_eq!(sealed[2], CODEC_ZSTD);
        let opened = reader.open_bytes(&sealed, &scope(&id), &Place::SystemPrompt, false);
        if opens {
            assert_eq!(opened.unwrap().len() as u64, size);
        } else {
            assert_eq!(opened, Err(Fault::BodyTooLarge(cap)));
        }
    }
    // The reader's own writes of such a body are not compressed, so it
    // reads them.
    let body = vec![b'a'; usize::try_from(cap + 1).unwrap()];
    let own = sealer(Some(&keys), Compression::zstd());
    let sealed = own.seal_bytes(&body, &scope(&id), &Place::SystemPrompt);
    assert_eq!(sealed[2], CODEC_NONE);
    assert_eq!(
        own.open_bytes(&sealed, &scope(&id), &Place::SystemPrompt, false)
            .unwrap()
            .len(),
        body.len()
    );
    // A frame declaring a gigabyte is refused from its header (as within
    // the limit of the previous release, 64 MiB, a 60 MiB one).
    for size in [60 << 20, 1 << 30] {
        let mut bomb = vec![2, ALG_NONE, CODEC_ZSTD, 0];
        bomb.extend(zeros_frame(size));
        assert!(bomb.len() < 64 << 10, "a small value");
        assert_eq!(
            sealer(None, Compression::none()).open_bytes(
                &bomb,
                &scope(&id),
                &Place::SystemPrompt,
                true
            ),
            Err(Fault::BodyTooLarge(cap))
        );
    }
}

#[test]
fn a_thousand_sealed_bombs_exhaust_the_budget_of_one_read() {
    let keys = ring("k1", 1);
    let id = SessionId::new("s").unwrap();
    // Each expands 1 MiB from a few dozen bytes, under the per-value limit.
    let body = vec![b'x'; 1 << 20];
    let seal = sealer(Some(&keys), Compression::zstd());
    let bombs: Vec<Vec<u8>> = (0..1000)
        .map(|p| seal.seal_bytes(&body, &scope(&id), &assistant_at(p)))
        .collect();
    assert!(bombs.iter().all(|b| b.len() < 1024 && b[2] == CODEC_ZSTD));
    let open_all = |budget: u64| -> Result<usize, (u64, Fault)> {
        let _budget = LoadBudget::start(budget);
        let mut total = 0;
        for (p, bomb) in (0..).zip(&bombs) {
            total += seal
                .open_bytes(bomb, &scope(&id), &assistant_at(p), false)
                .map_err(|f| (p, f))?
                .len();
        }
        Ok(total)
    };
    let limit = 64 << 20;
    assert_eq!(open_all(limit), Err((64, Fault::LoadTooLarge(limit))));
    // The default budget (256 MiB) is exhausted too, at value 256.
    let limit = Compression::DEFAULT_MAX_DECOMPRESSED_BYTES_PER_LOAD;
    assert_eq!(open_all(limit), Err((256, Fault::LoadTooLarge(limit))));
    // Outside a read's budget (a write's own check), each value opens.
    assert_eq!(
        seal.open_bytes(&bombs[999], &scope(&id), &assistant_at(999), false)
            .unwrap()
            .len(),
        1 << 20
    );
}

#[test]
fn compression_applies_to_the_chosen_roles_only() {
    let id = SessionId::new("s").unwrap();
    let body = "the same words again and again ".repeat(40);
    let roles = Compression::zstd().roles(&[Role::Assistant, Role::Tool]);
    let seal = sealer(None, roles);
    let codec_of = |place: &Place<'_>| seal.seal_bytes(body.as_bytes(), &scope(&id), place)[2];
    let message = |role| Place::Message {
        position: 0,
        role,
        token_count: None,
        timestamp: None,
    };
    assert_eq!(codec_of(&message(Role::Assistant)), CODEC_ZSTD);
    assert_eq!(codec_of(&message(Role::Tool)), CODEC_ZSTD);
    assert_eq!(codec_of(&message(Role::User)), CODEC_NONE);
    assert_eq!(codec_of(&message(Role::System)), CODEC_NONE);
    for place in [
        Place::SystemPrompt,
        Place::Metadata("k"),
        Place::Pending("w"),
        Place::Summary {
            index: 0,
            covers: 0..1,
            token_count: None,
            created_at: Timestamp::from_unix_millis(0),
        },
    ] {
        assert_eq!(codec_of(&place), CODEC_NONE, "{place:?}");
    }
    let all = sealer(None, Compression::zstd());
    assert_eq!(
        all.seal_bytes(body.as_bytes(), &scope(&id), &Place::SystemPrompt)[2],
        CODEC_ZSTD
    );
    assert_eq!(
        Compression::none().roles(&[Role::User]),
        Compression::none()
    );
    assert!(!Compression::zstd().roles(&[]).compresses_role(Role::User));
}
