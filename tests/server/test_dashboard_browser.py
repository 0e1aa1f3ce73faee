"""The dashboard in a real browser: Debian's chromium driven by Playwright against ``keyfab serve``.

Everything a person does is done through the page: signing in with a token
or a station's client certificate, watching a running batch's progress move,
cancelling a running batch and seeing it stop, finding a failed device and its
reason, revoking as an operator, an auditor finding no revoke button and a
forged POST refused, an admin revoking a token and its session ending, signing
out. Every page is photographed at a desktop and a phone size
(``tests/artifacts/dashboard/``, printed), must log no console error, and no
element of it may reach past the viewport's sides at either size.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from keyfab.authority import Role
from tests.server.conftest import Server, free_port, make_tokens, make_workspace

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is a test extra")

expect = playwright_api.expect
pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORTS = {"desktop": (1280, 800), "phone": (390, 844)}
ARTIFACTS = Path(os.environ.get("KEYFAB_ARTIFACTS", Path(__file__).parents[1] / "artifacts"))
BATCH, BIG = "line1-a", 1200
BROKEN_SLOT = 3
DEADLINE_MS = 60_000


@pytest.fixture(scope="module")
def dashboard_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Server, dict[Role, str]]]:
    home = tmp_path_factory.mktemp("dashboard") / "home"
    space = make_workspace(home)
    tokens = make_tokens(space)
    running = Server(home, free_port(), env={"KEYFAB_DATABASE_URL": ""}).start()
    yield running, tokens
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[playwright_api.Browser]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (scripts/system-packages.txt)")
    with playwright_api.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def shots() -> Path:
    where = ARTIFACTS / "dashboard"
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    print(f"\ndashboard screenshots: {where}")
    return where


class Watched:
    """A browser context whose pages' console errors and uncaught exceptions are collected."""

    def __init__(self, browser: playwright_api.Browser, url: str, size: tuple[int, int]):
        self.context = browser.new_context(
            base_url=url,
            ignore_https_errors=True,  # keyfab's own CA; the page under test is ours
            viewport={"width": size[0], "height": size[1]},
        )
        self.errors: list[str] = []
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def sign_in(self, token: str) -> None:
        self.page.goto("/dashboard")
        assert self.page.url.endswith("/dashboard/signin")  # no session: redirected
        self.page.fill("#token", token)
        self.page.click("form.card button")
        self.page.wait_for_url("**/dashboard")


@pytest.fixture
def watched(
    browser: playwright_api.Browser, dashboard_server: tuple[Server, dict[Role, str]]
) -> Iterator[Watched]:
    opened = Watched(browser, dashboard_server[0].url, VIEWPORTS["desktop"])
    yield opened
    opened.context.close()
    assert opened.errors == []


def _admin(server: Server, tokens: dict[Role, str]) -> httpx.Client:
    return server.client(tokens[Role.ADMIN])


def _start_batch(server: Server, tokens: dict[Role, str], name: str, count: int) -> None:
    """A batch through the API, one of whose devices cannot be opened (its key path is a file)."""
    broken = server.home / "devices" / name / f"{BROKEN_SLOT:06d}"
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_text("not a key directory")
    with _admin(server, tokens) as client:
        body = {"recipe": "gateway", "name": name, "count": count}
        answer = client.post("/api/v1/batches", json=body)
    assert answer.status_code == 201, answer.text


def _number(page: playwright_api.Page, selector: str) -> int:
    return int(page.text_content(selector) or "0")


def test_operator_watches_a_batch_finds_a_failure_and_revokes(
    watched: Watched, dashboard_server: tuple[Server, dict[Role, str]], shots: Path
) -> None:
    server, tokens = dashboard_server
    page = watched.page
    watched.sign_in(tokens[Role.OPERATOR])
    cookie = next(c for c in watched.context.cookies() if c["name"] == "kf_session")
    assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"]) == (True, True, "Strict")

    _start_batch(server, tokens, BATCH, BIG)
    page.goto(f"/dashboard/batches/{BATCH}")
    first = _number(page, "#done")
    assert first < BIG, "the batch finished before the page could watch it"
    # The page's own polling moves the count, no reload. (Locator assertions, not
    # wait_for_function: the page's Content-Security-Policy forbids eval, rightly.)
    expect(page.locator("#done")).not_to_have_text(str(first), timeout=DEADLINE_MS)
    page.screenshot(path=shots / "batch-running-desktop.png", full_page=True)
    expect(page.locator("#state")).to_have_text("finished", timeout=DEADLINE_MS * 3)
    assert _number(page, "#done") == BIG
    assert _number(page, "#count-failed") == 1

    page.reload()  # the failures table is not live: read it once the batch is done
    row = page.locator("#failures tr", has=page.locator("td.reason"))
    assert row.count() == 1
    row.locator("a").click()
    page.wait_for_url("**/dashboard/devices/*")
    assert page.text_content("#device-state") == "failed"
    reason = page.text_content("#failure") or ""
    assert reason.strip(), "a failed device must say why"

    page.goto(f"/dashboard/devices?batch={BATCH}&state=provisioned")
    page.locator("#devices td a").first.click()
    page.wait_for_url("**/dashboard/devices/*")
    serial = page.url.rsplit("/", 1)[1]
    assert page.text_content("#device-state") == "provisioned"
    page.select_option("#revoke select", "keyCompromise")
    page.click("#revoke button")
    page.wait_for_url(f"**/dashboard/devices/{serial}")
    assert page.text_content("#device-state") == "revoked"
    assert page.locator("#revoke").count() == 0
    assert "keyCompromise" in (page.text_content("#certificates") or "")
    with _admin(server, tokens) as client:  # the same record the API reads
        assert client.get(f"/api/v1/devices/{serial}").json()["state"] == "revoked"

    page.click(".signout button")
    page.wait_for_url("**/dashboard/signin")
    page.goto("/dashboard")
    assert page.url.endswith("/dashboard/signin")  # the session is gone, not just the cookie


def test_auditor_sees_everything_and_changes_nothing(
    watched: Watched, dashboard_server: tuple[Server, dict[Role, str]]
) -> None:
    _, tokens = dashboard_server
    page = watched.page
    watched.sign_in(tokens[Role.AUDITOR])
    page.goto(f"/dashboard/devices?batch={BATCH}&state=provisioned")
    page.locator("#devices td a").first.click()
    page.wait_for_url("**/dashboard/devices/*")
    serial = page.url.rsplit("/", 1)[1]
    assert page.locator("#revoke").count() == 0  # no button
    assert page.locator("a[href='/dashboard/admin']").count() == 0
    assert page.request.get("/dashboard/admin", max_redirects=0).status == 403

    post = page.request.post  # the browser's own cookies: a forged form, or the real token
    target = f"/dashboard/devices/{serial}/revoke"
    assert post(target, form={"reason": "keyCompromise"}, max_redirects=0).status == 403
    assert post(target, form={"csrf": "0" * 64}, max_redirects=0).status == 403
    csrf = page.get_attribute(".signout input[name=csrf]", "value") or ""
    assert post(target, form={"csrf": csrf}, max_redirects=0).status == 403  # the role
    page.reload()
    assert page.text_content("#device-state") == "provisioned"


def test_forged_operator_post_is_refused(
    watched: Watched, dashboard_server: tuple[Server, dict[Role, str]]
) -> None:
    server, tokens = dashboard_server
    page = watched.page
    watched.sign_in(tokens[Role.OPERATOR])
    page.goto(f"/dashboard/devices?batch={BATCH}&state=provisioned")
    serial = (page.locator("#devices td a").first.text_content() or "").strip()
    target = f"/dashboard/devices/{serial}/revoke"
    for fields in ({}, {"csrf": ""}, {"csrf": "x" * 64}):
        assert page.request.post(target, form=fields, max_redirects=0).status == 403
    with httpx.Client(base_url=server.url, verify=False) as anonymous:  # no cookie at all
        assert anonymous.post(target, data={"csrf": "x"}).status_code == 303
    page.goto(f"/dashboard/devices/{serial}")
    assert page.text_content("#device-state") == "provisioned"


def test_device_role_sees_nothing(
    watched: Watched, dashboard_server: tuple[Server, dict[Role, str]]
) -> None:
    _, tokens = dashboard_server
    page = watched.page
    page.goto("/dashboard/signin")
    page.fill("#token", tokens[Role.DEVICE])
    page.click("form.card button")
    assert page.locator(".problem").get_attribute("data-status") == "403"
    assert not any(c["name"] == "kf_session" for c in watched.context.cookies())
    watched.errors = [e for e in watched.errors if "status of 403" not in e]  # the refusal


OVERFLOWING = """() => {
  const width = document.documentElement.clientWidth;
  return Array.from(document.querySelectorAll("body *"))
    .filter((e) => {
      const box = e.getBoundingClientRect();
      return box.width > 0 && (box.right > width + 1 || box.left < -1);
    })
    .slice(0, 5)
    .map((e) => `${e.tagName.toLowerCase()}#${e.id}.${e.className}`);
}"""
"""Elements that reach past the viewport's sides, clipped inside a scroll box or not."""

PAGES = (
    ("landing", "/"),
    ("docs", "/docs"),
    ("fleet", "/dashboard"),
    ("batches", "/dashboard/batches"),
    ("batch", f"/dashboard/batches/{BATCH}"),
    ("devices", "/dashboard/devices"),
    ("failed", "/dashboard/devices?state=failed"),
    ("device", None),  # the first device of the batch, found on the page
    ("audit", "/dashboard/audit"),
    ("verify", "/dashboard/audit/verify"),
    ("admin", "/dashboard/admin"),
)


@pytest.mark.parametrize("size", sorted(VIEWPORTS))
def test_every_page_renders_cleanly(
    browser: playwright_api.Browser,
    dashboard_server: tuple[Server, dict[Role, str]],
    shots: Path,
    size: str,
) -> None:
    server, tokens = dashboard_server
    watched = Watched(browser, server.url, VIEWPORTS[size])
    page = watched.page
    page.goto("/dashboard/signin")
    page.screenshot(path=shots / f"signin-{size}.png", full_page=True)
    watched.sign_in(tokens[Role.ADMIN])
    for name, path in PAGES:
        if path is None:
            page.goto(f"/dashboard/devices?batch={BATCH}")
            path = page.locator("#devices td a").first.get_attribute("href") or ""
        answer = page.goto(path)
        assert answer is not None
        assert answer.status == 200, (name, path)
        page.screenshot(path=shots / f"{name}-{size}.png", full_page=True)
        wide = page.evaluate("document.documentElement.scrollWidth")
        assert wide <= VIEWPORTS[size][0], f"{name} scrolls sideways at {size}: {wide}px"
        assert page.evaluate(OVERFLOWING) == [], f"{name} clips at {size}"
    page.goto("/dashboard/admin")
    page.fill("input[name=name]", f"made-{size}")
    page.click("form.card button")
    assert (page.text_content("#new-token") or "").startswith("kf_")
    watched.context.close()
    assert watched.errors == [], watched.errors


def test_operator_cancels_a_running_batch_and_it_stops(
    watched: Watched, dashboard_server: tuple[Server, dict[Role, str]], shots: Path
) -> None:
    server, tokens = dashboard_server
    page = watched.page
    watched.sign_in(tokens[Role.OPERATOR])
    name, count = "line1-cancel", 6000
    _start_batch(server, tokens, name, count)
    page.goto(f"/dashboard/batches/{name}")
    expect(page.locator("#done")).not_to_have_text("0", timeout=DEADLINE_MS)  # it runs
    assert _number(page, "#done") < count, "the batch finished before it could be cancelled"
    page.click("#cancel button")
    page.wait_for_url(f"**/dashboard/batches/{name}")
    page.screenshot(path=shots / "batch-cancelled-desktop.png", full_page=True)
    assert page.text_content("#state") == "cancelled"
    assert page.locator("#cancel").count() == 0
    cancelled = _number(page, "#count-cancelled")
    assert 0 < cancelled < count
    with _admin(server, tokens) as client:  # stopped: nothing runs, nothing is left pending
        deadline = time.monotonic() + DEADLINE_MS / 1000
        progress = client.get(f"/api/v1/batches/{name}").json()
        while progress["running"] and time.monotonic() < deadline:  # its thread's last step
            progress = client.get(f"/api/v1/batches/{name}").json()
    assert progress["running"] is False
    assert "pending" not in progress["devices"]
    assert progress["devices"]["cancelled"] == cancelled
    assert sum(progress["devices"].values()) == count
    page.reload()  # and the counts hold: the run is over, not just hidden
    assert _number(page, "#count-cancelled") == cancelled


@pytest.fixture(scope="module")
def station_identity(
    dashboard_server: tuple[Server, dict[Role, str]], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """A station certificate and key, as 'keyfab stations issue' makes them."""
    from tests.conftest import Keyfab

    folder = tmp_path_factory.mktemp("station")
    server = dashboard_server[0]
    code, _, err = Keyfab(server.home)("stations", "issue", "line-7", "--out", str(folder))
    assert code == 0, err
    return folder / "line-7.pem", folder / "line-7.key"


def test_station_signs_in_with_its_client_certificate(
    browser: playwright_api.Browser,
    dashboard_server: tuple[Server, dict[Role, str]],
    station_identity: tuple[Path, Path],
    shots: Path,
) -> None:
    server = dashboard_server[0]
    certificate, key = station_identity
    context = browser.new_context(
        base_url=server.url,
        ignore_https_errors=True,
        viewport={"width": 1280, "height": 800},
        client_certificates=[
            {"origin": server.url, "certPath": str(certificate), "keyPath": str(key)}
        ],
    )
    errors: list[str] = []
    page = context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto("/dashboard/signin")
    page.screenshot(path=shots / "signin-certificate-desktop.png", full_page=True)
    page.click("#certificate-signin button")
    page.wait_for_url("**/dashboard")
    assert "line-7" in (page.text_content(".who") or "")
    cookie = next(c for c in context.cookies() if c["name"] == "kf_session")
    assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"]) == (True, True, "Strict")
    page.goto("/dashboard/batches")
    assert page.locator("#batches").count() == 1
    page.click(".signout button")
    page.wait_for_url("**/dashboard/signin")
    context.close()
    assert errors == []


def test_admin_revokes_a_token_and_its_session_ends(
    browser: playwright_api.Browser, dashboard_server: tuple[Server, dict[Role, str]]
) -> None:
    """A token made and revoked on the admin page: the session opened with it ends at once."""
    server, tokens = dashboard_server
    admin = Watched(browser, server.url, VIEWPORTS["desktop"])
    admin.sign_in(tokens[Role.ADMIN])
    admin.page.goto("/dashboard/admin")
    admin.page.fill("input[name=name]", "night-shift")
    admin.page.select_option("select[name=role]", "auditor")
    admin.page.click("form.card button")
    secret = (admin.page.text_content("#new-token") or "").strip()
    auditor = Watched(browser, server.url, VIEWPORTS["phone"])
    auditor.sign_in(secret)
    assert "night-shift" in (auditor.page.text_content(".who") or "")

    admin.page.goto("/dashboard/admin")
    row = admin.page.locator("#tokens tr", has=admin.page.locator("td", has_text="night-shift"))
    row.locator("button").click()
    admin.page.wait_for_url("**/dashboard/admin")
    assert "revoked" in (row.text_content() or "")
    auditor.page.goto("/dashboard")
    assert auditor.page.url.endswith("/dashboard/signin")  # the revoked token's session is over
    for opened in (admin, auditor):
        opened.context.close()
        assert opened.errors == [], opened.errors
