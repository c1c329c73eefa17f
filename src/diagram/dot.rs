//! Graphviz DOT text, for those who lay it out with Graphviz themselves.

use std::fmt::Write as _;

use super::graph::Diagram;

fn q(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

pub fn render(d: &Diagram) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "digraph platform {{");
    let _ = writeln!(
        s,
        "  label={}; labelloc=t; rankdir=LR; compound=true;",
        q(&d.title)
    );
    let _ = writeln!(
        s,
        "  node [shape=box, style=\"rounded,filled\", fontname=monospace, fontsize=10];"
    );
    let _ = writeln!(s, "  edge [fontname=monospace, fontsize=9];");
    for g in &d.groups {
        let (fill, stroke) = g.tone.colours();
        let _ = writeln!(s, "  subgraph cluster_{} {{", g.id);
        let _ = writeln!(
            s,
            "    label={}; style=dashed; color={}; bgcolor={};",
            q(&g.title),
            q(stroke),
            q(&format!("{fill}60"))
        );
        for n in &g.nodes {
            let (fill, stroke) = n.tone.colours();
            let _ = writeln!(
                s,
                "    {} [label={}, fillcolor={}, color={}];",
                n.id,
                q(&n.lines.join("\n")).replace('\n', "\\n"),
                q(fill),
                q(stroke)
            );
        }
        s.push_str("  }\n");
    }
    for e in &d.edges {
        let _ = writeln!(
            s,
            "  {} -> {} [label={}, color={}, fontcolor={}];",
            e.from,
            e.to,
            q(&e.label),
            q(e.flow.colour()),
            q(e.flow.colour())
        );
    }
    s.push_str("}\n");
    s
}
