//! `ivrd simulate`: runs the real engine offline against a scripted caller and a virtual clock.
//!
//! Plays the driver's part: prompts take their catalogue length, keys arrive when the script says,
//! recordings and transfers end as the options say. The same runner backs `ivrd test`
//! (`testcases.rs`), so a shipped test checks exactly what a live call would do.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::dialplan::calendar::WallClock;
use crate::dialplan::engine::{Action, CallStart, Engine, Event, PromptId, TransferResult};
use crate::dialplan::journal::{CallJournal, StepKind};
use crate::dialplan::load::{LoadedPlan, PromptCatalog};
use crate::media::digit::{Digit, DigitEvent, DtmfMethod};

/// One step of a caller script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptStep {
    /// Press a key 1 s after the current prompt ends (or 1 s after recording starts).
    Key(Digit),
    /// Press a key 0.5 s into the current prompt (barge-in / type-ahead).
    EarlyKey(Digit),
    /// Say nothing for this long before the next step.
    Wait(Duration),
    /// Hang up at this point.
    HangUp,
}

/// Parses a script like `"1,#,w5,!2,hangup"`: keys, `!k` early key, `wN` wait N s, `hangup`.
/// A token of several keys (`"13"`) presses them one after the other.
pub fn parse_script(s: &str) -> Result<Vec<ScriptStep>, String> {
    let mut out = Vec::new();
    for tok in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if tok == "hangup" {
            out.push(ScriptStep::HangUp);
        } else if let Some(n) = tok.strip_prefix('w') {
            let secs: u64 = n.parse().map_err(|_| tok.to_owned())?;
            out.push(ScriptStep::Wait(Duration::from_secs(secs)));
        } else {
            let (early, keys) = match tok.strip_prefix('!') {
                Some(k) => (true, k),
                None => (false, tok),
            };
            for c in keys.chars() {
                let d = Digit::from_char(c).ok_or_else(|| tok.to_owned())?;
                out.push(if early {
                    ScriptStep::EarlyKey(d)
                } else {
                    ScriptStep::Key(d)
                });
            }
        }
    }
    Ok(out)
}

/// How the simulated world behaves.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub script: Vec<ScriptStep>,
    pub language: Option<String>,
    pub caller: String,
    pub called: String,
    pub trunk: Option<String>,
    pub wall: WallClock,
    /// How long the caller speaks into a recording before going quiet.
    pub speak: Duration,
    /// `None`: transfers are accepted; `Some(code)`: they fail with that SIP code.
    pub transfer_fails: Option<u16>,
    /// Prompt length when the catalogue does not know it.
    pub default_prompt: Duration,
}

impl SimOptions {
    /// A caller from a mobile number to 12345 on a weekday morning, with this script.
    pub fn new(script: Vec<ScriptStep>, wall: WallClock) -> SimOptions {
        SimOptions {
            script,
            language: None,
            caller: "13800000000".into(),
            called: "12345".into(),
            trunk: None,
            wall,
            speak: Duration::from_secs(10),
            transfer_fails: None,
            default_prompt: Duration::from_secs(2),
        }
    }
}

/// Everything a simulated call did.
#[derive(Debug, Clone)]
pub struct SimulationReport {
    pub journal: CallJournal,
    /// Actions with the virtual time they were taken at.
    pub actions: Vec<(Duration, Action)>,
    pub elapsed: Duration,
    /// Text of each prompt played, where the catalogue had it.
    pub texts: BTreeMap<String, String>,
}

/// Upper bound on simulated events, far above any valid plan's needs.
const MAX_EVENTS: usize = 10_000;

struct World {
    play: Option<(u64, Instant, Instant)>,
    rec: Option<(u64, Instant, Instant)>,
    transfer_at: Option<Instant>,
    idle_since: Instant,
}

/// Runs one call through the plan; `text` gives a prompt's text for the report.
pub fn simulate(
    plan: Arc<LoadedPlan>,
    opts: &SimOptions,
    prompts: &dyn PromptCatalog,
    text: &dyn Fn(&PromptId) -> Option<String>,
) -> SimulationReport {
    let t0 = Instant::now();
    let start = CallStart {
        now: t0,
        caller: opts.caller.clone(),
        called: opts.called.clone(),
        trunk: opts.trunk.clone(),
        wall: opts.wall,
        case_id: Some("SIM-0001".into()),
        language: opts.language.clone(),
    };
    let mut e = Engine::new(plan, start);
    let mut w = World {
        play: None,
        rec: None,
        transfer_at: None,
        idle_since: t0,
    };
    let mut report = SimulationReport {
        journal: e.journal().clone(),
        actions: Vec::new(),
        elapsed: Duration::ZERO,
        texts: BTreeMap::new(),
    };
    let mut now = t0;
    let mut script = opts.script.iter().peekable();
    let mut not_before = t0;
    for _ in 0..MAX_EVENTS {
        drain(&mut e, now, &mut w, opts, prompts, text, &mut report, t0);
        if e.is_done() {
            break;
        }
        let key_at = match script.peek() {
            Some(ScriptStep::Wait(d)) => {
                not_before = now.max(w.idle_since) + *d;
                script.next();
                continue;
            }
            Some(ScriptStep::EarlyKey(_)) => Some(w.play.map_or(now, |p| p.1) + ms(500)),
            Some(ScriptStep::Key(_) | ScriptStep::HangUp) if w.play.is_none() => {
                Some(w.idle_since + ms(1000))
            }
            _ => None,
        }
        .map(|t| t.max(not_before).max(now));
        let candidates = [
            w.play.map(|p| p.2),
            w.rec.map(|r| r.2),
            w.transfer_at,
            e.poll_timeout(),
            key_at,
        ];
        let Some(next) = candidates.iter().flatten().min().copied() else {
            break;
        };
        now = next;
        if key_at == Some(now) {
            match script.next() {
                Some(ScriptStep::Key(d) | ScriptStep::EarlyKey(d)) => {
                    let ev = DigitEvent {
                        digit: *d,
                        method: DtmfMethod::Rfc4733,
                        at: now,
                    };
                    e.handle(now, Event::Digit(ev));
                }
                Some(ScriptStep::HangUp) => {
                    e.handle(now, Event::HangUp);
                    // A recording the caller ends by hanging up is still finalised by the driver.
                    if let Some((id, started, _)) = w.rec.take() {
                        let duration = now - started;
                        e.handle(now, Event::RecordingDone { id, duration });
                    }
                }
                _ => {}
            }
        } else if let Some((id, _, end)) = w.play.filter(|p| p.2 == now) {
            w.play = None;
            w.idle_since = end;
            e.handle(now, Event::PromptFinished { id });
        } else if let Some((id, started, _)) = w.rec.filter(|r| r.2 == now) {
            w.rec = None;
            w.idle_since = now;
            e.handle(
                now,
                Event::RecordingDone {
                    id,
                    duration: now - started,
                },
            );
        } else if w.transfer_at == Some(now) {
            w.transfer_at = None;
            let r = match opts.transfer_fails {
                None => TransferResult::Accepted,
                Some(code) => TransferResult::Failed { code: Some(code) },
            };
            e.handle(now, Event::Transfer(r));
        } else {
            e.handle(now, Event::Timeout);
        }
    }
    drain(&mut e, now, &mut w, opts, prompts, text, &mut report, t0);
    report.journal = e.journal().clone();
    report.elapsed = now - t0;
    report
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[allow(clippy::too_many_arguments)] // the simulated driver's whole state; splitting hides it
fn drain(
    e: &mut Engine,
    now: Instant,
    w: &mut World,
    opts: &SimOptions,
    prompts: &dyn PromptCatalog,
    text: &dyn Fn(&PromptId) -> Option<String>,
    report: &mut SimulationReport,
    t0: Instant,
) {
    while let Some(a) = e.poll_action() {
        match &a {
            Action::Play {
                id, prompts: ps, ..
            } => {
                let len: Duration = ps
                    .iter()
                    .map(|p| {
                        prompts
                            .duration(&p.language, p.name.as_str())
                            .unwrap_or(opts.default_prompt)
                    })
                    .sum();
                w.play = Some((*id, now, now + len));
                for p in ps {
                    if let Some(t) = text(p) {
                        report.texts.insert(p.to_string(), t);
                    }
                }
            }
            Action::StopPlayback { .. } => {
                w.play = None;
                w.idle_since = now;
            }
            Action::StartRecording {
                id,
                max,
                silence_end,
                ..
            } => {
                let talk = opts.speak.min(*max);
                let end = now + (talk + silence_end.unwrap_or_default()).min(*max);
                w.rec = Some((*id, now, end));
                w.idle_since = now;
            }
            Action::StopRecording { .. } => {
                if let Some(r) = w.rec.as_mut() {
                    r.2 = now;
                }
            }
            Action::Transfer { .. } => w.transfer_at = Some(now + ms(1500)),
            Action::HangUp { .. } => {}
        }
        report.actions.push((now - t0, a));
    }
}

impl fmt::Display for SimulationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let j = &self.journal;
        writeln!(f, "plan {} version {}", j.plan.name, j.plan.version)?;
        writeln!(f, "path: {}", j.nodes_visited().join(" → "))?;
        for s in &j.steps {
            let at = s.at.as_secs_f32();
            match &s.kind {
                StepKind::Enter => writeln!(f, "{at:7.1}s  enter {}", s.node)?,
                StepKind::Prompts(ps) => {
                    for p in ps {
                        let t = self.texts.get(&p.to_string()).map_or("", String::as_str);
                        writeln!(f, "{at:7.1}s    play {p}  {t}")?;
                    }
                }
                StepKind::Key { digit, method } => {
                    writeln!(f, "{at:7.1}s    key {digit} ({})", method.as_str())?
                }
                other => writeln!(f, "{at:7.1}s    {other:?}")?,
            }
        }
        writeln!(f, "language: {}", j.language)?;
        let rt = j
            .request_type
            .as_ref()
            .map(|c| format!("{} {}", c.code, c.label));
        writeln!(f, "request type: {}", rt.unwrap_or_else(|| "-".into()))?;
        let dom: Vec<String> = j
            .domain
            .iter()
            .map(|c| format!("{} {}", c.code, c.label))
            .collect();
        writeln!(
            f,
            "domain: {}",
            if dom.is_empty() {
                "-".into()
            } else {
                dom.join(" / ")
            }
        )?;
        let region = j.region.as_ref().map(|c| format!("{} {}", c.code, c.label));
        writeln!(f, "region: {}", region.unwrap_or_else(|| "-".into()))?;
        writeln!(f, "confidence: {}", j.confidence.as_str())?;
        for (k, v) in &j.fields {
            writeln!(f, "field {k} = {v}")?;
        }
        for r in &j.recordings {
            writeln!(f, "recording {} ({} ms)", r.field, r.duration.as_millis())?;
        }
        match &j.outcome {
            Some(o) => writeln!(f, "outcome: {o}")?,
            None => writeln!(f, "outcome: (call still running)")?,
        }
        writeln!(f, "time in IVR: {:.1} s", self.elapsed.as_secs_f32())
    }
}
