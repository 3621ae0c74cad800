//! The journal's guarantees straight against PostgreSQL: idempotent keys, a
//! fenced stale writer, all-or-nothing batches, concurrent migrations, and
//! group commit that never lets one run's failure reach another.

use agent_server::agents::AgentName;
use agent_server::db;
use agent_server::domain::{Event, EventBody};
use agent_server::domain::{RunStatus, RunSummary};
use agent_server::journal::{self, Error, NewRun};
use chrono::Utc;
use uuid::Uuid;

use crate::helpers::fresh_database;

/// An append by the run's first owner (epoch 1).
fn put(run_id: Uuid, events: Vec<Event>, summary: Option<RunSummary>) -> journal::Append {
    journal::Append {
        run_id,
        epoch: 1,
        events,
        summary,
        release: false,
        answer: None,
    }
}

async fn pool() -> deadpool_postgres::Pool {
    let url = fresh_database().await;
    let pool = db::pool(url.parse().unwrap(), 4).unwrap();
    db::migrate(&pool).await.unwrap();
    pool
}

fn entry(seq: i64, key: &str) -> Event {
    Event {
        seq,
        agent: Some(AgentName::Coding),
        at: Utc::now(),
        key: key.into(),
        body: EventBody::ToolStarted {
            call_id: key.into(),
            tool: "list_files".into(),
        },
    }
}

async fn new_run(pool: &deadpool_postgres::Pool) -> Uuid {
    let id = Uuid::new_v4();
    let start = agent_server::run::state::Start {
        run_id: id,
        agent: AgentName::Coding,
        task: "t".into(),
        approval_timeout_secs: 60,
        trace: agent_server::telemetry::trace::TraceRef::new(None),
        created_by: "test".into(),
        budget: Default::default(),
    };
    let run = NewRun {
        id,
        started: agent_server::run::state::started_entry(start, agent_server::journal::now()),
        owner: "test".into(),
        idempotency_key: None,
        limits: None,
    };
    journal::create_run(pool, &run).await.unwrap();
    run.id
}

#[actix_web::test]
async fn a_stale_writer_cannot_fork_the_history() {
    let pool = pool().await;
    let run = new_run(&pool).await;
    journal::append(&pool, &put(run, vec![entry(2, "a")], None))
        .await
        .unwrap();

    // Another writer with the same view names the same seq: refused.
    let err = journal::append(&pool, &put(run, vec![entry(2, "b")], None))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Stale(_)), "{err}");
    // Writing an entry whose key exists is a no-op, reported as stale.
    let err = journal::append(&pool, &put(run, vec![entry(3, "a")], None))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Stale(_)), "{err}");
    // A batch with one taken key writes nothing at all, summary included.
    let summary = RunSummary {
        status: RunStatus::Failed,
        pending_approval: None,
        usage: Default::default(),
        result: None,
        error: None,
        budget: None,
        cost_usd: 0.0,
    };
    let err = journal::append(
        &pool,
        &put(
            run,
            vec![entry(3, "c"), entry(4, "a")],
            Some(summary.clone()),
        ),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Stale(_)), "{err}");

    let events = journal::load(&pool, run).await.unwrap();
    let keys: Vec<&str> = events.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["run-started", "a"]);
    let record = journal::get_run(&pool, run).await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Pending);
    assert_eq!(record.last_seq, 2);

    // The writer with the true view goes on.
    journal::append(
        &pool,
        &put(
            run,
            vec![entry(3, "c"), entry(4, "d")],
            Some(summary.clone()),
        ),
    )
    .await
    .unwrap();
    let record = journal::get_run(&pool, run).await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    assert_eq!(record.last_seq, 4);
}

#[actix_web::test]
async fn a_writer_whose_run_was_claimed_again_writes_nothing() {
    let pool = pool().await;
    let run = new_run(&pool).await;
    journal::append(&pool, &put(run, vec![entry(2, "a")], None))
        .await
        .unwrap();
    // Another instance claims the run: the epoch moves on.
    pool.get()
        .await
        .unwrap()
        .execute(
            "UPDATE runs SET owner = 'other', epoch = epoch + 1 WHERE id = $1",
            &[&run],
        )
        .await
        .unwrap();
    let summary = RunSummary {
        status: RunStatus::Running,
        pending_approval: None,
        usage: Default::default(),
        result: None,
        error: None,
        budget: None,
        cost_usd: 0.0,
    };
    for append in [
        put(run, vec![entry(3, "b")], None),
        put(run, vec![entry(3, "b"), entry(4, "c")], None),
        put(run, vec![entry(3, "b")], Some(summary.clone())),
    ] {
        let err = journal::append(&pool, &append).await.unwrap_err();
        assert!(matches!(err, Error::Fenced(_)), "{err}");
    }
    let record = journal::get_run(&pool, run).await.unwrap().unwrap();
    assert_eq!(record.last_seq, 2);
    assert_eq!(record.status, RunStatus::Pending);
    // The new owner writes under its epoch.
    let mut current = put(run, vec![entry(3, "b")], Some(summary));
    current.epoch = 2;
    journal::append(&pool, &current).await.unwrap();
    assert_eq!(
        journal::get_run(&pool, run)
            .await
            .unwrap()
            .unwrap()
            .last_seq,
        3
    );
}

#[actix_web::test]
async fn two_instances_can_migrate_at_once() {
    let url = fresh_database().await;
    let first = db::pool(url.parse().unwrap(), 2).unwrap();
    let second = db::pool(url.parse().unwrap(), 2).unwrap();
    let (a, b) = tokio::join!(db::migrate(&first), db::migrate(&second));
    a.unwrap();
    b.unwrap();
    let client = first.get().await.unwrap();
    let applied: i64 = client
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .count() as i64;
    assert_eq!(applied, files, "each migration applied once");
}

#[actix_web::test]
async fn appends_of_many_runs_share_commits_and_a_stale_one_fails_alone() {
    let pool = pool().await;
    let writer = journal::Writer::start(pool.clone());
    let mut runs = Vec::new();
    for _ in 0..16 {
        runs.push(new_run(&pool).await);
    }
    // The last run's seq 2 is taken already: its writer is stale.
    let stale = runs[15];
    journal::append(&pool, &put(stale, vec![entry(2, "first")], None))
        .await
        .unwrap();

    // All at once: the first goes alone, the other 15 meet in one
    // transaction, which the stale append makes fail; each is retried alone.
    let outcomes = futures_util::future::join_all(
        runs.iter()
            .map(|run| writer.append(put(*run, vec![entry(2, "a")], None))),
    )
    .await;
    for (run, (outcome, events)) in runs.iter().zip(outcomes) {
        assert_eq!(events.len(), 1, "the entries come back");
        if *run == stale {
            assert!(matches!(outcome, Err(Error::Stale(_))), "{outcome:?}");
        } else {
            outcome.unwrap();
        }
    }
    for run in &runs {
        let journal = journal::load(&pool, *run).await.unwrap();
        let keys: Vec<&str> = journal.iter().skip(1).map(|e| e.key.as_str()).collect();
        let expected = if *run == stale { ["first"] } else { ["a"] };
        assert_eq!(keys, expected);
    }

    // Again, all valid: committed in fewer transactions than appends.
    let before = writer.stats();
    let outcomes = futures_util::future::join_all(
        runs[..15]
            .iter()
            .map(|run| writer.append(put(*run, vec![entry(3, "b")], None))),
    )
    .await;
    assert!(outcomes.iter().all(|(outcome, _)| outcome.is_ok()));
    let after = writer.stats();
    assert_eq!(after.appends - before.appends, 15);
    assert!(
        after.transactions - before.transactions <= 2,
        "{before:?} -> {after:?}"
    );
    for run in &runs[..15] {
        assert_eq!(journal::load(&pool, *run).await.unwrap().len(), 3);
    }
}
