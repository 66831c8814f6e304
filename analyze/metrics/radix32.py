"""The float32 sort behind the exact pixel metrics (numba): an LSD radix sort on only the bits
in which the keys differ, in three scatter passes where the top bits crowd into few values.

:class:`~analyze.metrics.exact.ExactState` sorts its raw in-distribution float32 scores in
groups of 4 M (:func:`analyze.metrics.ranks.rank_raw`) and its distinct anomaly scores once: the
largest share of ``pixel_metrics``'s time on float32 maps. The sort orders keys, unsigned
integers in the value order of the float32 bit patterns (``-0.0`` just below ``+0.0``;
:func:`_f32_key`), and returns the same bit patterns as a stable sort of the keys,
``x[np.argsort(keys, kind="stable")]``, bit for bit (so ``np.sort(x)`` value for value).

A scatter pass costs about 1 ns a key where its digit takes a few hundred to ~1500 values;
spread over more (a 10-bit digit of random bits: 1024 write streams) they leave the L1 cache
and the pass costs 2-3x as much; keying the bit patterns inside a scatter pass slows it by a
third. The byte-wise sort this replaced made four scatter passes of 8-bit digits, keying in
the first and the last. The order of work (docs/speed.md, "Pixel metrics"):

1. One pass replaces the bit patterns by their keys and finds the lowest and the highest and
   the bits in which two keys differ; one pass subtracts the lowest. The sort orders the
   ``e`` bits from the lowest differing one up to the highest bit of the span (30 for
   scores in [0, 1)).
2. The low digits are at most :data:`_LOW` bits (spread, like random bits); the top digit
   takes the rest, up to :data:`_TOP` bits, which suits the exponent and the first
   mantissa bits of scores: a few thousand values at most, crowded into fewer. A strided
   sample of 1/16 of the keys counts the top digit's values: more than :data:`_STREAMS`
   and the top bits are spread too, so the plan is four digits of ``ceil(e / 4)`` bits
   (the old byte passes; scores spread over dozens of binades of both signs). Scores in
   [0, 1) take 9 + 9 + 12 bits: three scatter passes.
3. One pass counts every digit; a digit that is the same in every key is skipped.
4. Stable scatter passes (least significant digit first) between the array and the scratch
   buffer, then one pass maps the keys back to bit patterns into the array.

Arrays of at most :data:`_SMALL` scores are sorted by insertion.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_U32_ONE = np.uint32(1)
_U32_SIGN = np.uint32(0x80000000)
_U32_LOW = np.uint32(0x7FFFFFFF)
_U32_31 = np.uint32(31)

_LOW = 9  # most bits of a digit of spread bits (512 write streams stay in the L1 cache)
_TOP = 14  # most bits of the top digit (sign, exponent and the first mantissa bits)
_STREAMS = 2048  # top-digit values a sample of the keys may take for the three-pass plan
_SAMPLE = 16  # the sample: every 16th key
_SMALL = 32  # this many scores or fewer: insertion sort


@nb.njit(nogil=True, cache=True)
def _f32_key(b):
    """float32 bit pattern -> uint32 key whose unsigned order is the float order (NaN-free; -0.0
    just below +0.0): the sign bit set for non-negative values, every bit flipped for negative ones."""
    return b ^ (((b >> _U32_31) * _U32_LOW) | _U32_SIGN)


@nb.njit(nogil=True, cache=True)
def _f32_unkey(k):
    """The inverse of :func:`_f32_key`."""
    return k ^ ((((k >> _U32_31) ^ _U32_ONE) * _U32_LOW) | _U32_SIGN)


@nb.njit(nogil=True, cache=True)
def _to_keys(a):
    """Replaces the bit patterns ``a`` by their keys (:func:`_f32_key`); returns (lowest key,
    highest key, lowest bit in which two keys differ)."""
    k_min = ~np.uint32(0)
    k_max = np.uint32(0)
    all_or = np.uint32(0)
    all_and = ~all_or
    for i in range(a.size):
        k = _f32_key(a[i])
        a[i] = k
        k_min = min(k_min, k)
        k_max = max(k_max, k)
        all_or |= k
        all_and &= k
    diff = all_or ^ all_and
    low = 0
    while low < 31 and not (diff >> np.uint32(low)) & _U32_ONE:
        low += 1
    return k_min, k_max, low


@nb.njit(nogil=True, cache=True)
def _less(a, k_min):
    """``a -= k_min`` (keys)."""
    for i in range(a.size):
        a[i] -= k_min


@nb.njit(nogil=True, cache=True)
def _from_keys(src, a, k_min):
    """``a[i]``: the bit pattern of key ``src[i] + k_min`` (:func:`_f32_unkey`)."""
    for i in range(a.size):
        a[i] = _f32_unkey(src[i] + k_min)


@nb.njit(nogil=True, cache=True)
def _top_values(a, shift, b):
    """The values the ``b``-bit digit at ``shift`` takes in every :data:`_SAMPLE`-th key of ``a``."""
    seen = np.zeros(1 << b, np.uint8)
    mask = np.uint32((1 << b) - 1)
    sh = np.uint32(shift)
    found = 0
    for i in range(0, a.size, _SAMPLE):
        d = (a[i] >> sh) & mask
        found += 1 - seen[d]
        seen[d] = 1
    return found


@nb.njit(nogil=True, cache=True)
def _plan(a, span, low, digits):
    """Fills ``digits`` (rows of shift and bits, least significant first) for the keys ``a``,
    which lie in ``[0, span]`` (step 2 of the module docstring); returns how many."""
    top = 0
    while top < 31 and span >> np.uint32(top + 1):
        top += 1
    e = top + 1 - low
    if e > 2 * _LOW:  # two low digits and a top one, if its values are few
        t = e - 2 * _LOW
        if t <= _TOP and _top_values(a, low + 2 * _LOW, t) <= _STREAMS:
            for p, (shift, b) in enumerate(((low, _LOW), (low + _LOW, _LOW), (low + 2 * _LOW, t))):
                digits[p, 0], digits[p, 1] = shift, b
            return 3
        passes = 4
    else:
        passes = (e + _LOW - 1) // _LOW
    b = (e + passes - 1) // passes
    for p in range(passes):
        digits[p, 0], digits[p, 1] = low + p * b, min(b, e - p * b)
    return passes


@nb.njit(nogil=True, cache=True)
def _digit(digits, p):
    """(shift, mask) of digit ``p`` as uint32."""
    return np.uint32(digits[p, 0]), np.uint32((1 << digits[p, 1]) - 1)


@nb.njit(nogil=True, cache=True)
def _counts(a, digits, passes, count):
    """``count[p, d]``: keys of ``a`` whose digit ``p`` is ``d``. One loop for each number of
    digits: a spare counter incremented for every key would chain all keys through one cell."""
    count[:passes] = 0
    last = passes - 1
    sh0, m0 = _digit(digits, 0)
    sh1, m1 = _digit(digits, min(1, last))
    sh2, m2 = _digit(digits, min(2, last))
    sh3, m3 = _digit(digits, min(3, last))
    c0, c1, c2, c3 = count[0], count[min(1, last)], count[min(2, last)], count[min(3, last)]
    n = a.size
    if passes == 4:
        for i in range(n):
            k = a[i]
            c0[(k >> sh0) & m0] += 1
            c1[(k >> sh1) & m1] += 1
            c2[(k >> sh2) & m2] += 1
            c3[(k >> sh3) & m3] += 1
    elif passes == 3:
        for i in range(n):
            k = a[i]
            c0[(k >> sh0) & m0] += 1
            c1[(k >> sh1) & m1] += 1
            c2[(k >> sh2) & m2] += 1
    elif passes == 2:
        for i in range(n):
            k = a[i]
            c0[(k >> sh0) & m0] += 1
            c1[(k >> sh1) & m1] += 1
    else:
        for i in range(n):
            c0[(a[i] >> sh0) & m0] += 1


@nb.njit(nogil=True, cache=True)
def _scatter(src, dst, n, shift, b, row):
    """One stable LSD pass of the keys ``src[:n]`` into ``dst`` by the ``b``-bit digit at ``shift``;
    ``row`` holds each digit value's count and is used up."""
    t = 0
    for d in range(1 << b):
        c = row[d]
        row[d] = t
        t += c
    mask = np.uint32((1 << b) - 1)
    sh = np.uint32(shift)
    for i in range(n):
        k = src[i]
        d = (k >> sh) & mask
        dst[row[d]] = k
        row[d] += 1


@nb.njit(nogil=True, cache=True)
def _insertion(a):
    """Sorts the bit patterns ``a`` in place by insertion on their keys (stable)."""
    for i in range(1, a.size):
        b = a[i]
        k = _f32_key(b)
        j = i
        while j > 0 and _f32_key(a[j - 1]) > k:
            a[j] = a[j - 1]
            j -= 1
        a[j] = b


@nb.njit(nogil=True, cache=True)
def sort_f32(x: np.ndarray, scratch: np.ndarray) -> None:
    """Sorts the NaN-free float32 array ``x`` in place, ascending (``x.sort()``); ``scratch``:
    float32, at least ``x.size`` long, overwritten. Among equal values ``-0.0`` comes before
    ``+0.0``; the radix sort of the module docstring."""
    a = x.view(np.uint32)
    s = scratch.view(np.uint32)
    n = a.size
    if s.size < n:
        raise ValueError("sort_f32: scratch is shorter than the array")
    if n <= _SMALL:
        _insertion(a)
        return
    k_min, k_max, low = _to_keys(a)  # keys in place: keying in a scatter pass slows it by a third
    if k_min == k_max:  # one bit pattern
        _from_keys(a, a, np.uint32(0))
    else:
        _less(a, k_min)
        digits = np.empty((4, 2), np.int64)
        passes = _plan(a, k_max - k_min, low, digits)
        count = np.empty((4, 1 << _TOP), np.int64)
        _counts(a, digits, passes, count)
        src, dst = a, s
        for p in range(passes):
            shift, mask = _digit(digits, p)
            if count[p, (a[0] >> shift) & mask] != n:  # a digit the same in every key orders nothing
                _scatter(src, dst, n, digits[p, 0], digits[p, 1], count[p])
                src, dst = dst, src
        _from_keys(src[:n], a, k_min)
