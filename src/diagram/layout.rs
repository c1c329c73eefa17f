//! Places the boxes: groups stacked in columns, boxes stacked in their group, every box as
//! wide as its longest line at a conservative character width (text is never cut). Arrow
//! labels go in the gaps between columns, where no box is, each moved down until it touches
//! no other label: nothing overlaps by construction, and the tests check it.

use super::graph::{Diagram, Edge};

/// Monospace at 12px is 7.2px per character; 8 leaves room for any fallback font.
pub const CHAR_W: f64 = 8.0;
pub const LINE_H: f64 = 16.0;
pub const FONT_PX: f64 = 12.0;
const PAD: f64 = 8.0;
const GROUP_TITLE_H: f64 = 24.0;
const GROUP_PAD: f64 = 12.0;
const NODE_GAP: f64 = 12.0;
const GROUP_GAP: f64 = 28.0;
const MARGIN: f64 = 24.0;
const TITLE_H: f64 = 40.0;
const MIN_GUTTER: f64 = 90.0;
const LABEL_GAP: f64 = 4.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Rect {
    pub fn right(&self) -> f64 {
        self.x + self.w
    }
    pub fn bottom(&self) -> f64 {
        self.y + self.h
    }
    pub fn overlaps(&self, o: &Rect) -> bool {
        self.x < o.right() && o.x < self.right() && self.y < o.bottom() && o.y < self.bottom()
    }
    pub fn contains(&self, o: &Rect) -> bool {
        o.x >= self.x && o.right() <= self.right() && o.y >= self.y && o.bottom() <= self.bottom()
    }
}

pub fn text_w(text: &str) -> f64 {
    text.chars().count() as f64 * CHAR_W
}

#[derive(Debug, Clone)]
pub struct PlacedNode {
    pub id: String,
    pub group: usize,
    pub rect: Rect,
}

#[derive(Debug, Clone)]
pub struct PlacedEdge {
    pub edge: usize,
    /// The path: from the source box, through both ends of the label box, across the columns
    /// in between at a height where they have no group, to the target box.
    pub points: Vec<(f64, f64)>,
    pub label: Rect,
}

#[derive(Debug, Clone)]
pub struct Layout {
    pub width: f64,
    pub height: f64,
    pub groups: Vec<Rect>,
    pub nodes: Vec<PlacedNode>,
    pub edges: Vec<PlacedEdge>,
    pub legend: Rect,
    pub title: Rect,
}

pub fn node_size(lines: &[String]) -> (f64, f64) {
    let w = lines.iter().map(|l| text_w(l)).fold(0.0, f64::max) + 2.0 * PAD;
    (w, lines.len() as f64 * LINE_H + 2.0 * PAD)
}

pub fn label_size(label: &str) -> (f64, f64) {
    (text_w(label) + 8.0, LINE_H + 2.0)
}

/// Legend rows: one per flow and one per tone used.
pub fn legend_rows(d: &Diagram) -> Vec<String> {
    let mut rows = vec!["legend".to_string()];
    rows.extend(
        d.flows_used()
            .iter()
            .map(|f| format!("arrow: {}", f.name())),
    );
    rows.extend(d.tones_used().iter().map(|t| format!("box: {}", t.name())));
    rows
}

pub fn layout(d: &Diagram) -> Layout {
    let columns = d.groups.iter().map(|g| g.column).max().map_or(0, |c| c + 1);
    // Group sizes.
    let mut group_w = vec![0.0; d.groups.len()];
    for (gi, g) in d.groups.iter().enumerate() {
        let inner = g
            .nodes
            .iter()
            .map(|n| node_size(&n.lines).0)
            .fold(text_w(&g.title), f64::max);
        group_w[gi] = inner + 2.0 * GROUP_PAD;
    }
    let col_w: Vec<f64> = (0..columns)
        .map(|c| {
            d.groups
                .iter()
                .enumerate()
                .filter(|(_, g)| g.column == c)
                .map(|(i, _)| group_w[i])
                .fold(0.0, f64::max)
        })
        .collect();
    // Which gutter (the gap right of column c) each edge's label goes into.
    let col_of = |id: &str| {
        d.groups
            .iter()
            .find(|g| g.nodes.iter().any(|n| n.id == id))
            .map_or(0, |g| g.column)
    };
    let gutter_of = |e: &Edge| {
        let (a, b) = (col_of(&e.from), col_of(&e.to));
        if a < b {
            a
        } else if a > b {
            b
        } else {
            a
        }
    };
    let mut gutter_w = vec![MIN_GUTTER; columns];
    for e in &d.edges {
        let g = gutter_of(e);
        gutter_w[g] = f64::max(gutter_w[g], label_size(&e.label).0 + 48.0);
    }
    let mut col_x = Vec::new();
    let mut x = MARGIN;
    for c in 0..columns {
        col_x.push(x);
        x += col_w[c] + gutter_w[c];
    }
    let content_right = x - MARGIN / 2.0;
    // Place groups and nodes.
    let mut groups = vec![
        Rect {
            x: 0.0,
            y: 0.0,
            w: 0.0,
            h: 0.0
        };
        d.groups.len()
    ];
    let mut nodes = Vec::new();
    let mut col_y = vec![MARGIN + TITLE_H; columns];
    for (gi, g) in d.groups.iter().enumerate() {
        let c = g.column;
        let gx = col_x[c];
        let gy = col_y[c];
        let inner_w = col_w[c] - 2.0 * GROUP_PAD;
        let mut y = gy + GROUP_TITLE_H;
        for n in &g.nodes {
            let (_, h) = node_size(&n.lines);
            nodes.push(PlacedNode {
                id: n.id.clone(),
                group: gi,
                rect: Rect {
                    x: gx + GROUP_PAD,
                    y,
                    w: inner_w,
                    h,
                },
            });
            y += h + NODE_GAP;
        }
        let h = y - gy - NODE_GAP + GROUP_PAD;
        groups[gi] = Rect {
            x: gx,
            y: gy,
            w: col_w[c],
            h: h.max(GROUP_TITLE_H + GROUP_PAD),
        };
        col_y[c] = gy + groups[gi].h + GROUP_GAP;
    }
    // Edges and their labels.
    let rect_of = |id: &str| nodes.iter().find(|n| n.id == id).map(|n| n.rect);
    let mut taken: Vec<Vec<Rect>> = vec![Vec::new(); columns];
    let mut edges = Vec::new();
    for (ei, e) in d.edges.iter().enumerate() {
        let (Some(a), Some(b)) = (rect_of(&e.from), rect_of(&e.to)) else {
            continue;
        };
        let (ca, cb) = (col_of(&e.from), col_of(&e.to));
        let g = gutter_of(e);
        let mid = |r: &Rect| r.y + r.h / 2.0;
        let (start, end) = if ca < cb {
            ((a.right(), mid(&a)), (b.x, mid(&b)))
        } else if ca > cb {
            ((a.x, mid(&a)), (b.right(), mid(&b)))
        } else {
            ((a.right(), mid(&a)), (b.right(), mid(&b)))
        };
        let (lw, lh) = label_size(&e.label);
        let gx = col_x[g] + col_w[g];
        let lx = gx + (gutter_w[g] - lw) / 2.0;
        // Near the end that sits beside this gutter.
        let want = if ca == cb {
            (start.1 + end.1) / 2.0
        } else if g == ca {
            start.1
        } else {
            end.1
        } - lh / 2.0;
        let mut rect = Rect {
            x: lx,
            y: want,
            w: lw,
            h: lh,
        };
        while let Some(hit) = taken[g].iter().find(|t| {
            let grown = Rect {
                y: t.y - LABEL_GAP,
                h: t.h + 2.0 * LABEL_GAP,
                ..**t
            };
            grown.overlaps(&rect)
        }) {
            rect.y = hit.bottom() + LABEL_GAP + 0.5;
        }
        taken[g].push(rect);
        let ly = rect.y + rect.h / 2.0;
        // A column between the ends is crossed where it has no group (a gap, or below them).
        let lane = |c: usize, want: f64| {
            let mut rects: Vec<&Rect> = d
                .groups
                .iter()
                .zip(&groups)
                .filter(|(g, _)| g.column == c)
                .map(|(_, r)| r)
                .collect();
            rects.sort_by(|a, b| a.y.total_cmp(&b.y));
            let mut lanes: Vec<f64> = rects
                .windows(2)
                .map(|w| (w[0].bottom() + w[1].y) / 2.0)
                .collect();
            lanes.push(rects.last().map_or(want, |r| r.bottom() + GROUP_GAP / 2.0));
            lanes
                .into_iter()
                .min_by(|a, b| (a - want).abs().total_cmp(&(b - want).abs()))
                .unwrap_or(want)
        };
        let crossing = |c: usize, rightwards: bool| {
            let y = lane(c, (start.1 + end.1) / 2.0);
            let (l, r) = (col_x[c] - 6.0, col_x[c] + col_w[c] + 6.0);
            if rightwards {
                [(l, y), (r, y)]
            } else {
                [(r, y), (l, y)]
            }
        };
        let mut points = vec![start];
        if ca < cb {
            points.extend([(rect.x, ly), (rect.right(), ly)]);
            points.extend((ca + 1..cb).flat_map(|c| crossing(c, true)));
        } else if ca > cb {
            points.extend((cb + 1..ca).rev().flat_map(|c| crossing(c, false)));
            points.extend([(rect.right(), ly), (rect.x, ly)]);
        } else {
            points.push((rect.x, ly));
        }
        points.push(end);
        edges.push(PlacedEdge {
            edge: ei,
            points,
            label: rect,
        });
    }
    let bottom = groups
        .iter()
        .map(Rect::bottom)
        .chain(edges.iter().map(|e| e.label.bottom()))
        .fold(0.0, f64::max);
    let rows = legend_rows(d);
    let legend_w = rows.iter().map(|r| text_w(r)).fold(0.0, f64::max) + 60.0;
    let legend = Rect {
        x: MARGIN,
        y: bottom + GROUP_GAP,
        w: legend_w,
        h: rows.len() as f64 * LINE_H + 2.0 * PAD,
    };
    let title = Rect {
        x: MARGIN,
        y: MARGIN,
        w: text_w(&d.title) * 1.3,
        h: TITLE_H - 12.0,
    };
    Layout {
        width: f64::max(content_right, legend.right().max(title.right())) + MARGIN,
        height: legend.bottom() + MARGIN,
        groups,
        nodes,
        edges,
        legend,
        title,
    }
}
