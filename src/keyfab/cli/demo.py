"""``keyfab demo``: the whole job end to end with the embedded defaults."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from rich.markup import escape

from keyfab import audit, pki
from keyfab.authority import Authority, initialise
from keyfab.cli._context import workspace
from keyfab.cli._output import console, fields
from keyfab.cli._softhsm import ca_key_uris, use_workspace_softhsm
from keyfab.cli.provision import run_with_progress
from keyfab.clock import utc_now
from keyfab.errors import AuditError, VerificationError
from keyfab.provision import create_batch, load_recipe
from keyfab.registry import queries
from keyfab.rot import parse_key_uri
from keyfab.rot.soft import write_secret
from keyfab.workspace import Workspace

DEMO_RECIPE = """\
# An example product recipe, written by 'keyfab demo'.
[product]
name = "acme-gateway"
organization = "Acme Devices"
hw_type = "1.3.6.1.4.1.99999.1.1"      # hardwareModuleName hwType OID (RFC 4108)
serial = "AGW-{seq:08d}"

[rot]
driver = "soft"                         # simulated devices: one directory each
path = "{home}/devices/{batch}/{slot:06d}"

[[keys]]
label = "idevid"
algorithm = "ec-p256"
profile = "idevid"

[[objects]]                             # the firmware-verification key, into every device
label = "fit-key"
file = "keys/firmware.pub.pem"

[counters]
rollback = 0

[finish]
lock = true
"""


def _prepare(space: Workspace) -> Path:
    """Initialise the workspace and write the example recipe, unless already done."""
    if not (space.home / "keyfab.db").is_file():
        space.make_home()
        uris = ca_key_uris(space.home)
        root_key, ca_key = uris if uris else (None, None)
        initialise(space, "Acme Devices", root_key=root_key, ca_key=ca_key)
        where = "a SoftHSM2 token (PKCS#11)" if uris else "soft key files"
        console.print(
            f"[green]initialised[/] root and manufacturing CA in {escape(str(space.home))}"
        )
        console.print(f"  CA keys in {where}")
    else:
        use_workspace_softhsm(space.home)  # the CA keys may be in the workspace's SoftHSM2
    recipe = space.home / "recipe.toml"
    firmware_key = space.home / "keys" / "firmware.pub.pem"
    if not firmware_key.is_file():
        firmware_key.parent.mkdir(mode=0o700, exist_ok=True)
        private = ec.generate_private_key(ec.SECP256R1())
        write_secret(
            space.home / "keys" / "firmware.key.pem",
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        firmware_key.write_bytes(
            private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    if not recipe.is_file():
        recipe.write_text(DEMO_RECIPE)
    return recipe


def _check_chains(space: Workspace, batch: str) -> int:
    """Verify every certificate of the batch up to the root; return how many."""
    with Authority.open(space) as authority:
        manufacturing, root = authority.chain
        rows = queries.batch_certificates(authority.registry, batch)
        with authority.registry.reading() as session:
            report = audit.verify(session)
    now = utc_now()
    for serial, cert in rows:
        try:
            pki.verify_device_chain(
                x509.load_der_x509_certificate(cert.der), [manufacturing], [root], at=now
            )
        except VerificationError as error:
            raise VerificationError(f"device {serial}: {error}") from None
    if not report.ok:
        raise AuditError(f"audit log broken at event {report.broken_at}: {report.reason}")
    return len(rows)


def _ca_key_location(space: Workspace) -> str:
    with Authority.open(space) as authority:
        uri = parse_key_uri(authority.key_uri())
    if uri.scheme == "pkcs11":
        conf = os.environ.get("SOFTHSM2_CONF", "")
        return f"SoftHSM2 token {uri.attributes.get('token')} via PKCS#11 (SOFTHSM2_CONF={conf})"
    return str(space.home / "ca") + " (soft: development only)"


def demo(
    ctx: typer.Context,
    count: int = typer.Option(1000, "--count", "-n", help="How many simulated devices."),
    workers: int = typer.Option(2, "--workers", "-w", help="Parallel worker processes."),
) -> None:
    """Initialise (once), then provision a batch of simulated devices and check it all."""
    space = (
        workspace(ctx)
        if ctx.find_root().meta.get("home_given")
        else Workspace(Path("demo-home").absolute())
    )
    recipe = _prepare(space)
    _, text = load_recipe(recipe)
    batch = f"demo-{utc_now():%Y%m%dT%H%M%SZ}-{time.monotonic_ns() % 10_000:04d}"
    create_batch(space, text, recipe.parent, batch, count)
    started = time.perf_counter()
    summary = run_with_progress(space, batch, count, workers, as_json=False)
    elapsed = time.perf_counter() - started
    checked = _check_chains(space, batch)
    fields(
        "keyfab demo",
        {
            "devices provisioned": f"{summary.provisioned} of {summary.count}",
            "rate": f"{summary.provisioned / elapsed:,.0f} devices/s with {workers} worker(s)",
            "certificates verified": f"{checked} chain to the root (x509 verification)",
            "audit log": "intact (hash chain recomputed)",
            "workspace": str(space.home),
            "database": space.database_url,
            "CA keys": _ca_key_location(space),
            "recipe": str(recipe),
            "try": f"keyfab --home {space.home} devices list",
        },
    )
