"""Many stations and API workers on one PostgreSQL, provisioning at the same time."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from keyfab import audit
from keyfab.authority import Role
from keyfab.registry import AuditEvent, Certificate, Device, DeviceState, Registry
from tests.server.conftest import RECIPE, Server, free_port, make_tokens, make_workspace
from tests.server.est_client import new_csr, unwrap
from tests.server.postgres import Cluster

STATIONS, PER_STATION = 8, 24
ENROLMENTS, CLIENTS = 48, 8
KEYFAB = Path(sys.executable).with_name("keyfab")


def test_registry_migrates_on_postgres(postgres: Cluster) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from keyfab.registry import Base

    registry = Registry.open(postgres.create_database("schema"), create=True)
    try:
        with registry.engine.connect() as connection:
            context = MigrationContext.configure(connection)
            assert compare_metadata(context, Base.metadata) == []
        with registry.transaction() as session:  # serial blocks from the database
            assert registry.allocate(session, "device", 10) == 1
        with registry.transaction() as session:
            assert registry.allocate(session, "device", 1) == 11
    finally:
        registry.dispose()


def _station(home: Path, env: dict[str, str], recipe: Path, index: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(KEYFAB), "--home", str(home), "provision", "--recipe", str(recipe),
         "--count", str(PER_STATION), "--batch", f"st{index}", "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _enrol(client: httpx.Client, index: int) -> int:
    _, csr = new_csr(f"EST-{index:04d}")
    answer = client.post(
        "/.well-known/est/simpleenroll",
        content=csr,
        headers={"Content-Type": "application/pkcs10"},
    )
    assert answer.status_code == 200, answer.text
    return unwrap(answer.content)[0].serial_number


@pytest.mark.slow
def test_stations_and_api_workers_share_one_postgres(
    postgres: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = postgres.create_database("factory")
    monkeypatch.setenv("KEYFAB_DATABASE_URL", url)
    home = tmp_path / "home"
    space = make_workspace(home)
    tokens = make_tokens(space)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE)
    env = {**os.environ, "KEYFAB_DATABASE_URL": url}
    server = Server(home, free_port(), workers=2, env={"KEYFAB_DATABASE_URL": url}).start()
    try:
        stations = [_station(home, env, recipe, i) for i in range(STATIONS)]
        with (
            server.client(tokens[Role.OPERATOR]) as client,
            ThreadPoolExecutor(CLIENTS) as pool,
        ):
            issued = list(pool.map(lambda i: _enrol(client, i), range(ENROLMENTS)))
        for station in stations:
            _out, err = station.communicate(timeout=120)
            assert station.returncode == 0, err
        with server.client(tokens[Role.AUDITOR]) as auditor:
            status = auditor.get("/api/v1/audit").json()
    finally:
        server.stop()
    assert status["ok"], status
    assert len(set(issued)) == ENROLMENTS
    registry = space.registry()
    try:
        with registry.transaction() as session:
            numbers = session.scalars(
                select(Certificate.serial_number).where(Certificate.device_id.is_not(None))
            ).all()
            serials = session.scalars(select(Device.serial)).all()
            states = dict(
                session.execute(select(Device.state, func.count()).group_by(Device.state)).all()
            )
            report = audit.verify(session)
            recorded = session.scalar(select(func.count()).select_from(Certificate))
            issued_events = session.scalar(
                select(func.count()).where(AuditEvent.kind == "certificate.issued")
            )
    finally:
        registry.dispose()
    devices = STATIONS * PER_STATION + ENROLMENTS
    assert len(serials) == len(set(serials)) == devices
    assert states == {DeviceState.PROVISIONED: devices}
    assert len(numbers) == len(set(numbers)) == devices
    assert {format(n, "x") for n in issued} <= set(numbers)
    assert issued_events == recorded  # every certificate has its issuance event
    assert report.ok
    assert report.events > devices
