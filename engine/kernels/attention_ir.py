"""LLVM IR emitters of attention's float loops (ops.attention_gqa): q.k scores, softmax, weighted sum of v.

All work on <8 x float> vectors with `llvm.fma`, which LLVM lowers for any x86-64 host (256-bit registers
under AVX2 and AVX-512 alike), so the order of every sum is the one written here on every host:
- Scores: lane l of a position's accumulator sums q[d] * k[d] over d = l, l + 8, ... in order (one fused
  multiply-add each), the eight lanes are added as ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)), and
  the last head_dim % 8 products follow one by one. Eight positions run side by side so that one load of q
  serves eight rows of k and eight independent chains keep the FMA units busy; a single position (the
  tail) runs the same arithmetic.
- Softmax weights: e[j] = exp(s[j] - max) eight at a time by the polynomial of `exp_lanes` (under 1 ulp
  from the exact value; 0 below -87.3, where float32 turns subnormal), their sum lane by lane over j = l,
  l + 8, ..., the lanes added as in the scores, then the last n % 8 one by one.
- Weighted sum: out[d] = fma(w[j], v[j, d], out[d]) for j = 0, 1, ... from 0.0, w[j] = p[j] * inv, the
  accumulators held in registers for 64 values of d at a time instead of read and written per position.
"""

from llvmlite import ir
from numba.core import cgutils

I32 = ir.IntType(32)
VI32 = ir.VectorType(I32, 8)
I64 = ir.IntType(64)
F32 = ir.FloatType()
LANES = 8
VF = ir.VectorType(F32, LANES)
POSITIONS = 8  # positions whose scores one step computes
OUT_VECTORS = 8  # accumulators of the weighted sum held in registers at once (64 values of d)


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


def _position_dots(builder, qptr, kptr, stride, j0, count: int, head_dim):
    """Dot products of q with the `count` key rows j0 .. j0 + count - 1 (rows `stride` floats apart)."""
    nvec = builder.udiv(head_dim, I64(LANES))
    rows = [builder.gep(kptr, [builder.mul(builder.add(j0, I64(p)), stride)]) for p in range(count)]
    accs = [cgutils.alloca_once_value(builder, ir.Constant(VF, None)) for _ in range(count)]
    with cgutils.for_range(builder, nvec) as loop:
        d = builder.mul(loop.index, I64(LANES))
        qv = _load(builder, qptr, d)
        for row, acc in zip(rows, accs, strict=True):
            builder.store(_fma(builder, qv, _load(builder, row, d), builder.load(acc)), acc)
    sums = [cgutils.alloca_once_value(builder, lane_sum(builder, builder.load(acc))) for acc in accs]
    done = builder.mul(nvec, I64(LANES))
    with cgutils.for_range(builder, builder.sub(head_dim, done)) as loop:
        d = builder.add(done, loop.index)
        qd = builder.load(builder.gep(qptr, [d]))
        for row, total in zip(rows, sums, strict=True):
            builder.store(_fma(builder, qd, builder.load(builder.gep(row, [d])), builder.load(total)), total)
    return [builder.load(total) for total in sums]


def scores(builder, qptr, kptr, stride, n_ctx, head_dim, scale, sptr) -> ir.Value:
    """sptr[j] = scale * (q . k_j) for j < n_ctx, k_j at kptr + j * stride; returns the largest score."""
    best = cgutils.alloca_once_value(builder, ir.Constant(F32, float("-inf")))

    def step(j0, count):
        for p, dot in enumerate(_position_dots(builder, qptr, kptr, stride, j0, count, head_dim)):
            value = builder.fmul(dot, scale)
            builder.store(value, builder.gep(sptr, [builder.add(j0, I64(p))]))
            old = builder.load(best)
            builder.store(builder.select(builder.fcmp_ordered(">", value, old), value, old), best)

    blocks = builder.udiv(n_ctx, I64(POSITIONS))
    with cgutils.for_range(builder, blocks) as loop:
        step(builder.mul(loop.index, I64(POSITIONS)), POSITIONS)
    done = builder.mul(blocks, I64(POSITIONS))
    with cgutils.for_range(builder, builder.sub(n_ctx, done)) as loop:
        step(builder.add(done, loop.index), 1)
    return builder.load(best)


def _weighted_columns(builder, pptr, inv, vptr, stride, n_ctx, optr, d0, count: int, lanes: int = LANES):
    """out[d0 .. d0 + lanes count) = sum over j of (p[j] * inv) * v_j[...], j in order, one FMA per step;
    `lanes` 8 (vectors) or 1 (single values)."""
    vtype = VF if lanes == LANES else F32
    accs = [cgutils.alloca_once_value(builder, ir.Constant(vtype, None)) for _ in range(count)]
    with cgutils.for_range(builder, n_ctx) as loop:
        w = builder.fmul(builder.load(builder.gep(pptr, [loop.index])), inv)
        w = _splat(builder, w) if lanes == LANES else w
        row = builder.gep(vptr, [builder.add(builder.mul(loop.index, stride), d0)])
        for i, acc in enumerate(accs):
            v = _load(builder, row, I64(lanes * i), vtype)
            builder.store(_fma(builder, w, v, builder.load(acc)), acc)
    for i, acc in enumerate(accs):
        ptr = builder.gep(optr, [builder.add(d0, I64(lanes * i))])
        builder.store(builder.load(acc), builder.bitcast(ptr, vtype.as_pointer()), align=4)


def weighted_sum(builder, pptr, inv, vptr, stride, n_ctx, head_dim, optr) -> None:
    """optr[d] = sum_j (pptr[j] * inv) * v_j[d] for d < head_dim, v_j at vptr + j * stride: 64 values of d
    at a time, then single vectors of 8, then single values."""
    args = (builder, pptr, inv, vptr, stride, n_ctx, optr)
    done = I64(0)
    for width, count, lanes in ((LANES * OUT_VECTORS, OUT_VECTORS, LANES), (LANES, 1, LANES), (1, 1, 1)):
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
