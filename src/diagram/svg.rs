//! The layout written as SVG by hand: boxes, text, arrows and a legend; no renderer needed.

use std::fmt::Write as _;

use super::graph::{Diagram, FLOWS};
use super::layout::{legend_rows, Layout, FONT_PX, LINE_H};

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn render(d: &Diagram, l: &Layout) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" xml:space="preserve" style="white-space:pre" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="{FONT_PX}">"#,
        w = l.width,
        h = l.height
    );
    s.push_str("<defs>\n");
    for f in FLOWS {
        let _ = writeln!(
            s,
            r#"<marker id="arrow-{id}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{c}"/></marker>"#,
            id = f as u8,
            c = f.colour()
        );
    }
    s.push_str("</defs>\n");
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" font-size="16" font-weight="bold">{}</text>"#,
        l.title.x,
        l.title.y + 18.0,
        escape(&d.title)
    );
    for (g, r) in d.groups.iter().zip(&l.groups) {
        let (fill, stroke) = g.tone.colours();
        let _ = writeln!(
            s,
            r#"<g id="group-{}"><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="8" fill="{fill}" fill-opacity="0.35" stroke="{stroke}" stroke-dasharray="6 3"/><text x="{:.1}" y="{:.1}" font-weight="bold">{}</text></g>"#,
            g.id,
            r.x,
            r.y,
            r.w,
            r.h,
            r.x + 10.0,
            r.y + 17.0,
            escape(&g.title)
        );
    }
    // Arrows under the boxes: a line that crosses a column passes behind its boxes.
    for pe in &l.edges {
        let e = &d.edges[pe.edge];
        let c = e.flow.colour();
        let bend = |a: (f64, f64), b: (f64, f64)| {
            let dx = ((b.0 - a.0) / 2.0).abs().max(30.0);
            let s1 = if b.0 >= a.0 { dx } else { -dx };
            format!(
                "M{:.1},{:.1} C{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}",
                a.0,
                a.1,
                a.0 + s1,
                a.1,
                b.0 - s1,
                b.1,
                b.0,
                b.1
            )
        };
        let _ = writeln!(
            s,
            r#"<g class="edge"><path d="{}" fill="none" stroke="{c}" stroke-width="1.8" marker-end="url(#arrow-{id})"/></g>"#,
            pe.points
                .windows(2)
                .map(|w| bend(w[0], w[1]))
                .collect::<Vec<_>>()
                .join(" "),
            id = e.flow as u8
        );
    }
    for (n, pn) in d.groups.iter().flat_map(|g| &g.nodes).zip(&l.nodes) {
        let r = pn.rect;
        let (fill, stroke) = n.tone.colours();
        let _ = write!(
            s,
            r#"<g id="node-{}"><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="5" fill="{fill}" stroke="{stroke}" stroke-width="1.4"/>"#,
            n.id, r.x, r.y, r.w, r.h
        );
        for (i, line) in n.lines.iter().enumerate() {
            let weight = if i == 0 { r#" font-weight="bold""# } else { "" };
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{:.1}"{weight}>{}</text>"#,
                r.x + 8.0,
                r.y + 8.0 + LINE_H * (i as f64 + 1.0) - 4.0,
                escape(line)
            );
        }
        s.push_str("</g>\n");
    }
    for pe in &l.edges {
        let e = &d.edges[pe.edge];
        let r = pe.label;
        let _ = writeln!(
            s,
            r##"<g class="label"><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="3" fill="#ffffff" stroke="{c}" stroke-width="1"/><text x="{:.1}" y="{:.1}" fill="{c}">{}</text></g>"##,
            r.x,
            r.y,
            r.w,
            r.h,
            r.x + 4.0,
            r.y + r.h - 5.0,
            escape(&e.label),
            c = e.flow.colour()
        );
    }
    // Legend.
    let r = l.legend;
    let _ = writeln!(
        s,
        r##"<g id="legend"><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="5" fill="#ffffff" stroke="#333333"/>"##,
        r.x, r.y, r.w, r.h
    );
    let flows = d.flows_used();
    let tones = d.tones_used();
    for (i, row) in legend_rows(d).iter().enumerate() {
        let y = r.y + 8.0 + LINE_H * (i as f64 + 1.0) - 4.0;
        let sx = r.x + 8.0;
        if i >= 1 && i <= flows.len() {
            let c = flows[i - 1].colour();
            let _ = write!(
                s,
                r#"<line x1="{sx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{c}" stroke-width="3"/>"#,
                y - 4.0,
                sx + 36.0,
                y - 4.0
            );
        } else if i > flows.len() {
            let (fill, stroke) = tones[i - 1 - flows.len()].colours();
            let _ = write!(
                s,
                r#"<rect x="{sx:.1}" y="{:.1}" width="36" height="11" fill="{fill}" stroke="{stroke}"/>"#,
                y - 10.0
            );
        }
        let weight = if i == 0 { r#" font-weight="bold""# } else { "" };
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{y:.1}"{weight}>{}</text>"#,
            sx + 44.0,
            escape(row)
        );
    }
    s.push_str("</g>\n</svg>\n");
    s
}
