#!/usr/bin/env bash
# Every manifest rendered for the shipped inventory, validated against the Kubernetes schemas
# of the pinned version in strict mode (unknown fields are errors), offline: kubernetes-validate
# ships its schemas in the package. Kustomization files are kustomize's, not API objects; the
# upstream release manifests are not ours and are not downloaded here.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${BOOTSTRAP_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/bootstrap}"
validator="${KUBERNETES_VALIDATE:-}"
if [ -z "$validator" ]; then
  if [ -x /opt/bootstrap-ci/venv/bin/kubernetes-validate ]; then
    validator=/opt/bootstrap-ci/venv/bin/kubernetes-validate
  else
    validator=kubernetes-validate
  fi
fi
# The pinned version: kubernetes_version when the inventory has it, else <kubernetes_minor>.0.
version=$(sed -n 's/^kubernetes_version *= *"\([0-9.]*\)".*/\1/p' inventory.toml)
[ -n "$version" ] || version="$(sed -n 's/^kubernetes_minor *= *"\([0-9.]*\)".*/\1/p' inventory.toml).0"
schema_version="${version%.*}.0"   # the package has one schema set per minor

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The validator must be able to fail: an unknown field is refused in strict mode.
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\nnotAField: 1\n' > "$tmp/bad.yaml"
if "$validator" --strict -k "$schema_version" --quiet "$tmp/bad.yaml" >/dev/null 2>&1; then
  echo "FAIL: $validator accepted an unknown field in strict mode" >&2
  exit 1
fi

cp inventory.toml "$tmp/inventory.toml"
"$bin" -i "$tmp/inventory.toml" secrets init >/dev/null
"$bin" -i "$tmp/inventory.toml" --playbooks playbooks manifests --render-only --offline \
  --out "$tmp/manifests" >/dev/null
mapfile -t files < <(find "$tmp/manifests" -name '*.yaml' ! -name kustomization.yaml ! -path '*/upstream/*' | sort)
[ "${#files[@]}" -gt 0 ] || { echo "FAIL: nothing rendered" >&2; exit 1; }
"$validator" --strict -k "$schema_version" --quiet "${files[@]}"
echo "manifests: ${#files[@]} files valid against Kubernetes $schema_version schemas (strict)"

# The Prometheus configuration, checked by the real promtool of the pinned Prometheus release,
# built from the Go module proxy (Prometheus 3.X.Y is module version v0.X0Y.0 there) and cached
# outside the repository by version. --syntax-only: the service-account files it names exist only
# in a pod.
prom_tag=$(sed -n 's|^prometheus_image *= *"[^"]*:v\([0-9.]*\)".*|\1|p' inventory.toml)
IFS=. read -r prom_major prom_minor prom_patch <<<"$prom_tag"
prom_module="v0.$((prom_major * 100 + prom_minor)).$prom_patch"
cache="${BOOTSTRAP_TOOLS_CACHE:-/var/cache/bootstrap-ci/tools}/promtool-$prom_tag"
if [ ! -x "$cache/promtool" ]; then
  mkdir -p "$cache"
  GOBIN="$cache" GOFLAGS=-mod=mod go install -trimpath -ldflags="-s -w" \
    "github.com/prometheus/prometheus/cmd/promtool@$prom_module"
fi
python3 -c 'import sys, yaml; sys.stdout.write(yaml.safe_load(open(sys.argv[1]))["data"]["prometheus.yml"])' \
  "$tmp/manifests/monitoring/prometheus-config.yaml" >"$tmp/prometheus.yml"
# promtool must be able to fail: a discovery role Prometheus does not know is refused.
sed 's/role: endpointslice$/role: endpointslices/' "$tmp/prometheus.yml" >"$tmp/bad-prometheus.yml"
if "$cache/promtool" check config --syntax-only "$tmp/bad-prometheus.yml" >/dev/null 2>&1; then
  echo "FAIL: promtool accepted an unknown discovery role" >&2
  exit 1
fi
"$cache/promtool" check config --syntax-only "$tmp/prometheus.yml" >/dev/null
echo "prometheus.yml: valid for Prometheus $prom_tag (promtool, module $prom_module)"
