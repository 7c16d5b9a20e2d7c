//! Splitting a store URL into scheme, location and query options, and the
//! redacted form every error and log line shows.
#![cfg_attr(
    not(any(
        feature = "memory",
        feature = "sqlite",
        feature = "redis",
        feature = "postgres"
    )),
    allow(
        dead_code,
        reason = "with no backend compiled in, nothing reads the options"
    )
)]

use std::time::Duration;

use crate::OpenError;

/// The schemes [`open`](crate::open) knows, with or without their feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Memory,
    Sqlite,
    Redis { tls: bool, cluster: bool },
    Postgres,
}

impl Scheme {
    fn parse(scheme: &str) -> Option<Self> {
        Some(match scheme {
            "memory" => Self::Memory,
            "sqlite" => Self::Sqlite,
            "redis" => Self::Redis {
                tls: false,
                cluster: false,
            },
            "rediss" => Self::Redis {
                tls: true,
                cluster: false,
            },
            "redis+cluster" => Self::Redis {
                tls: false,
                cluster: true,
            },
            "rediss+cluster" => Self::Redis {
                tls: true,
                cluster: true,
            },
            "postgres" | "postgresql" => Self::Postgres,
            _ => return None,
        })
    }

    /// The features this scheme needs that this build lacks, first missing
    /// first, or `None` when it can open.
    fn missing_feature(self) -> Option<&'static str> {
        match self {
            Self::Memory => (!cfg!(feature = "memory")).then_some("memory"),
            Self::Sqlite => (!cfg!(feature = "sqlite")).then_some("sqlite"),
            Self::Postgres => (!cfg!(feature = "postgres")).then_some("postgres"),
            Self::Redis { tls, cluster } => {
                if !cfg!(feature = "redis") {
                    Some(match (tls, cluster) {
                        (true, _) => "redis-tls",
                        (false, true) => "redis-cluster",
                        (false, false) => "redis",
                    })
                } else if tls && !cfg!(feature = "redis-tls") {
                    Some("redis-tls")
                } else if cluster && !cfg!(feature = "redis-cluster") {
                    Some("redis-cluster")
                } else {
                    None
                }
            }
        }
    }
}

/// The hosts and ports of a server's URL, checked before any client
/// library sees them, so that a URL that cannot name a server is an
/// invalid URL (a usage error), not a server that cannot be reached: every
/// host named (a cluster's and PostgreSQL's may be several, separated by
/// commas) and every port a number from 1 to 65535. PostgreSQL may leave
/// the host to a `host=` option (a Unix socket's directory).
fn check_hosts(scheme: Scheme, location: &str, query: &Query) -> Result<(), String> {
    let example = match scheme {
        Scheme::Redis { cluster: true, .. } => "redis+cluster://HOST:PORT,HOST:PORT",
        Scheme::Redis { .. } => "redis://[USER:PASSWORD@]HOST[:PORT][/DB]",
        Scheme::Postgres => "postgres://[USER:PASSWORD@]HOST[:PORT]/DB",
        Scheme::Memory | Scheme::Sqlite => return Ok(()),
    };
    let authority = location.split('/').next().unwrap_or_default();
    let hosts = authority
        .rsplit_once('@')
        .map_or(authority, |(_, hosts)| hosts);
    if hosts.is_empty() && scheme == Scheme::Postgres && query.get("host").is_some() {
        return Ok(());
    }
    for host in hosts.split(',') {
        // `[v6 address]:port`, or `name:port`.
        let (name, port) = match host.strip_prefix('[') {
            Some(v6) => match v6.split_once(']') {
                Some((addr, "")) => (addr, None),
                Some((addr, rest)) => (addr, Some(rest.strip_prefix(':').unwrap_or(rest))),
                None => return Err(format!("{host:?} opens a [v6 address] it does not close")),
            },
            None => match host.rsplit_once(':') {
                Some((name, port)) => (name, Some(port)),
                None => (host, None),
            },
        };
        if name.is_empty() {
            return Err(format!("no host: expected {example}"));
        }
        if let Some(port) = port
            && !matches!(port.parse::<u16>(), Ok(1..))
        {
            return Err(format!(
                "port {port:?} is not a number from 1 to 65535: expected {example}"
            ));
        }
    }
    Ok(())
}

/// A store URL taken apart. Backends read [`location`](Self::location)
/// and take their options from [`query`](Self::query).
#[derive(Debug)]
pub(crate) struct StoreUrl {
    pub(crate) scheme: Scheme,
    /// The scheme as written (lowercased).
    #[cfg_attr(
        not(any(feature = "redis-cluster", feature = "postgres")),
        allow(dead_code)
    )]
    pub(crate) scheme_name: String,
    /// Everything between `://` and `?`, still percent-encoded.
    pub(crate) location: String,
    pub(crate) query: Query,
}

impl StoreUrl {
    /// Splits `url`, checking that its scheme is known and compiled in.
    pub(crate) fn parse(url: &str) -> Result<Self, OpenError> {
        let redacted = redact(url);
        let invalid = |reason: String| OpenError::InvalidUrl {
            url: redacted.clone(),
            reason,
        };
        let Some((scheme_name, rest)) = url.split_once("://") else {
            return Err(invalid(
                "expected scheme://…, e.g. memory://, sqlite://data/chat.db or redis://host:6379"
                    .into(),
            ));
        };
        let scheme_name = scheme_name.to_ascii_lowercase();
        let Some(scheme) = Scheme::parse(&scheme_name) else {
            return Err(OpenError::UnknownScheme {
                url: redacted,
                scheme: scheme_name,
            });
        };
        if let Some(feature) = scheme.missing_feature() {
            return Err(OpenError::FeatureDisabled {
                url: redacted,
                scheme: scheme_name,
                feature,
            });
        }
        if rest.contains('#') {
            return Err(invalid("a store URL has no #fragment".into()));
        }
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let query = Query::parse(query, &redacted, &scheme_name)?;
        if let Err(reason) = check_hosts(scheme, location, &query) {
            return Err(invalid(reason));
        }
        Ok(Self {
            scheme,
            scheme_name,
            location: location.to_owned(),
            query,
        })
    }

    /// The URL as errors show it: password replaced, query left out.
    pub(crate) fn redacted(&self) -> &str {
        &self.query.url
    }

    /// An [`OpenError::InvalidUrl`] about this URL.
    pub(crate) fn invalid(&self, reason: impl Into<String>) -> OpenError {
        OpenError::InvalidUrl {
            url: self.query.url.clone(),
            reason: reason.into(),
        }
    }
}

/// The query options of a URL: `name=value` pairs, percent-decoded, each
/// name at most once.
#[derive(Debug)]
pub(crate) struct Query {
    pairs: Vec<(String, String)>,
    /// The redacted URL, for errors.
    url: String,
    scheme: String,
}

impl Query {
    fn parse(query: &str, url: &str, scheme: &str) -> Result<Self, OpenError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name).map_err(|reason| OpenError::InvalidUrl {
                url: url.to_owned(),
                reason: format!("an option name {reason}"),
            })?;
            let error = |reason: String| OpenError::InvalidOption {
                url: url.to_owned(),
                option: name.clone(),
                reason,
            };
            if !pair.contains('=') || value.is_empty() {
                return Err(error("it has no value (write name=value)".into()));
            }
            if pairs.iter().any(|(n, _)| *n == name) {
                return Err(error("it is given twice".into()));
            }
            let value = decode(value).map_err(|reason| error(format!("its value {reason}")))?;
            pairs.push((name, value));
        }
        Ok(Self {
            pairs,
            url: url.to_owned(),
            scheme: scheme.to_owned(),
        })
    }

    /// Fails on the first option not in `known`, naming the ones that are.
    pub(crate) fn allow(&self, known: &[&str]) -> Result<(), OpenError> {
        match self
            .pairs
            .iter()
            .find(|(n, _)| !known.contains(&n.as_str()))
        {
            None => Ok(()),
            Some((name, _)) => Err(self.error(
                name,
                if known.is_empty() {
                    format!("{}:// URLs take no options", self.scheme)
                } else {
                    format!(
                        "unknown option for {}:// URLs, which take: {}",
                        self.scheme,
                        known.join(", ")
                    )
                },
            )),
        }
    }

    /// An [`OpenError::InvalidOption`] about option `name`.
    pub(crate) fn error(&self, name: &str, reason: impl Into<String>) -> OpenError {
        OpenError::InvalidOption {
            url: self.url.clone(),
            option: name.to_owned(),
            reason: reason.into(),
        }
    }

    /// The value of option `name`, if given.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The options not in `ours`, in the order given, percent-decoded.
    #[cfg(feature = "postgres")]
    pub(crate) fn others<'a>(
        &'a self,
        ours: &'a [&str],
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.pairs
            .iter()
            .filter(|(n, _)| !ours.contains(&n.as_str()))
            .map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Option `name` as a duration (see [`parse_duration`]).
    pub(crate) fn duration(&self, name: &str) -> Result<Option<Duration>, OpenError> {
        self.get(name)
            .map(|v| parse_duration(v).map_err(|reason| self.error(name, reason)))
            .transpose()
    }

    /// Option `name` as a whole number.
    #[cfg_attr(
        not(any(feature = "memory", feature = "redis", feature = "postgres")),
        allow(dead_code, reason = "no backend with a numeric option")
    )]
    pub(crate) fn number<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, OpenError> {
        self.get(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| self.error(name, format!("`{v}` is not a whole number")))
            })
            .transpose()
    }

    /// Option `name` as one of `choices`, returning its index.
    #[cfg_attr(
        not(any(feature = "sqlite", feature = "redis")),
        allow(dead_code, reason = "no backend with a choice option")
    )]
    pub(crate) fn choice(&self, name: &str, choices: &[&str]) -> Result<Option<usize>, OpenError> {
        self.get(name)
            .map(|v| {
                choices
                    .iter()
                    .position(|c| c.eq_ignore_ascii_case(v))
                    .ok_or_else(|| {
                        self.error(name, format!("`{v}` is not one of: {}", choices.join(", ")))
                    })
            })
            .transpose()
    }
}

/// A duration as URLs (and the `statestore` command) write it: a whole
/// number with a unit — `ms`, `s`, `m`, `h` or `d` — or without one for
/// seconds: `500ms`, `30m`, `1h`, `90`. Zero is refused: leave the option
/// out instead.
///
/// ```
/// use std::time::Duration;
///
/// assert_eq!(statestore::parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
/// assert!(statestore::parse_duration("soon").is_err());
/// ```
///
/// # Errors
///
/// A message saying what a duration looks like.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not a duration (e.g. 500ms, 30s, 30m, 1h, 2d, or seconds)");
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let per_unit_ms: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    let ms = n.checked_mul(per_unit_ms).ok_or_else(bad)?;
    if ms == 0 {
        return Err(format!(
            "`{text}` is zero; leave the option out for the default"
        ));
    }
    Ok(Duration::from_millis(ms))
}

/// Percent-encodes every byte of `text` but ASCII letters, digits and
/// `-._~`: the inverse of [`decode`] for any text.
#[cfg(feature = "postgres")]
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-decodes `text` (`%20` → space); `+` stays `+`.
pub(crate) fn decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("has a % not followed by two hex digits")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "is not UTF-8 once percent-decoded".to_owned())
}

/// `url` as errors and logs show it: without its query and with any
/// credentials replaced by `***` (`redis://app:***@host:6379/0`; a user name
/// alone, `redis://secret@host`, is replaced too, since some write the
/// password there). Everything up to the last `@` counts as credentials, so
/// a password holding `/`, `?`, `#` or `@` is hidden all the same. `memory`
/// and `sqlite` URLs hold no credentials: only their query is dropped.
#[must_use]
pub fn redact(url: &str) -> String {
    let cut = |s: &str| s.split(['?', '#']).next().unwrap_or_default().to_owned();
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let lower = scheme.map(str::to_ascii_lowercase);
    if matches!(lower.as_deref(), Some("memory" | "sqlite")) {
        return cut(url);
    }
    let prefix = scheme.map_or_else(String::new, |s| format!("{s}://"));
    match rest.rsplit_once('@') {
        None => format!("{prefix}{}", cut(rest)),
        Some((userinfo, host)) => {
            let user = match userinfo.split_once(':') {
                Some((user, _password)) if !user.contains(['/', '?', '#']) => {
                    format!("{user}:***")
                }
                _ => "***".to_owned(),
            };
            format!("{prefix}{user}@{}", cut(host))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_or_seconds() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        for bad in [
            "",
            "m",
            "1.5h",
            "-1s",
            "10 s",
            "1y",
            "99999999999999999d",
            "0s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn redaction_hides_passwords_and_queries() {
        assert_eq!(
            redact("redis://app:hunter2@h:6379/2?prefix=x"),
            "redis://app:***@h:6379/2"
        );
        assert_eq!(redact("redis://:hunter2@h"), "redis://:***@h");
        assert_eq!(redact("redis://hunter2@h"), "redis://***@h");
        // '@' in the password itself.
        assert_eq!(redact("redis://u:a@b@h:1"), "redis://u:***@h:1");
        assert_eq!(
            redact("redis+cluster://u:pw@a:1,b:2"),
            "redis+cluster://u:***@a:1,b:2"
        );
        assert_eq!(redact("redis://u:pa#ss?w/d@h:1"), "redis://u:***@h:1");
        // An @ in the query: more is hidden than needed, nothing shown that should not be.
        assert_eq!(redact("redis://h:1?prefix=a@b"), "redis://h:***@b");
        assert_eq!(redact("not a url hunter2@h"), "***@h");
        assert_eq!(redact("sqlite://data/chat.db"), "sqlite://data/chat.db");
        assert_eq!(redact("sqlite:///a@b/c.db"), "sqlite:///a@b/c.db");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(decode("a%20b%2Fc+d").as_deref(), Ok("a b/c+d"));
        assert!(decode("%2").is_err());
        assert!(decode("%zz").is_err());
        assert!(decode("%ff").is_err());
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn encoding_is_decodings_inverse() {
        for text in ["plain", "a b/c+d&e=f?g#h%i", "-._~", "héllo"] {
            assert_eq!(decode(&encode(text)).as_deref(), Ok(text), "{text:?}");
        }
        assert_eq!(encode("a b&c"), "a%20b%26c");
    }

    #[test]
    #[cfg(all(
        feature = "memory",
        feature = "sqlite",
        feature = "redis",
        feature = "redis-cluster",
        feature = "redis-tls",
        feature = "postgres"
    ))]
    fn servers_urls_name_a_host_and_a_port() {
        let parse = |url: &str| StoreUrl::parse(url).map(|_| ()).map_err(|e| e.to_string());
        for bad in [
            "redis://",
            "redis://h:notaport",
            "redis://:6379",
            "redis://u:p@",
            "redis://h:0",
            "redis://h:65536",
            "redis://[::1",
            "redis+cluster://h1:7000,:7001",
            "postgres://",
            "postgres://u@h:x/db",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.starts_with("invalid store URL"), "{bad}: {e}");
        }
        for good in [
            "redis://h",
            "redis://u:p@h:6379/2",
            "redis://[::1]:6379",
            "redis://u:p%40ss@h:1",
            "rediss://h.example:6380",
            "redis+cluster://h1:7000,h2:7001",
            "postgres://u:p@h:5432/db",
            "postgresql://h1,h2:5433/db",
            "postgres:///db?host=/var/run/postgresql",
            "memory://",
            "sqlite://x.db",
        ] {
            assert!(parse(good).is_ok(), "{good}: {:?}", parse(good));
        }
    }

    #[test]
    fn queries_are_checked() {
        let q = Query::parse("ttl=1h&prefix=a%3Ab", "u", "redis").expect("parses");
        assert_eq!(q.get("prefix"), Some("a:b"));
        assert_eq!(
            q.duration("ttl").ok().flatten(),
            Some(Duration::from_secs(3600))
        );
        assert!(q.allow(&["ttl", "prefix"]).is_ok());
        let e = q
            .allow(&["ttl"])
            .expect_err("prefix is not allowed")
            .to_string();
        assert!(e.contains("`prefix`") && e.contains("take: ttl"), "{e}");
        for bad in ["ttl", "ttl=", "ttl=1&ttl=2", "ttl=%zz"] {
            assert!(Query::parse(bad, "u", "redis").is_err(), "{bad:?} parsed");
        }
    }
}
