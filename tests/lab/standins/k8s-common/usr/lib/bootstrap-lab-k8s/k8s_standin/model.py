"""The stand-in API's state and rules, without HTTP (so the host's unit tests can exercise them).

State (one JSON document, kept by apiserver.py in API_STATE_FILE):
- objects: applied objects by key "group/Kind/namespace/name", each with a generation;
- applied: every apply in order with its result (created / configured / unchanged);
- nodes: Node objects the kubelets registered and keep updating;
- tokens: bootstrap tokens (id -> secret, expiry), as kubeadm's bootstrap-token Secrets would be.
The readiness model is the stand-in's own, documented in tests/lab/standins/README.md.
"""

import base64
import copy
import hashlib
import hmac
import ipaddress
import json
import re
import secrets
import time

from .common import b64

NAMESPACES_AT_START = ("default", "kube-system", "kube-public", "kube-node-lease")
CALICO_DEFAULT_POOL = "192.168.0.0/16"
# As the node lifecycle controller: a node whose kubelet stopped posting status for this long
# is shown with Ready=Unknown (the real default node-monitor-grace-period is 40 s).
NODE_GRACE_SECONDS = 40
HEARTBEAT = "standin.bootstrap-lab/last-heartbeat"
TOKEN_RE = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")

# (group, Kind) the API knows without a CustomResourceDefinition, with their scope.
CLUSTER_SCOPED = {
    ("", "Namespace"), ("", "Node"), ("", "PersistentVolume"), ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"), ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("storage.k8s.io", "StorageClass"), ("networking.k8s.io", "IngressClass"), ("scheduling.k8s.io", "PriorityClass"),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"), ("apiregistration.k8s.io", "APIService"),
}
NAMESPACED = {
    ("", k) for k in ("ConfigMap", "Secret", "Service", "ServiceAccount", "PersistentVolumeClaim", "Pod",
                      "Endpoints", "LimitRange", "ResourceQuota")
} | {("apps", k) for k in ("Deployment", "DaemonSet", "StatefulSet", "ReplicaSet")} | {
    ("batch", "Job"), ("batch", "CronJob"), ("networking.k8s.io", "Ingress"), ("networking.k8s.io", "NetworkPolicy"),
    ("rbac.authorization.k8s.io", "Role"), ("rbac.authorization.k8s.io", "RoleBinding"),
    ("policy", "PodDisruptionBudget"), ("autoscaling", "HorizontalPodAutoscaler"), ("coordination.k8s.io", "Lease"),
}


def group_of(api_version):
    return api_version.split("/")[0] if "/" in api_version else ""


def plural(kind):
    k = kind.lower()
    if k == "endpoints":
        return k
    if k.endswith("y"):
        return k[:-1] + "ies"
    if k.endswith(("s", "x")):
        return k + "es"
    return k + "s"


def display_kind(group, kind):
    """kubectl's `kind.group` as in `deployment.apps/django-app created`."""
    return kind.lower() + ("." + group if group else "")


def object_key(group, kind, namespace, name):
    return f"{group}/{kind}/{namespace or ''}/{name}"


def comparable(obj):
    """The part of an applied object that decides created/configured/unchanged."""
    o = copy.deepcopy(obj)
    o.pop("status", None)
    meta = o.get("metadata", {})
    for k in ("resourceVersion", "uid", "generation", "creationTimestamp", "managedFields"):
        meta.pop(k, None)
    return json.dumps(o, sort_keys=True)


class ApplyError(Exception):
    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


class Model:
    def __init__(self, state=None, now=time.time):
        self.state = state or {}
        self.now = now
        self.state.setdefault("objects", {})
        self.state.setdefault("applied", [])
        self.state.setdefault("nodes", {})
        self.state.setdefault("tokens", {})
        self.state.setdefault("cluster", {})
        for ns in NAMESPACES_AT_START:
            key = object_key("", "Namespace", "", ns)
            self.state["objects"].setdefault(key, {"object": {"apiVersion": "v1", "kind": "Namespace",
                                                              "metadata": {"name": ns}},
                                                   "generation": 1, "created": self.now()})

    # ------------------------------------------------------------ objects

    def scope(self, group, kind):
        """'Cluster', 'Namespaced', or None when the API does not know the kind."""
        if (group, kind) in CLUSTER_SCOPED:
            return "Cluster"
        if (group, kind) in NAMESPACED:
            return "Namespaced"
        for entry in self.state["objects"].values():
            o = entry["object"]
            if o.get("kind") == "CustomResourceDefinition":
                spec = o.get("spec", {})
                if spec.get("group") == group and spec.get("names", {}).get("kind") == kind:
                    return spec.get("scope", "Namespaced")
        return None

    def apply(self, obj, default_namespace="default", record=True):
        """Records one object; returns (display name, result, generation). Raises ApplyError."""
        api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
        meta = obj.setdefault("metadata", {})
        name = meta.get("name")
        if not api_version or not kind:
            raise ApplyError("Invalid", "apiVersion and kind must be set")
        if not name:
            raise ApplyError("Invalid", f"{kind}: metadata.name must be set")
        group = group_of(api_version)
        scope = self.scope(group, kind)
        if scope is None:
            raise ApplyError("NoMatch", f'no matches for kind "{kind}" in version "{api_version}"')
        if scope == "Namespaced":
            meta["namespace"] = meta.get("namespace") or default_namespace
            if not self.get_object("", "Namespace", "", meta["namespace"]):
                raise ApplyError("NotFound", f'namespaces "{meta["namespace"]}" not found')
        else:
            meta.pop("namespace", None)
        key = object_key(group, kind, meta.get("namespace"), name)
        old = self.state["objects"].get(key)
        # Like kubectl's last-applied-configuration: a rerun is compared with what was applied
        # last, so changes made by `kubectl set env` are neither reported nor undone by it.
        if old is None:
            result, generation = "created", 1
        elif comparable(old.get("applied", old["object"])) == comparable(obj):
            result, generation = "unchanged", old["generation"]
        else:
            result, generation = "configured", old["generation"] + 1
        if result != "unchanged":
            overrides = old.get("env_overrides", {}) if old else {}
            live = copy.deepcopy(obj)
            set_env(live, overrides)
            live["metadata"]["generation"] = generation
            fill_service_account_token(live, old and old["object"])
            self.state["objects"][key] = {"object": live, "applied": copy.deepcopy(obj), "generation": generation,
                                          "env_overrides": overrides, "created": old["created"] if old else self.now()}
        if record:
            self.state["applied"].append({"seq": len(self.state["applied"]) + 1, "time": self.now(), "group": group,
                                          "kind": kind, "namespace": meta.get("namespace"), "name": name,
                                          "result": result, "generation": generation})
        if result != "unchanged":
            self.controllers_after_apply(group, kind, key, obj)
        return f"{display_kind(group, kind)}/{name}", result, generation

    def controllers_after_apply(self, group, kind, key, obj):
        """What the cluster's controllers do at once in the stand-in, where the playbooks depend on it.

        A Job runs no container here, so it has completed when it is created. One with
        `ttlSecondsAfterFinished: 0` (ingress-nginx's admission Jobs) is then deleted, as the
        TTL-after-finished controller does (`kubectl wait --for=condition=complete` on it fails with
        NotFound, as on a real cluster). A Job annotated `bootstrap-lab/patches-ca-of: NAME` stands for
        kube-webhook-certgen's `patch`: it sets the caBundle of the ValidatingWebhookConfiguration NAME,
        now or when that is applied later in the same apply (kustomize applies webhooks last)."""
        if group == "batch" and kind == "Job":
            target = obj.get("metadata", {}).get("annotations", {}).get("bootstrap-lab/patches-ca-of")
            if target:
                self.state.setdefault("ca_patches", []).append(target)
            if obj.get("spec", {}).get("ttlSecondsAfterFinished") == 0:
                del self.state["objects"][key]
        for target in list(self.state.get("ca_patches", [])):
            live = self.state["objects"].get(
                object_key("admissionregistration.k8s.io", "ValidatingWebhookConfiguration", None, target))
            if live:
                for webhook in live["object"].get("webhooks", []):
                    webhook.setdefault("clientConfig", {})["caBundle"] = "c3RhbmQtaW4gbGFiIENB"
                self.state["ca_patches"].remove(target)

    def set_env(self, group, kind, namespace, name, container, pairs):
        """`kubectl set env`: returns True when the live object changed (its generation then grows)."""
        entry = self.state["objects"].get(object_key(group, kind, namespace, name))
        if entry is None:
            return None
        overrides = entry.setdefault("env_overrides", {})
        wanted = {container or "*": dict(pairs)}
        before = json.dumps(entry["object"], sort_keys=True)
        set_env(entry["object"], wanted)
        if json.dumps(entry["object"], sort_keys=True) == before:
            return False
        overrides.setdefault(container or "*", {}).update(pairs)
        entry["generation"] += 1
        entry["object"]["metadata"]["generation"] = entry["generation"]
        return True

    def get_object(self, group, kind, namespace, name):
        entry = self.state["objects"].get(object_key(group, kind, namespace, name))
        return entry and entry["object"]

    def list_objects(self, kind=None, group=None, namespace=None):
        out = []
        for entry in self.state["objects"].values():
            o = entry["object"]
            if kind and o["kind"].lower() != kind.lower():
                continue
            if group is not None and group_of(o["apiVersion"]) != group:
                continue
            if namespace and o["metadata"].get("namespace") not in (None, namespace):
                continue
            out.append(o)
        return out

    def delete_object(self, group, kind, namespace, name):
        """Deletes one object; a cluster-scoped kind ignores the namespace, and a Namespace takes the
        objects in it along, as the namespace controller does (here at once, so `--wait` has no
        wait: the real one returns once the namespace is gone, too)."""
        if self.scope(group, kind) == "Cluster":
            namespace = None
        if self.state["objects"].pop(object_key(group, kind, namespace, name), None) is None:
            return False
        if (group, kind) == ("", "Namespace"):
            for key, entry in list(self.state["objects"].items()):
                if entry["object"].get("metadata", {}).get("namespace") == name:
                    del self.state["objects"][key]
        return True

    # ------------------------------------------------------------ bootstrap tokens

    def add_token(self, token, ttl_seconds, usages=("signing", "authentication"), description=""):
        m = TOKEN_RE.match(token)
        if not m:
            raise ApplyError("Invalid", "the bootstrap token is not of the form [a-z0-9]{6}.[a-z0-9]{16}")
        expires = self.now() + ttl_seconds if ttl_seconds > 0 else None
        self.state["tokens"][m.group(1)] = {"secret": m.group(2), "expires": expires, "usages": list(usages),
                                            "description": description}

    def purge_expired_tokens(self):
        """The token cleaner: expired tokens disappear (and with them their cluster-info signature)."""
        now = self.now()
        for tid in [t for t, v in self.state["tokens"].items() if v["expires"] is not None and v["expires"] <= now]:
            del self.state["tokens"][tid]

    def token_valid(self, token):
        self.purge_expired_tokens()
        m = TOKEN_RE.match(token or "")
        if not m:
            return False
        entry = self.state["tokens"].get(m.group(1))
        return bool(entry) and hmac.compare_digest(entry["secret"], m.group(2))

    def cluster_info(self):
        """kube-public/cluster-info: the CA kubeconfig, signed (detached JWS, HS256) per valid token."""
        self.purge_expired_tokens()
        cm = self.get_object("", "ConfigMap", "kube-public", "cluster-info") or {}
        kubeconfig = cm.get("data", {}).get("kubeconfig", "")
        data = {"kubeconfig": kubeconfig}
        for tid, entry in self.state["tokens"].items():
            if "signing" in entry["usages"]:
                data["jws-kubeconfig-" + tid] = jws_detached(kubeconfig, tid, entry["secret"])
        return {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cluster-info", "namespace": "kube-public"}, "data": data}

    # ------------------------------------------------------------ nodes and readiness

    def node_view(self, node):
        """The node as the API shows it: Ready=Unknown once its heartbeats stopped."""
        beat = node.get("metadata", {}).get("annotations", {}).get(HEARTBEAT)
        if beat is None or self.now() - float(beat) <= NODE_GRACE_SECONDS:
            return node
        view = copy.deepcopy(node)
        view["metadata"]["annotations"]["standin.bootstrap-lab/runtime-ready"] = "unknown"
        view["status"]["conditions"] = [{"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                                         "message": "Kubelet stopped posting node status."}]
        return view

    def nodes(self):
        return [self.node_view(n) for n in self.state["nodes"].values()]

    def heartbeat(self, name, status, annotations):
        node = self.state["nodes"][name]
        node["status"] = status
        ann = node["metadata"].setdefault("annotations", {})
        ann.update(annotations)
        ann[HEARTBEAT] = str(self.now())
        return node

    def node_ready(self, node):
        return condition(node, "Ready") == "True"

    def runtime_ready(self, node):
        return node.get("metadata", {}).get("annotations", {}).get("standin.bootstrap-lab/runtime-ready") == "true"

    def eligible_nodes(self, pod_spec):
        selector = pod_spec.get("nodeSelector") or {}
        out = []
        for node in self.nodes():
            labels = node["metadata"].get("labels", {})
            if any(labels.get(k) != v for k, v in selector.items()):
                continue
            if all(tolerated(t, pod_spec.get("tolerations") or []) for t in node.get("spec", {}).get("taints", [])
                   if t.get("effect") in ("NoSchedule", "NoExecute")):
                out.append(node)
        return out

    def pod_ready_on(self, node, pod_spec, labels):
        """A pod of ours is ready on a node: host-network pods need the runtime, others a Ready node;
        a calico-node pod also needs its IP pool to be the cluster's pod CIDR."""
        if pod_spec.get("hostNetwork"):
            ok = self.runtime_ready(node)
        else:
            ok = self.node_ready(node)
        if ok and labels.get("k8s-app") == "calico-node":
            ok = self.calico_pool()["ok"] and "projectcalico.org/IPv4Address" in node["metadata"].get("annotations", {})
        return ok

    def rollout(self, kind, namespace, name):
        """(desired, ready, generation) of a DaemonSet or Deployment, or None when it does not exist."""
        obj = self.get_object("apps", kind, namespace, name)
        if obj is None:
            return None
        template = obj.get("spec", {}).get("template", {})
        pod_spec, labels = template.get("spec", {}), template.get("metadata", {}).get("labels", {})
        nodes = self.eligible_nodes(pod_spec)
        if kind == "DaemonSet":
            desired = len(nodes)
            ready = sum(1 for n in nodes if self.pod_ready_on(n, pod_spec, labels))
        else:
            desired = obj.get("spec", {}).get("replicas", 1)
            ready = desired if any(self.pod_ready_on(n, pod_spec, labels) for n in nodes) else 0
        return desired, ready, obj["metadata"].get("generation", 1)

    def pods(self, namespace=None):
        """Pods as the stand-in would run them (none really runs): one per eligible node for a
        DaemonSet, `replicas` for a Deployment, on the first eligible node where they would be ready."""
        out = []
        for kind in ("DaemonSet", "Deployment"):
            for obj in self.list_objects(kind=kind, group="apps", namespace=namespace):
                meta = obj["metadata"]
                template = obj.get("spec", {}).get("template", {})
                pod_spec, labels = template.get("spec", {}), template.get("metadata", {}).get("labels", {})
                nodes = self.eligible_nodes(pod_spec)
                if kind == "DaemonSet":
                    placed = [(n, self.pod_ready_on(n, pod_spec, labels)) for n in nodes]
                else:
                    ready_nodes = [n for n in nodes if self.pod_ready_on(n, pod_spec, labels)]
                    node = ready_nodes[0] if ready_nodes else None
                    placed = [(node, node is not None)] * obj.get("spec", {}).get("replicas", 1)
                for i, (node, ready) in enumerate(placed):
                    node_name = node["metadata"]["name"] if node else None
                    suffix = hashlib.sha256(f"{meta['name']}/{node_name}/{i}".encode()).hexdigest()[:5]
                    out.append({"apiVersion": "v1", "kind": "Pod",
                                "metadata": {"name": f"{meta['name']}-{suffix}", "namespace": meta.get("namespace"),
                                             "labels": labels, "ownerReferences": [{"kind": kind, "name": meta["name"]}],
                                             "annotations": {"bootstrap-lab/stand-in": "no container runs"}},
                                "spec": {"nodeName": node_name},
                                "status": {"phase": "Running" if ready else "Pending",
                                           "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}})
        return out

    def pod_cidr(self):
        """The cluster's pod CIDR, from the kubeadm-config ConfigMap kubeadm init uploaded."""
        cm = self.get_object("", "ConfigMap", "kube-system", "kubeadm-config")
        if not cm:
            return None
        import yaml

        cfg = yaml.safe_load(cm.get("data", {}).get("ClusterConfiguration", "")) or {}
        return (cfg.get("networking") or {}).get("podSubnet")

    def calico_pool(self):
        """The IP pool the stand-in calico-node would use, and whether it is the cluster's pod CIDR.

        As Calico does: an existing IPPool wins; else the calico-node container's CALICO_IPV4POOL_CIDR;
        else kubeadm's podSubnet; else Calico's default 192.168.0.0/16.
        """
        pod_cidr = self.pod_cidr()
        pools = self.list_objects(kind="IPPool", group="crd.projectcalico.org")
        source, cidr = None, None
        if pools:
            cidr, source = pools[0].get("spec", {}).get("cidr"), f"IPPool {pools[0]['metadata']['name']}"
        else:
            ds = self.get_object("apps", "DaemonSet", "kube-system", "calico-node")
            for c in (ds or {}).get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                for env in c.get("env") or []:
                    if env.get("name") == "CALICO_IPV4POOL_CIDR" and env.get("value"):
                        cidr, source = env["value"], "calico-node env CALICO_IPV4POOL_CIDR"
            if cidr is None and pod_cidr:
                cidr, source = pod_cidr, "kubeadm-config networking.podSubnet"
            if cidr is None:
                cidr, source = CALICO_DEFAULT_POOL, "Calico's default"
        ok = pod_cidr is not None and same_network(cidr, pod_cidr)
        message = (f"IP pool {cidr} ({source}) is the cluster pod CIDR" if ok else
                   f"IP pool {cidr} ({source}) is not the cluster pod CIDR {pod_cidr} "
                   "(kubeadm-config networking.podSubnet): pods would get addresses the cluster does not route")
        return {"cidr": cidr, "source": source, "podCIDR": pod_cidr, "ok": ok,
                "message": "stand-in calico-node: " + message}


def fill_service_account_token(live, old_live):
    """The token controller: a `kubernetes.io/service-account-token` Secret gets `data.token`
    (kept across re-applies, like the real controller keeps it). Only the live object has it,
    so comparing a rerun with what was applied stays unchanged."""
    if live.get("kind") != "Secret" or live.get("type") != "kubernetes.io/service-account-token":
        return
    data = live.setdefault("data", {}) or {}
    live["data"] = data
    if data.get("token"):
        return
    old_token = ((old_live or {}).get("data") or {}).get("token")
    token = old_token or base64.b64encode(("standin-sa-token." + secrets.token_hex(24)).encode()).decode()
    data["token"] = token


def set_env(obj, overrides):
    """Sets env variables on the pod template's containers: {container name or "*": {NAME: value}}."""
    for c in obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []:
        for target, pairs in overrides.items():
            if target not in ("*", c.get("name")):
                continue
            env = c.setdefault("env", [])
            for k, v in pairs.items():
                existing = next((e for e in env if e.get("name") == k), None)
                if existing is None:
                    env.append({"name": k, "value": v})
                else:
                    existing.pop("valueFrom", None)
                    existing["value"] = v


def same_network(a, b):
    try:
        return ipaddress.ip_network(a, strict=False) == ipaddress.ip_network(b, strict=False)
    except ValueError:
        return False


def condition(obj, ctype):
    for c in obj.get("status", {}).get("conditions", []):
        if c.get("type") == ctype:
            return c.get("status")
    return None


def tolerated(taint, tolerations):
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        if t.get("operator") == "Exists" and not t.get("key"):
            return True
        if t.get("key") == taint.get("key"):
            if t.get("operator") == "Exists" or t.get("value", "") == taint.get("value", ""):
                return True
    return False


def b64url(data):
    return b64(data).rstrip("=").replace("+", "-").replace("/", "_")


def jws_detached(payload, kid, secret):
    header = b64url(json.dumps({"alg": "HS256", "kid": kid}, separators=(",", ":")))
    signing_input = (header + "." + b64url(payload)).encode()
    sig = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return header + ".." + b64url(sig)


def jws_verify(detached, payload, secret):
    try:
        header, empty, _sig = detached.split(".")
    except ValueError:
        return False
    kid = json.loads(__import__("base64").urlsafe_b64decode(header + "=" * (-len(header) % 4))).get("kid", "")
    return empty == "" and hmac.compare_digest(jws_detached(payload, kid, secret), detached)
