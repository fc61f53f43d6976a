//! Recording the caller's voice message: start, end key, too-short retries, hang-up mid-message.
//!
//! Part of the engine (`engine.rs`); the driver records audio and reports the length, the engine
//! decides whether the message counts and where the call goes next.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::dialplan::engine::{Action, Engine, Phase, RECORD_GRACE, Stage, Timer};
use crate::dialplan::journal::{Outcome, RecordingNote, StepKind};
use crate::dialplan::model::*;
use crate::dialplan::validate::BEEP_PROMPT;

impl Engine {
    pub(crate) fn start_recording(&mut self, now: Instant, n: &RecordNode) {
        self.seq += 1;
        self.recording = Some(self.seq);
        self.phase = Phase::Recording;
        let max = Duration::from_secs(n.max_seconds.into());
        self.arm(Timer::RecordGuard, now + max + RECORD_GRACE);
        self.log(now, StepKind::RecordingStarted);
        self.push_action(Action::StartRecording {
            id: self.seq,
            field: n.field.clone(),
            max,
            silence_end: n.silence_end_seconds.map(|s| Duration::from_secs(s.into())),
        });
    }

    pub(crate) fn recording_done(&mut self, now: Instant, duration: Duration) {
        self.disarm(Timer::RecordGuard);
        self.log(now, StepKind::RecordingDone { duration });
        let plan = Arc::clone(&self.plan);
        let Some(NodeDef::Record(n)) = plan.nodes.get(&self.node) else {
            return;
        };
        let long_enough = duration >= Duration::from_secs(n.min_seconds.into());
        if long_enough {
            self.journal.recordings.push(RecordingNote {
                field: n.field.clone(),
                node: self.node.clone(),
                duration,
            });
        }
        if self.phase == Phase::Done {
            // The caller hung up while recording; the message decides the outcome.
            if !long_enough {
                let node = self.node.clone();
                self.journal.outcome = Some(Outcome::Abandoned { node });
            }
            return;
        }
        self.attempt += 1;
        if long_enough || self.attempt >= n.max_attempts {
            return self.goto(now, n.next.clone());
        }
        self.journal.retries += 1;
        let mut p: Vec<PromptRef> = n.too_short_prompt.iter().cloned().collect();
        p.extend(n.prompts.iter().cloned());
        if n.beep {
            p.push(PromptRef(BEEP_PROMPT.into()));
        }
        self.play(now, p, Stage::Main, false);
    }
}
