//! Command-line definitions (clap). Parsing only; `commands` does the work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::DEFAULT_CONFIG_FILE;
use crate::sink::{Register, REGISTERS};

/// What the tool does, for `--help`; the sandbox build adds how to try it.
macro_rules! long_about {
    () => {
        "Keep a Visma customer register in step with Opter.\n\n\
         Reads customers and their contact persons (references) from Opter, keeps only the \
         customer's code, name, contact name and contact email, creates or updates them in \
         the Visma register, and records every write in a local journal."
    };
}

#[derive(Debug, Parser)]
#[command(
    name = "opter-visma-sync",
    version,
    about = "Keep a Visma customer register in step with Opter, sending only customer name, \
             contact person name and contact email.",
    after_help = "Exit codes: 0 all done, 1 the run could not finish, 2 config or usage error, \
                  3 finished with rejected or failed customers, 4 a person must log in to \
                  Visma again, 5 `journal verify` found the journal changed after it was \
                  written (or a purge could not verify it), 6 e-conomic's daily call budget \
                  is used up (run again when the message says), 7 the journal cannot be \
                  read whole (damaged files: restore it from a backup), 8 `journal verify` \
                  found a support action cut off half-way (run it again)."
)]
#[cfg_attr(
    feature = "sandbox",
    command(long_about = concat!(
        long_about!(),
        "\n\nTry it without any accounts:   opter-visma-sync demo\n\
         Explore a simulated setup:     opter-visma-sync sandbox --write-config sync.toml"
    ))
)]
#[cfg_attr(not(feature = "sandbox"), command(long_about = long_about!()))]
pub struct Cli {
    /// Config file (TOML). Secrets are never in it, only the names of the environment
    /// variables that hold them.
    #[arg(long, global = true, env = "OPTER_VISMA_SYNC_CONFIG", default_value = DEFAULT_CONFIG_FILE)]
    pub config: PathBuf,

    /// More log output on stderr (-v info, -vv debug). Logs name customers by code only.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Log lines as text, or as one JSON object each (for log collectors; under
    /// `serve`, a run's lines carry its tenant in `span.tenant`).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "OPTER_VISMA_SYNC_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Start a new journal where the journal folder's database is gone (without this,
    /// such a folder is refused: restore it with `journal restore`). Purged customers
    /// listed in its suppression file stay suppressed.
    #[arg(long, global = true)]
    pub new_journal: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole job against a built-in simulator of Opter and a Visma register.
    #[command(long_about = "Run the whole job against a built-in simulator.\n\n\
        Starts the sandbox on a free loopback port with the bundled customers, syncs them \
        into the simulated Visma register (eAccounting unless --sink says otherwise), syncs \
        again (nothing is sent), changes one customer in the simulated Opter, syncs once \
        more (one update), and prints each summary and where the journal is. Needs no \
        config and no network.\n\n\
        Examples:\n  opter-visma-sync demo\n  opter-visma-sync demo --sink economic\n  \
        opter-visma-sync demo --sink visma-net --source opter-export")]
    #[cfg(feature = "sandbox")]
    Demo(DemoArgs),

    /// Serve simulators of Opter's API and the three Visma registers on loopback, for
    /// trying the tool and for tests.
    #[command(
        long_about = "Serve simulators of Opter's customer API and of Visma eAccounting, \
        Visma.net ERP and Visma e-conomic on loopback over real HTTP, until stopped with \
        Ctrl-C.\n\n\
        One port serves Opter under /opter/api, eAccounting under /visma/v2 (tokens at \
        /visma/connect/token), Visma.net under /visma-net/api (tokens at \
        /visma-net/connect/token), e-conomic under /economic/api, and inspection endpoints \
        under /_sandbox: GET /_sandbox/visma/customers, /_sandbox/visma-net/customers, \
        /_sandbox/economic/customers (the registers), GET /_sandbox/visma/requests (and \
        likewise for the others: every request received), PUT /_sandbox/opter/customers/CODE \
        (change a customer). --sink chooses which register --write-config points at.\n\n\
        Faults can be injected from the start (--fail-rate, --drop-after-commit-rate...) or \
        changed while it runs: POST /_sandbox/faults with {\"seed\", \"fail_rate\", \
        \"statuses\", \"latency_ms\", \"drop_after_commit_rate\", \"rate_limit_per_minute\"}, \
        DELETE /_sandbox/faults to clear.\n\n\
        Example:\n  opter-visma-sync sandbox --port 8080 --sink economic --write-config sync.toml\n  \
        # in another shell, after running the printed export lines:\n  \
        opter-visma-sync --config sync.toml sync"
    )]
    #[cfg(feature = "sandbox")]
    Sandbox(SandboxArgs),

    /// Write a commented config for a new tenant, and print what to do next.
    #[command(
        long_about = "Write a commented tenant config for the register and source you name \
        (and the register's bundled mapping beside it, unless one is there), readable by \
        you only. The file holds no secret: it names the environment variables that hold \
        them, and `init` prints which to set and the next steps. An existing config is \
        never overwritten without --force.\n\n\
        Examples:\n  opter-visma-sync init --register eaccounting --source api --out sync.toml\n  \
        opter-visma-sync init --register economic --source export --out /etc/ovs/sync.toml"
    )]
    Init(InitArgs),

    /// Check a setup without changing anything: config, secrets, Opter, the register's
    /// login, company and constants, the journal folder and the clock.
    #[command(
        long_about = "Check a setup without changing anything, one line per check, each \
        ok or what to fix (naming the config key or environment variable, never a secret):\n\n  \
        config       the config and its mapping load\n  \
        environment  the environment variables it names are set\n  \
        journal      the journal folder is writable and owner-only (0700)\n  \
        opter        Opter answers a page of one customer (or the export files read)\n  \
        token        the register accepts the credentials (a token, or e-conomic's two)\n  \
        scopes       eAccounting: the login may read customers (ea:api, ea:sales)\n  \
        tenant       Visma.net: the tenant's company answers a customer read\n  \
        agreement    e-conomic: the agreement lets the app read customers\n  \
        constants    the mapping's constants exist in the company's lists\n  \
        clock        this machine's clock agrees with the register's Date header\n\n\
        Nothing is written to the register or to Opter and no journal is created; \
        eAccounting's rotated refresh token is stored, as every sync does. A check that \
        depends on a failed one is shown as skipped. Exit 0 when nothing failed (a clock a \
        few minutes off only warns), 2 otherwise.\n\n\
        Examples:\n  opter-visma-sync --config sync.toml check\n  \
        opter-visma-sync --config sync.toml check --json | jq '.[] | select(.ok | not)'"
    )]
    Check(CheckArgs),

    /// Read every customer from Opter and create or update it in the Visma register.
    #[command(
        long_about = "Read every customer and its references from Opter, keep only the \
        permitted fields, and create or update the customers in the Visma register. \
        Customers whose content did not change since the last successful write are not \
        sent again. Every write is recorded in the journal.\n\n\
        Examples:\n  opter-visma-sync --config sync.toml sync\n  \
        opter-visma-sync --config sync.toml sync --dry-run\n  \
        opter-visma-sync --config sync.toml sync --json | jq .rejections"
    )]
    Sync(SyncArgs),

    /// Read the journal: runs and events.
    #[command(subcommand)]
    Journal(JournalCommand),

    /// Log in to the Visma register (OAuth) and check the stored authorization.
    #[command(subcommand)]
    Auth(AuthCommand),

    /// Support: send one customer (or every failed one) again, even if unchanged.
    #[command(
        long_about = "Re-read the customer from Opter and send its current permitted \
        fields to the register even if the journal thinks nothing changed (rectification \
        after a manual edit in Visma, or after a fix in Opter). --failed does this for every \
        customer whose last outcome was rejected or failed.\n\n\
        Examples:\n  opter-visma-sync --config sync.toml replay --customer K10042 --reason \
        \"ticket 123: name fixed in Opter\"\n  \
        opter-visma-sync --config sync.toml replay --failed --reason \"after outage\""
    )]
    Replay(ReplayArgs),
    /// Support: erase one customer's personal data in the register and the journal (GDPR).
    #[command(
        long_about = "Erase the customer's personal data everywhere this connector put \
        it: record a suppression first (no later sync re-creates it), delete the customer in \
        the register (or, where it has transactions and Visma refuses, overwrite its name, \
        contact and email and make it inactive), remove the values from all its journal \
        events, rewrite the journal files, verify the chain, and print an erasure receipt. \
        Asks for confirmation on a terminal; elsewhere it needs --yes. Do not put personal \
        data in --reason: it is kept.\n\n\
        Example:\n  opter-visma-sync --config sync.toml purge --customer K10042 \
        --reason \"GDPR erasure, ticket 456\" --yes --json"
    )]
    Purge(PurgeArgs),
    /// Support: lift a purge's suppression; the customer syncs again next run.
    #[command(
        long_about = "Lift the suppression a purge left, so the customer is sent again \
        by the next sync.\n\n\
        Example:\n  opter-visma-sync --config sync.toml unsuppress --customer K10042 \
        --reason \"customer returned\""
    )]
    Unsuppress(SupportArgs),
    /// Support: stop sending updates for one customer (GDPR restriction); data is kept.
    #[command(
        long_about = "Stop sending anything for the customer (GDPR restriction of \
        processing). Its data stays; `sync` counts it as restricted.\n\n\
        Example:\n  opter-visma-sync --config sync.toml restrict --customer K10042 \
        --reason \"disputed data, ticket 789\""
    )]
    Restrict(SupportArgs),
    /// Support: resume sending updates for a restricted customer.
    #[command(
        long_about = "Lift a restriction; the next sync sends the customer if it \
        changed.\n\n\
        Example:\n  opter-visma-sync --config sync.toml unrestrict --customer K10042 \
        --reason \"resolved\""
    )]
    Unrestrict(SupportArgs),
    /// Support: everything held about one customer, as JSON (GDPR access).
    #[command(
        long_about = "Print everything held about the customer as one JSON document: \
        its journal events with the values sent, its state, suppression and restriction, \
        and its current record in the register, fetched live.\n\n\
        Example:\n  opter-visma-sync --config sync.toml export --customer K10042 > K10042.json"
    )]
    Export(ExportCustomerArgs),
    /// Decide a conflict: the register holds another customer under this one's number.
    #[command(
        long_about = "Decide what happens to a customer in conflict: the register \
        already held a customer under its number that is not known to be the same one (its \
        name and contact email differ), so `sync` wrote nothing for it and lists it as a \
        conflict on every run until you decide.\n\n\
        --accept: it is the same customer; the next sync overwrites the register customer's \
        synced fields (name, contact, email) with Opter's, and keeps them in step from then on. \
        The accountant's other fields (address, terms, notes) are kept.\n\
        --skip: never send this customer; the register customer is left alone. \
        `link --accept` later undoes a skip.\n\n\
        Each decision is recorded in the journal with who made it and why.\n\n\
        Examples:\n  opter-visma-sync --config sync.toml link --customer K10001 --accept \
        --reason \"same company, renamed\"\n  opter-visma-sync --config sync.toml link \
        --customer K10001 --skip --reason \"the accountant's own customer\""
    )]
    Link(LinkArgs),
    /// Compare the register, the journal and Opter, and report drift; writes nothing.
    #[command(
        long_about = "Read all of Opter, the register's customer list and the \
        journal, and report where they differ: customers deleted in the register, our \
        fields edited in the register, register customers no Opter customer maps to (left \
        alone, never deleted), journal entries whose register id is gone, and Opter \
        customers not in the register yet. Nothing is written: not to the register, not to \
        the journal.\n\n\
        Exit codes: 0 nothing differs, 3 drift found, 1 or 2 as for sync.\n\n\
        Example:\n  opter-visma-sync --config sync.toml reconcile --json | jq \
        .edited_in_register"
    )]
    Reconcile(ReconcileArgs),

    /// Run many tenants on their schedules, with health, metrics and run-now over HTTP.
    #[command(
        long_about = "Run every tenant config in a folder on its [schedule] (every 15 \
        minutes by default), in one process: at most [service] workers runs at once, one \
        per tenant at a time. --config names the service file (not a tenant's):\n\n  \
        [service]\n  listen = \"127.0.0.1:8787\"\n  tenants = \"tenants\"   # one TOML \
        file per tenant; the id is the file name without .toml\n\n\
        Endpoints: GET /healthz, /readyz, /metrics (Prometheus), /tenants; POST \
        /tenants/ID/run (run now), /tenants/ID/resume (after a pause). Tenant files added, \
        changed or removed are picked up without a restart (or at once on SIGHUP). \
        SIGTERM lets runs under way finish for [service] shutdown_grace_secs, then \
        exits 0. With [service] tls_cert and tls_key (PEM), the listener is HTTPS, and \
        SIGHUP reads the certificate again. A tenant's journal is open only during its \
        runs, so every other command works on a tenant while serve runs.\n\n\
        With --shard INDEX/COUNT, only the tenants of that shard run here (see \
        shard-of), so COUNT processes (a StatefulSet's pods, each with its own volume for \
        journals) share one folder of tenant files.\n\n\
        Example:\n  opter-visma-sync serve --config /etc/ovs/service.toml\n  \
        opter-visma-sync serve --config /config/service.toml --shard hostname/3"
    )]
    Serve(ServeArgs),

    /// Manage the web console's accounts: add, list, remove, passwd.
    #[command(
        subcommand,
        long_about = "Manage the local accounts of the web console that `serve` shows when \
        its service file has a [console] table. --config names that service file; the \
        accounts are kept in the file its [console] users key names (users.toml beside it \
        by default), owner-only, each with an argon2id hash of its password, never the \
        password.\n\n\
        Roles: viewer (tenants, runs, dashboards, masked customer timelines), support (also \
        reveal values with a reason, purge, replay, restrict, unrestrict, unsuppress, export \
        and conflict decisions), admin (also run now and Connect to Visma). --tenant limits a user \
        to some tenants (repeat it); without it the user sees every tenant.\n\n\
        Passwords are read from stdin, one line of at least 12 characters; on a terminal \
        without echo, asked twice. --no-password adds a user who signs on through \
        [console.oidc] only. A change takes effect on the user's next request, and \
        removing a user ends their sessions.\n\n\
        Examples:\n  opter-visma-sync --config service.toml users add eva --role admin\n  \
        printf '%s\\n' \"$PW\" | opter-visma-sync --config service.toml users add ola \
        --role support --tenant akerinord\n  \
        opter-visma-sync --config service.toml users list --json"
    )]
    Users(UsersCommand),

    /// The tenant's record of processing (GDPR Art. 30), from its config and mapping.
    #[command(subcommand)]
    Privacy(PrivacyCommand),

    /// Print the shard a tenant belongs to, of COUNT, for `serve --shard`.
    #[command(
        long_about = "Print the shard (0 to COUNT-1) that `serve --shard INDEX/COUNT` runs \
        TENANT in: the first 8 bytes of the SHA-256 of the tenant id (its file name \
        without .toml), read as a big-endian number, modulo COUNT. It depends on the \
        id and COUNT only, so it can be computed anywhere; when COUNT changes, a tenant \
        whose shard changes needs its journal moved to the new shard's volume.\n\n\
        Example:\n  opter-visma-sync shard-of akerinord --count 3\n  \
        for f in tenants/*.toml; do t=$(basename \"$f\" .toml); \
        [ \"$(opter-visma-sync shard-of $t --count 3)\" = \"$(opter-visma-sync shard-of $t \
        --count 4)\" ] || echo \"$t moves\"; done"
    )]
    ShardOf(ShardOfArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Run only this shard's tenants: INDEX/COUNT, INDEX from 0; `hostname/COUNT`
    /// takes INDEX from the number the host name ends in (pod name-2 is shard 2).
    #[arg(long, value_name = "INDEX/COUNT")]
    pub shard: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PrivacyCommand {
    /// Print the record of processing: categories, recipients, retention, transfers.
    #[command(
        long_about = "Print the tenant's record of processing activities (GDPR \
        Art. 30) as far as this connector can state it: the purpose, the data subjects, the \
        categories of data (from the mapping file: which permitted Opter fields go to which \
        register fields, and which of them are personal data), the source, the recipients \
        (the register and the hosts it is reached at), transfers (where the register's \
        vendor says it processes data, with the address of its statement), retention (from \
        [journal] keep_values_days), where the data is stored and the security measures. \
        What only the controller knows (its name and contact, the legal basis) is listed \
        at the end, to complete. Reads the config and the mapping only: no customer, no \
        journal, no network.\n\n\
        Examples:\n  opter-visma-sync --config sync.toml privacy record\n  \
        opter-visma-sync --config sync.toml privacy record --json > record.json"
    )]
    Record(PrivacyRecordArgs),
}

#[derive(Debug, Args)]
pub struct PrivacyRecordArgs {
    /// One JSON object instead of the text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add a user with a role; the password is read from stdin.
    Add(UserAddArgs),
    /// List the users: name, role and tenants (never a hash).
    List {
        /// Print a JSON array of {"name", "role", "tenants", "password", "tokens"}.
        #[arg(long)]
        json: bool,
    },
    /// Remove a user; their sessions end at their next request.
    Remove {
        /// The user's name.
        name: String,
    },
    /// Set a user's password, read from stdin.
    Passwd {
        /// The user's name.
        name: String,
    },
    /// API tokens for /api/v1: issue, list, revoke.
    #[command(
        subcommand,
        long_about = "API tokens let scripts use the console's JSON API under /api/v1 \
        (`Authorization: Bearer TOKEN`) as their user. A token carries its own role and \
        tenants, which narrow the user's and never widen them; the user's current role and \
        tenants still apply, and removing the user ends its tokens. The token is printed \
        once, when issued; the users file keeps only its SHA-256.\n\n\
        Examples:\n  opter-visma-sync --config service.toml users token add ola --role viewer \
        --label \"nightly report\" --expires-days 90\n  \
        opter-visma-sync --config service.toml users token list ola\n  \
        opter-visma-sync --config service.toml users token revoke ola 3f9c0a1b2c4d"
    )]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a token to a user and print it (only this once).
    Add(TokenAddArgs),
    /// List a user's tokens: id, label, role, tenants, created, expires (never a secret).
    List {
        /// The user's name.
        name: String,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Revoke one of a user's tokens by its id; it is refused from the next request.
    Revoke {
        /// The user's name.
        name: String,
        /// The token's id (`users token list` shows it).
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct TokenAddArgs {
    /// The user the token acts as.
    pub name: String,
    /// The most the token may do: viewer, support or admin (default: the user's role; not
    /// more than it).
    #[arg(long, value_parser = ["viewer", "support", "admin"])]
    pub role: Option<String>,
    /// A tenant the token may reach (repeat for more); default: every tenant its user may.
    #[arg(long = "tenant", value_name = "ID")]
    pub tenants: Vec<String>,
    /// Days until the token expires (1 to 3650).
    #[arg(long, default_value_t = 90)]
    pub expires_days: u32,
    /// What the token is for, shown by `users token list` and in the audit log's entries.
    #[arg(long, default_value = "")]
    pub label: String,
    /// Print {"id", "token", "expires", ...} as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct UserAddArgs {
    /// The user's name: 1 to 64 letters, digits or - _ . @ (what the audit log and the
    /// journal record as the actor, `console:NAME`).
    pub name: String,
    /// viewer, support or admin.
    #[arg(long, value_parser = ["viewer", "support", "admin"])]
    pub role: String,
    /// A tenant id the user may see (repeat for more); every tenant when left out.
    #[arg(long = "tenant", value_name = "ID")]
    pub tenants: Vec<String>,
    /// No password: the user signs on through [console.oidc] only (NAME is then the
    /// identity provider's claim that [console.oidc] user_claim names, such as an email).
    #[arg(long)]
    pub no_password: bool,
}

#[derive(Debug, Args)]
pub struct ShardOfArgs {
    /// The tenant id: its config file's name without .toml.
    pub tenant: String,
    /// How many shards there are.
    #[arg(long)]
    pub count: u64,
    /// Print {"tenant", "count", "shard"} as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Print the drift as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("decision").required(true).args(["accept", "skip"])))]
pub struct LinkArgs {
    /// The Opter customer code in conflict.
    #[arg(long)]
    pub customer: String,
    /// The register customer under the number is this customer: keep it in step.
    #[arg(long)]
    pub accept: bool,
    /// Never send this customer.
    #[arg(long)]
    pub skip: bool,
    /// Why (kept in the journal; no personal data).
    #[arg(long)]
    pub reason: Option<String>,
    /// Who decides (recorded as support:NAME; default: the OS user).
    #[arg(long)]
    pub actor: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print one JSON array of {check, ok, status, detail} instead of the lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The Visma register the tenant syncs to.
    #[arg(long, value_parser = register_parser())]
    pub register: &'static Register,
    /// Where customers come from: Opter's REST API, or its Customers/References exports.
    #[arg(long, value_enum)]
    pub source: InitSource,
    /// The config file to write (default: --config, i.e. opter-visma-sync.toml).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Overwrite an existing config file.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InitSource {
    /// Opter's REST API (`[source] kind = "opter-api"`).
    Api,
    /// Opter's Excel or tab-separated exports (`[source] kind = "opter-export"`).
    Export,
}

#[derive(Debug, Args)]
pub struct SupportArgs {
    /// The Opter customer code.
    #[arg(long)]
    pub customer: String,
    /// Why (kept in the journal; no personal data).
    #[arg(long)]
    pub reason: String,
    /// Who acts (recorded as support:NAME; default: the OS user).
    #[arg(long)]
    pub actor: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The Opter customer code.
    #[arg(long, required_unless_present = "failed", conflicts_with = "failed")]
    pub customer: Option<String>,
    /// Every customer whose last outcome was rejected or failed.
    #[arg(long)]
    pub failed: bool,
    #[arg(long)]
    pub reason: String,
    #[arg(long)]
    pub actor: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    pub support: SupportArgs,
    /// Do not ask for confirmation (needed when not on a terminal).
    #[arg(long)]
    pub yes: bool,
    /// Print the receipt as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExportCustomerArgs {
    #[arg(long)]
    pub customer: String,
    #[arg(long, default_value = "access request")]
    pub reason: String,
    #[arg(long)]
    pub actor: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Log in to Visma in a browser and store the authorization for `sync`.
    #[command(
        long_about = "Log in to Visma in a browser and store the authorization.\n\n\
        Prints the login URL (and opens it on a desktop), waits for Visma to redirect back to \
        [sink] redirect_uri on this machine, exchanges the code (with PKCE), and stores the \
        refresh token in the journal folder's credentials/, readable by you only. Run it once \
        when setting up, and again whenever sync exits with code 4.\n\n\
        The authorization belongs to one company: Visma asks which one to connect (and for \
        your password again), so a user with several companies picks the right one. \
        --default-company skips the question and connects the company Visma Online opens \
        by default.\n\n\
        Example:\n  opter-visma-sync --config sync.toml auth login"
    )]
    Login(LoginArgs),
    /// Whether an authorization is stored and when it was last refreshed (never the token).
    #[command(
        long_about = "Whether an authorization is stored, where it came from, and when \
        it was last refreshed. Never prints the token.\n\n\
        Example:\n  opter-visma-sync --config sync.toml auth status --json"
    )]
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Print the URL only; do not try to open a browser.
    #[arg(long)]
    pub no_browser: bool,
    /// Seconds to wait for the browser's redirect.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Connect the company Visma Online opens by default instead of asking which one
    /// (by default the login asks, for users with several companies).
    #[arg(long)]
    pub default_company: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Folder for the demo's config and journal (default: a new temporary folder).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The Visma register to sync into.
    #[arg(long, default_value = "eaccounting", value_parser = register_parser())]
    pub sink: &'static Register,
    /// Where customers come from: Opter's API, or its Excel export files (written from
    /// the same customers into the demo folder).
    #[arg(long, value_enum, default_value = "opter-api")]
    pub source: DemoSource,
    /// Show `serve` instead: three tenants (eAccounting, Visma.net, e-conomic, the last
    /// with faults) syncing every 10 seconds, until Ctrl-C; it prints where to look.
    #[arg(long, conflicts_with_all = ["sink", "source"])]
    pub serve: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoSource {
    #[value(name = "opter-api")]
    OpterApi,
    #[value(name = "opter-export")]
    OpterExport,
}

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Folder with customers.json, an array of Opter customers (default: the bundled
    /// fixtures).
    #[arg(long, conflicts_with = "customers")]
    pub fixtures: Option<PathBuf>,
    /// Generate N realistic Nordic customers instead of loading fixtures.
    #[arg(long)]
    pub customers: Option<usize>,
    /// Seed for --customers.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Requests per minute the simulated eAccounting accepts per client and endpoint
    /// (Visma's is 600; 0 turns the limit off).
    #[arg(long, default_value_t = 600)]
    pub rate_limit: u32,
    /// Faults: share of Visma API calls answered with an error instead (0 to 1).
    #[arg(
        long,
        default_value_t = 0.0,
        help_heading = "Fault injection (Visma API only)"
    )]
    pub fail_rate: f64,
    /// Faults: the statuses those errors use.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "429,500,503",
        help_heading = "Fault injection (Visma API only)"
    )]
    pub fail_statuses: Vec<u16>,
    /// Faults: share of writes the register commits and then answers by closing the
    /// connection, so the client cannot know they happened (0 to 1).
    #[arg(
        long,
        default_value_t = 0.0,
        help_heading = "Fault injection (Visma API only)"
    )]
    pub drop_after_commit_rate: f64,
    /// Faults: added latency per Visma API call, in milliseconds.
    #[arg(
        long,
        default_value_t = 0,
        help_heading = "Fault injection (Visma API only)"
    )]
    pub latency_ms: u64,
    /// Faults: seed of the random choices, so a run can be repeated.
    #[arg(
        long,
        default_value_t = 0,
        help_heading = "Fault injection (Visma API only)"
    )]
    pub fault_seed: u64,
    /// Write a config that points at this sandbox (and its mapping file beside it), and
    /// print one `export NAME=value` line per secret it names.
    #[arg(long, value_name = "FILE")]
    pub write_config: Option<PathBuf>,
    /// The register --write-config points at (the sandbox serves all three).
    #[arg(long, default_value = "eaccounting", value_parser = register_parser())]
    pub sink: &'static Register,
    /// Serve N independent tenants on the one port, each under /carrier-N with its own
    /// Opter and registers, customers, credentials and faults, taking eAccounting,
    /// Visma.net and e-conomic in turn; --write-config then names a folder that gets
    /// `service.toml` and one tenant config each, for `serve`.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub tenants: u16,
    /// With --tenants: how often each tenant runs under `serve`.
    #[arg(long, default_value = "30s", requires = "write_config")]
    pub every: String,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Plan only: show what would be created or updated; send nothing, record nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Read every customer from Opter, not only those changed since the last run.
    #[arg(long)]
    pub full: bool,
    /// Print one JSON object (counts, run_id, rejections) instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum JournalCommand {
    /// One line per run: id, start, duration, counts, whether it finished.
    #[command(
        long_about = "One line per run, oldest first: id, start, duration, created / \
        updated / unchanged / rejected / failed, and whether it finished.\n\n\
        Example:\n  opter-visma-sync --config sync.toml journal runs --json"
    )]
    Runs(JournalArgs),
    /// Events (one per register write), newest first.
    #[command(
        long_about = "Events, one per write to the register, newest first: sequence, \
        time, run, customer code, operation, outcome, HTTP status, fields sent. Values are \
        not printed.\n\n\
        Examples:\n  opter-visma-sync --config sync.toml journal log --customer K1042\n  \
        opter-visma-sync --config sync.toml journal log --run 20261123T101500.000Z-3fa2 --json"
    )]
    Log(LogArgs),
    /// Check the hash chain and the indexes: has anything been edited or removed?
    #[command(
        long_about = "Read the journal's files whole, walk its hash chain and its indexes, \
        and compare its suppressions with the suppression file. Exit 0 with the number of \
        events checked; 7 when the files cannot be read (damaged: restore from a backup), \
        naming the last event that read fine; 5 naming the first broken sequence number \
        and what is wrong (an event changed, missing or reordered; a state entry edited); \
        8 for a support action cut off half-way (\"an unfinished purge of CODE: run purge \
        again\"). Redacted values do not break the chain.\n\n\
        Example:\n  opter-visma-sync --config sync.toml journal verify --json"
    )]
    Verify(JournalArgs),
    /// Write a consistent copy of the journal to a file, to restore from.
    #[command(
        long_about = "Write a copy of every entry of the journal's database to FILE \
        (readable by you only), taken under the journal's lock so that no run writes \
        meanwhile, with a checksum over the whole. A journal that cannot be read whole is \
        refused (exit 7). Keep it with a copy of the journal folder's credentials/ and \
        suppressions file.\n\n\
        Example:\n  opter-visma-sync --config sync.toml journal backup /backup/journal-$(date +%F).ovs"
    )]
    Backup(FileArgs),
    /// Start a journal folder's lost or damaged database from a backup file.
    #[command(
        long_about = "Start the journal folder's database from FILE, a file `journal \
        backup` wrote. The folder must hold no database (move a damaged sled/ away first); \
        its credentials/ and suppressions file are kept. The whole file is checked before \
        anything is written. Customers purged after the backup was taken stay suppressed and \
        are listed: run `purge` for each again to erase them from the restored journal. \
        Ends with `journal verify`'s result and exit code.\n\n\
        Example:\n  opter-visma-sync --config sync.toml journal restore /backup/journal-2026-12-01.ovs"
    )]
    Restore(FileArgs),
    /// One event in full, values masked unless --show-values.
    #[command(
        long_about = "One event in full: every column, the values sent (masked, as \
        A*** S*** and a***@acme.se, unless --show-values), the values digest and the hash \
        chain.\n\n\
        Example:\n  opter-visma-sync --config sync.toml journal show 42 --show-values"
    )]
    Show(ShowArgs),
    /// Events as JSON Lines or CSV, for auditors and spreadsheets.
    #[command(
        long_about = "Every event (or one customer's, or those since a date) as JSON \
        Lines or CSV on stdout, oldest first, one record per event. CSV columns: seq, time, \
        run_id, actor, customer, sink, operation, outcome, http_status, error_code, message, \
        remote_id, fields, values, values_redacted, values_digest, prev_hash, hash, schema. \
        Values are masked unless --show-values.\n\n\
        Example:\n  opter-visma-sync --config sync.toml journal export --format csv \
        --customer K10042 > K10042.csv"
    )]
    Export(ExportArgs),
    /// Rewrite the journal so that removed values leave no copy in its files.
    #[command(
        long_about = "Rewrite the journal into a fresh database and swap it in, so that \
        values removed by retention leave no stale copy in the old log segments. `sync` does \
        this by itself after a run that removed values.\n\n\
        Example:\n  opter-visma-sync --config sync.toml journal compact"
    )]
    Compact(JournalArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Csv,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub common: JournalArgs,
    /// The event's sequence number (first column of `journal log`).
    pub seq: u64,
    /// Print names and emails as they were sent.
    #[arg(long)]
    pub show_values: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub common: JournalArgs,
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// Only this customer's events.
    #[arg(long)]
    pub customer: Option<String>,
    /// Only events at or after this time (RFC 3339, or a date like 2026-11-01).
    #[arg(long, value_parser = parse_since)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Export names and emails as they were sent.
    #[arg(long)]
    pub show_values: bool,
}

/// A date (midnight UTC) or an RFC 3339 time.
pub fn parse_since(value: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
        .map_err(|_| format!("{value:?} is neither a date (2026-11-01) nor an RFC 3339 time"))
}

fn parse_outcome(value: &str) -> Result<crate::journal::Outcome, String> {
    serde_json::from_value(serde_json::Value::from(value))
        .map_err(|_| format!("{value:?}: use succeeded, rejected, failed or conflict"))
}

#[derive(Debug, Args)]
pub struct JournalArgs {
    /// Journal folder (default: [journal] path from the config).
    #[arg(long)]
    pub journal: Option<PathBuf>,
    /// JSON output, one array.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct FileArgs {
    #[command(flatten)]
    pub common: JournalArgs,
    /// The backup file.
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    #[command(flatten)]
    pub common: JournalArgs,
    /// Only this customer's events (its timeline).
    #[arg(long)]
    pub customer: Option<String>,
    /// Only this run's events.
    #[arg(long)]
    pub run: Option<String>,
    /// At most this many events.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Only events at or after this time (RFC 3339, or a date like 2026-11-01).
    #[arg(long, value_parser = parse_since)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only events with this outcome: succeeded, rejected or failed.
    #[arg(long, value_parser = parse_outcome)]
    pub outcome: Option<crate::journal::Outcome>,
    /// In --json, print names and emails as they were sent (masked otherwise).
    #[arg(long)]
    pub show_values: bool,
}

/// `--sink NAME`: one of the registers, each listed with its product name.
fn register_parser() -> impl clap::builder::TypedValueParser<Value = &'static Register> {
    use clap::builder::TypedValueParser;
    let names = REGISTERS
        .iter()
        .map(|r| clap::builder::PossibleValue::new(r.name).help(r.product()));
    clap::builder::PossibleValuesParser::new(names)
        .map(|name| Register::named(&name).expect("clap checked the name"))
}
