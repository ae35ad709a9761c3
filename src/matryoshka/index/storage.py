"""Vectors stored once at full size, in column panels, at one of four precisions.

Each vector is kept once. The columns are split into panels at doubling sizes (``[0, 32)``,
``[32, 64)``, ``[64, 128)``, ...), each panel its own (N, width) array, so a search at size ``m``
reads only the panels that cover the first ``m`` columns, whether in RAM or memory-mapped from disk.

Precisions:

- ``float32``, ``float16``: the values (float16 is widened to float32 to score).
- ``int8``: ``round(x_j / s_j)`` clipped to [-127, 127] with a per-dimension scale
  ``s_j = max |x_j| / 127`` learned from the first vectors added.
- ``binary``: one bit per dimension, ``x_j > t_j`` with ``t_j`` the per-dimension mean of the first
  vectors added, packed 8 to a byte per panel; a bit decodes to ``t_j -/+ a_j`` with ``a_j`` the
  mean absolute deviation.

Quantised vectors are scored asymmetrically: queries stay float32 and the stored codes are decoded
to float32 with the per-dimension parameters kept beside them, so every stage, the last one
included, ranks by a float score.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["PRECISIONS", "panel_bounds", "bytes_per_vector", "Storage"]

PRECISIONS = ("float32", "float16", "int8", "binary")
_CODE_DTYPE = {"float32": np.float32, "float16": np.float16, "int8": np.int8, "binary": np.uint8}


def panel_bounds(d: int, first: int = 32) -> list[tuple[int, int]]:
    """Column ranges of the panels: ``[(0, 32), (32, 64), ..., (2^j, d)]``."""
    bounds, lo, hi = [], 0, min(first, d)
    while lo < d:
        bounds.append((lo, hi))
        lo, hi = hi, min(2 * hi, d)
    return bounds


def bytes_per_vector(m: int, precision: str) -> float:
    """Bytes one vector of size ``m`` takes at ``precision`` (binary: ``m / 8``, unrounded)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return {"float32": 4.0 * m, "float16": 2.0 * m, "int8": 1.0 * m, "binary": m / 8}[precision]


class Storage:
    """Column panels of codes plus the per-dimension parameters needed to decode them.

    Parameters
    ----------
    d : int
        Full vector size.
    precision : {"float32", "float16", "int8", "binary"}
    """

    def __init__(self, d: int, precision: str) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.d = d
        self.precision = precision
        self.bounds = panel_bounds(d)
        self.panels: list[np.ndarray] = [self._empty(lo, hi) for lo, hi in self.bounds]
        self.params: np.ndarray | None = None  # (2, d) float32: int8 (scale, 0); binary (t, a)

    def _empty(self, lo: int, hi: int) -> np.ndarray:
        width = (hi - lo + 7) // 8 if self.precision == "binary" else hi - lo
        return np.empty((0, width), dtype=_CODE_DTYPE[self.precision])

    def __len__(self) -> int:
        return int(self.panels[0].shape[0])

    @property
    def nbytes(self) -> int:
        return int(sum(p.nbytes for p in self.panels))

    # ---------------------------------------------------------------- writing
    def fit_params(self, x: np.ndarray) -> None:
        """Learn the quantiser's per-dimension parameters from ``x`` of shape (n, d)."""
        x = np.asarray(x, dtype=np.float32)
        if self.precision == "int8":
            scale = np.abs(x).max(axis=0) / 127.0
            scale[scale == 0] = 1.0
            self.params = np.stack([scale, np.zeros_like(scale)]).astype(np.float32)
        elif self.precision == "binary":
            t = x.mean(axis=0)
            a = np.abs(x - t).mean(axis=0)
            self.params = np.stack([t, a]).astype(np.float32)

    def encode(self, x: np.ndarray) -> list[np.ndarray]:
        """Codes of ``x`` (n, d) float32, one array per panel."""
        out = []
        for lo, hi in self.bounds:
            xs = x[:, lo:hi]
            if self.precision == "float32":
                c = np.ascontiguousarray(xs, dtype=np.float32)
            elif self.precision == "float16":
                with np.errstate(over="ignore"):
                    c = xs.astype(np.float16)
                if not np.isfinite(c).all():
                    raise ValueError(
                        "a value is too large for float16 storage (|x| > 65504); "
                        "use precision='float32' or scale the vectors"
                    )
            elif self.precision == "int8":
                c = np.clip(np.rint(xs / self.params[0, lo:hi]), -127, 127).astype(np.int8)
            else:
                c = np.packbits(xs > self.params[0, lo:hi], axis=1)
            out.append(c)
        return out

    def append(self, x: np.ndarray) -> None:
        """Append vectors ``x`` of shape (n, d) (learning quantiser parameters on first use)."""
        if self.params is None and self.precision in ("int8", "binary"):
            self.fit_params(x)
        codes = self.encode(x)
        self.panels = [np.concatenate([p, c]) for p, c in zip(self.panels, codes, strict=True)]

    def keep(self, mask: np.ndarray) -> None:
        """Keep only the rows where ``mask`` (N,) is true (loads memory-mapped panels)."""
        self.panels = [np.ascontiguousarray(p[mask]) for p in self.panels]

    # ---------------------------------------------------------------- reading
    def _decode_into(self, out: np.ndarray, codes: np.ndarray, lo: int, hi: int) -> None:
        """Decode panel codes for columns ``lo:hi`` into ``out`` of shape (n, hi - lo)."""
        if self.precision in ("float32", "float16"):
            out[...] = codes[:, : hi - lo]
        elif self.precision == "int8":
            np.multiply(codes[:, : hi - lo], self.params[0, lo:hi], out=out)
        else:
            bits = np.unpackbits(codes, axis=1, count=hi - lo)  # (n, hi - lo) of 0/1
            t, a = self.params[0, lo:hi], self.params[1, lo:hi]
            np.multiply(bits, 2 * a, out=out)
            out += t - a

    def _read(self, select, n: int, m: int, out: np.ndarray | None = None) -> np.ndarray:
        if out is None:
            out = np.empty((n, m), dtype=np.float32)
        for (lo, hi), panel in zip(self.bounds, self.panels, strict=True):
            if lo >= m:
                break
            top = min(hi, m)
            if self.precision == "binary":
                codes = panel[select]
                self._decode_into(out[:, lo:top], codes, lo, top)
            else:
                self._decode_into(out[:, lo:top], panel[select, : top - lo], lo, top)
        return out

    def rows(self, start: int, stop: int, m: int, out: np.ndarray | None = None) -> np.ndarray:
        """Decoded rows ``start:stop``, first ``m`` columns, float32 of shape (stop - start, m)."""
        return self._read(slice(start, stop), stop - start, m, out)

    def gather(self, i: int, positions: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Decoded rows at ``positions`` (n,) of panel ``i`` into ``out``, float32 (n, width).

        ``torch.index_select`` into a reused buffer: several times faster than numpy fancy
        indexing, which allocates (and page-faults) a fresh array on every call.
        """
        lo, hi = self.bounds[i]
        panel = torch.from_numpy(self.panels[i])
        if self.precision == "float32":
            return torch.index_select(panel, 0, positions, out=out)
        rows = panel.index_select(0, positions)  # (n, width) of codes
        if self.precision == "float16":
            return out.copy_(rows)
        if self.precision == "int8":
            return out.copy_(rows).mul_(torch.from_numpy(self.params[0, lo:hi]))
        bits = np.unpackbits(rows.numpy(), axis=1, count=hi - lo)
        t, a = self.params[0, lo:hi], self.params[1, lo:hi]
        return (
            out.copy_(torch.from_numpy(bits))
            .mul_(torch.from_numpy(2 * a))
            .add_(torch.from_numpy(t - a))
        )

    def width(self, i: int) -> int:
        """Decoded width of panel ``i``."""
        lo, hi = self.bounds[i]
        return hi - lo

    def take(self, positions: np.ndarray, m: int, out: np.ndarray | None = None) -> np.ndarray:
        """Decoded rows at ``positions`` (n,), first ``m`` columns, float32 of shape (n, m)."""
        positions = np.asarray(positions, dtype=np.int64)
        return self._read(positions, len(positions), m, out)
