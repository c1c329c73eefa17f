//! The cluster hand-off on the admin machine: every template under `files/manifests/` rendered
//! with the master's variables into a directory laid out as a Kustomize base (the `.j2` suffix
//! dropped), plus the upstream files it names, downloaded and sha256-checked. Nothing here
//! connects to a host; the playbook that applies the manifests renders the same templates.
//!
//! A directory may hold an `upstream.toml.j2`: it is not written out, it lists files to download
//! into that directory:
//!
//! ```toml
//! [[file]]
//! url = "{{ some_manifest_url }}"
//! sha256 = "{{ some_manifest_sha256 }}"
//! path = "upstream/deploy.yaml"      # relative to the directory of upstream.toml.j2
//! ```

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

use crate::error::InputError;
use crate::inventory::{Inventory, Secrets};
use crate::playbook::template::Renderer;

/// The templates' directory under `files/`.
pub const TEMPLATE_DIR: &str = "manifests";
/// The per-directory list of files to download instead of render.
const UPSTREAM_LIST: &str = "upstream.toml.j2";
/// Every file is written 0600 in a 0700 directory: three of them hold secret values, and the
/// rest are the cluster's configuration, for the admin's eyes only as well.
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

/// One rendered manifest, by its path relative to the output directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    pub path: PathBuf,
    pub content: String,
}

/// A file the manifests need from elsewhere, pinned by sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub url: String,
    pub sha256: String,
    /// Relative to the output directory.
    pub path: PathBuf,
}

#[derive(Debug, Default)]
pub struct Rendered {
    pub files: Vec<RenderedFile>,
    pub upstream: Vec<Upstream>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamList {
    #[serde(default)]
    file: Vec<UpstreamEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamEntry {
    url: String,
    sha256: String,
    path: String,
}

/// `.bootstrap/manifests/` beside the inventory.
pub fn default_out_dir(inventory: &Inventory) -> PathBuf {
    inventory.state_dir().join("manifests")
}

/// Where `bootstrap elk` fetches the ELK host's Elasticsearch HTTP CA, in the state directory.
pub const FETCHED_ELASTICSEARCH_CA: &str = "elasticsearch-http-ca.crt";

/// The variables the manifests are rendered with: the master's, as the playbook that applies
/// them sees them, without facts (`facts.live_app_image` is then unknown: the inventory's
/// image is used). What the playbook reads from the ELK host when it applies them (its
/// Elasticsearch CA, `registered[master].elasticsearch_http_ca`) comes from the copy `bootstrap
/// elk` fetched to the admin machine, when there is one.
pub fn render_for_master(
    inventory: &Inventory,
    secrets: &Secrets,
    files_dir: &Path,
) -> Result<Rendered, InputError> {
    let master = inventory.hosts_with_role("master").next().ok_or_else(|| {
        InputError::new(
            &inventory.path,
            None,
            "the manifests are rendered for the master, and no host has role master",
        )
        .hint("give one host roles = [\"master\"]")
    })?;
    let mut registered = crate::runner::context::RegisteredValues::new();
    if let Ok(ca) = std::fs::read_to_string(inventory.state_dir().join(FETCHED_ELASTICSEARCH_CA)) {
        registered.entry(master.name.clone()).or_default().insert(
            "elasticsearch_http_ca".to_string(),
            ca.trim_end().to_string(),
        );
    }
    let ctx = crate::runner::context::host_context_with(
        inventory,
        master,
        secrets,
        &BTreeMap::new(),
        &registered,
    );
    render_tree(&Renderer::new(files_dir), &ctx)
}

/// Renders every template under `files/manifests/`, in path order.
pub fn render_tree(renderer: &Renderer, ctx: &minijinja::Value) -> Result<Rendered, InputError> {
    let root = renderer.files_dir().join(TEMPLATE_DIR);
    let mut sources = Vec::new();
    list_files(&root, Path::new(""), &mut sources)
        .map_err(|e| InputError::new(&root, None, format!("cannot read the templates: {e}")))?;
    if sources.is_empty() {
        return Err(InputError::new(&root, None, "no manifest templates found"));
    }
    let mut out = Rendered::default();
    for rel in sources {
        let src = Path::new(TEMPLATE_DIR).join(&rel);
        let src_str = src.to_string_lossy();
        let Some(name) = rel.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(out_name) = name.strip_suffix(".j2") else {
            return Err(
                InputError::new(renderer.files_dir().join(&src), None, "not a template")
                    .hint("files under files/manifests/ end in .j2 (static text renders as is)"),
            );
        };
        let content = renderer.render_file(&src_str, ctx)?;
        let dir = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        if name == UPSTREAM_LIST {
            let file = renderer.files_dir().join(&src);
            out.upstream.extend(parse_upstream(&file, &content, &dir)?);
        } else {
            out.files.push(RenderedFile {
                path: dir.join(out_name),
                content,
            });
        }
    }
    Ok(out)
}

fn parse_upstream(file: &Path, text: &str, dir: &Path) -> Result<Vec<Upstream>, InputError> {
    let list: UpstreamList =
        toml::from_str(text).map_err(|e| crate::inventory::toml_error(file, text, &e))?;
    list.file
        .into_iter()
        .map(|e| {
            let sha256 = e.sha256.trim().to_ascii_lowercase();
            let bad = |what: String| InputError::new(file, None, what);
            if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(
                    bad(format!("{:?} is not a sha256 (64 hex digits)", e.sha256))
                        .hint("compute it from the real file: sha256sum FILE"),
                );
            }
            if !(e.url.starts_with("https://") || e.url.starts_with("http://")) {
                return Err(bad(format!("{:?} is not an http(s) URL", e.url)));
            }
            let path = Path::new(&e.path);
            if path.is_absolute() || path.components().any(|c| c.as_os_str() == "..") {
                return Err(bad(format!(
                    "path {:?} must stay inside its directory",
                    e.path
                )));
            }
            Ok(Upstream {
                url: e.url,
                sha256,
                path: dir.join(path),
            })
        })
        .collect()
}

fn list_files(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(root.join(rel))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let child = rel.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            list_files(root, &child, out)?;
        } else {
            out.push(child);
        }
    }
    Ok(())
}

/// Writes the rendered files under `out` (0700 directories, 0600 files, each written to a temp
/// file created with its final mode and renamed, so it is never briefly readable by others).
/// Returns the files whose content changed.
pub fn write_tree(out: &Path, files: &[RenderedFile]) -> anyhow::Result<Vec<PathBuf>> {
    let mut changed = Vec::new();
    make_private_dir(out)?;
    for f in files {
        let dest = out.join(&f.path);
        if let Some(parent) = dest.parent() {
            make_private_dir(parent)?;
        }
        let same = std::fs::read(&dest).is_ok_and(|old| old == f.content.as_bytes());
        if same {
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(FILE_MODE))?;
            continue;
        }
        write_private(&dest, f.content.as_bytes())
            .with_context(|| format!("writing {}", dest.display()))?;
        changed.push(f.path.clone());
    }
    Ok(changed)
}

/// Downloads the upstream files (cached by sha256 under `cache_dir`) into `out`.
pub fn vendor_upstream(out: &Path, upstream: &[Upstream], cache_dir: &Path) -> anyhow::Result<()> {
    for u in upstream {
        let cached = crate::modules::download::fetch_to_cache(&u.url, &u.sha256, cache_dir)
            .with_context(|| format!("downloading {} for {}", u.url, u.path.display()))?;
        let dest = out.join(&u.path);
        if let Some(parent) = dest.parent() {
            make_private_dir(parent)?;
        }
        write_private(&dest, &std::fs::read(&cached)?)
            .with_context(|| format!("writing {}", dest.display()))?;
    }
    Ok(())
}

fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
}

fn write_private(dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dest.with_extension("bootstrap-tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dest)
}

#[cfg(test)]
mod tests;
