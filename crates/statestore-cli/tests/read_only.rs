//! A store this user may read but not write (issue 26, item 3): `chat` is
//! refused before the model is called, saying nothing was written; reads
//! work; `doctor` reports it. Run as `nobody` (`setpriv`), since root
//! ignores permission bits; skipped, saying so, where that cannot be done.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::Env;

#[test]
fn a_read_only_store_is_refused_before_the_model_is_called() {
    let env = Env::new();
    let dir = env.path("ro");
    std::fs::create_dir(&dir).unwrap();
    let db = dir.join("store.db");
    let url = format!("sqlite://{}", db.display());
    env.ok(&["--store", &url, "chat", "first turn"]);
    let before = env.ok(&["--store", &url, "--json", "show", "default"]);

    // The file is root's and read-only to others; the directory anyone's
    // (SQLite makes the -wal and -shm files beside it).
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let root = std::fs::OpenOptions::new().append(true).open(&db).is_ok();
    let setpriv = Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !root || !setpriv {
        eprintln!("SKIPPED: needs root and setpriv to run the command as another user");
        return;
    }
    // A copy of the binary `nobody` can run, and every directory on the
    // way to it and to the store open to it.
    let bin = env.path("statestore");
    std::fs::copy(env!("CARGO_BIN_EXE_statestore"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(env.path(""), std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = |args: &[&str]| {
        let cmd = env.cmd();
        let mut wrapped = Command::new("setpriv");
        wrapped.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
        wrapped.arg(&bin).args(args);
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => wrapped.env(k, v),
                None => wrapped.env_remove(k),
            };
        }
        let out = wrapped.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, stdout, stderr) = as_nobody(&["--store", &url, "chat", "second turn"]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stdout.is_empty(),
        "the model answered before the refusal: {stdout}"
    );
    assert!(stderr.contains("nothing was written"), "{stderr}");
    assert!(stderr.contains("cannot write the store"), "{stderr}");

    // Reads work, and nothing changed.
    let (code, shown, stderr) = as_nobody(&["--store", &url, "--json", "show", "default"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(shown, before);

    let (code, report, _) = as_nobody(&["--store", &url, "doctor"]);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("FAIL") && l.contains("write")),
        "{report}"
    );
    // As its owner, the store is fine.
    let report = env.ok(&["--store", &url, "doctor"]);
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("ok") && l.contains("write")),
        "{report}"
    );
}
