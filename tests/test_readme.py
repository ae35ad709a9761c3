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


SH_BLOCKS = re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S)


def _commands(block: str) -> list[tuple[str, list[str]]]:
    """Each command of a block with the ``#>`` lines that follow it (what it must print)."""
    out: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("#>"):
            out[-1][1].append(line[2:].strip())
        elif line.strip() and not line.startswith("#"):
            out.append((line.strip(), []))
    return out


def _run(command: str) -> int:
    """One README command, in this process: ``matryoshka ...`` or ``python script.py ...``."""
    import runpy
    import shlex
    import sys

    from matryoshka.cli import main

    argv = shlex.split(command)
    if argv[0] == "matryoshka":
        return main(argv[1:])
    assert argv[0] == "python", f"README commands are matryoshka or python, got {command!r}"
    old = sys.argv
    sys.argv = argv[1:]
    try:
        runpy.run_path(argv[1], run_name="__main__")
    except SystemExit as e:
        return int(e.code or 0)
    finally:
        sys.argv = old
    return 0


def test_readme_has_command_line_examples():
    assert len(SH_BLOCKS) >= 3  # a text corpus, an image folder, embeddings from another model


@pytest.mark.parametrize("i", range(len(SH_BLOCKS)))
def test_readme_commands_run_and_print_what_it_shows(i, tmp_path, monkeypatch, capsys):
    root = README.parent
    for name in ("configs", "examples"):  # run as from the repository root, writing elsewhere
        (tmp_path / name).symlink_to(root / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for command, shown in _commands(SH_BLOCKS[i]):
        status = _run(command)
        out = capsys.readouterr().out
        assert status == 0, f"{command} exited with {status}"
        for text in shown:
            assert text in out, f"{command} printed {out[-2000:]!r}, not {text!r}"
