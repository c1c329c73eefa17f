# shellcheck shell=bash
# The container lab: constants and functions used by tests/lab/lab.
# Sourced, never run. Everything it creates is named after LAB_PREFIX so `down` can find it again.

LAB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$LAB_DIR/../.." && pwd)"
# The lab inventory lives in $LAB_STATE, away from the checkout: run the checkout's playbooks,
# said explicitly (bootstrap resolves them beside the inventory, else its built-in copy).
export BOOTSTRAP_PLAYBOOKS="${BOOTSTRAP_PLAYBOOKS:-$REPO_ROOT/playbooks}"

# Outside the repo: the rootfs survives `down`, the state dir does not.
LAB_CACHE="${BOOTSTRAP_LAB_CACHE:-/var/cache/bootstrap-lab}"
LAB_STATE="${BOOTSTRAP_LAB_STATE:-/var/lib/bootstrap-lab}"

SUITE="bookworm"
MIRROR="http://deb.debian.org/debian"
# python3 and python3-yaml: the Elastic stand-ins are Python programs (Depends of their packages).
INCLUDE_PKGS="systemd,systemd-sysv,dbus,openssh-server,sudo,iproute2,ca-certificates,netcat-openbsd,curl,procps,kmod,iptables,python3,python3-yaml"

# 10.213.7.0/24: unlikely to collide with home, cloud or Docker defaults.
LAB_NET_PREFIX="10.213.7"
LAB_BRIDGE="bslab0"
LAB_HOST_IP="${LAB_NET_PREFIX}.1"
LAB_PROXY_PORT=3128
LAB_REPO_PORT=8080
NETNS_PREFIX="bslab-"
VETH_PREFIX="bsl-"

# The platform's machines (the lab inventory's hosts): master and worker run real Kubernetes
# (tests/lab/build/: built from source, served by the lab's apt repository and registries).
PLATFORM_MACHINES=(master worker elk)
MACHINES=("${PLATFORM_MACHINES[@]}")
# Whether machine $1 runs containers (real Kubernetes): it is booted with what runc needs.
runs_containers() { [[ $1 == master || $1 == worker ]]; }
declare -A MACHINE_IP=([master]="${LAB_NET_PREFIX}.11" [worker]="${LAB_NET_PREFIX}.12" [elk]="${LAB_NET_PREFIX}.13"
  [outsider]="${LAB_NET_PREFIX}.99")
SSH_WAIT_SECONDS="${BOOTSTRAP_LAB_SSH_WAIT:-120}"

log() { printf '[lab %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

need_root() { [[ $EUID -eq 0 ]] || die "the lab needs root (namespaces, mounts, nspawn)"; }

# The host tools the lab uses; installed from Debian's archive when missing.
ensure_host_tools() {
  local -A want=([debootstrap]=debootstrap [systemd-nspawn]=systemd-container [tinyproxy]=tinyproxy
    [dpkg-scanpackages]=dpkg-dev [apt-ftparchive]=apt-utils [ssh]=openssh-client
    [ssh-keygen]=openssh-client [jq]=jq [tcpdump]=tcpdump [ip]=iproute2 [python3]=python3 [gpg]=gpg [gpgconf]=gpgconf)
  local tool missing=()
  for tool in "${!want[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${want[$tool]}")
  done
  ((${#missing[@]} == 0)) && return 0
  log "installing host tools: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ---------------------------------------------------------------- rootfs cache

# The cache name carries a hash of its definition, so changing the package list rebuilds it.
rootfs_dir() {
  local sum
  sum="$(printf '%s %s %s %s' "$SUITE" "$INCLUDE_PKGS" "$MIRROR" "$(rootfs_recipe_version)" | sha256sum | cut -c1-12)"
  printf '%s/rootfs-%s-%s' "$LAB_CACHE" "$SUITE" "$sum"
}

# Bump when prepare_rootfs changes what it writes.
rootfs_recipe_version() { echo 3; }

ensure_rootfs() {
  local dest tmp
  dest="$(rootfs_dir)"
  if [[ -f "$dest/.lab-complete" ]]; then
    log "rootfs cached: $dest"
    return 0
  fi
  mkdir -p "$LAB_CACHE"
  # A build interrupted earlier leaves only *.tmp.* dirs, never a half cache under the final name.
  rm -rf "$LAB_CACHE"/rootfs-*.tmp.*
  tmp="$(mktemp -d "$dest.tmp.XXXXXX")"
  log "building rootfs with debootstrap ($SUITE, minbase) into $tmp"
  debootstrap --variant=minbase --include="$INCLUDE_PKGS" "$SUITE" "$tmp" "$MIRROR" >"$tmp.log" 2>&1 \
    || { tail -20 "$tmp.log" >&2; die "debootstrap failed (log: $tmp.log)"; }
  prepare_rootfs "$tmp"
  touch "$tmp/.lab-complete"
  rm -rf "$dest" "$tmp.log"
  mv "$tmp" "$dest"
  # Older definitions of the cache are of no further use.
  find "$LAB_CACHE" -maxdepth 1 -name "rootfs-$SUITE-*" ! -path "$dest" -exec rm -rf {} +
  log "rootfs ready: $dest"
}

# What every machine shares, as on a Vagrant box: a vagrant user with passwordless sudo.
prepare_rootfs() {
  local root="$1"
  chroot "$root" useradd --create-home --shell /bin/bash vagrant
  printf 'vagrant ALL=(ALL) NOPASSWD: ALL\n' >"$root/etc/sudoers.d/vagrant"
  chmod 0440 "$root/etc/sudoers.d/vagrant"
  # Host keys and machine-id must be unique per machine: made when a machine is created.
  rm -f "$root"/etc/ssh/ssh_host_*
  : >"$root/etc/machine-id"
  # Timers that run apt at random times would make runs flaky and are not what the lab tests.
  ln -sf /dev/null "$root/etc/systemd/system/apt-daily.timer"
  ln -sf /dev/null "$root/etc/systemd/system/apt-daily-upgrade.timer"
  chroot "$root" apt-get clean
}

# ---------------------------------------------------------------- machines

machine_dir() { printf '%s/machines/%s' "$LAB_STATE" "$1"; }

# overlayfs over the cached rootfs when the kernel allows it, else a full copy.
create_machine_tree() {
  local name="$1" rootfs="$2" dir
  dir="$(machine_dir "$name")"
  mkdir -p "$dir/upper" "$dir/work" "$dir/root"
  if mount -t overlay "lab-$name" -o "lowerdir=$rootfs,upperdir=$dir/upper,workdir=$dir/work" "$dir/root" 2>/dev/null; then
    echo overlay >"$dir/tree-kind"
  else
    log "overlayfs unavailable; copying the rootfs for $name"
    cp -a "$rootfs/." "$dir/root/"
    echo copy >"$dir/tree-kind"
  fi
}

# The kubelet registers the node under its host name, which must be the inventory's name.
machine_hostname() { echo "$1"; }

configure_machine() {
  local name="$1" root
  root="$(machine_dir "$name")/root"
  machine_hostname "$name" >"$root/etc/hostname"
  tr -d '-' </proc/sys/kernel/random/uuid >"$root/etc/machine-id"
  {
    printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' "$(machine_hostname "$name")"
    local m
    for m in "${MACHINES[@]}"; do printf '%s\t%s\n' "${MACHINE_IP[$m]}" "$m"; done
  } >"$root/etc/hosts"

  ssh-keygen -q -t ed25519 -N '' -C "root@$name" -f "$root/etc/ssh/ssh_host_ed25519_key"
  cat >"$root/etc/ssh/sshd_config.d/lab.conf" <<'EOF'
# Written by tests/lab: as on a Vagrant box, only the vagrant user with a key.
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
EOF
  local home="$root/home/vagrant" uid gid
  uid="$(chroot "$root" id -u vagrant)"
  gid="$(chroot "$root" id -g vagrant)"
  install -d -m 0700 -o "$uid" -g "$gid" "$home/.ssh"
  install -m 0600 -o "$uid" -g "$gid" "$LAB_STATE/id_ed25519.pub" "$home/.ssh/authorized_keys"

  cat >"$root/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
EOF
  cat >"$root/etc/apt/apt.conf.d/01lab-proxy" <<EOF
// Written by tests/lab: the machines reach Debian's archive only through the lab proxy.
Acquire::http::Proxy "http://$LAB_HOST_IP:$LAB_PROXY_PORT";
Acquire::http::Proxy::$LAB_HOST_IP "DIRECT";
Acquire::Retries "3";
EOF
  give_kernel_modules "$root"
  if runs_containers "$name"; then writable_cgroups_unit "$root"; fi
}

# Lab only: nspawn mounts the host's cgroup v1 hierarchies read-only in the machine, and runc
# needs them writable. A unit remounts them (bind,rw: a plain remount,rw fails with "mount point
# is busy" once anything uses them) before containerd and the kubelet start. A real host boots
# cgroup v2 and needs none of this.
writable_cgroups_unit() {
  local root="$1"
  cat >"$root/usr/local/sbin/lab-writable-cgroups" <<'EOF'
#!/bin/sh
# Written by tests/lab (lab only): makes the cgroup hierarchies writable for runc.
set -e
mount -o remount,bind,rw /sys/fs/cgroup
for d in /sys/fs/cgroup/*; do
  if [ ! -L "$d" ] && mountpoint -q "$d"; then mount -o remount,bind,rw "$d"; fi
done
EOF
  chmod 0755 "$root/usr/local/sbin/lab-writable-cgroups"
  cat >"$root/etc/systemd/system/lab-writable-cgroups.service" <<'EOF'
# Written by tests/lab (lab only): see /usr/local/sbin/lab-writable-cgroups.
[Unit]
Description=Lab: cgroup hierarchies writable for runc
DefaultDependencies=no
Before=containerd.service kubelet.service
After=local-fs.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/lab-writable-cgroups

[Install]
WantedBy=multi-user.target
EOF
  mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
  ln -sf ../lab-writable-cgroups.service "$root/etc/systemd/system/multi-user.target.wants/lab-writable-cgroups.service"
}

# The machines share the host's kernel: they cannot load modules, the host must have them
# (tests/lab/README.md). Load overlay and br_netfilter on the host where it can; when the
# host kernel has them built in but ships no /lib/modules (a VM kernel such as this CI's),
# tell the machines what the kernel really has, in the file a distribution kernel ships.
give_kernel_modules() {
  local root="$1" kver builtin=()
  kver="$(uname -r)"
  if command -v modprobe >/dev/null 2>&1; then modprobe -a overlay br_netfilter 2>/dev/null || true; fi
  if [[ -d /lib/modules/$kver ]]; then
    mkdir -p "$root/lib/modules/$kver"
    cp /lib/modules/"$kver"/modules.builtin* "$root/lib/modules/$kver/" 2>/dev/null || true
    return 0
  fi
  # Built in = present without a loadable module's initstate (the machines do not see the
  # host's /sys/module, so they are told through modules.builtin).
  if grep -qw overlay /proc/filesystems && [[ ! -e /sys/module/overlay/initstate ]]; then
    builtin+=("kernel/fs/overlayfs/overlay.ko")
  fi
  if [[ -d /proc/sys/net/bridge && ! -e /sys/module/br_netfilter/initstate ]]; then
    builtin+=("kernel/net/bridge/br_netfilter.ko")
  fi
  ((${#builtin[@]})) || return 0
  mkdir -p "$root/lib/modules/$kver"
  printf '%s\n' "${builtin[@]}" >"$root/lib/modules/$kver/modules.builtin"
}

# ---------------------------------------------------------------- network

netns_name() { printf '%s%s' "$NETNS_PREFIX" "$1"; }

create_bridge() {
  ip link add "$LAB_BRIDGE" type bridge
  ip addr add "$LAB_HOST_IP/24" dev "$LAB_BRIDGE"
  ip link set "$LAB_BRIDGE" up
}

# A namespace with eth0 on the lab bridge. The default route points at the host, which does not
# forward: it only gives programs that look for a default interface (kubelet, Calico) the right one.
create_netns() {
  local name="$1" ns veth
  ns="$(netns_name "$name")"
  veth="$VETH_PREFIX$name"
  ip netns add "$ns"
  ip link add "$veth" type veth peer name eth0 netns "$ns"
  ip link set "$veth" master "$LAB_BRIDGE" up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "${MACHINE_IP[$name]}/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "$LAB_HOST_IP"
}

# ---------------------------------------------------------------- host-side services

# Started in its own session so it outlives the `up` shell; the pid file is how `down` finds it.
# Every inherited descriptor above 2 is closed first: a daemon holding the lock of
# `flock LOCK tests/lab/lab up` would make `flock LOCK tests/lab/lab down` wait forever.
spawn_bg() {
  local pidfile="$1" logfile="$2"
  shift 2
  (
    for fd in /proc/"$BASHPID"/fd/*; do
      fd="${fd##*/}"
      ((fd > 2)) && eval "exec $fd>&-"
    done
    exec setsid "$@"
  ) >"$logfile" 2>&1 </dev/null &
  echo $! >"$pidfile"
}

start_proxy() {
  local conf="$LAB_STATE/tinyproxy.conf"
  printf '^deb\\.debian\\.org$\n' >"$LAB_STATE/tinyproxy.filter"
  cat >"$conf" <<EOF
# Written by tests/lab: only the lab subnet, only Debian's archive.
Port $LAB_PROXY_PORT
Listen $LAB_HOST_IP
Timeout 600
MaxClients 64
Allow $LAB_NET_PREFIX.0/24
Filter "$LAB_STATE/tinyproxy.filter"
FilterDefaultDeny Yes
ConnectPort 443
LogFile "$LAB_STATE/tinyproxy.log"
LogLevel Notice
EOF
  spawn_bg "$LAB_STATE/tinyproxy.pid" "$LAB_STATE/tinyproxy.out" tinyproxy -d -c "$conf"
  wait_tcp "$LAB_HOST_IP" "$LAB_PROXY_PORT" 15 || die "tinyproxy did not start (see $LAB_STATE/tinyproxy.out)"
}

# A flat apt repository of the stand-in packages in tests/lab/standins/ (see its README), signed
# with a throwaway key made here (lab-repo-key.asc), plus the stand-in Calico manifest.
build_repo() {
  local repo="$LAB_STATE/repo" pkg stage debs images
  mkdir -p "$repo/pool"
  # The real packages and images built from source by tests/lab/build/ (cached by version):
  # containerd.io (the product's default containerd source, served here under the same name),
  # kubeadm, kubelet, kubectl, cri-tools and kubernetes-cni at the lab's pinned version.
  "$LAB_DIR/build/build.sh" debs images || die "the lab's packages or images did not build (tests/lab/build/README.md)"
  # Asked after the build: the entries are named by their inputs' hash as they are now.
  debs="$("$LAB_DIR/build/build.sh" --path debs)"
  images="$("$LAB_DIR/build/build.sh" --path images)"
  cp -f "$debs"/{containerd.io,kubeadm,kubelet,kubectl,cri-tools,kubernetes-cni}_*.deb "$repo/pool/"
  # The Calico stand-in's manifest (tests/lab/standins/calico/): its images are in the registry.
  cp -f "$images/calico.yaml" "$repo/calico.yaml"
  # The Elastic stand-ins (tests/lab/standins/README.md).
  stage="$(mktemp -d "$LAB_STATE/stage.XXXXXX")"
  for pkg in "$LAB_DIR"/standins/*/; do
    [[ -f "$pkg/DEBIAN/control" ]] || continue
    stage_package "$pkg" "$stage" "$repo"
  done
  rm -rf "$stage"
  cp -f "$LAB_DIR/standins/ingress-nginx.yaml" "$repo/ingress-nginx.yaml"
  rm -rf "$repo/nginx-ingress" && cp -r "$LAB_DIR/standins/nginx-ingress" "$repo/nginx-ingress"
  (cd "$repo" && dpkg-scanpackages --multiversion pool /dev/null 2>/dev/null >Packages && gzip -kf Packages \
    && apt-ftparchive release . >Release)
  sign_repo "$repo"
}

# Packs the stand-in package directory PKG (a copy in STAGE, without Python caches) into REPO/pool.
stage_package() {
  local pkg="$1" stage="$2" repo="$3" name
  name="$(basename "$pkg")"
  cp -a "$pkg" "$stage/"
  find "$stage/$name" -name __pycache__ -prune -exec rm -rf {} +
  dpkg-deb --root-owner-group --build "$stage/$name" "$repo/pool/" >/dev/null
}

# Signed with a throwaway key made for this lab session, so playbooks use the same `apt_repo`
# (key pinned by sha256, signed-by) as with the real repositories; the key's sha256 goes into
# the lab inventory (lab_repo_key_sha256).
sign_repo() {
  local repo="$1" home="$LAB_STATE/gnupg"
  install -d -m 0700 "$home"
  gpg --homedir "$home" --batch --quiet --pinentry-mode loopback --passphrase '' \
    --quick-gen-key "bootstrap lab repository (stand-ins) <lab@bootstrap.invalid>" ed25519 sign never
  gpg --homedir "$home" --batch --armor --export >"$repo/lab-repo-key.asc"
  gpg --homedir "$home" --batch --yes --clearsign -o "$repo/InRelease" "$repo/Release"
  gpg --homedir "$home" --batch --yes --armor --detach-sign -o "$repo/Release.gpg" "$repo/Release"
  # The agent gpg started would outlive the lab otherwise.
  gpgconf --homedir "$home" --kill gpg-agent 2>/dev/null || true
}

start_repo() {
  build_repo
  local py=/usr/bin/python3
  [[ -x $py ]] || py="$(command -v python3)"
  spawn_bg "$LAB_STATE/repo.pid" "$LAB_STATE/repo.log" \
    "$py" -m http.server --bind "$LAB_HOST_IP" --directory "$LAB_STATE/repo" "$LAB_REPO_PORT"
  wait_tcp "$LAB_HOST_IP" "$LAB_REPO_PORT" 15 || die "the lab apt repository did not start (see $LAB_STATE/repo.log)"
}

# The lab registries (real Kubernetes): one Distribution registry per upstream registry host,
# serving the images tests/lab/build/ built, read-only from the build cache, on the ports the
# build wrote (registries.txt). The machines' containerd pulls through them by the images' own
# names (registry_mirrors in the lab inventory).
start_registries() {
  local images reg host port conf
  images="$("$LAB_DIR/build/build.sh" --path images)"
  reg="$("$LAB_DIR/build/build.sh" --path registry)/bin/docker-registry"
  [[ -f $images/registries.txt ]] || die "no images at $images (their sources changed since the build? run tests/lab/build/build.sh images)"
  while read -r host port; do
    conf="$LAB_STATE/registry-$host.yml"
    "$LAB_DIR/build/build.sh" --registry-config "$images/registry/$host" "$LAB_HOST_IP:$port" >"$conf"
    spawn_bg "$LAB_STATE/registry-$host.pid" "$LAB_STATE/registry-$host.log" "$reg" serve "$conf"
    wait_tcp "$LAB_HOST_IP" "$port" 15 || die "the lab registry for $host did not start (see $LAB_STATE/registry-$host.log)"
    echo "$host $port" >>"$LAB_STATE/registries.txt"
  done <"$images/registries.txt"
}

# The kubelet sets a few kernel-wide sysctls (kernel.panic, vm.overcommit_memory, ...) that no
# namespace isolates: in the lab they are the host's. Their values are kept before the machines
# boot and put back by `down`.
KUBELET_HOST_SYSCTLS=(kernel/panic kernel/panic_on_oops vm/overcommit_memory kernel/keys/root_maxkeys kernel/keys/root_maxbytes)
save_host_sysctls() {
  local k
  for k in "${KUBELET_HOST_SYSCTLS[@]}"; do
    printf '%s %s\n' "$k" "$(cat "/proc/sys/$k")"
  done >"$LAB_STATE/host-sysctls.orig"
}

restore_host_sysctls() {
  local orig="$LAB_STATE/host-sysctls.orig" k v
  [[ -f $orig ]] || return 0
  while read -r k v; do
    [[ "$(cat "/proc/sys/$k")" == "$v" ]] || { log "restoring the host's ${k//\//.} to $v"; echo "$v" >"/proc/sys/$k"; }
  done <"$orig"
  rm -f "$orig"
}

# vm.max_map_count is not namespaced: a container cannot set it (its /proc/sys is read-only), so
# the lab raises the host's to what Elasticsearch needs, as one does for Elasticsearch in any
# container, and `down` puts the old value back. The elk playbook then finds it set and only
# persists it.
raise_host_max_map_count() {
  local want=262144 have
  have="$(cat /proc/sys/vm/max_map_count)"
  ((have >= want)) && return 0
  echo "$have" >"$LAB_STATE/vm.max_map_count.orig"
  log "raising the host's vm.max_map_count from $have to $want for the lab (restored by down)"
  echo "$want" >/proc/sys/vm/max_map_count
}

restore_host_max_map_count() {
  local orig="$LAB_STATE/vm.max_map_count.orig"
  [[ -f $orig ]] || return 0
  cat "$orig" >/proc/sys/vm/max_map_count
  rm -f "$orig"
}

lab_repo_url() { printf 'http://%s:%s/' "$LAB_HOST_IP" "$LAB_REPO_PORT"; }

# ---------------------------------------------------------------- boot and wait

# The cgroup hierarchies a container's systemd uses: cgroup2 alone, or name=systemd + unified.
cgroup_roots() {
  if [[ "$(stat -f -c %T /sys/fs/cgroup)" == cgroup2fs ]]; then
    echo /sys/fs/cgroup
  else
    local h
    for h in systemd unified; do
      [[ -f /sys/fs/cgroup/$h/cgroup.procs ]] && echo "/sys/fs/cgroup/$h"
    done
  fi
  return 0
}

# With --keep-unit nspawn builds the machine's cgroup tree below its own cgroup, so machines
# started from one shell would share (and fight over) one tree: each gets its own cgroup first.
machine_cgroups() {
  local root
  for root in $(cgroup_roots); do
    mkdir -p "$root/bootstrap-lab/$1"
    echo "$root/bootstrap-lab/$1"
  done
}

remove_lab_cgroups() {
  local root
  for root in $(cgroup_roots); do
    [[ -d $root/bootstrap-lab ]] || continue
    find "$root/bootstrap-lab" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}

# shellcheck disable=SC2016 # the bash -c script expands its own arguments
boot_machine() {
  local name="$1" dir
  dir="$(machine_dir "$name")"
  local -a cgroups
  mapfile -t cgroups < <(machine_cgroups "$name")
  # --private-network beside the namespace path: it gives CAP_NET_ADMIN and a writable
  # /proc/sys/net, so UFW and net.* sysctls work in the machine's own namespace.
  local -a env=() containers=()
  if runs_containers "$name"; then
    # What runc needs inside nspawn (tests/lab/README.md, "Real Kubernetes"): writable API file
    # systems, every capability, /dev/kmsg for the kubelet, the syscalls runc and containerd
    # use, and containerd's state on a host directory (the overlayfs snapshotter cannot put its
    # layers on the machine's own overlay root).
    mkdir -p "$dir/containerd"
    env=(env SYSTEMD_NSPAWN_API_VFS_WRITABLE=1)
    containers=(--capability=all --bind=/dev/kmsg "--system-call-filter=add_key keyctl bpf"
      "--bind=$dir/containerd:/var/lib/containerd")
  fi
  spawn_bg "$dir/nspawn.pid" "$dir/console.log" \
    bash -c 'for cg in "${@:2:$1}"; do echo $$ >"$cg/cgroup.procs"; done; shift $(($1 + 1)); exec "$@"' \
    lab-cgroup-enter "${#cgroups[@]}" "${cgroups[@]}" \
    "${env[@]}" systemd-nspawn --boot --register=no --keep-unit --console=read-only \
    --private-network --network-namespace-path="/run/netns/$(netns_name "$name")" \
    --directory="$dir/root" --machine="$name" --hostname="$(machine_hostname "$name")" "${containers[@]}"
}

# Bounded polling with bash's /dev/tcp, so no netcat is needed on the host.
wait_tcp() {
  local host="$1" port="$2" secs="$3" deadline
  deadline=$((SECONDS + secs))
  while ((SECONDS < deadline)); do
    if timeout 2 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  return 1
}

ssh_opts() {
  printf '%s\n' -i "$LAB_STATE/id_ed25519" -o IdentitiesOnly=yes -o BatchMode=yes \
    -o "UserKnownHostsFile=$LAB_STATE/known_hosts" -o StrictHostKeyChecking=yes \
    -o ConnectTimeout=5 -o LogLevel=ERROR
}

lab_ssh() {
  local name="$1"
  shift
  [[ -n ${MACHINE_IP[$name]:-} && $name != outsider ]] || die "unknown machine: $name"
  local -a opts
  mapfile -t opts < <(ssh_opts)
  # shellcheck disable=SC2029 # the command is meant to run on the machine, as ssh joins it
  ssh "${opts[@]}" "vagrant@${MACHINE_IP[$name]}" "$@"
}

# Up means: sshd answers, the vagrant key is accepted and systemd has finished booting.
wait_machine() {
  local name="$1" deadline state
  deadline=$((SECONDS + SSH_WAIT_SECONDS))
  while ((SECONDS < deadline)); do
    pid_alive "$(machine_dir "$name")/nspawn.pid" || die "$name: systemd-nspawn exited (see $(machine_dir "$name")/console.log)"
    if wait_tcp "${MACHINE_IP[$name]}" 22 2 && state="$(lab_ssh "$name" systemctl is-system-running 2>/dev/null)"; then
      [[ $state == running || $state == degraded ]] && return 0
    fi
    [[ -n ${state:-} ]] || sleep 0.5
    sleep 0.5
  done
  die "$name: not up within ${SSH_WAIT_SECONDS}s (console: $(machine_dir "$name")/console.log)"
}

# ---------------------------------------------------------------- inventory

# The platform's inventory (master, worker, elk); prints its path.
write_inventory() {
  write_inventory_file "$LAB_STATE/inventory.toml" platform "${PLATFORM_MACHINES[@]}"
  echo "$LAB_STATE/inventory.toml"
}

# write_inventory_file PATH KIND MACHINE...: a host named after its role.
write_inventory_file() {
  local inv="$1" kind="$2" m name
  shift 2
  {
    echo "# Written by tests/lab/lab up: the container lab ($kind). Removed by tests/lab/lab down."
    echo "[ssh]"
    echo 'user = "vagrant"'
    echo "port = 22"
    echo "key = \"$LAB_STATE/id_ed25519\""
    echo "become = true"
    echo
    echo "# The product's [vars] and [secrets] (inventory.toml in the repository), the lab's vars winning."
    lab_vars "$kind" | "$LAB_DIR/inventory-vars.py" "$REPO_ROOT/inventory.toml" || die "cannot merge the product's inventory vars"
    for m in "$@"; do
      name="$m"
      echo
      echo "[hosts.$name]"
      echo "address = \"${MACHINE_IP[$m]}\""
      echo "roles = [\"$name\"]"
      echo "host_key = \"$(cut -d' ' -f1,2 "$(machine_dir "$m")/root/etc/ssh/ssh_host_ed25519_key.pub")\""
    done
  } >"$inv"
}

# The lab's own variables, as TOML lines: they win over the product's [vars]. $1: platform.
lab_vars() {
  # The lab repository's key, pinned by sha256 wherever a repository of it is named.
  local key_sha256
  key_sha256="$(sha256sum <"$LAB_STATE/repo/lab-repo-key.asc" | cut -d' ' -f1)"
  # As in the Vagrant lab: no overlap with the lab network.
  echo 'pod_cidr = "10.244.0.0/16"'
  echo "calico_ip_autodetection = \"cidr=$LAB_NET_PREFIX.0/24\""
  echo "lab_repo_url = \"$(lab_repo_url)\""
  # The packages built from source (tests/lab/build/): a flat, signed repository.
  echo "k8s_repo_url = \"$(lab_repo_url)\""
  echo "k8s_repo_key_url = \"$(lab_repo_url)lab-repo-key.asc\""
  echo "k8s_repo_key_sha256 = \"$key_sha256\""
  # The lab's throwaway key is pinned by its sha256 above; the product's fingerprint pin is off.
  echo 'k8s_repo_key_fingerprint = ""'
  local calico=calico.yaml
  echo "calico_manifest_url = \"$(lab_repo_url)$calico\""
  echo "calico_manifest_sha256 = \"$(sha256sum <"$LAB_STATE/repo/$calico" | cut -d' ' -f1)\""
  # The manifests stage: the lab's NGINX Ingress Controller release files (tests/lab/standins/
  # nginx-ingress: our own, running the stand-in controller image), each pinned by its sha256 as
  # the product pins the release's (the lab cannot download the release).
  echo "nginx_ingress_manifests_url = \"$(lab_repo_url)nginx-ingress\""
  local f
  for f in $(cd "$LAB_STATE/repo/nginx-ingress" && find . -name '*.yaml' | sed 's|^\./||' | sort); do
    echo "nginx_ingress_manifests.\"$f\" = \"$(sha256sum <"$LAB_STATE/repo/nginx-ingress/$f" | cut -d' ' -f1)\""
  done
  echo "lab_proxy_url = \"http://$LAB_HOST_IP:$LAB_PROXY_PORT\""
  echo "lab_repo_key_url = \"$(lab_repo_url)lab-repo-key.asc\""
  echo "lab_repo_key_sha256 = \"$key_sha256\""
  # The ELK host: the Elastic stand-ins from the lab repository (a flat one, signed by the lab).
  echo "elastic_repo_url = \"$(lab_repo_url)\""
  echo 'elastic_repo_suite = "./"'
  echo 'elastic_repo_components = []'
  echo "elastic_repo_key_url = \"$(lab_repo_url)lab-repo-key.asc\""
  echo "elastic_repo_key_sha256 = \"$key_sha256\""
  # The admin machine is the lab host (the API, Kibana, Grafana, NodePorts); the outsider is not.
  echo "admin_allowed = [\"$LAB_HOST_IP\"]"
  # containerd.io from the lab repository (built from source, see build_repo): the product's
  # default source, at the lab's pinned version.
  echo "containerd_repo_url = \"$(lab_repo_url)\""
  echo 'containerd_repo_suite = "./"'
  echo 'containerd_repo_components = []'
  echo "containerd_repo_key_url = \"$(lab_repo_url)lab-repo-key.asc\""
  echo "containerd_repo_key_sha256 = \"$key_sha256\""
  echo 'containerd_repo_key_fingerprint = ""'
  echo "containerd_repo_version = \"$(lab_build_pin CONTAINERD_VERSION)-$(lab_build_pin CONTAINERD_DEB_REVISION)\""
  if [[ $1 == platform ]]; then real_kubernetes_vars; fi
}

# Real Kubernetes in the lab (tests/lab/README.md, "Real Kubernetes"): the version built, the
# images through the lab registries, and what a container on a cgroup v1 host shared with
# other machines needs.
real_kubernetes_vars() {
  local v host port mirrors=()
  v="$(lab_build_pin KUBERNETES_VERSION)"
  echo "kubernetes_version = \"$v\""
  echo "kubernetes_minor = \"${v%.*}\""
  # The sandbox image of the kubeadm built (the same as the product's pin for the default pins).
  echo "pause_image = \"registry.k8s.io/pause:$(lab_build_pin PAUSE_VERSION)\""
  while read -r host port; do
    mirrors+=("\"$host\" = { url = \"http://$LAB_HOST_IP:$port\" }")
  done <"$LAB_STATE/registries.txt"
  local IFS=,
  echo "registry_mirrors = { ${mirrors[*]} }"
  # The host's kernel boots cgroup v1 (hybrid) and is not one kubeadm's kernel check knows.
  echo 'kubelet_fail_cgroup_v1 = false'
  echo 'kubeadm_ignore_preflight_errors = ["SystemVerification"]'
  # nf_conntrack_max is the host's (not namespaced): kube-proxy leaves it alone.
  echo 'kube_proxy_conntrack_max_per_core = 0'
  # The machines have no CAP_SYS_RESOURCE (nor has the sandbox that runs the lab): containerd
  # cannot give pod sandboxes the kubelet's -998 OOM score adjustment.
  echo 'containerd_restrict_oom_score_adj = true'
  # The machines' disk is the host's, shared with the build caches: the kubelet's default
  # thresholds (15% of it free for images) would evict pods on a full CI disk.
  echo 'kubelet_eviction_hard = { "memory.available" = "100Mi", "nodefs.available" = "2Gi", "imagefs.available" = "2Gi", "nodefs.inodesFree" = "5%" }'
  # The host kernel has VXLAN but no IP-in-IP.
  echo 'calico_encapsulation = "vxlan"'
  # The lab's app (tests/lab/images/app) in place of the seed's Docker Hub placeholder.
  echo "app_image = \"$(lab_build_pin LAB_APP_IMAGE):1\""
}

# A pin of the lab's build (tests/lab/build/versions.env).
lab_build_pin() {
  (
    source "$LAB_DIR/build/versions.env"
    if [[ -n ${BOOTSTRAP_LAB_VERSIONS:-} ]]; then source "$BOOTSTRAP_LAB_VERSIONS"; fi
    printf '%s' "${!1}"
  )
}

random_secret() { head -c 24 /dev/urandom | base64 | tr -d '/+=' | cut -c1-24; }

write_secrets() {
  (
    umask 077
    {
      # The other declared secrets are generated by `bootstrap secrets init` in the scenario.
      echo "# Written by tests/lab/lab up: throwaway lab secrets."
      echo "db_password = \"$(random_secret)\""
    } >"$LAB_STATE/secrets.toml"
  )
}

write_known_hosts() {
  local m
  for m in "${MACHINES[@]}"; do
    printf '%s %s\n' "${MACHINE_IP[$m]}" "$(cut -d' ' -f1,2 "$(machine_dir "$m")/root/etc/ssh/ssh_host_ed25519_key.pub")"
  done >"$LAB_STATE/known_hosts"
}

# ---------------------------------------------------------------- teardown

pid_alive() {
  local pidfile="$1" pid
  [[ -f $pidfile ]] || return 1
  pid="$(cat "$pidfile")"
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

# Only a pid whose command line names the lab state dir is ours (pids get reused after a crash).
pid_is_ours() {
  local pid="$1"
  [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$LAB_STATE"
}

# SIGTERM to all at once (nspawn turns it into an orderly poweroff), then SIGKILL what is left.
stop_pids() {
  local secs="$1" pid deadline
  shift
  local -a pids=()
  for pid in "$@"; do
    pid_is_ours "$pid" || continue
    log "stopping $(cat "/proc/$pid/comm" 2>/dev/null) (pid $pid)"
    kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
  done
  deadline=$((SECONDS + secs))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid did not stop in ${secs}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  done
}

# Our processes: those in pid files, plus any whose command line names the state dir (a crash
# between spawn and writing its pid file).
lab_pids() {
  local f p
  for f in "$LAB_STATE"/*.pid "$LAB_STATE"/machines/*/nspawn.pid; do
    [[ -f $f ]] && cat "$f"
  done
  for p in /proc/[0-9]*; do
    p="${p#/proc/}"
    [[ $p == "$$" || $p == "$BASHPID" ]] && continue
    pid_is_ours "$p" 2>/dev/null && case "$(cat "/proc/$p/comm" 2>/dev/null)" in
      systemd-nspawn | tinyproxy | python3* | docker-registry) echo "$p" ;;
    esac
  done
}

teardown() {
  local pid m mp ns
  # The machines first, so they can still reach the proxy while they shut down.
  local -a nspawns=() others=()
  for pid in $(lab_pids | sort -un); do
    if [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == systemd-nspawn ]]; then nspawns+=("$pid"); else others+=("$pid"); fi
  done
  stop_pids 30 "${nspawns[@]}"
  stop_pids 10 "${others[@]}"
  # A machine whose nspawn was SIGKILLed keeps running in its namespace: kill what is left there.
  for m in "${MACHINES[@]}" outsider; do
    ns="$(netns_name "$m")"
    [[ -e /run/netns/$ns ]] || continue
    for pid in $(ip netns pids "$ns"); do
      log "killing leftover pid $pid in $ns"
      kill -KILL "$pid" 2>/dev/null || true
    done
    while [[ -n "$(ip netns pids "$ns")" ]]; do sleep 0.1; done
  done
  # Unmount deepest first: nspawn may leave mounts below a machine root after a crash.
  while read -r mp; do
    umount -l "$mp" 2>/dev/null || true
  done < <(awk -v s="$LAB_STATE/" 'index($2, s) == 1 { print $2 }' /proc/self/mounts | sort -r)
  for m in "${MACHINES[@]}" outsider; do
    ns="$(netns_name "$m")"
    ip link del "$VETH_PREFIX$m" 2>/dev/null || true
    [[ -e /run/netns/$ns ]] && ip netns del "$ns"
  done
  ip link del "$LAB_BRIDGE" 2>/dev/null || true
  remove_lab_cgroups
  restore_host_max_map_count
  restore_host_sysctls
  rm -rf "$LAB_STATE"
}
