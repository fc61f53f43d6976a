//! The end of a call: its media stopped and drained, the recordings finalised, the engine
//! told, the media's counters exported and the case spooled (with the crash marker cleared once
//! the case is on disk).

use super::CallTask;
use crate::case::{CallFacts, CaseSkeleton};
use crate::dialplan::Event;
use crate::media::g711::FRAME_SAMPLES;
use crate::media::session::MediaSession;
use crate::metrics::RecordingKind;
use crate::runtime::case_writer::{self, hangup_of, recording_ref, unix_ms_of};
use crate::runtime::media_call::{FinishedMedia, MediaCommand, MediaNotice};
use crate::sip::uas::EndReason;
use std::time::{Duration, Instant};

/// Bytes of one packet we send: RTP header plus one 20 ms G.711 frame.
const RTP_PACKET_BYTES: u64 = (crate::media::rtp::RTP_HEADER_LEN + FRAME_SAMPLES) as u64;

impl CallTask {
    /// Ends the media and waits for it: a message still being taken and the call recording
    /// come back to be finalised. `None` when the media clock is gone.
    async fn stop_media(&mut self) -> Option<FinishedMedia> {
        self.media.send(MediaCommand::Finish);
        while let Some(notice) = self.notices.recv().await {
            match notice {
                MediaNotice::Finished(media) => return Some(*media),
                MediaNotice::MessageEnded { tap, at } => self.message_ended(tap, at).await,
                _ => {}
            }
        }
        None
    }

    /// The end: media stopped (RTCP BYE sent), recordings finalised, the engine told, the
    /// case spooled.
    pub(super) async fn finish(&mut self, end: EndReason) {
        // The call ended now; finalising the recordings (fsync, hash) below may take a while
        // on a busy disk and is not part of the call.
        let ended = Instant::now();
        if !self.engine.is_done() {
            self.engine.handle(ended, Event::HangUp);
        }
        let finished = self.stop_media().await;
        if let Some(media) = finished {
            if let Some(tap) = media.message {
                self.message_ended(tap, ended).await;
            }
            if let Some(rec) = media.recorder {
                let result = rec.finish().await;
                case_writer::observe_recording(&self.shared.metrics, RecordingKind::Call, &result);
                if let Ok(summary) = result {
                    self.recordings.insert(0, recording_ref("call", &summary));
                }
            }
            self.observe_media(&media.session, media.send_errors);
        }
        let facts = CallFacts {
            case_id: self.case_id.to_string(),
            call_id: self.info.call_id.clone(),
            caller: self.info.caller.clone(),
            called: self.info.called.clone(),
            trunk: self.info.trunk.to_string(),
            received_unix_ms: unix_ms_of(self.info.received),
            answered_unix_ms: Some(unix_ms_of(self.answered)),
            ended_unix_ms: unix_ms_of(ended),
            hangup: hangup_of(end),
            host: self.shared.host.clone(),
        };
        let journal = self.engine.journal();
        let case = CaseSkeleton::from_journal(
            &facts,
            journal,
            std::mem::take(&mut self.recordings),
            self.media_timed_out,
        );
        case_writer::observe_journey(
            &self.shared.metrics,
            journal,
            &case.outcome,
            ended.saturating_duration_since(self.answered),
        );
        tracing::info!(
            reason = end.as_str(),
            outcome = %case.outcome,
            path = %journal.nodes_visited().join(">"),
            "call finished"
        );
        // The marker goes only once the case is on disk: a case held in memory for the disk
        // would die with the process, the marker would not.
        let marker = self.marker.take().map(|p| (self.shared.markers.clone(), p));
        let (cases, id) = (&self.shared.cases, self.case_id.clone());
        cases.spool_clearing(id, &case, marker).await;
    }

    fn observe_media(&self, session: &MediaSession, send_errors: u64) {
        let stats = session.receiver();
        let counters = session.counters();
        let m = &self.shared.metrics;
        m.rtp_received(stats.packets(), stats.bytes());
        m.rtp_sent(
            counters.packets_sent,
            counters.packets_sent * RTP_PACKET_BYTES,
        );
        m.rtp_lost(u64::try_from(stats.lost()).unwrap_or(0));
        m.rtp_late(stats.late());
        m.rtp_unexpected_source(counters.unexpected_source);
        m.rtp_send_errors(send_errors);
        let jitter = Duration::from_micros(u64::from(stats.jitter()) * 125);
        m.rtp_jitter(jitter);
        // At info, one line per call: when a caller says a key went unheard, this tells a
        // network loss (lost), a sender that stalled (too_late, concealed) and a stranger
        // (unexpected) apart without a capture.
        let playout = session.playout_stats();
        tracing::info!(
            rtp_in = stats.packets(),
            lost = stats.lost(),
            reordered = stats.late(),
            too_late = playout.late_dropped,
            resyncs = playout.resyncs,
            concealed = counters.concealed_frames,
            unexpected = counters.unexpected_source,
            jitter_ms = jitter.as_secs_f64() * 1000.0,
            rtp_out = counters.packets_sent,
            send_errors,
            "media ended"
        );
    }
}
