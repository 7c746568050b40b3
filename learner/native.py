"""Helpers for the numba-compiled loops (learner/mf_native.py, learner/history.py, learner/tables.py,
learner/adam.py, learner/transfer_native.py)."""

from __future__ import annotations

import numba
import numpy as np
import torch
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic


@intrinsic
def prefetch(typingctx, array, index):
    """Hint the CPU to fetch the cache line holding array[index] (1-D), for writing: random
    rows cost a memory round trip each, and loops that ask for them ahead overlap those."""

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, sig.args[0], ary, [args[1]], wraparound=False)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0"
        )
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(1), i32(3), i32(1)])  # write, keep, data
        return context.get_dummy_value()

    return types.void(array, index), codegen


@intrinsic
def fma32(typingctx, a, b, c):
    """a * b + c in float32, rounded once: torch's vectorised CPU kernels fuse these steps,
    and a loop that must give their bits has to as well."""

    def codegen(context, builder, sig, args):
        f32 = ir.FloatType()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f32, [f32, f32, f32]), "llvm.fma.f32")
        return builder.call(fn, args)

    return types.float32(types.float32, types.float32, types.float32), codegen


@numba.njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract", "nsz"})
def dot(a: np.ndarray, b: np.ndarray) -> np.float32:
    # reassociation lets the sum vectorise; it runs in one fixed order every time
    s = np.float32(0.0)
    for k in range(a.shape[0]):
        s += a[k] * b[k]
    return s


@intrinsic
def pow2(typingctx, n):
    """2**n as float32 for an int32 n in [-126, 127], built from its exponent bits: a plain
    bit cast, so loops that scale by it still vectorise."""

    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        bits = builder.shl(builder.add(args[0], i32(127)), i32(23))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(types.int32), codegen


def set_threads(n: int) -> int:
    """Threads for torch's ops and the parallel compiled loops together; returns torch's
    previous count. numba cannot go above the count it started with (the machine's cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    return before
