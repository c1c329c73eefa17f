#!/usr/bin/env bash
# `tests/lab/lab demo`: try the platform without servers. Brings the container lab up, runs
# `bootstrap all` against it (whatever `all` covers in this checkout's playbooks/site.toml),
# draws the lab's diagram beside its inventory, then says where each service answers, how to
# reach the machines and how to take the lab down. The lab stays up until `lab down`.
# Arguments go to `bootstrap all`; by default `--skip-tags manifests`: the lab's real cluster has
# no images for the manifests stage yet (tests/lab/README.md, "The manifests stage").
set -euo pipefail
# shellcheck source=tests/lab/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
BOOTSTRAP_BIN="${BOOTSTRAP_BIN:-$REPO_ROOT/target/release/bootstrap}"
[[ -x $BOOTSTRAP_BIN ]] || die "no bootstrap binary at $BOOTSTRAP_BIN (cargo build --release, or set BOOTSTRAP_BIN)"
LAB="$LAB_DIR/lab"

"$LAB" up >/dev/null
inv="$LAB_STATE/inventory.toml"
bs() { "$BOOTSTRAP_BIN" -i "$inv" --playbooks "$REPO_ROOT/playbooks" "$@"; }

bs secrets init >/dev/null
rc=0
(($#)) || set -- --skip-tags manifests
bs all "$@" || rc=$?
diagrams="$LAB_STATE/diagram"
mkdir -p "$diagrams"
bs diagram -o "$diagrams/" >/dev/null
bs diagram --format mermaid -o "$diagrams/" >/dev/null

# A variable of the lab's inventory (the product's [vars] with the lab's overrides).
var() { awk -F' *= *' -v k="$1" '$1 == k { v = $2; sub(/ *#.*/, "", v); gsub(/"/, "", v); print v; exit }' "$inv"; }
# Answers a TCP connection from the master's namespace (allowed by every firewall rule)?
answers() { if ip netns exec "$(netns_name master)" nc -z -w 2 "$1" "$2" 2>/dev/null; then echo "answers"; else echo "not answering"; fi; }
m="${MACHINE_IP[master]}" w="${MACHINE_IP[worker]}" e="${MACHINE_IP[elk]}"

echo
if ((rc == 0)); then echo "demo: bootstrap all succeeded."; else echo "demo: bootstrap all exited $rc (see above); the lab is still up to look at."; fi
echo
echo "Machines (user vagrant, key $LAB_STATE/id_ed25519):"
for name in "${PLATFORM_MACHINES[@]}"; do
  printf '  %-7s %-13s tests/lab/lab ssh %s\n' "$name" "${MACHINE_IP[$name]}" "$name"
done
echo "  Run a host program at a machine's address: tests/lab/lab exec-ns NAME CMD (e.g. curl);"
echo "  from outside the platform: tests/lab/lab exec-outsider CMD."
echo
echo "Services (probed from the master's namespace; a stand-in answers where the lab uses one):"
api="$(var api_port)" db="$(var db_port)" es="$(var elasticsearch_port)" kb="$(var kibana_port)"
http="$(var ingress_http_node_port)" graf="$(var grafana_node_port)" domain="$(var domain)"
scheme="$(var elasticsearch_scheme)"
printf '  %-15s %-28s %s\n' \
  "Kubernetes API" "https://$m:$api" "$(answers "$m" "$api")" \
  "PostgreSQL" "$w:$db" "$(answers "$w" "$db")" \
  "Elasticsearch" "$scheme://$e:$es" "$(answers "$e" "$es")" \
  "Kibana" "$scheme://$e:$kb" "$(answers "$e" "$kb")" \
  "App (ingress)" "http://$w:$http" "$(answers "$w" "$http")" \
  "Grafana" "http://$w:$graf" "$(answers "$w" "$graf")"
echo "  The app by name: tests/lab/lab exec-ns master curl -H 'Host: $domain' http://$w:$http/"
echo "  Elasticsearch and Kibana's CA (for curl --cacert or a browser): $(dirname "$inv")/.bootstrap/elasticsearch-http-ca.crt"
echo
echo "Diagram of this lab (layers 1-3, SVG and Mermaid): $diagrams/"
echo "Inventory: $inv   Secrets: $LAB_STATE/secrets.toml (0600)"
echo "Take it down: tests/lab/lab down"
exit "$rc"
