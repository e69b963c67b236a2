//! The commands: parse what the person asked for, call the application layer, print.

pub mod check;
pub mod init;
mod progress;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod serve;
pub mod users;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use crate::app::Connector;
use crate::cli::{
    AuthCommand, ExportCustomerArgs, ExportFormat, JournalArgs, JournalCommand, LogArgs,
    PrivacyCommand, PurgeArgs, ReplayArgs, SupportArgs, SyncArgs,
};
use crate::config::Config;
use crate::error::{exit, Error, Result};
use crate::journal::{HoldKind, Journal, Opening};
use crate::output;
use crate::sink::auth::{login, Grant};
use crate::sink::eaccounting::{self, EAccountingConfig, GRANT_FILE};
use crate::support;
use crate::sync::{Observer, Quiet, Report, SyncOptions};
pub use progress::ProgressBar;

/// How the writing commands open the journal: `--new-journal` starts a new one where
/// the folder's database is gone.
fn opening(new_journal: bool) -> Opening {
    match new_journal {
        true => Opening::NewJournal,
        false => Opening::Write,
    }
}

/// `privacy record`: reads the config and the mapping only.
pub fn privacy(config_file: &Path, command: &PrivacyCommand) -> Result<ExitCode> {
    let PrivacyCommand::Record(args) = command;
    let record = crate::privacy::record(&Config::load(config_file)?)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &record).map_err(anyhow::Error::from)?;
        writeln!(out)
    } else {
        crate::privacy::print(&mut out, &record)
    }
    .context("cannot write the record to stdout")?;
    Ok(ExitCode::SUCCESS)
}

pub async fn sync(config_file: &Path, args: &SyncArgs, new_journal: bool) -> Result<ExitCode> {
    let config = Config::load(config_file)?;
    let connector = Connector::open_as(config, &crate::config::ProcessEnv, opening(new_journal))?;
    let options = SyncOptions {
        dry_run: args.dry_run,
        full: args.full,
        replay: None,
        actor: crate::sync::SYNC_ACTOR.to_string(),
    };
    let observer: Arc<dyn Observer> = match args.json {
        true => Arc::new(Quiet),
        false => Arc::new(ProgressBar::on_stderr()),
    };
    let (report, stopped) = connector.sync_observed(&options, observer).await?;
    output::report(&mut std::io::stdout().lock(), &report, args.json)
        .context("cannot write output")?;
    connector.finish()?;
    match stopped {
        Some(e) => Err(e),
        None => Ok(exit_for(&report)),
    }
}

/// 0 when everything was written, 3 when some customers were rejected, failed or are
/// in conflict with the register.
pub fn exit_for(report: &Report) -> ExitCode {
    if report.counts.rejected + report.counts.failed + report.counts.conflict > 0 {
        ExitCode::from(exit::PARTIAL)
    } else {
        ExitCode::from(exit::OK)
    }
}

fn journal_dir(config_file: &Path, args: &JournalArgs) -> Result<std::path::PathBuf> {
    Ok(match &args.journal {
        Some(dir) => dir.clone(),
        None => Config::load(config_file)?.journal.path,
    })
}

/// The journal, to read; a folder without one is an error, never a new journal.
fn open_journal(config_file: &Path, args: &JournalArgs, opening: Opening) -> Result<Journal> {
    let dir = journal_dir(config_file, args)?;
    if let Some(lost) = crate::journal::lost_database(&dir) {
        return Err(Error::config(lost));
    }
    let present = ["sled", "sled.old", "sled.compact"]
        .iter()
        .any(|d| dir.join(d).exists());
    if !present {
        return Err(Error::config(format!(
            "no journal in {}: run `sync` first, or pass --journal DIR",
            dir.display()
        )));
    }
    Ok(Journal::open_as(&dir, opening)?)
}

pub fn journal(config_file: &Path, command: &JournalCommand) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match command {
        JournalCommand::Verify(args) => return verify(config_file, args),
        JournalCommand::Restore(args) => return restore(config_file, args),
        JournalCommand::Backup(args) => {
            let dir = open_journal(config_file, &args.common, Opening::Read)?
                .dir()
                .to_path_buf();
            let entries = crate::journal::backup(&dir, &args.file)?;
            writeln!(
                out,
                "journal backed up: {} entries to {} (readable by you only); restore with \
                 `opter-visma-sync journal restore {}`",
                entries,
                args.file.display(),
                args.file.display()
            )
        }
        JournalCommand::Show(args) => {
            let journal = open_journal(config_file, &args.common, Opening::Read)?;
            let Some(event) = journal.event(args.seq)? else {
                return Err(Error::config(format!(
                    "no event {} in the journal; `journal log` lists them",
                    args.seq
                )));
            };
            output::show(&mut out, &event, args.common.json, args.show_values)
        }
        JournalCommand::Export(args) => {
            let journal = open_journal(config_file, &args.common, Opening::Read)?;
            let mut events = journal.events(args.customer.as_deref(), None)?;
            events.reverse();
            events.retain(|e| args.since.is_none_or(|t| e.time >= t));
            output::export(
                &mut out,
                &events,
                args.format == ExportFormat::Csv,
                args.show_values,
            )
        }
        JournalCommand::Compact(args) => {
            let dir = open_journal(config_file, args, Opening::Write)?
                .dir()
                .to_path_buf();
            let bytes = crate::journal::compact(&dir)?;
            writeln!(out, "journal rewritten: {} ({bytes} bytes)", dir.display())
        }
        JournalCommand::Runs(args) => {
            let journal = open_journal(config_file, args, Opening::Read)?;
            output::runs(&mut out, &journal.runs()?, args.json)
        }
        JournalCommand::Log(args) => {
            let LogArgs {
                common,
                customer,
                run,
                limit,
                since,
                outcome,
                show_values,
            } = args;
            let journal = open_journal(config_file, common, Opening::Read)?;
            let mut events = journal.events(customer.as_deref(), run.as_deref())?;
            events.retain(|e| since.is_none_or(|t| e.time >= t));
            if let Some(wanted) = outcome {
                events.retain(|e| e.outcome == *wanted);
            }
            events.truncate(limit.unwrap_or(usize::MAX));
            output::events(&mut out, &events, common.json, *show_values)
        }
    }
    .context("cannot write output")?;
    Ok(ExitCode::SUCCESS)
}

fn verify(config_file: &Path, args: &JournalArgs) -> Result<ExitCode> {
    let journal = open_journal(config_file, args, Opening::Read)?;
    let result = journal.verify()?;
    print_verification(&result, args.json)?;
    Ok(ExitCode::from(result.exit_code()))
}

fn restore(config_file: &Path, args: &crate::cli::FileArgs) -> Result<ExitCode> {
    let dir = journal_dir(config_file, &args.common)?;
    let (journal, restored) = crate::journal::restore(&dir, &args.file)?;
    let result = journal.verify()?;
    eprintln!(
        "journal restored into {} from {}: {} entries",
        dir.display(),
        args.file.display(),
        restored.entries
    );
    for code in &restored.purged_since {
        eprintln!(
            "  customer {code} was purged after this backup was taken: it stays suppressed; \
             run `opter-visma-sync purge --customer {code} --reason ... --yes` again to erase \
             it from the restored journal"
        );
    }
    print_verification(&result, args.common.json)?;
    Ok(ExitCode::from(result.exit_code()))
}

fn print_verification(result: &crate::journal::Verification, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let at = |p: &crate::journal::Problem| match p.seq {
        0 => p.what.clone(),
        seq => format!("event {seq} {}", p.what),
    };
    let written = if json {
        writeln!(
            out,
            "{}",
            serde_json::to_string(&result).expect("serialises")
        )
    } else {
        match result.problems.first() {
            None => writeln!(
                out,
                "journal verified: {} events, chain and indexes intact",
                result.events_checked
            ),
            Some(first) => {
                let verdict = match first.kind {
                    crate::journal::Kind::Corrupt => "journal DAMAGED",
                    crate::journal::Kind::Tampered => "journal verification FAILED",
                    crate::journal::Kind::Unfinished => "journal verification: UNFINISHED",
                };
                writeln!(out, "{verdict}: {}", at(first)).and_then(|_| {
                    result
                        .problems
                        .iter()
                        .skip(1)
                        .try_for_each(|p| writeln!(out, "  also: {}", at(p)))
                })
            }
        }
    };
    written.context("cannot write output")?;
    Ok(())
}

pub async fn auth(config_file: &Path, command: &AuthCommand) -> Result<ExitCode> {
    let config = Config::load(config_file)?;
    let Some(sink) = config.settings::<EAccountingConfig>() else {
        return Err(Error::config(format!(
            "{}: `auth` manages the eAccounting login; {} ([sink] kind = \"{}\") needs none: \
             its credentials come from the environment variables named in [sink]",
            config.file.display(),
            config.sink.register.product(),
            config.sink_name()
        )));
    };
    let store = crate::journal::credentials_dir(&config.journal.path)?.join(GRANT_FILE);
    let mut out = std::io::stdout().lock();
    match command {
        AuthCommand::Login(args) => {
            let env = crate::config::ProcessEnv;
            let (settings, _) =
                eaccounting::login_settings(&config, sink, &env, !args.default_company)?;
            let announce = |url: &str| {
                eprintln!(
                    "Open this URL in a browser and log in to {}:",
                    eaccounting::PRODUCT
                );
                println!("{url}");
                eprintln!("Waiting for the redirect on {} ...", sink.redirect_uri);
            };
            let timeout = std::time::Duration::from_secs(args.timeout);
            let grant = login(settings, &store, !args.no_browser, timeout, announce).await?;
            eprintln!(
                "Logged in. Authorization stored in {} (owner-only) at {}.",
                store.display(),
                grant.refreshed_at.to_rfc3339()
            );
        }
        AuthCommand::Status(args) => {
            let grant = Grant::load(&store).map_err(Error::Other)?;
            let status = serde_json::json!({
                "stored": grant.is_some(),
                "origin": grant.as_ref().map(|g| g.origin.clone()),
                "last_refreshed": grant.as_ref().map(|g| g.refreshed_at.to_rfc3339()),
                "file": store.display().to_string(),
                "refresh_token_env_set": std::env::var(&sink.refresh_token_env).is_ok_and(|v| !v.is_empty()),
            });
            let written = if args.json {
                writeln!(out, "{status}")
            } else {
                match &grant {
                    Some(g) => writeln!(
                        out,
                        "authorization stored ({}), last refreshed {}\n  in {}",
                        if g.origin == "login" { "from auth login" } else { "from the refresh token in the environment" },
                        g.refreshed_at.format("%Y-%m-%d %H:%M:%S UTC"),
                        store.display()
                    ),
                    None => writeln!(
                        out,
                        "no authorization stored: run `opter-visma-sync auth login`, or set ${} for the first sync",
                        sink.refresh_token_env
                    ),
                }
            };
            written.context("cannot write output")?;
            if grant.is_none() && status["refresh_token_env_set"] == false {
                return Ok(ExitCode::from(exit::NEEDS_LOGIN));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `support:<name>`: the actor recorded for support commands.
fn support_actor(name: &Option<String>) -> String {
    let name = name
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("USERNAME").ok())
        .unwrap_or_else(|| "unknown".into());
    format!("support:{name}")
}

fn open_connector(config_file: &Path, new_journal: bool) -> Result<Connector> {
    Connector::open_as(
        Config::load(config_file)?,
        &crate::config::ProcessEnv,
        opening(new_journal),
    )
}

pub async fn replay(config_file: &Path, args: &ReplayArgs, new_journal: bool) -> Result<ExitCode> {
    let connector = open_connector(config_file, new_journal)?;
    let codes = match &args.customer {
        Some(code) => vec![code.clone()],
        None => support::failed_customers(&connector)?,
    };
    if codes.is_empty() {
        println!("no customer's last outcome was rejected or failed: nothing to replay");
        return Ok(ExitCode::SUCCESS);
    }
    let actor = support_actor(&args.actor);
    let (report, stopped) = support::replay(&connector, codes, &actor, &args.reason).await?;
    output::report(&mut std::io::stdout().lock(), &report, args.json)
        .context("cannot write output")?;
    connector.finish()?;
    match stopped {
        Some(e) => Err(e),
        None => Ok(exit_for(&report)),
    }
}

pub async fn purge(config_file: &Path, args: &PurgeArgs, new_journal: bool) -> Result<ExitCode> {
    use std::io::IsTerminal;
    let a = &args.support;
    let connector = open_connector(config_file, new_journal)?;
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(Error::config(
                "purge erases data and cannot be undone: on a non-interactive run, pass --yes",
            ));
        }
        eprintln!(
            "This will erase customer {} from {} (delete it, or anonymise it if Visma refuses), \
             remove its values from the journal, and stop it from being synced again.",
            a.customer,
            connector.sink.product()
        );
        eprint!("Type the customer code to confirm: ");
        let mut answer = String::new();
        std::io::stdin()
            .read_line(&mut answer)
            .context("cannot read the confirmation")?;
        if answer.trim() != a.customer {
            eprintln!("not confirmed; nothing was done");
            return Ok(ExitCode::from(exit::CONFIG));
        }
    }
    let actor = support_actor(&a.actor);
    let receipt = support::purge(connector, &a.customer, &actor, &a.reason).await?;
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string(&receipt).expect("serialises")
        )
    } else {
        writeln!(
            out,
            "erasure receipt\n  customer:        {}\n  time:            {}\n  actor:           {}\n  \
             reason:          {}\n  register:        {}\n  events redacted: {}\n  \
             receipt event:   {}\n  journal verified: {}",
            receipt.customer,
            receipt.time.to_rfc3339(),
            receipt.actor,
            receipt.reason,
            receipt.register,
            receipt.events_redacted,
            receipt.receipt_event,
            if receipt.journal_verified { "yes" } else { "NO" }
        )
    };
    written.context("cannot write output")?;
    Ok(ExitCode::from(receipt.verify_exit))
}

pub async fn hold(
    config_file: &Path,
    args: &SupportArgs,
    kind: HoldKind,
    on: bool,
    new_journal: bool,
) -> Result<ExitCode> {
    let connector = open_connector(config_file, new_journal)?;
    let actor = support_actor(&args.actor);
    let changed =
        support::set_hold(&connector, &args.customer, &actor, &args.reason, kind, on).await?;
    let what = match (kind, on) {
        (HoldKind::Restricted, true) => "restricted: sync sends nothing for it",
        (HoldKind::Restricted, false) => {
            "no longer restricted: the next sync sends it if it changed"
        }
        (HoldKind::Suppressed, _) => "no longer suppressed: the next sync sends it",
        (HoldKind::Conflict | HoldKind::Skipped, _) => unreachable!("set by `link`"),
    };
    let note = if changed { "" } else { " (it already was)" };
    println!("customer {} {what}{note}", args.customer);
    Ok(ExitCode::SUCCESS)
}

pub async fn link(
    config_file: &Path,
    args: &crate::cli::LinkArgs,
    new_journal: bool,
) -> Result<ExitCode> {
    let connector = open_connector(config_file, new_journal)?;
    let actor = support_actor(&args.actor);
    let reason = args.reason.clone().unwrap_or_else(|| {
        if args.accept {
            "linked by a person: the same customer".into()
        } else {
            "skipped by a person: never sent".into()
        }
    });
    let decided = support::link(&connector, &args.customer, args.accept, &actor, &reason).await?;
    connector.finish()?;
    println!("customer {} {decided}", args.customer);
    Ok(ExitCode::SUCCESS)
}

pub async fn reconcile(
    config_file: &Path,
    args: &crate::cli::ReconcileArgs,
    new_journal: bool,
) -> Result<ExitCode> {
    let connector = open_connector(config_file, new_journal)?;
    let drift = connector.engine(Arc::new(Quiet)).reconcile().await?;
    output::drift(&mut std::io::stdout().lock(), &drift, args.json)
        .context("cannot write output")?;
    connector.finish()?;
    Ok(ExitCode::from(if drift.any() {
        exit::PARTIAL
    } else {
        exit::OK
    }))
}

pub async fn export_customer(
    config_file: &Path,
    args: &ExportCustomerArgs,
    new_journal: bool,
) -> Result<ExitCode> {
    let connector = open_connector(config_file, new_journal)?;
    let actor = support_actor(&args.actor);
    let document = support::export(&connector, &args.customer, &actor, &args.reason).await?;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &document).context("cannot write output")?;
    writeln!(out).context("cannot write output")?;
    Ok(ExitCode::SUCCESS)
}
