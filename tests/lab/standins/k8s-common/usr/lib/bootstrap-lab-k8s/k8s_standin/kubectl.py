"""Stand-in kubectl: the calls the playbooks make, answered from the stand-in API's state."""

import json
import os
import sys
import time
import urllib.parse

import yaml

from .common import (STANDIN_NOTE, VERSION, ApiError, Client, ConnectionRefused, Fail, Kubeconfig, load_yaml_docs,
                     parse_duration, run_main, wait_until)
from .model import condition, display_kind, group_of, plural

# kind aliases kubectl users type -> (group, Kind)
KINDS = {
    "node": ("", "Node"), "no": ("", "Node"), "namespace": ("", "Namespace"), "ns": ("", "Namespace"),
    "configmap": ("", "ConfigMap"), "cm": ("", "ConfigMap"), "secret": ("", "Secret"), "service": ("", "Service"),
    "svc": ("", "Service"), "serviceaccount": ("", "ServiceAccount"), "sa": ("", "ServiceAccount"),
    "deployment": ("apps", "Deployment"), "deploy": ("apps", "Deployment"), "daemonset": ("apps", "DaemonSet"),
    "ds": ("apps", "DaemonSet"), "statefulset": ("apps", "StatefulSet"), "sts": ("apps", "StatefulSet"),
    "cronjob": ("batch", "CronJob"), "job": ("batch", "Job"), "ingress": ("networking.k8s.io", "Ingress"),
    "ing": ("networking.k8s.io", "Ingress"), "persistentvolumeclaim": ("", "PersistentVolumeClaim"),
    "pvc": ("", "PersistentVolumeClaim"), "customresourcedefinition": ("apiextensions.k8s.io", "CustomResourceDefinition"),
    "crd": ("apiextensions.k8s.io", "CustomResourceDefinition"), "ippool": ("crd.projectcalico.org", "IPPool"),
    "pod": ("", "Pod"), "po": ("", "Pod"),
    "validatingwebhookconfiguration": ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
    "ingressclass": ("networking.k8s.io", "IngressClass"), "clusterrole": ("rbac.authorization.k8s.io", "ClusterRole"),
    "clusterrolebinding": ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
}
# kustomize's legacy order for `apply -k`: these kinds first in this order, webhooks last, the rest between.
ORDER_FIRST = ["Namespace", "ResourceQuota", "StorageClass", "CustomResourceDefinition", "ServiceAccount",
               "PodSecurityPolicy", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ConfigMap", "Secret",
               "Endpoints", "Service", "LimitRange", "PriorityClass", "PersistentVolume", "PersistentVolumeClaim",
               "Deployment", "StatefulSet", "CronJob", "PodDisruptionBudget"]
ORDER_LAST = ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]


def kind_of(word):
    w = word.lower()
    if w in KINDS:
        return KINDS[w]
    for alias, gk in KINDS.items():
        if plural(gk[1]) == w:
            return gk
    raise Fail(f'error: the server doesn\'t have a resource type "{word}"')


def parse(argv):
    flags, pos, i = {}, [], 0
    with_value = {"kubeconfig", "n", "namespace", "f", "filename", "k", "kustomize", "o", "output", "for", "timeout",
                  "raw", "request-timeout", "l", "selector", "c", "containers"}
    files = []
    while i < len(argv):
        a = argv[i]
        if a.startswith("-") and a != "-":
            name, eq, val = a.lstrip("-").partition("=")
            if not eq and name in with_value:
                if i + 1 >= len(argv):
                    raise Fail(f"error: flag needs an argument: {a}")
                val = argv[i + 1]
                i += 1
            elif not eq:
                val = "true"
            if name in ("f", "filename"):
                files.append(val)
            flags[name] = val
        else:
            pos.append(a)
        i += 1
    flags["files"] = files
    return flags, pos


class Ctl:
    def __init__(self, flags):
        self.flags = flags
        self.namespace = flags.get("n") or flags.get("namespace")
        kc = flags.get("kubeconfig") or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        self.kc = Kubeconfig(kc) if os.path.exists(kc) else None
        self.server = self.kc.server if self.kc else "http://localhost:8080"

    def client(self, timeout=10):
        if not self.kc:
            raise ConnectionRefused("no kubeconfig")
        return Client.from_kubeconfig(self.kc, timeout=timeout)

    def call(self, method, p, body=None):
        try:
            return self.client().request(method, p, body)
        except ConnectionRefused:
            host = self.server.split("://", 1)[1]
            raise Fail(f"The connection to the server {host} was refused - did you specify the right host or port?")
        except ApiError as e:
            raise Fail(server_error(e)) from None

    # ---------------------------------------------------------------- get

    def get(self, pos):
        if self.flags.get("raw"):
            out = self.call("GET", self.flags["raw"])
            print(out if isinstance(out, str) else json.dumps(out, indent=2))
            return 0
        if not pos:
            raise Fail("You must specify the type of resource to get.")
        if "/" in pos[0]:  # `get daemonset/calico-node` as well as `get daemonset calico-node`
            pos = pos[0].split("/", 1) + pos[1:]
        if "," in pos[0]:
            # `get namespaces,deployments -A`: one list of every kind asked, like the real one.
            if len(pos) > 1:
                raise Fail("error: there is no need to specify a resource type as a separate argument "
                           "when passing arguments in resource/name form (stand-in: names with several "
                           "types are not supported)")
            objs = []
            for word in pos[0].split(","):
                group, kind = kind_of(word)
                objs.extend(dict(o, kind=o.get("kind") or kind) for o in self.fetch(group, kind, None))
            self.print_objects(None, None, objs, single=False)
            return 0
        group, kind = kind_of(pos[0])
        try:
            objs = self.fetch(group, kind, pos[1] if len(pos) > 1 else None)
        except Fail:
            # As kubectl: --ignore-not-found prints nothing for an object that is not there.
            if self.flags.get("ignore-not-found") == "true" and len(pos) > 1:
                return 0
            raise
        self.print_objects(kind, group, objs, single=len(pos) > 1)
        return 0

    def fetch(self, group, kind, name):
        if kind == "Pod":
            ns = None if self.all_namespaces() else (self.namespace or "default")
            pods = self.call("GET", "/standin/v1/pods" + (f"?namespace={ns}" if ns else ""))["items"]
            pods = [p for p in pods if matches(p, self.flags.get("l") or self.flags.get("selector"))]
            if name:
                pods = [p for p in pods if p["metadata"]["name"] == name]
                if not pods:
                    raise Fail(f'Error from server (NotFound): pods "{name}" not found')
            return pods
        if kind == "Node":
            if name:
                return [self.call("GET", f"/api/v1/nodes/{name}")]
            return self.call("GET", "/api/v1/nodes")["items"]
        q = {"kind": kind, "group": group}
        if not self.all_namespaces():
            q["namespace"] = self.namespace or "default"
        if name:
            q["name"] = name
        items = self.call("GET", "/standin/v1/objects?" + urllib.parse.urlencode(q))["items"]
        if name and not items:
            raise Fail(f'Error from server (NotFound): {resource(group, kind)} "{name}" not found')
        return items

    def all_namespaces(self):
        return self.flags.get("A") == "true" or self.flags.get("all-namespaces") == "true"

    def print_objects(self, kind, group, objs, single):
        fmt = self.flags.get("o") or self.flags.get("output") or ""
        if fmt == "name":
            for o in objs:
                if kind is None:  # several kinds: each object names its own
                    o_group = o.get("apiVersion", "v1").rpartition("/")[0]
                    print(f"{display_kind(o_group, o['kind'])}/{o['metadata']['name']}")
                else:
                    print(f"{display_kind(group, kind)}/{o['metadata']['name']}")
        elif fmt == "json":
            print(json.dumps(objs[0] if single else {"apiVersion": "v1", "kind": "List", "items": objs}, indent=2))
        elif fmt == "yaml":
            print(yaml.safe_dump(objs[0] if single else {"apiVersion": "v1", "kind": "List", "items": objs}))
        elif fmt.startswith("jsonpath="):
            print(jsonpath(objs[0] if single else {"items": objs}, fmt.split("=", 1)[1]), end="")
        elif fmt:
            raise Fail(f"error: stand-in kubectl does not support -o {fmt}")
        elif not objs:
            print(f"No resources found in {self.namespace or 'default'} namespace." if kind != "Node"
                  else "No resources found", file=sys.stderr)
        elif kind == "Node":
            print(f"{'NAME':<16} {'STATUS':<10} {'ROLES':<15} {'VERSION':<10} INTERNAL-IP")
            for n in objs:
                roles = ",".join(k.split("/", 1)[1] for k in n["metadata"].get("labels", {})
                                 if k.startswith("node-role.kubernetes.io/")) or "<none>"
                st = "Ready" if condition(n, "Ready") == "True" else "NotReady"
                ip = next((a["address"] for a in n.get("status", {}).get("addresses", []) if a["type"] == "InternalIP"), "")
                print(f"{n['metadata']['name']:<16} {st:<10} {roles:<15} v{VERSION:<9} {ip}")
        elif kind == "Pod":
            print(f"{'NAME':<40} {'READY':<6} {'STATUS':<9} NODE")
            for p in objs:
                ready = condition(p, "Ready") == "True"
                print(f"{p['metadata']['name']:<40} {'1/1' if ready else '0/1':<6} {p['status']['phase']:<9} "
                      f"{p['spec']['nodeName'] or '<none>'}")
        else:
            print("NAME")
            for o in objs:
                print(o["metadata"]["name"])

    # ---------------------------------------------------------------- apply

    def apply(self):
        docs = []
        if self.flags.get("k") or self.flags.get("kustomize"):
            docs = kustomize(self.flags.get("k") or self.flags["kustomize"])
        for f in self.flags["files"]:
            docs += read_manifests(f)
        if not docs:
            raise Fail("error: must specify one of -f and -k")
        failed = False
        for source, obj in docs:
            try:
                r = self.client().post("/standin/v1/apply", {"object": obj, "defaultNamespace": self.namespace})
                print(f"{r['name']} {r['result']}")
            except ConnectionRefused:
                raise Fail(f"error: error validating \"{source}\": error validating data: failed to download openapi: "
                           f"Get \"{self.server}/openapi/v2?timeout=32s\": dial tcp: connect: connection refused")
            except ApiError as e:
                failed = True
                name, ns = obj.get("metadata", {}).get("name"), obj.get("metadata", {}).get("namespace") or ""
                if e.body.get("reason") == "NoMatch":
                    print(f'error: resource mapping not found for name: "{name}" namespace: "{ns}" from "{source}": '
                          f'{e.body["message"]}\nensure CRDs are installed first', file=sys.stderr)
                else:
                    print(f'Error from server ({e.body.get("reason")}): error when creating "{source}": '
                          f'{e.body.get("message")}', file=sys.stderr)
        return 1 if failed else 0

    # ---------------------------------------------------------------- wait, rollout, delete

    def wait(self, pos):
        cond = self.flags.get("for", "")
        if not cond.startswith("condition="):
            raise Fail("error: stand-in kubectl wait supports only --for=condition=NAME")
        cname, _, want = cond.split("=", 1)[1].partition("=")
        want = want or "True"
        timeout = parse_duration(self.flags.get("timeout", "30s"))
        if pos and "/" not in pos[0]:
            group, kind = kind_of(pos[0])
            if kind != "Pod" or not (self.flags.get("l") or self.flags.get("selector")):
                raise Fail("error: stand-in kubectl wait: use KIND/NAME, or `pod -l SELECTOR`")
            return self.wait_pods(cname, want, timeout)
        for target in pos:
            kind_word, _, name = target.partition("/")
            group, kind = kind_of(kind_word)
            if kind == "Deployment" and cname == "Available":
                self.wait_deployment(name, want, timeout)
                continue
            if kind == "Job" and cname.lower() == "complete":
                self.wait_job(name, want)
                continue
            if kind != "Node":
                raise Fail("error: stand-in kubectl wait supports nodes (Ready), deployments (Available), "
                           "jobs (complete) and pods -l SELECTOR (Ready)")
            self.call("GET", f"/api/v1/nodes/{name}")  # NotFound fails at once, like kubectl

            def met():
                try:
                    return condition(self.client().get(f"/api/v1/nodes/{name}"), cname) == want
                except (ApiError, ConnectionRefused, OSError):
                    return False

            if not wait_until(timeout, met, 1):
                raise Fail(f"error: timed out waiting for the condition on nodes/{name}")
            print(f"node/{name} condition met")
        return 0

    def wait_pods(self, cname, want, timeout):
        if not self.fetch("", "Pod", None):
            raise Fail("error: no matching resources found")

        def met():
            pods = self.fetch("", "Pod", None)
            return pods if pods and all(condition(p, cname) == want for p in pods) else None

        pods = wait_until(timeout, met, 1)
        if not pods:
            names = ", ".join("pods/" + p["metadata"]["name"] for p in self.fetch("", "Pod", None)
                              if condition(p, cname) != want)
            raise Fail(f"error: timed out waiting for the condition on {names}")
        for p in pods:
            print(f"pod/{p['metadata']['name']} condition met")
        return 0

    def wait_deployment(self, name, want, timeout):
        q = urllib.parse.urlencode({"kind": "Deployment", "namespace": self.namespace or "default", "name": name})
        self.call("GET", "/standin/v1/rollout?" + q)

        def met():
            r = self.call("GET", "/standin/v1/rollout?" + q)
            return (r["ready"] >= r["desired"]) == (want == "True")

        if not wait_until(timeout, met, 1):
            raise Fail(f"error: timed out waiting for the condition on deployments/{name}")
        print(f"deployment.apps/{name} condition met")

    def wait_job(self, name, want):
        """Stand-in Jobs run no container: one that exists has completed (NotFound fails at once)."""
        self.fetch("batch", "Job", name)
        if want != "True":
            raise Fail(f"error: timed out waiting for the condition on jobs/{name}")
        print(f"job.batch/{name} condition met")

    def rollout(self, pos):
        if len(pos) < 2 or pos[0] != "status":
            raise Fail("error: stand-in kubectl supports only `rollout status daemonset/NAME|deployment/NAME`")
        kind_word, _, name = pos[1].partition("/")
        group, kind = kind_of(kind_word)
        if kind not in ("DaemonSet", "Deployment"):
            raise Fail(f"error: no status viewer has been implemented for {kind}")
        ns = self.namespace or "default"
        timeout = parse_duration(self.flags.get("timeout", "0")) or 10 ** 9
        q = urllib.parse.urlencode({"kind": kind, "namespace": ns, "name": name})
        last = [None]

        def done():
            r = self.call("GET", "/standin/v1/rollout?" + q)
            if r["desired"] and r["ready"] >= r["desired"]:
                return True
            line = (f'Waiting for daemon set "{name}" rollout to finish: {r["ready"]} of {r["desired"]} updated pods '
                    "are available..." if kind == "DaemonSet" else
                    f'Waiting for deployment "{name}" rollout to finish: {r["ready"]} of {r["desired"]} updated '
                    "replicas are available...")
            if line != last[0]:
                print(line, flush=True)
                last[0] = line
            return False

        if not wait_until(timeout, done, 1):
            raise Fail("error: timed out waiting for the condition")
        print(f'daemon set "{name}" successfully rolled out' if kind == "DaemonSet"
              else f'deployment "{name}" successfully rolled out')
        return 0

    def set_env(self, pos):
        """`kubectl set env KIND/NAME [-c CONTAINER] NAME=VALUE...` on a Deployment or DaemonSet."""
        if len(pos) < 3 or pos[0] != "env" or "/" not in pos[1]:
            raise Fail("error: stand-in kubectl supports only `set env KIND/NAME [-c CONTAINER] NAME=VALUE...`")
        kind_word, _, name = pos[1].partition("/")
        group, kind = kind_of(kind_word)
        pairs = {}
        for a in pos[2:]:
            k, eq, v = a.partition("=")
            if not eq or not k:
                raise Fail(f'error: invalid env: "{a}"')
            pairs[k] = v
        ns = self.namespace or "default"
        r = self.call("POST", "/standin/v1/set-env", {"group": group, "kind": kind, "namespace": ns, "name": name,
                                                      "container": self.flags.get("c") or self.flags.get("containers"),
                                                      "env": pairs})
        if r["changed"]:
            print(f"{display_kind(group, kind)}/{name} env updated")
        return 0

    def delete(self, pos):
        if not pos:
            raise Fail("error: You must provide one or more resources by argument or filename.")
        if "/" in pos[0]:
            pos = pos[0].split("/", 1) + pos[1:]
        group, kind = kind_of(pos[0])
        for name in pos[1:]:
            if kind == "Node":
                self.call("DELETE", f"/api/v1/nodes/{name}")
            else:
                ns = "" if kind == "Namespace" else (self.namespace or "default")
                try:
                    self.client().delete("/standin/v1/objects?" + urllib.parse.urlencode(
                        {"group": group, "kind": kind, "namespace": ns, "name": name}))
                except ApiError:
                    if self.flags.get("ignore-not-found") == "true":
                        continue
                    raise Fail(f'Error from server (NotFound): {resource(group, kind)} "{name}" not found') from None
            print(f'{display_kind(group, kind)} "{name}" deleted')
        return 0


    def untaint(self, pos):
        """`kubectl taint nodes NAME KEY[:EFFECT]-`: removes a taint (the stand-in adds none)."""
        if len(pos) != 3 or kind_of(pos[0])[1] != "Node" or not pos[2].endswith("-"):
            raise Fail("error: stand-in kubectl taint only removes: kubectl taint nodes NAME KEY[:EFFECT]-")
        key, _, effect = pos[2][:-1].partition(":")
        self.call("POST", f"/api/v1/nodes/{pos[1]}/untaint", {"key": key, "effect": effect})
        print(f"node/{pos[1]} untainted")
        return 0


def matches(obj, selector):
    """Equality label selectors: k=v,k2=v2 (and k!=v)."""
    if not selector:
        return True
    labels = obj["metadata"].get("labels", {})
    for term in selector.split(","):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.strip() not in labels:
            return False
    return True


def resource(group, kind):
    return plural(kind) + ("." + group if group else "")


def server_error(e):
    body = e.body if isinstance(e.body, dict) else {}
    reason = body.get("reason") or "InternalError"
    return f"Error from server ({reason}): {body.get('message', '')}"


def read_manifests(source):
    if source == "-":
        text = sys.stdin.read()
        return [(source, o) for o in expand(load_yaml_docs(text))]
    if source.startswith(("http://", "https://")):
        import urllib.request

        try:
            with urllib.request.urlopen(source, timeout=30) as r:
                text = r.read().decode()
        except OSError as e:
            raise Fail(f'error: unable to read URL "{source}": {e}') from None
        return [(source, o) for o in expand(load_yaml_docs(text))]
    if os.path.isdir(source):
        out = []
        for f in sorted(os.listdir(source)):
            if f.endswith((".yaml", ".yml", ".json")):
                out += read_manifests(os.path.join(source, f))
        return out
    try:
        with open(source) as fh:
            text = fh.read()
    except FileNotFoundError:
        raise Fail(f'error: the path "{source}" does not exist') from None
    return [(source, o) for o in expand(load_yaml_docs(text))]


def expand(docs):
    out = []
    for d in docs:
        if d.get("kind", "").endswith("List") and "items" in d:
            out += expand(d["items"])
        else:
            out.append(d)
    return out


def strategic_merge(target, patch):
    """Merges `patch` into `target` in place (see `kustomize`)."""
    for key, value in patch.items():
        have = target.get(key)
        if isinstance(value, dict) and isinstance(have, dict):
            strategic_merge(have, value)
        elif (isinstance(value, list) and isinstance(have, list) and value
              and all(isinstance(v, dict) and "name" in v for v in value + have)):
            for item in value:
                same = next((h for h in have if h["name"] == item["name"]), None)
                if same is None:
                    have.append(item)
                else:
                    strategic_merge(same, item)
        else:
            target[key] = value


def kustomize(directory):
    """The subset of kustomize the manifests use: `resources` (files and directories), `namespace`,
    and `patches` given inline as strategic merge patches (`patch:` text naming its target by kind,
    name and namespace), merged as kustomize does for the lists they touch: list items with a
    `name` are merged by name (containers, env), other lists are replaced."""
    kfile = next((os.path.join(directory, n) for n in ("kustomization.yaml", "kustomization.yml", "Kustomization")
                  if os.path.exists(os.path.join(directory, n))), None)
    if not kfile:
        raise Fail(f"error: unable to find one of 'kustomization.yaml', 'kustomization.yml' or 'Kustomization' in "
                   f"directory '{os.path.abspath(directory)}'")
    with open(kfile) as f:
        k = yaml.safe_load(f) or {}
    unsupported = set(k) - {"apiVersion", "kind", "resources", "namespace", "patches"}
    if unsupported:
        raise Fail(f"error: stand-in kubectl: kustomization fields {sorted(unsupported)} are not supported "
                   f"({kfile}); only resources, namespace and inline patches")
    objs = []
    for r in k.get("resources") or []:
        p = os.path.join(directory, r)
        if os.path.isdir(p):
            objs += [(kfile, o) for _, o in kustomize(p)]
        else:
            objs += [(kfile, o) for _, o in read_manifests(p)]
    for entry in k.get("patches") or []:
        if set(entry) != {"patch"}:
            raise Fail(f"error: stand-in kubectl: only inline `patch:` entries are supported ({kfile})")
        patch = yaml.safe_load(entry["patch"])
        meta = patch.get("metadata", {})
        targets = [o for _, o in objs if o.get("kind") == patch.get("kind")
                   and o.get("metadata", {}).get("name") == meta.get("name")
                   and o.get("metadata", {}).get("namespace") == meta.get("namespace")]
        if len(targets) != 1:
            raise Fail(f"error: no matches for Id {patch.get('kind')}.{meta.get('name')}; failed to find unique "
                       f"target for patch ({kfile})")
        strategic_merge(targets[0], patch)
    if k.get("namespace"):
        for _, o in objs:
            if o.get("kind") not in ("Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                                     "StorageClass", "PersistentVolume", "IngressClass", "PriorityClass"):
                o.setdefault("metadata", {})["namespace"] = k["namespace"]

    def rank(item):
        kind = item[1].get("kind", "")
        if kind in ORDER_FIRST:
            return ORDER_FIRST.index(kind)
        if kind in ORDER_LAST:
            return len(ORDER_FIRST) + 1 + ORDER_LAST.index(kind)
        return len(ORDER_FIRST)

    return sorted(objs, key=rank)


def jsonpath(obj, template):
    """A small JSONPath: {.a.b}, {.items[*].metadata.name}, [?(@.type=="Ready")] filters."""
    import re

    def walk(values, steps):
        for step in steps:
            nxt = []
            for v in values:
                m = re.fullmatch(r"([^\[]*)(?:\[(.*)\])?", step, re.S)
                if not m:
                    continue
                key, idx = m.groups()
                if key:
                    v = v.get(key) if isinstance(v, dict) else None
                if v is None:
                    continue
                if idx is None:
                    nxt.append(v)
                elif idx == "*":
                    nxt.extend(v if isinstance(v, list) else v.values())
                elif idx.startswith("?(@."):
                    fm = re.fullmatch(r'\?\(@\.([\w-]+)==["\'](.*)["\']\)', idx)
                    nxt.extend(x for x in v if fm and isinstance(x, dict) and str(x.get(fm.group(1))) == fm.group(2))
                elif idx.lstrip("-").isdigit() and isinstance(v, list) and -len(v) <= int(idx) < len(v):
                    nxt.append(v[int(idx)])
            values = nxt
        return values

    def split_steps(expr):
        # On dots outside brackets; "\." is a literal dot (annotation keys such as projectcalico.org/x).
        steps, cur, depth, i = [], "", 0, 0
        while i < len(expr):
            ch = expr[i]
            if ch == "\\" and i + 1 < len(expr) and expr[i + 1] == ".":
                cur += "."
                i += 2
                continue
            depth += ch == "["
            depth -= ch == "]"
            if ch == "." and depth == 0:
                steps.append(cur)
                cur = ""
            else:
                cur += ch
            i += 1
        return [x for x in steps + [cur] if x]

    def render(expr, root):
        expr = expr.strip()
        if len(expr) >= 2 and expr[0] == expr[-1] and expr[0] in "\"'":
            # A literal, as in {"\n"}: kubectl reads the usual escapes.
            return expr[1:-1].encode().decode("unicode_escape")
        steps = split_steps(expr.lstrip("."))
        vals = walk([root], steps)
        return " ".join(v if isinstance(v, str) else json.dumps(v) for v in vals)

    def expand(text, root):
        # {range EXPR}BODY{end}, nested as kubectl allows: BODY once per value of EXPR, with {@}
        # (or {.x}) read from that value.
        tokens = [t for t in re.split(r"(\{[^}]*\})", text) if t]

        def is_tag(t, word=None):
            inner = t[1:-1].strip() if t.startswith("{") and t.endswith("}") else None
            return inner is not None and (word is None or inner == word or inner.startswith(word + " "))

        def matching_end(i):
            depth = 0
            for j in range(i, len(tokens)):
                if is_tag(tokens[j], "range"):
                    depth += 1
                elif is_tag(tokens[j], "end"):
                    depth -= 1
                    if depth == 0:
                        return j
            raise Fail("error: error parsing jsonpath: unclosed range")

        def run(lo, hi, ctx, out):
            i = lo
            while i < hi:
                t = tokens[i]
                if is_tag(t, "range"):
                    j = matching_end(i)
                    expr = t[1:-1].strip()[len("range"):].strip()
                    items = [ctx] if expr == "@" else walk([ctx], split_steps(expr.lstrip(".")))
                    for item in items:
                        run(i + 1, j, item, out)
                    i = j + 1
                    continue
                if is_tag(t):
                    inner = t[1:-1].strip()
                    if inner == "@":
                        out.append(ctx if isinstance(ctx, str) else json.dumps(ctx))
                    else:
                        out.append(render(inner, ctx))
                else:
                    out.append(t)
                i += 1

        out = []
        run(0, len(tokens), root, out)
        return "".join(out)

    return expand(template, obj)


def main(argv):
    flags, pos = parse(argv)
    if not pos:
        if flags.get("version") == "true":
            pos = ["version"]
        else:
            print(f"kubectl ({STANDIN_NOTE}): get, apply, wait, rollout status, set env, delete, version")
            return 0 if flags.get("help") or flags.get("h") else 1
    cmd, rest = pos[0], pos[1:]
    if cmd == "version":
        print(f"Client Version: v{VERSION} ({STANDIN_NOTE})\nKustomize Version: stand-in (resources, namespace)")
        if flags.get("client") != "true":
            ctl = Ctl(flags)
            v = ctl.call("GET", "/version")
            print(f"Server Version: {v['gitVersion']} ({STANDIN_NOTE})")
        return 0
    ctl = Ctl(flags)
    if cmd == "get":
        return ctl.get(rest)
    if cmd == "apply":
        return ctl.apply()
    if cmd == "wait":
        return ctl.wait(rest)
    if cmd == "rollout":
        return ctl.rollout(rest)
    if cmd == "delete":
        return ctl.delete(rest)
    if cmd == "set":
        return ctl.set_env(rest)
    if cmd == "taint":
        return ctl.untaint(rest)
    raise Fail(f'error: unknown command "{cmd}" for "kubectl" (stand-in: get, apply, wait, rollout status, delete, '
               "set env, version)")


def entry():
    sys.exit(run_main(main, sys.argv[1:]))
