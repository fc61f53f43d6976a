//! Group commit for durable writes: callers queue jobs, and one thread takes everything queued
//! and commits it together. N jobs queued while the disk was busy with the last group then cost
//! one `fdatasync` (call markers) or one directory `fsync` (the case spool) instead of N, and
//! the hand-over is one channel send instead of a blocking-pool task each.
//!
//! Each job carries its own reply; the commit function answers every job only once the group's
//! sync returned, so a caller told "durable" can rely on it exactly as with one write at a time.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock, mpsc};

/// Jobs committed together at most, so that the first job of a long queue does not wait for
/// the writes of all the others.
const MAX_GROUP: usize = 128;

type Commit<J> = Arc<dyn Fn(Vec<J>) + Send + Sync>;

/// A queue and the thread that commits it; the thread starts with the first job and ends when
/// this is dropped (after committing what is still queued).
pub(crate) struct GroupCommit<J: Send + 'static> {
    name: &'static str,
    commit: Commit<J>,
    /// `None` when the thread could not be started.
    queue: OnceLock<Option<mpsc::Sender<J>>>,
}

impl<J: Send + 'static> GroupCommit<J> {
    /// `commit` writes a group of jobs durably and answers each; `name` names its thread.
    pub(crate) fn new(name: &'static str, commit: impl Fn(Vec<J>) + Send + Sync + 'static) -> Self {
        GroupCommit {
            name,
            commit: Arc::new(commit),
            queue: OnceLock::new(),
        }
    }

    /// Queues `job` for the next group. Does not block.
    pub(crate) fn submit(&self, job: J) {
        let queue = self.queue.get_or_init(|| self.start());
        let job = match queue {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        // Without the thread the job is committed alone, as before group commit.
        let commit = self.commit.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || commit(vec![job]))),
            Err(_) => commit(vec![job]),
        }
    }

    fn start(&self) -> Option<mpsc::Sender<J>> {
        let (tx, rx) = mpsc::channel();
        let commit = self.commit.clone();
        let started = std::thread::Builder::new()
            .name(self.name.into())
            .spawn(move || run(&rx, &*commit));
        match started {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::error!(thread = self.name, error = %e, "group commit thread not started; writes go one by one");
                None
            }
        }
    }
}

fn run<J>(rx: &mpsc::Receiver<J>, commit: &(dyn Fn(Vec<J>) + Send + Sync)) {
    while let Ok(first) = rx.recv() {
        let mut group = Vec::with_capacity(8);
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        // A panic drops the group's replies (their callers see the write as failed); the
        // thread goes on with the next group rather than leave every later job unanswered.
        if std::panic::catch_unwind(AssertUnwindSafe(|| commit(group))).is_err() {
            tracing::error!("group commit panicked; its writes are reported as failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn jobs_queued_together_are_committed_as_one_group_and_each_answered() {
        let groups = Arc::new(Mutex::new(Vec::new()));
        let seen = groups.clone();
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new(gate_rx);
        let commit = GroupCommit::new(
            "test-commit",
            move |jobs: Vec<(u32, tokio::sync::oneshot::Sender<u32>)>| {
                // The first group waits until the test has queued the rest behind it.
                if jobs[0].0 == 0 {
                    let _ = gate.lock().map(|g| g.recv());
                }
                seen.lock().expect("lock").push(jobs.len());
                for (n, reply) in jobs {
                    let _ = reply.send(n * 10);
                }
            },
        );
        let mut replies = Vec::new();
        for n in 0..5 {
            let (tx, rx) = tokio::sync::oneshot::channel();
            commit.submit((n, tx));
            replies.push(rx);
        }
        gate_tx.send(()).expect("gate");
        for (n, rx) in (0..5).zip(replies) {
            assert_eq!(rx.await.expect("answered"), n * 10);
        }
        let groups = groups.lock().expect("lock").clone();
        assert_eq!(groups.iter().sum::<usize>(), 5);
        assert!(
            groups.len() <= 2,
            "the four queued behind the first form one group: {groups:?}"
        );
    }

    #[tokio::test]
    async fn a_panicking_group_fails_its_jobs_and_the_next_group_is_committed() {
        let commit = GroupCommit::new(
            "test-panic",
            |jobs: Vec<(bool, tokio::sync::oneshot::Sender<()>)>| {
                for (panic, reply) in jobs {
                    assert!(!panic, "a commit that panics");
                    let _ = reply.send(());
                }
            },
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        commit.submit((true, tx));
        assert!(
            rx.await.is_err(),
            "the panicked job is not answered as done"
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        commit.submit((false, tx));
        assert!(rx.await.is_ok());
    }
}
