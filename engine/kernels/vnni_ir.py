"""LLVM IR emitters of the AVX-512 VNNI kernels: pure functions appending instructions to an llvmlite builder.

They know nothing of numba's typing: `vnni.py` wraps them in @intrinsic functions and calls those from its
njit kernels. Arrays arrive as numba array structs (`wary`: uint8[rows, nb, 32] packed ternary codes) or raw
byte pointers; every emitter returns IR values (exact int32 sums), never stores results.
"""

from llvmlite import ir
from numba.core import cgutils

# Tiles ahead whose weight bytes a tile prefetches while it runs (spread over its loop: 64 bytes per row per
# step). Weight rows are read once per token from DRAM through 4 KB pages, where the hardware prefetcher stops
# at every page boundary; software prefetch took a cold single-thread GEMV from 4.5 to 7.7 GB/s here.
PREFETCH = 4


def pick_lanes(builder, a, b, idx):
    return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32), len(idx)), idx))


def emit_prefetch(builder, base, row_bytes, step, nrows):
    """IR: prefetch the `nrows` cache lines of the tile PREFETCH tiles ahead that loop step `step` covers."""
    i64 = ir.IntType(64)
    i32 = ir.IntType(32)
    pf = cgutils.get_or_insert_function(
        builder.module,
        ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), i32, i32, i32]),
        "llvm.prefetch.p0i8",
    )
    ahead = builder.mul(row_bytes, i64(PREFETCH * nrows))
    ptr = builder.gep(base, [builder.add(ahead, builder.mul(step, i64(64 * nrows)))])
    for j in range(nrows):
        builder.call(pf, [builder.gep(ptr, [i64(64 * j)]), i32(0), i32(3), i32(1)])


# ---------------------------------------------------------------- 256-bit row sums
def emit_row_dots(context, builder, wary, row, qptrs, accs_per_token, blocks=None, qk256=False):
    """IR: int32 sums over one weight row of code * q for each activation base pointer in `qptrs`.

    `blocks` = (first, count) IR values limits the sum to those 128-value blocks (default: the whole row).
    `qk256` maps each code c to c + (c >> 1) (0, 1, 3, 4: the QK256 value + 2) before the multiply.

    Each token keeps `accs_per_token` independent <8 x i32> accumulators (bit plane g feeds accumulator
    g % accs_per_token), so consecutive vpdpbusd do not wait on each other; each 32-byte weight load and
    its unpacking serve every token.
    """
    i8x32 = ir.VectorType(ir.IntType(8), 32)
    i32x8 = ir.VectorType(ir.IntType(32), 8)
    i64 = ir.IntType(64)
    dpbusd = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(i32x8, [i32x8, i32x8, i32x8]), "llvm.x86.avx512.vpdpbusd.256"
    )
    nb = builder.extract_value(wary.shape, 1)
    wrow = builder.gep(wary.data, [builder.mul(row, builder.mul(nb, i64(32)))])
    zero = ir.Constant(i32x8, None)
    accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(accs_per_token)] for _ in qptrs]
    three = ir.Constant(i8x32, [3] * 32)
    one = ir.Constant(i8x32, [1] * 32)
    first, count = blocks if blocks is not None else (i64(0), nb)
    with cgutils.for_range(builder, count) as loop:
        k = builder.add(first, loop.index)
        wptr = builder.bitcast(builder.gep(wrow, [builder.mul(k, i64(32))]), i8x32.as_pointer())
        wbytes = builder.load(wptr, align=1)
        for g in range(4):
            codes = builder.and_(builder.lshr(wbytes, ir.Constant(i8x32, [6 - 2 * g] * 32)), three)
            if qk256:
                codes = builder.add(codes, builder.lshr(codes, one))
            codes = builder.bitcast(codes, i32x8)
            qoff = builder.add(builder.mul(k, i64(128)), i64(32 * g))
            for base, tok_accs in zip(qptrs, accs, strict=True):
                qv = builder.load(builder.bitcast(builder.gep(base, [qoff]), i8x32.as_pointer()), align=1)
                slot = tok_accs[g % accs_per_token]
                acc = builder.call(dpbusd, [builder.load(slot), codes, builder.bitcast(qv, i32x8)])
                builder.store(acc, slot)
    results = []
    for tok_accs in accs:
        total = builder.load(tok_accs[0])
        for slot in tok_accs[1:]:
            total = builder.add(total, builder.load(slot))
        result = builder.extract_element(total, ir.IntType(32)(0))
        for lane in range(1, 8):
            result = builder.add(result, builder.extract_element(total, ir.IntType(32)(lane)))
        results.append(result)
    return results


# ---------------------------------------------------------------- 512-bit row sums (GEMV, logits)
def emit_rows_dot512(builder, wary, rows, qptr, prefetch=False):
    """IR: int32 sums of code * q for each weight row index in `rows` against one token's activations.

    Two 128-value blocks (64 weight bytes) per step on `vpdpbusd.512`. A bit plane is isolated with one AND
    (mask 0xC0, 0x30, 0x0C, 0x03) and not shifted: plane g's products are exactly 4^(3-g) times the true ones,
    so its accumulator is shifted right (exact: every lane is a multiple) before the planes are added. Each
    activation load serves every row in `rows`. An odd last block runs on the 256-bit instruction.
    """
    i8x32 = ir.VectorType(ir.IntType(8), 32)
    i8x64 = ir.VectorType(ir.IntType(8), 64)
    i32x8 = ir.VectorType(ir.IntType(32), 8)
    i32x16 = ir.VectorType(ir.IntType(32), 16)
    i64 = ir.IntType(64)
    i32 = ir.IntType(32)
    dp512 = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(i32x16, [i32x16, i32x16, i32x16]), "llvm.x86.avx512.vpdpbusd.512"
    )
    dp256 = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(i32x8, [i32x8, i32x8, i32x8]), "llvm.x86.avx512.vpdpbusd.256"
    )
    nb = builder.extract_value(wary.shape, 1)
    row_bytes = builder.mul(nb, i64(32))
    wrows = [builder.gep(wary.data, [builder.mul(r, row_bytes)]) for r in rows]
    masks = [0xC0, 0x30, 0x0C, 0x03]
    zero16 = ir.Constant(i32x16, None)
    accs = [[cgutils.alloca_once_value(builder, zero16) for _ in range(4)] for _ in rows]
    concat = ir.Constant(ir.VectorType(i32, 64), list(range(64)))

    def qload(off):
        return builder.load(builder.bitcast(builder.gep(qptr, [off]), i8x32.as_pointer()), align=1)

    pairs = builder.udiv(nb, i64(2))
    with cgutils.for_range(builder, pairs) as loop:
        k = builder.mul(loop.index, i64(2))
        if prefetch:
            emit_prefetch(builder, wrows[0], row_bytes, loop.index, len(rows))
        qv = []
        for g in range(4):
            lo = qload(builder.add(builder.mul(k, i64(128)), i64(32 * g)))
            hi = qload(builder.add(builder.mul(k, i64(128)), i64(128 + 32 * g)))
            qv.append(builder.bitcast(builder.shuffle_vector(lo, hi, concat), i32x16))
        for wrow, raccs in zip(wrows, accs, strict=True):
            wptr = builder.bitcast(builder.gep(wrow, [builder.mul(k, i64(32))]), i8x64.as_pointer())
            wbytes = builder.load(wptr, align=1)
            for g in range(4):
                codes = builder.bitcast(builder.and_(wbytes, ir.Constant(i8x64, [masks[g]] * 64)), i32x16)
                acc = builder.call(dp512, [builder.load(raccs[g]), codes, qv[g]])
                builder.store(acc, raccs[g])
    # the odd last block
    tails = [cgutils.alloca_once_value(builder, ir.Constant(i32x8, None)) for _ in range(4 * len(rows))]
    with builder.if_then(builder.icmp_unsigned("!=", builder.urem(nb, i64(2)), i64(0))):
        k = builder.sub(nb, i64(1))
        for ri, wrow in enumerate(wrows):
            wptr = builder.bitcast(builder.gep(wrow, [builder.mul(k, i64(32))]), i8x32.as_pointer())
            wbytes = builder.load(wptr, align=1)
            for g in range(4):
                qv = builder.bitcast(qload(builder.add(builder.mul(k, i64(128)), i64(32 * g))), i32x8)
                codes = builder.bitcast(builder.and_(wbytes, ir.Constant(i8x32, [masks[g]] * 32)), i32x8)
                builder.store(builder.call(dp256, [ir.Constant(i32x8, None), codes, qv]), tails[4 * ri + g])
    results = []
    for ri, raccs in enumerate(accs):
        total = None
        for g in range(4):
            shift = 6 - 2 * g
            v = builder.load(raccs[g])
            lo = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(i32, 8), list(range(8))))
            hi = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(i32, 8), list(range(8, 16))))
            v8 = builder.add(builder.add(lo, hi), builder.load(tails[4 * ri + g]))
            if shift:
                v8 = builder.ashr(v8, ir.Constant(i32x8, [shift] * 8))
            total = v8 if total is None else builder.add(total, v8)
        result = builder.extract_element(total, i32(0))
        for lane in range(1, 8):
            result = builder.add(result, builder.extract_element(total, i32(lane)))
        results.append(result)
    return results


def emit_sum4(builder, v):
    """IR: <4 x i32> of the lane sums of four <16 x i32> vectors (a shuffle tree; integer adds are exact)."""
    halves = [
        builder.add(
            pick_lanes(builder, a, b, [*range(8), *range(16, 24)]),
            pick_lanes(builder, a, b, [*range(8, 16), *range(24, 32)]),
        )
        for a, b in ((v[0], v[1]), (v[2], v[3]))
    ]
    quarter_lo = [j + o for o in (0, 8, 16, 24) for j in range(4)]
    c = builder.add(
        pick_lanes(builder, halves[0], halves[1], quarter_lo),
        pick_lanes(builder, halves[0], halves[1], [j + 4 for j in quarter_lo]),
    )
    e = builder.add(
        pick_lanes(builder, c, c, [j + o for o in (0, 4, 8, 12) for j in range(2)]),
        pick_lanes(builder, c, c, [j + o for o in (2, 6, 10, 14) for j in range(2)]),
    )
    return builder.add(pick_lanes(builder, e, e, [0, 2, 4, 6]), pick_lanes(builder, e, e, [1, 3, 5, 7]))


# ---------------------------------------------------------------- 512-bit row pairs (GEMM)
def pair_rows(builder, wary, row):
    """IR: byte pointers to rows `row` and `row + 1` of w uint8[rows, nb, 32]."""
    row_bytes = builder.mul(builder.extract_value(wary.shape, 1), ir.IntType(64)(32))
    r0 = builder.gep(wary.data, [builder.mul(row, row_bytes)])
    return r0, builder.gep(r0, [row_bytes])


def emit_pair_block(builder, r0, r1, k, qptrs, accs):
    """IR: block k of the two rows at r0 and r1 against each token's activations in `qptrs`, added to the
    <16 x i32> values `accs` (one per token); returns the new values.

    Block k of both rows fills one 512-bit register (row r0 low half, row r1 high half); a bit plane is
    unpacked once (shift + AND) and serves every token, whose 32 activation bytes of that plane are
    broadcast to both halves by the load itself.
    """
    i8x32 = ir.VectorType(ir.IntType(8), 32)
    i8x64 = ir.VectorType(ir.IntType(8), 64)
    i32x16 = ir.VectorType(ir.IntType(32), 16)
    i64 = ir.IntType(64)
    i32 = ir.IntType(32)
    dp512 = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(i32x16, [i32x16, i32x16, i32x16]), "llvm.x86.avx512.vpdpbusd.512"
    )
    concat = ir.Constant(ir.VectorType(i32, 64), list(range(64)))
    twice = ir.Constant(ir.VectorType(i32, 64), list(range(32)) * 2)
    three = ir.Constant(i8x64, [3] * 64)

    def load32(base, off):
        return builder.load(builder.bitcast(builder.gep(base, [off]), i8x32.as_pointer()), align=1)

    accs = list(accs)
    woff = builder.mul(k, i64(32))
    wbytes = builder.shuffle_vector(load32(r0, woff), load32(r1, woff), concat)
    for g in range(4):
        codes = builder.and_(builder.lshr(wbytes, ir.Constant(i8x64, [6 - 2 * g] * 64)), three)
        codes = builder.bitcast(codes, i32x16)
        qoff = builder.add(builder.mul(k, i64(128)), i64(32 * g))
        for t, base in enumerate(qptrs):
            part = load32(base, qoff)
            qv = builder.bitcast(builder.shuffle_vector(part, part, twice), i32x16)
            accs[t] = builder.call(dp512, [accs[t], codes, qv])
    return accs


def emit_pair_dots(builder, wary, row, qptrs):
    """IR: int32 sums of rows `row` and `row + 1` against each token's activations in `qptrs`.

    `emit_pair_block` over every block, one <16 x i32> accumulator per token; returns
    [row r sums per token] + [row r+1 sums per token].
    """
    i32x16 = ir.VectorType(ir.IntType(32), 16)
    i32 = ir.IntType(32)
    r0, r1 = pair_rows(builder, wary, row)
    slots = [cgutils.alloca_once_value(builder, ir.Constant(i32x16, None)) for _ in qptrs]
    with cgutils.for_range(builder, builder.extract_value(wary.shape, 1)) as loop:
        accs = emit_pair_block(builder, r0, r1, loop.index, qptrs, [builder.load(x) for x in slots])
        for slot, acc in zip(slots, accs, strict=True):
            builder.store(acc, slot)
    low, high = [], []
    for slot in slots:
        v = builder.load(slot)
        lanes = [builder.extract_element(v, i32(j)) for j in range(16)]
        a, b = lanes[0], lanes[8]
        for j in range(1, 8):
            a = builder.add(a, lanes[j])
            b = builder.add(b, lanes[8 + j])
        low.append(a)
        high.append(b)
    return low + high


def emit_pair_reduce(builder, accs):
    """IR: lane sums of per-token <16 x i32> accumulators (lanes 0-7 row r, 8-15 row r + 1).

    Eight tokens: one <16 x i32> with lane 8b + 4h + i the sum of token 4b + i, row r + h (a shuffle tree
    shared by all tokens). One token: a <2 x i32> (row r, row r + 1).
    """
    if len(accs) == 1:
        v = accs[0]
        v = builder.add(
            pick_lanes(builder, v, v, [0, 1, 2, 3, 8, 9, 10, 11]),
            pick_lanes(builder, v, v, [4, 5, 6, 7, 12, 13, 14, 15]),
        )
        v = builder.add(pick_lanes(builder, v, v, [0, 1, 4, 5]), pick_lanes(builder, v, v, [2, 3, 6, 7]))
        return builder.add(pick_lanes(builder, v, v, [0, 2]), pick_lanes(builder, v, v, [1, 3]))
    # level 1, tokens (a, b): lanes [a r (4), b r (4), a r1 (4), b r1 (4)], partial sums of 2 lanes each
    lo = [*range(4), *range(16, 20), *range(8, 12), *range(24, 28)]
    u = [
        builder.add(pick_lanes(builder, a, b, lo), pick_lanes(builder, a, b, [j + 4 for j in lo]))
        for a, b in zip(accs[0::2], accs[1::2], strict=True)
    ]
    # level 2, pairs (0 1, 2 3): lanes [t0 r, t1 r, t2 r, t3 r, t0 r1, .. t3 r1] x 2 lanes each
    lo = [0, 1, 4, 5, 16, 17, 20, 21, 8, 9, 12, 13, 24, 25, 28, 29]
    w = [
        builder.add(pick_lanes(builder, a, b, lo), pick_lanes(builder, a, b, [j + 2 for j in lo]))
        for a, b in zip(u[0::2], u[1::2], strict=True)
    ]
    # level 3: one lane per (token, row)
    even = [*range(0, 16, 2), *range(16, 32, 2)]
    return builder.add(
        pick_lanes(builder, w[0], w[1], even), pick_lanes(builder, w[0], w[1], [j + 1 for j in even])
    )
