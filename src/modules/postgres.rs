//! PostgreSQL roles and databases on the host, managed through `psql` as the `postgres` user.
//!
//! `postgres_role` arguments:
//! - `name` (required): role name; not beginning with `pg_` (PostgreSQL reserves those).
//! - `password`: the role's password (usually `{{ secrets.... }}`). It is never sent to the host:
//!   a SCRAM-SHA-256 verifier is computed on the admin machine and sent through the SQL on stdin.
//!   ASCII only (PostgreSQL would SASLprep-normalise anything else differently).
//! - `login` (default `true`): whether the role may log in.
//! - `state` (default `"present"`): `"present"` or `"absent"`.
//!
//! ```toml
//! [[steps]]
//! name = "database role"
//! postgres_role = { name = "crypto_user", password = "{{ secrets.db_password }}", login = true }
//! ```
//!
//! `postgres_db` arguments:
//! - `name` (required): database name.
//! - `owner`: role owning the database (must exist when applied).
//! - `encoding` (default `"UTF8"`): fixed at creation; a different existing encoding is an error.
//! - `state` (default `"present"`): `"present"` or `"absent"`.
//!
//! ```toml
//! [[steps]]
//! name = "application database"
//! postgres_db = { name = "crypto_exchange", owner = "crypto_user", encoding = "UTF8" }
//! ```
//!
//! Idempotence for passwords: the probe reads the stored verifier from `pg_authid` (so the probe
//! output is sensitive) and the plan checks the wanted password against it locally.
//!
//! Every step of both modules sends the same probe, a snapshot of the server's roles and
//! databases (see `SNAPSHOT_SQL`): the runner sends identical probes once per batch, so a host's
//! PostgreSQL steps cost one `psql` call together, and each plan picks its own entry.

use super::*;
use crate::error::InputError;
use crate::transport::shell::quote;
use serde::Deserialize;

/// Runs SQL read from stdin as the `postgres` superuser; `cd /` since root's home is unreadable.
const PSQL_STDIN: &str =
    "cd / && runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d postgres -f -";

/// SCRAM iteration count, PostgreSQL's default (`scram_iterations`).
const SCRAM_ITERATIONS: u32 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Present,
    Absent,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleArgs {
    name: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default = "yes")]
    login: bool,
    #[serde(default)]
    state: State,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DbArgs {
    name: String,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default = "utf8")]
    encoding: String,
    #[serde(default)]
    state: State,
}

fn utf8() -> String {
    "UTF8".to_string()
}

/// A PostgreSQL role.
pub struct PostgresRole {
    pub name: String,
    password: Option<String>,
    pub login: bool,
    pub state: State,
}

// Hand-written so the password can never reach a log through `{:?}`.
impl std::fmt::Debug for PostgresRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresRole")
            .field("name", &self.name)
            .field(
                "password",
                &self.password.as_ref().map(|_| crate::redact::MASK),
            )
            .field("login", &self.login)
            .field("state", &self.state)
            .finish()
    }
}

/// A PostgreSQL database.
#[derive(Debug)]
pub struct PostgresDb {
    pub name: String,
    pub owner: Option<String>,
    pub encoding: String,
    pub state: State,
}

fn bad(ctx: &BuildContext<'_>, msg: String, hint: &str) -> InputError {
    InputError::new(ctx.playbook, ctx.line, msg).hint(hint)
}

/// Names must fit NAMEDATALEN and carry no control characters (psql reads lines).
fn check_name(ctx: &BuildContext<'_>, what: &str, name: &str) -> Result<(), InputError> {
    if name.is_empty() || name.len() > 63 || name.chars().any(|c| c.is_control()) {
        return Err(bad(
            ctx,
            format!("`{what}` must be 1 to 63 bytes without control characters, got {name:?}"),
            "PostgreSQL truncates names longer than 63 bytes; pick a shorter plain name",
        ));
    }
    Ok(())
}

impl PostgresRole {
    pub fn from_args(args: &toml::Value, ctx: &BuildContext<'_>) -> Result<Self, InputError> {
        let a: RoleArgs = parse_args("postgres_role", args, ctx)?;
        check_name(ctx, "name", &a.name)?;
        // PostgreSQL refuses to create them, and the probe's snapshot leaves them out.
        if a.name.starts_with("pg_") {
            return Err(bad(
                ctx,
                format!("role name `{}` begins with `pg_`", a.name),
                "PostgreSQL reserves role names beginning with pg_ for its built-in roles; pick another name",
            ));
        }
        if let Some(pw) = &a.password {
            if pw.is_empty() || !pw.is_ascii() || pw.chars().any(|c| c.is_ascii_control()) {
                return Err(bad(
                    ctx,
                    format!("`password` of role `{}` must be non-empty printable ASCII", a.name),
                    "PostgreSQL normalises non-ASCII passwords (SASLprep); generate an ASCII secret",
                ));
            }
        }
        Ok(PostgresRole {
            name: a.name,
            password: a.password,
            login: a.login,
            state: a.state,
        })
    }
}

impl PostgresDb {
    pub fn from_args(args: &toml::Value, ctx: &BuildContext<'_>) -> Result<Self, InputError> {
        let a: DbArgs = parse_args("postgres_db", args, ctx)?;
        check_name(ctx, "name", &a.name)?;
        if let Some(owner) = &a.owner {
            check_name(ctx, "owner", owner)?;
        }
        let enc_ok = !a.encoding.is_empty()
            && a.encoding
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !enc_ok {
            return Err(bad(
                ctx,
                format!("`encoding` {:?} is not an encoding name", a.encoding),
                "use a PostgreSQL encoding name such as \"UTF8\"",
            ));
        }
        Ok(PostgresDb {
            name: a.name,
            owner: a.owner,
            encoding: a.encoding,
            state: a.state,
        })
    }
}

/// SQL identifier, always double-quoted (so case and reserved words are kept).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// SQL string literal; like PostgreSQL's own `quote_literal`, an E'' string when backslashes
/// occur so the result is right whatever `standard_conforming_strings` says.
pub fn quote_literal(value: &str) -> String {
    let body = value.replace('\'', "''");
    if body.contains('\\') {
        format!("E'{}'", body.replace('\\', "\\\\"))
    } else {
        format!("'{body}'")
    }
}

/// The snapshot every PostgreSQL step's probe takes: one line per role (built-in `pg_*` roles
/// left out; no user role may carry that prefix) and one per database. Every text is sent as
/// hex of its UTF-8 bytes, so a name with a newline, `=`, a space or a quote cannot be confused
/// with the next field or line. Role lines carry the stored password verifier: the probe
/// output is sensitive for both modules.
///
/// `role=<name> <t|f: can log in> <verifier, empty when none>`
/// `db=<name> <owner> <encoding>`
const SNAPSHOT_SQL: &str = "\
SELECT 'role=' || encode(convert_to(rolname::text, 'UTF8'), 'hex') \
|| ' ' || CASE WHEN rolcanlogin THEN 't' ELSE 'f' END \
|| ' ' || encode(convert_to(coalesce(rolpassword, ''), 'UTF8'), 'hex') \
FROM pg_authid WHERE left(rolname, 3) <> 'pg_' \
UNION ALL \
SELECT 'db=' || encode(convert_to(datname::text, 'UTF8'), 'hex') \
|| ' ' || encode(convert_to(pg_get_userbyid(datdba)::text, 'UTF8'), 'hex') \
|| ' ' || encode(convert_to(pg_encoding_to_char(encoding)::text, 'UTF8'), 'hex') \
FROM pg_database";

/// The probe of every `postgres_role` and `postgres_db` step, byte for byte the same whatever
/// the step: the runner's batch sends identical probes once and hands each step the one output,
/// so all PostgreSQL steps of a batch share one `psql` start (~0.05-0.1 s each on a small host)
/// instead of one each. Prints `pg=ok` and the snapshot, or says why it could not.
fn snapshot_probe() -> String {
    format!(
        "if ! command -v psql >/dev/null 2>&1 || ! id postgres >/dev/null 2>&1; then\n\
         echo pg=missing\n\
         elif pg_out=$(cd / && runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1 -d postgres -c {} 2>&1); then\n\
         echo pg=ok; printf '%s\\n' \"$pg_out\"\n\
         else\n\
         echo pg=down; printf '%s\\n' \"$pg_out\" | head -n 3 | sed 's/^/pg_error=/'\n\
         fi\n",
        quote(SNAPSHOT_SQL)
    )
}

/// A role as the snapshot lists it.
#[derive(Clone, PartialEq, Eq)]
struct RoleFacts {
    can_login: bool,
    /// The stored verifier (`SCRAM-SHA-256$...`, `md5...`), empty when the role has none.
    verifier: String,
}

// Hand-written so a verifier never reaches a log through `{:?}`.
impl std::fmt::Debug for RoleFacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleFacts")
            .field("can_login", &self.can_login)
            .field("verifier", &crate::redact::MASK)
            .finish()
    }
}

/// A database as the snapshot lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DbFacts {
    owner: String,
    encoding: String,
}

/// What the server holds, by name: empty when PostgreSQL is not installed yet.
#[derive(Debug, Default)]
struct Snapshot {
    roles: std::collections::BTreeMap<String, RoleFacts>,
    dbs: std::collections::BTreeMap<String, DbFacts>,
}

/// One hex-encoded UTF-8 field of a snapshot line.
fn unhex(field: &str) -> Option<String> {
    String::from_utf8(hex::decode(field).ok()?).ok()
}

/// `role=` line: name, `t`/`f`, verifier (its field empty, not absent, when there is none).
fn parse_role_line(rest: &str) -> Option<(String, RoleFacts)> {
    let mut f = rest.split(' ');
    let name = unhex(f.next()?)?;
    let can_login = match f.next()? {
        "t" => true,
        "f" => false,
        _ => return None,
    };
    let verifier = unhex(f.next()?)?;
    f.next().is_none().then_some((
        name,
        RoleFacts {
            can_login,
            verifier,
        },
    ))
}

/// `db=` line: name, owner, encoding.
fn parse_db_line(rest: &str) -> Option<(String, DbFacts)> {
    let mut f = rest.split(' ');
    let name = unhex(f.next()?)?;
    let owner = unhex(f.next()?)?;
    let encoding = unhex(f.next()?)?;
    f.next()
        .is_none()
        .then_some((name, DbFacts { owner, encoding }))
}

/// What a probe said about the server. Not installed yet: an empty snapshot. Not answering:
/// "not yet" (an earlier step may start it). A line the probe could not have printed: an error,
/// never a silently missing role (that would plan a CREATE of one that exists).
fn snapshot(probe: &ProbeOutput) -> Result<Snapshot, PlanError> {
    let mut status = None;
    let mut why = Vec::new();
    let mut snap = Snapshot::default();
    for line in probe.stdout.lines() {
        let Some((key, rest)) = line.split_once('=') else {
            continue;
        };
        match key {
            "pg" if status.is_none() => status = Some(rest),
            "pg_error" => why.push(rest),
            "role" => {
                let (name, facts) = parse_role_line(rest).ok_or_else(|| garbled(probe))?;
                snap.roles.insert(name, facts);
            }
            "db" => {
                let (name, facts) = parse_db_line(rest).ok_or_else(|| garbled(probe))?;
                snap.dbs.insert(name, facts);
            }
            // Anything else psql says on stderr beside a good answer (a warning).
            _ => {}
        }
    }
    match status {
        Some("ok") => Ok(snap),
        // Check mode on a fresh host: the package step before would install PostgreSQL.
        Some("missing") => Ok(Snapshot::default()),
        // Not yet, when an earlier step would start the server (check mode after a stopped
        // cluster unit); in a real run the runner still fails the step.
        Some("down") => Err(PlanError::not_yet(format!(
            "PostgreSQL does not answer as the postgres user: {}",
            why.join(" ")
        ))),
        _ => Err(garbled(probe)),
    }
}

/// The probe printed something it cannot print: never echoed (it may hold verifiers).
fn garbled(probe: &ProbeOutput) -> PlanError {
    PlanError(format!(
        "unexpected probe output (exit {})",
        probe.exit_status
    ))
}

fn sql_change(summary: String, sql: String) -> Change {
    Change::new(
        summary,
        Action::Shell {
            script: PSQL_STDIN.to_string(),
            stdin: Some(sql.into_bytes()),
        },
    )
}

impl Module for PostgresRole {
    fn probe(&self, _opts: ProbeOptions) -> String {
        snapshot_probe()
    }

    fn plan(&self, probe: &ProbeOutput) -> Result<Vec<Change>, PlanError> {
        let snap = snapshot(probe)?;
        let ident = quote_ident(&self.name);
        let login = if self.login { "LOGIN" } else { "NOLOGIN" };
        match (self.state, snap.roles.get(&self.name)) {
            (State::Absent, Some(_)) => Ok(vec![sql_change(
                format!("drop role {}", self.name),
                format!("DROP ROLE {ident};\n"),
            )]),
            (State::Present, None) => {
                let mut sql = format!("CREATE ROLE {ident} {login}");
                if let Some(pw) = &self.password {
                    sql += &format!(" PASSWORD {}", quote_literal(&scram_verifier(pw)));
                }
                Ok(vec![sql_change(
                    format!("create role {}", self.name),
                    sql + ";\n",
                )])
            }
            (State::Present, Some(have)) => {
                let mut what = Vec::new();
                let mut sql = format!("ALTER ROLE {ident}");
                if have.can_login != self.login {
                    what.push(if self.login {
                        "allow login"
                    } else {
                        "forbid login"
                    });
                    sql += &format!(" {login}");
                }
                if let Some(pw) = &self.password {
                    if !scram_matches(pw, &have.verifier) {
                        what.push("set password");
                        sql += &format!(" PASSWORD {}", quote_literal(&scram_verifier(pw)));
                    }
                }
                if what.is_empty() {
                    return Ok(vec![]);
                }
                Ok(vec![sql_change(
                    format!("role {}: {}", self.name, what.join(", ")),
                    sql + ";\n",
                )])
            }
            (State::Absent, None) => Ok(vec![]),
        }
    }

    /// The snapshot lists every role's password verifier.
    fn probe_is_sensitive(&self) -> bool {
        true
    }
}

/// Encoding names compare loosely: `utf-8`, `UTF8` and `utf_8` are one encoding.
fn same_encoding(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_uppercase()
    };
    norm(a) == norm(b)
}

impl Module for PostgresDb {
    fn probe(&self, _opts: ProbeOptions) -> String {
        snapshot_probe()
    }

    /// The shared snapshot lists every role's password verifier.
    fn probe_is_sensitive(&self) -> bool {
        true
    }

    fn plan(&self, probe: &ProbeOutput) -> Result<Vec<Change>, PlanError> {
        let snap = snapshot(probe)?;
        let have = snap.dbs.get(&self.name);
        let ident = quote_ident(&self.name);
        match (self.state, have) {
            (State::Absent, None) => Ok(vec![]),
            (State::Absent, Some(_)) => Ok(vec![sql_change(
                format!("drop database {}", self.name),
                format!("DROP DATABASE {ident};\n"),
            )]),
            (State::Present, None) => {
                // template0: the only template that accepts any encoding.
                let mut sql = format!("CREATE DATABASE {ident}");
                if let Some(owner) = &self.owner {
                    sql += &format!(" OWNER {}", quote_ident(owner));
                }
                sql += &format!(
                    " ENCODING {} TEMPLATE template0;\n",
                    quote_literal(&self.encoding)
                );
                Ok(vec![sql_change(
                    format!("create database {}", self.name),
                    sql,
                )])
            }
            (State::Present, Some(have)) => {
                let have_enc = &have.encoding;
                if !same_encoding(have_enc, &self.encoding) {
                    return Err(PlanError(format!(
                        "database {} exists with encoding {have_enc}, wanted {}; an encoding \
                         cannot be changed in place (dump, drop and recreate it)",
                        self.name, self.encoding
                    )));
                }
                let mut changes = vec![];
                if let Some(owner) = &self.owner {
                    if &have.owner != owner {
                        changes.push(sql_change(
                            format!("database {}: owner {owner}", self.name),
                            format!("ALTER DATABASE {ident} OWNER TO {};\n", quote_ident(owner)),
                        ));
                    }
                }
                Ok(changes)
            }
        }
    }
}

/// The SCRAM-SHA-256 verifier PostgreSQL stores for `password`, with a fresh random salt.
pub fn scram_verifier(password: &str) -> String {
    use rand::RngCore;
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    scram_verifier_with(password, &salt, SCRAM_ITERATIONS)
}

/// `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>` (RFC 5802/7677, PostgreSQL's format).
pub fn scram_verifier_with(password: &str, salt: &[u8], iterations: u32) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (stored_key, server_key) = scram_keys(password, salt, iterations);
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        b64.encode(salt),
        b64.encode(stored_key),
        b64.encode(server_key)
    )
}

fn scram_keys(password: &str, salt: &[u8], iterations: u32) -> ([u8; 32], [u8; 32]) {
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut salted);
    let hmac = |msg: &[u8]| -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&salted).expect("HMAC takes any key length");
        mac.update(msg);
        mac.finalize().into_bytes().into()
    };
    let client_key = hmac(b"Client Key");
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    (stored_key, hmac(b"Server Key"))
}

/// The parts of a stored `SCRAM-SHA-256$iter:salt$StoredKey:ServerKey` verifier.
struct StoredVerifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl StoredVerifier {
    fn parse(stored: &str) -> Option<Self> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let rest = stored.strip_prefix("SCRAM-SHA-256$")?;
        let (iter_salt, keys) = rest.split_once('$')?;
        let (iter, salt) = iter_salt.split_once(':')?;
        let (stored_key, server_key) = keys.split_once(':')?;
        Some(StoredVerifier {
            iterations: iter.parse().ok().filter(|i| *i > 0)?,
            salt: b64.decode(salt).ok()?,
            stored_key: b64.decode(stored_key).ok()?,
            server_key: b64.decode(server_key).ok()?,
        })
    }
}

/// True when `stored` is a SCRAM-SHA-256 verifier of `password` (md5 or empty: false).
pub fn scram_matches(password: &str, stored: &str) -> bool {
    match StoredVerifier::parse(stored) {
        Some(v) => {
            let (stored_key, server_key) = scram_keys(password, &v.salt, v.iterations);
            stored_key[..] == v.stored_key[..] && server_key[..] == v.server_key[..]
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(toml_args: &str) -> Result<PostgresRole, InputError> {
        crate::modules::testing::build_simple(toml_args, PostgresRole::from_args)
    }

    fn db(toml_args: &str) -> Result<PostgresDb, InputError> {
        crate::modules::testing::build_simple(toml_args, PostgresDb::from_args)
    }

    fn out(stdout: &str) -> ProbeOutput {
        ProbeOutput {
            exit_status: 0,
            stdout: stdout.to_string(),
        }
    }

    /// Made by PostgreSQL 15 itself: `CREATE ROLE r PASSWORD 'correct horse battery staple'`
    /// with password_encryption = scram-sha-256, then `SELECT rolpassword FROM pg_authid`.
    const SERVER_VERIFIER: &str = "SCRAM-SHA-256$4096:cFLcXU5xnFdF8zH9PlY9pg==$YRqkb5yJumT9Y3Pok22gVbW3bq9C6ryabVCCpXOo3ac=:oUdLApGemYXUQFyQTiPIA04swjgqWMvhQ1hSovHOvYc=";
    const SERVER_PASSWORD: &str = "correct horse battery staple";

    fn stdin_of(change: &Change) -> String {
        match &change.action {
            Action::Shell {
                stdin: Some(bytes), ..
            } => String::from_utf8(bytes.clone()).unwrap(),
            other => panic!("expected Shell with stdin, got {other:?}"),
        }
    }

    use crate::modules::testing::shell_script as script_of;

    #[test]
    fn verifier_matches_the_one_postgresql_made() {
        use base64::Engine;
        assert!(scram_matches(SERVER_PASSWORD, SERVER_VERIFIER));
        assert!(!scram_matches(
            "correct horse battery stapler",
            SERVER_VERIFIER
        ));
        let salt = base64::engine::general_purpose::STANDARD
            .decode("cFLcXU5xnFdF8zH9PlY9pg==")
            .unwrap();
        assert_eq!(
            scram_verifier_with(SERVER_PASSWORD, &salt, 4096),
            SERVER_VERIFIER
        );
    }

    #[test]
    fn fresh_verifiers_use_random_salts_and_verify() {
        let a = scram_verifier("s3cret-pass");
        let b = scram_verifier("s3cret-pass");
        assert_ne!(a, b);
        assert!(a.starts_with("SCRAM-SHA-256$4096:"));
        assert!(scram_matches("s3cret-pass", &a) && scram_matches("s3cret-pass", &b));
        assert!(!scram_matches("s3cret-pasS", &a));
    }

    #[test]
    fn md5_empty_or_garbage_stored_passwords_never_match() {
        for stored in [
            "",
            "md5a3556571e93b0d20722ba62be61e8c2d",
            "SCRAM-SHA-256$0:AA==$AA==:AA==",
            "SCRAM-SHA-256$4096:!!$x:y",
        ] {
            assert!(!scram_matches("pw", stored), "{stored}");
        }
    }

    #[test]
    fn sql_quoting() {
        assert_eq!(quote_ident("crypto_user"), "\"crypto_user\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(r"a\b'c"), r"E'a\\b''c'");
    }

    #[test]
    fn sql_quoting_survives_a_real_server() {
        // Round trip through the real server when one is reachable (see the ignored test).
        if std::env::var_os("BOOTSTRAP_PG_TESTS").is_none() {
            return;
        }
        for value in [
            "it's",
            r"back\slash",
            "\"dq\"",
            "$$dollar$$",
            "semi;colon --x",
        ] {
            let sql = format!("SELECT {} = $x${value}$x$;", quote_literal(value));
            assert_eq!(psql(&sql, None).trim(), "t", "{value}");
        }
    }

    #[test]
    fn bad_arguments_are_input_errors() {
        let err = role("name = \"x\"\npasswd = \"y\"").unwrap_err();
        assert_eq!(err.line, Some(7));
        assert!(err.message.contains("passwd"), "{}", err.message);
        assert!(role("name = \"\"").unwrap_err().hint.is_some());
        assert!(role("name = \"x\"\npassword = \"pässword\"").is_err());
        assert!(role("name = \"x\"\nstate = \"gone\"").is_err());
        assert!(db("name = \"d\"\nencoding = \"UTF8; DROP\"").is_err());
        assert!(db(&format!("name = \"{}\"", "a".repeat(64))).is_err());
        let reserved = role("name = \"pg_monitor\"").unwrap_err();
        assert!(reserved.message.contains("pg_"), "{}", reserved.message);
        assert!(
            db("name = \"pg_data\"").is_ok(),
            "only role names are reserved"
        );
    }

    /// A `role=` line of the snapshot, as the server prints it (fields hex of their UTF-8).
    fn role_line(name: &str, can_login: bool, verifier: &str) -> String {
        let login = if can_login { "t" } else { "f" };
        format!(
            "role={} {login} {}\n",
            hex::encode(name),
            hex::encode(verifier)
        )
    }

    /// A `db=` line of the snapshot.
    fn db_line(name: &str, owner: &str, encoding: &str) -> String {
        format!(
            "db={} {} {}\n",
            hex::encode(name),
            hex::encode(owner),
            hex::encode(encoding)
        )
    }

    /// `pg=ok` and the snapshot made of these lines.
    fn ok(lines: &[String]) -> ProbeOutput {
        out(&format!("pg=ok\n{}", lines.concat()))
    }

    #[test]
    fn role_and_db_probes_are_byte_identical() {
        let probes = [
            role("name = \"o'brien\"")
                .unwrap()
                .probe(ProbeOptions::default()),
            role("name = \"crypto_user\"\npassword = \"p4ss-word\"\nlogin = false")
                .unwrap()
                .probe(ProbeOptions::default()),
            db("name = \"crypto_exchange\"\nowner = \"crypto_user\"")
                .unwrap()
                .probe(ProbeOptions { want_content: true }),
            db("name = \"x\"\nstate = \"absent\"")
                .unwrap()
                .probe(ProbeOptions::default()),
        ];
        assert!(probes.iter().all(|p| p == &probes[0]), "{probes:#?}");
        // So the runner's batch sends it once for all of them.
        let mut batch = crate::runner::batch::Batch::new();
        let parts: Vec<usize> = probes.iter().map(|p| batch.push(p)).collect();
        assert_eq!(parts, vec![0; 4]);
        assert!(!probes[0].contains("o'brien") && !probes[0].contains("crypto"));
        // It carries every role's verifier, for both kinds of step.
        assert!(role("name = \"x\"").unwrap().probe_is_sensitive());
        assert!(db("name = \"x\"").unwrap().probe_is_sensitive());
        assert!(
            !format!("{:?}", role("name=\"x\"\npassword=\"hunter22\"").unwrap())
                .contains("hunter22")
        );
    }

    #[test]
    fn role_plans_from_probe_output() {
        let r = role("name = \"crypto_user\"\npassword = \"p4ss-word\"").unwrap();
        let absent = r.plan(&out("pg=ok\n")).unwrap();
        assert_eq!(absent.len(), 1);
        assert_eq!(absent[0].summary, "create role crypto_user");
        let sql = stdin_of(&absent[0]);
        assert!(sql.starts_with("CREATE ROLE \"crypto_user\" LOGIN PASSWORD 'SCRAM-SHA-256$4096:"));
        // The verifier sent must verify the wanted password.
        let verifier = sql.split('\'').nth(1).unwrap();
        assert!(scram_matches("p4ss-word", verifier));

        let good = scram_verifier("p4ss-word");
        let converged = ok(&[role_line("crypto_user", true, &good)]);
        assert_eq!(r.plan(&converged).unwrap(), vec![]);

        let other = scram_verifier("old");
        let changed = r
            .plan(&ok(&[role_line("crypto_user", false, &other)]))
            .unwrap();
        assert_eq!(changed.len(), 1);
        assert_eq!(
            changed[0].summary,
            "role crypto_user: allow login, set password"
        );
        assert!(stdin_of(&changed[0]).starts_with("ALTER ROLE \"crypto_user\" LOGIN PASSWORD '"));

        let md5 = r
            .plan(&ok(&[role_line("crypto_user", true, "md5abc")]))
            .unwrap();
        assert_eq!(md5[0].summary, "role crypto_user: set password");
        let none = r.plan(&ok(&[role_line("crypto_user", true, "")])).unwrap();
        assert_eq!(none[0].summary, "role crypto_user: set password");
    }

    /// Every step gets the whole snapshot: each must read its own entry and no other.
    #[test]
    fn plans_pick_their_own_entry_from_a_snapshot_of_several() {
        let app_pw = scram_verifier("app-Pass");
        let snap = ok(&[
            role_line("postgres", true, ""),
            role_line("reporting", false, &scram_verifier("other-Pass")),
            role_line("crypto_user", true, &app_pw),
            role_line("crypto", true, ""),
            db_line("postgres", "postgres", "UTF8"),
            db_line("template1", "postgres", "UTF8"),
            db_line("crypto_exchange", "crypto_user", "UTF8"),
            db_line("reports", "reporting", "LATIN1"),
        ]);
        let app = role("name = \"crypto_user\"\npassword = \"app-Pass\"").unwrap();
        assert_eq!(app.plan(&snap).unwrap(), vec![]);
        // The same password on another role is that role's business: its own verifier differs.
        let reporting = role("name = \"reporting\"\npassword = \"app-Pass\"").unwrap();
        assert_eq!(
            reporting.plan(&snap).unwrap()[0].summary,
            "role reporting: allow login, set password"
        );
        // A prefix of an existing name is another role.
        let prefix = role("name = \"crypto_u\"").unwrap();
        assert_eq!(
            prefix.plan(&snap).unwrap()[0].summary,
            "create role crypto_u"
        );
        let gone = role("name = \"crypto\"\nstate = \"absent\"").unwrap();
        assert_eq!(
            stdin_of(&gone.plan(&snap).unwrap()[0]),
            "DROP ROLE \"crypto\";\n"
        );

        let app_db = db("name = \"crypto_exchange\"\nowner = \"crypto_user\"").unwrap();
        assert_eq!(app_db.plan(&snap).unwrap(), vec![]);
        let reports =
            db("name = \"reports\"\nowner = \"crypto_user\"\nencoding = \"LATIN1\"").unwrap();
        assert_eq!(
            reports.plan(&snap).unwrap()[0].summary,
            "database reports: owner crypto_user"
        );
        // The encoding compared is this database's, not the last one listed.
        let utf8_reports = db("name = \"reports\"").unwrap();
        assert!(utf8_reports.plan(&snap).unwrap_err().0.contains("LATIN1"));
        let new_db = db("name = \"crypto\"\nowner = \"crypto\"").unwrap();
        assert_eq!(
            new_db.plan(&snap).unwrap()[0].summary,
            "create database crypto"
        );
    }

    /// Names come back hex-encoded: a role made by hand whose name holds a newline, `=`, a
    /// space or quotes is read as exactly that name and cannot pose as another line.
    #[test]
    fn names_with_odd_characters_are_read_exactly() {
        let forged = "x\nrole=63727970746f5f75736572 t \ndb=";
        let snap = ok(&[
            role_line(forged, true, ""),
            role_line("o'brien \"=\" ok", false, &scram_verifier("x")),
            db_line("crypto exchange=1", "o'brien \"=\" ok", "UTF8"),
        ]);
        let parsed = snapshot(&snap).unwrap();
        assert!(!format!("{parsed:?}").contains("SCRAM"));
        assert_eq!(
            parsed.roles.keys().collect::<Vec<_>>(),
            vec![&"o'brien \"=\" ok".to_string(), &forged.to_string()]
        );
        // The forged line inside the name did not create crypto_user.
        let app = role("name = \"crypto_user\"").unwrap();
        assert_eq!(
            app.plan(&snap).unwrap()[0].summary,
            "create role crypto_user"
        );
        let odd = role("name = \"o'brien \\\"=\\\" ok\"\nlogin = false").unwrap();
        assert_eq!(odd.plan(&snap).unwrap(), vec![]);
        let odd_db = db("name = \"crypto exchange=1\"\nowner = \"o'brien \\\"=\\\" ok\"").unwrap();
        assert_eq!(odd_db.plan(&snap).unwrap(), vec![]);
    }

    /// A role line the probe cannot have printed fails the plan: read as "absent", it would
    /// plan a CREATE of a role that exists.
    #[test]
    fn a_garbled_snapshot_line_is_an_error_not_a_missing_role() {
        let r = role("name = \"crypto_user\"").unwrap();
        for line in [
            "role=crypto_user t \n",
            "role=63727970746f5f75736572 yes \n",
            "role=63727970746f5f75736572 t\n",
            "role=63727970746f5f75736572 t  extra\n",
            "db=zz 00 00\n",
        ] {
            let err = r.plan(&out(&format!("pg=ok\n{line}"))).unwrap_err();
            assert!(!err.is_not_yet(), "{line}");
            assert!(err.0.contains("unexpected probe output"), "{line}: {err}");
        }
        // What psql may print on stderr beside a good answer is not a snapshot line.
        let warned = format!(
            "pg=ok\nWARNING:  collation version mismatch\n{}",
            role_line("crypto_user", true, "")
        );
        assert_eq!(r.plan(&out(&warned)).unwrap(), vec![]);
    }

    #[test]
    fn the_password_is_never_in_a_script_or_summary() {
        let r = role("name = \"crypto_user\"\npassword = \"Sup3r-Secret-Pw\"").unwrap();
        for probe in [
            out("pg=ok\n"),
            out("pg=missing\n"),
            ok(&[role_line("crypto_user", true, "md5x")]),
        ] {
            for change in r.plan(&probe).unwrap() {
                assert!(!script_of(&change).contains("Sup3r-Secret-Pw"));
                assert!(!change.summary.contains("Sup3r-Secret-Pw"));
                assert!(!stdin_of(&change).contains("Sup3r-Secret-Pw"));
            }
        }
        assert!(!r.probe(ProbeOptions::default()).contains("Sup3r-Secret-Pw"));
    }

    #[test]
    fn role_absent_and_server_states() {
        let r = role("name = \"old\"\nstate = \"absent\"").unwrap();
        assert_eq!(r.plan(&out("pg=ok\n")).unwrap(), vec![]);
        let drop = r.plan(&ok(&[role_line("old", true, "")])).unwrap();
        assert_eq!(stdin_of(&drop[0]), "DROP ROLE \"old\";\n");
        // Not installed yet (check mode on a fresh host): plan as if empty.
        let fresh = role("name = \"u\"")
            .unwrap()
            .plan(&out("pg=missing\n"))
            .unwrap();
        assert_eq!(stdin_of(&fresh[0]), "CREATE ROLE \"u\" LOGIN;\n");
        for m in [
            Box::new(role("name = \"u\"").unwrap()) as Box<dyn Module>,
            Box::new(db("name = \"d\"").unwrap()),
        ] {
            let down = m
                .plan(&out("pg=down\npg_error=psql: error: connection refused\n"))
                .unwrap_err();
            assert!(down.is_not_yet());
            assert!(down.0.contains("connection refused"), "{}", down.0);
        }
    }

    #[test]
    fn db_plans_from_probe_output() {
        let d = db("name = \"crypto_exchange\"\nowner = \"crypto_user\"").unwrap();
        let create = d.plan(&out("pg=ok\n")).unwrap();
        assert_eq!(
            stdin_of(&create[0]),
            "CREATE DATABASE \"crypto_exchange\" OWNER \"crypto_user\" ENCODING 'UTF8' TEMPLATE template0;\n"
        );
        let same = ok(&[db_line("crypto_exchange", "crypto_user", "UTF8")]);
        assert_eq!(d.plan(&same).unwrap(), vec![]);
        let owner = d
            .plan(&ok(&[db_line("crypto_exchange", "postgres", "UTF8")]))
            .unwrap();
        assert_eq!(
            owner[0].summary,
            "database crypto_exchange: owner crypto_user"
        );
        assert_eq!(
            stdin_of(&owner[0]),
            "ALTER DATABASE \"crypto_exchange\" OWNER TO \"crypto_user\";\n"
        );
        let err = d
            .plan(&ok(&[db_line("crypto_exchange", "crypto_user", "LATIN1")]))
            .unwrap_err();
        assert!(err.0.contains("LATIN1"));
        let utf8_alias = db("name = \"x\"\nencoding = \"utf-8\"").unwrap();
        assert_eq!(
            utf8_alias
                .plan(&ok(&[db_line("x", "postgres", "UTF8")]))
                .unwrap(),
            vec![]
        );
        let gone = db("name = \"x\"\nstate = \"absent\"").unwrap();
        assert_eq!(gone.plan(&out("pg=ok\n")).unwrap(), vec![]);
        assert_eq!(
            stdin_of(&gone.plan(&ok(&[db_line("x", "postgres", "UTF8")])).unwrap()[0]),
            "DROP DATABASE \"x\";\n"
        );
    }

    /// Runs SQL through the same command line the module uses; panics on failure.
    fn psql(sql: &str, script: Option<&str>) -> String {
        let script = script.unwrap_or(
            "cd / && runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1 -d postgres -f -",
        );
        let out = crate::testing::output_with_stdin(
            std::process::Command::new("sh").arg("-c").arg(script),
            sql.as_bytes(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The module's probe run in a local `sh` (shared harness).
    fn run_probe(m: &dyn Module) -> ProbeOutput {
        crate::modules::file::testing::run_probe(&m.probe(ProbeOptions::default()))
    }

    fn apply(changes: &[Change]) {
        for c in changes {
            psql(&stdin_of(c), Some(script_of(c)));
        }
    }

    fn login(role: &str, password: &str, db: &str) -> bool {
        std::process::Command::new("psql")
            .args([
                "-X",
                "-h",
                "127.0.0.1",
                "-U",
                role,
                "-d",
                db,
                "-c",
                "SELECT 1",
            ])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
            .status
            .success()
    }

    /// Needs a local PostgreSQL with scram-sha-256 on 127.0.0.1 and root (runuser):
    /// `BOOTSTRAP_PG_TESTS=1 cargo test --lib postgres -- --ignored`.
    #[test]
    #[ignore]
    fn real_server_role_and_db_converge_and_login_works() {
        let name = "bootstrap_test_role";
        let dbname = "bootstrap_test_db";
        psql(
            &format!("DROP DATABASE IF EXISTS {dbname};\nDROP ROLE IF EXISTS {name};\n"),
            None,
        );
        let r = role(&format!("name = \"{name}\"\npassword = \"first-Pass'1\"")).unwrap();
        let d = db(&format!("name = \"{dbname}\"\nowner = \"{name}\"")).unwrap();
        for m in [&r as &dyn Module, &d] {
            let changes = m.plan(&run_probe(m)).unwrap();
            assert_eq!(changes.len(), 1);
            apply(&changes);
        }
        // One snapshot, both steps: converged.
        let output = run_probe(&r);
        assert_eq!(r.plan(&output).unwrap(), vec![], "role converged");
        assert_eq!(d.plan(&output).unwrap(), vec![], "database converged");
        assert!(login(name, "first-Pass'1", dbname));
        assert!(!login(name, "wrong-pass", dbname));

        let r2 = role(&format!("name = \"{name}\"\npassword = \"second-Pass\"")).unwrap();
        let changes = r2.plan(&run_probe(&r2)).unwrap();
        assert_eq!(changes[0].summary, format!("role {name}: set password"));
        apply(&changes);
        assert!(login(name, "second-Pass", dbname));
        assert!(!login(name, "first-Pass'1", dbname));
        assert_eq!(r2.plan(&run_probe(&r2)).unwrap(), vec![]);

        let gone_db = db(&format!("name = \"{dbname}\"\nstate = \"absent\"")).unwrap();
        apply(&gone_db.plan(&run_probe(&gone_db)).unwrap());
        let gone = role(&format!("name = \"{name}\"\nstate = \"absent\"")).unwrap();
        apply(&gone.plan(&run_probe(&gone)).unwrap());
        assert_eq!(gone.plan(&run_probe(&gone)).unwrap(), vec![]);
    }

    /// One snapshot, taken by the real server, serves every step: odd names made by hand (a
    /// newline, `=`, quotes, spaces) come back exactly, the built-in `pg_*` roles do not, and
    /// a role step and a database step plan from the one output.
    /// `BOOTSTRAP_PG_TESTS=1 cargo test --lib postgres -- --ignored` (as above).
    #[test]
    #[ignore]
    fn real_server_snapshot_serves_every_step_and_reads_odd_names_exactly() {
        let odd_role = "bs odd\nrole=72 t \"q\" 's";
        let odd_db = "bs odd db=1\n\"q\"";
        let plain_role = "bs_plain \"q\"=x 's";
        let cleanup = format!(
            "DROP DATABASE IF EXISTS {db};\nDROP ROLE IF EXISTS {r};\nDROP ROLE IF EXISTS {p};\n",
            db = quote_ident(odd_db),
            r = quote_ident(odd_role),
            p = quote_ident(plain_role)
        );
        psql(&cleanup, None);
        psql(
            &format!(
                "CREATE ROLE {r} NOLOGIN;\nCREATE DATABASE {db} OWNER {r};\n",
                r = quote_ident(odd_role),
                db = quote_ident(odd_db)
            ),
            None,
        );
        let builtin: u32 = psql(
            "SELECT count(*) FROM pg_authid WHERE rolname LIKE 'pg\\_%';",
            None,
        )
        .trim()
        .parse()
        .unwrap();
        assert!(builtin > 0, "the server has built-in roles to leave out");

        let plain = role(&format!(
            "name = {}\npassword = \"plain-Pass\"",
            toml::Value::String(plain_role.into())
        ))
        .unwrap();
        let output = run_probe(&plain);
        let snap = snapshot(&output).unwrap();
        assert!(snap.roles.keys().all(|n| !n.starts_with("pg_")));
        assert!(snap.roles.contains_key("postgres"));
        assert_eq!(
            snap.roles.get(odd_role),
            Some(&RoleFacts {
                can_login: false,
                verifier: String::new()
            })
        );
        assert_eq!(
            snap.dbs.get(odd_db).map(|d| d.owner.as_str()),
            Some(odd_role)
        );
        // A database step whose owner is the odd role: converged, from the same output.
        let owned = db(&format!(
            "name = \"bs_plain_db\"\nowner = {}",
            toml::Value::String(plain_role.into())
        ))
        .unwrap();
        assert_eq!(
            owned.probe(ProbeOptions::default()),
            plain.probe(ProbeOptions::default())
        );
        assert_eq!(
            owned.plan(&output).unwrap()[0].summary,
            "create database bs_plain_db"
        );

        let changes = plain.plan(&output).unwrap();
        assert_eq!(changes[0].summary, format!("create role {plain_role}"));
        apply(&changes);
        assert_eq!(plain.plan(&run_probe(&plain)).unwrap(), vec![], "converged");
        psql(&cleanup, None);
    }

    #[test]
    fn stopped_server_was_a_hard_planning_error_in_check_mode() {
        let probe = ProbeOutput {
            exit_status: 0,
            stdout: "pg=down\npg_error=connection to server failed\n".into(),
        };
        let err = snapshot(&probe).unwrap_err();
        assert!(err.is_not_yet(), "{err}");
        assert!(err.to_string().contains("connection to server failed"));
        let garbled = ProbeOutput {
            exit_status: 2,
            stdout: "nonsense\n".into(),
        };
        assert!(!snapshot(&garbled).unwrap_err().is_not_yet());
    }
}
