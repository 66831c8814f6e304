"""The float64 sorts behind the exact pixel metrics (numba): a radix sort on the top bits of
the keys, then insertion within equal prefixes.

Every frame's score maps are split into anomaly and in-distribution scores and each class is
sorted (:mod:`analyze.metrics.framed`, :mod:`analyze.metrics.ranks`): a large share of a
frame's cost. The sort orders keys, unsigned integers in the value order of the float64 bit
patterns (``-0.0`` just below ``+0.0``; :func:`_key`), and returns the same bit patterns as a
stable sort of the keys, ``x[np.argsort(keys, kind="stable")]``, bit for bit.

The order of work (at 2 M scores 1.1-1.6x faster than the byte-wise LSD radix sort this
replaced, which took a scatter pass per key byte that was not constant, seven for uniform
scores; docs/speed.md, "Sorting a frame's scores"):

1. One pass finds the lowest and the highest value and the lowest bit set in any magnitude.
   The sort orders ``key - lowest key``: scores of one range (a few binades) differ only in
   their lowest ~55 bits, and the keys of float32 or float16 values widened to float64 share
   their zero low mantissa bits, whatever their signs (:func:`_key`), which no pass looks at.
2. One pass counts the top three digits of ``b`` bits (9, 8 with the index: 512 or 256 write
   streams a scatter pass, which stay in the L1 cache) below the highest differing bit, or
   the digits that cover every differing bit.
3. Three stable scatter passes (least significant digit first) between the array and the
   scratch buffer order the keys by that 27-bit prefix (24 with the index); where the most
   frequent top digit value leaves a quarter key or more per prefix value (crowded scores),
   a fourth digit below is counted and scattered first (36 bits; 32).
4. One pass moves the keys back into the array and sorts each run of equal prefixes by
   insertion (no key moves out of its run: a run of ``r`` keys costs ``r`` plus its
   inversions). A run of more than :data:`_SMALL` keys (scores crowded at one value: MSP
   near 1, ties) is left in order and sorted the same way on its own afterwards (steps 2-4
   on its bits; an explicit stack, no recursion); a run of equal keys is done.
5. One pass adds the lowest key back and maps the keys back to float64 bit patterns.

When the digits cover every differing bit (float32 values widened to float64, ties among
float16 values) the scatter passes alone sort. The scatter passes and the insertion
never move a key past an equal one, so the sort is stable: the indexed sort moves a uint32
companion with each key, in the order of ``np.argsort(keys, kind="stable")``.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_U64_LOW = np.uint64(0x7FFFFFFFFFFFFFFF)
_U64_SIGN = np.uint64(0x8000000000000000)
_U64_ZERO = np.uint64(0)
_U64_ONE = np.uint64(1)
_U64_62 = np.uint64(1 << 62)
_U64_63 = np.uint64(63)

_DIGIT = 9  # most bits of one scatter pass (512 output streams; 2048 thrash the L1 cache)
_DIGIT_INDEXED = 8  # the same with a uint32 companion: two output streams a digit value
_PASSES = 4  # most scatter passes on the top bits; 3 where they leave keys spread thin
_SMALL = 32  # a run of equal prefixes this small is finished by insertion sort


@nb.njit(cache=True)
def _f64_key(b):
    """float64 bit pattern -> uint64 key in value order (NaN-free; ``-0.0`` just below ``+0.0``):
    the sign bit set for non-negative values, every bit flipped for negative ones (every
    operand uint64, so numba never mixes in a signed type)."""
    return b ^ (((b >> _U64_63) * _U64_LOW) | _U64_SIGN)


@nb.njit(cache=True)
def _f64_unkey(k):
    """The inverse of :func:`_f64_key`."""
    return k ^ ((((k >> _U64_63) ^ _U64_ONE) * _U64_LOW) | _U64_SIGN)


@nb.njit(cache=True)
def _key(b, unit):
    """float64 bit pattern -> the key the sort orders: ``2**63 + |b|`` for non-negative values,
    ``2**63 - unit - |b|`` for negative ones (``|b|`` the pattern without its sign bit). In
    value order, ``-0.0`` just below ``+0.0``; where every ``|b|`` is a multiple of ``unit``
    (scores of float32 or float16 precision), so is every key, whatever the signs."""
    neg = _U64_ZERO - (b >> _U64_63)  # all ones for a negative value
    return _U64_SIGN + ((b & _U64_LOW) ^ neg) - ((unit - _U64_ONE) & neg)  # ~m = -m - 1


@nb.njit(cache=True)
def _unkey(k, unit):
    """The inverse of :func:`_key`."""
    pos = _U64_ZERO - (k >> _U64_63)  # all ones for a non-negative value
    return ((k ^ _U64_SIGN) & pos) | ((~k - (unit - _U64_ONE)) & ~pos)  # sign | (2**63 - unit - k)


@nb.njit(cache=True)
def _key_range(a):
    """(unit, lowest key, spread) of the bit patterns ``a``: ``unit`` the lowest bit set in any
    ``|b|`` (:func:`_key`); the keys less the lowest differ in the bits ``spread`` (up to the
    highest bit of the largest, down to ``unit``'s)."""
    k_min = ~np.uint64(0)
    k_max = np.uint64(0)
    mags = np.uint64(0)
    for i in range(a.size):
        k = _f64_key(a[i])  # the same order as _key's, which needs unit
        k_min = min(k_min, k)
        k_max = max(k_max, k)
        mags |= a[i]
    mags = (mags & _U64_LOW) | _U64_62  # -0.0 and +0.0 alone: any unit will do
    unit = mags & (~mags + _U64_ONE)
    low, high = _key(_f64_unkey(k_min), unit), _key(_f64_unkey(k_max), unit)
    span = high - low
    for sh in (1, 2, 4, 8, 16, 32):  # every bit up to the highest of span
        span |= span >> np.uint64(sh)
    return unit, low, span & ~(unit - _U64_ONE)


@nb.njit(cache=True)
def _spread(src, lo, hi):
    """The bits that differ between the keys of ``src[lo:hi]`` (their OR XOR their AND)."""
    all_or = np.uint64(0)
    all_and = ~all_or
    for i in range(lo, hi):
        all_or |= src[i]
        all_and &= src[i]
    return all_or ^ all_and


@nb.njit(cache=True)
def _plan(m, spread, most):
    """(base, b, passes, exact) for ``m`` keys that differ in the bits ``spread``: LSD passes by
    ``b``-bit digits from bit ``base`` up; ``exact`` when they cover every differing bit,
    else :data:`_PASSES` digits end at the highest differing bit."""
    top = 0
    while top < 63 and spread >> np.uint64(top + 1):
        top += 1
    low = 0
    while not (spread >> np.uint64(low)) & _U64_ONE:
        low += 1
    b = 3  # fewer bits for fewer keys: zeroing and summing the counts costs 2 ** b
    while b < most and (1 << (b + 2)) < m:
        b += 1
    span = top + 1 - low
    if span <= _PASSES * b:
        passes = (span + b) // (b + 1)  # one bit wider, where that saves a pass
        return low, (span + passes - 1) // passes, passes, True
    return top + 1 - _PASSES * b, b, _PASSES, False


@nb.njit(cache=True)
def _counts(src, lo, hi, raw, unit, k_min, base, b, first, last, count):
    """``count[p, d]`` for ``first <= p < last`` (at most three): keys of ``src[lo:hi]`` (``key -
    k_min`` of bit patterns when ``raw``) whose digit ``p``, the ``b`` bits from ``base + p * b``,
    is ``d``; the digits counted in one pass."""
    mask = np.uint64((1 << b) - 1)
    sh0 = np.uint64(base + first * b)
    sh1, sh2 = np.uint64(min(base + (first + 1) * b, 63)), np.uint64(min(base + (first + 2) * b, 63))
    c0, c1, c2 = count[first], count[min(first + 1, _PASSES - 1)], count[min(first + 2, _PASSES - 1)]
    count[first:last, :1 << b] = 0
    nd = last - first
    for i in range(lo, hi):
        k = _key(src[i], unit) - k_min if raw else src[i]
        c0[(k >> sh0) & mask] += 1
        if nd > 1:
            c1[(k >> sh1) & mask] += 1
        if nd > 2:
            c2[(k >> sh2) & mask] += 1


@nb.njit(cache=True)
def _scatter(src, dst, isrc, idst, lo, hi, raw, unit, k_min, shift, b, row):
    """One stable LSD pass: the keys of ``src[lo:hi]`` (and ``isrc``) to ``dst`` by the digit at
    ``shift``; ``row`` holds each digit value's count and is used up."""
    t = lo
    for d in range(1 << b):
        c = row[d]
        row[d] = t
        t += c
    mask = np.uint64((1 << b) - 1)
    sh = np.uint64(shift)
    for i in range(lo, hi):
        k = _key(src[i], unit) - k_min if raw else src[i]
        d = (k >> sh) & mask
        j = row[d]
        dst[j] = k
        if idst is not None:
            idst[j] = isrc[i]
        row[d] = j + 1


@nb.njit(cache=True)
def _insert(src, a, isrc, ia, lo, hi, shift, st_lo, st_hi, top):
    """Moves the keys of ``src[lo:hi]`` (ordered by ``key >> shift``, their prefix; shift 64: one
    prefix) to ``a`` and sorts each run of equal prefixes by insertion; a run of more than
    :data:`_SMALL` keys keeps its order and is pushed on the stack ``st_lo``/``st_hi``
    (``top`` entries) to be sorted on its own. Returns the new ``top``."""
    sh = np.uint64(min(shift, 63))
    keep = np.uint64(0) if shift >= 64 else ~np.uint64(0)  # prefix bits: none for one run
    start = lo  # first key of the current run
    prev = (src[lo] >> sh) & keep
    for i in range(lo, hi):
        k = src[i]
        if ia is not None:
            c = isrc[i]
        pref = (k >> sh) & keep
        if pref != prev:
            if i - start > _SMALL:
                st_lo[top], st_hi[top] = start, i
                top += 1
            start, prev = i, pref
        j = i
        if i - start < _SMALL:  # a long run keeps its order; it is sorted later
            while j > start and a[j - 1] > k:  # strictly greater: equal keys keep their order
                a[j] = a[j - 1]
                if ia is not None:
                    ia[j] = ia[j - 1]
                j -= 1
        a[j] = k
        if ia is not None:
            ia[j] = c
    if hi - start > _SMALL:
        st_lo[top], st_hi[top] = start, hi
        top += 1
    return top


@nb.njit(cache=True)
def _sort_range(a, s, ia, is_, lo, hi, raw, unit, k_min, spread, digit, count, st_lo, st_hi, top):
    """Steps 2-4 of the module docstring on the keys of ``a[lo:hi]``, which differ in the bits
    ``spread`` (bit patterns when ``raw``, keys less ``k_min`` afterwards): LSD passes of
    digits of at most ``digit`` bits between ``a`` and ``s``, then insertion within runs of
    equal prefixes into ``a``; runs too long for insertion are pushed on the stack. Returns
    the new ``top``. Three passes when the keys of the most frequent top digit value, spread
    evenly over the two digits below, leave under a quarter of a key per prefix value; the
    lowest digit is counted only when it is needed."""
    base, b, passes, exact = _plan(hi - lo, spread, digit)
    first = 0
    if exact:
        for p in range(0, passes, 3):
            _counts(a, lo, hi, raw, unit, k_min, base, b, p, min(p + 3, passes), count)
    else:  # the top three digits, then the lowest where the top ones leave keys crowded
        _counts(a, lo, hi, raw, unit, k_min, base, b, 1, passes, count)
        first = 1
        if count[passes - 1, :1 << b].max() * 4 >= 1 << (2 * b):
            _counts(a, lo, hi, raw, unit, k_min, base, b, 0, 1, count)
            first = 0
    src, dst, isrc, idst = a, s, ia, is_
    for p in range(first, passes):
        _scatter(src, dst, isrc, idst, lo, hi, raw and p == first, unit, k_min, base + p * b, b, count[p])
        src, dst, isrc, idst = dst, src, idst, isrc
    if not exact:
        return _insert(src, a, isrc, ia, lo, hi, base + first * b, st_lo, st_hi, top)
    if (passes - first) % 2:
        a[lo:hi] = s[lo:hi]
        if ia is not None:
            ia[lo:hi] = is_[lo:hi]
    return top


@nb.njit(cache=True)
def _radix_sort(a, s, ia, is_, digit):
    """The sort of the module docstring: ``a`` (float64 bit patterns, uint64) sorted in place,
    ``s`` scratch; ``ia`` / ``is_`` the uint32 companions and their scratch, or None;
    digits of at most ``digit`` bits."""
    n = a.size
    if n < 2:
        return
    unit, k_min, spread = _key_range(a)
    if spread == 0:
        return  # one bit pattern
    count = np.empty((_PASSES, 2 << digit), np.int64)  # digits of up to digit + 1 bits (_plan)
    cap = n // (_SMALL + 1) + 1  # stacked groups are disjoint and hold more than _SMALL keys each
    st_lo = np.empty(cap, np.int64)
    st_hi = np.empty(cap, np.int64)
    if n > _SMALL:
        top = _sort_range(a, s, ia, is_, 0, n, True, unit, k_min, spread, digit, count, st_lo, st_hi, 0)
    else:
        for i in range(n):
            a[i] = _key(a[i], unit) - k_min
        top = _insert(a, a, ia, ia, 0, n, 64, st_lo, st_hi, 0)
    while top:
        top -= 1
        lo, hi = st_lo[top], st_hi[top]
        spread = _spread(a, lo, hi)
        if spread:
            top = _sort_range(a, s, ia, is_, lo, hi, False, unit, k_min, spread, digit, count, st_lo, st_hi, top)
    for i in range(n):
        a[i] = _unkey(a[i] + k_min, unit)


@nb.njit(nogil=True, cache=True)
def sort_f64(x: np.ndarray, scratch: np.ndarray) -> None:
    """Sorts the NaN-free float64 array ``x`` in place, ascending (``x.sort()``); ``scratch``:
    float64, at least ``x.size`` long, overwritten. Among equal values ``-0.0`` comes before
    ``+0.0``; the radix sort of the module docstring."""
    a = x.view(np.uint64)
    s = scratch.view(np.uint64)
    if s.size < a.size:
        raise ValueError("sort_f64: scratch is shorter than the array")
    _radix_sort(a, s, None, None, _DIGIT)


@nb.njit(nogil=True, cache=True)
def sort_f64_indexed(x: np.ndarray, idx: np.ndarray, scratch: np.ndarray, scratch_idx: np.ndarray) -> None:
    """:func:`sort_f64` that moves ``idx`` (uint32, same length) with the scores: afterwards
    ``idx[i]`` is the original companion of the ``i``-th smallest score (a stable sort, so
    among equal bit patterns ``idx`` keeps its order). Scratch arrays as long as ``x``."""
    a = x.view(np.uint64)
    s = scratch.view(np.uint64)
    n = a.size
    if s.size < n or idx.size != n or scratch_idx.size < n:
        raise ValueError("sort_f64_indexed: idx must match x and the scratch arrays be as long")
    _radix_sort(a, s, idx, scratch_idx, _DIGIT_INDEXED)
