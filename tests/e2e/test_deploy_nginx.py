"""The documented deployment, run: Debian's nginx with ``docs/deploy/nginx.conf`` (its example
values substituted) in front of a real ``liudong serve``, on loopback, over TLS with a
throwaway certificate. Through it: a login and a command over HTTP/2, a WebSocket that
receives live, drops and resumes; the client's address as the app sees it (from nginx only);
HTTP redirected to HTTPS.

nginx runs as its own process with its own prefix, pid, logs and temp folders under the
test's tmp folder; it is skipped (with a message saying so) only when no ``nginx`` is
installed (``.ci/run`` installs Debian's).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from websockets.asyncio.client import connect

from api.bootstrap.settings import Settings

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
NGINX_CONF = REPO / "docs" / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port} after {timeout} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# -- a throwaway certificate authority and server certificate -----------------------------


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server chain, server key) for ``localhost`` / 127.0.0.1."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "liudong test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_path, chain_path, key_path = folder / "ca.pem", folder / "fullchain.pem", folder / "key.pem"
    ca_path.write_bytes(ca.public_bytes(pem))
    chain_path.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    key_path.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return ca_path, chain_path, key_path


# -- the deployment -----------------------------------------------------------------------


@dataclass
class Deployment:
    https: str
    http: str
    app_port: int
    tls_port: int
    ca: Path
    app_log: Path

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(
            base_url=self.https,
            verify=self.tls(),
            http2=True,
            timeout=30,
            headers=headers,
            **kwargs,
        )


def site_config(app_port: int, tls_port: int, http_port: int, chain: Path, key: Path) -> str:
    """docs/deploy/nginx.conf with its example values replaced (each must be there)."""
    text = NGINX_CONF.read_text()
    substitutions = {
        "server_name liudong.example.com;": "server_name localhost;",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{tls_port} ssl http2;",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "/etc/ssl/liudong/fullchain.pem": str(chain),
        "/etc/ssl/liudong/privkey.pem": str(key),
        "server 127.0.0.1:8000;": f"server 127.0.0.1:{app_port};",
    }
    for example, value in substitutions.items():
        assert example in text, f"docs/deploy/nginx.conf no longer has {example!r}"
        text = text.replace(example, value)
    return text


def main_config(prefix: Path, site: Path) -> str:
    temp = prefix / "temp"
    for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (temp / name).mkdir(parents=True, exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read the tmp files
    return (
        f"{user}worker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log info;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"  access_log {prefix}/access.log;\n"
        f"  client_body_temp_path {temp}/body;\n  proxy_temp_path {temp}/proxy;\n"
        f"  fastcgi_temp_path {temp}/fastcgi;\n  uwsgi_temp_path {temp}/uwsgi;\n"
        f"  scgi_temp_path {temp}/scgi;\n"
        f"  include {site};\n"
        "}\n"
    )


@pytest.fixture(scope="module")
def deployment(
    database_url: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    if NGINX is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx; .ci/run does it)")
    root = tmp_path_factory.mktemp("deploy")
    app_port, tls_port, http_port = free_port(), free_port(), free_port()
    app_log = root / "liudong-serve.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "NATS_URL": nats_url,
        "LIUDONG_ENV": "test",
        "LIUDONG_HOST": "127.0.0.1",
        "LIUDONG_PORT": str(app_port),
        "LIUDONG_FORWARDED_ALLOW_IPS": "127.0.0.1",
        "LIUDONG_DATA_DIR": str(root / "data"),
        "LIUDONG_DB_POOL_SIZE": "3",
    }
    with app_log.open("wb") as out:
        app = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--workers", "1", "--access-log"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    nginx: subprocess.Popen[bytes] | None = None
    try:
        wait_for_port(app_port, app, app_log)
        ca, chain, key = make_certificates(root)
        prefix = root / "nginx"
        prefix.mkdir()
        site = prefix / "liudong.conf"
        site.write_text(site_config(app_port, tls_port, http_port, chain, key))
        conf = prefix / "nginx.conf"
        conf.write_text(main_config(prefix, site))
        command = [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
        checked = subprocess.run([*command, "-t"], capture_output=True, text=True, check=False)
        assert checked.returncode == 0, checked.stderr
        nginx_log = prefix / "nginx.out"
        with nginx_log.open("wb") as out:
            nginx = subprocess.Popen(
                [*command, "-g", "daemon off;"], stdout=out, stderr=subprocess.STDOUT
            )
        wait_for_port(tls_port, nginx, prefix / "error.log")
        yield Deployment(
            https=f"https://localhost:{tls_port}",
            http=f"http://localhost:{http_port}",
            app_port=app_port,
            tls_port=tls_port,
            ca=ca,
            app_log=app_log,
        )
    finally:
        if nginx is not None:
            stop(nginx, signal.SIGQUIT)  # graceful: lets the sockets drain
        stop(app)


def login(deployment: Deployment, name: str) -> tuple[str, dict[str, Any]]:
    with deployment.client() as http:
        response = http.post("/v1/auth/login", json={"code": f"dev:{name}"})
    assert response.status_code == 200, response.text
    assert response.http_version == "HTTP/2"
    return response.json()["token"], response.json()["reader"]


# -- the tests ------------------------------------------------------------------------------


def test_login_and_a_command_over_http2(deployment: Deployment) -> None:
    token, reader = login(deployment, f"tls{os.getpid()}")
    with deployment.client(token) as http:
        changed = http.patch("/v1/me", json={"nickname": "隔着代理"})
        assert changed.status_code == 200, changed.text
        assert changed.http_version == "HTTP/2"
        assert changed.json()["nickname"] == "隔着代理"
        assert http.get("/v1/me").json()["id"] == reader["id"]
        refused = http.patch("/v1/me", json={"nickname": "傻逼"})  # the content check too
        assert refused.status_code == 422 and refused.json()["code"] == "content_rejected"
        assert http.get("/metrics").status_code == 404  # not on the public port
    with httpx.Client(timeout=10) as plain:
        redirect = plain.get(f"{deployment.http}/v1/me?x=1")
    assert redirect.status_code == 301
    assert redirect.headers["location"] == "https://localhost/v1/me?x=1"


async def test_a_websocket_receives_drops_and_resumes_through_nginx(
    deployment: Deployment,
) -> None:
    a_token, _a = login(deployment, f"wsa{os.getpid()}")
    b_token, b = login(deployment, f"wsb{os.getpid()}")
    with deployment.client(a_token) as http:
        conversation = http.post("/v1/conversations", json={"peer_id": b["id"]}).json()["id"]

        def send(text: str, key: str) -> None:
            response = http.post(
                f"/v1/conversations/{conversation}/messages",
                json={"text": text, "client_msg_id": key},
            )
            assert response.status_code in (201, 202), response.text

        url = f"wss://localhost:{deployment.tls_port}/v1/ws"
        options: dict[str, Any] = {
            "additional_headers": {"Authorization": f"Bearer {b_token}"},
            "ssl": deployment.tls(),
            "compression": None,
            "ping_interval": None,
            "open_timeout": 10,
        }
        async with connect(url, **options) as ws:
            hello = json.loads(await ws.recv())
            assert hello["type"] == "hello"
            send("第一条", "k1")
            first = await _next_event(ws)
            assert first["data"]["text"] == "第一条"
        send("离线时的第二条", "k2")  # b is offline
        async with connect(f"{url}?after={first['seq']}", **options) as ws:
            assert json.loads(await ws.recv())["type"] == "hello"
            second = await _next_event(ws)
            assert second["seq"] > first["seq"]
            assert second["data"]["text"] == "离线时的第二条"


async def _next_event(ws: Any, timeout: float = 20.0) -> dict[str, Any]:
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
        if frame.get("type") == "ping":
            await ws.send(json.dumps({"type": "pong"}))
        elif frame.get("type") == "event" and frame.get("kind") == "chat.message":
            return frame  # type: ignore[no-any-return]


def _seen_client(deployment: Deployment, marker: str) -> str:
    """The client address of the access-log line of the request to ``marker``."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in deployment.app_log.read_text(errors="replace").splitlines():
            if marker in line:
                found = re.search(r"(\d+\.\d+\.\d+\.\d+):\d* - \"GET", line)
                assert found, line
                return found.group(1)
        time.sleep(0.1)
    raise AssertionError(f"no access-log line for {marker}")


def test_the_app_sees_the_clients_address_and_believes_only_nginx(
    deployment: Deployment,
) -> None:
    spoofed = {"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9"}
    through_nginx = httpx.HTTPTransport(local_address="127.0.0.3", verify=deployment.tls())
    with httpx.Client(transport=through_nginx, base_url=deployment.https, timeout=10) as http:
        assert http.get("/v1/books?q=via-nginx", headers=spoofed).status_code == 200
    assert _seen_client(deployment, "/v1/books?q=via-nginx") == "127.0.0.3"
    direct = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(transport=direct, timeout=10) as http:
        url = f"http://127.0.0.1:{deployment.app_port}/v1/books?q=via-direct"
        assert http.get(url, headers=spoofed).status_code == 200
    assert _seen_client(deployment, "/v1/books?q=via-direct") == "127.0.0.2"  # not believed


def test_socket_timeouts_outlast_the_heartbeat() -> None:
    text = NGINX_CONF.read_text()
    ws_block = text[text.index("location = /v1/ws") :]
    ws_block = ws_block[: ws_block.index("}")]
    heartbeat = Settings().ws_heartbeat
    for directive in ("proxy_read_timeout", "proxy_send_timeout"):
        found = re.search(rf"{directive} (\d+)s;", ws_block)
        assert found and int(found.group(1)) >= 2 * heartbeat, directive
    assert "proxy_set_header Upgrade $http_upgrade;" in ws_block
