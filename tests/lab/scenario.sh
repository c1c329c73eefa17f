#!/usr/bin/env bash
# The end-to-end scenario, run by `tests/lab/lab scenario` (container lab) and by the Vagrant
# workflow (LAB_KIND=vagrant). Prints PASS/FAIL lines and closes with "N passed, M failed".
#
# Environment:
#   LAB_KIND        container | vagrant
#   INVENTORY       the inventory to pass to bootstrap -i
#   BOOTSTRAP_BIN   the binary (default: target/release/bootstrap in the repo)
#   SCENARIO_ALL    1: also converge the product (`bootstrap all`) twice
#   VAGRANT_SSH_CONFIG  (vagrant) output of `vagrant ssh-config`, written to a file
#   VAGRANT_OUTSIDER_ADDR  (vagrant) the runner's address on the private network (192.168.56.1)
set -euo pipefail

LAB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$LAB_DIR/../.." && pwd)"
BOOTSTRAP_BIN="${BOOTSTRAP_BIN:-$REPO_ROOT/target/release/bootstrap}"
INVENTORY="${INVENTORY:?INVENTORY must name the lab inventory}"
LAB_KIND="${LAB_KIND:-container}"
LAB_LOGS="${LAB_LOGS:-$(mktemp -d /tmp/bootstrap-lab-scenario.XXXXXX)}"
mkdir -p "$LAB_LOGS"

# shellcheck source=tests/lab/checks.sh
source "$LAB_DIR/checks.sh"

# The address of a machine, read from the inventory ([hosts.NAME] address = "...").
host_addr() {
  awk -v h="[hosts.$1]" '$0 == h { f = 1; next } /^\[/ { f = 0 } f && $1 == "address" { gsub(/"/, "", $3); print $3; exit }' "$INVENTORY"
}

# shellcheck source=tests/lab/checks-handoff.sh
source "$LAB_DIR/checks-handoff.sh"

# `all` as the scenario runs it: every stage, the manifests stage on the real cluster included.
ALL=(all)

case "$LAB_KIND" in
  container)
    # The real kubectl of the lab's build, as on an admin machine.
    ADMIN_KUBECTL="$("$LAB_DIR/build/build.sh" --path kubernetes)/bin/kubectl"
    on_host() { "$LAB_DIR/lab" ssh "$1" "$2"; }
    on_outsider() { "$LAB_DIR/lab" exec-outsider "$@"; }
    # at_position NAME CMD...: a host command with NAME's address (inside its namespace).
    at_position() { "$LAB_DIR/lab" exec-ns "$@"; }
    outsider_addr() { on_outsider ip -4 -o addr show dev eth0 | awk '{ sub("/.*", "", $4); print $4 }'; }
    ;;
  vagrant)
    # The runner itself is on the private network but is none of the machines: it is the outsider.
    on_host() { ssh -F "${VAGRANT_SSH_CONFIG:?}" -o BatchMode=yes -o LogLevel=ERROR "$1" "$2"; }
    # The runner's own kubectl, with the kubeconfigs bootstrap fetched.
    ADMIN_KUBECTL="${ADMIN_KUBECTL:-kubectl}"
    on_outsider() { "$@"; }
    # Only the outsider's position is the runner's own; checks fall back to on_host elsewhere.
    at_position() {
      [[ $1 == outsider ]] || { echo "no host-side position for $1 in the vagrant lab" >&2; return 125; }
      "${@:2}"
    }
    outsider_addr() { printf '%s' "${VAGRANT_OUTSIDER_ADDR:-192.168.56.1}"; }
    ;;
  *)
    echo "unknown LAB_KIND: $LAB_KIND" >&2
    exit 2
    ;;
esac

[[ -x $BOOTSTRAP_BIN ]] || { echo "no bootstrap binary at $BOOTSTRAP_BIN (set BOOTSTRAP_BIN)" >&2; exit 2; }
echo "scenario: $LAB_KIND lab, inventory $INVENTORY, binary $BOOTSTRAP_BIN, logs $LAB_LOGS"

check_ping
check_ssh_from_outsider
# Every run resolves the inventory's declared secrets, so they must exist before the first run.
check_secrets_init
check_smoke "$LAB_DIR/playbooks/smoke.toml"
# Role issues append their checks here (see checks.sh).
# The control plane first: `bootstrap worker` joins the worker to it.
check_kubernetes_master
check_worker
# On the converged worker: drifts by hand that the cheap probes must still see (issue 13).
check_worker_probes_see_drift
check_kubernetes
if [[ $LAB_KIND == container ]]; then
  check_real_cluster
  check_node_firewalls
fi
check_manifests
check_elk
# The seed's five flows and the backup CronJob on the hand-off (after check_elk: the logs flow).
check_handoff
check_firewall_lockout_guard "$LAB_DIR/playbooks/lockout.toml"
check_firewall_rollback_left_behind
check_all_converged
if [[ ${SCENARIO_ALL:-0} == 1 ]]; then
  check_converges all "${ALL[@]}"
fi

checks_summary
