"""Calls from a parallel driver to a block body by the body's address, so that its code compiles once.

Numba compiles a call from one ``@njit`` function to another by linking the
callee's LLVM module into the caller's and optimising the result again. A
``prange`` loop compiles as a chain of four such modules (the parfor's
gufunc, two wrappers around it, the driver), and each one links and
re-optimises everything below it. A driver that calls a block body directly
therefore compiled the body's vector code five times over: the ROWWISE loss
driver took 7.8 s to compile on top of its body's 5.4 s, on a cold cache
(``NUMBA_LLVM_PASS_TIMINGS``; the body is that large because its register
tiles are unrolled LLVM vector code).

Here the driver takes the body's address as an argument and calls it with
Numba's own calling convention (``call_float64``, ``call_int64``,
``call_none``; the intrinsics emit what Numba emits for a direct call,
status and exceptions included, but through a pointer). The driver then
holds no copy of the body: it compiles in about a second, one driver serves
every body with the same arguments, and the parallel chunks run the very
machine code that a serial call runs. The address is a run-time value, so
the driver's disk cache holds none: ``address_of`` looks it up in each
process, compiling the body or loading it from its own cache first.

A direct call compiles the callee for the types at the call site; a call
by address cannot, and the types Numba gives a ``prange`` body are not
always those of the driver's own typing (the loop index is uint64 there, so
``c if c > 0 else first`` is a float64). So ``address_of`` hands out the
address with a token of the argument types it was compiled for, and each
call compares it with the token of the types at the call site: a mismatch
raises TypeError instead of running code on arguments of another layout.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np
from llvmlite import ir
from numba import typeof, types
from numba.core import cgutils
from numba.core.dispatcher import Dispatcher
from numba.extending import intrinsic

from fastsoftmax.kernels._signature import named


def signature_token(arg_types: tuple[types.Type, ...]) -> int:
    """A 64-bit token of Numba argument types, the same in every process (a hash of their names)."""
    names = ", ".join(str(arg_type) for arg_type in arg_types)
    return int.from_bytes(hashlib.blake2b(names.encode(), digest_size=8).digest(), "little", signed=True)


def _compiled_call(return_type: types.Type) -> Callable:
    """An intrinsic ``call(body, args)`` that calls the function ``body`` = ``address_of(...)`` with the tuple ``args``.

    The function must be a Numba-compiled one returning ``return_type``,
    compiled for ``args``' types: where the token in ``body`` is not that of
    ``args``' types, the call raises TypeError and runs nothing. An
    exception the function raises propagates to the caller as from a direct
    call.
    """

    @intrinsic
    @named(f"call_{return_type}")
    def call(typingctx, body, args):
        if not (isinstance(body, types.UniTuple) and body.count == 2 and isinstance(body.dtype, types.Integer)):
            return None
        if not isinstance(args, types.BaseTuple):
            return None

        def codegen(context, builder, signature, llvm_args):
            packed_body, packed = llvm_args
            address_value, token_value = builder.extract_value(packed_body, 0), builder.extract_value(packed_body, 1)
            arg_types = list(args.types)
            expected = context.get_constant(body.dtype, signature_token(args.types))
            with cgutils.if_unlikely(builder, builder.icmp_signed("!=", token_value, expected)):
                message = (
                    f"call_{return_type}: the body was compiled for other argument types than this call's, "
                    f"{args}; take it from address_of with arguments of these types"
                )
                context.call_conv.return_user_exc(builder, TypeError, (message,))
            values = [builder.extract_value(packed, i) for i in range(len(arg_types))]
            function_type = context.call_conv.get_function_type(return_type, arg_types)
            callee = builder.inttoptr(address_value, ir.PointerType(function_type))
            status, result = context.call_conv.call_function(builder, callee, return_type, arg_types, values)
            with cgutils.if_unlikely(builder, status.is_error):
                context.call_conv.return_status_propagate(builder, status)
            return result if return_type != types.none else context.get_dummy_value()

        return return_type(body, args), codegen

    return call


call_float64 = _compiled_call(types.float64)
call_int64 = _compiled_call(types.int64)
call_none = _compiled_call(types.none)

#: The return type that each intrinsic expects of the function it calls.
RETURN_TYPES = {call_float64: types.float64, call_int64: types.int64, call_none: types.none}


def _type_key(values: tuple) -> tuple:
    """What decides Numba's types of ``values``, cheaply: per array its class, dtype (with its byte order), rank
    and flags (contiguity, alignment, writeability); per tuple its members' keys; else the Python type.

    (Numba's own ``compute_fingerprint`` is five times faster, but gives an
    unaligned or byte-swapped array the fingerprint of an aligned, native one.)
    """
    return tuple(
        [
            (value.dtype, value.ndim, value.flags.num) if type(value) is np.ndarray else _other_key(value)
            for value in values
        ]
    )


def _other_key(value: Any) -> Any:
    if isinstance(value, tuple):
        return _type_key(value)
    if isinstance(value, np.ndarray):  # a subclass
        return (type(value), value.dtype, value.ndim, value.flags.num)
    return type(value)


#: (body, intrinsic, the arguments' type keys) -> (the body's address, the token of the types it
#: was compiled for), and its compile result, held so that the code lives while the address is handed out.
_BODIES: dict[tuple, tuple[tuple[int, int], Any]] = {}


def address_of(body: Dispatcher, args: tuple, call: Callable) -> tuple[int, int]:
    """``body`` compiled for the types of ``args``, as (its address, the token of those types), for ``call``.

    ``args`` are the arguments of one call of ``body``, as the driver will
    pass them (per-chunk values may differ, not their types). The first
    lookup of a signature compiles ``body`` or loads it from the disk cache
    (seconds, or milliseconds); later ones take a dictionary lookup (about
    2 microseconds for nine arguments, where ``numba.typeof`` takes 50).
    Raises TypeError where ``body`` returns another type than ``call``
    expects, since the call would then read a wrong value.
    """
    key = (body, call, *_type_key(args))
    found = _BODIES.get(key)
    if found is None:
        signature = tuple(typeof(arg) for arg in args)
        body.compile(signature)
        compiled = body.overloads[signature]
        if compiled.signature.return_type != RETURN_TYPES[call]:
            raise TypeError(
                f"{body.py_func.__qualname__} returns {compiled.signature.return_type}, "
                f"not the {RETURN_TYPES[call]} that {call.__name__} reads"
            )
        address = compiled.library.get_pointer_to_function(compiled.fndesc.llvm_func_name)
        found = (address, signature_token(compiled.signature.args)), compiled
        _BODIES[key] = found
    return found[0]
