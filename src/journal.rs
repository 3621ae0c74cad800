//! The journal and the run summaries in PostgreSQL: the only module that
//! knows their SQL.
//!
//! Each run has one ordered journal (`run_events`, primary key `(run_id,
//! seq)`, unique `(run_id, key)`) and one summary row (`runs`). `append`
//! writes a transition's entries, and the new summary when it changed, in one
//! statement. The entries' `seq` and `key` are the fence: a stale writer (a
//! second actor for the same run, or one whose view lags) names a `seq` or a
//! `key` that is taken, its whole statement fails and changes nothing (so
//! writing an entry twice is a no-op for the journal), and it gets
//! `Error::Stale`. A run's `last_seq` is read
//! from the journal itself, so an entry that leaves the summary as it was
//! costs one insert and nothing more.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use serde::Serialize;
use tokio_postgres::Row;
use uuid::Uuid;

mod group;
pub use group::{Writer, WriterStats};

use crate::agents::AgentName;
use crate::domain::{BudgetUse, ForkPoint, PendingApproval, RunStatus, RunSummary};
use crate::domain::{Event, EventBody, RunError};
use crate::llm::Usage;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The writer's view of the run is out of date; it must reload.
    #[error("the journal of run {0} moved on without this writer")]
    Stale(Uuid),
    /// The writer no longer holds the run: another instance claimed it (a
    /// newer epoch). It must stop driving the run, and write nothing more.
    #[error("run {0} is driven by another instance now")]
    Fenced(Uuid),
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("journal entry {seq} of run {run_id} cannot be read: {reason}")]
    Corrupt {
        run_id: Uuid,
        seq: i64,
        reason: String,
    },
    /// The group-commit writer is gone (the server is stopping).
    #[error("the journal writer has stopped")]
    WriterStopped,
}

/// The current time as PostgreSQL keeps it (whole microseconds), so an entry
/// reads the same live, replayed, and from the HTTP API.
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// A run as the API shows it (contract section 3).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Run)]
pub struct RunRecord {
    pub id: Uuid,
    pub status: RunStatus,
    pub agent: AgentName,
    pub task: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub pending_approval: Option<PendingApproval>,
    pub usage: BTreeMap<String, Usage>,
    pub result: Option<String>,
    pub error: Option<RunError>,
    pub last_seq: i64,
    pub approval_timeout_secs: u64,
    /// The run's trace, for finding it in a tracing backend.
    pub trace_id: Option<String>,
    /// The name of the token that created the run.
    pub created_by: String,
    /// The instance driving the run now; `null` while it is parked or over.
    pub owner: Option<String>,
    /// The run this one was forked from, and the last entry copied.
    pub forked_from: Option<ForkPoint>,
    /// The limits and their use; `null` for a run without limits.
    pub budget: Option<BudgetUse>,
    /// What the run's model answers cost so far, in USD (0 for models
    /// without a price).
    pub cost_usd: f64,
    /// The runs forked from this one (`run_id` the fork, `seq` where it was
    /// taken), oldest first; only in `GET /api/runs/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forks: Option<Vec<ForkPoint>>,
    /// Only used to detect a reused idempotency key with other content.
    #[serde(skip)]
    pub idempotency_key: Option<String>,
}

impl RunRecord {
    /// The record as the journal's fold says it is, for live updates;
    /// `updated_at` is the time of the entry that last changed the summary.
    pub fn from_state(
        state: &crate::run::state::RunState,
        summary: RunSummary,
        updated_at: DateTime<Utc>,
        owner: Option<&str>,
    ) -> RunRecord {
        RunRecord {
            id: state.run_id,
            status: summary.status,
            agent: state.top_agent,
            task: state.task.clone(),
            created_at: state.created_at,
            updated_at,
            pending_approval: summary.pending_approval,
            usage: summary.usage,
            result: summary.result,
            error: summary.error,
            last_seq: state.last_seq,
            approval_timeout_secs: state.approval_timeout_secs,
            trace_id: Some(state.trace.trace_id.clone()),
            created_by: state.created_by.clone(),
            owner: owner.map(str::to_string),
            forked_from: state.forked_from,
            budget: summary.budget,
            cost_usd: summary.cost_usd,
            forks: None,
            idempotency_key: None,
        }
    }
}

/// A run to create.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: Uuid,
    /// Its `RUN_STARTED` entry, as `run::state::start` made it.
    pub started: Event,
    /// The instance that will drive it (epoch 1).
    pub owner: String,
    pub idempotency_key: Option<String>,
    /// The creator's limits; `None` creates unconditionally.
    pub limits: Option<RunLimits>,
}

/// How many runs one token may create (contract section 9).
#[derive(Debug, Clone, Copy)]
pub struct RunLimits {
    pub per_minute: u32,
    pub max_open: u32,
}

/// What `create_run` did.
#[derive(Debug)]
pub enum Created {
    /// A new run.
    New(RunRecord),
    /// The run made earlier with the same idempotency key.
    Existing(RunRecord),
    /// Nothing: the creator is over a limit.
    Limited {
        message: String,
        retry_after_secs: u64,
    },
}

const RUN_COLUMNS: &str = "id, status, agent, task, created_at, updated_at, pending_approval, \
     usage, result, error, approval_timeout_secs, idempotency_key, trace_id, created_by, owner, \
     budget, cost_usd, forked_from_run, forked_from_seq, \
     (SELECT max(seq) FROM run_events e WHERE e.run_id = runs.id) AS last_seq";

/// Creates the run and its `RUN_STARTED` entry, unless the idempotency key
/// was used (then the existing run) or the creator is over a limit (then
/// nothing). The limits are counted under a per-creator advisory lock, so
/// concurrent requests on any instance cannot slip past them together.
#[tracing::instrument(skip_all, fields(run_id = %run.id))]
pub async fn create_run(pool: &Pool, run: &NewRun) -> Result<Created, Error> {
    let EventBody::RunStarted {
        task,
        agent,
        approval_timeout_secs,
        trace,
        created_by,
        budget,
    } = &run.started.body
    else {
        return Err(corrupt(run.id, 1, "a run must start with RUN_STARTED"));
    };
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    if let Some(key) = &run.idempotency_key
        && let Some(existing) = run_by_key(&tx, key).await?
    {
        return Ok(Created::Existing(existing));
    }
    if let Some(limits) = run.limits
        && let Some(limited) = over_limit(&tx, created_by, run.started.at, limits).await?
    {
        return Ok(limited);
    }
    let payload = JsonText::payload_of(&run.started.body);
    let trace_id = trace.as_ref().map(|t| t.trace_id.as_str());
    let budget_json = budget
        .filter(|b| !b.is_unlimited())
        .map(|b| {
            stored_json(
                &BudgetUse {
                    max_tokens: b.max_tokens,
                    max_cost_usd: b.max_cost_usd,
                    used_tokens: 0,
                    used_cost_usd: 0.0,
                },
                run.id,
                1,
            )
        })
        .transpose()?;
    let statement = tx
        .prepare_cached(
            "WITH r AS (
                INSERT INTO runs (id, status, agent, task, approval_timeout_secs, idempotency_key,
                                  created_at, updated_at, trace_id, created_by, owner, epoch,
                                  budget)
                VALUES ($1, 'pending', $2, $3, $4, $5, $6, $6, $8, $9, $11, 1, $12)
                ON CONFLICT (idempotency_key) DO NOTHING
                RETURNING id
            ), e AS (
                INSERT INTO run_events (run_id, seq, type, agent, at, key, payload)
                SELECT id, 1, 'RUN_STARTED', $2, $6, $10, $7 FROM r
            )
            SELECT count(*) FROM r",
        )
        .await?;
    let timeout = *approval_timeout_secs as i64;
    let inserted: i64 = tx
        .query_one(
            &statement,
            &[
                &run.id,
                &agent.as_str(),
                task,
                &timeout,
                &run.idempotency_key,
                &run.started.at,
                &payload,
                &trace_id,
                created_by,
                &run.started.key,
                &run.owner,
                &budget_json,
            ],
        )
        .await?
        .get(0);
    if inserted == 0 {
        // Another request with the same key committed first.
        tx.rollback().await?;
        let key = run.idempotency_key.as_deref().unwrap_or_default();
        let client = pool.get().await?;
        return run_by_key(&client, key)
            .await?
            .map(Created::Existing)
            .ok_or(Error::Stale(run.id));
    }
    let row = tx
        .query_one(
            &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"),
            &[&run.id],
        )
        .await?;
    tx.commit().await?;
    Ok(Created::New(run_from_row(&row)?))
}

async fn run_by_key<C: GenericClient + Sync>(
    client: &C,
    key: &str,
) -> Result<Option<RunRecord>, Error> {
    client
        .query_opt(
            &format!("SELECT {RUN_COLUMNS} FROM runs WHERE idempotency_key = $1"),
            &[&key],
        )
        .await?
        .map(|row| run_from_row(&row))
        .transpose()
}

/// Whether the creator may not create another run now, counted inside the
/// creating transaction after taking the creator's lock.
async fn over_limit<C: GenericClient + Sync>(
    tx: &C,
    creator: &str,
    at: DateTime<Utc>,
    limits: RunLimits,
) -> Result<Option<Created>, Error> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('runs-created-by:' || $1, 0))",
        &[&creator],
    )
    .await?;
    let row = tx
        .query_one(
            "SELECT
                (SELECT count(*) FROM runs WHERE created_by = $1
                    AND created_at > $2::timestamptz - interval '1 minute') AS recent,
                (SELECT min(created_at) FROM runs WHERE created_by = $1
                    AND created_at > $2::timestamptz - interval '1 minute') AS oldest,
                (SELECT count(*) FROM runs WHERE created_by = $1
                    AND status NOT IN ('completed', 'failed', 'cancelled')) AS open",
            &[&creator, &at],
        )
        .await?;
    let recent: i64 = row.get("recent");
    let open: i64 = row.get("open");
    if recent >= i64::from(limits.per_minute) {
        let oldest: Option<DateTime<Utc>> = row.get("oldest");
        let wait = oldest
            .map(|oldest| (oldest + chrono::Duration::minutes(1) - at).num_milliseconds())
            .unwrap_or(60_000);
        return Ok(Some(Created::Limited {
            message: format!(
                "the token `{}` created {recent} runs in the last minute; the limit is {} (AGENT_RATE_LIMIT_RUNS_PER_MIN)",
                creator, limits.per_minute
            ),
            retry_after_secs: (wait.max(0) as u64).div_ceil(1000).max(1),
        }));
    }
    if open >= i64::from(limits.max_open) {
        return Ok(Some(Created::Limited {
            message: format!(
                "the token `{}` has {open} unfinished runs; the limit is {} (AGENT_MAX_OPEN_RUNS_PER_TOKEN); cancel some or wait for them to finish",
                creator, limits.max_open
            ),
            retry_after_secs: OPEN_RUNS_RETRY_SECS,
        }));
    }
    Ok(None)
}

/// What `Retry-After` says when a token has too many open runs: nobody can
/// know when one finishes, so a pace that does not hammer the server.
const OPEN_RUNS_RETRY_SECS: u64 = 30;

/// One transition's entries and what is written with them.
#[derive(Debug, Clone)]
pub struct Append {
    pub run_id: Uuid,
    /// The writer's epoch: the write is refused, in the same statement,
    /// unless it is the run's current one.
    pub epoch: i64,
    /// Numbered right after the writer's last `seq`.
    pub events: Vec<Event>,
    /// The new summary, when it changed.
    pub summary: Option<RunSummary>,
    /// Give the run back in the same statement: it parks (waits for a
    /// human, or for its timer) and needs no driver meanwhile.
    pub release: bool,
    /// The inbox command this transition answers, marked handled in the
    /// same transaction, so a command takes effect exactly once.
    pub answer: Option<Answer>,
}

/// The outcome of an inbox command.
#[derive(Debug, Clone)]
pub struct Answer {
    pub inbox_id: i64,
    pub outcome: serde_json::Value,
}

/// Commits `append`: all or nothing. It has no span of its own: it is on
/// every step's critical path, and its caller's span (the actor's
/// `journal.append`) already names the run and the entries.
pub async fn append(pool: &Pool, append: &Append) -> Result<(), Error> {
    let mut client = pool.get().await?;
    if append.answer.is_none() {
        return append_on(&client, append).await;
    }
    let tx = client.transaction().await?;
    append_on(&tx, append).await?;
    tx.commit().await?;
    Ok(())
}

/// `append` on a connection or inside a transaction (a group commit); an
/// answer needs a transaction around it.
async fn append_on<C: GenericClient + Sync>(client: &C, append: &Append) -> Result<(), Error> {
    if let Some(first) = append.events.first() {
        append_entries(client, append, first.seq).await?;
    }
    if let Some(answer) = &append.answer {
        client
            .execute(
                "UPDATE run_inbox SET handled_at = now(), outcome = $2
                 WHERE id = $1 AND handled_at IS NULL",
                &[&answer.inbox_id, &answer.outcome],
            )
            .await?;
        notify_answered(client, answer.inbox_id).await?;
    }
    Ok(())
}

/// Tells the instances that a command was handled (the sender waits).
async fn notify_answered<C: GenericClient + Sync>(client: &C, inbox_id: i64) -> Result<(), Error> {
    client
        .execute(
            "SELECT pg_notify($1, $2)",
            &[&crate::cluster::INBOX_DONE, &inbox_id.to_string()],
        )
        .await?;
    Ok(())
}

/// Answers an inbox command that wrote nothing (a refusal), fenced like an
/// append; `false` if the writer lost the run or the command was withdrawn.
pub async fn answer_alone(
    pool: &Pool,
    run_id: Uuid,
    epoch: i64,
    answer: &Answer,
) -> Result<bool, Error> {
    let client = pool.get().await?;
    let answered = client
        .execute(
            "UPDATE run_inbox SET handled_at = now(), outcome = $4
             WHERE id = $3 AND handled_at IS NULL
               AND EXISTS (SELECT 1 FROM runs WHERE id = $1 AND epoch = $2 FOR SHARE)",
            &[&run_id, &epoch, &answer.inbox_id, &answer.outcome],
        )
        .await?
        == 1;
    if answered {
        notify_answered(&client, answer.inbox_id).await?;
    }
    Ok(answered)
}

/// The entries (and summary) of `append`, in one statement fenced by the
/// epoch: a stale writer inserts nothing and gets `Error::Fenced`.
async fn append_entries<C: GenericClient + Sync>(
    client: &C,
    append: &Append,
    first_seq: i64,
) -> Result<(), Error> {
    let run_id = append.run_id;
    let events = &append.events;
    let mut seqs = Vec::with_capacity(events.len());
    let mut types = Vec::with_capacity(events.len());
    let mut agents = Vec::with_capacity(events.len());
    let mut ats = Vec::with_capacity(events.len());
    let mut keys = Vec::with_capacity(events.len());
    let mut payloads = Vec::with_capacity(events.len());
    for event in events {
        seqs.push(event.seq);
        types.push(event.body.type_name());
        agents.push(event.agent.map(AgentName::as_str));
        ats.push(event.at);
        keys.push(event.key.as_str());
        payloads.push(JsonText::payload_of(&event.body));
    }
    // One statement, so one round trip and one commit, and all or nothing: an
    // entry whose `seq` or `key` is taken fails the whole statement, summary
    // update included, and the journal is left as it was. The epoch check
    // is in the same statement: a row lock on the run's summary, taken (or
    // waited for) before anything is inserted, so a claim that bumped the
    // epoch either committed first (and nothing is inserted) or waits for
    // this commit.
    let outcome = match &append.summary {
        // The most common commit on a run's critical path (`TOOL_STARTED`,
        // for one) is a plain single-row insert.
        None if events.len() == 1 && !append.release => {
            let statement = client
                .prepare_cached(
                    "INSERT INTO run_events (run_id, seq, type, agent, at, key, payload)
                     SELECT $1, $2, $3, $4, $5, $6, $7
                     WHERE EXISTS (SELECT 1 FROM runs WHERE id = $1 AND epoch = $8 FOR SHARE)",
                )
                .await?;
            client
                .execute(
                    &statement,
                    &[
                        &run_id,
                        &seqs[0],
                        &types[0],
                        &agents[0],
                        &ats[0],
                        &keys[0],
                        &payloads[0],
                        &append.epoch,
                    ],
                )
                .await
        }
        None if !append.release => {
            let statement = client
                .prepare_cached(
                    "INSERT INTO run_events (run_id, seq, type, agent, at, key, payload)
                     SELECT $1, e.seq, e.type, e.agent, e.at, e.key, e.payload
                     FROM unnest($2::bigint[], $3::text[], $4::text[], $5::timestamptz[],
                                 $6::text[], $7::jsonb[]) AS e(seq, type, agent, at, key, payload)
                     WHERE EXISTS (SELECT 1 FROM runs WHERE id = $1 AND epoch = $8 FOR SHARE)",
                )
                .await?;
            client
                .execute(
                    &statement,
                    &[
                        &run_id,
                        &seqs,
                        &types,
                        &agents,
                        &ats,
                        &keys,
                        &payloads,
                        &append.epoch,
                    ],
                )
                .await
        }
        summary => {
            let (run, seq) = (run_id, first_seq);
            let Some(summary) = summary else {
                return Err(corrupt(run, seq, "giving a run back needs its summary"));
            };
            let pending = summary
                .pending_approval
                .as_ref()
                .map(|p| stored_json(p, run, seq))
                .transpose()?;
            let usage = stored_json(&summary.usage, run, seq)?;
            let error = summary
                .error
                .as_ref()
                .map(|e| stored_json(e, run, seq))
                .transpose()?;
            let result = summary.result.as_deref().map(storable_text);
            let budget = summary
                .budget
                .as_ref()
                .map(|b| stored_json(b, run, seq))
                .transpose()?;
            let updated_at = events.last().map(|e| e.at);
            // The parked run's durable timer: when its approval expires.
            let wake_at = summary
                .pending_approval
                .as_ref()
                .filter(|_| summary.status == RunStatus::WaitingApproval)
                .map(|p| p.expires_at);
            // A data-modifying CTE always runs, so the summary changes in the
            // same statement as the entries; its row lock is the fence.
            let statement = client
                .prepare_cached(
                    "WITH upd AS (
                        UPDATE runs SET status = $8, pending_approval = $9, usage = $10,
                               result = $11, error = $12, updated_at = $13, wake_at = $14,
                               owner = CASE WHEN $15 THEN NULL ELSE owner END,
                               budget = $17, cost_usd = $18
                        WHERE id = $1 AND epoch = $16
                        RETURNING 1
                     )
                     INSERT INTO run_events (run_id, seq, type, agent, at, key, payload)
                     SELECT $1, e.seq, e.type, e.agent, e.at, e.key, e.payload
                     FROM unnest($2::bigint[], $3::text[], $4::text[], $5::timestamptz[],
                                 $6::text[], $7::jsonb[]) AS e(seq, type, agent, at, key, payload)
                     WHERE EXISTS (SELECT 1 FROM upd)",
                )
                .await?;
            client
                .execute(
                    &statement,
                    &[
                        &run_id,
                        &seqs,
                        &types,
                        &agents,
                        &ats,
                        &keys,
                        &payloads,
                        &summary.status.as_str(),
                        &pending,
                        &usage,
                        &result,
                        &error,
                        &updated_at,
                        &wake_at,
                        &append.release,
                        &append.epoch,
                        &budget,
                        &summary.cost_usd,
                    ],
                )
                .await
        }
    };
    match outcome {
        Ok(inserted) if inserted as usize == events.len() => Ok(()),
        Ok(_) => Err(Error::Fenced(run_id)),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            Err(Error::Stale(run_id))
        }
        Err(e) => Err(e.into()),
    }
}

/// The whole journal of a run, in order (empty for an unknown run).
#[tracing::instrument(skip(pool))]
pub async fn load(pool: &Pool, run_id: Uuid) -> Result<Vec<Event>, Error> {
    events_after(pool, run_id, 0, i64::MAX).await
}

/// Entries with `seq > after`, ascending, at most `limit`.
pub async fn events_after(
    pool: &Pool,
    run_id: Uuid,
    after: i64,
    limit: i64,
) -> Result<Vec<Event>, Error> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT seq, type, agent, at, key, payload FROM run_events
             WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .await?;
    let rows = client.query(&statement, &[&run_id, &after, &limit]).await?;
    rows.iter().map(|row| event_from_row(run_id, row)).collect()
}

/// One run's summary, if it exists.
pub async fn get_run(pool: &Pool, run_id: Uuid) -> Result<Option<RunRecord>, Error> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"))
        .await?;
    client
        .query_opt(&statement, &[&run_id])
        .await?
        .map(|row| run_from_row(&row))
        .transpose()
}

/// Which runs a listing shows (contract sections 3 and 11).
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub status: Option<RunStatus>,
    /// Matches the task anywhere, case-insensitively.
    pub q: Option<String>,
    pub agent: Option<AgentName>,
    pub created_by: Option<String>,
}

/// A page of runs, newest first, strictly before the cursor `(created_at, id)`.
pub async fn list_runs(
    pool: &Pool,
    filter: &RunFilter,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<RunRecord>, Error> {
    let client = pool.get().await?;
    // `q` is matched literally: `%`, `_` and `\` in it are escaped.
    let pattern = filter.q.as_ref().map(|q| {
        let escaped = q
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%{escaped}%")
    });
    let statement = client
        .prepare_cached(&format!(
            "SELECT {RUN_COLUMNS} FROM runs
             WHERE ($1::text IS NULL OR status = $1)
               AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))
               AND ($5::text IS NULL OR task ILIKE $5)
               AND ($6::text IS NULL OR agent = $6)
               AND ($7::text IS NULL OR created_by = $7)
             ORDER BY created_at DESC, id DESC LIMIT $4"
        ))
        .await?;
    let status = filter.status.map(RunStatus::as_str);
    let agent = filter.agent.map(AgentName::as_str);
    let (before_at, before_id) = before.unzip();
    let rows = client
        .query(
            &statement,
            &[
                &status,
                &before_at,
                &before_id,
                &limit,
                &pattern,
                &agent,
                &filter.created_by,
            ],
        )
        .await?;
    rows.iter().map(run_from_row).collect()
}

/// The runs forked from `run_id`, oldest first: each fork's id, and the
/// source's entry it was taken at.
pub async fn forks_of(pool: &Pool, run_id: Uuid) -> Result<Vec<ForkPoint>, Error> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT id, forked_from_seq FROM runs WHERE forked_from_run = $1
             ORDER BY created_at, id",
            &[&run_id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| ForkPoint {
            run_id: row.get(0),
            seq: row.get::<_, Option<i64>>(1).unwrap_or_default(),
        })
        .collect())
}

/// A fork to create: its whole first journal (the copies, `RUN_FORKED`,
/// the message) and the summary they fold to.
#[derive(Debug, Clone)]
pub struct NewFork {
    pub id: Uuid,
    pub from: ForkPoint,
    pub events: Vec<Event>,
    pub summary: RunSummary,
    /// The instance that will drive it (epoch 1).
    pub owner: String,
    /// The name of the token forking.
    pub created_by: String,
    pub trace_id: String,
    pub limits: Option<RunLimits>,
}

/// Creates a fork in one transaction: its summary row and its first
/// entries, unless the forker is over a limit (then nothing).
#[tracing::instrument(skip_all, fields(run_id = %fork.id))]
pub async fn create_fork(pool: &Pool, fork: &NewFork) -> Result<Created, Error> {
    let Some(EventBody::RunStarted {
        task,
        agent,
        approval_timeout_secs,
        ..
    }) = fork.events.first().map(|e| &e.body)
    else {
        return Err(corrupt(fork.id, 1, "a run must start with RUN_STARTED"));
    };
    let at = fork.events.last().map(|e| e.at).unwrap_or_else(now);
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    if let Some(limits) = fork.limits
        && let Some(limited) = over_limit(&tx, &fork.created_by, at, limits).await?
    {
        return Ok(limited);
    }
    let (id, seq) = (fork.id, 1);
    let summary = &fork.summary;
    let pending = summary
        .pending_approval
        .as_ref()
        .map(|p| stored_json(p, id, seq))
        .transpose()?;
    let usage = stored_json(&summary.usage, id, seq)?;
    let budget = summary
        .budget
        .as_ref()
        .map(|b| stored_json(b, id, seq))
        .transpose()?;
    tx.execute(
        "INSERT INTO runs (id, status, agent, task, approval_timeout_secs, created_at, updated_at,
                           trace_id, created_by, owner, epoch, pending_approval, usage, budget,
                           cost_usd, forked_from_run, forked_from_seq)
         VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9, 1, $10, $11, $12, $13, $14, $15)",
        &[
            &id,
            &summary.status.as_str(),
            &agent.as_str(),
            task,
            &(*approval_timeout_secs as i64),
            &at,
            &fork.trace_id,
            &fork.created_by,
            &fork.owner,
            &pending,
            &usage,
            &budget,
            &summary.cost_usd,
            &fork.from.run_id,
            &fork.from.seq,
        ],
    )
    .await?;
    let append = Append {
        run_id: id,
        epoch: 1,
        events: fork.events.clone(),
        summary: None,
        release: false,
        answer: None,
    };
    append_entries(&tx, &append, seq).await?;
    let row = tx
        .query_one(
            &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"),
            &[&id],
        )
        .await?;
    tx.commit().await?;
    Ok(Created::New(run_from_row(&row)?))
}

/// The runs that have not finished, oldest first: they get their actors back
/// at start.
pub async fn open_runs(pool: &Pool) -> Result<Vec<Uuid>, Error> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT id FROM runs WHERE status NOT IN ('completed', 'failed', 'cancelled')
             ORDER BY created_at",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// The open runs of the whole cluster by status (for the gauges).
pub async fn open_run_counts(pool: &Pool) -> Result<HashMap<RunStatus, i64>, Error> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT status, count(*) FROM runs
             WHERE status NOT IN ('completed', 'failed', 'cancelled') GROUP BY status",
        )
        .await?;
    Ok(client
        .query(&statement, &[])
        .await?
        .iter()
        .filter_map(|row| {
            let status: String = row.get(0);
            RunStatus::parse(&status).map(|status| (status, row.get(1)))
        })
        .collect())
}

/// Answers when the database does.
pub async fn ping(pool: &Pool) -> Result<(), Error> {
    pool.get().await?.simple_query("SELECT 1").await?;
    Ok(())
}

/// PostgreSQL text and jsonb cannot hold U+0000, which a model or a command's
/// output may well contain; it becomes U+FFFD so the entry can be journaled
/// instead of wedging the run.
fn storable_text(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

/// A summary field as jsonb that PostgreSQL can store.
fn stored_json<T: Serialize>(
    value: &T,
    run_id: Uuid,
    seq: i64,
) -> Result<serde_json::Value, Error> {
    let mut json = serde_json::to_value(value).map_err(|e| corrupt(run_id, seq, e))?;
    storable(&mut json);
    Ok(json)
}

/// JSON text bound as a `jsonb` (or `json`) parameter as it is: an entry's
/// payload is serialized once, from the entry, and never becomes a
/// `serde_json::Value` on its way to the database.
#[derive(Debug)]
pub(crate) struct JsonText(String);

impl JsonText {
    /// An entry's `payload` column, storable.
    pub(crate) fn payload_of(body: &EventBody) -> JsonText {
        JsonText(storable_json_text(body.payload_text()))
    }
}

impl tokio_postgres::types::ToSql for JsonText {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        // jsonb's binary form is a version byte (1) and the text.
        if *ty == tokio_postgres::types::Type::JSONB {
            out.extend_from_slice(&[1]);
        }
        out.extend_from_slice(self.0.as_bytes());
        Ok(tokio_postgres::types::IsNull::No)
    }

    tokio_postgres::types::accepts!(JSON, JSONB);
    tokio_postgres::types::to_sql_checked!();
}

/// JSON text that PostgreSQL can store as jsonb: the escape `\u0000` (which
/// jsonb refuses) becomes `\ufffd`, as `storable` does for a value. Every
/// backslash serde_json writes starts an escape, so escapes are walked two
/// bytes at a time and an escaped backslash followed by `u0000` is left be.
fn storable_json_text(text: String) -> String {
    if !text.contains("\\u0000") {
        return text;
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes[i + 1..].starts_with(b"u0000") {
                out.extend_from_slice(b"\\ufffd");
                i += 6;
            } else {
                out.extend_from_slice(&bytes[i..(i + 2).min(bytes.len())]);
                i += 2;
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    // Only ASCII escapes were replaced, so the text is still UTF-8.
    String::from_utf8(out).unwrap_or(text)
}

/// Makes a JSON value storable in PostgreSQL jsonb: U+0000 becomes U+FFFD.
pub(crate) fn storable(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(text) if text.contains('\0') => *text = storable_text(text),
        serde_json::Value::Array(items) => items.iter_mut().for_each(storable),
        serde_json::Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                *map = std::mem::take(map)
                    .into_iter()
                    .map(|(k, v)| (storable_text(&k), v))
                    .collect();
            }
            map.values_mut().for_each(storable);
        }
        _ => {}
    }
}

fn corrupt(run_id: Uuid, seq: i64, reason: impl ToString) -> Error {
    Error::Corrupt {
        run_id,
        seq,
        reason: reason.to_string(),
    }
}

fn event_from_row(run_id: Uuid, row: &Row) -> Result<Event, Error> {
    let seq: i64 = row.get("seq");
    let type_name: String = row.get("type");
    let agent: Option<String> = row.get("agent");
    let agent = agent
        .map(|a| a.parse::<AgentName>())
        .transpose()
        .map_err(|e| corrupt(run_id, seq, e))?;
    let body = EventBody::from_columns(&type_name, row.get("payload"))
        .map_err(|e| corrupt(run_id, seq, e))?;
    Ok(Event {
        seq,
        agent,
        at: row.get("at"),
        key: row.get("key"),
        body,
    })
}

fn run_from_row(row: &Row) -> Result<RunRecord, Error> {
    let id: Uuid = row.get("id");
    // A run row without entries is never written (creation inserts both in
    // one statement); read it as empty rather than trust it.
    let last_seq: i64 = row.get::<_, Option<i64>>("last_seq").unwrap_or(0);
    let bad = |what: &str| corrupt(id, last_seq, format!("bad {what} in the run summary"));
    let status: String = row.get("status");
    let agent: String = row.get("agent");
    let pending: Option<serde_json::Value> = row.get("pending_approval");
    let usage: serde_json::Value = row.get("usage");
    let error: Option<serde_json::Value> = row.get("error");
    let timeout: i64 = row.get("approval_timeout_secs");
    Ok(RunRecord {
        id,
        status: RunStatus::parse(&status).ok_or_else(|| bad("status"))?,
        agent: agent.parse().map_err(|_| bad("agent"))?,
        task: row.get("task"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
        pending_approval: pending
            .map(serde_json::from_value::<PendingApproval>)
            .transpose()
            .map_err(|_| bad("pending_approval"))?
            .map(|mut pending| {
                // Summaries written before the hash was kept.
                if pending.args_sha256.is_empty() {
                    pending.args_sha256 = crate::jcs::sha256_hex(&pending.args);
                }
                pending
            }),
        usage: serde_json::from_value(usage).map_err(|_| bad("usage"))?,
        result: row.get("result"),
        error: error
            .map(serde_json::from_value)
            .transpose()
            .map_err(|_| bad("error"))?,
        last_seq,
        approval_timeout_secs: timeout.max(0) as u64,
        trace_id: row.get("trace_id"),
        created_by: row.get("created_by"),
        owner: row.get("owner"),
        forked_from: row
            .get::<_, Option<Uuid>>("forked_from_run")
            .zip(row.get::<_, Option<i64>>("forked_from_seq"))
            .map(|(run_id, seq)| ForkPoint { run_id, seq }),
        budget: row
            .get::<_, Option<serde_json::Value>>("budget")
            .map(serde_json::from_value)
            .transpose()
            .map_err(|_| bad("budget"))?,
        cost_usd: row.get("cost_usd"),
        forks: None,
        idempotency_key: row.get("idempotency_key"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_text_loses_its_nul_escapes_and_nothing_else() {
        let value = serde_json::json!({"a\u{0}": ["x\u{0}y", "\\u0000 is text", "\\\u{0}"]});
        let text = storable_json_text(value.to_string());
        let mut expected = value;
        storable(&mut expected);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            expected
        );
        assert!(!text.contains("\\u0000\""), "{text}");
        let plain = r#"{"a":"\\u0000"}"#.to_string();
        assert_eq!(storable_json_text(plain.clone()), plain);
    }
}
