"""The fused gradient against PyTorch autograd (skipped when torch is not installed)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DTYPE_IDS, DTYPES, assert_grad_close, grad_rtol, make_problem

import fastsoftmax as fs

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize(
    "shape", [(1, 3, 2), (50, 5, 3), (40, 6, 300)], ids=["N1-K2", "N50-K3", "N40-K300"]
)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_gradient_matches_torch_autograd(rng, dtype, shape, weighted):
    n, d, k = shape
    l2 = 0.2
    X, y, W, b, sw = make_problem(rng, n, d, k, dtype, weighted=weighted)
    loss, dW, db = fs.loss_and_grad(X, y, W, b, l2=l2, sample_weight=sw)

    # Autograd in float64 is the oracle, as the NumPy reference is elsewhere.
    Xt = torch.from_numpy(X.astype(np.float64))
    Wt = torch.from_numpy(W.astype(np.float64)).requires_grad_(True)
    bt = torch.from_numpy(b.astype(np.float64)).requires_grad_(True)
    yt = torch.from_numpy(y.astype(np.int64))
    row_loss = torch.nn.functional.cross_entropy(Xt @ Wt.T + bt, yt, reduction="none")
    s = (
        torch.ones(n, dtype=torch.float64)
        if sw is None
        else torch.from_numpy(sw.astype(np.float64))
    )
    total = (s * row_loss).sum() / s.sum() + 0.5 * l2 * (Wt**2).sum()
    total.backward()
    ref = (float(total), Wt.grad.numpy(), bt.grad.numpy())
    assert_grad_close(loss, dW, db, ref, X, W, l2, grad_rtol(dtype, n, d, k))
