//! Container logs in the CRI format kubelet reads, rotated by size.
//!
//! Each line is `<RFC 3339 time, ns, UTC> <stdout|stderr> <F|P> <text>`:
//! `F` ends a line, `P` is a piece of a line longer than [`MAX_LINE`]
//! (the rest follows). When the file would grow past `max_bytes` it is
//! renamed to `.1` (older ones shift up, the oldest beyond `max_files`
//! goes) and a new one starts, so the current file is always readable.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use super::LogConfig;

/// Longest piece written as one log line (containerd uses 16 KiB too).
pub(super) const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// Appends container output to the log, rotating by size.
#[derive(Debug)]
pub(super) struct LogWriter {
    path: PathBuf,
    max_bytes: u64,
    max_files: u32,
    file: File,
    size: u64,
    /// An unfinished line per stream (stdout, stderr).
    partial: [Vec<u8>; 2],
    /// Injected by tests; the wall clock otherwise.
    clock: fn() -> SystemTime,
}

impl LogWriter {
    /// Opens (appends to) the log file, creating its directory.
    pub(super) fn open(config: &LogConfig) -> io::Result<Self> {
        Self::open_with_clock(config, SystemTime::now)
    }

    pub(super) fn open_with_clock(config: &LogConfig, clock: fn() -> SystemTime) -> io::Result<Self> {
        if let Some(parent) = config.path.parent() {
            fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&config.path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: config.path.clone(),
            max_bytes: config.max_bytes,
            max_files: config.max_files.max(1),
            file,
            size,
            partial: [Vec::new(), Vec::new()],
            clock,
        })
    }

    /// Takes a chunk of output; complete lines are written now.
    pub(super) fn write(&mut self, stream: Stream, mut data: &[u8]) -> io::Result<()> {
        let i = stream as usize;
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(n) => {
                    let mut line = std::mem::take(&mut self.partial[i]);
                    line.extend_from_slice(&data[..n]);
                    data = &data[n + 1..];
                    for (k, piece) in line.chunks(MAX_LINE).enumerate() {
                        let last = (k + 1) * MAX_LINE >= line.len();
                        self.emit(stream, if last { "F" } else { "P" }, piece)?;
                    }
                    if line.is_empty() {
                        self.emit(stream, "F", b"")?;
                    }
                }
                None => {
                    self.partial[i].extend_from_slice(data);
                    data = &[];
                    while self.partial[i].len() >= MAX_LINE {
                        let rest = self.partial[i].split_off(MAX_LINE);
                        let piece = std::mem::replace(&mut self.partial[i], rest);
                        self.emit(stream, "P", &piece)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes what is left of unfinished lines (the streams have closed).
    pub(super) fn finish(&mut self) -> io::Result<()> {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let line = std::mem::take(&mut self.partial[stream as usize]);
            if !line.is_empty() {
                self.emit(stream, "F", &line)?;
            }
        }
        self.file.flush()
    }

    fn emit(&mut self, stream: Stream, tag: &str, text: &[u8]) -> io::Result<()> {
        let mut record = format!("{} {} {tag} ", rfc3339_nano((self.clock)()), stream.name()).into_bytes();
        record.extend_from_slice(text);
        record.push(b'\n');
        let len = record.len() as u64;
        if self.max_bytes > 0 && self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(&record)?;
        self.size += len;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let numbered = |n: u32| {
            let mut p = self.path.as_os_str().to_owned();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        if self.max_files == 1 {
            remove_if_exists(&self.path)?;
        } else {
            // log.(max-1) is the oldest kept; it is overwritten.
            for n in (1..self.max_files - 1).rev() {
                rename_if_exists(&numbered(n), &numbered(n + 1))?;
            }
            // Gone (deleted from outside): just start a new one.
            rename_if_exists(&self.path, &numbered(1))?;
        }
        self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn rename_if_exists(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// `2006-01-02T15:04:05.000000000Z` in UTC.
pub(super) fn rfc3339_nano(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z", rem / 3600, rem % 3600 / 60, rem % 60, d.subsec_nanos())
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to a date.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}
