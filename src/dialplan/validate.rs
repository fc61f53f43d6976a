//! Per-node checks on a parsed plan: targets, prompts, keys, ranges, codes, URIs, patterns.
//!
//! Called by `load.rs` between serde parsing and graph analysis (`analysis.rs`). Each finding
//! carries the key path it is about, which `load.rs` turns into a line number.

use std::collections::{BTreeMap, BTreeSet};

use crate::dialplan::Problem;
use crate::dialplan::calendar::TimeWindow;
use crate::dialplan::keypad::pattern_valid;
pub use crate::dialplan::keypad::{parse_key, pattern_matches};
use crate::dialplan::load::PromptCatalog;
use crate::dialplan::model::*;
use crate::dialplan::taxonomy::Taxonomy;

/// A finding and the TOML key path it belongs to.
pub type Finding = (Vec<String>, Problem);

/// Emergency numbers that stay separate from 12345 (DOMAIN.md).
pub const EMERGENCY_NUMBERS: [&str; 4] = ["110", "119", "120", "122"];

/// Prompt played right before a recording starts when a record node asks for a beep.
pub const BEEP_PROMPT: &str = "beep";

/// What the per-node checks need to know besides the nodes.
pub struct Context<'a> {
    pub plan: &'a PlanFile,
    pub taxonomy: Option<&'a Taxonomy>,
    pub has_holidays: bool,
    pub prompts: &'a dyn PromptCatalog,
}

/// Checks the header and every node; returns all findings (empty when the plan is sound).
pub fn check(cx: &Context<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    check_header(cx, &mut out);
    for (id, node) in &cx.plan.nodes {
        let mut v = NodeCheck {
            cx,
            id: id.as_str(),
            out: &mut out,
        };
        v.node(node);
    }
    out
}

fn path(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

fn check_header(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let h = &cx.plan.plan;
    let here = |k: &str| path(&["plan", k]);
    if h.languages.is_empty() {
        out.push((here("languages"), Problem::NoLanguages));
    }
    let langs = [Some(&h.default_language), h.fallback_language.as_ref()];
    for l in langs.into_iter().flatten() {
        if !h.languages.contains(l) {
            let problem = Problem::UnknownLanguage {
                node: "plan".into(),
                language: l.clone(),
            };
            out.push((here("default_language"), problem));
        }
    }
    if crate::dialplan::calendar::parse_utc_offset(&h.timezone).is_none() {
        out.push((
            here("timezone"),
            Problem::BadTimezone {
                value: h.timezone.clone(),
            },
        ));
    }
    let r = [
        ("silence_seconds", h.silence_seconds, 1, 30),
        ("max_ivr_seconds", h.max_ivr_seconds, 30, 1800),
    ];
    for (setting, value, min, max) in r {
        range(
            out,
            here(setting),
            "plan".into(),
            (setting, value, min, max),
        );
    }
    check_header_links(cx, out);
}

/// Header targets and global keys.
fn check_header_links(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let h = &cx.plan.plan;
    let here = |k: &str| path(&["plan", k]);
    let targets = [("entry", Some(&h.entry)), ("person", Some(&h.person))];
    let targets = targets
        .into_iter()
        .chain([("on_max_ivr", h.on_max_ivr.as_ref())]);
    for (k, t) in targets {
        if let Some(t) = t.filter(|t| !cx.plan.nodes.contains_key(*t)) {
            let p = Problem::UnknownTarget {
                node: "plan".into(),
                target: t.to_string(),
            };
            out.push((here(k), p));
        }
    }
    for (key, action) in &h.global_keys {
        let kp = path(&["plan", "global_keys", key]);
        match parse_key(key) {
            Ok(d) if d.len() == 1 => {}
            Ok(_) => out.push((kp.clone(), bad_key("plan", key, "global keys are one key"))),
            Err(r) => out.push((kp.clone(), bad_key("plan", key, r))),
        }
        if let GlobalAction::Goto(t) = action
            && !cx.plan.nodes.contains_key(t)
        {
            let p = Problem::UnknownTarget {
                node: "plan".into(),
                target: t.to_string(),
            };
            out.push((kp, p));
        }
    }
}

fn bad_key(node: &str, key: &str, reason: &'static str) -> Problem {
    Problem::ImpossibleKey {
        node: node.into(),
        key: key.into(),
        reason,
    }
}

fn range(
    out: &mut Vec<Finding>,
    at: Vec<String>,
    node: String,
    (setting, value, min, max): (&'static str, u32, u32, u32),
) {
    if !(min..=max).contains(&value) {
        let problem = Problem::OutOfRange {
            node,
            setting,
            value: value.into(),
            min: min.into(),
            max: max.into(),
        };
        out.push((at, problem));
    }
}

struct NodeCheck<'a, 'b> {
    cx: &'a Context<'a>,
    id: &'a str,
    out: &'b mut Vec<Finding>,
}

impl NodeCheck<'_, '_> {
    fn at(&self, rest: &[&str]) -> Vec<String> {
        let mut p = path(&["nodes", self.id]);
        p.extend(rest.iter().map(|s| s.to_string()));
        p
    }

    fn push(&mut self, rest: &[&str], p: Problem) {
        let at = self.at(rest);
        self.out.push((at, p));
    }

    fn node(&mut self, node: &NodeDef) {
        match node {
            NodeDef::Play(n) => {
                self.prompts("prompts", &n.prompts, true);
                self.target("next", &n.next);
            }
            NodeDef::Menu(n) => self.menu(n),
            NodeDef::Collect(n) => self.collect(n),
            NodeDef::Record(n) => self.record(n),
            NodeDef::Set(n) => self.set_node(n),
            NodeDef::Branch(n) => self.branch(n),
            NodeDef::Transfer(n) => self.transfer(n),
            NodeDef::Hangup(n) => self.prompts("prompts", &n.prompts, false),
        }
    }

    fn target(&mut self, key: &str, t: &NodeId) {
        if !self.cx.plan.nodes.contains_key(t) {
            let p = Problem::UnknownTarget {
                node: self.id.into(),
                target: t.to_string(),
            };
            self.push(&[key], p);
        }
    }

    fn prompt(&mut self, key: &str, p: &PromptRef) {
        for lang in &self.cx.plan.plan.languages {
            if self.cx.prompts.duration(lang, p.as_str()).is_none() {
                let problem = Problem::MissingPrompt {
                    node: self.id.into(),
                    prompt: p.to_string(),
                    language: lang.clone(),
                };
                self.push(&[key], problem);
            }
        }
    }

    fn prompts(&mut self, key: &str, ps: &[PromptRef], required: bool) {
        if required && ps.is_empty() {
            let p = Problem::NoPrompt {
                node: self.id.into(),
            };
            self.push(&[key], p);
        }
        for p in ps {
            self.prompt(key, p);
        }
    }

    fn range(&mut self, setting: &'static str, value: u32, min: u32, max: u32) {
        let at = self.at(&[setting]);
        let node = format!("node `{}`", self.id);
        range(self.out, at, node, (setting, value, min, max));
    }

    fn menu(&mut self, n: &MenuNode) {
        self.prompts("prompts", &n.prompts, true);
        for (k, p) in [
            ("invalid_prompt", &n.invalid_prompt),
            ("timeout_prompt", &n.timeout_prompt),
        ] {
            if let Some(p) = p {
                self.prompt(k, p);
            }
        }
        if let Some(t) = &n.on_exhausted {
            self.target("on_exhausted", t);
        }
        self.range("timeout", n.timeout.unwrap_or(1), 1, 30);
        self.range("inter_digit_timeout", n.inter_digit_timeout, 1, 10);
        self.range("max_attempts", n.max_attempts, 1, 5);
        let mut seen: BTreeMap<String, &str> = BTreeMap::new();
        for (key, choice) in &n.keys {
            match parse_key(key) {
                Err(r) => self.push(&["keys", key], bad_key(self.id, key, r)),
                Ok(d) => {
                    let norm: String = d.iter().map(|d| d.as_char()).collect();
                    if seen.insert(norm, key).is_some() {
                        let p = Problem::DuplicateKey {
                            node: self.id.into(),
                            key: key.clone(),
                        };
                        self.push(&["keys", key], p);
                    }
                }
            }
            let t = &choice.goto;
            if !self.cx.plan.nodes.contains_key(t) {
                let p = Problem::UnknownTarget {
                    node: self.id.into(),
                    target: t.to_string(),
                };
                self.push(&["keys", key, "goto"], p);
            }
            self.set_fields(&["keys", key, "set"], &choice.set);
        }
        let norms: Vec<&String> = seen.keys().collect();
        for short in &norms {
            for long in &norms {
                if long.len() > short.len() && long.starts_with(short.as_str()) {
                    let p = Problem::ShadowedKey {
                        node: self.id.into(),
                        short: short.to_string(),
                        long: long.to_string(),
                    };
                    self.push(&["keys", seen[*long]], p);
                }
            }
        }
    }

    fn collect(&mut self, n: &CollectNode) {
        self.prompts("prompts", &n.prompts, true);
        for (k, p) in [
            ("invalid_prompt", &n.invalid_prompt),
            ("timeout_prompt", &n.timeout_prompt),
        ] {
            if let Some(p) = p {
                self.prompt(k, p);
            }
        }
        self.target("next", &n.next);
        if let Some(t) = &n.on_exhausted {
            self.target("on_exhausted", t);
        }
        self.range("max_digits", n.max_digits, 1, 32);
        self.range("min_digits", n.min_digits, 1, n.max_digits.max(1));
        self.range("timeout", n.timeout.unwrap_or(1), 1, 30);
        self.range("inter_digit_timeout", n.inter_digit_timeout, 1, 15);
        self.range("max_attempts", n.max_attempts, 1, 5);
        if let Some(t) = &n.terminator {
            self.single_key("terminator", t);
            if t.chars().any(|c| c.is_ascii_digit()) {
                self.push(
                    &["terminator"],
                    bad_key(self.id, t, "a digit cannot end a number"),
                );
            }
        }
        for p in n.patterns.iter().filter(|p| !pattern_valid(p)) {
            let problem = Problem::BadPattern {
                node: self.id.into(),
                pattern: p.clone(),
            };
            self.push(&["patterns"], problem);
        }
        if let Some(c) = &n.confirm {
            self.prompts("confirm", &c.before, false);
            self.prompts("confirm", &c.after, true);
            for d in 0..=9 {
                self.prompt("confirm", &PromptRef(format!("digit-{d}")));
            }
            self.single_key("confirm", &c.confirm_key);
            self.single_key("confirm", &c.retry_key);
            if c.confirm_key == c.retry_key {
                let p = Problem::DuplicateKey {
                    node: self.id.into(),
                    key: c.confirm_key.clone(),
                };
                self.push(&["confirm", "retry_key"], p);
            }
        }
    }

    fn single_key(&mut self, key: &str, value: &str) {
        match parse_key(value) {
            Ok(d) if d.len() == 1 => {}
            Ok(_) => self.push(&[key], bad_key(self.id, value, "must be one key")),
            Err(r) => self.push(&[key], bad_key(self.id, value, r)),
        }
    }

    fn record(&mut self, n: &RecordNode) {
        self.prompts("prompts", &n.prompts, true);
        if n.beep {
            self.prompt("beep", &PromptRef(BEEP_PROMPT.into()));
        }
        if let Some(p) = &n.too_short_prompt {
            self.prompt("too_short_prompt", p);
        }
        self.target("next", &n.next);
        self.range("max_seconds", n.max_seconds, 5, 600);
        self.range(
            "min_seconds",
            n.min_seconds,
            0,
            n.max_seconds.saturating_sub(1),
        );
        self.range("max_attempts", n.max_attempts, 1, 5);
        if let Some(s) = n.silence_end_seconds {
            self.range("silence_end_seconds", s, 1, 30);
        }
        if let Some(k) = &n.end_key {
            self.single_key("end_key", k);
        }
    }

    fn set_node(&mut self, n: &SetNode) {
        self.set_fields(&["set"], &n.set);
        self.target("next", &n.next);
        let regions = n.region_by_called.iter().chain(&n.region_by_trunk);
        for (from, code) in regions {
            let table = if n.region_by_called.contains_key(from) {
                "region_by_called"
            } else {
                "region_by_trunk"
            };
            self.code(&[table, from], "region", code);
        }
    }

    fn set_fields(&mut self, at: &[&str], s: &SetFields) {
        if let Some(rt) = &s.request_type {
            self.code(at, "request_type", rt);
        }
        if let Some(d) = &s.domain {
            self.code(at, "domain", &d.join("/"));
        }
        if let Some(r) = &s.region {
            self.code(at, "region", r);
        }
        if let Some(l) = s
            .language
            .as_ref()
            .filter(|l| !self.cx.plan.plan.languages.contains(l))
        {
            let p = Problem::UnknownLanguage {
                node: format!("node `{}`", self.id),
                language: l.clone(),
            };
            self.push(at, p);
        }
    }

    fn code(&mut self, at: &[&str], axis: &'static str, code: &str) {
        let Some(t) = self.cx.taxonomy else {
            let p = Problem::NoTaxonomy {
                node: self.id.into(),
                axis,
            };
            return self.push(at, p);
        };
        let known = match axis {
            "request_type" => t.request_type(code).is_some(),
            "domain" => {
                let path: Vec<String> = code.split('/').map(str::to_owned).collect();
                t.domain_path(&path).is_some()
            }
            _ => t.region(code).is_some(),
        };
        if !known {
            let p = Problem::UnknownCode {
                node: self.id.into(),
                axis,
                code: code.into(),
            };
            self.push(at, p);
        }
    }

    fn branch(&mut self, n: &BranchNode) {
        self.target("default", &n.default);
        for (i, r) in n.rules.iter().enumerate() {
            let idx = i.to_string();
            let at = ["rules", idx.as_str()];
            if !self.cx.plan.nodes.contains_key(&r.goto) {
                let p = Problem::UnknownTarget {
                    node: self.id.into(),
                    target: r.goto.to_string(),
                };
                self.push(&["rules", &idx, "goto"], p);
            }
            let conds = [
                r.weekdays.is_some(),
                r.time.is_some(),
                r.day_off.is_some(),
                r.field.is_some() || r.equals.is_some(),
                r.called.is_some(),
                r.trunk.is_some(),
                r.caller_prefix.is_some(),
            ];
            if !conds.iter().any(|c| *c) {
                let p = Problem::EmptyRule {
                    node: self.id.into(),
                    rule: i + 1,
                };
                self.push(&at, p);
            }
            self.rule_values(&at, i + 1, r);
        }
    }

    fn rule_values(&mut self, at: &[&str], rule: usize, r: &BranchRule) {
        if r.field.is_some() != r.equals.is_some() {
            let node = self.id.into();
            self.push(at, Problem::FieldWithoutValue { node, rule });
        }
        if r.day_off.is_some() && !self.cx.has_holidays {
            let node = self.id.into();
            self.push(at, Problem::NoHolidays { node, rule });
        }
        for &w in r.weekdays.iter().flatten() {
            if !(1..=7).contains(&w) {
                let node = self.id.into();
                self.push(at, Problem::BadWeekday { node, value: w });
            }
        }
        if let Some(t) = r.time.as_ref().filter(|t| TimeWindow::parse(t).is_none()) {
            let p = Problem::BadTimeWindow {
                node: self.id.into(),
                value: t.clone(),
            };
            self.push(at, p);
        }
    }

    fn transfer(&mut self, n: &TransferNode) {
        self.prompts("prompts", &n.prompts, false);
        self.target("on_failure", &n.on_failure);
        let uris = std::iter::once(&n.target).chain(n.by_request_type.values());
        for uri in uris {
            let ok = ["sip:", "sips:", "tel:"].iter().any(|s| uri.starts_with(s));
            if !ok || uri.len() < 6 {
                let p = Problem::BadUri {
                    node: self.id.into(),
                    target: uri.clone(),
                };
                self.push(&["target"], p);
            }
        }
        for code in n.by_request_type.keys() {
            self.code(&["by_request_type", code], "request_type", code);
        }
        if let Some(e) = &n.emergency {
            self.emergency(n, e);
        }
    }

    fn emergency(&mut self, n: &TransferNode, number: &str) {
        if !EMERGENCY_NUMBERS.contains(&number) {
            let p = Problem::BadEmergency {
                node: self.id.into(),
                number: number.into(),
            };
            return self.push(&["emergency"], p);
        }
        // The hand-off must dial the number the caller was told about, nothing else.
        let user = n.target.split([':', '@', ';']).nth(1).unwrap_or("");
        if !user.ends_with(number) {
            let p = Problem::EmergencyMismatch {
                node: self.id.into(),
                target: n.target.clone(),
                number: number.into(),
            };
            self.push(&["target"], p);
        }
    }
}

/// All distinct prompt names a plan uses (for the prompt generator and `ivrd check`).
pub fn prompt_names(plan: &PlanFile) -> BTreeSet<String> {
    struct All(std::cell::RefCell<BTreeSet<String>>);
    impl PromptCatalog for All {
        fn duration(&self, _l: &str, p: &str) -> Option<std::time::Duration> {
            self.0.borrow_mut().insert(p.to_owned());
            Some(std::time::Duration::ZERO)
        }
    }
    let all = All(Default::default());
    let cx = Context {
        plan,
        taxonomy: None,
        has_holidays: true,
        prompts: &all,
    };
    let _findings = check(&cx);
    all.0.into_inner()
}
