//! A small reorder window that lines the caller's RTP payloads up with our 20 ms media clock.
//!
//! Sits between `RtpReceiver` and the recorder: the RTP driver pushes each audio payload with its
//! RTP timestamp as it arrives, and the 20 ms pacer pops exactly one frame per tick. A frame that
//! never arrived comes out as codec silence, so the recording stays in step with wall time; a
//! packet that arrives after its frame was popped is dropped and counted. The window is a fixed
//! array of [`WINDOW_FRAMES`] frames: nothing is allocated after construction.
//!
//! Frames are keyed by sample position / 160, measured from the first packet's timestamp, so a
//! 10 ms, 30 ms or misaligned packet is split across the frames it covers. Only audio belongs
//! here: RFC 4733 event packets keep one timestamp for a whole event and must not be pushed.
//!
//! In steady state a packet lands [`PLAYOUT_DELAY_FRAMES`] ahead of the next pop: it may arrive
//! up to 60 ms late and still be played, or one frame early. Anything further ahead re-anchors the
//! window on it (a timestamp jump, or a sender clock running fast), as do repeated late packets (a
//! sender clock running slow); pops never stop, so the output stays on wall time either way.

use super::g711::{Codec, FRAME_SAMPLES};

/// Frames the window holds: 100 ms.
pub const WINDOW_FRAMES: usize = 5;
/// Frames between the newest packet at anchoring and the frame popped next: 60 ms of delay in
/// which a reordered packet can still take its place. The media clock reads a call's socket
/// every other tick (`runtime::media_call`), so up to 20 ms of it is ours; the rest is the
/// network's. Nobody listens to this audio live (it goes to the recorder and the DTMF
/// detector), so the delay costs nothing but 160 bytes.
pub const PLAYOUT_DELAY_FRAMES: i64 = 3;
/// Consecutive late packets after which the sender's clock is taken to have fallen behind ours
/// and the window re-anchors instead of dropping everything from then on.
const LATE_RESYNC: u32 = 4;
/// Samples per bit of a slot's fill mask (20 bits cover a frame).
const MASK_CHUNK: usize = 8;

/// Where a popped frame came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSource {
    /// At least part of the frame came from the caller (any missing part is silence).
    Received,
    /// Nothing arrived for this frame in time: the frame is codec silence.
    Concealed,
}

/// What [`PlayoutWindow::push`] did with a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Stored for a frame still to be popped.
    Stored,
    /// Stored after re-anchoring the window on this packet (first packet, timestamp jump or a
    /// sender clock that drifted).
    Resynced,
    /// Its frame was already popped: dropped.
    Late,
    /// Its samples were already stored: ignored.
    Duplicate,
}

/// Counters since construction, for metrics and the call journal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlayoutStats {
    /// Frames popped with caller audio in them.
    pub received_frames: u64,
    /// Frames popped as silence because nothing arrived (after the stream started).
    pub concealed_frames: u64,
    /// Packets (or packet parts) dropped because their frame had been popped.
    pub late_dropped: u64,
    /// Packets whose samples were already stored.
    pub duplicates: u64,
    /// Times the window re-anchored on a packet, the first one included.
    pub resyncs: u64,
}

/// One frame of the window. Aligned to a cache line, so that a slot is exactly three lines
/// (172 bytes would otherwise straddle four as often as not).
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Slot {
    frame: i64,
    mask: u32,
    data: [u8; FRAME_SAMPLES],
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    /// Extended timestamp of the sample that is position 0.
    base: i64,
    /// Highest extended timestamp seen, the reference for unwrapping the next one.
    highest: i64,
}

/// The reorder window for one incoming audio stream. See the module documentation.
///
/// What every push and pop reads comes before the slots (`repr(C)` keeps the order), so they
/// touch those lines and one slot's, not lines at both ends of the window.
#[derive(Debug, Clone)]
#[repr(C)]
pub struct PlayoutWindow {
    anchor: Option<Anchor>,
    next_pop: i64,
    consecutive_late: u32,
    codec: Codec,
    stats: PlayoutStats,
    slots: [Slot; WINDOW_FRAMES],
}

impl PlayoutWindow {
    /// An empty window that conceals with `codec`'s silence.
    pub fn new(codec: Codec) -> PlayoutWindow {
        let silence = codec.silence_byte();
        PlayoutWindow {
            codec,
            slots: [Slot {
                frame: i64::MIN,
                mask: 0,
                data: [silence; FRAME_SAMPLES],
            }; WINDOW_FRAMES],
            anchor: None,
            next_pop: 0,
            consecutive_late: 0,
            stats: PlayoutStats::default(),
        }
    }

    /// Forgets the stream's timing so the next push anchors afresh. Call it when the receiver
    /// reports `RxVerdict::Restart` for a new SSRC or sequence restart, before pushing that packet.
    pub fn reset(&mut self) {
        self.anchor = None;
        self.consecutive_late = 0;
        for slot in &mut self.slots {
            slot.frame = i64::MIN;
            slot.mask = 0;
        }
    }

    /// Counters since construction.
    pub fn stats(&self) -> PlayoutStats {
        self.stats
    }

    /// Stores the G.711 payload of an audio packet stamped `timestamp` (8 kHz units).
    pub fn push(&mut self, timestamp: u32, payload: &[u8]) -> PushOutcome {
        let anchor = match self.anchor {
            Some(anchor) => anchor,
            None => {
                let ts = i64::from(timestamp);
                self.anchor = Some(Anchor {
                    base: ts,
                    highest: ts,
                });
                self.resync(0);
                return self.store(0, payload, PushOutcome::Resynced);
            }
        };
        // RFC 3550 §5.1: timestamps wrap at 2^32; take the nearest extension of this one.
        let delta = i64::from(timestamp.wrapping_sub(anchor.highest as u32) as i32);
        let ext = anchor.highest + delta;
        self.anchor = Some(Anchor {
            base: anchor.base,
            highest: anchor.highest.max(ext),
        });
        let pos = ext - anchor.base;
        let first = pos.div_euclid(FRAME_SAMPLES as i64);
        if first >= self.next_pop + WINDOW_FRAMES as i64 {
            // Ahead of the window: a timestamp jump, or a sender clock faster than ours.
            self.resync(first);
            return self.store(pos, payload, PushOutcome::Resynced);
        }
        let outcome = self.store(pos, payload, PushOutcome::Stored);
        if outcome == PushOutcome::Late {
            self.consecutive_late += 1;
            if self.consecutive_late >= LATE_RESYNC {
                // Our pops keep overtaking the sender: its clock is slower, or it jumped back.
                self.resync(first);
                return self.store(pos, payload, PushOutcome::Resynced);
            }
        } else {
            self.consecutive_late = 0;
        }
        outcome
    }

    /// Puts `frame` PLAYOUT_DELAY_FRAMES ahead of the next pop and drops slots outside the
    /// new window.
    fn resync(&mut self, frame: i64) {
        self.stats.resyncs += 1;
        self.consecutive_late = 0;
        self.next_pop = frame - PLAYOUT_DELAY_FRAMES;
        let end = self.next_pop + WINDOW_FRAMES as i64;
        for slot in &mut self.slots {
            if slot.frame < self.next_pop || slot.frame >= end {
                slot.frame = i64::MIN;
                slot.mask = 0;
            }
        }
    }

    /// Copies the payload into the frames it covers, starting at sample position `pos`.
    fn store(&mut self, pos: i64, payload: &[u8], stored: PushOutcome) -> PushOutcome {
        let (mut any_stored, mut any_duplicate, mut any_late) = (false, false, false);
        let mut offset = 0usize;
        while offset < payload.len() {
            let at = pos + offset as i64;
            let frame = at.div_euclid(FRAME_SAMPLES as i64);
            let within = at.rem_euclid(FRAME_SAMPLES as i64) as usize;
            let n = (FRAME_SAMPLES - within).min(payload.len() - offset);
            let chunk = &payload[offset..offset + n];
            offset += n;
            if frame < self.next_pop {
                any_late = true;
                continue;
            }
            if frame >= self.next_pop + WINDOW_FRAMES as i64 {
                // Beyond the window even after anchoring: a packet longer than the window.
                continue;
            }
            let silence = self.codec.silence_byte();
            let slot = &mut self.slots[frame.rem_euclid(WINDOW_FRAMES as i64) as usize];
            if slot.frame != frame {
                slot.frame = frame;
                slot.mask = 0;
                // What no packet fills stays silence; a whole-frame packet (the usual 20 ms)
                // overwrites it all just below.
                if n < FRAME_SAMPLES {
                    slot.data.fill(silence);
                }
            }
            let mask = chunk_mask(within, n);
            if slot.mask & mask == mask {
                any_duplicate = true;
                continue;
            }
            slot.data[within..within + n].copy_from_slice(chunk);
            slot.mask |= mask;
            any_stored = true;
        }
        if any_stored {
            stored
        } else if any_duplicate {
            self.stats.duplicates += 1;
            PushOutcome::Duplicate
        } else {
            if any_late {
                self.stats.late_dropped += 1;
            }
            PushOutcome::Late
        }
    }

    /// The frame due on this 20 ms tick, and moves on by one frame. The frame is borrowed from
    /// the window's slot (or is the codec's silence), so the caller decodes it where the audio
    /// is wanted instead of copying it out first. Before the first packet it is silence that
    /// does not count as concealment.
    pub fn pop_frame(&mut self) -> (FrameSource, &[u8; FRAME_SAMPLES]) {
        if self.anchor.is_none() {
            return (FrameSource::Concealed, self.codec.silence_frame());
        }
        let frame = self.next_pop;
        self.next_pop += 1;
        let slot = &mut self.slots[frame.rem_euclid(WINDOW_FRAMES as i64) as usize];
        if slot.frame == frame && slot.mask != 0 {
            // The data stays in place until a later push claims the slot for another frame.
            slot.frame = i64::MIN;
            slot.mask = 0;
            self.stats.received_frames += 1;
            (FrameSource::Received, &slot.data)
        } else {
            self.stats.concealed_frames += 1;
            (FrameSource::Concealed, self.codec.silence_frame())
        }
    }
}

/// Fill-mask bits for samples `within..within + n` of a frame.
fn chunk_mask(within: usize, n: usize) -> u32 {
    let first = within / MASK_CHUNK;
    let last = (within + n - 1) / MASK_CHUNK;
    let upto = if last >= 31 {
        u32::MAX
    } else {
        (1u32 << (last + 1)) - 1
    };
    upto & !((1u32 << first) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A payload whose bytes all equal `tag`, so tests can see which packet filled a frame.
    fn frame(tag: u8) -> [u8; FRAME_SAMPLES] {
        [tag; FRAME_SAMPLES]
    }

    /// Frames popped as silence after the stream's first packet, before that packet plays.
    const D: usize = PLAYOUT_DELAY_FRAMES as usize;

    /// `D` silent frames, then `tags`: what the pops of a stream that starts now return.
    fn after_delay(tags: &[u8]) -> Vec<u8> {
        let mut out = vec![0; D];
        out.extend_from_slice(tags);
        out
    }

    /// Pops `n` frames and returns the first byte of each, 0 for concealment.
    fn pop_tags(w: &mut PlayoutWindow, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| match w.pop_frame() {
                (FrameSource::Received, out) => out[0],
                (FrameSource::Concealed, out) => {
                    assert!(out.iter().all(|&b| b == 0xFF));
                    0
                }
            })
            .collect()
    }

    #[test]
    fn in_order_stream_plays_after_the_delay() {
        let mut w = PlayoutWindow::new(Codec::Pcmu);
        assert_eq!(pop_tags(&mut w, 1), vec![0], "silence before the stream");
        assert_eq!(w.push(1000, &frame(1)), PushOutcome::Resynced);
        let mut tags = Vec::new();
        for i in 2..=6u8 {
            tags.extend(pop_tags(&mut w, 1));
            assert_eq!(
                w.push(1000 + 160 * u32::from(i - 1), &frame(i)),
                PushOutcome::Stored
            );
        }
        tags.extend(pop_tags(&mut w, D + 1));
        assert_eq!(tags, after_delay(&[1, 2, 3, 4, 5, 6]));
        let s = w.stats();
        assert_eq!(
            (s.received_frames, s.concealed_frames, s.resyncs),
            (6, D as u64, 1)
        );
    }

    #[test]
    fn reordered_packets_inside_the_window_take_their_place() {
        let mut w = PlayoutWindow::new(Codec::Pcmu);
        w.push(0, &frame(1));
        let mut tags = pop_tags(&mut w, 1);
        // Frame 3 overtakes frame 2 on the network.
        assert_eq!(w.push(320, &frame(3)), PushOutcome::Stored);
        assert_eq!(w.push(160, &frame(2)), PushOutcome::Stored);
        tags.extend(pop_tags(&mut w, D + 2));
        assert_eq!(tags, after_delay(&[1, 2, 3]));
        assert_eq!(w.stats().late_dropped, 0);
    }

    #[test]
    fn a_lost_packet_becomes_silence_and_keeps_the_stream_in_step() {
        let mut w = PlayoutWindow::new(Codec::Pcmu);
        w.push(0, &frame(1));
        let mut tags = pop_tags(&mut w, 1);
        w.push(320, &frame(3));
        tags.extend(pop_tags(&mut w, D + 2));
        assert_eq!(tags, after_delay(&[1, 0, 3]));
        assert_eq!(w.stats().concealed_frames, D as u64 + 1);
    }

    #[test]
    fn a_packet_older_than_the_last_pop_is_dropped() {
        let mut w = PlayoutWindow::new(Codec::Pcmu);
        w.push(0, &frame(1));
        assert_eq!(pop_tags(&mut w, D + 1), after_delay(&[1]));
        w.push(320, &frame(3));
        assert_eq!(pop_tags(&mut w, 1), vec![0], "frame 2 missing");
        assert_eq!(w.push(160, &frame(2)), PushOutcome::Late);
        assert_eq!(pop_tags(&mut w, 1), vec![3]);
        assert_eq!(w.stats().late_dropped, 1);
    }

    #[test]
    fn duplicates_are_ignored() {
        let mut w = PlayoutWindow::new(Codec::Pcmu);
        w.push(0, &frame(1));
        assert_eq!(w.push(0, &frame(9)), PushOutcome::Duplicate);
        assert_eq!(pop_tags(&mut w, D + 1), after_delay(&[1]));
        assert_eq!(w.stats().duplicates, 1);
    }

    #[test]
    fn timestamps_unwrap_across_2_32() {
        let mut w = PlayoutWindow::new(Codec::Pcmu);
        let start = u32::MAX - 159 - 160;
        let mut tags = Vec::new();
        for i in 0..6u32 {
            let outcome = w.push(start.wrapping_add(160 * i), &frame(i as u8 + 1));
            assert_ne!(outcome, PushOutcome::Late);
            tags.extend(pop_tags(&mut w, 1));
        }
        tags.extend(pop_tags(&mut w, D));
        assert_eq!(tags, after_delay(&[1, 2, 3, 4, 5, 6]));
        assert_eq!(w.stats().resyncs, 1, "the wrap is not a jump");
    }

    #[test]
    fn ten_ms_packets_fill_half_frames() {
        let mut w = PlayoutWindow::new(Codec::Pcma);
        w.push(0, &[1; 80]);
        w.push(80, &[2; 80]);
        w.push(160, &[3; 80]);
        for _ in 0..D {
            assert_eq!(w.pop_frame().0, FrameSource::Concealed);
        }
        let (source, out) = w.pop_frame();
        assert_eq!(source, FrameSource::Received);
        assert_eq!((out[0], out[79], out[80], out[159]), (1, 1, 2, 2));
        let (source, out) = w.pop_frame();
        assert_eq!(source, FrameSource::Received);
        assert_eq!(
            (out[79], out[80]),
            (3, 0xD5),
            "missing half is A-law silence"
        );
    }

    #[test]
    fn a_jump_ahead_re_anchors() {
        let mut w = PlayoutWindow::new(Codec::Pcmu);
        w.push(0, &frame(1));
        assert_eq!(pop_tags(&mut w, D + 1), after_delay(&[1]));
        // The caller went silent for a second without advancing our pops.
        assert_eq!(w.push(8000, &frame(7)), PushOutcome::Resynced);
        assert_eq!(pop_tags(&mut w, D + 1), after_delay(&[7]));
    }

    #[test]
    fn a_sender_falling_behind_re_anchors_after_repeated_late_packets() {
        let mut w = PlayoutWindow::new(Codec::Pcmu);
        w.push(0, &frame(1));
        pop_tags(&mut w, 10);
        // The sender is now 10 - D frames behind our clock.
        let late: Vec<_> = (1..=4u32).map(|i| w.push(160 * i, &frame(9))).collect();
        assert_eq!(late[..3], [PushOutcome::Late; 3]);
        assert_eq!(late[3], PushOutcome::Resynced);
        assert_eq!(pop_tags(&mut w, D + 1), after_delay(&[9]));
    }

    #[test]
    fn chunk_masks_cover_the_touched_samples() {
        assert_eq!(chunk_mask(0, 160), (1 << 20) - 1);
        assert_eq!(chunk_mask(0, 80), (1 << 10) - 1);
        assert_eq!(chunk_mask(80, 80), ((1 << 20) - 1) & !((1 << 10) - 1));
        assert_eq!(chunk_mask(3, 2), 1);
    }
}
