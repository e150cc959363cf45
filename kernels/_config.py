"""Compilation settings shared by every kernel.

One place for the fastmath flags, so that no kernel switches on the full fastmath set.
The set leaves out ``nnan`` and ``ninf``: softmax must handle ``-inf`` logits,
and the wrappers rely on NaN propagating through the fused kernel to detect
non-finite input after the fact (see ``fastsoftmax._checks``).
"""

import os
import warnings

import numba

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


def _disk_cache_usable() -> bool:
    """Whether Numba finds a writable directory for the kernels' disk cache, else a RuntimeWarning.

    ``cache=True`` raises RuntimeError ("cannot cache function ...: no
    locator available") as a kernel is decorated where Numba finds none: the
    package's ``__pycache__``, ``NUMBA_CACHE_DIR`` or the user's cache
    directory. An install that cannot be written, with no writable home (a
    container run read-only), then failed at import, ``--help`` included.
    The kernels then run uncached: they compile in every process.
    """

    def probe() -> None:  # defined in this directory, as every kernel is: Numba looks for the same places
        pass

    try:
        dispatcher = numba.njit(cache=True)(probe)
    except RuntimeError as error:
        if "no locator available" not in str(error):
            # Another cause names itself: a process forked while another thread compiled (fastsoftmax._fork),
            # or a NUMBA_CACHE_LOCATOR_CLASSES that names no locator.
            raise
        given = os.environ.get("NUMBA_CACHE_DIR")
        places = f"NUMBA_CACHE_DIR={given}" if given else "NUMBA_CACHE_DIR (unset)"
        try:  # warnings as errors (-W error) must not fail the import this fallback is for
            warnings.warn(
                f"Numba finds no writable directory for the kernels' disk cache (not "
                f"{os.path.join(os.path.dirname(__file__), '__pycache__')}, {places} or the user's cache "
                f"directory): the kernels compile in every process (about 10 s before a first fit); set "
                f"NUMBA_CACHE_DIR to a writable directory to keep them",
                RuntimeWarning,
                stacklevel=2,
            )
        except Warning:
            pass
        return False
    _warn_if_cache_dir_passed_over(dispatcher)
    return True


def _warn_if_cache_dir_passed_over(dispatcher) -> None:
    """A RuntimeWarning where ``NUMBA_CACHE_DIR`` is set but Numba caches elsewhere, naming why and where.

    Numba passes over a ``NUMBA_CACHE_DIR`` it cannot create or write (a path
    under a regular file, a typo in a shared cluster path) without a word,
    and caches where it finds a place: each process then compiled again where
    the user meant to share one cache.
    """
    given = numba.config.CACHE_DIR
    # NUMBA_DISABLE_JIT=1 returns the function itself, without a cache (refused where a kernel is called).
    locator = getattr(getattr(getattr(dispatcher, "_cache", None), "_impl", None), "_locator", None)
    if not given or locator is None or type(locator).__name__.lstrip("_") == "UserProvidedCacheLocator":
        return
    if type(locator).__module__ != "numba.core.caching":
        # A locator of the user's (NUMBA_CACHE_LOCATOR_CLASSES) may cache in the directory too: judged by place.
        # Numba's own fallbacks are passed-over directories wherever they lie (an install under $HOME).
        cache_path, given_path = os.path.abspath(locator.get_cache_path()), os.path.abspath(given)
        if os.path.commonpath([cache_path, given_path]) == given_path:
            return
    try:
        os.makedirs(given, exist_ok=True)
        reason = "it is not writable"
    except OSError as error:
        reason = error.strerror or str(error)
    try:
        warnings.warn(
            f"NUMBA_CACHE_DIR={given} cannot hold the kernels' disk cache ({reason}): Numba caches them in "
            f"{locator.get_cache_path()} instead; set NUMBA_CACHE_DIR to a writable directory",
            RuntimeWarning,
            stacklevel=3,
        )
    except Warning:
        pass


#: Options for every kernel: release the GIL (kernels are called from Python
#: threads and from Dask workers), cache to disk where Numba can, and compile
#: lazily on first call.
JIT_OPTIONS = {"nogil": True, "cache": _disk_cache_usable(), "fastmath": FASTMATH, "error_model": "numpy"}

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
