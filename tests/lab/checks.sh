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
