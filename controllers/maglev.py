"""Maglev consistent hashing: the lookup table every node builds alike from a chain's endpoints (pure).

Maglev (Eisenbud et al., NSDI 2016), as Cilium's kube-proxy replacement uses it with
``loadBalancer.algorithm=maglev``: a table of M slots (M prime) is filled from the endpoints alone, so
every node that has the same endpoints holds the same table, and a connection hashed to a slot gets
that slot's endpoint whichever node it enters; no state is shared between nodes. Each endpoint walks its
own permutation of the slots, ``offset + j * skip (mod M)``, with offset and skip from two hashes of its
identity (``podIP:port``); the endpoints take turns claiming their next free slot until the table is
full. So every endpoint gets M/N slots, give or take one, and when one endpoint goes the others keep
nearly all of their slots (only the leaving one's slots, and a few more, change hands).

Why M = 1021: Cilium accepts the primes 251, 509, 1021, 2039, 4093, 8191, 16381 (its default),
32749, 65521 and 131071, and asks for M > 100 * N. That is the paper's rule for balance: each endpoint
takes floor(M/N) or ceil(M/N) slots, so with M > 100 * N the shares differ by at most 1 % (Cilium's
documentation reads it as "at most 1 % difference in the reassignments on backend changes"). The lab's
Services have 2 to 10 endpoints, so 1021 is the smallest size that keeps the shares within 1 % for all of
them. Reassignment is measured (``bench/maglev_table.py``): when one of N endpoints goes, besides its own
slots, 0.4 % of the table changes hands at N = 3, 1.1 % at 4, 1.9 % at 6, 4.0 % at 10 (at 16381: 0.05 %,
0.2 %, 0.6 %, 0.7 %). Each slot is one flow per chain on every node (``controllers.pipeline_maglev``):
1021 per chain against 16381 with Cilium's default, which would make a six-node lab hold about 100,000
flows for one Service port. The size does not adapt to N: a change of M would move almost every
connection, the opposite of what Maglev is for.

The hashes are SHA-256 of the identity with a fixed seed, never Python's ``hash()``, which is salted
per process: the seed plays Cilium's ``maglev.hashSeed``, which must be the same on every node.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable

TABLE_SIZE = 1021  # M: prime, > 100 x the lab's largest endpoint count (see above)
SUPPORTED_SIZES = (251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071)  # Cilium's maglev.tableSize
HASH_SEED = b"nodeport-lab maglev"  # Cilium's maglev.hashSeed: the same on every node


def identity(ip: str, port: int) -> str:
    """What an endpoint is known by in the table: its address and port, as Cilium's backends are."""
    return f"{ip}:{port}"


def permutation(backend: str, size: int = TABLE_SIZE) -> tuple[int, int]:
    """(offset, skip): the backend's preferred slots are ``offset + j * skip (mod size)``, j = 0, 1, ...
    Since ``size`` is prime and 0 < skip < size, that visits every slot once."""
    digest = hashlib.sha256(HASH_SEED + backend.encode()).digest()
    h1, h2 = int.from_bytes(digest[:8], "big"), int.from_bytes(digest[8:16], "big")
    return h1 % size, h2 % (size - 1) + 1


def lookup_table(backends: Iterable[str], size: int = TABLE_SIZE) -> tuple[str, ...]:
    """Slot -> backend for these backends (any order, duplicates ignored): the paper's ``Populate``.

    The backends take turns in sorted order, so the table depends on the set alone (Cilium sorts its
    backends too): the nodes need not agree on an order."""
    return _table(tuple(sorted(set(backends))), size)


@functools.lru_cache(maxsize=4096)
def _table(backends: tuple[str, ...], size: int) -> tuple[str, ...]:
    if not backends:
        return ()
    if not _is_prime(size):
        raise ValueError(f"a Maglev table's size must be prime, not {size}")
    return tuple(backends[i] for i in populate([permutation(b, size) for b in backends], size))


def populate(perms: list[tuple[int, int]], size: int) -> list[int]:
    """The paper's ``Populate``: slot -> index of the backend whose (offset, skip) claimed it."""
    following = [0] * len(perms)  # how far along its permutation each backend is
    entry: list[int] = [-1] * size
    filled = 0
    while True:
        for i, (offset, skip) in enumerate(perms):
            slot = (offset + following[i] * skip) % size
            while entry[slot] >= 0:
                following[i] += 1
                slot = (offset + following[i] * skip) % size
            entry[slot] = i
            following[i] += 1
            filled += 1
            if filled == size:
                return entry


def _is_prime(n: int) -> bool:
    return n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1))


def moved(before: tuple[str, ...], after: tuple[str, ...]) -> int:
    """How many slots name another backend in ``after`` than in ``before`` (the connections remapped)."""
    return sum(a != b for a, b in zip(before, after, strict=True))
