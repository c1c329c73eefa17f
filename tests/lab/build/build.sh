#!/usr/bin/env bash
# Builds the lab's Kubernetes from source (Go module proxy + Debian packages), cached, and packs
# the real package names as .deb files. See README.md beside this file.
#
#   tests/lab/build/build.sh [ARTIFACT...]     # default: all, in dependency order
#   tests/lab/build/build.sh --path ARTIFACT   # print the cache entry of ARTIFACT (no build)
#   tests/lab/build/build.sh --list            # the artifact names
#   tests/lab/build/build.sh --registry-config DIR ADDR   # a read-only registry configuration
#
# Each artifact lands in <cache>/<name>-<version>-<hash>/ where <hash> covers the pins it uses,
# the Go version and the text of its recipe (the bash functions that build it). It is built in
# a temp dir beside it and renamed at the end: a killed build leaves no half entry, a rerun
# starts that artifact again. One build at a time (a lock on the cache), all under nice -n 10.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$HERE/versions.env"
# BOOTSTRAP_LAB_VERSIONS: a file of pins sourced after versions.env (versions-next.env: the
# Kubernetes minor the upgrade moves to); the artifacts whose pins it changes get entries of
# their own, beside the default ones.
if [[ -n ${BOOTSTRAP_LAB_VERSIONS:-} ]]; then
    # shellcheck disable=SC1090
    source "$BOOTSTRAP_LAB_VERSIONS"
fi

if [[ -z "${BOOTSTRAP_LAB_BUILD_NICED:-}" ]]; then
    export BOOTSTRAP_LAB_BUILD_NICED=1
    exec nice -n 10 "$0" "$@"
fi

CACHE=${BOOTSTRAP_LAB_BUILD_CACHE:-/var/cache/bootstrap-lab/build}
GO_CACHE_ROOT=${BOOTSTRAP_LAB_GO_CACHE:-/var/cache/bootstrap-lab/go}
export GOMODCACHE="$GO_CACHE_ROOT/mod" GOCACHE="$GO_CACHE_ROOT/cache"
export GOTOOLCHAIN=local GOFLAGS="-buildvcs=false -mod=mod" CGO_ENABLED=0
export GOOS=linux GOARCH=amd64 LC_ALL=C

ARTIFACTS=(kubernetes etcd coredns pause cri-tools cni-plugins containerd runc debs registry prometheus lab-programs
    image-base images)

# The hand-off's images that the lab builds under the names the product's inventory gives them
# (inventory.toml [vars]): the manifests pull them unchanged through the lab registry.
PRODUCT_IMAGES="prometheus_image grafana_image fluent_bit_image backup_image"
REPO_INVENTORY=$HERE/../../../inventory.toml

log() { printf '%s\n' "$*" >&2; }
die() { log "build.sh: $*"; exit 1; }

# ---- inputs of each artifact ------------------------------------------------------------

version_of() {
    case $1 in
        kubernetes) echo "$KUBERNETES_VERSION" ;;
        etcd) echo "$ETCD_VERSION" ;;
        coredns) echo "$COREDNS_VERSION" ;;
        pause) echo "$PAUSE_VERSION" ;;
        cri-tools) echo "$CRI_TOOLS_VERSION" ;;
        cni-plugins) echo "$CNI_PLUGINS_VERSION" ;;
        containerd) echo "$CONTAINERD_VERSION" ;;
        runc) echo "$RUNC_VERSION" ;;
        registry) echo "${REGISTRY_DEB_VERSION%%+*}" ;;
        prometheus) echo "$PROMETHEUS_VERSION" ;;
        debs | images | lab-programs | image-base) echo "" ;;
        *) die "unknown artifact: $1 (known: ${ARTIFACTS[*]})" ;;
    esac
}

# The pins (names from versions.env) each recipe reads.
pins_of() {
    case $1 in
        kubernetes) echo KUBERNETES_VERSION KUBERNETES_GIT_COMMIT ETCD_IMAGE_TAG COREDNS_VERSION PAUSE_VERSION ;;
        etcd) echo ETCD_VERSION ;;
        coredns) echo COREDNS_VERSION COREDNS_GIT_COMMIT ;;
        pause) echo KUBERNETES_VERSION PAUSE_VERSION ;;
        cri-tools) echo CRI_TOOLS_VERSION ;;
        cni-plugins) echo CNI_PLUGINS_VERSION ;;
        containerd) echo CONTAINERD_VERSION ;;
        runc) echo RUNC_VERSION ;;
        registry) echo REGISTRY_DEB_VERSION ;;
        prometheus) echo PROMETHEUS_VERSION ;;
        lab-programs) echo "" ;;
        image-base) echo IMAGE_BASE_SUITE IMAGE_BASE_PACKAGES ;;
        images) echo KUBERNETES_VERSION ETCD_IMAGE_TAG COREDNS_VERSION PAUSE_VERSION CALICO_IMAGE_TAG LAB_APP_IMAGE ;;
        debs) echo KUBERNETES_VERSION CRI_TOOLS_VERSION CNI_PLUGINS_VERSION CONTAINERD_VERSION RUNC_VERSION K8S_DEB_REVISION CONTAINERD_DEB_REVISION ;;
    esac
}

# Artifacts whose cache entries another one reads (their hashes are part of its inputs).
deps_of() {
    case $1 in
        debs) echo kubernetes cri-tools cni-plugins containerd runc ;;
        images) echo kubernetes etcd coredns pause registry prometheus lab-programs image-base ;;
        *) echo "" ;;
    esac
}

# The shared functions a recipe calls (their text is part of its input hash).
helpers_of() {
    case $1 in
        debs) echo go_module_build go_module_init go_ldflags_x write_info deb_pack unit_scripts ;;
        registry) echo write_info need_apt ;;
        images) echo write_info need_apt image_layer image_push registry_config product_image full_image_name ;;
        image-base) echo write_info need_apt minbase_rootfs image_layer ;;
        lab-programs) echo write_info ;;
        *) echo go_module_build go_module_init go_ldflags_x write_info expect_output moddir need_apt ;;
    esac
}

recipe_fn() { echo "build_${1//-/_}"; }

# Files of the repository (relative to this directory) a recipe packs.
files_of() {
    case $1 in
        images) echo oci-image.py ../standins/calico/bin/calico-node ../standins/calico/bin/install \
            ../standins/calico/bin/calico-ipam ../standins/calico/bin/kube-controllers ../standins/calico/bin/check-status \
            ../standins/calico/calico.yaml ../standins/nginx-ingress/deployments/deployment/nginx-ingress.yaml ;;
        # The lab's own programs (the app and the stand-ins of ../images/): every source file.
        lab-programs) (cd "$HERE" && find ../images -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) | sort) ;;
        *) echo "" ;;
    esac
}

input_hash() { # ARTIFACT -> 12 hex digits
    local a=$1 key=${1//-/_} v d
    if [[ -n "${HASH_MEMO[$key]:-}" ]]; then echo "${HASH_MEMO[$key]}"; return; fi
    local h
    h=$({
        echo "artifact=$a"
        go version
        for v in $(pins_of "$a"); do echo "$v=${!v}"; done
        for d in $(deps_of "$a"); do echo "dep $d=$(input_hash "$d")"; done
        # The images are named as the product's inventory names them.
        if [[ $a == images ]]; then for v in $PRODUCT_IMAGES; do echo "image $v=$(product_image "$v")"; done; fi
        declare -f $(helpers_of "$a") "$(recipe_fn "$a")"
        # The files a recipe packs (their content, not their dates).
        local f
        for f in $(files_of "$a"); do (cd "$HERE" && sha256sum "$f"); done
    } | sha256sum | cut -c1-12)
    HASH_MEMO[$key]=$h
    echo "$h"
}
declare -A HASH_MEMO=()

entry_of() { # ARTIFACT -> cache entry path
    local a=$1 v
    v=$(version_of "$a")
    if [[ -n "$v" ]]; then echo "$CACHE/$a-$v-$(input_hash "$a")"; else echo "$CACHE/$a-$(input_hash "$a")"; fi
}

# ---- helpers shared by the recipes ------------------------------------------------------

# A throwaway main module in DIR requiring MODULE@VERSION pairs; the Go line of the first
# module's own go.mod (so its GODEBUG defaults apply, as when upstream builds it).
go_module_init() { # DIR MODULE@VERSION...
    local dir=$1; shift
    mkdir -p "$dir"
    local first=$1 gomod goline
    gomod=$(go mod download -json "$first" | jq -r .GoMod)
    goline=$(awk '$1=="go"{print $2; exit}' "$gomod")
    {
        echo "module bootstrap.lab/build"
        echo
        echo "go ${goline:-1.24}"
        local m
        for m in "$@"; do echo "require ${m%@*} ${m#*@}"; done
    } >"$dir/go.mod"
}

# -X flags from NAME=VALUE pairs, for -ldflags.
go_ldflags_x() { # PKG.VAR=VALUE...
    local kv out=()
    for kv in "$@"; do out+=("-X '$kv'"); done
    echo "${out[*]}"
}

# go build of PACKAGES in the module DIR into OUT (a directory), stripped, trimmed.
go_module_build() { # DIR OUT "TAGS" "LDFLAGS" PACKAGE...
    local dir=$1 out=$2 tags=$3 ldflags=$4; shift 4
    mkdir -p "$out"
    (cd "$dir" && go build -trimpath -tags "$tags" -ldflags "-s -w $ldflags" -o "$out/" "$@")
}

write_info() { # ENTRY ARTIFACT SECONDS
    local e=$1 a=$2 s=$3 v
    {
        echo "artifact: $a"
        echo "version: $(version_of "$a")"
        echo "input_hash: $(input_hash "$a")"
        echo "go: $(go version)"
        echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) in ${s}s"
        echo "pins:"
        for v in $(pins_of "$a"); do echo "  $v=${!v}"; done
        echo "files:"
        (cd "$e" && find . -type f ! -name BUILD-INFO | sort | sed 's|^\./|  |')
    } >"$e/BUILD-INFO"
}

# The output of CMD must match the extended regexp PATTERN (whatever CMD exits with).
expect_output() { # PATTERN CMD...
    local pat=$1 out; shift
    out=$("$@" 2>&1 </dev/null || true)
    grep -Eq -- "$pat" <<<"$out" || die "$(basename "$1") ${*:2}: expected /$pat/, got: $out"
}

moddir() { go mod download -json "$1" | jq -r .Dir; }

need_apt() { # PACKAGE... installed with apt-get when missing
    local p missing=()
    for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
    if ((${#missing[@]})); then
        log "installing ${missing[*]} (apt-get)"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# An image name with docker.io/ spelled out, as containerd reads a name without a registry host.
full_image_name() { # NAME
    if [[ $1 == */*/* ]]; then echo "$1"; else echo "docker.io/$1"; fi
}

# An image name from the product's inventory, in full.
product_image() { # VAR
    local v
    v=$(sed -n "s|^$1 *= *\"\([^\"]*\)\".*|\1|p" "$REPO_INVENTORY")
    [[ -n $v ]] || die "no $1 in $REPO_INVENTORY"
    full_image_name "$v"
}

# A Debian minbase tree in DIR (SUITE, extra PACKAGES), trimmed of what an image never reads.
minbase_rootfs() { # SUITE PACKAGES DIR
    need_apt debootstrap
    debootstrap --variant=minbase --include="$2" "$1" "$3" http://deb.debian.org/debian \
        >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; return 1; }
    chroot "$3" apt-get clean
    rm -rf "$3"/var/lib/apt/lists/* "$3"/usr/share/doc/* "$3"/usr/share/man/* "$3"/var/log/* \
        "$3"/var/cache/debconf/*-old
    : >"$3/etc/machine-id"
}

# ---- recipes: each writes into $OUT (the temp entry) using $WORK (scratch) ---------------

# Prometheus, the real program of the release the product pins (its image docker.io/prom/prometheus).
# The module proxy serves Prometheus 3.X.Y as github.com/prometheus/prometheus v0.X0Y.0.
build_prometheus() {
    local v=$PROMETHEUS_VERSION major minor patch module date
    IFS=. read -r major minor patch <<<"$v"
    module="v0.$((major * 100 + minor)).$patch"
    go_module_init "$WORK/mod" "github.com/prometheus/prometheus@$module"
    date=$(go list -m -json "github.com/prometheus/prometheus@$module" | jq -r .Time)
    # The release's tags (.promu.yml) but builtinassets: the web UI's compiled assets are not in
    # the module (npm builds them), so the UI pages are absent; the HTTP API is all there.
    go_module_build "$WORK/mod" "$OUT/bin" "netgo" "$(go_ldflags_x \
        "github.com/prometheus/common/version.Version=$v" \
        "github.com/prometheus/common/version.Branch=HEAD" \
        "github.com/prometheus/common/version.BuildUser=bootstrap-lab" \
        "github.com/prometheus/common/version.BuildDate=$(date -u -d "$date" +%Y%m%d-%H:%M:%S)")" \
        github.com/prometheus/prometheus/cmd/prometheus
    expect_output "^prometheus, version $v " "$OUT/bin/prometheus" --version
    [[ $(product_image prometheus_image) == *":v$v" ]] || die "inventory.toml pins $(product_image prometheus_image), versions.env $v"
}

# The lab's own programs (../images/): the app the lab runs in place of the user's, and the
# stand-ins for the images nothing here can build (../images/README.md says which and why).
build_lab_programs() {
    (cd "$HERE/../images" && go vet ./... && go build -trimpath -ldflags "-s -w" -o "$OUT/bin/" ./app ./standin-grafana \
        ./standin-nginx-ingress ./standin-fluent-bit)
    local p
    for p in app standin-grafana standin-nginx-ingress standin-fluent-bit; do [[ -x "$OUT/bin/$p" ]] || die "$p not built"; done
}

# The images' shared base layer: Debian minbase with iptables (nft, as the lab's machines), ip,
# conntrack, and the toolbox's psql and nc.
build_image_base() {
    minbase_rootfs "$IMAGE_BASE_SUITE" "$IMAGE_BASE_PACKAGES" "$WORK/base"
    SOURCE_DATE_EPOCH=0 image_layer "$WORK/base" "$OUT/base.tar"
}


build_kubernetes() {
    local v=$KUBERNETES_VERSION staging minor patch kdir m
    minor=$(echo "$v" | cut -d. -f2); patch=$(echo "$v" | cut -d. -f3)
    staging="0.$minor.$patch"
    go_module_init "$WORK/mod" "k8s.io/kubernetes@v$v"
    kdir=$(moddir "k8s.io/kubernetes@v$v")
    # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with
    # ./staging/src/k8s.io/*; from outside they are the published v0.<minor>.<patch>.
    for m in $(awk '$2=="=>" && $3 ~ /^\.\/staging\// {print $1}' "$kdir/go.mod"); do
        echo "replace $m => $m v$staging" >>"$WORK/mod/go.mod"
    done
    grep -q '^godebug' "$kdir/go.mod" && grep '^godebug' "$kdir/go.mod" >>"$WORK/mod/go.mod"
    local date flags=() k
    date=$(go list -m -json "k8s.io/kubernetes@v$v" | jq -r .Time)
    [[ $date == 20* ]] || die "no release time for k8s.io/kubernetes@v$v: $date"
    for k in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        flags+=("$k.gitVersion=v$v" "$k.gitMajor=1" "$k.gitMinor=$minor" "$k.gitCommit=$KUBERNETES_GIT_COMMIT"
            "$k.gitTreeState=clean" "$k.buildDate=$date")
    done
    # Tags as Kubernetes' release builds: selinux, no test-only code, no gRPC tracing.
    go_module_build "$WORK/mod" "$OUT/bin" "selinux,notest,grpcnotrace" "$(go_ldflags_x "${flags[@]}")" \
        k8s.io/kubernetes/cmd/kubeadm k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kubectl \
        k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy
    local got
    got=$("$OUT/bin/kubeadm" version -o short)
    [[ "$got" == "v$v" ]] || die "kubeadm version -o short says $got, not v$v"
    "$OUT/bin/kubeadm" config images list --kubernetes-version "v$v" >"$OUT/images.txt"
    # The image list is what the lab's image step builds: it must name the pinned versions.
    grep -qx "registry.k8s.io/etcd:$ETCD_IMAGE_TAG" "$OUT/images.txt" || die "kubeadm wants another etcd: $(grep etcd "$OUT/images.txt")"
    grep -qx "registry.k8s.io/coredns/coredns:v$COREDNS_VERSION" "$OUT/images.txt" || die "kubeadm wants another CoreDNS: $(grep coredns "$OUT/images.txt")"
    grep -qx "registry.k8s.io/pause:$PAUSE_VERSION" "$OUT/images.txt" || die "kubeadm wants another pause: $(grep pause "$OUT/images.txt")"
}

build_etcd() {
    local v=$ETCD_VERSION
    # Three modules of one release; their replace directives (../api, ...) are ignored from
    # outside, so every go.etcd.io/etcd/* module resolves to the released v$v.
    go_module_init "$WORK/mod" "go.etcd.io/etcd/server/v3@v$v" "go.etcd.io/etcd/etcdctl/v3@v$v" "go.etcd.io/etcd/etcdutl/v3@v$v"
    # Each its own -o: go build would name the server package "server", not etcd.
    local m
    for m in server:etcd etcdctl:etcdctl etcdutl:etcdutl; do
        (cd "$WORK/mod" && go build -trimpath -ldflags "-s -w" -o "$OUT/bin/${m#*:}" "go.etcd.io/etcd/${m%%:*}/v3")
    done
    expect_output "^etcd Version: $v\$" "$OUT/bin/etcd" --version
    expect_output "^etcdctl version: $v\$" "$OUT/bin/etcdctl" version
    expect_output "^etcdutl version: $v\$" "$OUT/bin/etcdutl" version
}

build_coredns() {
    local v=$COREDNS_VERSION
    go_module_init "$WORK/mod" "github.com/coredns/coredns@v$v"
    go_module_build "$WORK/mod" "$OUT/bin" "" "$(go_ldflags_x "github.com/coredns/coredns/coremain.GitCommit=${COREDNS_GIT_COMMIT:0:7}")" \
        github.com/coredns/coredns
    expect_output "^CoreDNS-$v\$" "$OUT/bin/coredns" -version
}

build_pause() {
    local kdir
    kdir=$(moddir "k8s.io/kubernetes@v$KUBERNETES_VERSION")
    need_apt gcc libc6-dev
    mkdir -p "$OUT/bin"
    gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION" -o "$OUT/bin/pause" "$kdir/build/pause/linux/pause.c"
    strip "$OUT/bin/pause"
    expect_output "v$PAUSE_VERSION\$" "$OUT/bin/pause" -v
}

build_cri_tools() {
    local v=$CRI_TOOLS_VERSION
    go_module_init "$WORK/mod" "sigs.k8s.io/cri-tools@v$v"
    go_module_build "$WORK/mod" "$OUT/bin" "" "$(go_ldflags_x "sigs.k8s.io/cri-tools/pkg/version.Version=v$v")" \
        sigs.k8s.io/cri-tools/cmd/crictl
    expect_output "^crictl version v$v\$" "$OUT/bin/crictl" --version
}

build_cni_plugins() {
    local v=$CNI_PLUGINS_VERSION p
    go_module_init "$WORK/mod" "github.com/containernetworking/plugins@v$v"
    # Every plugin: the main packages under plugins/{main,ipam,meta} (Windows-only ones are
    # skipped by their build constraints).
    go_module_build "$WORK/mod" "$OUT/bin" "" "$(go_ldflags_x "github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=v$v")" \
        github.com/containernetworking/plugins/plugins/main/... github.com/containernetworking/plugins/plugins/ipam/... \
        github.com/containernetworking/plugins/plugins/meta/...
    for p in bridge host-local loopback portmap bandwidth firewall tuning; do
        [[ -x "$OUT/bin/$p" ]] || die "CNI plugin $p missing"
    done
    expect_output "v$v" "$OUT/bin/bridge"
}

build_containerd() {
    local v=$CONTAINERD_VERSION
    go_module_init "$WORK/mod" "github.com/containerd/containerd/v2@v$v"
    # Static, no cgo: the btrfs snapshotter needs cgo and is left out (no_btrfs); overlayfs and
    # native are what the lab uses.
    go_module_build "$WORK/mod" "$OUT/bin" "no_btrfs" "$(go_ldflags_x \
        "github.com/containerd/containerd/v2/version.Version=v$v" \
        "github.com/containerd/containerd/v2/version.Package=github.com/containerd/containerd/v2")" \
        github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
        github.com/containerd/containerd/v2/cmd/ctr
    expect_output " v$v( |\$)" "$OUT/bin/containerd" --version
}

build_runc() {
    local v=$RUNC_VERSION
    need_apt gcc libc6-dev libseccomp-dev pkg-config
    go_module_init "$WORK/mod" "github.com/opencontainers/runc@v$v"
    # cgo for libseccomp (dynamically linked: Debian's libseccomp2, a dependency of the deb);
    # runc's own default tags minus libpathrs (a Rust library Debian bookworm does not have).
    CGO_ENABLED=1 go_module_build "$WORK/mod" "$OUT/bin" "seccomp urfave_cli_no_docs" \
        "$(go_ldflags_x "main.version=$v")" github.com/opencontainers/runc
    expect_output "^runc version $v\$" "$OUT/bin/runc" --version
    expect_output "^libseccomp: " "$OUT/bin/runc" --version
}

build_registry() {
    # The registry program of Debian's docker-registry package, extracted (not installed: no
    # system service; the lab starts it with its own configuration).
    need_apt dpkg-dev
    (cd "$WORK" && apt-get download "docker-registry=$REGISTRY_DEB_VERSION" >/dev/null)
    dpkg-deb -x "$WORK"/docker-registry_*.deb "$WORK/x"
    install -D -m 0755 "$WORK/x/usr/bin/docker-registry" "$OUT/bin/docker-registry"
    expect_output "${REGISTRY_DEB_VERSION%%+*}" "$OUT/bin/docker-registry" --version
}

# A registry configuration: storage in DIR, listening on ADDR; read-only when asked.
registry_config() { # DIR ADDR readonly|writable
    local ro=false
    [[ $3 == readonly ]] && ro=true
    printf '%s\n' 'version: 0.1' 'log:' '  level: warn' '  accesslog:' '    disabled: true' \
        'storage:' '  filesystem:' "    rootdirectory: $1" '  delete:' '    enabled: false' \
        '  maintenance:' '    uploadpurging:' '      enabled: false' '    readonly:' "      enabled: $ro" \
        'http:' "  addr: $2"
}

# A tar layer of the tree DIR (numeric owners, fixed dates: the same tree gives the same digest).
image_layer() { # DIR TAR
    tar --sort=name --numeric-owner --owner=0 --group=0 --mtime="@${SOURCE_DATE_EPOCH:-0}" \
        -C "$1" -cf "$2" .
}

# Builds IMAGE (registry host/name:tag) from a base layer (BASE_LAYER, default the shared base)
# plus the tree DIR and pushes it to the registry for its host (REGISTRY_ADDR[host]). OPTIONS go
# to oci-image.py build (--env K=V, --cmd JSON, --workdir DIR).
image_push() { # IMAGE DIR ENTRYPOINT_JSON [OPTION...]
    local image=$1 dir=$2 entry=$3 host rest name tag file mounts=()
    shift 3
    host=${image%%/*}; rest=${image#*/}; name=${rest%:*}; tag=${rest##*:}; file=${name//\//_}-$tag
    image_layer "$dir" "$WORK/layers/$file.tar"
    python3 "$HERE/oci-image.py" build "$WORK/oci/$file" --layer "${BASE_LAYER:-$WORK/layers/base.tar}" \
        --layer "$WORK/layers/$file.tar" --entrypoint "$entry" "$@" >/dev/null
    # The base layer is sent once per registry, then mounted from the first repository.
    [[ -n "${FIRST_REPO[$host]:-}" ]] && mounts=(--mount-from "${FIRST_REPO[$host]}")
    python3 "$HERE/oci-image.py" push "$WORK/oci/$file" "${REGISTRY_ADDR[$host]}" "$name" "$tag" "${mounts[@]}"
    FIRST_REPO[$host]=${FIRST_REPO[$host]:-$name}
    echo "$image" >>"$OUT/images.txt"
}

build_images() {
    local k8s etcd coredns pause reg prom lab kv=v$KUBERNETES_VERSION
    k8s=$(entry_of kubernetes)/bin; etcd=$(entry_of etcd)/bin; coredns=$(entry_of coredns)/bin
    pause=$(entry_of pause)/bin; reg=$(entry_of registry)/bin/docker-registry
    prom=$(entry_of prometheus)/bin; lab=$(entry_of lab-programs)/bin
    SOURCE_DATE_EPOCH=$(date -d "$(go list -m -json "k8s.io/kubernetes@v$KUBERNETES_VERSION" | jq -r .Time)" +%s)
    export SOURCE_DATE_EPOCH
    mkdir -p "$WORK/layers" "$WORK/oci"

    # The base layer (image-base): Debian minbase with iptables, ip, conntrack, psql, nc.
    cp "$(entry_of image-base)/base.tar" "$WORK/layers/base.tar"

    # One registry per upstream host, each storing under $OUT/registry/<host> (the lab serves
    # them read-only, the same storage, on the ports in registries.txt).
    declare -gA REGISTRY_ADDR=() FIRST_REPO=()
    declare -ga REGISTRY_PIDS=()
    # The recipe runs in its own subshell: its EXIT stops them, whatever ends it.
    trap 'kill "${REGISTRY_PIDS[@]}" 2>/dev/null || true' EXIT
    local host port=5000 build_port
    : >"$OUT/registries.txt"
    for host in registry.k8s.io docker.io; do
        mkdir -p "$OUT/registry/$host"
        # A free port of this build's own (a registry left by another build must not answer).
        build_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        REGISTRY_ADDR[$host]=127.0.0.1:$build_port
        registry_config "$OUT/registry/$host" "${REGISTRY_ADDR[$host]}" writable >"$WORK/$host.yml"
        # Not holding the cache lock (fd 9): a registry left behind must not block later builds.
        "$reg" serve "$WORK/$host.yml" >"$WORK/$host.log" 2>&1 9>&- &
        REGISTRY_PIDS+=($!)
        echo "$host $port" >>"$OUT/registries.txt"
        port=$((port + 1))
    done
    local i pid
    for host in "${!REGISTRY_ADDR[@]}"; do
        for i in $(seq 100); do
            curl -sf "http://${REGISTRY_ADDR[$host]}/v2/" >/dev/null && break
            sleep 0.1
        done
        curl -sf "http://${REGISTRY_ADDR[$host]}/v2/" >/dev/null || { cat "$WORK/$host.log"; die "registry for $host did not start"; }
    done
    for pid in "${REGISTRY_PIDS[@]}"; do kill -0 "$pid" || die "a build registry exited (logs: $WORK/*.log)"; done

    # The control plane, as `kubeadm config images list` names it (checked by the kubernetes
    # recipe): each program in /usr/local/bin, called by the command kubeadm's manifests give.
    local c d
    for c in kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
        d=$WORK/tree/$c; install -D -m 0755 "$k8s/$c" "$d/usr/local/bin/$c"
        image_push "registry.k8s.io/$c:$kv" "$d" "[\"/usr/local/bin/$c\"]"
    done
    d=$WORK/tree/etcd; mkdir -p "$d/usr/local/bin"; install -m 0755 "$etcd"/etcd* "$d/usr/local/bin/"
    image_push "registry.k8s.io/etcd:$ETCD_IMAGE_TAG" "$d" '["/usr/local/bin/etcd"]'
    d=$WORK/tree/coredns; install -D -m 0755 "$coredns/coredns" "$d/coredns"
    image_push "registry.k8s.io/coredns/coredns:v$COREDNS_VERSION" "$d" '["/coredns"]'
    d=$WORK/tree/pause; install -D -m 0755 "$pause/pause" "$d/pause"
    image_push "registry.k8s.io/pause:$PAUSE_VERSION" "$d" '["/pause"]'

    # The Calico stand-ins (labelled; see ../standins/calico/README.md), with kubectl.
    local sb=$HERE/../standins/calico/bin
    # /usr/bin: the base is merged-/usr (/bin is a link to usr/bin, which a bin/ of this layer would hide).
    d=$WORK/tree/calico-node; install -D -m 0755 "$sb/calico-node" "$d/usr/bin/calico-node"
    install -D -m 0755 "$k8s/kubectl" "$d/usr/local/bin/kubectl"
    image_push "docker.io/calico/node:$CALICO_IMAGE_TAG" "$d" '["/usr/bin/calico-node"]'
    d=$WORK/tree/calico-cni; mkdir -p "$d/opt/cni/bin"
    install -m 0755 "$sb/install" "$sb/calico-ipam" "$d/opt/cni/bin/"
    install -D -m 0755 "$k8s/kubectl" "$d/usr/local/bin/kubectl"
    image_push "docker.io/calico/cni:$CALICO_IMAGE_TAG" "$d" '["/opt/cni/bin/install"]'
    d=$WORK/tree/calico-kube-controllers; mkdir -p "$d/usr/bin"
    install -m 0755 "$sb/kube-controllers" "$sb/check-status" "$d/usr/bin/"
    install -D -m 0755 "$k8s/kubectl" "$d/usr/local/bin/kubectl"
    image_push "docker.io/calico/kube-controllers:$CALICO_IMAGE_TAG" "$d" '["/usr/bin/kube-controllers"]'
    install -m 0644 "$HERE/../standins/calico/calico.yaml" "$OUT/calico.yaml"

    # The lab's own probe image (a lab-only name): the base's psql, nc and getent, idle.
    d=$WORK/tree/toolbox; mkdir -p "$d"
    image_push "docker.io/bootstraplab/toolbox:1" "$d" '["sleep", "infinity"]'

    # The hand-off's images (../images/README.md lists each: real build or stand-in, and why).
    # Prometheus: the real program of the pinned release, where its image has it.
    d=$WORK/tree/prometheus; install -D -m 0755 "$prom/prometheus" "$d/usr/bin/prometheus"
    mkdir -p "$d/prometheus" "$d/etc/prometheus"
    image_push "$(product_image prometheus_image)" "$d" '["/bin/prometheus"]' --workdir /prometheus
    # pg_dump of the backup CronJob: the base's PostgreSQL client (Debian's package), whose major
    # must be the one the product's image names; on PATH as in the official image.
    local pg
    pg=$(product_image backup_image); pg=${pg##*:}; pg=${pg%%-*}
    tar -tf "$WORK/layers/base.tar" "./usr/lib/postgresql/$pg/bin/pg_dump" >/dev/null 2>&1 ||
        die "the image base has no pg_dump $pg (backup_image $(product_image backup_image))"
    d=$WORK/tree/postgres; mkdir -p "$d/backups"
    image_push "$(product_image backup_image)" "$d" '["/bin/sh"]' \
        --env "PATH=/usr/lib/postgresql/$pg/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    # The lab's app in place of the user's (two releases: CI's `kubectl set image` moves between them).
    local r
    for r in 1 2; do
        d=$WORK/tree/app-$r; install -D -m 0755 "$lab/app" "$d/usr/local/bin/crypto-exchange-lab-app"
        image_push "$LAB_APP_IMAGE:$r" "$d" "[\"/usr/local/bin/crypto-exchange-lab-app\", \"--release\", \"$r\"]"
    done
    # Stand-ins, labelled (../images/README.md): where no real build is possible here.
    d=$WORK/tree/grafana; install -D -m 0755 "$lab/standin-grafana" "$d/usr/share/grafana/bin/grafana-standin"
    image_push "$(product_image grafana_image)" "$d" '["/usr/share/grafana/bin/grafana-standin"]'
    d=$WORK/tree/fluent-bit; install -D -m 0755 "$lab/standin-fluent-bit" "$d/fluent-bit/bin/fluent-bit"
    mkdir -p "$d/fluent-bit/etc"
    image_push "$(product_image fluent_bit_image)" "$d" '["/fluent-bit/bin/fluent-bit", "-c", "/fluent-bit/etc/fluent-bit.conf"]'
    local nic
    nic=$(full_image_name "$(sed -n 's|^ *image: *\([^ ]*\)$|\1|p' "$HERE/../standins/nginx-ingress/deployments/deployment/nginx-ingress.yaml")")
    d=$WORK/tree/nginx-ingress; install -D -m 0755 "$lab/standin-nginx-ingress" "$d/nginx-ingress"
    image_push "$nic" "$d" '["/nginx-ingress"]'

    # Every image is in the storage the lab will serve (not only answered by some registry).
    local image rest
    while read -r image; do
        host=${image%%/*}; rest=${image#*/}
        [[ -d "$OUT/registry/$host/docker/registry/v2/repositories/${rest%:*}/_manifests/tags/${rest##*:}" ]] ||
            die "$image is not in $OUT/registry/$host"
    done <"$OUT/images.txt"
}

# One binary package from ROOT (a tree holding DEBIAN/ and the files) into $OUT.
deb_pack() { # ROOT NAME VERSION DEPENDS DESCRIPTION [EXTRA CONTROL LINES]
    local root=$1 name=$2 version=$3 depends=$4 desc=$5 extra=${6:-} size
    mkdir -p "$root/DEBIAN"
    size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
    {
        echo "Package: $name"
        echo "Version: $version"
        echo "Architecture: amd64"
        echo "Maintainer: bootstrap lab build <lab@bootstrap.invalid>"
        echo "Installed-Size: $size"
        if [[ -n "$depends" ]]; then echo "Depends: $depends"; fi
        if [[ -n "$extra" ]]; then printf '%s\n' "$extra"; fi
        echo "Section: admin"
        echo "Priority: optional"
        echo "Homepage: https://kubernetes.io"
        echo "Description: $desc"
        echo " Built from source by bootstrap's lab (tests/lab/build/build.sh) under the name of the"
        echo " real package, for the container lab only; same file layout as the real one."
    } >"$root/DEBIAN/control"
    find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    dpkg-deb --root-owner-group -Zxz --build "$root" "$OUT/${name}_${version}_amd64.deb" >/dev/null
}

# Maintainer scripts for a unit the package enables and starts, as the real packages do
# (the kubelet then restarts every 10 s until kubeadm writes its configuration).
unit_scripts() { # ROOT UNIT
    local root=$1 unit=$2
    mkdir -p "$root/DEBIAN"
    printf '%s\n' '#!/bin/sh' 'set -e' \
        'if [ "$1" = configure ] && [ -d /run/systemd/system ]; then' \
        '    systemctl daemon-reload || true' \
        "    systemctl enable $unit >/dev/null 2>&1 || true" \
        "    systemctl restart $unit || true" \
        'fi' >"$root/DEBIAN/postinst"
    printf '%s\n' '#!/bin/sh' 'set -e' \
        'if [ "$1" = remove ] && [ -d /run/systemd/system ]; then' \
        "    systemctl stop $unit || true" \
        'fi' >"$root/DEBIAN/prerm"
    printf '%s\n' '#!/bin/sh' 'set -e' \
        "if [ \"\$1\" = purge ]; then systemctl disable $unit >/dev/null 2>&1 || true; fi" \
        'if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi' >"$root/DEBIAN/postrm"
    chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
}

build_debs() {
    need_apt dpkg-dev
    local k8s crictl cni ctd runc kv r
    k8s=$(entry_of kubernetes)/bin; crictl=$(entry_of cri-tools)/bin; cni=$(entry_of cni-plugins)/bin
    ctd=$(entry_of containerd)/bin; runc=$(entry_of runc)/bin
    kv=$KUBERNETES_VERSION-$K8S_DEB_REVISION
    SOURCE_DATE_EPOCH=$(date -d "$(go list -m -json "k8s.io/kubernetes@v$KUBERNETES_VERSION" | jq -r .Time)" +%s)
    export SOURCE_DATE_EPOCH

    # kubectl, cri-tools: one program each, no dependencies (as pkgs.k8s.io's).
    r=$WORK/kubectl; install -D -m 0755 "$k8s/kubectl" "$r/usr/bin/kubectl"
    deb_pack "$r" kubectl "$kv" "" "Command-line utility for interacting with a Kubernetes cluster"
    r=$WORK/cri-tools; install -D -m 0755 "$crictl/crictl" "$r/usr/bin/crictl"
    deb_pack "$r" cri-tools "$CRI_TOOLS_VERSION-$K8S_DEB_REVISION" "" "Command-line utility for interacting with a container runtime (crictl)"

    # kubernetes-cni: every plugin in /opt/cni/bin, and the (empty) config directory.
    r=$WORK/kubernetes-cni; mkdir -p "$r/opt/cni/bin" "$r/etc/cni/net.d"
    install -m 0755 "$cni"/* "$r/opt/cni/bin/"
    deb_pack "$r" kubernetes-cni "$CNI_PLUGINS_VERSION-$K8S_DEB_REVISION" "" "Binaries required to provision Kubernetes container networking (CNI plugins)"

    # kubelet: the program, its unit (started with no flags: kubeadm's drop-in gives them),
    # /etc/default/kubelet for KUBELET_EXTRA_ARGS (a conffile), its state and manifest dirs.
    r=$WORK/kubelet
    install -D -m 0755 "$k8s/kubelet" "$r/usr/bin/kubelet"
    mkdir -p "$r/usr/lib/systemd/system" "$r/var/lib/kubelet" "$r/etc/kubernetes/manifests" "$r/etc/default"
    printf '%s\n' '[Unit]' 'Description=kubelet: The Kubernetes Node Agent' 'Documentation=https://kubernetes.io/docs/' \
        'Wants=network-online.target' 'After=network-online.target' '' \
        '[Service]' 'ExecStart=/usr/bin/kubelet' 'Restart=always' 'StartLimitInterval=0' 'RestartSec=10' '' \
        '[Install]' 'WantedBy=multi-user.target' >"$r/usr/lib/systemd/system/kubelet.service"
    echo "KUBELET_EXTRA_ARGS=" >"$r/etc/default/kubelet"
    unit_scripts "$r" kubelet.service
    echo /etc/default/kubelet >"$r/DEBIAN/conffiles"
    deb_pack "$r" kubelet "$kv" "iptables (>= 1.4.21), kubernetes-cni (>= 1.2.0), mount, util-linux" "Node agent for Kubernetes clusters"

    # kubeadm: the program and the kubelet drop-in that hands the kubelet kubeadm's files.
    r=$WORK/kubeadm
    install -D -m 0755 "$k8s/kubeadm" "$r/usr/bin/kubeadm"
    mkdir -p "$r/usr/lib/systemd/system/kubelet.service.d"
    printf '%s\n' '# From the kubeadm package: the kubelet'"'"'s flags come from the files kubeadm init/join write.' \
        '[Service]' \
        'Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"' \
        'Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"' \
        '# KUBELET_KUBEADM_ARGS, written by kubeadm init/join.' \
        'EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env' \
        '# KUBELET_EXTRA_ARGS, the administrator'"'"'s last resort (bootstrap sets the node IP there).' \
        'EnvironmentFile=-/etc/default/kubelet' \
        'ExecStart=' \
        'ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS' \
        >"$r/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf"
    deb_pack "$r" kubeadm "$kv" "" "Command-line utility for administering a Kubernetes cluster"

    # containerd.io: containerd, its runc shim, ctr and runc in /usr/bin, the unit in
    # /lib/systemd/system, /etc/containerd/config.toml as a conffile; it takes the place of
    # Debian's containerd and runc packages.
    r=$WORK/containerd.io
    mkdir -p "$r/usr/bin" "$r/lib/systemd/system" "$r/etc/containerd"
    install -m 0755 "$ctd/containerd" "$ctd/containerd-shim-runc-v2" "$ctd/ctr" "$runc/runc" "$r/usr/bin/"
    printf '%s\n' '[Unit]' 'Description=containerd container runtime' 'Documentation=https://containerd.io' \
        'After=network.target local-fs.target dbus.service' '' \
        '[Service]' \
        '# overlay may be built in or loaded already: a failed modprobe is not fatal.' \
        'ExecStartPre=-/sbin/modprobe overlay' \
        'ExecStart=/usr/bin/containerd' \
        'Type=notify' \
        '# Shims and containers live in this unit'"'"'s cgroup; a restart of containerd must not kill them.' \
        'Delegate=yes' 'KillMode=process' 'Restart=always' 'RestartSec=5' \
        'LimitNPROC=infinity' 'LimitCORE=infinity' 'TasksMax=infinity' 'OOMScoreAdjust=-999' '' \
        '[Install]' 'WantedBy=multi-user.target' >"$r/lib/systemd/system/containerd.service"
    printf '%s\n' '# containerd configuration (containerd.io as built for bootstrap'"'"'s lab).' \
        '# Nothing set on purpose: containerd'"'"'s built-in defaults apply, its CRI plugin included' \
        '# (`containerd config default` prints them). bootstrap writes its own file here.' \
        'version = 3' >"$r/etc/containerd/config.toml"
    unit_scripts "$r" containerd.service
    echo /etc/containerd/config.toml >"$r/DEBIAN/conffiles"
    deb_pack "$r" containerd.io "$CONTAINERD_VERSION-$CONTAINERD_DEB_REVISION" "libc6 (>= 2.34), libseccomp2 (>= 2.5.0)" \
        "An industry-standard container runtime (containerd $CONTAINERD_VERSION with runc $RUNC_VERSION)" \
        "$(printf 'Provides: containerd, runc\nConflicts: containerd, runc\nReplaces: containerd, runc')"

    (cd "$OUT" && sha256sum ./*.deb >SHA256SUMS)
    for r in "$OUT"/*.deb; do dpkg-deb --field "$r" Package Version Depends | tr '\n' ' '; echo; done
}

# ---- driver -------------------------------------------------------------------------------

build_one() { # ARTIFACT
    local a=$1 entry v tmp start secs
    v=$(version_of "$a")
    entry=$(entry_of "$a")
    if [[ -d "$entry" ]]; then
        log "cached $a${v:+ $v}"
        return 0
    fi
    tmp=$(mktemp -d "$CACHE/.tmp-$(basename "$entry").XXXXXX")
    start=$(date +%s)
    OUT="$tmp/entry" WORK="$tmp/work"
    mkdir -p "$OUT" "$WORK"
    # The caller runs this with errexit off (so one failure does not stop the others); the
    # recipe's subshell turns it on for itself.
    local rc
    (set -euo pipefail; "$(recipe_fn "$a")") >"$tmp/log" 2>&1
    rc=$?
    if ((rc != 0)); then
        tail -n 40 "$tmp/log" >&2
        log "FAILED $a${v:+ $v} after $(($(date +%s) - start))s (log: $tmp/log)"
        return 1
    fi
    secs=$(($(date +%s) - start))
    write_info "$OUT" "$a" "$secs"
    cp "$tmp/log" "$OUT/build.log"
    mv -T "$OUT" "$entry"
    chmod -R u+w "$tmp" 2>/dev/null || true
    rm -rf "$tmp"
    log "built $a${v:+ $v} in ${secs}s"
}

main() {
    command -v go >/dev/null || die "go is not installed"
    command -v jq >/dev/null || need_apt jq
    case "${1:-}" in
        --list) printf '%s\n' "${ARTIFACTS[@]}"; return ;;
        --path) [[ $# -eq 2 ]] || die "usage: build.sh --path ARTIFACT"; entry_of "$2"; return ;;
        # The lab's registries serve the images' storage with the same configuration, read-only.
        --registry-config) [[ $# -eq 3 ]] || die "usage: build.sh --registry-config DIR ADDR"
            registry_config "$2" "$3" readonly; return ;;
    esac
    local want=("$@") a d failed=()
    ((${#want[@]})) || want=("${ARTIFACTS[@]}")
    for a in "${want[@]}"; do version_of "$a" >/dev/null; done
    mkdir -p "$CACHE" "$GOMODCACHE" "$GOCACHE"
    exec 9>"$CACHE/.lock"
    if ! flock -n 9; then
        log "another build holds $CACHE/.lock; waiting"
        flock 9
    fi
    # Under the lock no other build is running: temp dirs left by killed builds can go.
    find "$CACHE" -maxdepth 1 -name '.tmp-*' -exec rm -rf {} + 2>/dev/null || true
    # errexit off around build_one: in a `||` list bash would ignore `set -e` inside the
    # recipe's subshell too.
    local rc
    for a in "${want[@]}"; do
        for d in $(deps_of "$a"); do
            [[ -d "$(entry_of "$d")" ]] && continue
            set +e; build_one "$d"; rc=$?; set -e
            if ((rc != 0)); then failed+=("$d"); continue 2; fi
        done
        set +e; build_one "$a"; rc=$?; set -e
        ((rc == 0)) || failed+=("$a")
    done
    if ((${#failed[@]})); then die "failed: ${failed[*]}"; fi
}

main "$@"
