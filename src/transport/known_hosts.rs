//! OpenSSH known_hosts files: parsing, lookup and appending, as pure functions.
//!
//! Supported: `host[,host...] keytype base64 [comment]`, `[host]:port` for ports other than 22,
//! hashed `|1|salt|hash` host fields (HMAC-SHA1), `*`/`?` wildcards and `!` negation.
//! Marker lines: `@revoked` keys are refused for the hosts the line names; `@cert-authority`
//! lines are read so that a host known only through a CA is refused with a clear "unsupported"
//! instead of being treated as new (certificates are not supported).

use std::io::Write;
use std::path::Path;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use sha1::Digest as _;

/// What a line's leading `@` marker says about its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// A plain line: the host's key.
    None,
    /// `@revoked`: never accept this key.
    Revoked,
    /// `@cert-authority`: a CA signing host certificates (not supported here).
    CertAuthority,
}

/// One key line of a known_hosts file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub marker: Marker,
    /// The host field as written (comma list, possibly hashed).
    pub hosts: String,
    pub key_type: String,
    /// Decoded public key blob (the SSH wire encoding).
    pub key: Vec<u8>,
    /// 1-based line number, for messages.
    pub line: usize,
}

/// What the files say about a presented key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A `@revoked` line for this host carries this key.
    Revoked { line: usize },
    /// A line for this host carries exactly this key.
    Known,
    /// The host is known with another key, of this type or of another one (OpenSSH's
    /// accept-new refuses both: a key of a new type is how a man in the middle would show).
    Changed { expected: Vec<u8>, line: usize },
    /// The host is named only by a `@cert-authority` line.
    CertAuthorityOnly { line: usize },
    /// No line for this host.
    Unknown,
}

/// The host field OpenSSH uses for an address and port: bare for 22, else `[addr]:port`.
pub fn host_field(address: &str, port: u16) -> String {
    if port == 22 {
        address.to_string()
    } else {
        format!("[{address}]:{port}")
    }
}

/// `SHA256:<base64 without padding>` of a key blob, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &[u8]) -> String {
    use sha2::Digest;
    format!(
        "SHA256:{}",
        STANDARD_NO_PAD.encode(sha2::Sha256::digest(key))
    )
}

/// Parses a key as written in known_hosts or an inventory: `keytype base64 [comment]`.
pub fn parse_public_key(text: &str) -> Option<(String, Vec<u8>)> {
    let mut words = text.split_whitespace();
    let key_type = words.next()?;
    let key = STANDARD.decode(words.next()?).ok()?;
    Some((key_type.to_string(), key))
}

/// Parses one line; comments, blank lines, unknown markers and malformed lines give `None`.
pub fn parse_line(line: &str, line_number: usize) -> Option<Entry> {
    let mut line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut marker = Marker::None;
    if line.starts_with('@') {
        let (word, rest) = line.split_once(char::is_whitespace)?;
        marker = match word {
            "@revoked" => Marker::Revoked,
            "@cert-authority" => Marker::CertAuthority,
            _ => return None,
        };
        line = rest.trim_start();
    }
    let (hosts, rest) = line.split_once(char::is_whitespace)?;
    let (key_type, key) = parse_public_key(rest)?;
    Some(Entry {
        marker,
        hosts: hosts.to_string(),
        key_type,
        key,
        line: line_number,
    })
}

/// All key lines of a file's text.
pub fn parse(text: &str) -> Vec<Entry> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| parse_line(l, i + 1))
        .collect()
}

/// Whether a host field (comma list) names `host` (as made by `host_field`).
/// A matching negated pattern excludes the line, as in OpenSSH.
pub fn hosts_match(hosts: &str, host: &str) -> bool {
    let mut matched = false;
    for pattern in hosts.split(',') {
        if let Some(negated) = pattern.strip_prefix('!') {
            if glob_match(negated, host) {
                return false;
            }
        } else if pattern.starts_with("|1|") {
            matched |= hashed_match(pattern, host);
        } else {
            matched |= glob_match(pattern, host);
        }
    }
    matched
}

/// Key types recorded for a host (plain lines only): the only ones the client may negotiate.
pub fn known_key_types(entries: &[Entry], host: &str) -> Vec<String> {
    let mut types: Vec<String> = Vec::new();
    for e in entries
        .iter()
        .filter(|e| e.marker == Marker::None && hosts_match(&e.hosts, host))
    {
        if !types.contains(&e.key_type) {
            types.push(e.key_type.clone());
        }
    }
    types
}

/// Looks a presented key up among the entries for `host`.
pub fn lookup(entries: &[Entry], host: &str, key_type: &str, key: &[u8]) -> Lookup {
    let for_host = |marker: Marker| {
        entries
            .iter()
            .filter(move |e| e.marker == marker && hosts_match(&e.hosts, host))
    };
    if let Some(e) = for_host(Marker::Revoked).find(|e| e.key_type == key_type && e.key == key) {
        return Lookup::Revoked { line: e.line };
    }
    let plain: Vec<&Entry> = for_host(Marker::None).collect();
    if plain.iter().any(|e| e.key_type == key_type && e.key == key) {
        return Lookup::Known;
    }
    // A line of the same type is the best "expected" key to show; else any line for the host.
    let expected = plain
        .iter()
        .find(|e| e.key_type == key_type)
        .or(plain.first());
    if let Some(e) = expected {
        return Lookup::Changed {
            expected: e.key.clone(),
            line: e.line,
        };
    }
    match for_host(Marker::CertAuthority).next() {
        Some(e) => Lookup::CertAuthorityOnly { line: e.line },
        None => Lookup::Unknown,
    }
}

/// The line recorded for a newly accepted key.
pub fn format_entry(address: &str, port: u16, key_type: &str, key: &[u8]) -> String {
    format!(
        "{} {} {}\n",
        host_field(address, port),
        key_type,
        STANDARD.encode(key)
    )
}

/// Appends a line to a known_hosts file, creating it (mode 0600) and its directory.
pub fn append_entry(path: &Path, line: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    // A file edited by hand may lack a final newline; don't glue our line onto its last one.
    let needs_newline = std::fs::read(path)
        .map(|b| !b.is_empty() && !b.ends_with(b"\n"))
        .unwrap_or(false);
    if needs_newline {
        file.write_all(b"\n")?;
    }
    file.write_all(line.as_bytes())
}

/// `|1|base64(salt)|base64(HMAC-SHA1(salt, host))`, as written by `HashKnownHosts yes`.
fn hashed_match(pattern: &str, host: &str) -> bool {
    let mut parts = pattern.trim_start_matches("|1|").splitn(2, '|');
    let (Some(salt), Some(hash)) = (parts.next(), parts.next()) else {
        return false;
    };
    match (STANDARD.decode(salt), STANDARD.decode(hash)) {
        (Ok(salt), Ok(hash)) => hmac_sha1(&salt, host.as_bytes()) == hash.as_slice(),
        _ => false,
    }
}

/// HMAC-SHA1 (RFC 2104), written out to avoid a second `hmac` major version next to the one in use.
fn hmac_sha1(key: &[u8], message: &[u8]) -> [u8; 20] {
    const BLOCK: usize = 64;
    let mut block_key = [0u8; BLOCK];
    if key.len() > BLOCK {
        block_key[..20].copy_from_slice(&sha1::Sha1::digest(key));
    } else {
        block_key[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block_key.map(|k| k ^ byte);
    let inner = sha1::Sha1::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    let outer = sha1::Sha1::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    outer.into()
}

/// OpenSSH host patterns: `*` any run of characters, `?` any one character.
fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some((b'*', rest)) => (0..=t.len()).any(|i| go(rest, &t[i..])),
            Some((b'?', rest)) => !t.is_empty() && go(rest, &t[1..]),
            Some((c, rest)) => t
                .split_first()
                .is_some_and(|(tc, trest)| tc.eq_ignore_ascii_case(c) && go(rest, trest)),
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAINdtBI5z6cNkQxPwYzzG1EMHdydofKtZJpir1Et0p2al";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIMrigt9JM0iY1USrd7C1FJyli3b0xP2GsPqjOfjjHT3y";

    fn blob(b64: &str) -> Vec<u8> {
        STANDARD.decode(b64).unwrap()
    }

    #[test]
    fn host_field_brackets_only_non_default_ports() {
        assert_eq!(host_field("10.0.0.1", 22), "10.0.0.1");
        assert_eq!(host_field("10.0.0.1", 2222), "[10.0.0.1]:2222");
    }

    #[test]
    fn parses_lines_and_skips_markers_and_comments() {
        let text = format!(
            "# comment\n\n@revoked * ssh-ed25519 {KEY_A}\n@cert-authority *.example ssh-ed25519 {KEY_A}\n\
             a.example,10.0.0.1 ssh-ed25519 {KEY_A} root@a\nbroken-line\n[10.0.0.2]:2222 ssh-ed25519 {KEY_B}\n"
        );
        let entries = parse(&text);
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[0].marker, Marker::Revoked);
        assert_eq!(entries[0].hosts, "*");
        assert_eq!(entries[1].marker, Marker::CertAuthority);
        assert_eq!(entries[2].marker, Marker::None);
        assert_eq!(entries[2].hosts, "a.example,10.0.0.1");
        assert_eq!(entries[2].line, 5);
        assert_eq!(entries[2].key, blob(KEY_A));
        assert_eq!(entries[3].hosts, "[10.0.0.2]:2222");
        assert_eq!(entries[3].line, 7);
        assert!(parse("@unknown-marker * ssh-ed25519 AAAA\n").is_empty());
    }

    #[test]
    fn revoked_key_is_refused_even_when_also_listed() {
        let entries = parse(&format!(
            "10.0.0.1 ssh-ed25519 {KEY_A}\n@revoked * ssh-ed25519 {KEY_A}\n"
        ));
        assert_eq!(
            lookup(&entries, "10.0.0.1", "ssh-ed25519", &blob(KEY_A)),
            Lookup::Revoked { line: 2 }
        );
        // Another key of the host is not touched by the revocation.
        assert!(matches!(
            lookup(&entries, "10.0.0.1", "ssh-ed25519", &blob(KEY_B)),
            Lookup::Changed { line: 1, .. }
        ));
    }

    #[test]
    fn host_named_only_by_a_cert_authority_is_not_new() {
        let entries = parse(&format!("@cert-authority *.example ssh-ed25519 {KEY_A}\n"));
        assert_eq!(
            lookup(&entries, "h.example", "ssh-ed25519", &blob(KEY_B)),
            Lookup::CertAuthorityOnly { line: 1 }
        );
        assert_eq!(
            lookup(&entries, "10.0.0.1", "ssh-ed25519", &blob(KEY_B)),
            Lookup::Unknown
        );
        assert!(known_key_types(&entries, "h.example").is_empty());
    }

    #[test]
    fn comma_lists_ports_wildcards_and_negation() {
        assert!(hosts_match("a,10.0.0.1,b", "10.0.0.1"));
        assert!(!hosts_match("10.0.0.1", "[10.0.0.1]:2222"));
        assert!(hosts_match("[10.0.0.1]:2222", "[10.0.0.1]:2222"));
        assert!(hosts_match("10.0.0.*", "10.0.0.7"));
        assert!(!hosts_match("10.0.0.*,!10.0.0.7", "10.0.0.7"));
        assert!(hosts_match("Host.Example", "host.example"));
        assert!(!hosts_match("10.0.0.1", "10.0.0.10"));
    }

    #[test]
    fn hmac_sha1_matches_rfc_2202() {
        // RFC 2202 test case 2.
        let mac = hmac_sha1(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex::encode(mac), "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
        // Test case 6: a key longer than the block is hashed first.
        let mac = hmac_sha1(
            &[0xaa; 80],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(hex::encode(mac), "aa4ae5e15272d00e95705637ce8a3b55ed402112");
    }

    #[test]
    fn hashed_entries_match_their_host_only() {
        let salt = [7u8; 20];
        let field = |host: &str| {
            format!(
                "|1|{}|{}",
                STANDARD.encode(salt),
                STANDARD.encode(hmac_sha1(&salt, host.as_bytes()))
            )
        };
        assert!(hosts_match(&field("[127.0.0.1]:2200"), "[127.0.0.1]:2200"));
        assert!(!hosts_match(&field("[127.0.0.1]:2200"), "127.0.0.1"));
        assert!(!hosts_match("|1|garbage", "127.0.0.1"));
    }

    #[test]
    fn hashed_entry_written_by_ssh_keygen_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        std::fs::write(&file, format!("[127.0.0.1]:2200 ssh-ed25519 {KEY_A}\n")).unwrap();
        let status = std::process::Command::new("ssh-keygen")
            .arg("-H")
            .arg("-f")
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let Ok(status) = status else {
            eprintln!("ssh-keygen not installed; skipping");
            return;
        };
        assert!(status.success());
        let entries = parse(&std::fs::read_to_string(&file).unwrap());
        assert!(entries[0].hosts.starts_with("|1|"));
        let found = lookup(&entries, "[127.0.0.1]:2200", "ssh-ed25519", &blob(KEY_A));
        assert_eq!(found, Lookup::Known);
    }

    #[test]
    fn lookup_tells_known_changed_and_unknown_apart() {
        let entries = parse(&format!(
            "other ssh-ed25519 {KEY_B}\n10.0.0.1 ssh-ed25519 {KEY_A}\n10.0.0.1 ssh-rsa {KEY_B}\n"
        ));
        let a = blob(KEY_A);
        let b = blob(KEY_B);
        assert_eq!(
            lookup(&entries, "10.0.0.1", "ssh-ed25519", &a),
            Lookup::Known
        );
        assert_eq!(
            lookup(&entries, "10.0.0.1", "ssh-ed25519", &b),
            Lookup::Changed {
                expected: a.clone(),
                line: 2
            }
        );
        assert_eq!(
            lookup(&entries, "10.0.0.9", "ssh-ed25519", &a),
            Lookup::Unknown
        );
        // A key of a type not on record for a known host is a changed key, not a new one.
        assert_eq!(
            lookup(&entries, "10.0.0.1", "ecdsa-sha2-nistp256", &b),
            Lookup::Changed {
                expected: a.clone(),
                line: 2
            }
        );
        assert_eq!(
            known_key_types(&entries, "10.0.0.1"),
            vec!["ssh-ed25519", "ssh-rsa"]
        );
    }

    #[test]
    fn fingerprint_matches_ssh_keygen_format() {
        // As printed by `ssh-keygen -lf` for KEY_A.
        assert_eq!(
            fingerprint(&blob(KEY_A)),
            "SHA256:Ekx2CMQSzSKaDnxUoUoAAjJx5RiXDI/yAJUOn4NQw8Y"
        );
        assert_ne!(fingerprint(&blob(KEY_A)), fingerprint(&blob(KEY_B)));
    }

    #[test]
    fn appended_entry_is_private_and_found_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub/known_hosts");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "# no trailing newline").unwrap();
        let line = format_entry("127.0.0.1", 2200, "ssh-ed25519", &blob(KEY_A));
        assert_eq!(line, format!("[127.0.0.1]:2200 ssh-ed25519 {KEY_A}\n"));
        append_entry(&file, &line).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text.lines().count(), 2);
        let entries = parse(&text);
        assert_eq!(
            lookup(&entries, "[127.0.0.1]:2200", "ssh-ed25519", &blob(KEY_A)),
            Lookup::Known
        );
    }

    #[test]
    fn append_creates_directory_with_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("new/dir/known_hosts");
        append_entry(&file, "h ssh-ed25519 AAAA\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn pinned_key_parses_with_or_without_comment() {
        let (t, k) = parse_public_key(&format!("ssh-ed25519 {KEY_A} admin@box")).unwrap();
        assert_eq!(t, "ssh-ed25519");
        assert_eq!(k, blob(KEY_A));
        assert!(parse_public_key("ssh-ed25519").is_none());
        assert!(parse_public_key("ssh-ed25519 not*base64").is_none());
    }
}
