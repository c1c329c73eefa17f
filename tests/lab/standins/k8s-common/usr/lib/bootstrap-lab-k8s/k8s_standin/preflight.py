"""kubeadm's preflight checks as the stand-in runs them, with the real check names and messages."""

import os

from .common import K8S_DIR, MANIFESTS_DIR, PKI_DIR, ETCD_DIR, path, port_in_use, proc_value, runtime_answers, swap_active

INIT_PORTS = (6443, 10259, 10257, 10250, 2379, 2380)
JOIN_PORTS = (10250,)
STATIC_PODS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")


def check_name(prefix, p):
    return prefix + "--" + p.strip("/").replace("/", "-")


def run_checks(mode, cri_endpoint, api_port=6443):
    """Returns (warnings, errors), each a list of (check name, message), in kubeadm's order."""
    warnings, errors = [], []
    if os.geteuid() != 0:
        errors.append(("IsPrivilegedUser", "user is not running as root"))
    ok, why = runtime_answers(cri_endpoint)
    if not ok:
        errors.append(("CRI", f"could not connect to the container runtime: {why}"))
    if mode == "init":
        ports = tuple(api_port if p == 6443 else p for p in INIT_PORTS)
        files = [f"{MANIFESTS_DIR}/{n}.yaml" for n in STATIC_PODS]
    else:
        ports = JOIN_PORTS
        files = [f"{K8S_DIR}/kubelet.conf", f"{K8S_DIR}/bootstrap-kubelet.conf", f"{PKI_DIR}/ca.crt"]
    for port in ports:
        if port_in_use(port):
            errors.append((f"Port-{port}", f"Port {port} is in use"))
    for f in files:
        if os.path.exists(path(f)):
            errors.append((check_name("FileAvailable", f), f"{f} already exists"))
    if mode == "init" and os.path.isdir(path(ETCD_DIR)) and os.listdir(path(ETCD_DIR)):
        errors.append((check_name("DirAvailable", ETCD_DIR), f"{ETCD_DIR} is not empty"))
    if swap_active():
        # Since 1.28 swap is a warning here; the kubelet (failSwapOn) then refuses to start.
        warnings.append(("Swap", "swap is supported for cgroup v2 only. The kubelet must be properly configured "
                                 "to use swap. Please refer to https://kubernetes.io/docs/concepts/architecture/nodes/"
                                 "#swap-memory, or disable swap on the node"))
    for rel in ("net/bridge/bridge-nf-call-iptables", "net/ipv4/ip_forward"):
        f = "/proc/sys/" + rel
        value = proc_value(rel)
        if value is None:
            errors.append((check_name("FileContent", f), f"{f} does not exist"))
        elif value != "1":
            errors.append((check_name("FileContent", f), f"{f} contents are not set to 1"))
    return warnings, errors


def report(warnings, errors, ignored, out, err):
    """Prints like kubeadm; returns True when the run may go on."""
    ignore_all = "all" in ignored
    fatal = []
    for name, msg in warnings:
        print(f"\t[WARNING {name}]: {msg}", file=err)
    for name, msg in errors:
        if ignore_all or name.lower() in ignored:
            print(f"\t[WARNING {name}]: {msg}", file=err)
        else:
            fatal.append((name, msg))
    if not fatal:
        return True
    lines = ["error execution phase preflight: [preflight] Some fatal errors occurred:"]
    lines += [f"\t[ERROR {name}]: {msg}" for name, msg in fatal]
    lines.append("[preflight] If you know what you are doing, you can make a check non-fatal with "
                 "`--ignore-preflight-errors=...`")
    lines.append("To see the stack trace of this error execute with --v=5 or higher")
    print("\n".join(lines), file=err)
    return False
