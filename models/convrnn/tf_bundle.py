"""Read TensorFlow tensor bundles (``model.ckpt.index`` + ``model.ckpt.data-*``) with numpy
only, verifying every tensor's crc32c.

The ``.index`` file is a LevelDB-style sorted table: a 48-byte footer (metaindex and index
block handles as varints, padding, magic 0xdb4775248b80fb57), an index block whose entries
point at data blocks, and data blocks of prefix-compressed key/value entries closed by a
restart array; every block is followed by a 1-byte type and a masked crc32c. Key ``""``
holds a ``BundleHeaderProto``; every other key is a tensor name whose value is a
``BundleEntryProto`` (dtype, shape, shard, offset, size, masked crc32c). A ``.data-*``
shard holds the raw little-endian C-order bytes of its tensors.

    from convrnn.tf_bundle import read_bundle
    tensors = read_bundle("ckpts/rgc_intermediate/model.ckpt")   # {name: np.ndarray}
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_LEN = 48
BLOCK_TRAILER_LEN = 5
_MASK_DELTA = 0xA282EAD8

# tensorflow/core/framework/types.proto; strings and other variable-size types are refused
DTYPES = {
    1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8,
    9: np.int64, 10: np.bool_, 17: np.uint16, 19: np.float16, 22: np.uint32, 23: np.uint64,
}


class BundleError(ValueError):
    """The files are not a readable, intact tensor bundle."""


# ----------------------------------------------------------------------------- crc32c
def _crc32c_table() -> List[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c_python(data: bytes, crc: int = 0) -> int:
    """Reference crc32c (Castagnoli), one byte at a time: for small data and for checking
    the fast implementation."""
    c = crc ^ 0xFFFFFFFF
    t = _TABLE
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def crc32c(data) -> int:
    """crc32c of bytes-like ``data``; uses the ``google-crc32c`` C extension when it is
    installed (a released checkpoint is hundreds of MB, far too slow byte by byte)."""
    try:
        import google_crc32c
    except ImportError:  # pragma: no cover - the pinned requirement provides it
        return crc32c_python(bytes(data))
    return google_crc32c.value(bytes(data))


def unmask_crc(masked: int) -> int:
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


# ----------------------------------------------------------------------------- protobuf
def _varint(buf: bytes, pos: int) -> Tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise BundleError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise BundleError("varint too long")


def _fields(buf: bytes) -> Iterator[Tuple[int, int, object]]:
    """Yield (field number, wire type, value) of a protobuf message; length-delimited
    values are bytes, fixed32/64 are ints."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, pos = _varint(buf, pos)
        elif wt == 1:
            val = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wt == 2:
            n, pos = _varint(buf, pos)
            val = buf[pos:pos + n]
            if len(val) != n:
                raise BundleError("truncated field")
            pos += n
        elif wt == 5:
            val = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        else:
            raise BundleError("unsupported protobuf wire type %d" % wt)
        yield num, wt, val


@dataclass
class Entry:
    """A ``BundleEntryProto``."""
    name: str
    dtype: int = 0
    shape: Tuple[int, ...] = ()
    shard_id: int = 0
    offset: int = 0
    size: int = 0
    crc32c: Optional[int] = None  # unmasked
    sliced: bool = False


@dataclass
class Header:
    """A ``BundleHeaderProto``."""
    num_shards: int = 0
    endianness: int = 0  # 0 = little
    version: Dict[str, int] = field(default_factory=dict)


def _parse_shape(buf: bytes) -> Tuple[int, ...]:
    dims = []
    for num, _, val in _fields(buf):
        if num == 2:  # Dim
            size = 0
            for n2, _, v2 in _fields(val):
                if n2 == 1:
                    size = v2
            dims.append(size)
        elif num == 3 and val:
            raise BundleError("unknown rank shape")
    return tuple(dims)


def _parse_entry(name: str, buf: bytes) -> Entry:
    e = Entry(name)
    for num, _, val in _fields(buf):
        if num == 1:
            e.dtype = val
        elif num == 2:
            e.shape = _parse_shape(val)
        elif num == 3:
            e.shard_id = val
        elif num == 4:
            e.offset = val
        elif num == 5:
            e.size = val
        elif num == 6:
            e.crc32c = unmask_crc(val)
        elif num == 7:
            e.sliced = True
    return e


def _parse_header(buf: bytes) -> Header:
    h = Header()
    for num, _, val in _fields(buf):
        if num == 1:
            h.num_shards = val
        elif num == 2:
            h.endianness = val
        elif num == 3:
            for n2, _, v2 in _fields(val):
                h.version[{1: "producer", 2: "min_consumer"}.get(n2, str(n2))] = v2
    return h


# ----------------------------------------------------------------------------- table
def _read_block(data: bytes, offset: int, size: int) -> bytes:
    end = offset + size + BLOCK_TRAILER_LEN
    if offset < 0 or end > len(data):
        raise BundleError("block handle out of range")
    block = data[offset:offset + size]
    btype = data[offset + size]
    (masked,) = struct.unpack_from("<I", data, offset + size + 1)
    if crc32c(block + bytes([btype])) != unmask_crc(masked):
        raise BundleError("index block at %d: crc32c mismatch" % offset)
    if btype != 0:
        raise BundleError("compressed index blocks (type %d) are not supported" % btype)
    return block


def _block_entries(block: bytes) -> Iterator[Tuple[bytes, bytes]]:
    if len(block) < 4:
        raise BundleError("block too short")
    (nrestarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 - 4 * nrestarts
    if limit < 0:
        raise BundleError("bad restart count")
    pos, key = 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        vlen, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + vlen > limit:
            raise BundleError("corrupt block entry")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        yield key, block[pos:pos + vlen]
        pos += vlen


def read_index(prefix: str) -> Tuple[Header, Dict[str, Entry]]:
    """Parse ``<prefix>.index``: the bundle header and one Entry per tensor name."""
    with open(prefix + ".index", "rb") as f:
        data = f.read()
    if len(data) < FOOTER_LEN:
        raise BundleError("%s.index is too short" % prefix)
    footer = data[-FOOTER_LEN:]
    (magic,) = struct.unpack_from("<Q", footer, 40)
    if magic != TABLE_MAGIC:
        raise BundleError("%s.index: bad table magic" % prefix)
    pos = 0
    _meta_off, pos = _varint(footer, pos)
    _meta_size, pos = _varint(footer, pos)
    idx_off, pos = _varint(footer, pos)
    idx_size, pos = _varint(footer, pos)
    header, entries = None, {}
    for _, handle in _block_entries(_read_block(data, idx_off, idx_size)):
        off, p = _varint(handle, 0)
        size, _ = _varint(handle, p)
        for key, val in _block_entries(_read_block(data, off, size)):
            if key == b"":
                header = _parse_header(val)
            else:
                name = key.decode("utf-8")
                entries[name] = _parse_entry(name, val)
    if header is None:
        raise BundleError("%s.index has no bundle header" % prefix)
    if header.endianness != 0:
        raise BundleError("big-endian bundles are not supported")
    return header, entries


def shard_path(prefix: str, shard: int, num_shards: int) -> str:
    return "%s.data-%05d-of-%05d" % (prefix, shard, num_shards)


def read_bundle(prefix: str, names=None, verify: bool = True) -> Dict[str, np.ndarray]:
    """All tensors (or only ``names``) of the bundle at ``prefix`` as numpy arrays, each one's
    crc32c checked against the index (``BundleError`` on any mismatch)."""
    header, entries = read_index(prefix)
    want = sorted(entries) if names is None else list(names)
    missing = [n for n in want if n not in entries]
    if missing:
        raise KeyError("not in %s: %s" % (prefix, ", ".join(missing)))
    out: Dict[str, np.ndarray] = {}
    files = {}
    try:
        for name in want:
            e = entries[name]
            if e.sliced:
                raise BundleError("%s: partitioned (sliced) variables are not supported" % name)
            if e.dtype not in DTYPES:
                raise BundleError("%s: unsupported dtype %d" % (name, e.dtype))
            dt = np.dtype(DTYPES[e.dtype]).newbyteorder("<")
            count = int(np.prod(e.shape, dtype=np.int64))
            if count * dt.itemsize != e.size:
                raise BundleError("%s: size %d does not match shape %s" % (name, e.size, e.shape))
            if e.shard_id not in files:
                files[e.shard_id] = open(shard_path(prefix, e.shard_id, header.num_shards), "rb")
            f = files[e.shard_id]
            f.seek(e.offset)
            raw = f.read(e.size)
            if len(raw) != e.size:
                raise BundleError("%s: data shard is truncated" % name)
            if verify and e.crc32c is not None and crc32c(raw) != e.crc32c:
                raise BundleError("%s: crc32c mismatch (corrupt data)" % name)
            out[name] = np.frombuffer(raw, dtype=dt).astype(dt.newbyteorder("="), copy=True).reshape(e.shape)
    finally:
        for f in files.values():
            f.close()
    return out


def variable_shapes(prefix: str) -> Dict[str, Tuple[int, ...]]:
    """Name -> shape of every tensor (reads the index only)."""
    return {n: e.shape for n, e in read_index(prefix)[1].items()}


def data_files(prefix: str) -> List[str]:
    header, _ = read_index(prefix)
    return [prefix + ".index"] + [shard_path(prefix, i, header.num_shards)
                                  for i in range(header.num_shards)]


if __name__ == "__main__":  # pragma: no cover
    import sys
    for n, a in read_bundle(sys.argv[1]).items():
        print(n, a.dtype, list(a.shape))
