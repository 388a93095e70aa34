//! `berth-test-server` (this package's `berth-pod-server` binary, installed
//! as `/bin/berth-test-server` in the test image built by
//! `cargo xtask test-image`): what runs inside berth's test containers.
//!
//! ```text
//! berth-test-server serve [--port N]     HTTP + UDP echo (PORT env, default 8080)
//! berth-test-server ignore-sigterm       ignore SIGTERM, sleep forever
//! berth-test-server hog-memory MB        touch MB MiB, 1 MiB at a time, then sleep
//! berth-test-server spin [THREADS]       busy-loop on THREADS threads (default 1)
//! berth-test-server fork-bomb            fork until refused, and keep trying
//! berth-test-server exit CODE            print a line, exit with CODE
//! berth-test-server log-flood BYTES      write BYTES bytes of lines to stdout, then sleep
//! ```
//!
//! # Design
//! std and libc only, statically linkable (`-C target-feature=+crt-static`),
//! so the image needs no libc. Every mode but `ignore-sigterm` exits 0 on
//! SIGTERM or SIGINT: as PID 1 of a pid namespace a process without a
//! handler would ignore them, and graceful-stop tests would wait out the
//! whole grace period. Bad arguments exit 64 (EX_USAGE).
//!
//! # Limitations
//! IPv4 only (`0.0.0.0`). The HTTP side is just enough for probes and load
//! tests: see [`serve`].

mod misbehave;
mod serve;

use std::process::ExitCode;

/// EX_USAGE from sysexits.h.
const EXIT_USAGE: u8 = 64;
/// The name usage messages use: the path in the image.
const NAME: &str = "berth-test-server";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((mode, rest)) = args.split_first() else { return usage("no mode given") };
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    if mode != "ignore-sigterm" {
        misbehave::exit_on_sigterm();
    }
    let result = match (mode.as_str(), rest.as_slice()) {
        ("serve", []) => serve::run(None),
        ("serve", ["--port", port]) => match port.parse() {
            Ok(port) => serve::run(Some(port)),
            Err(_) => return usage("--port takes a port number"),
        },
        ("ignore-sigterm", []) => misbehave::ignore_sigterm(),
        ("hog-memory", [mb]) => match mb.parse() {
            Ok(mb) => misbehave::hog_memory(mb),
            Err(_) => return usage("hog-memory takes a size in MiB"),
        },
        ("spin", []) => misbehave::spin(1),
        ("spin", [threads]) => match threads.parse() {
            Ok(n) if n > 0 => misbehave::spin(n),
            _ => return usage("spin takes a positive thread count"),
        },
        ("fork-bomb", []) => misbehave::fork_bomb(),
        ("exit", [code]) => match code.parse::<u8>() {
            Ok(code) => {
                println!("exiting with {code}");
                return ExitCode::from(code);
            }
            Err(_) => return usage("exit takes a code from 0 to 255"),
        },
        ("log-flood", [bytes]) => match bytes.parse() {
            Ok(bytes) => misbehave::log_flood(bytes),
            Err(_) => return usage("log-flood takes a byte count"),
        },
        _ => return usage(&format!("unknown mode or arguments: {}", args.join(" "))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{NAME}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!(
        "{NAME}: {problem}\nusage: {NAME} serve [--port N] | ignore-sigterm | hog-memory MB | spin [THREADS] \
         | fork-bomb | exit CODE | log-flood BYTES"
    );
    ExitCode::from(EXIT_USAGE)
}
