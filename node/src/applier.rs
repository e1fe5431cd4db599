//! The applier: one thread per node that applies replica write batches.
//!
//! A batch of replica writes (a lane's, from this node's coordinator or a
//! peer's) touches the store for tens of microseconds: a point read, a
//! journal append, memtable inserts. Each used to take a thread of tokio's
//! blocking pool: a hand-off to an idle thread, its wake-up, and several
//! such threads contending for fjall's journal mutex. One thread per node
//! takes the batches in the order they come instead; under load it finds
//! the next batch queued when it finishes one and does not sleep between
//! them, and the batches of one node never contend with each other.
//!
//! The durability wait is not the applier's: a batch's job registers its
//! wait with the commit thread and returns once its writes are appended;
//! the commit thread's fsync answers the caller (see
//! `Coordinator::execute_batch_async`), so the waiting task is woken once
//! per batch, not once for the append and again for the fsync. A job that
//! panics fails alone: the thread catches it and takes the next.
//!
//! The queue has no bound of its own; its callers bound it. A peer's write
//! lane has one batch in flight at a time, and each of this node's own
//! replica writes is awaited by the request it serves (client requests and
//! read repairs, both bounded), so what waits here is at most one batch
//! per peer and one write per request in flight.
//!
//! Boundary: the applier runs closures; what they do is the coordinator's.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// The applier thread's queue. Dropping it lets the thread finish the
/// queued jobs and exit.
#[derive(Debug)]
pub struct Applier {
    jobs: mpsc::Sender<Job>,
}

/// The applier is gone (the node is shutting down) or the job panicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed;

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the applier did not finish the job")
    }
}

impl Applier {
    /// Starts the thread.
    pub fn start() -> std::io::Result<Applier> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("starling-apply".into())
            .spawn(move || {
                while let Ok(job) = queue.recv() {
                    // The job's own answer channel tells its caller; the
                    // panic message went to the log through the hook.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                }
            })?;
        Ok(Applier { jobs })
    }

    /// Runs `job` on the applier thread and returns its result.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Failed> {
        self.run_with(move |answer| answer.send(job())).await
    }

    /// Runs `job` on the applier thread and waits for the answer it hands
    /// to its [`Answer`], at once or later from another thread (a
    /// durability callback). An answer dropped unsent (the job panicked, or
    /// whoever held it did) is [`Failed`].
    pub async fn run_with<T: Send + 'static>(
        &self,
        job: impl FnOnce(Answer<T>) + Send + 'static,
    ) -> Result<T, Failed> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Box::new(move || job(Answer(tx))))
            .map_err(|_| Failed)?;
        rx.await.map_err(|_| Failed)
    }
}

/// Where a job of [`Applier::run_with`] hands its answer.
#[derive(Debug)]
pub struct Answer<T>(oneshot::Sender<T>);

impl<T> Answer<T> {
    /// Hands `value` to the waiting caller (gone callers are ignored).
    pub fn send(self, value: T) {
        let _ = self.0.send(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_in_order_and_a_panic_fails_only_its_own() {
        let applier = Applier::start().expect("starting the applier thread");
        let order = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let mut answers = Vec::new();
        for i in 0..10 {
            let order = order.clone();
            answers.push(applier.run(move || {
                order.lock().push(i);
                i * 2
            }));
        }
        let panicked = applier.run(|| -> u32 { panic!("a failing job") });
        let after = applier.run(|| 7);
        for (i, answer) in answers.into_iter().enumerate() {
            assert_eq!(answer.await, Ok(i * 2));
        }
        assert_eq!(panicked.await, Err(Failed));
        assert_eq!(after.await, Ok(7));
        assert_eq!(*order.lock(), (0..10).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn an_answer_may_come_from_another_thread_and_a_dropped_one_fails() {
        let applier = Applier::start().expect("starting the applier thread");
        let later = applier.run_with(|answer| {
            std::thread::spawn(move || answer.send("from elsewhere"));
        });
        assert_eq!(later.await, Ok("from elsewhere"));
        let dropped = applier.run_with(|answer: Answer<u8>| drop(answer));
        assert_eq!(dropped.await, Err(Failed));
    }
}
