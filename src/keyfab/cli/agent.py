"""``keyfab agent``: the device agent (``keyfab.agent``) and its maker-side manifest tool.

``run`` serves the device API on the config's Unix socket until SIGTERM, logging
to stderr (the journal under systemd); ``status`` asks it (or reads the state
when it is not running); ``rearm`` puts a device refused after a tamper event
back in service once it is re-provisioned; ``manifest sign/verify`` make and
check the boot manifest the agent checks at start.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from keyfab.agent.daemon import Agent, rearm
from keyfab.agent.manifest import check_boot, sign_manifest
from keyfab.agent.policy import load_settings
from keyfab.agent.status import device_status
from keyfab.cli._output import JSON_OPTION, emit_json
from keyfab.cli.agent_render import render_status
from keyfab.device.config import DEFAULT_CONFIG
from keyfab.device.policy import read_public_key
from keyfab.errors import VerificationError
from keyfab.rot import load_key

app = typer.Typer(help="The device agent: the device API on a Unix socket.", no_args_is_help=True)
manifest_app = typer.Typer(help="Maker-signed boot manifests.", no_args_is_help=True)
app.add_typer(manifest_app, name="manifest")

Config = Annotated[
    Path, typer.Option("--config", envvar="KEYFAB_DEVICE_CONFIG", help="Device config file.")
]
Socket = Annotated[
    Path | None,
    typer.Option("--socket", envvar="KEYFAB_AGENT_SOCKET", help="The agent's Unix socket."),
]


@app.command()
def run(
    config: Config = DEFAULT_CONFIG,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every call.")] = False,
) -> None:
    """Check the boot manifest, then serve the device API until SIGTERM."""
    handler = logging.StreamHandler(sys.stderr)  # the journal adds the time
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("keyfab.agent")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    Agent(load_settings(config)).run()


@app.command()
def status(
    config: Config = DEFAULT_CONFIG, socket: Socket = None, as_json: bool = JSON_OPTION
) -> None:
    """Identity, certificate expiry, last attestation, tamper state."""
    report = device_status(config, socket)
    if as_json:
        emit_json(report)
    else:
        render_status(report)


@app.command("rearm")
def rearm_command(config: Config = DEFAULT_CONFIG) -> None:
    """Put a device refused after a tamper event or boot mismatch back in service."""
    rearm(config)
    typer.echo("the agent serves again (restart it if it is running)")


@manifest_app.command("sign")
def manifest_sign(
    key: Annotated[str, typer.Option("--key", help="The maker's signing key URI (recipe).")],
    release: Annotated[str, typer.Option("--release", help="The release this manifest is.")],
    files: Annotated[list[Path], typer.Argument(help="The files to list, as the device has them.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Manifest output file [default: stdout].")
    ] = None,
) -> None:
    """Maker side: sign the SHA-256 of each file for the agent's boot check."""
    data = sign_manifest(load_key(key), release, files)
    if out is None:
        sys.stdout.buffer.write(data)
    else:
        out.write_bytes(data)


@manifest_app.command("verify")
def manifest_verify(
    manifest: Annotated[Path, typer.Argument(help="The signed manifest file.")],
    key: Annotated[Path, typer.Option("--key", help="The maker's public key (PEM or DER).")],
) -> None:
    """Check a manifest's signature and the files it lists on this machine; exit 1 on a mismatch."""
    release, problems = check_boot(manifest, read_public_key(key))
    if problems:
        raise VerificationError(f"boot manifest {manifest}: " + "; ".join(problems))
    typer.echo(f"release {release}: every file as signed")
