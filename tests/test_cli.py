import json
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from keyfab.rot.soft import SoftRootOfTrust

from .conftest import RECIPE, Keyfab, keyfab_process


def test_init_provision_inspect_and_openssl_verify(
    keyfab: Keyfab, recipe_file: Path, tmp_path: Path
) -> None:
    assert keyfab("init", "--org", "Acme")[0] == 0
    code, out, _ = keyfab("ca", "show", "--json")
    chain = json.loads(out)
    assert code == 0
    assert [c["role"] for c in chain] == ["manufacturing", "root"]

    code, out, err = keyfab(
        "provision",
        "--recipe",
        str(recipe_file),
        "--count",
        "40",
        "--workers",
        "2",
        "--batch",
        "b1",
        "--json",
    )
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["provisioned"], summary["failed"]) == (40, 0)

    devices = json.loads(keyfab("devices", "list", "--batch", "b1", "--limit", "100", "--json")[1])
    assert len(devices) == 40
    assert {d["state"] for d in devices} == {"provisioned"}
    assert len({d["unique_id"] for d in devices}) == 40
    shown = json.loads(keyfab("devices", "show", devices[0]["serial"], "--json")[1])
    assert shown["certificates"][0]["profile"] == "idevid"

    (tmp_path / "chain.pem").write_text(keyfab("ca", "show", "--pem")[1])
    root_pem = "-----BEGIN" + (tmp_path / "chain.pem").read_text().split("-----BEGIN")[2]
    (tmp_path / "root.pem").write_text(root_pem)
    (tmp_path / "dev.pem").write_text(keyfab("devices", "show", devices[0]["serial"], "--pem")[1])
    result = subprocess.run(
        [
            "openssl",
            "verify",
            "-x509_strict",
            "-CAfile",
            tmp_path / "root.pem",
            "-untrusted",
            tmp_path / "chain.pem",
            tmp_path / "dev.pem",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr

    bundle = keyfab("devices", "export", "--batch", "b1")[1]
    assert len(x509.load_pem_x509_certificates(bundle.encode())) == 40
    code, out, _ = keyfab("audit", "verify", "--json")
    report = json.loads(out)
    assert code == 0
    assert report["events"] == 2 + 40 + 2 + 1  # two CAs, 40 issued, batch start/end, checkpoint
    assert report["checkpoints"] == 1


def test_device_written_back_and_locked(keyfab: Keyfab, recipe_file: Path, home: Path) -> None:
    keyfab("init")
    assert keyfab("provision", "-r", str(recipe_file), "-n", "1", "-b", "one")[0] == 0
    device_dir = home / "devices" / "one" / "000000"
    state = json.loads((device_dir / "rot.json").read_text())
    assert state["locked"] is True
    assert state["counters"] == {"rollback": 3}
    cert = x509.load_der_x509_certificate(SoftRootOfTrust(device_dir).load_object("idevid-cert"))
    serial = json.loads(keyfab("devices", "list", "--json")[1])[0]["serial"]
    assert keyfab("devices", "show", serial, "--pem")[1] == cert.public_bytes(Encoding.PEM).decode()


def test_revoke_then_crl(keyfab: Keyfab, recipe_file: Path, tmp_path: Path) -> None:
    keyfab("init")
    keyfab("provision", "-r", str(recipe_file), "-n", "2", "-b", "r")
    serial = json.loads(keyfab("devices", "list", "--json")[1])[0]["serial"]
    assert keyfab("devices", "revoke", serial, "--reason", "keyCompromise")[0] == 0
    code, out, _ = keyfab("devices", "revoke", serial)
    assert code == 0
    assert "already revoked: nothing changed" in out
    assert keyfab("ca", "crl", "--out", str(tmp_path / "crl.pem"))[0] == 0
    crl = x509.load_pem_x509_crl((tmp_path / "crl.pem").read_bytes())
    (entry,) = list(crl)
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise


def test_bad_input_one_line_nothing_written(
    keyfab: Keyfab, recipe_file: Path, tmp_path: Path, home: Path
) -> None:
    code, _, err = keyfab("provision", "-r", str(recipe_file), "-n", "3")
    assert code == 1
    assert "not a keyfab workspace" in err
    assert not home.exists()

    keyfab("init")
    code, _, err = keyfab("init")
    assert code == 1
    assert "already initialised" in err

    bad = tmp_path / "bad.toml"
    bad.write_text(RECIPE + "\n[finish]\nlok = true\n")
    code, _, err = keyfab("provision", "-r", str(bad), "-n", "3")
    assert code == 1
    assert "finish.lok" in err
    assert len(err.strip().splitlines()) == 1
    bad.write_text(RECIPE.replace('"ec-p256"', "256"))
    assert keyfab("provision", "-r", str(bad), "-n", "3")[0] == 1
    assert json.loads(keyfab("devices", "list", "--json")[1]) == []

    assert keyfab("provision", "-r", str(recipe_file), "-n", "0")[0] == 1
    assert keyfab("provision", "-r", str(tmp_path / "missing.toml"), "-n", "1")[0] == 1
    assert keyfab("provision", "resume", "no-such-batch")[0] == 1
    assert keyfab("devices", "show", "NOPE")[0] == 1
    code, _, err = keyfab("audit", "verify")
    assert code == 0


def test_non_writable_home(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, err = Keyfab(blocker / "home")("init")
    assert code == 1
    assert "cannot use" in err


def test_wrong_ca_key_type_is_refused(keyfab: Keyfab) -> None:
    code, _, _err = keyfab("init", "--algorithm", "rsa-2048")
    assert code != 0
    assert keyfab("devices", "list")[0] == 1  # nothing was initialised


def test_broken_audit_log_fails_verify(keyfab: Keyfab, recipe_file: Path, home: Path) -> None:
    import sqlite3

    keyfab("init")
    keyfab("provision", "-r", str(recipe_file), "-n", "3", "-b", "a")
    with sqlite3.connect(home / "keyfab.db") as db:
        db.execute("UPDATE audit_events SET subject = 'forged' WHERE seq = 4")
    code, _, err = keyfab("audit", "verify")
    assert code == 1
    assert "event 4" in err


@pytest.mark.slow
def test_demo_runs_twice(tmp_path: Path) -> None:
    """The real command, in its own process: the demo sets up SoftHSM2 for itself."""
    home = tmp_path / "demo"
    for _ in range(2):
        process = keyfab_process(
            home, "--home", str(home), "demo", "--count", "30", "--workers", "2"
        )
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        assert "30 of 30" in out


def test_pin_value_is_never_stored(keyfab: Keyfab, home: Path) -> None:
    code, _, err = keyfab("init", "--ca-key", "pkcs11:token=t;object=mfg?pin-value=1234")
    assert code == 1
    assert "pin-source" in err
    assert "1234" not in err


def test_failed_init_leaves_nothing_behind(keyfab: Keyfab, home: Path) -> None:
    code, _, _err = keyfab("init", "--ca-key", f"soft:{home}/../not-a-dir/x/../../bad label.pem")
    assert code == 1
    assert list((home / "ca").glob("*.pem")) == []
    assert keyfab("init")[0] == 0


def test_checkpoint_and_verify_against_a_given_signer(keyfab: Keyfab, tmp_path: Path) -> None:
    keyfab("init")
    assert keyfab("audit", "checkpoint")[0] == 0
    chain = tmp_path / "chain.pem"
    chain.write_text(keyfab("ca", "show", "--pem")[1])
    root = tmp_path / "root.pem"
    root.write_text(keyfab("ca", "show", "--pem", "--root")[1])
    code, out, _ = keyfab("audit", "verify", "--signer", str(chain), "--json")
    assert code == 0
    assert json.loads(out)["checkpoints"] == 1
    code, _, err = keyfab("audit", "verify", "--signer", str(root))
    assert code == 1
    assert "untrusted" in err
    assert keyfab("audit", "verify", "--signer", str(tmp_path / "missing.pem"))[0] == 1
