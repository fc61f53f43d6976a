//! Enqueueing into the outbox, one case at a time or as a group commit: the cases of a group are
//! each written to a temp file and fsynced, renamed into `pending/`, and then one fsync of
//! `pending/` makes every rename of the group durable. No case of a group is reported spooled
//! (nor indexed for delivery) before that directory fsync returned.

use super::{
    CASE_SUFFIX, DeliveryMeta, Entry, Inner, Outbox, OutboxError, OutboxEvent, io_err, sync_dir,
    unix_ms, write_temp_synced,
};
use crate::case::CaseId;
use crate::runtime::group_commit::GroupCommit;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

/// Runs on the spool thread once its case is durable, before the caller is answered.
type Then = Box<dyn FnOnce() + Send>;

/// A case waiting for its group commit.
pub(super) struct EnqueueJob {
    case_id: CaseId,
    json: Vec<u8>,
    then: Option<Then>,
    reply: tokio::sync::oneshot::Sender<Result<(), OutboxError>>,
}

/// The spool's group commit thread (`ivrd-spool`).
pub(super) fn group_commit(inner: Arc<Inner>) -> GroupCommit<EnqueueJob> {
    GroupCommit::new("ivrd-spool", move |jobs: Vec<EnqueueJob>| {
        let mut announcements = Vec::with_capacity(jobs.len());
        let results = {
            let cases: Vec<(&CaseId, &[u8])> = jobs
                .iter()
                .map(|j| (&j.case_id, j.json.as_slice()))
                .collect();
            enqueue_group(&inner, &cases)
        };
        for (job, result) in jobs.into_iter().zip(results) {
            if let (Ok(()), Some(then)) = (&result, job.then) {
                then();
            }
            let spooled = result.is_ok();
            // A caller that went away has nothing to be told; the case is spooled all the same.
            let _ = job.reply.send(result);
            if spooled {
                announcements.push(job.case_id);
            }
        }
        announce(&inner, &announcements);
    })
}

impl Outbox {
    /// Durably spools one case: validates that `json` is JSON, writes `pending/<id>.json.tmp`, fsyncs
    /// it, renames it to `pending/<id>.json` and fsyncs the directory, then wakes the worker. Blocks
    /// on disk I/O: async callers use [`Outbox::enqueue_async`].
    pub fn enqueue(&self, case_id: &CaseId, json: &[u8]) -> Result<(), OutboxError> {
        let mut results = enqueue_group(&self.inner, &[(case_id, json)]);
        if let Some(Ok(())) = results.last() {
            announce(&self.inner, [case_id]);
        }
        results.pop().unwrap_or(Err(OutboxError::EnqueueTask {
            case_id: case_id.clone(),
        }))
    }

    /// [`Outbox::enqueue`] for async callers (call tasks): the case joins the spool thread's next
    /// group commit; the answer comes once it is durable.
    pub async fn enqueue_async(&self, case_id: CaseId, json: Vec<u8>) -> Result<(), OutboxError> {
        self.submit(case_id, json, None).await
    }

    /// [`Outbox::enqueue_async`], and once the case is durable `then` runs on the spool thread
    /// (blocking work is fine there), before this returns. It does not run if the enqueue fails.
    pub async fn enqueue_async_then(
        &self,
        case_id: CaseId,
        json: Vec<u8>,
        then: impl FnOnce() + Send + 'static,
    ) -> Result<(), OutboxError> {
        self.submit(case_id, json, Some(Box::new(then))).await
    }

    async fn submit(
        &self,
        case_id: CaseId,
        json: Vec<u8>,
        then: Option<Then>,
    ) -> Result<(), OutboxError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.group.submit(EnqueueJob {
            case_id: case_id.clone(),
            json,
            then,
            reply,
        });
        answer
            .await
            .unwrap_or(Err(OutboxError::EnqueueTask { case_id }))
    }
}

/// A case of a group on its way: its temp file, written and fsynced, waiting for the rename.
struct Written {
    index: usize,
    tmp: PathBuf,
}

/// Spools `cases` as one group commit; returns each case's result, in order.
pub(super) fn enqueue_group(
    inner: &Inner,
    cases: &[(&CaseId, &[u8])],
) -> Vec<Result<(), OutboxError>> {
    let mut results: Vec<Result<(), OutboxError>> = Vec::with_capacity(cases.len());
    let mut written = Vec::with_capacity(cases.len());
    for (index, (case_id, json)) in cases.iter().enumerate() {
        let earlier = &cases[..index];
        let result =
            check(inner, case_id, json, earlier).and_then(|()| write_temp(inner, case_id, json));
        match result {
            Ok(tmp) => {
                written.push(Written { index, tmp });
                results.push(Ok(()));
            }
            Err(e) => results.push(Err(e)),
        }
    }
    let dir = &inner.pending_dir;
    let mut renamed = Vec::with_capacity(written.len());
    for w in written {
        let (case_id, _) = cases[w.index];
        let path = dir.join(format!("{case_id}{CASE_SUFFIX}"));
        match fs::rename(&w.tmp, &path).map_err(io_err("rename", &w.tmp)) {
            Ok(()) => renamed.push(w.index),
            Err(e) => results[w.index] = Err(e),
        }
    }
    if renamed.is_empty() {
        return results;
    }
    // One fsync of the directory makes every rename of the group durable.
    if let Err(e) = sync_dir(dir) {
        let reason = e.to_string();
        for &i in &renamed {
            results[i] = Err(OutboxError::Io {
                op: "fsync",
                path: dir.clone(),
                source: std::io::Error::other(reason.clone()),
            });
        }
        return results;
    }
    let now = unix_ms(SystemTime::now());
    let mut state = inner.lock();
    for &i in &renamed {
        state.entry(cases[i].0.clone()).or_insert(Entry {
            meta: DeliveryMeta::fresh(now),
            in_flight: false,
        });
    }
    results
}

/// Tells the subscribers and the delivery worker about cases just spooled. Separate from
/// [`enqueue_group`] so that the spool thread answers its callers first: each answer and each
/// announcement wakes a task, and the wakes then come together.
fn announce<'a>(inner: &Inner, spooled: impl IntoIterator<Item = &'a CaseId>) {
    let mut any = false;
    for case_id in spooled {
        any = true;
        // No subscriber is normal (no test, no metrics yet), so a send error is not a failure.
        let _ = inner.events.send(OutboxEvent::Enqueued {
            case_id: case_id.clone(),
        });
    }
    if any {
        inner.notify.notify_one();
    }
}

/// Refuses a body that is not JSON and a case the spool (or an earlier case of the same group)
/// already has.
fn check(
    inner: &Inner,
    case_id: &CaseId,
    json: &[u8],
    earlier: &[(&CaseId, &[u8])],
) -> Result<(), OutboxError> {
    if let Err(source) = serde_json::from_slice::<serde::de::IgnoredAny>(json) {
        return Err(OutboxError::NotJson {
            case_id: case_id.clone(),
            source,
        });
    }
    if earlier.iter().any(|(id, _)| *id == case_id) || inner.lock().contains_key(case_id) {
        return Err(OutboxError::Duplicate {
            case_id: case_id.clone(),
        });
    }
    Ok(())
}

/// Writes `pending/<id>.json.tmp` and fsyncs it.
fn write_temp(inner: &Inner, case_id: &CaseId, json: &[u8]) -> Result<PathBuf, OutboxError> {
    write_temp_synced(&inner.pending_dir, &format!("{case_id}{CASE_SUFFIX}"), json)
}
