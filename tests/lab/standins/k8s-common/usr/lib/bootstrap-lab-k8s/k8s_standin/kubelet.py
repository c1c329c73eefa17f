"""Stand-in kubelet: runs as kubelet.service, like the real one restarts until kubeadm wrote its
config, runs the static kube-apiserver (the stand-in API) on the master, performs the TLS bootstrap
on a joining node, registers its node and sends heartbeats. Ready = the CRI socket answers and a CNI
config exists; the CNI config is written when a DaemonSet with an install-cni init container (the
stand-in Calico) targets this node, as Calico's install-cni would.
"""

import hashlib
import ipaddress
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

from . import pki
from .common import (CNI_DIR, DEFAULT_CRI, K8S_DIR, KUBELET_DIR, STANDIN_HEADER, STANDIN_NOTE, VERSION, ApiError,
                     Client, ConnectionRefused, Kubeconfig, kubeconfig_text, path, runtime_answers, swap_active,
                     write_file)
from .model import Model

LIB_DIR = "/usr/lib/bootstrap-lab-k8s"
CLIENT_PEM = f"{KUBELET_DIR}/pki/kubelet-client-current.pem"


def log(msg):
    print(f"stand-in kubelet: {msg}", file=sys.stderr, flush=True)


def parse_args(argv):
    flags = {}
    for a in argv:
        if a.startswith("--"):
            k, _, v = a[2:].partition("=")
            flags[k] = v if _ else "true"
    return flags


def serve(port, host, text):
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            body = text.encode()
            self.send_response(200)
            self.send_header(*STANDIN_HEADER)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer((host, port), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


class StaticPods:
    """Runs the static pods the stand-ins can run (kube-apiserver); the others are only recorded."""

    def __init__(self, manifest_dir):
        self.dir = manifest_dir
        self.procs = {}  # name -> (content hash, Popen)

    def sync(self):
        wanted = {}
        if os.path.isdir(path(self.dir)):
            for f in sorted(os.listdir(path(self.dir))):
                if f.endswith(".yaml"):
                    with open(os.path.join(path(self.dir), f)) as fh:
                        text = fh.read()
                    pod = yaml.safe_load(text) or {}
                    containers = pod.get("spec", {}).get("containers") or [{}]
                    cmd = containers[0].get("command") or []
                    if cmd and cmd[0] == "kube-apiserver":
                        wanted["kube-apiserver"] = (hashlib.sha256(text.encode()).hexdigest(), cmd[1:])
        for name in list(self.procs):
            digest, proc = self.procs[name]
            if name not in wanted or wanted[name][0] != digest or proc.poll() is not None:
                if proc.poll() is None:
                    log(f"stopping static pod {name}")
                    proc.terminate()
                    proc.wait(10)
                else:
                    log(f"static pod {name} exited with {proc.returncode}; restarting")
                del self.procs[name]
        for name, (digest, args) in wanted.items():
            if name not in self.procs:
                log(f"starting static pod {name} (stand-in API server)")
                env = dict(os.environ, PYTHONPATH=LIB_DIR)
                proc = subprocess.Popen([sys.executable, "-m", "k8s_standin.apiserver", *args], env=env)
                self.procs[name] = (digest, proc)

    def stop(self):
        for _, proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for _, proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


# Interfaces Calico's first-found skips (container and tunnel devices).
SKIPPED_INTERFACES = re.compile(r"^(lo|docker.*|cbr.*|dummy.*|virbr.*|lxcbr.*|veth.*|cali.*|tunl.*|flannel.*|"
                                r"kube-ipvs.*|cni.*|vxlan.*|wireguard.*|nodelocaldns.*)$")


def local_addresses():
    """[(interface, "ip/prefix")] of the node's IPv4 addresses, from iproute2."""
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    addrs = []
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 4 and f[2] == "inet":
            addrs.append((f[1], f[3]))
    return addrs


def autodetect(method, node_ip, addrs=None):
    """The address Calico's IP_AUTODETECTION_METHOD would pick, as "ip/prefix", or None."""
    addrs = local_addresses() if addrs is None else addrs
    candidates = [(i, a) for i, a in addrs if not SKIPPED_INTERFACES.match(i)]
    kind, _, arg = method.partition("=")
    if kind == "first-found":
        picked = candidates
    elif kind == "cidr":
        nets = [ipaddress.ip_network(c.strip(), strict=False) for c in arg.split(",") if c.strip()]
        picked = [(i, a) for i, a in addrs if any(ipaddress.ip_interface(a).ip in n for n in nets)]
    elif kind == "interface":
        picked = [(i, a) for i, a in addrs if any(re.fullmatch(r, i) for r in arg.split(","))]
    elif kind == "skip-interface":
        picked = [(i, a) for i, a in candidates if not any(re.fullmatch(r, i) for r in arg.split(","))]
    elif kind == "kubernetes-internal-ip":
        picked = [(i, a) for i, a in addrs if str(ipaddress.ip_interface(a).ip) == node_ip]
    elif kind == "can-reach":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.connect((arg, 1))
            src = s.getsockname()[0]
        except OSError:
            return None
        finally:
            s.close()
        picked = [(i, a) for i, a in addrs if str(ipaddress.ip_interface(a).ip) == src]
    else:
        return None
    return picked[0][1] if picked else None


def default_ip():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("10.255.255.255", 1))
        return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    finally:
        s.close()


class Kubelet:
    def __init__(self, flags, config):
        self.flags, self.config = flags, config
        self.node_name = (flags.get("hostname-override") or socket.gethostname()).lower()
        self.node_ip = flags.get("node-ip") or default_ip()
        self.cri = flags.get("container-runtime-endpoint") or DEFAULT_CRI
        self.kubeconfig = flags.get("kubeconfig") or f"{K8S_DIR}/kubelet.conf"
        self.bootstrap_kubeconfig = flags.get("bootstrap-kubeconfig") or f"{K8S_DIR}/bootstrap-kubelet.conf"
        self.static = StaticPods(config.get("staticPodPath") or f"{K8S_DIR}/manifests")
        self.registered = False
        self.client = None

    def credentials(self):
        if os.path.exists(path(self.kubeconfig)):
            self.client = self.client or Client.from_kubeconfig(Kubeconfig(path(self.kubeconfig)), timeout=5)
            return True
        if os.path.exists(path(self.bootstrap_kubeconfig)):
            self.tls_bootstrap()
        return self.client is not None

    def tls_bootstrap(self):
        """Asks the API (with the bootstrap token) to sign a client certificate for this node."""
        kc = Kubeconfig(path(self.bootstrap_kubeconfig))
        key, csr = pki.new_key_and_csr(f"/O=system:nodes/CN=system:node:{self.node_name}")
        try:
            signed = Client.from_kubeconfig(kc, timeout=10).post(
                "/apis/certificates.k8s.io/v1/certificatesigningrequests", {"csr": csr})
        except (ApiError, ConnectionRefused, OSError) as e:
            log(f"TLS bootstrap failed: {e}")
            return
        write_file(CLIENT_PEM, signed["certificate"] + key, 0o600)
        write_file(self.kubeconfig, kubeconfig_text("default-cluster", kc.server, kc.ca_pem, "default-auth",
                                                    cert_file=CLIENT_PEM, key_file=CLIENT_PEM), 0o600)
        log(f"TLS bootstrap done: {self.kubeconfig} written")
        self.client = Client.from_kubeconfig(Kubeconfig(path(self.kubeconfig)), timeout=5)

    def register(self):
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.node_name,
                             "labels": {"kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux",
                                        "kubernetes.io/arch": "amd64"},
                             "annotations": {"bootstrap-lab/stand-in": STANDIN_NOTE}},
                "spec": {}, "status": self.status(False, False, "registering")["status"]}
        try:
            self.client.post("/api/v1/nodes", node)
            log(f"registered node {self.node_name} ({self.node_ip})")
        except ApiError as e:
            if e.status != 409:
                raise
        self.registered = True

    def status(self, runtime_ok, ready, message):
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return {"metadata": {"annotations": {"standin.bootstrap-lab/runtime-ready": "true" if runtime_ok else "false"}},
                "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                           "reason": "KubeletReady" if ready else "KubeletNotReady",
                                           "message": message, "lastHeartbeatTime": now}],
                           "addresses": [{"type": "InternalIP", "address": self.node_ip},
                                         {"type": "Hostname", "address": self.node_name}],
                           "nodeInfo": {"kubeletVersion": "v" + VERSION, "standin": STANDIN_NOTE}}}

    def run_daemonsets(self):
        """The DaemonSet pods this node would run; an install-cni init container writes the CNI config."""
        try:
            node = self.client.get(f"/api/v1/nodes/{self.node_name}")
            dss = self.client.get("/standin/v1/objects?kind=DaemonSet&group=apps")["items"]
            calico = self.client.get("/standin/v1/calico")
        except (ApiError, ConnectionRefused, OSError):
            return None, {}
        model = Model({"nodes": {self.node_name: node}})
        message, annotations = None, {}
        for ds in dss:
            pod_spec = ds.get("spec", {}).get("template", {}).get("spec", {})
            if not model.eligible_nodes(pod_spec):
                continue
            if ds.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {}).get("k8s-app") == "calico-node":
                method = next((e.get("value") for c in pod_spec.get("containers") or [] for e in c.get("env") or []
                               if e.get("name") == "IP_AUTODETECTION_METHOD"), None) or "first-found"
                address = autodetect(method, self.node_ip)
                if address is None:
                    message = (f"stand-in calico-node: IP autodetection {method!r} found no IPv4 address on "
                               f"{self.node_name}")
                    continue
                annotations["projectcalico.org/IPv4Address"] = address
            for c in pod_spec.get("initContainers") or []:
                env = {e["name"]: self.env_value(e, ds) for e in c.get("env") or []}
                if "CNI_NETWORK_CONFIG" not in env:
                    continue
                if not calico["ok"]:
                    message = calico["message"]
                    continue
                name = env.get("CNI_CONF_NAME") or "10-calico.conflist"
                conf = (env["CNI_NETWORK_CONFIG"] or "").replace("__KUBERNETES_NODE_NAME__", self.node_name) \
                    .replace("__CNI_MTU__", "1500").replace("__KUBECONFIG_FILEPATH__", f"{CNI_DIR}/calico-kubeconfig")
                target = f"{CNI_DIR}/{name}"
                if not os.path.exists(path(target)) or open(path(target)).read() != conf:
                    write_file(target, conf)
                    log(f"install-cni of {ds['metadata']['name']}: wrote {target}")
        return message, annotations

    def env_value(self, env, ds):
        if "value" in env:
            return env["value"]
        ref = (env.get("valueFrom") or {}).get("configMapKeyRef")
        if ref:
            ns = ds["metadata"].get("namespace", "default")
            try:
                items = self.client.get(f"/standin/v1/objects?kind=ConfigMap&group=&namespace={ns}&name={ref['name']}")
                return items["items"][0].get("data", {}).get(ref["key"]) if items["items"] else None
            except (ApiError, ConnectionRefused, OSError):
                return None
        return None

    def tick(self):
        self.static.sync()
        if not self.credentials():
            return
        try:
            if not self.registered:
                self.register()
            calico_message, calico_annotations = self.run_daemonsets()
            runtime_ok, why = runtime_answers(self.cri)
            cni = [f for f in os.listdir(path(CNI_DIR)) if f.endswith((".conf", ".conflist"))] \
                if os.path.isdir(path(CNI_DIR)) else []
            if not runtime_ok:
                ready, message = False, f"container runtime is down: {why}"
            elif not cni:
                ready, message = False, ("container runtime network not ready: NetworkReady=false "
                                         "reason:NetworkPluginNotReady message:Network plugin returns error: "
                                         "cni plugin not initialized" + (f" ({calico_message})" if calico_message else ""))
            else:
                ready, message = True, f"kubelet is posting ready status ({STANDIN_NOTE})"
            st = self.status(runtime_ok, ready, message)
            st["metadata"]["annotations"].update(calico_annotations)
            self.client.put(f"/api/v1/nodes/{self.node_name}/status", st)
        except ApiError as e:
            log(f"API answered {e.status}: {e.body.get('message') if isinstance(e.body, dict) else e.body}")
        except (ConnectionRefused, OSError) as e:
            log(f"cannot reach the API server: {e}")


def main(argv):
    flags = parse_args(argv)
    if "version" in flags:
        print(f"Kubernetes v{VERSION} ({STANDIN_NOTE}: kubelet)")
        return 0
    config_file = flags.get("config")
    config = {}
    if config_file:
        try:
            with open(path(config_file)) as f:
                config = yaml.safe_load(f) or {}
        except FileNotFoundError:
            log(f'command failed: failed to load kubelet config file, path: {config_file}, error: open {config_file}: '
                'no such file or directory')
            return 1
    fail_swap_on = flags.get("fail-swap-on", str(config.get("failSwapOn", True))).lower() == "true"
    if fail_swap_on and swap_active():
        log("command failed: failed to run Kubelet: running with swap on is not supported, please disable swap or "
            "set --fail-swap-on flag to false")
        return 1
    kubelet = Kubelet(flags, config)
    serve(int(config.get("healthzPort", 10248)), config.get("healthzBindAddress", "127.0.0.1"), "ok")
    serve(10250, "0.0.0.0", f"{STANDIN_NOTE}: kubelet\n")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log(f"started (node {kubelet.node_name}, node IP {kubelet.node_ip}, runtime {kubelet.cri})")
    try:
        while not stop.is_set():
            kubelet.tick()
            stop.wait(2)
    finally:
        kubelet.static.stop()
    return 0
