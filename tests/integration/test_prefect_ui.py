"""The Prefect UI shows Custody's flow runs and artifacts: a real `prefect server start`, a small real chain
(ingest → validate → select → train, through the CLI's helper functions) run against it, and headless Chromium
(Debian's, driven by Playwright) reading the runs list, the train run's page and its training-curves artifact.

The chain runs in a child process with ``PREFECT_API_URL`` set, as `custody` runs on a user's machine: Prefect
reads its settings once, when it is imported, so setting the variable inside this pytest process (which has
imported Prefect already) would leave its flow runs on another server. The child imports while the server starts.

Prefect 3.8's UI quirks met here: `/` redirects to the React "V2" UI under `/v2/` (`/dashboard`), while other
paths without `/v2` (e.g. the `/runs/flow-run/<id>` links in flow-run logs) open the older Vue UI; the V2 UI's
analytics SDK calls out to the internet even with analytics off (we block every request not to the server);
the flow-run graph is WebGL and stays blank under `--disable-gpu` (SwiftShader draws it); an artifact key's page
lists its versions, and the artifact itself (markdown rendered, images included) is one click further.

Screenshots go to ``<tmp>/reports/ui/``; with ``CUSTODY_SAVE_SCREENSHOTS=1`` the runs list is also copied to
``docs/img/prefect-ui.png`` for the README.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import jsonl, stop_process_group, write_source

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60.0  # seconds for a page to show what we wait for; the machine is slow and shared
GOOD = ["great", "good", "best", "love", "lovely", "warm"]
BAD = ["bad", "worst", "dull", "boring", "slow", "awful"]
FLOWS = ("ingest", "validate", "select", "train")
CHROMIUM_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--disable-quic",
                 "--no-first-run", "--disable-sync", "--disable-background-networking", "--disable-component-update"]

# The chain as the CLI runs it: each helper calls flows.runtime.ensure_prefect_api, which takes PREFECT_API_URL.
CHAIN = textwrap.dedent("""
    import json, os, sys, time
    import httpx
    from flows.launch import run_ingest, run_select, run_train, run_validate
    from tasks.selection import SelectionConfig
    from tasks.training import TrainConfig

    deadline = time.monotonic() + 180  # imported while the server started; now wait for it
    while True:
        try:
            if httpx.get(os.environ["PREFECT_API_URL"] + "/health", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)
    ingested = run_ingest(None)
    validated = run_validate("research")
    selected = run_select(SelectionConfig(name="sent", strategy="random", budget=10_000, shards=1,
                                          fractions=(0.6, 0.2, 0.2)))
    trained = run_train(TrainConfig(dataset=selected["ref"], model="tiny", lora_rank=0, epochs=2, lr=3e-3,
                                    batch_size=16))
    with open(sys.argv[1], "w") as f:
        json.dump({"ingest_ok": ingested["ok"], "validated": validated["ok"], "dataset": selected["ref"],
                   "model": trained["ref"]}, f)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ui_server(tmp_path: Path) -> Iterator[dict]:
    """`prefect server start` (API and UI) on a free port with its own PREFECT_HOME, not yet waited for."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "CUSTODY_TEMPORARY_PREFECT_URL")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-server"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               DO_NOT_TRACK="1", PREFECT_UI_API_URL=f"{base}/api",  # where the browser finds the API
               PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT="false")
    log = tmp_path / "prefect-server.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                 "--port", str(port)], env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        yield {"url": base, "api": f"{base}/api", "proc": proc, "log": log}
    finally:
        stop_process_group(proc)


def _wait_until_serving(server: dict, timeout: float = 180) -> None:
    """The API answers its health check and `/` serves the UI's HTML."""
    deadline = time.monotonic() + timeout
    while True:
        tail = server["log"].read_text()[-3000:]
        assert server["proc"].poll() is None, f"prefect server exited {server['proc'].returncode}:\n{tail}"
        assert time.monotonic() < deadline, f"no Prefect API at {server['api']} after {timeout:.0f} s:\n{tail}"
        try:
            if httpx.get(f"{server['api']}/health", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    page = httpx.get(f"{server['url']}/", headers={"Accept": "text/html"}, follow_redirects=True, timeout=30)
    assert page.status_code == 200 and "<html" in page.text.lower(), f"no UI at {server['url']}/: {page.text[:300]}"


@pytest.fixture
def chain(ui_server: dict, store, tmp_path: Path) -> dict:
    """A tiny labelled source, then ingest → validate → select → train on ``ui_server``."""
    rows = [{"id": f"{lab}{i}", "text": f"{words[i % 6]} film {words[(i + 2) % 6]} story number {i}",
             "label": lab, "owner": f"o{i % 4}"} for lab, words in (("fresh", GOOD), ("rotten", BAD))
            for i in range(60)]
    write_source(store, "rt", {"a.jsonl": jsonl(rows[::2]), "b.jsonl": jsonl(rows[1::2])})
    env = {k: v for k, v in os.environ.items() if k != "CUSTODY_TEMPORARY_PREFECT_URL"}  # CUSTODY_HOME: the store's
    env.update(PREFECT_API_URL=ui_server["api"], PREFECT_HOME=str(tmp_path / "prefect-client"),
               CUSTODY_DASK_WORKERS="1")  # one worker process importing GX and torch is enough for 120 rows
    result, log = tmp_path / "chain.json", tmp_path / "chain.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", CHAIN, str(result)], env=env, cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_until_serving(ui_server)
        proc.wait(timeout=600)
    finally:
        stop_process_group(proc)
    assert proc.returncode == 0, log.read_text()[-4000:]
    done = json.loads(result.read_text())
    assert done["ingest_ok"] and done["validated"] and done["model"] == "sent-classifier@1", done
    return done


def _completed_runs(api: str) -> list[dict]:
    """The server's completed flow runs, each with its flow's name, as the API (not the UI) reports them."""
    flows = {f["id"]: f["name"] for f in httpx.post(f"{api}/flows/filter", json={}, timeout=30).json()}
    runs = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}},
                      timeout=30).json()
    return [{**r, "flow_name": flows[r["flow_id"]]} for r in runs]


def _artifact(api: str, key: str, flow_run_id: str) -> dict:
    found = httpx.post(f"{api}/artifacts/filter", json={"artifacts": {"key": {"any_": [key]},
                                                                      "flow_run_id": {"any_": [flow_run_id]}}},
                       timeout=30).json()
    assert len(found) == 1, f"artifacts {key} of flow run {flow_run_id}: {found}"
    return found[0]


def _wait_for(page, needles: list[str], what: str, shots: Path) -> str:
    """Poll the rendered text until it holds every needle (the UI is an SPA: its HTML arrives empty)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        text = page.inner_text("body") if page.locator("body").count() else ""
        missing = [n for n in needles if n not in text]
        if not missing:
            return text
        if time.monotonic() > deadline:
            page.screenshot(path=str(shots / f"failed-{what.replace(' ', '-')}.png"), full_page=True)
            pytest.fail(f"{what} ({page.url}) did not show {missing} within {TIMEOUT:.0f} s; it shows:\n{text[:2000]}")
        page.wait_for_timeout(500)


def test_ui_lists_flow_runs_and_artifacts(ui_server: dict, chain: dict, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    base, api = ui_server["url"], ui_server["api"]
    runs = _completed_runs(api)
    by_flow = {r["flow_name"]: r for r in runs}
    assert set(FLOWS) <= set(by_flow), f"completed flow runs: {sorted(by_flow)}"
    train = by_flow["train"]
    curves = _artifact(api, "training-curves", train["id"])
    _artifact(api, "training-metrics", train["id"])
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    assert Path(chromium).exists(), "Debian's chromium is missing: `make setup` installs it with apt-get"
    shots = tmp_path / "reports" / "ui"
    shots.mkdir(parents=True)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, timeout=TIMEOUT * 1000)
        try:
            context = browser.new_context(viewport={"width": 1440, "height": 900})
            context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base)
                          else route.abort())  # only the server under test; the UI's analytics SDK calls out
            page = context.new_page()
            page.set_default_timeout(TIMEOUT * 1000)

            # `/` lands on the dashboard; its sidebar leads to the runs list.
            page.goto(f"{base}/", wait_until="domcontentloaded")
            _wait_for(page, ["Dashboard", "Runs"], "dashboard", shots)
            page.get_by_role("link", name="Runs", exact=True).first.click()
            listed = [*FLOWS, *(by_flow[f]["name"] for f in FLOWS), "Completed", f"{len(runs)} Flow run"]
            _wait_for(page, listed, "runs list", shots)  # the count is of completed runs: none failed
            page.screenshot(path=str(shots / "prefect-ui.png"), full_page=True)

            # The train run's page and its Artifacts tab.
            page.get_by_role("link", name=train["name"], exact=True).first.click()
            _wait_for(page, [train["name"], "train", "Completed", "Artifacts"], "train flow run", shots)
            page.get_by_role("tab", name="Artifacts").click()
            _wait_for(page, ["training-metrics", "training-curves", chain["model"]], "train run artifacts", shots)
            page.screenshot(path=str(shots / "prefect-ui-train-run.png"), full_page=True)

            # This run's artifact renders the markdown and its curves PNG. The classic UI (Prefect 3.8) first shows
            # the key's page listing its versions; the new UI (3.9) opens the artifact itself.
            page.get_by_text("training-curves", exact=True).first.click()
            _wait_for(page, [curves["id"][:8], train["name"]], "training-curves key or artifact", shots)
            version = page.get_by_role("link", name=curves["id"][:8], exact=True)
            if version.count():
                version.click()
            _wait_for(page, ["Model card: sent-classifier", chain["dataset"], "test_accuracy"],
                      "training-curves artifact", shots)
            page.wait_for_function("() => [...document.images].some(i => i.src.startsWith('data:image/png')"
                                   " && i.complete && i.naturalWidth > 100)")
            page.screenshot(path=str(shots / "prefect-ui-training-curves.png"), full_page=True)
        finally:
            browser.close()

    assert (shots / "prefect-ui.png").stat().st_size > 10_000
    if os.environ.get("CUSTODY_SAVE_SCREENSHOTS") == "1":
        (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shots / "prefect-ui.png", ROOT / "docs" / "img" / "prefect-ui.png")
