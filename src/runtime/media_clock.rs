//! The shared media clock: a few worker threads, each ticking every 20 ms for all the calls it
//! holds, instead of a timer, a task wake-up and a readiness wake-up per call per packet.
//!
//! Where it sits: a call's control task (`runtime::call`) hands its media to
//! [`MediaClock::start`] and steers it through the [`MediaLink`] it gets back. On each tick a
//! worker first goes over its calls sending the frames its last tick made and reading every
//! call's RTP socket without blocking, then runs each [`MediaSession`] on the same `now`,
//! queueing each call's next frame. So all calls of a worker share one wake-up and one clock
//! reading, and when a frame leaves does not depend on how much work the calls before it had
//! (see `start_tick`). A worker's grid is absolute (start + k·20 ms) and every session is
//! aligned to it when it arrives, so a late wake-up never shifts a call's spacing for good;
//! sessions catch up frame by frame.

use crate::media::session::{MediaSession, TICK};
use crate::metrics::Metrics;
use crate::runtime::media_call::{
    CallMedia, MediaCommand, MediaNotice, PREFETCH_AHEAD, TickClock, TickScratch, start_tick,
};
use crate::runtime::recorder::CallRecorder;
use crate::runtime::thread_priority;
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, TryRecvError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::UnboundedSender;

/// What a call hands to the clock when it is answered.
pub struct StartMedia {
    pub session: MediaSession,
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
    pub recorder: Option<CallRecorder>,
    pub notices: UnboundedSender<MediaNotice>,
}

enum WorkerInput {
    Start(Box<StartMedia>),
    Command(MediaCommand),
}

struct Worker {
    inputs: mpsc::Sender<(u64, WorkerInput)>,
    /// Calls on this worker, for placing new ones on the least loaded.
    calls: Arc<AtomicUsize>,
}

/// Why the media clock could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start media clock thread {index}: {source}")]
pub struct MediaClockError {
    index: usize,
    source: std::io::Error,
}

/// The workers; cheap to share behind an `Arc`.
pub struct MediaClock {
    workers: Vec<Worker>,
    next_key: AtomicU64,
}

impl MediaClock {
    /// Starts `threads` workers (at least one). One per core is the intent: a worker's tick is
    /// short, and more threads than cores only adds wake-ups. With `priority` 1–99 the workers
    /// ask for that `SCHED_RR` priority, so that the recorder, SIP and anything else on the
    /// machine can never delay a tick; where that is not permitted they run at normal priority
    /// and a warning says so.
    pub fn start(
        threads: usize,
        priority: u8,
        metrics: Arc<Metrics>,
    ) -> Result<MediaClock, MediaClockError> {
        let mut workers = Vec::new();
        let (scheduled, outcomes) = mpsc::channel();
        for index in 0..threads.max(1) {
            let (inputs, rx) = mpsc::channel();
            let calls = Arc::new(AtomicUsize::new(0));
            let state = WorkerLoop {
                inputs: rx,
                calls: Vec::new(),
                keys: Vec::new(),
                flooded: 0,
                load: calls.clone(),
                scratch: TickScratch::default(),
                ticks: 0,
                metrics: metrics.clone(),
            };
            let scheduled = scheduled.clone();
            std::thread::Builder::new()
                .name(format!("ivrd-media-{index}"))
                .spawn(move || {
                    let _ = scheduled.send(thread_priority::set_realtime(priority));
                    drop(scheduled);
                    state.run()
                })
                .map_err(|source| MediaClockError { index, source })?;
            workers.push(Worker { inputs, calls });
        }
        drop(scheduled);
        report_priority(priority, outcomes.iter().take(workers.len()));
        Ok(MediaClock {
            workers,
            next_key: AtomicU64::new(1),
        })
    }

    /// Puts a call's media on the least loaded worker. `None` if the workers are gone
    /// (which only happens when a worker thread panicked).
    pub fn start_call(&self, media: Box<StartMedia>) -> Option<MediaLink> {
        let worker = self
            .workers
            .iter()
            .min_by_key(|w| w.calls.load(Ordering::Relaxed))?;
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        worker.inputs.send((key, WorkerInput::Start(media))).ok()?;
        Some(MediaLink {
            key,
            inputs: worker.inputs.clone(),
            finished: false,
        })
    }
}

/// Says once, for all workers, at which priority the media clock runs.
fn report_priority(priority: u8, outcomes: impl Iterator<Item = std::io::Result<bool>>) {
    let mut refused = None;
    let mut realtime = 0;
    for outcome in outcomes {
        match outcome {
            Ok(true) => realtime += 1,
            Ok(false) => {}
            Err(e) => refused = Some(e),
        }
    }
    match refused {
        Some(e) => tracing::warn!(
            priority,
            error = %e,
            "media clock threads run at normal priority: real-time priority was refused \
             (grant CAP_SYS_NICE, or LimitRTPRIO= in a systemd unit; [media] clock_priority = 0 \
             silences this)"
        ),
        None if realtime > 0 => tracing::info!(
            priority,
            threads = realtime,
            "media clock threads run at real-time priority (SCHED_RR)"
        ),
        None => {}
    }
}

/// A call's handle on its media. Dropping it ends the media (as `Finish` does), so a call task
/// that fails cannot leave a call ticking forever.
pub struct MediaLink {
    key: u64,
    inputs: mpsc::Sender<(u64, WorkerInput)>,
    /// `Finish` was sent; the drop need not send it again.
    finished: bool,
}

impl MediaLink {
    /// Sends a command; false when the worker is gone.
    pub fn send(&mut self, command: MediaCommand) -> bool {
        self.finished |= matches!(command, MediaCommand::Finish);
        self.inputs
            .send((self.key, WorkerInput::Command(command)))
            .is_ok()
    }
}

impl Drop for MediaLink {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self
                .inputs
                .send((self.key, WorkerInput::Command(MediaCommand::Finish)));
        }
    }
}

/// How often a flooded socket is drained between ticks: a 60 k packets/s flood queues ~60
/// datagrams in that time, well inside a default socket buffer.
const FLOOD_DRAIN_EVERY: Duration = Duration::from_millis(1);

struct WorkerLoop {
    inputs: mpsc::Receiver<(u64, WorkerInput)>,
    calls: Vec<CallMedia>,
    /// The key of each call in `calls`, in the same order: a command finds its call here, in a
    /// few cache lines, instead of in every call's state (a miss per call held).
    keys: Vec<u64>,
    /// Calls that the last tick found flooded; the loop drains between ticks while any is.
    /// Counted at the tick, so that a wake-up for a command does not visit every call.
    flooded: usize,
    load: Arc<AtomicUsize>,
    scratch: TickScratch,
    ticks: u64,
    metrics: Arc<Metrics>,
}

impl WorkerLoop {
    /// Sleeps on the clock alone and takes what the calls sent at each tick.
    ///
    /// The worker never blocks on its input channel: a blocked receiver makes every sender
    /// (the calls' tasks, at normal priority) lock the channel's waker to wake it, and a sender
    /// preempted while holding that lock — by the other media worker's tick, say — held this
    /// real-time thread with it (priority inversion): at 3,000 calls ticks started up to 20 ms
    /// late while a real-time probe on both CPUs saw no stall. Taking inputs at the tick costs
    /// nothing audible: a command's effect (a prompt, a stop, a new call's first frame) happens
    /// at a tick anyway; only a notice back may come up to one tick later.
    fn run(mut self) {
        let mut next_tick = Instant::now() + TICK;
        let mut next_drain = next_tick;
        loop {
            let now = Instant::now();
            let flooded = self.flooded > 0;
            if flooded && now >= next_drain && now < next_tick {
                let clock = self.clock(now);
                for call in &mut self.calls {
                    call.drain_flood(&clock, &mut self.scratch.batch);
                }
                next_drain = now + FLOOD_DRAIN_EVERY;
            }
            if now >= next_tick {
                self.metrics.media_tick_late(now - next_tick);
                if !self.tick(now, next_tick) {
                    // Every link and the clock are gone: nothing can steer these calls.
                    let clock = self.clock(Instant::now());
                    for call in self.calls.drain(..) {
                        call.finish(&clock, &mut self.scratch);
                    }
                    return;
                }
                self.metrics.media_tick_work(now.elapsed());
                // The next point of the grid after now: a late wake-up is not repaid with
                // back-to-back ticks (each session catches up on its own schedule).
                while next_tick <= now {
                    next_tick += TICK;
                }
                continue;
            }
            let wake = if flooded {
                next_tick.min(next_drain.max(now))
            } else {
                next_tick
            };
            std::thread::sleep(wake - now);
        }
    }

    /// Applies every input queued since the last tick, for the tick at `tick`; false once
    /// every sender is gone.
    fn take_inputs(&mut self, tick: Instant) -> bool {
        loop {
            match self.inputs.try_recv() {
                Ok((key, input)) => self.apply(key, input, tick),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn apply(&mut self, key: u64, input: WorkerInput, tick: Instant) {
        match input {
            WorkerInput::Start(start) => {
                let StartMedia {
                    mut session,
                    rtp,
                    rtcp,
                    recorder,
                    notices,
                } = *start;
                session.align_clock(tick);
                let call = CallMedia::new(key, session, rtp, rtcp, recorder, notices);
                self.calls.push(call);
                self.keys.push(key);
                self.load.store(self.calls.len(), Ordering::Relaxed);
            }
            WorkerInput::Command(command) => {
                let Some(index) = self.keys.iter().position(|&k| k == key) else {
                    return;
                };
                let now = Instant::now();
                if self.calls[index].on_command(now, command) {
                    let call = self.calls.swap_remove(index);
                    self.keys.swap_remove(index);
                    self.load.store(self.calls.len(), Ordering::Relaxed);
                    let clock = self.clock(now);
                    call.finish(&clock, &mut self.scratch);
                }
            }
        }
    }

    /// One tick at `now`, for the grid point `tick_at`: the frames of the last tick go out and
    /// every call's sockets are read (`start_tick`), then the inputs queued since the last tick
    /// are applied, then every call does its work. False once every sender is gone.
    fn tick(&mut self, now: Instant, tick_at: Instant) -> bool {
        self.ticks += 1;
        let clock = self.clock(now);
        // Calls removed by the inputs may still be counted until the next tick: at worst one
        // drain between ticks that finds nothing.
        self.flooded = start_tick(&mut self.calls, &clock, &mut self.scratch);
        if !self.take_inputs(tick_at) {
            return false;
        }
        for index in 0..self.calls.len() {
            if let Some(ahead) = self.calls.get(index + PREFETCH_AHEAD) {
                ahead.prefetch();
            }
            self.calls[index].on_tick(index, &clock, &mut self.scratch);
        }
        true
    }

    fn clock(&self, now: Instant) -> TickClock {
        let wall = SystemTime::now();
        TickClock {
            now,
            wall,
            ntp: crate::media::rtcp::NtpTimestamp::from_unix(
                wall.duration_since(UNIX_EPOCH).unwrap_or_default(),
            ),
            count: self.ticks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::g711::{Codec, FRAME_SAMPLES};
    use crate::media::prompt::{Prompt, PromptId};
    use crate::media::session::SessionParams;
    use std::time::Duration;
    use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

    fn start_media(remote: std::net::SocketAddr) -> (StartMedia, UnboundedReceiver<MediaNotice>) {
        let bind = || UdpSocket::bind("127.0.0.1:0").expect("bind");
        let (rtp, rtcp) = (bind(), bind());
        rtp.set_nonblocking(true).expect("nonblocking");
        rtcp.set_nonblocking(true).expect("nonblocking");
        let params = SessionParams {
            codec: Codec::Pcma,
            codec_pt: 8,
            dtmf_pt: None,
            remote: Some(remote),
            peer_receives: true,
            peer_sends: true,
            ssrc: 1,
            initial_seq: 1,
            initial_ts: 0,
            cname: "ivrd@test".into(),
            media_timeout: Duration::from_secs(30),
        };
        let session = MediaSession::new(Instant::now(), params, 0.5).expect("session");
        let (notices, rx) = unbounded_channel();
        let start = StartMedia {
            session,
            rtp,
            rtcp,
            recorder: None,
            notices,
        };
        (start, rx)
    }

    async fn next(rx: &mut UnboundedReceiver<MediaNotice>) -> MediaNotice {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a notice within 10 s")
            .expect("channel open")
    }

    #[tokio::test]
    async fn a_call_plays_on_the_clock_and_its_frames_reach_the_caller() {
        let metrics = Metrics::new().expect("metrics");
        let clock = MediaClock::start(1, 0, metrics.clone()).expect("clock");
        let caller = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let (start, mut rx) = start_media(caller.local_addr().expect("addr"));
        let mut link = clock.start_call(Box::new(start)).expect("started");
        let prompt = Arc::new(Prompt::from_samples(
            PromptId::new("test/p").expect("id"),
            &[1000i16; 3 * FRAME_SAMPLES],
        ));
        assert!(link.send(MediaCommand::Play {
            id: 4,
            prompts: vec![prompt],
        }));
        assert!(matches!(
            next(&mut rx).await,
            MediaNotice::PlaybackDone { id: 4 }
        ));
        // The three prompt frames went out as RTP, in order.
        caller
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 512];
        let mut seqs = Vec::new();
        for _ in 0..3 {
            let n = caller.recv(&mut buf).expect("RTP from the clock");
            seqs.push(
                crate::media::rtp::parse_rtp(&buf[..n])
                    .expect("rtp")
                    .sequence,
            );
        }
        assert_eq!(seqs, vec![1, 2, 3]);
        assert!(link.send(MediaCommand::Finish));
        assert!(matches!(next(&mut rx).await, MediaNotice::Finished(_)));
        // Each tick that ran was timed: its lateness before, its work after.
        let text = metrics.render().expect("render");
        let count = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let (late, work) = (
            count("ivrd_media_tick_lateness_seconds_count"),
            count("ivrd_media_tick_work_seconds_count"),
        );
        assert!(work >= 3, "{work} ticks timed for three frames");
        assert!(late.abs_diff(work) <= 1, "lateness {late}, work {work}");
    }

    /// A worker loop with no calls, not running: the test drives it.
    fn idle_worker(rx: mpsc::Receiver<(u64, WorkerInput)>) -> WorkerLoop {
        WorkerLoop {
            inputs: rx,
            calls: Vec::new(),
            keys: Vec::new(),
            flooded: 0,
            load: Arc::new(AtomicUsize::new(0)),
            scratch: TickScratch::default(),
            ticks: 0,
            metrics: Metrics::new().expect("metrics"),
        }
    }

    #[test]
    fn inputs_queued_between_ticks_are_applied_in_order_at_the_tick() {
        let (inputs, rx) = mpsc::channel();
        let mut worker = idle_worker(rx);
        let caller = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let (a, mut rx_a) = start_media(caller.local_addr().expect("addr"));
        let (b, _rx_b) = start_media(caller.local_addr().expect("addr"));
        let send = |key, input| inputs.send((key, input)).expect("worker's channel");
        send(1, WorkerInput::Start(Box::new(a)));
        send(2, WorkerInput::Start(Box::new(b)));
        send(1, WorkerInput::Command(MediaCommand::Finish));

        assert!(worker.take_inputs(Instant::now()));
        // Call 1 started and, by the command after it, finished; call 2 runs.
        assert_eq!(worker.keys, vec![2]);
        assert!(matches!(rx_a.try_recv(), Ok(MediaNotice::Finished(_))));
        assert!(
            worker.take_inputs(Instant::now()),
            "an empty queue is not the end"
        );
        drop(inputs);
        assert!(!worker.take_inputs(Instant::now()), "every sender gone");
    }

    #[test]
    fn the_worker_counts_floods_at_the_tick_and_finds_a_call_by_key_after_a_removal() {
        let (_inputs, rx) = mpsc::channel();
        let mut worker = idle_worker(rx);
        let caller = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = caller.local_addr().expect("addr");
        let t0 = Instant::now();
        let mut notices = Vec::new();
        let mut flooded_port = None;
        for key in 1..=3 {
            let (start, rx) = start_media(addr);
            if key == 2 {
                flooded_port = Some(start.rtp.local_addr().expect("addr"));
            }
            worker.apply(key, WorkerInput::Start(Box::new(start)), t0 + TICK);
            notices.push(rx);
        }
        let flooded_port = flooded_port.expect("call 2");
        for _ in 0..crate::runtime::media_call::FLOODED_READS_PER_TICK {
            caller.send_to(&[0u8; 12], flooded_port).expect("send");
        }
        // A socket that is not flooded is read every other tick: two ticks read them all.
        assert!(worker.tick(t0 + TICK, t0 + TICK));
        assert!(worker.tick(t0 + TICK * 2, t0 + TICK * 2));
        assert_eq!(worker.flooded, 1);

        // Removing call 1 moves call 3 into its place; a command for 3 must still reach 3.
        worker.apply(1, WorkerInput::Command(MediaCommand::Finish), t0 + TICK * 3);
        worker.apply(3, WorkerInput::Command(MediaCommand::Finish), t0 + TICK * 3);
        let finished = |rx: &mut UnboundedReceiver<MediaNotice>| {
            std::iter::from_fn(|| rx.try_recv().ok()).any(|n| matches!(n, MediaNotice::Finished(_)))
        };
        assert!(finished(&mut notices[0]));
        assert!(!finished(&mut notices[1]), "call 2 still runs");
        assert!(finished(&mut notices[2]));
        assert_eq!(worker.keys, vec![2]);

        // The flood stopped: the next tick reads little and the worker stops draining.
        assert!(worker.tick(t0 + TICK * 3, t0 + TICK * 3));
        assert_eq!(worker.flooded, 0);
    }

    #[tokio::test]
    async fn dropping_the_link_ends_the_media_and_calls_spread_over_workers() {
        let clock = MediaClock::start(2, 0, Metrics::new().expect("metrics")).expect("clock");
        let caller = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = caller.local_addr().expect("addr");
        let (a, mut rx_a) = start_media(addr);
        let (b, mut rx_b) = start_media(addr);
        let link_a = clock.start_call(Box::new(a)).expect("a");
        // A worker's count is updated by its thread; wait until it took the call.
        let took = |w: usize, what: &'static str| {
            let calls = clock.workers[w].calls.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(10), async {
                    while calls.load(Ordering::Relaxed) == 0 {
                        tokio::task::yield_now().await;
                    }
                })
                .await
                .expect(what)
            }
        };
        took(0, "the first worker took the first call").await;
        let link_b = clock.start_call(Box::new(b)).expect("b");
        // The second call goes to the idle worker, not the one holding the first.
        took(1, "the second worker took the second call").await;
        assert_eq!(clock.workers[0].calls.load(Ordering::Relaxed), 1);
        drop(link_a);
        assert!(matches!(next(&mut rx_a).await, MediaNotice::Finished(_)));
        drop(link_b);
        assert!(matches!(next(&mut rx_b).await, MediaNotice::Finished(_)));
    }
}
