//! Runs written straight to the database, for the figure of 100,000 parked
//! runs (driving each through an actor would take most of the bench's
//! time), and the SQL that clears the bench's runs away again.
//!
//! The entries are the state machine's own: `state::start`, then
//! `state::step` with a wake and with a model answer asking for `shell`,
//! exactly as an actor would step the run, so each run is the five entries
//! an actor journals before it parks (`RUN_STARTED`, `LLM_CALLED`,
//! `AGENT_THOUGHT`, `TOOL_CALLED`, `RUN_SUSPENDED`) and the summary row
//! `journal::append` leaves when it gives a run back in the commit that
//! parks it: no owner, epoch 1, its approval's expiry as its durable timer.

use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::Pool;
use serde_json::json;
use uuid::Uuid;

use super::CREATOR;
use crate::agents::AgentName;
use crate::domain::{Event, RunStatus};
use crate::journal;
use crate::llm::{ModelAnswer, RequestedCall, Usage};
use crate::run::state::{self, Effect, Env, Input, RunState};

/// Run ids per `DELETE`: an index probe each, in statements of a bounded size.
const FORGET_CHUNK: usize = 10_000;

/// A run parked on a `shell` approval, as its actor would have journaled it.
pub struct ParkedRun {
    pub state: RunState,
    pub events: Vec<Event>,
}

/// Steps a new run of the coding agent, through the state machine, to a
/// pending approval of `shell` that expires after `approval_timeout_secs`.
pub fn parked_run(
    approval_timeout_secs: u64,
    models: &Arc<HashMap<AgentName, String>>,
) -> anyhow::Result<ParkedRun> {
    let env = || Env {
        now: journal::now(),
        fresh_id: Uuid::new_v4(),
        jitter: 0.0,
        max_iterations: 10,
        models: models.clone(),
        prices: Default::default(),
        mcp: Default::default(),
        busy: false,
    };
    let (mut state, started) = state::start(super::new_start(approval_timeout_secs), &env());
    let called = state::step(&mut state, Input::Wake, &env())?;
    let answer = ModelAnswer {
        model: "instant".into(),
        text: String::new(),
        tool_calls: vec![RequestedCall {
            call_id: None,
            tool: "shell".into(),
            args: json!({"command": "ls"}),
        }],
        usage: Usage::default(),
    };
    let suspended = state::step(&mut state, Input::ModelAnswered { answer }, &env())?;
    anyhow::ensure!(
        matches!(suspended.effect, Effect::AwaitApproval { .. }),
        "a `shell` call did not park the run on an approval"
    );
    let events = [started.events, called.events, suspended.events].concat();
    Ok(ParkedRun { state, events })
}

/// Writes parked runs, their summary rows and their entries, in one
/// transaction.
pub async fn write_parked(pool: &Pool, runs: &[ParkedRun]) -> anyhow::Result<()> {
    let mut ids = Vec::with_capacity(runs.len());
    let mut statuses = Vec::with_capacity(runs.len());
    let mut agents = Vec::with_capacity(runs.len());
    let mut tasks = Vec::with_capacity(runs.len());
    let mut timeouts = Vec::with_capacity(runs.len());
    let mut created = Vec::with_capacity(runs.len());
    let mut updated = Vec::with_capacity(runs.len());
    let mut pendings = Vec::with_capacity(runs.len());
    let mut usages = Vec::with_capacity(runs.len());
    let mut trace_ids = Vec::with_capacity(runs.len());
    let mut creators = Vec::with_capacity(runs.len());
    let mut wakes = Vec::with_capacity(runs.len());
    let entries = runs.iter().map(|r| r.events.len()).sum();
    let mut run_ids = Vec::with_capacity(entries);
    let mut seqs = Vec::with_capacity(entries);
    let mut types = Vec::with_capacity(entries);
    let mut event_agents = Vec::with_capacity(entries);
    let mut ats = Vec::with_capacity(entries);
    let mut keys = Vec::with_capacity(entries);
    let mut payloads = Vec::with_capacity(entries);
    for run in runs {
        let state = &run.state;
        let summary = state.summary();
        anyhow::ensure!(summary.status == RunStatus::WaitingApproval);
        let Some(pending) = &summary.pending_approval else {
            anyhow::bail!("a parked run has no pending approval");
        };
        ids.push(state.run_id);
        statuses.push(summary.status.as_str());
        agents.push(state.top_agent.as_str());
        tasks.push(state.task.as_str());
        timeouts.push(state.approval_timeout_secs as i64);
        created.push(state.created_at);
        updated.push(run.events.last().map_or(state.created_at, |e| e.at));
        wakes.push(pending.expires_at);
        let mut pending = serde_json::to_value(pending)?;
        journal::storable(&mut pending);
        pendings.push(pending);
        usages.push(serde_json::to_value(&summary.usage)?);
        trace_ids.push(state.trace.trace_id.as_str());
        creators.push(state.created_by.as_str());
        for event in &run.events {
            let (type_name, mut payload) = event.body.to_columns();
            journal::storable(&mut payload);
            run_ids.push(state.run_id);
            seqs.push(event.seq);
            types.push(type_name);
            event_agents.push(event.agent.map(AgentName::as_str));
            ats.push(event.at);
            keys.push(event.key.as_str());
            payloads.push(payload);
        }
    }
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute(
        "INSERT INTO runs (id, status, agent, task, approval_timeout_secs, created_at,
                           updated_at, pending_approval, usage, trace_id, created_by,
                           owner, epoch, wake_at)
         SELECT r.id, r.status, r.agent, r.task, r.timeout, r.created_at, r.updated_at,
                r.pending, r.usage, r.trace_id, r.created_by, NULL, 1, r.wake_at
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                     $6::timestamptz[], $7::timestamptz[], $8::jsonb[], $9::jsonb[],
                     $10::text[], $11::text[], $12::timestamptz[])
              AS r(id, status, agent, task, timeout, created_at, updated_at, pending,
                   usage, trace_id, created_by, wake_at)",
        &[
            &ids, &statuses, &agents, &tasks, &timeouts, &created, &updated, &pendings, &usages,
            &trace_ids, &creators, &wakes,
        ],
    )
    .await?;
    tx.execute(
        "INSERT INTO run_events (run_id, seq, type, agent, at, key, payload)
         SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[],
                              $5::timestamptz[], $6::text[], $7::jsonb[])",
        &[
            &run_ids,
            &seqs,
            &types,
            &event_agents,
            &ats,
            &keys,
            &payloads,
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Deletes runs, with their entries and commands.
pub async fn forget_runs(pool: &Pool, ids: &[Uuid]) -> anyhow::Result<()> {
    let mut client = pool.get().await?;
    for chunk in ids.chunks(FORGET_CHUNK) {
        let chunk = chunk.to_vec();
        let tx = client.transaction().await?;
        tx.execute("DELETE FROM run_inbox WHERE run_id = ANY($1)", &[&chunk])
            .await?;
        tx.execute("DELETE FROM run_events WHERE run_id = ANY($1)", &[&chunk])
            .await?;
        tx.execute("DELETE FROM runs WHERE id = ANY($1)", &[&chunk])
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

/// Deletes the runs of `creator` (every creator's with `None`) that have
/// not finished.
async fn forget_open_runs(pool: &Pool, creator: Option<&str>) -> anyhow::Result<usize> {
    let rows = pool
        .get()
        .await?
        .query(
            "SELECT id FROM runs
             WHERE status NOT IN ('completed', 'failed', 'cancelled')
               AND ($1::text IS NULL OR created_by = $1)",
            &[&creator],
        )
        .await?;
    let ids: Vec<Uuid> = rows.iter().map(|row| row.get(0)).collect();
    forget_runs(pool, &ids).await?;
    Ok(ids.len())
}

/// Readies the database for the figures where instances claim runs: the
/// bench's unfinished runs are deleted (every unfinished run, in the
/// embedded database, which only the bench uses), so that nothing but what
/// a figure makes waits for a driver. Against a database of the user's, a
/// claim would drive the user's runs: then the reason those figures must be
/// skipped.
pub async fn prepare_for_claims(pool: &Pool, embedded: bool) -> anyhow::Result<Option<String>> {
    if embedded {
        forget_open_runs(pool, None).await?;
        return Ok(None);
    }
    forget_open_runs(pool, Some(CREATOR)).await?;
    let row = pool
        .get()
        .await?
        .query_one(
            "SELECT
                (SELECT count(*) FROM runs
                 WHERE status NOT IN ('completed', 'failed', 'cancelled')
                   AND created_by <> $1) AS runs,
                (SELECT count(*) FROM instances
                 WHERE stopped_at IS NULL AND heartbeat_at > now() - interval '1 minute')
                   AS instances",
            &[&CREATOR],
        )
        .await?;
    let (runs, instances): (i64, i64) = (row.get("runs"), row.get("instances"));
    Ok((runs > 0 || instances > 0).then(|| {
        format!(
            "the database holds {runs} unfinished runs and {instances} live instances that are \
             not the bench's; use an empty database, or none (the embedded one)"
        )
    }))
}

/// Brings the run table's statistics up to date, as autovacuum keeps them
/// on a server: the claim's plan depends on them.
pub async fn analyze(pool: &Pool) -> anyhow::Result<()> {
    pool.get().await?.batch_execute("ANALYZE runs").await?;
    Ok(())
}

/// Reclaims what deleted runs left in the run table, so that the next
/// figure's claims scan only live rows. A user who may not vacuum gets a
/// warning from PostgreSQL, not an error.
pub async fn vacuum(pool: &Pool) -> anyhow::Result<()> {
    pool.get()
        .await?
        .batch_execute("VACUUM (ANALYZE) runs, run_inbox")
        .await?;
    Ok(())
}
