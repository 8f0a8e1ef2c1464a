"""`nbs/explore.ipynb` in a real browser: JupyterLab serves a copy of it, headless Chromium (Selenium) runs every cell from
the Run menu, and the board (a plotly heatmap), the sliders and no error must show. The copy starts from a fresh clone's
state — a runs folder with records and no checkpoint — so the notebook trains its demo first. A screenshot lands in
`runs/local/browser/explore.png` (git-ignored); the test records its path and names it in every failure."""
import json, os, secrets, shutil, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import nbformat, pytest
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook
from selenium import webdriver
from selenium.webdriver.common.by import By
from srm_nb.train import repo_root

ROOT = repo_root(Path(__file__).parent)
NB = ROOT / 'nbs' / 'explore.ipynb'
CHROMIUM, CHROMEDRIVER = Path('/usr/bin/chromium'), Path('/usr/bin/chromedriver')    # Debian's chromium, chromium-driver
SHOT = ROOT / 'runs' / 'local' / 'browser' / 'explore.png'
SMALL = dict(hidden=8, n_puzzles=3, probe_steps=6)          # the notebook's parameters, small for the test
RUN_TIMEOUT_S = 240                                         # for every cell to finish, once the page is up

def require_browser():
    "Skip when chromium or chromedriver is missing, unless `CI` is set: there a missing browser fails the test."
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if not missing: return
    msg = f"{', '.join(missing)} missing: `make test` (its `browser` step) installs Debian's chromium and chromium-driver"
    if os.environ.get('CI'): pytest.fail(f"CI is set and {msg}")
    pytest.skip(msg)

def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def fresh_clone_root(root:Path) -> Path:
    """A JupyterLab root holding `explore.ipynb` with `SMALL` parameters injected (as papermill does) and a runs folder
    with one committed run's records and no checkpoint, as a fresh clone has; the demo is trained into it."""
    runs = root / 'runs'
    shutil.copytree(ROOT / 'runs' / 'default', runs / 'default')
    nb = parameterize_notebook(load_notebook_node(str(NB)),
                               dict(SMALL, runs_dir=str(runs), run_dir='', demo_dir=str(runs / 'local' / 'demo')))
    nbformat.write(nb, root / 'explore.ipynb')
    return root

def jupyter_env(tmp:Path) -> dict:
    "Environment for a JupyterLab whose home, config, data, runtime and settings all live under `tmp`."
    d = {k: tmp / k.lower() for k in ('HOME', 'JUPYTER_CONFIG_DIR', 'JUPYTER_DATA_DIR', 'JUPYTER_RUNTIME_DIR',
                                      'JUPYTERLAB_SETTINGS_DIR', 'JUPYTERLAB_WORKSPACES_DIR', 'IPYTHONDIR')}
    settings = {'@jupyterlab/notebook-extension/tracker.jupyterlab-settings': {'windowingMode': 'none'},   # every cell in the DOM
                '@jupyterlab/apputils-extension/notification.jupyterlab-settings': {'fetchNews': 'false',
                                                                                   'checkForUpdates': False}}
    for name, value in settings.items():
        (d['JUPYTERLAB_SETTINGS_DIR'] / name).parent.mkdir(parents=True, exist_ok=True)
        (d['JUPYTERLAB_SETTINGS_DIR'] / name).write_text(json.dumps(value))
    for p in d.values(): p.mkdir(parents=True, exist_ok=True)
    return {**os.environ, **{k: str(v) for k, v in d.items()}, 'OMP_NUM_THREADS': '1', 'JUPYTER_PLATFORM_DIRS': '1'}

def wait_until(check, timeout:float, what:str, poll:float=0.5):
    "Poll `check()` until it returns something truthy (returned) or `timeout` seconds pass (TimeoutError naming `what`)."
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if (v := check()): return v
        time.sleep(poll)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")

@pytest.fixture
def lab(tmp_path):
    "A JupyterLab on a free port with a token, serving `fresh_clone_root`; yields the notebook URL, the root and the log."
    require_browser()
    root = fresh_clone_root(tmp_path / 'root')
    port, token = free_port(), secrets.token_hex(16)
    log = open(tmp_path / 'jupyter.log', 'w')
    proc = subprocess.Popen([sys.executable, '-m', 'jupyterlab', '--no-browser', '--ip=127.0.0.1', f'--port={port}',
                             f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={root}',
                             '--ServerApp.port_retries=0', '--LabApp.extension_manager=readonly',
                             *(['--allow-root'] if os.geteuid() == 0 else [])], env=jupyter_env(tmp_path), stdout=log, stderr=log)
    base = f'http://127.0.0.1:{port}'
    def up():
        if proc.poll() is not None: raise RuntimeError(f"jupyter lab exited: {(tmp_path / 'jupyter.log').read_text()[-3000:]}")
        try: return urllib.request.urlopen(f'{base}/api/status?token={token}', timeout=2).status == 200
        except OSError: return False
    try:
        wait_until(up, 60, 'jupyter lab answering')
        yield f'{base}/lab/tree/explore.ipynb?token={token}', root, tmp_path / 'jupyter.log'
    finally:
        proc.terminate()
        try: proc.wait(10)
        except subprocess.TimeoutExpired: proc.kill()
        log.close()

@pytest.fixture
def browser(tmp_path):
    "Headless Chromium driven by chromedriver, with its profile under `tmp_path`."
    require_browser()
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for a in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--window-size=1400,1800',
              f'--user-data-dir={tmp_path / "chromium"}'): opts.add_argument(a)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)))
    try: yield driver
    finally: driver.quit()

def run_all_cells(driver):
    "Run ▸ Run All Cells, from JupyterLab's menu bar."
    menu = wait_until(lambda: [m for m in driver.find_elements(By.CSS_SELECTOR, '.lm-MenuBar-itemLabel') if m.text == 'Run'],
                      60, "JupyterLab's Run menu")[0]
    menu.click()
    wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, '#jp-mainmenu-run li.lm-Menu-item[data-command="runmenu:run-all"]'),
               10, 'Run All Cells in the Run menu')[0].click()

def texts(driver, css:str) -> list[str]:
    "The rendered text of every element matching `css`, read in one go (the page keeps changing while cells run)."
    return driver.execute_script("return Array.from(document.querySelectorAll(arguments[0]), e => e.innerText)", css)

def prompts(driver) -> list[str]:
    "The input prompt of every code cell: '[n]:' once run, '[*]:' while queued or running, '[ ]:' never run."
    return [t.strip() for t in texts(driver, '.jp-CodeCell .jp-InputPrompt')]

def error_outputs(driver) -> list[str]:
    "Every output that shows a traceback or a widget that failed to display."
    return [t for t in texts(driver, '.jp-OutputArea-output') if 'Traceback' in t or 'Error displaying widget' in t]

def plot_titles(driver, css:str='') -> list[str]:
    "The title of every rendered plotly figure (that also holds an element matching `css`, if given)."
    return driver.execute_script("""return Array.from(document.querySelectorAll('.js-plotly-plot'))
        .filter(f => !arguments[0] || f.querySelector(arguments[0]))
        .map(f => (f.querySelector('.gtitle') || {textContent: ''}).textContent)""", css)

def slider_labels(driver) -> list[str]:
    "The description of every ipywidgets slider rendered."
    return [t.strip() for t in texts(driver, '.jupyter-widgets.widget-slider .widget-label')]

def open_and_run_all(driver, url:str):
    "Open the notebook at `url`, wait for its kernel, Run All Cells, and wait until no cell is queued or one shows an error."
    driver.get(url)
    wait_until(lambda: len(prompts(driver)) >= 10 and '[ ]:' in prompts(driver), 90, 'the notebook open, not yet run')
    wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, '.jp-Notebook-ExecutionIndicator[data-status="idle"]'),
               60, 'the kernel idle')
    run_all_cells(driver)
    wait_until(lambda: '[*]:' in prompts(driver), 30, 'the cells queued')
    wait_until(lambda: '[*]:' not in prompts(driver) or error_outputs(driver), RUN_TIMEOUT_S, 'every cell run')

def save_screenshot(driver, path:Path):
    "A PNG of the window at `path`, scrolled to the board (the plotly figure with a heatmap) where there is one."
    driver.execute_script("""const hm = document.querySelector('.js-plotly-plot g.hm');
        if (hm) hm.closest('.js-plotly-plot').scrollIntoView({block: 'start'});""")
    time.sleep(1)
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))

BOARD = 'g.hm'          # plotly's heatmap layer: of the notebook's three figures only the board has one

def test_explore_in_a_browser(lab, browser, record_property):
    url, root, log = lab
    where = f"(screenshot {SHOT}; server log {log})"
    record_property('screenshot', str(SHOT))
    t0 = time.monotonic()
    try:
        open_and_run_all(browser, url)
        assert not error_outputs(browser), f"a cell shows an error {where}: {error_outputs(browser)[0][-2000:]}"
        ran = prompts(browser)
        assert ran and all(p[1:-2].isdigit() for p in ran), f"not every cell ran: {ran} {where}"
        assert 'trained a demo run into' in ''.join(texts(browser, '.jp-OutputArea-output')), f"no demo trained {where}"
        demo = json.loads((root / 'runs' / 'local' / 'demo' / 'params.json').read_text())
        last = 2 * demo['n_sup'] * demo['model_config']['cycles']      # the notebook's checks leave the board there
        wait_until(lambda: [t for t in plot_titles(browser, BOARD) if t.startswith(f'puzzle 0, cycle {last} ')], 30,
                   f"the board (a plotly heatmap) drawn at puzzle 0, cycle {last}")
        titles = plot_titles(browser)
        assert len(titles) == 3 and any('replay up to step' in t for t in titles), f"plotly figures: {titles} {where}"
        labels = slider_labels(browser)
        assert {'κ', 'α', 'η', 'puzzle', 'cycle', 'up to step'} <= set(labels), f"sliders rendered: {labels} {where}"
    except TimeoutError as e: pytest.fail(f"{e} {where}; board titles: {plot_titles(browser, BOARD)}")
    finally:
        save_screenshot(browser, SHOT)
        print(f"screenshot: {SHOT} ({time.monotonic() - t0:.0f} s in the browser)")
