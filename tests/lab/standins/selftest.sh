#!/usr/bin/env bash
# Hand checks of the Kubernetes stand-ins in a running container lab (not the product scenario):
#   flock /tmp/bootstrap-lab.lock bash -c 'tests/lab/lab up && tests/lab/standins/selftest.sh; tests/lab/lab down'
# Installs the stand-ins from the lab repository and Debian's containerd by hand, then drives
# kubeadm/kubectl on master and worker. Prints PASS/FAIL per check; exits non-zero on any FAIL.
set -uo pipefail
LAB="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/lab"
# shellcheck source=tests/lab/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
REPO="$(lab_repo_url)"
VERSION="$(lab_kubernetes_version)"
passed=0 failed=0

on() { "$LAB" ssh "$1" "sudo bash -c $(printf %q "$2")"; }
check() {
  local what="$1"
  shift
  if "$@" >/tmp/selftest.out 2>&1; then
    echo "PASS $what"; passed=$((passed + 1))
  else
    echo "FAIL $what"; sed 's/^/    /' /tmp/selftest.out | tail -15; failed=$((failed + 1))
  fi
}
# Succeeds when CMD fails with exit code CODE and its output has TEXT.
fails_with() {
  local code="$1" text="$2" host="$3" cmd="$4" out rc=0
  out="$(on "$host" "$cmd" 2>&1)" || rc=$?
  printf '%s\n' "$out"
  [[ $rc == "$code" ]] && grep -qF -- "$text" <<<"$out"
}
has() { grep -qF -- "$2" <<<"$(on "$1" "$3" 2>&1)"; }

install_cmd="set -e
curl -fsS ${REPO}Release.key -o /etc/apt/keyrings/lab-k8s.asc
echo 'deb [signed-by=/etc/apt/keyrings/lab-k8s.asc] $REPO /' >/etc/apt/sources.list.d/lab-k8s.list
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containerd kubelet=$VERSION-1.1 kubeadm=$VERSION-1.1 kubectl=$VERSION-1.1 >/dev/null"
for m in master worker; do
  check "$m: apt installs containerd and the stand-ins $VERSION-1.1 from the signed lab repository" on "$m" "mkdir -p /etc/apt/keyrings; $install_cmd"
done
check "kubeadm version says stand-in" has master "stand-in" "kubeadm version"
check "package Description says stand-in" has master "stand-in" "dpkg -s kubelet"
check "kubelet.service restarts until kubeadm writes its config" has master "config.yaml" "journalctl -u kubelet --no-pager | tail -5"

cat_cfg="cat >/etc/kubernetes/kubeadm-config.yaml <<'EOF'
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: 10.213.7.11
  bindPort: 6443
nodeRegistration:
  name: master
  criSocket: unix:///run/containerd/containerd.sock
  kubeletExtraArgs:
    - name: node-ip
      value: 10.213.7.11
timeouts:
  kubeletHealthCheck: 30s
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: v$VERSION
controlPlaneEndpoint: 10.213.7.11:6443
networking:
  podSubnet: 10.244.0.0/16
  serviceSubnet: 10.96.0.0/12
EOF"
on master "mkdir -p /etc/kubernetes && $cat_cfg"
on master "sysctl -qw net.ipv4.ip_forward=0; systemctl stop containerd"
check "init with ip_forward=0 and containerd stopped: exit 1, kubeadm's [ERROR ...] lines" fails_with 1 \
  "[ERROR FileContent--proc-sys-net-ipv4-ip_forward]: /proc/sys/net/ipv4/ip_forward contents are not set to 1" master \
  "kubeadm init --config /etc/kubernetes/kubeadm-config.yaml"
check "... and the CRI error" fails_with 1 "[ERROR CRI]" master "kubeadm init --config /etc/kubernetes/kubeadm-config.yaml"
check "... nothing written" on master "test ! -e /etc/kubernetes/admin.conf"

for m in master worker; do
  on "$m" "modprobe br_netfilter 2>/dev/null; sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1; systemctl start containerd"
done
check "init with the prerequisites satisfied" on master "kubeadm init --config /etc/kubernetes/kubeadm-config.yaml"
check "init wrote admin.conf, super-admin.conf, kubelet.conf, pki/ca.crt, manifests, kubelet config and flags" on master \
  "set -e; for f in /etc/kubernetes/admin.conf /etc/kubernetes/super-admin.conf /etc/kubernetes/kubelet.conf /etc/kubernetes/pki/ca.crt /etc/kubernetes/pki/ca.key /etc/kubernetes/manifests/kube-apiserver.yaml /etc/kubernetes/manifests/etcd.yaml /var/lib/kubelet/config.yaml; do test -s \$f; done; grep -q -- '--node-ip=10.213.7.11' /var/lib/kubelet/kubeadm-flags.env; test \$(stat -c %a /etc/kubernetes/admin.conf) = 600"
K="kubectl --kubeconfig /etc/kubernetes/admin.conf"
check "API: get --raw /readyz" has master "ok" "$K get --raw /readyz"
check "API answers say stand-in (header)" has master "X-Bootstrap-Lab: stand-in" "curl -sk -D- -o /dev/null https://10.213.7.11:6443/readyz"
check "API certificate verifies against the kubeadm CA" on master "curl -fsS --cacert /etc/kubernetes/pki/ca.crt https://10.213.7.11:6443/readyz"
check "kubelet registered node master with InternalIP 10.213.7.11" has master "10.213.7.11" "$K get node master -o jsonpath='{.status.addresses[?(@.type==\"InternalIP\")].address}'"
check "node master is NotReady without a CNI config (wait times out, exit 1)" fails_with 1 "timed out" master "$K wait --for=condition=Ready node/master --timeout=5s"
check "second init fails: already initialised, ports in use" fails_with 1 "[ERROR FileAvailable--etc-kubernetes-manifests-kube-apiserver.yaml]" master "kubeadm init --config /etc/kubernetes/kubeadm-config.yaml"
check "apply the stand-in Calico manifest" has master "daemonset.apps/calico-node created" "curl -fsS ${REPO}calico.yaml | $K apply -f -"
check "re-apply: every object unchanged" on master "! curl -fsS ${REPO}calico.yaml | $K apply -f - | grep -v unchanged"
check "master Ready once Calico wrote the CNI config" on master "$K wait --for=condition=Ready node/master --timeout=60s && test -s /etc/cni/net.d/10-calico.conflist"
check "rollout status daemonset/calico-node" on master "$K -n kube-system rollout status daemonset/calico-node --timeout=30s"
check "rollout status deployment/calico-kube-controllers" on master "$K -n kube-system rollout status deployment/calico-kube-controllers --timeout=30s"
check "get node nosuch: NotFound, exit 1" fails_with 1 'Error from server (NotFound): nodes "nosuch" not found' master "$K get node nosuch"

join="$(on master "kubeadm token create --print-join-command --ttl 10m")"
check "token create --print-join-command prints the real format" grep -Eq '^kubeadm join 10\.213\.7\.11:6443 --token [a-z0-9]{6}\.[a-z0-9]{16} --discovery-token-ca-cert-hash sha256:[0-9a-f]{64}$' <<<"$join"
token="$(sed -E 's/.*--token ([^ ]+).*/\1/' <<<"$join")"
hash="$(sed -E 's/.*--discovery-token-ca-cert-hash ([^ ]+).*/\1/' <<<"$join")"
join_cfg() {
  printf 'apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\ndiscovery:\n  bootstrapToken:\n    apiServerEndpoint: 10.213.7.11:6443\n    token: %s\n    caCertHashes: [%s]\nnodeRegistration:\n  name: worker\n  kubeletExtraArgs:\n    - name: node-ip\n      value: 10.213.7.12\ntimeouts:\n  discovery: 6s\n' "$1" "$2"
}
wrong="$(cut -c1-7 <<<"$token")0000000000000000"
check "join with a wrong token fails (JWS), exit 1" fails_with 1 "couldn't validate the identity of the API Server" worker \
  "$(printf 'kubeadm join --config /dev/stdin <<"EOF"\n%s\nEOF' "$(join_cfg "$wrong" "$hash")")"
check "join with an unknown token id fails (no JWS for that id)" fails_with 1 'could not find a JWS signature in the cluster-info ConfigMap for token ID "zzzzzz"' worker \
  "$(printf 'kubeadm join --config /dev/stdin <<"EOF"\n%s\nEOF' "$(join_cfg "zzzzzz.0123456789abcdef" "$hash")")"
check "join with a wrong CA pin fails" fails_with 1 "none of the public keys" worker \
  "$(printf 'kubeadm join --config /dev/stdin <<"EOF"\n%s\nEOF' "$(join_cfg "$token" "sha256:$(printf '0%.0s' {1..64})")")"
check "join with the minted token (from stdin) succeeds" on worker \
  "$(printf 'kubeadm join --config /dev/stdin <<"EOF"\n%s\nEOF' "$(join_cfg "$token" "$hash")")"
check "worker: kubelet.conf from the TLS bootstrap, bootstrap-kubelet.conf gone" on worker "test -s /etc/kubernetes/kubelet.conf && test ! -e /etc/kubernetes/bootstrap-kubelet.conf"
check "worker Ready (seen from the master)" on master "$K wait --for=condition=Ready node/worker --timeout=60s"
check "calico-node rolled out on both nodes" has master "successfully rolled out" "$K -n kube-system rollout status daemonset/calico-node --timeout=30s"
check "second join fails: already joined" fails_with 1 "[ERROR FileAvailable--etc-kubernetes-kubelet.conf]" worker \
  "$(printf 'kubeadm join --config /dev/stdin <<"EOF"\n%s\nEOF' "$(join_cfg "$token" "$hash")")"
check "reset -f on the worker removes what join wrote" on worker "kubeadm reset -f >/dev/null && test ! -e /etc/kubernetes/kubelet.conf && test ! -e /var/lib/kubelet/config.yaml"
check "delete node worker" has master 'node "worker" deleted' "$K delete node worker"
check "get nodes -o name lists only the master" has master "node/master" "$K get nodes -o name"

echo "$passed passed, $failed failed"
((failed == 0))
