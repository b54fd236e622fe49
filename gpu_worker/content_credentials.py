"""The AI label of every delivered video: C2PA content credentials signed into the MP4.

The EU AI Act (article 50) asks for AI-generated video to be marked in a machine-readable way, and app
stores and social networks read C2PA manifests. Each MP4 gets one manifest (`c2pa-python`) whose
`c2pa.actions` assertion says it was created (`c2pa.created`) by a generative model (IPTC digital source
type `trainedAlgorithmicMedia`), with the route that made it as the software agent and the service as the
claim generator. The manifest is embedded (a `uuid` box; `moov` stays before `mdat`, so faststart holds)
and signed with the key and certificate chain the worker is configured with (gpu_worker/settings.py
`C2PA_*`). A chain made here (`make_signing_material`) serves development and tests only: C2PA wants an
end-entity certificate (digital signature, an allowed extended key usage, not a CA) issued by a CA, so
that is what it makes.

Runs in a job's CPU tail (gpu_worker/runner.py `_deliver`), after the sound is muxed and before the
quality gate, so the gate checks the very file the user gets.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import c2pa

from gpu_worker.settings import LabelSettings

logger = logging.getLogger(__name__)

# IPTC NewsCodes "digital source type": media created by a model trained on sampled content.
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
ACTION_CREATED = "c2pa.created"
MP4 = "video/mp4"
# c2pa-rs' names of the algorithms a key can sign with (`C2PA_SIGN_ALG`).
SIGNING_ALGORITHMS: tuple[str, ...] = ("es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519")


class ContentCredentialsError(Exception):
    """The signing material is unusable or a video could not be signed."""


@dataclass(frozen=True)
class SigningMaterial:
    """A PEM certificate chain (end-entity first, then the intermediates; not the root), its PEM private
    key, the algorithm (`SIGNING_ALGORITHMS`) and an optional RFC 3161 timestamp authority URL."""

    cert_chain_pem: bytes
    private_key_pem: bytes
    alg: str = "es256"
    tsa_url: str | None = None

    def __post_init__(self) -> None:
        if self.alg not in SIGNING_ALGORITHMS:
            raise ContentCredentialsError(
                f"the signing algorithm must be one of {', '.join(SIGNING_ALGORITHMS)}, got {self.alg!r}"
            )
        if b"-----BEGIN CERTIFICATE-----" not in self.cert_chain_pem:
            raise ContentCredentialsError("the certificate chain is not PEM (no BEGIN CERTIFICATE)")
        if b"PRIVATE KEY-----" not in self.private_key_pem:
            raise ContentCredentialsError("the private key is not PEM (no BEGIN ... PRIVATE KEY)")

    @classmethod
    def from_files(
        cls, cert_chain: Path, private_key: Path, *, alg: str = "es256", tsa_url: str | None = None
    ) -> SigningMaterial:
        try:
            return cls(
                cert_chain_pem=Path(cert_chain).read_bytes(),
                private_key_pem=Path(private_key).read_bytes(),
                alg=alg,
                tsa_url=tsa_url or None,
            )
        except OSError as exc:
            raise ContentCredentialsError(f"cannot read the signing material: {exc}") from None


class ContentCredentials:
    """Signs MP4s as made by a generative model: `sign_mp4(path, route=..., family=...)` in place."""

    def __init__(self, material: SigningMaterial, *, producer: str) -> None:
        self.material = material
        self.producer = producer
        # Fail at start-up, not in the first job's tail: the C2PA library refuses a malformed chain or
        # key here, but not a key of another certificate (it would sign videos no one can verify).
        _check_key_matches_certificate(material)
        self._signer().close()

    def _signer(self) -> c2pa.Signer:
        # One signer per video: cheap (about a millisecond), and no native handle is shared between the
        # tail threads of two jobs.
        material = self.material
        try:
            return c2pa.Signer.from_info(
                c2pa.C2paSignerInfo(
                    material.alg, material.cert_chain_pem, material.private_key_pem, material.tsa_url
                )
            )
        except c2pa.C2paError as exc:
            raise ContentCredentialsError(f"the C2PA signing material is unusable: {exc}") from None

    def manifest(self, *, route: str, family: str) -> dict[str, Any]:
        """The manifest definition of one video made on `route` (a model family `family`)."""
        return {
            "claim_generator_info": [{"name": self.producer}],
            "title": "video.mp4",
            "format": MP4,
            "assertions": [
                {
                    "label": "c2pa.actions",
                    "data": {
                        "actions": [
                            {
                                "action": ACTION_CREATED,
                                "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                                "softwareAgent": {"name": f"{self.producer} {route} ({family})"},
                            }
                        ]
                    },
                }
            ],
        }

    def sign_mp4(self, path: Path, *, route: str, family: str) -> None:
        """Embeds a signed manifest into the MP4 at `path` (rewritten through a sibling file)."""
        path = Path(path)
        signed = path.with_name(path.stem + ".signed" + path.suffix)
        try:
            with (
                self._signer() as signer,
                c2pa.Builder(self.manifest(route=route, family=family)) as builder,
                path.open("rb") as source,
                signed.open("w+b") as dest,
            ):
                builder.sign(signer, MP4, source, dest)
        except c2pa.C2paError as exc:
            signed.unlink(missing_ok=True)
            raise ContentCredentialsError(f"could not sign {path.name}: {exc}") from None
        os.replace(signed, path)


def content_credentials_from_settings(settings: LabelSettings) -> ContentCredentials | None:
    """The worker's labeller (None: C2PA_DISABLED). Without configured material, a chain made now: what
    development and the embedded mode sign with (LabelSettings.from_env refuses that in production)."""
    if settings.disabled:
        logger.warning("C2PA_DISABLED: videos are delivered without a C2PA label")
        return None
    if settings.cert_chain_path is None or settings.private_key_path is None:
        logger.warning(
            "no C2PA_SIGN_CERT/C2PA_SIGN_KEY: labelling videos with a development certificate made at "
            "start-up (verifiers show it as untrusted)"
        )
        material = make_signing_material().material
    else:
        material = SigningMaterial.from_files(
            settings.cert_chain_path, settings.private_key_path, alg=settings.alg, tsa_url=settings.tsa_url
        )
    return ContentCredentials(material, producer=settings.producer)


def _check_key_matches_certificate(material: SigningMaterial) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        certificate = x509.load_pem_x509_certificate(material.cert_chain_pem)
        key = serialization.load_pem_private_key(material.private_key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ContentCredentialsError(f"the C2PA signing material is unusable: {exc}") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if certificate.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise ContentCredentialsError(
            "the C2PA private key is not the key of the first certificate of the chain (the signer's)"
        )


# --- Development and test signing material -----------------------------------------------------


@dataclass(frozen=True)
class SigningChain:
    """Signing material made here, with the root certificate a verifier must trust to call it Trusted."""

    material: SigningMaterial
    root_pem: bytes


def make_signing_material(*, organization: str = "Diffuse development", days: int = 30) -> SigningChain:
    """A fresh CA and an end-entity certificate it issued (ECDSA P-256, ES256), with the extensions C2PA
    asks of a signing certificate. For development and tests: no verifier trusts this root by default."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common_name: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            ]
        )

    def key_usage(*, signing: bool) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=signing,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=not signing,
            crl_sign=not signing,
            encipher_only=False,
            decipher_only=False,
        )

    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = (
        x509.CertificateBuilder()
        .subject_name(name(f"{organization} C2PA test root"))
        .issuer_name(name(f"{organization} C2PA test root"))
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(signing=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    signing_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name(f"{organization} C2PA signer"))
        .issuer_name(root.subject)
        .public_key(signing_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(signing=True), critical=True)
        # C2PA accepts a few EKUs for claim signing (not anyExtendedKeyUsage); email protection is the
        # one its own test certificates use.
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(signing_key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False
        )
        .sign(root_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return SigningChain(
        material=SigningMaterial(
            cert_chain_pem=leaf.public_bytes(pem),
            private_key_pem=signing_key.private_bytes(
                pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            alg="es256",
        ),
        root_pem=root.public_bytes(pem),
    )


# --- Reading a label back ---------------------------------------------------------------------


@dataclass(frozen=True)
class Label:
    """What a verifier reads from a file's active manifest."""

    validation_state: str  # "Invalid", "Valid" (signature good, signer not trusted) or "Trusted"
    failures: list[str]  # validation failure codes of the active manifest
    claim_generator: str
    actions: list[dict[str, Any]]


def read_label(path: Path, *, trust_anchors_pem: bytes | None = None) -> Label | None:
    """The C2PA label of the MP4 at `path` (None: it has none), validated against `trust_anchors_pem`
    (PEM roots; None: the library's defaults)."""
    context = None
    if trust_anchors_pem is not None:
        context = c2pa.Context.from_dict(
            {"verify": {"verify_trust": True}, "trust": {"trust_anchors": trust_anchors_pem.decode()}}
        )
    with Path(path).open("rb") as stream:
        reader = c2pa.Reader.try_create(MP4, stream, None, context)
        if reader is None:
            return None
        with reader:
            manifest = reader.get_active_manifest() or {}
            results = reader.get_validation_results() or {}
            state = reader.get_validation_state() or ""
    actions = [
        action
        for assertion in manifest.get("assertions", [])
        if assertion.get("label", "").startswith("c2pa.actions")
        for action in assertion.get("data", {}).get("actions", [])
    ]
    failures = [item["code"] for item in results.get("activeManifest", {}).get("failure", [])]
    generator = next(iter(manifest.get("claim_generator_info") or [{}])).get("name", "")
    return Label(validation_state=state, failures=failures, claim_generator=generator, actions=actions)
