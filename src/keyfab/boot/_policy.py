"""Verification *policy*: U-Boot's rules for whether a configuration may boot.

- Keys in the control DTB with ``required = "conf"`` must verify a signature node
  of the configuration: all of them, or at least one when ``/signature`` says
  ``required-mode = "any"``. Every signature node is tried for each key.
- Keys with ``required = "image"`` must each verify a signature node of every
  image the configuration loads.
- Every hash node of every referenced image must match; an image without one fails.
- Optionally, the configuration's ``rollback-index`` must reach a minimum, and
  is only trusted when a signature over the configuration verified.

Signatures by keys that are not required are checked and reported but, as in
U-Boot, do not change the verdict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from keyfab.boot._errors import FdtError, FitError
from keyfab.boot._fdt import Fdt, Node
from keyfab.boot._fit import CONFIGS_PATH, IMAGES_PATH, SIGNATURE_PREFIX, FitImage, sub_nodes
from keyfab.boot._keynode import SIGNATURE_NODE, ControlKey, read_keys
from keyfab.boot._regions import Region
from keyfab.boot._verify import (
    check_config_signature,
    check_hash,
    check_image_signature,
    config_regions,
    image_hash_nodes,
)

ROLLBACK_PROPERTY = "rollback-index"


@dataclass(frozen=True)
class NodeResult:
    """What happened to one node: ``ok`` is None when it was not checked."""

    path: str
    kind: str
    ok: bool | None
    detail: str


@dataclass
class VerifyReport:
    """The verdict for one configuration and the result for every node behind it."""

    config: str
    ok: bool = True
    rollback_index: int | None = None
    """The configuration's rollback-index, when a verified signature covers it."""
    reasons: list[str] = field(default_factory=list)
    nodes: list[NodeResult] = field(default_factory=list)

    def fail(self, reason: str) -> None:
        """Record a failure once: two checks finding the same fault say it once."""
        self.ok = False
        if reason not in self.reasons:
            self.reasons.append(reason)

    @property
    def reason(self) -> str:
        """The failures, each naming its image or hash; the configuration is implied."""
        return "; ".join(self.reasons) or "ok"

    @property
    def message(self) -> str:
        """One line for the user: the configuration named once, then the reasons."""
        return f"configuration {self.config!r}: {self.reason}"


Checker = Callable[[Node, ControlKey], str | None]


def _try_signatures(
    report: VerifyReport, base: str, sigs: list[Node], keys: list[ControlKey], check: Checker
) -> set[str]:
    """Try every signature node with every key, as U-Boot does key by key.

    Returns the names of the keys that verified at least one node. The report
    names the hinted key first.
    """
    verified: set[str] = set()
    for sig in sigs:
        hint = sig.prop("key-name-hint")
        hint_text = hint.as_str() if hint is not None else ""
        outcome: tuple[bool | None, str] = (None, "no matching key in the control DTB")
        for key in sorted(keys, key=lambda k: k.hint != hint_text):
            reason = check(sig, key)
            if reason is None:
                verified.add(key.node_name)
                if not outcome[0]:
                    outcome = (True, f"verified with key {key.hint!r}")
            elif key.hint == hint_text:
                outcome = (False, f"key {key.hint!r}: {reason}")
        report.nodes.append(NodeResult(f"{base}/{sig.name}", "signature", *outcome))
    return verified


def _apply_required(
    report: VerifyReport, required: list[ControlKey], verified: set[str], what: str, any_mode: bool
) -> None:
    """Fail for required keys that verified nothing; ``what`` prefixes image reasons only."""
    passed = [k for k in required if k.node_name in verified]
    if any_mode and required and not passed:
        report.fail(f"{what}none of the required keys verified a signature")
    if not any_mode:
        for key in required:
            if key.node_name not in verified:
                report.fail(f"{what}required key {key.hint!r} did not verify a signature")


def _image_checker(fit: FitImage, image: Node) -> Checker:
    def check(sig: Node, key: ControlKey) -> str | None:
        return check_image_signature(fit, image, sig, key)

    return check


def _check_images(
    report: VerifyReport, fit: FitImage, config: Node, keys: list[ControlKey], any_mode: bool
) -> None:
    required = [k for k in keys if k.required == "image"]
    seen: set[str] = set()
    for _, image in fit.references(config):
        if image.name in seen:
            continue
        seen.add(image.name)
        base = f"{IMAGES_PATH}/{image.name}"
        hashes = image_hash_nodes(image)
        if not hashes:
            report.fail(f"image {image.name!r} has no hash node")
        for node in hashes:
            reason = check_hash(fit, image, node)
            report.nodes.append(
                NodeResult(f"{base}/{node.name}", "hash", reason is None, reason or "ok")
            )
            if reason:
                report.fail(f"image {image.name!r} {node.name}: {reason}")
        verified = _try_signatures(
            report, base, sub_nodes(image, SIGNATURE_PREFIX), keys, _image_checker(fit, image)
        )
        _apply_required(report, required, verified, f"image {image.name!r}: ", any_mode)


def _check_rollback(report: VerifyReport, config: Node, min_version: int, signed: bool) -> None:
    prop = config.prop(ROLLBACK_PROPERTY)
    path = f"{CONFIGS_PATH}/{config.name}"
    try:
        version = prop.as_u32() if prop is not None else None
    except FdtError as error:
        report.fail(str(error))
        return
    if version is None:
        report.fail(f"configuration has no {ROLLBACK_PROPERTY} and --min-version is set")
    elif not signed:
        report.fail(f"{ROLLBACK_PROPERTY} is not covered by a verified signature")
    elif version < min_version:
        report.fail(f"rollback: {ROLLBACK_PROPERTY} {version} is below the minimum {min_version}")
    else:
        report.rollback_index = version
    report.nodes.append(
        NodeResult(
            f"{path}:{ROLLBACK_PROPERTY}",
            "rollback",
            bool(version is not None and signed and version >= min_version),
            f"{version} (minimum {min_version})",
        )
    )


def _regions(fit: FitImage, config: Node) -> list[Region]:
    """The configuration's signed regions; its errors never name the configuration.

    The report names it once (``VerifyReport.message``), so a reason that names
    it again would read "configuration 'c': configuration 'c' ...".
    """
    if not fit.references(config):
        raise FitError("it references no images")
    return config_regions(fit, config)


def verify_fit(
    fit: FitImage,
    control: Fdt | None,
    config_name: str | None = None,
    min_version: int | None = None,
) -> VerifyReport:
    """Give U-Boot's verdict on booting ``config_name`` (default config) of ``fit``."""
    config = fit.configuration(config_name)
    report = VerifyReport(config.name)
    keys = read_keys(control) if control is not None else []
    parent = control.root.child(SIGNATURE_NODE) if control is not None else None
    mode = parent.prop("required-mode") if parent is not None else None
    any_mode = mode is not None and mode.as_str() == "any"
    verified: set[str] = set()
    try:
        regions = _regions(fit, config)
    except (FitError, FdtError) as error:
        report.fail(str(error))
    else:
        verified = _try_signatures(
            report,
            f"{CONFIGS_PATH}/{config.name}",
            sub_nodes(config, SIGNATURE_PREFIX),
            keys,
            lambda sig, key: check_config_signature(fit, regions, sig, key),
        )
    required = [k for k in keys if k.required == "conf"]
    _apply_required(report, required, verified, "", any_mode)
    _check_images(report, fit, config, keys, any_mode=False)
    if min_version is not None:
        _check_rollback(report, config, min_version, signed=bool(verified))
    return report
