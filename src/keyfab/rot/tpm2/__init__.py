"""The ``tpm2`` root of trust: a TPM 2.0, IDevID/IAK per the TCG device identity spec.

``tpm2:tcti=swtpm:host=127.0.0.1,port=2321`` or
``tpm2:tcti=device:/dev/tpmrm0;persistent=0x81020001``.

What the TPM gives keyfab:

* identity: the EK certificate from its TCG NV index, checked against the EK
  public key; the device's unique id is the SHA-256 of the EK's public key;
* keys made inside the TPM (fixedTPM, fixedParent, sensitiveDataOrigin) in the
  endorsement hierarchy and persisted at recipe-chosen handles; the key labelled
  ``iak`` (configurable) is the restricted attestation key, made on first use;
* evidence: TPM2_Certify by the IAK over a key with the verifier's nonce, plus
  the EK certificate and public areas; ``activate_credential`` answers the CA's
  MakeCredential challenge that binds the IAK to the EK; ``quote`` for PCRs;
* objects in NV indices, counters in NV counter indices.

The private keys never leave the TPM; every transient handle is flushed at once.
tpm2-pytss loads the TCTI (swtpm, device, tabrmd, mssim). The per-device
commands are marshalled by keyfab itself on persistent handles
(keyfab.rot.tpm2._commands and _nv: ESAPI's overhead there was as large as
the TPM's own time); ESAPI serves quotes and an EK nobody persisted.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from tpm2_pytss.constants import ESYS_TR, TPMA_OBJECT
from tpm2_pytss.types import TPMT_PUBLIC

from keyfab.errors import (
    ConfigError,
    KeyExistsError,
    KeyNotFoundError,
    RotLockedError,
    UnsupportedError,
    VerificationError,
)
from keyfab.rot import _aead, pcr_policy
from keyfab.rot.base import (
    MAX_SEALED,
    Capability,
    Evidence,
    KeySpec,
    KeyUsage,
    MonotonicCounter,
    PcrApproval,
    PrivateKey,
    RotInfo,
    SealBinding,
    check_label,
    check_random_size,
)
from keyfab.rot.tpm2 import _attest, _commands, _nv, _seal
from keyfab.rot.tpm2._attest import check_nonce
from keyfab.rot.tpm2._config import NV_FIRST, PERSISTENT_FIRST, Tcti, Tpm2Options
from keyfab.rot.tpm2._device import TpmConnection
from keyfab.rot.tpm2._ek import EndorsementKey, ek_policy, find_ek
from keyfab.rot.tpm2._public import decode_public
from keyfab.rot.tpm2._sign import wrap_agreement_key, wrap_key
from keyfab.rot.tpm2._templates import AGREEMENT_ATTRIBUTES, key_template
from keyfab.rot.uri import KeyUri

__all__ = ["CERTIFY_FORMAT", "QUOTE_FORMAT", "Tpm2RootOfTrust", "open_device", "open_uri"]

CERTIFY_FORMAT = "tpm2-certify"
QUOTE_FORMAT = "tpm2-quote"
_PT_MANUFACTURER = 0x105
_KEYFAB_NV = (0x01100000, 0x01300000)  # derived objects and counters (see _config)


class Tpm2RootOfTrust:
    """One TPM. Open with ``open_uri`` / ``open_device``; close it to release the TCTI."""

    def __init__(self, options: Tpm2Options):
        self.options = options
        self._tpm = TpmConnection(options.tcti)
        self._handles: dict[int, ESYS_TR] = {}
        # Public areas of keys this connection made or read: a TPM command each
        # saved, and swtpm answers in ~0.3 ms, so round trips are the cost that counts.
        self._public: dict[int, bytes] = {}  # marshalled TPMT_PUBLIC per persistent handle
        self._written: set[int] = set()
        self._locked = False
        try:
            self.ek: EndorsementKey = find_ek(self._tpm, options.ek)
            self.info = self._read_info()
        except BaseException:
            self._tpm.close()
            raise

    def _read_info(self) -> RotInfo:
        props = self._tpm.properties(_PT_MANUFACTURER, 5)
        vendor = _ascii(props[0])
        model = "".join(_ascii(p) for p in props[1:]).strip() or "TPM 2.0"
        return RotInfo(
            kind="tpm2",
            vendor=vendor,
            model=model,
            unique_id=hashlib.sha256(self.ek.spki).hexdigest(),
            capabilities=frozenset(
                {
                    Capability.KEY_ATTESTATION,
                    Capability.MONOTONIC_COUNTER,
                    Capability.LOCK,
                    Capability.HARDWARE,
                }
            ),
        )

    # keys -----------------------------------------------------------------

    def _esys(self, handle: int) -> ESYS_TR:
        if handle not in self._handles:
            self._handles[handle] = self._tpm.call(
                f"key at {handle:#010x}", self._tpm.esys.tr_from_tpmpublic, handle
            )
        return self._handles[handle]

    def _exists(self, handle: int) -> bool:
        return handle in self._public or handle in self._tpm.handles(handle & 0xFFFF0000)

    def _check_unlocked(self) -> None:
        if self._locked:
            raise RotLockedError(f"tpm2 root of trust {self.info.unique_id[:16]} is locked")

    def generate_key(self, label: str, spec: KeySpec) -> PrivateKey:
        """CreatePrimary in the endorsement hierarchy, EvictControl to the label's handle."""
        check_label(label)
        self._check_unlocked()
        handle = self.options.key_handle(label)
        if self._exists(handle):
            raise KeyExistsError(f"tpm2: key {label!r} already exists at {handle:#010x}")
        agree = spec.usage is KeyUsage.AGREE
        if agree and not spec.algorithm.is_ec:
            raise UnsupportedError(
                f"tpm2: key agreement needs an EC key, not {spec.algorithm.value}"
            )
        template = key_template(
            spec.algorithm,
            restricted=label == self.options.iak_label,
            attributes=int(AGREEMENT_ATTRIBUTES) if agree else None,
        )
        self._public[handle] = _commands.create_persistent(self._tpm.transact, template, handle)
        return self.key(label)

    def key(self, label: str) -> PrivateKey:
        """The key persisted at the label's handle (or at ``0x81...`` given as the label)."""
        handle = self.options.key_handle(check_label(label))
        try:
            attributes, public_key = decode_public(self.public_bytes(label))
        except KeyNotFoundError:
            raise KeyNotFoundError(f"tpm2: no key {label!r} at {handle:#010x}") from None
        agreement = attributes & (TPMA_OBJECT.DECRYPT | TPMA_OBJECT.RESTRICTED)
        if agreement == TPMA_OBJECT.DECRYPT and isinstance(public_key, ec.EllipticCurvePublicKey):
            return wrap_agreement_key(self._tpm.transact, label, handle, public_key)
        if not attributes & TPMA_OBJECT.SIGN_ENCRYPT:
            raise KeyNotFoundError(f"tpm2: the object at {handle:#010x} is not a signing key")
        restricted = bool(attributes & TPMA_OBJECT.RESTRICTED)
        return wrap_key(self._tpm.transact, label, handle, public_key, restricted)

    def public_bytes(self, label: str) -> bytes:
        """The marshalled TPMT_PUBLIC of a persisted key (read once per connection)."""
        handle = self.options.key_handle(check_label(label))
        if handle not in self._public:
            self._public[handle] = _commands.read_public(self._tpm.transact, handle)
        return self._public[handle]

    def public_area(self, label: str) -> Any:
        """The TPMT_PUBLIC (pytss object) of a persisted key."""
        area, _ = TPMT_PUBLIC.unmarshal(self.public_bytes(label))
        return area

    def delete_key(self, label: str) -> None:
        """Evict a persisted key (re-provisioning a device): EvictControl on its handle."""
        self._check_unlocked()
        handle = self.options.key_handle(check_label(label))
        if not self._exists(handle):
            raise KeyNotFoundError(f"tpm2: no key {label!r} at {handle:#010x}")
        esys = self._handles.pop(handle, None)
        if esys is not None:
            self._tpm.esys.tr_close(esys)
        self._public.pop(handle, None)
        _commands.evict(self._tpm.transact, handle)

    def random(self, n: int) -> bytes:
        check_random_size(n)
        out = bytearray()
        while len(out) < n:
            out += bytes(
                self._tpm.call("GetRandom", self._tpm.esys.get_random, min(32, n - len(out)))
            )
        return bytes(out[:n])

    # objects and counters -------------------------------------------------

    def store_object(self, label: str, data: bytes) -> None:
        self._check_unlocked()
        index = self.options.nv_index(check_label(label))
        _nv.write_object(self._tpm, index, data)
        self._written.add(index)

    def load_object(self, label: str) -> bytes:
        return _nv.read_object(self._tpm, self.options.nv_index(check_label(label)), label)

    def delete_object(self, label: str) -> None:
        """Undefine an object's NV index."""
        self._check_unlocked()
        index = self.options.nv_index(check_label(label))
        if not _nv.exists(self._tpm, index):
            raise KeyNotFoundError(f"tpm2: no object {label!r} (NV {index:#010x})")
        _nv.undefine(self._tpm, index)
        self._written.discard(index)

    def counter(self, name: str) -> MonotonicCounter:
        return _nv.NvCounter(self._tpm, check_label(name), self.options.counter_index(name))

    def lock(self) -> None:
        """Write-lock every object written in this session and every mapped one.

        A TPM has no "provisioning done" switch an owner can set; what keyfab
        can freeze is its NV objects (TPM2_NV_WriteLock on WRITEDEFINE indices).
        """
        if self._locked:
            return
        present = set(self._tpm.handles(0x01000000))
        for index in sorted(self._written | set(self.options.nv.values())):
            if index in present:
                _nv.write_lock(self._tpm, index)
        self._locked = True

    # attestation ----------------------------------------------------------

    def _iak(self) -> int:
        """The IAK's persistent handle; the IAK is created on first use."""
        label = self.options.iak_label
        handle = self.options.key_handle(label)
        if not self._exists(handle):
            self.generate_key(label, KeySpec(self.options.iak_algorithm))
        return handle

    def certify(self, label: str, nonce: bytes) -> Evidence:
        """TPM2_Certify of key ``label`` by the IAK over ``nonce``, with the EK's proof."""
        iak = self._iak()
        key_handle = self.options.key_handle(check_label(label))
        attest, signature = _commands.certify(
            self._tpm.transact, key_handle, iak, check_nonce(nonce)
        )
        return Evidence(
            format=CERTIFY_FORMAT,
            parts={
                "attest": attest,
                "signature": signature,
                "public": self.public_bytes(label),
                "iak_public": self.public_bytes(self.options.iak_label),
                "ek_public": self.ek.public_area,
                "ek_certificate": self.ek.certificate,
            },
        )

    def activate_credential(self, credential_blob: bytes, secret: bytes) -> bytes:
        """Answer a MakeCredential challenge bound to this TPM's EK and IAK."""
        iak = self._iak()
        if self.ek.persistent_handle is not None:
            handles = (iak, self.ek.persistent_handle)
            return _commands.activate_credential(
                self._tpm.transact, handles, ek_policy(self.ek.public_area), credential_blob, secret
            )
        return _attest.activate_credential(
            self._tpm, self.ek, self._esys(iak), credential_blob, secret
        )

    def quote(self, pcrs: Sequence[int], nonce: bytes, bank: str = "sha256") -> Evidence:
        """TPM2_Quote of ``pcrs`` by the IAK over ``nonce``, with the PCR values."""
        iak = self._esys(self._iak())
        attest, signature, values = _attest.quote(self._tpm, iak, pcrs, bank, nonce)
        return Evidence(
            format=QUOTE_FORMAT,
            parts={
                "attest": attest,
                "signature": signature,
                "pcr_values": values,
                "iak_public": self.public_bytes(self.options.iak_label),
            },
        )

    # sealing and erasing (the device API) --------------------------------

    def _srk(self) -> ESYS_TR:
        """The storage key sealed data lives under, made and persisted on first use."""
        handle = self.options.key_handle(_seal.SRK_LABEL)
        if not self._exists(handle):
            _seal.create_srk(self._tpm, handle)
        return self._esys(handle)

    def _approval(self, binding: SealBinding) -> PcrApproval:
        """The maker-signed policy the PCRs satisfy now, or VerificationError."""
        if binding.authority is None:
            raise ConfigError("tpm2: lock/unlock needs the maker's policy-signing key")
        values: dict[tuple[str, tuple[int, ...]], bytes] = {}
        for approval in binding.approvals:
            selection = (approval.bank, approval.pcrs)
            if selection not in values:
                now = _seal.read_pcrs(self._tpm, approval.bank, approval.pcrs)
                values[selection] = pcr_policy.policy_pcr(approval.bank, approval.pcrs, now)
            if hmac.compare_digest(values[selection], approval.policy):
                return approval
        raise VerificationError(
            "tpm2: the PCRs match no policy the maker signed (boot state changed without an "
            "approved update)"
        )

    def seal(self, data: bytes, binding: SealBinding) -> bytes:
        """A fresh data key sealed under PolicyAuthorize(maker), the data under AES-GCM.

        Refused unless a maker-signed policy matches the PCRs now: data locked
        otherwise could never be unlocked.
        """
        if len(data) > MAX_SEALED:
            raise ConfigError(f"tpm2: cannot seal more than {MAX_SEALED} bytes")
        self._approval(binding)
        assert binding.authority is not None
        key = self.random(_aead.KEY_BYTES)
        sealed = _seal.seal(self._tpm, self._srk(), key, binding.authority)
        return struct.pack(">I", len(sealed)) + sealed + _aead.encrypt(key, data, binding.context)

    def unseal(self, payload: bytes, binding: SealBinding) -> bytes:
        approval = self._approval(binding)
        assert binding.authority is not None
        if len(payload) < 4 or 4 + int.from_bytes(payload[:4], "big") > len(payload):
            raise VerificationError("tpm2: locked data is truncated")
        end = 4 + int.from_bytes(payload[:4], "big")
        key = _seal.unseal(self._tpm, self._srk(), payload[4:end], binding.authority, approval)
        return _aead.decrypt(key, payload[end:], binding.context, "tpm2: locked data")

    def erase(self) -> int:
        """Evict keyfab's persistent keys and undefine its NV indices (tamper response).

        keyfab's are the handles in its ranges (the mapped ones, 0x8102xxxx, and
        NV 0x0110xxxx-0x012Fxxxx); the EK and its certificate are the TPM
        vendor's and stay.
        """
        for esys in self._handles.values():
            self._tpm.esys.tr_close(esys)
        self._handles.clear()
        self._public.clear()
        erased = 0
        for handle in self._tpm.handles(PERSISTENT_FIRST):
            if handle in self.options.handles.values() or handle >> 16 == 0x8102:
                _commands.evict(self._tpm.transact, handle)
                erased += 1
        mapped = {*self.options.nv.values(), *self.options.counters.values()}
        for index in self._tpm.handles(NV_FIRST):
            if index in mapped or _KEYFAB_NV[0] <= index < _KEYFAB_NV[1]:
                _nv.undefine(self._tpm, index)
                erased += 1
        self._written.clear()
        return erased

    def transient_count(self) -> int:
        """Transient objects loaded in the TPM right now (zero between calls)."""
        return self._tpm.transient_count()

    def close(self) -> None:
        for handle in self._handles.values():
            self._tpm.esys.tr_close(handle)
        self._handles.clear()
        self._tpm.close()

    def __enter__(self) -> Tpm2RootOfTrust:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ascii(value: int) -> str:
    return value.to_bytes(4, "big").decode("ascii", "replace").strip("\x00 ")


def open_uri(uri: KeyUri) -> Tpm2RootOfTrust:
    """``tpm2:tcti=...`` (required) opens the TPM behind that TCTI."""
    if "tcti" not in uri.attributes:
        raise ConfigError("tpm2: key URI needs tcti=..., e.g. tpm2:tcti=device:/dev/tpmrm0")
    return Tpm2RootOfTrust(Tpm2Options(tcti=Tcti.parse(uri.attributes["tcti"])))


def open_device(options: Mapping[str, Any], slot: int) -> Tpm2RootOfTrust:
    """Provisioning's entry point: the recipe's ``[rot]`` table, formatted for this slot."""
    return Tpm2RootOfTrust(Tpm2Options.from_mapping(options, slot))
