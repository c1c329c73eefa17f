#!/usr/bin/env bash
# Benchmark on the real roles: no-op reruns on the converged container lab, then the same with
# 50 ms of round-trip time added on the path to the machines (what a laptop far from its
# servers sees), then the round trips ("turns") per host of one no-op rerun.
# Usage (root; take the shared lab lock):
#   flock /tmp/bootstrap-lab.lock bench/lab-rerun.sh [runs]        (default 10 runs)
# Brings the lab up unless it is up already (and then leaves it up; a lab it started it takes
# down, also on failure). Converges `all` if it can, else each part that converges on the lab
# (the Kubernetes parts need the cluster), then times each converged command's no-op rerun.
# Env: BOOTSTRAP_BIN (default target/release/bootstrap); BENCH_BINS="label=path[@playbooks] ..."
# to time several binaries on the same converged lab (e.g. before=...@/old/checkout/playbooks
# after=...: a binary with the playbooks of its own commit); BENCH_PARTS (default
# "all worker elk": the first that converges among `all`, else the others one by one).
#
# The added delay: `tc netem` on each machine's veth when the kernel has it; else
# bench/delay-proxy.py, a userspace proxy that delays every chunk 25 ms in each direction, with
# iptables nat OUTPUT rules (chain BSLAB-DELAY) redirecting this host's connections to the
# machines' port 22 into it. The inventory is untouched (the playbooks render its addresses, so
# changing them would make the rerun change things); the proxy runs as `nobody` and its own upstream
# connections are exempt from the redirect. Only SSH is delayed that way (all bootstrap sends);
# netem would also delay the machines' traffic to this host (apt proxy, stand-in repository),
# which a no-op rerun does not use.
set -euo pipefail
runs="${1:-10}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
lab="$repo/tests/lab/lab"
bin="${BOOTSTRAP_BIN:-$repo/target/release/bootstrap}"
bins="${BENCH_BINS:-current=$bin}"
state="${BOOTSTRAP_LAB_STATE:-/var/lib/bootstrap-lab}"
export BOOTSTRAP_PLAYBOOKS="${BOOTSTRAP_PLAYBOOKS:-$repo/playbooks}"
[[ $(id -u) == 0 ]] || { echo "run as root (the lab needs it)" >&2; exit 2; }
# MACHINES, MACHINE_IP, VETH_PREFIX, NETNS_PREFIX: the lab's own names and addresses.
# shellcheck source=tests/lab/lib.sh
source "$repo/tests/lab/lib.sh"
machines=("${MACHINES[@]}")
delay_ms=25 # per direction: 50 ms round trip

# Each machine's link: the host side of its veth delays what goes to the machine, the machine's
# eth0 what comes back: 25 ms each way, 50 ms round trip.
netem_on() {
  local m
  for m in "${machines[@]}"; do
    # Called as a condition, where set -e is off: stop at the first failure.
    tc qdisc replace dev "$VETH_PREFIX$m" root netem delay "${delay_ms}ms" || return 1
    ip netns exec "$NETNS_PREFIX$m" tc qdisc replace dev eth0 root netem delay "${delay_ms}ms" || return 1
  done
}
netem_off() {
  local m
  for m in "${machines[@]}"; do
    tc qdisc del dev "$VETH_PREFIX$m" root 2>/dev/null || true
    ip netns exec "$NETNS_PREFIX$m" tc qdisc del dev eth0 root 2>/dev/null || true
  done
}

# The userspace path. The proxy runs as nobody from a copy in a world-readable temp dir (the
# checkout may sit where nobody cannot read, e.g. under /root), with the system python3 (a
# pyenv shim under /root is out of nobody's reach too).
chain=BSLAB-DELAY
pidfile=/run/bootstrap-bench-delay-proxy.pid
py=/usr/bin/python3
[[ -x $py ]] || py="$(command -v python3)"

redirect_off() {
  while iptables -t nat -D OUTPUT -j "$chain" 2>/dev/null; do :; done
  iptables -t nat -F "$chain" 2>/dev/null || true
  iptables -t nat -X "$chain" 2>/dev/null || true
}

# A proxy left by a run killed hard (its rules go with redirect_off): stop it by its pid file,
# if that pid is still a delay proxy, and remove that run's temp dir once it has exited.
stale_proxy_off() {
  local pid dir
  pid="$(cat "$pidfile" 2>/dev/null)" || return 0
  if [[ $pid =~ ^[0-9]+$ ]] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q 'delay-proxy.py'; then
    dir="$(tr '\0' '\n' <"/proc/$pid/cmdline" | sed -n 's|^\(/tmp/bootstrap-bench\.[A-Za-z0-9]*\)/delay-proxy\.py$|\1|p')"
    kill "$pid" 2>/dev/null || true
    tail --pid="$pid" -f /dev/null # not our child: wait for its exit without polling
    [[ -z $dir ]] || rm -rf -- "$dir"
  fi
  rm -f "$pidfile"
}

# proxy_on DELAY_MS STATS_FILE: start the proxy, wait for its ready line (no sleep), then
# redirect this host's SSH connections to each machine into its port for that machine.
proxy_on() {
  local routes=() m line entry target
  for m in "${machines[@]}"; do routes+=(--route "${MACHINE_IP[$m]}:22"); done
  rm -f "$work/ready"
  mkfifo "$work/ready"
  setpriv --reuid=nobody --regid=nogroup --clear-groups \
    "$py" "$work/delay-proxy.py" --delay-ms "$1" --stats "$2" "${routes[@]}" \
    >"$work/ready" 2>>"$work/proxy.log" &
  proxy_pid=$!
  echo "$proxy_pid" >"$pidfile"
  if ! read -r -t 30 line <"$work/ready" || [[ $line != "ready "* ]]; then
    echo "the delay proxy did not start: $(cat "$work/proxy.log")" >&2
    return 1
  fi
  redirect_off
  iptables -t nat -N "$chain"
  for entry in ${line#ready }; do
    target="${entry#*=}"
    iptables -t nat -A "$chain" -p tcp -d "${target%:*}" --dport "${target##*:}" \
      -m owner ! --uid-owner nobody -j REDIRECT --to-ports "${entry%%=*}"
  done
  iptables -t nat -A OUTPUT -j "$chain"
}

# Rules first (nothing new reaches a stopped proxy), then SIGTERM: the proxy writes its stats
# file and exits; `wait` returns once it has.
proxy_off() {
  redirect_off
  if [[ -n $proxy_pid ]]; then
    kill -TERM "$proxy_pid" 2>/dev/null || true
    wait "$proxy_pid" 2>/dev/null || true
    proxy_pid=""
    rm -f "$pidfile"
  fi
}

started_lab=0 proxy_pid="" work=""
cleanup() {
  proxy_off
  netem_off
  [[ -z $work ]] || rm -rf "$work"
  if ((started_lab)); then "$lab" down >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# Whatever a run killed hard left behind.
redirect_off
stale_proxy_off
netem_off
work="$(mktemp -d /tmp/bootstrap-bench.XXXXXX)"
chmod 755 "$work"
install -m 644 "$repo/bench/delay-proxy.py" "$work/delay-proxy.py"
install -d -m 755 -o nobody "$work/stats"

if [[ -f $state/inventory.toml ]] && "$bin" -i "$state/inventory.toml" ping >/dev/null 2>&1; then
  echo "lab: reusing the running lab"
else
  echo "lab: bringing it up"
  started_lab=1
  "$lab" up >/dev/null
fi
inv="$state/inventory.toml"
command -v tc >/dev/null || apt-get install -y -qq iproute2 >/dev/null
command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine >/dev/null 2>&1 || true

"$bin" -i "$inv" secrets init >/dev/null
# Converge (twice: the second must change nothing); keep the parts that converge.
timed_parts=()
for part in ${BENCH_PARTS:-all worker elk}; do
  if [[ $part != all && " ${timed_parts[*]} " == *" all "* ]]; then continue; fi
  if "$bin" -i "$inv" "$part" >/dev/null 2>&1 \
    && "$bin" -i "$inv" --json "$part" 2>/dev/null \
      | jq -se 'map(select(.type == "summary")) | .[0].changed == 0 and .[0].failed == 0' >/dev/null; then
    timed_parts+=("$part")
    echo "converged: bootstrap $part"
  else
    echo "not converged on this lab (not timed): bootstrap $part"
  fi
done
((${#timed_parts[@]})) || { echo "nothing converged" >&2; exit 1; }

# min/median/max of the wall times (seconds) on stdin, one per line.
stats() { sort -n | awk '{ t[NR] = $1 } END { printf "min %.3f s  median %.3f s  max %.3f s  (%d runs)\n", t[1], (NR % 2 ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2), t[NR], NR }'; }

measure() {
  local label="$1" b="$2" part="$3" out
  # path@playbooks: that binary with those playbooks.
  if [[ $b == *@* ]]; then
    local BOOTSTRAP_PLAYBOOKS="${b#*@}"
    export BOOTSTRAP_PLAYBOOKS
    b="${b%%@*}"
  fi
  if command -v hyperfine >/dev/null; then
    out="$(mktemp)"
    hyperfine -N --warmup 1 --runs "$runs" --export-json "$out" "$b -i $inv $part" >/dev/null 2>&1
    python3 -c 'import json,sys; [print(t) for t in json.load(open(sys.argv[1]))["results"][0]["times"]]' "$out" | stats
    rm -f "$out"
  else
    "$b" -i "$inv" "$part" >/dev/null
    for _ in $(seq "$runs"); do
      /usr/bin/time -f %e "$b" -i "$inv" "$part" 2>&1 >/dev/null | tail -n 1
    done | stats
  fi | sed "s/^/  $label  bootstrap $part: /"
}

# One round trip on the path to each machine's sshd (see --measure-ssh-rtt in delay-proxy.py),
# median of 3: shows the added delay is really there.
path_rtt() {
  local m out=()
  for m in "${machines[@]}"; do
    out+=("$m $("$py" "$work/delay-proxy.py" --measure-ssh-rtt "${MACHINE_IP[$m]}:22" --count 3) ms")
  done
  local IFS=,
  echo "  one TCP round trip to sshd (our version line -> its key exchange init, median of 3):${out[*]/#/ }"
  /usr/bin/time -f "  bootstrap ping (connect, log in, one command; all hosts at once): %e s" \
    "$last" -i "$inv" ping >/dev/null
}
time_parts() {
  local part entry
  for part in "${timed_parts[@]}"; do
    for entry in $bins; do
      measure "${entry%%=*}" "${entry#*=}" "$part"
    done
  done
}
last="${bins##*=}"
last="${last%%@*}"

echo "lab link:"
path_rtt
time_parts
if command -v tc >/dev/null && netem_on 2>/dev/null; then
  # The proxy then only counts turns, adding nothing.
  link="tc netem" count_delay=0
  echo "+50 ms RTT (tc netem):"
else
  # Some kernels are built without sch_netem ("Specified qdisc kind is unknown").
  netem_off
  link="proxy" count_delay="$delay_ms"
  proxy_on "$delay_ms" "$work/stats/timing.json"
  echo "+50 ms RTT (userspace delay proxy: $delay_ms ms per direction per chunk; no netem in this kernel):"
fi
path_rtt
time_parts
proxy_off

# Turns per host of one no-op rerun, through the proxy (and netem when that adds the delay).
# A turn: data from the machine right after data to it, i.e. one request/response exchange,
# counted on TCP chunks (the SSH messages are encrypted). It includes the SSH handshake (key
# exchange, auth), channel opens, window adjusts and answered keepalives, so `bootstrap ping`
# (handshake + one command) is counted too: the difference is the run's own beyond one command.
turns() {
  local name="$1" file="$work/stats/$1.json"
  shift
  proxy_on "$count_delay" "$file"
  "$last" -i "$inv" "$@" >/dev/null || echo "  (bootstrap $* failed)"
  proxy_off
  jq -r '.routes[] | [(.upstream | sub(":22$"; "")), (.connections | length),
      ([.connections[].turns] | add // 0), ([.connections[].exchanges[][2] // 0] | add // 0 | round)]
      | @tsv' "$file" >"$work/stats/$name.txt"
}
turns_of() { awk -v ip="$2" '$1 == ip { print $'"$3"' }' "$work/stats/$1.txt"; }
echo "turns per host (request/response exchanges on the wire, SSH handshake included; one run each, +50 ms RTT via $link):"
turns ping ping
# What ping's turns are, to tell the handshake from the command: bytes up/back per exchange.
jq -r --arg up "${MACHINE_IP[${machines[0]}]}:22" '.routes[] | select(.upstream == $up)
    | .connections[0].exchanges | map("\(.[0])/\(.[1])") | join(" ")' "$work/stats/ping.json" \
  | sed "s|^|  bootstrap ping on ${machines[0]}, bytes up/back per exchange: |"
for part in "${timed_parts[@]}"; do
  turns "$part" "$part"
  for m in "${machines[@]}"; do
    addr="${MACHINE_IP[$m]}"
    t="$(turns_of "$part" "$addr" 3)" p="$(turns_of ping "$addr" 3)"
    printf '  %-7s bootstrap %s: %s turns in %s connection(s), the host answering %s ms in all; bootstrap ping: %s turns; the run beyond ping: %s\n' \
      "$m" "$part" "$t" "$(turns_of "$part" "$addr" 2)" "$(turns_of "$part" "$addr" 4)" "$p" "$((t - p))"
  done
done
netem_off

# Where the time goes on the last binary, no added delay.
echo "slowest probes and steps (${bins##* }, bootstrap ${timed_parts[0]}):"
"$last" -i "$inv" --timings "${timed_parts[0]}" | sed -n '/^TIMINGS/,$p'
