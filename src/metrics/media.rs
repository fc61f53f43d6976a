//! Media and recording metrics.
//!
//! RTP figures are added in batches (per call, e.g. at each RTCP interval and at hang-up), not per
//! packet: the children are resolved once here, so a batch is a few atomic adds and never takes a
//! lock or allocates.

use std::time::Duration;

use prometheus::{CounterVec, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge};

use super::register::{self, Reg};
use super::{Metrics, MetricsError, RecordingKind};

/// RFC 3550 interarrival jitter on a healthy trunk is a few ms; above ~50 ms a jitter buffer of
/// one or two frames no longer hides it.
const JITTER_BUCKETS: [f64; 10] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2];

/// How late a media clock tick runs behind its 20 ms grid: under 5 ms is invisible in the
/// callers' spacing, over 20 ms means frames leave in pairs.
const TICK_LATENESS_BUCKETS: [f64; 9] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25];

/// How long one media clock tick's work took (every call of the worker read, run, sent and
/// recorded). The tick must end well inside its 20 ms: the spread of the send times within it
/// is what a caller hears as jitter, and a tick near 20 ms means the worker is full.
const TICK_WORK_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.05,
];

/// How long one operation of the recording writer took. Appends stay in the page cache and take
/// tens of microseconds; the writer's queue holds ~1.5 s of every call's audio, so operations of
/// 0.1 s and more, many in a row, are what makes calls drop audio.
const WRITER_OP_BUCKETS: [f64; 8] = [0.000_1, 0.001, 0.005, 0.02, 0.1, 0.5, 2.0, 10.0];

/// The media group.
pub(super) struct MediaMetrics {
    packets_in: IntCounter,
    packets_out: IntCounter,
    bytes_in: IntCounter,
    bytes_out: IntCounter,
    lost: IntCounter,
    late: IntCounter,
    unexpected_source: IntCounter,
    jitter: Histogram,
    send_errors: IntCounter,
    tick_lateness: Histogram,
    tick_work: Histogram,
    timeouts: IntCounter,
    ports_in_use: IntGauge,
    ports_available: IntGauge,
}

impl MediaMetrics {
    pub(super) fn register(reg: &Reg<'_>) -> Result<Self, MetricsError> {
        let packets = reg.counter_vec(
            "ivrd_rtp_packets_total",
            "RTP packets received from callers (in) and sent to them (out).",
            &["direction"],
        )?;
        let bytes = reg.counter_vec(
            "ivrd_rtp_bytes_total",
            "RTP bytes (header and payload, no UDP/IP) received (in) and sent (out).",
            &["direction"],
        )?;
        Ok(MediaMetrics {
            packets_in: packets.with_label_values(&["in"]),
            packets_out: packets.with_label_values(&["out"]),
            bytes_in: bytes.with_label_values(&["in"]),
            bytes_out: bytes.with_label_values(&["out"]),
            lost: reg.counter(
                "ivrd_rtp_packets_lost_total",
                "Caller RTP packets lost (RFC 3550 §6.4.1, expected minus received).",
            )?,
            late: reg.counter(
                "ivrd_rtp_packets_late_total",
                "Caller RTP packets that arrived too late or out of order to be used.",
            )?,
            unexpected_source: reg.counter(
                "ivrd_rtp_packets_unexpected_source_total",
                "RTP packets ignored because they came from an address other than the caller's, \
                 counted while the caller's source is not settled on its SDP address (before \
                 its first packet, or behind NAT); after that the kernel refuses them (UDP \
                 NoPorts).",
            )?,
            jitter: reg.histogram(
                "ivrd_rtp_jitter_seconds",
                "RFC 3550 interarrival jitter of caller RTP, sampled per call at each report.",
                &JITTER_BUCKETS,
            )?,
            send_errors: reg.counter(
                "ivrd_rtp_send_errors_total",
                "RTP/RTCP datagrams the socket refused to send (send buffer full, no route).",
            )?,
            tick_lateness: reg.histogram(
                "ivrd_media_tick_lateness_seconds",
                "How late each media clock tick ran behind its 20 ms schedule (one per thread per tick).",
                &TICK_LATENESS_BUCKETS,
            )?,
            tick_work: reg.histogram(
                "ivrd_media_tick_work_seconds",
                "How long each media clock tick's work took, for all calls of its thread (one per thread per tick).",
                &TICK_WORK_BUCKETS,
            )?,
            timeouts: reg.counter(
                "ivrd_media_timeouts_total",
                "Calls ended because no RTP arrived for the media timeout.",
            )?,
            ports_in_use: reg.gauge(
                "ivrd_rtp_ports_in_use",
                "RTP/RTCP port pairs reserved by calls now.",
            )?,
            ports_available: reg.gauge(
                "ivrd_rtp_ports_available",
                "RTP/RTCP port pairs still free in the pool.",
            )?,
        })
    }
}

/// The recording group.
pub(super) struct RecordingMetrics {
    files: IntCounterVec,
    bytes: IntCounterVec,
    seconds: CounterVec,
    failures: IntCounterVec,
    dropped: CounterVec,
    repaired: IntCounter,
    writer_ops: HistogramVec,
    writer_queue: IntGauge,
    writer_queue_capacity: IntGauge,
}

impl RecordingMetrics {
    pub(super) fn register(reg: &Reg<'_>) -> Result<Self, MetricsError> {
        let kind = ["kind"];
        let m = RecordingMetrics {
            files: reg.counter_vec(
                "ivrd_recording_files_total",
                "Recordings finalised, by kind (call, message).",
                &kind,
            )?,
            bytes: reg.counter_vec(
                "ivrd_recording_bytes_total",
                "Bytes of finalised recordings, by kind.",
                &kind,
            )?,
            seconds: reg.float_counter_vec(
                "ivrd_recording_seconds_total",
                "Audio seconds in finalised recordings, by kind.",
                &kind,
            )?,
            failures: reg.counter_vec(
                "ivrd_recording_failures_total",
                "Recordings that could not be written or finalised, by kind.",
                &kind,
            )?,
            dropped: reg.float_counter_vec(
                "ivrd_recording_dropped_seconds_total",
                "Audio missing from finalised recordings because the recording writer fell \
                 behind (the gap is silence in the file), by kind.",
                &kind,
            )?,
            repaired: reg.counter(
                "ivrd_recording_repaired_total",
                "Unfinished .part recordings repaired and finalised at start-up.",
            )?,
            writer_ops: reg.histogram_vec(
                "ivrd_recording_writer_op_seconds",
                "Time the recording writer thread spent on one file operation, by op (create: a \
                 new recording's file and header; append: one block, with its header checkpoint \
                 when due; close: the final header and hand-over to fsync).",
                &["op"],
                &WRITER_OP_BUCKETS,
            )?,
            writer_queue: reg.gauge(
                "ivrd_recording_writer_queue_messages",
                "Messages (mostly 0.24 s audio blocks) waiting for the recording writer now. When \
                 the queue is full, calls drop audio and new recordings are refused.",
            )?,
            writer_queue_capacity: reg.gauge(
                "ivrd_recording_writer_queue_capacity_messages",
                "Messages the recording writer's queue holds at most (4 per max_calls).",
            )?,
        };
        let kinds = RecordingKind::ALL.map(|k| [k.as_str()]);
        for vec in [&m.files, &m.bytes, &m.failures] {
            register::touch(vec, &kinds);
        }
        for k in &kinds {
            m.seconds.with_label_values(k);
            m.dropped.with_label_values(k);
        }
        for op in ["create", "append", "close"] {
            m.writer_ops.with_label_values(&[op]);
        }
        Ok(m)
    }
}

impl Metrics {
    /// Adds caller RTP received since the last batch: packets and bytes.
    pub fn rtp_received(&self, packets: u64, bytes: u64) {
        self.media.packets_in.inc_by(packets);
        self.media.bytes_in.inc_by(bytes);
    }

    /// Adds RTP sent to callers since the last batch: packets and bytes.
    pub fn rtp_sent(&self, packets: u64, bytes: u64) {
        self.media.packets_out.inc_by(packets);
        self.media.bytes_out.inc_by(bytes);
    }

    /// Adds caller packets newly counted lost (the growth of RFC 3550 cumulative loss, if positive).
    pub fn rtp_lost(&self, packets: u64) {
        self.media.lost.inc_by(packets);
    }

    /// Adds caller packets that came too late or out of order to use.
    pub fn rtp_late(&self, packets: u64) {
        self.media.late.inc_by(packets);
    }

    /// Adds packets ignored because they came from an unexpected source address.
    pub fn rtp_unexpected_source(&self, packets: u64) {
        self.media.unexpected_source.inc_by(packets);
    }

    /// Records one sample of a call's interarrival jitter (RFC 3550 §6.4.1, converted to time).
    pub fn rtp_jitter(&self, jitter: Duration) {
        self.media.jitter.observe(jitter.as_secs_f64());
    }

    /// Adds datagrams a call's sockets refused to send.
    pub fn rtp_send_errors(&self, datagrams: u64) {
        self.media.send_errors.inc_by(datagrams);
    }

    /// One media clock tick ran `late` behind its schedule.
    pub fn media_tick_late(&self, late: Duration) {
        self.media.tick_lateness.observe(late.as_secs_f64());
    }

    /// One media clock tick's work took `work`.
    pub fn media_tick_work(&self, work: Duration) {
        self.media.tick_work.observe(work.as_secs_f64());
    }

    /// Counts a call ended by the media timeout.
    pub fn media_timeout(&self) {
        self.media.timeouts.inc();
    }

    /// Sets the port gauges from the pool: pairs in use and the pool's size (free = size − used).
    pub fn set_rtp_ports(&self, in_use: usize, pool_size: usize) {
        self.media.ports_in_use.set(register::as_gauge(in_use));
        let free = pool_size.saturating_sub(in_use);
        self.media.ports_available.set(register::as_gauge(free));
    }

    /// Counts a finalised recording with its size and audio length.
    pub fn recording_finished(&self, kind: RecordingKind, bytes: u64, audio: Duration) {
        let k = [kind.as_str()];
        self.recording.files.with_label_values(&k).inc();
        self.recording.bytes.with_label_values(&k).inc_by(bytes);
        self.recording
            .seconds
            .with_label_values(&k)
            .inc_by(audio.as_secs_f64());
    }

    /// Adds audio a finalised recording lacks because the writer's queue was full.
    pub fn recording_dropped(&self, kind: RecordingKind, audio: Duration) {
        self.recording
            .dropped
            .with_label_values(&[kind.as_str()])
            .inc_by(audio.as_secs_f64());
    }

    /// Counts a recording that could not be written or finalised.
    pub fn recording_failed(&self, kind: RecordingKind) {
        self.recording
            .failures
            .with_label_values(&[kind.as_str()])
            .inc();
    }

    /// The recording writer's per-operation histograms, resolved once for its thread.
    pub fn recording_writer_ops(&self) -> WriterOpTimes {
        let op = |name| self.recording.writer_ops.with_label_values(&[name]);
        WriterOpTimes {
            create: op("create"),
            append: op("append"),
            close: op("close"),
        }
    }

    /// How full the recording writer's queue is now.
    pub fn set_recording_queue(&self, queued: usize, capacity: usize) {
        self.recording.writer_queue.set(register::as_gauge(queued));
        self.recording
            .writer_queue_capacity
            .set(register::as_gauge(capacity));
    }

    /// Adds the `.part` files repaired at start-up.
    pub fn recordings_repaired(&self, files: u64) {
        self.recording.repaired.inc_by(files);
    }
}

/// `ivrd_recording_writer_op_seconds` by operation, for the writer thread to observe into.
#[derive(Clone)]
pub struct WriterOpTimes {
    pub create: Histogram,
    pub append: Histogram,
    pub close: Histogram,
}
