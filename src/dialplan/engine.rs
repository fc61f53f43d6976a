//! The per-call dialplan state machine: events in, actions out, `now` passed in.
//!
//! Sits between the call driver (which owns media, SIP and the clock) and the call journal.
//! Contract for the driver, as in str0m: after [`Engine::new`] and after every [`Engine::handle`],
//! drain [`Engine::poll_action`] until `None`, then sleep until [`Engine::poll_timeout`] and feed
//! [`Event::Timeout`]. Prompt and recording actions carry an id; events for a stopped id are
//! ignored, so a late `PromptFinished` after a barge-in cannot move the call twice.
//! Key handling for menus and collect nodes lives in `keys.rs`.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::dialplan::calendar::WallClock;
use crate::dialplan::journal::{CallJournal, Confidence, Outcome, PlanStamp, Step, StepKind};
use crate::dialplan::load::LoadedPlan;
use crate::dialplan::model::*;
use crate::dialplan::validate::BEEP_PROMPT;
use crate::media::digit::DigitEvent;

/// A prompt resolved for one call: `prompts/<language>/<name>.wav`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PromptId {
    pub language: String,
    pub name: PromptRef,
}

impl fmt::Display for PromptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.language, self.name)
    }
}

/// What the driver knows when the call is answered.
#[derive(Debug, Clone)]
pub struct CallStart {
    /// When the call was answered; journal times count from here.
    pub now: Instant,
    /// Calling number as received (From/P-Asserted-Identity user part).
    pub caller: String,
    /// Called number (DNIS) as received; `set` nodes map it to a region.
    pub called: String,
    /// Name of the trunk the call arrived on, when the config names trunks.
    pub trunk: Option<String>,
    /// Local time in the plan's timezone (see [`WallClock::from_unix`]).
    pub wall: WallClock,
    /// The case id, sent with a transfer as `X-Case-Id`.
    pub case_id: Option<String>,
    /// Language known before the IVR starts (e.g. a dedicated English number); plan default if
    /// `None`.
    pub language: Option<String>,
}

/// How a transfer ended (REFER response and NOTIFY sipfrag, RFC 3515 §2.4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferResult {
    /// 202 to the REFER and a 2xx sipfrag in NOTIFY: the caller is with the target.
    Accepted,
    /// The SIP status that failed it, when there was one.
    Failed { code: Option<u16> },
}

/// Inputs to the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The prompts of `Action::Play { id, .. }` played to the end (not sent after a stop).
    PromptFinished {
        /// The id from the `Play` action.
        id: u64,
    },
    /// One de-duplicated key press, with the method that carried it.
    Digit(DigitEvent),
    /// A deadline from [`Engine::poll_timeout`] has passed.
    Timeout,
    /// The recording of `Action::StartRecording { id, .. }` is finalised on disk.
    RecordingDone {
        /// The id from the `StartRecording` action.
        id: u64,
        /// Audio length of the file.
        duration: Duration,
    },
    /// The outcome of the last `Action::Transfer`.
    Transfer(TransferResult),
    /// The caller hung up.
    HangUp,
}

/// Outputs of the engine, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Play these prompts back to back; with `barge_in` a key may stop them. Report the end
    /// with [`Event::PromptFinished`] carrying `id`.
    Play {
        /// Names this playback in later events and actions.
        id: u64,
        /// Files to play, already resolved for the call's language.
        prompts: Vec<PromptId>,
        /// Whether the driver may cut the prompt short at a key (the engine stops it anyway).
        barge_in: bool,
    },
    /// Stop playback `id` now; no `PromptFinished` is expected for it.
    StopPlayback {
        /// The `Play` to stop.
        id: u64,
    },
    /// Record the caller into the recording named `field`; the driver stops at `max` or after
    /// `silence_end` of silence and reports [`Event::RecordingDone`].
    StartRecording {
        /// Names this recording in later events and actions.
        id: u64,
        /// The recording's name in the case (`message`).
        field: String,
        /// Longest message.
        max: Duration,
        /// Stop after this much silence, when set.
        silence_end: Option<Duration>,
    },
    /// Stop recording `id` (end key or guard timer); then report `RecordingDone`.
    StopRecording {
        /// The `StartRecording` to stop.
        id: u64,
    },
    /// Blind transfer (REFER, RFC 3515) to a target written in the plan; report the outcome
    /// with [`Event::Transfer`].
    Transfer {
        /// `sip:`/`sips:`/`tel:` URI from the plan.
        target: String,
        /// `110`/`119`/`120`/`122` for an emergency hand-off.
        emergency: Option<String>,
        /// Extra headers for the REFER, e.g. `X-Case-Id`.
        headers: Vec<(String, String)>,
        /// Plain User-to-User payload; the SIP layer hex-encodes it (RFC 7433).
        user_to_user: String,
    },
    /// End the call (BYE) with this outcome; the last action of a call.
    HangUp {
        /// Also in the journal.
        outcome: Outcome,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Main,
    Confirm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Prompt(Stage),
    Wait(Stage),
    Recording,
    Transferring,
    Done,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Timer {
    Input = 0,
    MaxIvr = 1,
    RecordGuard = 2,
}

/// Extra time a recording may run past its maximum before the engine asks for it to stop.
pub(crate) const RECORD_GRACE: Duration = Duration::from_secs(5);
/// Set/branch nodes followed in one go before the engine assumes a loop (load refuses those).
const MAX_INSTANT_STEPS: usize = 64;

/// One call's walk through a plan.
pub struct Engine {
    pub(crate) plan: Arc<LoadedPlan>,
    pub(crate) start: CallStart,
    pub(crate) node: NodeId,
    pub(crate) phase: Phase,
    pub(crate) attempt: u32,
    pub(crate) input: String,
    pub(crate) typeahead: VecDeque<DigitEvent>,
    pub(crate) pending_value: Option<String>,
    timers: [Option<Instant>; 3],
    pub(crate) seq: u64,
    pub(crate) playing: Option<u64>,
    pub(crate) recording: Option<u64>,
    actions: VecDeque<Action>,
    pub(crate) journal: CallJournal,
}

impl Engine {
    /// Starts a call at the plan's entry node; the first actions are ready to poll.
    pub fn new(plan: Arc<LoadedPlan>, start: CallStart) -> Engine {
        let stamp = PlanStamp {
            name: plan.header.name.clone(),
            version: plan.header.version.clone(),
            sha256: plan.sha256.clone(),
        };
        let lang = start.language.clone();
        let lang = lang.unwrap_or_else(|| plan.header.default_language.clone());
        let journal = CallJournal::new(
            stamp,
            &start.caller,
            &start.called,
            start.trunk.as_deref(),
            &lang,
        );
        let now = start.now;
        let entry = plan.header.entry.clone();
        let mut e = Engine {
            node: entry.clone(),
            phase: Phase::Done,
            attempt: 0,
            input: String::new(),
            typeahead: VecDeque::new(),
            pending_value: None,
            timers: [None; 3],
            seq: 0,
            playing: None,
            recording: None,
            actions: VecDeque::new(),
            journal,
            start,
            plan,
        };
        let limit = Duration::from_secs(e.plan.header.max_ivr_seconds.into());
        e.arm(Timer::MaxIvr, now + limit);
        e.goto(now, entry);
        e
    }

    /// The next action for the driver, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The earliest armed deadline; feed [`Event::Timeout`] once it has passed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Done {
            return None;
        }
        self.timers.iter().flatten().min().copied()
    }

    /// The journal so far (complete once the call is done).
    pub fn journal(&self) -> &CallJournal {
        &self.journal
    }

    /// True once the engine has asked for a hang-up or the caller has gone.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The node the call is in.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// Feeds one event.
    pub fn handle(&mut self, now: Instant, event: Event) {
        match event {
            Event::PromptFinished { id } if self.playing == Some(id) => {
                self.playing = None;
                self.prompt_finished(now);
            }
            Event::PromptFinished { .. } => {}
            Event::Digit(d) => self.digit(now, d),
            Event::Timeout => self.timeouts(now),
            Event::RecordingDone { id, duration } if self.recording == Some(id) => {
                self.recording = None;
                self.recording_done(now, duration);
            }
            Event::RecordingDone { .. } => {}
            Event::Transfer(r) if self.phase == Phase::Transferring => self.transfer_result(now, r),
            Event::Transfer(_) => {}
            Event::HangUp => self.caller_hung_up(now),
        }
    }

    pub(crate) fn arm(&mut self, t: Timer, at: Instant) {
        self.timers[t as usize] = Some(at);
    }

    pub(crate) fn disarm(&mut self, t: Timer) {
        self.timers[t as usize] = None;
    }

    pub(crate) fn log(&mut self, now: Instant, kind: StepKind) {
        let at = now.saturating_duration_since(self.start.now);
        let node = self.node.clone();
        self.journal.steps.push(Step { at, node, kind });
    }

    pub(crate) fn node_def(&self) -> Option<&NodeDef> {
        self.plan.nodes.get(&self.node)
    }

    /// The prompt language for this call: its own if the plan speaks it, else the fallback.
    fn language(&self) -> &str {
        let h = &self.plan.header;
        if h.languages.contains(&self.journal.language) {
            &self.journal.language
        } else {
            h.fallback_language
                .as_deref()
                .unwrap_or(&h.default_language)
        }
    }

    pub(crate) fn resolve(&self, p: &PromptRef) -> PromptId {
        PromptId {
            language: self.language().to_owned(),
            name: p.clone(),
        }
    }

    /// Plays prompts (or, with none, behaves as if they finished at once).
    pub(crate) fn play(
        &mut self,
        now: Instant,
        prompts: Vec<PromptRef>,
        stage: Stage,
        barge_in: bool,
    ) {
        self.stop_playback();
        self.disarm(Timer::Input);
        self.phase = Phase::Prompt(stage);
        if prompts.is_empty() {
            return self.prompt_finished(now);
        }
        let ids: Vec<PromptId> = prompts.iter().map(|p| self.resolve(p)).collect();
        self.log(now, StepKind::Prompts(ids.clone()));
        self.seq += 1;
        self.playing = Some(self.seq);
        self.actions.push_back(Action::Play {
            id: self.seq,
            prompts: ids,
            barge_in,
        });
    }

    pub(crate) fn stop_playback(&mut self) {
        if let Some(id) = self.playing.take() {
            self.actions.push_back(Action::StopPlayback { id });
        }
    }

    pub(crate) fn stop_recording(&mut self) {
        if let Some(id) = self.recording {
            self.actions.push_back(Action::StopRecording { id });
        }
    }

    /// Leaves the current node for `target`, following set/branch nodes at once.
    pub(crate) fn goto(&mut self, now: Instant, target: NodeId) {
        self.stop_playback();
        self.disarm(Timer::Input);
        self.disarm(Timer::RecordGuard);
        self.attempt = 0;
        self.input.clear();
        self.pending_value = None;
        let mut target = target;
        for _ in 0..MAX_INSTANT_STEPS {
            self.node = target.clone();
            self.log(now, StepKind::Enter);
            let plan = Arc::clone(&self.plan);
            let Some(node) = plan.nodes.get(&target) else {
                return self.finish(now, Outcome::Completed);
            };
            match node {
                NodeDef::Set(n) => {
                    self.apply_set_node(now, n);
                    target = n.next.clone();
                }
                NodeDef::Branch(n) => target = self.branch_target(n),
                other => return self.enter(now, other),
            }
        }
        // Only a plan that bypassed `load` can get here; a person is the humane way out.
        let person = self.plan.header.person.clone();
        if target != person {
            self.goto(now, person);
        }
    }

    fn enter(&mut self, now: Instant, node: &NodeDef) {
        match node {
            NodeDef::Play(n) => self.play(now, n.prompts.clone(), Stage::Main, n.barge_in),
            NodeDef::Menu(n) => {
                if n.barge_in && !self.typeahead.is_empty() {
                    // Type-ahead: the caller already knows the way; skip the prompt.
                    self.phase = Phase::Wait(Stage::Main);
                    self.drain_typeahead(now);
                } else {
                    self.play(now, n.prompts.clone(), Stage::Main, n.barge_in);
                }
            }
            NodeDef::Collect(n) => {
                if !self.typeahead.is_empty() {
                    self.phase = Phase::Wait(Stage::Main);
                    self.drain_typeahead(now);
                } else {
                    self.play(now, n.prompts.clone(), Stage::Main, true);
                }
            }
            NodeDef::Record(n) => {
                self.typeahead.clear();
                let mut p = n.prompts.clone();
                if n.beep {
                    p.push(PromptRef(BEEP_PROMPT.into()));
                }
                self.play(now, p, Stage::Main, false);
            }
            NodeDef::Transfer(n) => {
                self.typeahead.clear();
                self.play(now, n.prompts.clone(), Stage::Main, false);
            }
            NodeDef::Hangup(n) => {
                self.typeahead.clear();
                self.play(now, n.prompts.clone(), Stage::Main, false);
            }
            NodeDef::Set(_) | NodeDef::Branch(_) => {}
        }
    }

    fn prompt_finished(&mut self, now: Instant) {
        let Phase::Prompt(stage) = self.phase else {
            return;
        };
        let plan = Arc::clone(&self.plan);
        match plan.nodes.get(&self.node) {
            Some(NodeDef::Play(n)) => self.goto(now, n.next.clone()),
            Some(NodeDef::Menu(_) | NodeDef::Collect(_)) => {
                self.phase = Phase::Wait(stage);
                self.arm_first_key(now);
                self.drain_typeahead(now);
            }
            Some(NodeDef::Record(n)) => self.start_recording(now, n),
            Some(NodeDef::Transfer(n)) => self.start_transfer(now, n),
            Some(NodeDef::Hangup(n)) => {
                let outcome = match n.outcome {
                    Some(HangupOutcome::MessageLeft) => Outcome::MessageLeft,
                    Some(HangupOutcome::Completed) => Outcome::Completed,
                    None if !self.journal.recordings.is_empty() => Outcome::MessageLeft,
                    None => Outcome::Completed,
                };
                self.finish(now, outcome);
            }
            _ => {}
        }
    }

    pub(crate) fn finish(&mut self, now: Instant, outcome: Outcome) {
        self.stop_playback();
        self.stop_recording();
        self.phase = Phase::Done;
        self.timers = [None; 3];
        self.journal.ended_after = Some(now.saturating_duration_since(self.start.now));
        self.journal.outcome = Some(outcome.clone());
        self.actions.push_back(Action::HangUp { outcome });
    }

    fn digit(&mut self, now: Instant, d: DigitEvent) {
        match self.phase {
            Phase::Done | Phase::Transferring => return,
            Phase::Recording => {
                self.log(
                    now,
                    StepKind::Key {
                        digit: d.digit,
                        method: d.method,
                    },
                );
                let end = match self.node_def() {
                    Some(NodeDef::Record(n)) => n.end_key.clone(),
                    _ => None,
                };
                if end.is_some_and(|k| k.starts_with(d.digit.as_char())) {
                    self.stop_recording();
                }
                return;
            }
            _ => {}
        }
        self.log(
            now,
            StepKind::Key {
                digit: d.digit,
                method: d.method,
            },
        );
        if self.try_global(now, d.digit) {
            return;
        }
        let plan = Arc::clone(&self.plan);
        match (plan.nodes.get(&self.node), self.phase) {
            (Some(NodeDef::Play(n)), _) => {
                self.typeahead.push_back(d);
                if n.barge_in {
                    self.goto(now, n.next.clone());
                }
            }
            (Some(NodeDef::Menu(_) | NodeDef::Collect(_)), Phase::Prompt(stage)) => {
                self.typeahead.push_back(d);
                if self.barge_in_here() {
                    self.stop_playback();
                    self.phase = Phase::Wait(stage);
                    self.drain_typeahead(now);
                }
            }
            (Some(NodeDef::Menu(_) | NodeDef::Collect(_)), Phase::Wait(_)) => self.key(now, d),
            _ => {}
        }
    }

    fn barge_in_here(&self) -> bool {
        match self.node_def() {
            Some(NodeDef::Menu(n)) => n.barge_in,
            Some(NodeDef::Collect(_)) => true,
            _ => false,
        }
    }

    /// Feeds buffered keys while the node is waiting for input.
    pub(crate) fn drain_typeahead(&mut self, now: Instant) {
        let node = self.node.clone();
        while matches!(self.phase, Phase::Wait(_)) && self.node == node {
            let Some(d) = self.typeahead.pop_front() else {
                break;
            };
            self.key(now, d);
        }
    }

    fn timeouts(&mut self, now: Instant) {
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if due(self.timers[Timer::MaxIvr as usize]) {
            self.disarm(Timer::MaxIvr);
            self.max_ivr(now);
            return;
        }
        if due(self.timers[Timer::RecordGuard as usize]) {
            self.disarm(Timer::RecordGuard);
            self.stop_recording();
        }
        if due(self.timers[Timer::Input as usize]) {
            self.disarm(Timer::Input);
            self.input_timeout(now);
        }
    }

    fn max_ivr(&mut self, now: Instant) {
        // A call already saying goodbye or being transferred is leaving anyway.
        let leaving = matches!(self.node_def(), Some(NodeDef::Hangup(_)));
        if leaving || matches!(self.phase, Phase::Done | Phase::Transferring) {
            return;
        }
        self.log(now, StepKind::MaxIvrTime);
        self.stop_recording();
        self.recording = None;
        self.typeahead.clear();
        let h = &self.plan.header;
        let target = h.on_max_ivr.clone().unwrap_or_else(|| h.person.clone());
        self.goto(now, target);
    }

    fn caller_hung_up(&mut self, now: Instant) {
        if self.phase == Phase::Done {
            return;
        }
        self.log(now, StepKind::CallerHungUp);
        // Hanging up is the usual way to end a message (`RecordingDone` may still correct it),
        // and a caller who hangs up during the thank-you after a kept message has left one: the
        // back office must see the message, not an abandoned call.
        let outcome = if self.phase == Phase::Recording || !self.journal.recordings.is_empty() {
            Outcome::MessageLeft
        } else {
            Outcome::Abandoned {
                node: self.node.clone(),
            }
        };
        self.playing = None;
        self.phase = Phase::Done;
        self.timers = [None; 3];
        self.journal.ended_after = Some(now.saturating_duration_since(self.start.now));
        self.journal.outcome = Some(outcome);
    }

    pub(crate) fn set_confidence_timeout(&mut self) {
        if self.journal.request_type.is_none() {
            self.journal.confidence = Confidence::Timeout;
        }
    }

    pub(crate) fn push_action(&mut self, a: Action) {
        self.actions.push_back(a);
    }
}
