"""The compiled (numba) kernel of the rank-value encoding, and when to use it.

numba is imported in :func:`_compiled_kernel` and nowhere else, so ``import scgf`` stays
cheap; the kernel is compiled on first use and cached by numba. It gives exactly the tokens of
the NumPy kernels in :mod:`._rank_encoding` (tested on every real dataset).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

import numpy as np

TARGET_SUM = 10_000  # counts are scaled to this many per cell

Kernel = Literal["auto", "numba", "numpy"]

#: Under ``"auto"``, inputs with fewer stored entries than this are encoded with NumPy unless
#: the compiled kernel is already loaded: importing numba and loading the cached kernel take
#: ~0.6 s, about what NumPy needs for this many entries (compiling it, once, ~5 s).
COMPILED_MIN_ENTRIES = 4_000_000


def select_kernel(kernel: Kernel, n_entries: int | None) -> Callable | None:
    """The compiled encoding kernel, or ``None`` for the NumPy path."""
    if kernel == "numpy":
        return None
    if kernel == "numba":
        compiled = _compiled_kernel()
        if compiled is None:
            raise ImportError("kernel='numba' needs numba: pip install numba")
        return compiled
    if kernel != "auto":
        raise ValueError(f"kernel must be 'auto', 'numba' or 'numpy', not {kernel!r}.")
    loaded = _compiled_kernel.cache_info().currsize > 0
    if not loaded and (n_entries is None or n_entries < COMPILED_MIN_ENTRIES):
        return None
    return _compiled_kernel()


@functools.cache
def _compiled_kernel() -> Callable | None:
    """``_nb_encode`` compiled by numba (or loaded from numba's cache) on first use; ``None``
    without numba. numba is imported here and nowhere else, so ``import scgf`` stays cheap."""
    try:
        import numba
    except ImportError:  # pragma: no cover - numba comes with scanpy
        return None
    try:
        return _jit_kernels(numba, cache=True)
    except RuntimeError:  # pragma: no cover - no writable cache directory: compile in memory
        return _jit_kernels(numba, cache=False)


def _jit_kernels(numba, *, cache: bool) -> Callable:
    jit = numba.njit(cache=cache, nogil=True, error_model="numpy")
    # Kernels call their helpers by module-level name: those names must refer to compiled
    # functions before the callers are compiled.
    module = globals()
    for name in ("_nb_bit_length", "_nb_radix_pass", "_nb_sort_cell"):
        module[name] = jit(getattr(module[name], "py_func", module[name]))
    return jit(_nb_encode)


# Compiled kernels: plain Python until _compiled_kernel() hands them to numba. Explicit
# loops rather than slice assignments keep numba's compile time down.

_INSERTION_MAX = 24  # ranges up to this size are left to the final insertion sort
_RADIX_BITS = 14  # at most 2**14 buckets per radix pass


def _nb_bit_length(value):  # pragma: no cover - compiled
    """Bits needed to write a non-negative integer."""
    length = 0
    while value > 0:
        value >>= 1
        length += 1
    return length


def _nb_radix_pass(  # pragma: no cover - compiled
    bits, slots, lo, hi, high, low, out_bits, out_slots, counts, keys
):
    """Scatter ``[lo, hi)`` into ``out_*`` by the leading bits of ``high - bits``.

    Uses about four buckets per element over the range's own span (``high``, ``low``: its
    largest and smallest bits). Returns the number of buckets; ``counts[k]`` then holds the
    end of bucket ``k`` (relative to ``lo``).
    """
    width = min(_nb_bit_length(hi - lo) + 2, _RADIX_BITS)
    shift = max(_nb_bit_length(high - low) - width, 0)
    n_buckets = np.int64((high - low) >> shift) + 1
    for k in range(n_buckets + 1):
        counts[k] = 0
    for q in range(lo, hi):
        k = np.int32((high - bits[q]) >> shift)
        keys[q] = k
        counts[k + 1] += 1
    for k in range(n_buckets):
        counts[k + 1] += counts[k]
    for q in range(lo, hi):
        k = keys[q]
        p = lo + counts[k]
        counts[k] += 1
        out_bits[p] = bits[q]
        out_slots[p] = slots[q]
    return n_buckets


def _nb_sort_cell(  # pragma: no cover - compiled
    bits, slots, n, high, low, out_bits, out_slots, counts, keys, stack
):
    """Write the first ``n`` pairs to ``out_*`` by descending ``bits``, then ascending slot.

    ``bits`` are the IEEE-754 bit patterns of non-negative float64 scores, which order like
    the scores and whose leading bits grow like ``log2`` of the score; ``high``/``low`` are the
    largest and smallest. A most-significant-digit radix pass over the cell's own span of
    bits therefore spreads its scores over about ``4n`` buckets, large buckets get further
    passes, and a final insertion sort orders the few pairs that share a bucket. Comparisons
    are exact, so equal scores (and only those) are ordered by slot. ``bits``/``slots`` are
    scratch space afterwards.
    """
    if n > _INSERTION_MAX and high != low:
        n_buckets = _nb_radix_pass(bits, slots, 0, n, high, low, out_bits, out_slots, counts, keys)
        depth = 0
        start = 0
        for k in range(n_buckets):
            if counts[k] - start > _INSERTION_MAX:
                stack[2 * depth] = start
                stack[2 * depth + 1] = counts[k]
                depth += 1
            start = counts[k]
        while depth > 0:  # large buckets: more passes, through the scratch arrays
            depth -= 1
            lo = stack[2 * depth]
            hi = stack[2 * depth + 1]
            high = out_bits[lo]
            low = out_bits[lo]
            for q in range(lo + 1, hi):
                high = max(high, out_bits[q])
                low = min(low, out_bits[q])
            if high == low:  # equal scores: the insertion sort orders them by slot
                continue
            n_buckets = _nb_radix_pass(
                out_bits, out_slots, lo, hi, high, low, bits, slots, counts, keys
            )
            for q in range(lo, hi):
                out_bits[q] = bits[q]
                out_slots[q] = slots[q]
            start = lo
            for k in range(n_buckets):
                if lo + counts[k] - start > _INSERTION_MAX:
                    stack[2 * depth] = start
                    stack[2 * depth + 1] = lo + counts[k]
                    depth += 1
                start = lo + counts[k]
    else:
        for q in range(n):
            out_bits[q] = bits[q]
            out_slots[q] = slots[q]
    for q in range(1, n):  # insertion sort; most pairs are in place already
        b = out_bits[q]
        s = out_slots[q]
        if out_bits[q - 1] > b or (out_bits[q - 1] == b and out_slots[q - 1] < s):
            continue
        p = q - 1
        while True:
            out_bits[p + 1] = out_bits[p]
            out_slots[p + 1] = out_slots[p]
            p -= 1
            if p < 0 or out_bits[p] > b or (out_bits[p] == b and out_slots[p] < s):
                break
        out_bits[p + 1] = b
        out_slots[p + 1] = s


def _nb_encode(  # pragma: no cover - compiled
    indptr,
    indices,
    data,
    column_slot,
    slot_tokens,
    inverse_median,
    reciprocal,
    from_sums,
    check,
    single,
    max_genes,
    cls_id,
    eos_id,
    out_tokens,
    out_positions,
    out_indptr,
    out_sums,
):
    """Encode a CSR chunk cell by cell into ``out_*`` (a CSR token matrix).

    Returns ``(nnz, first_bad)``: with ``check``, ``first_bad`` is the position of the first
    stored value that is not a finite, non-negative integer (encoding stops there), else -1.
    ``out_sums`` receives each cell's total in float64; with ``from_sums``, ``reciprocal`` is
    filled in from them (``1 / total``) instead of being read.

    Per cell: sum the columns of each vocabulary gene (in the input's column order and the
    counts' dtype, as the sparse product of the NumPy path does); score each non-zero sum as
    ``(sum × reciprocal) × 10000`` in the dtype NumPy promotes the counts and reciprocals to,
    widened to float64, times ``1/median``; sort; truncate; add special tokens.

    ``reciprocal`` is float64 (widened exactly); ``single`` says the scaling runs in float32.
    Float32 arithmetic is reproduced bit for bit in float64 with a rounding after each
    product: a product of two float32 values, and a float32 value times 10000 (14 bits), are
    exact in float64's 53-bit significand, so rounding them once to float32 gives the
    correctly rounded float32 product, as float32 hardware does.
    """
    n_cells = len(indptr) - 1
    n_slots = len(slot_tokens)
    longest = 0
    for i in range(n_cells):
        longest = max(longest, indptr[i + 1] - indptr[i])
    # Each gene's sum in the current cell; zero between cells (reset as it is read), so a
    # zero marks a gene not yet listed in ``present`` (explicit zeros may list one twice).
    summed = np.zeros(n_slots, dtype=data.dtype)
    present = np.empty(longest, dtype=np.int64)
    scores = np.empty(longest, dtype=np.float64)
    bits = scores.view(np.uint64)
    slots = np.empty(longest, dtype=np.int64)
    sorted_bits = np.empty(longest, dtype=np.uint64)
    sorted_slots = np.empty(longest, dtype=np.int64)
    counts = np.empty((1 << _RADIX_BITS) + 1, dtype=np.int32)
    keys = np.empty(longest, dtype=np.int32)
    stack = np.empty(2 * (longest // _INSERTION_MAX + 2), dtype=np.int64)
    special = cls_id >= 0
    cursor = 0
    out_indptr[0] = 0
    for i in range(n_cells):
        n_present = 0
        total = 0.0
        for j in range(indptr[i], indptr[i + 1]):
            value = data[j]
            if check and (not (value >= 0 and value < np.inf) or value != np.floor(value)):
                return cursor, j
            total += value
            slot = column_slot[indices[j]]
            if slot < 0:
                continue
            if summed[slot] == 0:
                present[n_present] = slot
                n_present += 1
            summed[slot] += value
        out_sums[i] = total
        if from_sums:
            reciprocal[i] = 1.0 / total
        n = 0
        factor = reciprocal[i]
        high = np.uint64(0)
        low = ~np.uint64(0)
        for q in range(n_present):
            slot = present[q]
            count = summed[slot]
            if count == 0:
                continue
            summed[slot] = 0
            if single:
                scaled = np.float64(np.float32(count * factor)) * TARGET_SUM
                scaled = np.float64(np.float32(scaled))
            else:
                scaled = (count * factor) * TARGET_SUM
            scores[n] = scaled * inverse_median[slot]
            slots[n] = slot
            high = max(high, bits[n])
            low = min(low, bits[n])
            n += 1
        if n > 0:
            _nb_sort_cell(bits, slots, n, high, low, sorted_bits, sorted_slots, counts, keys, stack)
            position = 0
            if special:
                out_tokens[cursor] = cls_id
                out_positions[cursor] = 0
                cursor += 1
                position = 1
            for q in range(min(n, max_genes)):
                out_tokens[cursor] = slot_tokens[sorted_slots[q]]
                out_positions[cursor] = position
                cursor += 1
                position += 1
            if special:
                out_tokens[cursor] = eos_id
                out_positions[cursor] = position
                cursor += 1
        out_indptr[i + 1] = cursor
    return cursor, -1
