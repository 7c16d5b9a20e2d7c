#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]
use super::*;

/// A valid key's base64 and hex (other bytes), and 44/64-character texts
/// that look like keys.
const B64: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
const SECRET_B64: &str = "q83vASNFZ4n7/78+q83vASNFZ4n7/78+q83vASNFZ4k=";
const SECRET_HEX: &str = "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789";

/// Every substring of length 8 of `secret` that `shown` contains.
fn leaks<'s>(shown: &str, secret: &'s str) -> Vec<&'s str> {
    (0..=secret.len().saturating_sub(8))
        .filter_map(|i| secret.get(i..i + 8))
        .filter(|w| shown.contains(w))
        .collect()
}

/// Display, Debug and every source's Display and Debug.
fn everything_shown(e: &Error) -> String {
    let mut shown = format!("{e} {e:?}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        shown.push_str(&format!(" {s} {s:?}"));
        source = s.source();
    }
    shown
}

#[test]
fn errors_never_show_key_material() {
    let (k, h) = (SECRET_B64, SECRET_HEX);
    let short_b64 = &k[..40];
    let long_b64 = format!("{}{}", &k[..43], "BBBBBBBB");
    let bad_b64 = format!("{}*{}", &k[..20], &k[21..]);
    let unpadded = &k[..43];
    let url_safe = k.replace('+', "-").replace('/', "_");
    let lines = [
        // Wrong order, missing id, missing prefix.
        format!("base64:{k} current"),
        format!("base64:{k} k1 current"),
        format!("hex:{h} current"),
        format!("hex:{h} k1 current"),
        format!("{k} current"),
        format!("{h} current"),
        format!("{k} k1 current"),
        format!("{h} k1 current"),
        format!("current k1 base64:{k}"),
        format!("current base64:{k}"),
        format!("k1 {k} current"),
        format!("k1 {h} current"),
        format!("base64:{k}"),
        format!("hex:{h}"),
        h.to_string(),
        k.to_string(),
        // Extra fields, fields split.
        format!("k1 base64:{k} current extra"),
        format!("k1 base64:{k} extra current"),
        format!("k1 base64:{k} current current"),
        format!("k1 base64:{} {} current", &k[..22], &k[22..]),
        format!("k1 hex:{} {} current", &h[..32], &h[32..]),
        format!("k1 k2 base64:{k} current"),
        // Bad base64, wrong length.
        format!("k1 base64:{bad_b64} current"),
        format!("k1 base64:{short_b64} current"),
        format!("k1 base64:{long_b64} current"),
        format!("k1 base64:{unpadded} current"),
        format!("k1 base64:{url_safe} current"),
        format!("k1 base64:{k}{k} current"),
        format!("k1 base64:{k}{k}{k}{k} current"),
        format!("k1 base64: {k} current"),
        format!("k1 BASE64:{k} current"),
        format!("k1 base-64:{k} current"),
        // Hex variants.
        format!("k1 hex:{} current", &h[..63]),
        format!("k1 hex:{}0 current", h),
        format!("k1 hex:{h}{h} current"),
        format!("k1 hex:0x{} current", &h[2..]),
        format!("k1 0x{h} current"),
        format!("k1 hex:{}g current", &h[..63]),
        format!("k1 hex:{} current", h.to_uppercase().replace('A', "Z")),
        format!("k1 HEX:{h} current"),
        format!("k1 hex:{}:{} current", &h[..32], &h[32..]),
        // Assignment-like forms, quotes.
        format!("k1=base64:{k} current"),
        format!("k1:base64:{k} current"),
        format!("KEYS=\"k1 base64:{k} current\""),
        format!("\"k1 base64:{k} current\""),
        format!("k1 \"base64:{k}\" current"),
        format!("k1 'hex:{h}' current"),
        format!("[k1] base64:{k} current"),
        format!("k1\tbase64:{k}\tcurrent\textra"),
        // Bad ids, which hold or look like the key.
        format!("bad id! base64:{k} current"),
        format!("{h}0 base64:{B64} current"),
        format!("{}/{} base64:{B64} current", &h[..10], &h[10..20]),
        format!("é{h} base64:{B64} current"),
        // Several keys: no current, two current, one id with two keys.
        format!("k1 base64:{k}"),
        format!("k1 base64:{k} current\nk2 hex:{h} current"),
        format!("k1 base64:{k} current\nk1 hex:{h}"),
        format!("k1 hex:{h} current\nk2 base64:{k}\nk2 base64:{B64}"),
        format!("# comment with base64:{k}\nk1 hex:{h}"),
        format!("k1 hex:{h} current\r\nbase64:{k} k2\r\n"),
        // `;`-separated (environment) forms.
        format!("k1 base64:{k};current"),
        format!("k1 base64:{k} current;base64:{k} k2"),
        format!("k1 hex:{h} current; k2 {k}"),
        format!("k1 hex:{h} current;k2 base64:{bad_b64}"),
        format!("k1 hex:{h};k2 base64:{k}"),
        format!("k1 base64:{k} current;;k1 hex:{h}"),
        format!("base64:{k} current;hex:{h}"),
        format!("k1,base64:{k},current"),
        format!("k1 base64:{k} current, k2 hex:{h}"),
    ];
    for text in &lines {
        let e = KeyRing::parse(text).expect_err(text);
        let shown = everything_shown(&e);
        for secret in [SECRET_B64, SECRET_HEX] {
            assert!(
                leaks(&shown, secret).is_empty(),
                "{text:?} shows {:?}: {shown}",
                leaks(&shown, secret)
            );
        }
        assert!(matches!(e, Error::InvalidKey { .. }), "{e:?}");
    }
    // Through the environment: also a value that is not Unicode.
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt as _;
        let mut raw = format!("k1 base64:{k} current ").into_bytes();
        raw.push(0xff);
        let e = from_env_value("KEYS", Some(OsString::from_vec(raw))).unwrap_err();
        let shown = everything_shown(&e);
        assert!(leaks(&shown, SECRET_B64).is_empty(), "{shown}");
    }
    for text in &lines {
        let e = from_env_value("KEYS", Some(text.into())).unwrap_err();
        let shown = everything_shown(&e);
        assert!(leaks(&shown, SECRET_B64).is_empty(), "{shown}");
        assert!(leaks(&shown, SECRET_HEX).is_empty(), "{shown}");
    }
}

#[test]
fn malformed_lines_are_named_by_line_and_entry() {
    let e =
        KeyRing::parse(&format!("# keys\nk1 base64:{B64} current\nbase64:{B64} k2")).unwrap_err();
    assert!(e.to_string().contains("text, line 3"), "{e}");
    assert!(e.to_string().contains("the key id comes first"), "{e}");
    let e = KeyRing::parse(&format!("k1 base64:{B64} current; k2 hex:12")).unwrap_err();
    assert!(e.to_string().contains("text, entry 2"), "{e}");
    assert!(e.to_string().contains("has 2 hex digits"), "{e}");
}

#[test]
fn an_empty_environment_variable_is_an_error() {
    for value in [
        "",
        "   ",
        " ; ;; ",
        "\n\n",
        "# only a comment",
        " ;\n; # x\n",
    ] {
        let e = from_env_value("STATESTORE_KEYS", Some(value.into())).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidKey { source_name, reason }
                if source_name == "environment variable STATESTORE_KEYS"
                    && reason.contains("holds no keys")),
            "{value:?}: {e:?}"
        );
    }
    let e = from_env_value("STATESTORE_KEYS", None).unwrap_err();
    assert!(e.to_string().contains("not set"), "{e}");
    let ring = from_env_value("K", Some(format!("k1 base64:{B64} current;").into())).unwrap();
    assert_eq!(ring.current_id(), "k1");
}

#[cfg(unix)]
#[test]
fn a_key_file_must_be_private_and_owned_by_the_reader() {
    let path = Path::new("/etc/app/keys");
    assert_eq!(unix_insecurity(0o100_600, 1000, 1000, path), None);
    assert_eq!(unix_insecurity(0o100_400, 1000, 1000, path), None);
    for mode in [
        0o100_640, 0o100_604, 0o100_620, 0o100_602, 0o100_610, 0o100_644,
    ] {
        let reason = unix_insecurity(mode, 1000, 1000, path).unwrap();
        assert!(reason.contains("chmod 600 /etc/app/keys"), "{reason}");
    }
    let reason = unix_insecurity(0o100_600, 0, 1000, path).unwrap();
    assert!(reason.contains("owned by user 0"), "{reason}");
    assert!(reason.contains("chown 1000"), "{reason}");
}

#[test]
fn semicolons_separate_entries_and_one_id_is_one_key() {
    let ring = KeyRing::parse(&format!(
        "a base64:{B64}; b hex:{} current",
        "01".repeat(32)
    ))
    .unwrap();
    assert_eq!(ring.current_id(), "b");
    assert!(ring.contains("a"));
    let same = ring
        .clone()
        .with_old_key(Key::from_bytes("a", &[2; 32]).unwrap())
        .unwrap();
    assert_eq!(same.key_ids().count(), 2);
    assert!(
        ring.clone()
            .with_old_key(Key::from_bytes("a", &[3; 32]).unwrap())
            .is_err()
    );
    assert!(ring.clone().without_key("b").is_err());
    assert!(!ring.without_key("a").unwrap().contains("a"));
    // The same key twice is one key; a line may repeat the current one.
    let ring = KeyRing::parse(&format!("a base64:{B64} current\na base64:{B64}")).unwrap();
    assert_eq!(ring.key_ids().collect::<Vec<_>>(), ["a"]);
}

#[test]
fn a_key_line_round_trips_with_its_check_value() {
    let key = Key::generate("2025-06").unwrap();
    let line = key.to_line();
    // Written into one allocation of its final size: no grown-and-freed
    // (unzeroized) copy of the key text was left behind.
    assert_eq!(line.capacity(), line.len());
    let ring = KeyRing::parse(&format!("{} current", line.as_str())).unwrap();
    assert!(ring.current().same_bytes(&key));
    assert_eq!(ring.current().check_value(), key.check_value());
    let hex = KeyRing::parse(&format!("h hex:{} current", "02".repeat(32))).unwrap();
    let b64 = KeyRing::parse(&format!("b base64:{B64} current")).unwrap();
    assert_eq!(hex.current().check_value(), b64.current().check_value());
    assert_ne!(hex.current().check_value(), key.check_value());
}
