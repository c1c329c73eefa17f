#!/usr/bin/env bash
# How `bootstrap check` scales with the inventory: generates inventories of 1,000, 2,000 and
# 5,000 hosts (one master, one elk, the rest workers, with the shipped [vars] and [secrets]) and
# times `check` on each with the repository's playbooks. Nothing is contacted.
#
# usage: bench/check-scale.sh [SIZES...]     (default: 1000 2000 5000)
# BOOTSTRAP_BIN: the binary to time (default: target/release/bootstrap, built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
bin="${BOOTSTRAP_BIN:-${CARGO_TARGET_DIR:-target}/release/bootstrap}"
[[ -x $bin ]] || cargo build --release --quiet
sizes=("$@")
[[ ${#sizes[@]} -gt 0 ]] || sizes=(1000 2000 5000)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The shipped inventory's [vars] and [secrets], after generated hosts.
shipped_tail="$(sed -n '/^\[vars\]/,$p' inventory.toml)"
for n in "${sizes[@]}"; do
  inv="$work/inventory-$n.toml"
  {
    # 172.16.0.0/12: clear of the shipped pod and service CIDRs.
    printf '[hosts.master]\naddress = "172.16.0.1"\nroles = ["master"]\n'
    printf '[hosts.elk]\naddress = "172.16.0.2"\nroles = ["elk"]\n'
    for ((i = 3; i <= n; i++)); do
      printf '[hosts.w%05d]\naddress = "172.16.%d.%d"\nroles = ["worker"]\n' "$i" $((i / 256)) $((i % 256))
    done
    printf '%s\n' "$shipped_tail"
  } >"$inv"
  if command -v hyperfine >/dev/null; then
    hyperfine --runs 3 --warmup 1 --command-name "check, $n hosts" \
      "'$bin' -i '$inv' --playbooks '$repo/playbooks' check"
  else
    printf 'check, %s hosts: ' "$n"
    # bash's `time` keyword: wall, user and system seconds of the whole check.
    TIMEFORMAT='%R s wall, %U s user, %S s sys'
    time "$bin" -i "$inv" --playbooks "$repo/playbooks" check >/dev/null
  fi
done
