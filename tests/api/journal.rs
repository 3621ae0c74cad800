//! The journal's guarantees straight against PostgreSQL: idempotent keys, a
//! fenced stale writer, all-or-nothing batches, concurrent migrations.

use agent_server::agents::AgentName;
use agent_server::db;
use agent_server::journal::{self, Error, NewRun};
use agent_server::run::event::{Event, EventBody};
use agent_server::run::state::{RunStatus, RunSummary};
use chrono::Utc;
use uuid::Uuid;

use crate::helpers::fresh_database;

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
    let run = NewRun {
        id: Uuid::new_v4(),
        agent: AgentName::Coding,
        task: "t".into(),
        approval_timeout_secs: 60,
        idempotency_key: None,
        at: Utc::now(),
        trace: agent_server::telemetry::trace::TraceRef::new(None),
    };
    journal::create_run(pool, &run).await.unwrap();
    run.id
}

#[actix_web::test]
async fn a_stale_writer_cannot_fork_the_history() {
    let pool = pool().await;
    let run = new_run(&pool).await;
    journal::append(&pool, run, &[entry(2, "a")], None)
        .await
        .unwrap();

    // Another writer with the same view names the same seq: refused.
    let err = journal::append(&pool, run, &[entry(2, "b")], None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Stale(_)), "{err}");
    // Writing an entry whose key exists is a no-op, reported as stale.
    let err = journal::append(&pool, run, &[entry(3, "a")], None)
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
    };
    let err = journal::append(&pool, run, &[entry(3, "c"), entry(4, "a")], Some(&summary))
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
    journal::append(&pool, run, &[entry(3, "c"), entry(4, "d")], Some(&summary))
        .await
        .unwrap();
    let record = journal::get_run(&pool, run).await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    assert_eq!(record.last_seq, 4);
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
