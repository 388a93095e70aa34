//! Running child processes and reporting steps with timestamps.

use std::{
    ffi::OsString,
    process::Command,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};

/// The cargo that runs us (`cargo xtask` sets CARGO), so the same toolchain
/// builds the workspace; plain `cargo` when run outside cargo.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")))
}

/// Runs `cmd` with inherited stdio and fails unless it exits 0.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = show(cmd);
    eprintln!("[xtask] $ {shown}");
    let status = cmd.status().with_context(|| format!("starting `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// The command line as a user would type it, for messages.
pub fn show(cmd: &Command) -> String {
    let mut out = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        out.push(' ');
        out.push_str(&arg.to_string_lossy());
    }
    out
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Prints each step with a UTC timestamp and the seconds it and the whole
/// task took, so a slow CI run shows where the time went.
pub struct Steps {
    started: Instant,
}

impl Steps {
    pub fn new() -> Self {
        Self { started: Instant::now() }
    }

    pub fn step<T>(&mut self, name: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
        eprintln!("[xtask {}] ==> {name}", utc_now());
        let t = Instant::now();
        let result = f();
        let took = t.elapsed().as_secs_f64();
        let total = self.started.elapsed().as_secs_f64();
        match &result {
            Ok(_) => eprintln!("[xtask {}] <== {name}: ok in {took:.1}s (total {total:.1}s)", utc_now()),
            Err(_) => eprintln!("[xtask {}] <== {name}: FAILED after {took:.1}s (total {total:.1}s)", utc_now()),
        }
        result.with_context(|| format!("step `{name}` failed"))
    }

    pub fn done(self) {
        eprintln!("[xtask {}] all steps ok in {:.1}s", utc_now(), self.started.elapsed().as_secs_f64());
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` without a date crate (xtask keeps its dependencies
/// few so it builds fast on a fresh CI machine).
fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format_utc(secs)
}

fn format_utc(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`, restricted to dates after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::format_utc;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_763_891_999), "2025-11-23T09:59:59Z");
    }
}
