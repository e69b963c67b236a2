//! The application layer: a `Connector` is one tenant's source, mapping, sink and
//! journal, built from its config. Everything a CLI command, a service or a web handler
//! does to a tenant goes through it: runs, journal reads, support actions.
//!
//! Architecture invariant: this module imports no command or output code; commands and
//! support import it.

use std::sync::Arc;

use crate::config::{Config, Env, SourceConfig};
use crate::error::{Error, Result};
use crate::journal::{Journal, Opening};
use crate::mapping::Mapping;
use crate::sink::{Sink, SinkContext};
use crate::source::{OpterApiSource, OpterExportSource, Source};
use crate::sync::{Engine, Observer, Quiet, Report, RunSettings, SyncOptions};

/// Everything a sync needs, built from one config.
pub struct Connector {
    pub config: Config,
    pub source: Arc<Source>,
    pub sink: Arc<dyn Sink>,
    pub mapping: Arc<Mapping>,
    pub journal: Arc<Journal>,
}

impl Connector {
    pub fn open(config: Config, env: &dyn Env) -> Result<Connector> {
        Self::open_as(config, env, Opening::Write)
    }

    /// Like `open`; with `Opening::NewJournal`, a journal folder whose database is gone
    /// starts a new one, carrying its suppression file's customers into it.
    pub fn open_as(config: Config, env: &dyn Env, opening: Opening) -> Result<Connector> {
        let retry = config.retry_policy();
        let source = match &config.source {
            SourceConfig::OpterApi(source) => {
                let key = config.secret(env, "[source] api_key_env", &source.api_key_env)?;
                Source::OpterApi(OpterApiSource::new(source, key, retry)?)
            }
            SourceConfig::OpterExport(source) => {
                Source::OpterExport(OpterExportSource::new(source)?)
            }
        };
        let mapping = Mapping::load(&config.sink.mapping, config.sink.register.rules)?;
        let journal = Journal::open_as(&config.journal.path, opening)?;
        journal.carry_suppressions(config.sink_name())?;
        let credentials = || journal.credentials_dir().map_err(Error::Other);
        let sink = config.sink.product.open(&SinkContext {
            file: &config.file,
            env,
            credentials: &credentials,
            journal: journal.dir(),
            requests_per_minute: config.sink.requests_per_minute,
            retry,
        })?;
        Ok(Connector {
            config,
            source: Arc::new(source),
            sink,
            mapping: Arc::new(mapping),
            journal: Arc::new(journal),
        })
    }

    /// Closes the connector; if values were removed (retention), rewrites the journal
    /// so that no copy of them survives in sled's old log segments.
    pub fn finish(self) -> Result<()> {
        if self.journal.compaction_owed()? {
            let dir = self.journal.dir().to_path_buf();
            drop(self);
            crate::journal::compact(&dir)?;
        }
        Ok(())
    }

    /// A run of this tenant, owning shared handles to what it uses: its future is
    /// `Send + 'static`, so it can be spawned.
    pub fn engine(&self, observer: Arc<dyn Observer>) -> Engine {
        let config = &self.config;
        Engine {
            source: self.source.clone(),
            sink: self.sink.clone(),
            mapping: self.mapping.clone(),
            journal: self.journal.clone(),
            settings: RunSettings {
                concurrency: config.sink.concurrency,
                flush_every: config.journal.flush_every,
                keep_values_days: config.journal.keep_values_days,
            },
            observer,
        }
    }

    /// Runs one sync, reporting nothing while it runs.
    pub async fn sync(&self, options: &SyncOptions) -> Result<(Report, Option<Error>)> {
        self.sync_observed(options, Arc::new(Quiet)).await
    }

    /// Runs one sync, telling `observer` how far it got.
    pub async fn sync_observed(
        &self,
        options: &SyncOptions,
        observer: Arc<dyn Observer>,
    ) -> Result<(Report, Option<Error>)> {
        self.engine(observer).run(options.clone()).await
    }
}
