"""Download the authors' released checkpoints (Nayebi et al. 2018, github
neuroailab/convrnns ``get_checkpoints.sh``), resumably and checked.

    python -m convrnn.download --arch rgc_intermediate --dest ckpts
    python -m convrnn.download --all --dest ckpts

Writes ``DEST/<arch>/model.ckpt.{index,data-00000-of-00001}`` (``--meta`` adds the TF graph
file, which the converter does not need). An interrupted download resumes where it stopped
(HTTP Range) from ``<file>.part``. A finished file is checked before it takes its final
name: its length must be the one the server announced, and the bundle must read back with
every tensor's crc32c intact (convrnn.tf_bundle). The sha256 of each file goes to
``<file>.sha256``; a later run checks files against it instead of downloading them again.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Callable, List, Optional

from .config import RELEASED_ARCHS

BASE_URL = "https://convrnnckpts.s3-us-west-1.amazonaws.com"
ARCHS = list(RELEASED_ARCHS)
FILES = ["model.ckpt.index", "model.ckpt.data-00000-of-00001"]
META = "model.ckpt.meta"
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    pass


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _total_from(resp, offset: int) -> Optional[int]:
    cr = resp.headers.get("Content-Range")
    if cr and "/" in cr and not cr.endswith("/*"):
        return int(cr.rsplit("/", 1)[1])
    cl = resp.headers.get("Content-Length")
    return None if cl is None else int(cl) + offset


def fetch(url: str, dest: str, retries: int = 5, timeout: float = 60.0,
          log: Callable[[str], None] = print) -> str:
    """Download ``url`` to ``dest`` through ``dest + '.part'``, resuming a partial file with
    HTTP Range; returns ``dest`` once its length is the announced one."""
    part = dest + ".part"
    total = None
    for attempt in range(retries + 1):
        offset = os.path.getsize(part) if os.path.exists(part) else 0
        req = urllib.request.Request(url, headers={"Range": "bytes=%d-" % offset} if offset else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                if offset and resp.status != 206:
                    offset = 0  # the server ignored the Range: start over
                elif offset:
                    cr = resp.headers.get("Content-Range", "")
                    if not cr.startswith("bytes %d-" % offset):
                        raise DownloadError("%s: unexpected Content-Range %r" % (url, cr))
                    log("resuming %s at %d bytes" % (os.path.basename(dest), offset))
                total = _total_from(resp, offset)
                with open(part, "ab" if offset else "wb") as f:
                    while True:
                        chunk = resp.read(CHUNK)
                        if not chunk:
                            break
                        f.write(chunk)
            size = os.path.getsize(part)
            if total is not None and size != total:
                raise DownloadError("%s: got %d of %d bytes" % (url, size, total))
            os.replace(part, dest)
            return dest
        except urllib.error.HTTPError as e:
            if e.code == 416 and offset:  # the part is already complete (or bad): recheck
                os.remove(part)
            elif e.code < 500:
                raise DownloadError("%s: HTTP %d" % (url, e.code)) from e
            err = e
        except (urllib.error.URLError, OSError, http.client.HTTPException, DownloadError) as e:
            if isinstance(e, DownloadError) and "Content-Range" in str(e):
                raise
            err = e
        if attempt < retries:
            log("retrying %s (%s)" % (os.path.basename(dest), err))
            time.sleep(min(2 ** attempt, 30) * 0.1)
    raise DownloadError("%s: failed after %d attempts: %s" % (url, retries + 1, err))


def verify_bundle(prefix: str) -> None:
    """Read every tensor of the bundle, checking each one's crc32c."""
    from .tf_bundle import BundleError, read_index, read_bundle
    try:
        _, entries = read_index(prefix)
        for name in sorted(entries):  # one at a time: a released checkpoint is up to 1 GB
            read_bundle(prefix, names=[name])
    except (BundleError, OSError) as e:
        raise DownloadError("%s is not an intact checkpoint: %s" % (prefix, e)) from e


def download(arch: str, dest: str, base_url: str = BASE_URL, meta: bool = False,
             log: Callable[[str], None] = print) -> List[str]:
    """Download (or check) one architecture's checkpoint; returns the file paths."""
    if arch not in ARCHS:
        raise DownloadError("unknown architecture %r; released: %s" % (arch, ", ".join(ARCHS)))
    folder = os.path.join(dest, arch)
    os.makedirs(folder, exist_ok=True)
    names = FILES + ([META] if meta else [])
    paths = []
    fresh = False
    for name in names:
        path = os.path.join(folder, name)
        paths.append(path)
        if os.path.exists(path) and os.path.exists(path + ".sha256"):
            with open(path + ".sha256") as f:
                want = f.read().split()[0]
            if sha256_file(path) == want:
                log("%s: present, sha256 matches" % path)
                continue
            log("%s: sha256 differs from %s.sha256, downloading again" % (path, path))
            os.remove(path)
        fetch("%s/%s/%s" % (base_url.rstrip("/"), arch, name), path + ".new", log=log)
        os.replace(path + ".new", path)
        fresh = True
    prefix = os.path.join(folder, "model.ckpt")
    try:
        verify_bundle(prefix)
    except DownloadError:
        if fresh:  # do not leave a bad file under its final name
            for p in paths:
                for q in (p, p + ".sha256"):
                    if os.path.exists(q):
                        os.remove(q)
        raise
    for path in paths:
        digest = sha256_file(path)
        with open(path + ".sha256", "w") as f:
            f.write("%s  %s\n" % (digest, os.path.basename(path)))
        log("%s  %s" % (digest, path))
    return paths


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--arch", nargs="+", choices=ARCHS)
    g.add_argument("--all", action="store_true", help="all 20 released checkpoints (5.3 GB)")
    ap.add_argument("--dest", default="ckpts")
    ap.add_argument("--meta", action="store_true", help="also the .meta graph file")
    ap.add_argument("--base-url", default=BASE_URL, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    try:
        for arch in (ARCHS if a.all else a.arch):
            download(arch, a.dest, a.base_url, meta=a.meta)
    except DownloadError as e:
        print("download: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
