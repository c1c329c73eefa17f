//! PostgreSQL roles and databases on the host, managed through `psql` as the `postgres` user.
//!
//! `postgres_role` arguments:
//! - `name` (required): role name.
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

/// Read-only probe: runs one query printing `key=value` lines, or says why it could not.
fn probe_query(sql: &str) -> String {
    format!(
        "if ! command -v psql >/dev/null 2>&1 || ! id postgres >/dev/null 2>&1; then\n\
         echo pg=missing\n\
         elif pg_out=$(cd / && runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1 -d postgres -c {} 2>&1); then\n\
         echo pg=ok; printf '%s\\n' \"$pg_out\"\n\
         else\n\
         echo pg=down; printf '%s\\n' \"$pg_out\" | head -n 3 | sed 's/^/pg_error=/'\n\
         fi\n",
        quote(sql)
    )
}

/// What a probe said about the server: `None` when PostgreSQL is not installed yet.
fn probe_facts(
    probe: &ProbeOutput,
) -> Result<Option<std::collections::BTreeMap<String, String>>, PlanError> {
    let kv = probe_util::key_values(&probe.stdout);
    match kv.get("pg").map(String::as_str) {
        Some("ok") => Ok(Some(kv)),
        // Check mode on a fresh host: the package step before would install PostgreSQL.
        Some("missing") => Ok(None),
        Some("down") => {
            let why: Vec<&str> = probe
                .stdout
                .lines()
                .filter_map(|l| l.strip_prefix("pg_error="))
                .collect();
            // Not yet, when an earlier step would start the server (check mode after a
            // stopped cluster unit); in a real run the runner still fails the step.
            Err(PlanError::not_yet(format!(
                "PostgreSQL does not answer as the postgres user: {}",
                why.join(" ")
            )))
        }
        _ => Err(PlanError(format!(
            "unexpected probe output (exit {})",
            probe.exit_status
        ))),
    }
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
        let sql = format!(
            "SELECT format(E'role=present\\ncanlogin=%s\\nrolpassword=%s', rolcanlogin, \
             coalesce(rolpassword, '')) FROM pg_authid WHERE rolname = {}",
            quote_literal(&self.name)
        );
        probe_query(&sql)
    }

    fn plan(&self, probe: &ProbeOutput) -> Result<Vec<Change>, PlanError> {
        let facts = probe_facts(probe)?.unwrap_or_default();
        let exists = facts.get("role").map(String::as_str) == Some("present");
        let ident = quote_ident(&self.name);
        let login = if self.login { "LOGIN" } else { "NOLOGIN" };
        match (self.state, exists) {
            (State::Absent, true) => Ok(vec![sql_change(
                format!("drop role {}", self.name),
                format!("DROP ROLE {ident};\n"),
            )]),
            (State::Present, false) => {
                let mut sql = format!("CREATE ROLE {ident} {login}");
                if let Some(pw) = &self.password {
                    sql += &format!(" PASSWORD {}", quote_literal(&scram_verifier(pw)));
                }
                Ok(vec![sql_change(
                    format!("create role {}", self.name),
                    sql + ";\n",
                )])
            }
            (State::Present, true) => {
                let mut what = Vec::new();
                let mut sql = format!("ALTER ROLE {ident}");
                let can_login = facts.get("canlogin").map(String::as_str) == Some("t");
                if can_login != self.login {
                    what.push(if self.login {
                        "allow login"
                    } else {
                        "forbid login"
                    });
                    sql += &format!(" {login}");
                }
                if let Some(pw) = &self.password {
                    let stored = facts.get("rolpassword").map(String::as_str).unwrap_or("");
                    if !scram_matches(pw, stored) {
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
            (State::Absent, false) => Ok(vec![]),
        }
    }

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
        let sql = format!(
            "SELECT format(E'db=present\\nowner=%s\\nencoding=%s', pg_get_userbyid(datdba), \
             pg_encoding_to_char(encoding)) FROM pg_database WHERE datname = {}",
            quote_literal(&self.name)
        );
        probe_query(&sql)
    }

    fn plan(&self, probe: &ProbeOutput) -> Result<Vec<Change>, PlanError> {
        let facts = probe_facts(probe)?.unwrap_or_default();
        let exists = facts.get("db").map(String::as_str) == Some("present");
        let ident = quote_ident(&self.name);
        match (self.state, exists) {
            (State::Absent, false) => Ok(vec![]),
            (State::Absent, true) => Ok(vec![sql_change(
                format!("drop database {}", self.name),
                format!("DROP DATABASE {ident};\n"),
            )]),
            (State::Present, false) => {
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
            (State::Present, true) => {
                let have_enc = facts.get("encoding").map(String::as_str).unwrap_or("");
                if !same_encoding(have_enc, &self.encoding) {
                    return Err(PlanError(format!(
                        "database {} exists with encoding {have_enc}, wanted {}; an encoding \
                         cannot be changed in place (dump, drop and recreate it)",
                        self.name, self.encoding
                    )));
                }
                let mut changes = vec![];
                if let Some(owner) = &self.owner {
                    if facts.get("owner") != Some(owner) {
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
    }

    #[test]
    fn probe_quotes_the_name() {
        let r = role("name = \"o'brien\"").unwrap();
        let probe = r.probe(ProbeOptions::default());
        assert!(
            probe.contains("rolname = '\\''o'\\'''\\''brien'\\''"),
            "{probe}"
        );
        assert!(r.probe_is_sensitive());
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
        let converged = format!("pg=ok\nrole=present\ncanlogin=t\nrolpassword={good}\n");
        assert_eq!(r.plan(&out(&converged)).unwrap(), vec![]);

        let other = scram_verifier("old");
        let changed = r
            .plan(&out(&format!(
                "pg=ok\nrole=present\ncanlogin=f\nrolpassword={other}\n"
            )))
            .unwrap();
        assert_eq!(changed.len(), 1);
        assert_eq!(
            changed[0].summary,
            "role crypto_user: allow login, set password"
        );
        assert!(stdin_of(&changed[0]).starts_with("ALTER ROLE \"crypto_user\" LOGIN PASSWORD '"));

        let md5 = r
            .plan(&out(
                "pg=ok\nrole=present\ncanlogin=t\nrolpassword=md5abc\n",
            ))
            .unwrap();
        assert_eq!(md5[0].summary, "role crypto_user: set password");
    }

    #[test]
    fn the_password_is_never_in_a_script_or_summary() {
        let r = role("name = \"crypto_user\"\npassword = \"Sup3r-Secret-Pw\"").unwrap();
        for probe in [
            "pg=ok\n",
            "pg=missing\n",
            "pg=ok\nrole=present\ncanlogin=t\nrolpassword=md5x\n",
        ] {
            for change in r.plan(&out(probe)).unwrap() {
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
        let drop = r
            .plan(&out("pg=ok\nrole=present\ncanlogin=t\nrolpassword=\n"))
            .unwrap();
        assert_eq!(stdin_of(&drop[0]), "DROP ROLE \"old\";\n");
        // Not installed yet (check mode on a fresh host): plan as if empty.
        let fresh = role("name = \"u\"")
            .unwrap()
            .plan(&out("pg=missing\n"))
            .unwrap();
        assert_eq!(stdin_of(&fresh[0]), "CREATE ROLE \"u\" LOGIN;\n");
        let down = role("name = \"u\"")
            .unwrap()
            .plan(&out("pg=down\npg_error=psql: error: connection refused\n"))
            .unwrap_err();
        assert!(down.0.contains("connection refused"), "{}", down.0);
    }

    #[test]
    fn db_plans_from_probe_output() {
        let d = db("name = \"crypto_exchange\"\nowner = \"crypto_user\"").unwrap();
        let create = d.plan(&out("pg=ok\n")).unwrap();
        assert_eq!(
            stdin_of(&create[0]),
            "CREATE DATABASE \"crypto_exchange\" OWNER \"crypto_user\" ENCODING 'UTF8' TEMPLATE template0;\n"
        );
        let same = "pg=ok\ndb=present\nowner=crypto_user\nencoding=UTF8\n";
        assert_eq!(d.plan(&out(same)).unwrap(), vec![]);
        let owner = d
            .plan(&out("pg=ok\ndb=present\nowner=postgres\nencoding=UTF8\n"))
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
            .plan(&out(
                "pg=ok\ndb=present\nowner=crypto_user\nencoding=LATIN1\n",
            ))
            .unwrap_err();
        assert!(err.0.contains("LATIN1"));
        let utf8_alias = db("name = \"x\"\nencoding = \"utf-8\"").unwrap();
        assert_eq!(
            utf8_alias
                .plan(&out("pg=ok\ndb=present\nowner=postgres\nencoding=UTF8\n"))
                .unwrap(),
            vec![]
        );
        let gone = db("name = \"x\"\nstate = \"absent\"").unwrap();
        assert_eq!(gone.plan(&out("pg=ok\n")).unwrap(), vec![]);
        assert_eq!(
            stdin_of(&gone.plan(&out(same)).unwrap()[0]),
            "DROP DATABASE \"x\";\n"
        );
    }

    /// Runs SQL through the same command line the module uses; panics on failure.
    fn psql(sql: &str, script: Option<&str>) -> String {
        use std::io::Write;
        let script = script.unwrap_or(
            "cd / && runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1 -d postgres -f -",
        );
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(sql.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
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
            assert_eq!(m.plan(&run_probe(m)).unwrap(), vec![], "converged");
        }
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

    #[test]
    fn stopped_server_was_a_hard_planning_error_in_check_mode() {
        let probe = ProbeOutput {
            exit_status: 0,
            stdout: "pg=down\npg_error=connection to server failed\n".into(),
        };
        let err = probe_facts(&probe).unwrap_err();
        assert!(err.is_not_yet(), "{err}");
        assert!(err.to_string().contains("connection to server failed"));
        let garbled = ProbeOutput {
            exit_status: 2,
            stdout: "nonsense\n".into(),
        };
        assert!(!probe_facts(&garbled).unwrap_err().is_not_yet());
    }
}
