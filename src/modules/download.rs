//! `download`: puts a file pinned by its sha256 on the host. The admin machine downloads it
//! (once, into a cache keyed by the sha256) and uploads it, so hosts need no internet access.
//!
//! Arguments:
//! - `url` (required): `http://` or `https://`.
//! - `sha256` (required): the expected sha256 (64 hex digits). Content that does not match is
//!   refused.
//! - `dest` (required): absolute path on the host.
//! - `mode`, `owner`, `group`: attributes of the file. When left out, an existing file keeps
//!   its own.
//!
//! ```toml
//! [[steps]]
//! name = "calico manifest"
//! download = { url = "https://raw.githubusercontent.com/projectcalico/calico/v3.27.3/manifests/calico.yaml", sha256 = "{{ calico_manifest_sha256 }}", dest = "/root/calico.yaml", mode = "0644" }
//! ```
//!
//! The probe takes the sha256 of `dest`; a download is planned only when it differs. When only
//! the attributes differ, only `chmod`/`chown` run.
use super::file::{
    attr_changes, check_abs_path, check_mode, merged_attrs, parse_remote_file, remote_file_probe,
    Kind,
};
use super::*;
use crate::error::InputError;
use anyhow::Context as _;
use serde::Deserialize;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DownloadArgs {
    url: String,
    sha256: String,
    dest: String,
    mode: Option<String>,
    owner: Option<String>,
    group: Option<String>,
}

#[derive(Debug)]
pub struct Download {
    url: String,
    sha256: String,
    dest: String,
    attrs: FileAttrs,
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Download {
    pub fn from_args(args: &toml::Value, ctx: &BuildContext<'_>) -> Result<Self, InputError> {
        let a: DownloadArgs = parse_args("download", args, ctx)?;
        check_abs_path(&a.dest, "download", "dest", ctx)?;
        check_mode(a.mode.as_deref(), "download", ctx)?;
        if !(a.url.starts_with("http://") || a.url.starts_with("https://")) {
            return Err(InputError::new(
                ctx.playbook,
                ctx.line,
                format!("`download`: url {:?} is not an http(s) URL", a.url),
            )
            .hint("e.g. url = \"https://example.org/file.tar.gz\""));
        }
        let sha256 = a.sha256.trim().to_ascii_lowercase();
        if !is_sha256(&sha256) {
            return Err(InputError::new(
                ctx.playbook,
                ctx.line,
                format!("`download`: sha256 {:?} is not 64 hex digits", a.sha256),
            )
            .hint("pin the file: sha256sum FILE on a trusted copy gives the value"));
        }
        Ok(Download {
            url: a.url,
            sha256,
            dest: a.dest,
            attrs: FileAttrs {
                mode: a.mode,
                owner: a.owner,
                group: a.group,
            },
        })
    }
}

impl Module for Download {
    fn probe(&self, _opts: ProbeOptions) -> String {
        remote_file_probe(&self.dest, true, false)
    }

    fn plan(&self, probe: &ProbeOutput) -> Result<Vec<Change>, PlanError> {
        let remote = parse_remote_file(&probe.stdout)?;
        if let Some(st) = &remote.stat {
            if st.kind != Kind::File {
                return Err(PlanError(format!(
                    "{} is a {}, not a regular file",
                    self.dest, st.kind
                )));
            }
            match &remote.sha256 {
                Some(sha) if *sha == self.sha256 => {
                    return Ok(attr_changes(&self.dest, &self.attrs, st))
                }
                Some(_) => {}
                None => {
                    return Err(PlanError(format!(
                        "probe printed no sha256 for {}",
                        self.dest
                    )))
                }
            }
        }
        let verb = if remote.stat.is_some() {
            "replace"
        } else {
            "download"
        };
        Ok(vec![Change::new(
            format!("{verb} {} from {}", self.dest, self.url),
            Action::Download {
                url: self.url.clone(),
                sha256: self.sha256.clone(),
                dest: self.dest.clone(),
                attrs: merged_attrs(&self.attrs, remote.stat.as_ref()),
            },
        )])
    }
}

/// sha256 of a local file, streamed.
fn file_sha256(path: &Path) -> std::io::Result<String> {
    use sha2::Digest as _;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// Admin-side download cache used by the runner for `Action::Download`.
///
/// Returns `cache_dir/<sha256>`. A cached file whose content still matches is reused without
/// any network access. Otherwise `url` is fetched into a temp file in `cache_dir`, checked, and
/// renamed into place; content whose sha256 differs is deleted and refused.
pub fn fetch_to_cache(url: &str, sha256: &str, cache_dir: &Path) -> anyhow::Result<PathBuf> {
    let want = sha256.trim().to_ascii_lowercase();
    anyhow::ensure!(
        is_sha256(&want),
        "{sha256:?} is not a sha256 (64 hex digits)"
    );
    let cached = cache_dir.join(&want);
    match file_sha256(&cached) {
        Ok(got) if got == want => return Ok(cached),
        // A damaged entry (e.g. edited by hand) is dropped and fetched again.
        Ok(_) => std::fs::remove_file(&cached)
            .with_context(|| format!("removing bad cache entry {}", cached.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("reading cache entry {}", cached.display()))
        }
    }
    std::fs::create_dir_all(cache_dir)
        .with_context(|| format!("creating cache directory {}", cache_dir.display()))?;

    let tmp = cache_dir.join(format!(
        ".{want}.{}.{}.part",
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = download_into(url, &tmp);
    let got = match result {
        Ok(got) => got,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if got != want {
        let _ = std::fs::remove_file(&tmp);
        anyhow::bail!(
            "sha256 mismatch for {url}: expected {want}, got {got}; the download was deleted"
        );
    }
    std::fs::rename(&tmp, &cached)
        .with_context(|| format!("moving download into {}", cached.display()))?;
    Ok(cached)
}

/// A GET on the admin machine, with bounds on connecting and on each read.
fn get(url: &str) -> anyhow::Result<ureq::Response> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(std::time::Duration::from_secs(15))
        .timeout_read(std::time::Duration::from_secs(60))
        .build();
    agent
        .get(url)
        .call()
        .with_context(|| format!("downloading {url}"))
}

/// Fetches the OpenPGP key at `url` on the admin machine and returns it only if it holds
/// exactly the primary key `fingerprint` (see `openpgp::verify_key`). Keys are small; anything
/// over 1 MiB is refused rather than read.
pub fn fetch_key(url: &str, fingerprint: &str) -> anyhow::Result<Vec<u8>> {
    const LIMIT: u64 = 1 << 20;
    let response = get(url)?;
    let mut key = Vec::new();
    response
        .into_reader()
        .take(LIMIT + 1)
        .read_to_end(&mut key)
        .with_context(|| format!("reading {url}"))?;
    anyhow::ensure!(
        key.len() as u64 <= LIMIT,
        "{url} is larger than 1 MiB: not a signing key"
    );
    super::openpgp::verify_key(&key, fingerprint)
        .map_err(|e| anyhow::anyhow!("refusing the key from {url}: {e}"))?;
    Ok(key)
}

/// Streams `url` into `path`, returning the sha256 of what was written.
fn download_into(url: &str, path: &Path) -> anyhow::Result<String> {
    use sha2::Digest as _;
    let response = get(url)?;
    let mut reader = response.into_reader();
    let mut file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader
            .read(&mut buf)
            .with_context(|| format!("reading {url}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .with_context(|| format!("writing {}", path.display()))?;
    }
    file.sync_all()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::super::file::sha256_hex;
    use super::super::file::testing::*;
    use super::*;

    fn download(args: &str) -> Result<Download, InputError> {
        build_simple(args, Download::from_args)
    }

    fn args(sha: &str) -> String {
        format!("url = \"https://example.org/f\"\nsha256 = {sha:?}\ndest = \"/usr/local/bin/f\"\nmode = \"0755\"")
    }

    fn stat(mode: &str, sha: &str) -> ProbeOutput {
        probe(&format!(
            "type=regular file\nmode={mode}\nuid=0\nowner=root\ngid=0\ngroup=root\nsha256={sha}\n"
        ))
    }

    #[test]
    fn plan_from_probe_data() {
        let sha = sha256_hex(b"binary");
        let d = download(&args(&sha.to_uppercase())).unwrap();
        assert_eq!(d.sha256, sha, "sha256 is normalised to lower case");
        assert!(d.plan(&stat("755", &sha)).unwrap().is_empty());
        assert_eq!(
            scripts(&d.plan(&stat("644", &sha)).unwrap()),
            vec!["chmod 00755 -- /usr/local/bin/f"]
        );
        let replaced = d.plan(&stat("700", &"0".repeat(64))).unwrap();
        assert_eq!(
            replaced[0].action,
            Action::Download {
                url: "https://example.org/f".into(),
                sha256: sha.clone(),
                dest: "/usr/local/bin/f".into(),
                attrs: FileAttrs {
                    mode: Some("0755".into()),
                    owner: Some("root".into()),
                    group: Some("root".into())
                },
            }
        );
        let fresh = d.plan(&probe("type=missing\n")).unwrap();
        assert!(fresh[0].summary.starts_with("download /usr/local/bin/f"));
    }

    #[test]
    fn bad_arguments() {
        for (a, needle) in [
            (args("abc"), "64 hex"),
            (
                "url = \"file:///x\"\nsha256 = \"\"\ndest = \"/x\"".to_string(),
                "http(s)",
            ),
            (
                args(&"0".repeat(64)).replace("/usr/local/bin/f", "f"),
                "absolute",
            ),
            (
                args(&"0".repeat(64)) + "\nchecksum = \"x\"",
                "unknown field",
            ),
        ] {
            let e = download(&a).unwrap_err();
            assert!(e.message.contains(needle), "{a}: {}", e.message);
        }
    }

    #[test]
    fn real_probe() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        std::fs::write(&dest, "binary").unwrap();
        let d = download(&format!(
            "url = \"http://127.0.0.1:1/f\"\nsha256 = {:?}\ndest = {:?}",
            sha256_hex(b"binary"),
            dest.to_str().unwrap()
        ))
        .unwrap();
        assert!(d
            .plan(&run_probe(&d.probe(ProbeOptions::default())))
            .unwrap()
            .is_empty());
        std::fs::write(&dest, "other").unwrap();
        assert_eq!(
            d.plan(&run_probe(&d.probe(ProbeOptions::default())))
                .unwrap()
                .len(),
            1
        );
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn cache_downloads_verifies_and_reuses_without_network() {
        let cache = tempfile::tempdir().unwrap();
        let dir = cache.path().join("downloads");
        let body = b"pinned content\n".to_vec();
        let sha = sha256_hex(&body);
        let (port, server) = http_server(vec![(200, body.clone())]);
        let url = format!("http://127.0.0.1:{port}/pkg.tar.gz");
        let path = fetch_to_cache(&url, &sha, &dir).unwrap();
        assert_eq!(path, dir.join(&sha));
        assert_eq!(std::fs::read(&path).unwrap(), body);
        assert_eq!(
            server.join().unwrap(),
            vec!["GET /pkg.tar.gz HTTP/1.1".to_string()]
        );
        assert_eq!(entries(&dir), vec![sha.clone()], "no temp file left behind");

        // The server is gone (its port closed): a verified cache entry needs no network.
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
        assert_eq!(
            fetch_to_cache(&url, &sha.to_uppercase(), &dir).unwrap(),
            path
        );
    }

    #[test]
    fn cache_refuses_and_deletes_mismatching_content() {
        let cache = tempfile::tempdir().unwrap();
        let expected = sha256_hex(b"what we pinned");
        let (port, server) = http_server(vec![(200, b"something else".to_vec())]);
        let err = fetch_to_cache(
            &format!("http://127.0.0.1:{port}/x"),
            &expected,
            cache.path(),
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains(&format!("expected {expected}")), "{msg}");
        assert!(
            msg.contains(&format!("got {}", sha256_hex(b"something else"))),
            "{msg}"
        );
        server.join().unwrap();
        assert!(
            entries(cache.path()).is_empty(),
            "mismatching content is deleted"
        );
    }

    #[test]
    fn cache_replaces_a_damaged_entry_and_reports_http_errors() {
        let cache = tempfile::tempdir().unwrap();
        let body = b"good".to_vec();
        let sha = sha256_hex(&body);
        std::fs::write(cache.path().join(&sha), "tampered").unwrap();
        let (port, server) = http_server(vec![(200, body.clone()), (404, b"no".to_vec())]);
        let path =
            fetch_to_cache(&format!("http://127.0.0.1:{port}/good"), &sha, cache.path()).unwrap();
        assert_eq!(std::fs::read(path).unwrap(), body);
        let other = sha256_hex(b"missing");
        let err = fetch_to_cache(
            &format!("http://127.0.0.1:{port}/missing"),
            &other,
            cache.path(),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("404"), "{err:#}");
        server.join().unwrap();
        assert_eq!(entries(cache.path()), vec![sha]);
        assert!(fetch_to_cache("http://127.0.0.1:1/x", "nothex", cache.path()).is_err());
    }

    #[test]
    fn fetch_key_returns_the_pinned_key_and_refuses_another() {
        let gpg = crate::modules::openpgp::testing::Gpg::with_keys(&["repo"]);
        let fpr = gpg.fingerprints().remove(0);
        let other = crate::modules::openpgp::testing::Gpg::with_keys(&["intruder"]);
        let good = gpg.export(true, "");
        let (port, server) = http_server(vec![(200, good.clone()), (200, other.export(true, ""))]);
        let key = fetch_key(&format!("http://127.0.0.1:{port}/Release.key"), &fpr).unwrap();
        assert_eq!(key, good);
        let err = fetch_key(&format!("http://127.0.0.1:{port}/Release.key"), &fpr).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("refusing the key from http://127.0.0.1"),
            "{msg}"
        );
        assert!(msg.contains("but the pin is"), "{msg}");
        server.join().unwrap();
    }
}
