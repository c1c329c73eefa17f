"""Shared pieces of the bootstrap lab's Kubernetes stand-ins (never shipped, lab only).

The stand-ins play kubeadm, kubelet, kubectl and the API server just far enough for the product's
playbooks to be exercised in the container lab. Everything here says "stand-in" where a human or a
program could mistake it for the real thing.
"""

import base64
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
import http.client

import yaml

# Replaced by build_repo (tests/lab/lib.sh) with the inventory's kubernetes_version.
VERSION = "@KUBERNETES_VERSION@"
if VERSION.startswith("@"):
    VERSION = os.environ.get("BOOTSTRAP_STANDIN_VERSION", "1.0.0")
STANDIN_NOTE = "bootstrap lab stand-in, not Kubernetes"
STANDIN_HEADER = ("X-Bootstrap-Lab", "stand-in")

# Tests point these at a temporary tree; in the lab they are the real paths.
ROOT = os.environ.get("BOOTSTRAP_STANDIN_ROOT", "")
PROC = os.environ.get("BOOTSTRAP_STANDIN_PROC", "/proc")


def path(p):
    """A filesystem path below the stand-ins' root (the real root in the lab)."""
    return ROOT + p


K8S_DIR = "/etc/kubernetes"
PKI_DIR = K8S_DIR + "/pki"
MANIFESTS_DIR = K8S_DIR + "/manifests"
KUBELET_DIR = "/var/lib/kubelet"
ETCD_DIR = "/var/lib/etcd"
# The stand-in API keeps its objects where etcd would keep them, so `kubeadm reset` removes them.
API_STATE_FILE = ETCD_DIR + "/bootstrap-lab-standin-apiserver.json"
CNI_DIR = "/etc/cni/net.d"
DEFAULT_CRI = "unix:///var/run/containerd/containerd.sock"


class Fail(Exception):
    """A user-facing failure: message printed to stderr, process exits with code."""

    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


def run_main(fn, argv):
    try:
        return fn(argv) or 0
    except Fail as e:
        if str(e):
            print(str(e), file=sys.stderr)
        return e.code
    except BrokenPipeError:
        return 1


def parse_duration(text):
    """Go's time.ParseDuration for the units kubeadm/kubectl users write: 10m, 1h30m, 45s, 0."""
    text = text.strip()
    if text in ("0", ""):
        return 0.0
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text):
        if m.start() != pos:
            raise ValueError(f'time: invalid duration "{text}"')
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f'time: invalid duration "{text}"')
    return total


def format_duration(seconds):
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    out = (f"{h}h" if h else "") + (f"{m}m" if h or m else "") + f"{s}s"
    return out


def write_file(p, data, mode=0o644):
    """Atomic write with the given mode (private files never exist world-readable, even briefly)."""
    p = path(p)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(p), prefix=".standin-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_text(p):
    with open(path(p)) as f:
        return f.read()


def load_yaml_docs(text):
    return [d for d in yaml.safe_load_all(text) if d is not None]


def b64(data):
    return base64.b64encode(data if isinstance(data, bytes) else data.encode()).decode()


def runtime_answers(endpoint):
    """True when the CRI socket accepts a connection and speaks HTTP/2 (gRPC) back.

    Debian's containerd serves CRI over gRPC on its socket; an HTTP/2 server answers a client
    preface with its own SETTINGS frame. No CRI call is made: the stand-ins run no containers.
    Returns (ok, error text like the kubelet/kubeadm would give).
    """
    sock_path = endpoint[len("unix://"):] if endpoint.startswith("unix://") else endpoint
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect(path(sock_path))
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        head = s.recv(9)
        if len(head) == 9 and head[3] == 0x04:
            return True, ""
        return False, f'validate CRI v1 runtime API for endpoint "{endpoint}": no gRPC answer'
    except OSError as e:
        why = "no such file or directory" if isinstance(e, FileNotFoundError) else (e.strerror or str(e)).lower()
        return False, (f'validate CRI v1 runtime API for endpoint "{endpoint}": rpc error: code = Unavailable '
                       f'desc = connection error: desc = "transport: Error while dialing: dial unix {sock_path}: connect: {why}"')
    finally:
        s.close()


def swap_active():
    try:
        with open(PROC + "/swaps") as f:
            return len([l for l in f.read().splitlines() if l.strip()]) > 1
    except FileNotFoundError:
        return False


def proc_value(rel):
    """Content of a /proc/sys file, or None when it does not exist."""
    try:
        with open(PROC + "/sys/" + rel) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def port_in_use(port):
    """Like kubeadm's port check: try to listen on the port on all addresses."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("", port))
        return False
    except OSError:
        return True
    finally:
        s.close()


# ------------------------------------------------------------------ kubeconfig and API client


def kubeconfig_text(cluster_name, server, ca_pem, user, cert_pem=None, key_pem=None, cert_file=None, key_file=None,
                    token=None):
    user_entry = {}
    if token:
        user_entry = {"token": token}
    elif cert_file:
        user_entry = {"client-certificate": cert_file, "client-key": key_file}
    elif cert_pem:
        user_entry = {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}
    ctx = f"{user}@{cluster_name}"
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": {"certificate-authority-data": b64(ca_pem), "server": server}}],
        "contexts": [{"name": ctx, "context": {"cluster": cluster_name, "user": user}}],
        "current-context": ctx,
        "preferences": {},
        "users": [{"name": user, "user": user_entry}],
    }
    return "# Written by the bootstrap lab's kubeadm stand-in.\n" + yaml.safe_dump(doc, sort_keys=False)


class Kubeconfig:
    def __init__(self, file_path):
        self.file = file_path
        with open(file_path) as f:
            doc = yaml.safe_load(f) or {}
        ctx_name = doc.get("current-context")
        ctx = next((c["context"] for c in doc.get("contexts", []) if c["name"] == ctx_name), None)
        if ctx is None:
            raise Fail(f"error: current-context is not set in {file_path}")
        cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == ctx["cluster"])
        user = next((u["user"] for u in doc.get("users", []) if u["name"] == ctx.get("user")), {}) or {}
        self.server = cluster["server"]
        self.ca_pem = self._data(cluster, "certificate-authority")
        self.cert_pem = self._data(user, "client-certificate")
        self.key_pem = self._data(user, "client-key")
        self.token = user.get("token")

    @staticmethod
    def _data(entry, key):
        if entry.get(key + "-data"):
            return base64.b64decode(entry[key + "-data"]).decode()
        if entry.get(key):
            with open(entry[key]) as f:
                return f.read()
        return None


class ApiError(Exception):
    def __init__(self, status, body):
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body


class ConnectionRefused(Exception):
    pass


class Client:
    """HTTPS client of the stand-in API: TLS verified against the cluster CA, client cert or token."""

    def __init__(self, server, ca_pem=None, cert_pem=None, key_pem=None, token=None, verify=True, timeout=10):
        u = urllib.parse.urlsplit(server)
        self.server, self.host, self.port = server, u.hostname, u.port or 443
        self.token, self.timeout = token, timeout
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif ca_pem:
            ctx.load_verify_locations(cadata=ca_pem)
        if cert_pem and key_pem:
            with tempfile.TemporaryDirectory(prefix="standin-kc-") as d:
                os.chmod(d, 0o700)
                cf, kf = os.path.join(d, "c"), os.path.join(d, "k")
                for fp, data in ((cf, cert_pem), (kf, key_pem)):
                    fd = os.open(fp, os.O_WRONLY | os.O_CREAT, 0o600)
                    with os.fdopen(fd, "w") as f:
                        f.write(data)
                ctx.load_cert_chain(cf, kf)
        self.ctx = ctx

    @classmethod
    def from_kubeconfig(cls, kc, timeout=10):
        return cls(kc.server, kc.ca_pem, kc.cert_pem, kc.key_pem, kc.token, timeout=timeout)

    def request(self, method, url_path, body=None):
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=self.timeout)
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, url_path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (ConnectionRefusedError, socket.timeout, OSError) as e:
            if isinstance(e, ssl.SSLError):
                raise
            raise ConnectionRefused(str(e)) from e
        finally:
            conn.close()
        text = raw.decode(errors="replace")
        if resp.status >= 400:
            try:
                raise ApiError(resp.status, json.loads(text))
            except ValueError:
                raise ApiError(resp.status, {"message": text}) from None
        if resp.getheader("Content-Type", "").startswith("application/json"):
            return json.loads(text)
        return text

    def get(self, p):
        return self.request("GET", p)

    def post(self, p, body):
        return self.request("POST", p, body)

    def put(self, p, body):
        return self.request("PUT", p, body)

    def delete(self, p):
        return self.request("DELETE", p)


def wait_until(deadline_seconds, fn, interval=1.0):
    """Calls fn until it returns a truthy value or the bound passes; returns the last value."""
    end = time.monotonic() + deadline_seconds
    while True:
        v = fn()
        if v or time.monotonic() >= end:
            return v
        time.sleep(min(interval, max(0.05, end - time.monotonic())))


def openssl(*args, stdin=None):
    r = subprocess.run(["openssl", *args], input=stdin, capture_output=True)
    if r.returncode != 0:
        raise Fail(f"openssl {args[0]} failed: {r.stderr.decode(errors='replace').strip()}")
    return r.stdout


def ca_cert_hash(ca_pem):
    """sha256 of the CA's DER SubjectPublicKeyInfo: the --discovery-token-ca-cert-hash value."""
    pub = openssl("x509", "-pubkey", "-noout", stdin=ca_pem.encode())
    der = openssl("pkey", "-pubin", "-outform", "DER", stdin=pub)
    import hashlib

    return "sha256:" + hashlib.sha256(der).hexdigest()


def node_ip_from_flags(args):
    for a in args:
        if a.startswith("--node-ip="):
            return a.split("=", 1)[1]
    return None
