"""How long work runs and how it reports: CPU threads for small models, progress for logs.

- **Threads.** A small model gains nothing from several OpenMP threads, and beside another busy
  process its threads wait on each other: a tiny training run slows down ten times or more.
  :func:`threads_for` measures the work of one step (floating-point operations of a forward pass,
  counted by torch) and gives one thread below :data:`SMALL_STEP_FLOPS`, torch's default above;
  a user's ``--threads`` always wins. :func:`torch_threads` sets the count for a block of work and
  puts the previous one back.
- **Progress.** :func:`progress_bar` is a tqdm bar on a terminal; when stderr is a log file or a
  pipe it prints a plain line every :data:`LOG_EVERY` seconds and one at the end instead of
  thousands of carriage-return updates.

A leaf helper: imports nothing of the package.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = [
    "LOG_EVERY",
    "SMALL_STEP_FLOPS",
    "free_cores",
    "progress_bar",
    "progress_write",
    "step_flops",
    "threads_for",
    "torch_threads",
]

SMALL_STEP_FLOPS = 2e8  # below this many FLOPs per step one thread is as fast as several
LOG_EVERY = 30.0  # seconds between plain progress lines when the output is not a terminal


# ------------------------------------------------------------------------------ threads
def step_flops(model: Any, sample: Any, batch_size: int) -> float:
    """Floating-point operations of one forward pass of ``batch_size`` examples like ``sample``.

    ``sample`` is one input without its batch dimension; the count comes from torch's
    ``FlopCounterMode`` on a batch of one, scaled (0 when torch cannot count it).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(sample.unsqueeze(0))
        return float(counter.get_total_flops()) * batch_size
    except Exception:  # noqa: BLE001 - a model torch cannot trace: no estimate
        return 0.0
    finally:
        model.train(was_training)


def threads_for(flops_per_step: float, requested: int | None = None) -> int:
    """Threads for work of ``flops_per_step`` FLOPs a step.

    ``requested`` (a user's ``--threads``) wins. Otherwise one thread for steps below
    :data:`SMALL_STEP_FLOPS`, and for larger ones torch's default capped at the cores the
    1-minute load average leaves free (:func:`free_cores`). Results can differ in the last
    floating-point bits between thread counts; every run records the count it used.
    """
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ValueError(f"threads must be a positive integer, got {requested!r}")
        return requested
    if 0 < flops_per_step < SMALL_STEP_FLOPS:
        return 1
    return max(1, min(_DEFAULT_THREADS or 1, free_cores()))


def free_cores() -> int:
    """Cores this process may use that the 1-minute load average leaves free (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:  # pragma: no cover
        busy = 0.0
    return max(1, cores - int(round(busy)))


def _default_threads() -> int | None:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return None
    return torch.get_num_threads()


_DEFAULT_THREADS = _default_threads()


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` torch CPU threads, then restore the previous count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------ progress
def _on_terminal(file: Any) -> bool:
    isatty = getattr(file, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class _LogBar:
    """The part of tqdm's interface the project uses, written as a few plain lines."""

    def __init__(
        self, iterable: Iterable | None, total: float | None, desc: str | None, unit: str,
        file: Any, disable: bool,
    ) -> None:  # fmt: skip
        self.iterable, self.desc, self.unit, self.file = iterable, desc or "", unit, file
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.n, self.disable, self.postfix = total, 0, disable, ""
        self.t0 = self.last = time.monotonic()
        self.closed = False

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> _LogBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _line(self) -> str:
        done = f"{self.n:g}/{self.total:g}" if self.total else f"{self.n:g}"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        post = f" {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {done} {self.unit}{pct}, {time.monotonic() - self.t0:.0f}s{post}"

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if not self.disable and now - self.last >= LOG_EVERY:
            self.last = now
            print(self._line(), file=self.file, flush=True)

    def set_postfix(self, **kw: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

    def set_postfix_str(self, s: str) -> None:
        self.postfix = s

    def close(self) -> None:
        if not self.closed and not self.disable and self.n:
            print(self._line(), file=self.file, flush=True)
        self.closed = True


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: float | None = None,
    desc: str | None = None,
    unit: str = "it",
    disable: bool = False,
    leave: bool = True,
) -> Any:
    """A progress bar on stderr: tqdm on a terminal, a plain line now and then otherwise.

    Takes the arguments of ``tqdm`` the project uses; the result iterates like ``iterable``,
    has ``update``, ``set_postfix``, ``set_postfix_str`` and ``close``, and is a context manager.
    """
    file = sys.stderr
    if _on_terminal(file):
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave,
                    file=file, dynamic_ncols=True)  # fmt: skip
    return _LogBar(iterable, total, desc, unit, file, disable)


def progress_write(message: str) -> None:
    """Print a line on stdout beside the progress bars without breaking them (``tqdm.write``)."""
    if _on_terminal(sys.stderr):
        from tqdm.auto import tqdm

        tqdm.write(message, file=sys.stdout)
    else:
        print(message, flush=True)
