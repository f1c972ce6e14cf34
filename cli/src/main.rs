//! `kapsel`: the command line. Everything lives in the library.

/// jemalloc instead of glibc malloc: see `tikv-jemallocator` in the workspace Cargo.toml.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    // A bug must never show a Rust backtrace to a user: one line, exit code 2.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        eprintln!("error: internal error in kapsel: {msg} (please report this)");
    }));
    let code =
        std::panic::catch_unwind(|| kapsel_cli::main_with_args(std::env::args_os().collect()))
            .unwrap_or(2);
    std::process::exit(code);
}
