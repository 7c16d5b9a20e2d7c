//! Output conventions: data to stdout, diagnostics and progress to stderr;
//! colour only on a terminal and without `NO_COLOR`; progress bars only
//! when stderr is a terminal; tables for people, `--json` for scripts.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use crate::error::CliError;

/// How this run writes its output.
#[derive(Debug, Clone)]
pub(crate) struct Ui {
    /// `--json`: machine-readable stdout.
    pub(crate) json: bool,
    /// Colour on stdout.
    color_out: bool,
    /// Colour on stderr.
    color_err: bool,
    /// Progress bars on stderr: a terminal, and not `--quiet`.
    pub(crate) progress_bars: bool,
    /// `--quiet`: no summaries of what a command changed, no banners.
    pub(crate) quiet: bool,
    /// Whether stdout is a terminal (a pager for long output).
    out_terminal: bool,
}

/// A colour for [`Ui::paint`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Paint {
    Red,
    Yellow,
    Green,
    Dim,
    Bold,
}

impl Ui {
    pub(crate) fn new(json: bool, quiet: bool) -> Self {
        // NO_COLOR (no-color.org), and a terminal that says it takes none.
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
            || std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        let err_terminal = std::io::stderr().is_terminal();
        let out_terminal = std::io::stdout().is_terminal();
        Self {
            json,
            out_terminal,
            color_out: !no_color && out_terminal,
            color_err: !no_color && err_terminal,
            progress_bars: err_terminal && !quiet,
            quiet,
        }
    }

    /// `text` in `paint` when stdout (`err == false`) or stderr takes colour.
    pub(crate) fn paint(&self, err: bool, paint: Paint, text: &str) -> String {
        let on = if err { self.color_err } else { self.color_out };
        if !on {
            return text.to_owned();
        }
        let code = match paint {
            Paint::Red => "31;1",
            Paint::Yellow => "33;1",
            Paint::Green => "32",
            Paint::Dim => "2",
            Paint::Bold => "1",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }

    /// Writes `text` to stdout (the command's data).
    pub(crate) fn out(&self, text: &str) -> Result<(), CliError> {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(CliError::io("writing to stdout"))
    }

    /// Writes `text`, the summary of what a command changed ("deleted …",
    /// "imported …"), to stdout, unless `--quiet`.
    pub(crate) fn done(&self, text: &str) -> Result<(), CliError> {
        if self.quiet {
            return Ok(());
        }
        self.out(text)
    }

    /// An informational line to stderr (a banner, "no sessions"), unless
    /// `--quiet`.
    pub(crate) fn note(&self, line: &str) {
        if !self.quiet {
            self.diag(line);
        }
    }

    /// Writes `text` to stdout through a pager when stdout is a terminal
    /// (as git does): `$STATESTORE_PAGER`, else `$PAGER`, else `less`, run
    /// by `sh -c`, with `LESS=FRX` unless `LESS` is set (`less` then quits
    /// at once when the text fits on one screen, and keeps colours). An
    /// empty value or `cat` means no pager, and so does one that cannot
    /// start. While the pager runs, Ctrl-C is the pager's: it does not end
    /// this process under it.
    pub(crate) async fn page(&self, text: &str) -> Result<(), CliError> {
        let pager = std::env::var("STATESTORE_PAGER")
            .or_else(|_| std::env::var("PAGER"))
            .unwrap_or_else(|_| "less".to_owned());
        let pager = pager.trim();
        if !self.out_terminal || self.json || pager.is_empty() || pager == "cat" {
            return self.out(text);
        }
        let _sigint = ctrl_c().ok();
        let mut command = std::process::Command::new("sh");
        command
            .arg("-c")
            .arg(pager)
            .stdin(std::process::Stdio::piped());
        if std::env::var_os("LESS").is_none() {
            command.env("LESS", "FRX");
        }
        let Ok(mut child) = command.spawn() else {
            tracing::debug!(pager, "the pager did not start; writing to stdout");
            return self.out(text);
        };
        if let Some(mut input) = child.stdin.take() {
            // The pager quitting before reading everything (`q`) is no
            // failure.
            match input.write_all(text.as_bytes()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    return Err(CliError::io("writing to the pager")(e));
                }
                _ => {}
            }
        }
        tokio::task::spawn_blocking(move || child.wait())
            .await
            .map_err(|e| CliError::io("waiting for the pager")(std::io::Error::other(e)))?
            .map_err(CliError::io("waiting for the pager"))?;
        Ok(())
    }

    /// Writes `value` as one JSON document and a newline to stdout.
    pub(crate) fn out_json(&self, value: &serde_json::Value) -> Result<(), CliError> {
        let text = serde_json::to_string_pretty(value).unwrap_or_default();
        self.out(&format!("{text}\n"))
    }

    /// One diagnostic line to stderr. Failures to write to stderr are
    /// ignored: there is nowhere left to report them.
    pub(crate) fn diag(&self, line: &str) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{line}");
    }

    /// A warning line to stderr.
    pub(crate) fn warn(&self, line: &str) {
        let label = self.paint(true, Paint::Yellow, "warning:");
        self.diag(&format!("{label} {}", clean(line)));
    }

    /// Reports `e` on stderr (error, what was written, what to do next)
    /// and returns its exit code. With `--json`, one JSON object on one
    /// line: `error`, `hint` (or null), `write_outcome` (`not_written`,
    /// `unknown`, `written`, or null where the command wrote nothing) and
    /// `exit_code`.
    pub(crate) fn fail(&self, e: &CliError) -> ExitCode {
        let message = crate::error::chain(e);
        // What it says may echo what the user typed or the store held.
        if self.json {
            let doc = serde_json::json!({
                "error": message,
                "hint": e.hint(),
                "write_outcome": e.write_outcome().map(|o| o.as_str()),
                "exit_code": e.exit_code(),
            });
            self.diag(&doc.to_string());
            return ExitCode::from(e.exit_code());
        }
        let label = self.paint(true, Paint::Red, "error:");
        self.diag(&format!("{label} {}", clean(&message)));
        if let Some(written) = e.written() {
            self.diag(&format!("       ({})", clean(written)));
        }
        if let Some(hint) = e.hint() {
            let label = self.paint(true, Paint::Bold, "hint:");
            self.diag(&format!("{label}  {}", clean(&hint)));
        }
        ExitCode::from(e.exit_code())
    }

    /// A progress bar on stderr for `total` steps, or a hidden one when
    /// stderr is not a terminal.
    pub(crate) fn progress(&self, total: u64, what: &str) -> indicatif::ProgressBar {
        self.bar(total, what, "{pos}/{len}")
    }

    /// [`Ui::progress`] counting bytes.
    pub(crate) fn progress_bytes(&self, total: u64, what: &str) -> indicatif::ProgressBar {
        self.bar(total, what, "{bytes}/{total_bytes}")
    }

    fn bar(&self, total: u64, what: &str, counts: &str) -> indicatif::ProgressBar {
        if !self.progress_bars || total == 0 {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(total),
            indicatif::ProgressDrawTarget::stderr(),
        );
        let bar_part = if self.color_err {
            "{bar:30.cyan/blue}"
        } else {
            "{bar:30}"
        };
        let template = format!("{{msg}} [{bar_part}] {counts} ({{eta}} left)");
        if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }
}

/// A future that completes on Ctrl-C (SIGINT), which from this call on no
/// longer ends the process (held unpolled, it only keeps Ctrl-C from
/// ending it): the caller cleans up, and exits 130 or goes on.
pub(crate) fn ctrl_c() -> Result<impl Future<Output = ()>, CliError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut sigint =
            signal(SignalKind::interrupt()).map_err(CliError::io("watching for Ctrl-C"))?;
        Ok(async move {
            sigint.recv().await;
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// Column alignment for [`table`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    Left,
    Right,
}

/// `text` safe to show on a terminal: every control character but a
/// newline and a tab, and the characters that reorder the text around
/// them (the bidirectional controls), written as an escape — `\r`,
/// `\u{1b}` — so that stored text cannot move the cursor, retitle the
/// terminal or hide what follows it. `--json` output needs none of this:
/// JSON escapes control characters itself.
pub(crate) fn clean(text: &str) -> Cow<'_, str> {
    escape(text, |c| c == '\n' || c == '\t')
}

/// [`clean`] for text that must stay on one line (a table's cell): a
/// newline and a tab are escaped too.
pub(crate) fn clean_line(text: &str) -> Cow<'_, str> {
    escape(text, |_| false)
}

fn escape(text: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        !keep(c)
            && (c.is_control()
                || matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
    };
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if !unsafe_char(c) => out.push(c),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
        }
    }
    Cow::Owned(out)
}

/// Columns `text` takes on a terminal (wide characters take two).
fn width(text: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(text)
}

/// How library events reach stderr without `STATESTORE_LOG`: as the
/// command's own messages — `warning: …`, `error: …` — with their fields
/// after the text and control characters escaped, not as log lines.
pub(crate) struct Voice;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Voice
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let label = match *event.metadata().level() {
            tracing::Level::ERROR => "error:",
            tracing::Level::WARN => "warning:",
            _ => "note:",
        };
        let mut text = String::new();
        ctx.field_format().format_fields(
            tracing_subscriber::fmt::format::Writer::new(&mut text),
            event,
        )?;
        writeln!(writer, "{label} {}", clean(&text))
    }
}

/// A plain-text table: a header row and aligned columns separated by two
/// spaces, each line ending in a newline. Cells are [`clean_line`]d.
pub(crate) fn table(header: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<Cow<'_, str>>> = rows
        .iter()
        .map(|row| row.iter().map(|c| clean_line(c)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|(h, _)| width(h)).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(cell));
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        let last = cells.len().saturating_sub(1);
        for (i, ((cell, (_, align)), w)) in cells.iter().zip(header).zip(&widths).enumerate() {
            let pad = w.saturating_sub(width(cell));
            if *align == Align::Right {
                s.push_str(&" ".repeat(pad));
            }
            s.push_str(cell);
            if *align == Align::Left && i != last {
                s.push_str(&" ".repeat(pad));
            }
            if i != last {
                s.push_str("  ");
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(header.iter().map(|(h, _)| *h).collect());
    for row in &rows {
        out.push_str(&line(row.iter().map(AsRef::as_ref).collect()));
    }
    out
}

/// `n` with thousands separators: `12,345`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `n` and `noun`, plural unless `n` is 1: `1 session`, `1,204 sessions`.
pub(crate) fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{} {noun}s", thousands(n))
    }
}

/// Bytes for people: `512 B`, `3.4 KiB`, `1.2 MiB`, `5.0 GiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1000 {
        return format!("{n} B");
    }
    #[allow(clippy::cast_precision_loss, reason = "a rounded figure for display")]
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS.get(unit).copied().unwrap_or("TiB"))
}

/// A duration for people: `45s`, `12m`, `3h 20m`, `2d 4h`.
pub(crate) fn duration(d: Duration) -> String {
    let s = d.as_secs();
    let two = |big: u64, big_unit: &str, small: u64, small_unit: &str| {
        if small == 0 {
            format!("{big}{big_unit}")
        } else {
            format!("{big}{big_unit} {small}{small_unit}")
        }
    };
    match s {
        0..60 => format!("{s}s"),
        60..3600 => two(s / 60, "m", s % 60, "s"),
        3600..86_400 => two(s / 3600, "h", (s % 3600) / 60, "m"),
        _ => two(s / 86_400, "d", (s % 86_400) / 3600, "h"),
    }
}

/// A timestamp as UTC `YYYY-MM-DD HH:MM:SS` (no time-zone database needed).
pub(crate) fn timestamp(t: statestore::Timestamp) -> String {
    let ms = t.as_unix_millis();
    if ms == 0 {
        return "-".into();
    }
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234), "1,234");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(duration(Duration::from_secs(59)), "59s");
        assert_eq!(duration(Duration::from_secs(3 * 3600 + 20 * 60)), "3h 20m");
        assert_eq!(duration(Duration::from_secs(86_400)), "1d");
        assert_eq!(bytes(1_000_000), "976.6 KiB");
        assert_eq!(bytes(1_024_000), "1.0 MiB");
        assert_eq!(
            timestamp(statestore::Timestamp::from_unix_millis(1_700_000_000_000)),
            "2023-11-14 22:13:20Z"
        );
        assert_eq!(
            timestamp(statestore::Timestamp::from_unix_millis(951_782_400_000)),
            "2000-02-29 00:00:00Z"
        );
    }

    #[test]
    fn tables_align() {
        let t = table(
            &[("ID", Align::Left), ("N", Align::Right)],
            &[
                vec!["a".into(), "10".into()],
                vec!["long-id".into(), "2".into()],
            ],
        );
        assert_eq!(t, "ID        N\na        10\nlong-id   2\n");
        // Wide characters take two columns; a cell stays on its line.
        let t = table(
            &[("T", Align::Left), ("N", Align::Left)],
            &[
                vec!["日本".into(), "1".into()],
                vec!["a\nb".into(), "2".into()],
            ],
        );
        assert_eq!(t, "T     N\n日本  1\na\\nb  2\n");
    }

    #[test]
    fn control_characters_are_escaped() {
        let hostile = "ok\u{1b}]2;PWNED\u{7}\r\n\tnext \u{202e}txt\u{9b}";
        assert_eq!(
            super::clean(hostile),
            "ok\\u{1b}]2;PWNED\\u{7}\\r\n\tnext \\u{202e}txt\\u{9b}"
        );
        assert_eq!(super::clean_line("a\nb\tc"), "a\\nb\\tc");
        assert!(matches!(
            super::clean("plain é 日本"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
