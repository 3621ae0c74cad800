//! The parked-runs figure: what 100,000 runs waiting for a human cost an
//! instance in resident memory (`VmRSS` of this process), read before and
//! after they exist, with the instance's maintenance (`RunRegistry::
//! maintain`: heartbeat, claims, durable timers, gauges) running over them
//! meanwhile; and what one of its claim statements costs with them there.
//!
//! The runs are written in bulk (`seed`), with the state machine's own
//! entries and the summary row an actor leaves when it parks a run. That
//! is the same thing for an instance: a parked run has no actor and no
//! owner, so nothing of it is in any instance's memory; whatever it costs
//! comes from what instances do with the rows, which is what is measured.
//! (Driving 100,000 runs through actors would take most of the bench's
//! time, and the actors would be gone by the second reading.)

use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use uuid::Uuid;

use super::cluster::Instance;
use super::{InstantModel, seed};
use crate::tools::ToolContext;

/// Parked runs measured.
const RUNS: usize = 100_000;
/// Runs written per transaction; small, so the bench's own buffers for
/// them stay a small part of the reading.
const CHUNK: usize = 1_000;
/// An approval that expires long after the figure: the runs stay parked.
const APPROVAL_TIMEOUT_SECS: u64 = 86_400;
/// How long maintenance runs before each reading: several claim rounds
/// (one every 500 ms) and a heartbeat.
const SETTLE: Duration = Duration::from_secs(3);
/// Claim statements timed for each reading of the claim's cost.
const CLAIM_SAMPLES: usize = 9;

/// Prints the growth of the resident set with the parked runs there, and
/// the cost of one claim statement before and with them.
pub async fn run(
    pool: &Pool,
    config: &tokio_postgres::Config,
    tools: &ToolContext,
) -> anyhow::Result<()> {
    // Nothing is claimed, so the model is never asked.
    let model = std::sync::Arc::new(InstantModel { steps: 0 });
    let mut instance = Instance::start(config, "parked", model, tools, 10).await?;
    instance.maintain();
    tokio::time::sleep(SETTLE).await;
    let claim_before = claim_cost(&instance).await?;
    let before = resident_bytes()?;

    let writing = Instant::now();
    let models = instance.registry.deps().models.clone();
    let mut ids = Vec::with_capacity(RUNS);
    let mut entries = 0;
    while ids.len() < RUNS {
        let runs = (0..CHUNK.min(RUNS - ids.len()))
            .map(|_| seed::parked_run(APPROVAL_TIMEOUT_SECS, &models))
            .collect::<anyhow::Result<Vec<_>>>()?;
        seed::write_parked(pool, &runs).await?;
        entries += runs.iter().map(|r| r.events.len()).sum::<usize>();
        ids.extend(runs.iter().map(|r| r.state.run_id));
    }
    let writing = writing.elapsed();
    seed::analyze(pool).await?;
    let written = resident_bytes()?;

    tokio::time::sleep(SETTLE).await;
    let after = resident_bytes()?;
    let claim_after = claim_cost(&instance).await?;
    let actors = instance.registry.driving().len();
    let growth = after as f64 - before as f64;
    const MIB: f64 = 1024.0 * 1024.0;
    println!(
        "{:<44} {:>+8.1} MiB  ({:.0} bytes a run, {actors} actors; target <= 256 MB)",
        format!("resident memory of {RUNS} parked runs"),
        growth / MIB,
        growth / RUNS as f64,
    );
    // The growth counts what the bench's own writing left in the
    // allocator, so it is an upper bound; what the instance added while
    // its maintenance ran over the runs is the second part.
    println!(
        "{:<44} {:.1} MiB before, {:+.1} MiB while written, {:+.1} MiB while maintained",
        "  resident set",
        before as f64 / MIB,
        (written as f64 - before as f64) / MIB,
        (after as f64 - written as f64) / MIB,
    );
    println!(
        "{:<44} {:>8.2} s    ({RUNS} runs, {entries} entries, in bulk in the journal's shape)",
        "  written",
        writing.as_secs_f64(),
    );
    println!(
        "{:<44} {:>8.2} ms before, {:.2} ms with them (median; one every 500 ms per instance)",
        "  one claim statement",
        claim_before.as_secs_f64() * 1e3,
        claim_after.as_secs_f64() * 1e3,
    );

    instance.stop().await?;
    seed::forget_runs(pool, &ids).await?;
    seed::vacuum(pool).await
}

/// The median time of the claim statement the maintenance sends every
/// round; it claims nothing here, as no run needs a driver.
async fn claim_cost(instance: &Instance) -> anyhow::Result<Duration> {
    let mut samples = Vec::with_capacity(CLAIM_SAMPLES);
    for _ in 0..CLAIM_SAMPLES {
        let driving: Vec<Uuid> = instance.registry.driving();
        let started = Instant::now();
        let claims = instance.cluster().claim_due(&driving, 500).await?;
        samples.push(started.elapsed());
        anyhow::ensure!(claims.is_empty(), "a parked run was claimed");
    }
    samples.sort();
    Ok(samples[samples.len() / 2])
}

/// This process's resident set (`VmRSS`), in bytes.
fn resident_bytes() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/self/status"))?;
    Ok(kib * 1024)
}
