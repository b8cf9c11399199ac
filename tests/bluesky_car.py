"""Build real Bluesky repository exports (CAR v1 files) for tests.

Blocks are DAG-CBOR encoded by libipld, as a PDS writes them; the records sit
in a Merkle Search Tree laid out as the AT Protocol repository spec says: a
key's layer is the number of leading zero bits of SHA-256(key) halved, each
node holds the keys of its layer, and the keys between them hang in subtrees
one layer down, with each key stored as (shared prefix length, suffix).
"""

from __future__ import annotations

import hashlib

import libipld

OWNER = "did:plc:policyfan7xq2ldkjw3"
OTHER = "did:plc:someoneelse4kd9s2m"


def cid_of(block: bytes) -> bytes:
    """CIDv1, DAG-CBOR codec (0x71), SHA2-256 multihash (0x12, 32 bytes): the repository's CIDs."""
    return bytes([0x01, 0x71, 0x12, 0x20]) + hashlib.sha256(block).digest()


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def key_layer(key: str) -> int:
    digest = hashlib.sha256(key.encode()).digest()
    zeros = 0
    for byte in digest:
        if byte == 0:
            zeros += 8
            continue
        zeros += 8 - byte.bit_length()
        break
    return zeros // 2


class Repository:
    """Records of one account, written out as a CAR export."""

    def __init__(self, did: str = OWNER):
        self.did = did
        self.records: dict[str, dict] = {}

    def post(self, rkey: str, text: str, created_at: str, *, parent: str | None = None, root: str | None = None, **fields) -> str:
        """Add a post; ``parent``/``root`` are at:// URIs. Returns the post's at:// URI."""
        record = {"$type": "app.bsky.feed.post", "text": text, "createdAt": created_at, "langs": ["en"], **fields}
        if parent is not None:
            record["reply"] = {"parent": {"uri": parent, "cid": self._any_cid()}, "root": {"uri": root or parent, "cid": self._any_cid()}}
        self.records[f"app.bsky.feed.post/{rkey}"] = record
        return self.uri(rkey)

    def uri(self, rkey: str, did: str | None = None) -> str:
        return f"at://{did or self.did}/app.bsky.feed.post/{rkey}"

    def repost(self, rkey: str, subject: str) -> None:
        self.records[f"app.bsky.feed.repost/{rkey}"] = {
            "$type": "app.bsky.feed.repost", "subject": {"uri": subject, "cid": self._any_cid()}, "createdAt": "2024-05-02T10:00:00.000Z",
        }

    def like(self, rkey: str, subject: str) -> None:
        self.records[f"app.bsky.feed.like/{rkey}"] = {
            "$type": "app.bsky.feed.like", "subject": {"uri": subject, "cid": self._any_cid()}, "createdAt": "2024-05-02T10:00:00.000Z",
        }

    def profile(self, display_name: str) -> None:
        self.records["app.bsky.actor.profile/self"] = {"$type": "app.bsky.actor.profile", "displayName": display_name}

    def car(self) -> bytes:
        """The repository as CAR v1 bytes: header, commit, MST nodes, records."""
        blocks: dict[bytes, bytes] = {}

        def put(value) -> bytes:
            block = libipld.encode_dag_cbor(value)
            cid = cid_of(block)
            blocks[cid] = block
            return cid

        entries = sorted((key, put(record)) for key, record in self.records.items())
        tree_root = build_tree(entries, put)
        commit = put({"did": self.did, "version": 3, "data": tree_root, "rev": "3l2zzzzzzzz2a", "prev": None, "sig": b"\x01" * 64})
        header = libipld.encode_dag_cbor({"roots": [commit], "version": 1})
        parts = [varint(len(header)), header]
        # The commit first, as a PDS streams it; readers must not depend on order anyway.
        for cid in [commit, *[c for c in blocks if c != commit]]:
            parts += [varint(len(cid) + len(blocks[cid])), cid, blocks[cid]]
        return b"".join(parts)

    @staticmethod
    def _any_cid() -> bytes:
        return cid_of(b"not in this repository")


def build_tree(entries: list[tuple[str, bytes]], put) -> bytes:
    """The MST of sorted ``(key, record CID)`` pairs; returns the root node's CID."""
    layered = [(key, cid, key_layer(key)) for key, cid in entries]
    top = max((layer for _, _, layer in layered), default=0)
    return _node(layered, top, put)


def _node(items, layer, put) -> bytes:
    node = {"l": None, "e": []}
    pending: list = []
    previous = b""

    def subtree():
        return _node(pending, layer - 1, put) if pending else None

    for key, cid, key_layer_ in items:
        if key_layer_ < layer:
            pending.append((key, cid, key_layer_))
            continue
        below = subtree()
        pending = []
        if node["e"]:
            node["e"][-1]["t"] = below
        else:
            node["l"] = below
        key_bytes = key.encode()
        shared = 0
        while shared < min(len(previous), len(key_bytes)) and previous[shared] == key_bytes[shared]:
            shared += 1
        node["e"].append({"p": shared, "k": key_bytes[shared:], "v": cid, "t": None})
        previous = key_bytes
    below = subtree()
    if node["e"]:
        node["e"][-1]["t"] = below
    else:
        node["l"] = below
    return put(node)


def link_facet(text: str, shown: str, uri: str) -> dict:
    """A link facet over ``shown`` in ``text``: offsets in UTF-8 bytes, as the lexicon says."""
    start = text.encode().index(shown.encode())
    return {"index": {"byteStart": start, "byteEnd": start + len(shown.encode())},
            "features": [{"$type": "app.bsky.richtext.facet#link", "uri": uri}]}


def sample_repository() -> Repository:
    """A thread of three, a reply to someone else, a repost, a like, an emoji, deleted parents."""
    repo = Repository()
    repo.profile("Policy Fan")
    root = repo.post("3kthread0001a", "Compute thresholds are a blunt tool for AI governance.", "2024-05-01T09:00:00.000Z")
    second = repo.post("3kthread0002a", "They track training cost, not capability.", "2024-05-01T09:01:00.000Z", parent=root, root=root)
    text = "Still, better than nothing 🧵🇪🇺 see example.com/eu-ai-act/artic..."
    repo.post("3kthread0003a", text, "2024-05-01T09:02:00.000Z", parent=second, root=root,
              facets=[link_facet(text, "example.com/eu-ai-act/artic...", "https://example.com/eu-ai-act/article-51")])
    # A reply to a post of the thread that was since deleted: it stays in the thread.
    repo.post("3kthread0005a", "Addendum: the EU threshold is 10^25 FLOP.", "2024-05-01T10:00:00.000Z",
              parent=repo.uri("3kthread0004a"), root=root)
    other = repo.uri("3kotherpost1a", did=OTHER)
    repo.post("3kreplyother1a", "I disagree: evals matter more than FLOP.", "2024-05-03T12:00:00.000Z", parent=other, root=other)
    # Two replies to a deleted thread start: they share a thread of their own.
    gone = repo.uri("3kgoneroot01a")
    orphan = repo.post("3korphan0001a", "Part two of a thread whose start I deleted.", "2024-05-04T08:00:00.000Z", parent=gone, root=gone)
    repo.post("3korphan0002a", "Part three.", "2024-05-04T08:01:00.000Z", parent=orphan, root=gone)
    repo.post("3kimageonly1a", "", "2024-05-05T08:00:00.000Z")
    repo.repost("3krepost0001a", other)
    repo.like("3klike00001a", other)
    return repo
