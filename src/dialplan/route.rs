//! Routing decisions of the engine: classification (`set`), branch rules, and transfers.
//!
//! Part of the engine (`engine.rs`); everything here reads only the plan, the call's start facts
//! and the journal, so a transfer target can never come from caller input.

use std::time::Instant;

use crate::dialplan::engine::{Action, Engine, Phase, TransferResult};
use crate::dialplan::journal::{Confidence, Outcome, StepKind, TransferNote};
use crate::dialplan::model::*;

impl Engine {
    /// Applies a `set` node: region from the called number or trunk, then its fields.
    pub(crate) fn apply_set_node(&mut self, now: Instant, n: &SetNode) {
        let by_called = n.region_by_called.get(&self.start.called);
        let by_trunk = self
            .start
            .trunk
            .as_ref()
            .and_then(|t| n.region_by_trunk.get(t));
        if let Some(code) = by_called.or(by_trunk).cloned() {
            let fields = SetFields {
                region: Some(code),
                ..SetFields::default()
            };
            self.apply_set_fields(now, &fields, Confidence::Default);
        }
        self.apply_set_fields(now, &n.set, Confidence::Default);
    }

    /// Records classification and fields; codes are resolved to labels through the taxonomy.
    pub(crate) fn apply_set_fields(&mut self, now: Instant, s: &SetFields, how: Confidence) {
        let plan = std::sync::Arc::clone(&self.plan);
        let tax = plan.taxonomy.as_ref();
        if let Some(rt) = &s.request_type {
            self.log_set(now, "request_type", rt);
            self.journal.request_type = tax.and_then(|t| t.request_type(rt));
            self.journal.confidence = how;
        }
        if let Some(d) = &s.domain {
            self.log_set(now, "domain", &d.join("/"));
            self.journal.domain = tax.and_then(|t| t.domain_path(d)).unwrap_or_default();
        }
        if let Some(r) = &s.region {
            self.log_set(now, "region", r);
            self.journal.region = tax.and_then(|t| t.region(r));
        }
        if let Some(l) = &s.language {
            self.log_set(now, "language", l);
            self.journal.language = l.clone();
        }
        for (k, v) in &s.fields {
            self.log_set(now, k, v);
            self.journal.fields.insert(k.clone(), v.clone());
        }
    }

    fn log_set(&mut self, now: Instant, name: &str, value: &str) {
        let kind = StepKind::Set {
            name: name.to_owned(),
            value: value.to_owned(),
        };
        self.log(now, kind);
    }

    /// The value a branch rule's `field` names, as the call has it now.
    fn field_value(&self, field: &str) -> Option<String> {
        let j = &self.journal;
        match field {
            "language" => Some(j.language.clone()),
            "request_type" => j.request_type.as_ref().map(|c| c.code.clone()),
            "region" => j.region.as_ref().map(|c| c.code.clone()),
            "domain" => {
                let codes: Vec<&str> = j.domain.iter().map(|c| c.code.as_str()).collect();
                (!codes.is_empty()).then(|| codes.join("/"))
            }
            other => j.fields.get(other).cloned(),
        }
    }

    fn rule_matches(&self, r: &BranchRule) -> bool {
        let wall = &self.start.wall;
        let weekday = r
            .weekdays
            .as_ref()
            .is_none_or(|w| w.contains(&wall.weekday));
        let time = r.time.as_ref().is_none_or(|t| {
            crate::dialplan::calendar::TimeWindow::parse(t)
                .is_some_and(|w| w.contains(wall.minute_of_day))
        });
        let day_off = r.day_off.is_none_or(|want| {
            let is = self
                .plan
                .holidays
                .as_ref()
                .is_some_and(|h| h.is_day_off(wall));
            is == want
        });
        let field = match (&r.field, &r.equals) {
            (Some(f), Some(v)) => self.field_value(f).as_deref() == Some(v.as_str()),
            _ => true,
        };
        let called = r
            .called
            .as_ref()
            .is_none_or(|c| c.contains(&self.start.called));
        let trunk = r.trunk.as_ref().is_none_or(|t| {
            self.start
                .trunk
                .as_ref()
                .is_some_and(|have| t.contains(have))
        });
        let caller = r
            .caller_prefix
            .as_ref()
            .is_none_or(|ps| ps.iter().any(|p| self.start.caller.starts_with(p.as_str())));
        weekday && time && day_off && field && called && trunk && caller
    }

    /// The first matching rule's target, else the default.
    pub(crate) fn branch_target(&self, n: &BranchNode) -> NodeId {
        let hit = n.rules.iter().find(|r| self.rule_matches(r));
        hit.map_or_else(|| n.default.clone(), |r| r.goto.clone())
    }

    /// Sends the REFER request for a transfer node.
    pub(crate) fn start_transfer(&mut self, now: Instant, n: &TransferNode) {
        let by_type = self
            .journal
            .request_type
            .as_ref()
            .and_then(|rt| n.by_request_type.get(&rt.code));
        let target = by_type.unwrap_or(&n.target).clone();
        self.phase = Phase::Transferring;
        self.log(
            now,
            StepKind::TransferStarted {
                target: target.clone(),
            },
        );
        self.journal.transfer = Some(TransferNote {
            target: target.clone(),
            emergency: n.emergency.clone(),
            result: None,
        });
        let mut headers = Vec::new();
        if let Some(id) = &self.start.case_id {
            headers.push(("X-Case-Id".to_owned(), id.clone()));
        }
        let user_to_user = self.user_to_user();
        self.push_action(Action::Transfer {
            target,
            emergency: n.emergency.clone(),
            headers,
            user_to_user,
        });
    }

    /// The classification the agent's desk needs, as `key=value` pairs joined by `;`.
    fn user_to_user(&self) -> String {
        let j = &self.journal;
        let mut parts = Vec::new();
        if let Some(id) = &self.start.case_id {
            parts.push(format!("case={id}"));
        }
        if let Some(rt) = &j.request_type {
            parts.push(format!("type={}", rt.code));
        }
        if !j.domain.is_empty() {
            let codes: Vec<&str> = j.domain.iter().map(|c| c.code.as_str()).collect();
            parts.push(format!("domain={}", codes.join("/")));
        }
        if let Some(r) = &j.region {
            parts.push(format!("region={}", r.code));
        }
        parts.push(format!("lang={}", j.language));
        parts.join(";")
    }

    pub(crate) fn transfer_result(&mut self, now: Instant, r: TransferResult) {
        let plan = std::sync::Arc::clone(&self.plan);
        let Some(NodeDef::Transfer(n)) = plan.nodes.get(&self.node) else {
            return;
        };
        let Some(note) = self.journal.transfer.as_mut() else {
            return;
        };
        match r {
            TransferResult::Accepted => {
                note.result = Some(Ok(()));
                let target = note.target.clone();
                let outcome = match &n.emergency {
                    Some(number) => Outcome::EmergencyHandoff {
                        number: number.clone(),
                        target,
                    },
                    None => Outcome::Transferred { target },
                };
                self.finish(now, outcome);
            }
            TransferResult::Failed { code } => {
                note.result = Some(Err(code));
                self.log(now, StepKind::TransferFailed { code });
                self.goto(now, n.on_failure.clone());
            }
        }
    }
}
