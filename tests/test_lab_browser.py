"""A JupyterLab session driven in a real browser: `aios lab 01 02 04` on loopback, Debian's chromium
through chromium-driver (selenium; nothing is downloaded), as a person steps through it: in 01 they
set `plan = False` in the parameters cell, then Run > Run All Cells and File > Save; 02 and 04 are
run as they open (plan mode).

It checks that no cell raised and none printed a red stderr block, that a long command shows one
progress widget that ends as one line, that git status is what it was (no tracked file changed,
no stray folder), and that the session is in outputs/index.html with its phases and outcome.
Screenshots are kept in build/test-artifacts/ (docs/lab-session.png in the README is one of them).
"""
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "build" / "test-artifacts"
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]



@pytest.fixture(scope="module", autouse=True)
def _browser_installed():
    """scripts/setup.sh installs both (as root, as the README's commands run): missing is a failure."""
    if not (CHROMIUM and DRIVER):
        pytest.fail("chromium or chromedriver is missing: `make setup` as root on Debian or Ubuntu installs "
                    "Debian's chromium and chromium-driver (scripts/setup.sh)", pytrace=False)


from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

PROGRESS_NOTEBOOK = "progress-check.ipynb"
#: a command that stays silent long enough (6 s) for the runner to show its progress widget
PROGRESS_CELL = (
    "from aios_lib.core.journal import Journal\n"
    "from aios_lib.core.progress import build_progress\n"
    "from aios_lib.core.runner import Runner\n"
    "r = Runner(journal=Journal(None), progress_after=1.0)\n"
    "r.work(['sh', '-c', 'for i in 1 2 3 4 5 6; do echo \"[$i/6] step $i\"; sleep 1; done'], progress=build_progress)"
)


def _templates() -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((ROOT / "notebooks").rglob("*"))
            if p.is_file()}


def _git_status() -> str:
    """What git sees changed or new in the checkout (ignored files aside): a session must add nothing."""
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout


PHASES = ("01", "02", "04")


class LabServer:
    """`aios lab 01 02 04` (plan = True in each copy) in its own process group; its output collected."""

    def __init__(self, outputs: Path):
        from aios_lib.lab import free_port

        env = {**os.environ, "AIOS_OUTPUTS": str(outputs)}
        env.pop(  # the session's kernels must not think they are headless
            "AIOS_HEADLESS", None)
        self.port = free_port("127.0.0.1", 18888)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aios_lib.cli", "lab", *PHASES, "--params", "parameters/default.yaml",
             "--port", str(self.port)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self._wait_for(r"open:\s+(\S+)").group(1)
        self.run_dir = Path(self._wait_for(r"record:\s+(\S+)").group(1))
        self.base, self.token = re.match(r"(http://[^/]+)/.*\?token=(\w+)", self.url).groups()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def _wait_for(self, pattern: str, timeout: float = 60):
        end = time.time() + timeout
        while time.time() < end:
            for line in list(self.lines):
                m = re.search(pattern, line)
                if m:
                    return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"aios lab printed no {pattern!r}:\n{''.join(self.lines)}")

    def notebook_url(self, name: str) -> str:
        """The notebook alone in a fresh layout (``reset``): no earlier tab is the one Run All acts on."""
        return f"{self.base}/lab/tree/{name}?reset&token={self.token}"

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise


def _browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,860", "--no-first-run"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def _wait(what, condition, timeout: float = 240, every: float = 0.5):
    end = time.time() + timeout
    while time.time() < end:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _wait_or_none(condition, timeout: float):
    try:
        return _wait("", condition, timeout=timeout, every=0.2)
    except AssertionError:
        return None


def _command(driver, menu: str, command: str) -> None:
    """Click a JupyterLab menu item, as a person does (Run > Run All Cells, File > Save). The item is
    enabled once the notebook is JupyterLab's current widget: a click on its tab makes it so."""
    from selenium.webdriver.common.keys import Keys

    for _ in range(3):
        tab = driver.find_elements(By.CSS_SELECTOR, ".lm-DockPanel .lm-TabBar-tab.lm-mod-current")
        if tab:  # the notebook's tab, as a person clicks it: that activates the notebook
            tab[0].click()
        label = next(e for e in driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-itemLabel") if e.text == menu)
        label.click()
        item = _wait(f"menu item {command}", lambda: driver.find_elements(
            By.CSS_SELECTOR, f".lm-Menu-item[data-command='{command}']"), timeout=10)
        if "lm-mod-disabled" not in (item[0].get_attribute("class") or ""):
            item[0].click()
            return
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        time.sleep(1)
    raise AssertionError(f"{menu} > {command} stayed disabled")


CURRENT_PANEL = ("const tab = document.querySelector('.lm-DockPanel .lm-TabBar-tab.lm-mod-current');"
                 "const panel = tab && document.getElementById(tab.dataset.id);")


def _outputs_text(driver) -> str:
    """The text of every output of the notebook in the current tab."""
    return driver.execute_script(CURRENT_PANEL + "return panel ? [...panel.querySelectorAll('.jp-OutputArea')]"
                                 ".map(e => e.innerText).join('\\n') : '';")


def _progress_widgets(driver) -> int:
    return driver.execute_script(CURRENT_PANEL + "return panel ? panel.querySelectorAll("
                                 "'.jp-OutputArea .widget-hprogress').length : 0;")


def _prompts(driver) -> list[str]:
    """The execution prompts of the notebook in the current tab ("[ ]:", "[*]:", "[3]:")."""
    return driver.execute_script(
        CURRENT_PANEL + "return panel ? [...panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(e => e.textContent.trim()) : [];")


def _idle(driver) -> bool:
    return "| Idle" in driver.find_element(By.ID, "jp-main-statusbar").text


def _open(driver, lab: LabServer, name: str) -> None:
    driver.get(lab.notebook_url(name))
    _wait(f"{name} to open alone with an idle kernel", lambda: _prompts(driver) and _idle(driver) and [
        t.text for t in driver.find_elements(By.CSS_SELECTOR, ".lm-DockPanel .lm-TabBar-tab")] == [name], timeout=90)


PARAMETERS_EDITOR = CURRENT_PANEL + (
    "const cells = panel ? [...panel.querySelectorAll('.jp-CodeCell')] : [];"
    "const cell = cells.find(c => /^plan = (True|False)$/m.test(c.querySelector('.cm-content').innerText));"
    "return cell ? cell.querySelector('.cm-content') : null;")


def _leave_plan_mode(driver) -> None:
    """What the parameters cell and the run header tell a person to do: click into the cell, make its
    last line `plan = False` (Ctrl+End, four backspaces, "False"), then Escape."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    editor = driver.execute_script(PARAMETERS_EDITOR)
    assert editor is not None, "no parameters cell with a `plan = ...` line"
    assert editor.text.rstrip().splitlines()[-1] == "plan = True", editor.text
    editor.click()
    (ActionChains(driver).key_down(Keys.CONTROL).send_keys(Keys.END).key_up(Keys.CONTROL)
     .send_keys(Keys.BACKSPACE * 4).send_keys("False").send_keys(Keys.ESCAPE).perform())
    _wait("the parameters cell to say plan = False", lambda: driver.execute_script(PARAMETERS_EDITOR).text
          .rstrip().splitlines()[-1] == "plan = False", timeout=10)


def _run_all_and_save(driver, lab: LabServer, name: str, timeout: float = 240) -> None:
    """Run > Run All Cells in the open notebook, wait until every cell ran, File > Save."""
    for _ in range(3):  # a click that did not reach the notebook leaves every prompt "[ ]:"
        _command(driver, "Run", "runmenu:run-all")
        if _wait_or_none(lambda: any(x != "[ ]:" for x in _prompts(driver)), timeout=10):
            break
    try:
        _wait(f"every cell of {name} to run", lambda: (p := _prompts(driver)) and
              all(re.fullmatch(r"\[\d+\]:", x) for x in p) and _idle(driver), timeout=timeout)
    except AssertionError as e:
        shot = _shot(driver, f"failed-{name}.png")
        errors = driver.execute_script(
            "return [...document.querySelectorAll('.jp-OutputArea-output')].map(e => e.textContent)"
            ".filter(t => /Error|Traceback/.test(t)).map(t => t.slice(0, 2000))")
        raise AssertionError(f"{e}; prompts {_prompts(driver)}; errors {errors}; screenshot {shot}") from None
    _command(driver, "File", "docmanager:save")
    saved = lab.run_dir / name
    _wait(f"{name} saved with its outputs", lambda: all(
        c.get("execution_count") for c in nbformat.read(saved, as_version=4).cells
        if c.cell_type == "code" and c.source.strip()), timeout=30)


def _scroll_to_output(driver, text: str) -> None:
    driver.execute_script(
        "const el = [...document.querySelectorAll('.jp-Cell')].find(c => c.querySelector('.jp-OutputArea') &&"
        " c.querySelector('.jp-OutputArea').textContent.includes(arguments[0]));"
        "if (el) el.scrollIntoView({block: 'start'});", text)
    time.sleep(1)


def _shot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    return path


def _mode_in_header(ipynb: Path) -> str | None:
    """RUN or PLAN, from the saved notebook's first run header ("**Synapse run `...` · phase NN · RUN**")."""
    for c in nbformat.read(ipynb, as_version=4).cells:
        for o in c.get("outputs", []):
            m = re.search(r"Synapse run `[^`]+` · phase \d+ · (\w+)", o.get("data", {}).get("text/markdown", ""))
            if m:
                return m.group(1)
    return None


def _problems(ipynb: Path) -> list[str]:
    """Errors and red stderr blocks in a saved notebook."""
    nb = nbformat.read(ipynb, as_version=4)
    out = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            if o.get("output_type") == "error":
                out.append(f"{ipynb.name}: {o.get('ename')}: {o.get('evalue')}")
            elif o.get("output_type") == "stream" and o.get("name") == "stderr":
                out.append(f"{ipynb.name}: stderr: {o.get('text', '')[:200]}")
    return out


def test_a_jupyterlab_session_in_chromium(tmp_path):
    started = time.time()
    templates, status = _templates(), _git_status()
    outputs = tmp_path / "outputs"
    lab = LabServer(outputs)
    driver = None
    try:
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "synapse", "display_name": "Synapse (.venv)", "language": "python"}
        nb.cells = [nbformat.v4.new_code_cell(PROGRESS_CELL)]
        nbformat.write(nb, lab.run_dir / PROGRESS_NOTEBOOK)
        driver = _browser()

        # 01 for real: plan = False typed into its parameters cell, Run All, Save
        _open(driver, lab, "01_research_prep.ipynb")
        _leave_plan_mode(driver)
        _run_all_and_save(driver, lab, "01_research_prep.ipynb")
        _scroll_to_output(driver, "Synapse run")
        _shot(driver, "lab-01-header.png")

        # 02 and 04 as they open: plan mode (02 plans the blueprint's machine: the default file has no target)
        _open(driver, lab, "02_base_system.ipynb")
        _run_all_and_save(driver, lab, "02_base_system.ipynb")
        _scroll_to_output(driver, "commands (")
        shot = _shot(driver, "lab-02-plan.png")
        _open(driver, lab, "04_ai_runtime.ipynb")
        _run_all_and_save(driver, lab, "04_ai_runtime.ipynb")

        # a long command: one live widget, then one plain line
        _open(driver, lab, PROGRESS_NOTEBOOK)
        _command(driver, "Run", "runmenu:run-all")
        _wait("a progress widget", lambda: _progress_widgets(driver) == 1, timeout=30, every=0.2)
        _wait("its percent and last line", lambda: re.search(r"\d+%.*step\s\d", _outputs_text(driver), re.S), timeout=10)
        _shot(driver, "lab-progress.png")
        _wait("the command to end", lambda: "[done in" in _outputs_text(driver), timeout=60)
        done = _outputs_text(driver)
        assert _progress_widgets(driver) == 0 and done.count("[done in") == 1 and "rc=0] sh -c" in done, done
        _command(driver, "File", "docmanager:save")
    finally:
        if driver is not None:
            driver.quit()
        rc = lab.stop()
    log = "".join(lab.lines)
    assert rc == 0, log
    notebooks = sorted(p.name for p in lab.run_dir.glob("0*.ipynb"))
    assert [n[:2] for n in notebooks] == list(PHASES)

    # no cell raised, no red blocks; each run header says what the kernel did
    assert [p for n in notebooks for p in _problems(lab.run_dir / n)] == []
    assert [_mode_in_header(lab.run_dir / n) for n in notebooks] == ["RUN", "PLAN", "PLAN"]
    # the templates are as they were, and git sees nothing new or changed
    assert _templates() == templates and _git_status() == status
    # the session's record: run.json, HTML, the index
    meta = json.loads((lab.run_dir / "run.json").read_text())
    phases = {p["phase"]: p for p in meta["phases"]}
    assert [(ph, phases[ph]["status"], phases[ph]["plan"]) for ph in PHASES] == [
        ("01", "ok", False), ("02", "ok", True), ("04", "ok", True)], meta["phases"]
    assert meta["outcome"] == "ok" and meta["finished"] and meta["session"] == "lab"
    assert all((lab.run_dir / n).with_suffix(".html").exists() for n in notebooks)
    index = (outputs / "index.html").read_text()
    row = next(r for r in index.split("<tr>") if meta["run_id"] in r)
    assert "01 ok" in row and "02 ok (plan)" in row and "04 ok (plan)" in row and "lab · run 01 · plan 02 04" in row
    assert "session open" not in row
    assert f"{lab.run_dir.parent.name}/{meta['run_id']}/01_research_prep.html" in row
    assert shot.stat().st_size > 20_000
    print(f"browser session: {time.time() - started:.0f}s; screenshots in {ARTIFACTS}")
