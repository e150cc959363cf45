"""Compilation settings shared by every kernel.

One place for the fastmath flags, so that no kernel switches on the full fastmath set.
The set leaves out ``nnan`` and ``ninf``: softmax must handle ``-inf`` logits,
and the wrappers rely on NaN propagating through the fused kernel to detect
non-finite input after the fact (see ``fastsoftmax._checks``).
"""

FASTMATH = {"nsz", "arcp", "contract", "reassoc"}

#: The flags of the vectorised exp (``kernels/_math.py``): ``FASTMATH`` without
#: ``reassoc``, which would fold the two-part Cody-Waite reduction
#: r = (x - k ln2_hi) - k ln2_lo back into one product and lose the low bits of r.
#: (``arcp`` is left out too: the exp has no division for it to act on.)
FASTMATH_EXP = FASTMATH - {"reassoc", "arcp"}

#: The flags of every sum in the register tiles (``_tiles._ordered_fadd``):
#: ``FASTMATH`` without ``reassoc``, which lets LLVM regroup a sum differently in
#: each function a tile is inlined into, so that bodies promised to agree bit
#: for bit (BLOCKED, row blocks, Fortran order) differed when compiled apart.
FASTMATH_ORDERED = FASTMATH - {"reassoc"}

#: Options for every kernel: release the GIL (kernels are called from Python
#: threads and from Dask workers), cache to disk, and compile lazily on first call.
JIT_OPTIONS = {"nogil": True, "cache": True, "fastmath": FASTMATH, "error_model": "numpy"}

#: ``JIT_OPTIONS`` for the functions that add up a loss (``_math.weighted_log1p_sum``,
#: ``log1p_sum``, ``add_in_order``): without ``reassoc``, their adds keep the order
#: written wherever LLVM inlines them, and whether they were compiled with their
#: caller or loaded from the disk cache, so the bodies that promise each other's
#: bits (BLOCKED, row blocks, Fortran order) agree in the loss as in dW.
ORDERED_JIT_OPTIONS = {**JIT_OPTIONS, "fastmath": FASTMATH_ORDERED}

#: Rows per block inside a thread's chunk. The block's logits, probabilities and
#: gradient scratch (block x K) stay in L1/L2 while they are formed, and the
#: per-block dW partial sum is flushed into a float64 accumulator, so float32
#: rounding error grows with the block size, not with N.
BLOCK_ROWS = 128

#: Rows per block of the BLAS body: larger, so that each GEMM call has enough
#: rows for OpenBLAS's blocking to pay off (measured faster than 128 at K = 10
#: to 1000).
BLAS_BLOCK_ROWS = 512
