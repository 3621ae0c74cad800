//! The cost of fencing: `journal::append` (every write names the writer's
//! epoch, and the statement refuses a stale one) against an append of the
//! same entries written without the epoch condition, which exists only
//! here. The two take turns on one run, so a busy moment hits both.

use std::time::{Duration, Instant};

use deadpool_postgres::Pool;

use super::{SAMPLES, summarize};
use crate::agents::AgentName;
use crate::domain::{Event, EventBody, RunStatus, RunSummary};
use crate::journal::{self, Append};

/// Prints both commits' p50 and p99, for an entry alone and for an entry
/// with its summary update, and the ratio of the fenced to the unfenced.
pub async fn run(pool: &Pool) -> anyhow::Result<()> {
    let run_id = super::create_run(pool).await?;
    let summary = RunSummary {
        status: RunStatus::Running,
        pending_approval: None,
        usage: Default::default(),
        result: None,
        error: None,
        budget: None,
        cost_usd: 0.0,
    };
    let mut seq = 1;
    let mut next = |with_summary: bool| {
        seq += 1;
        Append {
            run_id,
            epoch: 1,
            events: vec![Event {
                seq,
                agent: Some(AgentName::Coding),
                at: journal::now(),
                key: format!("bench:{seq}"),
                body: EventBody::ToolStarted {
                    call_id: format!("call_{seq}"),
                    tool: "list_files".into(),
                },
            }],
            summary: with_summary.then(|| summary.clone()),
            release: false,
            answer: None,
        }
    };
    for (shape, with_summary) in [("entry alone", false), ("entry + summary", true)] {
        let mut fenced = Vec::with_capacity(SAMPLES);
        let mut unfenced = Vec::with_capacity(SAMPLES);
        for turn in 0..SAMPLES {
            // Each goes first half of the time.
            for fence in [turn % 2 == 0, turn % 2 == 1] {
                let append = next(with_summary);
                let started = Instant::now();
                if fence {
                    journal::append(pool, &append).await?;
                    fenced.push(started.elapsed());
                } else {
                    append_unfenced(pool, &append).await?;
                    unfenced.push(started.elapsed());
                }
            }
        }
        let (fenced_p50, fenced_p99) =
            summarize(&format!("commit with the epoch check, {shape}"), fenced);
        let (unfenced_p50, unfenced_p99) =
            summarize(&format!("commit without it, {shape}"), unfenced);
        println!(
            "{:<44} p50 {:>8.3} x    p99 {:>8.3} x    (target <= 1.05 x)",
            "  cost of fencing: with over without",
            ratio(fenced_p50, unfenced_p50),
            ratio(fenced_p99, unfenced_p99),
        );
    }
    super::seed::forget_runs(pool, &[run_id]).await
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

/// `journal::append` of one entry, with or without its summary, minus the
/// fence: the same statements on the same connection path, without
/// `epoch = …` (a plain insert, and the summary update by id alone).
async fn append_unfenced(pool: &Pool, append: &Append) -> anyhow::Result<()> {
    let client = pool.get().await?;
    let [event] = append.events.as_slice() else {
        anyhow::bail!("the unfenced append writes one entry");
    };
    let (type_name, mut payload) = event.body.to_columns();
    journal::storable(&mut payload);
    let agent = event.agent.map(AgentName::as_str);
    let inserted = match &append.summary {
        None => {
            let statement = client
                .prepare_cached(
                    "INSERT INTO run_events (run_id, seq, type, agent, at, key, payload)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .await?;
            client
                .execute(
                    &statement,
                    &[
                        &append.run_id,
                        &event.seq,
                        &type_name,
                        &agent,
                        &event.at,
                        &event.key,
                        &payload,
                    ],
                )
                .await?
        }
        Some(summary) => {
            let usage = serde_json::to_value(&summary.usage)?;
            let pending = summary
                .pending_approval
                .as_ref()
                .map(serde_json::to_value)
                .transpose()?;
            let error = summary
                .error
                .as_ref()
                .map(serde_json::to_value)
                .transpose()?;
            let wake_at: Option<chrono::DateTime<chrono::Utc>> = None;
            let budget = summary
                .budget
                .as_ref()
                .map(serde_json::to_value)
                .transpose()?;
            let statement = client
                .prepare_cached(
                    "WITH upd AS (
                        UPDATE runs SET status = $8, pending_approval = $9, usage = $10,
                               result = $11, error = $12, updated_at = $13, wake_at = $14,
                               owner = CASE WHEN $15 THEN NULL ELSE owner END,
                               budget = $16, cost_usd = $17
                        WHERE id = $1
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
                        &append.run_id,
                        &vec![event.seq],
                        &vec![type_name],
                        &vec![agent],
                        &vec![event.at],
                        &vec![event.key.as_str()],
                        &vec![payload],
                        &summary.status.as_str(),
                        &pending,
                        &usage,
                        &summary.result,
                        &error,
                        &Some(event.at),
                        &wake_at,
                        &append.release,
                        &budget,
                        &summary.cost_usd,
                    ],
                )
                .await?
        }
    };
    anyhow::ensure!(inserted == 1, "the unfenced append wrote {inserted} rows");
    Ok(())
}
