"""CA rotation and root rollover, judged by the real ``openssl verify`` and the registry."""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
from alembic import command
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from keyfab.authority import Authority, rotate
from keyfab.errors import ConfigError, ConflictError
from keyfab.provision import create_batch, run_batch
from keyfab.registry import Registry, queries
from keyfab.registry.db import REVISIONS, _alembic
from keyfab.server._service import Service
from keyfab.workspace import Workspace

from .conftest import RECIPE, Keyfab


def _pem(path: Path, *certificates: x509.Certificate) -> Path:
    path.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in certificates))
    return path


def _device(workspace: Workspace, tmp_path: Path, batch: str) -> tuple[str, x509.Certificate]:
    """Provision one device in a new batch; its serial and IDevID certificate."""
    create_batch(workspace, RECIPE, tmp_path, batch, 1)
    run_batch(workspace, batch)
    with workspace.registry() as registry:
        (row,) = queries.device_page(registry, batch=batch).items
        record = queries.device(registry, row.device.serial)
    return row.device.serial, x509.load_der_x509_certificate(record.certificates[0].der)


def _verify(tmp_path: Path, anchor: Path, untrusted: Path, leaf: Path, *extra: str) -> str:
    """``openssl verify``'s verdict: "OK" or its error line."""
    done = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(anchor),
            "-untrusted",
            str(untrusted),
            *extra,
            str(leaf),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    return "OK" if done.returncode == 0 else (done.stdout + done.stderr)


def _crl(keyfab: Keyfab, path: Path, ca: str | None = None) -> x509.CertificateRevocationList:
    code, _, err = keyfab("ca", "crl", "--out", str(path), *(["--ca", ca] if ca else []))
    assert code == 0, err
    return x509.load_pem_x509_crl(path.read_bytes())


def _number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def test_rotation_keeps_the_old_fleet_verifying_and_on_the_old_crl(
    workspace: Workspace, tmp_path: Path
) -> None:
    keyfab = Keyfab(workspace.home)
    old_serial, old_device = _device(workspace, tmp_path, "before")
    with Authority.open(workspace) as authority:
        old_ca, root = authority.chain
    code, out, err = keyfab("ca", "rotate")
    assert code == 0, err
    assert "manufacturing-2 issues now" in out
    new_serial, new_device = _device(workspace, tmp_path, "after")
    with Authority.open(workspace) as authority:
        new_ca = authority.certificate
        assert (authority.issuing, authority.state("manufacturing")) == (
            "manufacturing-2",
            "serving",
        )
    assert new_ca.subject != old_ca.subject
    assert new_device.issuer == new_ca.subject
    anchor = _pem(tmp_path / "root.pem", root)
    old_pem, new_pem = _pem(tmp_path / "old-ca.pem", old_ca), _pem(tmp_path / "new-ca.pem", new_ca)
    old_leaf = _pem(tmp_path / "old.pem", old_device)
    new_leaf = _pem(tmp_path / "new.pem", new_device)
    assert _verify(tmp_path, anchor, old_pem, old_leaf) == "OK"
    assert _verify(tmp_path, anchor, new_pem, new_leaf) == "OK"
    assert _verify(tmp_path, anchor, old_pem, new_leaf) != "OK"  # the judge can say no

    issuers = {
        c["serial_number"]: c["issuer"]
        for c in json.loads(keyfab("ca", "certificates", "--json")[1])
    }
    assert issuers[f"{old_device.serial_number:x}"] == "manufacturing"
    assert issuers[f"{new_device.serial_number:x}"] == "manufacturing-2"

    first_old = _crl(keyfab, tmp_path / "old0.crl", "manufacturing")
    code, _, err = keyfab("devices", "revoke", old_serial, "--reason", "keyCompromise")
    assert code == 0, err
    old_crl = _crl(keyfab, tmp_path / "old.crl", "manufacturing")
    new_crl = _crl(keyfab, tmp_path / "new.crl")
    assert old_crl.issuer == old_ca.subject
    assert new_crl.issuer == new_ca.subject
    assert old_crl.get_revoked_certificate_by_serial_number(old_device.serial_number) is not None
    assert len(new_crl) == 0
    assert (
        _number(first_old)
        < _number(old_crl)
        < _number(_crl(keyfab, tmp_path / "o2.crl", "manufacturing"))
    )
    assert _number(new_crl) < _number(_crl(keyfab, tmp_path / "n2.crl"))

    crls = [
        "-crl_check",
        "-CRLfile",
        str(tmp_path / "old.crl"),
        "-CRLfile",
        str(tmp_path / "new.crl"),
    ]
    assert "certificate revoked" in _verify(tmp_path, anchor, old_pem, old_leaf, *crls)
    assert _verify(tmp_path, anchor, new_pem, new_leaf, *crls) == "OK"
    assert new_serial != old_serial
    code, out, err = keyfab("audit", "verify")
    assert code == 0, err


def test_root_rollover_links_the_roots_both_ways(workspace: Workspace, tmp_path: Path) -> None:
    keyfab = Keyfab(workspace.home)
    _, old_device = _device(workspace, tmp_path, "old-root")
    with Authority.open(workspace) as authority:
        old_ca, old_root = authority.chain
        assert queries.root_update(authority.registry) is None
    code, out, err = keyfab("ca", "rotate", "--root", "--json")
    assert code == 0, err
    assert json.loads(out) == {
        "issuing": "manufacturing-2",
        "retired": "manufacturing",
        "root": "root-2",
    }
    _, new_device = _device(workspace, tmp_path, "new-root")
    with Authority.open(workspace) as authority:
        new_ca, new_root = authority.chain
        update = queries.root_update(authority.registry)
        published = authority.published()
    assert update is not None
    assert update.new_with_new == new_root
    assert new_root.subject == old_root.subject
    assert new_root != old_root

    old_anchor, new_anchor = (
        _pem(tmp_path / "old-root.pem", old_root),
        _pem(tmp_path / "new-root.pem", new_root),
    )
    new_leaf, old_leaf = (
        _pem(tmp_path / "new.pem", new_device),
        _pem(tmp_path / "old.pem", old_device),
    )
    forward = _pem(tmp_path / "forward.pem", update.new_with_old, new_ca)
    backward = _pem(tmp_path / "backward.pem", update.old_with_new, old_ca)
    assert _verify(tmp_path, old_anchor, forward, new_leaf) == "OK"
    assert _verify(tmp_path, new_anchor, backward, old_leaf) == "OK"
    assert _verify(tmp_path, new_anchor, _pem(tmp_path / "n.pem", new_ca), new_leaf) == "OK"
    assert _verify(tmp_path, old_anchor, _pem(tmp_path / "m.pem", new_ca), new_leaf) != "OK"

    service = Service.open(workspace)
    body = service.cacerts  # what EST /cacerts serves: a SET OF, so no order to check
    service.close()
    served = pkcs7.load_der_pkcs7_certificates(base64.b64decode(body))
    assert published[:2] == (new_ca, new_root)
    assert set(served) == {
        new_ca,
        new_root,
        old_ca,
        old_root,
        update.new_with_old,
        update.old_with_new,
    }
    assert len(served) == len(published)
    assert set(served) == set(published)
    code, out, err = keyfab("ca", "show", "--json")
    states = {e["name"]: e["state"] for e in json.loads(out)}
    assert states == {
        "manufacturing-2": "issuing",
        "root-2": "root",
        "root": "serving",
        "manufacturing": "serving",
    }
    code, out, err = keyfab("audit", "verify")
    assert code == 0, err


def test_bad_input_is_one_line_and_writes_nothing(
    keyfab: Keyfab, home: Path, tmp_path: Path
) -> None:
    code, _, err = keyfab("ca", "rotate")
    assert code == 1
    assert "is not a keyfab workspace" in err
    assert len(err.strip().splitlines()) == 1
    assert not home.exists()
    assert keyfab("init", "--org", "Acme")[0] == 0
    before = _counts(home)
    files = sorted((home / "ca").iterdir())
    for args, message in (
        (("ca", "show", "nope"), "no CA named 'nope'"),
        (("ca", "crl", "--ca", "nope"), "no CA named 'nope'"),
        (("ca", "rotate", "--root-key", f"soft:{tmp_path}/r.pem"), "add --root"),
        (("ca", "rotate", "--ca-key", f"soft:{tmp_path}/none.pem", "--adopt-keys"), "no key at"),
        (
            ("ca", "rotate", "--ca-key", f"soft:{home}/ca/root-ca.pem", "--adopt-keys"),
            "already CA root's key",
        ),
        (
            ("ca", "rotate", "--ca-key", "tpm2:persistent=0x81000001", "--root"),
            "key URI needs tcti",
        ),
    ):
        code, _, err = keyfab(*args)
        assert code == 1, args
        assert message in err, err
        assert len(err.strip().splitlines()) == 1, err
    assert _counts(home) == before
    assert sorted((home / "ca").iterdir()) == files


def _counts(home: Path) -> tuple[int, int, int]:
    with sqlite3.connect(home / "keyfab.db") as db:
        return tuple(  # type: ignore[return-value]
            db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("authorities", "certificates", "audit_events")
        )


def test_migration_0005_backfills_a_registry_with_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    registry = Registry(url)
    with registry.engine.begin() as connection:
        command.upgrade(_alembic(connection), "0004")
    now = "2026-01-01 00:00:00.000000"
    with sqlite3.connect(tmp_path / "old.db") as db:
        db.executemany(
            "INSERT INTO authorities (name, certificate, key_uri, created_at)"
            " VALUES (?, x'00', 'soft:k', ?)",
            [("root", now), ("manufacturing", now)],
        )
        db.executemany(
            "INSERT INTO certificates (serial_number, key_label, profile, subject, not_before,"
            " not_after, der, issued_at) VALUES (?, 'k', ?, 's', ?, ?, x'00', ?)",
            [
                ("1", "idevid", now, now, now),
                ("2", "vendor", now, now, now),
                ("3", "station", now, now, now),
            ],
        )
        db.execute(
            "INSERT INTO crls (number, this_update, next_update, revoked, der)"
            " VALUES (7, ?, ?, 0, x'00')",
            (now, now),
        )
    registry.dispose()
    Registry.open(url).dispose()
    with sqlite3.connect(tmp_path / "old.db") as db:
        assert dict(db.execute("SELECT name, kind FROM authorities")) == {
            "root": "root",
            "manufacturing": "manufacturing",
        }
        assert db.execute(
            "SELECT count(*) FROM authorities WHERE retired_at IS NOT NULL"
        ).fetchone() == (0,)
        assert dict(db.execute("SELECT serial_number, issuer FROM certificates")) == {
            "1": "manufacturing",
            "2": None,
            "3": "manufacturing",
        }
        assert db.execute("SELECT number, ca FROM crls").fetchall() == [(7, "manufacturing")]
        assert db.execute("SELECT version_num FROM alembic_version").fetchone() == (REVISIONS[-1],)


@pytest.mark.parametrize("count", [1, 2])
def test_names_and_subjects_are_numbered(workspace: Workspace, count: int) -> None:
    keyfab = Keyfab(workspace.home)
    for _ in range(count):
        assert keyfab("ca", "rotate")[0] == 0
    with Authority.open(workspace) as authority:
        assert authority.issuing == f"manufacturing-{count + 1}"
        common_name = authority.certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        assert common_name[0].value == f"Acme Manufacturing CA {count + 1}"
        assert authority.key_uri().endswith(f"manufacturing-ca-{count + 1}.pem")
        assert [authority.state(n) for n in authority.records].count("issuing") == 1


def test_a_rotation_racing_another_is_refused_and_leaves_no_key(
    workspace: Workspace, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "other.pem"
    with Authority.open(workspace) as first, Authority.open(workspace) as second:
        assert second.issuing == "manufacturing"  # read before the other rotation commits
        rotate(first)
        with pytest.raises(ConfigError, match="a key already exists at"):
            rotate(second)  # the same next name and key file: refused before anything
        with pytest.raises(ConflictError, match="another CA rotation ran meanwhile"):
            rotate(second, ca_key=f"soft:{elsewhere}")
    assert not elsewhere.exists()
    with Authority.open(workspace) as authority:
        assert list(authority.records) == ["root", "manufacturing", "manufacturing-2"]
    assert sorted(p.name for p in (workspace.home / "ca").glob("*.pem")) == [
        "manufacturing-ca-2.pem",
        "manufacturing-ca.pem",
        "root-ca.pem",
    ]
