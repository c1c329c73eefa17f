#!/usr/bin/env bash
# Benchmark on the real roles: no-op reruns on the converged container lab, then the same with
# 50 ms of round-trip time added on the lab's links (what a laptop far from its servers sees).
# Usage (root; take the shared lab lock):
#   flock /tmp/bootstrap-lab.lock bench/lab-rerun.sh [runs]        (default 10 runs)
# Brings the lab up unless it is up already (and then leaves it up; a lab it started it takes
# down, also on failure). Converges `all` if it can, else each part that converges on the lab
# (the Kubernetes parts need the cluster), then times each converged command's no-op rerun.
# Env: BOOTSTRAP_BIN (default target/release/bootstrap); BENCH_BINS="label=path ..." to time
# several binaries on the same converged lab (e.g. before=... after=...); BENCH_PARTS (default
# "all worker elk": the first that converges among `all`, else the others one by one).
set -euo pipefail
runs="${1:-10}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
lab="$repo/tests/lab/lab"
bin="${BOOTSTRAP_BIN:-$repo/target/release/bootstrap}"
bins="${BENCH_BINS:-current=$bin}"
state="${BOOTSTRAP_LAB_STATE:-/var/lib/bootstrap-lab}"
export BOOTSTRAP_PLAYBOOKS="${BOOTSTRAP_PLAYBOOKS:-$repo/playbooks}"
[[ $(id -u) == 0 ]] || { echo "run as root (the lab needs it)" >&2; exit 2; }

# Each machine's link: the host side of its veth delays what goes to the machine, the machine's
# eth0 what comes back: 25 ms each way, 50 ms round trip.
machines=(master worker elk)
delay_on() {
  local m
  for m in "${machines[@]}"; do
    tc qdisc replace dev "bsl-$m" root netem delay 25ms
    ip netns exec "bslab-$m" tc qdisc replace dev eth0 root netem delay 25ms
  done
}
delay_off() {
  local m
  for m in "${machines[@]}"; do
    tc qdisc del dev "bsl-$m" root 2>/dev/null || true
    ip netns exec "bslab-$m" tc qdisc del dev eth0 root 2>/dev/null || true
  done
}

started_lab=0
cleanup() {
  delay_off
  if ((started_lab)); then "$lab" down >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

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

for link in "lab link" "+50 ms RTT"; do
  if [[ $link == "+50 ms RTT" ]] && ! delay_on 2>/dev/null; then
    # Some kernels are built without sch_netem ("Specified qdisc kind is unknown").
    echo "$link: skipped: this kernel has no netem qdisc (tc qdisc add ... netem failed)"
    delay_off
    continue
  fi
  echo "$link:"
  for part in "${timed_parts[@]}"; do
    for entry in $bins; do
      measure "${entry%%=*}" "${entry#*=}" "$part"
    done
  done
done
delay_off
# Where the time goes on the last binary, no added delay.
last="${bins##*=}"
echo "slowest probes and steps (${bins##* }, bootstrap ${timed_parts[0]}):"
"$last" -i "$inv" --timings "${timed_parts[0]}" | sed -n '/^TIMINGS/,$p'
