"""Host unit tests of the Kubernetes stand-ins (run: python3 -m unittest tests/lab/standins/test_k8s_standins.py).

They need python3-yaml and openssl; no root, no systemd. A fake /proc and a temporary root are
given through BOOTSTRAP_STANDIN_PROC / BOOTSTRAP_STANDIN_ROOT before the modules are imported.
"""

import base64
import io
import json
import os
import socket
import ssl
import sys
import tempfile
import threading
import unittest
from contextlib import redirect_stderr, redirect_stdout

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE = tempfile.mkdtemp(prefix="standin-test-")
os.environ["BOOTSTRAP_STANDIN_PROC"] = os.path.join(FAKE, "proc")
os.environ["BOOTSTRAP_STANDIN_ROOT"] = os.path.join(FAKE, "root")
os.environ["BOOTSTRAP_STANDIN_VERSION"] = "1.33.0"
sys.path.insert(0, os.path.join(HERE, "k8s-common/usr/lib/bootstrap-lab-k8s"))

from k8s_standin import apiserver, kubectl, kubelet, pki, preflight  # noqa: E402
from k8s_standin.common import ca_cert_hash, kubeconfig_text, runtime_answers  # noqa: E402
from k8s_standin.model import Model, jws_verify  # noqa: E402

PROC = os.environ["BOOTSTRAP_STANDIN_PROC"]
ROOT = os.environ["BOOTSTRAP_STANDIN_ROOT"]


def set_proc(swap=False, ip_forward="1", bridge="1"):
    os.makedirs(f"{PROC}/sys/net/ipv4", exist_ok=True)
    os.makedirs(f"{PROC}/sys/net/bridge", exist_ok=True)
    with open(f"{PROC}/swaps", "w") as f:
        f.write("Filename Type Size Used Priority\n" + ("/swapfile file 1024 0 -2\n" if swap else ""))
    with open(f"{PROC}/sys/net/ipv4/ip_forward", "w") as f:
        f.write(ip_forward + "\n")
    bridge_file = f"{PROC}/sys/net/bridge/bridge-nf-call-iptables"
    if bridge is None:
        if os.path.exists(bridge_file):
            os.unlink(bridge_file)
    else:
        with open(bridge_file, "w") as f:
            f.write(bridge + "\n")


class FakeRuntime:
    """A unix socket that answers an HTTP/2 preface with a SETTINGS frame, as containerd's gRPC does."""

    def __init__(self, sock_path):
        os.makedirs(os.path.dirname(sock_path), exist_ok=True)
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.bind(sock_path)
        self.s.listen(4)
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self):
        while True:
            try:
                c, _ = self.s.accept()
            except OSError:
                return
            c.recv(64)
            c.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            c.close()


class PreflightTest(unittest.TestCase):
    def checks(self, **proc):
        set_proc(**proc)
        return preflight.run_checks("init", "unix:///nonexistent/containerd.sock", api_port=free_port())

    def test_ip_forward_off_is_an_error_with_kubeadms_name(self):
        _, errors = self.checks(ip_forward="0")
        self.assertIn(("FileContent--proc-sys-net-ipv4-ip_forward", "/proc/sys/net/ipv4/ip_forward contents are not set to 1"),
                      errors)

    def test_missing_bridge_sysctl_says_it_does_not_exist(self):
        _, errors = self.checks(bridge=None)
        self.assertIn(("FileContent--proc-sys-net-bridge-bridge-nf-call-iptables",
                       "/proc/sys/net/bridge/bridge-nf-call-iptables does not exist"), errors)

    def test_swap_on_is_a_warning_as_since_kubeadm_1_28(self):
        warnings, errors = self.checks(swap=True)
        self.assertEqual([w[0] for w in warnings], ["Swap"])
        self.assertNotIn("Swap", [e[0] for e in errors])

    def test_runtime_socket_that_does_not_answer_is_a_cri_error(self):
        _, errors = self.checks()
        self.assertIn("CRI", [e[0] for e in errors])

    def test_runtime_socket_that_answers_passes(self):
        FakeRuntime(ROOT + "/run/containerd/containerd.sock")
        self.assertEqual(runtime_answers("unix:///run/containerd/containerd.sock"), (True, ""))

    def test_port_in_use_and_existing_manifest_are_errors(self):
        busy = socket.socket()
        busy.bind(("", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        os.makedirs(f"{ROOT}/etc/kubernetes/manifests", exist_ok=True)
        open(f"{ROOT}/etc/kubernetes/manifests/kube-apiserver.yaml", "w").close()
        try:
            set_proc()
            _, errors = preflight.run_checks("init", "unix:///nonexistent", api_port=port)
        finally:
            os.unlink(f"{ROOT}/etc/kubernetes/manifests/kube-apiserver.yaml")
            busy.close()
        names = [e[0] for e in errors]
        self.assertIn(f"Port-{port}", names)
        self.assertIn("FileAvailable--etc-kubernetes-manifests-kube-apiserver.yaml", names)

    def test_port_with_only_time_wait_connections_is_free(self):
        # Regression: `kubeadm init` right after `kubeadm reset` saw 6443 "in use" (TIME_WAIT).
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        c = socket.create_connection(("127.0.0.1", port))
        conn, _ = srv.accept()
        conn.close()  # the server side closes first: its end goes to TIME_WAIT
        c.close()
        srv.close()
        from k8s_standin.common import port_in_use

        self.assertFalse(port_in_use(port))

    def test_report_prints_kubeadms_lines_and_honours_ignore(self):
        err = io.StringIO()
        ok = preflight.report([("Swap", "w")], [("CRI", "down"), ("Port-6443", "Port 6443 is in use")], {"cri"},
                              io.StringIO(), err)
        self.assertFalse(ok)
        lines = err.getvalue().splitlines()
        self.assertEqual(lines[0], "\t[WARNING Swap]: w")
        self.assertEqual(lines[1], "\t[WARNING CRI]: down")
        self.assertEqual(lines[2], "error execution phase preflight: [preflight] Some fatal errors occurred:")
        self.assertEqual(lines[3], "\t[ERROR Port-6443]: Port 6443 is in use")
        self.assertTrue(preflight.report([], [("CRI", "down")], {"all"}, io.StringIO(), io.StringIO()))


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


class TokenTest(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.m = Model(now=self.clock)
        self.m.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cluster-info", "namespace": "kube-public"},
                      "data": {"kubeconfig": "ca-kubeconfig"}}, record=False)

    def test_token_valid_until_its_ttl_then_gone_with_its_signature(self):
        self.m.add_token("abcdef.0123456789abcdef", 600)
        self.assertTrue(self.m.token_valid("abcdef.0123456789abcdef"))
        sig = self.m.cluster_info()["data"]["jws-kubeconfig-abcdef"]
        self.assertTrue(jws_verify(sig, "ca-kubeconfig", "0123456789abcdef"))
        self.clock.t += 601
        self.assertFalse(self.m.token_valid("abcdef.0123456789abcdef"))
        self.assertNotIn("jws-kubeconfig-abcdef", self.m.cluster_info()["data"])

    def test_wrong_secret_is_refused_and_does_not_verify_the_signature(self):
        self.m.add_token("abcdef.0123456789abcdef", 600)
        self.assertFalse(self.m.token_valid("abcdef.ffffffffffffffff"))
        sig = self.m.cluster_info()["data"]["jws-kubeconfig-abcdef"]
        self.assertFalse(jws_verify(sig, "ca-kubeconfig", "ffffffffffffffff"))
        self.assertFalse(jws_verify(sig, "other-kubeconfig", "0123456789abcdef"))

    def test_ttl_zero_never_expires(self):
        self.m.add_token("zzzzzz.0123456789abcdef", 0)
        self.clock.t += 10 ** 8
        self.assertTrue(self.m.token_valid("zzzzzz.0123456789abcdef"))


DEPLOY = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "django-app", "namespace": "crypto-exchange"},
          "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "a"}]}}}}


class ApplyTest(unittest.TestCase):
    def test_created_unchanged_configured_with_generations_in_order(self):
        m = Model()
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "crypto-exchange"}}
        self.assertEqual(m.apply(json.loads(json.dumps(ns))), ("namespace/crypto-exchange", "created", 1))
        self.assertEqual(m.apply(json.loads(json.dumps(DEPLOY))), ("deployment.apps/django-app", "created", 1))
        self.assertEqual(m.apply(json.loads(json.dumps(DEPLOY)))[1:], ("unchanged", 1))
        changed = json.loads(json.dumps(DEPLOY))
        changed["spec"]["replicas"] = 3
        self.assertEqual(m.apply(changed)[1:], ("configured", 2))
        self.assertEqual([(a["kind"], a["result"]) for a in m.state["applied"]],
                         [("Namespace", "created"), ("Deployment", "created"), ("Deployment", "unchanged"),
                          ("Deployment", "configured")])

    def test_a_job_with_ttl_zero_is_gone_once_applied_and_its_ca_patch_reaches_the_webhook(self):
        # As ingress-nginx's release: Jobs with ttlSecondsAfterFinished: 0 are deleted as soon as
        # they complete; the patch Job's effect (the webhook's caBundle) is what stays.
        m = Model()
        m.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ingress-nginx"}})
        job = {"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": "ingress-nginx-admission-patch", "namespace": "ingress-nginx",
                            "annotations": {"bootstrap-lab/patches-ca-of": "ingress-nginx-admission"}},
               "spec": {"ttlSecondsAfterFinished": 0, "template": {"spec": {}}}}
        self.assertEqual(m.apply(json.loads(json.dumps(job)))[1], "created")
        self.assertIsNone(m.get_object("batch", "Job", "ingress-nginx", "ingress-nginx-admission-patch"))
        webhook = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
                   "metadata": {"name": "ingress-nginx-admission"},
                   "webhooks": [{"name": "validate.nginx.ingress.kubernetes.io", "clientConfig": {}}]}
        m.apply(json.loads(json.dumps(webhook)))
        live = m.get_object("admissionregistration.k8s.io", "ValidatingWebhookConfiguration", None,
                            "ingress-nginx-admission")
        self.assertTrue(live["webhooks"][0]["clientConfig"]["caBundle"])
        # A Job without a TTL stays (completed).
        kept = json.loads(json.dumps(job))
        kept["metadata"]["name"] = "kept"
        del kept["spec"]["ttlSecondsAfterFinished"]
        m.apply(kept)
        self.assertIsNotNone(m.get_object("batch", "Job", "ingress-nginx", "kept"))

    def test_namespaced_object_before_its_namespace_is_not_found(self):
        with self.assertRaisesRegex(Exception, 'namespaces "crypto-exchange" not found'):
            Model().apply(json.loads(json.dumps(DEPLOY)))

    def test_custom_kind_needs_its_crd_first(self):
        m = Model()
        pool = {"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool", "metadata": {"name": "p"}, "spec": {"cidr": "10.244.0.0/16"}}
        with self.assertRaisesRegex(Exception, "no matches for kind"):
            m.apply(dict(pool))
        m.apply({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                 "metadata": {"name": "ippools.crd.projectcalico.org"},
                 "spec": {"group": "crd.projectcalico.org", "scope": "Cluster", "names": {"kind": "IPPool"}}})
        self.assertEqual(m.apply(dict(pool))[1], "created")

    def test_kustomize_orders_namespace_first_and_sets_the_namespace(self):
        d = tempfile.mkdtemp(dir=FAKE)
        os.makedirs(f"{d}/app")
        with open(f"{d}/kustomization.yaml", "w") as f:
            f.write("resources: [app, ns.yaml]\nnamespace: crypto-exchange\n")
        with open(f"{d}/ns.yaml", "w") as f:
            f.write("apiVersion: v1\nkind: Namespace\nmetadata: {name: crypto-exchange}\n")
        with open(f"{d}/app/kustomization.yaml", "w") as f:
            f.write("resources: [deploy.yaml]\n")
        with open(f"{d}/app/deploy.yaml", "w") as f:
            f.write("apiVersion: v1\nkind: List\nitems:\n- apiVersion: apps/v1\n  kind: Deployment\n  metadata: {name: x}\n"
                    "---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\n")
        objs = [o for _, o in kubectl.kustomize(d)]
        self.assertEqual([o["kind"] for o in objs], ["Namespace", "Service", "Deployment"])
        self.assertEqual(objs[2]["metadata"]["namespace"], "crypto-exchange")
        self.assertNotIn("namespace", objs[0]["metadata"])


    def test_kustomize_patches_merge_lists_by_name_and_replace_the_others(self):
        d = tempfile.mkdtemp(dir=FAKE)
        with open(f"{d}/ds.yaml", "w") as f:
            f.write("apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: calico-node, namespace: kube-system}\n"
                    "spec:\n  template:\n    spec:\n      containers:\n      - name: calico-node\n"
                    "        env: [{name: A, value: '1'}, {name: B, value: '2'}]\n"
                    "        livenessProbe: {exec: {command: [/bin/calico-node, -felix-live, -bird-live]}}\n"
                    "      - {name: other, image: x}\n")
        with open(f"{d}/kustomization.yaml", "w") as f:
            f.write("resources: [ds.yaml]\npatches:\n- patch: |-\n    apiVersion: apps/v1\n    kind: DaemonSet\n"
                    "    metadata: {name: calico-node, namespace: kube-system}\n    spec:\n      template:\n"
                    "        spec:\n          containers:\n          - name: calico-node\n"
                    "            env: [{name: B, value: '3'}, {name: C, value: '4'}]\n"
                    "            livenessProbe: {exec: {command: [/bin/calico-node, -felix-live]}}\n")
        (_, ds), = kubectl.kustomize(d)
        node, other = ds["spec"]["template"]["spec"]["containers"]
        self.assertEqual(node["env"], [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}])
        self.assertEqual(node["livenessProbe"]["exec"]["command"], ["/bin/calico-node", "-felix-live"])
        self.assertEqual(other, {"name": "other", "image": "x"})
        with open(f"{d}/kustomization.yaml", "a") as f:
            f.write("- patch: |-\n    kind: DaemonSet\n    metadata: {name: nowhere, namespace: kube-system}\n")
        with self.assertRaisesRegex(Exception, "failed to find unique target"):
            kubectl.kustomize(d)

class TokenControllerTest(unittest.TestCase):
    SA_SECRET = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
                 "metadata": {"name": "deployer-token", "namespace": "crypto-exchange",
                              "annotations": {"kubernetes.io/service-account.name": "deployer"}}}

    def model_with_namespace(self):
        m = Model()
        m.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "crypto-exchange"}})
        return m

    def test_service_account_token_secret_gets_a_token_kept_across_reapplies(self):
        m = self.model_with_namespace()
        m.apply(json.loads(json.dumps(self.SA_SECRET)))
        token = m.get_object("", "Secret", "crypto-exchange", "deployer-token")["data"]["token"]
        self.assertTrue(base64.b64decode(token))
        # A rerun compares with what was applied (no token there): unchanged, same token.
        self.assertEqual(m.apply(json.loads(json.dumps(self.SA_SECRET)))[1], "unchanged")
        changed = json.loads(json.dumps(self.SA_SECRET))
        changed["metadata"]["labels"] = {"a": "b"}
        self.assertEqual(m.apply(changed)[1], "configured")
        self.assertEqual(m.get_object("", "Secret", "crypto-exchange", "deployer-token")["data"]["token"], token)

    def test_other_secrets_get_no_token(self):
        m = self.model_with_namespace()
        m.apply({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                 "metadata": {"name": "s", "namespace": "crypto-exchange"}, "stringData": {"k": "v"}})
        self.assertNotIn("token", m.get_object("", "Secret", "crypto-exchange", "s").get("data") or {})


class IngressStandinManifestTest(unittest.TestCase):
    def test_applies_in_kustomize_order_with_the_objects_the_playbook_waits_on(self):
        d = tempfile.mkdtemp(dir=FAKE)
        os.makedirs(f"{d}/upstream")
        with open(os.path.join(HERE, "ingress-nginx.yaml")) as src, open(f"{d}/upstream/deploy.yaml", "w") as dst:
            text = src.read()
            dst.write(text)
        self.assertIn("Stand-in", text)
        with open(f"{d}/kustomization.yaml", "w") as f:
            f.write("resources: [upstream/deploy.yaml]\n")
        m = Model()
        for _, o in kubectl.kustomize(d):
            m.apply(o)
        applied = [(a["kind"], a["name"]) for a in m.state["applied"]]
        self.assertEqual(applied[0], ("Namespace", "ingress-nginx"))
        for obj in [("Deployment", "ingress-nginx-controller"), ("Service", "ingress-nginx-controller"),
                    ("Job", "ingress-nginx-admission-patch"), ("IngressClass", "nginx")]:
            self.assertIn(obj, applied)


class NginxIngressStandinTest(unittest.TestCase):
    """The F5 controller's stand-in release files, applied as the product's kustomization names them,
    and the removal of the retired ingress-nginx that the manifests playbook does first."""

    FILES = ["deploy/crds.yaml", "deployments/common/ns-and-sa.yaml", "deployments/rbac/rbac.yaml",
             "deployments/common/nginx-config.yaml", "deployments/common/ingress-class.yaml",
             "deployments/deployment/nginx-ingress.yaml"]

    def test_the_release_files_apply_with_the_names_the_product_relies_on(self):
        d = tempfile.mkdtemp(dir=FAKE)
        os.makedirs(f"{d}/upstream")
        for path in self.FILES:
            with open(os.path.join(HERE, "nginx-ingress", path)) as src:
                text = src.read()
            self.assertIn("Stand-in", text)
            with open(f"{d}/upstream/{os.path.basename(path)}", "w") as dst:
                dst.write(text)
        with open(f"{d}/kustomization.yaml", "w") as f:
            f.write("resources: [" + ", ".join("upstream/" + os.path.basename(p) for p in self.FILES) + "]\n")
        m = Model()
        for _, o in kubectl.kustomize(d):
            m.apply(o)
        applied = [(a["kind"], a["name"]) for a in m.state["applied"]]
        self.assertEqual(applied[0], ("Namespace", "nginx-ingress"))
        self.assertIn(("CustomResourceDefinition", "virtualservers.k8s.nginx.org"), applied)
        deployment = m.get_object("apps", "Deployment", "nginx-ingress", "nginx-ingress")
        # What the product's Service (files/manifests/nginx-ingress/service.yaml.j2) relies on.
        self.assertEqual(deployment["spec"]["template"]["metadata"]["labels"]["app"], "nginx-ingress")
        self.assertIn("-external-service=nginx-ingress", deployment["spec"]["template"]["spec"]["containers"][0]["args"])
        self.assertEqual(m.get_object("networking.k8s.io", "IngressClass", None, "nginx")["spec"]["controller"],
                         "nginx.org/ingress-controller")

    def test_deleting_a_namespace_takes_its_objects_and_cluster_scoped_kinds_ignore_the_namespace(self):
        m = Model()
        with open(os.path.join(HERE, "ingress-nginx.yaml")) as f:
            import yaml

            for doc in yaml.safe_load_all(f):
                if doc:
                    m.apply(doc)
        self.assertIsNotNone(m.get_object("apps", "Deployment", "ingress-nginx", "ingress-nginx-controller"))
        self.assertTrue(m.delete_object("", "Namespace", None, "ingress-nginx"))
        self.assertIsNone(m.get_object("apps", "Deployment", "ingress-nginx", "ingress-nginx-controller"))
        self.assertIsNone(m.get_object("", "Service", "ingress-nginx", "ingress-nginx-controller"))
        # kubectl passes its default namespace along; a cluster-scoped object is found regardless.
        self.assertTrue(m.delete_object("networking.k8s.io", "IngressClass", "default", "nginx"))
        self.assertFalse(m.delete_object("networking.k8s.io", "IngressClass", None, "nginx"))


class ReadinessTest(unittest.TestCase):
    def model(self, pod_cidr="10.244.0.0/16"):
        m = Model()
        m.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
                 "data": {"ClusterConfiguration": f"networking:\n  podSubnet: {pod_cidr}\n"}}, record=False)
        with open(os.path.join(HERE, "calico.yaml")) as f:
            import yaml

            for doc in yaml.safe_load_all(f):
                m.apply(doc)
        m.state["nodes"]["master"] = {"metadata": {"name": "master", "labels": {},
                                                   "annotations": {"standin.bootstrap-lab/runtime-ready": "true",
                                                                   "projectcalico.org/IPv4Address": "10.213.7.11/24"}},
                                      "spec": {"taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]},
                                      "status": {"conditions": [{"type": "Ready", "status": "False"}]}}
        return m

    def test_calico_pool_follows_kubeadms_pod_subnet(self):
        m = self.model()
        self.assertTrue(m.calico_pool()["ok"])
        self.assertEqual(m.rollout("DaemonSet", "kube-system", "calico-node")[:2], (1, 1))
        # calico-kube-controllers needs a Ready node (it is not host-network).
        self.assertEqual(m.rollout("Deployment", "kube-system", "calico-kube-controllers")[:2], (1, 0))
        m.state["nodes"]["master"]["status"]["conditions"][0]["status"] = "True"
        self.assertEqual(m.rollout("Deployment", "kube-system", "calico-kube-controllers")[:2], (1, 1))

    def test_pool_other_than_the_pod_cidr_is_reported_and_calico_not_ready(self):
        m = self.model()
        ds = m.get_object("apps", "DaemonSet", "kube-system", "calico-node")
        ds["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "CALICO_IPV4POOL_CIDR", "value": "192.168.0.0/16"})
        pool = m.calico_pool()
        self.assertFalse(pool["ok"])
        self.assertIn("192.168.0.0/16", pool["message"])
        self.assertIn("10.244.0.0/16", pool["message"])
        self.assertEqual(m.rollout("DaemonSet", "kube-system", "calico-node")[:2], (1, 0))

    def test_pods_follow_the_readiness_model(self):
        m = self.model()
        pods = {p["metadata"]["labels"]["k8s-app"]: p for p in m.pods("kube-system")}
        self.assertEqual(pods["calico-node"]["status"]["phase"], "Running")
        self.assertEqual(pods["calico-node"]["spec"]["nodeName"], "master")
        self.assertEqual(pods["calico-kube-controllers"]["status"]["phase"], "Pending")
        self.assertTrue(kubectl.matches(pods["calico-node"], "k8s-app=calico-node"))
        self.assertFalse(kubectl.matches(pods["calico-node"], "k8s-app=other"))

    def test_app_deployment_does_not_land_on_a_tainted_master(self):
        m = self.model()
        m.state["nodes"]["master"]["status"]["conditions"][0]["status"] = "True"
        m.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "crypto-exchange"}})
        m.apply(json.loads(json.dumps(DEPLOY)))
        self.assertEqual(m.rollout("Deployment", "crypto-exchange", "django-app")[:2], (2, 0))


class SetEnvTest(unittest.TestCase):
    def test_set_env_changes_the_live_object_and_a_reapply_stays_unchanged(self):
        m = Model()
        import yaml

        with open(os.path.join(HERE, "calico.yaml")) as f:
            docs = list(yaml.safe_load_all(f))
        for d in json.loads(json.dumps(docs)):
            m.apply(d)
        self.assertTrue(m.set_env("apps", "DaemonSet", "kube-system", "calico-node", None,
                                  {"IP_AUTODETECTION_METHOD": "cidr=10.213.7.0/24"}))
        self.assertFalse(m.set_env("apps", "DaemonSet", "kube-system", "calico-node", None,
                                   {"IP_AUTODETECTION_METHOD": "cidr=10.213.7.0/24"}))
        results = [m.apply(d)[1] for d in json.loads(json.dumps(docs))]
        self.assertEqual(set(results), {"unchanged"})
        ds = m.get_object("apps", "DaemonSet", "kube-system", "calico-node")
        env = ds["spec"]["template"]["spec"]["containers"][0]["env"]
        self.assertIn({"name": "IP_AUTODETECTION_METHOD", "value": "cidr=10.213.7.0/24"}, env)
        self.assertEqual(ds["metadata"]["generation"], 2)


class NodeLifecycleTest(unittest.TestCase):
    def test_node_without_heartbeats_for_40s_is_ready_unknown(self):
        clock = Clock()
        m = Model(now=clock)
        m.state["nodes"]["w"] = {"metadata": {"name": "w", "annotations": {}}, "status": {}}
        m.heartbeat("w", {"conditions": [{"type": "Ready", "status": "True"}]}, {})
        self.assertTrue(m.node_ready(m.nodes()[0]))
        clock.t += 41
        self.assertEqual(m.nodes()[0]["status"]["conditions"][0]["status"], "Unknown")


class KubeletTest(unittest.TestCase):
    ADDRS = [("lo", "127.0.0.1/8"), ("eth0", "10.0.2.15/24"), ("eth1", "192.168.56.10/24")]

    def test_autodetection_methods(self):
        self.assertEqual(kubelet.autodetect("first-found", "192.168.56.10", self.ADDRS), "10.0.2.15/24")
        self.assertEqual(kubelet.autodetect("cidr=192.168.56.0/24", "x", self.ADDRS), "192.168.56.10/24")
        self.assertEqual(kubelet.autodetect("interface=eth1", "x", self.ADDRS), "192.168.56.10/24")
        self.assertEqual(kubelet.autodetect("kubernetes-internal-ip", "192.168.56.10", self.ADDRS), "192.168.56.10/24")
        self.assertIsNone(kubelet.autodetect("cidr=10.213.7.0/24", "x", self.ADDRS))

    def test_kubelet_refuses_to_run_with_swap_on(self):
        set_proc(swap=True)
        os.makedirs(f"{ROOT}/var/lib/kubelet", exist_ok=True)
        with open(f"{ROOT}/var/lib/kubelet/config.yaml", "w") as f:
            f.write("kind: KubeletConfiguration\n")
        err = io.StringIO()
        with redirect_stderr(err):
            code = kubelet.main(["--config=/var/lib/kubelet/config.yaml"])
        set_proc()
        self.assertEqual(code, 1)
        self.assertIn("running with swap on is not supported", err.getvalue())

    def test_kubelet_without_config_exits_1_so_systemd_restarts_it(self):
        err = io.StringIO()
        with redirect_stderr(err):
            code = kubelet.main(["--config=/var/lib/kubelet/nosuch.yaml"])
        self.assertEqual(code, 1)
        self.assertIn("failed to load kubelet config file", err.getvalue())


class JsonpathTest(unittest.TestCase):
    def test_filters_and_escaped_dots(self):
        node = {"metadata": {"annotations": {"projectcalico.org/IPv4Address": "10.0.0.1/24"}},
                "status": {"conditions": [{"type": "Other", "status": "False"}, {"type": "Ready", "status": "True"}]}}
        self.assertEqual(kubectl.jsonpath(node, '{.status.conditions[?(@.type=="Ready")].status}'), "True")
        self.assertEqual(kubectl.jsonpath(node, "{.metadata.annotations.projectcalico\\.org/IPv4Address}"), "10.0.0.1/24")
        self.assertEqual(kubectl.jsonpath({"items": [{"metadata": {"name": "a"}}, {"metadata": {"name": "b"}}]},
                                          "{.items[*].metadata.name}"), "a b")

    def test_nested_ranges_and_the_current_item(self):
        # The Calico settings guard of master.toml: ranges inside a range, {@} for list strings.
        ds = {"spec": {"template": {"spec": {"containers": [
            {"name": "calico-node", "env": [{"name": "A", "value": "1"}],
             "livenessProbe": {"exec": {"command": ["/bin/calico-node", "-felix-live"]}}}]}}}}
        t = ('{range .spec.template.spec.containers[?(@.name=="calico-node")]}{range .env[*]}{.name}={.value}'
             '{"\\n"}{end}live={range .livenessProbe.exec.command[*]}{@} {end}{"\\n"}{end}')
        self.assertEqual(kubectl.jsonpath(ds, t), "A=1\nlive=/bin/calico-node -felix-live \n")

    def test_range_and_literals(self):
        items = {"items": [{"kind": "Namespace", "metadata": {"name": "app"}},
                           {"kind": "Deployment", "metadata": {"namespace": "app", "name": "web"}}]}
        self.assertEqual(
            kubectl.jsonpath(items, '{range .items[*]}{.kind}/{.metadata.namespace}/{.metadata.name}{"\\n"}{end}'),
            "Namespace//app\nDeployment/app/web\n")
        self.assertEqual(kubectl.jsonpath(items, 'n={.items[0].metadata.name}{range .items[*]}<{.kind}>{end}!'),
                         "n=app<Namespace><Deployment>!")
        # The Calico settings guard: a filter inside the range, an env entry without a value.
        ds = {"spec": {"template": {"spec": {"containers": [
            {"name": "other", "env": [{"name": "X", "value": "1"}]},
            {"name": "calico-node", "env": [{"name": "A", "value": "a=1"}, {"name": "B", "valueFrom": {}}]}]}}}}
        self.assertEqual(
            kubectl.jsonpath(ds, '{range .spec.template.spec.containers[?(@.name=="calico-node")].env[*]}'
                                 '{.name}={.value}{"\\n"}{end}'),
            "A=a=1\nB=\n")


def free_port():
    s = socket.socket()
    s.bind(("", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class ApiOverTlsTest(unittest.TestCase):
    """The API and kubectl over real TLS on loopback: admin cert, anonymous, bootstrap token."""

    @classmethod
    def setUpClass(cls):
        d = tempfile.mkdtemp(dir=FAKE)
        ca, ca_key = pki.new_ca()
        crt, key = pki.new_signed("/CN=kube-apiserver", ca, ca_key, client=False, sans=["IP:127.0.0.1"])
        files = {}
        for n, data in (("ca.crt", ca), ("ca.key", ca_key), ("apiserver.crt", crt), ("apiserver.key", key)):
            files[n] = os.path.join(d, n)
            with open(files[n], "w") as f:
                f.write(data)
        cls.port = free_port()
        api = apiserver.Api(os.path.join(d, "state.json"), files["ca.crt"], files["ca.key"])
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(files["apiserver.crt"], files["apiserver.key"])
        ctx.load_verify_locations(files["ca.crt"])
        ctx.verify_mode = ssl.CERT_OPTIONAL
        from http.server import ThreadingHTTPServer

        cls.server = ThreadingHTTPServer(("127.0.0.1", cls.port), apiserver.make_handler(api))
        cls.server.socket = ctx.wrap_socket(cls.server.socket, server_side=True)
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()
        acrt, akey = pki.new_signed("/O=kubeadm:cluster-admins/CN=kubernetes-admin", ca, ca_key)
        cls.kubeconfig = os.path.join(d, "admin.conf")
        with open(cls.kubeconfig, "w") as f:
            f.write(kubeconfig_text("kubernetes", f"https://127.0.0.1:{cls.port}", ca, "kubernetes-admin", acrt, akey))
        cls.ca = ca
        cls.dir = d

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()

    def kubectl(self, *args, stdin=None):
        out, err = io.StringIO(), io.StringIO()
        old = sys.stdin
        if stdin is not None:
            sys.stdin = io.StringIO(stdin)
        try:
            with redirect_stdout(out), redirect_stderr(err):
                from k8s_standin.common import run_main

                code = run_main(kubectl.main, ["--kubeconfig", self.kubeconfig, *args])
        finally:
            sys.stdin = old
        return code, out.getvalue(), err.getvalue()

    def test_readyz_and_apply_from_stdin_then_unchanged(self):
        self.assertEqual(self.kubectl("get", "--raw", "/readyz")[:2], (0, "ok\n"))
        doc = "apiVersion: v1\nkind: Namespace\nmetadata: {name: tls-ns}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: tls-ns}\ndata: {a: b}\n"
        self.assertEqual(self.kubectl("apply", "-f", "-", stdin=doc)[:2], (0, "namespace/tls-ns created\nconfigmap/c created\n"))
        self.assertEqual(self.kubectl("apply", "-f", "-", stdin=doc)[:2], (0, "namespace/tls-ns unchanged\nconfigmap/c unchanged\n"))

    def test_get_kind_slash_name_like_kind_space_name(self):
        self.kubectl("apply", "-f", "-", stdin="apiVersion: v1\nkind: Namespace\nmetadata: {name: slash}\n")
        self.assertEqual(self.kubectl("get", "namespace/slash", "-o", "name")[:2], (0, "namespace/slash\n"))
        self.assertEqual(self.kubectl("get", "namespace", "slash", "-o", "name")[:2], (0, "namespace/slash\n"))
        code, _, err = self.kubectl("-n", "kube-system", "get", "daemonset/nosuch")
        self.assertEqual((code, err.strip().splitlines()[-1]),
                         (1, 'Error from server (NotFound): daemonsets.apps "nosuch" not found'))

    def test_wait_job_complete_is_met_at_once_and_unknown_job_is_notfound(self):
        doc = ("apiVersion: v1\nkind: Namespace\nmetadata: {name: jobs}\n---\napiVersion: batch/v1\nkind: Job\n"
               "metadata: {name: patch, namespace: jobs}\nspec: {template: {spec: {containers: []}}}\n")
        self.assertEqual(self.kubectl("apply", "-f", "-", stdin=doc)[0], 0)
        self.assertEqual(self.kubectl("-n", "jobs", "wait", "--for=condition=complete", "job/patch", "--timeout=5s")[:2],
                         (0, "job.batch/patch condition met\n"))
        code, _, err = self.kubectl("-n", "jobs", "wait", "--for=condition=complete", "job/nosuch", "--timeout=5s")
        self.assertEqual((code, err.strip().splitlines()[-1]),
                         (1, 'Error from server (NotFound): jobs.batch "nosuch" not found'))

    def test_service_account_token_readable_by_jsonpath(self):
        doc = ("apiVersion: v1\nkind: Namespace\nmetadata: {name: sa}\n---\napiVersion: v1\nkind: Secret\n"
               "type: kubernetes.io/service-account-token\nmetadata: {name: t, namespace: sa}\n")
        self.assertEqual(self.kubectl("apply", "-f", "-", stdin=doc)[0], 0)
        code, out, _ = self.kubectl("-n", "sa", "get", "secret", "t", "-o", "jsonpath={.data.token}")
        self.assertEqual(code, 0)
        self.assertTrue(base64.b64decode(out).startswith(b"standin-sa-token."))

    def test_get_several_kinds_across_namespaces_in_one_list(self):
        doc = ("apiVersion: v1\nkind: Namespace\nmetadata: {name: many}\n---\napiVersion: apps/v1\nkind: Deployment\n"
               "metadata: {name: web, namespace: many}\nspec: {}\n---\napiVersion: apps/v1\nkind: DaemonSet\n"
               "metadata: {name: agent, namespace: many}\nspec: {}\n")
        self.assertEqual(self.kubectl("apply", "-f", "-", stdin=doc)[0], 0)
        code, out, err = self.kubectl(
            "get", "namespaces,deployments,daemonsets", "-A", "-o",
            'jsonpath={range .items[*]}{.kind}/{.metadata.namespace}/{.metadata.name}{"\\n"}{end}')
        self.assertEqual(code, 0, err)
        lines = out.splitlines()
        for want in ("Namespace//many", "Deployment/many/web", "DaemonSet/many/agent"):
            self.assertIn(want, lines)
        code, out, _ = self.kubectl("get", "deployments,daemonsets", "-A", "-o", "name")
        self.assertIn("deployment.apps/web", out.splitlines())
        self.assertIn("daemonset.apps/agent", out.splitlines())

    def test_unknown_node_is_notfound_exit_1(self):
        code, _, err = self.kubectl("get", "node", "nosuch")
        self.assertEqual((code, err.strip().splitlines()[-1]), (1, 'Error from server (NotFound): nodes "nosuch" not found'))
        code, _, err = self.kubectl("wait", "--for=condition=Ready", "node/nosuch", "--timeout=1s")
        self.assertEqual(code, 1)

    def test_anonymous_gets_cluster_info_but_not_nodes(self):
        from k8s_standin.common import ApiError, Client

        anon = Client(f"https://127.0.0.1:{self.port}", verify=False)
        self.assertIn("kubeconfig", anon.get("/api/v1/namespaces/kube-public/configmaps/cluster-info")["data"])
        with self.assertRaises(ApiError) as e:
            anon.get("/api/v1/nodes")
        self.assertEqual(e.exception.status, 403)
        bad = Client(f"https://127.0.0.1:{self.port}", verify=False, token="abcdef.0000000000000000")
        with self.assertRaises(ApiError) as e:
            bad.get("/api/v1/namespaces/kube-system/configmaps/kubeadm-config")
        self.assertEqual(e.exception.status, 401)

    def test_ca_hash_is_sha256_of_the_public_key(self):
        self.assertRegex(ca_cert_hash(self.ca), r"^sha256:[0-9a-f]{64}$")


if __name__ == "__main__":
    unittest.main()
