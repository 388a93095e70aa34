//! Results: one JSON line per measured figure, a markdown table per run.
//!
//! # Design
//! A benchmark hands every result to a [`Sink`] as soon as it is measured:
//! the sink appends it to `bench/results/runs/<stamp>-<bench>.jsonl` and
//! prints one line, so a long run shows progress and a crash keeps what was
//! measured. [`Sink::finish`] writes the markdown tables; a full (not quick)
//! run with default options that completes also replaces the checked-in baseline `bench/results/<bench>.{jsonl,md}`,
//! so `git diff` shows what changed since the last baseline.
//!
//! A [`Record`] is one row: which table it belongs to, the case and the peer
//! (berth, a floor or a competitor), the parameters (Services, mode, …) and
//! ordered [`Figure`]s (the columns). Ratios are figures too, computed by the
//! benchmark that knows which row is the reference.
//!
//! # Limitations
//! The markdown is one table per `table` value in first-seen order, columns
//! in first-seen order; benchmarks choose names so that reads well.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Where and how a run happened; the first line of every JSONL file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    pub bench: String,
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub date: String,
    pub kernel: String,
    pub cores: usize,
    pub cpu: String,
    /// The command line that produced the run.
    pub command: String,
    /// `git rev-parse --short HEAD` (plus `-dirty`), when available.
    pub revision: Option<String>,
    pub quick: bool,
}

impl RunInfo {
    pub fn collect(bench: &str, quick: bool) -> Self {
        let kernel = nix::sys::utsname::uname()
            .map_or_else(|_| "unknown".to_owned(), |u| u.release().to_string_lossy().into_owned());
        let cpu = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        Self {
            bench: bench.to_owned(),
            date: utc_now(),
            kernel,
            cores: std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            cpu,
            command,
            revision: git_revision(),
            quick,
        }
    }
}

fn git_revision() -> Option<String> {
    let out = std::process::Command::new("git").args(["rev-parse", "--short", "HEAD"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let mut rev = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty());
    if dirty {
        rev.push_str("-dirty");
    }
    Some(rev)
}

/// One column of a row.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    /// `ns`, `rps`, `ms`, `x` (a ratio), `B`, `insns`, …
    pub unit: String,
}

impl Figure {
    pub fn new(name: impl Into<String>, value: f64, unit: impl Into<String>) -> Self {
        Self { name: name.into(), value, unit: unit.into() }
    }
}

/// Whether a row met the goal it is held to (if any).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Goal {
    /// e.g. `≤ 1.15× LRU-hit floor`.
    pub text: String,
    pub met: bool,
}

/// How a measurement ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", tag = "status", content = "detail")]
pub enum Outcome {
    Measured,
    /// The operation hit its time bound; figures (if any) are lower bounds.
    TimedOut(String),
    /// The peer could not be measured; the reason says why.
    Failed(String),
}

/// One row of a table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The markdown table this row belongs to.
    pub table: String,
    pub case: String,
    /// `berth-xdp`, `floor-lru-hit`, `iptables-legacy`, …
    pub peer: String,
    pub params: BTreeMap<String, serde_json::Value>,
    pub figures: Vec<Figure>,
    pub goal: Option<Goal>,
    pub outcome: Outcome,
}

impl Record {
    pub fn new(table: impl Into<String>, case: impl Into<String>, peer: impl Into<String>) -> Self {
        Self {
            table: table.into(),
            case: case.into(),
            peer: peer.into(),
            params: BTreeMap::new(),
            figures: Vec::new(),
            goal: None,
            outcome: Outcome::Measured,
        }
    }

    #[must_use]
    pub fn param(mut self, name: &str, value: impl Into<serde_json::Value>) -> Self {
        self.params.insert(name.to_owned(), value.into());
        self
    }

    #[must_use]
    pub fn figure(mut self, name: impl Into<String>, value: f64, unit: impl Into<String>) -> Self {
        self.figures.push(Figure::new(name, value, unit));
        self
    }

    #[must_use]
    pub fn goal(mut self, text: impl Into<String>, met: bool) -> Self {
        self.goal = Some(Goal { text: text.into(), met });
        self
    }

    #[must_use]
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    pub fn get(&self, figure: &str) -> Option<f64> {
        self.figures.iter().find(|f| f.name == figure).map(|f| f.value)
    }
}

/// Where results go; see the module docs.
pub struct Sink {
    info: RunInfo,
    results_dir: PathBuf,
    jsonl_path: PathBuf,
    jsonl: File,
    records: Vec<Record>,
    /// Extra files to copy into the baseline when the run replaces it.
    artifacts: Vec<(String, Vec<u8>)>,
}

impl Sink {
    /// Opens `RESULTS_DIR/runs/<stamp>-<bench>[-quick].jsonl` and writes the
    /// run info as its first line.
    ///
    /// # Errors
    /// If the file cannot be created.
    pub fn create(results_dir: &Path, info: RunInfo) -> anyhow::Result<Self> {
        let runs = results_dir.join("runs");
        fs::create_dir_all(&runs).with_context(|| format!("creating {}", runs.display()))?;
        let stamp = info.date.replace([':', '-'], "");
        let suffix = if info.quick { "-quick" } else { "" };
        let jsonl_path = runs.join(format!("{stamp}-{}{suffix}.jsonl", info.bench));
        let mut jsonl = File::create(&jsonl_path).with_context(|| format!("creating {}", jsonl_path.display()))?;
        writeln!(jsonl, "{}", serde_json::to_string(&serde_json::json!({ "run": &info }))?)?;
        eprintln!(
            "[bench] {} on {} ({} cores, {}), writing {}",
            info.bench,
            info.kernel,
            info.cores,
            info.cpu,
            jsonl_path.display()
        );
        Ok(Self {
            info,
            results_dir: results_dir.to_owned(),
            jsonl_path,
            jsonl,
            records: Vec::new(),
            artifacts: Vec::new(),
        })
    }

    pub fn info(&self) -> &RunInfo {
        &self.info
    }

    /// Stores one row (appended to the JSONL at once) and prints it.
    ///
    /// # Errors
    /// If the JSONL file cannot be written.
    pub fn record(&mut self, record: Record) -> anyhow::Result<()> {
        writeln!(self.jsonl, "{}", serde_json::to_string(&record)?)
            .with_context(|| format!("writing {}", self.jsonl_path.display()))?;
        self.jsonl.flush()?;
        eprintln!("[bench] {}", one_line(&record));
        self.records.push(record);
        Ok(())
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Writes an extra file of the run (a plot, a profile): into `runs/` as
    /// `<stamp>-<name>` now and, if [`Sink::finish`] replaces the baseline,
    /// as `RESULTS_DIR/<name>` then.
    /// Returns the run's copy.
    ///
    /// # Errors
    /// If a file cannot be written.
    pub fn artifact(&mut self, name: &str, contents: &[u8]) -> anyhow::Result<PathBuf> {
        let stamp = self.info.date.replace([':', '-'], "");
        let path = self.results_dir.join("runs").join(format!("{stamp}-{name}"));
        fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        self.artifacts.push((name.to_owned(), contents.to_vec()));
        eprintln!("[bench] wrote {}", path.display());
        Ok(path)
    }

    /// Writes the markdown next to the JSONL and, when `replace_baseline`
    /// (a complete full run: the caller decides), replaces the baseline
    /// `RESULTS_DIR/<bench>.{jsonl,md}`. Returns the markdown path.
    ///
    /// # Errors
    /// If a file cannot be written.
    pub fn finish(self, replace_baseline: bool) -> anyhow::Result<PathBuf> {
        let markdown = render_markdown(&self.info, &self.records);
        let md_path = self.jsonl_path.with_extension("md");
        fs::write(&md_path, &markdown).with_context(|| format!("writing {}", md_path.display()))?;
        if replace_baseline && !self.info.quick {
            let base = self.results_dir.join(&self.info.bench);
            fs::copy(&self.jsonl_path, base.with_extension("jsonl"))
                .with_context(|| format!("writing baseline {}.jsonl", base.display()))?;
            fs::write(base.with_extension("md"), &markdown)
                .with_context(|| format!("writing baseline {}.md", base.display()))?;
            for (name, contents) in &self.artifacts {
                let path = self.results_dir.join(name);
                fs::write(&path, contents).with_context(|| format!("writing baseline {}", path.display()))?;
            }
        }
        eprintln!("[bench] results: {} and {}", self.jsonl_path.display(), md_path.display());
        Ok(md_path)
    }
}

fn one_line(r: &Record) -> String {
    let params: Vec<String> = r.params.iter().map(|(k, v)| format!("{k}={}", plain(v))).collect();
    let figures: Vec<String> =
        r.figures.iter().map(|f| format!("{}={} {}", f.name, fmt_value(f.value), f.unit)).collect();
    let goal =
        r.goal.as_ref().map_or(String::new(), |g| format!(" [{} {}]", if g.met { "met" } else { "MISSED" }, g.text));
    let outcome = match &r.outcome {
        Outcome::Measured => String::new(),
        Outcome::TimedOut(why) => format!(" TIMED OUT: {why}"),
        Outcome::Failed(why) => format!(" FAILED: {why}"),
    };
    format!("{} | {} | {} | {} | {}{goal}{outcome}", r.table, r.case, r.peer, params.join(" "), figures.join(" "))
}

fn plain(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Three significant digits, no exponent for the ranges benchmarks produce.
pub fn fmt_value(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let a = v.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The markdown for a run: a header with the run info, then one table per
/// `table` (rows in recorded order).
pub fn render_markdown(info: &RunInfo, records: &[Record]) -> String {
    let mut out = String::new();
    out.push_str(&format!("# berth bench {}{}\n\n", info.bench, if info.quick { " (quick)" } else { "" }));
    out.push_str(&format!(
        "- date: {}\n- kernel: {}\n- cores: {} ({})\n- revision: {}\n- command: `{}`\n\n",
        info.date,
        info.kernel,
        info.cores,
        info.cpu,
        info.revision.as_deref().unwrap_or("unknown"),
        info.command
    ));
    let mut tables: Vec<&str> = Vec::new();
    for r in records {
        if !tables.contains(&r.table.as_str()) {
            tables.push(&r.table);
        }
    }
    for table in tables {
        let rows: Vec<&Record> = records.iter().filter(|r| r.table == table).collect();
        let mut params: Vec<&str> = Vec::new();
        let mut columns: Vec<(&str, &str)> = Vec::new();
        for r in &rows {
            for k in r.params.keys() {
                if !params.contains(&k.as_str()) {
                    params.push(k);
                }
            }
            for f in &r.figures {
                if !columns.iter().any(|(n, _)| *n == f.name) {
                    columns.push((&f.name, &f.unit));
                }
            }
        }
        let has_goal = rows.iter().any(|r| r.goal.is_some() || r.outcome != Outcome::Measured);
        out.push_str(&format!("## {table}\n\n| case | peer |"));
        for p in &params {
            out.push_str(&format!(" {p} |"));
        }
        for (name, unit) in &columns {
            if unit.is_empty() {
                out.push_str(&format!(" {name} |"));
            } else {
                out.push_str(&format!(" {name} ({unit}) |"));
            }
        }
        if has_goal {
            out.push_str(" goal |");
        }
        out.push_str("\n|---|---|");
        for _ in 0..params.len() + columns.len() + usize::from(has_goal) {
            out.push_str("---|");
        }
        out.push('\n');
        for r in rows {
            out.push_str(&format!("| {} | {} |", r.case, r.peer));
            for p in &params {
                out.push_str(&format!(" {} |", r.params.get(*p).map_or(String::new(), plain)));
            }
            for (name, _) in &columns {
                out.push_str(&format!(" {} |", r.get(name).map_or(String::new(), fmt_value)));
            }
            if has_goal {
                let mut cell = r
                    .goal
                    .as_ref()
                    .map_or(String::new(), |g| format!("{} {}", if g.met { "met" } else { "**missed**" }, g.text));
                match &r.outcome {
                    Outcome::Measured => {}
                    Outcome::TimedOut(why) => cell.push_str(&format!(" timed out: {why}")),
                    Outcome::Failed(why) => cell.push_str(&format!(" failed: {why}")),
                }
                out.push_str(&format!(" {} |", cell.trim()));
            }
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

/// Median, p90, p99 and mean of a sample (nearest-rank percentiles).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub n: usize,
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    /// `None` for an empty sample. Sorts `sample` in place.
    pub fn of(sample: &mut [f64]) -> Option<Self> {
        if sample.is_empty() {
            return None;
        }
        sample.sort_by(f64::total_cmp);
        let n = sample.len();
        let rank = |p: f64| {
            // Nearest rank: ceil(p * n), 1-based.
            let r = (p * n as f64).ceil() as usize;
            sample[r.clamp(1, n) - 1]
        };
        Some(Self {
            n,
            median: rank(0.5),
            p90: rank(0.9),
            p99: rank(0.99),
            mean: sample.iter().sum::<f64>() / n as f64,
            min: sample[0],
            max: sample[n - 1],
        })
    }
}

/// The median of a few repetitions (e.g. 3 wrk runs).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    Stats::of(&mut v).map(|s| s.median)
}

fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days, for dates after 1970.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests panic so failures carry a backtrace")]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let s = Stats::of(&mut v).unwrap();
        assert_eq!((s.median, s.p90, s.p99, s.min, s.max), (50.0, 90.0, 99.0, 1.0, 100.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn markdown_has_one_table_per_group_and_union_columns() {
        let info = RunInfo {
            bench: "packet".into(),
            date: "2026-11-23T00:00:00Z".into(),
            kernel: "6.18".into(),
            cores: 2,
            cpu: "cpu".into(),
            command: "berth-bench packet".into(),
            revision: None,
            quick: true,
        };
        let rows = vec![
            Record::new("established", "ack", "floor-lru-hit").param("services", 1).figure("median", 148.0, "ns"),
            Record::new("established", "ack", "berth-xdp")
                .param("services", 1)
                .figure("median", 160.0, "ns")
                .figure("ratio", 1.08, "x")
                .goal("≤ 1.15×", true),
            Record::new("non-Service", "udp", "berth-xdp").outcome(Outcome::Failed("no figure".into())),
        ];
        let md = render_markdown(&info, &rows);
        assert!(md.contains("## established\n\n| case | peer | services | median (ns) | ratio (x) | goal |"), "{md}");
        assert!(md.contains("| ack | berth-xdp | 1 | 160 | 1.08 | met ≤ 1.15× |"), "{md}");
        assert!(md.contains("| ack | floor-lru-hit | 1 | 148 |  |  |"), "{md}");
        assert!(md.contains("| udp | berth-xdp | failed: no figure |"), "{md}");
    }
}
