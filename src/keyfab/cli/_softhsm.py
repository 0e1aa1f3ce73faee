"""The demo's HSM: a SoftHSM2 token holding the root and manufacturing CA keys.

In production the CA keys live in an HSM; the demo does the same with SoftHSM2
when it is installed, so issuance really signs through PKCS#11. The token is made
on SoftHSM2's blank slot with random PINs kept in files (0600) in the workspace;
keyfab's registry stores only key URIs with ``pin-source=file:``, never a PIN.
SoftHSM2 reads ``SOFTHSM2_CONF`` when a process first loads it: a user's own
setting wins, else the demo points it at a configuration inside the workspace.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from keyfab.errors import KeyfabError
from keyfab.rot.soft import write_secret
from keyfab.rot.uri import KeyUri

MODULE_NAME = "libsofthsm2"


def softhsm_config(home: Path) -> Path | None:
    """Point SOFTHSM2_CONF at the workspace's SoftHSM2 (unless the user set one)."""
    if os.environ.get("SOFTHSM2_CONF"):
        return Path(os.environ["SOFTHSM2_CONF"])
    directory = home / "softhsm"
    config = directory / "softhsm2.conf"
    if not config.is_file():
        (directory / "tokens").mkdir(mode=0o700, parents=True, exist_ok=True)
        config.write_text(
            f"directories.tokendir = {directory / 'tokens'}\n"
            "objectstore.backend = file\nlog.level = ERROR\n"
        )
    os.environ["SOFTHSM2_CONF"] = str(config)
    return config


def use_workspace_softhsm(home: Path) -> None:
    """If the workspace has its own SoftHSM2 (made by the demo), every command uses it."""
    if (home / "softhsm" / "softhsm2.conf").is_file():
        softhsm_config(home)


def ca_key_uris(home: Path) -> tuple[str, str] | None:
    """URIs for new root and manufacturing CA keys in a SoftHSM2 token, or None.

    None when SoftHSM2 or the ``pkcs11`` extra is not installed, or the token
    cannot be made; the caller then keeps the CA keys in soft files and says so.
    """
    try:  # the pkcs11 extra (python-pkcs11) is optional: without it, soft CA keys
        from keyfab.rot.pkcs11 import find_module, open_device
    except (ImportError, KeyfabError):
        return None
    module = find_module(MODULE_NAME)
    if module is None:
        return None
    softhsm_config(home)
    # One token per workspace: a label the workspace's path decides (32 bytes at most).
    label = "keyfab-ca-" + hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:8]
    pins = home / "softhsm"
    pins.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name in ("user.pin", "so.pin"):
        if not (pins / name).is_file():
            write_secret(pins / name, secrets.token_urlsafe(12).encode())
    options = {
        "module": module,
        "token": label,
        "pin_file": str(pins / "user.pin"),
        "so_pin_file": str(pins / "so.pin"),
        "initialize": True,
    }
    try:
        open_device(options, 0).close()
    except KeyfabError:
        return None
    query = {"module-path": str(module), "pin-source": f"file:{pins / 'user.pin'}"}

    def uri(name: str) -> str:  # rendered by KeyUri: every value percent-encoded as needed
        return KeyUri("pkcs11", {"token": label, "object": name}, query).render(redact=False)

    return uri("root-ca"), uri("manufacturing-ca")
