"""LLVM IR emitters of attention's float loops (ops.attention_gqa): q.k scores, softmax, weighted sum of v.

All work on <8 x float> vectors with `llvm.fma`, which LLVM lowers for any x86-64 host (256-bit registers
under AVX2 and AVX-512 alike), so the order of every sum is the one written here on every host:
- Scores: lane l of a position's accumulator sums q[d] * k[d] over d = l, l + 8, ... in order (one fused
  multiply-add each), the eight lanes are added as ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)), and
  the last head_dim % 8 products follow one by one. Eight (head, position) accumulators run side by side:
  one head over eight positions (one load of q serves eight rows of k), or, where query heads share a KV
  head, two heads over four positions (one load of k serves both heads, halving the reads of the cache,
  which come from L2 at 512 bytes per position and head). A single position (the tail) runs the same
  arithmetic.
- Softmax weights: e[j] = exp(s[j] - max) eight at a time by the polynomial of `exp_lanes` (under 1 ulp
  from the exact value; 0 below -87.3, where float32 turns subnormal), their sum lane by lane over j = l,
  l + 8, ..., the lanes added as in the scores, then the last n % 8 one by one.
- Weighted sum: out[d] = fma(w[j], v[j, d], out[d]) for j = 0, 1, ... from 0.0, w[j] = p[j] * inv, the
  accumulators held in registers for 64 values of d at a time (32 per head for two heads sharing each
  load of v) instead of read and written per position.

Every head's arithmetic is the same whether it runs alone or beside another, so the grouping never
changes a result.
"""

from llvmlite import ir
from numba.core import cgutils

I32 = ir.IntType(32)
VI32 = ir.VectorType(I32, 8)
I64 = ir.IntType(64)
F32 = ir.FloatType()
LANES = 8
VF = ir.VectorType(F32, LANES)
ACCUMULATORS = 8  # (head, position) dot products, or (head, 8 values of d) weighted sums, one step holds


def _call(builder: ir.IRBuilder, name: str, args: list[ir.Value]) -> ir.Value:
    """The LLVM intrinsic `name`.v8f32 or `name`.f32, by the type of the first argument."""
    suffix = "v8f32" if args[0].type == VF else "f32"
    ftype = ir.FunctionType(args[0].type, [a.type for a in args])
    return builder.call(cgutils.get_or_insert_function(builder.module, ftype, f"{name}.{suffix}"), args)


def _fma(builder: ir.IRBuilder, a: ir.Value, b: ir.Value, c: ir.Value) -> ir.Value:
    """a * b + c rounded once."""
    return _call(builder, "llvm.fma", [a, b, c])


def _vconst(value: float) -> ir.Constant:
    return ir.Constant(VF, [value] * LANES)


def _load(builder: ir.IRBuilder, base: ir.Value, offset: ir.Value, vtype: ir.Type = VF) -> ir.Value:
    """Eight floats (or one, vtype F32) at `base` + `offset` (float pointer, unaligned)."""
    return builder.load(builder.bitcast(builder.gep(base, [offset]), vtype.as_pointer()), align=4)


def _splat(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    v = builder.insert_element(ir.Constant(VF, ir.Undefined), x, I32(0))
    return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, LANES), [0] * LANES))


def _halves(builder: ir.IRBuilder, v: ir.Value, n: int) -> ir.Value:
    """Lanes 0 .. n/2 - 1 plus lanes n/2 .. n - 1 of an n-lane vector."""
    mask = ir.VectorType(I32, n // 2)
    lo = builder.shuffle_vector(v, v, ir.Constant(mask, list(range(n // 2))))
    hi = builder.shuffle_vector(v, v, ir.Constant(mask, list(range(n // 2, n))))
    return builder.fadd(lo, hi)


def lane_sum(builder: ir.IRBuilder, v: ir.Value) -> ir.Value:
    """float sum of an <8 x float>: ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))."""
    v = _halves(builder, _halves(builder, v, 8), 4)
    return builder.fadd(builder.extract_element(v, I32(0)), builder.extract_element(v, I32(1)))


def _position_dots(builder, qptrs, kptr, stride, j0, count: int, head_dim):
    """[head][position] dot products of each q in `qptrs` with the `count` key rows j0 .. j0 + count - 1
    (rows `stride` floats apart); every key load serves all the heads."""
    nvec = builder.udiv(head_dim, I64(LANES))
    rows = [builder.gep(kptr, [builder.mul(builder.add(j0, I64(p)), stride)]) for p in range(count)]
    accs = [[cgutils.alloca_once_value(builder, ir.Constant(VF, None)) for _ in rows] for _ in qptrs]
    with cgutils.for_range(builder, nvec) as loop:
        d = builder.mul(loop.index, I64(LANES))
        keys = [_load(builder, row, d) for row in rows]
        for qptr, head in zip(qptrs, accs, strict=True):
            qv = _load(builder, qptr, d)
            for key, acc in zip(keys, head, strict=True):
                builder.store(_fma(builder, qv, key, builder.load(acc)), acc)
    sums = [
        [cgutils.alloca_once_value(builder, lane_sum(builder, builder.load(a))) for a in head]
        for head in accs
    ]
    done = builder.mul(nvec, I64(LANES))
    with cgutils.for_range(builder, builder.sub(head_dim, done)) as loop:
        d = builder.add(done, loop.index)
        for qptr, head in zip(qptrs, sums, strict=True):
            qd = builder.load(builder.gep(qptr, [d]))
            for row, total in zip(rows, head, strict=True):
                builder.store(
                    _fma(builder, qd, builder.load(builder.gep(row, [d])), builder.load(total)), total
                )
    return [[builder.load(total) for total in head] for head in sums]


def scores(builder, qptrs, kptr, stride, n_ctx, head_dim, scale, sptrs) -> list[ir.Value]:
    """sptrs[i][j] = scale * (q_i . k_j) for each head i and j < n_ctx, k_j at kptr + j * stride; returns
    each head's largest score."""
    best = [cgutils.alloca_once_value(builder, ir.Constant(F32, float("-inf"))) for _ in qptrs]

    def step(j0, count):
        dots = _position_dots(builder, qptrs, kptr, stride, j0, count, head_dim)
        for head, sptr, top in zip(dots, sptrs, best, strict=True):
            for p, dot in enumerate(head):
                value = builder.fmul(dot, scale)
                builder.store(value, builder.gep(sptr, [builder.add(j0, I64(p))]))
                old = builder.load(top)
                builder.store(builder.select(builder.fcmp_ordered(">", value, old), value, old), top)

    positions = ACCUMULATORS // len(qptrs)
    blocks = builder.udiv(n_ctx, I64(positions))
    with cgutils.for_range(builder, blocks) as loop:
        step(builder.mul(loop.index, I64(positions)), positions)
    done = builder.mul(blocks, I64(positions))
    with cgutils.for_range(builder, builder.sub(n_ctx, done)) as loop:
        step(builder.add(done, loop.index), 1)
    return [builder.load(top) for top in best]


def _weighted_columns(builder, pptrs, invs, vptr, stride, n_ctx, optrs, d0, count: int, lanes: int = LANES):
    """out_i[d0 .. d0 + lanes count) = sum over j of (p_i[j] * inv_i) * v_j[...] for each head i, j in order,
    one FMA per step; `lanes` 8 (vectors) or 1 (single values). Every load of v serves all the heads."""
    vtype = VF if lanes == LANES else F32
    accs = [
        [cgutils.alloca_once_value(builder, ir.Constant(vtype, None)) for _ in range(count)] for _ in pptrs
    ]
    with cgutils.for_range(builder, n_ctx) as loop:
        weights = []
        for pptr, inv in zip(pptrs, invs, strict=True):
            w = builder.fmul(builder.load(builder.gep(pptr, [loop.index])), inv)
            weights.append(_splat(builder, w) if lanes == LANES else w)
        row = builder.gep(vptr, [builder.add(builder.mul(loop.index, stride), d0)])
        for i in range(count):
            v = _load(builder, row, I64(lanes * i), vtype)
            for w, head in zip(weights, accs, strict=True):
                builder.store(_fma(builder, w, v, builder.load(head[i])), head[i])
    for optr, head in zip(optrs, accs, strict=True):
        for i, acc in enumerate(head):
            ptr = builder.gep(optr, [builder.add(d0, I64(lanes * i))])
            builder.store(builder.load(acc), builder.bitcast(ptr, vtype.as_pointer()), align=4)


def weighted_sum(builder, pptrs, invs, vptr, stride, n_ctx, head_dim, optrs) -> None:
    """optrs[i][d] = sum_j (pptrs[i][j] * invs[i]) * v_j[d] for each head i and d < head_dim, v_j at
    vptr + j * stride: 64 values of d at a time (32 per head for two heads), then single vectors of 8, then
    single values."""
    args = (builder, pptrs, invs, vptr, stride, n_ctx, optrs)
    vectors = ACCUMULATORS // len(pptrs)
    done = I64(0)
    for width, count, lanes in ((LANES * vectors, vectors, LANES), (LANES, 1, LANES), (1, 1, 1)):
        steps = builder.udiv(builder.sub(head_dim, done), I64(width))
        with cgutils.for_range(builder, steps) as loop:
            _weighted_columns(*args, builder.add(done, builder.mul(loop.index, I64(width))), count, lanes)
        done = builder.add(done, builder.mul(steps, I64(width)))


# exp(x) = 2^k exp(r), k = round(x / ln 2), r = x - k ln 2 in two steps (ln 2 = EXP_LN2_HI + EXP_LN2_LO with
# EXP_LN2_HI exact in 9 bits, so k * EXP_LN2_HI is exact), exp(r) = 1 + r + r^2 P(r) on |r| <= ln 2 / 2
# (Cephes' single-precision coefficients).
EXP_LOWEST = -87.33654  # ln(2^-126): below it the result is a float32 subnormal; the lanes return 0
EXP_LN2_HI = 0.693359375
EXP_LN2_LO = -2.12194440e-4
EXP_POLY = (
    1.9875691500e-4,
    1.3981999507e-3,
    8.3334519073e-3,
    4.1665795894e-2,
    1.6666665459e-1,
    5.0000001201e-1,
)


def exp_lanes(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """<8 x float> exp(x) for x <= 0 (softmax arguments): under 1 ulp; 0 below EXP_LOWEST; NaN stays NaN."""
    low = builder.fcmp_ordered("<", x, _vconst(EXP_LOWEST))
    nan = builder.fcmp_unordered("uno", x, x)
    k = _call(builder, "llvm.rint", [builder.fmul(x, _vconst(1.4426950408889634))])
    r = _fma(builder, k, _vconst(-EXP_LN2_HI), x)
    r = _fma(builder, k, _vconst(-EXP_LN2_LO), r)
    p = _vconst(EXP_POLY[0])
    for c in EXP_POLY[1:]:
        p = _fma(builder, p, r, _vconst(c))
    y = builder.fadd(_fma(builder, p, builder.fmul(r, r), r), _vconst(1.0))
    kbits = builder.shl(
        builder.fptosi(builder.select(builder.or_(low, nan), _vconst(0.0), k), VI32),
        ir.Constant(VI32, [23] * 8),
    )
    scaled = builder.bitcast(builder.add(builder.bitcast(y, VI32), kbits), VF)
    return builder.select(low, ir.Constant(VF, None), scaled)


def softmax_weights(builder, sptr, n_ctx, best) -> ir.Value:
    """sptr[j] = exp(sptr[j] - best) for j < n_ctx; returns their sum (lanes, then the tail in order)."""
    full = builder.udiv(n_ctx, I64(LANES))
    acc = cgutils.alloca_once_value(builder, ir.Constant(VF, None))
    shift = _splat(builder, best)
    with cgutils.for_range(builder, full) as loop:
        ptr = builder.bitcast(builder.gep(sptr, [builder.mul(loop.index, I64(LANES))]), VF.as_pointer())
        e = exp_lanes(builder, builder.fsub(builder.load(ptr, align=4), shift))
        builder.store(e, ptr, align=4)
        builder.store(builder.fadd(builder.load(acc), e), acc)
    total = cgutils.alloca_once_value(builder, lane_sum(builder, builder.load(acc)))
    done = builder.mul(full, I64(LANES))
    with cgutils.for_range(builder, builder.sub(n_ctx, done)) as loop:
        ptr = builder.gep(sptr, [builder.add(done, loop.index)])
        x = builder.insert_element(ir.Constant(VF, None), builder.fsub(builder.load(ptr), best), I32(0))
        e = builder.extract_element(exp_lanes(builder, x), I32(0))
        builder.store(e, ptr)
        builder.store(builder.fadd(builder.load(total), e), total)
    return builder.load(total)
