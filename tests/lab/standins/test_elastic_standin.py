"""Tests of the Elasticsearch stand-in (tests/lab/standins/elasticsearch/): what the playbooks and
Fluent Bit rely on, the real node's way (the stand-in's docstring names the upstream sources).

The node runs for real here, on a free loopback port, over TLS with the certificates its
--auto-configure made, in a temporary configuration directory.
"""

import base64
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import unittest
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
PROGRAM = os.path.join(HERE, "elasticsearch/usr/share/elasticsearch/bin/elasticsearch")
RECORDED = os.path.join(HERE, "elasticsearch-recorded")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shape_mismatches(recorded, answer, path="$"):
    """Where ANSWER lacks a field of RECORDED, or holds another JSON type there."""
    if isinstance(recorded, dict):
        if not isinstance(answer, dict):
            return [f"{path}: not an object"]
        out = []
        for key, value in recorded.items():
            if key not in answer:
                out.append(f"{path}.{key}: missing")
            else:
                out += shape_mismatches(value, answer[key], f"{path}.{key}")
        return out
    if isinstance(recorded, list):
        if not isinstance(answer, list) or len(answer) < len(recorded):
            return [f"{path}: not a list of at least {len(recorded)}"]
        return [m for i, r in enumerate(recorded) for m in shape_mismatches(r, answer[i], f"{path}[{i}]")]
    if isinstance(recorded, bool) != isinstance(answer, bool) or type(recorded) is not type(answer) and not (
            isinstance(recorded, (int, float)) and isinstance(answer, (int, float))):
        return [f"{path}: {type(answer).__name__}, recorded {type(recorded).__name__}"]
    return []


class Node:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="es-standin-test-")
        self.conf = os.path.join(self.dir, "conf")
        os.makedirs(self.conf)
        self.port = free_port()
        self.env = dict(os.environ, ES_PATH_CONF=self.conf, ES_STANDIN_STATE=os.path.join(self.dir, "state.json"),
                        ES_STANDIN_GROUP="root" if os.geteuid() == 0 else "", ES_STANDIN_TEST="1",
                        RUNTIME_DIRECTORY=self.dir)
        with open(os.path.join(self.conf, "elasticsearch.yml"), "w") as f:
            f.write("")
        out = self.tool("elasticsearch", "--auto-configure").stdout
        self.elastic = re.search(r"elastic built-in superuser is : (\S+)", out).group(1)
        # bootstrap's elasticsearch.yml, in its TLS form (files/elk/elasticsearch.yml.j2).
        with open(os.path.join(self.conf, "elasticsearch.yml"), "w") as f:
            f.write(f"""cluster.name: lab
node.name: elk
network.host: ["127.0.0.1"]
http.port: {self.port}
discovery.type: single-node
xpack.security.enabled: true
xpack.security.enrollment.enabled: false
xpack.security.http.ssl:
  enabled: true
  keystore.path: certs/http.p12
xpack.security.transport.ssl:
  enabled: true
  verification_mode: certificate
  keystore.path: certs/transport.p12
  truststore.path: certs/transport.p12
""")
        self.proc = subprocess.Popen([sys.executable, PROGRAM], env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        # It prints this line once every listener is bound.
        line = self.proc.stdout.readline()
        if "started" not in line:
            self.proc.kill()
            raise AssertionError(f"the stand-in did not start: {line} {self.proc.stderr.read()}")
        self.ca = os.path.join(self.conf, "certs", "http_ca.crt")

    def tool(self, name, *args, stdin=""):
        # The program picks its role by the name it is run under.
        link = os.path.join(self.dir, name)
        if not os.path.exists(link):
            os.symlink(PROGRAM, link)
        return subprocess.run([sys.executable, link, *args], env=self.env, input=stdin, capture_output=True,
                              text=True)

    def call(self, method, path, user=None, password=None, body=None, ndjson=None):
        data, headers = None, {}
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        if ndjson is not None:
            data = "".join(json.dumps(x) + "\n" for x in ndjson).encode()
            headers["Content-Type"] = "application/x-ndjson"
        if user:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        req = urllib.request.Request(f"https://127.0.0.1:{self.port}{path}", data=data, method=method,
                                     headers=headers)
        ctx = ssl.create_default_context(cafile=self.ca)
        try:
            with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def su(self, method, path, body=None, ndjson=None):
        return self.call(method, path, "elastic", self.elastic, body, ndjson)

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()
        shutil.rmtree(self.dir, ignore_errors=True)


TEMPLATE = {"index_patterns": ["k8s-containers"], "data_stream": {}, "priority": 500,
            "template": {"settings": {"index.number_of_replicas": 0,
                                      "index.mapping.total_fields.ignore_dynamic_beyond_limit": True},
                         "mappings": {"properties": {"@timestamp": {"type": "date"},
                                                     "log_processed": {"type": "flattened"}}},
                         "lifecycle": {"data_retention": "30d"}}}


@unittest.skipUnless(shutil.which("openssl") and shutil.which("ip"), "needs openssl and iproute2")
class ElasticStandinTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = Node()

    @classmethod
    def tearDownClass(cls):
        cls.node.stop()

    def recorded(self, name):
        with open(os.path.join(RECORDED, name)) as f:
            return json.load(f)

    def setup_stream(self):
        self.assertEqual(self.node.su("PUT", "/_index_template/k8s-containers", TEMPLATE)[0], 200)
        status, _ = self.node.su("GET", "/_data_stream/k8s-containers")
        if status == 404:
            self.assertEqual(self.node.su("PUT", "/_data_stream/k8s-containers")[0], 200)
        self.node.su("PUT", "/_security/role/writer",
                     {"cluster": [], "indices": [{"names": ["k8s-containers"], "privileges": ["create_doc"]}]})
        self.node.su("PUT", "/_security/user/shipper", {"password": "shipper-pw", "roles": ["writer"]})

    def test_tls_verified_by_the_generated_ca_with_the_loopback_address_in_the_certificate(self):
        # Verified: the CA file, and the address (not a name) checked against the certificate.
        status, body = self.node.su("GET", "/")
        self.assertEqual(status, 200)
        self.assertEqual(body["version"]["number"], "9.5.3")
        # Another CA is refused; plain HTTP on the TLS port gets no HTTP answer.
        with self.assertRaises(urllib.error.URLError):
            urllib.request.urlopen(f"https://127.0.0.1:{self.node.port}/", timeout=5,
                                   context=ssl.create_default_context())
        with self.assertRaises((urllib.error.URLError, ConnectionError, http_client_errors())):
            urllib.request.urlopen(f"http://127.0.0.1:{self.node.port}/", timeout=5)

    def test_reset_password_reads_what_the_playbook_pipes_and_asks_first_without_batch(self):
        url = f"https://127.0.0.1:{self.node.port}"
        # The playbook's form: -i -b, the password twice on stdin.
        r = self.node.tool("elasticsearch-reset-password", "-u", "elastic", "-i", "-b", "-s", "--url", url,
                           stdin="new-elastic-pw\nnew-elastic-pw\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.node.call("GET", "/_security/_authenticate", "elastic", "new-elastic-pw")[0], 200)
        self.node.elastic = "new-elastic-pw"
        # Without -b the confirmation comes first: a password there is a "no", nothing changes.
        r = self.node.tool("elasticsearch-reset-password", "-u", "elastic", "-i", "--url", url,
                           stdin="other-pw-1\nother-pw-1\n")
        self.assertEqual(r.returncode, 0)
        self.assertIn("User cancelled operation", r.stdout)
        self.assertEqual(self.node.call("GET", "/_security/_authenticate", "elastic", "new-elastic-pw")[0], 200)
        # Too few lines: the real tool's message, non-zero.
        r = self.node.tool("elasticsearch-reset-password", "-u", "elastic", "-i", "-b", "--url", url,
                           stdin="only-once\n")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("unable to read from standard input", r.stderr)

    def test_the_answers_have_the_recorded_shapes(self):
        self.setup_stream()
        status, answer = self.node.call("POST", "/_bulk", "shipper", "shipper-pw", ndjson=[
            {"create": {"_index": "k8s-containers"}}, {"@timestamp": "2026-12-03T10:00:00Z", "n": 1},
            {"create": {"_index": "k8s-containers"}}, {"@timestamp": "2026-12-03T10:00:01Z", "n": "not a number"},
        ])
        self.assertEqual(status, 200)
        self.assertEqual(shape_mismatches(self.recorded("bulk-partial-failure.json"), answer), [])
        for name, path in [("data-stream-get.json", "/_data_stream/k8s-containers"),
                           ("data-stream-lifecycle-get.json", "/_data_stream/k8s-containers/_lifecycle"),
                           ("index-template-get.json", "/_index_template/k8s-containers")]:
            status, answer = self.node.su("GET", path)
            self.assertEqual(status, 200, path)
            mismatches = shape_mismatches(self.recorded(name), answer)
            if name == "index-template-get.json":
                # The recorded template carries a _meta; ours was put without one here.
                mismatches = [m for m in mismatches if "_meta" not in m]
            self.assertEqual(mismatches, [], name)

    def test_a_partly_failed_bulk_writes_the_good_documents_and_says_which_failed(self):
        self.setup_stream()
        before = self.node.su("GET", "/k8s-containers/_count")[1]["count"]
        status, answer = self.node.call("POST", "/_bulk", "shipper", "shipper-pw", ndjson=[
            {"create": {"_index": "k8s-containers"}}, {"@timestamp": "2026-12-03T10:00:00Z", "code": 7},
            {"create": {"_index": "k8s-containers"}}, {"@timestamp": "2026-12-03T10:00:01Z", "code": {"x": 1}},
            {"create": {"_index": "k8s-containers"}}, {"no_timestamp": True},
            {"index": {"_index": "k8s-containers"}}, {"@timestamp": "2026-12-03T10:00:02Z"},
            # The app's own JSON under log_processed (flattened): any shape, any types.
            {"create": {"_index": "k8s-containers"}}, {"@timestamp": "2026-12-03T10:00:03Z",
                                                       "log_processed": {"code": "text", "deep": {"a": [1]}}},
            {"create": {"_index": "k8s-containers"}}, {"@timestamp": "2026-12-03T10:00:04Z",
                                                       "log_processed": {"code": 5}},
        ])
        self.assertEqual(status, 200)
        self.assertTrue(answer["errors"])
        statuses = [item["create" if "create" in item else "index"]["status"] for item in answer["items"]]
        self.assertEqual(statuses, [201, 400, 400, 400, 201, 201])
        errors = [item.get("create", item.get("index")).get("error", {}).get("type") for item in answer["items"]]
        self.assertEqual(errors[1:4], ["document_parsing_exception", "document_parsing_exception",
                                       "illegal_argument_exception"])
        self.assertEqual(self.node.su("GET", "/k8s-containers/_count")[1]["count"], before + 3)

    def test_a_term_query_finds_a_document_by_a_key_inside_the_flattened_field(self):
        self.setup_stream()
        for probe in ("one", "two", "two"):
            self.assertEqual(self.node.call("POST", "/k8s-containers/_doc", "shipper", "shipper-pw", {
                "@timestamp": "2026-12-03T10:00:00Z", "log_processed": {"path": f"/?probe={probe}"},
                "kubernetes": {"pod_name": "p"}})[0], 201)
        status, answer = self.node.su("POST", "/k8s-containers/_search",
                                      {"query": {"term": {"log_processed.path": "/?probe=two"}}, "size": 1})
        self.assertEqual(status, 200)
        self.assertEqual(answer["hits"]["total"], {"value": 2, "relation": "eq"})
        self.assertEqual(len(answer["hits"]["hits"]), 1)
        self.assertEqual(answer["hits"]["hits"][0]["_source"]["log_processed"]["path"], "/?probe=two")
        self.assertTrue(answer["hits"]["hits"][0]["_index"].startswith(".ds-k8s-containers-"))
        status, answer = self.node.su("POST", "/k8s-containers/_search", {"query": {"term": {"log_processed.path": "/?probe=three"}}})
        self.assertEqual((status, answer["hits"]["total"]["value"], answer["hits"]["hits"]), (200, 0, []))
        # The shipper's role has no read: its credential cannot search what it wrote.
        self.assertEqual(self.node.call("POST", "/k8s-containers/_search", "shipper", "shipper-pw", {})[0], 403)
        self.assertEqual(self.node.su("POST", "/k8s-containers/_search", {"query": {"match": {"x": "y"}}})[0], 400)

    def test_the_shipper_writes_only_into_its_stream_and_creates_nothing(self):
        self.setup_stream()
        doc = {"@timestamp": "2026-12-03T10:00:00Z"}
        self.assertEqual(self.node.call("POST", "/k8s-containers/_doc", "shipper", "shipper-pw", doc)[0], 201)
        self.assertEqual(self.node.call("POST", "/other/_doc", "shipper", "shipper-pw", doc)[0], 403)
        self.assertEqual(self.node.call("PUT", "/_data_stream/another", "shipper", "shipper-pw")[0], 403)

    def test_fields_beyond_the_limit_are_left_unmapped_when_the_template_says_so(self):
        self.assertEqual(self.node.su("PUT", "/_index_template/small", {
            "index_patterns": ["small-*"], "data_stream": {},
            "template": {"settings": {"index.mapping.total_fields.limit": 2,
                                      "index.mapping.total_fields.ignore_dynamic_beyond_limit": True}}})[0], 200)
        self.assertEqual(self.node.su("PUT", "/_data_stream/small-a")[0], 200)
        status, answer = self.node.su("POST", "/_bulk", ndjson=[
            {"create": {"_index": "small-a"}}, {"@timestamp": "t", "a": 1, "b": 2, "c": 3}])
        self.assertFalse(answer["errors"], answer)
        self.assertEqual(self.node.su("PUT", "/_index_template/strict", {
            "index_patterns": ["strict-*"], "data_stream": {},
            "template": {"settings": {"index.mapping.total_fields.limit": 2}}})[0], 200)
        self.assertEqual(self.node.su("PUT", "/_data_stream/strict-a")[0], 200)
        status, answer = self.node.su("POST", "/_bulk", ndjson=[
            {"create": {"_index": "strict-a"}}, {"@timestamp": "t", "a": 1, "b": 2, "c": 3}])
        self.assertTrue(answer["errors"], answer)

    def test_a_data_stream_needs_its_template_and_not_an_index_of_that_name(self):
        self.assertEqual(self.node.su("PUT", "/_data_stream/no-template")[0], 400)
        self.assertEqual(self.node.su("PUT", "/_index_template/taken", {"index_patterns": ["taken"], "data_stream": {}})[0],
                         200)
        # A regular index of the name (written before the template existed).
        self.assertEqual(self.node.su("POST", "/plain/_doc", {"a": 1})[0], 201)
        self.assertEqual(self.node.su("PUT", "/_index_template/plain", {"index_patterns": ["plain"], "data_stream": {}})[0],
                         200)
        status, answer = self.node.su("PUT", "/_data_stream/plain")
        self.assertEqual(status, 400)
        self.assertEqual(answer["error"]["type"], "resource_already_exists_exception")

    def test_kibanas_certificate_comes_out_of_http_p12_with_the_keystore_password(self):
        # The pipeline of the playbook's step "Kibana's HTTPS certificate and key": the keystore
        # tool's `show` into openssl, which must open the install's http.p12 with it.
        self.node.tool("elasticsearch-keystore", "list")  # makes the tool's link
        keystore = os.path.join(self.node.dir, "elasticsearch-keystore")
        out = subprocess.run(
            f"{sys.executable} {keystore} show xpack.security.http.ssl.keystore.secure_password | "
            f"openssl pkcs12 -in {self.node.conf}/certs/http.p12 -nokeys -clcerts -passin stdin | "
            "openssl x509 -noout -ext subjectAltName",
            shell=True, env=self.node.env, capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("IP Address:127.0.0.1", out.stdout)
        self.assertIn("DNS:localhost", out.stdout)
        missing = self.node.tool("elasticsearch-keystore", "show", "no.such.setting")
        self.assertNotEqual(missing.returncode, 0)

    def test_lifecycle_retention_is_set_and_read(self):
        self.setup_stream()
        self.assertEqual(self.node.su("PUT", "/_data_stream/k8s-containers/_lifecycle", {"data_retention": "7d"})[0], 200)
        lifecycle = self.node.su("GET", "/_data_stream/k8s-containers/_lifecycle")[1]["data_streams"][0]["lifecycle"]
        self.assertEqual(lifecycle["data_retention"], "7d")
        self.node.su("PUT", "/_data_stream/k8s-containers/_lifecycle", {"data_retention": "30d"})


def http_client_errors():
    import http.client
    return http.client.HTTPException


if __name__ == "__main__":
    unittest.main()
