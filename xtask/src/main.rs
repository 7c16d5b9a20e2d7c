//! Project automation, one subcommand per job (the rust-analyzer pattern).
//! Few dependencies on purpose, so it builds before anything else works:
//! serde and serde_json (small, pure Rust) for the JSON it reads and writes
//! (criterion's estimates, `cargo metadata`, `docs/benchmarks.json`), and
//! `redis-test-server` and `pg-test-server` with no features (std, rustix
//! and thiserror) for their throwaway redis-servers and PostgreSQL clusters.
//! Nothing that needs a C toolchain or a system library.
//!
//! ```text
//! cargo xtask ci      # everything CI checks, on a fresh machine
//! cargo xtask tidy    # source checks that need no build (part of ci)
//! cargo xtask bench   # every benchmark and redis-benchmark → docs/benchmarks.md
//! cargo xtask bench --render # docs/benchmarks.md again from docs/benchmarks.json
//! cargo xtask bench --server-work # instructions per call in redis-server (callgrind)
//! cargo xtask server-work # those instructions against their budgets (part of ci)
//! cargo xtask features # clippy of every crate with no default features and each feature alone
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod tidy;

use pg_test_server::PgServer;
use redis_test_server::RedisServer;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

type Result<T = ()> = std::result::Result<T, String>;

const USAGE: &str = "usage: cargo xtask <job>

jobs:
  ci     fmt, tidy, clippy, tests, rustdoc, examples, server work and cargo-deny: what CI runs
  tidy   source checks that need no build (Lua and key layout in one place each, feature
         docs, conformance cases named in docs/design.md, files over 600 lines), file:line
  bench  every criterion suite and redis-benchmark, then writes docs/benchmarks.md
         (`--quick`: 10 samples of 1 s each; other arguments go to criterion, e.g. a filter;
         `--render`: the page again from docs/benchmarks.json, nothing run; `--server-work`:
         instructions per call in redis-server, by callgrind; `--help`)
  server-work  instructions per store call in redis-server (callgrind) against
         xtask/server-work-budgets.json: fails 10 % over a budget (part of ci;
         `--update-budgets --reason TEXT` rewrites them; `--help`)
  features  clippy (-D warnings; lib, bins, examples) of every crate with no default
         features and with each feature alone: the combinations `ci` builds besides
         --all-features
  examples  builds every example with the workspace's features and runs it (part of ci)
  man    the statestore command's manual page (clap_mangen): target/man/statestore.1
         (`man -l target/man/statestore.1`)
  fuzz   every cargo-fuzz target for a bounded time (default 60 s each; --seconds N)
  soak   the model-checked mixed load on Redis and a cluster for a bounded time (default 300 s; --seconds N)";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("features") => feature_matrix(),
        Some("examples") => examples().map(drop),
        Some("tidy") => tidy::tidy(),
        Some("bench") => bench::bench(args.get(1..).unwrap_or_default()),
        Some("server-work") => bench::server_work::check(args.get(1..).unwrap_or_default(), None),
        Some("man") => man(),
        Some("fuzz") => fuzz(args.get(1..).unwrap_or_default()),
        Some("soak") => soak(args.get(1..).unwrap_or_default()),
        Some("help" | "-h" | "--help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown job {other:?}\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    // xtask/ lives directly under the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// `cargo xtask man`: the binary renders its own page (its hidden `man`
/// command: clap_mangen over the same clap definitions as `--help`), so
/// the page never drifts from the program.
fn man() -> Result {
    let out = cargo()
        .args(["run", "--quiet", "-p", "statestore-cli", "--", "man"])
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "statestore man failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let dir = root().join("target/man");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let page = dir.join("statestore.1");
    std::fs::write(&page, &out.stdout)
        .map_err(|e| format!("cannot write {}: {e}", page.display()))?;
    println!(
        "wrote {} ({} bytes): man -l {}",
        page.display(),
        out.stdout.len(),
        page.display()
    );
    Ok(())
}

fn cargo() -> Command {
    let mut cmd = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Runs `cmd`, echoing it, and fails when it does.
fn run(step: &str, cmd: &mut Command) -> Result {
    let started = Instant::now();
    eprintln!("\n==> {step}\n    $ {cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| format!("{step}: could not start: {e}"))?;
    eprintln!("    ({step}: {:.1}s)", started.elapsed().as_secs_f64());
    if status.success() {
        Ok(())
    } else {
        Err(format!("{step} failed ({status})"))
    }
}

fn has_cargo_subcommand(name: &str) -> bool {
    cargo()
        .args([name, "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Installs a cargo tool from crates.io when it is missing.
fn ensure_cargo_tool(subcommand: &str, krate: &str) -> Result {
    if has_cargo_subcommand(subcommand) {
        return Ok(());
    }
    run(
        &format!("install {krate}"),
        cargo().args(["install", "--locked", krate]),
    )
}

/// Builds and runs every example. Examples that need Redis read `REDIS_URL`:
/// they get a throwaway server. They are built once with the workspace's
/// features (the test build's dependencies, so next to nothing compiles) and
/// run from the binaries: `cargo run -p <crate>` per example would rebuild
/// the dependency graph with each crate's own feature set (about five
/// minutes in all).
///
/// Returns the examples' names and binaries.
fn examples() -> Result<Vec<(String, PathBuf)>> {
    let redis = temp_redis()?;
    let postgres = temp_postgres()?;
    let built = build_examples(None)?;
    for (name, binary) in &built {
        run(
            &format!("example {name}"),
            Command::new(binary)
                .current_dir(root())
                .env("REDIS_URL", redis.url())
                .env("DATABASE_URL", postgres.url()),
        )?;
    }
    Ok(built)
}

/// Builds every example of the workspace (`--all-features`), or only the
/// one named `only` (with the same features, so that nothing else
/// rebuilds), and returns each one's name and binary. Examples assert what
/// they demonstrate, so running them is a test.
pub(crate) fn build_examples(only: Option<&str>) -> Result<Vec<(String, PathBuf)>> {
    let step = match only {
        Some(name) => format!("build example {name}"),
        None => "build examples".to_owned(),
    };
    let started = Instant::now();
    let mut cmd = cargo();
    cmd.args(["build", "--workspace", "--all-features"]);
    match only {
        Some(name) => cmd.args(["--example", name]),
        None => cmd.arg("--examples"),
    };
    cmd.arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    eprintln!("\n==> {step}\n    $ {cmd:?}");
    let output = cmd
        .output()
        .map_err(|e| format!("{step}: could not start: {e}"))?;
    eprintln!("    ({step}: {:.1}s)", started.elapsed().as_secs_f64());
    if !output.status.success() {
        return Err(format!("{step} failed ({})", output.status));
    }
    #[derive(serde::Deserialize)]
    struct Artifact {
        reason: String,
        #[serde(default)]
        target: Option<Target>,
        #[serde(default)]
        executable: Option<PathBuf>,
    }
    #[derive(serde::Deserialize)]
    struct Target {
        name: String,
        kind: Vec<String>,
    }
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(a) = serde_json::from_str::<Artifact>(line) else {
            continue;
        };
        if let (Some(target), Some(executable)) = (a.target, a.executable)
            && a.reason == "compiler-artifact"
            && target.kind.iter().any(|k| k == "example")
        {
            if found.iter().any(|(n, _)| *n == target.name) {
                // Cargo puts every example at target/debug/examples/<name>:
                // two of one name overwrite each other.
                return Err(format!(
                    "two examples are named `{}`: rename one (cargo builds both to one path)",
                    target.name
                ));
            }
            found.push((target.name, executable));
        }
    }
    if found.is_empty() {
        return Err(format!("{step}: cargo reported no example binaries"));
    }
    found.sort();
    Ok(found)
}

/// A throwaway redis-server (see `redis-test-server`): loopback only, a
/// fresh directory, killed and removed on drop.
fn temp_redis() -> Result<RedisServer> {
    RedisServer::start().map_err(|e| format!("cannot start redis-server: {e}"))
}

/// A throwaway PostgreSQL cluster (see `pg-test-server`): loopback only, a
/// fresh directory, stopped and removed on drop.
fn temp_postgres() -> Result<PgServer> {
    PgServer::builder()
        .fsync(false)
        .start()
        .map_err(|e| format!("cannot start PostgreSQL: {e}"))
}

fn on_path(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Installs Debian's redis-server and redis-tools (redis-cli,
/// redis-benchmark) when missing: the Redis tests and benchmarks start their
/// own throwaway servers from these binaries.
pub(crate) fn ensure_redis() -> Result {
    if on_path("redis-server") && on_path("redis-cli") && on_path("redis-benchmark") {
        return Ok(());
    }
    apt_install(&["redis-server", "redis-tools"])?;
    if on_path("redis-server") {
        Ok(())
    } else {
        Err("redis-server is still missing after installing it".into())
    }
}

/// Installs what the commands of `docs/cli.md` use besides `statestore`
/// when missing: the CLI's doc test (`crates/statestore-cli/tests/doc.rs`)
/// runs them through bash, and its terminal tests use util-linux's
/// `script`.
fn ensure_doc_tools() -> Result {
    let wanted = [
        ("sqlite3", "sqlite3"),
        ("openssl", "openssl"),
        ("script", "bsdutils"),
    ];
    // `script --version` and `openssl version`: each answers differently.
    let present = |program: &str| {
        Command::new(program)
            .arg(if program == "openssl" {
                "version"
            } else {
                "--version"
            })
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(program, _)| !present(program))
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    apt_install(&missing)?;
    match wanted.iter().find(|(program, _)| !present(program)) {
        Some((program, _)) => Err(format!("{program} is still missing after installing it")),
        None => Ok(()),
    }
}

/// Installs Debian's valgrind when `valgrind` or `callgrind_control` is
/// missing: `cargo xtask server-work` runs redis-server under callgrind.
pub(crate) fn ensure_valgrind() -> Result {
    if on_path("valgrind") && on_path("callgrind_control") {
        return Ok(());
    }
    apt_install(&["valgrind"])?;
    if on_path("valgrind") && on_path("callgrind_control") {
        Ok(())
    } else {
        Err("valgrind is still missing after installing it".into())
    }
}

/// Installs Debian's postgresql package when `initdb` is missing: the
/// PostgreSQL tests start their own throwaway clusters with it (through
/// pg-test-server, which looks in `$PG_BIN`, `/usr/lib/postgresql/*/bin`,
/// then `PATH`, as this check does).
fn ensure_postgres() -> Result {
    if postgres_installed() {
        return Ok(());
    }
    apt_install(&["postgresql"])?;
    if postgres_installed() {
        Ok(())
    } else {
        Err("initdb is still missing after installing postgresql".into())
    }
}

fn postgres_installed() -> bool {
    if let Some(dir) = env::var_os("PG_BIN").filter(|d| !d.is_empty()) {
        return Path::new(&dir).join("initdb").is_file();
    }
    let debian = std::fs::read_dir("/usr/lib/postgresql").is_ok_and(|entries| {
        entries
            .flatten()
            .any(|entry| entry.path().join("bin").join("initdb").is_file())
    });
    debian || on_path("initdb")
}

/// `apt-get update`, then `apt-get install` of `packages` (through sudo
/// unless this is root).
fn apt_install(packages: &[&str]) -> Result {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    let apt = |args: &[&str]| {
        let mut cmd = if root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    run("apt-get update", &mut apt(&["update", "-q"]))?;
    let mut install = vec!["install", "-y", "-q"];
    install.extend_from_slice(packages);
    run(
        &format!("install {}", packages.join(" ")),
        &mut apt(&install),
    )
}

fn ci() -> Result {
    ensure_cargo_tool("deny", "cargo-deny")?;
    ensure_redis()?;
    ensure_postgres()?;
    ensure_doc_tools()?;
    run("rustfmt", cargo().args(["fmt", "--all", "--", "--check"]))?;
    tidy::tidy()?;
    run(
        "clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    feature_matrix()?;
    run(
        "tests",
        cargo().args(["test", "--workspace", "--all-features"]),
    )?;
    // The facade's errors for schemes whose backend is compiled out: tests
    // gated on `not(feature = ...)`, which --all-features never builds.
    run(
        "tests statestore --no-default-features",
        cargo().args([
            "test",
            "-p",
            "statestore",
            "--no-default-features",
            "--tests",
        ]),
    )?;
    run(
        "rustdoc",
        cargo()
            .args(["doc", "--workspace", "--no-deps", "--all-features"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    let examples = examples()?;
    // Instructions per call in redis-server against their budgets, with
    // the example just built.
    ensure_valgrind()?;
    let driver = examples
        .into_iter()
        .find(|(name, _)| name == "server_work")
        .map(|(_, binary)| binary);
    bench::server_work::check(&[], driver)?;
    // Advisories need the advisory database from GitHub, which these
    // machines cannot reach; run `cargo deny check advisories` where online.
    run(
        "cargo-deny",
        cargo().args(["deny", "check", "licenses", "bans", "sources"]),
    )?;
    eprintln!("\nci: all checks passed");
    Ok(())
}

/// The crates under `crates/` (everything but xtask) with their features,
/// except `default` and internal ones (`__fuzzing`), as `cargo metadata`
/// reports them.
fn crate_features() -> Result<Vec<(String, Vec<String>)>> {
    let output = cargo()
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    #[derive(serde::Deserialize)]
    struct Metadata {
        packages: Vec<Package>,
    }
    #[derive(serde::Deserialize)]
    struct Package {
        name: String,
        manifest_path: PathBuf,
        /// Feature → what it enables; sorted by name.
        #[serde(default)]
        features: std::collections::BTreeMap<String, serde_json::Value>,
    }
    let metadata: Metadata =
        serde_json::from_slice(&output.stdout).map_err(|e| format!("cargo metadata: {e}"))?;
    let crates_dir = root().join("crates");
    let mut found = Vec::new();
    for package in metadata.packages {
        if !package.manifest_path.starts_with(&crates_dir) {
            continue;
        }
        let features = package
            .features
            .into_keys()
            // `__name`: internal (the fuzz targets' entry points), not a
            // combination users build.
            .filter(|feature| feature != "default" && !feature.starts_with("__"))
            .collect();
        found.push((package.name, features));
    }
    found.sort();
    Ok(found)
}

/// Clippy (`-D warnings`) of every crate's library, binaries and
/// examples with no default features and with each feature alone — the
/// combinations the workspace's `--all-features` build never compiles, where
/// a missing `cfg` or an unused import hides. `check` is implied: clippy
/// type-checks everything it lints. Examples that need a feature declare it
/// (`required-features`) and are skipped without it. Tests and benches are
/// linted once, with every feature (`ci`'s first clippy): building their
/// dev-dependencies (criterion, proptest, the test servers) again for each
/// combination took most of this loop's eleven minutes and checked nothing
/// a user builds.
fn feature_matrix() -> Result {
    let started = Instant::now();
    let mut builds = 0;
    for (krate, features) in crate_features()? {
        if features.is_empty() {
            // Its only build is the default one, linted with --all-features.
            continue;
        }
        let mut combinations = vec![vec!["--no-default-features".to_owned()]];
        for feature in &features {
            combinations.push(vec![
                "--no-default-features".to_owned(),
                "--features".to_owned(),
                feature.clone(),
            ]);
        }
        for flags in combinations {
            builds += 1;
            let label = flags.last().map_or("", String::as_str);
            let label = if label == "--no-default-features" {
                "no default features"
            } else {
                label
            };
            run(
                &format!("clippy {krate} ({label})"),
                cargo()
                    .args([
                        "clippy",
                        "--quiet",
                        "-p",
                        &krate,
                        "--lib",
                        "--bins",
                        "--examples",
                    ])
                    .args(&flags)
                    .args(["--", "-D", "warnings"]),
            )?;
        }
    }
    eprintln!(
        "\n    (feature combinations: {builds} builds in {:.1}s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The fuzz targets in `fuzz/`, each run for a bounded time with the
/// nightly toolchain (cargo-fuzz needs it). Crashes land in
/// `fuzz/artifacts/<target>/`; each one found becomes a regression test.
fn fuzz(args: &[String]) -> Result {
    let seconds = match args {
        [] => 60,
        [flag, n] if flag == "--seconds" => n.parse().map_err(|e| format!("--seconds {n}: {e}"))?,
        other => return Err(format!("unexpected arguments {other:?}\n\n{USAGE}")),
    };
    ensure_cargo_tool("fuzz", "cargo-fuzz")?;
    let targets = std::fs::read_dir(root().join("fuzz/fuzz_targets"))
        .map_err(|e| format!("fuzz/fuzz_targets: {e}"))?
        .flatten()
        .filter_map(|f| {
            let path = f.path();
            let stem = path.file_stem()?.to_str()?.to_owned();
            (path.extension()? == "rs").then_some(stem)
        })
        .collect::<Vec<_>>();
    for target in targets {
        run(
            &format!("fuzz {target} for {seconds} s"),
            Command::new("rustup")
                .current_dir(root())
                .args(["run", "nightly", "cargo", "fuzz", "run", &target, "--"])
                .env_remove("RUSTC")
                .env_remove("CARGO")
                .arg(format!("-max_total_time={seconds}")),
        )?;
    }
    Ok(())
}

/// The long soak: `tests/soak.rs` of statestore-redis, release build.
fn soak(args: &[String]) -> Result {
    let seconds: u64 = match args {
        [] => 300,
        [flag, n] if flag == "--seconds" => n.parse().map_err(|e| format!("--seconds {n}: {e}"))?,
        other => return Err(format!("unexpected arguments {other:?}\n\n{USAGE}")),
    };
    ensure_redis()?;
    run(
        &format!("soak for {seconds} s"),
        cargo()
            .args([
                "test",
                "--release",
                "-p",
                "statestore-redis",
                "--all-features",
            ])
            .args(["--test", "soak", "--", "--ignored", "--nocapture"])
            .env("SOAK_SECONDS", seconds.to_string()),
    )
}

#[cfg(test)]
mod tests {
    /// `cargo metadata` read with serde_json: the crates under `crates/`,
    /// each with its features but `default`.
    #[test]
    fn lists_the_crates_and_their_features() {
        let crates = super::crate_features().unwrap();
        let redis = crates
            .iter()
            .find(|(name, _)| name == "statestore-redis")
            .map(|(_, features)| features)
            .unwrap();
        assert!(redis.iter().any(|f| f == "cluster"), "{redis:?}");
        assert!(crates.iter().all(|(name, features)| name != "xtask"
            && !features.iter().any(|f| f == "default")));
    }
}
