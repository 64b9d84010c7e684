//! What the process sets up before a command runs: the async runtime, the log (masked,
//! coloured only on a terminal), and a quiet end when stdout's reader goes away.

/// The multi-threaded tokio runtime. `CUTOVER_BLOCKING_THREADS` caps its blocking pool (tokio's
/// default: 512): nothing in Cutover holds a blocking thread for long, so a small pool only
/// slows file and git work down; the tests use it to prove that no live instance holds one.
pub fn async_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = std::env::var("CUTOVER_BLOCKING_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        builder.max_blocking_threads(n);
    }
    builder.build()
}

/// Logs go to stderr, filtered by RUST_LOG (default: info for `serve`, warnings otherwise),
/// each line masked with every environment's settings and secrets (`cutover_engine::masking`).
pub fn init_tracing(cli: &crate::cli::Cli) {
    let default = if matches!(
        cli.command,
        crate::cli::Command::Serve(_) | crate::cli::Command::DataPlane(_)
    ) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours_on_stderr())
        .with_writer(|| MaskedStderr)
        .init();
}

/// Colours in the log only on a terminal, and never with `NO_COLOR` set (no-color.org): a log
/// written to a file or a journal stays plain text.
fn colours_on_stderr() -> bool {
    use std::io::IsTerminal as _;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

/// `cutover status prod | head -2`: when the reader of stdout goes away, the command ends
/// quietly (exit status 0) instead of panicking in `println!` ("failed printing to stdout:
/// Broken pipe", exit 101). Rejected: restoring SIGPIPE's default action, which needs `unsafe`
/// (forbidden outside the sandbox module) and would also kill `serve` on a closed socket.
pub fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if text.starts_with("failed printing to stdout") && text.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// stderr, masked: the fmt layer writes each event in one `write`, so a value is never split.
struct MaskedStderr;

impl std::io::Write for MaskedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(cutover_engine::masking::mask_server_log(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
