//! The SQL of the cluster: instances and their heartbeats, claiming and
//! releasing runs, and the runs' inboxes of commands.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::Serialize;
use uuid::Uuid;

use crate::journal::Error;

/// A live instance, as `GET /api/instances` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InstanceInfo {
    pub id: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    /// Runs it drives now.
    pub runs: i64,
}

/// A run claimed: the epoch its writes must name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub run_id: Uuid,
    pub epoch: i64,
}

/// A command waiting in a run's inbox.
#[derive(Debug, Clone)]
pub struct InboxEntry {
    pub id: i64,
    pub run_id: Uuid,
    pub command: serde_json::Value,
}

fn secs(lease: Duration) -> f64 {
    lease.as_secs_f64()
}

/// Registers this instance (again, after a restart) as alive now.
pub async fn register(pool: &Pool, id: &str) -> Result<(), Error> {
    pool.get()
        .await?
        .execute(
            "INSERT INTO instances (id, started_at, heartbeat_at) VALUES ($1, now(), now())
             ON CONFLICT (id) DO UPDATE
                SET started_at = now(), heartbeat_at = now(), stopped_at = NULL",
            &[&id],
        )
        .await?;
    Ok(())
}

/// Renews every lease of this instance at once.
pub async fn heartbeat(pool: &Pool, id: &str) -> Result<(), Error> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "UPDATE instances SET heartbeat_at = now(), stopped_at = NULL WHERE id = $1",
        )
        .await?;
    client.execute(&statement, &[&id]).await?;
    Ok(())
}

/// Marks this instance stopped and gives back every run it drives.
pub async fn stop(pool: &Pool, id: &str) -> Result<u64, Error> {
    let client = pool.get().await?;
    let released = client
        .execute("UPDATE runs SET owner = NULL WHERE owner = $1", &[&id])
        .await?;
    client
        .execute(
            "UPDATE instances SET stopped_at = now() WHERE id = $1",
            &[&id],
        )
        .await?;
    client
        .execute("SELECT pg_notify($1, $2)", &[&super::RELEASED, &id])
        .await?;
    Ok(released)
}

/// Gives back every run this instance owns (after its leases lapsed).
pub async fn release_all(pool: &Pool, id: &str) -> Result<u64, Error> {
    let client = pool.get().await?;
    Ok(client
        .execute("UPDATE runs SET owner = NULL WHERE owner = $1", &[&id])
        .await?)
}

/// Gives back one run, if this instance still holds it at `epoch`.
pub async fn release(pool: &Pool, id: &str, claim: Claim) -> Result<bool, Error> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached("UPDATE runs SET owner = NULL WHERE id = $1 AND owner = $2 AND epoch = $3")
        .await?;
    Ok(client
        .execute(&statement, &[&claim.run_id, &id, &claim.epoch])
        .await?
        == 1)
}

/// The condition, on `runs c`, under which a run needs a driver and may be
/// taken by any instance: active without a live owner, or parked without an
/// owner and due (its timer) or with a command waiting. `$2` is the lease
/// in seconds.
const CLAIMABLE: &str = "
    c.status NOT IN ('completed', 'failed', 'cancelled')
    AND (c.owner IS NULL OR NOT EXISTS (
        SELECT 1 FROM instances i
        WHERE i.id = c.owner AND i.stopped_at IS NULL
          AND i.heartbeat_at > now() - make_interval(secs => $2)))
    AND (c.status IN ('pending', 'running')
         OR c.wake_at <= now()
         OR EXISTS (SELECT 1 FROM run_inbox b WHERE b.run_id = c.id AND b.handled_at IS NULL))";

/// The runs that may need a driver, each found through an index, so the
/// scan costs the same with a hundred thousand parked runs as with none:
/// active runs without an owner, runs with an owner (to find the dead
/// ones'), parked runs whose timer is due, runs with commands waiting, and
/// this instance's own runs that it does not drive. `CLAIMABLE` decides.
const CANDIDATES: &str = "
    SELECT id FROM runs WHERE owner IS NULL AND status IN ('pending', 'running')
    UNION
    SELECT id FROM runs WHERE owner IS NOT NULL
    UNION
    SELECT id FROM runs WHERE owner IS NULL AND wake_at <= now()
    UNION
    SELECT run_id FROM run_inbox WHERE handled_at IS NULL";

/// Claims up to `limit` runs that need a driver, and the runs this instance
/// owns but does not drive (`driving` lists those it does: after a restart
/// under the same id, or after giving its actors up). Each claim bumps the
/// run's epoch, which fences off whoever drove it before.
pub async fn claim_due(
    pool: &Pool,
    id: &str,
    lease: Duration,
    driving: &[Uuid],
    limit: i64,
) -> Result<Vec<Claim>, Error> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(&format!(
            "UPDATE runs r SET owner = $1, epoch = r.epoch + 1
             FROM (SELECT c.id FROM runs c
                   WHERE c.id IN ({CANDIDATES})
                     AND (({CLAIMABLE})
                          OR (c.owner = $1 AND c.status NOT IN ('completed', 'failed', 'cancelled')
                              AND NOT (c.id = ANY($3))))
                   ORDER BY c.created_at
                   LIMIT $4
                   FOR UPDATE SKIP LOCKED) c
             WHERE r.id = c.id
             RETURNING r.id, r.epoch"
        ))
        .await?;
    let rows = client
        .query(&statement, &[&id, &secs(lease), &driving, &limit])
        .await?;
    Ok(rows
        .iter()
        .map(|row| Claim {
            run_id: row.get(0),
            epoch: row.get(1),
        })
        .collect())
}

/// Claims one run, if it needs a driver (a command just arrived for it).
pub async fn claim_one(
    pool: &Pool,
    id: &str,
    lease: Duration,
    run_id: Uuid,
) -> Result<Option<Claim>, Error> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(&format!(
            "UPDATE runs r SET owner = $1, epoch = r.epoch + 1
             FROM (SELECT c.id FROM runs c WHERE c.id = $3 AND ({CLAIMABLE})
                   FOR UPDATE SKIP LOCKED) c
             WHERE r.id = c.id
             RETURNING r.id, r.epoch"
        ))
        .await?;
    let row = client
        .query_opt(&statement, &[&id, &secs(lease), &run_id])
        .await?;
    Ok(row.map(|row| Claim {
        run_id: row.get(0),
        epoch: row.get(1),
    }))
}

/// The live instances, oldest first, with how many runs each drives.
pub async fn instances(pool: &Pool, lease: Duration) -> Result<Vec<InstanceInfo>, Error> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT i.id, i.started_at, i.heartbeat_at,
                    (SELECT count(*) FROM runs r WHERE r.owner = i.id) AS runs
             FROM instances i
             WHERE i.stopped_at IS NULL
               AND i.heartbeat_at > now() - make_interval(secs => $1)
             ORDER BY i.started_at, i.id",
            &[&secs(lease)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| InstanceInfo {
            id: row.get("id"),
            started_at: row.get("started_at"),
            heartbeat_at: row.get("heartbeat_at"),
            runs: row.get("runs"),
        })
        .collect())
}

/// Puts a command in a run's inbox and wakes the instances up; returns its
/// id. `None` when there is no such run.
pub async fn send(
    pool: &Pool,
    run_id: Uuid,
    command: &serde_json::Value,
) -> Result<Option<i64>, Error> {
    // Strings a model or a human sent may hold U+0000, which jsonb cannot;
    // the journal stores them as U+FFFD, and so does the inbox.
    let mut command = command.clone();
    crate::journal::storable(&mut command);
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            "INSERT INTO run_inbox (run_id, command, created_at)
             SELECT id, $2, now() FROM runs WHERE id = $1
             RETURNING id",
            &[&run_id, &command],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&super::INBOX, &run_id.to_string()],
    )
    .await?;
    tx.commit().await?;
    Ok(Some(row.get(0)))
}

/// The outcome of a command, once its run's owner handled it.
pub async fn outcome(pool: &Pool, inbox_id: i64) -> Result<Option<serde_json::Value>, Error> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached("SELECT outcome FROM run_inbox WHERE id = $1 AND handled_at IS NOT NULL")
        .await?;
    Ok(client
        .query_opt(&statement, &[&inbox_id])
        .await?
        .map(|row| row.get(0)))
}

/// Withdraws a command nobody handled yet (its sender gave up waiting), so
/// that it can never take effect after its sender answered; `false` if it
/// was handled meanwhile.
pub async fn withdraw(pool: &Pool, inbox_id: i64) -> Result<bool, Error> {
    let client = pool.get().await?;
    Ok(client
        .execute(
            "UPDATE run_inbox SET handled_at = now(), outcome = '{\"outcome\": \"withdrawn\"}'
             WHERE id = $1 AND handled_at IS NULL",
            &[&inbox_id],
        )
        .await?
        == 1)
}

/// The commands waiting for a run, oldest first.
pub async fn waiting(pool: &Pool, run_id: Uuid) -> Result<Vec<InboxEntry>, Error> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT id, run_id, command FROM run_inbox
             WHERE run_id = $1 AND handled_at IS NULL ORDER BY id LIMIT 100",
        )
        .await?;
    Ok(client
        .query(&statement, &[&run_id])
        .await?
        .iter()
        .map(|row| InboxEntry {
            id: row.get(0),
            run_id: row.get(1),
            command: row.get(2),
        })
        .collect())
}

/// The runs this instance owns that have commands waiting.
pub async fn runs_with_mail(pool: &Pool, id: &str) -> Result<Vec<Uuid>, Error> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT DISTINCT b.run_id FROM run_inbox b JOIN runs r ON r.id = b.run_id
             WHERE b.handled_at IS NULL AND r.owner = $1",
        )
        .await?;
    Ok(client
        .query(&statement, &[&id])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
}
