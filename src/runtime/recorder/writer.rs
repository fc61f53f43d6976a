//! The recording writer: one thread that owns every open recording file and does all disk work.
//!
//! Messages arrive in order on one bounded channel, so a recording's blocks, its finish and any
//! drain barrier are handled in the order the call sent them. The slow, disk-bound end of a
//! recording (fsync, rename, hash) is the [`Finisher`]'s, on a thread of its own, so that it
//! never holds up other calls' blocks; should the writer still fall behind, the queue absorbs
//! it, and when it overflows the calls drop blocks rather than wait.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Instant;

use prometheus::Histogram;

use super::finisher::Finisher;
use super::open_recording::OpenRecording;
use super::pool::BlockPool;
use super::{Progress, RecordingError, RecordingName, RecordingSummary};
use crate::media::g711::FRAME_SAMPLES;
use crate::metrics::WriterOpTimes;

/// Samples in one block: 12 frames (0.24 s) of stereo or 24 of mono, 7.5 KiB. Smaller blocks
/// cost the writer more system calls; larger ones cost every open recording more memory (it
/// owns the block it is filling).
pub(crate) const BLOCK_SAMPLES: usize = 12 * 2 * FRAME_SAMPLES;
/// The recording writer's nice value (see [`RecordingWriter::spawn`]): at -10 its fair share
/// under contention is about ten times a nice-0 thread's.
const WRITER_NICE: i32 = -10;
/// How long the writer collects blocks before it wakes again. Blocks come from every call at
/// random moments; waking for each would cost a context switch per block, and nothing waits
/// for a block (a finishing recording waits at most this long). What waits is in memory:
/// about 100 ms of every open recording, under half a block each (a block is 0.24 s).
const BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(100);
/// Written blocks go back to the pool at least this often, also in the middle of a batch: a
/// writer behind its queue may drain it for seconds, and blocks held back that long would
/// have the calls allocate new ones for every block they fill.
const PUT_BACK_EVERY: usize = 32;

/// A fixed run of interleaved samples on its way from a call to the writer.
///
/// Samples first, on a cache-line boundary: a pushed frame (640 bytes stereo, 320 mono) then
/// fills exactly 10 or 5 lines instead of straddling one more, and each line is a miss in the
/// media clock's tick.
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct Block {
    pub(crate) samples: [i16; BLOCK_SAMPLES],
    /// Index (in 20 ms frames since the start) of the first frame in `samples`.
    pub(crate) first_frame: u64,
    /// Samples in use.
    pub(crate) len: usize,
}

impl Block {
    pub(crate) fn new_boxed(first_frame: u64) -> Box<Block> {
        Box::new(Block {
            first_frame,
            len: 0,
            samples: [0; BLOCK_SAMPLES],
        })
    }

    pub(crate) fn reset(&mut self, first_frame: u64) {
        self.first_frame = first_frame;
        self.len = 0;
    }

    pub(crate) fn frames(&self, channels: usize) -> usize {
        self.len / (FRAME_SAMPLES * channels)
    }
}

pub(super) type Reply = tokio::sync::oneshot::Sender<Result<RecordingSummary, RecordingError>>;

/// What a recorder handle asks of the writer.
pub(crate) enum WriterMsg {
    Open {
        id: u64,
        relative: PathBuf,
        channels: usize,
        progress: Arc<Progress>,
    },
    Block {
        id: u64,
        block: Box<Block>,
    },
    Finish {
        id: u64,
        tail: Option<Box<Block>>,
        frames_total: u64,
        dropped_frames: u64,
        reply: Reply,
    },
    Abandon {
        id: u64,
        tail: Option<Box<Block>>,
    },
    Barrier {
        done: SyncSender<()>,
    },
}

/// Writer-wide counters (monotonic totals), updated with relaxed atomics off the packet path.
#[derive(Debug, Default)]
pub(crate) struct WriterStats {
    frames_dropped: AtomicU64,
    pub(super) recordings_failed: AtomicU64,
    recordings_abandoned: AtomicU64,
    pub(super) recordings_finished: AtomicU64,
    /// Messages in the queue now: counted in before a send, out when the writer takes one.
    queued: AtomicUsize,
}

/// A copy of [`WriterStats`] at one moment, for the metrics registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStatsSnapshot {
    /// Frames dropped by calls because the writer's queue was full (silence in the files).
    pub frames_dropped: u64,
    /// Recordings whose `finish` returned an error.
    pub recordings_failed: u64,
    /// Recordings dropped without `finish`, left as `.wav.part` for start-up repair.
    pub recordings_abandoned: u64,
    /// Recordings finished and renamed to `.wav`.
    pub recordings_finished: u64,
}

impl WriterStats {
    /// Runs `send` with its message counted into the queue: before the send, so that the
    /// writer's count out can never come first, and back out if the send fails.
    fn counted<E>(&self, send: impl FnOnce() -> Result<(), E>) -> Result<(), E> {
        self.queued.fetch_add(1, Ordering::Relaxed);
        let sent = send();
        if sent.is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        sent
    }

    /// The counters' current values.
    pub(crate) fn snapshot(&self) -> WriterStatsSnapshot {
        WriterStatsSnapshot {
            frames_dropped: self.frames_dropped.load(Ordering::Relaxed),
            recordings_failed: self.recordings_failed.load(Ordering::Relaxed),
            recordings_abandoned: self.recordings_abandoned.load(Ordering::Relaxed),
            recordings_finished: self.recordings_finished.load(Ordering::Relaxed),
        }
    }
}

/// Cloneable handle to the writer thread; give one to every call task.
#[derive(Debug, Clone)]
pub struct RecordingWriter {
    tx: SyncSender<WriterMsg>,
    /// Messages the queue holds at most.
    capacity: usize,
    pool: Arc<BlockPool>,
    storage_dir: Arc<PathBuf>,
    next_id: Arc<AtomicU64>,
    stats: Arc<WriterStats>,
}

/// The writer's loop, not yet running: [`RecordingWriter::spawn`] runs it on its own thread;
/// tests may hold it back to fill the queue.
pub struct WriterWorker {
    rx: Receiver<WriterMsg>,
    storage_dir: Arc<PathBuf>,
    stats: Arc<WriterStats>,
    open: HashMap<u64, OpenRecording>,
    finisher: Finisher,
    pool: Arc<BlockPool>,
    /// Blocks written and not yet put back into `pool`.
    written: Vec<Box<Block>>,
    /// Blocks received in this batch and in the one before: the pool keeps twice the larger.
    batch_blocks: usize,
    last_batch_blocks: usize,
    /// Silence, and on big-endian hosts a block's samples as little-endian bytes, on their way
    /// into a file.
    scratch: Vec<u8>,
    /// Where each file operation's time goes (`ivrd_recording_writer_op_seconds`), if anywhere.
    op_times: Option<WriterOpTimes>,
}

impl std::fmt::Debug for WriterMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriterMsg")
    }
}

impl RecordingWriter {
    /// Starts the writer thread for recordings under `storage_dir` with room for `queue_blocks`
    /// queued messages (each call sends one per 0.25 s, and one per 0.5 s while it takes a
    /// message; size it for ~1 s of all calls).
    pub fn spawn(storage_dir: &Path, queue_blocks: usize) -> Result<Self, RecordingError> {
        Self::spawn_timed(storage_dir, queue_blocks, None)
    }

    /// [`RecordingWriter::spawn`], observing how long each file operation takes into
    /// `op_times`: when calls lose audio, they say which operation held the writer up.
    pub fn spawn_timed(
        storage_dir: &Path,
        queue_blocks: usize,
        op_times: Option<WriterOpTimes>,
    ) -> Result<Self, RecordingError> {
        let (writer, mut worker) = Self::new(storage_dir, queue_blocks);
        worker.op_times = op_times;
        std::thread::Builder::new()
            .name("ivrd-recorder".into())
            .spawn(move || {
                // Blocks wait for this thread in a bounded queue (~1.5 s of every call's audio
                // at 3,000 calls) and are dropped when it is full. At nice 0 it shares what the
                // real-time media workers leave equally with every other thread on the host,
                // and on a saturated one that was too little: 306 recordings refused in one
                // run, 4,142 missing audio in another. A real-time writer kept up but stalled
                // the media ticks (a lock holder kept off the CPU, bench/README.md session
                // 6); a lower nice value only weighs its share. Refused without CAP_SYS_NICE.
                if let Err(e) = crate::runtime::thread_priority::set_nice(WRITER_NICE) {
                    tracing::debug!(error = %e, "recording writer at nice 0");
                }
                worker.run()
            })
            .map_err(|source| RecordingError::SpawnWriter {
                path: storage_dir.to_path_buf(),
                source,
            })?;
        Ok(writer)
    }

    /// A writer handle and its loop, not started; the loop ends when every handle (and every
    /// recorder made from one) is dropped.
    pub fn new(storage_dir: &Path, queue_blocks: usize) -> (Self, WriterWorker) {
        let capacity = queue_blocks.max(1);
        let (tx, rx) = sync_channel(capacity);
        let storage_dir = Arc::new(storage_dir.to_path_buf());
        let stats = Arc::new(WriterStats::default());
        let pool = Arc::new(BlockPool::default());
        let worker = WriterWorker {
            rx,
            storage_dir: Arc::clone(&storage_dir),
            stats: Arc::clone(&stats),
            open: HashMap::new(),
            finisher: Finisher::new(Arc::clone(&stats)),
            pool: Arc::clone(&pool),
            written: Vec::new(),
            batch_blocks: 0,
            last_batch_blocks: 0,
            scratch: Vec::new(),
            op_times: None,
        };
        let writer = RecordingWriter {
            tx,
            capacity,
            pool,
            storage_dir,
            next_id: Arc::new(AtomicU64::new(1)),
            stats,
        };
        (writer, worker)
    }

    /// The writer's counters, for metrics.
    pub fn stats(&self) -> WriterStatsSnapshot {
        self.stats.snapshot()
    }

    /// Messages waiting for the writer now, and how many the queue holds: when it is full,
    /// calls drop audio and new recordings are refused, so how full it runs is the writer's
    /// headroom.
    pub fn queue(&self) -> (usize, usize) {
        (self.stats.queued.load(Ordering::Relaxed), self.capacity)
    }

    /// The folder recordings are written under.
    pub fn storage_dir(&self) -> &Path {
        &self.storage_dir
    }

    /// Waits until every message sent before this call has been handled (for drain at shutdown
    /// and for tests). Do not call from an async task: it blocks.
    pub fn drain_blocking(&self) -> Result<(), RecordingError> {
        let (done, wait) = sync_channel(1);
        let gone = || RecordingError::WriterGone {
            path: self.storage_dir.to_path_buf(),
        };
        self.stats
            .counted(|| self.tx.send(WriterMsg::Barrier { done }))
            .map_err(|_| gone())?;
        wait.recv().map_err(|_| gone())
    }

    pub(crate) fn open(
        &self,
        name: &RecordingName,
        channels: usize,
        progress: Arc<Progress>,
    ) -> Result<u64, RecordingError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let relative = name.relative_wav();
        let msg = WriterMsg::Open {
            id,
            relative: relative.clone(),
            channels,
            progress,
        };
        match self.stats.counted(|| self.tx.try_send(msg)) {
            Ok(()) => Ok(id),
            Err(TrySendError::Full(_)) => Err(RecordingError::WriterBusy { path: relative }),
            Err(TrySendError::Disconnected(_)) => {
                Err(RecordingError::WriterGone { path: relative })
            }
        }
    }

    /// Free blocks in the writer's pool now.
    #[cfg(test)]
    pub(crate) fn free_blocks(&self) -> usize {
        self.pool.len()
    }

    /// An empty block from the writer's pool; never waits (see [`BlockPool::take`]).
    pub(crate) fn take_block(&self, first_frame: u64) -> Box<Block> {
        self.pool.take(first_frame)
    }

    pub(crate) fn try_send(&self, msg: WriterMsg) -> Result<(), TrySendError<WriterMsg>> {
        self.stats.counted(|| self.tx.try_send(msg))
    }

    pub(crate) fn count_dropped(&self, frames: u64) {
        self.stats
            .frames_dropped
            .fetch_add(frames, Ordering::Relaxed);
    }

    /// Sends a message that must arrive (a finish): if the queue is full, waits for room on a
    /// blocking-pool thread instead of the call's task.
    pub(crate) async fn send_async(&self, msg: WriterMsg) -> Result<(), RecordingError> {
        let gone = || RecordingError::WriterGone {
            path: self.storage_dir.to_path_buf(),
        };
        match self.try_send(msg) {
            Ok(()) => Ok(()),
            Err(TrySendError::Disconnected(_)) => Err(gone()),
            Err(TrySendError::Full(msg)) => {
                let (tx, stats) = (self.tx.clone(), Arc::clone(&self.stats));
                match tokio::task::spawn_blocking(move || stats.counted(|| tx.send(msg))).await {
                    Ok(Ok(())) => Ok(()),
                    _ => Err(gone()),
                }
            }
        }
    }

    pub(crate) fn send_blocking(&self, msg: WriterMsg) -> Result<(), RecordingError> {
        self.stats
            .counted(|| self.tx.send(msg))
            .map_err(|_| RecordingError::WriterGone {
                path: self.storage_dir.to_path_buf(),
            })
    }
}

impl WriterWorker {
    /// Handles messages until every sender is gone, then closes what is still open (as `.part`).
    pub fn run(mut self) {
        self.finisher.start();
        while let Ok(msg) = self.rx.recv() {
            self.handle(msg);
            while let Ok(msg) = self.rx.try_recv() {
                self.handle(msg);
            }
            self.put_back();
            self.last_batch_blocks = std::mem::take(&mut self.batch_blocks);
            // Not blocked in `recv` while asleep, so senders queue without waking us.
            std::thread::sleep(BATCH_WINDOW);
        }
        for (_, mut rec) in self.open.drain() {
            rec.checkpoint();
        }
        self.finisher.stop();
    }

    fn handle(&mut self, msg: WriterMsg) {
        self.stats.queued.fetch_sub(1, Ordering::Relaxed);
        match msg {
            WriterMsg::Open {
                id,
                relative,
                channels,
                progress,
            } => {
                // A failed open is kept (with its error) so that `finish` can report it.
                let started = Instant::now();
                let rec = OpenRecording::create(&self.storage_dir, relative, channels, progress);
                self.took(started, |t| &t.create);
                self.open.insert(id, rec);
            }
            WriterMsg::Block { id, block } => {
                if let Some(rec) = self.open.get_mut(&id) {
                    let started = Instant::now();
                    rec.append(&block, &mut self.scratch);
                    self.took(started, |t| &t.append);
                }
                self.written.push(block);
                self.batch_blocks += 1;
                if self.written.len() >= PUT_BACK_EVERY {
                    self.put_back();
                }
            }
            WriterMsg::Finish {
                id,
                tail,
                frames_total,
                dropped_frames,
                reply,
            } => self.finish(id, tail, frames_total, dropped_frames, reply),
            WriterMsg::Abandon { id, tail } => {
                if let Some(mut rec) = self.open.remove(&id) {
                    if let Some(tail) = tail {
                        rec.append(&tail, &mut self.scratch);
                        self.written.push(tail);
                    }
                    rec.checkpoint();
                    self.stats
                        .recordings_abandoned
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            // Answered once the finishes queued before it are done too; whoever waits for it
            // may push again at once, so the blocks written so far are free by then.
            WriterMsg::Barrier { done } => {
                self.put_back();
                self.finisher.barrier(done)
            }
        }
    }

    /// Observes the time since `started` into the histogram `op` picks, if timed.
    fn took(&self, started: Instant, op: impl Fn(&WriterOpTimes) -> &Histogram) {
        if let Some(times) = &self.op_times {
            op(times).observe(started.elapsed().as_secs_f64());
        }
    }

    fn put_back(&mut self) {
        let keep = 2 * self.batch_blocks.max(self.last_batch_blocks);
        self.pool.put_back(&mut self.written, keep);
    }

    fn finish(
        &mut self,
        id: u64,
        tail: Option<Box<Block>>,
        frames_total: u64,
        dropped_frames: u64,
        reply: Reply,
    ) {
        let started = Instant::now();
        let closed = match self.open.remove(&id) {
            Some(mut rec) => {
                if let Some(tail) = tail {
                    rec.append(&tail, &mut self.scratch);
                    self.written.push(tail);
                }
                rec.pad_to(frames_total, &mut self.scratch);
                rec.close(dropped_frames)
            }
            None => Err(RecordingError::WriterGone {
                path: self.storage_dir.to_path_buf(),
            }),
        };
        self.took(started, |t| &t.close);
        match closed {
            Ok(finishing) => self.finisher.finish(finishing, reply),
            Err(e) => {
                self.stats.recordings_failed.fetch_add(1, Ordering::Relaxed);
                // The call may have stopped waiting.
                let _ = reply.send(Err(e));
            }
        }
    }
}
