//! The one place where things are wired: database, migrations, model,
//! workspace, run actors and their recovery, and the HTTP server.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, web};
use anyhow::Context;
use tracing_actix_web::TracingLogger;

use crate::agents::AgentName;
use crate::api::{self, AppState};
use crate::auth::{self, Authenticator};
use crate::cluster::{self, Cluster};
use crate::config::{AuthMode, Settings};
use crate::db::{self, embedded::EmbeddedPostgres};
use crate::realtime::{DeltaHub, Feed};
use crate::run::RunRegistry;
use crate::run::actor::RunDeps;
use crate::run::observer::Observer;
use crate::telemetry::metrics::Metrics;
use crate::tools::loki::LokiClient;
use crate::tools::sandbox::Sandbox;
use crate::tools::{ToolContext, Workspace};
use crate::{journal, llm};

/// The database name inside the embedded cluster.
pub const EMBEDDED_DATABASE: &str = "agent_server";

/// A database to use, and the embedded cluster behind it, if any.
pub struct Database {
    pub pool: deadpool_postgres::Pool,
    /// How to connect, for the cluster's `LISTEN` connection.
    pub config: tokio_postgres::Config,
    pub embedded: Option<EmbeddedPostgres>,
    /// For the start-up line; never contains a password.
    pub description: String,
}

/// Connects to `DATABASE_URL`, or starts the embedded cluster and uses its
/// database `embedded_database`, and migrates.
pub async fn open_database(
    settings: &Settings,
    embedded_database: &str,
) -> anyhow::Result<Database> {
    let (config, embedded, description) = match &settings.database_url {
        Some(url) => {
            let config: tokio_postgres::Config = url
                .expose()
                .parse()
                .context("DATABASE_URL is not a PostgreSQL URL")?;
            let description = describe_external(&config);
            (config, None, description)
        }
        None => {
            let cluster = EmbeddedPostgres::start(&settings.data_dir.join("pg")).await?;
            cluster.ensure_database(embedded_database).await?;
            let description = cluster.describe();
            (
                cluster.config(embedded_database),
                Some(cluster),
                description,
            )
        }
    };
    let pool = db::pool(config.clone(), db::POOL_SIZE)?;
    db::migrate(&pool).await?;
    Ok(Database {
        pool,
        config,
        embedded,
        description,
    })
}

fn describe_external(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "external PostgreSQL {}@{host}:{port}/{}",
        config.get_user().unwrap_or("?"),
        config.get_dbname().unwrap_or("?")
    )
}

/// The threads for run actors: one per core, as a run's work is mostly
/// waiting on PostgreSQL and the model, and its CPU work is short.
pub fn run_arbiters() -> Vec<actix::ArbiterHandle> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    (0..threads)
        .map(|_| actix::Arbiter::new().handle())
        .collect()
}

/// A built server, listening, with its runs recovered.
pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    registry: RunRegistry,
    pool: deadpool_postgres::Pool,
    embedded: Option<EmbeddedPostgres>,
    /// `{data dir}/server.pid`, removed at a clean stop.
    pid_file: std::path::PathBuf,
    stopping: tokio_util::sync::CancellationToken,
    metrics: Metrics,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        // First, so that a sandbox that cannot work stops the server before anything starts.
        let sandbox =
            Sandbox::start(&settings.sandbox, &settings.workspace, &settings.data_dir).await?;
        // The port before the database: a port in use stops the start
        // before a cluster starts or a run is claimed.
        let listener = TcpListener::bind(settings.addr)
            .with_context(|| format!("binding {} (AGENT_SERVER_ADDR)", settings.addr))?;
        let mut database = open_database(&settings, EMBEDDED_DATABASE).await?;
        let embedded = database.embedded.take();
        match Application::assemble(settings, sandbox, listener, database).await {
            Ok(mut app) => {
                app.embedded = embedded;
                Ok(app)
            }
            Err(error) => {
                // A start that fails stops the cluster it started (one it
                // found running, a killed server's, is left as it was).
                if let Some(cluster) = embedded.filter(|c| !c.was_running())
                    && let Err(stop) = cluster.stop().await
                {
                    tracing::warn!(error = %stop, "could not stop the embedded cluster");
                }
                Err(error)
            }
        }
    }

    /// Everything after the database: the run engine, the instance in the
    /// cluster, access, and the HTTP server on `listener`.
    async fn assemble(
        settings: Settings,
        sandbox: Sandbox,
        listener: TcpListener,
        database: Database,
    ) -> anyhow::Result<Application> {
        let workspace = Workspace::open_with_owner(&settings.workspace, sandbox.owner())
            .with_context(|| format!("opening the workspace {}", settings.workspace.display()))?;
        let loki = settings
            .loki_url
            .as_deref()
            .map(LokiClient::new)
            .transpose()
            .context("setting up the Loki client for loki_query")?
            .map(Arc::new);
        let model = llm::from_settings(&settings.llm)?;
        let metrics = Metrics::new();
        let models: HashMap<AgentName, String> = AgentName::ALL
            .into_iter()
            .map(|agent| (agent, model.model_for(agent)))
            .collect();
        let instance_id = cluster::instance_id(settings.instance_id.as_deref(), &settings.data_dir)
            .context("choosing this instance's id")?;
        let cluster = Cluster::new(
            instance_id.clone(),
            Duration::from_secs(settings.lease_secs),
            database.pool.clone(),
        );
        actix_rt::spawn(cluster::listener::run(
            database.config.clone(),
            cluster::CHANNELS,
            cluster.notice_sender(),
        ));
        cluster
            .register()
            .await
            .context("registering this instance")?;
        // Entries other instances commit reach this one's watchers.
        let feed = Feed::new();
        actix_rt::spawn(crate::realtime::follow_cluster(
            cluster.notices(),
            instance_id.clone(),
            database.pool.clone(),
            feed.clone(),
        ));
        let deps = Arc::new(RunDeps {
            cluster: cluster.clone(),
            journal: crate::journal::Writer::start(database.pool.clone()),
            pool: database.pool.clone(),
            model: model.clone(),
            tools: ToolContext {
                workspace: Arc::new(workspace),
                loki,
                sandbox: Arc::new(sandbox),
                mcp: Arc::new(crate::mcp::Mcp::new(&settings.mcp)),
            },
            max_iterations: settings.max_iterations,
            deltas: DeltaHub::new(),
            observer: Observer {
                feed: feed.clone(),
                metrics: metrics.clone(),
                announcer: cluster::Announcer::start(database.pool.clone(), instance_id.clone()),
            },
            models: Arc::new(models),
            prices: Arc::new(settings.prices.clone()),
        });
        let registry = RunRegistry::new(deps, run_arbiters());
        let recovered = registry.recover().await;
        let stopping = tokio_util::sync::CancellationToken::new();
        actix_rt::spawn(registry.clone().maintain(stopping.clone()));

        let local = listener.local_addr()?;
        tracing::info!(
            address = %local,
            database = %database.description,
            llm_provider = model.provider(),
            llm_model = %settings.llm.model,
            workspace = %settings.workspace.display(),
            instance = %instance_id,
            lease_secs = settings.lease_secs,
            recovered_runs = recovered,
            "agent-server starting"
        );

        let bootstrap = match settings.access.mode {
            AuthMode::Tokens => Some(
                auth::bootstrap::ensure_admin(
                    &database.pool,
                    &settings.data_dir,
                    settings.access.admin_token.as_ref(),
                )
                .await?,
            ),
            AuthMode::None => {
                tracing::warn!(
                    "AGENT_SERVER_AUTH=none: access checks are off; every request may do everything"
                );
                None
            }
        };
        if let Some(auth::bootstrap::Bootstrap::Created(file)) = &bootstrap {
            tracing::info!(file = %file.display(), "created the admin token");
        }

        let authenticator = Authenticator::new(database.pool.clone());
        actix_rt::spawn(authenticator.clone().flush_until(stopping.clone()));
        let state = web::Data::new(AppState {
            stopping: stopping.clone(),
            pool: database.pool.clone(),
            registry: registry.clone(),
            authenticator,
            access: api::access::AccessPolicy::new(&settings, local.port()),
            settings: Arc::new(settings),
        });
        let app_state = state.clone();
        let server = api::wire::server(listener, move || {
            App::new()
                .wrap(actix_web::middleware::from_fn(api::access::guard))
                .wrap(TracingLogger::default())
                .app_data(app_state.clone())
                .configure(api::configure)
                .default_service(web::to(api::not_found))
        })?;
        // For a human's `kill` (the README's walk-through): this process
        // exactly, whatever else runs on the machine.
        let pid_file = state.settings.data_dir.join("server.pid");
        if let Err(error) = std::fs::write(&pid_file, format!("{}\n", std::process::id())) {
            tracing::warn!(%error, file = %pid_file.display(), "could not write the pid file");
        }
        println!("agent-server listening on http://{local}");
        if let Some(bootstrap) = &bootstrap {
            println!("{}", sign_in_hint(bootstrap, local));
        }
        Ok(Application {
            port: local.port(),
            server,
            registry,
            pool: database.pool,
            embedded: None,
            pid_file,
            stopping,
            metrics,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGTERM or SIGINT, then stops cleanly: no new requests,
    /// runs told to stop after their current commit, the embedded cluster
    /// stopped.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let server = tokio::spawn(self.server);
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received; shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down"),
        }
        self.stopping.cancel();
        handle.stop(true).await;
        let _ = server.await;
        self.registry.shutdown().await;
        // The last figures leave with the server (OTLP pushes periodically).
        self.metrics.shutdown();
        // Close our connections first, so stopping the cluster does not log
        // them as broken.
        self.pool.close();
        if let Some(cluster) = &self.embedded {
            cluster.stop().await?;
        }
        let _ = std::fs::remove_file(&self.pid_file);
        tracing::info!("agent-server stopped");
        Ok(())
    }

    /// Runs the server in the background of the current actix system (tests).
    pub fn spawn(self) -> RunningApp {
        let handle = self.server.handle();
        actix_rt::spawn(self.server);
        RunningApp {
            port: self.port,
            handle,
            registry: self.registry,
        }
    }
}

/// How a human signs in, printed after the listening line. It names the
/// token's file, never the token.
fn sign_in_hint(bootstrap: &auth::bootstrap::Bootstrap, local: std::net::SocketAddr) -> String {
    use auth::bootstrap::Bootstrap;
    let (file, what) = match bootstrap {
        Bootstrap::FromEnvironment => {
            return "sign in with the token in AGENT_SERVER_ADMIN_TOKEN: open the dashboard at /#token=<token>, or send `Authorization: Bearer <token>`".into();
        }
        Bootstrap::Existing(None) => {
            return "sign in with a token (`agent-server token create --name NAME --role ROLE` makes one): open the dashboard at /#token=<token>, or send `Authorization: Bearer <token>`".into();
        }
        Bootstrap::Created(file) => (file, "a new admin token is in"),
        Bootstrap::Existing(Some(file)) => (file, "the admin token is in"),
    };
    let file = file.display();
    format!(
        "{what} {file} (readable by this user only)\n  \
         dashboard: open the link `echo \"http://{local}/#token=$(cat {file})\"` prints\n  \
         API:       curl -H \"Authorization: Bearer $(cat {file})\" http://{local}/api/me"
    )
}

/// A server running in the background.
pub struct RunningApp {
    pub port: u16,
    pub handle: actix_web::dev::ServerHandle,
    pub registry: RunRegistry,
}

/// `agent-server migrate`: applies the migrations and exits.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let database = open_database(settings, EMBEDDED_DATABASE).await?;
    tracing::info!(database = %database.description, "migrations applied");
    journal::ping(&database.pool).await?;
    if let Some(cluster) = &database.embedded {
        cluster.stop().await?;
    }
    Ok(())
}
