#!/usr/bin/env bash
# Benchmark: a no-op rerun of a 20-step playbook (10 directories + 10 lines in one file) on 5
# hosts, all served by one throwaway OpenSSH sshd on 127.0.0.1 (never a real host).
# Usage: bench/noop-rerun.sh [runs]   (default 20). Needs: sshd, ssh-keygen; hyperfine if present.
# Logs in as BENCH_USER (default bootstrap-test, made by .ci/setup) with become (sudo -n), as on
# a cloud image. Root's ~/.bashrc on the CI machines runs `pyenv init` (~250 ms per command), a
# cost of that shell set-up rather than of any tool; BENCH_USER=root measures it anyway.
set -euo pipefail
runs="${1:-20}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
bin="${BOOTSTRAP_BIN:-$repo/target/release/bootstrap}"
[ -x "$bin" ] || (cd "$repo" && cargo build --release --quiet)

work="$(mktemp -d /tmp/bootstrap-bench.XXXXXX)"
sshd_pid=""
cleanup() { [ -n "$sshd_pid" ] && kill "$sshd_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$work/client_key"
cp "$work/client_key.pub" "$work/authorized_keys"
# sshd reads authorized_keys as the logging-in user.
chmod 755 "$work"; chmod 644 "$work/authorized_keys"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat > "$work/sshd_config" <<CFG
ListenAddress 127.0.0.1
ListenAddress 127.0.0.2
ListenAddress 127.0.0.3
ListenAddress 127.0.0.4
ListenAddress 127.0.0.5
Port $port
HostKey $work/host_key
AuthorizedKeysFile $work/authorized_keys
PidFile $work/sshd.pid
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
MaxSessions 100
MaxStartups 100
CFG
mkdir -p /run/sshd
/usr/sbin/sshd -D -e -f "$work/sshd_config" 2>"$work/sshd.log" &
sshd_pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done

{
  echo "[ssh]"; echo "user = \"${BENCH_USER:-bootstrap-test}\""; echo "become = true"; echo "port = $port"; echo "key = \"$work/client_key\""
  for i in 1 2 3 4 5; do
    printf '[hosts.h%s]\naddress = "127.0.0.%s"\nroles = ["worker"]\n' "$i" "$i"
  done
} > "$work/inventory.toml"
mkdir -p "$work/playbooks" "$work/files"
{
  echo 'name = "bench: 10 directories + 10 lines"'; echo 'hosts = "all"'
  for i in $(seq 10); do
    printf '[[steps]]\nname = "dir %s"\nfile = { path = "%s/{{ host.name }}/d%s", state = "directory", mode = "0755" }\n' "$i" "$work/root" "$i"
  done
  for i in $(seq 10); do
    printf '[[steps]]\nname = "line %s"\nline = { path = "%s/{{ host.name }}/settings.conf", line = "key%s = value%s", create = true }\n' "$i" "$work/root" "$i" "$i"
  done
} > "$work/playbooks/bench.toml"

# The five inventory hosts are one machine: each keeps its run lock and state apart.
export BOOTSTRAP_HOST_STATE_DIR="$work/state-{host}"
run() { "$bin" -i "$work/inventory.toml" --json run "$work/playbooks/bench.toml"; }
# Converge once (records the host key), then every run must change nothing.
run >/dev/null
summary="$(run | tail -n 1)"
echo "$summary" | grep -q '"changed":0' || { echo "not a no-op rerun: $summary" >&2; exit 1; }

echo "no-op rerun, 20 steps x 5 hosts, $runs runs:"
if command -v hyperfine >/dev/null; then
  hyperfine --warmup 2 --runs "$runs" --export-json "$work/h.json" \
    "$bin -i $work/inventory.toml --json run $work/playbooks/bench.toml" | sed -n '1,4p'
else
  start=$(date +%s%N)
  for _ in $(seq "$runs"); do run >/dev/null; done
  end=$(date +%s%N)
  echo "mean: $(( (end - start) / runs / 1000000 )) ms"
fi
