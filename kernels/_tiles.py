"""The stages of the BLOCKED and ROWWISE bodies as register tiles, emitted as LLVM vector code.

The BLOCKED body holds a block of rows transposed, Xt (D, BLOCK_ROWS), and
runs four stages on it:

    transpose  Xt[d, r] = X[first + r, d]
    logits     Zt[k, r] = b_k + sum_d W[k, d] Xt[d, r]            (K, BLOCK_ROWS)
    softmax    Gt[k, r] = w_r (p_{r,k} - [y_r = k]), and the loss
    gradient   dW[k, d] += sum_r Gt[k, r] Xt[d, r]                (K, D)

Written as Numba loops, only the innermost loop is vectorised, so partial
results live in memory: the logits' accumulators are loaded and stored once
per four products, each feature of the gradient ends in a horizontal sum
after only BLOCK_ROWS / lanes vector products, the softmax makes about ten
passes over the block, and the transpose moves one value at a time. These
intrinsics emit the loops themselves with LLVM vector types, so that a tile
stays in registers:

- transpose (``transpose_full_block``): squares of lanes x lanes values are
  loaded along X's rows, turned by shuffles and stored along Xt's rows;
- logits (``logits_strip``): C classes x V vectors of rows per tile; each
  step over d loads V vectors of Xt[d] and one W[k, d] per class, for C V
  fused multiply-adds, and every ``LOGITS_SEGMENT`` features the sums go into Zt;
- softmax (``softmax_gradient_full_block``): a vector of rows from its max
  to its gradient, three passes over the classes;
- gradient (``gradient_strip``): C classes x 4 features per tile; each step
  over the rows loads C vectors of Gt and 4 of Xt, for 4 C fused
  multiply-adds. Wherever a vector has at least 4 lanes, a tile of 4
  features sums its vectors across lanes by butterflies (padded with zero
  vectors to whole vectors of sums) and adds each class's 4 sums, as one
  vector, to the float64 accumulator; a tile of one feature, or of float64
  on 16-byte vectors, reduces each sum once per block into float64;
- bias (``add_bias_sums``): each class's sum of Gt over the block, in one
  fixed order for a given vector width, wherever it is compiled.

Meanwhile the body prefetches the next block, so that memory works while
the block computes: a part of its bytes at the start of each tile of rows
of the logits (``logits_strip``) and, in the loss+grad step, of each step
of the softmax (``softmax_gradient_full_block``), each stage taking the
share of the block that the caller gives it.

The ROWWISE body runs the two products on X's rows as they lie, no
transpose, and shares the softmax tile (its logits land in the same Zt):

- logits (``row_logits_strip``): 4 rows x C classes of vectors along D per
  tile; each step loads one vector of every row and of every W[k], for 4 C
  fused multiply-adds. A butterfly sums the accumulators across lanes at the
  end of a row (or of a segment of it, ``ROW_SEGMENT_BYTES``);
- gradient (``row_gradient_strip``): C classes x 4 vectors of features per
  tile, down the block's rows; each step loads the row's 4 vectors and one
  Gt[k, r] per class. The last vector of a row is read under a mask.

One thread, the whole pass, reading X in place, as each stage went in:
1e6 x 20 x 3 15.8 -> 10.8 (transpose) -> 7.5 ms (softmax) in float32 and
22.3 -> 18.4 -> 15.6 in float64; 200,000 x 100 x 10 20.6 -> 11.6 and 68.9 ->
20.8 (transpose). On X held as row blocks, the logits and gradient tiles
took 200,000 x 100 x 10 from 16.1 to 9.9 ms in float32 and 31.3 to 19.5 in
float64.

The tile sizes follow the target's vector registers, read from Numba's target
machine when the caller compiles: 64-byte vectors with 32 registers
(AVX-512), else the target's width with 16 registers. A strip of more classes
than one tile holds runs as several tiles, so callers group classes by the
largest tile (``LOGITS_GROUP``, ``GRADIENT_GROUP``) on every target.

Every block is BLOCK_ROWS rows and every array is C-contiguous (checked when
the caller compiles). A last partial block is zero-padded in Xt, and its
padded rows enter the softmax with weight 0, so their gradient is zero.
"""

import dataclasses
import functools
import math

import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.core.errors import TypingError
from numba.core.registry import cpu_target
from numba.extending import intrinsic

from fastsoftmax.kernels._config import BLOCK_ROWS, FASTMATH_EXP, FASTMATH_ORDERED
from fastsoftmax.kernels._math import (
    CLASS_SUM_GROUP,
    CLASS_SUM_LEVELS,
    LN2_HI_32,
    LN2_HI_64,
    LN2_LO_32,
    LN2_LO_64,
    LOG2E,
    LOG_GROUP,
    UNDERFLOW_32,
    UNDERFLOW_64,
)

#: Features per segment of ``logits_strip``: each register accumulator sums
#: that many products, then goes into Zt, so that a logit of D features is a
#: sum of D / LOGITS_SEGMENT partial sums. One chain of D float32 adds per
#: logit left Fortran-ordered X (the BLOCKED body at any D) at D = 1e5 with
#: the loss 16 eps off and dW 34-53 eps of max |dW| in both dtypes (NumPy's
#: GEMM: 0.1 and 3.5-5.4), predict_proba 800-1200 eps (NumPy: 50) and the
#: Hessian-vector product 80-160 eps of max |H v| (NumPy: 7); in segments,
#: 0.1-0.7, 3-12, 50-60 and 8-10. BLOCKED_MAX_FEATURES, so that the shapes the
#: rule gives to BLOCKED keep their one segment.
LOGITS_SEGMENT = 1024
#: Classes per call of ``logits_strip`` and ``gradient_strip``: the most one
#: tile holds with 32 vector registers.
LOGITS_GROUP = 5
GRADIENT_GROUP = 4
#: Class counts for which the softmax stage is compiled with K as a constant,
#: its class loops unrolled (``softmax_gradient_full_block``); any other K
#: takes the loop over K. One block in L1, one thread, ns, loop -> unrolled
#: (float32 / float64; two alternated runs each): K = 2 139 / 246 -> 110 / 182,
#: K = 3 173 / 329 -> 138 / 280; K = 4 gained 5 % at most, for a tenth more
#: compile time on the first call.
UNROLLED_CLASS_COUNTS = (2, 3)
#: Features per gradient tile: each load of a vector of Gt feeds four products.
GRADIENT_FEATURES = 4


def _vector_shape(context) -> tuple[int, int]:
    """(bytes per vector register, number of registers) of the target Numba compiles for."""
    features = getattr(context.codegen(), "_tm_features", "") or ""
    if "+avx512f" in features.split(","):
        return 64, 32
    if "+avx" in features.split(","):
        return 32, 16
    return 16, 16


def _tile_shapes(context, itemsize: int) -> tuple[int, int, int]:
    """Lanes per vector, vectors of rows per logits tile, classes per gradient tile.

    A logits tile holds LOGITS_GROUP x (vectors of rows) accumulators and a
    gradient tile (classes) x 4: 20 and 16 of 32 registers, or 10 and 8 of 16.
    """
    vector_bytes, n_registers = _vector_shape(context)
    lanes = vector_bytes // itemsize
    if n_registers >= 32:
        return lanes, 4, GRADIENT_GROUP
    return lanes, 2, 2


class _Arrays:
    """Byte-addressed element and vector access to Numba arrays inside an intrinsic."""

    def __init__(self, context, builder, dtype):
        self.builder = builder
        self.intp = context.get_value_type(types.intp)
        self.scalar = context.get_data_type(dtype)
        self.itemsize = context.get_abi_sizeof(self.scalar)

    def const(self, value):
        return ir.Constant(self.intp, value)

    def address(self, array, value_type, *byte_offsets):
        offset = byte_offsets[0]
        for extra in byte_offsets[1:]:
            offset = self.builder.add(offset, extra)
        return self.builder.bitcast(cgutils.pointer_add(self.builder, array.data, offset), value_type.as_pointer())

    def load(self, array, value_type, *byte_offsets):
        return self.builder.load(self.address(array, value_type, *byte_offsets), align=self.itemsize)

    def stride(self, array, axis):
        return self.builder.extract_value(array.strides, axis)

    def row_offset(self, array, index, axis=0):
        """Byte offset of array[index] along ``axis``."""
        return self.builder.mul(index, self.stride(array, axis))

    def splat(self, value, vector_type):
        vector = ir.Constant(vector_type, ir.Undefined)
        vector = self.builder.insert_element(vector, value, ir.Constant(ir.IntType(32), 0))
        mask = ir.Constant(ir.VectorType(ir.IntType(32), vector_type.count), [0] * vector_type.count)
        return self.builder.shuffle_vector(vector, vector, mask)


def _require_contiguous(**array_types) -> None:
    """Raise at compile time unless every array is C-contiguous: the tiles load whole vectors along its last axis."""
    for name, array_type in array_types.items():
        if getattr(array_type, "layout", None) != "C":
            raise TypingError(f"register tiles need a C-contiguous {name}, got {array_type}")


def _fma(builder, vector_type, itemsize):
    name = f"llvm.fma.v{vector_type.count}{'f32' if itemsize == 4 else 'f64'}"
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector_type, [vector_type] * 3), name)


@functools.cache
def logits_strip(n_classes: int):
    """An intrinsic ``strip(Xt, W, b, Zt, k0, column, upcoming, upcoming_bytes)``: the logits of a strip of classes.

    Zt[k0 + c, r] = b[k0 + c] + W[k0 + c] . Xt[:, column + r] for
    c < ``n_classes`` and every r < BLOCK_ROWS. Xt (D, M) with
    M >= column + BLOCK_ROWS (a transposed block, column 0, or the
    transpose of a Fortran-ordered X) and Zt (K, BLOCK_ROWS) have contiguous
    rows; W (K, D) and b (K,) any strides. Meanwhile it prefetches the bytes
    ``upcoming_bytes`` of the C-contiguous array ``upcoming`` (where the next
    block lies; ``_emit_prefetch_part``), a part at the start of each tile
    of rows, so that the requests go out spread over the stage.
    """

    @intrinsic
    def strip(typingctx, Xt_type, W_type, b_type, Zt_type, k0_type, column_type, upcoming_type, upcoming_bytes_type):
        _require_contiguous(Xt=Xt_type, Zt=Zt_type, upcoming=upcoming_type)
        upcoming_bytes_type = types.UniTuple(types.intp, 4)
        signature = types.void(
            Xt_type, W_type, b_type, Zt_type, types.intp, types.intp, upcoming_type, upcoming_bytes_type
        )

        def codegen(context, builder, signature, args):
            Xt, W, b, Zt = (
                context.make_array(array_type)(context, builder, value)
                for array_type, value in zip(signature.args[:4], args[:4], strict=True)
            )
            k0 = args[4]
            arrays = _Arrays(context, builder, Xt_type.dtype)
            column_bytes = builder.mul(args[5], arrays.const(arrays.itemsize))
            upcoming = context.make_array(upcoming_type)(context, builder, args[6])
            upcoming_arrays = _Arrays(context, builder, upcoming_type.dtype)
            upcoming_bytes = [builder.extract_value(args[7], field) for field in range(4)]
            lanes, n_row_vectors, _ = _tile_shapes(context, arrays.itemsize)
            vector_type = ir.VectorType(arrays.scalar, lanes)
            fma = _fma(builder, vector_type, arrays.itemsize)
            n_features = builder.extract_value(Xt.shape, 0)
            tile_rows = lanes * n_row_vectors
            n_tiles = BLOCK_ROWS // tile_rows
            classes = [builder.add(k0, arrays.const(c)) for c in range(n_classes)]
            accumulators = [[cgutils.alloca_once(builder, vector_type) for _ in range(n_row_vectors)] for _ in classes]
            with cgutils.for_range(builder, arrays.const(n_tiles)) as tile:
                _emit_prefetch_part(builder, upcoming_arrays, upcoming, upcoming_bytes, tile.index, n_tiles)
                row_bytes = [
                    builder.mul(
                        builder.add(builder.mul(tile.index, arrays.const(tile_rows)), arrays.const(v * lanes)),
                        arrays.const(arrays.itemsize),
                    )
                    for v in range(n_row_vectors)
                ]
                for k, row in zip(classes, accumulators, strict=True):
                    bias = arrays.splat(arrays.load(b, arrays.scalar, arrays.row_offset(b, k)), vector_type)
                    for accumulator in row:
                        builder.store(bias, accumulator)
                # Features go LOGITS_SEGMENT at a time, each segment's sums added to Zt
                # (one segment, at least, for D = 0: Zt is then the bias).
                segment = arrays.const(LOGITS_SEGMENT)
                at_least_one = builder.select(builder.icmp_signed("<", n_features, segment), segment, n_features)
                n_segments = builder.sdiv(builder.add(at_least_one, arrays.const(LOGITS_SEGMENT - 1)), segment)
                with cgutils.for_range(builder, n_segments) as segment_loop:
                    first = builder.mul(segment_loop.index, segment)
                    left = builder.sub(n_features, first)
                    stop = builder.add(first, builder.select(builder.icmp_signed("<", left, segment), left, segment))
                    with cgutils.for_range_slice(builder, first, stop, arrays.const(1)) as (feature, _):
                        x_row = builder.add(arrays.row_offset(Xt, feature), column_bytes)
                        x = [arrays.load(Xt, vector_type, x_row, offset) for offset in row_bytes]
                        for k, row in zip(classes, accumulators, strict=True):
                            w_offset = builder.add(arrays.row_offset(W, k), arrays.row_offset(W, feature, 1))
                            w = arrays.splat(arrays.load(W, arrays.scalar, w_offset), vector_type)
                            for x_vector, accumulator in zip(x, row, strict=True):
                                builder.store(builder.call(fma, [w, x_vector, builder.load(accumulator)]), accumulator)
                    is_first = builder.icmp_signed("==", segment_loop.index, arrays.const(0))
                    for k, row in zip(classes, accumulators, strict=True):
                        z_row = arrays.row_offset(Zt, k)
                        for offset, accumulator in zip(row_bytes, row, strict=True):
                            address = arrays.address(Zt, vector_type, z_row, offset)
                            total = builder.load(accumulator)
                            earlier = builder.load(address, align=arrays.itemsize)
                            total = builder.select(is_first, total, _ordered_fadd(builder, earlier, total))
                            builder.store(total, address, align=arrays.itemsize)
                            builder.store(ir.Constant(vector_type, None), accumulator)
            return context.get_dummy_value()

        return signature, codegen

    return strip


def _ordered_fadd(builder, a, b):
    """``a + b`` with the flags ``FASTMATH_ORDERED``: never regrouped with the adds around it.

    An fadd without flags of its own gets the caller's fastmath set, ``reassoc``
    included, and LLVM may then regroup a chain of sums differently in each
    function the tile is inlined into: the bodies that promise each other's
    bits (BLOCKED, row blocks, Fortran order), compiled in other processes or
    contexts, then differed in the last bit of dW (and, before
    ``add_bias_sums``, of db).
    """
    total = builder.fadd(a, b)
    total.flags[:] = sorted(FASTMATH_ORDERED)
    return total


def _sum_lanes(builder, vectors):
    """One vector whose lane j is the sum of the lanes of vectors[j], for as many vectors as lanes.

    A butterfly: each stage adds pairs of vectors after swapping halves of
    their lanes, so n vectors become n / 2; (lanes - 1) x (two shuffles and an
    add) in all, instead of a tree of log2(lanes) shuffles and adds per vector.
    Its adds are ordered (``_ordered_fadd``); zero vectors padding the last
    group still fold away (``nsz`` is kept).
    """
    lanes = vectors[0].type.count
    mask_type = ir.VectorType(ir.IntType(32), lanes)
    half_lanes = lanes // 2
    while len(vectors) > 1:
        n_pairs = len(vectors) // 2
        low = [j if (j // half_lanes) % 2 == 0 else lanes + j for j in range(lanes)]
        high = [j + half_lanes if (j // half_lanes) % 2 == 0 else lanes + j - half_lanes for j in range(lanes)]
        vectors = [
            _ordered_fadd(
                builder,
                builder.shuffle_vector(vectors[i], vectors[i + n_pairs], ir.Constant(mask_type, low)),
                builder.shuffle_vector(vectors[i], vectors[i + n_pairs], ir.Constant(mask_type, high)),
            )
            for i in range(n_pairs)
        ]
        half_lanes //= 2
    return vectors[0]


@functools.cache
def gradient_strip(n_classes: int):
    """An intrinsic ``strip(Xt, Gt, dW, k0, column)``: dW[k0 + c, d] += sum_r Gt[k0 + c, r] Xt[d, column + r].

    For c < ``n_classes``, every feature d and r < BLOCK_ROWS. Xt (D, M),
    M >= column + BLOCK_ROWS (as for ``logits_strip``), and Gt (K,
    BLOCK_ROWS) have contiguous rows and the data's dtype; dW (K, D) is a
    C-contiguous float64 accumulator. Each sum over the block is taken in
    the data's dtype (lanes, then across them) and added in float64, as the
    Numba bodies do.

    A tile of GRADIENT_FEATURES features takes its sums across lanes by
    butterflies (``_sum_lanes``), one per vector of sums, and adds
    each class's GRADIENT_FEATURES sums to its row of dW as one vector:
    sixteen sums across lanes, each added to its own element of dW, cost
    more than the tile's products in float32. Adding them in place, not to
    a per-chunk float64 copy of dW in the butterfly's order that the end of
    the chunk added to dW, saves that second K x D array per thread (4 MB
    at 1000 x 512), its first-touch page faults on every call and the pass
    that emptied it. (Peak memory of one step, 2 threads: 20,000 x 512 x
    1000 float32 18.0 -> 15.2 MB, 20,000 x 1000 x 1000 float64 32.9 -> 27.5
    MB; time level within the noise.)
    """

    @intrinsic
    def strip(typingctx, Xt_type, Gt_type, dW_type, k0_type, column_type):
        _require_contiguous(Xt=Xt_type, Gt=Gt_type, dW=dW_type)
        signature = types.void(Xt_type, Gt_type, dW_type, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            Xt, Gt, dW = (
                context.make_array(array_type)(context, builder, value)
                for array_type, value in zip(signature.args[:3], args[:3], strict=True)
            )
            k0 = args[3]
            arrays = _Arrays(context, builder, Xt_type.dtype)
            column_bytes = builder.mul(args[4], arrays.const(arrays.itemsize))
            accumulator_type = context.get_data_type(dW_type.dtype)
            lanes, _, tile_classes = _tile_shapes(context, arrays.itemsize)
            vector_type = ir.VectorType(arrays.scalar, lanes)
            fma = _fma(builder, vector_type, arrays.itemsize)
            n_features = builder.extract_value(Xt.shape, 0)
            n_quads = builder.udiv(n_features, arrays.const(GRADIENT_FEATURES))
            zero = ir.Constant(vector_type, None)
            # Tiles of four features take butterflies wherever a vector holds a class's
            # four sums. Their sums are padded with zero vectors to whole vectors of
            # lanes, whose shuffles cost less than the sums across lanes they replace.
            # Each sum is the one a sum per vector takes (the same tree of halves), so
            # the bits are too; it was first done only where 32 registers hold a tile of
            # GRADIENT_GROUP classes. On 16 registers (AVX2, Zen 3) too, the BLOCKED
            # chunk (one thread, compiled both ways in one process, 9 alternated
            # rounds, ns per block, ratio after / before; float32, float64) took
            # 200,000 x 20 x 3 0.969, 0.972; 100,000 x 24 x 10 0.976, 0.990;
            # 50,000 x 64 x 128 0.975, 0.986; 5000 x 512 x 1000 0.974, 0.963.
            butterfly = lanes % GRADIENT_FEATURES == 0

            def add_class_sums(classes, first_feature, sums):
                """dW[classes[c], first_feature + f] += lane GRADIENT_FEATURES c + f of the sums."""
                feature_offset = arrays.row_offset(dW, first_feature, 1)
                for c, k in enumerate(classes):
                    first_lane = c * GRADIENT_FEATURES
                    vector = sums[first_lane // lanes]
                    lanes_of_class = [first_lane % lanes + f for f in range(GRADIENT_FEATURES)]
                    value = builder.shuffle_vector(
                        vector, vector, ir.Constant(ir.VectorType(ir.IntType(32), GRADIENT_FEATURES), lanes_of_class)
                    )
                    if accumulator_type != arrays.scalar:
                        value = builder.fpext(value, ir.VectorType(accumulator_type, GRADIENT_FEATURES))
                    target = arrays.address(dW, value.type, arrays.row_offset(dW, k), feature_offset)
                    builder.store(_ordered_fadd(builder, builder.load(target, align=8), value), target, align=8)

            def tile(classes, first_feature, n_tile_features, reduce_by_butterfly=False):
                features = [builder.add(first_feature, arrays.const(f)) for f in range(n_tile_features)]
                accumulators = [[cgutils.alloca_once(builder, vector_type) for _ in features] for _ in classes]
                for row in accumulators:
                    for accumulator in row:
                        builder.store(zero, accumulator)
                with cgutils.for_range(builder, arrays.const(BLOCK_ROWS // lanes)) as step:
                    offset = builder.mul(step.index, arrays.const(lanes * arrays.itemsize))
                    g = [arrays.load(Gt, vector_type, arrays.row_offset(Gt, k), offset) for k in classes]
                    x = [arrays.load(Xt, vector_type, arrays.row_offset(Xt, d), column_bytes, offset) for d in features]
                    for g_vector, row in zip(g, accumulators, strict=True):
                        for x_vector, accumulator in zip(x, row, strict=True):
                            builder.store(
                                builder.call(fma, [g_vector, x_vector, builder.load(accumulator)]), accumulator
                            )
                if reduce_by_butterfly:
                    # Lane GRADIENT_FEATURES c + f of the sums belongs to classes[c], feature f.
                    ordered = [builder.load(accumulator) for row in accumulators for accumulator in row]
                    n_sums = -(-len(ordered) // lanes) * lanes
                    ordered += [zero] * (n_sums - len(ordered))
                    sums = [_sum_lanes(builder, ordered[i : i + lanes]) for i in range(0, n_sums, lanes)]
                    add_class_sums(classes, first_feature, sums)
                    return
                for k, row in zip(classes, accumulators, strict=True):
                    for d, accumulator in zip(features, row, strict=True):
                        block_sum = _fixed_order_sum(builder, [builder.load(accumulator)])
                        if accumulator_type != arrays.scalar:
                            block_sum = builder.fpext(block_sum, accumulator_type)
                        target = arrays.address(
                            dW, accumulator_type, arrays.row_offset(dW, k), arrays.row_offset(dW, d, 1)
                        )
                        builder.store(_ordered_fadd(builder, builder.load(target), block_sum), target)

            for first in range(0, n_classes, tile_classes):
                classes = [builder.add(k0, arrays.const(c)) for c in range(first, min(first + tile_classes, n_classes))]
                with cgutils.for_range(builder, n_quads) as quad:
                    first_feature = builder.mul(quad.index, arrays.const(GRADIENT_FEATURES))
                    tile(classes, first_feature, GRADIENT_FEATURES, butterfly)
                first_single = builder.mul(n_quads, arrays.const(GRADIENT_FEATURES))
                with cgutils.for_range_slice(builder, first_single, n_features, arrays.const(1)) as (feature, _):
                    tile(classes, feature, 1)
            return context.get_dummy_value()

        return signature, codegen

    return strip


def _fixed_order_sum(builder, vectors):
    """The sum of ``vectors``' lanes, added in a fixed tree: pairs of vectors, then halves of lanes.

    Each fadd is ordered (``_ordered_fadd``).
    """
    mask_type = ir.IntType(32)

    def add(a, b):
        return _ordered_fadd(builder, a, b)

    assert len(vectors) & (len(vectors) - 1) == 0, "pairs all the way down need a power of two of vectors"
    while len(vectors) > 1:
        vectors = [add(a, b) for a, b in zip(vectors[::2], vectors[1::2], strict=True)]
    vector = vectors[0]
    lanes = vector.type.count
    while lanes > 1:
        lanes //= 2
        low, high = (
            builder.shuffle_vector(
                vector, vector, ir.Constant(ir.VectorType(mask_type, lanes), list(range(first, first + lanes)))
            )
            for first in (0, lanes)
        )
        vector = add(low, high)
    return builder.extract_element(vector, ir.Constant(mask_type, 0))


@intrinsic
def add_bias_sums(typingctx, Gt_type, db_type):
    """An intrinsic ``add_bias_sums(Gt, db)``: db[k] += sum_r Gt[k, r] over r < BLOCK_ROWS, for every class k.

    Gt (K, BLOCK_ROWS) has contiguous rows and the data's dtype; db (K,) is a
    float64 accumulator. Each block sum is taken in the data's dtype, in one
    fixed order for the target's vector width (``_fixed_order_sum``; the
    cache keys compiled code by CPU, so that width is the same wherever the
    code is loaded), and added in float64. Written as a Numba loop under
    ``reassoc``, the order was LLVM's to choose, and it chose differently
    when a parallel driver was compiled fresh than when it came from a cache
    that another process had filled: the BLOCKED body and the row-block and
    Fortran-order bodies, which must agree bit for bit, then differed in
    db's last bits (1 ulp in float64, up to 10 in float32). On AVX-512 in
    float32 the assembly has the instructions LLVM emitted for the loop (8
    loads, 7 vector adds, 4 halvings of the lanes); only which vectors are
    paired is now fixed.
    """
    _require_contiguous(Gt=Gt_type)
    if not (
        Gt_type.ndim == 2
        and Gt_type.dtype in (types.float32, types.float64)
        and getattr(db_type, "ndim", None) == 1
        and db_type.dtype == types.float64
    ):
        raise TypingError(f"add_bias_sums needs a 2-D float Gt and a 1-D float64 db, got {Gt_type} and {db_type}")
    signature = types.void(Gt_type, db_type)

    def codegen(context, builder, signature, args):
        Gt = context.make_array(Gt_type)(context, builder, args[0])
        db = context.make_array(db_type)(context, builder, args[1])
        arrays = _Arrays(context, builder, Gt_type.dtype)
        lanes, _, _ = _tile_shapes(context, arrays.itemsize)
        vector_type = ir.VectorType(arrays.scalar, lanes)
        accumulator_type = context.get_data_type(db_type.dtype)
        n_classes = builder.extract_value(Gt.shape, 0)
        with cgutils.for_range(builder, n_classes) as k:
            row = arrays.row_offset(Gt, k.index)
            vectors = [
                arrays.load(Gt, vector_type, row, arrays.const(j * lanes * arrays.itemsize))
                for j in range(BLOCK_ROWS // lanes)
            ]
            block_sum = _fixed_order_sum(builder, vectors)
            if accumulator_type != arrays.scalar:
                block_sum = builder.fpext(block_sum, accumulator_type)
            target = arrays.address(db, accumulator_type, arrays.row_offset(db, k.index))
            builder.store(_ordered_fadd(builder, builder.load(target), block_sum), target)
        return context.get_dummy_value()

    return signature, codegen


def _transpose_vectors(builder, rows):
    """The lanes x lanes transpose of ``rows`` (a list of lanes vectors), in log2(lanes) stages of shuffles.

    Stage h swaps the off-diagonal h x h blocks of every 2h x 2h block: row i
    (bit h clear) and row i + h exchange their h-lane halves of each 2h lanes.
    """
    lanes = len(rows)
    rows = list(rows)
    half = lanes // 2
    while half >= 1:
        first_mask = [j if (j // half) % 2 == 0 else lanes + j - half for j in range(lanes)]
        second_mask = [j + half if (j // half) % 2 == 0 else lanes + j for j in range(lanes)]
        for i in range(lanes):
            if i & half:
                continue
            a, b = rows[i], rows[i + half]
            mask_type = ir.VectorType(ir.IntType(32), lanes)
            rows[i] = builder.shuffle_vector(a, b, ir.Constant(mask_type, first_mask))
            rows[i + half] = builder.shuffle_vector(a, b, ir.Constant(mask_type, second_mask))
        half //= 2
    return rows


def _concatenate(builder, vectors):
    """One vector of the lanes of ``vectors`` in order (a power-of-two count of vectors of one type)."""
    while len(vectors) > 1:
        width = vectors[0].type.count
        mask = ir.Constant(ir.VectorType(ir.IntType(32), 2 * width), list(range(2 * width)))
        vectors = [builder.shuffle_vector(a, b, mask) for a, b in zip(vectors[::2], vectors[1::2], strict=True)]
    return vectors[0]


def _transpose_tall(builder, rows):
    """The transpose of a tall tile: one vector per feature of ``rows``, lanes x w values.

    ``rows[r]`` holds row r's w features (w < lanes, both powers of two); the
    result's vector f holds feature f of every row. Rows are packed lanes /
    w to a vector, then log2(w) stages of two-vector shuffles, each pairing
    vectors that hold the same features for different rows, split them by
    one bit of the feature. The lanes / w squares of w that this replaces
    moved the same values in vectors of w, lanes / w times as many.
    """
    width, lanes = rows[0].type.count, len(rows)
    per_vector = lanes // width
    vectors = [_concatenate(builder, rows[q * per_vector : (q + 1) * per_vector]) for q in range(width)]
    # What each lane holds, as (feature, row): the shuffle masks follow from it.
    contents = [[(f, q * per_vector + i) for i in range(per_vector) for f in range(width)] for q in range(width)]
    mask_type = ir.VectorType(ir.IntType(32), lanes)
    bit = width // 2
    while bit >= 1:
        groups = {}
        for index, content in enumerate(contents):
            groups.setdefault(frozenset(f for f, _ in content), []).append(index)
        new_vectors, new_contents = [], []
        for indices in groups.values():
            for a, b in zip(indices[::2], indices[1::2], strict=True):
                source = {element: lane for lane, element in enumerate(contents[a])}
                source.update({element: lanes + lane for lane, element in enumerate(contents[b])})
                for half in (0, bit):
                    content = sorted(element for element in source if element[0] & bit == half)
                    mask = ir.Constant(mask_type, [source[element] for element in content])
                    new_vectors.append(builder.shuffle_vector(vectors[a], vectors[b], mask))
                    new_contents.append(content)
        vectors, contents = new_vectors, new_contents
        bit //= 2
    by_feature = sorted(range(width), key=lambda index: contents[index][0][0])
    assert all(contents[index] == [(f, r) for r in range(lanes)] for f, index in enumerate(by_feature))
    return [vectors[index] for index in by_feature]


@intrinsic
def transpose_full_block(typingctx, X_type, first_type, Xt_type):
    """An intrinsic ``transpose_full_block(X, first, Xt) -> n``: Xt[d, r] = X[first + r, d].

    For every r < BLOCK_ROWS and d < n, where n is D, or 0 for D = 1 (the
    caller copies the features from n on). X's rows, Xt's rows and
    X[first : first + BLOCK_ROWS] must be contiguous and in range.
    Squares of w x w values go through registers: w vector loads along X's
    rows, log2(w) stages of shuffles, w vector stores along Xt's rows,
    instead of one scalar load and store per value. w is the lanes of one
    vector. Features left over go w / 2 at a time through squares of w / 2,
    then w / 4, ..., 2 at a time through tall tiles of w rows
    (``_transpose_tall``): D = 20 in float32 takes 16 features in squares of
    16 and 4 in tiles of 16 rows x 4 features, four whole-vector stores
    where squares of 4 took sixteen quarter-vector ones.
    """
    _require_contiguous(X=X_type, Xt=Xt_type)
    signature = types.intp(X_type, types.intp, Xt_type)

    def codegen(context, builder, signature, args):
        X = context.make_array(X_type)(context, builder, args[0])
        Xt = context.make_array(Xt_type)(context, builder, args[2])
        first = args[1]
        arrays = _Arrays(context, builder, X_type.dtype)
        lanes, _, _ = _tile_shapes(context, arrays.itemsize)
        n_features = builder.extract_value(X.shape, 1)

        def load_rows(first_row, n_rows, feature, width):
            """Features [feature, feature + width) of rows first_row + i, i < n_rows, a vector of width per row."""
            feature_offset = builder.mul(feature, arrays.const(arrays.itemsize))
            row_type = ir.VectorType(arrays.scalar, width)
            return [
                arrays.load(X, row_type, arrays.row_offset(X, builder.add(first_row, arrays.const(i))), feature_offset)
                for i in range(n_rows)
            ]

        def store_columns(rows_offset, feature, columns):
            for j, column in enumerate(columns):
                target = arrays.address(
                    Xt, column.type, arrays.row_offset(Xt, builder.add(feature, arrays.const(j))), rows_offset
                )
                builder.store(column, target, align=arrays.itemsize)

        def row_tiles(tile_rows):
            """Loop over the block's tiles of tile_rows rows: yields (first row in X, byte offset in a row of Xt)."""
            with cgutils.for_range(builder, arrays.const(BLOCK_ROWS // tile_rows)) as row_tile:
                first_row = builder.add(first, builder.mul(row_tile.index, arrays.const(tile_rows)))
                yield first_row, builder.mul(row_tile.index, arrays.const(tile_rows * arrays.itemsize))

        def squares(width, feature, n_squares):
            for first_row, rows_offset in row_tiles(width):
                with cgutils.for_range(builder, n_squares) as square:
                    first_feature = builder.add(feature, builder.mul(square.index, arrays.const(width)))
                    rows = load_rows(first_row, width, first_feature, width)
                    store_columns(rows_offset, first_feature, _transpose_vectors(builder, rows))

        def narrow(width, feature):
            """Features [feature, feature + width), width < lanes: a half-vector square, else a tall tile."""
            if width == lanes // 2:
                squares(width, feature, arrays.const(1))
                return
            for first_row, rows_offset in row_tiles(lanes):
                rows = load_rows(first_row, lanes, feature, width)
                store_columns(rows_offset, feature, _transpose_tall(builder, rows))

        # Whole vectors, then at most one half-vector square and one tall tile
        # of each narrower width, as the features left over are fewer than lanes.
        # (Tall tiles of half a vector measured level with its squares in
        # float32 and up to 30 % slower in float64.)
        n_squares = builder.udiv(n_features, arrays.const(lanes))
        squares(lanes, arrays.const(0), n_squares)
        done = builder.mul(n_squares, arrays.const(lanes))
        width = lanes // 2
        while width >= 2:
            takes = builder.icmp_signed(">=", builder.sub(n_features, done), arrays.const(width))
            with builder.if_then(takes):
                narrow(width, done)
            done = builder.select(takes, builder.add(done, arrays.const(width)), done)
            width //= 2
        # An odd D's last feature: the last two features again, which rewrites
        # the one before it with the same values, where the caller copied it a
        # value at a time (one thread, ns per block at D = 23: 555-671 ->
        # 250-287 in float32, 768-789 -> 475-558 in float64).
        odd = builder.and_(
            builder.icmp_signed("<", done, n_features), builder.icmp_signed(">=", n_features, arrays.const(2))
        )
        with builder.if_then(odd):
            last_two = builder.sub(n_features, arrays.const(2))
            if lanes == 2:
                squares(2, last_two, arrays.const(1))
            else:
                narrow(2, last_two)
        return builder.select(odd, n_features, done)

    return signature, codegen


#: Bytes per cache line: ``prefetch_bytes`` asks for one line per this many bytes.
CACHE_LINE_BYTES = 64
#: ``llvm.prefetch``'s locality for every prefetch of the tiles: 2 is
#: ``prefetcht1``, into L2 but not L1. A next block prefetched into L1 (3,
#: ``prefetcht0``) evicts the block in use where L1 holds less than both
#: (32 KB on Zen 4), and a burst of L1 prefetches holds the core's miss
#: buffers; from L2 the hardware streams a block into L1 as it is read.
#: Public step, 2 threads, Zen 4 (32 KB L1), ms 3 -> 2, float32 / float64,
#: two alternated runs each: 200,000 x 100 x 10 11.1, 9.7 / 26.3, 22.4 ->
#: 7.9-11.2 / 13.2-14.4 (ROWWISE); 1e6 x 20 x 3 7.9, 7.5 / 14.0, 13.2 ->
#: 6.1-9.1 / 9.9-11.9 (ROWWISE); 1e6 x 8 x 3 3.4, 5.3 / 7.6, 7.4 -> 3.3,
#: 4.6 / 6.6, 6.1 (BLOCKED); 400,000 x 20 x 5 one training pass (row
#: blocks) 2.8, 3.7 / 6.9, 6.4 -> 2.2, 2.1 / 5.2, 5.7; 60,000 x 784 x 10
#: level. One thread, X in memory, ns per row, float32 / float64, 3 -> 1:
#: row blocks 12.7, 15.4 / 32.8, 25.5 -> 8.1, 7.6 / 15.8, 17.0. AMD's cores
#: before Zen 4 take every locality into L1 (``PREFETCH_FILLS_L1_CPUS``).
PREFETCH_LOCALITY = 2
#: LLVM's names of the CPUs whose ``prefetcht1`` fills L1 as ``prefetcht0``
#: does: AMD's Zen 1 to 3, on which every PREFETCHh hint loads into L1 (Zen 4
#: was the first to keep T1 and T2 out of L1). There the next block that the
#: bodies prefetch shares L1 with the block in use (``prefetch_fills_l1``).
PREFETCH_FILLS_L1_CPUS = frozenset({"znver1", "znver2", "znver3"})


@functools.cache
def target_vector_bytes() -> int:
    """Bytes of a vector register on the CPU the kernels compile for (64 with AVX-512, 32 with AVX, else 16).

    Read from Numba's CPU target, as the tiles read it when they compile
    (``_vector_shape``), for rules chosen in Python before a call.
    """
    return _vector_shape(cpu_target.target_context)[0]


@functools.cache
def prefetch_fills_l1() -> bool:
    """Whether the CPU the kernels compile for is one of ``PREFETCH_FILLS_L1_CPUS``.

    That CPU is Numba's: ``NUMBA_CPU_NAME`` where it is set (and not
    ``host``), else the host's, as LLVM names it.
    """
    cpu_name = config.CPU_NAME if config.CPU_NAME not in (None, "host") else llvm.get_host_cpu_name()
    return cpu_name in PREFETCH_FILLS_L1_CPUS


def _emit_prefetches(builder, arrays, array, first, stop):
    """Emit one ``llvm.prefetch`` (read, into L2) per cache line of bytes [first, stop) of ``array``.

    The range is clamped to the array's buffer first; ``PREFETCH_LOCALITY`` says why L2.
    """
    n_bytes = builder.mul(array.nitems, arrays.const(arrays.itemsize))
    first = builder.select(builder.icmp_signed(">", first, arrays.const(0)), first, arrays.const(0))
    stop = builder.select(builder.icmp_signed("<", stop, n_bytes), stop, n_bytes)
    byte = ir.IntType(8)
    i32 = ir.IntType(32)
    prefetch = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [byte.as_pointer(), i32, i32, i32]), "llvm.prefetch.p0i8"
    )
    base = builder.bitcast(array.data, byte.as_pointer())
    read, locality, data = (ir.Constant(i32, flag) for flag in (0, PREFETCH_LOCALITY, 1))
    with cgutils.for_range_slice(builder, first, stop, arrays.const(CACHE_LINE_BYTES)) as (offset, _):
        builder.call(prefetch, [builder.gep(base, [offset]), read, locality, data])


def _emit_prefetch_part(builder, arrays, array, upcoming_bytes, part, n_parts):
    """Prefetch part ``part`` (a run-time index) of ``n_parts`` of the bytes ``upcoming_bytes`` of ``array``.

    ``upcoming_bytes`` = (first, stop, n_pieces, piece_bytes) is bytes
    [first, stop) of each of n_pieces pieces, piece_bytes apart. One piece
    (the rows of a C-ordered X or a row block) splits into n_parts runs of
    whole cache lines; several (one per feature of a Fortran-ordered X)
    split by pieces, part p taking pieces [p n_pieces / n_parts, (p + 1)
    n_pieces / n_parts).
    """
    first, stop, n_pieces, piece_bytes = upcoming_bytes
    one_piece = builder.icmp_signed("==", n_pieces, arrays.const(1))
    # One piece: a part is ceil((stop - first) / n_parts) bytes, rounded up to whole lines.
    part_lines = builder.sdiv(
        builder.add(builder.sub(stop, first), arrays.const(n_parts * CACHE_LINE_BYTES - 1)),
        arrays.const(n_parts * CACHE_LINE_BYTES),
    )
    part_bytes = builder.mul(part_lines, arrays.const(CACHE_LINE_BYTES))
    part_first = builder.add(first, builder.mul(part, part_bytes))
    part_stop = builder.add(part_first, part_bytes)
    part_stop = builder.select(builder.icmp_signed("<", part_stop, stop), part_stop, stop)
    run_first = builder.select(one_piece, part_first, first)
    run_stop = builder.select(one_piece, part_stop, stop)
    first_piece = builder.sdiv(builder.mul(part, n_pieces), arrays.const(n_parts))
    stop_piece = builder.sdiv(builder.mul(builder.add(part, arrays.const(1)), n_pieces), arrays.const(n_parts))
    first_piece = builder.select(one_piece, arrays.const(0), first_piece)
    stop_piece = builder.select(one_piece, arrays.const(1), stop_piece)
    with cgutils.for_range_slice(builder, first_piece, stop_piece, arrays.const(1)) as (piece, _):
        offset = builder.mul(piece, piece_bytes)
        _emit_prefetches(builder, arrays, array, builder.add(run_first, offset), builder.add(run_stop, offset))


@intrinsic
def prefetch_bytes(typingctx, array_type, first_type, stop_type):
    """An intrinsic ``prefetch_bytes(a, first, stop)``: ask for bytes [first, stop) of a's buffer in cache.

    One ``llvm.prefetch`` (read, into L2) per cache line, clamped
    to the buffer, so a range past its end asks for nothing there. A prefetch
    is a hint that never faults and changes no value. The bodies ask so for
    the next block's labels and weights (``loss_grad._prefetch_next_labels``);
    the tiles ask for the next block of X a part at a time
    (``_emit_prefetch_part``, ``loss_grad.PREFETCH_MAX_BYTES``).
    """
    _require_contiguous(a=array_type)
    signature = types.void(array_type, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        array = context.make_array(array_type)(context, builder, args[0])
        _emit_prefetches(builder, _Arrays(context, builder, array_type.dtype), array, args[1], args[2])
        return context.get_dummy_value()

    return signature, codegen


#: Bytes of each row that a row-wise logits tile (``row_logits_strip``) takes per
#: segment of features: its rows of X and of W then stay in L1 (4 rows of X and
#: LOGITS_GROUP of W, 36 KB of the 48 KB L1 of a Zen 5 core). One thread, X in
#: L2, 784 x 10 float64: 25.3 -> 19.4 us per block of logits against whole
#: rows; float32 rows (3136 bytes) fit whole.
ROW_SEGMENT_BYTES = 4096


def _row_tile_shapes(context, itemsize: int) -> tuple[int, int, int]:
    """Lanes per vector, rows per row-wise logits tile, vectors of features per row-wise gradient tile.

    Either tile holds up to LOGITS_GROUP classes: 5 x 4 = 20 accumulators
    of 32 registers, or 5 x 2 of 16.
    """
    vector_bytes, n_registers = _vector_shape(context)
    per_tile = 4 if n_registers >= 32 else 2
    return vector_bytes // itemsize, per_tile, per_tile


def _lane_mask(builder, arrays, lanes, n_set):
    """<lanes x i1> whose lane j is set where j < n_set."""
    index_type = ir.VectorType(arrays.intp, lanes)
    return builder.icmp_signed("<", ir.Constant(index_type, list(range(lanes))), arrays.splat(n_set, index_type))


def _masked_intrinsic(builder, operation, vector_type, pointer_type):
    """``llvm.masked.load`` or ``llvm.masked.store`` for vector_type through pointer_type."""
    element = "f32" if vector_type.element == ir.FloatType() else "f64"
    mask_type = ir.VectorType(ir.IntType(1), vector_type.count)
    i32 = ir.IntType(32)
    if operation == "load":
        function_type = ir.FunctionType(vector_type, [pointer_type, i32, mask_type, vector_type])
    else:
        function_type = ir.FunctionType(ir.VoidType(), [vector_type, pointer_type, i32, mask_type])
    name = f"llvm.masked.{operation}.v{vector_type.count}{element}.p0"
    return cgutils.get_or_insert_function(builder.module, function_type, name)


def _masked_load(builder, address, mask, align):
    """The lanes at ``address`` where ``mask`` is set, zero elsewhere: nothing outside the set lanes is read."""
    vector_type = address.type.pointee
    load = _masked_intrinsic(builder, "load", vector_type, address.type)
    return builder.call(load, [address, ir.Constant(ir.IntType(32), align), mask, ir.Constant(vector_type, None)])


def _masked_store(builder, value, address, mask, align):
    """Store the lanes of ``value`` where ``mask`` is set; nothing outside them is written."""
    store = _masked_intrinsic(builder, "store", value.type, address.type)
    builder.call(store, [value, address, ir.Constant(ir.IntType(32), align), mask])


@functools.cache
def row_logits_strip(n_classes: int):
    """An intrinsic ``strip(X, first, n_rows, W, b, Zt, k0, prefetch_ahead, prefetch_stop)``: logits from rows of X.

    Zt[k0 + c, r] = b[k0 + c] + sum_d W[k0 + c, d] X[first + r, d] for c <
    ``n_classes`` and r < n_rows (the ROWWISE body's logits). A tile of rows
    x classes vector accumulators runs along D, each step loading one vector
    of every row and of every W[k], for rows x classes fused multiply-adds;
    each accumulator is summed across its lanes at the end of a segment of
    features (``ROW_SEGMENT_BYTES``) and added to Zt. The last vector of a
    row that D does not fill is loaded under a mask. A last tile that n_rows
    does not fill reads row n_rows - 1 again, so Zt's columns from n_rows to
    the end of that tile (within BLOCK_ROWS) are overwritten too. X's rows
    and W's rows are contiguous; Zt (K, BLOCK_ROWS) and b (K,) may have any
    strides.

    With ``prefetch_ahead`` > 0, each tile also prefetches the bytes of X
    that lie ``prefetch_ahead`` bytes past its rows, up to byte
    ``prefetch_stop`` of X (``loss_grad.ROWWISE_PREFETCH_MAX_BYTES``): the
    next block's rows arrive a few lines at a time, among the products.
    """

    @intrinsic
    def strip(
        typingctx, X_type, first_type, n_rows_type, W_type, b_type, Zt_type, k0_type, ahead_type, prefetch_stop_type
    ):
        _require_contiguous(X=X_type, W=W_type, Zt=Zt_type)
        signature = types.void(
            X_type, types.intp, types.intp, W_type, b_type, Zt_type, types.intp, types.intp, types.intp
        )

        def codegen(context, builder, signature, args):
            X, W, b, Zt = (context.make_array(signature.args[i])(context, builder, args[i]) for i in (0, 3, 4, 5))
            first, n_rows, k0, prefetch_ahead, prefetch_stop = args[1], args[2], args[6], args[7], args[8]
            arrays = _Arrays(context, builder, X_type.dtype)
            lanes, tile_rows, _ = _row_tile_shapes(context, arrays.itemsize)
            assert lanes % tile_rows == 0, "a butterfly's lanes hold whole classes of the tile's rows"
            vector_type = ir.VectorType(arrays.scalar, lanes)
            vector_bytes = lanes * arrays.itemsize
            fma = _fma(builder, vector_type, arrays.itemsize)
            n_features = builder.extract_value(X.shape, 1)
            n_full = builder.udiv(n_features, arrays.const(lanes))
            n_vectors = builder.udiv(builder.add(n_features, arrays.const(lanes - 1)), arrays.const(lanes))
            last_mask = _lane_mask(
                builder, arrays, lanes, builder.sub(n_features, builder.mul(n_full, arrays.const(lanes)))
            )
            segment_vectors = max(1, ROW_SEGMENT_BYTES // vector_bytes)
            n_segments = builder.udiv(
                builder.add(n_vectors, arrays.const(segment_vectors - 1)), arrays.const(segment_vectors)
            )
            classes = [builder.add(k0, arrays.const(c)) for c in range(n_classes)]
            w_rows = [arrays.row_offset(W, k) for k in classes]
            row_bytes = builder.mul(n_features, arrays.const(arrays.itemsize))
            prefetches = builder.icmp_signed(">", prefetch_ahead, arrays.const(0))

            last_row = builder.sub(n_rows, arrays.const(1))

            def tile(first_row, segment_first, segment_stop, opens_row):
                rows = [builder.add(first_row, arrays.const(i)) for i in range(tile_rows)]
                # A tile past row n_rows - 1 reads that row again (its logits land past n_rows).
                read_rows = [builder.select(builder.icmp_signed("<", r, n_rows), r, last_row) for r in rows]
                x_rows = [arrays.row_offset(X, builder.add(first, r)) for r in read_rows]
                zero = ir.Constant(vector_type, None)
                accumulators = [[cgutils.alloca_once_value(builder, zero) for _ in rows] for _ in classes]
                with builder.if_then(builder.and_(opens_row, prefetches)):
                    ahead_first = builder.add(builder.mul(builder.add(first, first_row), row_bytes), prefetch_ahead)
                    ahead_stop = builder.add(ahead_first, builder.mul(row_bytes, arrays.const(tile_rows)))
                    ahead_stop = builder.select(
                        builder.icmp_signed("<", ahead_stop, prefetch_stop), ahead_stop, prefetch_stop
                    )
                    _emit_prefetches(builder, arrays, X, ahead_first, ahead_stop)

                def step(offset, load):
                    x = [load(X, x_row, offset) for x_row in x_rows]
                    for w_row, row in zip(w_rows, accumulators, strict=True):
                        w = load(W, w_row, offset)
                        for x_vector, accumulator in zip(x, row, strict=True):
                            builder.store(builder.call(fma, [w, x_vector, builder.load(accumulator)]), accumulator)

                def whole(array, row, offset):
                    return arrays.load(array, vector_type, row, offset)

                def masked(array, row, offset):
                    return _masked_load(
                        builder, arrays.address(array, vector_type, row, offset), last_mask, arrays.itemsize
                    )

                full_stop = builder.select(builder.icmp_signed("<", segment_stop, n_full), segment_stop, n_full)
                with cgutils.for_range_slice(builder, segment_first, full_stop, arrays.const(1)) as (vector, _):
                    step(builder.mul(vector, arrays.const(vector_bytes)), whole)
                with builder.if_then(builder.icmp_signed("<", full_stop, segment_stop)):
                    step(builder.mul(full_stop, arrays.const(vector_bytes)), masked)

                def add_to_logits(c, value, first_of_rows):
                    """Zt[k0 + c, first_of_rows + i] = (b[k0 + c] on a row's first segment, else itself) + value[i]."""
                    value_type = value.type
                    bias = arrays.splat(arrays.load(b, arrays.scalar, arrays.row_offset(b, classes[c])), value_type)
                    z_row = arrays.row_offset(Zt, classes[c])
                    target = arrays.address(Zt, value_type, z_row, arrays.row_offset(Zt, first_of_rows, 1))
                    start = builder.select(opens_row, bias, builder.load(target, align=arrays.itemsize))
                    builder.store(_ordered_fadd(builder, start, value), target, align=arrays.itemsize)

                # In class-major order, accumulators go lanes at a time through a
                # butterfly (``_sum_lanes``): lane j of its result sums accumulator
                # g + j, and a class's rows, adjacent lanes, go to Zt as one piece.
                # A last group short of lanes is padded with zero vectors, whose
                # shuffles and adds fold away: cheaper than a sum across lanes per
                # accumulator. One thread, X in L2, us per block of logits before
                # / after, float32: D x K 20 x 3 0.40 / 0.29, 16 x 2 0.22 / 0.15,
                # 24 x 5 0.45 / 0.39, 20 x 8 0.83 / 0.70; float64 level.
                ordered = [builder.load(accumulator) for row in accumulators for accumulator in row]
                ordered += [ir.Constant(vector_type, None)] * (-len(ordered) % lanes)
                piece_lanes = ir.VectorType(ir.IntType(32), tile_rows)
                for group in range(0, len(ordered), lanes):
                    sums = _sum_lanes(builder, ordered[group : group + lanes])
                    for c in range(group // tile_rows, min(n_classes, (group + lanes) // tile_rows)):
                        lanes_of_class = ir.Constant(piece_lanes, [c * tile_rows + i - group for i in range(tile_rows)])
                        add_to_logits(c, builder.shuffle_vector(sums, sums, lanes_of_class), first_row)

            n_tiles = builder.udiv(builder.add(n_rows, arrays.const(tile_rows - 1)), arrays.const(tile_rows))
            with cgutils.for_range(builder, n_segments) as segment:
                segment_first = builder.mul(segment.index, arrays.const(segment_vectors))
                segment_stop = builder.add(segment_first, arrays.const(segment_vectors))
                segment_stop = builder.select(
                    builder.icmp_signed("<", segment_stop, n_vectors), segment_stop, n_vectors
                )
                opens_row = builder.icmp_signed("==", segment.index, arrays.const(0))
                with cgutils.for_range(builder, n_tiles) as row_tile:
                    first_row = builder.mul(row_tile.index, arrays.const(tile_rows))
                    tile(first_row, segment_first, segment_stop, opens_row)
            return context.get_dummy_value()

        return signature, codegen

    return strip


@functools.cache
def row_gradient_strip(n_classes: int):
    """An intrinsic ``strip(X, first, n_rows, Gt, dW, k0)``: the gradient from rows of X as they lie.

    dW[k0 + c, d] += sum_r Gt[k0 + c, r] X[first + r, d] for c <
    ``n_classes``, every feature d and r < n_rows (the ROWWISE body's
    gradient). A tile of classes x vectors of features runs down the rows,
    each step loading those vectors of one row of X and one Gt[k, r] per
    class, for classes x vectors fused multiply-adds. Each sum over the rows
    is taken in the data's dtype and added to the float64 accumulator dW (K,
    D, contiguous rows), as the BLOCKED body's tiles do. The features past
    the last whole tile go a vector at a time through one tile under a mask.
    X's rows are contiguous; Gt (K, BLOCK_ROWS) may have any strides.
    """

    @intrinsic
    def strip(typingctx, X_type, first_type, n_rows_type, Gt_type, dW_type, k0_type):
        _require_contiguous(X=X_type, dW=dW_type)
        signature = types.void(X_type, types.intp, types.intp, Gt_type, dW_type, types.intp)

        def codegen(context, builder, signature, args):
            X, Gt, dW = (context.make_array(signature.args[i])(context, builder, args[i]) for i in (0, 3, 4))
            first, n_rows, k0 = args[1], args[2], args[5]
            arrays = _Arrays(context, builder, X_type.dtype)
            lanes, _, tile_vectors = _row_tile_shapes(context, arrays.itemsize)
            vector_type = ir.VectorType(arrays.scalar, lanes)
            doubles = ir.VectorType(ir.DoubleType(), lanes)
            fma = _fma(builder, vector_type, arrays.itemsize)
            n_features = builder.extract_value(X.shape, 1)
            classes = [builder.add(k0, arrays.const(c)) for c in range(n_classes)]
            g_rows = [arrays.row_offset(Gt, k) for k in classes]
            dW_rows = [arrays.row_offset(dW, k) for k in classes]

            def tile(first_feature, n_tile_vectors, masks=None):
                offsets = [
                    builder.mul(builder.add(first_feature, arrays.const(v * lanes)), arrays.const(arrays.itemsize))
                    for v in range(n_tile_vectors)
                ]
                zero = ir.Constant(vector_type, None)
                accumulators = [[cgutils.alloca_once_value(builder, zero) for _ in offsets] for _ in classes]
                with cgutils.for_range(builder, n_rows) as row:
                    x_row = arrays.row_offset(X, builder.add(first, row.index))
                    if masks is None:
                        x = [arrays.load(X, vector_type, x_row, offset) for offset in offsets]
                    else:
                        x = [
                            _masked_load(builder, arrays.address(X, vector_type, x_row, offset), mask, arrays.itemsize)
                            for offset, mask in zip(offsets, masks, strict=True)
                        ]
                    g_column = arrays.row_offset(Gt, row.index, 1)
                    for g_row, class_accumulators in zip(g_rows, accumulators, strict=True):
                        g = arrays.splat(arrays.load(Gt, arrays.scalar, g_row, g_column), vector_type)
                        for x_vector, accumulator in zip(x, class_accumulators, strict=True):
                            builder.store(builder.call(fma, [g, x_vector, builder.load(accumulator)]), accumulator)
                for dW_row, class_accumulators in zip(dW_rows, accumulators, strict=True):
                    for v, (offset, accumulator) in enumerate(zip(offsets, class_accumulators, strict=True)):
                        block_sum = builder.load(accumulator)
                        if arrays.itemsize != 8:
                            block_sum = builder.fpext(block_sum, doubles)
                        # dW holds float64: its byte offset is the data's scaled by 8 / itemsize
                        dW_offset = builder.mul(offset, arrays.const(8 // arrays.itemsize))
                        target = arrays.address(dW, doubles, dW_row, dW_offset)
                        if masks is None:
                            builder.store(
                                _ordered_fadd(builder, builder.load(target, align=8), block_sum), target, align=8
                            )
                        else:
                            total = _ordered_fadd(builder, _masked_load(builder, target, masks[v], 8), block_sum)
                            _masked_store(builder, total, target, masks[v], 8)

            tile_features = lanes * tile_vectors
            n_tiles = builder.udiv(n_features, arrays.const(tile_features))
            with cgutils.for_range(builder, n_tiles) as feature_tile:
                tile(builder.mul(feature_tile.index, arrays.const(tile_features)), tile_vectors)
            # The features past the last whole tile go through tiles of two vectors
            # while more than one vector's features are left, then one vector: each
            # vector under a mask of the features it still has (none past D), so
            # nothing past D is read or written. (Two vectors keep 10 chains of
            # multiply-adds in flight; a leftover tile of all four vectors cost a
            # lone last vector 4 times its products, one of two vectors twice.)
            first_left = builder.mul(n_tiles, arrays.const(tile_features))
            pair_features = 2 * lanes

            def masked_tile(feature, n_vectors):
                n_left = builder.sub(n_features, feature)
                masks = [
                    _lane_mask(builder, arrays, lanes, builder.sub(n_left, arrays.const(v * lanes)))
                    for v in range(n_vectors)
                ]
                tile(feature, n_vectors, masks)

            more_than_one = builder.sub(n_features, builder.add(first_left, arrays.const(lanes)))
            more_than_one = builder.select(
                builder.icmp_signed(">", more_than_one, arrays.const(0)), more_than_one, arrays.const(0)
            )
            n_pairs = builder.udiv(
                builder.add(more_than_one, arrays.const(pair_features - 1)), arrays.const(pair_features)
            )
            last_first = builder.add(first_left, builder.mul(n_pairs, arrays.const(pair_features)))
            with cgutils.for_range_slice(builder, first_left, last_first, arrays.const(pair_features)) as (feature, _):
                masked_tile(feature, 2)
            with builder.if_then(builder.icmp_signed("<", last_first, n_features)):
                masked_tile(last_first, 1)
            return context.get_dummy_value()

        return signature, codegen

    return strip


def _vector_constant(vector_type, value):
    return ir.Constant(vector_type, [value] * vector_type.count)


def _vector_exp(builder, x, itemsize):
    """exp(x) for a vector x: the Cody-Waite reduction and Taylor polynomial of ``_math.exp_inplace``.

    k = round(x log2(e)) comes from adding a shifter, 1.5 x 2^52 (float64)
    or 1.5 x 2^23 (float32), that leaves k in the sum's low mantissa bits:
    2^k is then built from those bits and k as a float by subtracting the
    shifter again, where exp_inplace takes a floor and two conversions.
    Below the underflow bound the result is exactly 0; NaN stays NaN (its
    bits make some power of two, which NaN times leaves NaN).
    """
    vector_type = x.type
    fma = _fma(builder, vector_type, itemsize)
    if itemsize == 8:
        underflow, ln2_hi, ln2_lo, degree, int_bits, bias, mantissa = (
            UNDERFLOW_64,
            LN2_HI_64,
            LN2_LO_64,
            13,
            64,
            1023,
            52,
        )
    else:
        underflow, ln2_hi, ln2_lo, degree, int_bits, bias, mantissa = UNDERFLOW_32, LN2_HI_32, LN2_LO_32, 7, 32, 127, 23
    shifter = 1.5 * 2.0**mantissa
    int_vector = ir.VectorType(ir.IntType(int_bits), vector_type.count)
    zero = ir.Constant(vector_type, None)
    below = builder.fcmp_ordered("<", x, _vector_constant(vector_type, underflow))
    clamped = builder.select(below, _vector_constant(vector_type, underflow), x)
    shifted = builder.call(fma, [clamped, _vector_constant(vector_type, LOG2E), _vector_constant(vector_type, shifter)])
    k = builder.fsub(shifted, _vector_constant(vector_type, shifter))
    # The caller's fastmath pass gives every float instruction without flags the
    # kernels' set, whose reassoc would cancel the shifter (k would not be an
    # integer) and fold the two-part reduction back into one product (30 ulp at
    # exp(-185) in float64): these get exp's own flags, as ``_math.exp_inplace`` has.
    high = builder.fmul(k, _vector_constant(vector_type, ln2_hi))
    reduced = builder.fsub(clamped, high)
    low = builder.fmul(k, _vector_constant(vector_type, ln2_lo))
    r = builder.fsub(reduced, low)
    for instruction in (k, high, reduced, low, r):
        instruction.flags[:] = sorted(FASTMATH_EXP)
    # P(r) = 1 + r + r^2 / 2 + r^3 Q(r), Q(r) = sum_{n >= 3} r^(n - 3) / n!. Horner's
    # scheme is one chain of FMAs as long as the degree. In float64 (degree 13)
    # Q goes as two independent chains in r^2 instead (second-order Horner),
    # 5-8 % off the softmax stage; the last three steps, which set the rounding
    # of P, stay Horner's (0.87 ulp; all of P in second order gave 1.97).
    if itemsize == 8:
        r2 = builder.fmul(r, r)

        def chain(powers):
            value = _vector_constant(vector_type, 1.0 / math.factorial(powers[-1]))
            for n in reversed(powers[:-1]):
                value = builder.call(fma, [value, r2, _vector_constant(vector_type, 1.0 / math.factorial(n))])
            return value

        p = builder.call(fma, [chain(list(range(4, degree + 1, 2))), r, chain(list(range(3, degree + 1, 2)))])
    else:
        p = _vector_constant(vector_type, 1.0 / math.factorial(degree))
        for n in range(degree - 1, 2, -1):
            p = builder.call(fma, [p, r, _vector_constant(vector_type, 1.0 / math.factorial(n))])
    for n in (2, 1, 0):
        p = builder.call(fma, [p, r, _vector_constant(vector_type, 1.0 / math.factorial(n))])
    p = builder.select(below, zero, p)
    # The low mantissa bits of ``shifted`` hold k (two's complement, plus a
    # high bit that the shift drops): (k + bias) << mantissa is 2^k.
    exponent = builder.add(builder.bitcast(shifted, int_vector), _vector_constant(int_vector, bias))
    power = builder.bitcast(builder.shl(exponent, _vector_constant(int_vector, mantissa)), vector_type)
    return builder.fmul(p, power)


#: Values of ``softmax_gradient_full_block``'s tail_excess: the products of
#: 1 + t over so many sets of a block's rows, each set of LOG_GROUP rows (so
#: that a product of sums in [1, K] stays finite for K < 2**32).
TAIL_PRODUCTS = BLOCK_ROWS // LOG_GROUP


def _tail_accumulators(lanes: int) -> int:
    """Vectors that carry a block's products of 1 + t for vectors of ``lanes`` rows: LOG_GROUP rows a lane at most.

    One wherever a vector has TAIL_PRODUCTS lanes or more (4 float64 lanes of
    AVX, 8 of AVX-512). With 2 (SSE, NEON) one vector's lanes held 64 rows
    each, whose product overflowed from K = 2**16 classes: a false "the loss
    overflowed" at 70,000 classes, float64.
    """
    return max(1, BLOCK_ROWS // (lanes * LOG_GROUP))


def _store_tail_products(builder, excesses, tail_excess):
    """tail_excess[:TAIL_PRODUCTS] = the lanes of ``excesses`` as TAIL_PRODUCTS products (zero past the lanes).

    Lane j of a vector holds prod(1 + t) - 1 over the rows j, j + lanes, ...
    of its part of the block. One vector's lanes merge as a + b + a b, the
    excess of their product, halving the lanes; several (``_tail_accumulators``)
    have TAIL_PRODUCTS lanes in all, stored in order.
    """
    double = ir.DoubleType()
    base = builder.bitcast(tail_excess.data, double.as_pointer())
    mask_type = ir.IntType(32)
    if len(excesses) > 1:
        lanes = excesses[0].type.count
        for part, excess in enumerate(excesses):
            for j in range(lanes):
                value = builder.extract_element(excess, ir.Constant(mask_type, j))
                builder.store(value, builder.gep(base, [ir.Constant(ir.IntType(64), part * lanes + j)]))
        return
    (excess,) = excesses
    lanes = excess.type.count
    while lanes > TAIL_PRODUCTS:
        lanes //= 2
        low = builder.shuffle_vector(excess, excess, ir.Constant(ir.VectorType(mask_type, lanes), list(range(lanes))))
        high = builder.shuffle_vector(
            excess, excess, ir.Constant(ir.VectorType(mask_type, lanes), list(range(lanes, 2 * lanes)))
        )
        excess = _ordered_fadd(builder, _ordered_fadd(builder, low, high), builder.fmul(low, high))
    for i in range(TAIL_PRODUCTS):
        value = builder.extract_element(excess, ir.Constant(mask_type, i)) if i < lanes else ir.Constant(double, 0.0)
        builder.store(value, builder.gep(base, [ir.Constant(ir.IntType(64), i)]))


def _add_to_levels(builder, levels, part, groups, const):
    """``_math.add_class_group`` on vectors: ``part`` (a group's sum) into levels[0], each level into the next
    every CLASS_SUM_GROUP times it fills; ``groups`` counts the groups added so far, this one included."""
    builder.store(_ordered_fadd(builder, builder.load(levels[0]), part), levels[0])
    span = CLASS_SUM_GROUP
    for lower, upper in zip(levels[:-1], levels[1:], strict=True):
        full = builder.icmp_unsigned("==", builder.urem(groups, const(span)), const(0))
        low, high = builder.load(lower), builder.load(upper)
        builder.store(builder.select(full, _ordered_fadd(builder, high, low), high), upper)
        builder.store(builder.select(full, ir.Constant(low.type, None), low), lower)
        span *= CLASS_SUM_GROUP


def _fold_levels(builder, levels):
    """The sum of every level, each added into the next, as ``_math.add_class_group`` does at the last class."""
    total = builder.load(levels[0])
    for upper in levels[1:]:
        total = _ordered_fadd(builder, builder.load(upper), total)
    return total


#: Vectors of rows that one step of ``softmax_gradient_full_block`` takes side by
#: side. A vector's stage is one chain: its max over the classes, then its
#: exps and their sum, a division, and its gradient. With one vector a step,
#: the core's schedulers filled with that chain's waiting instructions before
#: the next step's could start; two independent chains in one step overlap.
#: Softmax stage, one block in L2, one thread, Zen 5, medians of five
#: alternated runs' ratios 2 / 1 (float32, float64): D x K 20 x 2 0.95, 0.99;
#: 20 x 3 0.99, 1.02; 20 x 5 0.88, 0.93; 100 x 10 0.92, 0.96 (478 -> 436 ns
#: in float32); 100 x 30 0.86, 0.91. Results are the same bits. Four vectors
#: took 0.85-0.98 but added a tenth to the cold compile of the BLOCKED and
#: ROWWISE bodies (3.4 -> 3.8 s); two left it level.
INTERLEAVED_ROW_VECTORS = 2


@dataclasses.dataclass
class _RowVector:
    """The state of one vector of rows in a step of ``softmax_gradient_full_block``.

    Stack slots (LLVM allocas) for the values its class loops carry, and the
    values each phase of the step leaves for the next one.
    """

    maximum: ir.Instruction
    argmax: ir.Instruction
    label_logit: ir.Instruction
    tail: ir.Instruction
    tail_totals: list[ir.Instruction]  # the float64 levels of _math.add_class_group, lowest first
    weight: ir.Instruction
    offset: ir.Value | None = None
    labels: ir.Value | None = None
    in_range: ir.Value | None = None
    w: ir.Value | None = None
    m: ir.Value | None = None
    a: ir.Value | None = None
    scale: ir.Value | None = None
    minus_tail_scale: ir.Value | None = None
    excess: ir.Value | None = None  # the accumulator of its rows' products of 1 + t


@intrinsic
def softmax_gradient_full_block(
    typingctx,
    Zt_type,
    y_type,
    sample_weight_type,
    block_start_type,
    row_tail_type,
    tail_excess_type,
    upcoming_type,
    upcoming_bytes_type,
):
    """An intrinsic: the softmax stage of a full block of logits, a few vectors of rows at a time in registers.

    ``softmax_gradient_full_block(Zt, y, sample_weight, block_start, row_tail, tail_excess, upcoming,
    upcoming_bytes) -> loss``
    does what ``loss_grad._softmax_grad_block`` does for a transposed block of
    BLOCK_ROWS rows, with the same operations: for each row r (row block_start + r of the data),
    its max logit m and first argmax a, the label's logit z_y, the exps
    e_k = exp(z_k - m), the tail t = sum_{k != a} e_k, and the gradient
    w (p - e_y) written over Zt; it returns sum_r w_r (m_r - z_{y,r}) in
    float64 and leaves t in row_tail, from which the caller adds
    w log(1 + t). A vector of rows stays in registers from its max to its
    gradient: three passes over the classes instead of about ten loops over
    the block, each pass taking INTERLEAVED_ROW_VECTORS vectors side by side
    (in row order wherever their values meet, so the sums are the same). For
    K in UNROLLED_CLASS_COUNTS the passes are unrolled and
    skip the argmax's exp, which is 1; for any other K, t goes to float64
    every ``_math.CLASS_SUM_GROUP`` classes. A label outside [0, K) only ever
    meets comparisons; its row's term of the loss is NaN, whatever the row's
    weight, for the caller to report.

    For an unweighted block, the caller may take sum_r log(1 + t_r) from
    tail_excess (float64, TAIL_PRODUCTS values) instead: the products of
    1 + t over TAIL_PRODUCTS sets of rows, less one, carried in float64
    lanes as q + t + q t (``_math.weighted_log1p_sum`` does the same in
    scalars). A set is BLOCK_ROWS / TAIL_PRODUCTS rows, on every target.

    Meanwhile it prefetches the bytes ``upcoming_bytes`` of ``upcoming``, a
    part at the start of each step (as ``logits_strip`` does per tile).
    """
    _require_contiguous(
        Zt=Zt_type,
        y=y_type,
        sample_weight=sample_weight_type,
        row_tail=row_tail_type,
        tail_excess=tail_excess_type,
        upcoming=upcoming_type,
    )
    upcoming_bytes_type = types.UniTuple(types.intp, 4)
    signature = types.float64(
        Zt_type,
        y_type,
        sample_weight_type,
        types.intp,
        row_tail_type,
        tail_excess_type,
        upcoming_type,
        upcoming_bytes_type,
    )

    def codegen(context, builder, signature, args):
        Zt = context.make_array(Zt_type)(context, builder, args[0])
        y = context.make_array(y_type)(context, builder, args[1])
        sample_weight = context.make_array(sample_weight_type)(context, builder, args[2])
        row_tail = context.make_array(row_tail_type)(context, builder, args[4])
        tail_excess = context.make_array(tail_excess_type)(context, builder, args[5])
        block_start = args[3]
        arrays = _Arrays(context, builder, Zt_type.dtype)
        upcoming = context.make_array(upcoming_type)(context, builder, args[6])
        upcoming_arrays = _Arrays(context, builder, upcoming_type.dtype)
        upcoming_bytes = [builder.extract_value(args[7], field) for field in range(4)]
        lanes, _, _ = _tile_shapes(context, arrays.itemsize)
        vector_type = ir.VectorType(arrays.scalar, lanes)
        label_type = context.get_data_type(y_type.dtype)
        lane_int = ir.IntType(arrays.itemsize * 8)
        lane_ints = ir.VectorType(lane_int, lanes)
        double = ir.DoubleType()
        doubles = ir.VectorType(double, lanes)
        n_classes = builder.extract_value(Zt.shape, 0)
        weighted = builder.icmp_signed(">", builder.extract_value(sample_weight.shape, 0), arrays.const(0))
        one = _vector_constant(vector_type, 1.0)
        zero = ir.Constant(vector_type, None)
        loss = cgutils.alloca_once_value(builder, ir.Constant(doubles, None))
        excesses = [
            cgutils.alloca_once_value(builder, ir.Constant(doubles, None)) for _ in range(_tail_accumulators(lanes))
        ]
        vector_bytes = arrays.const(lanes * arrays.itemsize)
        row_vectors = [
            _RowVector(
                maximum=cgutils.alloca_once(builder, vector_type),
                argmax=cgutils.alloca_once(builder, lane_ints),
                label_logit=cgutils.alloca_once(builder, vector_type),
                tail=cgutils.alloca_once(builder, vector_type),
                tail_totals=[cgutils.alloca_once(builder, doubles) for _ in range(CLASS_SUM_LEVELS)],
                weight=cgutils.alloca_once(builder, vector_type),
            )
            for _ in range(INTERLEAVED_ROW_VECTORS)
        ]

        def class_vector(k, offset):
            return arrays.address(Zt, vector_type, arrays.row_offset(Zt, k), offset)

        def lane_int_splat(k):
            return arrays.splat(builder.trunc(k, lane_int) if lane_int.width < k.type.width else k, lane_ints)

        def block_pass(n_classes):
            # The block's rows for this many classes: as a constant, the class loops unroll.
            label_bound = n_classes
            if label_type.width != n_classes.type.width:
                resize = builder.zext if label_type.width > n_classes.type.width else builder.trunc
                label_bound = resize(n_classes, label_type)
            n_steps = BLOCK_ROWS // (lanes * INTERLEAVED_ROW_VECTORS)
            with cgutils.for_range(builder, arrays.const(n_steps)) as step:
                _emit_prefetch_part(builder, upcoming_arrays, upcoming, upcoming_bytes, step.index, n_steps)
                for j, row_vector in enumerate(row_vectors):
                    vector_index = builder.add(
                        builder.mul(step.index, arrays.const(INTERLEAVED_ROW_VECTORS)), arrays.const(j)
                    )
                    row_vector.offset = builder.mul(vector_index, vector_bytes)
                    row_vector.excess = excesses[0]
                    for part, excess in enumerate(excesses[1:], start=1):  # LOG_GROUP vectors of rows each
                        later = builder.icmp_signed(">=", vector_index, arrays.const(part * LOG_GROUP))
                        row_vector.excess = builder.select(later, excess, row_vector.excess)
                    first_row = builder.add(block_start, builder.mul(vector_index, arrays.const(lanes)))
                    labels = arrays.load(y, ir.VectorType(label_type, lanes), arrays.row_offset(y, first_row))
                    # Labels in [0, K), compared before any truncation; a negative one is a large unsigned value.
                    row_vector.in_range = builder.icmp_unsigned(
                        "<", labels, arrays.splat(label_bound, ir.VectorType(label_type, lanes))
                    )
                    row_vector.labels = (
                        builder.trunc(labels, lane_ints) if label_type.width > lane_int.width else labels
                    )
                    with builder.if_else(weighted) as (then, otherwise):
                        with then:
                            weights = arrays.load(
                                sample_weight, vector_type, arrays.row_offset(sample_weight, first_row)
                            )
                            builder.store(weights, row_vector.weight)
                        with otherwise:
                            builder.store(one, row_vector.weight)
                    row_vector.w = builder.load(row_vector.weight)
                    # The max and the first argmax.
                    builder.store(
                        builder.load(class_vector(arrays.const(0), row_vector.offset), align=arrays.itemsize),
                        row_vector.maximum,
                    )
                    builder.store(ir.Constant(lane_ints, None), row_vector.argmax)
                with cgutils.for_range_slice(builder, arrays.const(1), n_classes, arrays.const(1)) as (k, _):
                    for row_vector in row_vectors:
                        z = builder.load(class_vector(k, row_vector.offset), align=arrays.itemsize)
                        leads = builder.fcmp_ordered(">", z, builder.load(row_vector.maximum))
                        builder.store(builder.select(leads, z, builder.load(row_vector.maximum)), row_vector.maximum)
                        builder.store(
                            builder.select(leads, lane_int_splat(k), builder.load(row_vector.argmax)), row_vector.argmax
                        )
                for row_vector in row_vectors:
                    row_vector.m = builder.load(row_vector.maximum)
                    row_vector.a = builder.load(row_vector.argmax)
                    # The label's logit, the exps and the tail.
                    builder.store(zero, row_vector.label_logit)
                    builder.store(zero, row_vector.tail)

                def exp_and_add(k, row_vector):
                    # Class k of a vector of rows: its exps over Zt, added to the tail unless k is the row's argmax.
                    k_lanes = lane_int_splat(k)
                    address = class_vector(k, row_vector.offset)
                    z = builder.load(address, align=arrays.itemsize)
                    is_label = builder.icmp_signed("==", row_vector.labels, k_lanes)
                    builder.store(
                        _ordered_fadd(builder, builder.load(row_vector.label_logit), builder.select(is_label, z, zero)),
                        row_vector.label_logit,
                    )
                    e = _vector_exp(builder, builder.fsub(z, row_vector.m), arrays.itemsize)
                    builder.store(e, address, align=arrays.itemsize)
                    is_argmax = builder.icmp_signed("==", row_vector.a, k_lanes)
                    builder.store(
                        _ordered_fadd(builder, builder.load(row_vector.tail), builder.select(is_argmax, zero, e)),
                        row_vector.tail,
                    )

                def exps_of_the_others(count, row_vector):
                    # Unrolled K: exps of the K - 1 classes other than the argmax only, in class
                    # order, picked by selects; the argmax's exp(0) = 1 is stored, not computed.
                    # The same values and the same sum as exp_and_add's (a sum's zero terms are
                    # exact), with one exp fewer a row: a third of them at K = 3, half at K = 2.
                    logits = [
                        builder.load(class_vector(arrays.const(k), row_vector.offset), align=arrays.itemsize)
                        for k in range(count)
                    ]
                    k_lanes = [lane_int_splat(arrays.const(k)) for k in range(count)]
                    label_sum = zero
                    for k in range(count):
                        label_sum = _ordered_fadd(
                            builder,
                            label_sum,
                            builder.select(builder.icmp_signed("==", row_vector.labels, k_lanes[k]), logits[k], zero),
                        )
                    builder.store(label_sum, row_vector.label_logit)
                    # The i-th other class is class i where the argmax lies above i, else class i + 1.
                    others = [
                        builder.select(builder.icmp_signed(">", row_vector.a, k_lanes[i]), logits[i], logits[i + 1])
                        for i in range(count - 1)
                    ]
                    exps = [
                        _vector_exp(builder, builder.fsub(other, row_vector.m), arrays.itemsize) for other in others
                    ]
                    t = zero
                    for e in exps:
                        t = _ordered_fadd(builder, t, e)
                    builder.store(t, row_vector.tail)
                    for k in range(count):
                        # Class k is the (k - 1)-th other class where the argmax lies below k, else the k-th.
                        below = exps[k - 1] if k > 0 else None
                        above = exps[k] if k < count - 1 else None
                        e = above if below is None else below
                        if below is not None and above is not None:
                            e = builder.select(builder.icmp_signed("<", row_vector.a, k_lanes[k]), below, above)
                        e = builder.select(builder.icmp_signed("==", row_vector.a, k_lanes[k]), one, e)
                        builder.store(e, class_vector(arrays.const(k), row_vector.offset), align=arrays.itemsize)

                if isinstance(n_classes, ir.Constant):
                    for row_vector in row_vectors:
                        exps_of_the_others(n_classes.constant, row_vector)
                else:
                    # The tail goes to float64 every CLASS_SUM_GROUP classes: summed class after
                    # class in float32, at K = 5e4 the loss was 17 eps off and dW 130 eps of
                    # max |dW|. Up to CLASS_SUM_GROUP classes, t is the same sum as before. The
                    # groups' sums go up the levels of _math.add_class_group: added in one chain,
                    # a float64 loss was 15 eps off at K = 70,000 and 168 at 1e6.
                    group = arrays.const(CLASS_SUM_GROUP)
                    for row_vector in row_vectors:
                        for level in row_vector.tail_totals:
                            builder.store(ir.Constant(doubles, None), level)
                    with cgutils.for_range_slice(builder, arrays.const(0), n_classes, group) as (first, _):
                        left = builder.sub(n_classes, first)
                        stop = builder.add(first, builder.select(builder.icmp_signed("<", left, group), left, group))
                        with cgutils.for_range_slice(builder, first, stop, arrays.const(1)) as (k, _):
                            for row_vector in row_vectors:
                                exp_and_add(k, row_vector)
                        groups = builder.add(builder.udiv(first, group), arrays.const(1))
                        for row_vector in row_vectors:
                            part = builder.load(row_vector.tail)
                            part = builder.fpext(part, doubles) if arrays.itemsize == 4 else part
                            _add_to_levels(builder, row_vector.tail_totals, part, groups, arrays.const)
                            builder.store(zero, row_vector.tail)
                    for row_vector in row_vectors:
                        total = _fold_levels(builder, row_vector.tail_totals)
                        builder.store(
                            builder.fptrunc(total, vector_type) if arrays.itemsize == 4 else total, row_vector.tail
                        )
                # Each vector's terms join the loss and the tails' product in row order, as without interleaving.
                for row_vector in row_vectors:
                    t = builder.load(row_vector.tail)
                    builder.store(t, arrays.address(row_tail, vector_type, row_vector.offset), align=arrays.itemsize)
                    t64 = builder.fpext(t, doubles) if arrays.itemsize == 4 else t
                    q = builder.load(row_vector.excess)
                    builder.store(
                        _ordered_fadd(builder, _ordered_fadd(builder, q, t64), builder.fmul(q, t64)), row_vector.excess
                    )
                    label_logit = builder.load(row_vector.label_logit)
                    margin = builder.fsub(
                        builder.fpext(row_vector.m, doubles) if arrays.itemsize == 4 else row_vector.m,
                        builder.fpext(label_logit, doubles) if arrays.itemsize == 4 else label_logit,
                    )
                    # A row whose label is out of range has a NaN loss, whatever its weight.
                    margin = builder.select(row_vector.in_range, margin, _vector_constant(doubles, math.nan))
                    w64 = builder.fpext(row_vector.w, doubles) if arrays.itemsize == 4 else row_vector.w
                    builder.store(_ordered_fadd(builder, builder.load(loss), builder.fmul(w64, margin)), loss)
                    # w (p - e_y): p_k = e_k scale, and at a leading label w (p_a - 1) = -t scale.
                    row_vector.scale = builder.fdiv(row_vector.w, _ordered_fadd(builder, one, t))
                    row_vector.minus_tail_scale = builder.fmul(builder.fsub(zero, t), row_vector.scale)
                with cgutils.for_range(builder, n_classes) as k_loop:
                    k_lanes = lane_int_splat(k_loop.index)
                    for row_vector in row_vectors:
                        address = class_vector(k_loop.index, row_vector.offset)
                        e = builder.load(address, align=arrays.itemsize)
                        is_label = builder.icmp_signed("==", row_vector.labels, k_lanes)
                        g = builder.fsub(
                            builder.fmul(e, row_vector.scale), builder.select(is_label, row_vector.w, zero)
                        )
                        label_leads = builder.and_(is_label, builder.icmp_signed("==", row_vector.a, k_lanes))
                        builder.store(
                            builder.select(label_leads, row_vector.minus_tail_scale, g), address, align=arrays.itemsize
                        )

        def dispatch(counts):
            # A pass for each count in UNROLLED_CLASS_COUNTS, the runtime count after them.
            if not counts:
                block_pass(n_classes)
                return
            with builder.if_else(builder.icmp_signed("==", n_classes, arrays.const(counts[0]))) as (then, otherwise):
                with then:
                    block_pass(arrays.const(counts[0]))
                with otherwise:
                    dispatch(counts[1:])

        dispatch(UNROLLED_CLASS_COUNTS)
        _store_tail_products(builder, [builder.load(excess) for excess in excesses], tail_excess)
        return _fixed_order_sum(builder, [builder.load(loss)])

    return signature, codegen
