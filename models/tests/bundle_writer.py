"""A minimal writer of TensorFlow tensor bundles (one shard, one uncompressed table block),
for tests that need a checkpoint too large to commit. Its output is read by
convrnn.tf_bundle, which is itself tested on bundles TensorFlow wrote."""
import struct

import numpy as np

from convrnn.tf_bundle import TABLE_MAGIC, crc32c, mask_crc

_DTYPE = {np.dtype(np.float32): 1, np.dtype(np.float64): 2, np.dtype(np.int32): 3,
          np.dtype(np.int64): 9}


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num, wire, payload):
    key = _varint((num << 3) | wire)
    if wire == 0:
        return key + _varint(payload)
    if wire == 2:
        return key + _varint(len(payload)) + payload
    if wire == 5:
        return key + struct.pack("<I", payload)
    raise ValueError(wire)


def _block(entries):
    """Table block with a restart at every entry (no shared key prefixes)."""
    body, restarts = bytearray(), []
    for k, v in entries:
        restarts.append(len(body))
        body += _varint(0) + _varint(len(k)) + _varint(len(v)) + k + v
    for r in restarts or [0]:
        body += struct.pack("<I", r)
    body += struct.pack("<I", len(restarts) or 1)
    return bytes(body)


def write_bundle(prefix, arrays):
    data, entries = bytearray(), []
    for name in sorted(arrays):
        a = np.array(arrays[name], order="C")  # ascontiguousarray would make 0-d 1-d
        raw = a.astype(a.dtype.newbyteorder("<")).tobytes()
        shape = b"".join(_field(2, 2, _field(1, 0, int(d))) for d in a.shape)
        proto = (_field(1, 0, _DTYPE[a.dtype]) + _field(2, 2, shape)
                 + (_field(4, 0, len(data)) if data else b"") + _field(5, 0, len(raw))
                 + _field(6, 5, mask_crc(crc32c(raw))))
        entries.append((name.encode(), proto))
        data += raw
    header = _field(1, 0, 1) + _field(3, 2, _field(1, 0, 1))
    table = bytearray()

    def put(block):
        off = len(table)
        table.extend(block + b"\0" + struct.pack("<I", mask_crc(crc32c(block + b"\0"))))
        return _varint(off) + _varint(len(block))

    data_handle = put(_block([(b"", header)] + entries))
    meta_handle = put(_block([]))
    index_handle = put(_block([(entries[-1][0] if entries else b"", data_handle)]))
    footer = (meta_handle + index_handle).ljust(40, b"\0") + struct.pack("<Q", TABLE_MAGIC)
    with open(prefix + ".index", "wb") as f:
        f.write(bytes(table) + footer)
    with open(prefix + ".data-00000-of-00001", "wb") as f:
        f.write(bytes(data))
