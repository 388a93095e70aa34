//! `berth-test-server`: the backend and load client of berth's tests,
//! `cargo xtask up`'s demo and the benchmarks. Thin: parse, run, print.
//!
//! ```text
//! berth-test-server serve --name NAME --http ADDR:PORT [--udp ADDR:PORT]
//! berth-test-server client http --url http://IP:PORT/PATH --requests N
//!                               [--concurrency C] [--keepalive] [--timeout-ms T]
//! berth-test-server client udp  --addr IP:PORT --requests N [--same-socket]
//!                               [--connect] [--timeout-ms T]
//! berth-test-server client hold --url http://IP:PORT/PATH --ms N
//!                               [--interval-ms I] [--timeout-ms T]
//! ```
//! Clients print one JSON summary line; failed requests are counted there,
//! so the exit status is 0 unless the arguments are bad (64) or the
//! summary cannot be printed (1).

use std::io::Write;
use std::process::ExitCode;

use berth_tests::client;
use berth_tests::server::{self, ServeArgs};

/// EX_USAGE from sysexits.h.
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.split_first() {
        Some((cmd, rest)) if cmd == "serve" => match ServeArgs::parse(rest) {
            Ok(serve_args) => match server::serve(&serve_args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e, 1),
            },
            Err(e) => fail(&e, EXIT_USAGE),
        },
        Some((cmd, rest)) if cmd == "client" => match client::run_args(rest) {
            Ok(summary) => {
                let line = match serde_json::to_string(&summary) {
                    Ok(line) => line,
                    Err(e) => return fail(&e.into(), 1),
                };
                let mut out = std::io::stdout().lock();
                match writeln!(out, "{line}").and_then(|()| out.flush()) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => fail(&e.into(), 1),
                }
            }
            Err(e) => fail(&e, EXIT_USAGE),
        },
        _ => fail(&anyhow::anyhow!("usage: berth-test-server serve ... | client http|udp|hold ..."), EXIT_USAGE),
    }
}

fn fail(e: &anyhow::Error, code: u8) -> ExitCode {
    eprintln!("berth-test-server: {e:#}");
    ExitCode::from(code)
}
