//! [`SslMode`]: whether and how connections use TLS, read from libpq's
//! `sslmode` and `sslrootcert` (which tokio-postgres does not parse in
//! full: it knows neither `verify-ca`, `verify-full` nor `sslrootcert`),
//! and the rustls connector of feature `tls` (`connect`).

#[cfg(feature = "tls")]
pub(crate) mod connect;

use crate::error::{Error, Result};

/// Whether and how connections use TLS: libpq's `sslmode`, with libpq's
/// meanings.
///
/// Set it in the URL (`?sslmode=verify-full`, or `sslmode=verify-full` in
/// a key-value string) or with
/// [`PostgresStoreBuilder::ssl_mode`](crate::PostgresStoreBuilder::ssl_mode).
/// Every mode but `disable` and `prefer` needs the crate's `tls` feature;
/// without it, asking for one is [`Error::Config`].
///
/// | mode | TLS | the server's certificate |
/// |---|---|---|
/// | `disable` | never | — |
/// | `prefer` (the default; `allow` is read as `prefer`) | if the server offers it (with feature `tls`) | not verified |
/// | `require` | always | not verified, unless a root certificate is configured: then as `verify-ca` (as libpq does) |
/// | `verify-ca` | always | signed by a trusted root |
/// | `verify-full` | always | signed by a trusted root and issued for the host connected to |
///
/// The trusted roots are the ones given with `sslrootcert=<PEM file>` or
/// `tls_root_certificate`, else the system's (`sslrootcert=system` asks for
/// them explicitly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS if the server offers it (and the crate has feature `tls`); the
    /// certificate is not verified.
    #[default]
    Prefer,
    /// TLS always; the certificate is verified only against a configured
    /// root certificate.
    Require,
    /// TLS always, with a certificate signed by a trusted root.
    VerifyCa,
    /// TLS always, with a certificate signed by a trusted root and valid
    /// for the host name (or IP address) connected to.
    VerifyFull,
}

impl SslMode {
    /// The mode named `value` as libpq spells it.
    fn parse(value: &str) -> Result<Self> {
        match value {
            "disable" => Ok(Self::Disable),
            "allow" | "prefer" => Ok(Self::Prefer),
            "require" => Ok(Self::Require),
            "verify-ca" => Ok(Self::VerifyCa),
            "verify-full" => Ok(Self::VerifyFull),
            _ => Err(Error::Config(
                "sslmode must be disable, allow, prefer, require, verify-ca or verify-full"
                    .to_owned(),
            )),
        }
    }

    /// libpq's name of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// Whether a connection must use TLS.
    #[cfg(not(feature = "tls"))]
    pub(crate) fn requires_tls(self) -> bool {
        matches!(self, Self::Require | Self::VerifyCa | Self::VerifyFull)
    }

    /// The mode tokio-postgres negotiates with (it verifies nothing
    /// itself: the connector does).
    pub(crate) fn negotiation(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as M;
        match self {
            Self::Disable => M::Disable,
            Self::Prefer => M::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => M::Require,
        }
    }
}

/// Where the trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RootCerts {
    /// The system's (rustls-native-certs).
    System,
    /// A PEM file named by `sslrootcert`, read when the store is built.
    File(String),
}

/// A URL with `sslmode` and `sslrootcert` taken out, and their values.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Split {
    /// The URL or key-value string tokio-postgres parses.
    pub(crate) rest: String,
    pub(crate) mode: Option<SslMode>,
    pub(crate) root: Option<RootCerts>,
}

/// Takes `sslmode` and `sslrootcert` out of a `postgres://` URL's query or
/// a key-value string.
pub(crate) fn split(url: &str) -> Result<Split> {
    let mut out = Split::default();
    let mut take = |key: &str, value: String| -> Result<bool> {
        match key {
            "sslmode" => out.mode = Some(SslMode::parse(&value)?),
            "sslrootcert" if value == "system" => out.root = Some(RootCerts::System),
            "sslrootcert" => out.root = Some(RootCerts::File(value)),
            _ => return Ok(false),
        }
        Ok(true)
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_owned(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    if !take(&decode(key)?, decode(value)?)? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = String::new();
        for (span, key, value) in key_values(url)? {
            if !take(&key, value)? {
                kept.push_str(span);
                kept.push(' ');
            }
        }
        kept.trim_end().to_owned()
    };
    out.rest = rest;
    Ok(out)
}

/// Percent-decodes a URL query part (`+` stays `+`, as tokio-postgres reads it).
fn decode(text: &str) -> Result<String> {
    let bad = || Error::Config("the PostgreSQL URL has a bad percent-encoding".to_owned());
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// The `key = value` pairs of a key-value connection string, each with its
/// text as written, as tokio-postgres reads them: values quoted in `'…'`
/// or bare, `\` escaping the next character.
fn key_values(text: &str) -> Result<Vec<(&str, String, String)>> {
    let bad = || Error::Config("the PostgreSQL connection string does not parse".to_owned());
    let mut pairs = Vec::new();
    let mut chars = text.char_indices().peekable();
    let skip_ws = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_ws(&mut chars);
        let Some(&(start, _)) = chars.peek() else {
            return Ok(pairs);
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        skip_ws(&mut chars);
        if chars.next().map(|(_, c)| c) != Some('=') {
            return Err(bad());
        }
        skip_ws(&mut chars);
        let mut value = String::new();
        let quoted = chars.next_if(|(_, c)| *c == '\'').is_some();
        let mut end = text.len();
        loop {
            match chars.next() {
                None if quoted => return Err(bad()),
                None => break,
                Some((i, '\'')) if quoted => {
                    end = i + 1;
                    break;
                }
                Some((i, c)) if !quoted && c.is_whitespace() => {
                    end = i;
                    break;
                }
                Some((_, '\\')) => value.push(chars.next().ok_or_else(bad)?.1),
                Some((_, c)) => value.push(c),
            }
        }
        let span = text.get(start..end).ok_or_else(bad)?;
        pairs.push((span, key, value));
    }
}

/// The error for a TLS mode in a build without feature `tls`.
#[cfg(not(feature = "tls"))]
pub(crate) fn unsupported(what: &str) -> Error {
    Error::Config(format!(
        "{what} needs TLS, which this build lacks: enable the `tls` feature of \
         statestore-postgres (in the statestore facade: `postgres-tls`)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_urls() {
        let s = split("postgres://u:p@h:5/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca.pem")
            .expect("split");
        assert_eq!(s.rest, "postgres://u:p@h:5/db?application_name=x");
        assert_eq!(s.mode, Some(SslMode::VerifyFull));
        assert_eq!(s.root, Some(RootCerts::File("/tmp/ca.pem".to_owned())));
        let s = split("postgresql://h/db?sslmode=require").expect("split");
        assert_eq!(s.rest, "postgresql://h/db");
        assert_eq!(s.mode, Some(SslMode::Require));
        let s = split("postgres://h/db").expect("split");
        assert_eq!(
            (s.rest.as_str(), s.mode, s.root),
            ("postgres://h/db", None, None)
        );
        let s = split("postgres://h/db?sslrootcert=system").expect("split");
        assert_eq!(s.root, Some(RootCerts::System));
        assert!(split("postgres://h/db?sslmode=sometimes").is_err());
        assert!(split("postgres://h/db?sslrootcert=%zz").is_err());
    }

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_key_value_strings() {
        let s = split(
            r"host=h  sslmode = verify-ca password='a \'b c' sslrootcert='/x y/ca.pem' dbname=d",
        )
        .expect("split");
        assert_eq!(s.rest, r"host=h password='a \'b c' dbname=d");
        assert_eq!(s.mode, Some(SslMode::VerifyCa));
        assert_eq!(s.root, Some(RootCerts::File("/x y/ca.pem".to_owned())));
        assert!(split("host=h password='open").is_err());
        assert!(split("host").is_err());
        assert_eq!(split("").expect("split"), Split::default());
    }

    #[test]
    fn modes_round_trip_their_libpq_names() {
        for mode in [
            SslMode::Disable,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ] {
            assert_eq!(SslMode::parse(mode.as_str()).expect("parses"), mode);
        }
        assert_eq!(SslMode::parse("allow").expect("parses"), SslMode::Prefer);
    }
}
