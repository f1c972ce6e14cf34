//! The `kapsel` command line as a library: configuration, the resource table, manifest apply
//! (three-way merge), printers (kubectl-compatible tables, YAML, JSON, names, JSONPath) and the
//! commands. `main.rs` only parses arguments and reports errors.

pub mod apply;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod errors;
pub mod jsonpath;
pub mod printers;
pub mod resources;

use std::io::Write;

use clap::Parser;

/// Run the command line with `args` (including the program name); returns the exit code.
/// Never panics on user input: parse errors, server errors and I/O errors become messages on
/// stderr and a non-zero code.
pub fn main_with_args(args: Vec<std::ffi::OsString>) -> i32 {
    let cli = match commands::Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    if let commands::Command::Server(a) = &cli.command {
        if let Err(e) = cluster::prepare_process(a) {
            eprintln!("{}", errors::format_error(&e));
            return 1;
        }
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if !cli.command.is_daemon() {
        builder.worker_threads(2);
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result = rt.block_on(commands::run(cli, &mut out));
    let flushed = out.flush();
    drop(out);
    match result.and_then(|()| flushed.map_err(anyhow::Error::from)) {
        Ok(()) => 0,
        Err(e) if errors::is_broken_pipe(&e) => 0,
        Err(e) if e.downcast_ref::<errors::Reported>().is_some() => 1,
        Err(e) if e.downcast_ref::<commands::exec::RemoteExit>().is_some() => e
            .downcast_ref::<commands::exec::RemoteExit>()
            .map_or(1, |r| r.0),
        Err(e) => {
            eprintln!("{}", errors::format_error(&e));
            1
        }
    }
}
