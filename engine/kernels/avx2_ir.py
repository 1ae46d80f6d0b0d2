"""LLVM IR emitters of the AVX2 kernels (avx2.py): exact integer dot products on 256-bit registers.

Two instructions carry the arithmetic. `vpmaddubsw` multiplies unsigned by signed bytes and adds adjacent
products into int16 lanes (saturating), `vpmaddwd` against ones adds adjacent int16 lanes into int32 (exact).
- Ternary rows: a 32-byte block holds 128 2-bit codes (I2_S order: value 32 g + b in byte b at shift
  6 - 2 g), each bit plane unsigned against the 32 signed activations of plane g. One shift serves the four
  planes (`ternary_planes`): planes 1 and 3 are codes, planes 0 and 2 stay 4x scaled in a second int16 sum
  that is divided exactly at the end. The GEMV adds eight blocks in int16 without saturation before one
  vpmaddwd widens them (GEMV_GROUP: the 4x sum reaches -32768 .. 32512), block by block for all rows of a
  tile so that a block's activations are loaded once and the rows' int16 sums stay in registers; the
  TQ2_0 / TQ1_0 kernels add the two blocks of a 256-value scale block. QK256 codes (0, 1, 3, 4 after
  mapping) take the plain shift-and-mask planes (`qk256_codes`).
- GEMM (several tokens): a block's codes are unpacked once at 1x (three shifts, four masks) for all the
  tokens of a step, one int16 sum per token (`ternary_codes`, `block_sums`, GEMM_GROUP says how many
  blocks fit), in tiles of rows whose column chunks keep the activations in L1 (`tile_tokens`,
  `tile_blk_tokens`).
- int8 x int8 (logits): `vpsignb` moves the activation's sign onto the embedding byte, so vpmaddubsw takes
  |q| (unsigned, <= 128) times e * sign(q) (|e| <= 127): a pair is at most 2 * 128 * 127 < 2^15.
The integer sums are exact, so any order gives the portable kernels' values; the float math that follows
runs in the portable order in the callers.

Weight traffic: a step reads one or more 64-byte cache lines of each row of a tile; `emit_prefetch`
requests the lines `distance` bytes further along the tile's contiguous bytes (a runtime value measured
per host).
"""

from contextlib import contextmanager

from llvmlite import ir
from numba.core import cgutils

I8 = ir.IntType(8)
I16 = ir.IntType(16)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
V8 = ir.VectorType(I8, 32)  # one ymm of bytes
V16 = ir.VectorType(I16, 16)
V32 = ir.VectorType(I32, 8)
LINE = 64  # bytes of a cache line: what one step reads of each row


def _fn(builder: ir.IRBuilder, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, args), name)


def maddubs(builder: ir.IRBuilder, unsigned: ir.Value, signed: ir.Value) -> ir.Value:
    """<16 x i16>: u[2i] * s[2i] + u[2i+1] * s[2i+1] (vpmaddubsw; callers keep each pair below 2^15)."""
    return builder.call(_fn(builder, "llvm.x86.avx2.pmadd.ub.sw", V16, [V8, V8]), [unsigned, signed])


def widen(builder: ir.IRBuilder, v16: ir.Value) -> ir.Value:
    """<8 x i32>: sums of adjacent int16 lanes (vpmaddwd with ones, exact)."""
    fn = _fn(builder, "llvm.x86.avx2.pmadd.wd", V32, [V16, V16])
    return builder.call(fn, [v16, ir.Constant(V16, [1] * 16)])


def sign_bytes(builder: ir.IRBuilder, value: ir.Value, sign: ir.Value) -> ir.Value:
    """value * sign(sign) per byte (vpsignb: negated where sign < 0, zero where sign == 0)."""
    return builder.call(_fn(builder, "llvm.x86.avx2.psign.b", V8, [V8, V8]), [value, sign])


def load32(builder: ir.IRBuilder, base: ir.Value, offset: ir.Value) -> ir.Value:
    """32 bytes at byte pointer `base` + `offset` (unaligned)."""
    ptr = builder.bitcast(builder.gep(base, [offset]), V8.as_pointer())
    return builder.load(ptr, align=1)


def emit_prefetch(builder, base, distance, start, count: int):
    """Prefetch `count` lines from `distance` bytes past byte `start` of the tile at `base`.

    A tile's rows are contiguous; a loop that has read `start` of its bytes (all rows together) when it
    requests the next `count` lines asks for every line of the tile once, `distance` bytes ahead of where
    it is. Distance 0 prefetches nothing.
    """
    pf = _fn(builder, "llvm.prefetch.p0i8", ir.VoidType(), [I8.as_pointer(), I32, I32, I32])
    with builder.if_then(builder.icmp_unsigned("!=", distance, I64(0)), likely=True):
        ptr = builder.gep(base, [builder.add(distance, start)])
        for j in range(count):
            builder.call(pf, [builder.gep(ptr, [I64(LINE * j)]), I32(0), I32(3), I32(1)])


def qk256_codes(builder: ir.IRBuilder, wbytes: ir.Value, g: int) -> ir.Value:
    """Bit plane g of a 32-byte QK256 block as c + (c >> 1) (the value + 2: 0, 1, 3, 4), unsigned."""
    codes = builder.and_(builder.lshr(wbytes, ir.Constant(V8, [6 - 2 * g] * 32)), ir.Constant(V8, [3] * 32))
    return builder.add(codes, builder.lshr(codes, ir.Constant(V8, [1] * 32)))


def ternary_planes(builder: ir.IRBuilder, wbytes: ir.Value) -> list[ir.Value]:
    """The four bit planes of a ternary block with one shift: planes 0 and 2 stay 4x scaled.

    (w >> 4) & 0x0C = 4 c0, (w >> 4) & 3 = c1, w & 0x0C = 4 c2, w & 3 = c3.
    """
    high = builder.lshr(wbytes, ir.Constant(V8, [4] * 32))
    four, three = ir.Constant(V8, [0x0C] * 32), ir.Constant(V8, [3] * 32)
    return [
        builder.and_(high, four),
        builder.and_(high, three),
        builder.and_(wbytes, four),
        builder.and_(wbytes, three),
    ]


def block_q(builder: ir.IRBuilder, qptr: ir.Value, k: ir.Value) -> list[ir.Value]:
    """The four 32-byte activation vectors of 128-value block k (plane g = values 32 g .. 32 g + 31)."""
    qoff = builder.mul(k, I64(128))
    return [load32(builder, qptr, builder.add(qoff, I64(32 * g))) for g in range(4)]


def add_planes(builder: ir.IRBuilder, sums: list, planes: list[ir.Value], qs: list[ir.Value]) -> list:
    """[A, B] plus one block's products: A over planes 1 and 3 (code * q), B over planes 0 and 2 (4 code * q),
    `qs` the block's four activation vectors (plane g against qs[g]).

    Per block a lane of A is within -1024 .. 1016, of B -4096 .. 4064 (GEMV_GROUP says how many fit int16).
    """
    out = list(sums)
    for g in range(4):
        part = maddubs(builder, planes[g], qs[g])
        i = 1 - g % 2
        out[i] = part if out[i] is None else builder.add(out[i], part)
    return out


def unscale(builder: ir.IRBuilder, sums: list) -> ir.Value:
    """<16 x i16> A + B / 4: B's lanes are exact multiples of 4, so the arithmetic shift is exact."""
    return builder.add(sums[0], builder.ashr(sums[1], ir.Constant(V16, [2] * 16)))


def rows_sum16(builder: ir.IRBuilder, wptrs: list, qptr: ir.Value, ks: list, qk256: bool = False) -> list:
    """<16 x i16> partial sums of code * q over the 128-value blocks `ks`, one per row pointer in `wptrs`.

    Block by block, every row before the next block: a block's four activation loads serve all rows and
    die before the next block's, which keeps the live registers to the rows' int16 sums.
    """
    sums = [[None, None] for _ in wptrs]
    for k in ks:
        qs = block_q(builder, qptr, k)
        for row, wptr in enumerate(wptrs):
            wbytes = load32(builder, wptr, builder.mul(k, I64(32)))
            if qk256:
                for g in range(4):
                    part = maddubs(builder, qk256_codes(builder, wbytes, g), qs[g])
                    sums[row][0] = part if sums[row][0] is None else builder.add(sums[row][0], part)
            else:
                sums[row] = add_planes(builder, sums[row], ternary_planes(builder, wbytes), qs)
    return [acc[0] if qk256 else unscale(builder, acc) for acc in sums]


def _lanes(builder: ir.IRBuilder, a: ir.Value, b: ir.Value, idx: list[int]) -> ir.Value:
    return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(I32, len(idx)), idx))


def hsum(builder: ir.IRBuilder, v: ir.Value) -> ir.Value:
    """i32 sum of the 8 lanes of one <8 x i32>."""
    v = builder.add(_lanes(builder, v, v, [0, 1, 2, 3]), _lanes(builder, v, v, [4, 5, 6, 7]))
    v = builder.add(_lanes(builder, v, v, [0, 1]), _lanes(builder, v, v, [2, 3]))
    return builder.add(builder.extract_element(v, I32(0)), builder.extract_element(v, I32(1)))


def hsum16_many(builder: ir.IRBuilder, vecs: list[ir.Value]) -> ir.Value:
    """<n x i32> of the lane sums of n (4 or 8) vectors of <16 x i16>, each lane of which sums 16 ternary
    products of two blocks (|lane| <= 4096, so any 8 lanes still fit int16 exactly: -32768 .. 32512).

    vphaddw (adjacent pairs, within each 128-bit half) merges the vectors pairwise, then folds the last one
    onto itself until each half holds one sum of 8 lanes per vector; the two halves are widened and added
    in int32.
    """
    phadd = _fn(builder, "llvm.x86.avx2.phadd.w", V16, [V16, V16])
    n = len(vecs)
    while len(vecs) > 1:
        vecs = [builder.call(phadd, [a, b]) for a, b in zip(vecs[0::2], vecs[1::2], strict=True)]
    v = vecs[0]
    for _ in range({4: 1, 8: 0}[n]):
        v = builder.call(phadd, [v, v])
    lo = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, n), list(range(n))))
    hi = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, n), list(range(8, 8 + n))))
    wide = ir.VectorType(I32, n)
    return builder.add(builder.sext(lo, wide), builder.sext(hi, wide))


# ---------------------------------------------------------------- ternary rows x one token (GEMV)
# Blocks summed in int16 before one vpmaddwd widens them. Ternary: per block a lane of the 4x sum is within
# -4096 .. 4064 (2 planes, 2 products of 8 * q each), so eight blocks stay within -32768 .. 32512, and the
# code sum (-1024 .. 1016 per block) plus the unscaled 4x sum within +-16384. QK256 (codes up to 4, all four
# planes in one sum, -4096 .. 4064 per block) fits eight blocks the same way.
GEMV_GROUP = 8


def rows_dot(builder, wptrs, qptr, nb, distance, qk256=False):
    """<8 x i32> partial sums of code * q over whole rows (one per pointer in `wptrs`, nb blocks each).

    GEMV_GROUP blocks (four lines of each row) per step, summed in int16, widened once; the last
    nb % GEMV_GROUP blocks as groups of 4, 2 and 1. The rows of `wptrs` are consecutive rows of one
    matrix (the prefetch walks their contiguous bytes).
    """
    zero = ir.Constant(V32, None)
    accs = [cgutils.alloca_once_value(builder, zero) for _ in wptrs]

    def add_blocks(k0, count):
        start = builder.mul(k0, I64(32 * len(wptrs)))
        emit_prefetch(builder, wptrs[0], distance, start, max(1, 32 * count * len(wptrs) // LINE))
        ks = [builder.add(k0, I64(i)) for i in range(count)]
        for s16, acc in zip(rows_sum16(builder, wptrs, qptr, ks, qk256), accs, strict=True):
            builder.store(builder.add(builder.load(acc), widen(builder, s16)), acc)

    steps = builder.udiv(nb, I64(GEMV_GROUP))
    with cgutils.for_range(builder, steps) as loop:
        add_blocks(builder.mul(loop.index, I64(GEMV_GROUP)), GEMV_GROUP)
    done = builder.mul(steps, I64(GEMV_GROUP))
    rest = builder.sub(nb, done)
    size = GEMV_GROUP // 2
    while size:
        with builder.if_then(builder.icmp_unsigned("!=", builder.and_(rest, I64(size)), I64(0))):
            add_blocks(builder.add(done, builder.and_(rest, I64(~(2 * size - 1) & (GEMV_GROUP - 1)))), size)
        size //= 2
    return [builder.load(acc) for acc in accs]


def rows_blk(builder, wptrs, dptrs, qptr, sptr, nsum, distance):
    """<n x float>: per row, sum over the 256-value scale blocks j of d[j] * (int sum_j - qsum[j]).

    A scale block is two 128-value blocks (one line of each row). Two scale blocks per step: the rows'
    exact sums of both come out of one vphaddw tree, then the float multiply-adds run per lane, block
    j before block j + 1 (the portable order, no contraction); an odd last scale block runs alone.
    The loop is software-pipelined: a step reduces and scales the sums the previous step left, so the
    long tail of the reduction overlaps the next multiplies instead of stalling retirement.
    `dptrs` point at each row's float32 scales, `sptr` at the int32 activation sums per scale block.
    """
    n = len(wptrs)
    fv = ir.VectorType(ir.FloatType(), n)
    facc = cgutils.alloca_once_value(builder, ir.Constant(fv, None))

    def int_sums(js):
        """<16 x i16> partial sums per (scale block, row), scale blocks `js` in order."""
        sums = []
        for j in js:
            k0 = builder.mul(j, I64(2))
            k1 = builder.add(k0, I64(1))
            sums.extend(rows_sum16(builder, wptrs, qptr, [k0, k1]))
        return sums

    def add_terms(sums, js):
        """Reduce `sums` (from int_sums(js)) and add their float terms to facc, block by block."""
        width = len(sums)
        iv = ir.VectorType(I32, width)
        wv = ir.VectorType(ir.FloatType(), width)
        if width == 1:
            total = builder.insert_element(
                ir.Constant(iv, None), hsum(builder, widen(builder, sums[0])), I32(0)
            )
        else:
            total = hsum16_many(builder, sums)
        qs = ir.Constant(iv, None)
        dv = ir.Constant(wv, None)
        for b, j in enumerate(js):
            value = builder.load(builder.gep(sptr, [j]))
            for i, dptr in enumerate(dptrs):
                qs = builder.insert_element(qs, value, I32(b * n + i))
                dv = builder.insert_element(dv, builder.load(builder.gep(dptr, [j])), I32(b * n + i))
        term = builder.fmul(dv, builder.sitofp(builder.sub(total, qs), wv))
        acc = builder.load(facc)
        for b in range(len(js)):
            acc = builder.fadd(acc, _lanes(builder, term, term, list(range(b * n, b * n + n))))
        builder.store(acc, facc)

    def pair(step):
        j = builder.mul(step, I64(2))
        return [j, builder.add(j, I64(1))]

    pair_steps = I64(0)
    if n == 4:  # a lone row (the tail of a matrix) takes one scale block per step
        pair_steps = builder.udiv(nsum, I64(2))
        pending = [cgutils.alloca_once(builder, V16) for _ in range(2 * n)]
        with cgutils.for_range(builder, pair_steps) as loop:
            emit_prefetch(builder, wptrs[0], distance, builder.mul(loop.index, I64(2 * LINE * n)), 2 * n)
            sums = int_sums(pair(loop.index))
            with builder.if_then(builder.icmp_unsigned("!=", loop.index, I64(0)), likely=True):
                add_terms([builder.load(x) for x in pending], pair(builder.sub(loop.index, I64(1))))
            for slot, v in zip(pending, sums, strict=True):
                builder.store(v, slot)
        with builder.if_then(builder.icmp_unsigned("!=", pair_steps, I64(0))):
            add_terms([builder.load(x) for x in pending], pair(builder.sub(pair_steps, I64(1))))
    with cgutils.for_range(builder, builder.sub(nsum, builder.mul(pair_steps, I64(2)))) as loop:
        j = builder.add(builder.mul(pair_steps, I64(2)), loop.index)
        emit_prefetch(builder, wptrs[0], distance, builder.mul(j, I64(LINE * n)), n)
        js = [j]
        add_terms(int_sums(js), js)
    return builder.load(facc)


# ---------------------------------------------------------------- int8 row x one token (logits)
def i8_row_dot(builder, rptr, uptr, qptr, n, distance):
    """<8 x i32> partial sums of e . q for the int8 row at `rptr` (n bytes, n % 64 == 0).

    `uptr` holds |q| as unsigned bytes; vpsignb puts q's sign on e, so each product is |q| * e * sign(q).
    One row at a time, so that each thread reads one sequential stream (four interleaved rows read
    slower from DRAM); the prefetch runs `distance` bytes ahead along it.
    """
    acc = cgutils.alloca_once_value(builder, ir.Constant(V32, None))
    with cgutils.for_range(builder, builder.udiv(n, I64(LINE))) as loop:
        emit_prefetch(builder, rptr, distance, builder.mul(loop.index, I64(LINE)), 1)
        for half in range(2):
            off = builder.add(builder.mul(loop.index, I64(LINE)), I64(32 * half))
            e = sign_bytes(builder, load32(builder, rptr, off), load32(builder, qptr, off))
            product = widen(builder, maddubs(builder, load32(builder, uptr, off), e))
            builder.store(builder.add(builder.load(acc), product), acc)
    return builder.load(acc)


# ---------------------------------------------------------------- ternary row tiles x several tokens (GEMM)
# The GEMM unpacks a block once for all tokens of a step, so it takes the codes at 1x (three shifts, four
# masks) and keeps ONE int16 sum per token. Bound: a vpmaddubsw lane is c_a q_a + c_b q_b with codes 0..2
# and q in -128..127, so -512 .. 508 (never saturates); a block's four planes add four lanes: -2048 .. 2032;
# GEMM_GROUP = 16 blocks: -32768 .. 32512, exact in int16 whatever the order of the additions (every partial
# sum adds fewer such terms). One vpmaddwd widens a token's sum once per group.
GEMM_GROUP = 16
# Rows per tile: a K-chunk of GEMM_GROUP blocks of the tile's rows (GEMM_ROWS * 512 bytes) shares L1 with the
# chunk's activations (GEMM_GROUP * 128 bytes per token, 16 KB for 8 tokens).
GEMM_ROWS = 16


def ternary_codes(builder: ir.IRBuilder, wbytes: ir.Value) -> list[ir.Value]:
    """The four bit planes of a ternary block as unsigned codes 0..2: (w >> (6 - 2 g)) & 3."""
    three = ir.Constant(V8, [3] * 32)
    shifted = [builder.lshr(wbytes, ir.Constant(V8, [6 - 2 * g] * 32)) for g in range(3)]
    return [builder.and_(v, three) for v in [*shifted, wbytes]]


def block_codes_dot(builder: ir.IRBuilder, codes: list[ir.Value], qptr: ir.Value, k: ir.Value) -> ir.Value:
    """<16 x i16> lanes of sum code * q over block k (four planes), each within -2048 .. 2032."""
    parts = [maddubs(builder, c, q) for c, q in zip(codes, block_q(builder, qptr, k), strict=True)]
    return builder.add(builder.add(parts[0], parts[1]), builder.add(parts[2], parts[3]))


@contextmanager
def chunks(builder: ir.IRBuilder, n: ir.Value, size: int):
    """A loop over n items in chunks of `size` (the last one shorter): yields (first item, count)."""
    step = I64(size)
    with cgutils.for_range(builder, builder.udiv(builder.add(n, I64(size - 1)), step)) as loop:
        first = builder.mul(loop.index, step)
        rest = builder.sub(n, first)
        yield first, builder.select(builder.icmp_unsigned("<", rest, step), rest, step)


def block_sums(builder, wptr, qptrs, k0, count):
    """<16 x i16> sums of code * q of one row over blocks k0 .. k0 + count - 1, one per token in `qptrs`
    (count <= GEMM_GROUP): a block's codes are unpacked once and serve every token."""
    sums = [cgutils.alloca_once(builder, V16) for _ in qptrs]
    for s in sums:
        builder.store(ir.Constant(V16, None), s)
    with cgutils.for_range(builder, count) as loop:
        k = builder.add(k0, loop.index)
        codes = ternary_codes(builder, load32(builder, wptr, builder.mul(k, I64(32))))
        for qptr, s in zip(qptrs, sums, strict=True):
            builder.store(builder.add(builder.load(s), block_codes_dot(builder, codes, qptr, k)), s)
    return [builder.load(s) for s in sums]


def _store_lanes(builder, values, optr, ostride, row):
    """values[t] (float) to optr[t * ostride + row]."""
    for t, v in enumerate(values):
        builder.store(v, builder.gep(optr, [builder.add(builder.mul(ostride, I64(t)), row)]))


def tile_tokens(builder, wptr, row_bytes, nrows, qptrs, nb, qsum, optr, ostride):
    """Rows 0 .. nrows - 1 (nrows <= GEMM_ROWS, `row_bytes` apart from `wptr`) against the tokens of `qptrs`:
    float32(sum code * q - qsum[t]) of row r, token t to optr[t * ostride + r] (`qsum` pointers per token).

    K-chunks of GEMM_GROUP blocks outermost: a chunk's activations stay in L1 while every row of the tile
    passes over them, however long the rows; the rows' int32 sums per token wait on the stack.
    """
    ntok = len(qptrs)
    accs = cgutils.alloca_once(builder, ir.ArrayType(V32, GEMM_ROWS * ntok))

    def acc(r, t):
        return builder.gep(accs, [I32(0), builder.add(builder.mul(r, I64(ntok)), I64(t))])

    with cgutils.for_range(builder, nrows) as row:
        for t in range(ntok):
            builder.store(ir.Constant(V32, None), acc(row.index, t))
    with chunks(builder, nb, GEMM_GROUP) as (k0, count):
        with cgutils.for_range(builder, nrows) as row:
            rptr = builder.gep(wptr, [builder.mul(row.index, row_bytes)])
            for t, s16 in enumerate(block_sums(builder, rptr, qptrs, k0, count)):
                slot = acc(row.index, t)
                builder.store(builder.add(builder.load(slot), widen(builder, s16)), slot)
    with cgutils.for_range(builder, nrows) as row:
        totals = [
            builder.sub(hsum(builder, builder.load(acc(row.index, t))), builder.load(qsum[t]))
            for t in range(ntok)
        ]
        _store_lanes(builder, [builder.sitofp(x, ir.FloatType()) for x in totals], optr, ostride, row.index)


def tile_blk_tokens(builder, wptr, row_bytes, nrows, qptrs, dptr, nsum, sptr, sstride, optr, ostride):
    """Rows 0 .. nrows - 1 (as tile_tokens) of a TQ2_0 / TQ1_0 matrix: per row r and token t the sum over
    the 256-value scale blocks j of d[r, j] * (int sum_j - qsum[j, t]), in j order, to optr[t * ostride + r].

    `dptr` points at the tile's first row of float32 scales (nsum per row), `sptr` at qsum[0, t0] of an int32
    [nsum, sstride] table (a block's token sums side by side: one load for all tokens). A scale block's two
    int16 sums per token (lanes within -4096 .. 4064) go through one vphaddw tree for all tokens, then the
    float multiply-add runs per lane in the portable order. The loop over scale blocks is software-pipelined
    (a step reduces and scales the sums the step before it left) so that the long tail of the reduction
    overlaps the next multiplies instead of stalling retirement. K-chunks outermost as in tile_tokens; the
    rows' float sums (tokens in lanes) wait on the stack.
    """
    ntok = len(qptrs)
    fv = ir.VectorType(ir.FloatType(), ntok)
    iv = ir.VectorType(I32, ntok)
    faccs = cgutils.alloca_once(builder, ir.ArrayType(fv, GEMM_ROWS))
    facc = cgutils.alloca_once(builder, fv)
    pending = [cgutils.alloca_once(builder, V16) for _ in qptrs]

    def row_acc(r):
        return builder.gep(faccs, [I32(0), r])

    def add_term(drow, j):
        """facc += d[j] * (the pending sums of scale block j - qsum[j]), per lane."""
        vecs = [builder.load(p) for p in pending]
        if ntok == 1:
            total = builder.insert_element(
                ir.Constant(iv, None), hsum(builder, widen(builder, vecs[0])), I32(0)
            )
        else:
            total = hsum16_many(builder, vecs)
        qs = builder.load(
            builder.bitcast(builder.gep(sptr, [builder.mul(j, sstride)]), iv.as_pointer()), align=4
        )
        dj = builder.insert_element(ir.Constant(fv, None), builder.load(builder.gep(drow, [j])), I32(0))
        dv = builder.shuffle_vector(dj, dj, ir.Constant(iv, [0] * ntok))
        term = builder.fmul(dv, builder.sitofp(builder.sub(total, qs), fv))
        builder.store(builder.fadd(builder.load(facc), term), facc)

    with cgutils.for_range(builder, nrows) as row:
        builder.store(ir.Constant(fv, None), row_acc(row.index))
    with chunks(builder, nsum, GEMM_GROUP // 2) as (j0, count):
        with cgutils.for_range(builder, nrows) as row:
            rptr = builder.gep(wptr, [builder.mul(row.index, row_bytes)])
            drow = builder.gep(dptr, [builder.mul(row.index, nsum)])
            builder.store(builder.load(row_acc(row.index)), facc)
            with cgutils.for_range(builder, count) as loop:
                j = builder.add(j0, loop.index)
                vecs = block_sums(builder, rptr, qptrs, builder.mul(j, I64(2)), I64(2))
                with builder.if_then(builder.icmp_unsigned("!=", loop.index, I64(0)), likely=True):
                    add_term(drow, builder.sub(j, I64(1)))
                for slot, v in zip(pending, vecs, strict=True):
                    builder.store(v, slot)
            add_term(drow, builder.sub(builder.add(j0, count), I64(1)))
            builder.store(builder.load(facc), row_acc(row.index))
    with cgutils.for_range(builder, nrows) as row:
        sums = builder.load(row_acc(row.index))
        lanes = [builder.extract_element(sums, I32(t)) for t in range(ntok)]
        _store_lanes(builder, lanes, optr, ostride, row.index)
