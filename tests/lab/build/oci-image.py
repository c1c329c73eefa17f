#!/usr/bin/env python3
"""The lab's OCI images, without a container engine (none runs here).

  oci-image.py build OUT_DIR --layer TAR [--layer TAR ...] [--entrypoint JSON] [--cmd JSON]
                     [--env K=V ...] [--workdir DIR]
      writes an OCI image layout (index.json, oci-layout, blobs/sha256/...) with uncompressed
      tar layers, in OUT_DIR.tmp renamed to OUT_DIR at the end (a killed build leaves no half
      image under the final name).
  oci-image.py push LAYOUT_DIR REGISTRY NAME TAG [--mount-from REPO ...]
      pushes it over plain HTTP to a registry (the Docker Registry HTTP API V2: blobs the
      repository has are skipped, blobs REPO has are mounted, then the manifest under TAG).

Layers stay uncompressed: the registry is local, and gzip of the control-plane binaries would
cost more time than the bytes it saves. Written for the lab (tests/lab/build/README.md).
"""

import argparse
import hashlib
import http.client
import json
import os
import shutil
import sys
import urllib.parse

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def put_blob(blobs, data=None, path=None):
    """Stores bytes or a file under blobs/sha256/<digest>; returns (digest, size)."""
    if path is not None:
        digest = sha256_file(path)
        dest = os.path.join(blobs, digest)
        if not os.path.exists(dest):
            try:
                os.link(path, dest)
            except OSError:
                shutil.copyfile(path, dest)
        return "sha256:" + digest, os.path.getsize(dest)
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest, len(data)


def build(args):
    out = args.out.rstrip("/")
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    blobs = os.path.join(tmp, "blobs", "sha256")
    os.makedirs(blobs)
    layers = []
    for tar in args.layer:
        digest, size = put_blob(blobs, path=tar)
        layers.append({"mediaType": OCI_LAYER, "digest": digest, "size": size})
    env = args.env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    config = {"Env": env, "WorkingDir": args.workdir}
    if args.entrypoint:
        config["Entrypoint"] = json.loads(args.entrypoint)
    if args.cmd:
        config["Cmd"] = json.loads(args.cmd)
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": config,
        # Uncompressed layers: the diff id is the layer's own digest.
        "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]},
        "history": [{"created_by": "tests/lab/build/oci-image.py"} for _ in layers],
    }
    cdigest, csize = put_blob(blobs, data=json.dumps(image_config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cdigest, "size": csize},
        "layers": layers,
    }
    mdigest, msize = put_blob(blobs, data=json.dumps(manifest, sort_keys=True).encode())
    with open(os.path.join(tmp, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": mdigest, "size": msize}]}, f)
    with open(os.path.join(tmp, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    print(mdigest)


class Registry:
    def __init__(self, address):
        self.address = address

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection(self.address, timeout=600)
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, resp.headers, data

    def has_blob(self, name, digest):
        status, _, _ = self.request("HEAD", f"/v2/{name}/blobs/{digest}")
        return status == 200

    def mount(self, name, digest, source):
        """Links a blob that repository SOURCE already has into NAME (no bytes sent)."""
        status, _, _ = self.request(
            "POST", f"/v2/{name}/blobs/uploads/?mount={digest}&from={source}")
        return status == 201

    def upload(self, name, digest, path, size):
        status, headers, data = self.request("POST", f"/v2/{name}/blobs/uploads/")
        if status != 202:
            raise SystemExit(f"upload of {digest} to {name} refused: {status} {data[:200]!r}")
        location = urllib.parse.urlsplit(headers["Location"])
        query = location.query + ("&" if location.query else "") + "digest=" + digest
        with open(path, "rb") as f:
            status, _, data = self.request(
                "PUT", f"{location.path}?{query}", body=f,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
        if status != 201:
            raise SystemExit(f"upload of {digest} to {name} failed: {status} {data[:200]!r}")


def push(args):
    reg = Registry(args.registry)
    blobs = os.path.join(args.layout, "blobs", "sha256")
    with open(os.path.join(args.layout, "index.json")) as f:
        mdesc = json.load(f)["manifests"][0]
    mpath = os.path.join(blobs, mdesc["digest"].split(":", 1)[1])
    with open(mpath, "rb") as f:
        manifest_bytes = f.read()
    manifest = json.loads(manifest_bytes)
    sent = 0
    for desc in [manifest["config"]] + manifest["layers"]:
        if reg.has_blob(args.name, desc["digest"]):
            continue
        if any(reg.mount(args.name, desc["digest"], src) for src in args.mount_from or []):
            continue
        path = os.path.join(blobs, desc["digest"].split(":", 1)[1])
        reg.upload(args.name, desc["digest"], path, desc["size"])
        sent += desc["size"]
    status, _, data = reg.request(
        "PUT", f"/v2/{args.name}/manifests/{args.tag}", body=manifest_bytes,
        headers={"Content-Type": manifest["mediaType"]})
    if status != 201:
        raise SystemExit(f"manifest {args.name}:{args.tag} refused: {status} {data[:300]!r}")
    print(f"pushed {args.name}:{args.tag} ({sent // (1 << 20)} MiB sent)")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("out")
    b.add_argument("--layer", action="append", required=True)
    b.add_argument("--entrypoint")
    b.add_argument("--cmd")
    b.add_argument("--env", action="append")
    b.add_argument("--workdir", default="/")
    b.set_defaults(run=build)
    u = sub.add_parser("push")
    u.add_argument("layout")
    u.add_argument("registry")
    u.add_argument("name")
    u.add_argument("tag")
    u.add_argument("--mount-from", action="append",
                   help="a repository of the same registry that may hold some of the blobs")
    u.set_defaults(run=push)
    args = p.parse_args()
    args.run(args)


if __name__ == "__main__":
    sys.exit(main())
