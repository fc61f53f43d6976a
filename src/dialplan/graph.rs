//! `ivrd graph`: the plan as a picture, in Graphviz DOT or Mermaid flowchart text.
//!
//! Reads a validated plan and the same edges the analysis uses (`analysis::edges`), so the picture
//! shows exactly the paths `ivrd check` reasoned about, global keys included.

use std::fmt::Write;

use crate::dialplan::analysis::{EdgeKind, edges};
use crate::dialplan::load::LoadedPlan;
use crate::dialplan::model::NodeDef;

fn label(kind: &EdgeKind) -> String {
    match kind {
        EdgeKind::Next => String::new(),
        EdgeKind::Key(k) => k.clone(),
        EdgeKind::Exhausted => "silence/invalid".into(),
        EdgeKind::Global(k) => format!("global {k}"),
        EdgeKind::Rule(i) => format!("rule {i}"),
        EdgeKind::Default => "default".into(),
        EdgeKind::Failure => "failed".into(),
    }
}

fn shape(n: &NodeDef) -> &'static str {
    match n {
        NodeDef::Menu(_) | NodeDef::Branch(_) => "diamond",
        NodeDef::Transfer(_) | NodeDef::Hangup(_) => "doubleoctagon",
        _ => "box",
    }
}

/// The plan as a Graphviz `digraph`; global-key edges are dashed.
pub fn to_dot(plan: &LoadedPlan) -> String {
    let file = plan.as_plan_file();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "digraph \"{}\" {{\n  rankdir=LR;",
        esc(&plan.header.name)
    );
    let _ = writeln!(
        s,
        "  start [shape=point];\n  start -> \"{}\";",
        esc(plan.header.entry.as_str())
    );
    for (id, n) in &plan.nodes {
        let _ = writeln!(
            s,
            "  \"{}\" [shape={} label=\"{}\\n({})\"];",
            esc(id.as_str()),
            shape(n),
            esc(id.as_str()),
            n.kind()
        );
    }
    for (id, n) in &plan.nodes {
        for (to, kind) in edges(&file, n) {
            let style = if matches!(kind, EdgeKind::Global(_)) {
                " style=dashed"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "  \"{}\" -> \"{}\" [label=\"{}\"{}];",
                esc(id.as_str()),
                esc(to.as_str()),
                esc(&label(&kind)),
                style
            );
        }
    }
    s.push_str("}\n");
    s
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Mermaid ids allow only a limited alphabet; node ids are mapped to `n<index>`.
fn mid(plan: &LoadedPlan, id: &str) -> String {
    let i = plan
        .nodes
        .keys()
        .position(|k| k.as_str() == id)
        .unwrap_or(usize::MAX);
    format!("n{i}")
}

/// The plan as a Mermaid `flowchart`; global-key edges are dotted.
pub fn to_mermaid(plan: &LoadedPlan) -> String {
    let file = plan.as_plan_file();
    let mut s = String::from("flowchart LR\n");
    let _ = writeln!(
        s,
        "  start((start)) --> {}",
        mid(plan, plan.header.entry.as_str())
    );
    for (id, n) in &plan.nodes {
        let text = format!("{} ({})", id, n.kind()).replace('"', "'");
        let (open, close) = match n {
            NodeDef::Menu(_) | NodeDef::Branch(_) => ("{", "}"),
            NodeDef::Transfer(_) | NodeDef::Hangup(_) => ("([", "])"),
            _ => ("[", "]"),
        };
        let _ = writeln!(s, "  {}{open}\"{text}\"{close}", mid(plan, id.as_str()));
    }
    for (id, n) in &plan.nodes {
        for (to, kind) in edges(&file, n) {
            let arrow = if matches!(kind, EdgeKind::Global(_)) {
                "-.->"
            } else {
                "-->"
            };
            let l = label(&kind).replace('|', "/");
            let l = if l.is_empty() {
                String::new()
            } else {
                format!("|\"{l}\"|")
            };
            let _ = writeln!(
                s,
                "  {} {arrow}{l} {}",
                mid(plan, id.as_str()),
                mid(plan, to.as_str())
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialplan::testutil::load;

    const SRC: &str = r#"
[plan]
name = "g"
version = "1"
entry = "main"
languages = ["zh-CN"]
default_language = "zh-CN"
person = "agent"
[plan.global_keys]
"0" = { goto = "agent" }
[nodes.main]
kind = "menu"
prompts = ["m"]
keys = { "1" = { goto = "bye" } }
[nodes.agent]
kind = "transfer"
target = "sip:q@x"
on_failure = "bye"
[nodes.bye]
kind = "hangup"
"#;

    #[test]
    fn dot_has_every_node_and_edge_with_globals_dashed() {
        let p = load(SRC).unwrap();
        let dot = to_dot(&p);
        assert!(dot.starts_with("digraph \"g\" {"));
        assert!(dot.contains("start -> \"main\";"));
        assert!(dot.contains("\"main\" -> \"bye\" [label=\"1\"];"));
        assert!(dot.contains("\"main\" -> \"agent\" [label=\"silence/invalid\"];"));
        assert!(dot.contains("\"main\" -> \"agent\" [label=\"global 0\" style=dashed];"));
        assert!(dot.contains("\"agent\" -> \"bye\" [label=\"failed\"];"));
        assert_eq!(dot.matches(" -> ").count(), 5);
    }

    #[test]
    fn mermaid_uses_safe_ids_and_dotted_globals() {
        let p = load(SRC).unwrap();
        let m = to_mermaid(&p);
        // Nodes sorted: agent = n0, bye = n1, main = n2.
        assert!(m.starts_with("flowchart LR\n  start((start)) --> n2\n"));
        assert!(m.contains("n2{\"main (menu)\"}"));
        assert!(m.contains("n2 -->|\"1\"| n1"));
        assert!(m.contains("n2 -.->|\"global 0\"| n0"));
    }
}
