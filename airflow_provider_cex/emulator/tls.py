"""A throwaway CA and a server certificate it issues, so the emulator can serve HTTPS on loopback.

Everything lives in a private folder (mode 0700) that :meth:`TlsFiles.remove` deletes. ``cryptography`` is
imported only here, and this module only when TLS is asked for.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509

DEFAULT_TLS_NAMES: tuple[str, ...] = ("127.0.0.1", "localhost")
"""Names the server certificate is valid for unless told otherwise (SANs: IP 127.0.0.1, DNS localhost)."""

#: Certificates are valid from a little before now (clock skew) for this long: enough for a long demo.
VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True)
class TlsFiles:
    """The PEM files of one emulator run, in ``folder``, and the server's ``ssl.SSLContext``."""

    folder: Path
    ca_path: Path
    cert_path: Path
    key_path: Path

    def server_context(self) -> ssl.SSLContext:
        """A server-side context presenting the certificate (TLS 1.2 or later, no client certificates)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_path, self.key_path)
        return context

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def check_tls_names(names: Sequence[str]) -> tuple[str, ...]:
    """The names as a tuple; raises ValueError for none, or for an empty or blank one."""
    if isinstance(names, str):  # a lone string would become one name per character
        names = (names,)
    result = tuple(str(name).strip() for name in names)
    if not result or not all(result):
        raise ValueError(f"tls_names must hold at least one non-empty host name or IP address, got {names!r}")
    return result


def create_tls_files(names: Sequence[str], parent: Path | None = None) -> TlsFiles:
    """Generate a CA and a server certificate for ``names`` (IP addresses or DNS names) in a new folder.

    Keys are ECDSA P-256: generated in about a millisecond, where RSA-2048 takes tens.
    """
    names = check_tls_names(names)
    folder = Path(tempfile.mkdtemp(prefix="cex-emulator-tls-", dir=str(parent) if parent else None))
    try:
        os.chmod(folder, 0o700)  # mkdtemp already does; say it, the key lives here
        files = TlsFiles(folder, folder / "ca.pem", folder / "server.pem", folder / "server-key.pem")
        ca_pem, cert_pem, key_pem = _generate(names)
        files.ca_path.write_bytes(ca_pem)
        files.cert_path.write_bytes(cert_pem)
        fd = os.open(files.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key_pem)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return files


def _generate(names: tuple[str, ...]) -> tuple[bytes, bytes, bytes]:
    """PEM of the CA certificate, the server certificate and the server's private key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = now - datetime.timedelta(minutes=5), now + VALIDITY
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Content Exporter emulator throwaway CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca_cert.public_bytes(pem), cert.public_bytes(pem), key_pem


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
