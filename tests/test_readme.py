"""The README's Python examples run as they are written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_example_runs(i, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples write under runs/; keep them out of the checkout
    exec(compile(BLOCKS[i], f"README.md example {i + 1}", "exec"), {"__name__": "__readme__"})
