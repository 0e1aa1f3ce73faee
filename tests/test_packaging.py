"""``pip install keyfab`` without extras, as a new user would: the base commands run.

One fresh virtual environment for the module: keyfab's wheel is built from this
checkout with the project's own setuptools, and its base dependencies come from
a wheelhouse kept in pytest's cache (keyed by requirements.lock), so after the
first run the install is offline. Filling the wheelhouse uses pip's configured
sources, pinned to the lock's versions. No PYTHONPATH reaches the new
environment: what runs is what the wheel installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .conftest import RECIPE

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
OPTIONAL = ("fastapi", "uvicorn", "httptools", "uvloop", "pkcs11", "tpm2_pytss", "psycopg")
FIT = """\
description = "keyfab base install"
[images.kernel]
file = "kernel.bin"
type = "kernel"
arch = "arm64"
os = "linux"
load = 0x40400000
entry = 0x40400000
[configurations]
default = "conf-1"
[configurations.conf-1]
kernel = "kernel"
"""


def _run(*command: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload,no-any-return]
        [str(part) for part in command], capture_output=True, text=True, check=False, **kwargs
    )


def _wheel(work: Path) -> Path:
    """keyfab's wheel, built from a copy of the checkout (the build writes into it)."""
    source = work / "source"
    shutil.copytree(
        ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    dist = work / "dist"
    built = _run(
        sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
        "-w", dist, source,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("keyfab-*.whl")
    return wheel


def _wheelhouse(request: pytest.FixtureRequest, work: Path) -> Path:
    """Where the base dependencies' wheels are kept between runs."""
    key = hashlib.sha256(LOCK.read_bytes()).hexdigest()[:16]
    cache = getattr(request.config, "cache", None)
    return cache.mkdir(f"keyfab-base-wheels-{key}") if cache is not None else work / "wheels"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """keyfab's wheel, built once for the module."""
    return _wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def base(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, wheel: Path
) -> Path:
    """The bin directory of a fresh venv with ``pip install keyfab`` (no extras)."""
    work = tmp_path_factory.mktemp("base-install")
    venv = work / "venv"
    made = _run(sys.executable, "-m", "venv", venv)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    wheels = _wheelhouse(request, work)

    def install() -> subprocess.CompletedProcess[str]:
        return _run(
            python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
            "--no-index", "--find-links", wheels, wheel,
        )  # fmt: skip

    installed = install()
    if installed.returncode != 0:  # first run: fetch the base dependencies, as locked
        fetched = _run(
            sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
            "-w", wheels, "-c", LOCK, wheel,
        )  # fmt: skip
        assert fetched.returncode == 0, fetched.stderr
        for stale in wheels.glob("keyfab-*.whl"):
            stale.unlink()
        installed = install()
    assert installed.returncode == 0, installed.stderr
    return venv / "bin"


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    """The caller's environment without anything that points at this checkout."""
    drop = ("PYTHONPATH", "KEYFAB_HOME", "KEYFAB_DATABASE_URL", "SOFTHSM2_CONF", "VIRTUAL_ENV")
    return {name: value for name, value in os.environ.items() if name not in drop}


@pytest.fixture(scope="module")
def home(base: Path, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("base-home") / "home"
    done = _run(base / "keyfab", "init", "--home", home, "--org", "Acme", env=env)
    assert done.returncode == 0, done.stderr
    return home


def test_wheel_holds_package_data(wheel: Path) -> None:
    """Migrations and the service's offline page assets ship inside the wheel."""
    names = set(zipfile.ZipFile(wheel).namelist())
    for data in ("keyfab/py.typed", "keyfab/server/static/keyfab.css"):
        assert data in names


def test_no_extra_is_installed(base: Path, env: dict[str, str]) -> None:
    probe = "import importlib.util as u, sys; print([m for m in sys.argv[1:] if u.find_spec(m)])"
    found = _run(base / "python", "-c", probe, *OPTIONAL, env=env)
    assert found.stdout.strip() == "[]", found.stdout + found.stderr


def test_help(base: Path, env: dict[str, str]) -> None:
    shown = _run(base / "keyfab", "--help", env=env)
    assert shown.returncode == 0, shown.stderr
    for command in ("init", "provision", "fit", "manifest", "audit", "serve"):
        assert command in shown.stdout
    assert "[default: ~/.keyfab]" in " ".join(shown.stdout.replace("│", " ").split())


def test_soft_batch_manifest_and_audit(
    base: Path, env: dict[str, str], home: Path, tmp_path: Path
) -> None:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE)
    keyfab = (base / "keyfab", "--home", home)
    done = _run(*keyfab, "provision", "--recipe", recipe, "--count", "10", "--batch", "b1",
                "--json", env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["provisioned"], summary["failed"]) == (10, 0)

    signer = f"soft:{tmp_path / 'signer.pem'}"
    done = _run(*keyfab, "manifest", "signer", "--key", signer, "--new",
                "--out", tmp_path / "signer-cert.pem", env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = _run(*keyfab, "manifest", "export", "--batch", "b1", "--signer", signer,
                "--signer-cert", tmp_path / "signer-cert.pem", "--out", tmp_path / "b1.json",
                env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(json.loads((tmp_path / "b1.json").read_text())) == 10

    done = _run(*keyfab, "audit", "verify", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["events"] >= 2 + 10


def test_fit_build_sign_verify(base: Path, env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "kernel.bin").write_bytes(os.urandom(4096))
    (tmp_path / "fit.toml").write_text(FIT)
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "dev.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    image, control = tmp_path / "image.itb", tmp_path / "control.dtb"
    (tmp_path / "control.dts").write_text("/dts-v1/;\n/ { signature { }; };\n")
    made = subprocess.run(
        ["dtc", "-I", "dts", "-O", "dtb", "-o", str(control), str(tmp_path / "control.dts")],
        capture_output=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    fit = (base / "keyfab", "fit")
    key = f"soft:{tmp_path / 'dev.pem'}"
    for step in (
        ("build", tmp_path / "fit.toml", "-o", image),
        ("sign", image, "--key", key, "--key-name-hint", "dev", "-K", control),
        ("verify", image, "--control", control, "--json"),
    ):
        done = _run(*fit, *step, env=env)
        assert done.returncode == 0, (step, done.stderr)


def test_demo_keeps_ca_keys_in_soft_files(base: Path, env: dict[str, str], tmp_path: Path) -> None:
    done = _run(base / "keyfab", "--home", tmp_path / "demo", "demo", "--count", "5", env=env)
    assert done.returncode == 0, done.stderr
    assert "CA keys in soft key files" in done.stdout


def test_serve_names_the_server_extra(base: Path, env: dict[str, str], home: Path) -> None:
    done = _run(base / "keyfab", "--home", home, "serve", env=env)
    assert done.returncode == 1
    assert done.stderr == "error: keyfab serve needs: pip install 'keyfab[server]'\n"


def test_postgres_url_names_the_postgres_extra(base: Path, env: dict[str, str], home: Path) -> None:
    url = "postgresql+psycopg://keyfab@127.0.0.1:1/keyfab"
    done = _run(base / "keyfab", "--home", home, "devices", "list",
                env={**env, "KEYFAB_DATABASE_URL": url})  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == "error: a PostgreSQL registry needs: pip install 'keyfab[postgres]'\n"
