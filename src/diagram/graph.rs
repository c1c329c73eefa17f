//! The drawing as boxes in groups and coloured arrows, independent of the output format.

/// The kind of traffic an arrow carries (seeds/000's colour code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Flow {
    User,
    Database,
    Metrics,
    Logs,
    CiCd,
    /// Kubernetes API calls and configuration handed to pods (not in the seed's code: grey).
    Control,
}

pub const FLOWS: [Flow; 6] = [
    Flow::User,
    Flow::Database,
    Flow::Metrics,
    Flow::Logs,
    Flow::CiCd,
    Flow::Control,
];

impl Flow {
    pub fn colour(self) -> &'static str {
        match self {
            Flow::User => "#d62728",
            Flow::Database => "#1f5fbf",
            Flow::Metrics => "#2ca02c",
            Flow::Logs => "#ff7f0e",
            Flow::CiCd => "#8e44ad",
            Flow::Control => "#666666",
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Flow::User => "user HTTP",
            Flow::Database => "database queries",
            Flow::Metrics => "metrics scraping",
            Flow::Logs => "log streaming",
            Flow::CiCd => "CI/CD deployments",
            Flow::Control => "API calls, configuration",
        }
    }
}

/// What a box is, for its fill colour (seeds/000's colour suggestion per kind of component).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tone {
    UserFacing,
    App,
    Data,
    Monitoring,
    Logging,
    CiCd,
    External,
    Server,
    Config,
}

pub const TONES: [Tone; 9] = [
    Tone::UserFacing,
    Tone::App,
    Tone::Data,
    Tone::Monitoring,
    Tone::Logging,
    Tone::CiCd,
    Tone::External,
    Tone::Server,
    Tone::Config,
];

impl Tone {
    /// (fill, stroke)
    pub fn colours(self) -> (&'static str, &'static str) {
        match self {
            Tone::UserFacing => ("#dbe9ff", "#3a6fc4"),
            Tone::App => ("#dcf5dc", "#3c9a3c"),
            Tone::Data => ("#ffe6cc", "#d9822b"),
            Tone::Monitoring => ("#fff6bf", "#b8a000"),
            Tone::Logging => ("#eadcf7", "#8e5cc4"),
            Tone::CiCd => ("#fddede", "#c44a4a"),
            Tone::External => ("#e6e6e6", "#7a7a7a"),
            Tone::Server => ("#f4f4f4", "#333333"),
            Tone::Config => ("#ffffff", "#999999"),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Tone::UserFacing => "user-facing",
            Tone::App => "application",
            Tone::Data => "data",
            Tone::Monitoring => "monitoring",
            Tone::Logging => "logging",
            Tone::CiCd => "CI/CD",
            Tone::External => "outside the cluster",
            Tone::Server => "server",
            Tone::Config => "configuration, secrets, storage",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    /// The first line is the title.
    pub lines: Vec<String>,
    pub tone: Tone,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: String,
    pub title: String,
    pub tone: Tone,
    /// Left to right.
    pub column: usize,
    pub nodes: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub label: String,
    pub flow: Flow,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagram {
    pub title: String,
    pub groups: Vec<Group>,
    pub edges: Vec<Edge>,
}

impl Diagram {
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.groups
            .iter()
            .flat_map(|g| &g.nodes)
            .find(|n| n.id == id)
    }
    /// Adds an edge between two existing boxes, once (unknown ends are dropped: a flow whose
    /// object the manifests do not have is not drawn).
    pub fn connect(&mut self, from: &str, to: &str, label: impl Into<String>, flow: Flow) {
        let label = label.into();
        if from == to || self.node(from).is_none() || self.node(to).is_none() {
            return;
        }
        if self
            .edges
            .iter()
            .any(|e| e.from == from && e.to == to && e.label == label)
        {
            return;
        }
        self.edges.push(Edge {
            from: from.to_string(),
            to: to.to_string(),
            label,
            flow,
        });
    }
    pub fn flows_used(&self) -> Vec<Flow> {
        FLOWS
            .into_iter()
            .filter(|f| self.edges.iter().any(|e| e.flow == *f))
            .collect()
    }
    pub fn tones_used(&self) -> Vec<Tone> {
        TONES
            .into_iter()
            .filter(|t| {
                self.groups
                    .iter()
                    .flat_map(|g| &g.nodes)
                    .any(|n| n.tone == *t)
            })
            .collect()
    }
}

/// An identifier safe in Mermaid, DOT and SVG: lowercase letters, digits and `_`.
pub fn id(parts: &[&str]) -> String {
    parts
        .join("_")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}
