//! The modes that misbehave on purpose, for the runtime's limit and stop
//! tests: ignoring SIGTERM, eating memory, CPU or pids, flooding the log.
//!
//! # Design
//! Each mode does its one thing and then sleeps, so the test decides when
//! the process ends (a signal, the OOM killer, the cgroup being killed).
//! Progress goes to stdout, one line at a time, except in `log-flood`
//! whose stdout is exactly the requested bytes.
//!
//! # Limitations
//! `hog-memory` touches one byte per 4 KiB page: with huge pages or a
//! bigger page size it still commits all of it (the allocation is filled),
//! just more slowly than needed.

use std::{
    hint::black_box,
    io::{self, Write},
    time::Duration,
};

const MIB: usize = 1 << 20;
const PAGE: usize = 4096;

/// Installs a SIGTERM/SIGINT handler that exits 0 (PID 1 of a pid
/// namespace ignores signals it has no handler for).
pub fn exit_on_sigterm() {
    extern "C" fn on_signal(_: libc::c_int) {
        // stderr: log-flood's stdout must hold exactly the bytes asked for.
        const MSG: &[u8] = b"terminating on signal\n";
        // SAFETY: write(2) and _exit(2) are async-signal-safe; MSG is a
        // valid buffer of its length.
        unsafe {
            libc::write(2, MSG.as_ptr().cast(), MSG.len());
            libc::_exit(0);
        }
    }
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only calls async-signal-safe functions.
        unsafe {
            libc::signal(signal, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// Never returns.
fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

pub fn ignore_sigterm() -> Result<(), String> {
    // SAFETY: setting SIG_IGN has no preconditions.
    let previous = unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    if previous == libc::SIG_ERR {
        return Err(format!("signal(SIGTERM, SIG_IGN): {}", io::Error::last_os_error()));
    }
    println!("ignoring SIGTERM");
    sleep_forever()
}

pub fn hog_memory(mb: usize) -> Result<(), String> {
    let mut held: Vec<Vec<u8>> = Vec::with_capacity(mb);
    for i in 1..=mb {
        // Zeroed allocations may be untouched pages; write to every page.
        let mut chunk = vec![0u8; MIB];
        for page in chunk.iter_mut().step_by(PAGE) {
            *page = 1;
        }
        held.push(black_box(chunk));
        if i % 16 == 0 || i == mb {
            println!("allocated {i} MiB");
        }
    }
    println!("holding {mb} MiB");
    black_box(&held);
    sleep_forever()
}

pub fn spin(threads: usize) -> Result<(), String> {
    println!("spinning on {threads} threads");
    for _ in 1..threads {
        std::thread::Builder::new().spawn(busy).map_err(|e| format!("starting a thread: {e}"))?;
    }
    busy()
}

fn busy() -> ! {
    let mut x = 1u64;
    loop {
        x = black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
    }
}

/// Forks children that sleep, forever; a refused fork is reported once and
/// retried after a short pause. Never exits on its own.
pub fn fork_bomb() -> Result<(), String> {
    println!("forking");
    let (mut forked, mut failed) = (0u64, 0u64);
    loop {
        // SAFETY: this process is single-threaded here (no mode that forks
        // starts threads), and the child only calls async-signal-safe pause.
        match unsafe { libc::fork() } {
            0 => loop {
                // SAFETY: pause has no preconditions; the SIGTERM handler
                // (inherited) ends the child.
                unsafe { libc::pause() };
            },
            -1 => {
                failed += 1;
                if failed == 1 {
                    println!("fork failed: {} (after {forked} children)", io::Error::last_os_error());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => forked += 1,
        }
    }
}

/// Writes exactly `bytes` bytes of numbered lines to stdout, then sleeps.
pub fn log_flood(bytes: u64) -> Result<(), String> {
    let mut out = io::BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    let mut left = bytes;
    let mut n = 0u64;
    while left > 0 {
        n += 1;
        // 100 bytes a line; the last one is cut to fit, still ending in a
        // newline.
        let mut line = format!("{n:010} {}\n", "x".repeat(88)).into_bytes();
        let take = usize::try_from(left).unwrap_or(usize::MAX).min(line.len());
        line.truncate(take);
        if let Some(last) = line.last_mut() {
            *last = b'\n';
        }
        out.write_all(&line).map_err(|e| format!("writing stdout: {e}"))?;
        left -= take as u64;
    }
    out.flush().map_err(|e| format!("writing stdout: {e}"))?;
    drop(out);
    sleep_forever()
}
