//! Group commit: the journal writer the run actors share. Appends that
//! arrive while a commit is in flight are committed together, in one
//! transaction, so many runs stepping at once pay for one commit (one WAL
//! flush, one round trip to finish it) instead of one each.
//!
//! An append that finds no other in flight is committed at once by its
//! caller, without a detour through the workers, so a lone run's step costs
//! what it did before; only appends that meet others are queued.
//!
//! Each append is answered only after the transaction that holds it has
//! committed, so an actor still never acts on an entry that is not durable.
//! A batch is all-or-nothing for PostgreSQL; when any append in it fails (a
//! stale writer's, typically) the batch is rolled back and every append is
//! retried on its own, so one run's error is never another run's.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use deadpool_postgres::Pool;
use futures_util::future::join_all;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{Append, Error, append, append_on};
use crate::domain::Event;

/// Appends in one transaction at the most; more wait for the next one.
const MAX_BATCH: usize = 64;

/// Transactions in flight at once: one filling while one commits keeps the
/// database busy without splitting a burst into many small batches.
const WORKERS: usize = 2;

/// One run's append and where its outcome goes.
struct Request {
    append: Append,
    done: oneshot::Sender<(Result<(), Error>, Vec<Event>)>,
}

/// The shared writer; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    pool: Pool,
    queue: mpsc::UnboundedSender<Request>,
    /// Appends being committed now, by callers or by the workers.
    in_flight: Arc<AtomicUsize>,
    counts: Arc<Counts>,
}

/// What the writer has done so far.
#[derive(Debug, Default)]
struct Counts {
    appends: AtomicUsize,
    transactions: AtomicUsize,
}

/// How many appends the writer committed, in how many transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    pub appends: usize,
    pub transactions: usize,
}

/// Counts an append as in flight until it is dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Writer {
    /// Starts the writer's workers on the current Tokio runtime; they stop
    /// when every `Writer` is dropped.
    pub fn start(pool: Pool) -> Writer {
        let (queue, requests) = mpsc::unbounded_channel();
        let requests = Arc::new(Mutex::new(requests));
        let counts = Arc::new(Counts::default());
        for _ in 0..WORKERS {
            tokio::spawn(work(pool.clone(), requests.clone(), counts.clone()));
        }
        Writer {
            pool,
            queue,
            in_flight: Arc::default(),
            counts,
        }
    }

    /// Appends committed so far, and the transactions that held them.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            appends: self.counts.appends.load(Ordering::Relaxed),
            transactions: self.counts.transactions.load(Ordering::Relaxed),
        }
    }

    /// Creates a run (its summary row and `RUN_STARTED`), under the
    /// creator's limits: a transaction of its own, as it reads before it
    /// writes.
    pub async fn create(&self, run: &super::NewRun) -> Result<super::Created, Error> {
        super::create_run(&self.pool, run).await
    }

    /// `journal::append`, committed with whatever other runs append at the
    /// same moment. Gives the entries back, for the caller to publish.
    pub async fn append(&self, append: Append) -> (Result<(), Error>, Vec<Event>) {
        let alone = self.in_flight.fetch_add(1, Ordering::AcqRel) == 0;
        let _counted = InFlight(&self.in_flight);
        if alone {
            let outcome = super::append(&self.pool, &append).await;
            self.counts.committed(&outcome, 1);
            return (outcome, append.events);
        }
        let (done, outcome) = oneshot::channel();
        let request = Request { append, done };
        if let Err(refused) = self.queue.send(request) {
            return (Err(Error::WriterStopped), refused.0.append.events);
        }
        outcome
            .await
            .unwrap_or_else(|_| (Err(Error::WriterStopped), Vec::new()))
    }
}

impl Counts {
    /// Counts a transaction of `appends` appends, when it committed.
    fn committed(&self, outcome: &Result<(), Error>, appends: usize) {
        if outcome.is_ok() {
            self.appends.fetch_add(appends, Ordering::Relaxed);
            self.transactions.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Takes what is queued (waiting for the first request), commits it, again.
async fn work(
    pool: Pool,
    requests: Arc<Mutex<mpsc::UnboundedReceiver<Request>>>,
    counts: Arc<Counts>,
) {
    loop {
        let mut batch = Vec::new();
        {
            let mut requests = requests.lock().await;
            match requests.recv().await {
                Some(request) => batch.push(request),
                None => return,
            }
            while batch.len() < MAX_BATCH {
                match requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
        }
        commit(&pool, batch, &counts).await;
    }
}

async fn commit(pool: &Pool, batch: Vec<Request>, counts: &Counts) {
    if batch.len() > 1 {
        let outcome = together(pool, &batch).await;
        counts.committed(&outcome, batch.len());
        if outcome.is_ok() {
            for request in batch {
                let _ = request.done.send((Ok(()), request.append.events));
            }
            return;
        }
        // Something failed and the transaction is gone: each on its own now.
    }
    join_all(
        batch
            .into_iter()
            .map(|request| alone(pool, request, counts)),
    )
    .await;
}

/// One append in a transaction of its own, answered.
async fn alone(pool: &Pool, request: Request, counts: &Counts) {
    let outcome = append(pool, &request.append).await;
    counts.committed(&outcome, 1);
    let _ = request.done.send((outcome, request.append.events));
}

/// Every append of `batch` in one transaction; the statements are sent
/// without waiting for each other's answers (the driver pipelines them).
async fn together(pool: &Pool, batch: &[Request]) -> Result<(), Error> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    let outcomes = join_all(
        batch
            .iter()
            .map(|request| append_on(&transaction, &request.append)),
    )
    .await;
    for outcome in outcomes {
        outcome?;
    }
    transaction.commit().await?;
    Ok(())
}
