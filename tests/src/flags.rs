//! The test server's tiny `--flag value` parser (kept dependency-free so
//! the binary builds and starts fast).

use std::collections::BTreeMap;
use std::str::FromStr;

use anyhow::{Context, Result, anyhow, bail};

/// Parsed flags of one subcommand.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    values: BTreeMap<String, String>,
}

impl Flags {
    /// Parses `args`; `switches` take no value, `options` take one. Anything
    /// else is an error, so typos fail loudly instead of being ignored.
    pub(crate) fn parse(args: &[String], options: &[&str], switches: &[&str]) -> Result<Self> {
        let mut values = BTreeMap::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let name = arg.strip_prefix("--").ok_or_else(|| anyhow!("unexpected argument {arg:?}"))?;
            let (name, inline) = match name.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (name, None),
            };
            let value = if switches.contains(&name) {
                if inline.is_some() {
                    bail!("--{name} takes no value");
                }
                String::new()
            } else if options.contains(&name) {
                match inline {
                    Some(v) => v,
                    None => it.next().cloned().ok_or_else(|| anyhow!("--{name} needs a value"))?,
                }
            } else {
                bail!("unknown flag --{name}");
            };
            if values.insert(name.to_owned(), value).is_some() {
                bail!("--{name} given twice");
            }
        }
        Ok(Self { values })
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    pub(crate) fn get<T: FromStr>(&self, name: &str) -> Result<Option<T>>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        self.values.get(name).map(|v| v.parse().with_context(|| format!("--{name} {v:?}"))).transpose()
    }

    pub(crate) fn require<T: FromStr>(&self, name: &str) -> Result<T>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        self.get(name)?.ok_or_else(|| anyhow!("--{name} is required"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests panic so failures carry a backtrace")]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_options_and_switches() {
        let f = Flags::parse(&args("--requests 5 --keepalive --url=http://x/"), &["requests", "url"], &["keepalive"])
            .unwrap();
        assert_eq!(f.require::<u64>("requests").unwrap(), 5);
        assert_eq!(f.require::<String>("url").unwrap(), "http://x/");
        assert!(f.has("keepalive"));
        assert_eq!(f.get::<u64>("missing").unwrap(), None);
    }

    #[test]
    fn rejects_unknown_missing_and_repeated() {
        assert!(Flags::parse(&args("--nope 1"), &["requests"], &[]).is_err());
        assert!(Flags::parse(&args("--requests"), &["requests"], &[]).is_err());
        assert!(Flags::parse(&args("--requests 1 --requests 2"), &["requests"], &[]).is_err());
        assert!(Flags::parse(&args("stray"), &["requests"], &[]).is_err());
        assert!(Flags::parse(&args("--requests x"), &["requests"], &[]).unwrap().require::<u64>("requests").is_err());
    }
}
