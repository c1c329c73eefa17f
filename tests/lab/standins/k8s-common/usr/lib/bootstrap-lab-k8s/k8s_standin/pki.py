"""Certificates for the stand-ins, made with Debian's openssl CLI (as kubeadm's certs phase would)."""

import os
import subprocess
import tempfile

from .common import Fail, openssl


def slurp(p):
    with open(p) as f:
        return f.read()


def new_ca(cn="kubernetes"):
    """Returns (cert_pem, key_pem) of a self-signed CA valid 10 years."""
    with tempfile.TemporaryDirectory(prefix="standin-pki-") as d:
        key, crt = os.path.join(d, "ca.key"), os.path.join(d, "ca.crt")
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt, "-days", "3650",
                "-subj", f"/CN={cn}", "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign")
        return slurp(crt), slurp(key)


def new_key_and_csr(subject):
    with tempfile.TemporaryDirectory(prefix="standin-pki-") as d:
        key, csr = os.path.join(d, "x.key"), os.path.join(d, "x.csr")
        openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", subject)
        return slurp(key), slurp(csr)


def sign_csr(csr_pem, ca_pem, ca_key_pem, client=True, sans=(), days=365):
    """Signs a CSR with the CA; client certs get clientAuth, serving ones serverAuth and the SANs."""
    with tempfile.TemporaryDirectory(prefix="standin-pki-") as d:
        os.chmod(d, 0o700)
        files = {}
        for name, data in (("ca.crt", ca_pem), ("ca.key", ca_key_pem), ("x.csr", csr_pem)):
            files[name] = os.path.join(d, name)
            with open(files[name], "w") as f:
                f.write(data)
        ext = os.path.join(d, "ext")
        lines = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
                 "extendedKeyUsage=" + ("clientAuth" if client else "serverAuth")]
        if sans:
            lines.append("subjectAltName=" + ",".join(sans))
        with open(ext, "w") as f:
            f.write("\n".join(lines) + "\n")
        out = os.path.join(d, "x.crt")
        serial = "0x" + os.urandom(8).hex()
        openssl("x509", "-req", "-in", files["x.csr"], "-CA", files["ca.crt"], "-CAkey", files["ca.key"],
                "-set_serial", serial, "-days", str(days), "-extfile", ext, "-out", out)
        return slurp(out)


def new_signed(subject, ca_pem, ca_key_pem, client=True, sans=()):
    key, csr = new_key_and_csr(subject)
    return sign_csr(csr, ca_pem, ca_key_pem, client, sans), key


def csr_subject(csr_pem):
    """The CSR's subject as openssl prints it with RFC 2253 names, e.g. 'CN=system:node:w,O=system:nodes'."""
    r = subprocess.run(["openssl", "req", "-noout", "-subject", "-nameopt", "RFC2253"], input=csr_pem.encode(),
                       capture_output=True)
    if r.returncode != 0:
        raise Fail("invalid certificate signing request")
    return r.stdout.decode().strip().removeprefix("subject=")
