"""The ``pkcs11`` root of trust: keys in an HSM, secure element or smart card.

Any PKCS#11 module works (SoftHSM2 in the tests; NXP SE05x middleware, YubiHSM,
Nitrokey, network HSMs in production). A token is either one device's root of
trust (provisioning opens it with :func:`open_device`) or the home of CA keys
(named by RFC 7512 URIs such as
``pkcs11:token=factory;object=mfg-ca?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin``).
Keys are generated inside the token and never leave it; see ``keyfab.rot.pkcs11._keys``.
PINs stay in memory only to log in again after a fork and appear in no message.
The binding is python-pkcs11 (chosen by measurement: docs/pkcs11.md).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pkcs11
import pkcs11.exceptions as p11e
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pkcs11 import Attribute, ObjectClass, SlotFlag

from keyfab.errors import (
    ConfigError,
    KeyExistsError,
    KeyNotFoundError,
    RotLockedError,
    UnsupportedError,
)
from keyfab.rot._keys import (
    ECDigestSigner,
    HardwareECPrivateKey,
    HardwareRSAPrivateKey,
    KeyAgreement,
    RSADigestSigner,
)
from keyfab.rot.base import (
    MAX_SEALED,
    Capability,
    Evidence,
    KeySpec,
    MonotonicCounter,
    PrivateKey,
    RotInfo,
    SealBinding,
    check_label,
    check_random_size,
)
from keyfab.rot.pkcs11 import _keys as keys
from keyfab.rot.pkcs11 import _objects as objects
from keyfab.rot.pkcs11 import _seal
from keyfab.rot.pkcs11._errors import translate, translated
from keyfab.rot.pkcs11._init import initialise_token
from keyfab.rot.pkcs11._options import DeviceOptions
from keyfab.rot.pkcs11._session import (
    Lease,
    TokenPool,
    find_token,
    load_module,
    pool_for,
    release_pool,
    resolve_module,
    token_serial,
)
from keyfab.rot.uri import KeyUri, read_pin

__all__ = ["Pkcs11RootOfTrust", "find_module", "initialise_token", "open_device", "open_uri"]

_LOCK_LABEL = "keyfab-locked"
_KEY_ID_BYTES = 16


class Pkcs11RootOfTrust:
    """One PKCS#11 token as a root of trust."""

    def __init__(self, module_path: str, selector: Mapping[str, str], pin: str | None):
        self._module_path = module_path
        self._selector = dict(selector)
        self._pin = pin
        self._pid_pool: tuple[int, TokenPool] | None = None
        token = self._pool().token
        self.name = token.label
        hardware = SlotFlag.HW_SLOT in token.slot.flags
        self.info = RotInfo(
            kind="pkcs11",
            vendor=token.manufacturer_id,
            model=token.model,
            unique_id=token_serial(token),
            capabilities=frozenset(
                {Capability.LOCK} | ({Capability.HARDWARE} if hardware else set())
            ),
        )

    def __repr__(self) -> str:
        return f"<Pkcs11RootOfTrust token={self.name!r} serial={self.info.unique_id}>"

    # -- sessions ------------------------------------------------------------

    def _pool(self) -> TokenPool:
        """This process's pool; a forked worker finds and logs into the token afresh."""
        pid = os.getpid()
        if self._pid_pool is None or self._pid_pool[0] != pid:
            token = find_token(load_module(self._module_path), self._selector)
            self._pid_pool = (pid, pool_for(self._module_path, token, self._pin))
        return self._pid_pool[1]

    @contextmanager
    def _session(self, action: str) -> Iterator[Lease]:
        with translated(f"pkcs11 token {self.name!r}: {action}"), self._pool().lease() as lease:
            yield lease

    # -- keys ----------------------------------------------------------------

    def generate_key(self, label: str, spec: KeySpec) -> PrivateKey:
        check_label(label)
        self._check_unlocked()
        pool = self._pool()
        mechanism = keys.generation_mechanism(spec.algorithm, pool.mechanisms)
        public_t, private_t = keys.templates(
            spec.algorithm, label, secrets.token_bytes(_KEY_ID_BYTES), spec.usage
        )
        with self._session(f"generate {spec.algorithm.value} key {label!r}") as lease:
            if _find(lease.session, ObjectClass.PRIVATE_KEY, label) is not None:
                raise KeyExistsError(f"pkcs11 token {self.name!r} already has a key {label!r}")
            _generate(lease.session, mechanism, public_t, private_t)
        return self.key(label)

    def key(self, label: str) -> PrivateKey:
        check_label(label)
        with self._session(f"open key {label!r}") as lease:
            private = _find(lease.session, ObjectClass.PRIVATE_KEY, label)
            if private is None:
                raise KeyNotFoundError(f"pkcs11 token {self.name!r} has no key {label!r}")
            key_id = bytes(private[Attribute.ID])
            derives = bool(private[Attribute.DERIVE])
            public = _find(lease.session, ObjectClass.PUBLIC_KEY, label)
            if public is None:
                raise KeyNotFoundError(f"pkcs11 token {self.name!r} has no public key {label!r}")
            public_key = keys.public_key_of(public)
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            agree = self._agreement(label, key_id) if derives else None
            return HardwareECPrivateKey(
                label, public_key, self._ec_signer(label, key_id, public_key), agree
            )
        return HardwareRSAPrivateKey(
            label, public_key, self._rsa_signer(label, key_id, public_key.key_size)
        )

    def key_attributes(self, label: str) -> dict[str, bool]:
        """The private key's protection attributes as the token reports them (an audit read)."""
        check_label(label)
        with self._session(f"read key {label!r}") as lease:
            private = _find(lease.session, ObjectClass.PRIVATE_KEY, label)
            if private is None:
                raise KeyNotFoundError(f"pkcs11 token {self.name!r} has no key {label!r}")
            return {f"CKA_{a.name}": bool(private[a]) for a in PROTECTION_ATTRIBUTES}

    def _private(self, lease: Lease, label: str, key_id: bytes) -> pkcs11.SignMixin:
        """The key object through this session, found once per session."""
        cached = lease.keys.get(key_id)
        if cached is not None:
            return cached
        found = lease.session.get_key(ObjectClass.PRIVATE_KEY, id=key_id, label=label)
        if not isinstance(found, pkcs11.SignMixin):
            raise UnsupportedError(f"pkcs11 token {self.name!r}: key {label!r} cannot sign")
        lease.keys[key_id] = found
        return found

    def _sign(
        self, label: str, key_id: bytes, sign: Callable[[pkcs11.SignMixin, TokenPool], bytes]
    ) -> bytes:
        """Run ``sign`` with the key through a pooled session: the issuance hot path."""
        pool = self._pool()
        lease = pool.acquire()
        try:
            return sign(self._private(lease, label, key_id), pool)
        except p11e.PKCS11Error as error:
            raise translate(error, f"pkcs11 token {self.name!r}: sign with {label!r}") from None
        finally:
            pool.release(lease)

    def _ec_signer(
        self, label: str, key_id: bytes, public_key: ec.EllipticCurvePublicKey
    ) -> ECDigestSigner:
        size = (public_key.curve.key_size + 7) // 8

        def sign(digest: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
            return self._sign(
                label, key_id, lambda key, pool: keys.sign_ec(key, pool.mechanisms, digest, size)
            )

        return sign

    def _agreement(self, label: str, key_id: bytes) -> KeyAgreement:
        def agree(peer: ec.EllipticCurvePublicKey) -> bytes:
            with self._session(f"ECDH with {label!r}") as lease:
                found = lease.session.get_key(ObjectClass.PRIVATE_KEY, id=key_id, label=label)
                if not isinstance(found, pkcs11.DeriveMixin):
                    raise UnsupportedError(f"pkcs11 token {self.name!r}: {label!r} cannot derive")
                return keys.ecdh(found, peer)

        return agree

    def _rsa_signer(self, label: str, key_id: bytes, bits: int) -> RSADigestSigner:
        def sign(
            digest: bytes, algorithm: hashes.HashAlgorithm, pad: padding.AsymmetricPadding
        ) -> bytes:
            return self._sign(
                label,
                key_id,
                lambda key, pool: keys.sign_rsa(key, pool.mechanisms, digest, algorithm, pad, bits),
            )

        return sign

    # -- objects -------------------------------------------------------------

    def store_object(self, label: str, data: bytes) -> None:
        check_label(label)
        if label == _LOCK_LABEL:
            raise ConfigError(f"object label {_LOCK_LABEL!r} is reserved for lock()")
        if len(data) > objects.MAX_OBJECT:
            raise ConfigError(f"object {label!r} is larger than {objects.MAX_OBJECT} bytes")
        self._check_unlocked()
        certificates = objects.certificates_in(data)
        labels = objects.certificate_labels(label, len(certificates))
        with self._session(f"store object {label!r}") as lease:
            self._remove(lease.session, label)
            lease.session.create_object(objects.data_template(label, data))
            for cert_label, certificate in zip(labels, certificates, strict=True):
                key_id = self._id_for(lease.session, certificate)
                lease.session.create_object(
                    objects.certificate_template(cert_label, key_id, certificate)
                )

    def _remove(self, session: pkcs11.Session, label: str) -> None:
        """Destroy the data object ``label`` and the certificates written with it."""
        for obj in list(
            session.get_objects({Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: label})
        ):
            obj.destroy()
        prefix = f"{label}."
        for obj in list(session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE})):
            name = obj[Attribute.LABEL]
            if name == label or (name.startswith(prefix) and name[len(prefix) :].isdigit()):
                obj.destroy()

    def _id_for(self, session: pkcs11.Session, certificate: x509.Certificate) -> bytes:
        """The CKA_ID of the token key this certificate certifies, else one from its key."""
        spki = _spki(certificate.public_key())
        if spki is None:
            return objects.public_key_id(certificate)
        for public in session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY}):
            try:
                candidate = keys.public_key_of(public)
            except UnsupportedError:
                continue
            if _spki(candidate) == spki:
                return bytes(public[Attribute.ID])
        return objects.public_key_id(certificate)

    def load_object(self, label: str) -> bytes:
        check_label(label)
        with self._session(f"load object {label!r}") as lease:
            found = _find(lease.session, ObjectClass.DATA, label)
            if found is None:
                raise KeyNotFoundError(f"pkcs11 token {self.name!r} has no object {label!r}")
            return bytes(found[Attribute.VALUE])

    # -- the rest of the protocol --------------------------------------------

    def random(self, n: int) -> bytes:
        check_random_size(n)
        if n == 0:
            return b""
        with self._session("read random bytes") as lease:
            return bytes(lease.session.generate_random(n * 8))

    def certify(self, label: str, nonce: bytes) -> Evidence | None:
        """PKCS#11 has no standard key attestation; vendor ones need their own driver."""
        return None

    def counter(self, name: str) -> MonotonicCounter:
        """PKCS#11 hardware counters (CKH_MONOTONIC_COUNTER) cannot be set, so none."""
        check_label(name)
        raise UnsupportedError(
            f"pkcs11 token {self.name!r}: PKCS#11 offers no settable monotonic counter"
        )

    # -- sealing and erasing -------------------------------------------------

    def seal(self, data: bytes, binding: SealBinding) -> bytes:
        """AES-GCM in the token under its non-extractable sealing key (made on first use).

        The sealing key is the device's own, not a provisioned one, so a locked
        token still gets it.
        """
        if len(data) > MAX_SEALED:
            raise ConfigError(f"pkcs11: cannot seal more than {MAX_SEALED} bytes")
        with self._session("seal data") as lease:
            return _seal.encrypt(lease.session, self._pool().mechanisms, data, binding.context)

    def unseal(self, payload: bytes, binding: SealBinding) -> bytes:
        with self._session("unseal data") as lease:
            return _seal.decrypt(lease.session, payload, binding.context)

    def erase(self) -> int:
        """Destroy every key, certificate and data object on the token (tamper response)."""
        with self._session("erase") as lease:
            return _seal.destroy_all(lease.session)

    def lock(self) -> None:
        """Mark the token finished; keyfab then refuses to add keys or objects to it.

        PKCS#11 has no lock of its own: the lasting protection is the token's access
        control (change or withhold the user PIN after provisioning).
        """
        if self._locked():
            return
        with self._session("lock") as lease:
            template = objects.data_template(_LOCK_LABEL, b"locked")
            template[Attribute.MODIFIABLE] = False
            lease.session.create_object(template)

    def _locked(self) -> bool:
        with self._session("read lock state") as lease:
            return _find(lease.session, ObjectClass.DATA, _LOCK_LABEL) is not None

    def _check_unlocked(self) -> None:
        if self._locked():
            raise RotLockedError(f"pkcs11 token {self.name!r} is locked")

    def close(self) -> None:
        """Let go of the token; the last handle in this process logs out."""
        if self._pid_pool is not None and self._pid_pool[0] == os.getpid():
            release_pool(self._module_path, self._pid_pool[1])
        self._pid_pool = None


PROTECTION_ATTRIBUTES = (
    Attribute.SENSITIVE,
    Attribute.EXTRACTABLE,
    Attribute.ALWAYS_SENSITIVE,
    Attribute.NEVER_EXTRACTABLE,
    Attribute.TOKEN,
    Attribute.PRIVATE,
)
"""What says a private key cannot leave its token (PKCS#11 v2.40 section 4.9)."""


def _find(session: pkcs11.Session, object_class: ObjectClass, label: str) -> pkcs11.Object | None:
    """The one object of ``object_class`` labelled ``label``, or None."""
    found = list(session.get_objects({Attribute.CLASS: object_class, Attribute.LABEL: label}))
    if len(found) > 1:
        raise KeyExistsError(f"several {object_class.name.lower()} objects are labelled {label!r}")
    return found[0] if found else None


def _generate(
    session: pkcs11.Session,
    mechanism: pkcs11.Mechanism,
    public: dict[Attribute, Any],
    private: dict[Attribute, Any],
) -> None:
    session.generate_keypair(
        public[Attribute.KEY_TYPE],
        public.get(Attribute.MODULUS_BITS),
        store=True,
        mechanism=mechanism,
        public_template=public,
        private_template=private,
    )


def _spki(public_key: object) -> bytes | None:
    """SubjectPublicKeyInfo DER, to compare keys of any type; None if not EC or RSA."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        return None
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def find_module(name: str) -> str | None:
    """The file of the PKCS#11 module ``name`` (e.g. ``libsofthsm2``), if installed."""
    try:
        return resolve_module(None, name)
    except ConfigError:
        return None


def open_uri(uri: KeyUri) -> Pkcs11RootOfTrust:
    """The token an RFC 7512 URI names (``token=``, ``serial=``, ``slot-id=`` ...)."""
    module = resolve_module(uri.query.get("module-path"), uri.query.get("module-name"))
    return Pkcs11RootOfTrust(module, uri.attributes, read_pin(uri))


def open_device(options: Mapping[str, Any], slot: int) -> Pkcs11RootOfTrust:
    """One device's token for provisioning, from the recipe's ``[rot]`` table.

    ``module`` (or $KEYFAB_PKCS11_MODULE), ``token`` (label, e.g. ``dev-{slot}``)
    and/or ``serial`` find the token; ``pin``/``pin_file`` log in. With
    ``initialize = true`` a missing token is created on a blank slot, using
    ``so_pin``/``so_pin_file`` as its new SO PIN.
    """
    parsed = DeviceOptions.parse(options, slot)
    module = resolve_module(parsed.module, None)
    pins = parsed.initial_pins()
    if pins is not None and not _exists(module, parsed.selector):
        initialise_token(module, parsed.selector["token"], *pins)
    return Pkcs11RootOfTrust(module, parsed.selector, parsed.pin)


def _exists(module_path: str, selector: Mapping[str, str]) -> bool:
    try:
        find_token(load_module(module_path), selector)
    except KeyNotFoundError:
        return False
    return True
