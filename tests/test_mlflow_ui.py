"""The MLflow UI, checked in a real browser: `gatelab ui GRID` on a finished smoke grid, opened in headless Chromium.

A 3-variant, 6-step cut of ablations/smoke.yaml is submitted (Ray + the home's MLflow server, ~45 s), its server
stopped, and `gatelab ui smoke --set ... --home H --port P` started on the same home; it prints the grid's
runs-table and compare-runs addresses. Playwright drives Debian's `chromium` (`apt-get install chromium`; .ci/run
installs it; no `playwright install`). On the runs table (the training-runs view) it ticks the axis tags in the
"Columns" selector, expands the parent run "grid smoke", and checks, cell by cell, that every child run is listed
with its own variant and gate-axis tags. On the compare-runs page it checks that the parallel-coordinates plot
offers every gate axis as a parameter, plots three of them and the LR against final_val_ppl, and reads the
plot's axis titles back. The screenshots go to the test's tmp dir (always) and, once every check passed, to
docs/img/mlflow-ui-smoke.png and docs/img/mlflow-compare-smoke.png.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from mlflow.tracking import MlflowClient
from playwright.sync_api import Page, sync_playwright

from gatelab.tracking.server.auth import is_loopback
from gatelab.tracking.server.process import free_port, is_healthy, running_server, stop_server
from gatelab.tracking.store import Store

from grid_helpers import GATELAB_COMMAND

pytestmark = [pytest.mark.browser, pytest.mark.ray, pytest.mark.mlflow]

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "docs" / "img" / "mlflow-ui-smoke.png"
COMPARE_SCREENSHOT = ROOT / "docs" / "img" / "mlflow-compare-smoke.png"
VARIANTS = ["baseline", "g1_elementwise_sigmoid", "g1_headwise_sigmoid"]
# The grid's cut: given to `submit` and to `ui`, which must name the same trials.
GRID_SETS = ["--set", "base.schedule.max_steps=6", "--set", f"axes.variant=[{', '.join(VARIANTS)}]"]
# What the catalog (trainer/config/catalog.py) gives each variant: the UI must show these, cell by cell.
EXPECTED_AXES = {
    "baseline": {"gate_position": "none"},
    "g1_elementwise_sigmoid": {"gate_position": "g1", "gate_granularity": "elementwise", "gate_activation": "sigmoid"},
    "g1_headwise_sigmoid": {"gate_position": "g1", "gate_granularity": "headwise", "gate_activation": "sigmoid"},
}
TAG_COLUMNS = ["variant", "seed", "gate_position", "gate_granularity", "gate_activation"]
# Params of every gated trial run: what the compare page's parallel-coordinates plot can offer.
AXIS_PARAMS = ["gate_position", "gate_granularity", "gate_sharing", "gate_combine", "gate_activation", "gate_input"]
PLOTTED_PARAMS = ["gate_position", "gate_granularity", "gate_activation", "optim.lr"]
OPEN_OPTION = ".du-bois-light-select-dropdown:not(.du-bois-light-select-dropdown-hidden)"
HIDDEN_ATTRIBUTES = ["Dataset", "Source", "Models"]  # empty for these runs; hidden to make room for the tags
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Tests send nothing beyond loopback: no host resolves but localhost and the server's 127.0.0.1, and
    # _loopback_only below aborts any page request to another address.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]
RUN_NAME_COL = "attributes.`Run Name`"
TREE_NODE = ".du-bois-light-tree-treenode"  # a row of the Columns selector's tree (MLflow's antd prefix)


def _loopback_only(route) -> None:
    """A Playwright route handler: requests to loopback go on, any other is aborted before it is sent."""
    host = urlsplit(route.request.url).hostname or ""
    (route.continue_ if is_loopback(host) else route.abort)()


def _chromium() -> str | None:
    override = os.environ.get("GATELAB_CHROMIUM")
    if override:
        return override
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _gatelab(*args: str) -> list[str]:
    """The `gatelab` console script of this environment (the CLI a user types), else `python -m grid.cli`."""
    script = Path(sys.executable).with_name("gatelab")
    return [str(script), *args] if script.exists() else [*GATELAB_COMMAND, *args]


def _run(*args: str, timeout_s: float) -> str:
    proc = subprocess.run(
        _gatelab(*args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout_s
    )
    assert proc.returncode == 0, f"gatelab {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-4000:]}"
    return proc.stdout


def _tick(page: Page, group: str, name: str) -> None:
    """Click the checkbox of column `name` under `group` ("Attributes", "Tags", ...) in the open Columns
    selector. A tag and a parameter can share a name (`variant`, `seed`), so the group is located first."""
    tree = page.get_by_test_id("column-selector-tree")
    search = page.get_by_placeholder("Search columns")
    search.fill(name if group != "Attributes" else "")  # the search filters metrics/params/tags only
    page.wait_for_timeout(200)
    texts = tree.locator(TREE_NODE).all_inner_texts()
    current, index = None, None
    for i, text in enumerate(texts):
        text = text.strip()
        if text == group or text.startswith(f"{group} ("):
            current = group
        elif text in ("Attributes",) or (text.endswith(")") and " (" in text):
            current = text
        elif current == group and text == name:
            index = i
            break
    assert index is not None, f"no column {name!r} under {group!r} in the Columns selector: {texts}"
    tree.locator(TREE_NODE).nth(index).locator(".du-bois-light-tree-checkbox").click()


def _table(page: Page) -> list[dict[str, str]]:
    """The rendered runs table: one dict per row, col-id -> cell text (the run name cell: its link's text).
    ag-grid splits a row across its pinned and scrolling containers; `row-index` joins the halves."""
    return page.evaluate("""() => {
        const rows = {};
        for (const cell of document.querySelectorAll('[role=row][row-index] [role=gridcell][col-id]')) {
            const index = cell.closest('[role=row]').getAttribute('row-index');
            const link = cell.querySelector('a');
            const text = (cell.getAttribute('col-id') === 'attributes.`Run Name`' && link) ? link.innerText
                                                                                        : cell.innerText;
            (rows[index] = rows[index] || {})[cell.getAttribute('col-id')] = text.trim();
        }
        return Object.keys(rows).sort((a, b) => a - b).map(k => rows[k]);
    }""")


def _pick(page: Page, select, names: list[str]) -> list[str]:
    """Choose `names` in a multi-select of the compare page (antd, virtualised: only options near the top are
    rendered, so each is searched first); returns the names it offered that were searched for but missing."""
    select.click()
    dropdown = page.locator(OPEN_OPTION)
    dropdown.wait_for()
    missing = []
    for name in names:
        select.locator("input").fill(name)
        option = dropdown.locator(f'.du-bois-light-select-item-option[title="{name}"]')
        if option.count() == 0:
            page.wait_for_timeout(300)
        if option.count() == 0:
            missing.append(name)
            continue
        option.click()
    page.keyboard.press("Escape")
    return missing


def _offered(page: Page, select, names: list[str]) -> list[str]:
    """Which of `names` the multi-select offers as options (searched one by one; nothing is chosen)."""
    select.click()
    dropdown = page.locator(OPEN_OPTION)
    dropdown.wait_for()
    found = []
    for name in names:
        select.locator("input").fill(name)
        page.wait_for_timeout(200)
        if dropdown.locator(f'.du-bois-light-select-item-option[title="{name}"]').count():
            found.append(name)
    select.locator("input").fill("")
    page.keyboard.press("Escape")
    return found


def _own_session_with_ctrl_c() -> None:
    """In the `gatelab ui` child before exec: its own process group, and SIGINT at its default even when this
    test was started with SIGINT ignored (a background job of a non-interactive shell), so that Python turns
    it into KeyboardInterrupt as a Ctrl-C would."""
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _stop_ui(proc: subprocess.Popen, store: Store) -> None:
    """Ctrl-C `gatelab ui` (it then stops its server), SIGKILL its group if it hangs, then stop any server left."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stop_server(store)


def test_mlflow_ui_lists_child_runs_with_axis_tags_and_compares_gate_axes(tmp_path):
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no Chromium on PATH (Debian: apt-get install chromium; or set GATELAB_CHROMIUM)")
    home = tmp_path / "home"
    store = Store(home)
    # A finished smoke grid: 3 variants x 1 seed, 6 steps each.
    out = _run("submit", str(ROOT / "ablations" / "smoke.yaml"), "--home", str(home), *GRID_SETS, timeout_s=300)
    assert "grid smoke: 3 done, 0 failed" in out, out[-4000:]
    _run("stop-server", "--home", str(home), timeout_s=60)
    assert running_server(store) is None

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    ui_log = tmp_path / "gatelab-ui.log"
    with ui_log.open("w") as log:
        ui = subprocess.Popen(
            _gatelab("ui", "smoke", *GRID_SETS, "--home", str(home), "--port", str(port)),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_own_session_with_ctrl_c,
        )
    try:
        deadline = time.monotonic() + 120
        # The banner is printed once the server answers /health and is recorded for the home; the grid's
        # addresses follow it, the runs table last.
        while "runs table:" not in ui_log.read_text() or not is_healthy(uri, timeout_s=1.0):
            assert ui.poll() is None, f"gatelab ui exited {ui.returncode}:\n{ui_log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, "gatelab ui did not answer /health within 120 s"
            time.sleep(0.3)
        assert running_server(store).port == port  # the UI's own server, recorded for the home
        printed = ui_log.read_text()
        assert f"MLflow UI at {uri}" in printed and "grid smoke: 3 of 3 trials have runs" in printed, printed
        compare_url = next(word for word in printed.split() if "#/compare-runs?" in word)
        runs_table_url = next(word for word in printed.split() if "/runs?workflowType=" in word)

        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name("smoke")
        assert runs_table_url == f"{uri}/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning"
        children = client.search_runs([experiment.experiment_id], filter_string="tags.`gatelab.kind` = 'trial'")
        assert sorted(run.data.tags["variant"] for run in children) == sorted(VARIANTS)
        assert all(run.info.run_id in compare_url for run in children), compare_url
        expected = {}  # run name -> {tag: the text its cell must show}
        for run in children:
            tags, params = run.data.tags, run.data.params
            for key, value in EXPECTED_AXES[tags["variant"]].items():
                assert tags.get(key) == value, (tags["variant"], key, tags.get(key))
                assert params.get(key) == value, (tags["variant"], key, params.get(key))  # params as well
            assert (params["seed"], params["optim.lr"]) == ("0", "0.003"), params
            if tags["variant"] != "baseline":
                assert set(AXIS_PARAMS) <= set(params), sorted(params)
            expected[run.info.run_name] = {tag: tags.get(tag) or "-" for tag in TAG_COLUMNS}
            assert tags["variant"] in run.info.run_name

        shot = tmp_path / "mlflow-ui-smoke.png"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 900})
                page.route("**/*", _loopback_only)
                page.set_default_timeout(30_000)
                # The MLflow Assistant side panel opens itself on a first visit and would squeeze the table.
                page.add_init_script(
                    "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
                    "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
                )
                # The experiment page opens in the GenAI view; `gatelab ui` prints the training-runs view's.
                page.goto(runs_table_url)
                parent = page.get_by_role("link", name="grid smoke", exact=True)
                parent.wait_for(timeout=60_000)

                page.get_by_role("button", name="Columns").click()
                page.get_by_test_id("column-selector-tree").wait_for()
                for name in HIDDEN_ATTRIBUTES:
                    _tick(page, "Attributes", name)
                for tag in TAG_COLUMNS:
                    _tick(page, "Tags", tag)
                page.keyboard.press("Escape")
                for tag in TAG_COLUMNS:
                    page.locator(f'[role=columnheader][col-id="tags.`{tag}`"]').wait_for()

                # Expand "grid smoke": its children are nested under it, collapsed by default.
                page.locator(f'[role=gridcell][col-id="{RUN_NAME_COL}"]', has=parent).locator("button").click()
                for name in expected:
                    page.get_by_role("link", name=name, exact=True).wait_for()
                for col in (RUN_NAME_COL, *(f"tags.`{tag}`" for tag in TAG_COLUMNS)):  # autosize for the shot
                    page.locator(f'[role=columnheader][col-id="{col}"] .ag-header-cell-resize').dblclick()
                page.wait_for_timeout(500)
                page.screenshot(path=str(shot))
                rows = _table(page)
                footer = page.get_by_text("matching runs").inner_text()

                # The compare page of the grid's three trials, as `gatelab ui smoke` printed it.
                page.goto(compare_url)
                page.get_by_text(f"Comparing {len(VARIANTS)} Runs from 1 Experiment").wait_for(timeout=60_000)
                panel = page.get_by_role("tabpanel")  # the open "Parallel Coordinates Plot" tab
                panel.get_by_text("Parameters:").wait_for()
                params_select, metrics_select = panel.locator(".du-bois-light-select").all()
                offered = _offered(page, params_select, [*AXIS_PARAMS, "seed", "optim.lr"])
                panel.get_by_role("button", name="Clear All").click()
                missing = _pick(page, params_select, PLOTTED_PARAMS) + _pick(page, metrics_select, ["final_val_ppl"])
                page.wait_for_timeout(1000)  # plotly redraws
                plotted = [t.text_content() for t in panel.locator(".parcoords .axis-title").all()]
                compare_shot = tmp_path / "mlflow-compare-smoke.png"
                page.screenshot(path=str(compare_shot))
            finally:
                browser.close()
    finally:
        _stop_ui(ui, store)
    assert running_server(store) is None

    assert len(rows) == 1 + len(VARIANTS), rows
    assert rows[0][RUN_NAME_COL] == "grid smoke"
    assert all(rows[0].get(f"tags.`{tag}`") == "-" for tag in TAG_COLUMNS), rows[0]
    shown = {row[RUN_NAME_COL]: row for row in rows[1:]}
    assert set(shown) == set(expected), (sorted(shown), sorted(expected))
    for name, tags in expected.items():
        for tag, value in tags.items():
            assert shown[name].get(f"tags.`{tag}`") == value, (name, tag, shown[name])
    assert (
        shown[next(n for n in expected if n.startswith("g1_headwise_sigmoid "))]["tags.`gate_granularity`"]
        == "headwise"
    )
    assert footer.strip() == f"{1 + len(VARIANTS)} matching runs", footer
    assert shot.stat().st_size > 10_000

    assert offered == [*AXIS_PARAMS, "seed", "optim.lr"], offered  # every gate axis is a plottable parameter
    assert missing == [], missing
    assert plotted == [*PLOTTED_PARAMS, "final_val_ppl"], plotted
    assert compare_shot.stat().st_size > 10_000
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, SCREENSHOT)
    shutil.copyfile(compare_shot, COMPARE_SCREENSHOT)
