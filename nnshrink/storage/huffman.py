"""Canonical Huffman coding of small-alphabet symbol streams (numpy-vectorised).

Stream layout (the bytes :func:`huffman_encode` returns)::

    alphabet_size bytes   code length of each symbol, uint8 (0 = symbol absent)
    rest                  the codes of the symbols, back to back, MSB first, zero-padded
                          to a whole byte

Only code lengths are stored: codes are *canonical* (sorted by length, then symbol, each code
the previous one plus one, shifted left when the length grows), so the decoder rebuilds them.
A stream with one distinct symbol uses a 1-bit code; an empty stream is just the length table.
"""

from __future__ import annotations

import heapq

import numpy as np

MAX_CODE_LENGTH = 57  # the decoder reads 64-bit windows at any bit offset (64 - 7 bits)
_CHUNK = 1 << 20


def code_lengths(freqs: np.ndarray) -> np.ndarray:
    """Optimal (Huffman) code length for each symbol from its frequency (0 for absent symbols).

    Example:
        >>> code_lengths(np.array([5, 1, 1, 2, 0])).tolist()
        [1, 3, 3, 2, 0]
    """
    freqs = np.asarray(freqs, dtype=np.int64).reshape(-1)
    if freqs.size and freqs.min() < 0:
        raise ValueError("frequencies must be non-negative")
    lengths = np.zeros(freqs.size, dtype=np.int64)
    used = np.flatnonzero(freqs)
    if used.size == 1:
        lengths[used] = 1
    if used.size <= 1:
        return lengths.astype(np.uint8)
    # Merge the two lightest nodes until one is left; a leaf's depth is its code length.
    parent = np.full(2 * used.size - 1, -1, dtype=np.int64)
    heap = [(int(freqs[s]), i) for i, s in enumerate(used)]
    heapq.heapify(heap)
    node = used.size
    while len(heap) > 1:
        fa, a = heapq.heappop(heap)
        fb, b = heapq.heappop(heap)
        parent[a] = parent[b] = node
        heapq.heappush(heap, (fa + fb, node))
        node += 1
    depth = np.zeros(parent.size, dtype=np.int64)
    for i in range(parent.size - 2, -1, -1):  # parents have larger ids: walk root -> leaves
        depth[i] = depth[parent[i]] + 1
    lengths[used] = depth[: used.size]
    if lengths.max() > MAX_CODE_LENGTH:
        raise ValueError(f"Huffman code longer than {MAX_CODE_LENGTH} bits; stream too skewed")
    return lengths.astype(np.uint8)


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical codes (uint64, right-aligned) for the given code lengths; 0 where length is 0.

    Example:
        >>> [format(int(c), "b") for c in canonical_codes(np.array([1, 3, 3, 2]))]
        ['0', '110', '111', '10']
    """
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    codes = np.zeros(lengths.size, dtype=np.uint64)
    order = _canonical_order(lengths)
    code, prev = 0, 0
    for rank, sym in enumerate(order):
        length = int(lengths[sym])
        if rank:
            code = (code + 1) << (length - prev)
        prev = length
        codes[sym] = code
    return codes


def _canonical_order(lengths: np.ndarray) -> np.ndarray:
    used = np.flatnonzero(lengths)
    return used[np.argsort(lengths[used], kind="stable")]


def _check_kraft(lengths: np.ndarray) -> None:
    used = lengths[lengths > 0].astype(np.int64)
    if used.size == 0:
        return
    if used.max() > MAX_CODE_LENGTH:
        raise ValueError(f"code length {used.max()} exceeds {MAX_CODE_LENGTH}")
    kraft = sum(1 << (MAX_CODE_LENGTH - int(n)) for n in used)
    full = 1 << MAX_CODE_LENGTH
    if kraft > full or (used.size > 1 and kraft != full):
        raise ValueError("code lengths do not form a complete prefix code")


def huffman_bits(freqs: np.ndarray) -> int:
    """Total payload bits of a Huffman coding of symbols with these frequencies."""
    freqs = np.asarray(freqs, dtype=np.int64)
    return int((code_lengths(freqs).astype(np.int64) * freqs).sum())


def huffman_encode(symbols: np.ndarray, alphabet_size: int) -> bytes:
    """Encode integer symbols in ``[0, alphabet_size)`` with a canonical Huffman code.

    Args:
        symbols: 1-D array of non-negative integers.
        alphabet_size: number of possible symbols (``2**bits``); sets the length-table size.

    Example:
        >>> data = huffman_encode(np.array([0, 0, 0, 1]), 2)
        >>> huffman_decode(data, 2, 4).tolist()
        [0, 0, 0, 1]
    """
    sym = np.asarray(symbols, dtype=np.int64).reshape(-1)
    if sym.size and (sym.min() < 0 or sym.max() >= alphabet_size):
        raise ValueError(f"symbols must lie in [0, {alphabet_size})")
    freqs = np.bincount(sym, minlength=alphabet_size)
    lengths = code_lengths(freqs)
    codes = canonical_codes(lengths)
    table = lengths.astype(np.uint8).tobytes()
    parts = []
    for start in range(0, sym.size, _CHUNK):
        chunk = sym[start : start + _CHUNK]
        sl = lengths[chunk].astype(np.int64)
        sc = codes[chunk]
        owner = np.repeat(np.arange(chunk.size), sl)
        offset = np.arange(owner.size) - (np.cumsum(sl) - sl)[owner]
        shift = (sl[owner] - 1 - offset).astype(np.uint64)
        parts.append(((sc[owner] >> shift) & np.uint64(1)).astype(np.uint8))
    stream = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
    return table + np.packbits(stream).tobytes()


def huffman_decode(data: bytes | memoryview, alphabet_size: int, count: int) -> np.ndarray:
    """Inverse of :func:`huffman_encode`: decode ``count`` symbols (returns int64).

    Decoding is vectorised: the symbol starting at *every* bit offset is looked up at once
    (canonical codes left-aligned are increasing, so a ``searchsorted`` finds them), then the
    chain of real symbol starts is followed with a few pointer doublings (:func:`_follow_chain`).
    """
    data = memoryview(data).cast("B")
    if not 1 <= alphabet_size <= 1 << 16:
        raise ValueError(f"alphabet_size must be in 1..65536, got {alphabet_size}")
    if len(data) < alphabet_size:
        raise ValueError(f"Huffman stream shorter than its {alphabet_size}-byte length table")
    # Bound every allocation below by the stream: a code takes at least one bit.
    if not 0 <= count <= 8 * (len(data) - alphabet_size):
        raise ValueError(
            f"a {len(data)}-byte Huffman stream cannot hold {count} symbols; the data is corrupted"
        )
    lengths = np.frombuffer(data[:alphabet_size], dtype=np.uint8).astype(np.int64)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    _check_kraft(lengths)
    order = _canonical_order(lengths)
    if order.size == 0:
        raise ValueError("Huffman length table is empty but symbols were expected")
    codes = canonical_codes(lengths)
    width = int(lengths.max())
    left = codes[order] << (width - lengths[order]).astype(np.uint64)
    payload = np.frombuffer(data[alphabet_size:], dtype=np.uint8)
    total = payload.size * 8
    if total < count * int(lengths[order].min()):
        raise ValueError("Huffman stream is shorter than the symbol count requires")
    # 64-bit big-endian window at every byte offset, then at every bit offset.
    padded = np.concatenate([payload, np.zeros(8, np.uint8)]).astype(np.uint64)
    byte_win = np.zeros(payload.size, dtype=np.uint64)
    for j in range(8):
        byte_win = (byte_win << np.uint64(8)) | padded[j : j + payload.size]
    lut = None
    if width <= 16:  # a table from every width-bit window to its code's rank beats searchsorted
        spans = np.diff(np.append(left, np.uint64(1 << width))).astype(np.int64)
        lut = np.repeat(np.arange(order.size), spans)
    # Narrow dtypes: these arrays have one entry per payload *bit*.
    nxt = np.empty(total + 1, dtype=np.int32 if total < 2**31 - 1 else np.int64)
    sym_at = np.empty(total, dtype=np.min_scalar_type(alphabet_size - 1))
    for start in range(0, total, _CHUNK * 8):
        bit = np.arange(start, min(total, start + _CHUNK * 8), dtype=np.int64)
        win = (byte_win[bit >> 3] << (bit & 7).astype(np.uint64)) >> np.uint64(64 - width)
        rank = lut[win] if lut is not None else np.searchsorted(left, win, side="right") - 1
        sym_at[bit] = order[rank]
        nxt[bit] = np.minimum(bit + lengths[order[rank]], total)
    nxt[total] = total
    starts = _follow_chain(nxt, count)
    if starts[-1] >= total or starts[-1] + lengths[sym_at[starts[-1]]] > total:
        raise ValueError("Huffman stream ends before all symbols were decoded")
    return sym_at[starts].astype(np.int64)


def _follow_chain(nxt: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` positions of the chain ``0, nxt[0], nxt[nxt[0]], ...``.

    ``d`` doublings give ``nxt^(2^d)`` (each a pass over all bit positions); the chain is then
    walked in strides of ``2^d`` by a Python loop and the strides are filled in vectorised.
    ``d`` balances the passes (~15 ns per bit) against the loop (~700 ns per stride).
    """
    costs = [d * nxt.size * 15e-9 + (count >> d) * 700e-9 for d in range(count.bit_length())]
    doublings = int(np.argmin(costs)) if costs else 0
    jump = nxt
    for _ in range(doublings):
        jump = jump[jump]
    stride = 1 << doublings
    anchors = np.empty(-(-count // stride), dtype=np.int64)
    pos = 0
    for i in range(anchors.size):
        anchors[i] = pos
        pos = int(jump[pos])
    block = np.empty((anchors.size, stride), dtype=np.int64)
    cur = anchors
    for j in range(stride):
        block[:, j] = cur
        cur = nxt[cur]
    return block.reshape(-1)[:count]
