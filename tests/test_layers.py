"""The layering the architecture promises, checked on the source itself.

``cli/`` and ``server/`` parse arguments, speak HTTP and render: they never
touch SQLAlchemy, never write audit events, never build registry rows and
never sign with a CA key themselves. Everything that signs, revokes or grants
access goes through ``keyfab.authority``; reads go through ``registry.queries``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import keyfab

SOURCE = Path(keyfab.__file__).parent
FRONT_ENDS = ("cli", "server")
FORBIDDEN_MODULES = ("sqlalchemy",)
FORBIDDEN_NAMES = {
    "keyfab.audit": {"append", "append_many", "sign_checkpoint", "lock"},
    "keyfab.registry": {"certificate_row"},
    "keyfab.registry.rows": {"certificate_row"},
    "keyfab.authority.service": {"record"},
    "keyfab.authority": {"record"},
}
SIGNING_CALLS = {"issue", "issue_for_csr", "crl", "create_root", "create_subordinate", "sign"}
"""Methods of pki.CertificateAuthority (and Authority.sign) that make a signature."""
LAYERS = [
    # (package, packages it must never import): the arrows only point down.
    ("registry", ("authority", "provision", "server", "cli", "audit")),
    ("pki", ("registry", "authority", "provision", "server", "cli", "audit")),
    ("audit", ("authority", "provision", "server", "cli")),
    ("rot", ("registry", "authority", "provision", "server", "cli", "audit", "pki")),
    ("authority", ("provision", "cmp", "server", "cli")),
    ("cmp", ("provision", "server", "cli")),
    ("provision", ("cmp", "server", "cli")),
    ("report", ("provision", "cmp", "server", "cli")),
    ("server", ("cli",)),
    # the device side: no CA key, registry or audit log is reachable from it
    ("device", ("registry", "authority", "provision", "cmp", "server", "cli", "audit", "pki")),
    # the agent stands on device and rot (and an HTTP client): never on the factory's side
    ("agent", ("registry", "authority", "provision", "cmp", "server", "cli", "audit", "pki")),
]
DEVICE_KEY_SIGNERS = {"cli/device.py"}
"""Front ends whose ``.sign()`` is the device's own key via keyfab.device (no CA key: LAYERS)."""


def _modules(package: str) -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted((SOURCE / package).rglob("*.py")):
        yield path, ast.parse(path.read_text(), str(path))


def _imports(tree: ast.Module) -> Iterator[tuple[str, str | None]]:
    """(module, imported name or None) for every import in the file, nested ones too."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                yield node.module, alias.name


@pytest.mark.parametrize("package", FRONT_ENDS)
def test_front_ends_do_not_touch_the_database_or_sign(package: str) -> None:
    problems = []
    for path, tree in _modules(package):
        where = path.relative_to(SOURCE)
        for module, name in _imports(tree):
            if module.split(".")[0] in FORBIDDEN_MODULES:
                problems.append(f"{where}: imports {module}")
            if name in FORBIDDEN_NAMES.get(module, ()):
                problems.append(f"{where}: imports {module}.{name}")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in SIGNING_CALLS
                and not (node.func.attr == "sign" and str(where) in DEVICE_KEY_SIGNERS)
            ):
                problems.append(f"{where}:{node.lineno}: calls .{node.func.attr}() itself")
            if isinstance(node, ast.Attribute) and node.attr in ("append", "append_many"):
                owner = node.value
                if isinstance(owner, ast.Name) and owner.id in ("audit", "audit_log"):
                    problems.append(f"{where}:{node.lineno}: appends audit events itself")
    assert problems == []


@pytest.mark.parametrize(("package", "forbidden"), LAYERS)
def test_imports_only_point_down(package: str, forbidden: tuple[str, ...]) -> None:
    upward = [
        f"{path.relative_to(SOURCE)}: imports {module}"
        for path, tree in _modules(package)
        for module, _ in _imports(tree)
        if module.startswith("keyfab.") and module.split(".")[1] in forbidden
    ]
    assert upward == []


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    """The walker is not vacuous: a planted import and signing call are found."""
    tree = ast.parse("from sqlalchemy import select\nca.issue(template, key)\n")
    assert ("sqlalchemy", "select") in list(_imports(tree))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert isinstance(calls[0].func, ast.Attribute)
    assert calls[0].func.attr in SIGNING_CALLS
