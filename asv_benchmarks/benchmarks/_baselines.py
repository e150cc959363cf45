"""The baselines a fused loss+grad step is measured against, beside the NumPy reference.

Every baseline computes what ``fastsoftmax.loss_and_grad(X, y, W, b, l2=l2)``
computes, in the problem's dtype: the mean cross-entropy of the logits
Z = X W^T + b plus (l2/2) ||W||_F^2, and its gradient (dW (K, D), db (K,)).

* **textbook**: the seed class ``reference.SoftmaxRegressionNumPy``, one
  ``forward`` and one ``backward`` (its own training step without the update).
  ``reference.loss_and_grad`` (the test oracle) builds more N x K arrays and
  is slower than this at small K (402 against 285 ms at 1,000,000 x 20 x 3),
  so a ratio against it alone flatters the kernels.
* **torch**: PyTorch eager, ``F.cross_entropy`` and ``backward()`` through
  autograd, on tensors that share X's memory (``torch.from_numpy``).
* **jax**: ``jax.jit(jax.value_and_grad(loss))`` on arrays already on the
  device (the CPU), timed to ``block_until_ready``.

PyTorch and JAX are benchmark-only (never a dependency of the package); when
one is not importable its benchmarks skip (``NotImplementedError``). Each runs
with the thread count of the process (:func:`thread_budget`), the count the
fused kernels may use: ``torch.set_num_threads`` and, for JAX, the XLA flags
set before ``jax`` is first imported. Each is checked once against the NumPy
reference when it is built (:func:`check_against_reference`), so that a ratio
never compares unequal work.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from ._common import require


def thread_budget() -> int:
    """Threads the fused kernels may use in this process (Numba's thread count)."""
    numba = require("numba")
    return int(numba.get_num_threads())


def check_against_reference(name: str, step, X, y, W, b, l2: float) -> None:
    """Raise AssertionError unless ``step()`` returns the reference's (loss, dW, db).

    The tolerance is relative to the dtype's precision: sqrt(eps) of the
    largest value, far above the rounding of either side and far below any
    real difference (a missing 1/N or L2 term shows at once).
    """
    reference = require("fastsoftmax.reference", "loss_and_grad")
    expected = reference(X, y, W, b, l2=l2)
    got = step()
    tol = float(np.sqrt(np.finfo(X.dtype).eps))
    for label, e, g in zip(("loss", "dW", "db"), expected, got, strict=True):
        e = np.asarray(e, dtype=np.float64)
        g = np.asarray(g, dtype=np.float64)
        if e.shape != g.shape:
            raise AssertionError(f"{name}: {label} has shape {g.shape}, the reference {e.shape}")
        scale = max(1.0, float(np.max(np.abs(e))))
        err = float(np.max(np.abs(g - e)))
        if not err <= tol * scale:
            raise AssertionError(
                f"{name}: {label} differs from the reference by {err:.3g} (tolerance {tol * scale:.3g})"
            )


def textbook_step(X, y, W, b, l2: float = 0.0):
    """``step()`` of the seed class: forward, loss and backward with the given W and b (no update)."""
    seed_class = require("fastsoftmax.reference", "SoftmaxRegressionNumPy")
    model = seed_class(W.shape[1], W.shape[0], dtype=W.dtype)
    model.W = W.copy()
    model.b = b.copy()

    def step():
        probs = model.forward(X)
        loss = model.compute_loss(probs, y)
        dW, db = model.backward(X, y, probs)
        if l2:
            loss += 0.5 * l2 * float(np.sum(model.W * model.W))
            dW = dW + l2 * model.W
        return loss, dW, db

    return step


def torch_step(X, y, W, b, l2: float = 0.0):
    """``step()`` of PyTorch eager (autograd) returning NumPy (loss, dW, db); skips without torch."""
    torch = require("torch")
    torch.set_num_threads(thread_budget())
    functional = require("torch.nn.functional")
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    W0, b0 = torch.from_numpy(W.copy()), torch.from_numpy(b.copy())

    def step():
        Wt = W0.detach().requires_grad_()
        bt = b0.detach().requires_grad_()
        loss = functional.cross_entropy(Xt @ Wt.T + bt, yt)
        if l2:
            loss = loss + 0.5 * l2 * (Wt * Wt).sum()
        loss.backward()
        return loss.item(), Wt.grad.numpy(), bt.grad.numpy()

    return step


def _import_jax(threads: int):
    """Import jax with float64 enabled, and for ``threads`` = 1 the flags that ask XLA for one thread (first import).

    ``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`` is the recipe of jax-ml/jax#743;
    the second word is no flag of XLA's own, and JAX has no documented way to hold its pool to one thread.
    """
    if "jax" not in sys.modules:
        flags = os.environ.get("XLA_FLAGS", "")
        if threads == 1 and "intra_op_parallelism_threads" not in flags:
            flags += " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = flags.strip()
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    jax = require("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


def jax_step(X, y, W, b, l2: float = 0.0):
    """``step()`` of ``jax.jit(value_and_grad)`` returning NumPy (loss, dW, db); skips without jax.

    XLA's CPU client reads its flags at the first import: a budget of one
    thread asks it for one (:func:`_import_jax`), which JAX documents no
    switch to enforce (jax-ml/jax#1539 reports threads beyond it); any other
    budget leaves XLA's default (every core). Threads beyond the budget make
    JAX faster, never the fused step: a ratio against it errs against us.
    """
    jax = _import_jax(thread_budget())
    jnp = require("jax.numpy")

    def loss_fn(Wj, bj, Xj, yj):
        Z = Xj @ Wj.T + bj
        picked = jnp.take_along_axis(Z, yj[:, None], axis=1)[:, 0]
        return jnp.mean(jax.nn.logsumexp(Z, axis=1) - picked) + 0.5 * l2 * jnp.sum(Wj * Wj)

    compiled = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1)))
    args = tuple(jax.device_put(a) for a in (W, b, X, y))
    if args[0].dtype != W.dtype:
        raise NotImplementedError(f"jax runs in {args[0].dtype}, not {W.dtype}")

    def step():
        loss, (dW, db) = compiled(*args)
        loss.block_until_ready()
        dW.block_until_ready()
        db.block_until_ready()
        return float(loss), np.asarray(dW), np.asarray(db)

    return step


#: The framework baselines: name -> builder of ``step()``.
FRAMEWORKS = {"torch": torch_step, "jax": jax_step}


def framework_steps(X, y, W, b, l2: float = 0.0) -> dict:
    """Every importable framework's checked ``step()``; NotImplementedError when none is."""
    steps = {}
    for name, build in FRAMEWORKS.items():
        try:
            step = build(X, y, W, b, l2)
        except NotImplementedError:
            continue
        check_against_reference(name, step, X, y, W, b, l2)
        steps[name] = step
    if not steps:
        raise NotImplementedError("neither PyTorch nor JAX is importable (pip install torch jax: benchmark-only)")
    return steps
