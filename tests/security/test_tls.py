"""TLS 1.2+ for ``notify serve`` (a real server process with a self-signed certificate: a TLS 1.1 client is
refused, TLS 1.2 and 1.3 clients are served) and the Kafka TLS/SASL settings -> librdkafka config mapping."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from notify_core.errors import ConfigurationError
from notify_core.security.tls import kafka_security_config
from notify_core.settings import load_settings
from tests.servers import free_port, stop_process


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return cert_path, key_path


def _client(cafile: Path, version: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile)
    if version < ssl.TLSVersion.TLSv1_2:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client really offer the old protocol
    context.minimum_version = version
    context.maximum_version = version
    return context


def _get_healthz(port: int, context: ssl.SSLContext) -> tuple[str, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
        return str(tls.version()), data


def test_serve_with_tls_refuses_tls_1_1_and_serves_1_2_and_1_3(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "notify_cli.main", "serve", "--data-dir", str(tmp_path / "data"), "--port", str(port),
         "--tls-cert", str(cert), "--tls-key", str(key)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        tls12 = _client(cert, ssl.TLSVersion.TLSv1_2)
        deadline = time.monotonic() + 60
        while True:
            try:
                version, reply = _get_healthz(port, tls12)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    err = process.stderr.read().decode() if process.stderr and process.poll() is not None else ""
                    pytest.fail(f"notify serve --tls-cert did not come up: {err[-2000:]}")
                time.sleep(0.3)
        assert version == "TLSv1.2" and reply.startswith(b"HTTP/1.1 200")
        version, reply = _get_healthz(port, _client(cert, ssl.TLSVersion.TLSv1_3))
        assert version == "TLSv1.3" and reply.startswith(b"HTTP/1.1 200")
        for old in (ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1):
            with pytest.raises(ssl.SSLError) as refused:
                _get_healthz(port, _client(cert, old))
            # the client did offer the old version (else OpenSSL says NO_PROTOCOLS_AVAILABLE): the server refused
            assert "NO_PROTOCOLS_AVAILABLE" not in str(refused.value)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:  # no plain HTTP on the TLS port
            plain.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert not plain.recv(1024).startswith(b"HTTP/1.1 200")
    finally:
        stop_process(process)


def test_serve_needs_both_tls_files(tmp_path: Path) -> None:
    cert, _key = _self_signed(tmp_path)
    done = subprocess.run([sys.executable, "-m", "notify_cli.main", "serve", "--data-dir", str(tmp_path),
                           "--port", str(free_port()), "--tls-cert", str(cert)], capture_output=True, timeout=60)
    assert done.returncode != 0 and b"--tls-key" in done.stderr + done.stdout


def test_kafka_security_settings_map_to_librdkafka_config(tmp_path: Path) -> None:
    assert kafka_security_config(load_settings(data_dir=tmp_path)) == {}
    sasl = load_settings(data_dir=tmp_path, kafka_security_protocol="SASL_SSL",
                         kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="notify", kafka_sasl_password="pw",
                         kafka_ssl_ca_location=tmp_path / "ca.pem")
    assert kafka_security_config(sasl) == {
        "security.protocol": "sasl_ssl", "ssl.endpoint.identification.algorithm": "https",
        "ssl.ca.location": str(tmp_path / "ca.pem"), "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": "notify",
        "sasl.password": "pw"}
    mtls = load_settings(data_dir=tmp_path, kafka_security_protocol="SSL", kafka_ssl_ca_location=tmp_path / "ca",
                         kafka_ssl_certificate_location=tmp_path / "c", kafka_ssl_key_location=tmp_path / "k")
    assert kafka_security_config(mtls) == {
        "security.protocol": "ssl", "ssl.endpoint.identification.algorithm": "https",
        "ssl.ca.location": str(tmp_path / "ca"), "ssl.certificate.location": str(tmp_path / "c"),
        "ssl.key.location": str(tmp_path / "k")}
    implied = load_settings(data_dir=tmp_path, kafka_sasl_mechanism="PLAIN", kafka_sasl_username="u",
                            kafka_sasl_password="p")
    assert kafka_security_config(implied)["security.protocol"] == "sasl_ssl"  # SASL never silently in plaintext
    with pytest.raises(ConfigurationError, match="PASSWORD"):
        kafka_security_config(load_settings(data_dir=tmp_path, kafka_security_protocol="SASL_SSL",
                                            kafka_sasl_mechanism="PLAIN"))
    assert "pw" not in repr(sasl)  # the password never reaches a log line through the settings' repr


def test_the_kafka_clients_get_the_security_config() -> None:
    """librdkafka accepts the mapped keys (a client is built with them; no broker needed)."""
    from notify_core.stream.kafka import KafkaStream

    stream = KafkaStream(bootstrap_servers="127.0.0.1:1", delivery_timeout=1.0, security_config={
        "security.protocol": "sasl_plaintext", "sasl.mechanisms": "PLAIN", "sasl.username": "u",
        "sasl.password": "p"})
    try:
        consumer = stream.consumer(group="g", topics=["t"])
        consumer.close()
    finally:
        stream.close()
