"""Time of one loss+grad step of each baseline beside ``bench_kernels.LossGrad``'s fused and reference.

``impl``: ``textbook`` (the seed class's forward + backward), ``torch``
(PyTorch eager) and ``jax`` (JAX jit); see ``_baselines`` for what each
computes and how it is checked. A framework that is not importable skips.
"""

from . import _baselines
from ._common import DTYPES, SHAPES, TIME_REPEAT, problem

BUILDERS = {"textbook": _baselines.textbook_step, **_baselines.FRAMEWORKS}


class BaselineStep:
    params = [SHAPES, DTYPES, list(BUILDERS)]
    param_names = ["shape", "dtype", "impl"]
    repeat = TIME_REPEAT
    warmup_time = 0.0  # setup has already called the step (and checked it)
    timeout = 600

    def setup(self, shape, dtype, impl):
        args = problem(shape, dtype)
        self.step = BUILDERS[impl](*args)
        _baselines.check_against_reference(impl, self.step, *args, l2=0.0)

    def time_loss_and_grad(self, shape, dtype, impl):
        self.step()
