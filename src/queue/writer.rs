//! Group commit: accepting sessions and finishing workers hand their queue writes to one
//! writer task per process, which commits whatever has gathered while the previous commit
//! ran in one transaction (one fsync for the batch). Each caller gets its answer only once
//! its batch is committed, so a session still answers 250 only for mail that is stored.
//! A batch that fails is retried one job at a time, so one bad job fails only itself.

use tokio::sync::{mpsc, oneshot};

use super::{IdMapping, Leased, Outgoing};
use crate::store::{Db, StoreError};

/// Jobs in one transaction at most.
const MAX_BATCH: usize = 128;

enum Op {
    Enqueue { items: Vec<Outgoing>, mappings: Vec<IdMapping> },
    Complete(Box<Leased>),
}

enum Done {
    Enqueued(Vec<String>),
    /// False: the lease was lost, nothing written.
    Completed(bool),
}

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Done, StoreError>>,
}

/// The handle sessions and workers write through.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer task; it ends when the last handle is dropped.
    pub fn start(db: Db, relay_domain: String) -> Self {
        let (jobs, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(db, relay_domain, rx));
        Self { jobs }
    }

    async fn submit(&self, op: Op) -> Result<Done, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { op, reply })
            .await
            .map_err(|_| StoreError::Unavailable(sqlx::Error::PoolClosed))?;
        answer.await.map_err(|_| StoreError::Unavailable(sqlx::Error::PoolClosed))?
    }

    /// `queue::enqueue`, committed with whatever else is being written now.
    pub async fn enqueue(
        &self,
        items: &[Outgoing],
        mappings: &[IdMapping],
    ) -> Result<Vec<String>, StoreError> {
        match self.submit(Op::Enqueue { items: items.to_vec(), mappings: mappings.to_vec() }).await? {
            Done::Enqueued(ids) => Ok(ids),
            Done::Completed(_) => unreachable!("an enqueue answers with ids"),
        }
    }

    /// `queue::complete`, committed with whatever else is being written now.
    pub async fn complete(&self, msg: &Leased) -> Result<bool, StoreError> {
        match self.submit(Op::Complete(Box::new(msg.clone()))).await? {
            Done::Completed(written) => Ok(written),
            Done::Enqueued(_) => unreachable!("a completion answers with a flag"),
        }
    }
}

async fn run(db: Db, relay_domain: String, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        match commit(&db, &relay_domain, &batch).await {
            Ok(results) => {
                for (job, done) in batch.into_iter().zip(results) {
                    let _ = job.reply.send(Ok(done));
                }
            }
            Err(e) if batch.len() == 1 => {
                let _ = batch.pop().expect("one job").reply.send(Err(e));
            }
            Err(_) => {
                for job in batch {
                    let result = commit(&db, &relay_domain, std::slice::from_ref(&job))
                        .await
                        .map(|mut done| done.remove(0));
                    let _ = job.reply.send(result);
                }
            }
        }
    }
}

/// One transaction for the whole batch; the answer of each job in order.
async fn commit(db: &Db, relay_domain: &str, batch: &[Job]) -> Result<Vec<Done>, StoreError> {
    let mut tx = db.pool.begin().await?;
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        results.push(match &job.op {
            Op::Enqueue { items, mappings } => {
                Done::Enqueued(super::insert(&mut tx, db, relay_domain, items, mappings).await?)
            }
            Op::Complete(msg) => Done::Completed(super::remove_leased(&mut tx, msg).await?),
        });
    }
    tx.commit().await?;
    Ok(results)
}
