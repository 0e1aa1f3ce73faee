"""CMP ``genm`` during a CA rotation: caCerts and the root CA update (RFC 9483 §4.3).

A workspace of its own (rotating the shared one would change every other
test's trust), rotated with the real ``keyfab ca rotate`` and ``--root``
before its ``keyfab serve`` starts. OpenSSL 3.0 cannot ask for a root CA
update, so the genm is built by ``cmp_client``; ``openssl verify`` judges the
three certificates of the answer.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pyasn1.type import univ

from keyfab.authority import Authority
from keyfab.workspace import Workspace
from tests.server import cmp_client
from tests.server.conftest import KEYFAB, Server, free_port, make_workspace
from tests.server.test_server_cmp import post, secret


@pytest.fixture(scope="module")
def rotated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, list[Path]]]:
    """A server on a workspace rotated twice; the CA certificates before each rotation."""
    home = tmp_path_factory.mktemp("rotated") / "home"
    make_workspace(home)
    before = []
    for extra in ([], ["--root"]):
        with Authority.open(Workspace(home)) as authority:
            before.append(authority.chain)
        command = [str(KEYFAB), "--home", str(home), "ca", "rotate", *extra]
        subprocess.run(command, check=True, capture_output=True)
    pems = [home.parent / f"{i}.pem" for i in range(3)]
    (first_ca, root), (second_ca, _) = before
    for path, certificate in zip(pems, (first_ca, second_ca, root), strict=True):
        path.write_bytes(certificate.public_bytes(Encoding.PEM))
    running = Server(home, free_port(), tls=False, env={"KEYFAB_DATABASE_URL": ""}).start()
    yield running, pems
    running.stop()


def verify(anchor: x509.Certificate, leaf: x509.Certificate, folder: Path) -> str:
    """``openssl verify``'s verdict on ``leaf`` trusting only ``anchor``."""
    (folder / "anchor.pem").write_bytes(anchor.public_bytes(Encoding.PEM))
    (folder / "leaf.pem").write_bytes(leaf.public_bytes(Encoding.PEM))
    done = subprocess.run(
        ["openssl", "verify", "-CAfile", "anchor.pem", "leaf.pem"],
        capture_output=True,
        text=True,
        cwd=folder,
    )
    return "OK" if done.returncode == 0 else done.stdout + done.stderr


def genm(running: Server, *items: tuple[univ.ObjectIdentifier, Any]) -> dict[str, bytes | None]:
    reference, value = secret(running.home, "ROT-0001")
    body = cmp_client.genm_body(*items)
    answer = post(
        running, cmp_client.mac_message(body, cmp_client.Pbmac1(value.encode()), reference)
    )
    assert answer["body"].getName() == "gen", answer.prettyPrint()
    return cmp_client.genp_values(answer)


def current_root(running: Server) -> x509.Certificate:
    """The issuing chain's root, as caCerts gives it (second, after the issuing CA)."""
    value = genm(running, (cmp_client.CA_CERTS, None))[str(cmp_client.CA_CERTS)]
    assert value is not None
    return cmp_client.ca_certs(value)[1]


def test_root_ca_update_gives_the_new_root_and_both_links(
    rotated: tuple[Server, list[Path]], tmp_path: Path
) -> None:
    running, (_, _, old_root_pem) = rotated
    old_root = x509.load_pem_x509_certificate(old_root_pem.read_bytes())
    answer = genm(running, cmp_client.root_ca_cert(old_root))
    assert answer.keys() == {str(cmp_client.ROOT_CA_KEY_UPDATE)}
    value = answer[str(cmp_client.ROOT_CA_KEY_UPDATE)]
    assert value is not None
    new_with_new, new_with_old, old_with_new = cmp_client.root_ca_key_update(value)
    assert new_with_new.public_key() != old_root.public_key()
    assert verify(new_with_new, new_with_new, tmp_path) == "OK"  # self-signed new root
    assert verify(old_root, new_with_old, tmp_path) == "OK"  # the old root vouches for the new
    assert verify(new_with_new, old_with_new, tmp_path) == "OK"  # and the new for the old
    assert verify(old_root, new_with_new, tmp_path) != "OK"
    assert new_with_old.public_key() == new_with_new.public_key()
    assert old_with_new.public_key() == old_root.public_key()
    assert new_with_new == current_root(running)


def test_a_device_holding_the_new_root_needs_no_update(
    rotated: tuple[Server, list[Path]],
) -> None:
    running, _ = rotated
    assert genm(running, cmp_client.root_ca_cert(current_root(running))) == {
        str(cmp_client.ROOT_CA_KEY_UPDATE): None
    }
    anyway = genm(running, (cmp_client.ROOT_CA_CERT, None))  # no root named: the update
    assert anyway[str(cmp_client.ROOT_CA_KEY_UPDATE)] is not None


def test_ca_certs_during_the_overlap(rotated: tuple[Server, list[Path]], tmp_path: Path) -> None:
    """Every CA a device may meet: both retired manufacturing CAs, both roots, the links."""
    running, (first_ca, second_ca, old_root) = rotated
    value = genm(running, (cmp_client.CA_CERTS, None))[str(cmp_client.CA_CERTS)]
    assert value is not None
    given = cmp_client.ca_certs(value)
    for retired in (first_ca, second_ca, old_root):
        assert x509.load_pem_x509_certificate(retired.read_bytes()) in given
    subjects = [c.subject.rfc4514_string() for c in given]
    assert len(given) == 7  # 3 manufacturing CAs, 2 roots, 2 links
    assert subjects[0].startswith("CN=Acme Manufacturing CA 3")  # the issuing CA first
    roots = [c for c in given if c.subject == c.issuer]
    assert len(roots) == 4  # two self-signed roots and the two links between them
    assert verify(given[1], given[0], tmp_path) == "OK"  # issuing CA under the new root
