//! The command line: every command, option and its help.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use statestore::SessionId;

const EXIT_CODES: &str = "\
Exit codes: 0 done; 1 failed (store unreachable or missing, not writable, session not found,
import conflicts, a check failed: the message says what to do next); 2 usage (a bad option,
URL or session id); 130 interrupted.

Environment: STATESTORE_URL (the store, as --store), STATESTORE_KEYS_FILE (as --keys),
STATESTORE_KEYS (the key ring itself, `;` between keys; set but empty is an error),
STATESTORE_CONTEXT (as --context), STATESTORE_HOME (where the default store lives),
OPENAI_API_KEY, OPENAI_BASE_URL, OPENAI_MODEL (chat with a real model), NO_COLOR,
STATESTORE_LOG (error, warn, info, debug, trace; default warn).";

/// Conversation state that survives between runs: chat with a session that continues where
/// it left off, and list, inspect, copy, cut, move and back up sessions on any backend.
#[derive(Debug, Parser)]
#[command(
    name = "statestore",
    version,
    after_help = EXIT_CODES,
    after_long_help = EXIT_CODES,
    max_term_width = 100,
    help_expected = true
)]
pub(crate) struct Cli {
    /// The store's URL (`--help` lists the forms and the default).
    #[arg(
        help = "The store: sqlite://PATH, redis://[USER:PASSWORD@]HOST[:PORT][/DB], rediss://…, \
                redis+cluster://HOST:PORT,HOST:PORT, memory:// (default: an SQLite file, see \
                --help)",
        long,
        global = true,
        env = "STATESTORE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub(crate) store: Option<String>,

    /// The key ring file: with it, every command reads and writes the store encrypted
    #[arg(
        help = "Encrypt at rest: the key ring file (one `ID base64:KEY [current]` per line; see \
                rotate-keys --help). Every command then reads plaintext and the store holds \
                ciphertext",
        long,
        global = true,
        env = "STATESTORE_KEYS_FILE",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub(crate) keys: Option<PathBuf>,

    /// Read the key file even when its group or other users have access to it, or another
    /// user owns it (refused otherwise: `chmod 600 FILE` is the fix)
    #[arg(long, global = true)]
    pub(crate) allow_insecure_key_file: bool,

    /// With --keys: the application context (a tenant) every value is bound to
    #[arg(
        help = "With --keys: the application context (e.g. a tenant) bound into every value \
                written; a value written under one context does not decrypt under another. \
                Every process reading the same sessions must use the same one (default: none)",
        long,
        global = true,
        env = "STATESTORE_CONTEXT",
        hide_env_values = true,
        value_name = "TENANT"
    )]
    pub(crate) context: Option<String>,

    /// Machine-readable output on stdout: one JSON document (JSON Lines for export)
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// Print only data and errors: no summaries of what a command changed, no progress bars,
    /// no banners (warnings and errors still go to stderr; --json output is unchanged)
    #[arg(long, short, global = true)]
    pub(crate) quiet: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Send a message and stream the reply; the session remembers it for the next run
    #[command(after_help = "Examples:
  statestore chat \"Hi, I'm Alice\"
  statestore chat \"What's my name?\"          # a new process, the same conversation
  statestore chat --session support-42       # no message on a terminal: an interactive chat
  echo 'Summarize our chat' | statestore chat

Without OPENAI_API_KEY an offline model answers (it remembers names, otherwise echoes).")]
    Chat(ChatArgs),

    /// List sessions (by id, or newest first with --recent) with their size, usage and title
    #[command(after_help = "Examples:
  statestore list
  statestore list --user alice --limit 20
  statestore list --ids-only --limit 0 --json")]
    List(ListArgs),

    /// Show one session: messages, tool calls with their results, summaries, usage, version
    #[command(after_help = "Example:
  statestore show default --last 10")]
    Show(ShowArgs),

    /// Copy a session to a new id (the copy starts at version 1; the source is unchanged)
    #[command(after_help = "Example:
  statestore fork default default-experiment")]
    Fork(ForkArgs),

    /// Delete sessions
    #[command(after_help = "Example:
  statestore delete old-1 old-2")]
    Delete(DeleteArgs),

    /// Take a session back to the end of a turn: later turns are deleted
    #[command(after_help = "Example:
  statestore rewind default --to-turn 2

Turns are numbered from 1 as stored; --to-turn 0 empties the session. Guarded by the version
read: a turn stored meanwhile makes it fail, changing nothing. A retry of a rewound turn (the
same turn id) is refused, never run again.")]
    Rewind(RewindArgs),

    /// Copy a session up to the end of a turn into a new session (the original is unchanged)
    #[command(after_help = "Example:
  statestore branch default default-take-2 --at-turn 2")]
    Branch(BranchArgs),

    /// Delete all but the newest messages of a session (no summary; see compact)
    #[command(after_help = "Example:
  statestore trim default --keep 20

Never splits a tool call from its results and always keeps the newest user message and what
follows it, so slightly more than N may stay. Guarded by the session's version: a turn stored
meanwhile is never lost.")]
    Trim(TrimArgs),

    /// Summarize the older messages of a session, then delete them (the summary stays)
    #[command(after_help = "Example:
  statestore compact default --keep 10

The summary is written by the model (OPENAI_API_KEY) or, offline, extracted from the messages.
Both steps are guarded by the session's version.")]
    Compact(CompactArgs),

    /// Delete sessions idle (not written) or created longer ago than a cutoff
    #[command(after_help = "Examples:
  statestore prune --idle 30d --dry-run
  statestore prune --idle 30d --user alice
  statestore prune --older-than 365d --json

Durations: 90s, 30m, 12h, 30d. Reading a session (show, list, export) is not activity; only
writes keep a session. Deletes a batch at a time, each guarded by the version it was found at:
a session written meanwhile is kept. Interrupted, it can be run again: what it deleted is gone.")]
    Prune(PruneArgs),

    /// Totals over all sessions: sessions, messages, bytes, token usage
    #[command(after_help = "Example:
  statestore stats --json")]
    Stats(StatsArgs),

    /// Write sessions as JSON Lines: a header line, then one session per line, sorted by id
    #[command(after_help = "Examples:
  statestore export -o backup.jsonl
  statestore export --user alice > alice.jsonl

Streams: memory stays flat for any number of sessions. Each session is read consistently;
the file is not one snapshot of the whole store. The store's bookkeeping (version,
updated_at, last_accessed_at, TTL) is not exported; created_at and the usage counters are.

With --keys the file holds the conversations decrypted, in plaintext: keep it as safe as the
key file. --encrypted writes the ciphertext as stored instead (readable only with the keys;
import it back with import --encrypted); it refuses a store that still holds plaintext. A file
(-o) is created with mode 0600; its header line says whether the values are encrypted, and
under which key ids.")]
    Export(ExportArgs),

    /// Read sessions written by export; sessions already there are left alone
    #[command(after_help = "Examples:
  statestore import backup.jsonl
  statestore --store redis://localhost:6379 import backup.jsonl

A session that is absent is written; one that is present and equal is left as it is; one
that is present and different is a conflict: reported, never overwritten (exit 1 unless
--ignore-conflicts). Importing the same file again changes nothing.")]
    Import(ImportArgs),

    /// Copy every session from one store to another; safe to interrupt and run again
    #[command(after_help = "Example:
  statestore migrate --from sqlite:///var/lib/app/sessions.db --to redis://localhost:6379

Sessions already copied are skipped (compared, not overwritten), so an interrupted migrate
resumes where it stopped. Ends with a check that the destination holds every session.")]
    Migrate(MigrateArgs),

    /// Re-encrypt every session not under the key ring's current key (resumable)
    #[command(after_help = ROTATE_HELP)]
    RotateKeys(RotateKeysArgs),

    /// The key ring's use in the store: how many values each key id encrypted
    #[command(subcommand)]
    Keys(KeysCommand),

    /// Check the store: connection, versions, durability and safety settings, integrity
    #[command(after_help = "Example:
  statestore --store redis://localhost:6379 doctor")]
    Doctor(DoctorArgs),

    /// Print the shell completion script for bash, zsh, fish, elvish or powershell
    #[command(after_help = "Examples:
  statestore completions bash > ~/.local/share/bash-completion/completions/statestore
  statestore completions zsh > \"${fpath[1]}/_statestore\"
  statestore completions fish > ~/.config/fish/completions/statestore.fish")]
    Completions(CompletionsArgs),

    /// Print the manual page (roff), as `cargo xtask man` writes it
    #[command(hide = true)]
    Man,
}

const ROTATE_HELP: &str = "\
Example: a new key k2 becomes current, k1 stays to decrypt what it encrypted
  $ cat keys                       # before: one key, current
  k1 base64:<32 random bytes in base64> current
  $ printf 'k2 base64:%s current\\n' \"$(openssl rand -base64 32)\" >> keys
  $ sed -i 's/^\\(k1 .*\\) current$/\\1/' keys   # k1 no longer current
  $ chmod 600 keys
  $ statestore --store redis://localhost:6379 rotate-keys --keys keys
  Then, once it says key k1 can be removed, delete k1's line from the file.

Every process using the store must get the new file first (it then writes with k2 at once and
still reads k1). Sessions already under the current key are read and left alone, so running it
again resumes; --resume-from starts at the page of a cursor it printed. After a whole-store run
without failures it scans the store again and calls an old key removable only if no value is
under it (a process still using the old key file writes under it): `statestore keys usage` shows
the same counts. A session that cannot be
re-encrypted (a key missing from the file, changed bytes) is listed with why, the others go on,
and the exit code is 1.

Encrypting a store written without --keys: rotate-keys --keys FILE --encrypt-plaintext.";

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Count the stored values under each key id, and the plaintext ones (no key ring needed)
    #[command(after_help = "Examples:
  statestore keys usage
  statestore --keys keys keys usage --json    # also marks which keys the ring holds

Reads every session's values as stored and counts them by the key id in each envelope's
header: nothing is decrypted or written. Messages, summaries, system prompts and metadata
values count one each. A key with no values can be removed from the key file, as far as this
store goes: encrypted exports (export --encrypted) and backups may still need it.")]
    Usage(KeysUsageArgs),
}

#[derive(Debug, Args)]
pub(crate) struct KeysUsageArgs {
    /// Only this user's sessions
    #[arg(long, short, value_name = "USER", value_parser = user_id)]
    pub(crate) user: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct RotateKeysArgs {
    /// Also encrypt values stored unencrypted (a store written without --keys)
    #[arg(long)]
    pub(crate) encrypt_plaintext: bool,

    /// Start at this cursor (printed by an interrupted or failed run) instead of the beginning
    #[arg(long, value_name = "CURSOR", value_parser = cursor)]
    pub(crate) resume_from: Option<String>,

    /// Only this user's sessions
    #[arg(long, short, value_name = "USER", value_parser = user_id)]
    pub(crate) user: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ChatArgs {
    /// The session to continue (created by its first message)
    #[arg(long, short, default_value = "default", value_parser = session_id)]
    pub(crate) session: SessionId,

    /// The message; without one, an interactive chat on a terminal, or stdin otherwise
    #[arg(value_name = "MESSAGE")]
    pub(crate) message: Vec<String>,

    /// Send at most this many recent messages to the model
    #[arg(long, default_value_t = 40, value_name = "N")]
    pub(crate) window: usize,

    /// Ask again for the last turn's message (its reply is replaced)
    #[arg(long, conflicts_with_all = ["message", "edit"])]
    pub(crate) regenerate: bool,

    /// Replace the last turn's message with MESSAGE and ask again
    #[arg(long, requires = "message")]
    pub(crate) edit: bool,

    /// The system prompt, stored with the session (replacing the one stored); without it,
    /// the one stored, else "You are a helpful assistant."
    #[arg(long, value_name = "TEXT", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub(crate) system: Option<String>,

    /// The user the session belongs to, stored with it (a session of another user is refused)
    #[arg(long, short, value_name = "USER", value_parser = user_id)]
    pub(crate) user: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only this user's sessions
    #[arg(long, short, value_name = "USER", value_parser = user_id)]
    pub(crate) user: Option<String>,

    /// Show at most N sessions (0: all)
    #[arg(long, short = 'n', default_value_t = 100, value_name = "N")]
    pub(crate) limit: usize,

    /// Newest activity first (the order of a chat app's sidebar), instead of by id
    #[arg(long)]
    pub(crate) recent: bool,

    /// Only ids: reads no session
    #[arg(long)]
    pub(crate) ids_only: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// The session
    #[arg(value_parser = session_id)]
    pub(crate) id: SessionId,

    /// Only the newest N messages
    #[arg(long, value_name = "N")]
    pub(crate) last: Option<usize>,
}

#[derive(Debug, Args)]
pub(crate) struct ForkArgs {
    /// The session to copy
    #[arg(value_parser = session_id)]
    pub(crate) source: SessionId,
    /// The new session's id (must not exist)
    #[arg(value_parser = session_id)]
    pub(crate) target: SessionId,
}

#[derive(Debug, Args)]
pub(crate) struct RewindArgs {
    /// The session
    #[arg(value_parser = session_id)]
    pub(crate) id: SessionId,
    /// Keep turns 1 to N
    #[arg(long, value_name = "N")]
    pub(crate) to_turn: usize,
}

#[derive(Debug, Args)]
pub(crate) struct BranchArgs {
    /// The session to branch from
    #[arg(value_parser = session_id)]
    pub(crate) source: SessionId,
    /// The new session's id (must not exist)
    #[arg(value_parser = session_id)]
    pub(crate) target: SessionId,
    /// Copy turns 1 to N
    #[arg(long, value_name = "N")]
    pub(crate) at_turn: usize,
}

#[derive(Debug, Args)]
pub(crate) struct DeleteArgs {
    /// The sessions
    #[arg(required = true, value_parser = session_id)]
    pub(crate) ids: Vec<SessionId>,
    /// Say what would be done; change nothing
    #[arg(long)]
    pub(crate) dry_run: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("cutoff").required(true).multiple(true).args(["idle", "older_than"])))]
pub(crate) struct PruneArgs {
    /// Sessions not written for this long (30d, 12h, …)
    #[arg(long, value_name = "AGE", value_parser = crate::prune::duration)]
    pub(crate) idle: Option<std::time::Duration>,
    /// Sessions created this long ago or more
    #[arg(long, value_name = "AGE", value_parser = crate::prune::duration)]
    pub(crate) older_than: Option<std::time::Duration>,
    /// Only this user's sessions
    #[arg(long, short, value_name = "USER", value_parser = user_id)]
    pub(crate) user: Option<String>,
    /// Count what would be deleted; delete nothing
    #[arg(long)]
    pub(crate) dry_run: bool,
}

#[derive(Debug, Args)]
pub(crate) struct TrimArgs {
    /// The session
    #[arg(value_parser = session_id)]
    pub(crate) id: SessionId,
    /// Keep (at least) the newest N messages
    #[arg(long, value_name = "N")]
    pub(crate) keep: usize,
    /// Say what would be done; change nothing
    #[arg(long)]
    pub(crate) dry_run: bool,
}

#[derive(Debug, Args)]
pub(crate) struct CompactArgs {
    /// The session
    #[arg(value_parser = session_id)]
    pub(crate) id: SessionId,
    /// Keep (at least) the newest N messages; the rest is summarized and deleted
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub(crate) keep: usize,
    /// Say what would be done; change nothing
    #[arg(long)]
    pub(crate) dry_run: bool,
}

#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    /// Only this user's sessions
    #[arg(long, short, value_name = "USER", value_parser = user_id)]
    pub(crate) user: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// Only this user's sessions
    #[arg(long, short, value_name = "USER", value_parser = user_id)]
    pub(crate) user: Option<String>,
    /// Write to FILE (replaced only once the export is complete) instead of stdout
    #[arg(long, short, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
    /// With --keys: write the values as stored (ciphertext), not decrypted
    #[arg(long)]
    pub(crate) encrypted: bool,
    /// Salvage: leave out each session that does not read (corrupt, or does not decrypt),
    /// export the others, list the skipped ones on stderr and exit 1 (not with --encrypted,
    /// whose key scan reads every session first: salvage with --keys, decrypted)
    #[arg(long, conflicts_with = "encrypted")]
    pub(crate) skip_unreadable: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// The file written by export; - for stdin
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
    /// Exit 0 even when sessions conflicted (they are still reported and left alone)
    #[arg(long)]
    pub(crate) ignore_conflicts: bool,
    /// The file was written by `export --encrypted`: store its ciphertext as it is (each
    /// envelope checked; with --keys, each session decrypted to check it first)
    #[arg(long)]
    pub(crate) encrypted: bool,
    /// Say what would be done; change nothing
    #[arg(long)]
    pub(crate) dry_run: bool,
}

#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    /// The store to copy from
    #[arg(long, value_name = "URL")]
    pub(crate) from: String,
    /// The store to copy to
    #[arg(long, value_name = "URL")]
    pub(crate) to: String,
    /// Only this user's sessions
    #[arg(long, short, value_name = "USER", value_parser = user_id)]
    pub(crate) user: Option<String>,
    /// Exit 0 even when sessions conflicted (they are still reported and left alone)
    #[arg(long)]
    pub(crate) ignore_conflicts: bool,
    /// Say what would be done; change nothing
    #[arg(long)]
    pub(crate) dry_run: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DoctorArgs {}

#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

/// The whole command line: [`Cli`] with the long `--version`, `store_help`
/// (the URL forms and where the default store is) as `--store`'s long help
/// at the top level, and in each subcommand the global options under their
/// own heading, `--store` with a one-line help, and those the subcommand
/// ignores hidden (all of them for `completions` and `man`, `--store` for
/// `migrate`, which takes `--from` and `--to`).
pub(crate) fn command(store_help: String) -> clap::Command {
    use clap::CommandFactory;
    let top = Cli::command()
        .long_version(crate::version::long())
        .mut_arg("store", |a| a.long_help(store_help));
    // A subcommand that defines a global option itself keeps its own
    // definition (clap propagates only the ones it lacks): each gets the
    // top level's, reworded.
    let globals: Vec<clap::Arg> = top
        .get_arguments()
        .filter(|a| a.is_global_set())
        .cloned()
        .collect();
    top.mut_subcommands(|sc| {
        let ignored: &[&str] = match sc.get_name() {
            "completions" | "man" => &[
                "store",
                "keys",
                "allow_insecure_key_file",
                "context",
                "json",
                "quiet",
            ],
            "migrate" => &["store"],
            _ => &[],
        };
        globals.iter().fold(sc, |sc, global| {
            let id = global.get_id().as_str();
            let mut arg = global.clone().help_heading("Global options");
            if id == "store" {
                arg = arg.long_help(None::<&str>).help(
                    "The store's URL: sqlite://PATH, redis://…, rediss://…, redis+cluster://…, \
                     postgres://…, memory:// (`statestore --help` lists the forms and the \
                     default)",
                );
            }
            sc.arg(arg.hide(ignored.contains(&id)))
        })
    })
}

/// A session id as clap parses it: validated, with the reason on failure.
fn session_id(s: &str) -> Result<SessionId, String> {
    SessionId::new(s).map_err(|e| match e {
        statestore::Error::InvalidId { reason, .. } => format!(
            "{reason} (a session id is 1 to {} bytes of text without control characters)",
            SessionId::MAX_LEN
        ),
        other => other.to_string(),
    })
}

/// A user id, held to the rules of a session id (1 to 512 bytes of text
/// without control characters): it is printed and used in key names the
/// same way.
fn user_id(s: &str) -> Result<String, String> {
    session_id(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.replace("a session id is", "a user id is"))
}

/// A cursor `rotate-keys` printed: a position in the listing by id.
fn cursor(s: &str) -> Result<String, String> {
    statestore::ListCursor::decode(s, statestore::ListOrder::Id)
        .map(|_| s.to_owned())
        .map_err(|e| format!("{e} (use the cursor an earlier rotate-keys printed)"))
}
