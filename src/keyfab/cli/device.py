"""``keyfab device``: the device API (``keyfab.device``) from a shell on the device.

The root of trust comes from ``--rot URI`` (with ``--state-dir``) or else from
the device config file (``--config``, default ``/etc/keyfab/device.toml``,
``$KEYFAB_DEVICE_CONFIG``), the same file ``keyfab agent`` reads. Binary
inputs and outputs are files (``-i/--in``, ``-o/--out``; ``-`` or nothing is
stdin/stdout), as with openssl and tpm2-tools.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from keyfab.agent.client import AgentClient
from keyfab.agent.status import device_status
from keyfab.cli._output import JSON_OPTION, emit_json, errors
from keyfab.cli.agent_render import render_status
from keyfab.device import DeviceApi
from keyfab.device.config import DEFAULT_CONFIG, load_config
from keyfab.device.policy import read_public_key, sign_policy
from keyfab.errors import ConfigError
from keyfab.rot import load_key
from keyfab.securefile import read_bounded

app = typer.Typer(help="The device API: sign, ECDH, lock data, counters.", no_args_is_help=True)
policy_app = typer.Typer(help="Maker-signed PCR policies for lock/unlock.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")

MAX_INPUT = 1 << 20

Rot = Annotated[
    str | None, typer.Option("--rot", help="Root-of-trust URI (tpm2:, pkcs11:, soft:DIR).")
]
StateDir = Annotated[
    Path | None, typer.Option("--state-dir", help="With --rot: the device's state directory.")
]
Config = Annotated[
    Path,
    typer.Option("--config", envvar="KEYFAB_DEVICE_CONFIG", help="Device config file."),
]
Label = Annotated[str, typer.Option("--label", help="Key label in the root of trust.")]
In = Annotated[Path | None, typer.Option("--in", "-i", help="Input file [default: stdin].")]
Out = Annotated[Path | None, typer.Option("--out", "-o", help="Output file [default: stdout].")]
Socket = Annotated[
    Path | None,
    typer.Option(
        "--socket",
        envvar="KEYFAB_AGENT_SOCKET",
        help="Go through keyfab agent on this Unix socket instead of opening the device.",
    ),
]


def _open(
    rot: str | None, state_dir: Path | None, config: Path, socket: Path | None = None
) -> DeviceApi | AgentClient:
    """--socket (the agent) wins, then --rot; otherwise the device config file."""
    if socket is not None:
        return AgentClient(socket)
    if rot is not None:
        return DeviceApi.open(rot, state_dir=state_dir or Path.cwd())
    if not config.exists():
        raise ConfigError(f"give --rot URI or a device config ({config} does not exist)")
    return DeviceApi.from_config(load_config(config))


def _read(path: Path | None, what: str) -> bytes:
    if path is None or str(path) == "-":
        data = sys.stdin.buffer.read(MAX_INPUT + 1)
        if len(data) > MAX_INPUT:
            raise ConfigError(f"{what} on stdin is larger than {MAX_INPUT} bytes")
        return data
    return read_bounded(path, MAX_INPUT, what)


def _write(path: Path | None, data: bytes) -> None:
    if path is None or str(path) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        path.write_bytes(data)


def _digest(value: str | None) -> bytes | None:
    if value is None:
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ConfigError("--digest takes the digest in hex") from None


@app.command()
def sign(
    label: Label,
    source: In = None,
    out: Out = None,
    digest: Annotated[str | None, typer.Option("--digest", help="Sign this hex digest.")] = None,
    rot: Rot = None,
    state_dir: StateDir = None,
    config: Config = DEFAULT_CONFIG,
    socket: Socket = None,
) -> None:
    """Sign a file (or --digest): DER ECDSA or RSA-PSS, like 'openssl dgst -sign'."""
    message = None if digest is not None else _read(source, "message")
    with _open(rot, state_dir, config, socket) as device:
        _write(out, device.sign(label, message=message, digest=_digest(digest)))


@app.command()
def verify(
    label: Label,
    signature: Annotated[Path, typer.Option("--signature", help="The DER signature file.")],
    source: In = None,
    digest: Annotated[
        str | None, typer.Option("--digest", help="Verify over this hex digest.")
    ] = None,
    rot: Rot = None,
    state_dir: StateDir = None,
    config: Config = DEFAULT_CONFIG,
    socket: Socket = None,
) -> None:
    """Check a signature by a device key; exit 1 if it does not verify."""
    message = None if digest is not None else _read(source, "message")
    sig = read_bounded(signature, 4096, "signature")
    with _open(rot, state_dir, config, socket) as device:
        good = device.verify(label, sig, message=message, digest=_digest(digest))
    if not good:
        errors.print("Verification failure", highlight=False)
        raise typer.Exit(1)
    typer.echo("Verified OK")


@app.command()
def ecdh(
    label: Label,
    peer: Annotated[Path, typer.Option("--peer", help="The peer's public key (PEM or DER).")],
    out: Out = None,
    info: Annotated[str, typer.Option("--info", help="HKDF info string.")] = "",
    length: Annotated[int, typer.Option("--length", help="Bytes of key to derive.")] = 32,
    rot: Rot = None,
    state_dir: StateDir = None,
    config: Config = DEFAULT_CONFIG,
    socket: Socket = None,
) -> None:
    """ECDH with a device key, then HKDF-SHA256: the derived key."""
    with _open(rot, state_dir, config, socket) as device:
        _write(out, device.ecdh(label, read_public_key(peer), info=info.encode(), length=length))


@app.command()
def random(
    count: Annotated[int, typer.Argument(help="How many bytes.")],
    out: Out = None,
    hex_out: Annotated[bool, typer.Option("--hex", help="Print hex.")] = False,
    rot: Rot = None,
    state_dir: StateDir = None,
    config: Config = DEFAULT_CONFIG,
    socket: Socket = None,
) -> None:
    """Random bytes from the root of trust, like 'openssl rand'."""
    with _open(rot, state_dir, config, socket) as device:
        data = device.random(count)
    _write(out, (data.hex() + "\n").encode() if hex_out else data)


@app.command()
def counter(
    name: Annotated[str, typer.Argument(help="Counter name.")],
    increment: Annotated[bool, typer.Option("--increment", help="Add one first.")] = False,
    rot: Rot = None,
    state_dir: StateDir = None,
    config: Config = DEFAULT_CONFIG,
    socket: Socket = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Read (or --increment) a monotonic counter."""
    with _open(rot, state_dir, config, socket) as device:
        value = device.increment(name) if increment else device.counter(name)
    if as_json:
        emit_json({"counter": name, "value": value})
    else:
        typer.echo(f"{name} {value}")


@app.command("public-key")
def public_key(
    label: Label,
    out: Out = None,
    der: Annotated[bool, typer.Option("--der", help="DER instead of PEM.")] = False,
    rot: Rot = None,
    state_dir: StateDir = None,
    config: Config = DEFAULT_CONFIG,
    socket: Socket = None,
) -> None:
    """A device key's public key (SubjectPublicKeyInfo)."""
    with _open(rot, state_dir, config, socket) as device:
        spki = device.public_key(label)
    if not der:
        key = serialization.load_der_public_key(spki)
        spki = key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    _write(out, spki)


@app.command()
def certificate(
    out: Out = None,
    rot: Rot = None,
    state_dir: StateDir = None,
    config: Config = DEFAULT_CONFIG,
    socket: Socket = None,
) -> None:
    """The device's identity certificate and chain, PEM, leaf first."""
    with _open(rot, state_dir, config, socket) as device:
        chain = device.certificate()
    _write(
        out,
        b"".join(
            x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
            for der in chain
        ),
    )


@app.command()
def lock(
    source: In = None,
    out: Out = None,
    rot: Rot = None,
    state_dir: StateDir = None,
    config: Config = DEFAULT_CONFIG,
    socket: Socket = None,
) -> None:
    """Bind data to this device (and on a TPM to a maker-approved boot state)."""
    data = _read(source, "data")
    with _open(rot, state_dir, config, socket) as device:
        _write(out, device.lock(data))


@app.command()
def unlock(
    source: In = None,
    out: Out = None,
    rot: Rot = None,
    state_dir: StateDir = None,
    config: Config = DEFAULT_CONFIG,
    socket: Socket = None,
) -> None:
    """Recover data locked by this device; refused for another device's or a changed blob."""
    blob = _read(source, "locked blob")
    with _open(rot, state_dir, config, socket) as device:
        _write(out, device.unlock(blob))


@policy_app.command("sign")
def policy_sign(
    key: Annotated[str, typer.Option("--key", help="The maker's policy-signing key URI.")],
    pcr: Annotated[
        list[str], typer.Option("--pcr", help="INDEX=HEX, one per PCR the release measures.")
    ],
    out: Out = None,
    bank: Annotated[str, typer.Option("--bank", help="PCR bank.")] = "sha256",
) -> None:
    """Maker side: approve a release's PCR values for devices' lock/unlock."""
    values: dict[int, bytes] = {}
    for item in pcr:
        index, equals, value = item.partition("=")
        try:
            values[int(index)] = bytes.fromhex(value)
        except ValueError:
            raise ConfigError(f"--pcr {item!r}: use INDEX=HEX") from None
        if not equals:
            raise ConfigError(f"--pcr {item!r}: use INDEX=HEX")
    _write(out, sign_policy(load_key(key), bank, values))


@policy_app.command("apply")
def policy_apply(
    source: Annotated[Path, typer.Argument(help="The signed policy file.")],
    config: Config = DEFAULT_CONFIG,
    socket: Socket = None,
) -> None:
    """Device side: check a maker-signed policy and keep it (needs the device config)."""
    with _open(None, None, config, socket) as device:
        kept = device.apply_policy(read_bounded(source, 4096, "PCR policy"))
    typer.echo(f"policy kept in {kept}")


@app.command()
def status(
    config: Config = DEFAULT_CONFIG,
    socket: Socket = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Identity, certificate expiry, last attestation, tamper state (from the agent, or
    read from the device's state when no agent answers)."""
    report = device_status(config, socket)
    if as_json:
        emit_json(report)
    else:
        render_status(report)
