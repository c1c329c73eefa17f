# shellcheck shell=bash
# The hand-off on the real cluster (issue 19): the manifests stage as a user gets it, then the
# seed's five flows (user HTTP, database, metrics, logs, CI/CD) and the backup CronJob, each
# asserting something that fails when the flow is broken. Sourced by scenario.sh after checks.sh,
# whose helpers it uses (check, on_host, on_outsider, host_addr, toml_get, secret_value, ...).
#
# Needs ADMIN_KUBECTL (a real kubectl on the admin machine); the kubeconfigs are the ones
# bootstrap fetched into .bootstrap/ beside the inventory.

load_handoff_vars() {
  load_db_vars
  load_elk_vars
  APP_NS="$(toml_get "$INVENTORY" vars.app_namespace)"
  MON_NS="$(toml_get "$INVENTORY" vars.monitoring_namespace)"
  DOMAIN="$(toml_get "$INVENTORY" vars.domain)"
  HTTP_NODEPORT="$(toml_get "$INVENTORY" vars.ingress_http_node_port)"
  GRAFANA_NODEPORT="$(toml_get "$INVENTORY" vars.grafana_node_port)"
  PROM_PORT="$(toml_get "$INVENTORY" vars.prometheus_port)"
  BACKUP_DIR="$(toml_get "$INVENTORY" vars.backup_host_path)"
  APP_IMAGE="$(toml_get "$INVENTORY" vars.app_image)"
  # The second image CI moves the Deployment to: the same lab app, release 2.
  APP_IMAGE_2="${APP_IMAGE%:*}:2"
  STATE_DIR="$(dirname "$INVENTORY")/.bootstrap"
  # The row the app reads from PostgreSQL and answers with: new for every scenario run.
  GREETING="${GREETING:-lab greeting $(random_hex)}"
}

# A fresh token of 12 hex digits, for values a check must find again and no earlier run wrote.
random_hex() { head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

deployer_kubectl() { "${ADMIN_KUBECTL:?}" --kubeconfig "$STATE_DIR/deployer.kubeconfig" "$@"; }

# ---------------------------------------------------------------- the manifests stage

# The files of the hand-off as rendered on the admin machine (the upstream ingress release
# files included), without the kustomizations.
handoff_files() { find "$STATE_DIR/manifests" -name '*.yaml' ! -name kustomization.yaml | sort; }

# Every object of every hand-off file, as the cluster has it: "kind namespace name" and, for each,
# what kubectl last wrote (its managedFields entries of kubectl's managers, with their times). An
# apply that changes nothing writes nothing, so two equal fingerprints mean no object was touched.
handoff_fingerprint() {
  local f
  for f in $(handoff_files); do
    admin_kubectl get -f "$f" -o json --show-managed-fields || { echo "MISSING objects of $f"; continue; }
  done | jq -r '(if .kind == "List" then .items[] else . end)
    | "\(.kind) \(.metadata.namespace // "-") \(.metadata.name) \([.metadata.managedFields[]? | select(.manager | startswith("kubectl")) | "\(.manager)/\(.operation)@\(.time)"] | join(","))"' | sort
}

# Every object of the hand-off exists in the cluster (kubectl get -f names each missing one).
handoff_objects_exist() {
  local fp n unwritten
  fp="$(handoff_fingerprint 2>&1)"
  if grep -q 'MISSING\|NotFound' <<<"$fp"; then grep 'MISSING\|NotFound' <<<"$fp"; return 1; fi
  n="$(wc -l <<<"$fp")"
  ((n >= 40)) || { echo "only $n objects found"; return 1; }
  # Each was written by kubectl (the fingerprints below compare these entries).
  unwritten="$(awk 'NF < 4' <<<"$fp")"
  [[ -z $unwritten ]] || { printf 'no kubectl write recorded for:\n%s\n' "$unwritten"; return 1; }
  echo "$n objects"
}

# fingerprint_changes BEFORE AFTER: "kind namespace name" of the objects whose fingerprint differs.
fingerprint_changes() { diff <(echo "$1") <(echo "$2") | sed -n 's/^> //p' | awk '{ print $1, $2, $3 }' | sort -u; }

touched_since_is() { # BEFORE WANT
  local got after
  after="$(handoff_fingerprint)"
  (($(wc -l <<<"$1") >= 40 && $(wc -l <<<"$after") >= 40)) || { echo "too few objects to compare: $(wc -l <<<"$1") before, $(wc -l <<<"$after") after"; return 1; }
  got="$(fingerprint_changes "$1" "$after")"
  [[ $got == "$2" ]] || { printf 'objects written:\n%s\nexpected:\n%s\n' "${got:-(none)}" "${2:-(none)}"; return 1; }
}

# The workloads of the hand-off rolled out: every Deployment and DaemonSet of it available.
handoff_workloads_ready() {
  local ns kind name bad=()
  while read -r kind ns name; do
    admin_kubectl -n "$ns" rollout status "$kind/$name" --timeout=10s >/dev/null 2>&1 || bad+=("$kind/$ns/$name")
  done < <(admin_kubectl get deployments,daemonsets -A -o json |
    jq -r '.items[] | select(.metadata.namespace | IN("crypto-exchange", "monitoring", "logging", "nginx-ingress")) | "\(.kind | ascii_downcase) \(.metadata.namespace) \(.metadata.name)"')
  ((${#bad[@]} == 0)) || { echo "not rolled out: ${bad[*]}"; admin_kubectl get pods -A -o wide | grep -v kube-system; return 1; }
}

check_manifests() {
  local before changed_inv values=() name
  load_handoff_vars
  check "manifests: every object of the hand-off (the ingress release files included) exists in the cluster" handoff_objects_exist
  check "manifests: every Deployment and DaemonSet of the hand-off is rolled out (images pulled, probes passing)" handoff_workloads_ready
  check "manifests: the deployer kubeconfig is on the admin machine (0600, a token, the master's API)" deployer_kubeconfig_fetched

  before="$(handoff_fingerprint)"
  check "manifests: a rerun exits 0" exit_code_is 0 bootstrap_json manifests-rerun manifests
  check "manifests: a rerun reports 0 changed" summary_is manifests-rerun changed 0
  check "manifests: ... and writes no object in the cluster" touched_since_is "$before" ""

  # A changed app_replicas: only the Deployment is configured (a copy of the lab inventory, beside it).
  changed_inv="$(dirname "$INVENTORY")/inventory-replicas.toml"
  inventory_with_var "$INVENTORY" app_replicas "$(($(toml_get "$INVENTORY" vars.app_replicas) + 1))" >"$changed_inv"
  before="$(handoff_fingerprint)"
  check "manifests: a changed app_replicas exits 0" exit_code_is 0 env_inventory "$changed_inv" bootstrap_json manifests-replicas manifests
  check "manifests: ... changes the Deployment's file and its apply handler only" changed_steps_are manifests-replicas \
    "$(printf 'master\t%s\n' "handler: apply crypto-exchange" "manifest crypto-exchange/deployment.yaml" | sort)"
  check "manifests: ... and writes only the Deployment in the cluster" touched_since_is "$before" "Deployment $APP_NS django-app"
  check "manifests: ... which runs one more replica" deployment_replicas_are "$(($(toml_get "$INVENTORY" vars.app_replicas) + 1))"
  before="$(handoff_fingerprint)"
  check "manifests: back to the lab inventory exits 0" exit_code_is 0 bootstrap_json manifests-back manifests
  check "manifests: ... and writes only the Deployment again" touched_since_is "$before" "Deployment $APP_NS django-app"
  check "manifests: ... back to app_replicas" deployment_replicas_are "$(toml_get "$INVENTORY" vars.app_replicas)"
  rm -f "$changed_inv"

  for name in db_password django_secret_key grafana_admin_password log_shipper_password; do values+=("$(secret_value "$name")"); done
  check "manifests: the Secrets' values are in no output, --json event or log" \
    not_leaked_any "$LAB_LOGS" "$(state_logs)" -- "${values[@]}"
}

deployment_replicas_are() {
  admin_kubectl -n "$APP_NS" rollout status deployment/django-app --timeout=120s >/dev/null || return 1
  local got
  got="$(admin_kubectl -n "$APP_NS" get deployment django-app -o jsonpath='{.status.readyReplicas}/{.spec.replicas}')"
  [[ $got == "$1/$1" ]] || { echo "ready/wanted: $got, expected $1/$1"; return 1; }
}

# ---------------------------------------------------------------- flow 1: user HTTP (red)

# The row the app answers with, in the app's database on the worker: a table of the lab's own,
# owned by the app's role as the app's own tables are (so the nightly pg_dump, as that role, can
# read it and its sequence).
greeting_row_written() {
  on_host worker "sudo -u postgres psql -X -q -v ON_ERROR_STOP=1 -d '$DB_NAME'" <<SQL
CREATE TABLE IF NOT EXISTS lab_greeting (id serial PRIMARY KEY, message text NOT NULL);
TRUNCATE lab_greeting;
INSERT INTO lab_greeting (message) VALUES ('$GREETING');
ALTER TABLE lab_greeting OWNER TO "$DB_USER";
SQL
}

# ingress_get ADDR PATH [HOST]: the body of GET PATH on the ingress NodePort of ADDR, from the outsider.
ingress_get() {
  on_outsider curl -sS --fail-with-body --max-time 10 -H "Host: ${3:-$DOMAIN}" "http://$1:$HTTP_NODEPORT$2"
}

# app_answers_via NODE RELEASE: the app, reached through NODE's ingress NodePort, answers with the
# database row, from a pod of release RELEASE.
app_answers_via() {
  local body
  body="$(ingress_get "$(host_addr "$1")" /)" || { echo "$body"; return 1; }
  [[ $(head -1 <<<"$body") == "$GREETING" ]] || { printf 'answer:\n%s\nexpected the row: %s\n' "$body" "$GREETING"; return 1; }
  grep -q "^release=$2 pod=django-app-" <<<"$body" || { printf 'answer:\n%s\nexpected release %s\n' "$body" "$2"; return 1; }
}

# app_answers_eventually NODE RELEASE: the same, within 30 s: after a rollout the controller
# follows the EndpointSlices (the stand-in every 2 s), so the first requests may still go to a
# pod that is stopping.
app_answers_eventually() {
  local i out
  for i in $(seq 15); do
    out="$(app_answers_via "$@" 2>&1)" && return 0
    sleep 2
  done
  echo "$out"
  return 1
}

# Another Host header reaches no app: the ingress routes by host (the controller's 404).
other_host_not_routed() {
  local code
  code="$(on_outsider curl -sS -o /dev/null -w '%{http_code}' --max-time 10 -H 'Host: not-the-app.example' \
    "http://$(host_addr master):$HTTP_NODEPORT/")"
  [[ $code == 404 ]] || { echo "HTTP $code for another host, expected 404"; return 1; }
}

# ---------------------------------------------------------------- flow 2: database (blue)

# app_pods FIELD: a field (jsonpath, e.g. .status.podIP) of each running app pod, sorted.
app_pods() {
  admin_kubectl -n "$APP_NS" get pods -l app=django-app --field-selector=status.phase=Running \
    -o jsonpath="{range .items[*]}{$1}{\"\\n\"}{end}" | sort
}

# The addresses PostgreSQL sees the app's role connected from (pg_stat_activity).
db_client_addrs() {
  on_host worker "sudo -u postgres psql -X -Atc \"select distinct host(client_addr) from pg_stat_activity
    where usename = '$DB_USER' and datname = '$DB_NAME' and client_addr is not null\"" | sort
}

# Requests through the ingress until every app pod has answered once (the controller spreads
# them; a bound of 40), so that each holds a connection in its pool; then every app pod's address
# is among PostgreSQL's clients. The pods run on the worker (the master keeps its control-plane
# taint): their connections to the worker's address arrive from the pod addresses, not NATed.
app_connections_from_pod_addresses() {
  local ips addrs missing pods="" i
  ips="$(app_pods .status.podIP)"
  (($(wc -l <<<"$ips") >= 2)) || { printf 'running app pods: %s\n' "$ips"; return 1; }
  for i in $(seq 40); do
    pods="$(printf '%s\n%s' "$pods" "$(ingress_get "$(host_addr worker)" / | sed -n 's/.* pod=//p')" | sort -u | sed '/^$/d')"
    (($(wc -l <<<"$pods") >= $(wc -l <<<"$ips"))) && break
  done
  addrs="$(db_client_addrs)"
  missing="$(comm -23 <(echo "$ips") <(echo "$addrs"))"
  [[ -z $missing ]] || { printf 'app pods %s not among the clients PostgreSQL sees:\n%s\n' "$missing" "$addrs"; return 1; }
  printf 'app pods %s connected\n' "$(echo "$ips" | tr '\n' ' ')"
}

# ---------------------------------------------------------------- flow 3: metrics (green)

prometheus_api() { admin_kubectl get --raw "/api/v1/namespaces/$MON_NS/services/prometheus-service:$PROM_PORT/proxy$1"; }

# Prometheus's active django-app targets: "pod health" per target.
app_targets() {
  prometheus_api '/api/v1/targets?state=active' |
    jq -r '.data.activeTargets[] | select(.labels.job == "django-app") | "\(.labels.pod) \(.health)"' | sort
}

# One target per app pod, each scraped healthy (waited for: a scrape every scrape_interval).
app_targets_one_per_pod_up() {
  local want got i
  want="$(app_pods .metadata.name | sed 's/$/ up/')"
  for i in $(seq 30); do
    got="$(app_targets)"
    [[ $got == "$want" ]] && return 0
    sleep 2
  done
  printf 'django-app targets:\n%s\nexpected:\n%s\n' "$got" "$want"
  return 1
}

# grafana_call PASSWORD PATH [BODY]: Grafana on the master's NodePort from the admin machine (an
# admin_allowed address), as the admin user; the password reaches curl on stdin.
grafana_call() {
  local -a data=()
  [[ -n ${3:-} ]] && data=(-H 'Content-Type: application/json' --data-binary "$3")
  printf 'user = "%s:%s"\n' "$(toml_get "$INVENTORY" vars.grafana_admin_user)" "$1" |
    curl -sS --max-time 15 -K - "${data[@]}" "http://$(host_addr master):$GRAFANA_NODEPORT$2"
}

# Grafana answers a query through its provisioned Prometheus data source: one series of the app's
# info metric per app pod (waited for, 60 s: a new pod's series appears with its first scrape,
# a gone pod's when Prometheus marks it stale).
grafana_series_per_pod() {
  local answer got want i
  for i in $(seq 30); do
    answer="$(grafana_call "$(secret_value grafana_admin_password)" /api/ds/query \
      '{"queries":[{"refId":"A","datasource":{"uid":"prometheus","type":"prometheus"},"expr":"crypto_exchange_lab_info","instant":true}],"from":"now-5m","to":"now"}')" || return 1
    got="$(jq -r '.results.A.frames[].schema.fields[] | select(.name == "Value") | .labels.pod' <<<"$answer" 2>/dev/null | sort)"
    want="$(app_pods .metadata.name)"
    [[ $got == "$want" ]] && return 0
    sleep 2
  done
  printf 'series per pod:\n%s\nexpected:\n%s\nanswer: %s\n' "$got" "$want" "${answer:0:400}"
  return 1
}

grafana_refuses_wrong_password() {
  local answer
  answer="$(grafana_call "not-the-password" /api/datasources)"
  grep -q 'Invalid username or password' <<<"$answer" || { echo "answer: $answer"; return 1; }
}

# ---------------------------------------------------------------- flow 4: logs (orange)

# es_search BODY: a search of the log data stream as elastic, from the master's position.
es_search() {
  printf 'user = "elastic:%s"\n' "$(secret_value elastic_password)" |
    from_position master curl -sS --max-time 10 --cacert "$ES_CA" -K - -H 'Content-Type: application/json' \
      --data-binary "$1" "$(es_url "/$LOG_STREAM/_search")"
}

# A request with a path of its own makes the app write one JSON line to stdout; that line is in
# Elasticsearch's log stream within 60 s, with the pod's Kubernetes metadata (the kubernetes
# filter) and the app's keys under log_processed, written by the shipper's user.
app_log_line_shipped() {
  local probe path answer hits i writer
  probe="lab-log-$(random_hex)"
  path="/?probe=$probe"
  ingress_get "$(host_addr worker)" "$path" >/dev/null || return 1
  for i in $(seq 30); do
    answer="$(es_search "{\"query\":{\"term\":{\"log_processed.path\":\"$path\"}}}")"
    hits="$(jq -r '.hits.total.value // 0' <<<"$answer" 2>/dev/null)"
    [[ ${hits:-0} -ge 1 ]] && break
    sleep 2
  done
  [[ ${hits:-0} == 1 ]] || { printf '%s hits for %s after 60 s: %s\n' "${hits:-no}" "$path" "${answer:0:400}"; return 1; }
  jq -e --arg ns "$APP_NS" '.hits.hits[0]._source | .kubernetes.namespace_name == $ns and (.kubernetes.pod_name | startswith("django-app-"))
    and .kubernetes.labels.app == "django-app" and .log_processed.status == 200 and (."@timestamp" | type == "string")' \
    <<<"$answer" >/dev/null || { echo "document: $(jq -c '.hits.hits[0]._source' <<<"$answer")"; return 1; }
  # Who wrote it: the stand-in keeps the authenticated writer of each document in its state.
  writer="$(on_host elk "sudo python3 -c 'import json, sys; s = json.load(open(\"/var/lib/elasticsearch/standin-state.json\"));
print(*[d[\"written_by\"] for ds in s[\"data_streams\"].values() for d in ds[\"docs\"]
  if (d[\"_source\"].get(\"log_processed\") or {}).get(\"path\") == sys.argv[1]])' '$path'")"
  [[ $writer == "$SHIPPER" ]] || { echo "written by '$writer', expected the shipper $SHIPPER"; return 1; }
}

# ---------------------------------------------------------------- flow 5: CI/CD (purple)

deployer_can() {
  local out
  out="$(deployer_kubectl auth can-i "$@" 2>&1)" || { echo "can-i $*: $out"; return 1; }
}

# can-i answers "no" (its last line: a cluster-scoped resource comes with a warning first).
deployer_cannot() {
  local out
  if out="$(deployer_kubectl auth can-i "$@" 2>&1)"; then echo "can-i $*: $out"; return 1; fi
  [[ $(tail -1 <<<"$out") == no* ]] || { echo "can-i $*: $out"; return 1; }
}

# deployer_refused KUBECTL_ARGS...: a real request with the deployer's credential, refused by the
# API server's authorization (403 Forbidden), not failing for another reason.
deployer_refused() {
  local out
  if out="$(deployer_kubectl "$@" 2>&1 </dev/null)"; then echo "allowed: kubectl $*"; return 1; fi
  grep -qi 'forbidden' <<<"$out" || { echo "kubectl $* failed, but not as forbidden: $out"; return 1; }
}

deployment_image_is() {
  local got
  got="$(admin_kubectl -n "$APP_NS" get deployment django-app -o jsonpath='{.spec.template.spec.containers[0].image}')"
  [[ $got == "$1" ]] || { echo "image $got, expected $1"; return 1; }
}

check_cicd_flow() {
  local pod
  check "ci/cd: the deployer's credential may patch deployment/django-app (can-i)" deployer_can patch deployment/django-app
  check "ci/cd: kubectl set image with .bootstrap/deployer.kubeconfig only" \
    deployer_kubectl set image deployment/django-app "django-app=$APP_IMAGE_2"
  check "ci/cd: kubectl rollout status with the same credential" deployer_kubectl rollout status deployment/django-app --timeout=180s
  check "ci/cd: the outsider now gets release 2 with the row (via the master)" app_answers_eventually master 2
  check "ci/cd: ... and via the worker" app_answers_eventually worker 2

  pod="$(app_pods .metadata.name | head -1)"
  check "ci/cd: can-i refuses another Deployment in the namespace" deployer_cannot patch deployment/another-app
  check "ci/cd: ... and a real patch of it is forbidden" deployer_refused patch deployment another-app -p '{"metadata":{"labels":{"x":"y"}}}'
  check "ci/cd: can-i refuses Secrets" deployer_cannot get secrets
  check "ci/cd: ... and reading the app's Secret is forbidden" deployer_refused get secret crypto-exchange-secret
  check "ci/cd: can-i refuses ConfigMaps" deployer_cannot get configmaps
  check "ci/cd: ... and reading the app's ConfigMap is forbidden" deployer_refused get configmap crypto-exchange-config
  check "ci/cd: can-i refuses pods/exec" deployer_cannot create pods --subresource=exec
  check "ci/cd: ... and an exec into an app pod is forbidden" deployer_refused create --raw \
    "/api/v1/namespaces/$APP_NS/pods/$pod/exec?command=true&stdout=true" -f /dev/null
  check "ci/cd: can-i refuses Deployments in another namespace" deployer_cannot get deployments -n "$MON_NS"
  check "ci/cd: ... and reading one there is forbidden" deployer_refused -n "$MON_NS" get deployment prometheus
  check "ci/cd: can-i refuses nodes (cluster scope)" deployer_cannot list nodes
  check "ci/cd: ... and listing nodes and namespaces is forbidden" deployer_refused get nodes
  check "ci/cd: ... (namespaces)" deployer_refused get namespaces

  check "ci/cd: a rerun of bootstrap manifests exits 0" exit_code_is 0 bootstrap_json manifests-after-ci manifests
  check "ci/cd: ... reports 0 changed" summary_is manifests-after-ci changed 0
  check "ci/cd: ... and keeps the image CI set (the cluster's wins)" deployment_image_is "$APP_IMAGE_2"
}

# ---------------------------------------------------------------- the backup CronJob

BACKUP_JOB="lab-backup-now"
RESTORE_DB="lab_restore_scratch"

backup_job_completes() {
  admin_kubectl -n "$APP_NS" delete job "$BACKUP_JOB" --ignore-not-found >/dev/null
  admin_kubectl -n "$APP_NS" create job "$BACKUP_JOB" --from=cronjob/postgres-daily-backup >/dev/null || return 1
  admin_kubectl -n "$APP_NS" wait --for=condition=complete "job/$BACKUP_JOB" --timeout=180s >/dev/null ||
    { admin_kubectl -n "$APP_NS" logs "job/$BACKUP_JOB" --tail=20; return 1; }
}

newest_dump() { on_host worker "sudo find '$BACKUP_DIR' -maxdepth 1 -name '$DB_NAME-*.dump' -printf '%T@ %f\n' | sort -n | tail -1 | cut -d' ' -f2"; }

dump_on_backup_volume() {
  local f
  f="$(newest_dump)"
  [[ -n $f ]] || { echo "no $DB_NAME-*.dump in $BACKUP_DIR on the worker"; on_host worker "sudo ls -l '$BACKUP_DIR'"; return 1; }
  on_host worker "sudo test -s '$BACKUP_DIR/$f'" || { echo "$f is empty"; return 1; }
  echo "$f"
}

# The dump restores into a scratch database on the worker with the row in it: the worker's own
# pg_restore (the backup image's pg_dump is the server's major, which the manifests stage checks),
# as postgres; then the scratch database is dropped.
dump_restores_with_row() {
  local f got rc=0
  f="$(newest_dump)"
  [[ -n $f ]] || { echo "no dump"; return 1; }
  on_host worker "sudo -u postgres sh -ec 'dropdb --if-exists $RESTORE_DB; createdb $RESTORE_DB;
    pg_restore --no-owner --no-privileges --exit-on-error -d $RESTORE_DB \"$BACKUP_DIR/$f\"'" || rc=1
  got="$(on_host worker "sudo -u postgres psql -X -Atc 'select message from lab_greeting' -d $RESTORE_DB")" || rc=1
  [[ $got == "$GREETING" ]] || { echo "restored rows: '$got', expected '$GREETING'"; rc=1; }
  on_host worker "sudo -u postgres dropdb --if-exists $RESTORE_DB" || rc=1
  return "$rc"
}

# ---------------------------------------------------------------- the five flows

# After check_manifests (the hand-off applied and converged) and check_elk.
check_handoff() {
  load_handoff_vars
  check "hand-off: a row of the lab's own in $DB_NAME on the worker, readable by $DB_USER" greeting_row_written

  # 1. user HTTP
  check "flow 1 (user HTTP): the outsider, Host $DOMAIN on the master's ingress NodePort, gets the database row from the app" \
    app_answers_via master 1
  check "flow 1: ... and on the worker's ingress NodePort" app_answers_via worker 1
  check "flow 1: another Host header is not routed to the app (404 from the ingress controller)" other_host_not_routed

  # 2. database
  check "flow 2 (database): every app pod's connection arrives at PostgreSQL from its pod address" app_connections_from_pod_addresses
  check "flow 2: the outsider still cannot open $DB_ADDR:$DB_PORT" \
    outsider_cannot_open "$DB_ADDR" "$DB_PORT"

  # 3. metrics
  check "flow 3 (metrics): Prometheus has one healthy django-app target per app pod" app_targets_one_per_pod_up
  check "flow 3: Grafana (NodePort $GRAFANA_NODEPORT, the generated admin password) answers a query through its Prometheus data source, one series per pod" \
    grafana_series_per_pod
  check "flow 3: Grafana refuses a wrong admin password" grafana_refuses_wrong_password

  # 4. logs
  check "flow 4 (logs): a line an app pod writes to stdout is in Elasticsearch's $LOG_STREAM within 60 s, with its pod's metadata, written by $SHIPPER" \
    app_log_line_shipped

  # The backup CronJob
  check "backup: a Job from CronJob postgres-daily-backup completes" backup_job_completes
  check "backup: a dump of $DB_NAME is on the backup volume (the worker's $BACKUP_DIR)" dump_on_backup_volume
  check "backup: the dump restores into a scratch database with the row in it (the worker's pg_restore)" dump_restores_with_row

  # 5. CI/CD (last: it moves the app to release 2)
  check_cicd_flow
}
