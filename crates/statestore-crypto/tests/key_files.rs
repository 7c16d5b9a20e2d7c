//! Key files must be private unless the caller says otherwise; an empty
//! ring from a file is an error.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use statestore_crypto::{Error, KeyFileOptions, KeyRing};

const RING: &str = "2025-06 base64:AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI= current\n";

fn key_file(dir: &Path, text: &str, mode: u32) -> std::path::PathBuf {
    let path = dir.join("keys");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn a_key_file_others_can_access_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    for mode in [0o644, 0o640, 0o604, 0o660, 0o620, 0o606, 0o700 | 0o007] {
        let path = key_file(dir.path(), RING, mode);
        let e = KeyRing::from_file(&path).unwrap_err();
        match &e {
            Error::InsecureKeyFile { path: p, reason } => {
                assert_eq!(p, &path);
                assert!(reason.contains(&format!("{:04o}", mode)), "{reason}");
            }
            other => panic!("mode {mode:o}: {other:?}"),
        }
        let shown = e.to_string();
        assert!(shown.contains(&path.display().to_string()), "{shown}");
        assert!(
            shown.contains(&format!("chmod 600 {}", path.display())),
            "{shown}"
        );
        assert!(shown.contains("--allow-insecure-key-file"), "{shown}");
        assert!(e.session().is_none());
        // Allowed explicitly: read (with a warning logged).
        let ring =
            KeyRing::from_file_with(&path, KeyFileOptions::new().allow_insecure(true)).unwrap();
        assert_eq!(ring.current_id(), "2025-06");
    }
    for mode in [0o600, 0o400] {
        let path = key_file(dir.path(), RING, mode);
        assert_eq!(KeyRing::from_file(&path).unwrap().current_id(), "2025-06");
        assert_eq!(
            KeyRing::from_file_with(&path, KeyFileOptions::default())
                .unwrap()
                .current_id(),
            "2025-06"
        );
    }
}

#[test]
fn a_key_file_owned_by_another_user_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let path = key_file(dir.path(), RING, 0o600);
    // Only root can give a file away; elsewhere the unit test of the rule
    // (key::parse::tests) covers it.
    if std::os::unix::fs::chown(&path, Some(65_534), None).is_err() {
        return;
    }
    let e = KeyRing::from_file(&path).unwrap_err();
    assert!(
        matches!(&e, Error::InsecureKeyFile { reason, .. } if reason.contains("owned by user 65534")),
        "{e:?}"
    );
    assert!(e.to_string().contains("chown"), "{e}");
    let ring = KeyRing::from_file_with(&path, KeyFileOptions::new().allow_insecure(true)).unwrap();
    assert_eq!(ring.current_id(), "2025-06");
}

#[test]
fn an_empty_key_file_is_an_error_and_its_path_is_named() {
    let dir = tempfile::tempdir().unwrap();
    for text in ["", "\n\n", "# no keys yet\n", " ; \n"] {
        let path = key_file(dir.path(), text, 0o600);
        let e = KeyRing::from_file(&path).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidKey { source_name, reason }
                if *source_name == path.display().to_string() && reason.contains("holds no keys")),
            "{text:?}: {e:?}"
        );
    }
    // A missing file is said as one, not as a bad key.
    let e = KeyRing::from_file(dir.path().join("missing")).unwrap_err();
    assert!(
        matches!(&e, Error::KeyFileUnreadable { path, source }
            if path.ends_with("missing") && source.kind() == std::io::ErrorKind::NotFound),
        "{e:?}"
    );
    assert!(e.to_string().starts_with("cannot read key file"), "{e}");
}
