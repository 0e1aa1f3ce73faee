"""``keyfab fit``: build, sign, verify and inspect U-Boot FIT images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.text import Text
from rich.tree import Tree

from keyfab.authority import Authority
from keyfab.authority.references import check_release, record_release
from keyfab.boot import (
    Fdt,
    FitVerificationError,
    SignatureAlgorithm,
    Signer,
    VerifyReport,
    add_key,
    describe,
    hint_from_image,
    load_description,
    load_dtb,
    load_fit,
    read_keys,
    sign_fit,
    signed_release,
    signing_key,
    verify_fit,
    write_atomic,
)
from keyfab.cli._context import operator, workspace
from keyfab.cli._output import JSON_OPTION, KeyfabGroup, console, emit_json, print_error, table
from keyfab.errors import ConfigError
from keyfab.registry import Release, queries
from keyfab.rot import KeyAlgorithm, load_key, open_rot

# KeyfabGroup: the error boundary also when this sub-app runs on its own
# (``python -m keyfab.cli.fit``, tests).
app = typer.Typer(
    help="U-Boot verified boot: FIT images and control-DTB keys.",
    no_args_is_help=True,
    cls=KeyfabGroup,
)


@app.command()
def sign(
    ctx: typer.Context,
    image: Annotated[Path, typer.Argument(help="FIT image (.itb) to sign in place")],
    key: Annotated[
        str | None, typer.Option(help="key URI (soft:, pkcs11:, tpm2:) or a PEM key file")
    ] = None,
    keydir: Annotated[
        Path | None,
        typer.Option("-k", "--keydir", help="mkimage key directory: <hint>.key and <hint>.crt"),
    ] = None,
    key_name_hint: Annotated[
        str | None, typer.Option(help="key name in the control DTB; default: the image's")
    ] = None,
    algo: Annotated[str | None, typer.Option(help="sha256,rsa2048 ...; default: from key")] = None,
    padding: Annotated[str | None, typer.Option(help="pss for RSA-PSS")] = None,
    conf: Annotated[list[str] | None, typer.Option(help="configuration(s); default all")] = None,
    required: Annotated[str | None, typer.Option(help="mark key required: conf|image")] = None,
    control: Annotated[
        Path | None, typer.Option("-K", "--control", help="control DTB to add the key to")
    ] = None,
    sign_images: Annotated[bool, typer.Option(help="also sign each image")] = False,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="write here")] = None,
    product: Annotated[
        str | None, typer.Option(help="record the signed release for this product")
    ] = None,
    version: Annotated[
        str | None, typer.Option(help="the release's version (with --product)")
    ] = None,
    rollback: Annotated[
        int | None, typer.Option(help="rollback index; default: the configuration's")
    ] = None,
) -> None:
    """Add hashes, sign configurations (and images) and write the key into the control DTB.

    As with mkimage, -k DIR reads DIR/<hint>.key and the hint defaults to the
    key-name-hint the image's signature nodes (from its .its) already name.
    With --product and --version the release is recorded in the workspace's
    registry (what U-Boot will measure for each configuration signed) before
    the image is written, so attestation policies can name it.
    """
    if (product is None) != (version is None):
        raise ConfigError("--product and --version go together")
    if product is not None and version is not None:
        check_release(product, version, rollback)
    fit = load_fit(image)
    hint = key_name_hint or hint_from_image(fit, conf)
    private = signing_key(key, keydir, hint)
    algorithm = SignatureAlgorithm.parse(algo or SignatureAlgorithm.for_key(private).name, padding)
    dtb = load_dtb(control) if control is not None else None
    if dtb is not None:  # before writing anything: a bad --required stops here
        add_key(dtb, private.public_key(), hint, algorithm.name, required)
    signer = Signer(private, hint, algorithm)
    signed = sign_fit(fit, signer, conf, images=sign_images)
    if product is not None and version is not None:
        release = signed_release(
            fit,
            signer,
            signed,
            product=product,
            version=version,
            rollback_index=rollback,
            image=(output or image).name,
        )
        with Authority.open(workspace(ctx)) as authority:  # before writing: a duplicate stops here
            record_release(authority, release, operator())
    else:
        print_error("not recorded as a release (no --product)", label="note:", style="yellow")
    write_atomic(output or image, fit.chunks())
    if control is not None and dtb is not None:
        write_atomic(control, dtb.chunks())
    console.print(f"signed {', '.join(signed)} with {algorithm.name}:{hint}")
    if product is not None:
        console.print(f"recorded release {version} of {product}")


def _print_report(report: VerifyReport) -> None:
    labels = {True: "ok", False: "FAILED", None: "unchecked"}
    table(
        f"configuration {report.config}",
        ["node", "kind", "result", "detail"],
        [[n.path, n.kind, labels[n.ok], n.detail] for n in report.nodes],
    )


@app.command()
def verify(
    image: Annotated[Path, typer.Argument(help="FIT image (.itb)")],
    control: Annotated[
        Path | None,
        typer.Option("-k", "--control", help="U-Boot control DTB with keys (fit_check_sign -k)"),
    ] = None,
    conf: Annotated[str | None, typer.Option(help="configuration (default: default)")] = None,
    min_version: Annotated[int | None, typer.Option(help="minimum rollback-index")] = None,
    counter_rot: Annotated[str | None, typer.Option(help="rot URI holding a counter")] = None,
    counter: Annotated[str, typer.Option(help="monotonic counter name")] = "rollback",
    advance: Annotated[bool, typer.Option(help="raise the counter to the image's index")] = False,
    as_json: bool = JSON_OPTION,
) -> None:
    """Verify as U-Boot would: required keys, every signature node, every image hash.

    With --counter-rot the minimum version is the root of trust's monotonic
    counter; --advance then raises it to a verified image's rollback-index, so
    older images are refused from now on.
    """
    fit, keys = load_fit(image), _key_source(control)
    if counter_rot is None:
        report = verify_fit(fit, keys, conf, min_version)
    else:
        rot = open_rot(counter_rot)
        try:
            monotonic = rot.counter(counter)
            report = verify_fit(fit, keys, conf, max(monotonic.read(), min_version or 0))
            if advance and report.ok and report.rollback_index is not None:
                monotonic.advance_to(report.rollback_index)
        finally:
            rot.close()
    if as_json:
        emit_json(
            {
                "config": report.config,
                "ok": report.ok,
                "reason": report.reason,
                "nodes": [vars(n) for n in report.nodes],
            }
        )
    else:
        _print_report(report)
    if not report.ok:
        raise FitVerificationError(report.message)


def _key_source(control: Path | None) -> Fdt:
    """The control DTB, which must hold keys: without one nothing is verified.

    An image whose hashes match proves nothing about who made it, so, like
    fit_check_sign (which requires -k), verifying needs keys to verify against.
    """
    if control is None:
        raise FitVerificationError("no keys to verify against: pass --control or -k")
    dtb = load_dtb(control)
    if not read_keys(dtb):
        raise FitVerificationError(f"no keys to verify against: {control} has no /signature keys")
    return dtb


def _tree(label: str, content: dict[str, Any]) -> Tree:
    tree = Tree(label)
    for key, value in content.items():
        if isinstance(value, dict):
            tree.add(_tree(f"[bold]{escape(key)}[/]", value))
        else:
            tree.add(Text(f"{key} = {value}"))
    return tree


@app.command()
def inspect(
    image: Annotated[Path, typer.Argument(help="FIT image (.itb)")],
    as_json: bool = JSON_OPTION,
) -> None:
    """Show the images, configurations, hashes and signatures of a FIT."""
    summary = describe(load_fit(image))
    if as_json:
        emit_json(summary)
    else:
        console.print(_tree(f"[bold]{escape(image.name)}[/]", summary))


@app.command()
def build(
    description: Annotated[Path, typer.Argument(help="image tree source (.its) or TOML")],
    output: Annotated[Path, typer.Option("-o", "--output", help="the .itb to write")],
) -> None:
    """Build a FIT (with hash values) from an .its, as mkimage -f does, or from TOML.

    An .its is compiled by dtc with /incbin/ paths relative to its folder; sign
    the result with `fit sign` (the key-name-hint of its signature nodes is used).
    """
    fit = load_description(description)
    write_atomic(output, fit.chunks())
    console.print(f"wrote {output} ({len(fit.images())} images)")


@app.command("add-key")
def add_key_command(
    control: Annotated[Path, typer.Argument(help="U-Boot control DTB to add the key to")],
    key: Annotated[str, typer.Option(help="key URI (only its public half is used)")],
    key_name_hint: Annotated[str, typer.Option(help="key name in the control DTB")],
    algo: Annotated[str | None, typer.Option(help="sha256,rsa2048 ...; default: from key")] = None,
    required: Annotated[str | None, typer.Option(help="mark key required: conf|image")] = None,
) -> None:
    """Write a public key into a control DTB without signing anything."""
    private = load_key(key)
    algorithm = SignatureAlgorithm.parse(algo) if algo else SignatureAlgorithm.for_key(private)
    dtb = load_dtb(control)
    add_key(dtb, private.public_key(), key_name_hint, algorithm.name, required)
    write_atomic(control, dtb.chunks())
    console.print(f"added key-{key_name_hint} ({algorithm.name}) to {control}")


@app.command()
def keys(
    control: Annotated[Path, typer.Argument(help="U-Boot control DTB")],
    as_json: bool = JSON_OPTION,
) -> None:
    """List the verification keys of a control DTB as U-Boot reads them."""
    rows = [
        {
            "node": k.node_name,
            "hint": k.hint,
            "algo": k.algo,
            "required": k.required,
            "key": KeyAlgorithm.of(k.public_key).value,
        }
        for k in read_keys(load_dtb(control))
    ]
    if as_json:
        emit_json(rows)
    else:
        table(
            f"keys in {control.name}",
            ["node", "hint", "algo", "key", "required"],
            [[r["node"], r["hint"], r["algo"], r["key"], r["required"]] for r in rows],
        )


@app.command()
def releases(
    ctx: typer.Context,
    product: Annotated[str | None, typer.Option(help="only this product's releases")] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """The releases `fit sign --product` recorded: version, rollback index, key, configurations."""
    with workspace(ctx).registry() as registry:
        rows = [release_fields(r) for r in queries.releases(registry, product)]
    if as_json:
        emit_json(rows)
        return
    table(
        "releases",
        ["product", "version", "rollback", "key", "configurations", "signed"],
        [
            [
                r["product"],
                r["version"],
                r["rollback_index"],
                r["key_name"],
                ", ".join(r["measurements"]),
                r["created_at"],
            ]
            for r in rows
        ],
    )


def release_fields(release: Release) -> dict[str, Any]:
    """A release as JSON: every column, the measurements as data."""
    return {
        "product": release.product,
        "version": release.version,
        "rollback_index": release.rollback_index,
        "key_name": release.key_name,
        "key_fingerprint": release.key_fingerprint,
        "algorithm": release.algorithm,
        "image": release.image,
        "measurements": json.loads(release.measurements),
        "created_at": release.created_at.isoformat(),
    }


if __name__ == "__main__":
    app()
