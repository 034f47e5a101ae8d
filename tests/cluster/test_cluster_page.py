"""The cluster page at GET /, rendered by a real headless Chromium against a real cluster."""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from typing import TYPE_CHECKING

import pytest

from shoal.testing.process import ProcessCluster, name_of, statuses
from shoal.testing.waiting import wait_for
from shoal.testing.wire import NsqConnection

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLUSTER_FLAGS = ("--gossip-profile", "local")


def chromium() -> str:
    """Debian's chromium; CI installs it, so there it must be present."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs it with apt-get)")
        pytest.skip("chromium is not installed")
    return found


class Rows(HTMLParser):
    """The ``data-*`` attributes of every table row of the rendered page."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            data = {k[5:]: v or "" for k, v in attrs if k.startswith("data-")}
            if data:
                self.rows.append(data)


def render(browser: str, url: str, profile: Path, screenshot: Path | None = None) -> str:
    """Load ``url`` in headless Chromium, let its scripts poll, return the DOM."""
    args = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        f"--user-data-dir={profile}", "--virtual-time-budget=4000", "--window-size=1280,800",
    ]  # fmt: skip
    if screenshot is not None:
        args.append(f"--screenshot={screenshot}")
    else:
        args.append("--dump-dom")
    done = subprocess.run(
        [*args, url],
        capture_output=True,
        timeout=60,
        check=True,
        env={**os.environ, "HOME": str(profile)},
    )
    return done.stdout.decode()


def test_page_shows_members_topics_and_a_dead_member(
    cluster: ProcessCluster, tmp_path: Path
) -> None:
    browser = chromium()
    nodes = cluster.form(3)
    a, b, c = nodes
    with NsqConnection(a.tcp) as conn:
        conn.pub("orders", b"x")
    with NsqConnection(b.tcp) as conn:
        conn.sub("payments", "audit")
    names = {n: name_of(n) for n in nodes}
    c.kill()
    wait_for(lambda: statuses(a)[names[c]] == "dead")

    host, port = a.http
    url = f"http://{host}:{port}/"
    parser = Rows()
    parser.feed(render(browser, url, tmp_path / "chromium"))
    members = {r["member"]: r["status"] for r in parser.rows if "member" in r}
    assert members == {names[a]: "alive", names[b]: "alive", names[c]: "dead"}
    placed = {(r["topic"], r["channel"], r["node"]) for r in parser.rows if "topic" in r}
    assert placed == {
        ("orders", "", names[a]),
        ("payments", "", names[b]),
        ("payments", "audit", names[b]),
    }

    shot = tmp_path / "cluster-page.png"
    render(browser, url, tmp_path / "chromium", screenshot=shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keep = os.environ.get("SHOAL_SCREENSHOT_DIR")
    if keep:
        os.makedirs(keep, exist_ok=True)
        shutil.copy(shot, os.path.join(keep, "cluster-page.png"))
