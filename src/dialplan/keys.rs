//! Key input for menu and collect nodes: matching choices, multi-key entries, retries, timeouts,
//! collected numbers and their confirmation.
//!
//! Part of the engine (`engine.rs` decides *when* a key is processed: barge-in, type-ahead,
//! global keys); this file decides *what* it means for the node the call is in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::dialplan::engine::{Engine, Phase, Stage, Timer};
use crate::dialplan::journal::{Confidence, StepKind};
use crate::dialplan::model::*;
use crate::dialplan::validate::pattern_matches;
use crate::media::digit::{Digit, DigitEvent};

fn secs(s: u32) -> Duration {
    Duration::from_secs(s.into())
}

impl Engine {
    /// Arms the wait for the first key after a prompt.
    pub(crate) fn arm_first_key(&mut self, now: Instant) {
        let silence = self.plan.header.silence_seconds;
        let t = match self.node_def() {
            Some(NodeDef::Menu(n)) => n.timeout.unwrap_or(silence),
            Some(NodeDef::Collect(n)) => n.timeout.unwrap_or(silence),
            _ => return,
        };
        self.arm(Timer::Input, now + secs(t));
    }

    /// One key while the node waits for input.
    pub(crate) fn key(&mut self, now: Instant, d: DigitEvent) {
        let plan = Arc::clone(&self.plan);
        match (plan.nodes.get(&self.node), self.phase) {
            (Some(NodeDef::Menu(n)), _) => self.menu_key(now, n, d),
            (Some(NodeDef::Collect(n)), Phase::Wait(Stage::Main)) => self.collect_key(now, n, d),
            (Some(NodeDef::Collect(n)), Phase::Wait(Stage::Confirm)) => self.confirm_key(now, n, d),
            _ => {}
        }
    }

    fn menu_key(&mut self, now: Instant, n: &MenuNode, d: DigitEvent) {
        self.input.push(d.digit.as_char());
        let input = self.input.clone();
        let chosen = n.keys.iter().find(|(k, _)| k.eq_ignore_ascii_case(&input));
        if let Some((_, choice)) = chosen {
            self.log(now, StepKind::Chose { input });
            self.apply_set_fields(now, &choice.set, Confidence::CallerSelected);
            return self.goto(now, choice.goto.clone());
        }
        let upper = input.to_ascii_uppercase();
        if n.keys
            .keys()
            .any(|k| k.to_ascii_uppercase().starts_with(&upper))
        {
            self.arm(Timer::Input, now + secs(n.inter_digit_timeout));
            return;
        }
        self.invalid(now);
    }

    /// Input that matched nothing: count an attempt, then explain and ask again or move on.
    fn invalid(&mut self, now: Instant) {
        let input = std::mem::take(&mut self.input);
        self.typeahead.clear();
        self.attempt += 1;
        let attempt = self.attempt;
        self.log(now, StepKind::Invalid { input, attempt });
        self.retry(now, false);
    }

    /// Handles an expired input timer.
    pub(crate) fn input_timeout(&mut self, now: Instant) {
        let plan = Arc::clone(&self.plan);
        match (plan.nodes.get(&self.node), self.phase) {
            (Some(NodeDef::Menu(_)), Phase::Wait(_)) if !self.input.is_empty() => self.invalid(now),
            (Some(NodeDef::Collect(n)), Phase::Wait(Stage::Main)) if !self.input.is_empty() => {
                self.finish_collect(now, n)
            }
            (Some(NodeDef::Menu(_) | NodeDef::Collect(_)), Phase::Wait(_)) => {
                self.attempt += 1;
                self.journal.timeouts += 1;
                let attempt = self.attempt;
                self.log(now, StepKind::Timeout { attempt });
                self.retry(now, true);
            }
            _ => {}
        }
    }

    /// After a failed attempt: replay the prompt with an explanation, or leave when exhausted.
    fn retry(&mut self, now: Instant, timed_out: bool) {
        let plan = Arc::clone(&self.plan);
        let person = plan.header.person.clone();
        let (max, invalid, timeout, prompts, exhausted, barge) = match plan.nodes.get(&self.node) {
            Some(NodeDef::Menu(n)) => (
                n.max_attempts,
                &n.invalid_prompt,
                &n.timeout_prompt,
                &n.prompts,
                n.on_exhausted.clone(),
                n.barge_in,
            ),
            Some(NodeDef::Collect(n)) => (
                n.max_attempts,
                &n.invalid_prompt,
                &n.timeout_prompt,
                &n.prompts,
                n.on_exhausted.clone(),
                true,
            ),
            _ => return,
        };
        if self.attempt >= max {
            if timed_out {
                self.set_confidence_timeout();
            }
            return self.goto(now, exhausted.unwrap_or(person));
        }
        self.journal.retries += 1;
        self.pending_value = None;
        let why = if timed_out { timeout } else { invalid };
        let mut p: Vec<PromptRef> = why.iter().cloned().collect();
        p.extend(prompts.iter().cloned());
        self.play(now, p, Stage::Main, barge);
    }

    fn collect_key(&mut self, now: Instant, n: &CollectNode, d: DigitEvent) {
        let c = d.digit.as_char();
        let is_term = n.terminator.as_deref().is_some_and(|t| t.starts_with(c));
        if is_term {
            return self.finish_collect(now, n);
        }
        self.input.push(c);
        if self.input.len() >= n.max_digits as usize {
            return self.finish_collect(now, n);
        }
        self.arm(Timer::Input, now + secs(n.inter_digit_timeout));
    }

    fn finish_collect(&mut self, now: Instant, n: &CollectNode) {
        self.disarm(Timer::Input);
        let value = self.input.clone();
        let len = value.len() as u32;
        let digits_only = value.chars().all(|c| c.is_ascii_digit());
        let fits = (n.min_digits..=n.max_digits).contains(&len)
            && digits_only
            && (n.patterns.is_empty() || n.patterns.iter().any(|p| pattern_matches(p, &value)));
        if !fits {
            return self.invalid(now);
        }
        self.log(
            now,
            StepKind::Chose {
                input: value.clone(),
            },
        );
        match &n.confirm {
            None => self.store_collected(now, n, value),
            Some(c) => {
                self.input.clear();
                let mut p = c.before.clone();
                p.extend(value.chars().map(|d| PromptRef(format!("digit-{d}"))));
                p.extend(c.after.iter().cloned());
                self.pending_value = Some(value);
                self.play(now, p, Stage::Confirm, true);
            }
        }
    }

    fn store_collected(&mut self, now: Instant, n: &CollectNode, value: String) {
        self.log(
            now,
            StepKind::Set {
                name: n.field.clone(),
                value: value.clone(),
            },
        );
        self.journal.fields.insert(n.field.clone(), value);
        self.goto(now, n.next.clone());
    }

    fn confirm_key(&mut self, now: Instant, n: &CollectNode, d: DigitEvent) {
        let Some(c) = &n.confirm else { return };
        let key = d.digit.as_char();
        if c.confirm_key.starts_with(key)
            && let Some(value) = self.pending_value.take()
        {
            return self.store_collected(now, n, value);
        }
        // The retry key, or anything else: enter the number again (counts as an attempt).
        self.input.clear();
        self.pending_value = None;
        self.invalid(now);
    }

    /// Applies a plan-wide key if it is one here; true when it acted.
    pub(crate) fn try_global(&mut self, now: Instant, digit: Digit) -> bool {
        let (enabled, own) = match self.node_def() {
            Some(NodeDef::Play(n)) => (n.global_keys, false),
            Some(NodeDef::Menu(n)) => {
                let own = n.keys.keys().any(|k| k.starts_with(digit.as_char()));
                (n.global_keys && self.input.is_empty(), own)
            }
            Some(NodeDef::Record(_)) => (true, false),
            _ => (false, false),
        };
        if !enabled || own || matches!(self.phase, Phase::Wait(Stage::Confirm)) {
            return false;
        }
        let key = digit.as_char().to_string();
        let Some(action) = self.plan.header.global_keys.get(&key).cloned() else {
            return false;
        };
        self.log(now, StepKind::GlobalKey { digit });
        self.typeahead.clear();
        match action {
            GlobalAction::Goto(t) => self.goto(now, t),
            GlobalAction::Repeat => self.repeat(now),
        }
        true
    }

    fn repeat(&mut self, now: Instant) {
        self.input.clear();
        let plan = Arc::clone(&self.plan);
        match plan.nodes.get(&self.node) {
            Some(NodeDef::Play(n)) => self.play(now, n.prompts.clone(), Stage::Main, n.barge_in),
            Some(NodeDef::Menu(n)) => self.play(now, n.prompts.clone(), Stage::Main, n.barge_in),
            Some(NodeDef::Record(_)) if self.recording.is_none() => {
                let node = self.node.clone();
                self.goto(now, node);
            }
            _ => {}
        }
    }
}
