//! Just enough OpenPGP (RFC 4880 / RFC 9580) to pin an apt signing key by its fingerprint: the
//! armor, the packet framing, and the v4 fingerprint of the primary public key. Signatures are
//! not checked here: apt does that with the key once it is installed; this only makes sure the
//! file handed to apt is the key the inventory names, and nothing more.

/// A fingerprint as given by a person, e.g. `"DE15 B144 86CD ..."`: 40 hex digits, spaces
/// allowed, any case. Returns the 40 digits in upper case (as gpg prints them).
pub fn normalize_fingerprint(text: &str) -> Option<String> {
    let digits: String = text.chars().filter(|c| *c != ' ').collect();
    (digits.len() == 40 && digits.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| digits.to_ascii_uppercase())
}

/// Accepts `key` (ASCII-armored or binary) only if it holds exactly one primary public key and
/// that key's fingerprint is `expected` (normalised, see `normalize_fingerprint`).
pub fn verify_key(key: &[u8], expected: &str) -> Result<(), String> {
    let got = primary_fingerprint(key)?;
    if got == expected {
        Ok(())
    } else {
        Err(format!(
            "the key's fingerprint is {} but the pin is {}",
            spaced(&got),
            spaced(expected)
        ))
    }
}

/// The fingerprint of the one primary public key in `key`, 40 upper-case hex digits.
pub fn primary_fingerprint(key: &[u8]) -> Result<String, String> {
    let binary = match key.first() {
        None => return Err("the key file is empty".into()),
        // Every packet header has its top bit set; armor is text.
        Some(b) if b & 0x80 != 0 => key.to_vec(),
        Some(_) => dearmor(key)?,
    };
    let mut primaries = Vec::new();
    for packet in packets(&binary)? {
        if packet.tag == PUBLIC_KEY {
            primaries.push(v4_fingerprint(packet.body)?);
        }
    }
    match primaries.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err("the file holds no primary public key (OpenPGP packet tag 6)".into()),
        many => Err(format!(
            "the file holds {} primary public keys ({}); exactly one is expected",
            many.len(),
            many.iter()
                .map(|f| spaced(f))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// When the one primary key in `key` expires (Unix seconds), by its newest self-signature's key
/// expiration time (RFC 4880 5.2.3.6: seconds after the key's creation); None when it never
/// does. Projects such as pkgs.k8s.io extend the same key's expiry with new self-signatures: a
/// kept copy of the file then expires although its fingerprint still matches.
pub fn primary_expiry(key: &[u8]) -> Result<Option<u64>, String> {
    let binary = match key.first() {
        None => return Err("the key file is empty".into()),
        Some(b) if b & 0x80 != 0 => key.to_vec(),
        Some(_) => dearmor(key)?,
    };
    let fpr = primary_fingerprint(&binary)?;
    let key_id = &fpr[24..];
    let mut created = None;
    // (signature creation time, key expiration seconds) of each self-signature on the primary key.
    let mut newest: Option<(u32, Option<u32>)> = None;
    for packet in packets(&binary)? {
        match packet.tag {
            PUBLIC_KEY => {
                let b = packet.body;
                created = b
                    .get(1..5)
                    .map(|t| u32::from_be_bytes([t[0], t[1], t[2], t[3]]));
            }
            // A subkey: the signatures after it are about the subkey.
            PUBLIC_SUBKEY => break,
            SIGNATURE => {
                if let Some((sig_created, expiry)) = self_signature(packet.body, &fpr, key_id) {
                    if newest.is_none_or(|(t, _)| sig_created >= t) {
                        newest = Some((sig_created, expiry));
                    }
                }
            }
            _ => {}
        }
    }
    let created = created.ok_or("the primary key packet has no creation time")?;
    Ok(newest
        .and_then(|(_, expiry)| expiry)
        .filter(|secs| *secs != 0)
        .map(|secs| created as u64 + secs as u64))
}

/// (creation time, key expiration seconds) of a version 4 certification or direct-key signature
/// issued by the primary key itself; None for any other signature.
fn self_signature(body: &[u8], fpr: &str, key_id: &str) -> Option<(u32, Option<u32>)> {
    let (&version, rest) = body.split_first()?;
    let (&sig_type, rest) = rest.split_first()?;
    if version != 4 || !matches!(sig_type, 0x10..=0x13 | 0x1f) {
        return None;
    }
    let rest = rest.get(2..)?; // public-key and hash algorithms
    let (len, rest) = rest.split_first_chunk::<2>()?;
    let hashed_len = u16::from_be_bytes(*len) as usize;
    let hashed = rest.get(..hashed_len)?;
    let after = rest.get(hashed_len..)?;
    let (len, rest) = after.split_first_chunk::<2>()?;
    let unhashed = rest.get(..u16::from_be_bytes(*len) as usize)?;
    let (mut created, mut expiry, mut ours) = (None, None, false);
    for (hashed_area, area) in [(true, hashed), (false, unhashed)] {
        for (kind, data) in subpackets(area)? {
            match (kind, data.len()) {
                (2, 4) if hashed_area => created = Some(u32::from_be_bytes(data.try_into().ok()?)),
                (9, 4) if hashed_area => expiry = Some(u32::from_be_bytes(data.try_into().ok()?)),
                (16, 8) => ours |= hex::encode_upper(data) == key_id,
                (33, 21) => ours |= data[0] == 4 && hex::encode_upper(&data[1..]) == fpr,
                _ => {}
            }
        }
    }
    ours.then_some((created?, expiry))
}

/// The (type, data) of each signature subpacket in an area (RFC 4880 5.2.3.1).
fn subpackets(mut area: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    while let Some(&first) = area.first() {
        let (len, rest) = match first {
            0..=191 => (first as usize, &area[1..]),
            192..=254 => (
                ((first as usize - 192) << 8) + *area.get(1)? as usize + 192,
                area.get(2..)?,
            ),
            255 => (
                u32::from_be_bytes(area.get(1..5)?.try_into().ok()?) as usize,
                area.get(5..)?,
            ),
        };
        if len == 0 || len > rest.len() {
            return None;
        }
        let (kind, data) = (rest[0] & 0x7f, &rest[1..len]);
        out.push((kind, data));
        area = &rest[len..];
    }
    Some(out)
}

/// Groups of four, as the Kubernetes documentation and gpg print fingerprints.
fn spaced(fpr: &str) -> String {
    fpr.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

const PUBLIC_KEY: u8 = 6;
const PUBLIC_SUBKEY: u8 = 14;
const SIGNATURE: u8 = 2;

struct Packet<'a> {
    tag: u8,
    body: &'a [u8],
}

fn v4_fingerprint(body: &[u8]) -> Result<String, String> {
    use sha1::Digest as _;
    match body.first() {
        Some(4) => {}
        Some(v) => {
            return Err(format!(
                "the primary key is a version {v} OpenPGP key; only version 4 keys can be pinned \
                 by fingerprint (pin this one by key_sha256)"
            ))
        }
        None => return Err("the primary key packet is empty".into()),
    }
    let len = u16::try_from(body.len())
        .map_err(|_| format!("the primary key packet is too long ({} bytes)", body.len()))?;
    let mut hasher = sha1::Sha1::new();
    hasher.update([0x99]);
    hasher.update(len.to_be_bytes());
    hasher.update(body);
    Ok(hex::encode_upper(hasher.finalize()))
}

/// Splits binary OpenPGP data into packets (old and new header formats).
fn packets(mut data: &[u8]) -> Result<Vec<Packet<'_>>, String> {
    let truncated = || "the key data is truncated (an OpenPGP packet ends early)".to_string();
    let mut out = Vec::new();
    while let Some(&header) = data.first() {
        if header & 0x80 == 0 {
            return Err(format!(
                "not OpenPGP data (byte {header:#04x} starts no packet)"
            ));
        }
        let rest = &data[1..];
        let (tag, len, rest) = if header & 0x40 != 0 {
            // New format: the length's first octet says how long the length is.
            let tag = header & 0x3f;
            let (&first, rest) = rest.split_first().ok_or_else(truncated)?;
            match first {
                0..=191 => (tag, first as usize, rest),
                192..=223 => {
                    let (&second, rest) = rest.split_first().ok_or_else(truncated)?;
                    (
                        tag,
                        ((first as usize - 192) << 8) + second as usize + 192,
                        rest,
                    )
                }
                255 => {
                    let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(truncated)?;
                    (tag, u32::from_be_bytes(*len) as usize, rest)
                }
                _ => {
                    return Err(
                        "partial body lengths do not occur in a key file (RFC 4880 4.2.2.4)".into(),
                    )
                }
            }
        } else {
            // Old format: the low two bits give the size of the length field.
            let tag = (header >> 2) & 0x0f;
            match header & 0x03 {
                0 => {
                    let (&len, rest) = rest.split_first().ok_or_else(truncated)?;
                    (tag, len as usize, rest)
                }
                1 => {
                    let (len, rest) = rest.split_first_chunk::<2>().ok_or_else(truncated)?;
                    (tag, u16::from_be_bytes(*len) as usize, rest)
                }
                2 => {
                    let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(truncated)?;
                    (tag, u32::from_be_bytes(*len) as usize, rest)
                }
                // Indeterminate length: the packet runs to the end of the data.
                _ => (tag, rest.len(), rest),
            }
        };
        if len > rest.len() {
            return Err(truncated());
        }
        let (body, after) = rest.split_at(len);
        out.push(Packet { tag, body });
        data = after;
    }
    Ok(out)
}

const BEGIN: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
const END: &str = "-----END PGP PUBLIC KEY BLOCK-----";

/// The binary content of every public key block in ASCII armor, concatenated. A CRC24 line,
/// when present, must match.
fn dearmor(text: &[u8]) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let text = std::str::from_utf8(text)
        .map_err(|_| "the key file is neither binary OpenPGP nor ASCII armor".to_string())?;
    let mut lines = text.lines().map(str::trim_end);
    let mut out = Vec::new();
    let mut blocks = 0;
    while lines.by_ref().any(|l| l == BEGIN) {
        blocks += 1;
        // Armor headers ("Comment: ...") run to the first blank line.
        if !lines.by_ref().any(|l| l.trim().is_empty()) {
            return Err("the ASCII armor has no blank line after its header".into());
        }
        let mut base64 = String::new();
        let mut crc = None;
        let mut ended = false;
        for line in lines.by_ref() {
            if line == END {
                ended = true;
                break;
            }
            if let Some(sum) = line.strip_prefix('=').filter(|_| line.len() == 5) {
                crc = Some(sum.to_string());
            } else {
                base64.push_str(line.trim());
            }
        }
        if !ended {
            return Err(format!("the ASCII armor has no `{END}` line"));
        }
        let engine = base64::engine::general_purpose::STANDARD;
        let bytes = engine
            .decode(&base64)
            .map_err(|e| format!("the ASCII armor is not valid base64: {e}"))?;
        if let Some(sum) = crc {
            let want = engine
                .decode(&sum)
                .map_err(|e| format!("the armor checksum is not valid base64: {e}"))?;
            let got = crc24(&bytes).to_be_bytes();
            if want != got[1..] {
                return Err(
                    "the ASCII armor checksum (CRC24) does not match: the key file is \
                            damaged"
                        .into(),
                );
            }
        }
        out.extend(bytes);
    }
    if blocks == 0 {
        return Err(format!("the key file has no `{BEGIN}` line"));
    }
    Ok(out)
}

/// The armor checksum of RFC 4880 section 6.1.
fn crc24(data: &[u8]) -> u32 {
    let mut crc: u32 = 0x00B7_04CE;
    for &b in data {
        crc ^= (b as u32) << 16;
        for _ in 0..8 {
            crc <<= 1;
            if crc & 0x0100_0000 != 0 {
                crc ^= 0x0186_4CFB;
            }
        }
    }
    crc & 0x00FF_FFFF
}

/// Real key material for tests, made by gpg.
#[cfg(test)]
pub(crate) mod testing {
    use std::process::Command;

    /// A throwaway gpg home with `names` as keys. gpg must be installed (.ci/setup): without
    /// it these tests fail, they never skip.
    pub(crate) struct Gpg {
        home: tempfile::TempDir,
    }

    impl Gpg {
        pub(crate) fn with_keys(names: &[&str]) -> Gpg {
            let gpg = Gpg {
                home: tempfile::tempdir().unwrap(),
            };
            for name in names {
                gpg.generate(name, "never");
            }
            gpg
        }

        /// A throwaway gpg home with one key `name` that expires after `expire` (gpg's syntax,
        /// e.g. "2d").
        pub(crate) fn with_expiring_key(name: &str, expire: &str) -> Gpg {
            let gpg = Gpg {
                home: tempfile::tempdir().unwrap(),
            };
            gpg.generate(name, expire);
            gpg
        }

        /// An ed25519 signing key `name` that expires after `expire` ("never" for none).
        fn generate(&self, name: &str, expire: &str) {
            self.run(&[
                "--passphrase",
                "",
                "--quick-gen-key",
                &format!("{name} <{name}@bootstrap.test>"),
                "ed25519",
                "sign",
                expire,
            ]);
        }

        /// Moves the primary key's expiry (a new self-signature), as a project extending its key.
        pub(crate) fn set_expiry(&self, fpr: &str, expire: &str) {
            self.run(&["--passphrase", "", "--quick-set-expire", fpr, expire]);
        }

        fn run(&self, args: &[&str]) -> Vec<u8> {
            let out = Command::new("gpg")
                .arg("--batch")
                .arg("--pinentry-mode")
                .arg("loopback")
                .arg("--homedir")
                .arg(self.home.path())
                .args(args)
                .output()
                .expect("gpg must be installed for these tests (.ci/setup installs it)");
            assert!(
                out.status.success(),
                "gpg {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        }

        /// gpg's own fingerprint of each primary key, in order.
        pub(crate) fn fingerprints(&self) -> Vec<String> {
            let listing = String::from_utf8(self.run(&["--with-colons", "--fingerprint"])).unwrap();
            let mut fprs = Vec::new();
            let mut after_pub = false;
            for line in listing.lines() {
                let fields: Vec<&str> = line.split(':').collect();
                match fields[0] {
                    "pub" => after_pub = true,
                    // The first fpr after a pub line is the primary key's.
                    "fpr" if after_pub => {
                        fprs.push(fields[9].to_string());
                        after_pub = false;
                    }
                    _ => {}
                }
            }
            fprs
        }

        pub(crate) fn export(&self, armor: bool, who: &str) -> Vec<u8> {
            let mut args = vec!["--export"];
            if armor {
                args.push("--armor");
            }
            if !who.is_empty() {
                args.push(who);
            }
            self.run(&args)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Gpg;
    use super::*;

    #[test]
    fn fingerprint_of_a_gpg_key_matches_gpg_in_armor_and_binary() {
        let gpg = Gpg::with_keys(&["alpha"]);
        let fprs = gpg.fingerprints();
        assert_eq!(fprs.len(), 1, "{fprs:?}");
        assert_eq!(fprs[0].len(), 40);
        for armor in [true, false] {
            let key = gpg.export(armor, "");
            assert_eq!(primary_fingerprint(&key).unwrap(), fprs[0], "armor={armor}");
            assert_eq!(verify_key(&key, &fprs[0]), Ok(()));
        }
        // As a person would type it: groups of four, lower case.
        let typed = spaced(&fprs[0]).to_lowercase();
        assert_eq!(normalize_fingerprint(&typed).as_deref(), Some(&*fprs[0]));
    }

    #[test]
    fn a_key_with_another_fingerprint_is_refused_naming_both() {
        let gpg = Gpg::with_keys(&["alpha"]);
        let fpr = gpg.fingerprints().remove(0);
        let pinned = "DE15B14486CD377B9E876E1A234654DA9A296436";
        let err = verify_key(&gpg.export(true, ""), pinned).unwrap_err();
        assert!(err.contains(&spaced(&fpr)), "{err}");
        assert!(
            err.contains("DE15 B144 86CD 377B 9E87 6E1A 2346 54DA 9A29 6436"),
            "{err}"
        );
    }

    #[test]
    fn a_file_with_two_primary_keys_is_refused_even_when_one_matches() {
        let gpg = Gpg::with_keys(&["alpha", "beta"]);
        let fprs = gpg.fingerprints();
        assert_eq!(fprs.len(), 2);
        for armor in [true, false] {
            let both = gpg.export(armor, "");
            let err = verify_key(&both, &fprs[0]).unwrap_err();
            assert!(err.contains("2 primary public keys"), "{err}");
            // Each alone is accepted, so the refusal is about the second key.
            let one = gpg.export(armor, &fprs[1]);
            assert_eq!(verify_key(&one, &fprs[1]), Ok(()));
        }
    }

    #[test]
    fn corrupted_armor_is_refused() {
        let gpg = Gpg::with_keys(&["alpha"]);
        let fpr = gpg.fingerprints().remove(0);
        let armored = String::from_utf8(gpg.export(true, "")).unwrap();
        // One base64 character of the body changed: the CRC24 line no longer matches (or the
        // packets no longer parse); never accepted.
        let body_line = armored
            .lines()
            .position(|l| l.len() > 40 && !l.starts_with("-----"))
            .unwrap();
        let mut lines: Vec<String> = armored.lines().map(String::from).collect();
        let c = lines[body_line].remove(10);
        lines[body_line].insert(10, if c == 'A' { 'B' } else { 'A' });
        let damaged = lines.join("\n");
        assert!(verify_key(damaged.as_bytes(), &fpr).is_err());
        // Whether or not gpg writes a CRC line, a wrong one is refused.
        let mut with_bad_crc: Vec<String> = armored
            .lines()
            .filter(|l| !(l.starts_with('=') && l.len() == 5))
            .map(String::from)
            .collect();
        let end = with_bad_crc.len() - 1;
        with_bad_crc.insert(end, "=AAAA".into());
        let err = verify_key(with_bad_crc.join("\n").as_bytes(), &fpr).unwrap_err();
        assert!(err.contains("CRC24"), "{err}");
        // Cut short: no END line.
        let cut = &armored[..armored.len() / 2];
        assert!(verify_key(cut.as_bytes(), &fpr).is_err());
        assert!(verify_key(b"", &fpr).is_err());
        assert!(verify_key(b"<html>not found</html>", &fpr).is_err());
    }

    #[test]
    fn a_version_6_key_is_refused_with_a_clear_message() {
        // New-format tag 6 packet, version 6 (only the version octet matters here).
        let key = [0xC6, 0x02, 0x06, 0x00];
        let err = primary_fingerprint(&key).unwrap_err();
        assert!(err.contains("version 6"), "{err}");
    }

    #[test]
    fn fingerprint_text_is_forty_hex_digits_with_optional_spaces() {
        assert_eq!(
            normalize_fingerprint("DE15 B144 86CD 377B 9E87  6E1A 2346 54DA 9A29 6436").as_deref(),
            Some("DE15B14486CD377B9E876E1A234654DA9A296436")
        );
        assert_eq!(normalize_fingerprint("DE15 B144"), None);
        assert_eq!(normalize_fingerprint(&"G".repeat(40)), None);
        assert_eq!(normalize_fingerprint(""), None);
    }

    #[test]
    fn crc24_of_known_input() {
        // RFC 4880's CRC24 of "123456789" (the standard check value for CRC-24/OPENPGP).
        assert_eq!(crc24(b"123456789"), 0x21CF02);
    }

    #[test]
    fn expiry_of_a_key_follows_its_newest_self_signature() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let never = Gpg::with_keys(&["forever"]);
        assert_eq!(primary_expiry(&never.export(true, "")).unwrap(), None);

        let gpg = Gpg::with_expiring_key("soon", "2d");
        let fpr = gpg.fingerprints().remove(0);
        let first = primary_expiry(&gpg.export(true, "")).unwrap().unwrap();
        assert!(
            first > now + 86_400 && first <= now + 3 * 86_400,
            "{first} vs {now}"
        );
        // The same key, its expiry extended: same fingerprint, later expiry, in both encodings.
        gpg.set_expiry(&fpr, "400d");
        for armor in [true, false] {
            let extended = gpg.export(armor, "");
            assert_eq!(primary_fingerprint(&extended).unwrap(), fpr);
            let later = primary_expiry(&extended).unwrap().unwrap();
            assert!(later > now + 399 * 86_400, "{later} vs {now}");
        }
    }
}
