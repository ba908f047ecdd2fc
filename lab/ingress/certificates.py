"""TLS certificates the lab makes at run time, with the ``cryptography`` package (no hand-written ASN.1).

A TLS host with no Secret in the manifests gets a certificate for its name, signed by a per-run lab CA, so
a client that trusts the CA can check the chain and the name as it would against a real one; the default
certificate (ingress-nginx's "Kubernetes Ingress Controller Fake Certificate") answers unknown SNI names.
Keys are EC P-256: quick to make, so a run with many hosts does not wait on RSA key generation.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

FAKE_CERTIFICATE_CN = "Kubernetes Ingress Controller Fake Certificate"
CA_CN = "nodeport-lab run CA"
VALIDITY = datetime.timedelta(days=2)


@dataclass(frozen=True)
class Issued:
    cert_pem: str
    key_pem: str


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])


class CertificateAuthority:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(_name(CA_CN)).issuer_name(_name(CA_CN))
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .sign(self.key, hashes.SHA256()))

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(self, common_name: str, dns_names: list[str]) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(self.cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
        if dns_names:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]),
                                            critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM).decode() + self.cert_pem, _key_pem(key))


def subject_cn(cert_pem: str) -> str:
    """The first certificate's subject common name (what a test or a report shows)."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
