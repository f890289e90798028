"""Stratified permuted-block allocation lists, generated deterministically from a seed.

This module is pure: no Flask, no database, no sealing. It turns a seed and the study's
randomization parameters into a stream of :class:`Slot` objects, fingerprints a list, and
checks an imported list. The algorithm below is versioned as :data:`ALGORITHM_VERSION`; any
change to what it produces for given inputs needs a new version string.

Algorithm ``pbr-chacha20-v1`` (permuted blocks, ChaCha20 byte stream)
---------------------------------------------------------------------

Inputs: a 32-byte seed ``S``; an ordered list of strata (text keys, e.g. ``CUA|isn_class=IV``);
an ordered list of arms ``(code, ratio)`` with integer ratios >= 1 and ``R`` = sum of ratios;
a set of allowed block sizes, each a positive multiple of ``R``; and a minimum number of
slots ``N`` per stratum.

1. **Stratum key.** ``K = HMAC-SHA256(key=S, msg=b"randomizer/stratum/v1" || 0x00 ||
   UTF-8(stratum))``, 32 bytes. Every stratum thus has its own independent stream.
2. **Byte stream.** The ChaCha20 keystream of RFC 8439 under key ``K`` with a 96-bit nonce
   of zero bytes and initial block counter 0, i.e. the ChaCha20 encryption of zero bytes.
   (In ``cryptography`` terms: ``algorithms.ChaCha20(K, bytes(16))``, whose 16-byte nonce is
   the 32-bit little-endian counter followed by the 96-bit nonce. For the first 2**32
   blocks this equals the original 64-bit-nonce ChaCha20 with nonce and counter zero.)
   Check: for ``K = bytes(32)`` the stream starts ``76 b8 e0 ad a0 f1 3d 90`` (RFC 8439
   appendix A.1, test vector 1). Bytes are consumed strictly in order, never reused.
3. **Uniform integer** ``randbelow(n)`` for ``n >= 1``: if ``n == 1`` the result is 0 and no
   bytes are consumed. Otherwise let ``k`` = bit length of ``n - 1`` and ``m = ceil(k / 8)``.
   Repeat: take the next ``m`` bytes, read them as an unsigned big-endian integer ``x``, keep
   its ``k`` lowest bits (``x mod 2**k``); if that is ``< n`` return it, else discard it and
   repeat. (Rejection sampling: every value in ``0..n-1`` is exactly equally likely.)
4. **Shuffle** (Fisher–Yates, Durstenfeld's form) of a list of length ``L``: for ``i`` from
   ``L - 1`` down to 1: ``j = randbelow(i + 1)``; swap the items at positions ``i`` and ``j``.
5. **Blocks.** Let ``sizes`` be the allowed sizes in ascending order. Blocks are numbered
   1, 2, ... For each block: ``size = sizes[randbelow(len(sizes))]``; build the list in which
   each arm, in the order given, appears ``ratio * size / R`` times consecutively; shuffle it;
   the block's slots are that list in order, with sequence numbers continuing from the
   previous block (the stratum's first slot is sequence 1). Generation stops after the first
   block that brings the stratum to at least ``N`` slots (``N = 0`` gives no blocks); blocks
   are never cut. Hence the stratum generated for ``N`` is a prefix of the same stratum
   generated for any larger ``N``: a list can be extended without changing what exists.
6. **Fingerprint.** SHA-256 (lowercase hex) of the concatenation of one canonical line per
   slot, ``f"{stratum}\\t{block}\\t{block_size}\\t{sequence}\\t{arm}\\n"`` in UTF-8 with
   decimal integers, taken with the strata in the order given and, inside a stratum, by
   sequence. Strata and arm codes may not contain tab, CR or LF, so the encoding is
   unambiguous.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

ALGORITHM_VERSION = "pbr-chacha20-v1"

#: Length in bytes of a list seed and of a generator key (256 bits).
SEED_BYTES = 32

_STRATUM_LABEL = b"randomizer/stratum/v1\x00"

# One ChaCha20 call per 64 KiB: the per-call overhead of `cryptography` dwarfs the cipher
# itself for small requests, and a list of a million slots needs only a few MiB of stream.
_CHUNK = 64 * 1024
_ZEROS = bytes(_CHUNK)

# Characters that would make a canonical line ambiguous.
_SEPARATORS = frozenset("\t\r\n")

T = TypeVar("T")


class Generator:
    """Deterministic CSPRNG: the ChaCha20 keystream of a 32-byte key, read in order."""

    __slots__ = ("_buf", "_encryptor", "_pos", "_zeros")

    def __init__(self, key: bytes, *, chunk: int = _CHUNK) -> None:
        """``chunk``: keystream bytes made per refill (a short stream needs few)."""
        if len(key) != SEED_BYTES:
            raise ValueError(f"generator key must be {SEED_BYTES} bytes, got {len(key)}")
        # Zero nonce and counter are safe because every key is used for exactly one stream.
        cipher = Cipher(algorithms.ChaCha20(bytes(key), bytes(16)), mode=None)
        self._encryptor = cipher.encryptor()
        self._buf = b""
        self._pos = 0
        self._zeros = _ZEROS if chunk == _CHUNK else bytes(chunk)

    def _refill(self, need: int) -> None:
        # Keep the unread tail so that the logical stream does not depend on the chunk size.
        buf = self._buf[self._pos :]
        while len(buf) < need:
            buf += self._encryptor.update(self._zeros)
        self._buf = buf
        self._pos = 0

    def randbytes(self, n: int) -> bytes:
        """Return the next ``n`` bytes of the keystream."""
        if n < 0:
            raise ValueError(f"byte count must be >= 0, got {n}")
        if self._pos + n > len(self._buf):
            self._refill(n)
        pos = self._pos
        self._pos = pos + n
        return self._buf[pos : pos + n]

    def randbelow(self, n: int) -> int:
        """Return a uniform integer in ``[0, n)`` by rejection sampling (no modulo bias)."""
        if n < 1:
            raise ValueError(f"randbelow needs n >= 1, got {n}")
        if n == 1:
            return 0
        bits = (n - 1).bit_length()
        mask = (1 << bits) - 1
        if bits <= 8:
            # Fast path for the small bounds of block shuffles: one byte per try, no slicing.
            while True:
                if self._pos >= len(self._buf):
                    self._refill(1)
                r = self._buf[self._pos] & mask
                self._pos += 1
                if r < n:
                    return r
        nbytes = (bits + 7) >> 3
        while True:
            r = int.from_bytes(self.randbytes(nbytes), "big") & mask
            if r < n:
                return r

    def shuffle(self, items: list[T]) -> None:
        """Shuffle ``items`` in place with Fisher–Yates, every permutation equally likely."""
        randbelow = self.randbelow
        for i in range(len(items) - 1, 0, -1):
            j = randbelow(i + 1)
            items[i], items[j] = items[j], items[i]

    def choice(self, seq: Sequence[T]) -> T:
        """Return a uniformly chosen element of the non-empty ``seq``."""
        if not seq:
            raise IndexError("cannot choose from an empty sequence")
        return seq[self.randbelow(len(seq))]


def stratum_generator(seed: bytes, stratum: str) -> Generator:
    """Return the independent generator of one stratum, keyed by HMAC-SHA256 of the seed."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"seed must be {SEED_BYTES} bytes, got {len(seed)}")
    key = hmac.digest(seed, _STRATUM_LABEL + stratum.encode("utf-8"), hashlib.sha256)
    return Generator(key)


@dataclass(frozen=True, slots=True)
class ArmRatio:
    """An arm code and its integer share of each block."""

    code: str
    ratio: int


@dataclass(frozen=True, slots=True)
class Slot:
    """One position of the allocation list."""

    stratum: str
    #: 1-based block number inside the stratum.
    block: int
    block_size: int
    #: 1-based position inside the stratum.
    sequence: int
    arm: str


def new_seed() -> bytes:
    """Return a fresh 256-bit seed from the operating system's CSPRNG."""
    return secrets.token_bytes(SEED_BYTES)


def validate_parameters(arms: Sequence[ArmRatio], block_sizes: Sequence[int]) -> None:
    """Raise ``ValueError`` unless the arms and block sizes can make permuted blocks."""
    if not arms:
        raise ValueError("at least one arm is required")
    seen: set[str] = set()
    for arm in arms:
        if not arm.code or _SEPARATORS.intersection(arm.code):
            raise ValueError(f"arm code {arm.code!r} must be non-empty without tabs or newlines")
        if arm.code in seen:
            raise ValueError(f"arm code {arm.code!r} is given more than once")
        seen.add(arm.code)
        if arm.ratio < 1:
            raise ValueError(f"arm {arm.code!r} has ratio {arm.ratio}; ratios must be >= 1")
    if not block_sizes:
        raise ValueError("at least one block size is required")
    ratio_sum = sum(arm.ratio for arm in arms)
    for size in block_sizes:
        if size < 1 or size % ratio_sum:
            raise ValueError(
                f"block size {size} is not a positive multiple of the ratio sum {ratio_sum}"
            )
    if len(set(block_sizes)) != len(block_sizes):
        raise ValueError(f"block sizes {list(block_sizes)} contain duplicates")


def _validate_stratum(stratum: str) -> None:
    if _SEPARATORS.intersection(stratum):
        raise ValueError(f"stratum {stratum!r} must not contain tabs or newlines")


def generate_stratum(
    seed: bytes,
    stratum: str,
    arms: Sequence[ArmRatio],
    block_sizes: Sequence[int],
    *,
    min_slots: int,
) -> Iterator[Slot]:
    """Yield whole blocks of one stratum until at least ``min_slots`` slots were yielded."""
    # Validate here rather than inside the generator body, so bad input fails at the call
    # and not at the first ``next()``, possibly far away.
    validate_parameters(arms, block_sizes)
    _validate_stratum(stratum)
    if min_slots < 0:
        raise ValueError(f"min_slots must be >= 0, got {min_slots}")
    rng = stratum_generator(seed, stratum)
    return _blocks(rng, stratum, list(arms), sorted(block_sizes), min_slots)


def _blocks(
    rng: Generator, stratum: str, arms: list[ArmRatio], sizes: list[int], min_slots: int
) -> Iterator[Slot]:
    ratio_sum = sum(arm.ratio for arm in arms)
    # Block contents per size, computed once: only the shuffle differs between blocks.
    templates = {
        size: [arm.code for arm in arms for _ in range(arm.ratio * (size // ratio_sum))]
        for size in sizes
    }
    n_sizes = len(sizes)
    randbelow, shuffle = rng.randbelow, rng.shuffle
    sequence = 0
    block = 0
    while sequence < min_slots:
        block += 1
        size = sizes[randbelow(n_sizes)]
        contents = templates[size][:]
        shuffle(contents)
        for arm in contents:
            sequence += 1
            yield Slot(stratum, block, size, sequence, arm)


def generate(
    seed: bytes,
    strata: Sequence[str],
    arms: Sequence[ArmRatio],
    block_sizes: Sequence[int],
    *,
    per_stratum: int,
) -> Iterator[Slot]:
    """Yield the list of every stratum in the order given, each at least ``per_stratum`` long."""
    if len(set(strata)) != len(strata):
        raise ValueError("strata contain duplicates")
    # Build every stratum's iterator up front so that all input is validated at the call.
    streams = [
        generate_stratum(seed, stratum, arms, block_sizes, min_slots=per_stratum)
        for stratum in strata
    ]
    return _chain(streams)


def _chain(streams: list[Iterator[Slot]]) -> Iterator[Slot]:
    for stream in streams:
        yield from stream


def canonical_line(slot: Slot) -> bytes:
    """Return the slot's line in the canonical list encoding that the fingerprint hashes."""
    return (
        f"{slot.stratum}\t{slot.block}\t{slot.block_size}\t{slot.sequence}\t{slot.arm}\n"
    ).encode()


def fingerprint(slots: Iterable[Slot]) -> str:
    """Return the SHA-256 hex of the canonical lines of ``slots``, taken in the order given."""
    # Callers must pass strata in the study's order and slots by sequence within a stratum;
    # hashing in batches keeps memory flat while avoiding one update() call per slot.
    digest = hashlib.sha256()
    batch: list[bytes] = []
    for slot in slots:
        batch.append(canonical_line(slot))
        if len(batch) >= 4096:
            digest.update(b"".join(batch))
            batch.clear()
    digest.update(b"".join(batch))
    return digest.hexdigest()


def check_blocks(
    slots: Iterable[Slot], arms: Sequence[ArmRatio], block_sizes: Sequence[int]
) -> list[str]:
    """Return messages for every structural fault of an imported list; empty when valid."""
    validate_parameters(arms, block_sizes)
    by_stratum: dict[str, list[Slot]] = {}
    for slot in slots:
        by_stratum.setdefault(slot.stratum, []).append(slot)
    errors: list[str] = []
    for stratum, members in by_stratum.items():
        if _SEPARATORS.intersection(stratum):
            errors.append(f"stratum {stratum!r}: contains a tab or newline")
        errors += _check_sequences(stratum, members)
        errors += _check_block_order(stratum, members)
        errors += _check_block_contents(stratum, members, arms, set(block_sizes))
    return errors


def _check_sequences(stratum: str, members: list[Slot]) -> list[str]:
    errors: list[str] = []
    counts = Counter(slot.sequence for slot in members)
    for sequence in sorted(counts):
        if sequence < 1:
            errors.append(f"stratum {stratum!r}: sequence {sequence} is not a positive number")
        elif counts[sequence] > 1:
            errors.append(
                f"stratum {stratum!r}: sequence {sequence} appears {counts[sequence]} times"
            )
    # Gaps are found between neighbouring present numbers, not by scanning 1..max, so that a
    # wild sequence number in an import costs nothing and a long gap gives one message.
    previous = 0
    for sequence in sorted(seq for seq in counts if seq >= 1):
        if sequence == previous + 2:
            errors.append(f"stratum {stratum!r}: sequence {previous + 1} is missing")
        elif sequence > previous + 2:
            errors.append(
                f"stratum {stratum!r}: sequences {previous + 1}–{sequence - 1} are missing"
            )
        previous = sequence
    return errors


def _check_block_order(stratum: str, members: list[Slot]) -> list[str]:
    # Walking by sequence, the block number may only stay or go up by one, starting at 1:
    # that makes blocks contiguous, ordered and numbered without gaps.
    errors: list[str] = []
    previous = 0
    for slot in sorted(members, key=lambda s: s.sequence):
        expected = (previous, previous + 1) if previous else (1,)
        if slot.block not in expected:
            errors.append(
                f"stratum {stratum!r}: sequence {slot.sequence} is in block {slot.block}, "
                f"expected block {' or '.join(str(n) for n in expected)}"
            )
        previous = slot.block
    return errors


def _check_block_contents(
    stratum: str, members: list[Slot], arms: Sequence[ArmRatio], allowed: set[int]
) -> list[str]:
    errors: list[str] = []
    ratios = {arm.code: arm.ratio for arm in arms}
    ratio_sum = sum(ratios.values())
    blocks: dict[int, list[Slot]] = {}
    for slot in members:
        blocks.setdefault(slot.block, []).append(slot)
    for number in sorted(blocks):
        block = sorted(blocks[number], key=lambda s: s.sequence)
        where = f"stratum {stratum!r}: block {number} (sequence {block[0].sequence})"
        unknown = [slot for slot in block if slot.arm not in ratios]
        errors += [
            f"stratum {stratum!r}: sequence {slot.sequence} has unknown arm {slot.arm!r}"
            for slot in unknown
        ]
        sizes = sorted({slot.block_size for slot in block})
        if len(sizes) > 1:
            errors.append(f"{where}: members disagree on block_size ({_join(sizes)})")
            continue
        size = sizes[0]
        if size not in allowed:
            errors.append(f"{where}: block size {size} is not allowed ({_join(sorted(allowed))})")
            continue
        if len(block) != size:
            errors.append(f"{where}: has {len(block)} slots, block_size is {size}")
            continue
        if unknown:
            continue  # the ratio cannot hold and the unknown arm was already reported
        counts = Counter(slot.arm for slot in block)
        expected = {code: ratio * (size // ratio_sum) for code, ratio in ratios.items()}
        if any(counts[code] != want for code, want in expected.items()):
            found = ", ".join(f"{code}={counts[code]}" for code in ratios)
            want = ", ".join(f"{code}={n}" for code, n in expected.items())
            errors.append(f"{where}: arms not in ratio ({found}; expected {want})")
    return errors


def _join(numbers: Iterable[int]) -> str:
    return ", ".join(str(n) for n in numbers)
