//! Mermaid flowchart text, for pasting into docs that render it.

use std::fmt::Write as _;

use super::graph::Diagram;

fn text(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| {
            l.replace('"', "#quot;")
                .replace('<', "#lt;")
                .replace('>', "#gt;")
        })
        .collect::<Vec<_>>()
        .join("<br/>")
}

pub fn render(d: &Diagram) -> String {
    let mut s = String::new();
    // Quoted: a title holds `: `, which YAML front matter would read as a mapping.
    let title = d.title.replace('"', "'");
    let _ = writeln!(s, "---\ntitle: \"{title}\"\n---\nflowchart LR");
    for t in d.tones_used() {
        let (fill, stroke) = t.colours();
        let _ = writeln!(s, "  classDef {t:?} fill:{fill},stroke:{stroke},color:#000");
    }
    for g in &d.groups {
        let _ = writeln!(
            s,
            "  subgraph {}[\"{}\"]",
            g.id,
            text(std::slice::from_ref(&g.title))
        );
        for n in &g.nodes {
            let _ = writeln!(s, "    {}[\"{}\"]:::{:?}", n.id, text(&n.lines), n.tone);
        }
        s.push_str("  end\n");
    }
    for e in &d.edges {
        if e.label.is_empty() {
            let _ = writeln!(s, "  {} --> {}", e.from, e.to);
        } else {
            let _ = writeln!(
                s,
                "  {} -->|\"{}\"| {}",
                e.from,
                text(std::slice::from_ref(&e.label)),
                e.to
            );
        }
    }
    for (i, e) in d.edges.iter().enumerate() {
        let _ = writeln!(
            s,
            "  linkStyle {i} stroke:{},stroke-width:2px",
            e.flow.colour()
        );
    }
    s
}
