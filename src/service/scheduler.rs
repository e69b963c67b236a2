//! The tenants table and the loop that runs them: at most `workers` runs at once, the
//! longest-waiting tenant first, one run per tenant at a time.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::alerts::{not_written, Alert, Alerted, Alerter, Condition};
use super::config::ServiceConfig;
use super::metrics::{Metrics, TenantLabels};
use super::tenants::{self, Loaded};
use crate::app::Connector;
use crate::config::values::Env;
use crate::config::{Config, ProcessEnv};
use crate::error::{Error, Result};
use crate::journal::Counts;
use crate::retry::RetryPolicy;
use crate::sink::counters::{counted, RunCounters};
use crate::sync::{Quiet, Report, SyncOptions, SYNC_ACTOR};

/// How soon a run waits again when another process holds the tenant's journal.
const BUSY_RETRY: Duration = Duration::from_secs(1);
/// How long a budget pause lasts when the message names no time.
const BUDGET_RETRY: Duration = Duration::from_secs(3600);
/// How long aborted runs get to let go of their journals after the grace period.
const ABORT_WAIT: Duration = Duration::from_secs(3);
/// How long alerts still queued at shutdown get to go out.
const ALERT_WAIT: Duration = Duration::from_secs(2);
/// How long one alert is retried while its channel is down.
const ALERT_RETRY: RetryPolicy = RetryPolicy {
    initial_interval: Duration::from_secs(1),
    max_interval: Duration::from_secs(60),
    budget: Duration::from_secs(3600),
    max_server_wait: Duration::from_secs(60),
};

pub(super) struct Shared {
    pub config: ServiceConfig,
    table: Mutex<Table>,
    pub wake: Notify,
    pub metrics: Metrics,
    /// The first scan of the folder is done.
    pub loaded: AtomicBool,
    stopping: AtomicBool,
    alerter: Alerter,
    /// Where tenants' secrets come from: the process environment, but for the demo.
    env: Arc<dyn Env>,
    /// The web console's sessions, when `[console]` is configured.
    pub console: Option<super::console::Console>,
}

#[derive(Default)]
pub(super) struct Table {
    pub tenants: BTreeMap<String, Tenant>,
    running: usize,
}

pub(super) struct Tenant {
    pub file: PathBuf,
    digest: [u8; 32],
    pub loaded: Result<Loaded, String>,
    pub running: bool,
    /// Its file is gone; it leaves the table when its run ends.
    removed: bool,
    /// Whether its journal opens: `None` until looked at.
    pub journal: Option<Result<(), String>>,
    /// When its last run started, for the schedule.
    last_started: Option<DateTime<Utc>>,
    pub next_run: Option<DateTime<Utc>>,
    /// A run-now request waiting, since when.
    pub requested: Option<DateTime<Utc>>,
    pub pause: Option<Pause>,
    pub failures: u32,
    /// Runs since the service started.
    pub runs: u64,
    pub last_run: Option<LastRun>,
    pub last_success: Option<DateTime<Utc>>,
    /// When a run last ended with `journal verify` passing.
    pub last_verified: Option<DateTime<Utc>>,
    /// What it was last alerted about.
    alerted: Alerted,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct Pause {
    /// `needs-login`, `budget`, `config`, `journal-damaged` or `journal-verify`: the
    /// name of the condition alerted.
    pub reason: &'static str,
    pub message: String,
    pub since: DateTime<Utc>,
    /// When it lifts by itself (the budget); otherwise a changed config file or a
    /// resume request lifts it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct LastRun {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Tenant {
    fn new(file: PathBuf, digest: [u8; 32], loaded: Result<Loaded, String>) -> Tenant {
        Tenant {
            file,
            digest,
            loaded,
            running: false,
            removed: false,
            journal: None,
            last_started: None,
            next_run: None,
            requested: None,
            pause: None,
            failures: 0,
            runs: 0,
            last_run: None,
            last_success: None,
            last_verified: None,
            alerted: Alerted::default(),
        }
    }

    pub fn register(&self) -> &'static str {
        self.loaded.as_ref().map_or("unknown", |l| l.register)
    }

    pub fn labels(&self, id: &str) -> TenantLabels {
        TenantLabels {
            tenant: id.to_string(),
            register: self.register().to_string(),
        }
    }

    /// `idle`, `queued`, `running`, `paused` or `invalid`.
    pub fn state(&self) -> &'static str {
        match () {
            _ if self.running => "running",
            _ if self.loaded.is_err() => "invalid",
            _ if self.pause.is_some() => "paused",
            _ if self.requested.is_some() => "queued",
            _ => "idle",
        }
    }

    /// Sets the next scheduled run from the schedule, at least `backoff` from now.
    fn schedule(&mut self, now: DateTime<Utc>, backoff: Option<Duration>) {
        let Ok(loaded) = &self.loaded else {
            self.next_run = None;
            return;
        };
        let schedule = &loaded.schedule;
        let mut due = schedule.next_after(self.last_started, now);
        if let Some(wait) = backoff.and_then(|w| chrono::TimeDelta::from_std(w).ok()) {
            due = due.max(schedule.after_quiet_hours(now + wait));
        }
        let jitter = schedule.jitter.mul_f64(rand::random::<f64>());
        self.next_run = Some(due + chrono::TimeDelta::from_std(jitter).unwrap_or_default());
    }

    /// Whether a run may start now.
    fn due(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let ready = !self.running
            && !self.removed
            && self.loaded.is_ok()
            && self.pause.is_none()
            && self.journal.is_some();
        if !ready {
            return None;
        }
        match (self.requested, self.next_run) {
            (Some(at), _) => Some(at),
            (None, Some(at)) if at <= now => Some(at),
            _ => None,
        }
    }
}

impl Shared {
    pub fn table(&self) -> MutexGuard<'_, Table> {
        // A panic elsewhere while holding it leaves plain data behind.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Alerts when `now` changes what `t` was last alerted about.
    fn tell(
        &self,
        id: &str,
        t: &mut Tenant,
        now: Condition,
        count: u64,
        run_id: Option<String>,
        detail: &str,
    ) {
        if let Some((told, before)) = t.alerted.next(now, count) {
            t.alerted = told;
            let register = t.register();
            self.alerter
                .send(Alert::new(id, register, now, before, run_id, detail));
        }
    }

    fn wake(&self) {
        self.wake.notify_one();
    }

    /// Refreshes the per-tenant gauges from the table.
    pub fn refresh_gauges(&self) {
        let table = self.table();
        for (id, t) in table.tenants.iter().filter(|(_, t)| t.loaded.is_ok()) {
            let reason = t.pause.as_ref().map(|p| p.reason);
            self.metrics.state(
                &t.labels(id),
                t.next_run.filter(|_| t.pause.is_none()),
                reason == Some("needs-login"),
                reason == Some("budget"),
            );
        }
    }
}

/// Runs the service until SIGTERM or Ctrl-C.
pub async fn serve(config: ServiceConfig) -> Result<()> {
    serve_with(config, Arc::new(ProcessEnv)).await
}

/// How long a client of the TLS listener has to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// `serve` with the tenants' secrets from `env`.
pub async fn serve_with(config: ServiceConfig, env: Arc<dyn Env>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| {
            Error::config(format!(
                "{}: [service] listen: cannot listen there: {e}",
                config.file.display()
            ))
        })?;
    let addr = listener.local_addr().map_err(|e| Error::Other(e.into()))?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let shard = match config.shard {
            Some(s) => format!(", shard {} of 0..{}", s.index, s.count - 1),
            None => String::new(),
        };
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let _ = writeln!(
            out,
            "listening on {scheme}://{addr} (tenants from {}{shard})",
            config.tenants.display()
        );
        let _ = out.flush();
    }
    let alerter = Alerter::start(&config.alerts, ALERT_RETRY)?;
    let console = config
        .console
        .clone()
        .map(|c| super::console::Console::new(c, addr));
    let shared = Arc::new(Shared {
        config,
        table: Mutex::new(Table::default()),
        wake: Notify::new(),
        metrics: Metrics::new(),
        loaded: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
        alerter,
        env,
        console,
    });
    let stop_http = Arc::new(Notify::new());
    let tls = shared
        .config
        .tls
        .as_ref()
        .map(|t| axum_server::tls_rustls::RustlsConfig::from_config(t.server.clone()));
    let server = tokio::spawn({
        let app = super::http::router(shared.clone());
        let stop = stop_http.clone();
        let tls = tls.clone();
        async move {
            let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
            let served = match tls {
                None => {
                    let stopped = async move { stop.notified().await };
                    axum::serve(listener, app)
                        .with_graceful_shutdown(stopped)
                        .await
                }
                Some(tls) => {
                    let handle = axum_server::Handle::new();
                    let stopping = handle.clone();
                    tokio::spawn(async move {
                        stop.notified().await;
                        stopping.graceful_shutdown(None);
                    });
                    match listener.into_std() {
                        Ok(std) => match axum_server::tls_rustls::from_tcp_rustls(std, tls) {
                            Ok(server) => {
                                // HTTP/1.1 as negotiated; a client that sends no request
                                // line within the timeout is dropped.
                                let mut server = server.http1_only().handle(handle);
                                server
                                    .http_builder()
                                    .http1()
                                    .header_read_timeout(HEADER_READ_TIMEOUT);
                                server.serve(app).await
                            }
                            Err(e) => Err(e),
                        },
                        Err(e) => Err(e),
                    }
                }
            };
            if let Err(e) = served {
                tracing::error!("the HTTP server stopped: {e}");
            }
        }
    });
    let mut signals = Signals::new()?;
    let mut runs = JoinSet::new();
    rescan(&shared).await;
    shared.loaded.store(true, Ordering::SeqCst);
    let rescan_every = shared.config.rescan;
    let mut next_scan = tokio::time::Instant::now() + rescan_every;
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        if tokio::time::Instant::now() >= next_scan {
            rescan(&shared).await;
            next_scan = tokio::time::Instant::now() + rescan_every;
        }
        for (id, file) in dispatch(&shared) {
            let span = tracing::info_span!("tenant", tenant = %id);
            runs.spawn(run_tenant(shared.clone(), id, file).instrument(span));
        }
        let wake_at = next_wake(&shared).min(next_scan);
        tokio::select! {
            _ = tokio::time::sleep_until(wake_at) => {}
            _ = shared.wake.notified() => {}
            Some(_) = runs.join_next(), if !runs.is_empty() => {}
            signal = signals.recv() => match signal {
                Signal::Stop => {
                    tracing::warn!("stopping: no new runs; waiting for the runs under way");
                    shared.stopping.store(true, Ordering::SeqCst);
                }
                Signal::Rescan => {
                    next_scan = tokio::time::Instant::now();
                    reload_tls(&shared, tls.as_ref());
                }
            },
        }
    }
    let grace = shared.config.shutdown_grace;
    let drained =
        tokio::time::timeout(grace, async { while runs.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            "runs still under way after shutdown_grace_secs: stopped; the next run settles \
             what they left open"
        );
        runs.abort_all();
        let _ = tokio::time::timeout(ABORT_WAIT, async {
            while runs.join_next().await.is_some() {}
        })
        .await;
    }
    shared.alerter.finish(ALERT_WAIT).await;
    stop_http.notify_one();
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    Ok(())
}

/// On SIGHUP: the certificate and key read again; a file that does not load keeps the
/// certificate in use, and says why.
fn reload_tls(shared: &Shared, serving: Option<&axum_server::tls_rustls::RustlsConfig>) {
    let (Some(tls), Some(serving)) = (shared.config.tls.as_ref(), serving) else {
        return;
    };
    match tls.reread() {
        Ok(config) => {
            serving.reload_from_config(config);
            tracing::info!("TLS certificate read again from {}", tls.cert.display());
        }
        Err(why) => tracing::error!("TLS certificate not reloaded, the one in use stays: {why}"),
    }
}

/// The tenants whose run starts now, longest waiting first, as many as workers are free.
fn dispatch(shared: &Shared) -> Vec<(String, PathBuf)> {
    let now = Utc::now();
    let mut table = shared.table();
    for t in table.tenants.values_mut() {
        if t.pause
            .as_ref()
            .and_then(|p| p.until)
            .is_some_and(|u| u <= now)
        {
            t.pause = None;
            t.schedule(now, None);
        }
    }
    let free = shared.config.workers.saturating_sub(table.running);
    let mut due: Vec<(DateTime<Utc>, String)> = table
        .tenants
        .iter()
        .filter_map(|(id, t)| t.due(now).map(|at| (at, id.clone())))
        .collect();
    due.sort();
    let mut started = Vec::new();
    for (_, id) in due.into_iter().take(free) {
        if let Some(t) = table.tenants.get_mut(&id) {
            t.running = true;
            t.requested = None;
            started.push((id, t.file.clone()));
        }
    }
    table.running += started.len();
    started
}

/// When the loop must look again: the earliest scheduled run or pause end.
fn next_wake(shared: &Shared) -> tokio::time::Instant {
    let now = Utc::now();
    let table = shared.table();
    let earliest = table
        .tenants
        .values()
        .filter(|t| !t.running)
        .filter_map(|t| match &t.pause {
            Some(pause) => pause.until,
            None => t.next_run,
        })
        .min();
    let wait = earliest
        .map(|at| (at - now).to_std().unwrap_or(Duration::ZERO))
        .unwrap_or(Duration::from_secs(3600));
    tokio::time::Instant::now() + wait.max(Duration::from_millis(5))
}

/// Reads the tenants folder again: new tenants are added (their journal looked at
/// first), changed ones take their new config (which lifts a pause), removed ones go.
async fn rescan(shared: &Arc<Shared>) {
    let known: HashMap<String, [u8; 32]> = shared
        .table()
        .tenants
        .iter()
        .filter(|(_, t)| !t.removed)
        .map(|(id, t)| (id.clone(), t.digest))
        .collect();
    let folder = shared.config.tenants.clone();
    let shard = shared.config.shard;
    let scan =
        match tokio::task::spawn_blocking(move || tenants::scan(&folder, &known, shard)).await {
            Ok(Ok(scan)) => scan,
            Ok(Err(e)) => {
                tracing::warn!("{e:#}");
                return;
            }
            Err(e) => {
                tracing::warn!("reading the tenants folder stopped: {e}");
                return;
            }
        };
    let now = Utc::now();
    let mut to_probe = Vec::new();
    {
        let mut table = shared.table();
        let present: std::collections::HashSet<&String> =
            scan.found.keys().chain(scan.unchanged.iter()).collect();
        let gone: Vec<String> = table
            .tenants
            .keys()
            .filter(|id| !present.contains(id))
            .cloned()
            .collect();
        for id in gone {
            let running = table.tenants.get(&id).is_some_and(|t| t.running);
            if running {
                if let Some(t) = table.tenants.get_mut(&id) {
                    t.removed = true;
                }
            } else if let Some(t) = table.tenants.remove(&id) {
                shared.metrics.forget(&t.labels(&id));
                tracing::warn!(tenant = %id, "tenant removed: its file is gone");
            }
        }
        for (id, found) in scan.found {
            if let Err(why) = &found.loaded {
                tracing::warn!(tenant = %id, "tenant config does not load: {why}");
            }
            let condition = match &found.loaded {
                Ok(_) => None,
                Err(why) => Some((Condition::Config, why.clone())),
            };
            match table.tenants.get_mut(&id) {
                Some(t) => {
                    let register = t.register();
                    t.file = found.file;
                    t.digest = found.digest;
                    t.loaded = found.loaded;
                    t.removed = false;
                    t.pause = None;
                    t.failures = 0;
                    if t.register() != register {
                        shared.metrics.forget(&TenantLabels {
                            tenant: id.clone(),
                            register: register.to_string(),
                        });
                    }
                    if t.journal.is_none() || matches!(t.journal, Some(Err(_))) {
                        to_probe.push(id.clone());
                    } else if !t.running {
                        t.schedule(now, None);
                    }
                }
                None => {
                    table.tenants.insert(
                        id.clone(),
                        Tenant::new(found.file, found.digest, found.loaded),
                    );
                    to_probe.push(id.clone());
                }
            }
            if let (Some((condition, why)), Some(t)) = (condition, table.tenants.get_mut(&id)) {
                shared.tell(&id, t, condition, 0, None, &why);
            }
        }
        // A journal that did not open is looked at again on every scan.
        for (id, t) in &table.tenants {
            if matches!(t.journal, Some(Err(_))) && !t.running && !to_probe.contains(id) {
                to_probe.push(id.clone());
            }
        }
    }
    for id in to_probe {
        let target = {
            let table = shared.table();
            table
                .tenants
                .get(&id)
                .and_then(|t| match (&t.loaded, t.running) {
                    (Ok(loaded), false) => Some((loaded.journal.clone(), loaded.register)),
                    _ => None,
                })
        };
        let Some((journal, register)) = target else {
            continue;
        };
        let probed =
            tokio::task::spawn_blocking(move || tenants::probe_journal(&journal, register))
                .await
                .unwrap_or_else(|e| Err(format!("looking at the journal stopped: {e}")));
        let mut table = shared.table();
        if let Some(t) = table.tenants.get_mut(&id) {
            match probed {
                Ok(last) => {
                    t.journal = Some(Ok(()));
                    t.last_started = t.last_started.max(last);
                    if !t.running {
                        t.schedule(Utc::now(), None);
                    }
                }
                Err(why) => {
                    tracing::warn!(tenant = %id, "journal does not open: {why}");
                    t.journal = Some(Err(why));
                }
            }
        }
    }
    shared.wake();
}

/// Marks a run over when its task ends, also when it is aborted.
struct RunGuard {
    shared: Arc<Shared>,
    id: String,
    done: bool,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut table = self.shared.table();
        table.running = table.running.saturating_sub(1);
        if let Some(t) = table.tenants.get_mut(&self.id) {
            t.running = false;
        }
    }
}

/// One run of one tenant: its config read again and its connector (and journal) open
/// for the run only.
async fn run_tenant(shared: Arc<Shared>, id: String, file: PathBuf) {
    let mut guard = RunGuard {
        shared: shared.clone(),
        id: id.clone(),
        done: false,
    };
    let started = Utc::now();
    let busy = {
        let journal = shared
            .table()
            .tenants
            .get(&id)
            .and_then(|t| t.loaded.as_ref().ok().map(|l| l.journal.clone()));
        match journal {
            Some(journal) => tokio::task::spawn_blocking(move || tenants::journal_busy(&journal))
                .await
                .unwrap_or(false),
            None => false,
        }
    };
    if busy {
        tracing::info!(tenant = %id, "journal in use by another process: the run waits");
        guard.done = true;
        let mut table = shared.table();
        table.running = table.running.saturating_sub(1);
        if let Some(t) = table.tenants.get_mut(&id) {
            t.running = false;
            t.next_run =
                Some(Utc::now() + chrono::TimeDelta::from_std(BUSY_RETRY).unwrap_or_default());
        }
        drop(table);
        shared.wake();
        return;
    }
    let verify = shared.config.verify_every.is_some_and(|every| {
        shared
            .table()
            .tenants
            .get(&id)
            .and_then(|t| t.last_verified)
            .is_none_or(|at| {
                started.signed_duration_since(at)
                    >= chrono::TimeDelta::from_std(every).unwrap_or(chrono::TimeDelta::MAX)
            })
    });
    let counters = Arc::new(RunCounters::default());
    let result = counted(counters.clone(), run_once(file, shared.env.clone(), verify)).await;
    let finished = Utc::now();
    let journal_size = result.as_ref().ok().and_then(|r| r.journal_size);
    let verified = result.as_ref().ok().and_then(|r| r.verified.clone());
    let result = result.map(|r| (r.report, r.stopped));
    let (outcome, counts, run_id, error) = match &result {
        Ok((report, None)) => {
            let c = &report.counts;
            let outcome = match c.rejected + c.failed + c.conflict {
                0 => "succeeded",
                _ => "partial",
            };
            (outcome, Some(c.clone()), Some(report.run_id.clone()), None)
        }
        Ok((report, Some(e))) => (
            outcome_of(e),
            Some(report.counts.clone()),
            Some(report.run_id.clone()),
            Some(e),
        ),
        Err(e) => (outcome_of(e), None, None, Some(e)),
    };
    match error {
        Some(e) => tracing::warn!(tenant = %id, outcome, "run stopped: {e}"),
        None => tracing::info!(tenant = %id, outcome, "run done"),
    }
    guard.done = true;
    let mut table = shared.table();
    table.running = table.running.saturating_sub(1);
    let mut forget = None;
    if let Some(t) = table.tenants.get_mut(&id) {
        t.running = false;
        t.runs += 1;
        t.last_started = Some(started);
        t.last_run = Some(LastRun {
            run_id,
            started,
            finished,
            outcome,
            counts: counts.clone(),
            error: error.map(|e| e.to_string()),
        });
        let labels = t.labels(&id);
        shared.metrics.run_done(&labels, outcome, counts.as_ref());
        shared.metrics.requests_done(&labels, &counters);
        if let Some((events, bytes)) = journal_size {
            shared.metrics.journal_size(&labels, events, bytes);
        }
        let pause = |reason, until| Pause {
            reason,
            message: error.map(|e| e.to_string()).unwrap_or_default(),
            since: finished,
            until,
        };
        match error {
            None => {
                t.failures = 0;
                t.journal = Some(Ok(()));
                t.last_success = Some(started);
                shared.metrics.succeeded_at(&labels, started);
                t.schedule(finished, None);
            }
            Some(Error::NeedsLogin(_)) => {
                t.pause = Some(pause("needs-login", None));
                t.next_run = None;
            }
            Some(Error::Config(_)) => {
                t.pause = Some(pause("config", None));
                t.next_run = None;
            }
            Some(Error::Corrupt(_)) => {
                t.pause = Some(pause("journal-damaged", None));
                t.next_run = None;
            }
            Some(Error::Budget(message)) => {
                let until = budget_until(message, finished);
                t.pause = Some(pause("budget", Some(until)));
                t.next_run = Some(until);
            }
            Some(Error::Other(_)) => {
                t.failures = t.failures.saturating_add(1);
                let wait = shared.config.backoff_after(t.failures);
                t.schedule(finished, Some(wait));
            }
        }
        let mut condition =
            Condition::of_run(error, counts.as_ref(), shared.config.alerts.rejections_at);
        let mut verify_failed = None;
        match verified {
            Some(Ok(())) => t.last_verified = Some(finished),
            // A journal that fails verify is held until a person looks.
            Some(Err(why)) if error.is_none() => {
                t.pause = Some(Pause {
                    reason: Condition::VerifyFailed.name(),
                    message: why.clone(),
                    since: finished,
                    until: None,
                });
                t.next_run = None;
                condition = Condition::VerifyFailed;
                verify_failed = Some(why);
            }
            _ => {}
        }
        let not_written = counts.as_ref().map_or(0, not_written);
        let run = t.last_run.as_ref().and_then(|r| r.run_id.clone());
        let detail = match (error, condition) {
            (Some(e), _) => e.to_string(),
            (None, Condition::VerifyFailed) => verify_failed.unwrap_or_default(),
            (None, Condition::Rejections) => format!(
                "{not_written} customer(s) not written in the last run (rejected, failed or \
                 in conflict); see `journal log{}`",
                run.as_deref()
                    .map(|r| format!(" --run {r}"))
                    .unwrap_or_default()
            ),
            (None, _) => String::new(),
        };
        shared.tell(&id, t, condition, not_written, run, &detail);
        if t.removed {
            forget = Some(labels);
        }
    }
    if let Some(labels) = forget {
        table.tenants.remove(&id);
        shared.metrics.forget(&labels);
    }
    drop(table);
    shared.wake();
}

/// One run; with `verify`, a run that ends well ends with `journal verify`.
async fn run_once(file: PathBuf, env: Arc<dyn Env>, verify: bool) -> Result<Ran> {
    // Blocking threads do not inherit the task's span: each line names its tenant.
    let span = tracing::Span::current();
    let opened = tokio::task::spawn_blocking(move || {
        let _tenant = span.enter();
        let config = Config::load(&file)?;
        Connector::open(config, env.as_ref())
    })
    .await
    .map_err(|e| Error::Other(anyhow::anyhow!("opening the tenant stopped: {e}")))??;
    let options = SyncOptions {
        actor: SYNC_ACTOR.to_string(),
        ..SyncOptions::default()
    };
    let result = opened.engine(Arc::new(Quiet)).run(options).await;
    // Rewrites the journal when values were removed, then lets it go.
    let span = tracing::Span::current();
    let verify = verify && matches!(&result, Ok((_, None)));
    let finished = tokio::task::spawn_blocking(move || {
        span.in_scope(|| {
            let verified = verify.then(|| verified(&opened.journal));
            let size = opened.journal.size();
            opened.finish().map(|()| (size, verified))
        })
    })
    .await
    .map_err(|e| Error::Other(anyhow::anyhow!("closing the journal stopped: {e}")));
    let (report, stopped) = result?;
    let (size, verified) = match &finished {
        Ok(Ok((size, verified))) => (Some(*size), verified.clone()),
        _ => (None, None),
    };
    let stopped = match (stopped, finished) {
        (Some(e), _) => Some(e),
        (None, Ok(Ok(_))) => None,
        (None, Ok(Err(e)) | Err(e)) => Some(e),
    };
    Ok(Ran {
        report,
        stopped,
        journal_size: size,
        verified,
    })
}

/// `journal verify` of a run's journal: `Err` says what it found, by kind and event
/// number only (a problem's own text can name a customer's code).
fn verified(journal: &crate::journal::Journal) -> std::result::Result<(), String> {
    use crate::journal::Kind;
    let found = journal
        .verify()
        .map_err(|e| format!("journal verify could not read the journal: {e}"))?;
    let Some(first) = found.problems.first() else {
        return Ok(());
    };
    let kind = match first.kind {
        Kind::Corrupt => "its files are damaged: restore it from a backup",
        Kind::Tampered => "it was changed after it was written",
        Kind::Unfinished => "a support action (a purge) was cut off: run it again",
    };
    Err(format!(
        "journal verify found {} problem(s), the first at event {}: {kind}; run `journal \
         verify` on the tenant for the list, then resume it",
        found.problems.len(),
        first.seq
    ))
}

/// What `run_once` came to: the report, what stopped the run (if anything), and the
/// journal's events and bytes as the run left them.
struct Ran {
    report: Report,
    stopped: Option<Error>,
    journal_size: Option<(u64, u64)>,
    /// What `journal verify` at the run's end found, if it ran.
    verified: Option<std::result::Result<(), String>>,
}

fn outcome_of(error: &Error) -> &'static str {
    match error {
        Error::NeedsLogin(_) => "needs-login",
        Error::Budget(_) => "budget",
        Error::Config(_) => "config",
        Error::Corrupt(_) => "journal-damaged",
        Error::Other(_) => "failed",
    }
}

/// The time a budget message says the tenant can run again ("from 2026-12-03 14:05
/// UTC"), or an hour from now.
fn budget_until(message: &str, now: DateTime<Utc>) -> DateTime<Utc> {
    let fallback = now + chrono::TimeDelta::from_std(BUDGET_RETRY).unwrap_or_default();
    let Some(at) = message.find("from 2") else {
        return fallback;
    };
    let text: String = message[at + 5..].chars().take(16).collect();
    chrono::NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M")
        .map(|t| t.and_utc().max(now))
        .unwrap_or(fallback)
}

/// One tenant at a glance, for the console's pages and its API.
#[derive(Serialize)]
pub(super) struct Summary {
    pub id: String,
    pub register: &'static str,
    /// As `Tenant::state`.
    pub state: &'static str,
    /// What a person should know first: `ok`, `failing`, `needs-login`, `paused`,
    /// `conflicts`, `invalid` or `new` (not run since the service started).
    pub health: &'static str,
    pub pause: Option<Pause>,
    pub last_run: Option<LastRun>,
    pub next_run: Option<DateTime<Utc>>,
    pub last_success: Option<DateTime<Utc>>,
    pub last_verified: Option<DateTime<Utc>>,
    pub failures: u32,
    /// Why its config does not load (file and key, never a value).
    pub error: Option<String>,
}

/// The tenants `show` keeps, in id order.
pub(super) fn summaries(shared: &Shared, show: impl Fn(&str) -> bool) -> Vec<Summary> {
    let table = shared.table();
    table
        .tenants
        .iter()
        .filter(|(id, t)| !t.removed && show(id))
        .map(|(id, t)| {
            let conflicts = t
                .last_run
                .as_ref()
                .and_then(|r| r.counts.as_ref())
                .is_some_and(|c| c.conflict > 0);
            let health = match () {
                _ if t.loaded.is_err() => "invalid",
                _ if t.pause.as_ref().is_some_and(|p| p.reason == "needs-login") => "needs-login",
                _ if t.pause.is_some() => "paused",
                _ if t.failures > 0 => "failing",
                _ if conflicts => "conflicts",
                _ if t.last_run.is_none() => "new",
                _ => "ok",
            };
            Summary {
                id: id.clone(),
                register: t.register(),
                state: t.state(),
                health,
                pause: t.pause.clone(),
                last_run: t.last_run.clone(),
                next_run: t.next_run.filter(|_| t.pause.is_none() && t.loaded.is_ok()),
                last_success: t.last_success,
                last_verified: t.last_verified,
                failures: t.failures,
                error: t.loaded.as_ref().err().cloned(),
            }
        })
        .collect()
}

/// `purge` of one customer of a tenant, as the CLI's: the tenant's config and secrets
/// as its runs use them; its journal's lock keeps it from overlapping a run.
pub(super) async fn purge(
    shared: &Shared,
    id: &str,
    code: &str,
    actor: &str,
    reason: &str,
) -> Result<crate::support::Receipt> {
    crate::support::purge(open_tenant(shared, id).await?, code, actor, reason).await
}

/// A tenant's `Connector`, opened with its config and secrets as its runs use them; its
/// journal's lock keeps what is done with it from overlapping a run.
async fn open_tenant(shared: &Shared, id: &str) -> Result<Connector> {
    let file = loaded_file(shared, id).map_err(|(_, why)| Error::config(why))?;
    let env = shared.env.clone();
    tokio::task::spawn_blocking(move || {
        let config = Config::load(&file)?;
        Connector::open(config, env.as_ref())
    })
    .await
    .map_err(|e| Error::Other(anyhow::anyhow!("opening the tenant stopped: {e}")))?
}

/// The file of a tenant that exists and loads.
fn loaded_file(shared: &Shared, id: &str) -> Result<PathBuf, (u16, String)> {
    let table = shared.table();
    match table.tenants.get(id).filter(|t| !t.removed) {
        None => Err((404, "no such tenant".into())),
        Some(t) if t.loaded.is_err() => Err((409, "the tenant's config does not load".into())),
        Some(t) => Ok(t.file.clone()),
    }
}

/// What the console's Connect to Visma needs for a tenant on eAccounting: its login
/// settings (the console sets the redirect) and the grant's file.
pub(super) async fn login_settings(
    shared: &Shared,
    id: &str,
) -> Result<(crate::sink::auth::LoginSettings, PathBuf), (u16, String)> {
    use crate::sink::eaccounting::{self, EAccountingConfig};
    let file = loaded_file(shared, id)?;
    let env = shared.env.clone();
    let settings = tokio::task::spawn_blocking(move || {
        let config = Config::load(&file).map_err(|e| (409, e.to_string()))?;
        let Some(sink) = config.settings::<EAccountingConfig>() else {
            return Err((
                409,
                format!(
                    "{} needs no login: its credentials come from the environment variables \
                     named in [sink]",
                    config.sink.register.product()
                ),
            ));
        };
        eaccounting::login_settings(&config, sink, env.as_ref(), true)
            .map_err(|e| (409, e.to_string()))
    });
    settings
        .await
        .unwrap_or_else(|_| Err((500, "reading the tenant's config stopped".into())))
}

/// The tenant's record of processing, from its config and mapping (no secret, no journal).
pub(super) async fn privacy_record(
    shared: &Shared,
    id: &str,
) -> Result<crate::privacy::Record, (u16, String)> {
    let file = loaded_file(shared, id)?;
    tokio::task::spawn_blocking(move || {
        let config = Config::load(&file).map_err(|e| (409, e.to_string()))?;
        crate::privacy::record(&config).map_err(|e| (409, e.to_string()))
    })
    .await
    .unwrap_or_else(|_| Err((500, "reading the tenant's config stopped".into())))
}

/// A tenant's connection to its register, as the console shows it.
pub(super) enum Connection {
    /// Credentials come from environment variables: nothing to connect.
    FromEnv,
    /// eAccounting: the stored grant's origin and last refresh, if one is stored.
    Login(Option<(String, DateTime<Utc>)>),
    Unknown(String),
}

pub(super) async fn connection(shared: &Shared, id: &str) -> Connection {
    use crate::sink::eaccounting::{EAccountingConfig, GRANT_FILE};
    let file = match loaded_file(shared, id) {
        Ok(f) => f,
        Err((_, why)) => return Connection::Unknown(why),
    };
    let read = tokio::task::spawn_blocking(move || {
        let config = Config::load(&file).map_err(|e| e.to_string())?;
        if config.settings::<EAccountingConfig>().is_none() {
            return Ok(Connection::FromEnv);
        }
        let store = crate::journal::credentials_dir(&config.journal.path)
            .map_err(|e| e.to_string())?
            .join(GRANT_FILE);
        let grant = crate::sink::auth::Grant::load(&store).map_err(|e| e.to_string())?;
        Ok(Connection::Login(grant.map(|g| (g.origin, g.refreshed_at))))
    });
    match read.await {
        Ok(Ok(c)) => c,
        Ok(Err(why)) => Connection::Unknown(why),
        Err(_) => Connection::Unknown("reading the tenant's config stopped".into()),
    }
}

/// After a login stored a new grant: lifts a needs-login pause, or queues a run, so the
/// new connection is used at once.
pub(super) fn logged_in(shared: &Shared, id: &str) {
    let needs_login = {
        let table = shared.table();
        let pause = table.tenants.get(id).and_then(|t| t.pause.as_ref());
        pause.is_some_and(|p| p.reason == Condition::NeedsLogin.name())
    };
    let _ = match needs_login {
        true => resume(shared, id),
        false => run_now(shared, id).map(|_| ()),
    };
}

/// A support action on one customer from the console: what the CLI command of the same
/// name does, recorded in the tenant's journal with the console user as the actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    Restrict,
    Unrestrict,
    Unsuppress,
    Replay,
    Export,
    /// `link --accept`: the register's customer under the number is this one.
    Accept,
    /// `link --skip`: this customer is never sent.
    Skip,
}

impl Action {
    pub const ALL: [Action; 7] = [
        Action::Restrict,
        Action::Unrestrict,
        Action::Unsuppress,
        Action::Replay,
        Action::Export,
        Action::Accept,
        Action::Skip,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::Restrict => "restrict",
            Action::Unrestrict => "unrestrict",
            Action::Unsuppress => "unsuppress",
            Action::Replay => "replay",
            Action::Export => "export",
            Action::Accept => "accept",
            Action::Skip => "skip",
        }
    }

    pub fn parse(text: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == text)
    }
}

/// What a support action did: a sentence, or the export's document.
pub(super) enum Done {
    Said(String),
    Exported(serde_json::Value),
}

pub(super) async fn support_action(
    shared: &Shared,
    id: &str,
    code: &str,
    action: Action,
    actor: &str,
    reason: &str,
) -> Result<Done> {
    use crate::journal::HoldKind;
    use crate::support;
    let c = open_tenant(shared, id).await?;
    let hold = |kind, on, yes: &str, no: &str| {
        let (yes, no) = (yes.to_string(), no.to_string());
        let c = &c;
        async move {
            let changed = support::set_hold(c, code, actor, reason, kind, on).await?;
            Ok::<_, Error>(Done::Said(if changed { yes } else { no }))
        }
    };
    let done = match action {
        Action::Restrict => {
            hold(
                HoldKind::Restricted,
                true,
                "Restricted: no update is sent until it is lifted.",
                "It was restricted already.",
            )
            .await?
        }
        Action::Unrestrict => {
            hold(
                HoldKind::Restricted,
                false,
                "Restriction lifted: the next run sends its changes.",
                "It was not restricted.",
            )
            .await?
        }
        Action::Unsuppress => {
            hold(
                HoldKind::Suppressed,
                false,
                "Suppression lifted: the next run may create it again.",
                "It was not suppressed.",
            )
            .await?
        }
        Action::Replay => {
            let (report, stopped) =
                support::replay(&c, vec![code.to_string()], actor, reason).await?;
            if let Some(e) = stopped {
                return Err(e);
            }
            let n = &report.counts;
            Done::Said(format!(
                "Sent again: {} created, {} updated, {} rejected, {} failed.",
                n.created, n.updated, n.rejected, n.failed
            ))
        }
        Action::Export => Done::Exported(support::export(&c, code, actor, reason).await?),
        Action::Accept | Action::Skip => {
            let decided = support::link(&c, code, action == Action::Accept, actor, reason).await?;
            Done::Said(format!("Decided: {decided}."))
        }
    };
    tokio::task::spawn_blocking(move || c.finish())
        .await
        .map_err(|e| Error::Other(anyhow::anyhow!("closing the journal stopped: {e}")))??;
    Ok(done)
}

/// Lifts a tenant's pause and queues a run; `Err` with the status and why not.
pub(super) fn resume(shared: &Shared, id: &str) -> Result<(), (u16, String)> {
    let mut table = shared.table();
    let Some(t) = table.tenants.get_mut(id).filter(|t| !t.removed) else {
        return Err((404, "no such tenant".into()));
    };
    let Some(pause) = t.pause.take() else {
        return Err((409, "the tenant is not paused".into()));
    };
    // Resuming a journal that failed verify accepts it as it is: the next check waits
    // its interval instead of pausing the tenant again at once.
    if pause.reason == Condition::VerifyFailed.name() {
        t.last_verified = Some(Utc::now());
    }
    t.failures = 0;
    t.requested.get_or_insert(Utc::now());
    drop(table);
    shared.wake();
    Ok(())
}

/// Queues one run of a tenant (a second request while one is queued adds none).
pub(super) fn run_now(shared: &Shared, id: &str) -> Result<bool, (u16, String)> {
    let mut table = shared.table();
    let Some(t) = table.tenants.get_mut(id).filter(|t| !t.removed) else {
        return Err((404, "no such tenant".into()));
    };
    if t.loaded.is_err() {
        return Err((
            409,
            "the tenant's config does not load; see GET /tenants".into(),
        ));
    }
    if let Some(pause) = &t.pause {
        return Err((
            409,
            format!(
                "the tenant is paused ({}); fix it, then POST /tenants/{id}/resume",
                pause.reason
            ),
        ));
    }
    let newly = t.requested.is_none();
    t.requested.get_or_insert(Utc::now());
    drop(table);
    shared.wake();
    Ok(newly)
}

enum Signal {
    Stop,
    Rescan,
}

/// SIGTERM and Ctrl-C stop the service; SIGHUP reads the tenants folder again.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let listen = |kind| {
                signal(kind)
                    .map_err(|e| Error::Other(anyhow::anyhow!("cannot listen for signals: {e}")))
            };
            Ok(Signals {
                term: listen(SignalKind::terminate())?,
                hup: listen(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn recv(&mut self) -> Signal {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => Signal::Stop,
                _ = tokio::signal::ctrl_c() => Signal::Stop,
                _ = self.hup.recv() => Signal::Rescan,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Stop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_pause_lasts_until_the_time_the_message_names() {
        let now = DateTime::parse_from_rfc3339("2026-12-03T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let message = "e-conomic: the daily call budget is used up: ... It can run again \
                       from 2026-12-03 14:05 UTC, when the oldest calls leave";
        assert_eq!(
            budget_until(message, now).to_rfc3339(),
            "2026-12-03T14:05:00+00:00"
        );
        assert_eq!(
            budget_until("never with this budget", now),
            now + chrono::TimeDelta::hours(1)
        );
    }
}
