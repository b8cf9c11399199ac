"""How a take's token vectors are stored: int8 per component, one float32 scale per token, a checksum.

Late interaction (indexer/ranking.py) scores a candidate by MaxSim over its
token vectors. Computing them at query time is one model pass per new
candidate (2-5 ms each, about 50 a query on a large corpus), so the writers
keep the ones the indexing pass already produced. Both stores hold the same
bytes (a SQLite BLOB, a PostgreSQL bytea), so ``takes copy`` moves them as
they are.

Layout of one value, for ``n`` tokens of ``dim`` components::

    crc32 (4 bytes, little endian) | n float32 scales | n x dim int8

Each token is quantized symmetrically: scale = max|x| / 127, so the largest
component is exact and every other is within scale / 2. On the seed corpus
MaxSim moved by at most a few thousandths (docs/PERFORMANCE.md). The
checksum covers the take's text as well as the numbers: a value read back
for another text, or damaged on disk, fails and is computed again.
"""

from __future__ import annotations

import logging
import zlib

import numpy as np

logger = logging.getLogger(__name__)

_HEADER = 4
_SCALE = 4


def _checksum(text: str, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(text.encode("utf-8")))


def encode(tokens: np.ndarray, text: str) -> bytes:
    """The stored form of ``text``'s token vectors, (tokens, dim) float32."""
    tokens = np.asarray(tokens, dtype=np.float32)
    if tokens.ndim != 2 or not len(tokens):
        raise ValueError(f"token vectors must be a non-empty (tokens, dim) matrix, got shape {tokens.shape}")
    peaks = np.max(np.abs(tokens), axis=1)
    scales = np.where(peaks > 0, peaks / 127.0, 1.0).astype(np.float32)
    quantized = np.clip(np.rint(tokens / scales[:, None]), -127, 127).astype(np.int8)
    payload = scales.tobytes() + quantized.tobytes()
    return _checksum(text, payload).to_bytes(4, "little") + payload


def embed(embedder, texts: list[str], *, store: bool, progress: bool = False) -> tuple[np.ndarray, list[bytes | None]]:
    """``texts``' vectors and, when ``store`` and the embedder gives them, their stored token vectors (else None each).

    One model pass gives both: what both stores' writers run on the texts they have not embedded before.
    """
    if store and hasattr(embedder, "encode_with_token_vectors"):
        vectors, matrices = embedder.encode_with_token_vectors(texts, progress=progress)
        return vectors, [encode(tokens, text) for tokens, text in zip(matrices, texts)]
    return embedder.encode(texts, progress=progress), [None] * len(texts)


def token_count(value: bytes, dim: int) -> int | None:
    """How many tokens ``value`` holds for ``dim`` components; None when its length cannot be one."""
    body = len(value) - _HEADER
    if body <= 0 or body % (dim + _SCALE):
        return None
    return body // (dim + _SCALE)


def is_sound(value, text: str, dim: int) -> bool:
    """Whether ``value`` is a whole, undamaged stored form of ``text``'s token vectors."""
    if not isinstance(value, (bytes, memoryview)):
        return False
    value = memoryview(value)
    return token_count(value, dim) is not None and int.from_bytes(value[:_HEADER], "little") == _checksum(text, value[_HEADER:])


def decode(value, text: str, dim: int) -> np.ndarray | None:
    """``text``'s token vectors as float32 (tokens, dim), or None when ``value`` is damaged or not for ``text``."""
    if not is_sound(value, text, dim):
        return None
    count = token_count(value, dim)
    scales = np.frombuffer(value, dtype=np.float32, count=count, offset=_HEADER)
    quantized = np.frombuffer(value, dtype=np.int8, offset=_HEADER + _SCALE * count).reshape(count, dim)
    # Scaled in place: converting about 100 candidates' 2M components is most
    # of reading them.
    tokens = quantized.astype(np.float32)
    tokens *= scales[:, None]
    return tokens


def decode_rows(rows, dim: int, where: str) -> dict[int, np.ndarray]:
    """{row id: token vectors} from (row id, text, value) rows, leaving out (and logging) damaged values."""
    found: dict[int, np.ndarray] = {}
    damaged = 0
    for row_id, text, value in rows:
        tokens = decode(value, text, dim)
        if tokens is None:
            damaged += 1
            continue
        found[int(row_id)] = tokens
    if damaged:
        logger.warning("%d stored token vectors in %s fail their checksum: computed again (`takes check` lists them)", damaged, where)
    return found
