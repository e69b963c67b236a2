use std::process::ExitCode;

use clap::Parser;
use opter_visma_sync::cli::{Cli, Command, LogFormat};
use opter_visma_sync::commands;
use opter_visma_sync::journal::HoldKind;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.log_format);
    owner_only_files();
    let new = cli.new_journal;
    // One thread: the work is I/O-bound and per-customer ordered, and on small machines
    // cross-thread wake-ups cost more than they give.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            #[cfg(feature = "sandbox")]
            Command::Demo(args) => commands::sandbox::demo(args).await,
            #[cfg(feature = "sandbox")]
            Command::Sandbox(args) => commands::sandbox::sandbox(args).await,
            Command::Init(args) => commands::init::init(&cli.config, args),
            Command::Check(args) => commands::check::check(&cli.config, args).await,
            Command::Sync(args) => commands::sync(&cli.config, args, new).await,
            Command::Journal(command) => commands::journal(&cli.config, command),
            Command::Auth(command) => commands::auth(&cli.config, command).await,
            Command::Replay(args) => commands::replay(&cli.config, args, new).await,
            Command::Purge(args) => commands::purge(&cli.config, args, new).await,
            Command::Unsuppress(args) => {
                commands::hold(&cli.config, args, HoldKind::Suppressed, false, new).await
            }
            Command::Restrict(args) => {
                commands::hold(&cli.config, args, HoldKind::Restricted, true, new).await
            }
            Command::Unrestrict(args) => {
                commands::hold(&cli.config, args, HoldKind::Restricted, false, new).await
            }
            Command::Export(args) => commands::export_customer(&cli.config, args, new).await,
            Command::Link(args) => commands::link(&cli.config, args, new).await,
            Command::Reconcile(args) => commands::reconcile(&cli.config, args, new).await,
            Command::Serve(args) => commands::serve::serve(&cli.config, args).await,
            Command::ShardOf(args) => commands::serve::shard_of(args),
            Command::Users(command) => commands::users::users(&cli.config, command),
            Command::Privacy(command) => commands::privacy(&cli.config, command),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            e.exit_code()
        }
    }
}

/// Everything this process creates is its owner's only: sled creates its files with the
/// process's umask, and the journal holds names and emails sent.
fn owner_only_files() {
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
}

/// Logs go to stderr. `RUST_LOG` wins; otherwise -v / -vv raise this crate's level
/// while dependencies stay at warn. Colours only on a terminal, and not with `NO_COLOR`
/// set (no-color.org): a file or a pipe gets plain text for grep and log collectors.
/// JSON: one object per line, the event's fields at the top, the span's (a tenant
/// under `serve`) in `span`.
fn init_logging(verbose: u8, format: LogFormat) {
    use std::io::IsTerminal;
    let level = match verbose {
        0 => "warn",
        1 => "warn,opter_visma_sync=info",
        _ => "warn,opter_visma_sync=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal() && !no_color)
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}
