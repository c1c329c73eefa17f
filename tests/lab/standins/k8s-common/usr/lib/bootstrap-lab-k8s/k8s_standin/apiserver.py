"""Stand-in kube-apiserver: HTTPS with the kubeadm CA, client certificates or bootstrap tokens.

Started by the stand-in kubelet from /etc/kubernetes/manifests/kube-apiserver.yaml, with the flags
written there. It also plays the controller-manager's CSR signer (the CA key named in
kube-controller-manager.yaml) and the token cleaner. Paths outside the Kubernetes API shapes are
under /standin/v1/ and say so. Every answer carries `X-Bootstrap-Lab: stand-in`.
"""

import json
import os
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import pki
from .common import API_STATE_FILE, STANDIN_HEADER, STANDIN_NOTE, VERSION, path, write_file
from .model import ApplyError, Model, TOKEN_RE

ADMIN_GROUPS = ("system:masters", "kubeadm:cluster-admins")


def status(code, reason, message):
    return code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
                  "reason": reason, "code": code, "details": {"standin": STANDIN_NOTE}}


class Api:
    def __init__(self, state_file, ca_file, signing_key_file):
        self.state_file = state_file
        self.lock = threading.Lock()
        state = None
        if os.path.exists(state_file):
            with open(state_file) as f:
                state = json.load(f)
        self.model = Model(state)
        self.ca_file, self.signing_key_file = ca_file, signing_key_file

    def save(self):
        write_file(self.state_file, json.dumps(self.model.state, indent=1), 0o600)

    def handle(self, method, url, identity, body):
        u = urllib.parse.urlsplit(url)
        p, q = u.path.rstrip("/") or "/", dict(urllib.parse.parse_qsl(u.query))
        parts = p.strip("/").split("/")
        m = self.model
        if p in ("/readyz", "/livez", "/healthz"):
            return 200, "ok"
        if p == "/version":
            return 200, {"major": VERSION.split(".")[0], "minor": VERSION.split(".")[1],
                         "gitVersion": "v" + VERSION, "platform": "linux/amd64", "standin": STANDIN_NOTE}
        if p == "/api/v1/namespaces/kube-public/configmaps/cluster-info" and method == "GET":
            return 200, m.cluster_info()
        kind = identity["kind"]
        if kind == "anonymous":
            return status(403, "Forbidden", f'forbidden: User "system:anonymous" cannot {method.lower()} path "{p}"')
        admin, node = kind == "admin", kind == "node"
        if p == "/apis/certificates.k8s.io/v1/certificatesigningrequests" and method == "POST":
            return self.sign_node_csr(identity, body)
        if p.startswith("/api/v1/namespaces/kube-system/configmaps/kube") and method == "GET" \
                and parts[-1] in ("kubeadm-config", "kubelet-config"):
            cm = m.get_object("", "ConfigMap", "kube-system", parts[-1])
            return (200, cm) if cm else status(404, "NotFound", f'configmaps "{parts[-1]}" not found')
        if kind == "token" and method == "GET" and parts[:3] == ["api", "v1", "nodes"] and len(parts) == 4:
            # kubeadm:get-nodes: a joining node may look up whether its name is taken.
            node = m.state["nodes"].get(parts[3])
            return (200, m.node_view(node)) if node else status(404, "NotFound", f'nodes "{parts[3]}" not found')
        if kind == "token":
            return status(403, "Forbidden", f'forbidden: bootstrap tokens cannot {method.lower()} "{p}"')
        # From here: client certificates (admins and nodes).
        if parts[:3] == ["api", "v1", "nodes"]:
            return self.nodes(method, parts[3:], identity, body)
        if p == "/standin/v1/objects" and method == "GET":
            objs = m.list_objects(q.get("kind"), q.get("group"), q.get("namespace"))
            if q.get("name"):
                objs = [o for o in objs if o["metadata"]["name"] == q["name"]]
            return 200, {"kind": "List", "items": objs}
        if p == "/standin/v1/rollout" and method == "GET":
            r = m.rollout(q["kind"], q["namespace"], q["name"])
            if r is None:
                return status(404, "NotFound", f'{q["kind"].lower()}s.apps "{q["name"]}" not found')
            return 200, {"desired": r[0], "ready": r[1], "generation": r[2]}
        if p == "/standin/v1/pods" and method == "GET":
            return 200, {"kind": "PodList", "apiVersion": "v1", "items": m.pods(q.get("namespace"))}
        if p == "/standin/v1/calico" and method == "GET":
            return 200, m.calico_pool()
        if not admin:
            return status(403, "Forbidden", f'forbidden: User "{identity["user"]}" cannot {method.lower()} "{p}"')
        if p == "/standin/v1/apply" and method == "POST":
            try:
                name, result, gen = m.apply(body["object"], body.get("defaultNamespace") or "default",
                                            record=body.get("record", True))
            except ApplyError as e:
                return status({"NotFound": 404, "NoMatch": 404}.get(e.reason, 422), e.reason, str(e))
            self.save()
            return 200, {"name": name, "result": result, "generation": gen}
        if p == "/standin/v1/set-env" and method == "POST":
            changed = m.set_env(body.get("group", ""), body["kind"], body.get("namespace"), body["name"],
                                body.get("container"), body["env"])
            if changed is None:
                return status(404, "NotFound", f'{body["kind"].lower()} "{body["name"]}" not found')
            self.save()
            return 200, {"changed": changed}
        if p == "/standin/v1/objects" and method == "DELETE":
            if not m.delete_object(q.get("group", ""), q["kind"], q.get("namespace") or None, q["name"]):
                return status(404, "NotFound", f'{q["kind"].lower()} "{q["name"]}" not found')
            self.save()
            return 200, {"deleted": q["name"]}
        if p == "/standin/v1/applied" and method == "GET":
            return 200, {"kind": "List", "items": m.state["applied"], "standin": STANDIN_NOTE}
        if p == "/standin/v1/bootstrap-tokens" and method == "POST":
            try:
                m.add_token(body["token"], body.get("ttlSeconds", 86400), body.get("usages", ["signing", "authentication"]),
                            body.get("description", ""))
            except ApplyError as e:
                return status(422, "Invalid", str(e))
            self.save()
            return 201, {"created": body["token"].split(".")[0]}
        if p == "/standin/v1/bootstrap-tokens" and method == "GET":
            m.purge_expired_tokens()
            return 200, {"items": [{"id": t, "expires": v["expires"], "usages": v["usages"]}
                                   for t, v in m.state["tokens"].items()]}
        return status(404, "NotFound", f"the server could not find the requested resource (stand-in: {method} {p})")

    def nodes(self, method, rest, identity, body):
        m = self.model
        nodes = m.state["nodes"]
        own = identity["kind"] == "node"
        if not rest:
            if method == "GET":
                return 200, {"kind": "NodeList", "apiVersion": "v1", "items": m.nodes()}
            if method == "POST":
                name = body["metadata"]["name"]
                if own and identity["user"] != "system:node:" + name:
                    return status(403, "Forbidden", f'node "{identity["user"]}" cannot register node "{name}"')
                if name in nodes:
                    return status(409, "AlreadyExists", f'nodes "{name}" already exists')
                body.setdefault("metadata", {})["creationTimestamp"] = time.time()
                nodes[name] = body
                m.heartbeat(name, body.get("status", {}), {})
                self.save()
                return 201, body
        name = rest[0]
        if name not in nodes:
            return status(404, "NotFound", f'nodes "{name}" not found')
        if len(rest) == 1 and method == "GET":
            return 200, m.node_view(nodes[name])
        if len(rest) == 1 and method == "DELETE" and identity["kind"] == "admin":
            del nodes[name]
            self.save()
            return 200, {"kind": "Status", "status": "Success", "details": {"name": name, "kind": "nodes"}}
        if rest[1:] == ["status"] and method == "PUT":
            if own and identity["user"] != "system:node:" + name:
                return status(403, "Forbidden", "a node may only update its own status")
            node = m.heartbeat(name, body["status"], body.get("metadata", {}).get("annotations", {}))
            self.save()
            return 200, node
        if rest[1:] == ["control-plane"] and method == "POST" and identity["kind"] == "admin":
            node = nodes[name]
            node["metadata"].setdefault("labels", {}).update(body.get("labels", {}))
            taints = node.setdefault("spec", {}).setdefault("taints", [])
            for t in body.get("taints", []):
                if t not in taints:
                    taints.append(t)
            self.save()
            return 200, node
        if rest[1:] == ["untaint"] and method == "POST" and identity["kind"] == "admin":
            # kubectl taint nodes NAME KEY[:EFFECT]- (as a single-node cluster's admin does).
            node = nodes[name]
            spec = node.setdefault("spec", {})
            before = spec.get("taints", [])
            spec["taints"] = [t for t in before if not (t.get("key") == body["key"] and
                                                      body.get("effect", "") in ("", t.get("effect")))]
            if len(spec["taints"]) == len(before):
                return status(404, "NotFound", f'taint "{body["key"]}" not found')
            self.save()
            return 200, node
        return status(405, "MethodNotAllowed", f"stand-in: {method} on nodes/{'/'.join(rest)} is not supported")

    def sign_node_csr(self, identity, body):
        """TLS bootstrap: a valid bootstrap token may get a kubelet client certificate for a node."""
        if identity["kind"] not in ("token", "admin"):
            return status(403, "Forbidden", "only bootstrap tokens may request kubelet client certificates")
        subject = pki.csr_subject(body["csr"])
        fields = dict(x.split("=", 1) for x in subject.split(","))
        if fields.get("O") != "system:nodes" or not fields.get("CN", "").startswith("system:node:"):
            return status(403, "Forbidden", f"CSR subject {subject} is not a kubelet client")
        with open(self.ca_file) as f:
            ca = f.read()
        with open(self.signing_key_file) as f:
            key = f.read()
        return 201, {"certificate": pki.sign_csr(body["csr"], ca, key, client=True)}


def identity_of(handler, model):
    cert = handler.connection.getpeercert()
    if cert:
        subject = dict(x[0] for x in cert.get("subject", ()))
        cn, org = subject.get("commonName", ""), subject.get("organizationName", "")
        if org in ADMIN_GROUPS:
            return {"kind": "admin", "user": cn}
        if org == "system:nodes":
            return {"kind": "node", "user": cn}
        return {"kind": "other", "user": cn}
    auth = handler.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        token = auth[len("Bearer "):]
        if TOKEN_RE.match(token) and model.token_valid(token):
            return {"kind": "token", "user": "system:bootstrap:" + token.split(".")[0]}
        return {"kind": "invalid"}
    return {"kind": "anonymous", "user": "system:anonymous"}


def make_handler(api):
    class Handler(BaseHTTPRequestHandler):
        server_version = "bootstrap-lab-standin-apiserver"

        def log_request(self, code="-", size="-"):
            # Heartbeats every 2 s would drown the journal: only refusals and errors are logged.
            if isinstance(code, int) and code >= 400:
                super().log_request(code, size)

        def log_message(self, fmt, *args):
            sys.stderr.write("stand-in apiserver: " + (fmt % args) + "\n")

        def _serve(self, method):
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"null") if length else None
            with api.lock:
                ident = identity_of(self, api.model)
                if ident["kind"] == "invalid":
                    code, out = status(401, "Unauthorized", "Unauthorized")
                else:
                    try:
                        code, out = api.handle(method, self.path, ident, body)
                    except (KeyError, TypeError, ValueError) as e:
                        code, out = status(400, "BadRequest", f"stand-in: bad request: {e}")
            data = out if isinstance(out, str) else json.dumps(out)
            self.send_response(code)
            self.send_header(*STANDIN_HEADER)
            self.send_header("Content-Type", "text/plain" if isinstance(out, str) else "application/json")
            self.send_header("Content-Length", str(len(data.encode())))
            self.end_headers()
            self.wfile.write(data.encode())

        def do_GET(self):
            self._serve("GET")

        def do_POST(self):
            self._serve("POST")

        def do_PUT(self):
            self._serve("PUT")

        def do_DELETE(self):
            self._serve("DELETE")

    return Handler


def main(argv):
    flags = {}
    for a in argv:
        if a.startswith("--") and "=" in a:
            k, v = a[2:].split("=", 1)
            flags[k] = v
    if "version" in flags or "--version" in argv:
        print(f"Kubernetes v{VERSION} ({STANDIN_NOTE}: kube-apiserver)")
        return 0
    port = int(flags.get("secure-port", "6443"))
    api = Api(flags.get("standin-state-file", path(API_STATE_FILE)), flags["client-ca-file"],
              flags["standin-signing-key-file"])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(flags["tls-cert-file"], flags["tls-private-key-file"])
    ctx.load_verify_locations(flags["client-ca-file"])
    ctx.verify_mode = ssl.CERT_OPTIONAL
    server = ThreadingHTTPServer((flags.get("bind-address", "0.0.0.0"), port), make_handler(api))
    server.daemon_threads = True
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"stand-in kube-apiserver ({STANDIN_NOTE}) serving on :{port}, state {api.state_file}", file=sys.stderr)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
