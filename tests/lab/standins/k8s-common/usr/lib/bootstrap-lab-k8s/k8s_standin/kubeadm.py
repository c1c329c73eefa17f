"""Stand-in kubeadm: init, join, token create/list, reset, version (bootstrap lab only)."""

import ipaddress
import os
import secrets
import shutil
import socket
import string
import subprocess
import sys
import time
import urllib.request

import yaml

from . import pki, preflight
from .common import (API_STATE_FILE, CNI_DIR, DEFAULT_CRI, ETCD_DIR, K8S_DIR, KUBELET_DIR, MANIFESTS_DIR, PKI_DIR,
                     STANDIN_NOTE, VERSION, ApiError, Client, ConnectionRefused, Fail, Kubeconfig, ca_cert_hash,
                     kubeconfig_text, load_yaml_docs, parse_duration, path, read_text, run_main, wait_until,
                     write_file)
from .model import TOKEN_RE, jws_verify

API_VERSIONS = ("kubeadm.k8s.io/v1beta3", "kubeadm.k8s.io/v1beta4")
KUBELET_HEALTHZ = "http://127.0.0.1:10248/healthz"
STANDIN_LABEL = {"bootstrap-lab/stand-in": "true"}


def out(line=""):
    print(line, flush=True)


def usage():
    return (f"kubeadm ({STANDIN_NOTE})\n\nusage: kubeadm init --config FILE | join --config FILE | "
            "join HOST:PORT --token T --discovery-token-ca-cert-hash sha256:H | token create [--print-join-command] "
            "[--ttl D] | token list | reset [-f] | version [-o short]")


def parse_flags(argv):
    """--flag=value, --flag value, and bare switches; returns (flags, positionals)."""
    flags, pos, i = {}, [], 0
    switches = {"print-join-command", "force", "f", "help", "h"}
    while i < len(argv):
        a = argv[i]
        if a.startswith("-"):
            name = a.lstrip("-")
            if "=" in name:
                k, v = name.split("=", 1)
                flags[k] = v
            elif name in switches:
                flags[name] = True
            elif i + 1 < len(argv):
                flags[name] = argv[i + 1]
                i += 1
            else:
                raise Fail(f"Error: flag needs an argument: {a}")
        else:
            pos.append(a)
        i += 1
    return flags, pos


def load_config(file_name, wanted):
    text = sys.stdin.read() if file_name in ("-", "/dev/stdin") else read_text(file_name) if file_name.startswith("/") \
        else open(file_name).read()
    docs = {}
    for d in load_yaml_docs(text):
        kind, api = d.get("kind"), d.get("apiVersion", "")
        if kind in wanted and api not in API_VERSIONS:
            raise Fail(f'no kind "{kind}" is registered for version "{api}" in scheme (stand-in accepts '
                       f'{" and ".join(API_VERSIONS)})')
        docs[kind] = d
    return docs


def extra_args(node_registration):
    """kubeletExtraArgs as a list of --name=value: v1beta4 has [{name, value}], v1beta3 a map."""
    raw = node_registration.get("kubeletExtraArgs") or {}
    if isinstance(raw, dict):
        return [f"--{k}={v}" for k, v in raw.items()]
    return [f"--{a['name']}={a['value']}" for a in raw]


def timeout_of(cfg, key, default):
    t = (cfg.get("timeouts") or {}).get(key)
    return parse_duration(t) if t else default


def ignored_checks(flags, node_registration):
    items = list(node_registration.get("ignorePreflightErrors") or [])
    if flags.get("ignore-preflight-errors"):
        items += flags["ignore-preflight-errors"].split(",")
    return {i.strip().lower() for i in items if i.strip()}


def run_preflight(mode, flags, node_reg, api_port=6443):
    out("[preflight] Running pre-flight checks")
    cri = node_reg.get("criSocket") or DEFAULT_CRI
    warnings, errors = preflight.run_checks(mode, cri, api_port)
    if not preflight.report(warnings, errors, ignored_checks(flags, node_reg), sys.stdout, sys.stderr):
        raise Fail("", 1)


def systemctl(*args):
    if os.environ.get("BOOTSTRAP_STANDIN_ROOT"):
        return  # unit tests: no systemd
    subprocess.run(["systemctl", *args], check=False)


def kubelet_healthy():
    try:
        with urllib.request.urlopen(KUBELET_HEALTHZ, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def wait_kubelet(bound):
    out(f"[kubelet-check] Waiting for a healthy kubelet at {KUBELET_HEALTHZ}. This can take up to "
        f"{int(bound // 60)}m{int(bound % 60)}s")
    start = time.monotonic()
    if not wait_until(bound, kubelet_healthy, 0.5):
        out(f"[kubelet-check] The kubelet is not healthy after {bound:.1f}s")
        raise Fail("\nUnfortunately, an error has occurred:\n\tThe HTTP call equal to 'curl -sSL "
                   f"{KUBELET_HEALTHZ}' returned error: Get \"{KUBELET_HEALTHZ}\": context deadline exceeded\n\n"
                   "This error is likely caused by:\n\t- The kubelet is not running\n\t- The kubelet is unhealthy "
                   "due to a misconfiguration of the node in some way (required cgroups disabled)\n\n"
                   "If you are on a systemd-powered system, you can try to troubleshoot the error with the following "
                   "commands:\n\t- 'systemctl status kubelet'\n\t- 'journalctl -xeu kubelet'\n\n"
                   "error execution phase wait-control-plane: could not initialize a Kubernetes cluster\n"
                   "To see the stack trace of this error execute with --v=5 or higher")
    out(f"[kubelet-check] The kubelet is healthy after {time.monotonic() - start:.3f}s")


def write_kubelet_files(kubelet_cfg, cri, node_ip_args, pause_image=None):
    out(f'[kubelet-start] Writing kubelet environment file with flags to file "{KUBELET_DIR}/kubeadm-flags.env"')
    args = [f"--container-runtime-endpoint={cri}"] + node_ip_args
    if pause_image:
        args.append(f"--pod-infra-container-image={pause_image}")
    write_file(f"{KUBELET_DIR}/kubeadm-flags.env", f'KUBELET_KUBEADM_ARGS="{" ".join(args)}"\n')
    out(f'[kubelet-start] Writing kubelet configuration to file "{KUBELET_DIR}/config.yaml"')
    write_file(f"{KUBELET_DIR}/config.yaml", "# Written by the bootstrap lab's kubeadm stand-in.\n"
               + yaml.safe_dump(kubelet_cfg, sort_keys=False))


def kubelet_config(user_doc, cluster_dns):
    cfg = {"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
           "authentication": {"x509": {"clientCAFile": f"{PKI_DIR}/ca.crt"}}, "cgroupDriver": "systemd",
           "clusterDNS": [cluster_dns], "clusterDomain": "cluster.local", "staticPodPath": MANIFESTS_DIR,
           "failSwapOn": True, "healthzBindAddress": "127.0.0.1", "healthzPort": 10248}
    cfg.update({k: v for k, v in (user_doc or {}).items() if k not in ("apiVersion", "kind")})
    return cfg


def static_pod(name, command, image):
    return "# Written by the bootstrap lab's kubeadm stand-in; run by the stand-in kubelet.\n" + yaml.safe_dump({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "kube-system",
                     "labels": {"component": name, "tier": "control-plane", **STANDIN_LABEL}},
        "spec": {"hostNetwork": True, "priorityClassName": "system-node-critical",
                 "containers": [{"name": name, "image": image, "command": command}]}}, sort_keys=False)


# ------------------------------------------------------------------ init


def cmd_init(flags):
    if "config" not in flags:
        raise Fail("stand-in kubeadm: only `kubeadm init --config FILE` is supported")
    docs = load_config(flags["config"], ("InitConfiguration", "ClusterConfiguration"))
    init, cluster = docs.get("InitConfiguration", {}), docs.get("ClusterConfiguration", {})
    node_reg = init.get("nodeRegistration") or {}
    endpoint = init.get("localAPIEndpoint") or {}
    version = str(cluster.get("kubernetesVersion") or "v" + VERSION).lstrip("v")
    if version.split(".")[:2] != VERSION.split(".")[:2]:
        raise Fail(f"this version of kubeadm only supports deploying clusters with the control plane version "
                   f">= {VERSION.rsplit('.', 1)[0]}.0. Current version: v{version} (stand-in kubeadm v{VERSION})")
    out(f"[init] Using Kubernetes version: v{version}")
    port = int(endpoint.get("bindPort") or 6443)
    run_preflight("init", flags, node_reg, port)
    advertise = endpoint.get("advertiseAddress") or default_address()
    node_name = node_reg.get("name") or socket.gethostname()
    networking = cluster.get("networking") or {}
    service_cidr = networking.get("serviceSubnet") or "10.96.0.0/12"
    cp_endpoint = cluster.get("controlPlaneEndpoint") or f"{advertise}:{port}"
    if ":" not in cp_endpoint:
        cp_endpoint += f":{port}"
    server = f"https://{cp_endpoint}"
    cri = node_reg.get("criSocket") or DEFAULT_CRI

    out(f'[certs] Using certificateDir folder "{PKI_DIR}"')
    out('[certs] Generating "ca" certificate and key')
    ca, ca_key = pki.new_ca()
    write_file(f"{PKI_DIR}/ca.crt", ca)
    write_file(f"{PKI_DIR}/ca.key", ca_key, 0o600)
    first_service_ip = str(next(ipaddress.ip_network(service_cidr, strict=False).hosts()))
    sans = ["DNS:kubernetes", "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local", f"DNS:{node_name}", f"IP:{first_service_ip}", f"IP:{advertise}"]
    for extra in (cluster.get("apiServer") or {}).get("certSANs") or []:
        sans.append(("IP:" if is_ip(extra) else "DNS:") + extra)
    host = cp_endpoint.rsplit(":", 1)[0]
    sans.append(("IP:" if is_ip(host) else "DNS:") + host)
    sans = list(dict.fromkeys(sans))
    out(f'[certs] Generating "apiserver" certificate and key\n[certs] apiserver serving cert is signed for DNS names '
        f'and IPs {[s.split(":", 1)[1] for s in sans]}')
    crt, key = pki.new_signed("/CN=kube-apiserver", ca, ca_key, client=False, sans=sans)
    write_file(f"{PKI_DIR}/apiserver.crt", crt)
    write_file(f"{PKI_DIR}/apiserver.key", key, 0o600)
    out('[certs] Generating "sa" key and public key')
    sa_key = subprocess.run(["openssl", "genrsa", "2048"], capture_output=True, check=True).stdout
    write_file(f"{PKI_DIR}/sa.key", sa_key, 0o600)
    write_file(f"{PKI_DIR}/sa.pub", subprocess.run(["openssl", "rsa", "-pubout"], input=sa_key, capture_output=True,
                                                   check=True).stdout)

    out(f'[kubeconfig] Using kubeconfig folder "{K8S_DIR}"')
    for file_name, subject, user in (
            ("admin.conf", "/O=kubeadm:cluster-admins/CN=kubernetes-admin", "kubernetes-admin"),
            ("super-admin.conf", "/O=system:masters/CN=kubernetes-super-admin", "kubernetes-super-admin"),
            ("kubelet.conf", f"/O=system:nodes/CN=system:node:{node_name}", f"system:node:{node_name}"),
            ("controller-manager.conf", "/CN=system:kube-controller-manager", "system:kube-controller-manager"),
            ("scheduler.conf", "/CN=system:kube-scheduler", "system:kube-scheduler")):
        out(f'[kubeconfig] Writing "{file_name}" kubeconfig file')
        crt, key = pki.new_signed(subject, ca, ca_key)
        write_file(f"{K8S_DIR}/{file_name}", kubeconfig_text("kubernetes", server, ca, user, crt, key), 0o600)

    out(f'[etcd] Creating static Pod manifest for local etcd in "{MANIFESTS_DIR}"')
    image_repo = cluster.get("imageRepository") or "registry.k8s.io"
    write_file(f"{MANIFESTS_DIR}/etcd.yaml", static_pod("etcd", ["etcd", f"--data-dir={ETCD_DIR}"],
                                                        f"{image_repo}/etcd:stand-in"))
    out(f'[control-plane] Using manifest folder "{MANIFESTS_DIR}"')
    out('[control-plane] Creating static Pod manifest for "kube-apiserver"')
    write_file(f"{MANIFESTS_DIR}/kube-apiserver.yaml", static_pod("kube-apiserver", [
        "kube-apiserver", f"--advertise-address={advertise}", f"--secure-port={port}",
        f"--client-ca-file={PKI_DIR}/ca.crt", f"--tls-cert-file={PKI_DIR}/apiserver.crt",
        f"--tls-private-key-file={PKI_DIR}/apiserver.key", f"--service-cluster-ip-range={service_cidr}",
        "--enable-bootstrap-token-auth=true", f"--standin-state-file={API_STATE_FILE}",
        f"--standin-signing-key-file={PKI_DIR}/ca.key"], f"{image_repo}/kube-apiserver:v{version}"))
    for comp, args in (("kube-controller-manager", [f"--cluster-signing-cert-file={PKI_DIR}/ca.crt",
                                                    f"--cluster-signing-key-file={PKI_DIR}/ca.key",
                                                    f"--cluster-cidr={networking.get('podSubnet', '')}"]),
                       ("kube-scheduler", [])):
        out(f'[control-plane] Creating static Pod manifest for "{comp}"')
        write_file(f"{MANIFESTS_DIR}/{comp}.yaml", static_pod(comp, [comp, *args], f"{image_repo}/{comp}:v{version}"))

    kcfg = kubelet_config(docs.get("KubeletConfiguration"), tenth_ip(service_cidr))
    write_kubelet_files(kcfg, cri, extra_args(node_reg), pause_image=None)
    out("[kubelet-start] Starting the kubelet")
    systemctl("restart", "kubelet")
    out(f'[wait-control-plane] Waiting for the kubelet to boot up the control plane as static Pods from directory '
        f'"{MANIFESTS_DIR}"')
    wait_kubelet(timeout_of(init, "kubeletHealthCheck", 240))
    api_bound = timeout_of(init, "controlPlaneComponentHealthCheck", 240)
    out(f"[api-check] Waiting for a healthy API server. This can take up to {int(api_bound // 60)}m{int(api_bound % 60)}s")
    admin = Client.from_kubeconfig(Kubeconfig(path(f"{K8S_DIR}/admin.conf")), timeout=5)
    start = time.monotonic()
    if not wait_until(api_bound, lambda: api_ready(admin), 0.5):
        raise Fail(f"[api-check] The API server is not healthy after {api_bound:.0f}s\n"
                   "error execution phase wait-control-plane: could not initialize a Kubernetes cluster")
    out(f"[api-check] The API server is healthy after {time.monotonic() - start:.3f}s")

    out('[upload-config] Storing the configuration used in ConfigMap "kubeadm-config" in the "kube-system" Namespace')
    cluster_doc = dict(cluster, kubernetesVersion=f"v{version}", controlPlaneEndpoint=cp_endpoint)
    upload(admin, "kube-system", "kubeadm-config", {"ClusterConfiguration": yaml.safe_dump(cluster_doc)})
    out('[kubelet] Creating a ConfigMap "kubelet-config" in namespace kube-system with the configuration for the '
        'kubelets in the cluster')
    upload(admin, "kube-system", "kubelet-config", {"kubelet": yaml.safe_dump(kcfg)})

    out(f'[mark-control-plane] Marking the node {node_name} as control-plane by adding the labels: '
        '[node-role.kubernetes.io/control-plane node.kubernetes.io/exclude-from-external-load-balancers]')
    taints = node_reg["taints"] if "taints" in node_reg and node_reg["taints"] is not None else [
        {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
    out(f"[mark-control-plane] Marking the node {node_name} as control-plane by adding the taints "
        f"{[t['key'] + ':' + t['effect'] for t in taints]}")
    if not wait_until(api_bound, lambda: node_exists(admin, node_name), 0.5):
        raise Fail(f"error execution phase mark-control-plane: timed out waiting for the node {node_name} to register")
    admin.post(f"/api/v1/nodes/{node_name}/control-plane",
               {"labels": {"node-role.kubernetes.io/control-plane": "",
                           "node.kubernetes.io/exclude-from-external-load-balancers": ""}, "taints": taints})

    tokens = init.get("bootstrapTokens") or [{}]
    out("[bootstrap-token] Configuring bootstrap tokens, cluster-info ConfigMap, RBAC Roles")
    upload(admin, "kube-public", "cluster-info",
           {"kubeconfig": kubeconfig_text("", server, ca, "").split("\n", 1)[1]})
    token = None
    for t in tokens:
        token = t.get("token") or new_token()
        admin.post("/standin/v1/bootstrap-tokens", {"token": token, "ttlSeconds": parse_duration(t.get("ttl", "24h")),
                                                    "usages": t.get("usages") or ["signing", "authentication"]})
    out("[addons] Applied essential addon: CoreDNS (stand-in: recorded only, no pods)")
    out("[addons] Applied essential addon: kube-proxy (stand-in: recorded only, no pods)")
    out(f"\nYour Kubernetes control-plane has initialized successfully! ({STANDIN_NOTE})\n\n"
        "To start using your cluster, you need to run the following as a regular user:\n\n"
        "  mkdir -p $HOME/.kube\n  sudo cp -i /etc/kubernetes/admin.conf $HOME/.kube/config\n"
        "  sudo chown $(id -u):$(id -g) $HOME/.kube/config\n\n"
        "Then you can join any number of worker nodes by running the following on each as root:\n")
    out(join_command(cp_endpoint, token, ca))
    return 0


def tenth_ip(cidr):
    net = ipaddress.ip_network(cidr, strict=False)
    return str(net.network_address + 10)


def is_ip(s):
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False


def default_address():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("10.255.255.255", 1))
        return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    finally:
        s.close()


def api_ready(client):
    try:
        return client.get("/readyz") == "ok"
    except (ConnectionRefused, ApiError, OSError):
        return False


def node_exists(client, name):
    try:
        client.get(f"/api/v1/nodes/{name}")
        return True
    except (ApiError, ConnectionRefused, OSError):
        return False


def upload(client, namespace, name, data):
    client.post("/standin/v1/apply", {"record": False, "object": {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace}, "data": data}})


def new_token():
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(6)) + "." + "".join(
        secrets.choice(alphabet) for _ in range(16))


def join_command(cp_endpoint, token, ca_pem):
    return f"kubeadm join {cp_endpoint} --token {token} --discovery-token-ca-cert-hash {ca_cert_hash(ca_pem)}"


# ------------------------------------------------------------------ token


def cmd_token(flags, pos):
    kc_file = flags.get("kubeconfig") or path(f"{K8S_DIR}/admin.conf")
    if not os.path.exists(kc_file):
        raise Fail(f"failed to load admin kubeconfig: open {kc_file}: no such file or directory\n"
                   "To see the stack trace of this error execute with --v=5 or higher")
    kc = Kubeconfig(kc_file)
    client = Client.from_kubeconfig(kc)
    sub = pos[0] if pos else ""
    try:
        if sub == "create":
            token = pos[1] if len(pos) > 1 else new_token()
            if not TOKEN_RE.match(token):
                raise Fail(f'the bootstrap token "{token}" was not of the form "^([a-z0-9]{{6}})\\.([a-z0-9]{{16}})$"')
            try:
                ttl = parse_duration(flags.get("ttl", "24h"))
            except ValueError as e:
                raise Fail(f'invalid argument "{flags["ttl"]}" for "--ttl" flag: {e}') from None
            client.post("/standin/v1/bootstrap-tokens", {"token": token, "ttlSeconds": ttl,
                                                         "description": flags.get("description", "")})
            if flags.get("print-join-command"):
                out(join_command(kc.server.split("://", 1)[1], token, kc.ca_pem))
            else:
                out(token)
            return 0
        if sub == "list":
            items = client.get("/standin/v1/bootstrap-tokens")["items"]
            out("TOKEN                     TTL         EXPIRES                USAGES")
            for t in items:
                exp = "<forever>" if t["expires"] is None else time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                              time.gmtime(t["expires"]))
                out(f"{t['id']}.<hidden>   {exp:<22} {','.join(t['usages'])}")
            return 0
    except ConnectionRefused:
        raise Fail(f"failed to create or update bootstrap token: the connection to {kc.server} was refused "
                   "(stand-in kubeadm)") from None
    raise Fail(usage(), 1)


# ------------------------------------------------------------------ join


def cmd_join(flags, pos):
    if "config" in flags:
        docs = load_config(flags["config"], ("JoinConfiguration",))
        cfg = docs.get("JoinConfiguration")
        if not cfg:
            raise Fail(f"no JoinConfiguration found in {flags['config']}")
    else:
        if not pos or "token" not in flags:
            raise Fail(usage())
        cfg = {"discovery": {"bootstrapToken": {"apiServerEndpoint": pos[0], "token": flags["token"],
                                                "caCertHashes": [flags.get("discovery-token-ca-cert-hash", "")]}},
               "nodeRegistration": {}}
    node_reg = cfg.get("nodeRegistration") or {}
    discovery = cfg.get("discovery") or {}
    bt = discovery.get("bootstrapToken") or {}
    token = discovery.get("tlsBootstrapToken") or bt.get("token", "")
    if not TOKEN_RE.match(bt.get("token", "")):
        raise Fail('discovery.bootstrapToken.token: Invalid value: "<redacted>": the bootstrap token is invalid\n'
                   "To see the stack trace of this error execute with --v=5 or higher")
    run_preflight("join", flags, node_reg)
    bound = timeout_of(cfg, "discovery", parse_duration(discovery.get("timeout", "5m")))
    ca = discover(bt["apiServerEndpoint"], bt["token"], bt.get("caCertHashes") or [],
                  bt.get("unsafeSkipCAVerification", False), bound)
    server = f"https://{bt['apiServerEndpoint']}"
    client = Client(server, ca, token=token)
    out("[preflight] Reading configuration from the \"kubeadm-config\" ConfigMap in namespace \"kube-system\"...")
    try:
        client.get("/api/v1/namespaces/kube-system/configmaps/kubeadm-config")
        kcfg = yaml.safe_load(client.get("/api/v1/namespaces/kube-system/configmaps/kubelet-config")["data"]["kubelet"])
    except ApiError as e:
        raise Fail(f"error execution phase preflight: unable to fetch the kubeadm-config ConfigMap: "
                   f"{e.body.get('message')}") from None
    write_file(f"{PKI_DIR}/ca.crt", ca)
    write_file(f"{K8S_DIR}/bootstrap-kubelet.conf",
               kubeconfig_text("kubernetes", server, ca, "tls-bootstrap-token-user", token=token), 0o600)
    cri = node_reg.get("criSocket") or DEFAULT_CRI
    write_kubelet_files(kcfg, cri, extra_args(node_reg))
    out("[kubelet-start] Starting the kubelet")
    systemctl("restart", "kubelet")
    wait_kubelet(timeout_of(cfg, "kubeletHealthCheck", 240))
    out("[kubelet-start] Waiting for the kubelet to perform the TLS Bootstrap")
    tls_bound = timeout_of(cfg, "tlsBootstrap", 300)
    if not wait_until(tls_bound, lambda: os.path.exists(path(f"{K8S_DIR}/kubelet.conf")), 0.5):
        raise Fail("error execution phase kubelet-start: timed out waiting for the condition (the kubelet's TLS "
                   "bootstrap did not finish; see 'journalctl -u kubelet')")
    os.unlink(path(f"{K8S_DIR}/bootstrap-kubelet.conf"))
    out("\nThis node has joined the cluster:\n* Certificate signing request was sent to apiserver and a response "
        f"was received.\n* The Kubelet was informed of the new secure connection details.\n({STANDIN_NOTE})\n\n"
        "Run 'kubectl get nodes' on the control-plane to see this node join the cluster.\n")
    return 0


def discover(endpoint, token, pins, skip_ca, bound):
    """Token discovery as kubeadm does it: cluster-info over unverified TLS, its JWS signature for this
    token, then the CA's public key against the pinned hashes. Retries until the bound, then fails."""
    tid, secret = token.split(".")
    anon = Client(f"https://{endpoint}", verify=False, timeout=5)
    last = None

    def attempt():
        nonlocal last
        try:
            cm = anon.get("/api/v1/namespaces/kube-public/configmaps/cluster-info")
        except (ConnectionRefused, ApiError, OSError) as e:
            last = f"failed to request the cluster-info ConfigMap: {e}"
            return None
        data = cm.get("data", {})
        sig = data.get("jws-kubeconfig-" + tid)
        if not sig:
            last = f'could not find a JWS signature in the cluster-info ConfigMap for token ID "{tid}"'
            return None
        if not jws_verify(sig, data["kubeconfig"], secret):
            raise Fail("error execution phase preflight: couldn't validate the identity of the API Server: failed to "
                       "verify JWS signature of received cluster info object, can't trust this API Server\n"
                       "To see the stack trace of this error execute with --v=5 or higher")
        return data["kubeconfig"]

    kubeconfig = wait_until(bound, attempt, 2)
    if not kubeconfig:
        raise Fail(f"error execution phase preflight: couldn't validate the identity of the API Server: {last}\n"
                   "To see the stack trace of this error execute with --v=5 or higher")
    doc = yaml.safe_load(kubeconfig)
    import base64

    ca = base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"]).decode()
    actual = ca_cert_hash(ca)
    if not skip_ca and actual not in pins:
        raise Fail("error execution phase preflight: couldn't validate the identity of the API Server: cluster CA "
                   f'found in cluster-info ConfigMap is invalid: none of the public keys "{actual}" are pinned\n'
                   "To see the stack trace of this error execute with --v=5 or higher")
    return ca


# ------------------------------------------------------------------ reset


def cmd_reset(flags):
    if not (flags.get("f") or flags.get("force")):
        sys.stdout.write("[reset] Are you sure you want to proceed? [y/N]: ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            raise Fail("error execution phase preflight: aborted reset operation")
    out("[preflight] Running pre-flight checks")
    out("[reset] Stopping the kubelet service")
    systemctl("stop", "kubelet")
    out(f"[reset] Deleting contents of directories: [{MANIFESTS_DIR} {KUBELET_DIR} {PKI_DIR} {ETCD_DIR}]")
    for d in (MANIFESTS_DIR, KUBELET_DIR, PKI_DIR, ETCD_DIR):
        empty_dir(path(d))
    files = [f"{K8S_DIR}/{f}" for f in ("admin.conf", "super-admin.conf", "kubelet.conf", "bootstrap-kubelet.conf",
                                        "controller-manager.conf", "scheduler.conf")]
    out(f"[reset] Deleting files: [{' '.join(files)}]")
    for f in files:
        if os.path.exists(path(f)):
            os.unlink(path(f))
    out(f"\nThe reset process does not clean CNI configuration. To do so, you must remove {CNI_DIR}\n\n"
        "The reset process does not reset or clean up iptables rules or IPVS tables.\n"
        "If you wish to reset iptables, you must do so manually by using the \"iptables\" command.\n\n"
        "The reset process does not clean your kubeconfig files and you must remove them manually.\n"
        "Please, check the contents of the $HOME/.kube/config file.")
    return 0


def empty_dir(d):
    if not os.path.isdir(d):
        return
    for entry in os.listdir(d):
        p = os.path.join(d, entry)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)


def main(argv):
    if not argv or argv[0] in ("-h", "--help", "help"):
        out(usage())
        return 0 if argv else 1
    cmd, rest = argv[0], argv[1:]
    flags, pos = parse_flags(rest)
    if cmd in ("version", "--version"):
        if flags.get("o") == "short" or flags.get("output") == "short":
            out(f"v{VERSION}")
        else:
            out(f'kubeadm version: &version.Info{{GitVersion:"v{VERSION}", Platform:"linux/amd64"}} ({STANDIN_NOTE})')
        return 0
    if cmd == "init":
        return cmd_init(flags)
    if cmd == "join":
        return cmd_join(flags, pos)
    if cmd == "token":
        return cmd_token(flags, pos)
    if cmd == "reset":
        return cmd_reset(flags)
    raise Fail(f'unknown command "{cmd}" for "kubeadm"\n{usage()}')


def entry():
    sys.exit(run_main(main, sys.argv[1:]))
