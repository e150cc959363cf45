"""Peak memory of one loss+grad step at large shapes, fused vs reference.

The fused step must add O(K D) memory (per-thread accumulators for dW and db);
the reference builds several N x K arrays (logits, probabilities, one-hot,
P - Y), so it adds O(N K).
"""

from ._common import DTYPES, IMPLS, MEMORY_SHAPES, added_peak_bytes, loss_and_grad, problem, reset_peak_rss


class LossGradMemory:
    params = [MEMORY_SHAPES, DTYPES, IMPLS]
    param_names = ["shape", "dtype", "impl"]
    timeout = 600

    def setup(self, shape, dtype, impl):
        self.func = loss_and_grad(impl)
        self.args = problem(shape, dtype)
        self.func(*self.args)  # compile first: LLVM's peak is not the step's
        reset_peak_rss()

    def peakmem_loss_and_grad(self, shape, dtype, impl):
        """Peak RSS of the process: interpreter, libraries, the data and one step."""
        self.func(*self.args)

    def track_added_memory(self, shape, dtype, impl):
        """Peak RSS during one step above the RSS before it: what the step allocates."""
        return added_peak_bytes(lambda: self.func(*self.args))

    track_added_memory.unit = "bytes"
