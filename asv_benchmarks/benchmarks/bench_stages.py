"""Nanoseconds per block of 128 rows in each stage of the BLOCKED body, one thread, the blocks in cache.

The README's account of where a block's time goes (1,000,000 x 20 x 3, K =
1000) comes from these. Each stage runs in a loop over ``BLOCKS`` blocks
held in cache (L2 at small D; at D = 512 they spill to L3, where K = 1000
makes the stages compute-bound), compiled with the kernels' own options
(``fastsoftmax.kernels._config.JIT_OPTIONS``), as the bodies inline them:
a loop compiled with Numba's defaults left the gradient's bias sum scalar,
and timed that stage at 0.37 us a block where it takes 0.18 (20 x 3
float32). A stage alone can answer a change differently from the body: at
512 x 1000 float64 on Zen 3, panels of features that cut the gradient
stage here by a quarter (by a sixth over one block) left the whole BLOCKED
chunk level, so check such a lever on the chunk too. The stages are
private functions of ``kernels.loss_grad``; a commit whose stages have
other signatures skips (``NotImplementedError``).

* ``transpose``: X's rows into the (D, 128) block (``_fill_transposed``);
* ``logits``: Zt = W Xt + b (``_block_logits``);
* ``softmax``: Zt into w (p - e_y) and the loss (``_block_softmax``),
  less the copy that restores Zt before each block;
* ``gradient``: dW += Gt Xt^T, db += Gt 1 (``_block_gradient``).
"""

from __future__ import annotations

import functools
import time

import numpy as np

from ._common import DTYPES, QUICK, median_time, require

BLOCK_ROWS = 128
#: Blocks per timed loop: 8 x 128 rows x D = 20 float64 is 160 KB.
BLOCKS = 8
#: D x K of the stages: the small-K shape the README discusses, a moderate one, K = 1000.
STAGE_SHAPES = ["20x3"] if QUICK else ["20x3", "100x10", "512x1000"]
#: Seconds a timed call takes: long enough for the clock, short enough for asv.
CALL_SECONDS = 0.02


@functools.cache
def _stage_loops():
    """The four stage loops, compiled on first use with the kernels' options (no disk cache)."""
    numba = require("numba")
    config = require("fastsoftmax.kernels._config")
    stages = require(
        "fastsoftmax.kernels.loss_grad",
        "_fill_transposed",
        "_block_logits",
        "_block_scratch",
        "_block_softmax",
        "_block_gradient",
    )
    fill_transposed, block_logits, block_scratch, block_softmax, block_gradient = stages
    njit = numba.njit(**{key: value for key, value in config.JIT_OPTIONS.items() if key != "cache"})

    @njit
    def transpose(X, Xt_blocks, reps):
        for _ in range(reps):
            for j in range(Xt_blocks.shape[0]):
                fill_transposed(X, j * BLOCK_ROWS, BLOCK_ROWS, Xt_blocks[j])

    @njit
    def logits(Xt_blocks, W, b, Zt, reps):
        for _ in range(reps):
            for j in range(Xt_blocks.shape[0]):
                block_logits(Xt_blocks[j], W, b, Zt)

    @njit
    def softmax(Zt_saved, Zt, y, sample_weight, reps, copy_only):
        scratch = block_scratch(Zt, Zt.shape[0])
        loss = 0.0
        for _ in range(reps):
            for j in range(BLOCKS):
                Zt[:] = Zt_saved
                if not copy_only:
                    loss += block_softmax(Zt, BLOCK_ROWS, y, sample_weight, j * BLOCK_ROWS, scratch)
        return loss

    @njit
    def gradient(Xt_blocks, Gt, dW, db, reps):
        for _ in range(reps):
            for j in range(Xt_blocks.shape[0]):
                block_gradient(Xt_blocks[j], Gt, dW, db)

    return transpose, logits, softmax, gradient


class BlockStages:
    """ns per block of 128 rows in each stage of the BLOCKED body (module docstring)."""

    unit = "ns per block"
    params = [STAGE_SHAPES, DTYPES]
    param_names = ["features x classes", "dtype"]
    timeout = 600

    def setup(self, shape, dtype):
        n_features, n_classes = (int(part) for part in shape.split("x"))
        self.loops = _stage_loops()
        rng = np.random.default_rng(0)
        n_rows = BLOCKS * BLOCK_ROWS
        self.X = rng.standard_normal((n_rows, n_features)).astype(dtype)
        self.Xt_blocks = np.empty((BLOCKS, n_features, BLOCK_ROWS), dtype=dtype)
        self.W = (0.1 * rng.standard_normal((n_classes, n_features))).astype(dtype)
        self.b = np.zeros(n_classes, dtype=dtype)
        self.Zt_saved = rng.standard_normal((n_classes, BLOCK_ROWS)).astype(dtype)
        self.Zt = self.Zt_saved.copy()
        self.y = rng.integers(0, n_classes, n_rows)
        self.sample_weight = np.empty(0, dtype=dtype)
        self.dW = np.zeros((n_classes, n_features))
        self.db = np.zeros(n_classes)
        typing_error = require("numba.core.errors", "TypingError")
        try:
            self.loops[0](self.X, self.Xt_blocks, 1)
            self._run_all()
        except typing_error as exc:  # a commit whose private stages take other arguments
            raise NotImplementedError(f"the BLOCKED stages differ at this commit: {exc}") from exc

    def _run_all(self):
        transpose, logits, softmax, gradient = self.loops
        logits(self.Xt_blocks, self.W, self.b, self.Zt, 1)
        softmax(self.Zt_saved, self.Zt, self.y, self.sample_weight, 1, False)
        gradient(self.Xt_blocks, self.Zt_saved, self.dW, self.db, 1)

    @staticmethod
    def _per_block(loop) -> float:
        """Median ns per block of ``loop(reps)``, with reps set so that a call takes about CALL_SECONDS."""
        start = time.perf_counter()
        loop(1)
        reps = max(1, round(CALL_SECONDS / max(time.perf_counter() - start, 1e-7)))
        return median_time(lambda: loop(reps), 5) * 1e9 / (reps * BLOCKS)

    def track_transpose(self, shape, dtype):
        return self._per_block(lambda reps: self.loops[0](self.X, self.Xt_blocks, reps))

    def track_logits(self, shape, dtype):
        return self._per_block(lambda reps: self.loops[1](self.Xt_blocks, self.W, self.b, self.Zt, reps))

    def track_softmax(self, shape, dtype):
        def softmax(copy_only):
            return lambda reps: self.loops[2](self.Zt_saved, self.Zt, self.y, self.sample_weight, reps, copy_only)

        return self._per_block(softmax(False)) - self._per_block(softmax(True))

    def track_gradient(self, shape, dtype):
        return self._per_block(lambda reps: self.loops[3](self.Xt_blocks, self.Zt_saved, self.dW, self.db, reps))
