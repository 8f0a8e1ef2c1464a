"""The committed records open offline as they are: every figure's plotly.js resolves to the repository's copy from where
the figure sits, and no record under runs/ or papers/ carries a path of the machine that wrote it."""
import re, subprocess
from pathlib import Path
from srm_nb.runs import repo_root

ROOT = repo_root(Path(__file__).parent)
TRACKED = subprocess.run(['git', 'ls-files', 'runs', 'papers'], cwd=ROOT, capture_output=True, text=True).stdout.split()

def test_figures_load_plotly_from_the_repository():
    figures = [f for f in TRACKED if f.endswith('.html')]
    assert figures, "no committed figures found"
    broken = []
    for f in figures:
        for src in re.findall(r'<script[^>]*src="([^"]+)"', (ROOT / f).read_text()):
            if src.startswith(('http:', 'https:', '//')) or not (ROOT / f).parent.joinpath(src).resolve().is_file():
                broken.append(f"{f}: {src}")
    assert not broken, broken

def test_records_carry_no_machine_paths():
    text_files = [f for f in TRACKED if f.endswith(('.json', '.jsonl', '.md', '.html', '.csv'))]
    bad = [f for f in text_files if re.search(r'/(work|tmp|home|root|Users)/[\w.-]+/', (ROOT / f).read_text())]
    assert not bad, bad
