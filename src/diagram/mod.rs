//! `bootstrap diagram`: the platform this inventory and these playbooks produce, drawn without
//! connecting to anything (seeds/000's three layers, flow colours and legend).
//!
//! - [`model`] reads the facts: hosts and firewall rules (the playbooks' ufw steps, rendered per
//!   host), the cluster's objects (the rendered manifests, parsed).
//! - [`refs`] finds who talks to whom in the workloads' configuration.
//! - [`layers`] builds each page as boxes and arrows ([`graph`]).
//! - [`layout`] and [`svg`] draw it; [`mermaid`] and [`dot`] write it as text.

pub mod dot;
pub mod graph;
pub mod layers;
pub mod layout;
pub mod mermaid;
pub mod model;
pub mod refs;
pub mod svg;

use std::path::{Path, PathBuf};

use crate::error::InputError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Svg,
    Mermaid,
    Dot,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Svg => "svg",
            Format::Mermaid => "mmd",
            Format::Dot => "dot",
        }
    }
}

pub const LAYERS: [u8; 3] = [1, 2, 3];

pub fn build(platform: &model::Platform, layer: u8) -> graph::Diagram {
    match layer {
        1 => layers::layer1(platform),
        2 => layers::layer2(platform),
        _ => layers::layer3(platform),
    }
}

pub fn render(d: &graph::Diagram, format: Format) -> String {
    match format {
        Format::Svg => svg::render(d, &layout::layout(d)),
        Format::Mermaid => mermaid::render(d),
        Format::Dot => dot::render(d),
    }
}

/// Where each page goes: one layer to `-o FILE` (or stdout); all three to `-o DIR` as
/// `architecture-layerN.EXT`, or to `-o NAME` with `{layer}` in it; text formats without `-o`
/// print the three pages one after the other.
pub fn destinations(
    layer: Option<u8>,
    format: Format,
    out: Option<&Path>,
) -> Result<Vec<(u8, Option<PathBuf>)>, InputError> {
    if let Some(n) = layer {
        return Ok(vec![(n, out.map(Path::to_path_buf))]);
    }
    let Some(out) = out else {
        if format == Format::Svg {
            return Err(InputError::new(
                "--output",
                None,
                "three SVG pages cannot go to one stream",
            )
            .hint("pass --layer N, or -o DIR (writes architecture-layer{1,2,3}.svg), or -o 'name-{layer}.svg'"));
        }
        return Ok(LAYERS.iter().map(|&n| (n, None)).collect());
    };
    let text = out.to_string_lossy();
    if text.contains("{layer}") {
        return Ok(LAYERS
            .iter()
            .map(|&n| {
                (
                    n,
                    Some(PathBuf::from(text.replace("{layer}", &n.to_string()))),
                )
            })
            .collect());
    }
    if out.is_dir() || text.ends_with('/') {
        return Ok(LAYERS
            .iter()
            .map(|&n| {
                (
                    n,
                    Some(out.join(format!("architecture-layer{n}.{}", format.extension()))),
                )
            })
            .collect());
    }
    Err(InputError::new(
        out,
        None,
        "without --layer, -o names a directory or a pattern with {layer}",
    )
    .hint("pass --layer N to write one page to this file"))
}

#[cfg(test)]
mod tests;
