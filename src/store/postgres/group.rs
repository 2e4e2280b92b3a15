//! Group commit for PostgreSQL's hot paths: what many requests ask at once goes to the server
//! as one batch (one transaction, one statement or a pipelined run of them) instead of one
//! round trip, one wake-up of a server process and, for a write, one WAL flush each.
//!
//! SQLite's writer does the same for its commits (`store::sqlite::db::writer`). Here a
//! [`Group`] owns a queue and a task: the task takes the first waiting item, then, once a
//! batch slot is free, everything else already waiting (up to a maximum), and runs them
//! together while the queue fills again. Nothing waits for company: an item alone is sent at
//! once, so a quiet server answers as fast as without grouping, and a busy one sends fewer,
//! larger batches. Each caller still awaits its own answer, which arrives only after its
//! batch is done (for a write: committed).
//!
//! A batch fails as a whole (a transaction does), so each of its callers gets a copy of the
//! error. A caller that goes away (its client hung up) does not stop its item: the batch runs,
//! and the answer is dropped.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};

use super::PgError;

/// Items waiting for a batch, each with where its answer goes.
type Queue<T, R> = mpsc::UnboundedSender<(T, oneshot::Sender<Result<R, PgError>>)>;

/// A queue of `T`s answered in batches by a function from `Vec<T>` to one answer per item,
/// in order. Cheap to clone.
pub struct Group<T, R> {
    queue: Queue<T, R>,
}

impl<T, R> Clone for Group<T, R> {
    fn clone(&self) -> Self {
        Group {
            queue: self.queue.clone(),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Group<T, R> {
    /// Starts the group's task on the current Tokio runtime: batches of at most `max` items,
    /// at most `slots` of them running at once (each holds a pooled connection), answered by
    /// `run`, which returns one answer per item, in order, or one error for them all.
    pub fn start<F, Fut>(max: usize, slots: usize, run: F) -> Group<T, R>
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<R>, PgError>> + Send + 'static,
    {
        let (queue, mut waiting) = mpsc::unbounded_channel::<(T, oneshot::Sender<_>)>();
        let slots = Arc::new(Semaphore::new(slots.max(1)));
        let run = Arc::new(run);
        tokio::spawn(async move {
            while let Some(first) = waiting.recv().await {
                // While every slot is busy, more items queue up and join the next batch.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let mut batch = vec![first];
                while batch.len() < max.max(1) {
                    match waiting.try_recv() {
                        Ok(item) => batch.push(item),
                        Err(_) => break,
                    }
                }
                let run = run.clone();
                tokio::spawn(async move {
                    let (items, answers): (Vec<T>, Vec<_>) = batch.into_iter().unzip();
                    let n = items.len();
                    match run(items).await {
                        Ok(results) if results.len() == n => {
                            for (answer, result) in answers.into_iter().zip(results) {
                                let _ = answer.send(Ok(result));
                            }
                        }
                        Ok(results) => {
                            let e = PgError::Internal(format!(
                                "a batch of {n} answered {} times",
                                results.len()
                            ));
                            for answer in answers {
                                let _ = answer.send(Err(e.clone()));
                            }
                        }
                        Err(e) => {
                            for answer in answers {
                                let _ = answer.send(Err(e.clone()));
                            }
                        }
                    }
                    drop(slot);
                });
            }
        });
        Group { queue }
    }

    /// Queues `item` and waits for its batch's answer.
    pub async fn call(&self, item: T) -> Result<R, PgError> {
        let (answer, answered) = oneshot::channel();
        let stopped = || PgError::Unavailable("the store is shutting down".into());
        self.queue.send((item, answer)).map_err(|_| stopped())?;
        // A batch that panicked drops its answers.
        answered.await.map_err(|_| {
            PgError::Internal("a batch of database work stopped without an answer".into())
        })?
    }

    /// Queues `item` for the next batch without waiting for it: its answer, and any error,
    /// go nowhere.
    pub fn send(&self, item: T) {
        let (answer, _) = oneshot::channel();
        let _ = self.queue.send((item, answer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Items that arrive while a batch runs are sent together in the next one, each caller
    /// gets its own answer, and an item alone does not wait.
    #[tokio::test]
    async fn items_waiting_together_go_in_one_batch() {
        let batches = Arc::new(AtomicUsize::new(0));
        let counted = batches.clone();
        let group = Group::start(64, 1, move |items: Vec<u32>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(items.into_iter().map(|i| i * 2).collect())
            }
        });
        assert_eq!(group.call(1).await.unwrap(), 2);
        assert_eq!(batches.load(Ordering::SeqCst), 1);
        let calls: Vec<_> = (0..50)
            .map(|i| {
                let g = group.clone();
                tokio::spawn(async move { g.call(i).await.unwrap() })
            })
            .collect();
        for (i, c) in calls.into_iter().enumerate() {
            assert_eq!(c.await.unwrap(), i as u32 * 2);
        }
        let n = batches.load(Ordering::SeqCst);
        assert!(
            (2..=4).contains(&n),
            "50 waiting items took {} batches",
            n - 1
        );
    }

    /// A batch that fails fails for each of its callers, and the group goes on.
    #[tokio::test]
    async fn a_failed_batch_answers_each_caller_with_its_error() {
        let group = Group::start(8, 2, |items: Vec<u32>| async move {
            if items.contains(&13) {
                Err(PgError::Busy("unlucky".into()))
            } else {
                Ok(items)
            }
        });
        let e = group.call(13).await.unwrap_err();
        assert!(matches!(e, PgError::Busy(ref m) if m == "unlucky"), "{e}");
        assert_eq!(group.call(7).await.unwrap(), 7);
    }
}
