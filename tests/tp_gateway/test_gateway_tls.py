"""`tp-gateway --tls-cert/--tls-key`: the gateway serves HTTPS itself when given a certificate (a public
gateway without a reverse proxy in front); half a pair is refused before anything starts."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import httpx
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.tp_gateway.sealed_fakes import SealingOverlay
from tp_gateway import cli
from tp_gateway.app import create_app


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    cert, key_file = folder / "cert.pem", folder / "key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert, key_file


async def test_the_gateway_serves_https_with_a_certificate(tmp_path: Path, nursery: trio.Nursery) -> None:
    cert, key = self_signed(tmp_path)
    app = create_app(SealingOverlay())
    base_url = await nursery.start(cli.serve_gateway, app, "127.0.0.1", 0, (cert, key))
    assert base_url.startswith("https://")
    context = ssl.create_default_context(cafile=str(cert))
    async with httpx.AsyncClient(verify=context) as client:
        response = await client.get(f"{base_url}/sealed/directory")
    assert response.status_code == 200
    nursery.cancel_scope.cancel()


def test_half_a_tls_pair_is_refused(tmp_path: Path) -> None:
    args = cli.build_parser().parse_args(["--tls-cert", str(tmp_path / "cert.pem")])
    assert cli.exposure_error(args) == "--tls-cert and --tls-key go together"


@pytest.mark.parametrize("flag", ["--public"])
def test_a_public_gateway_needs_no_api_key(flag: str) -> None:
    args = cli.build_parser().parse_args(["--listen", "0.0.0.0:8000", flag])
    assert cli.exposure_error(args) is None
