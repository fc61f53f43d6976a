//! Whole-plan graph checks: reachability, ways out, loops, menu depth and the worst-case time a
//! silent caller needs to reach a person (DOMAIN.md: menus must never be a trap).
//!
//! Runs in `load.rs` after the per-node checks have found every target to exist; `graph.rs` uses
//! the same [`edges`] to draw the plan.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use crate::dialplan::Problem;
use crate::dialplan::load::PromptCatalog;
use crate::dialplan::model::*;
use crate::dialplan::validate::{BEEP_PROMPT, Finding};

/// Why one node leads to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeKind {
    Next,
    Key(String),
    /// Attempts ran out (silence or invalid keys).
    Exhausted,
    /// A plan-wide key.
    Global(String),
    Rule(usize),
    Default,
    Failure,
}

/// Every edge out of a node, global keys included where they apply.
pub fn edges(plan: &PlanFile, node: &NodeDef) -> Vec<(NodeId, EdgeKind)> {
    let person = || plan.plan.person.clone();
    let mut out = Vec::new();
    let globals = match node {
        NodeDef::Play(n) => n.global_keys,
        NodeDef::Menu(n) => n.global_keys,
        NodeDef::Record(_) => true,
        _ => false,
    };
    match node {
        NodeDef::Play(n) => out.push((n.next.clone(), EdgeKind::Next)),
        NodeDef::Menu(n) => {
            for (k, c) in &n.keys {
                out.push((c.goto.clone(), EdgeKind::Key(k.clone())));
            }
            let ex = n.on_exhausted.clone().unwrap_or_else(person);
            out.push((ex, EdgeKind::Exhausted));
        }
        NodeDef::Collect(n) => {
            out.push((n.next.clone(), EdgeKind::Next));
            let ex = n.on_exhausted.clone().unwrap_or_else(person);
            out.push((ex, EdgeKind::Exhausted));
        }
        NodeDef::Record(n) => out.push((n.next.clone(), EdgeKind::Next)),
        NodeDef::Set(n) => out.push((n.next.clone(), EdgeKind::Next)),
        NodeDef::Branch(n) => {
            for (i, r) in n.rules.iter().enumerate() {
                out.push((r.goto.clone(), EdgeKind::Rule(i + 1)));
            }
            out.push((n.default.clone(), EdgeKind::Default));
        }
        NodeDef::Transfer(n) => out.push((n.on_failure.clone(), EdgeKind::Failure)),
        NodeDef::Hangup(_) => {}
    }
    if globals {
        let own = |k: &str| matches!(node, NodeDef::Menu(m) if m.keys.contains_key(k));
        for (k, a) in &plan.plan.global_keys {
            if let GlobalAction::Goto(t) = a
                && !own(k)
            {
                out.push((t.clone(), EdgeKind::Global(k.clone())));
            }
        }
    }
    out
}

/// Results of the graph analysis.
#[derive(Debug, Default)]
pub struct Analysis {
    pub errors: Vec<Finding>,
    pub warnings: Vec<Finding>,
    /// Longest time a caller who presses nothing spends before a transfer starts.
    pub silent_worst_case: Option<Duration>,
    /// Most menus on one path from the entry.
    pub max_menu_depth: usize,
}

fn at(node: &NodeId) -> Vec<String> {
    vec!["nodes".into(), node.to_string()]
}

/// Runs every graph check; assumes all targets exist (checked before).
pub fn analyse(plan: &PlanFile, prompts: &dyn PromptCatalog) -> Analysis {
    let mut a = Analysis::default();
    let succ: BTreeMap<&NodeId, Vec<NodeId>> = plan
        .nodes
        .iter()
        .map(|(id, n)| (id, edges(plan, n).into_iter().map(|e| e.0).collect()))
        .collect();
    reachability(plan, &succ, &mut a);
    ways_out(plan, &succ, &mut a);
    instant_loops(plan, &mut a);
    if a.errors.is_empty() {
        silent(plan, prompts, &mut a);
        menu_depth(plan, &mut a);
    }
    a
}

fn reachability(plan: &PlanFile, succ: &BTreeMap<&NodeId, Vec<NodeId>>, a: &mut Analysis) {
    let h = &plan.plan;
    let roots = [Some(&h.entry), Some(&h.person), h.on_max_ivr.as_ref()];
    let mut seen: BTreeSet<&NodeId> = BTreeSet::new();
    let mut queue: VecDeque<&NodeId> = roots.into_iter().flatten().collect();
    while let Some(n) = queue.pop_front() {
        if seen.insert(n) {
            queue.extend(succ.get(n).into_iter().flatten());
        }
    }
    for id in plan.nodes.keys().filter(|id| !seen.contains(id)) {
        let node = id.to_string();
        a.errors.push((at(id), Problem::Unreachable { node }));
    }
}

fn ways_out(plan: &PlanFile, succ: &BTreeMap<&NodeId, Vec<NodeId>>, a: &mut Analysis) {
    let terminal = |n: &NodeDef| matches!(n, NodeDef::Transfer(_) | NodeDef::Hangup(_));
    let mut exits: BTreeSet<&NodeId> = plan
        .nodes
        .iter()
        .filter(|(_, n)| terminal(n))
        .map(|(id, _)| id)
        .collect();
    // Fixed point: a node exits when one of its successors does. Plans are small.
    loop {
        let before = exits.len();
        for (id, s) in succ {
            if s.iter().any(|t| exits.contains(t)) {
                exits.insert(id);
            }
        }
        if exits.len() == before {
            break;
        }
    }
    let mut reported: BTreeSet<&NodeId> = BTreeSet::new();
    for id in plan.nodes.keys().filter(|id| !exits.contains(id)) {
        if reported.contains(id) {
            continue;
        }
        match find_cycle(id, &|n| succ.get(n).cloned().unwrap_or_default()) {
            Some(cycle) => {
                reported.extend(plan.nodes.keys().filter(|k| cycle.contains(k)));
                let cycle = render(&cycle);
                a.errors.push((at(id), Problem::LoopWithoutExit { cycle }));
            }
            None => {
                let node = id.to_string();
                a.errors.push((at(id), Problem::NoWayOut { node }));
            }
        }
    }
}

fn render(cycle: &[NodeId]) -> String {
    let mut s: Vec<&str> = cycle.iter().map(|n| n.as_str()).collect();
    if let Some(first) = s.first().copied() {
        s.push(first);
    }
    s.join(" → ")
}

/// A cycle through `start` using `next`, if one exists (as the node list, `start` first).
fn find_cycle(start: &NodeId, next: &dyn Fn(&NodeId) -> Vec<NodeId>) -> Option<Vec<NodeId>> {
    let mut parent: BTreeMap<NodeId, NodeId> = BTreeMap::new();
    let mut queue = VecDeque::from([start.clone()]);
    let mut seen = BTreeSet::new();
    while let Some(n) = queue.pop_front() {
        for t in next(&n) {
            if &t == start {
                let mut path = vec![n.clone()];
                let mut cur = n;
                while let Some(p) = parent.get(&cur) {
                    path.push(p.clone());
                    cur = p.clone();
                }
                path.reverse();
                return Some(path);
            }
            if seen.insert(t.clone()) {
                parent.insert(t.clone(), n.clone());
                queue.push_back(t);
            }
        }
    }
    None
}

fn instant_loops(plan: &PlanFile, a: &mut Analysis) {
    let instant = |id: &NodeId| {
        matches!(
            plan.nodes.get(id),
            Some(NodeDef::Set(_) | NodeDef::Branch(_))
        )
    };
    let next = |id: &NodeId| -> Vec<NodeId> {
        match plan.nodes.get(id) {
            Some(n) if instant(id) => edges(plan, n)
                .into_iter()
                .map(|e| e.0)
                .filter(instant)
                .collect(),
            _ => Vec::new(),
        }
    };
    let mut reported = BTreeSet::new();
    for id in plan.nodes.keys().filter(|id| instant(id)) {
        if reported.contains(id) {
            continue;
        }
        if let Some(cycle) = find_cycle(id, &next) {
            reported.extend(cycle.iter().cloned());
            let cycle = render(&cycle);
            a.errors.push((at(id), Problem::InstantLoop { cycle }));
        }
    }
}

fn longest_prompt(plan: &PlanFile, prompts: &dyn PromptCatalog, p: &PromptRef) -> Duration {
    let langs = plan.plan.languages.iter();
    langs
        .filter_map(|l| prompts.duration(l, p.as_str()))
        .max()
        .unwrap_or_default()
}

/// Time a silent caller spends in one node before leaving it by its silent edge.
pub fn silent_time(plan: &PlanFile, prompts: &dyn PromptCatalog, node: &NodeDef) -> Duration {
    let sum = |ps: &[PromptRef]| -> Duration {
        ps.iter().map(|p| longest_prompt(plan, prompts, p)).sum()
    };
    let one = |p: &Option<PromptRef>| {
        p.as_ref()
            .map_or(Duration::ZERO, |p| longest_prompt(plan, prompts, p))
    };
    let secs = |s: u32| Duration::from_secs(s.into());
    let silence = plan.plan.silence_seconds;
    match node {
        NodeDef::Play(n) => sum(&n.prompts),
        NodeDef::Menu(n) => {
            let each = sum(&n.prompts) + secs(n.timeout.unwrap_or(silence));
            each * n.max_attempts + one(&n.timeout_prompt) * (n.max_attempts - 1)
        }
        NodeDef::Collect(n) => {
            let each = sum(&n.prompts) + secs(n.timeout.unwrap_or(silence));
            each * n.max_attempts + one(&n.timeout_prompt) * (n.max_attempts - 1)
        }
        NodeDef::Record(n) => {
            let beep = if n.beep {
                longest_prompt(plan, prompts, &PromptRef(BEEP_PROMPT.into()))
            } else {
                Duration::ZERO
            };
            let listen = secs(n.silence_end_seconds.unwrap_or(n.max_seconds));
            let tries = if n.min_seconds > 0 { n.max_attempts } else { 1 };
            (sum(&n.prompts) + beep + listen) * tries + one(&n.too_short_prompt) * (tries - 1)
        }
        NodeDef::Transfer(n) => sum(&n.prompts),
        NodeDef::Hangup(n) => sum(&n.prompts),
        NodeDef::Set(_) | NodeDef::Branch(_) => Duration::ZERO,
    }
}

/// Where a caller who presses nothing goes next from a node (every branch counts).
fn silent_next(plan: &PlanFile, node: &NodeDef) -> Vec<NodeId> {
    let person = plan.plan.person.clone();
    match node {
        NodeDef::Play(n) => vec![n.next.clone()],
        NodeDef::Menu(n) => vec![n.on_exhausted.clone().unwrap_or(person)],
        NodeDef::Collect(n) => vec![n.on_exhausted.clone().unwrap_or(person)],
        NodeDef::Record(n) => vec![n.next.clone()],
        NodeDef::Set(n) => vec![n.next.clone()],
        NodeDef::Branch(n) => {
            let mut v: Vec<NodeId> = n.rules.iter().map(|r| r.goto.clone()).collect();
            v.push(n.default.clone());
            v
        }
        NodeDef::Transfer(_) | NodeDef::Hangup(_) => Vec::new(),
    }
}

fn silent(plan: &PlanFile, prompts: &dyn PromptCatalog, a: &mut Analysis) {
    let next = |id: &NodeId| {
        plan.nodes
            .get(id)
            .map(|n| silent_next(plan, n))
            .unwrap_or_default()
    };
    let mut memo: BTreeMap<NodeId, Option<Duration>> = BTreeMap::new();
    let mut hangups = BTreeSet::new();
    // Longest silent path from every node on the silent subgraph, which must be acyclic.
    let order = match topo(&plan.plan.entry, &next) {
        Ok(o) => o,
        Err(cycle) => {
            let cycle = render(&cycle);
            let p = Problem::SilentLoop { cycle };
            a.errors.push((vec!["plan".into(), "entry".into()], p));
            return;
        }
    };
    for id in order.iter().rev() {
        let Some(node) = plan.nodes.get(id) else {
            continue;
        };
        let own = silent_time(plan, prompts, node);
        let best = match node {
            NodeDef::Transfer(_) => Some(own),
            NodeDef::Hangup(_) => {
                hangups.insert(id.clone());
                None
            }
            _ => next(id)
                .iter()
                .filter_map(|t| memo.get(t).copied().flatten())
                .max()
                .map(|d| d + own),
        };
        memo.insert(id.clone(), best);
    }
    a.silent_worst_case = memo.get(&plan.plan.entry).copied().flatten();
    for node in hangups {
        a.warnings.push((
            at(&node),
            Problem::SilentHangup {
                node: node.to_string(),
            },
        ));
    }
    if let Some(w) = a.silent_worst_case
        && w.as_secs() > u64::from(plan.plan.max_ivr_seconds)
    {
        let p = Problem::SilentOverLimit {
            seconds: w.as_secs(),
            limit: plan.plan.max_ivr_seconds,
        };
        a.warnings
            .push((vec!["plan".into(), "max_ivr_seconds".into()], p));
    }
}

/// Depth-first post-order of the nodes reachable from `start`; a cycle is returned as `Err`.
fn topo(start: &NodeId, next: &dyn Fn(&NodeId) -> Vec<NodeId>) -> Result<Vec<NodeId>, Vec<NodeId>> {
    let mut done = BTreeSet::new();
    let mut order = Vec::new();
    let mut stack: Vec<(NodeId, Vec<NodeId>)> = vec![(start.clone(), next(start))];
    while let Some((id, mut rest)) = stack.pop() {
        match rest.pop() {
            None => {
                done.insert(id.clone());
                order.push(id);
            }
            Some(t) => {
                stack.push((id, rest));
                if let Some(pos) = stack.iter().position(|(n, _)| n == &t) {
                    return Err(stack[pos..].iter().map(|(n, _)| n.clone()).collect());
                }
                if !done.contains(&t) {
                    let s = next(&t);
                    stack.push((t, s));
                }
            }
        }
    }
    // Post-order lists a node after its successors; callers walk it reversed for sources first.
    order.reverse();
    Ok(order)
}

fn menu_depth(plan: &PlanFile, a: &mut Analysis) {
    // Forward edges only: keys, next, rules. Global keys and fallbacks lead to a person.
    let fwd = |id: &NodeId| -> Vec<NodeId> {
        let Some(n) = plan.nodes.get(id) else {
            return Vec::new();
        };
        edges(plan, n)
            .into_iter()
            .filter(|(_, k)| {
                matches!(
                    k,
                    EdgeKind::Next | EdgeKind::Key(_) | EdgeKind::Rule(_) | EdgeKind::Default
                )
            })
            .map(|e| e.0)
            .collect()
    };
    let is_menu = |id: &NodeId| matches!(plan.nodes.get(id), Some(NodeDef::Menu(_)));
    let mut best: (usize, Vec<NodeId>) = (0, Vec::new());
    let mut budget = 100_000usize;
    let mut path = vec![plan.plan.entry.clone()];
    deepest(&mut path, &fwd, &is_menu, &mut best, &mut budget);
    a.max_menu_depth = best.0;
    if best.0 > 3 {
        let menus: Vec<&str> = best
            .1
            .iter()
            .filter(|n| is_menu(n))
            .map(|n| n.as_str())
            .collect();
        let p = Problem::DeepMenus {
            depth: best.0,
            path: menus.join(" → "),
        };
        a.warnings.push((at(&best.1[best.1.len() - 1]), p));
    }
}

fn deepest(
    path: &mut Vec<NodeId>,
    fwd: &dyn Fn(&NodeId) -> Vec<NodeId>,
    is_menu: &dyn Fn(&NodeId) -> bool,
    best: &mut (usize, Vec<NodeId>),
    budget: &mut usize,
) {
    let depth = path.iter().filter(|n| is_menu(n)).count();
    if depth > best.0 {
        *best = (depth, path.clone());
    }
    let Some(last) = path.last().cloned() else {
        return;
    };
    for t in fwd(&last) {
        if *budget == 0 || path.contains(&t) {
            continue;
        }
        *budget -= 1;
        path.push(t);
        deepest(path, fwd, is_menu, best, budget);
        path.pop();
    }
}
