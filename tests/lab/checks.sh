# shellcheck shell=bash
# Checks shared by the container lab and the Vagrant lab. Sourced, never run.
#
# The sourcing script defines how to reach the machines:
#   on_host NAME 'shell command'   runs the command on machine NAME as the ssh user (sudo inside)
#   on_outsider CMD [ARGS...]      runs a command from a network position that is no lab machine
#   host_addr NAME                 prints the address of machine NAME
# and sets BOOTSTRAP_BIN, INVENTORY, and LAB_LOGS (a directory for the binary's output).
#
# Role issues append check_* functions here and call them from scenario.sh.

CHECKS_PASSED=0
CHECKS_FAILED=0
LAB_HOSTS=(master worker elk)

# check "what is true" CMD [ARGS...]: one PASS/FAIL line; the command's output only on failure.
check() {
  local desc="$1" out
  shift
  if out="$("$@" 2>&1)"; then
    CHECKS_PASSED=$((CHECKS_PASSED + 1))
    printf 'PASS  %s\n' "$desc"
  else
    CHECKS_FAILED=$((CHECKS_FAILED + 1))
    printf 'FAIL  %s\n' "$desc"
    [[ -n $out ]] && printf '%s\n' "$out" | tail -20 | sed 's/^/      /'
  fi
  return 0
}

checks_summary() {
  printf '%d passed, %d failed\n' "$CHECKS_PASSED" "$CHECKS_FAILED"
  ((CHECKS_FAILED == 0))
}

# ---------------------------------------------------------------- running the binary

# bootstrap_json LABEL ARGS...: runs `bootstrap -i INVENTORY --json ARGS`, keeps its JSON Lines in
# LAB_LOGS/LABEL.jsonl and its stderr in LAB_LOGS/LABEL.err; returns the binary's exit code.
bootstrap_json() {
  local label="$1" rc=0
  shift
  "$BOOTSTRAP_BIN" -i "$INVENTORY" --json "$@" >"$LAB_LOGS/$label.jsonl" 2>"$LAB_LOGS/$label.err" || rc=$?
  printf '      %s: exit %d, %s\n' "$label" "$rc" "$(summary_line "$label")"
  return "$rc"
}

summary_line() {
  jq -rc 'select(.type == "summary") | "ok=\(.ok) changed=\(.changed) failed=\(.failed) skipped=\(.skipped) unreachable=\(.unreachable)"' \
    "$LAB_LOGS/$1.jsonl" 2>/dev/null | tail -1
}

# summary_field LABEL FIELD: a number from the run's final summary object.
summary_field() {
  jq -r --arg f "$2" 'select(.type == "summary") | .[$f]' "$LAB_LOGS/$1.jsonl" | tail -1
}

summary_is() {
  local label="$1" field="$2" want="$3" got
  got="$(summary_field "$label" "$field")"
  [[ $got == "$want" ]] || { echo "summary.$field is '$got', expected $want"; return 1; }
}

# The (host, step) pairs that reported a change, one "host<TAB>step" a line, sorted.
changed_steps() {
  # Handlers are listed as "handler: NAME": a handler that runs is a change too.
  jq -r 'select(.type == "step" and .changed == true) | "\(.host)\t\(if .handler then "handler: " else "" end)\(.step)"' "$LAB_LOGS/$1.jsonl" | sort
}

# step_changed LABEL HOST STEP: that step reported a change (or would, in check mode).
step_changed() {
  changed_steps "$1" | grep -qxF "$(printf '%s\t%s' "$2" "$3")" || { echo "no change of '$3' on $2:"; changed_steps "$1"; return 1; }
}

changed_steps_are() {
  local label="$1" want="$2" got
  got="$(changed_steps "$label")"
  [[ $got == "$want" ]] || { printf 'changed steps:\n%s\nexpected:\n%s\n' "$got" "$want"; return 1; }
}

exit_code_is() {
  local want="$1" rc=0
  shift
  "$@" || rc=$?
  ((rc == want)) || { echo "exit code $rc, expected $want"; return 1; }
}

# converge LABEL ARGS...: run twice; the first must succeed, the second must change nothing.
check_converges() {
  local label="$1"
  shift
  check "$label: first run exits 0" exit_code_is 0 bootstrap_json "$label-1" "$@"
  check "$label: first run has no failed or unreachable host" summary_ok "$label-1"
  check "$label: second run exits 0" exit_code_is 0 bootstrap_json "$label-2" "$@"
  check "$label: second run reports 0 changed" summary_is "$label-2" changed 0
  check "$label: second run has no failed or unreachable host" summary_ok "$label-2"
}

summary_ok() {
  summary_is "$1" failed 0 && summary_is "$1" unreachable 0
}

# ---------------------------------------------------------------- reachability

# Succeeds when a TCP connection to ADDR:PORT opens within 5 s.
tcp_open() { timeout 5 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }
tcp_closed() { ! tcp_open "$@"; }

check_ping() {
  check "ping: every host answers" exit_code_is 0 "$BOOTSTRAP_BIN" -i "$INVENTORY" ping
}

check_ssh_from_outsider() {
  local h
  for h in "${LAB_HOSTS[@]}"; do
    check "outsider reaches ssh on $h" on_outsider bash -c "$(declare -f tcp_open); tcp_open $(host_addr "$h") 22"
  done
}

# ---------------------------------------------------------------- smoke playbook

check_smoke_facts() {
  local h
  for h in "${LAB_HOSTS[@]}"; do
    check "$h: jq installed through apt" on_host "$h" "dpkg-query -W -f='\${Status}' jq | grep -qx 'install ok installed'"
    check "$h: /etc/bootstrap-smoke.conf names this host" on_host "$h" \
      "grep -qx 'host = $h' /etc/bootstrap-smoke.conf && grep -qx 'address = $(host_addr "$h")' /etc/bootstrap-smoke.conf"
    check "$h: /etc/bootstrap-smoke.conf lists every peer" on_host "$h" "$(smoke_peer_greps)"
    check "$h: /etc/bootstrap-smoke.conf is root:root 0644" on_host "$h" \
      "test \"\$(stat -c '%U:%G %a' /etc/bootstrap-smoke.conf)\" = 'root:root 644'"
    check "$h: bootstrap-smoke.service active and enabled" on_host "$h" \
      "systemctl is-active --quiet bootstrap-smoke && systemctl is-enabled --quiet bootstrap-smoke"
  done
}

smoke_peer_greps() {
  local h cmd="true"
  for h in "${LAB_HOSTS[@]}"; do
    cmd+=" && grep -qx 'peer $h = $(host_addr "$h")' /etc/bootstrap-smoke.conf"
  done
  printf '%s' "$cmd"
}

smoke_invocation() { on_host "$1" "systemctl show -p InvocationID --value bootstrap-smoke"; }

# Drift on one host: only that host's template step changes, and its handler restarts the service.
check_smoke_drift() {
  local playbook="$1" before after
  before="$(smoke_invocation worker)"
  on_host worker "echo 'drift = 1' | sudo tee -a /etc/bootstrap-smoke.conf >/dev/null"
  check "smoke drift: run exits 0" exit_code_is 0 bootstrap_json smoke-drift run "$playbook"
  check "smoke drift: only worker's template step changed (and its handler ran)" changed_steps_are smoke-drift "$(printf 'worker\thandler: restart smoke\nworker\tsmoke config')"
  check "smoke drift: worker's file is restored" on_host worker "! grep -q '^drift' /etc/bootstrap-smoke.conf"
  after="$(smoke_invocation worker)"
  check "smoke drift: the handler restarted worker's service" test "$before" != "$after" -a -n "$after"
}

check_smoke() {
  local playbook="$1" inv1 inv2
  check_converges smoke run "$playbook"
  check_smoke_facts
  # The unchanged second run must not have fired the restart handler.
  inv1="$(smoke_invocation master)"
  check "smoke: third run exits 0" exit_code_is 0 bootstrap_json smoke-3 run "$playbook"
  inv2="$(smoke_invocation master)"
  check "smoke: an unchanged run does not restart the service" test "$inv1" = "$inv2" -a -n "$inv1"
  check_smoke_drift "$playbook"
}

# ---------------------------------------------------------------- inventory and secrets

# toml_get FILE DOTTED.KEY: one value of a TOML file; a list or table prints as JSON.
toml_get() {
  python3 - "$1" "$2" <<'EOF'
import json, sys, tomllib
with open(sys.argv[1], "rb") as f:
    value = tomllib.load(f)
for part in sys.argv[2].split("."):
    value = value[part]
print(value if isinstance(value, (str, int)) else json.dumps(value))
EOF
}

secrets_file() { printf '%s' "${BOOTSTRAP_SECRETS_FILE:-$(dirname "$INVENTORY")/secrets.toml}"; }

# A secret's value on stdout, for a shell variable: never an argument of any command.
secret_value() { toml_get "$(secrets_file)" "$1"; }

# The sha256 of a secret's value (empty when it has none): compares values without showing them.
secret_digest() {
  [[ -f "$(secrets_file)" ]] || return 0
  secret_value "$1" 2>/dev/null | sha256sum | cut -d' ' -f1
}

# Every secret the inventory declares has a value in the secrets file.
all_secrets_set() {
  python3 - "$INVENTORY" "$(secrets_file)" <<'EOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    declared = tomllib.load(f).get("secrets", {})
with open(sys.argv[2], "rb") as f:
    values = tomllib.load(f)
missing = [name for name in declared if not values.get(name)]
if missing or not declared:
    sys.exit(f"declared: {sorted(declared)}; without a value: {missing}")
EOF
}

# inventory_with_var INVENTORY KEY TOML_VALUE: the inventory with [vars] KEY set to the value.
inventory_with_var() {
  python3 - "$@" <<'EOF'
import re, sys, tomllib
path, key, value = sys.argv[1:]
out, in_vars, done = [], False, False
with open(path) as f:
    lines = f.read().splitlines()
for line in lines:
    header = line.strip().startswith("[")
    if header and in_vars and not done:
        out.append(f"{key} = {value}")
        done = True
    if header:
        in_vars = line.strip() == "[vars]"
    elif in_vars and re.match(rf"\s*{re.escape(key)}\s*=", line):
        continue
    out.append(line)
if not done:
    out += [] if in_vars else ["[vars]"]
    out.append(f"{key} = {value}")
text = "\n".join(out) + "\n"
assert tomllib.loads(text)["vars"][key] == tomllib.loads(f"v = {value}")["v"]
sys.stdout.write(text)
EOF
}

bootstrap_plain() {
  local label="$1" rc=0
  shift
  "$BOOTSTRAP_BIN" -i "$INVENTORY" "$@" >"$LAB_LOGS/$label.out" 2>"$LAB_LOGS/$label.err" || rc=$?
  printf '      %s: exit %d\n' "$label" "$rc"
  return "$rc"
}

# `bootstrap secrets init` fills in the declared secrets the lab did not write and keeps the others.
check_secrets_init() {
  local file before sum
  file="$(secrets_file)"
  before="$(secret_digest db_password)"
  check "secrets init: exits 0" exit_code_is 0 bootstrap_plain secrets-init secrets init
  check "secrets init: every declared secret has a value" all_secrets_set
  if [[ -n $before ]]; then
    check "secrets init: the lab's own db_password is kept" test "$(secret_digest db_password)" = "$before"
  fi
  check "secrets init: the file is mode 0600" test "$(stat -c %a "$file")" = 600
  sum="$(sha256sum <"$file")"
  check "secrets init: a second init exits 0" exit_code_is 0 bootstrap_plain secrets-init-2 secrets init
  check "secrets init: a second init leaves the file as it is" test "$(sha256sum <"$file")" = "$sum"
}

# ---------------------------------------------------------------- worker: PostgreSQL and firewall

# The worker playbook's steps whose changes the checks expect, by name.
WORKER_STEP_HBA="pg_hba.conf admits the master, the ELK box, localhost and the pod CIDR"
WORKER_STEP_FIREWALL="firewall: 5432 only from the cluster nodes, the ELK box, localhost and pods"
WORKER_STEP_ROLE="the app's PostgreSQL role (db_user) with the secret password"
WORKER_STEP_RUNNING="PostgreSQL running and enabled"
WORKER_HANDLER_RELOAD="handler: reload postgresql"

# worker_steps STEP...: the changed_steps lines expected from these steps of the worker.
worker_steps() {
  local s
  for s in "$@"; do printf 'worker\t%s\n' "$s"; done | sort
}

load_db_vars() {
  DB_NAME="$(toml_get "$INVENTORY" vars.db_name)"
  DB_USER="$(toml_get "$INVENTORY" vars.db_user)"
  DB_PORT="$(toml_get "$INVENTORY" vars.db_port)"
  DB_ADDR="$(host_addr worker)"
}

# db_whoami_from POSITION ADDR PASSWORD: `select current_user` with the host's psql from POSITION's
# network position. The password reaches psql in its environment, never on a command line.
db_whoami_from() {
  PGPASSWORD="$3" PGCONNECT_TIMEOUT=5 at_position "$1" \
    psql -X -w -A -t -h "$2" -p "$DB_PORT" -U "$DB_USER" -d "$DB_NAME" -c 'select current_user'
}

# db_whoami_on HOST ADDR PASSWORD: the same with HOST's own psql; the password goes over ssh's stdin.
db_whoami_on() {
  printf '%s\n' "$3" | on_host "$1" "IFS= read -r PGPASSWORD && export PGPASSWORD PGCONNECT_TIMEOUT=5 && \
    psql -X -w -A -t -h '$2' -p '$DB_PORT' -U '$DB_USER' -d '$DB_NAME' -c 'select current_user'"
}

# From the master: the host's psql in its namespace where the lab has one, else the master's psql.
db_whoami_from_master() {
  if at_position master true >/dev/null 2>&1; then
    db_whoami_from master "$@"
  else
    db_whoami_on master "$@"
  fi
}

# db_login_works CMD...: the command (a db_whoami_*) prints the app's role.
db_login_works() {
  local out
  out="$("$@" 2>&1)" || { echo "$out"; return 1; }
  [[ $out == "$DB_USER" ]] || { echo "current_user is '$out', expected $DB_USER"; return 1; }
}

# db_login_bad_password CMD...: the server is reached and refuses the password.
db_login_bad_password() {
  local out
  if out="$("$@" 2>&1)"; then
    echo "login succeeded as '$out'"
    return 1
  fi
  grep -q 'password authentication failed' <<<"$out" || { echo "$out"; return 1; }
}

# The changes a step reported in a run, one a line.
step_changes() {
  jq -r --arg s "$2" 'select(.type == "step" and .step == $s) | .changes[]' "$LAB_LOGS/$1.jsonl"
}

step_changes_are() {
  local got
  got="$(step_changes "$1" "$2")"
  [[ $got == "$3" ]] || { printf 'changes of "%s":\n%s\nexpected:\n%s\n' "$2" "$got" "$3"; return 1; }
}

# The one step's unified diff in a --diff run: exactly these +/- lines besides the headers.
diff_lines_are() {
  local got
  got="$(jq -r --arg s "$2" 'select(.type == "step" and .step == $s) | .diffs[]' "$LAB_LOGS/$1.jsonl" \
    | grep -E '^[-+]' | grep -Ev '^(---|\+\+\+)( |$)')"
  [[ $got == "$3" ]] || { printf 'diff lines of "%s":\n%s\nexpected:\n%s\n' "$2" "$got" "$3"; return 1; }
}

check_worker_access() {
  local pw="$1" when="$2"
  check "worker$when: psql from the master as $DB_USER reaches $DB_NAME" db_login_works db_whoami_from_master "$DB_ADDR" "$pw"
  check "worker$when: psql on the worker to 127.0.0.1 works" db_login_works db_whoami_on worker 127.0.0.1 "$pw"
  check "worker$when: outsider cannot open $DB_ADDR:$DB_PORT (refused or timed out in 5 s)" \
    outsider_cannot_open "$DB_ADDR" "$DB_PORT"
  check "worker$when: outsider still reaches ssh on the worker" \
    on_outsider bash -c "$(declare -f tcp_open); tcp_open $DB_ADDR 22"
}

# One more allowed address changes the pg_hba line and the firewall rule (and reloads), nothing else.
check_worker_extra_allowed() {
  local pw="$1" outsider extra want
  outsider="$(outsider_addr)"
  # Beside the lab's inventory, so it shares its secrets file and state directory.
  extra="$(dirname "$INVENTORY")/inventory-extra-allowed.toml"
  inventory_with_var "$INVENTORY" db_extra_allowed "[\"$outsider\"]" >"$extra"
  want="$(worker_steps "$WORKER_STEP_HBA" "$WORKER_STEP_FIREWALL" "$WORKER_HANDLER_RELOAD")"

  check "extra allowed: run with $outsider in db_extra_allowed exits 0" \
    exit_code_is 0 env_inventory "$extra" bootstrap_json worker-extra --diff worker
  check "extra allowed: only the pg_hba step, the firewall step and the reload handler changed" \
    changed_steps_are worker-extra "$want"
  check "extra allowed: the firewall step adds exactly the one rule" step_changes_are worker-extra "$WORKER_STEP_FIREWALL" \
    "ufw: add allow $DB_PORT/tcp from $outsider (bootstrap: postgres)"
  check "extra allowed: pg_hba.conf gains exactly the one line" diff_lines_are worker-extra "$WORKER_STEP_HBA" \
    "+host    $DB_NAME   $DB_USER   $outsider/32   scram-sha-256"
  check "extra allowed: the outsider now logs in with psql" db_login_works db_whoami_from outsider "$DB_ADDR" "$pw"

  check "extra allowed: back to the lab inventory exits 0" exit_code_is 0 bootstrap_json worker-unextra --diff worker
  check "extra allowed: going back changes the same steps" changed_steps_are worker-unextra "$want"
  check "extra allowed: going back deletes exactly the one rule" step_changes_are worker-unextra "$WORKER_STEP_FIREWALL" \
    "ufw: delete allow $DB_PORT/tcp from $outsider"
  check "extra allowed: going back removes exactly the one pg_hba line" diff_lines_are worker-unextra "$WORKER_STEP_HBA" \
    "-host    $DB_NAME   $DB_USER   $outsider/32   scram-sha-256"
  check "extra allowed: the outsider is blocked again" \
    outsider_cannot_open "$DB_ADDR" "$DB_PORT"
  check "extra allowed: a further run exits 0" exit_code_is 0 bootstrap_json worker-unextra-2 worker
  check "extra allowed: a further run changes 0" summary_is worker-unextra-2 changed 0
  rm -f "$extra"
}

env_inventory() {
  local INVENTORY="$1"
  shift
  "$@"
}

# with_db_password VALUE CMD...: runs CMD with the db password overridden from the environment.
with_db_password() {
  BOOTSTRAP_SECRET_DB_PASSWORD="$1" "${@:2}"
}

# not_leaked VALUE PATH...: VALUE occurs in none of the files (the value never on a command line).
not_leaked() {
  local value="$1" hits
  shift
  hits="$(grep -rlF -f <(printf '%s\n' "$value") "$@" 2>/dev/null)" || return 0
  printf 'found in:\n%s\n' "$hits"
  return 1
}

state_logs() { printf '%s/.bootstrap/logs' "$(dirname "$INVENTORY")"; }

run_log_dir() { jq -r 'select(.type == "run") | .log_dir' "$LAB_LOGS/$1.jsonl" | tail -1; }

# A wrong password from the environment rotates the role's password and shows up nowhere.
check_worker_wrong_password() {
  local pw="$1" wrong logdir
  wrong="lab-wrong-$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
  check "wrong password: --check --diff -v exits 0" \
    exit_code_is 0 with_db_password "$wrong" bootstrap_plain worker-wrong-check --check --diff -v worker
  check "wrong password: --check says the role step would change" \
    grep -qF "would change: $WORKER_STEP_ROLE" "$LAB_LOGS/worker-wrong-check.out"
  check "wrong password: run exits 0" exit_code_is 0 with_db_password "$wrong" bootstrap_json worker-wrong worker
  check "wrong password: only the role step changed (password rotated)" \
    changed_steps_are worker-wrong "$(worker_steps "$WORKER_STEP_ROLE")"
  logdir="$(run_log_dir worker-wrong)"
  check "wrong password: the run's log dir is under the state dir" test -n "$logdir" -a -d "$logdir" -a "${logdir#"$(state_logs)"/}" != "$logdir"
  check "wrong password: the value is in no output, --json event or log" \
    not_leaked "$wrong" "$LAB_LOGS" "$(state_logs)"
  check "wrong password: psql with the real password is refused" db_login_bad_password db_whoami_from_master "$DB_ADDR" "$pw"
  check "wrong password: psql with the wrong one works (the role really has it)" db_login_works db_whoami_from_master "$DB_ADDR" "$wrong"
  check "real password again: run exits 0" exit_code_is 0 bootstrap_json worker-rightpw worker
  check "real password again: only the role step changed" \
    changed_steps_are worker-rightpw "$(worker_steps "$WORKER_STEP_ROLE")"
  check "real password again: psql with it works" db_login_works db_whoami_from_master "$DB_ADDR" "$pw"
}

worker_state() { on_host worker "sudo ufw status verbose; sudo sha256sum /etc/postgresql/*/main/pg_hba.conf"; }

# check_worker_drift LABEL 'drift command' 'expected changed_steps' 'command true when restored'
check_worker_drift() {
  local label="$1" drift="$2" want="$3" restored="$4" before run="worker-${1// /-}"
  on_host worker "$drift" >/dev/null
  before="$(worker_state)"
  check "$label: --check exits 0" exit_code_is 0 bootstrap_json "$run-check" --check worker
  check "$label: --check reports only the drifted step" changed_steps_are "$run-check" "$want"
  check "$label: --check left the worker as it was" test "$(worker_state)" = "$before"
  check "$label: a real run exits 0" exit_code_is 0 bootstrap_json "$run-fix" worker
  check "$label: the real run changes the same steps" changed_steps_are "$run-fix" "$want"
  check "$label: the worker is restored" on_host worker "$restored"
}

check_worker() {
  local pw
  load_db_vars
  pw="$(secret_value db_password)"
  check_worker_check_mode_on_a_fresh_host
  check_converges worker worker
  check_worker_access "$pw" ""
  check_worker_extra_allowed "$pw"
  check_worker_wrong_password "$pw"
  check_worker_drift "firewall drift" "sudo ufw delete allow $(toml_get "$INVENTORY" vars.ingress_http_node_port)/tcp" \
    "$(worker_steps "$WORKER_STEP_FIREWALL")" "sudo ufw status | grep -q 'bootstrap: ingress http nodeport'"
  check_worker_drift "pg_hba drift" "echo '# lab drift' | sudo tee -a /etc/postgresql/*/main/pg_hba.conf" \
    "$(worker_steps "$WORKER_STEP_HBA" "$WORKER_HANDLER_RELOAD")" "! sudo grep -q 'lab drift' /etc/postgresql/*/main/pg_hba.conf"
  # Debian's `postgresql` wrapper stays "active" when its cluster is down: the run must see the
  # cluster unit itself and start it.
  check_worker_drift "cluster stopped" "sudo systemctl stop 'postgresql@*-main.service'" \
    "$(worker_steps "$WORKER_STEP_RUNNING")" "pg_lsclusters --no-header | awk '\$2 == \"main\" { print \$4 }' | grep -qx online"
  check_worker_access "$pw" " (at the end)"
  check "the real db password is in no output, --json event or log" not_leaked "$pw" "$LAB_LOGS" "$(state_logs)"
}

# ---------------------------------------------------------------- probes see drift (issue 13)

WORKER_STEP_PACKAGES="PostgreSQL packages"
# A package of the worker playbook that nothing else needs: removed by hand, the run puts it back.
DRIFT_PACKAGE="postgresql-contrib"

package_installed() {
  on_host worker "dpkg-query -W -f='\${Status}' $1 2>/dev/null | grep -qx 'install ok installed'"
}

# Negated on the worker: a failed ssh is a failure, not "removed".
package_removed() {
  on_host worker "! dpkg-query -W -f='\${Status}' $1 2>/dev/null | grep -qx 'install ok installed'"
}

# The app role's password changed by hand, as postgres (the SQL on ssh's stdin): a value the
# lab makes up, never the secret.
drift_role_password() {
  printf "ALTER ROLE \"%s\" PASSWORD 'drifted-by-hand';\n" "$DB_USER" |
    on_host worker "cd / && sudo -u postgres psql -X -q -v ON_ERROR_STOP=1 -d postgres"
}

ufw_status_is() {
  local got
  got="$(on_host worker "sudo ufw status verbose")"
  [[ $got == "$1" ]] || { printf 'ufw status:\n%s\nexpected:\n%s\n' "$got" "$1"; return 1; }
}

# The cheaper probes (ufw from its files, apt without apt-cache, one psql snapshot) still see
# the real state: three drifts made by hand on the converged worker are each seen by --check,
# which names exactly those steps; the real run repairs exactly those, and the next changes 0.
check_worker_probes_see_drift() {
  local pw ufw_before want label=worker-probe-drift
  load_db_vars
  pw="$(secret_value db_password)"
  ufw_before="$(on_host worker "sudo ufw status verbose")"
  want="$(worker_steps "$WORKER_STEP_PACKAGES" "$WORKER_STEP_ROLE" "$WORKER_STEP_FIREWALL")"

  # Each drift is made, then seen to have happened, so a check below cannot pass on a no-op.
  on_host worker "sudo ufw disable" >/dev/null
  check "probe drift: ufw disabled by hand" on_host worker "sudo ufw status | grep -qx 'Status: inactive'"
  on_host worker "sudo DEBIAN_FRONTEND=noninteractive apt-get remove -y -q $DRIFT_PACKAGE" >/dev/null
  check "probe drift: $DRIFT_PACKAGE removed by hand" package_removed "$DRIFT_PACKAGE"
  drift_role_password >/dev/null
  check "probe drift: $DB_USER's password changed by hand (the secret is refused)" \
    db_login_bad_password db_whoami_from_master "$DB_ADDR" "$pw"

  check "probe drift: --check exits 0" exit_code_is 0 bootstrap_json "$label-check" --check worker
  check "probe drift: --check sees ufw disabled (the firewall step would enable it, nothing else)" \
    step_changes_are "$label-check" "$WORKER_STEP_FIREWALL" "ufw: enable ufw"
  check "probe drift: --check sees $DRIFT_PACKAGE removed (the packages step would install it alone)" \
    step_changes_are "$label-check" "$WORKER_STEP_PACKAGES" "install $DRIFT_PACKAGE"
  check "probe drift: --check sees the password changed (the role step would set it)" \
    step_changes_are "$label-check" "$WORKER_STEP_ROLE" "role $DB_USER: set password"
  check "probe drift: --check reports no other step" changed_steps_are "$label-check" "$want"

  check "probe drift: a real run exits 0" exit_code_is 0 bootstrap_json "$label-fix" worker
  check "probe drift: the real run changes exactly those steps" changed_steps_are "$label-fix" "$want"
  check "probe drift: ufw is active again with the same rules" ufw_status_is "$ufw_before"
  check "probe drift: $DRIFT_PACKAGE is installed again" package_installed "$DRIFT_PACKAGE"
  check "probe drift: $DB_USER logs in with the secret again (from the master)" \
    db_login_works db_whoami_from_master "$DB_ADDR" "$pw"
  check "probe drift: a further run exits 0" exit_code_is 0 bootstrap_json "$label-again" worker
  check "probe drift: ... and changes 0" summary_is "$label-again" changed 0
}

# On the untouched worker, --check plans the whole role, fails nothing and changes nothing.
check_worker_check_mode_on_a_fresh_host() {
  local before after
  before="$(on_host worker "dpkg -l | sha256sum; ls /etc/ufw 2>&1 | sha256sum")"
  check "fresh worker --check: exits 0" exit_code_is 0 bootstrap_json worker-fresh-check --check worker
  check "fresh worker --check: nothing failed or unreachable" summary_ok worker-fresh-check
  check "fresh worker --check: the packages would be installed" step_changed worker-fresh-check worker "PostgreSQL packages"
  after="$(on_host worker "dpkg -l | sha256sum; ls /etc/ufw 2>&1 | sha256sum")"
  check "fresh worker --check: no package or firewall file changed" test "$before" = "$after"
  check "fresh worker --check: PostgreSQL is still not installed" on_host worker "! dpkg -s postgresql >/dev/null 2>&1"
}

# Everything built so far, all at once: converged already by the checks before, so 0 changed.
check_all_converged() {
  # The manifests stage is in ALL where the lab can run it (see scenario.sh).
  check "all: exits 0" exit_code_is 0 bootstrap_json all-final "${ALL[@]}"
  check "all: changes nothing on the converged lab" summary_is all-final changed 0
  check "all: nothing failed or unreachable" summary_ok all-final
  check "master: a rerun on the converged lab exits 0" exit_code_is 0 bootstrap_json master-final master
  check "master: ... and changes 0" summary_is master-final changed 0
}

# ---------------------------------------------------------------- firewall lock-out guard

ufw_fingerprint() { on_host worker "sudo ufw status verbose | sha256sum"; }

no_armed_rollback() {
  local units
  units="$(on_host worker "systemctl list-units --all --plain --no-legend 'bootstrap-fw-rollback*'")"
  [[ -z $units ]] || { printf 'rollback units left:\n%s\n' "$units"; return 1; }
}

step_message_has() {
  local label="$1" step="$2" text="$3"
  jq -r --arg s "$step" 'select(.type == "step" and .step == $s) | .message // ""' "$LAB_LOGS/$label.jsonl" |
    grep -qF "$text" || { echo "message of '$step' lacks '$text':"; jq -c 'select(.type == "step")' "$LAB_LOGS/$label.jsonl"; return 1; }
}

# A firewall change that would cut SSH is rolled back, and the tool can still get in.
check_firewall_lockout_guard() {
  local playbook="$1" before after step="firewall that forgets the real ssh port"
  before="$(ufw_fingerprint)"
  check "lock-out guard: the run fails (exit 1)" exit_code_is 1 bootstrap_json lockout run "$playbook"
  check "lock-out guard: the step failed because a fresh SSH login did not work" \
    step_message_has lockout "$step" "a new SSH login failed"
  check "lock-out guard: the change was rolled back" step_message_has lockout "$step" "rolled back"
  check "lock-out guard: ssh to the worker still works" on_host worker true
  after="$(ufw_fingerprint)"
  check "lock-out guard: the worker's firewall is as it was" test "$before" = "$after"
  check "lock-out guard: no rollback timer is left armed" no_armed_rollback
  check "lock-out guard: the worker role is still converged" exit_code_is 0 bootstrap_json lockout-after worker
  check "lock-out guard: ... and changes 0" summary_is lockout-after changed 0
}

note_has() {
  local label="$1" text="$2"
  jq -r 'select(.type == "note") | .message' "$LAB_LOGS/$label.jsonl" | grep -qF -- "$text" ||
    { echo "no note with '$text' in $label"; return 1; }
}

# A rollback left armed by a run that never confirmed access (killed, cut off) is found before
# anything changes; one that fired is told on the next run.
check_firewall_rollback_left_behind() {
  on_host worker "sudo systemd-run --quiet --collect --unit=bootstrap-fw-rollback.service sleep 600" >/dev/null
  check "rollback left armed: the worker run fails (exit 1)" exit_code_is 1 bootstrap_json armed-left worker
  check "rollback left armed: the run says so" step_message_has armed-left "lock host" "firewall rollback is still armed"
  check "rollback left armed: nothing changed" summary_is armed-left changed 0
  on_host worker "sudo systemctl stop bootstrap-fw-rollback.service" >/dev/null
  on_host worker "printf 'run=lab at=now result=RESTORED\n' | sudo tee /var/lib/bootstrap/fw/fired >/dev/null"
  check "rollback that fired: the next run succeeds" exit_code_is 0 bootstrap_json fired-told worker
  check "rollback that fired: ... and says so" note_has fired-told "a firewall rollback fired"
  check "rollback that fired: told once" exit_code_is 0 bootstrap_json fired-quiet worker
  check "rollback that fired: ... no note the second time" bash -c "! jq -r 'select(.type == \"note\") | .message' '$LAB_LOGS/fired-quiet.jsonl' | grep -q 'a firewall rollback fired'"
}

# ---------------------------------------------------------------- elk: Elasticsearch, Kibana, firewall

ELK_STEP_ELASTIC_PW="elastic's password is the secret (set through elasticsearch-reset-password)"

load_elk_vars() {
  ELK_ADDR="$(host_addr elk)"
  ES_PORT="$(toml_get "$INVENTORY" vars.elasticsearch_port)"
  KIBANA_PORT="$(toml_get "$INVENTORY" vars.kibana_port)"
  LOG_STREAM="$(toml_get "$INVENTORY" vars.log_data_stream)"
  ES_SCHEME="$(toml_get "$INVENTORY" vars.elasticsearch_scheme)"
  # The CA `bootstrap elk` fetched to the admin machine: the checks verify Elasticsearch with it.
  ES_CA="$(dirname "$INVENTORY")/.bootstrap/elasticsearch-http-ca.crt"
  SHIPPER="$(toml_get "$INVENTORY" vars.log_shipper_user)"
}

# from_position NAME CMD...: CMD from NAME's network position (its namespace in the container
# lab, over ssh on NAME in the Vagrant lab); stdin is passed on.
from_position() {
  if at_position "$1" true >/dev/null 2>&1; then
    at_position "$@"
  else
    on_host "$1" "$(printf '%q ' "${@:2}")"
  fi
}

# http_status POSITION URL_PATH USER PASSWORD [METHOD [BODY]]: the HTTP status of a call from
# POSITION. Credentials reach curl as a config on stdin (-K -), never on a command line.
http_status() {
  local pos="$1" url="$2" user="$3" pw="$4" method="${5:-GET}" body="${6:-}"
  local -a data=()
  [[ -n $body ]] && data=(-H 'Content-Type: application/json' --data-binary "$body")
  { if [[ -n $user ]]; then printf 'user = "%s:%s"\n' "$user" "$pw"; fi; } |
    from_position "$pos" curl -sS -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$ES_CA" -K - -X "$method" "${data[@]}" "$url"
}

# status_is WANT CMD...: CMD prints an HTTP status equal to WANT.
status_is() {
  local want="$1" got
  shift
  got="$("$@")" || true
  [[ $got == "$want" ]] || { echo "HTTP status $got, expected $want"; return 1; }
}

es_url() { printf '%s://%s:%s%s' "$ES_SCHEME" "$ELK_ADDR" "$ES_PORT" "$1"; }
# Kibana serves HTTPS with the host's Elasticsearch HTTP certificate when Elasticsearch does.
kibana_url() { printf '%s://%s:%s%s' "$ES_SCHEME" "$ELK_ADDR" "$KIBANA_PORT" "$1"; }

# The data views Kibana lists, as JSON, read with elastic's password.
kibana_data_view_titles() {
  printf 'user = "elastic:%s"\n' "$1" |
    from_position master curl -fsS --max-time 10 --cacert "$ES_CA" -K - "$(kibana_url /api/data_views)" | jq -r '.data_view[].title'
}

elk_checks_access() {
  local elastic="$1" shipper="$2" sfx="$3" doc='{"message":"lab check","@timestamp":"2026-01-01T00:00:00Z"}'
  check "elk$sfx: the shipper writes into the data stream $LOG_STREAM from the master (TLS, CA verified)" \
    status_is 201 http_status master "$(es_url "/$LOG_STREAM/_doc")" "$SHIPPER" "$shipper" POST "$doc"
  check "elk$sfx: the shipper writes into the data stream $LOG_STREAM from the worker (TLS, CA verified)" \
    status_is 201 http_status worker "$(es_url "/$LOG_STREAM/_doc")" "$SHIPPER" "$shipper" POST "$doc"
  check "elk$sfx: the shipper is refused on another index (403)" \
    status_is 403 http_status master "$(es_url /other-index/_doc)" "$SHIPPER" "$shipper" POST "$doc"
  check "elk$sfx: the shipper cannot make another data stream (403)" \
    status_is 403 http_status master "$(es_url /_data_stream/other-stream)" "$SHIPPER" "$shipper" PUT
  check "elk$sfx: a bulk of Fluent Bit's shape is taken (create, @timestamp, the app's JSON under log_processed)" \
    shipper_bulk_taken "$shipper"
  check "elk$sfx: elastic logs in with its secret" \
    status_is 200 http_status master "$(es_url /_security/_authenticate)" elastic "$elastic"
  check "elk$sfx: an unauthenticated request gets 401" status_is 401 http_status master "$(es_url /)" "" ""
  check "elk$sfx: a wrong password gets 401" \
    status_is 401 http_status master "$(es_url /_security/_authenticate)" elastic "not-$elastic"
  check "elk$sfx: the outsider cannot reach 9200" on_outsider bash -c "$(declare -f tcp_open tcp_closed); tcp_closed $ELK_ADDR $ES_PORT"
  if toml_get "$INVENTORY" vars.admin_allowed | jq -e --arg o "$(outsider_addr)" 'index("any") or index($o)' >/dev/null; then
    check "elk$sfx: the outsider reaches Kibana (admin_allowed admits it)" \
      on_outsider bash -c "$(declare -f tcp_open); tcp_open $ELK_ADDR $KIBANA_PORT"
  else
    check "elk$sfx: the outsider cannot reach Kibana (admin_allowed excludes it)" \
      on_outsider bash -c "$(declare -f tcp_open tcp_closed); tcp_closed $ELK_ADDR $KIBANA_PORT"
  fi
  check "elk$sfx: the master reaches Kibana, which reports available" \
    status_is 200 http_status master "$(kibana_url /api/status)" elastic "$elastic"
}

elk_files_ok() {
  on_host elk 'set -e
    test "$(sudo stat -c "%a %U:%G" /etc/kibana/kibana.keystore)" = "660 root:kibana"
    ! sudo grep -q "elasticsearch.password" /etc/kibana/kibana.yml
    ! sudo grep -qE "AUTO CONFIGURATION|initial_master_nodes|http.host" /etc/elasticsearch/elasticsearch.yml
    test "$(cat /proc/sys/vm/max_map_count)" = 262144
    sudo grep -qxE -- "-Xms[0-9]+m" /etc/elasticsearch/jvm.options.d/heap.options
    if grep -q "enabled: true" <(sudo sed -n "/^xpack.security.http.ssl:/,/keystore/p" /etc/elasticsearch/elasticsearch.yml); then
      test "$(sudo stat -c "%a %U:%G" /etc/kibana/elasticsearch-http-ca.crt)" = "640 root:kibana"
      sudo cmp -s /etc/kibana/elasticsearch-http-ca.crt /etc/elasticsearch/certs/http_ca.crt
    fi
    test "$(sudo sed -n "s/^-Xms//p" /etc/elasticsearch/jvm.options.d/heap.options)" = "$(sudo sed -n "s/^-Xmx//p" /etc/elasticsearch/jvm.options.d/heap.options)"
    apt-mark showhold | grep -qx elasticsearch
    apt-mark showhold | grep -qx kibana'
}

elk_versions_pinned() {
  local want got
  want="$(toml_get "$INVENTORY" vars.elastic_version)"
  got="$(on_host elk "dpkg-query -W -f '\${Version} ' elasticsearch kibana")"
  [[ $got == "$want $want " ]] || { echo "installed: '$got', pinned: $want"; return 1; }
}

# with_elastic_password VALUE CMD...: CMD with the elastic password overridden from the environment.
with_elastic_password() {
  BOOTSTRAP_SECRET_ELASTIC_PASSWORD="$1" "${@:2}"
}

# None of the values appears in any file on the ELK host outside Kibana's keystore; the values
# reach grep on its stdin.
elk_host_clean() {
  local hits
  hits="$(printf '%s\n' "$@" | on_host elk "sudo grep -rlF -f - /etc /var /root /home /tmp /run /usr/share/elasticsearch /usr/share/kibana 2>/dev/null | grep -vx /etc/kibana/kibana.keystore")" || return 0
  printf 'found in:\n%s\n' "$hits"
  return 1
}

check_elk() {
  local elastic kibana shipper wrong
  load_elk_vars
  elastic="$(secret_value elastic_password)"
  kibana="$(secret_value kibana_system_password)"
  shipper="$(secret_value log_shipper_password)"
  check_converges elk elk
  check "elk: elasticsearch and kibana are at the pinned version" elk_versions_pinned
  check "elk: keystore mode, no password in kibana.yml, no auto-configured block, sysctl, heap, holds" elk_files_ok
  elk_checks_access "$elastic" "$shipper" ""
  check "elk drift: the package's auto-configured block appended again is removed, only that file and the restart change" \
    elk_autoconfig_drift_is_repaired
  if [[ $LAB_KIND == container ]]; then
    check "elk stand-in: refuses cluster.initial_master_nodes beside single-node, like the real node" elk_standin_refuses
  fi
  check "elk: the data view $LOG_STREAM* exists once" test "$(kibana_data_view_titles "$elastic" | grep -cxF "$LOG_STREAM*")" = 1
  check "elk: the data stream deletes data older than log_retention (its lifecycle)" log_stream_retention_is "$elastic"
  if [[ $ES_SCHEME == https ]]; then
    check "elk: plain HTTP on 9200 gets no answer (TLS only)" plain_http_refused
    check "elk: a client without the CA cannot verify Elasticsearch" unverified_client_refused
    check "elk: Kibana answers only over HTTPS (plain HTTP on 5601 gets no answer)" plain_http_refused "$KIBANA_PORT"
    check "elk: Kibana's certificate is the host's, for its address, chained to the fetched CA" \
      status_is 200 http_status master "$(kibana_url /api/status)" elastic "$elastic"
  fi

  wrong="lab-elastic-$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
  check "elk rotation: a changed elastic_password run exits 0" \
    exit_code_is 0 with_elastic_password "$wrong" bootstrap_json elk-rotate elk
  check "elk rotation: only elastic's password step changed" \
    changed_steps_are elk-rotate "$(printf 'elk\t%s' "$ELK_STEP_ELASTIC_PW")"
  check "elk rotation: the new password logs in" \
    status_is 200 http_status master "$(es_url /_security/_authenticate)" elastic "$wrong"
  check "elk rotation: the old one is refused" \
    status_is 401 http_status master "$(es_url /_security/_authenticate)" elastic "$elastic"
  check "elk rotation: back to the secret, only that step changed" \
    changed_steps_are_after elk-rotate-back "$(printf 'elk\t%s' "$ELK_STEP_ELASTIC_PW")" elk
  elk_checks_access "$elastic" "$shipper" " (after rotation)"
  check "elk: no password in any output, --json event or log" \
    not_leaked_any "$LAB_LOGS" "$(state_logs)" -- "$elastic" "$kibana" "$shipper" "$wrong"
  check "elk: no password in any file on the ELK host (Kibana's keystore aside)" \
    elk_host_clean "$elastic" "$kibana" "$shipper" "$wrong"
  check "elk: the superuser password the package generates at install is in no output, event or log" \
    generated_password_not_shown
}

# The Elasticsearch package prints the `elastic` password it generates at install ("The generated
# password for the elastic built-in superuser is : ..."); the apt step's output must not carry it.
generated_password_not_shown() {
  local hits
  hits="$(grep -rlE 'generated password for the elastic built-in superuser is : [^ <]' "$LAB_LOGS" "$(state_logs)" 2>/dev/null)" || return 0
  printf 'the generated password is in:\n%s\n' "$hits"
  return 1
}

# changed_steps_are_after LABEL EXPECTED ARGS...: runs bootstrap ARGS, then compares the changes.
changed_steps_are_after() {
  local label="$1" want="$2"
  shift 2
  bootstrap_json "$label" "$@" || return 1
  changed_steps_are "$label" "$want"
}

# not_leaked_any PATH... -- VALUE...: none of the values occurs in the files.
not_leaked_any() {
  local -a paths=()
  while (($#)) && [[ $1 != -- ]]; do paths+=("$1"); shift; done
  shift
  local v
  for v in "$@"; do not_leaked "$v" "${paths[@]}" || return 1; done
}

ELK_STEP_ES_YML="elasticsearch.yml: single node, security on, TLS on HTTP (elasticsearch_scheme)"

# What Fluent Bit sends (out_es: op create, an @timestamp, Suppress_Type_Name), as the shipper.
shipper_bulk_taken() {
  local body out
  body="$(printf '%s\n' '{"create":{"_index":"'"$LOG_STREAM"'"}}' \
    '{"@timestamp":"2026-12-03T10:00:00.000Z","log_processed":{"level":"info","status":200},"kubernetes":{"labels":{"app":"django-app"}}}' \
    '{"create":{"_index":"'"$LOG_STREAM"'"}}' \
    '{"@timestamp":"2026-12-03T10:00:01.000Z","log_processed":{"level":{"nested":true},"status":"200 OK"}}')"
  out="$(printf 'user = "%s:%s"\n' "$SHIPPER" "$1" | from_position master curl -sS --max-time 10 --cacert "$ES_CA" -K - \
    -H 'Content-Type: application/x-ndjson' --data-binary "$body" "$(es_url /_bulk)")" || return 1
  jq -e '.errors == false and ([.items[].create.status] == [201, 201])' <<<"$out" >/dev/null ||
    { echo "bulk answer: $out"; return 1; }
}

log_stream_retention_is() {
  local got want
  want="$(toml_get "$INVENTORY" vars.log_retention)"
  got="$(printf 'user = "elastic:%s"\n' "$1" | from_position master curl -fsS --max-time 10 --cacert "$ES_CA" -K - \
    "$(es_url "/_data_stream/$LOG_STREAM/_lifecycle")" | jq -r '.data_streams[0].lifecycle.data_retention')" || return 1
  [[ $got == "$want" ]] || { echo "data_retention $got, expected $want"; return 1; }
}

# curl with the system's CAs only: the certificate is not trusted (exit 60).
unverified_client_refused() {
  local rc=0
  from_position master curl -sS -o /dev/null --max-time 10 "$(es_url /)" 2>/dev/null || rc=$?
  [[ $rc == 60 ]] || { echo "curl exit $rc, expected 60 (certificate not verified)"; return 1; }
}

# The TLS port (9200, or PORT) closes a plain-HTTP connection without an HTTP answer.
plain_http_refused() {
  local code
  code="$(from_position master curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://$ELK_ADDR:${1:-$ES_PORT}/")" || true
  [[ $code == 000 ]] || { echo "plain HTTP got status $code"; return 1; }
}

# What the package's security auto-configuration appends (on a reinstall, say), appended again.
elk_autoconfig_drift_is_repaired() {
  on_host elk "printf '%s\n' '#--- BEGIN SECURITY AUTO CONFIGURATION (lab drift)' 'cluster.initial_master_nodes: [\"elk\"]' 'http.host: 0.0.0.0' |
    sudo tee -a /etc/elasticsearch/elasticsearch.yml >/dev/null" || return 1
  bootstrap_json elk-drift elk || return 1
  changed_steps_are elk-drift "$(printf 'elk\t%s\nelk\thandler: restart elasticsearch' "$ELK_STEP_ES_YML")" || return 1
  on_host elk "! sudo grep -q 'lab drift' /etc/elasticsearch/elasticsearch.yml && systemctl is-active --quiet elasticsearch"
}

# The stand-in node, on a copy of the converged configuration plus the setting the package's
# auto-configuration writes, exits 78 with the real node's message, before binding anything.
elk_standin_refuses() {
  on_host elk 'set -e
    d=$(sudo mktemp -d); trap "sudo rm -rf $d" EXIT
    sudo cp -a /etc/elasticsearch/. "$d/"
    echo "cluster.initial_master_nodes: [\"elk\"]" | sudo tee -a "$d/elasticsearch.yml" >/dev/null
    rc=0; out=$(sudo ES_PATH_CONF="$d" /usr/share/elasticsearch/bin/elasticsearch 2>&1) || rc=$?
    echo "exit $rc: $out"
    test "$rc" = 78
    echo "$out" | grep -qF "setting [cluster.initial_master_nodes] is not allowed when [discovery.type] is set to [single-node]"'
}

# ---------------------------------------------------------------- Kubernetes (issue 9)
# Real Kubernetes in both labs; in the container lab Calico's images are stand-ins
# (tests/lab/standins/calico/).

K8S_STEP_TOKEN="a fresh join token minted on the master (short TTL) (on master)"
K8S_STEP_JOIN="kubeadm join (configuration on stdin)"
K8S_STEP_STALE="stale node record removed from the API (on master)"
K8S_STEP_LEFTOVERS="leftovers of an earlier join reset (kubeadm reset)"

kubectl_on_master() { on_host master "sudo kubectl --kubeconfig /etc/kubernetes/admin.conf $1"; }
node_ready() { kubectl_on_master "wait --for=condition=Ready node/$1 --timeout=30s"; }
node_unknown() {
  local out
  out="$(kubectl_on_master "get node $1 -o name" 2>&1)" && { echo "node $1 is still known: $out"; return 1; }
  grep -q NotFound <<<"$out" || { echo "$out"; return 1; }
}

node_address_is() {
  local got
  got="$(kubectl_on_master "get node $1 -o jsonpath='{.status.addresses[?(@.type==\"InternalIP\")].address}'")"
  [[ $got == "$2" ]] || { echo "InternalIP of $1 is '$got', expected $2"; return 1; }
}

k8s_version() { toml_get "$INVENTORY" vars.kubernetes_version; }

node_prerequisites_hold() {
  local h="$1" v
  v="$(k8s_version)-1.1"
  on_host "$h" "set -e
    export PATH=\"\$PATH:/usr/sbin:/sbin\"
    [ -z \"\$(swapon --show --noheadings)\" ]
    ! grep -Eq '^[^#[:space:]][^[:space:]]*[[:space:]]+[^[:space:]]+[[:space:]]+swap[[:space:]]' /etc/fstab
    [ \"\$(sysctl -n net.ipv4.ip_forward)\" = 1 ]
    [ \"\$(sysctl -n net.bridge.bridge-nf-call-iptables)\" = 1 ]
    [ \"\$(sysctl -n net.bridge.bridge-nf-call-ip6tables)\" = 1 ]
    grep -qx overlay /etc/modules-load.d/overlay.conf && grep -qx br_netfilter /etc/modules-load.d/br_netfilter.conf
    grep -q 'SystemdCgroup = true' /etc/containerd/config.toml && systemctl is-active --quiet containerd
    for p in kubelet kubeadm kubectl; do
      [ \"\$(dpkg-query -W -f='\${Version}' \$p)\" = '$v' ]
      apt-mark showhold | grep -qx \$p
    done
    grep -q -- '--node-ip=$(host_addr "$h")' /etc/default/kubelet"
}

admin_kubeconfig_fetched() {
  local f
  f="$(dirname "$INVENTORY")/.bootstrap/kubeconfig"
  [[ $(stat -c %a "$f") == 600 ]] || { echo "$f is mode $(stat -c %a "$f")"; return 1; }
  grep -q "server: https://$(host_addr master):$(toml_get "$INVENTORY" vars.api_port)" "$f" || { grep server: "$f"; return 1; }
}

# Anything shaped like a bootstrap token (6.16 characters) in the outputs, events and logs.
no_join_token_anywhere() {
  local hits
  hits="$(grep -rlE '(^|[^a-z0-9])[a-z0-9]{6}\.[a-z0-9]{16}([^a-z0-9]|$)' "$LAB_LOGS" "$(state_logs)" 2>/dev/null)" || return 0
  printf 'token-shaped text in:\n%s\n' "$hits"
  return 1
}

# The master's part on its own: `bootstrap master` converges and the node is Ready.
check_kubernetes_master() {
  check_converges master master
  check "master: node prerequisites (swap, modules, sysctls, containerd, held packages, node IP)" node_prerequisites_hold master
  check "master: node master is Ready" node_ready master
  check "master: its InternalIP is its inventory address" node_address_is master "$(host_addr master)"
  check "master: Calico's calico-node is rolled out" kubectl_on_master "-n kube-system rollout status daemonset/calico-node --timeout=30s"
  check "master: admin kubeconfig fetched to the admin machine (0600, server = master address)" admin_kubeconfig_fetched
  check "master: the login user's kubectl reaches the cluster" on_host master "kubectl get node master -o name"
}

# After check_worker (whose `bootstrap worker` runs the join too).
# `all` here includes the manifests stage: its first run applies the hand-off through the
# master's stand-in kubectl (the NGINX Ingress Controller from the stand-in release files the lab
# repository serves); check_manifests then checks what the stand-in API recorded.
check_kubernetes() {
  local pw before inv_overlap
  pw="$(secret_value db_password)"
  check "worker: node prerequisites hold" node_prerequisites_hold worker
  check "worker: node worker is Ready (asked on the master)" node_ready worker
  check "worker: its InternalIP is its inventory address" node_address_is worker "$(host_addr worker)"
  # A cluster set up before the move to the F5 controller: the retired ingress-nginx's stand-in
  # release (its NodePort Service on the fixed ports, its IngressClass `nginx` of another
  # controller, its webhook on Ingresses), which the first `all` must remove.
  check "the retired ingress-nginx is applied first (as an older bootstrap left it)" retired_ingress_nginx_applied
  check_converges all-k8s "${ALL[@]}"
  check "the retired ingress-nginx is gone (namespace, webhook, RBAC)" retired_ingress_nginx_gone
  check "IngressClass nginx is the F5 controller's; its Service holds the fixed NodePorts" f5_controller_serves_class_nginx

  before="$(worker_state)"
  on_host worker "sudo rm -f /etc/kubernetes/kubelet.conf"
  check "rejoin: after kubelet.conf is deleted, all exits 0" exit_code_is 0 bootstrap_json rejoin "${ALL[@]}"
  check "rejoin: only the join steps changed" changed_steps_are rejoin \
    "$(printf 'worker\t%s\n' "$K8S_STEP_TOKEN" "$K8S_STEP_JOIN" "$K8S_STEP_LEFTOVERS" "$K8S_STEP_STALE" | sort)"
  check "rejoin: worker is Ready again" node_ready worker
  check "rejoin: PostgreSQL and its firewall are unchanged" test "$(worker_state)" = "$before"

  inv_overlap="$(dirname "$INVENTORY")/inventory-overlap.toml"
  sed 's|^pod_cidr = .*|pod_cidr = "'"$(host_addr worker | cut -d. -f1-3)"'.0/24"|' "$INVENTORY" >"$inv_overlap"
  check "an overlapping pod CIDR stops with exit 2 before any connection" overlap_refused "$inv_overlap"

  check "reset without --yes and without a terminal refuses (exit 2)" exit_code_is 2 bootstrap_plain reset-no-tty reset --limit worker
  before="$(worker_state)"
  check "reset --limit worker --yes exits 0" exit_code_is 0 bootstrap_json reset reset --limit worker --yes
  check "reset: the worker's kubelet.conf is gone" on_host worker "! test -e /etc/kubernetes/kubelet.conf"
  check "reset: the API no longer knows the worker" node_unknown worker
  check "reset: PostgreSQL and its firewall are unchanged" test "$(worker_state)" = "$before"
  check "reset: PostgreSQL still runs with its database" on_host worker \
    "sudo -u postgres psql -Atc \"select 1 from pg_database where datname = '$(toml_get "$INVENTORY" vars.db_name)'\" | grep -qx 1"
  check "after reset, all exits 0" exit_code_is 0 bootstrap_json after-reset "${ALL[@]}"
  check "after reset, the worker is Ready again" node_ready worker
  check "after reset: the second all changes 0" exit_code_is 0 bootstrap_json after-reset-2 "${ALL[@]}"
  check "after reset: ... and reports 0 changed" summary_is after-reset-2 changed 0
  check_worker_access "$pw" " (after the Kubernetes checks)"
  check "the join tokens are in no output, --json event or log" no_join_token_anywhere
}

# ---------------------------------------------------------------- manifests (cluster hand-off)

deployer_kubeconfig_fetched() {
  local f
  f="$(dirname "$INVENTORY")/.bootstrap/deployer.kubeconfig"
  [[ $(stat -c %a "$f" 2>/dev/null) == 600 ]] || { echo "$f: mode $(stat -c %a "$f" 2>&1), expected 600"; return 1; }
  grep -q '^ *token: ' "$f" || { echo "$f has no token"; return 1; }
  grep -q "server: https://$(host_addr master):" "$f" || { echo "$f does not name the master's API"; return 1; }
}

# The old release's stand-in from the lab repository, plus the fixed-NodePort Service of ours
# that older bootstraps applied beside it.
retired_ingress_nginx_applied() {
  on_host master "python3 -c 'import sys, urllib.request; sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1]).read())' \
    $(toml_get "$INVENTORY" vars.lab_repo_url)ingress-nginx.yaml >/tmp/retired-ingress-nginx.yaml" || return 1
  on_host master "cat >>/tmp/retired-ingress-nginx.yaml <<'EOF'
---
apiVersion: v1
kind: Service
metadata:
  name: ingress-nginx-fixed-nodeports
  namespace: ingress-nginx
spec:
  type: NodePort
  selector:
    app.kubernetes.io/name: ingress-nginx
  ports:
    - name: http
      port: 80
      nodePort: $(toml_get "$INVENTORY" vars.ingress_http_node_port)
EOF" || return 1
  kubectl_on_master "apply -f /tmp/retired-ingress-nginx.yaml" >/dev/null || return 1
  kubectl_on_master "get deployment -n ingress-nginx ingress-nginx-controller -o name" >/dev/null
}

retired_ingress_nginx_gone() {
  local left
  left="$(kubectl_on_master "get namespaces,deployments,services,validatingwebhookconfigurations,clusterroles -A -o name" | grep ingress-nginx)"
  [[ -z $left ]] || { printf 'still there:\n%s\n' "$left"; return 1; }
}

f5_controller_serves_class_nginx() {
  local controller ports
  controller="$(kubectl_on_master "get ingressclass nginx -o jsonpath={.spec.controller}")" || return 1
  [[ $controller == nginx.org/ingress-controller ]] || { echo "IngressClass nginx: controller $controller"; return 1; }
  ports="$(kubectl_on_master "-n nginx-ingress get service nginx-ingress -o jsonpath={.spec.ports[*].nodePort}")" || return 1
  [[ $ports == "$(toml_get "$INVENTORY" vars.ingress_http_node_port) $(toml_get "$INVENTORY" vars.ingress_https_node_port)" ]] ||
    { echo "Service nginx-ingress NodePorts: $ports"; return 1; }
}

# `bootstrap check` connects to nothing: until the inventory checks refuse the CIDR it cannot
# change the lab either (a run with that pod CIDR would rewrite the worker's firewall).
overlap_refused() {
  local rc=0 out
  out="$("$BOOTSTRAP_BIN" -i "$1" check 2>&1)" || rc=$?
  ((rc == 2)) || { echo "exit $rc"; printf '%s\n' "$out" | tail -5; return 1; }
  grep -q 'pod_cidr' <<<"$out" || { echo "no word of pod_cidr:"; printf '%s\n' "$out" | tail -5; return 1; }
}

# ---------------------------------------------------------------- the real cluster (issue 17)
# Container lab: master and worker run real Kubernetes built from source (tests/lab/build/),
# images from the lab registries; Calico's images are labelled stand-ins (tests/lab/standins/calico/).

TOOLBOX_IMAGE="docker.io/bootstraplab/toolbox:1"

# The real kubectl on the admin machine, with the kubeconfig bootstrap fetched there.
admin_kubectl() { "${ADMIN_KUBECTL:?}" --kubeconfig "$(dirname "$INVENTORY")/.bootstrap/kubeconfig" "$@"; }

nodes_ready_at_version() {
  local want="v$(k8s_version)" got
  got="$(admin_kubectl get nodes -o 'jsonpath={range .items[*]}{.metadata.name} {.status.nodeInfo.kubeletVersion} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}')" || return 1
  [[ $got == "$(printf 'master %s True\nworker %s True' "$want" "$want")" ]] || { printf 'nodes:\n%s\nexpected master and worker Ready at %s\n' "$got" "$want"; return 1; }
}

server_version_is_pinned() {
  local got
  got="$(admin_kubectl version -o json | jq -r .serverVersion.gitVersion)"
  [[ $got == "v$(k8s_version)" ]] || { echo "server version $got, pinned v$(k8s_version)"; return 1; }
}

# Every kube-system pod Running and ready, and the ones a kubeadm + Calico cluster has, per node.
kube_system_pods_running() {
  local pods want line missing=()
  pods="$(admin_kubectl -n kube-system get pods -o 'jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.phase} {.status.containerStatuses[*].ready}{"\n"}{end}')" || return 1
  if grep -v ' Running true\( true\)*$' <<<"$pods" | grep -q .; then
    printf 'not Running and ready:\n%s\n' "$(grep -v ' Running true\( true\)*$' <<<"$pods")"
    return 1
  fi
  for want in 'kube-apiserver-master master' 'etcd-master master' 'kube-controller-manager-master master' \
    'kube-scheduler-master master' 'kube-proxy-.* master' 'kube-proxy-.* worker' 'calico-node-.* master' \
    'calico-node-.* worker' 'coredns-.* ' 'calico-kube-controllers-.* '; do
    grep -q "^$want" <<<"$pods" || missing+=("$want")
  done
  ((${#missing[@]} == 0)) || { printf 'missing: %s\npods:\n%s\n' "${missing[*]}" "$pods"; return 1; }
}

# None of the cluster's bootstrap tokens (kubeadm init's and every join's, as `kubeadm token list`
# shows them while they live) in the kubelet's or containerd's journal on host $1.
no_join_token_on_host() {
  local tokens t hits=0
  tokens="$(on_host master "sudo kubeadm token list -o jsonpath='{.token}{\"\\n\"}'")" || { echo "kubeadm token list failed"; return 1; }
  [[ -n $tokens ]] || { echo "no token listed: nothing to look for"; return 1; }
  for t in $tokens; do
    if printf '%s\n' "$t" | on_host "$1" "sudo journalctl -u kubelet -u containerd --no-pager -o cat | grep -qFf -"; then
      echo "a token (id ${t%%.*}) is in the journal of $1"
      hits=1
    fi
  done
  return "$hits"
}

# A toolbox pod (the lab image with psql, nc, getent) on node $2, named $1, Ready.
toolbox_pod_on() {
  kubectl_on_master "delete pod $1 --ignore-not-found --wait=true" >/dev/null
  kubectl_on_master "run $1 --image=$TOOLBOX_IMAGE --restart=Never --overrides='{\"spec\":{\"nodeName\":\"$2\",\"terminationGracePeriodSeconds\":0}}' --command -- sleep 3600" >/dev/null &&
    kubectl_on_master "wait --for=condition=Ready pod/$1 --timeout=120s" >/dev/null
}

pod_ip() { kubectl_on_master "get pod $1 -o jsonpath={.status.podIP}"; }

# The app's login from pod $1: the password on stdin, never on a command line.
pod_logs_in_to_postgres() {
  local out
  out="$(printf '%s\n' "$2" | kubectl_on_master "exec -i $1 -- sh -c 'read -r PGPASSWORD; export PGPASSWORD; psql -h $DB_ADDR -p $DB_PORT -U $DB_USER -d $DB_NAME -Atc \"select current_user\"'")" || { echo "$out"; return 1; }
  [[ $out == "$DB_USER" ]] || { echo "psql answered: $out"; return 1; }
}

pod_resolves_kubernetes_default() {
  local out
  out="$(kubectl_on_master "exec $1 -- getent hosts kubernetes.default.svc.cluster.local")" || { echo "$out"; return 1; }
  [[ $out == "$(kubectl_on_master "get service kubernetes -o jsonpath={.spec.clusterIP}") "* ]] || { echo "resolved: $out"; return 1; }
}

# A line sent from the pod on the worker to a listener in the pod on the master, while the lab
# host sees VXLAN (UDP 4789) between the two nodes on the lab bridge.
pod_to_pod_over_vxlan() {
  local master_ip cap got pid i
  master_ip="$(pod_ip lab-probe-master)"
  kubectl_on_master "exec lab-probe-master -- sh -c 'nc -l -p 7000 >/tmp/got 2>&1 &'" >/dev/null
  cap="$(mktemp)"
  timeout 30 tcpdump -i "${LAB_BRIDGE:-bslab0}" -n --immediate-mode -c 4 \
    "udp port 4789 and host $(host_addr master) and host $(host_addr worker)" >"$cap" 2>"$cap.err" &
  pid=$!
  # tcpdump says "listening on" once it captures.
  for i in $(seq 100); do grep -q "listening on" "$cap.err" && break; sleep 0.1; done
  kubectl_on_master "exec lab-probe-worker -- sh -c 'echo lab-vxlan-probe | nc -N -w 5 $master_ip 7000'" || { kill "$pid"; echo "no connection to $master_ip:7000"; return 1; }
  wait "$pid" || true
  got="$(kubectl_on_master "exec lab-probe-master -- cat /tmp/got")"
  [[ $got == lab-vxlan-probe ]] || { echo "the master pod got: $got"; return 1; }
  grep -q "UDP\|VXLAN\|4789" "$cap" || { echo "no UDP 4789 between the nodes seen on the bridge"; cat "$cap" "$cap.err"; rm -f "$cap" "$cap.err"; return 1; }
  rm -f "$cap" "$cap.err"
}

pool_is_vxlan_always() {
  local got
  got="$(kubectl_on_master "get ippools.crd.projectcalico.org default-ipv4-ippool -o jsonpath={.spec.ipipMode}/{.spec.vxlanMode}")"
  [[ $got == Never/Always ]] || { echo "ipipMode/vxlanMode = $got"; return 1; }
}

# The worker's pod block is routed through vxlan.calico on the master.
route_via_vxlan() {
  local block out
  block="$(kubectl_on_master "get node worker -o jsonpath={.spec.podCIDR}")"
  out="$(on_host master "ip route show $block")"
  grep -q "dev vxlan.calico" <<<"$out" || { echo "route to $block on master: $out"; return 1; }
}

# ---------------------------------------------------------------- firewalls of the nodes (issue 18)
# NodePorts are DNAT'ed to pods (forwarded traffic, which the Calico stand-in accepts first, as
# Calico does): only the nodeport filter (mangle PREROUTING) keeps them from the outsider.

NODEPORT_STEP="NodePorts: ingress ones from ingress_allowed, the rest from admin_allowed, the nodes and pods"
NODEPORT_UNIT="bootstrap-nodeport-filter.service"

# The hand-off's NodePort Services answer: the ingress controller's HTTP NodePort and Grafana's
# (the manifests stage ran in `all`); waited for until the admin machine opens both on the master.
nodeport_services_up() {
  local http="$1" grafana="$2" i
  for i in $(seq 60); do
    tcp_open "$(host_addr master)" "$http" && tcp_open "$(host_addr master)" "$grafana" && return 0
    sleep 1
  done
  echo "the admin machine cannot open $http and $grafana on the master"
  return 1
}

outsider_opens() { on_outsider bash -c "$(declare -f tcp_open); tcp_open $1 $2"; }
outsider_cannot_open() { on_outsider bash -c "$(declare -f tcp_open tcp_closed); tcp_closed $1 $2"; }

check_node_firewalls() {
  local http grafana api h addr
  http="$(toml_get "$INVENTORY" vars.ingress_http_node_port)"
  grafana="$(toml_get "$INVENTORY" vars.grafana_node_port)"
  api="$(toml_get "$INVENTORY" vars.api_port)"
  check "firewall: the ingress controller on NodePort $http and Grafana on $grafana answer the admin machine" \
    nodeport_services_up "$http" "$grafana"
  for h in master worker; do
    addr="$(host_addr "$h")"
    check "firewall: the outsider opens the ingress NodePort $addr:$http ($h)" outsider_opens "$addr" "$http"
    check "firewall: the outsider cannot open Grafana's NodePort $addr:$grafana ($h)" outsider_cannot_open "$addr" "$grafana"
    check "firewall: the admin machine opens Grafana's NodePort $addr:$grafana ($h)" tcp_open "$addr" "$grafana"
    check "firewall: the nodeport filter is jumped to from mangle PREROUTING on $h" \
      on_host "$h" "sudo iptables -w -t mangle -C PREROUTING -j BOOTSTRAP-NODEPORTS"
  done
  addr="$(host_addr master)"
  check "firewall: the outsider cannot open the master's API $addr:$api" outsider_cannot_open "$addr" "$api"
  check "firewall: the outsider cannot open the master's kubelet $addr:10250" outsider_cannot_open "$addr" 10250
  check "firewall: the admin machine opens the master's API $addr:$api" tcp_open "$addr" "$api"
  # ufw never touches the mangle table: a reload keeps the filter.
  check "firewall: ufw reload on the worker" on_host worker "sudo ufw reload >/dev/null"
  check "firewall: ... and the outsider still cannot open $(host_addr worker):$grafana" \
    outsider_cannot_open "$(host_addr worker)" "$grafana"
  check "firewall: ... and still opens $(host_addr worker):$http" outsider_opens "$(host_addr worker)" "$http"
  # What boot does: the unit loads the chain and the jump from its file.
  check "firewall: with the chain and its jump removed by hand, the unit (as at boot) loads them again" \
    on_host worker "sudo sh -c 'iptables -w -t mangle -D PREROUTING -j BOOTSTRAP-NODEPORTS && iptables -w -t mangle -F BOOTSTRAP-NODEPORTS &&
      systemctl restart $NODEPORT_UNIT && systemctl is-enabled --quiet $NODEPORT_UNIT && iptables -w -t mangle -C PREROUTING -j BOOTSTRAP-NODEPORTS'"
  check "firewall: ... and the outsider still cannot open $(host_addr worker):$grafana" \
    outsider_cannot_open "$(host_addr worker)" "$grafana"
  # A flushed chain is drift the probe sees: --check names only the NodePorts step, a run restores it.
  on_host worker "sudo iptables -w -t mangle -F BOOTSTRAP-NODEPORTS" >/dev/null
  check "firewall: a flushed chain opens Grafana's NodePort to the outsider (the lab shows the filter is what blocks it)" \
    outsider_opens "$(host_addr worker)" "$grafana"
  check "firewall: ... --check reports only the NodePorts step" exit_code_is 0 bootstrap_json nodeports-drift-check --check worker
  check "firewall: ... (changed steps)" changed_steps_are nodeports-drift-check "$(worker_steps "$NODEPORT_STEP")"
  check "firewall: ... a real run changes only that step" exit_code_is 0 bootstrap_json nodeports-drift worker
  check "firewall: ... (changed steps)" changed_steps_are nodeports-drift "$(worker_steps "$NODEPORT_STEP")"
  check "firewall: ... and the outsider cannot open $(host_addr worker):$grafana again" \
    outsider_cannot_open "$(host_addr worker)" "$grafana"
  check "firewall: ... and a further run changes 0" exit_code_is 0 bootstrap_json nodeports-drift-2 worker
  check "firewall: ... (summary)" summary_is nodeports-drift-2 changed 0
}

check_real_cluster() {
  local pw
  pw="$(secret_value db_password)"
  check "cluster: master and worker Ready at the pinned version (admin kubectl, fetched kubeconfig)" nodes_ready_at_version
  check "cluster: the API server's version is the pinned one" server_version_is_pinned
  check "cluster: every kube-system pod Running and ready (control plane, kube-proxy and calico-node on both nodes, CoreDNS, kube-controllers)" kube_system_pods_running
  check "cluster: no join token in the master's kubelet/containerd journal" no_join_token_on_host master
  check "cluster: no join token in the worker's kubelet/containerd journal" no_join_token_on_host worker
  check "cluster: a toolbox pod (lab registry image) runs on the master" toolbox_pod_on lab-probe-master master
  check "cluster: a toolbox pod runs on the worker" toolbox_pod_on lab-probe-worker worker
  check "data path: the pod on the worker logs in to PostgreSQL on $DB_ADDR as $DB_USER" pod_logs_in_to_postgres lab-probe-worker "$pw"
  check "data path: the pod on the master logs in to PostgreSQL on $DB_ADDR as $DB_USER" pod_logs_in_to_postgres lab-probe-master "$pw"
  check "dns: a pod resolves kubernetes.default through CoreDNS" pod_resolves_kubernetes_default lab-probe-worker
  check "network: the pool is vxlanMode Always, ipipMode Never" pool_is_vxlan_always
  check "network: the master routes the worker's pod block through vxlan.calico" route_via_vxlan
  check "network: pod on the worker to pod on the master, carried as UDP 4789 between the nodes" pod_to_pod_over_vxlan
  check "data path: the outsider still cannot open $DB_ADDR:$DB_PORT" \
    outsider_cannot_open "$DB_ADDR" "$DB_PORT"
  kubectl_on_master "delete pod lab-probe-master lab-probe-worker --ignore-not-found --wait=false" >/dev/null || true
}
