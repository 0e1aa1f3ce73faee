"""One login per process, a session per concurrent signer, and forked workers."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pkcs11
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import Attribute, ObjectClass

from keyfab.rot import KeyAlgorithm, KeySpec, PrivateKey, load_key, open_rot
from keyfab.rot.pkcs11 import open_device

if TYPE_CHECKING:
    from pathlib import Path

    from .conftest import SoftHsm

_inherited: PrivateKey | None = None


def _sign_in_worker(index: int) -> tuple[int, bytes, bytes]:
    """Runs in a forked batch worker with the key object its parent opened."""
    assert _inherited is not None
    message = f"device {index}".encode()
    return os.getpid(), message, _inherited.sign(message, ec.ECDSA(hashes.SHA256()))


@pytest.fixture(scope="module")
def key(softhsm: SoftHsm) -> PrivateKey:
    open_rot(softhsm.uri("fork")).generate_key("worker-key", KeySpec(KeyAlgorithm.EC_P256))
    return load_key(softhsm.uri("fork", "worker-key"))


def test_pkcs11_threads_sign_concurrently(key: PrivateKey) -> None:
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    messages = [f"thread message {i}".encode() for i in range(400)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        signatures = list(pool.map(lambda m: key.sign(m, ec.ECDSA(hashes.SHA256())), messages))
    for message, signature in zip(messages, signatures, strict=True):
        key.public_key().verify(signature, message, ec.ECDSA(hashes.SHA256()))


def test_pkcs11_forked_workers_reopen_the_token(key: PrivateKey) -> None:
    global _inherited
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    key.sign(b"the parent has a live session before forking", ec.ECDSA(hashes.SHA256()))
    _inherited = key
    with multiprocessing.get_context("fork").Pool(2, maxtasksperchild=4) as workers:
        results = workers.map(_sign_in_worker, range(16), chunksize=1)
    assert len({pid for pid, _, _ in results}) >= 2
    assert os.getpid() not in {pid for pid, _, _ in results}
    for _, message, signature in results:
        key.public_key().verify(signature, message, ec.ECDSA(hashes.SHA256()))
    # The parent's own login and sessions are untouched by its children.
    key.public_key().verify(
        key.sign(b"after", ec.ECDSA(hashes.SHA256())), b"after", ec.ECDSA(hashes.SHA256())
    )


def test_pkcs11_last_close_logs_out_and_reopening_logs_in(softhsm: SoftHsm, tmp_path: Path) -> None:
    so_pin = tmp_path / "so.pin"
    so_pin.write_text(softhsm.so_pin)
    options = {
        "module": softhsm.module,
        "token": "closing",
        "pin_file": str(softhsm.pin_file),
        "so_pin_file": str(so_pin),
        "initialize": True,
    }
    first, second = open_device(options, 0), open_device(options, 0)
    key = first.generate_key("k", KeySpec(KeyAlgorithm.EC_P256))
    token = pkcs11.lib(softhsm.module).get_token(token_label="closing")

    def visible_private_keys() -> int:
        with token.open() as session:
            return len(list(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})))

    first.close()
    assert visible_private_keys() == 1  # the second handle keeps the process logged in
    second.close()
    assert visible_private_keys() == 0  # the last one logged out
    signature = key.sign(b"again", ec.ECDSA(hashes.SHA256()))  # logs in again on use
    key.public_key().verify(signature, b"again", ec.ECDSA(hashes.SHA256()))
