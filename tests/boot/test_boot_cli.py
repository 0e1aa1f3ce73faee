"""``keyfab fit`` end to end through its Typer app: build, sign, verify, inspect, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keyfab.boot import FitImage
from keyfab.cli.fit import app
from keyfab.rot import open_rot

from .conftest import ItsMaker, KeyMaker, run

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:keyfab.rot")

TOML = """description = "from toml"
[images.kernel]
file = "kernel.bin"
type = "kernel"
arch = "arm64"
os = "linux"
load = 0x40400000
entry = 0x40400000
[images.fdt-1]
file = "fdt.dtb"
type = "flat_dt"
arch = "arm64"
[configurations]
default = "conf-1"
[configurations.conf-1]
kernel = "kernel"
fdt = "fdt-1"
rollback-index = 5
"""


def invoke(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture
def built(payloads: Path, tmp_path: Path) -> Path:
    for name in ("kernel.bin", "fdt.dtb"):
        (tmp_path / name).write_bytes((payloads / name).read_bytes())
    (tmp_path / "fit.toml").write_text(TOML)
    image = tmp_path / "image.itb"
    code, output = invoke("build", tmp_path / "fit.toml", "-o", image)
    assert code == 0, output
    return image


def _sign(image: Path, keydir: KeyMaker, control: Path, *extra: str) -> tuple[int, str]:
    key = f"soft:{keydir('dev', 'rsa2048') / 'dev.pem'}"
    return invoke(
        "sign",
        image,
        "--key",
        key,
        "--key-name-hint",
        "dev",
        "--control",
        control,
        "--required",
        "conf",
        *extra,
    )


def test_boot_cli_build_is_readable_by_mkimage(built: Path) -> None:
    listing = run("mkimage", "-l", built).stdout
    assert "FIT description: from toml" in listing
    assert "Hash algo:    sha256" in listing
    assert "Configuration 0 (conf-1)" in listing


def test_boot_cli_sign_verify_inspect(built: Path, keydir: KeyMaker, control_dtb: Path) -> None:
    code, output = _sign(built, keydir, control_dtb)
    assert code == 0, output
    code, output = invoke("verify", built, "--control", control_dtb, "--json", "--min-version", "5")
    assert code == 0, output
    report = json.loads(output)
    assert report["ok"] is True
    assert {n["kind"] for n in report["nodes"]} == {"signature", "hash", "rollback"}
    code, output = invoke("inspect", built, "--json")
    tree = json.loads(output)
    signature = tree["configurations"]["conf-1"]["signature-1"]
    assert signature["algo"] == "sha256,rsa2048"
    assert signature["key-name-hint"] == "dev"
    assert tree["images"]["kernel"]["load"] == "0x40400000"
    code, output = invoke("inspect", built)
    assert code == 0
    assert "signature-1" in output


def test_boot_cli_verify_failure_is_one_line(
    built: Path, keydir: KeyMaker, control_dtb: Path
) -> None:
    assert _sign(built, keydir, control_dtb)[0] == 0
    blob = built.read_bytes()
    built.write_bytes(blob.replace(b"from toml", b"from tomm"))
    result = CliRunner().invoke(app, ["verify", str(built), "--control", str(control_dtb)])
    assert result.exit_code == 1
    assert "required key 'dev' did not verify" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("cut", [10, 100, 1000])
def test_boot_cli_truncated_image_is_a_clear_error(
    built: Path, control_dtb: Path, cut: int
) -> None:
    built.write_bytes(built.read_bytes()[:cut])
    code, output = invoke("verify", built, "--control", control_dtb)
    assert code == 1
    assert output.startswith("error: ")
    assert output.count("\n") == 1


def test_boot_cli_missing_key_and_bad_algorithm(
    built: Path, keydir: KeyMaker, control_dtb: Path, tmp_path: Path
) -> None:
    code, output = invoke(
        "sign", built, "--key", f"soft:{tmp_path / 'absent.pem'}", "--key-name-hint", "dev"
    )
    assert code == 1
    assert "no key 'absent'" in output
    code, output = _sign(built, keydir, control_dtb, "--algo", "sha256,ecdsa256")
    assert code == 1
    assert "algorithm says sha256,ecdsa256" in output
    code, output = _sign(built, keydir, control_dtb, "--padding", "oaep")
    assert code == 1
    assert "unsupported padding 'oaep'" in output


def test_boot_cli_pss_padding(built: Path, keydir: KeyMaker, control_dtb: Path) -> None:
    code, output = _sign(built, keydir, control_dtb, "--padding", "pss")
    assert code == 0, output
    assert invoke("verify", built, "--control", control_dtb)[0] == 0
    assert b"pss\0" in built.read_bytes()


def test_boot_cli_rollback_counter_from_root_of_trust(
    built: Path, keydir: KeyMaker, control_dtb: Path, tmp_path: Path
) -> None:
    assert _sign(built, keydir, control_dtb)[0] == 0
    rot_uri = f"soft:{tmp_path / 'rot' / 'device.pem'}"
    (tmp_path / "rot").mkdir()
    rot = open_rot(rot_uri)
    rot.counter("rollback").advance_to(5)
    rot.close()
    assert invoke("verify", built, "--control", control_dtb, "--counter-rot", rot_uri)[0] == 0
    rot = open_rot(rot_uri)
    rot.counter("rollback").advance_to(2)
    rot.close()
    code, output = invoke(
        "verify", built, "--control", control_dtb, "--counter-rot", rot_uri, "--advance"
    )
    assert code == 0, output
    rot = open_rot(rot_uri)
    assert rot.counter("rollback").read() == 5  # raised to the image's rollback-index
    rot.counter("rollback").advance_to(6)
    rot.close()
    code, output = invoke("verify", built, "--control", control_dtb, "--counter-rot", rot_uri)
    assert code == 1
    assert "below the minimum 6" in output


def test_boot_cli_build_rejects_bad_descriptions(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('[images.kernel]\nfile = "missing.bin"\n')
    code, output = invoke("build", tmp_path / "bad.toml", "-o", tmp_path / "out.itb")
    assert code == 1
    assert "not found" in output
    (tmp_path / "bad.toml").write_text("this is = = not toml")
    code, output = invoke("build", tmp_path / "bad.toml", "-o", tmp_path / "out.itb")
    assert code == 1
    assert "nor valid TOML" in output


def test_boot_cli_selected_configuration_and_image_signatures(
    make_fit: ItsMaker, keydir: KeyMaker, control_dtb: Path, tmp_path: Path
) -> None:
    """--conf signs only that configuration; the other stays unbootable with a required key."""
    source = make_fit(extra="").read_bytes()
    fit = FitImage.load(source)
    configs = fit.fdt.find("/configurations")
    assert configs is not None
    second = configs.add_child("conf-2")
    second.set("kernel", b"kernel\0")
    image = tmp_path / "two.itb"
    image.write_bytes(fit.to_bytes())
    signed = tmp_path / "signed.itb"
    code, output = _sign(
        image, keydir, control_dtb, "--conf", "conf-1", "--sign-images", "-o", str(signed)
    )
    assert code == 0, output
    assert image.read_bytes() == fit.to_bytes()  # -o leaves the input alone
    assert invoke("verify", signed, "--control", control_dtb, "--conf", "conf-1")[0] == 0
    code, output = invoke("verify", signed, "--control", control_dtb, "--conf", "conf-2")
    assert code == 1
    assert "conf-2" in output
    tree = json.loads(invoke("inspect", signed, "--json")[1])
    assert tree["images"]["kernel"]["signature-1"]["algo"] == "sha256,rsa2048"


def test_boot_cli_rejects_bad_hint(built: Path, keydir: KeyMaker) -> None:
    key = f"soft:{keydir('dev', 'rsa2048') / 'dev.pem'}"
    code, output = invoke("sign", built, "--key", key, "--key-name-hint", "../evil")
    assert code == 1
    assert "invalid key name hint" in output


def test_boot_cli_add_key_and_list_keys(
    keydir: KeyMaker, control_dtb: Path, make_fit: ItsMaker
) -> None:
    folder = keydir("dev", "rsa2048")
    code, output = invoke(
        "add-key",
        control_dtb,
        "--key",
        f"soft:{folder / 'dev.pem'}",
        "--key-name-hint",
        "dev",
        "--required",
        "conf",
    )
    assert code == 0, output
    code, output = invoke("keys", control_dtb, "--json")
    assert code == 0, output
    assert json.loads(output) == [
        {
            "node": "key-dev",
            "hint": "dev",
            "algo": "sha256,rsa2048",
            "required": "conf",
            "key": "rsa-2048",
        }
    ]
    # mkimage signing with the same key verifies against the key keyfab added
    image = make_fit(algo="sha256,rsa2048", hint="dev", keys=folder)
    assert invoke("verify", image, "--control", control_dtb)[0] == 0


def test_boot_cli_build_and_sign_are_reproducible(
    built: Path,
    keydir: KeyMaker,
    control_dtb: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    outputs = []
    for index in range(2):
        image = tmp_path / f"again-{index}.itb"
        assert invoke("build", tmp_path / "fit.toml", "-o", image)[0] == 0
        assert _sign(image, keydir, control_dtb)[0] == 0
        outputs.append(image.read_bytes())
    assert outputs[0] == outputs[1]
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "soon")
    code, output = invoke("build", tmp_path / "fit.toml", "-o", tmp_path / "x.itb")
    assert code == 1
    assert "SOURCE_DATE_EPOCH" in output


def test_boot_cli_verify_without_keys_fails(built: Path, control_dtb: Path) -> None:
    """Like fit_check_sign -k: an unsigned image with nothing to check against is no pass."""
    assert invoke("verify", built) == (
        1,
        "error: no keys to verify against: pass --control or -k\n",
    )
    code, output = invoke("verify", built, "-k", control_dtb)
    assert code == 1
    assert output == f"error: no keys to verify against: {control_dtb} has no /signature keys\n"


def test_boot_cli_verify_error_names_the_configuration_once(
    built: Path, keydir: KeyMaker, control_dtb: Path
) -> None:
    assert _sign(built, keydir, control_dtb)[0] == 0
    built.write_bytes(built.read_bytes().replace(b"from toml", b"from tomm"))
    code, output = invoke("verify", built, "-k", control_dtb)
    assert code == 1
    assert output.splitlines()[-1] == (
        "error: configuration 'conf-1': required key 'dev' did not verify a signature"
    )


def test_boot_cli_verify_unreferenced_configuration_said_once(
    built: Path, keydir: KeyMaker, control_dtb: Path
) -> None:
    assert _sign(built, keydir, control_dtb)[0] == 0
    fit = FitImage.load(built.read_bytes())
    config = fit.configuration("conf-1")
    config.remove("kernel")
    config.remove("fdt")
    built.write_bytes(fit.to_bytes())
    code, output = invoke("verify", built, "--control", control_dtb)
    assert code == 1
    assert output.splitlines()[-1] == (
        "error: configuration 'conf-1': it references no images; "
        "required key 'dev' did not verify a signature"
    )


ITS_RELATIVE = """/dts-v1/;
/ {
  description = "from its";
  #address-cells = <1>;
  images {
    kernel { data = /incbin/("kernel.bin"); type = "kernel"; arch = "arm64"; os = "linux";
             compression = "none"; load = <0x40400000>; entry = <0x40400000>;
             hash-1 { algo = "sha256"; }; };
    fdt-1 { data = /incbin/("fdt.dtb"); type = "flat_dt"; arch = "arm64"; compression = "none";
            hash-1 { algo = "sha256"; }; };
  };
  configurations {
    default = "conf-1";
    conf-1 { kernel = "kernel"; fdt = "fdt-1";
             signature-1 { algo = "sha256,rsa2048"; key-name-hint = "dev"; }; };
  };
};
"""


@pytest.fixture
def its_dir(payloads: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "its"
    folder.mkdir()
    for name in ("kernel.bin", "fdt.dtb"):
        (folder / name).write_bytes((payloads / name).read_bytes())
    (folder / "fit.its").write_text(ITS_RELATIVE)
    return folder


@pytest.mark.parametrize("name", ["fit.its", "fit.source"])
def test_boot_cli_build_from_its_like_mkimage(
    its_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """An .its (by extension or by its /dts-v1/; header) builds with /incbin/ beside it."""
    (its_dir / "fit.its").rename(its_dir / name)
    monkeypatch.chdir(tmp_path)
    image = tmp_path / "out.itb"
    code, output = invoke("build", its_dir / name, "-o", image)
    assert code == 0, output
    ours = run("mkimage", "-l", image).stdout
    reference = tmp_path / "mkimage.itb"
    run("mkimage", "-f", its_dir / name, reference, cwd=its_dir)
    theirs = run("mkimage", "-l", reference).stdout
    hashes = [line for line in ours.splitlines() if "Hash value" in line]
    assert len(hashes) == 2
    assert hashes == [line for line in theirs.splitlines() if "Hash value" in line]
    assert "FIT description: from its" in ours


def test_boot_cli_build_its_without_dtc_names_the_package(
    its_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    code, output = invoke("build", its_dir / "fit.its", "-o", tmp_path / "out.itb")
    assert (code, output) == (
        1,
        "error: dtc is not installed: install Debian's device-tree-compiler package\n",
    )


def test_boot_cli_build_its_dtc_error_is_one_line(its_dir: Path, tmp_path: Path) -> None:
    (its_dir / "fit.its").write_text(ITS_RELATIVE.replace('"kernel.bin"', '"absent.bin"'))
    code, output = invoke("build", its_dir / "fit.its", "-o", tmp_path / "out.itb")
    assert code == 1
    assert output.startswith("error: dtc cannot compile")
    assert output.count("\n") == 1


@pytest.mark.parametrize("form", ["bare", "soft"])
def test_boot_cli_sign_with_a_key_file_of_any_name(
    built: Path, keydir: KeyMaker, control_dtb: Path, form: str
) -> None:
    """--key keys/dev.key and --key soft:keys/dev.key name the PEM file itself."""
    path = keydir("dev", "rsa2048") / "dev.key"
    key = str(path) if form == "bare" else f"soft:{path}"
    code, output = invoke(
        "sign", built, "--key", key, "--key-name-hint", "dev", "-K", control_dtb,
        "--required", "conf",
    )  # fmt: skip
    assert code == 0, output
    assert invoke("verify", built, "-k", control_dtb)[0] == 0


@pytest.mark.parametrize("kind", ["rsa2048", "ec256"])
def test_boot_cli_sign_its_image_with_mkimage_keydir(
    its_dir: Path, tmp_path: Path, keydir: KeyMaker, control_dtb: Path, kind: str
) -> None:
    """mkimage's -k DIR: DIR/<hint>.key, the hint taken from the .its signature node."""
    hint = f"its{kind}"
    folder = keydir(hint, kind)
    algo = "sha256,rsa2048" if kind == "rsa2048" else "sha256,ecdsa256"
    its = ITS_RELATIVE.replace('"sha256,rsa2048"', f'"{algo}"').replace('"dev"', f'"{hint}"')
    (its_dir / "fit.its").write_text(its)
    image = tmp_path / "signed.itb"
    assert invoke("build", its_dir / "fit.its", "-o", image)[0] == 0
    code, output = invoke("sign", image, "-k", folder, "-K", control_dtb, "--required", "conf")
    assert code == 0, output
    assert f"with {algo}:{hint}" in output
    assert invoke("verify", image, "-k", control_dtb)[0] == 0
    if shutil.which("fit_check_sign"):  # Debian's u-boot-tools does not ship it
        run("fit_check_sign", "-f", image, "-k", control_dtb)


def test_boot_cli_sign_keydir_certificate_must_match(
    built: Path, keydir: KeyMaker, tmp_path: Path
) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "dev.key").write_bytes((keydir("dev", "rsa2048") / "dev.key").read_bytes())
    (folder / "dev.crt").write_bytes((keydir("other", "rsa2048") / "other.crt").read_bytes())
    code, output = invoke("sign", built, "-k", folder, "--key-name-hint", "dev")
    assert (code, output) == (1, f"error: {folder / 'dev.crt'} is not the certificate of dev.key\n")


def test_boot_cli_sign_needs_a_hint_when_the_image_names_none(
    built: Path, keydir: KeyMaker
) -> None:
    code, output = invoke("sign", built, "-k", keydir("dev", "rsa2048"))
    assert (code, output) == (
        1,
        "error: no --key-name-hint, and no signature node in the image names one\n",
    )
