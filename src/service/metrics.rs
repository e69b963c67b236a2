//! The Prometheus metrics `serve` exposes at `/metrics`. Tenants are named by their id
//! (the config file's stem), never by their name; customers not at all.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::journal::Counts;
use crate::sink::counters::RunCounters;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: String,
    pub register: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub tenant: String,
    pub register: String,
    pub outcome: String,
}

/// A run's outcomes, as `runs_total` labels them.
pub const RUN_OUTCOMES: [&str; 7] = [
    "succeeded",
    "partial",
    "failed",
    "needs-login",
    "budget",
    "config",
    "journal-damaged",
];

/// A run's customers by what came of them: the `Report` counts by their names.
fn customer_counts(counts: &Counts) -> [(&'static str, u64); 9] {
    [
        ("created", counts.created),
        ("updated", counts.updated),
        ("unchanged", counts.unchanged),
        ("rejected", counts.rejected),
        ("failed", counts.failed),
        ("conflict", counts.conflict),
        ("skipped", counts.skipped),
        ("restricted", counts.restricted),
        ("suppressed", counts.suppressed),
    ]
}

pub struct Metrics {
    registry: Registry,
    runs: Family<OutcomeLabels, Counter>,
    customers: Family<OutcomeLabels, Counter>,
    conflicts: Family<TenantLabels, Gauge>,
    last_success: Family<TenantLabels, Gauge>,
    next_run: Family<TenantLabels, Gauge>,
    needs_login: Family<TenantLabels, Gauge>,
    budget_paused: Family<TenantLabels, Gauge>,
    requests: Family<TenantLabels, Counter>,
    throttled: Family<TenantLabels, Counter>,
    retry_wait: Family<TenantLabels, Counter<f64, AtomicU64>>,
    token_refreshes: Family<TenantLabels, Counter>,
    headroom: Family<TenantLabels, Gauge<f64, AtomicU64>>,
    journal_events: Family<TenantLabels, Gauge>,
    journal_bytes: Family<TenantLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("opter_visma_sync");
        let metrics = Metrics {
            registry: Registry::default(),
            runs: Family::default(),
            customers: Family::default(),
            conflicts: Family::default(),
            last_success: Family::default(),
            next_run: Family::default(),
            needs_login: Family::default(),
            budget_paused: Family::default(),
            requests: Family::default(),
            throttled: Family::default(),
            retry_wait: Family::default(),
            token_refreshes: Family::default(),
            headroom: Family::default(),
            journal_events: Family::default(),
            journal_bytes: Family::default(),
        };
        registry.register("runs", "Runs of a tenant by outcome", metrics.runs.clone());
        registry.register(
            "customers",
            "Customers of a tenant's runs by what came of them (the run report's counts)",
            metrics.customers.clone(),
        );
        registry.register(
            "conflicts",
            "Customers in conflict with the register at the tenant's last run",
            metrics.conflicts.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "When the tenant's last successful run started (Unix time)",
            metrics.last_success.clone(),
        );
        registry.register(
            "next_run_timestamp_seconds",
            "When the tenant's next scheduled run is due (Unix time; 0 while paused)",
            metrics.next_run.clone(),
        );
        registry.register(
            "needs_login",
            "1 while the tenant is paused until a person logs in to the register again",
            metrics.needs_login.clone(),
        );
        registry.register(
            "budget_paused",
            "1 while the tenant is paused because the register's daily call budget is used up",
            metrics.budget_paused.clone(),
        );
        registry.register(
            "register_requests",
            "Requests the tenant's runs sent to the register (token requests not counted)",
            metrics.requests.clone(),
        );
        registry.register(
            "register_throttled",
            "Register requests answered 429 Too Many Requests",
            metrics.throttled.clone(),
        );
        registry.register(
            "retry_wait_seconds",
            "Time the tenant's runs waited before retrying register requests",
            metrics.retry_wait.clone(),
        );
        registry.register(
            "token_refreshes",
            "Access tokens the tenant's runs obtained from the register's token endpoint",
            metrics.token_refreshes.clone(),
        );
        registry.register(
            "rate_limit_headroom_ratio",
            "The least share of its rate allowance the register said was left during the \
             tenant's last run that sent it requests (Visma.net's X-RateLimit-Remaining, \
             e-conomic's X-RateLimiting; absent for a register that does not say)",
            metrics.headroom.clone(),
        );
        registry.register(
            "journal_events",
            "Events the tenant's journal holds, after its last run",
            metrics.journal_events.clone(),
        );
        registry.register(
            "journal_bytes",
            "Bytes the tenant's journal database takes on disk, after its last run",
            metrics.journal_bytes.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String does not fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn run_done(&self, who: &TenantLabels, outcome: &str, counts: Option<&Counts>) {
        self.runs.get_or_create(&with(who, outcome)).inc();
        if let Some(counts) = counts {
            for (name, n) in customer_counts(counts) {
                self.customers.get_or_create(&with(who, name)).inc_by(n);
            }
            self.conflicts
                .get_or_create(who)
                .set(i64::try_from(counts.conflict).unwrap_or(i64::MAX));
        }
    }

    /// What a run's register requests came to.
    pub fn requests_done(&self, who: &TenantLabels, counters: &RunCounters) {
        let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        self.requests
            .get_or_create(who)
            .inc_by(n(&counters.requests));
        self.throttled
            .get_or_create(who)
            .inc_by(n(&counters.throttled));
        self.retry_wait
            .get_or_create(who)
            .inc_by(n(&counters.retry_wait_ms) as f64 / 1000.0);
        self.token_refreshes
            .get_or_create(who)
            .inc_by(n(&counters.token_refreshes));
        // A run that sent the register nothing (a no-op) leaves the last figure.
        if let Some(left) = counters.headroom() {
            self.headroom.get_or_create(who).set(left);
        }
    }

    /// The journal's size after a run.
    pub fn journal_size(&self, who: &TenantLabels, events: u64, bytes: u64) {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.journal_events.get_or_create(who).set(n(events));
        self.journal_bytes.get_or_create(who).set(n(bytes));
    }

    pub fn succeeded_at(&self, who: &TenantLabels, at: chrono::DateTime<chrono::Utc>) {
        self.last_success.get_or_create(who).set(at.timestamp());
    }

    pub fn state(
        &self,
        who: &TenantLabels,
        next_run: Option<chrono::DateTime<chrono::Utc>>,
        needs_login: bool,
        budget: bool,
    ) {
        self.next_run
            .get_or_create(who)
            .set(next_run.map_or(0, |t| t.timestamp()));
        self.needs_login
            .get_or_create(who)
            .set(i64::from(needs_login));
        self.budget_paused.get_or_create(who).set(i64::from(budget));
    }

    /// A tenant removed from the folder (or whose register changed) leaves no series.
    pub fn forget(&self, who: &TenantLabels) {
        for outcome in RUN_OUTCOMES {
            self.runs.remove(&with(who, outcome));
        }
        for (name, _) in customer_counts(&Counts::default()) {
            self.customers.remove(&with(who, name));
        }
        for family in [
            &self.conflicts,
            &self.last_success,
            &self.next_run,
            &self.needs_login,
            &self.budget_paused,
            &self.journal_events,
            &self.journal_bytes,
        ] {
            family.remove(who);
        }
        for family in [&self.requests, &self.throttled, &self.token_refreshes] {
            family.remove(who);
        }
        self.retry_wait.remove(who);
        self.headroom.remove(who);
    }
}

fn with(who: &TenantLabels, outcome: &str) -> OutcomeLabels {
    OutcomeLabels {
        tenant: who.tenant.clone(),
        register: who.register.clone(),
        outcome: outcome.to_string(),
    }
}
