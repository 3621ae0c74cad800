//! The database: the connection pool, the migrations, and the embedded
//! cluster (`embedded`) used when no `DATABASE_URL` is set.

pub mod embedded;

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

/// Connections per server: enough for 64 busy runs sharing commits, well
/// under PostgreSQL's default `max_connections` of 100.
pub const POOL_SIZE: usize = 32;

/// The migrations, in order, compiled into the binary so `migrate` needs no
/// files beside it.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "journal",
        include_str!("../../migrations/0001_journal.sql"),
    ),
    (
        2,
        "trace_id",
        include_str!("../../migrations/0002_trace_id.sql"),
    ),
    (
        3,
        "access",
        include_str!("../../migrations/0003_access.sql"),
    ),
    (
        4,
        "cluster",
        include_str!("../../migrations/0004_cluster.sql"),
    ),
    (
        5,
        "operator control",
        include_str!("../../migrations/0005_operator_control.sql"),
    ),
    (
        6,
        "journal without foreign key",
        include_str!("../../migrations/0006_journal_without_foreign_key.sql"),
    ),
];

/// Any 64-bit number unique to this application: the advisory lock that lets
/// two instances start at once without both migrating.
const MIGRATION_LOCK: i64 = 0x6167_656e_7473_7276;

/// A pool over `config`.
pub fn pool(config: tokio_postgres::Config, size: usize) -> anyhow::Result<Pool> {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        // The connection used last is handed out first: a lone run's commits
        // then go through one warm connection, driven on the thread that
        // opened it, rather than each through the next of the pool.
        .queue_mode(deadpool_postgres::QueueMode::Lifo)
        .build()
        .context("building the connection pool")
}

/// Applies the migrations this database lacks, under an advisory lock.
pub async fn migrate(pool: &Pool) -> anyhow::Result<()> {
    let mut client = pool.get().await.context("connecting to PostgreSQL")?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .context("taking the migration lock")?;
    let outcome = apply_migrations(&mut client).await;
    // The lock also ends with the session; unlock anyway so the pooled
    // connection is clean.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    outcome
}

async fn apply_migrations(client: &mut deadpool_postgres::Object) -> anyhow::Result<()> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version bigint PRIMARY KEY,
                name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .context("creating schema_migrations")?;
    for (version, name, sql) in MIGRATIONS {
        let applied = client
            .query_opt(
                "SELECT 1 FROM schema_migrations WHERE version = $1",
                &[version],
            )
            .await?
            .is_some();
        if applied {
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(sql)
            .await
            .with_context(|| format!("applying migration {version} ({name})"))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version, name, "applied migration");
    }
    Ok(())
}
