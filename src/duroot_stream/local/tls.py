"""TLS and SCRAM material for the local broker's SASL_SSL listener, made on the spot.

Under the broker's data directory: `tls/ca.pem` (a certificate authority of its own),
`tls/broker.pem` (key and certificate for 127.0.0.1, signed by it) and one librdkafka
properties file per SCRAM user in `clients/` (mode 0600), to give as `-F FILE`. A
restart on the same data directory reuses all of it.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from duroot_stream.config import read_properties

ADMIN = "admin"  # the broker's own principal and the super user
MECHANISM = "SCRAM-SHA-512"
CERT_DAYS = "30"
# The format tool parses `[name=...,password=...]`: keep to characters it cannot misread.
_SAFE = re.compile(r"[A-Za-z0-9._-]+")


class TlsError(RuntimeError):
    """openssl is missing or failed; the message says which step."""


def _openssl(*args: str) -> None:
    tool = shutil.which("openssl")
    if tool is None:
        raise TlsError("openssl not found: the SASL_SSL broker needs it (apt-get install openssl)")
    result = subprocess.run([tool, *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise TlsError(f"openssl {args[0]} failed: {result.stderr[-1000:]}")


def make_ca(directory: Path, name: str = "duroot-stream local CA") -> Path:
    """A self-signed certificate authority: `ca.pem` (returned) and `ca.key` in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    key, cert = directory / "ca.key", directory / "ca.pem"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", CERT_DAYS,
        "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    key.chmod(0o600)
    return cert


def _broker_cert(tls: Path) -> None:
    """`broker.pem`: a PKCS#8 key and its certificate for 127.0.0.1/localhost, as the
    broker's PEM keystore (no password: the file itself is 0600)."""
    key, csr, cert = tls / "broker.key", tls / "broker.csr", tls / "broker.crt"
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=localhost",
    )  # fmt: skip
    with tempfile.NamedTemporaryFile("w", suffix=".ext", dir=tls) as ext:
        ext.write(
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
        )
        ext.flush()
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(tls / "ca.pem"),
            "-CAkey", str(tls / "ca.key"), "-CAcreateserial", "-days", CERT_DAYS,
            "-out", str(cert), "-extfile", ext.name,
        )  # fmt: skip
    pem = tls / "broker.pem"
    pem.touch(mode=0o600)
    pem.write_text(key.read_text() + cert.read_text())
    for tmp in (key, csr, cert):
        tmp.unlink()


def _write_client_file(path: Path, bootstrap: str, user: str, password: str, ca: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(
            f"# librdkafka settings of SCRAM user {user!r} on the local broker\n"
            f"bootstrap.servers={bootstrap}\n"
            "security.protocol=SASL_SSL\n"
            f"sasl.mechanisms={MECHANISM}\n"
            f"sasl.username={user}\n"
            f"sasl.password={password}\n"
            f"ssl.ca.location={ca}\n"
        )


def read_client_file(path: Path) -> dict[str, str]:
    return read_properties(path)


def ensure_material(data_dir: Path, bootstrap: str, users: Mapping[str, str]) -> dict[str, str]:
    """Make what is missing; returns every user (admin first) with its password."""
    tls = data_dir / "tls"
    if not (tls / "broker.pem").exists():
        make_ca(tls)
        _broker_cert(tls)
    wanted = {ADMIN: "", **users}
    known: dict[str, str] = {}
    for user, password in wanted.items():
        if not _SAFE.fullmatch(user) or (password and not _SAFE.fullmatch(password)):
            raise TlsError(f"SCRAM user {user!r}: names and passwords take [A-Za-z0-9._-] only")
        path = data_dir / "clients" / f"{user}.properties"
        if path.exists() and not password:
            password = read_properties(path)["sasl.password"]
        password = password or secrets.token_urlsafe(18)
        _write_client_file(path, bootstrap, user, password, tls / "ca.pem")
        known[user] = password
    return known


def scram_args(user: str, password: str) -> list[str]:
    """The format tool's arguments that create `user` (`kafka-storage format --add-scram`)."""
    return ["--add-scram", f"{MECHANISM}=[name={user},password={password}]"]


def server_settings(
    data_dir: Path, port: int, controller_port: int, users: Mapping[str, str]
) -> dict[str, str]:
    """The broker's listeners, TLS, SASL and authorizer settings for SASL_SSL."""
    tls = data_dir / "tls"
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{ADMIN}" password="{users[ADMIN]}";'
    )
    return {
        "listeners": f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"SASL_SSL://127.0.0.1:{port}",
        "inter.broker.listener.name": "SASL_SSL",
        # The controller listener takes only the broker's own certificate (mutual TLS).
        "listener.security.protocol.map": "CONTROLLER:SSL,SASL_SSL:SASL_SSL",
        "listener.name.controller.ssl.client.auth": "required",
        "sasl.enabled.mechanisms": MECHANISM,
        "sasl.mechanism.inter.broker.protocol": MECHANISM,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(tls / "broker.pem"),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(tls / "ca.pem"),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{ADMIN};User:CN=localhost",
        "allow.everyone.if.no.acl.found": "false",
    }
