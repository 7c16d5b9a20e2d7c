//! `INFO commandstats`: the one parser of it that tests, benchmarks and
//! `xtask` share, and the [`RedisServer`] methods that read and reset it.

use std::collections::BTreeMap;
use std::io;

use crate::RedisServer;

/// One command's line of `INFO commandstats`
/// (`cmdstat_NAME:calls=…,usec=…,usec_per_call=…,…`), counted since the
/// server started or since the last [`RedisServer::reset_stats`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CommandStat {
    /// How many times the command ran.
    pub calls: u64,
    /// The server's own time in those calls, in microseconds.
    pub usec: u64,
    /// `usec / calls`, as Redis reports it (two decimals).
    pub usec_per_call: f64,
}

/// Parses the reply to `INFO commandstats` (or a full `INFO`: other lines
/// are skipped) into `{"evalsha": CommandStat, "set": …}`, keyed by command
/// name without the `cmdstat_` prefix, lowercased; subcommands look like
/// `config|resetstat`.
///
/// # Errors
///
/// [`io::ErrorKind::InvalidData`], quoting the line, when a `cmdstat_` line
/// lacks `calls`, `usec` or `usec_per_call` or one of them is not a number.
///
/// ```
/// let info = "# Commandstats\r\ncmdstat_evalsha:calls=4,usec=30,usec_per_call=7.50,\
///             rejected_calls=0,failed_calls=0\r\n";
/// let stats = redis_test_server::parse_command_stats(info)?;
/// assert_eq!(stats["evalsha"].calls, 4);
/// assert_eq!(stats["evalsha"].usec_per_call, 7.5);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn parse_command_stats(info: &str) -> io::Result<BTreeMap<String, CommandStat>> {
    let mut stats = BTreeMap::new();
    for line in info.lines() {
        let Some((name, fields)) = line
            .trim()
            .strip_prefix("cmdstat_")
            .and_then(|rest| rest.split_once(':'))
        else {
            continue;
        };
        let field = |key: &str| {
            fields
                .split(',')
                .find_map(|field| field.strip_prefix(key)?.strip_prefix('='))
        };
        let stat = (|| {
            Some(CommandStat {
                calls: field("calls")?.parse().ok()?,
                usec: field("usec")?.parse().ok()?,
                usec_per_call: field("usec_per_call")?.parse().ok()?,
            })
        })()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected INFO commandstats line: {line}"),
            )
        })?;
        stats.insert(name.to_ascii_lowercase(), stat);
    }
    Ok(stats)
}

impl RedisServer {
    /// `INFO commandstats` as `{"evalsha": calls, "set": calls, ...}`: command
    /// names as Redis reports them without the `cmdstat_` prefix, lowercased
    /// (subcommands look like `config|resetstat`). The harness's own commands
    /// (`ping`, `info`, `auth`, ...) are counted too.
    ///
    /// # Errors
    ///
    /// As [`cli`](Self::cli), or as [`parse_command_stats`].
    pub fn command_stats(&self) -> io::Result<BTreeMap<String, u64>> {
        Ok(self
            .command_stats_detailed()?
            .into_iter()
            .map(|(name, stat)| (name, stat.calls))
            .collect())
    }

    /// `INFO commandstats` with the server's time per command: see
    /// [`parse_command_stats`]. As with [`command_stats`](Self::command_stats),
    /// the harness's own commands are counted too.
    ///
    /// # Errors
    ///
    /// As [`cli`](Self::cli), or as [`parse_command_stats`].
    pub fn command_stats_detailed(&self) -> io::Result<BTreeMap<String, CommandStat>> {
        parse_command_stats(&self.cli(&["INFO", "commandstats"])?)
    }

    /// The CPU time the server process has used since it started, in
    /// seconds (`used_cpu_sys + used_cpu_user` of `INFO cpu`). Unlike the
    /// times of `INFO commandstats` (wall-clock time in each command), it
    /// does not grow while the server waits for a CPU another process
    /// holds, and it counts reading requests and writing replies too.
    ///
    /// # Errors
    ///
    /// As [`cli`](Self::cli); [`io::ErrorKind::InvalidData`] when the reply
    /// lacks either field.
    pub fn cpu_seconds(&self) -> io::Result<f64> {
        let info = self.cli(&["INFO", "cpu"])?;
        let field = |name: &str| {
            info.lines().find_map(|l| {
                l.trim()
                    .strip_prefix(name)?
                    .strip_prefix(':')?
                    .parse::<f64>()
                    .ok()
            })
        };
        match (field("used_cpu_sys"), field("used_cpu_user")) {
            (Some(sys), Some(user)) => Ok(sys + user),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("INFO cpu without used_cpu_sys and used_cpu_user: {info}"),
            )),
        }
    }

    /// Resets the server's statistics (`CONFIG RESETSTAT`), command stats
    /// included.
    ///
    /// # Errors
    ///
    /// As [`cli`](Self::cli).
    pub fn reset_stats(&self) -> io::Result<()> {
        self.cli(&["CONFIG", "RESETSTAT"]).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_line_is_parsed_and_other_lines_are_skipped() {
        let info = "# Commandstats\r\n\
                    cmdstat_EVALSHA:calls=10,usec=125,usec_per_call=12.50,rejected_calls=0,failed_calls=1\r\n\
                    cmdstat_config|resetstat:calls=1,usec=3,usec_per_call=3.00\r\n\
                    \r\n\
                    # Keyspace\r\n\
                    db0:keys=3,expires=0,avg_ttl=0\r\n";
        let stats = parse_command_stats(info).unwrap_or_default();
        assert_eq!(
            stats.keys().map(String::as_str).collect::<Vec<_>>(),
            ["config|resetstat", "evalsha"]
        );
        assert_eq!(
            stats.get("evalsha"),
            Some(&CommandStat {
                calls: 10,
                usec: 125,
                usec_per_call: 12.5
            })
        );
        assert_eq!(stats.get("config|resetstat").map(|s| s.calls), Some(1));
        assert_eq!(
            parse_command_stats("# Commandstats\r\n").ok(),
            Some(BTreeMap::new())
        );
    }

    #[test]
    fn a_malformed_command_line_is_an_error_quoting_it() {
        for line in [
            "cmdstat_get:usec=3,usec_per_call=3.00",
            "cmdstat_get:calls=x,usec=3,usec_per_call=3.00",
            "cmdstat_get:calls=1,usec=3",
        ] {
            let err = parse_command_stats(line).err();
            assert_eq!(
                err.as_ref().map(io::Error::kind),
                Some(io::ErrorKind::InvalidData)
            );
            assert!(err.is_some_and(|e| e.to_string().contains(line)), "{line}");
        }
    }
}
