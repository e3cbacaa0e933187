"""convrnn.download against a local HTTP server on 127.0.0.1 serving a synthetic checkpoint
(the TensorFlow-written bundle of tests/data/tf_bundle), with Range support and a server
that drops the first connection half-way."""
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from convrnn import download as dl

BUNDLE = os.path.join(os.path.dirname(__file__), "data", "tf_bundle", "small")


class Server:
    def __init__(self, files):
        self.files = files  # url path -> bytes
        self.requests = []  # (path, Range header)
        self.cut_first = set()  # paths whose first response stops half-way
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                outer.requests.append((self.path, self.headers.get("Range")))
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(body) - 1, len(body)))
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if self.path in outer.cut_first:
                    outer.cut_first.discard(self.path)
                    self.wfile.write(body[start:start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.httpd.shutdown()
        self.httpd.server_close()


def synthetic(arch="rgc_intermediate", corrupt=False):
    files = {}
    for name, ext in (("model.ckpt.index", ".index"),
                      ("model.ckpt.data-00000-of-00001", ".data-00000-of-00001")):
        with open(BUNDLE + ext, "rb") as f:
            body = bytearray(f.read())
        if corrupt and ext.startswith(".data"):
            body[len(body) // 2] ^= 0xFF
        files["/%s/%s" % (arch, name)] = bytes(body)
    return files


def test_downloads_resumes_and_checksums(tmp_path):
    files = synthetic()
    with Server(files) as srv:
        data_path = "/rgc_intermediate/model.ckpt.data-00000-of-00001"
        srv.cut_first.add(data_path)
        logs = []
        paths = dl.download("rgc_intermediate", str(tmp_path), base_url=srv.url, log=logs.append)
        # the second request for the data file resumed where the first stopped
        ranges = [r for p, r in srv.requests if p == data_path]
        assert ranges[0] is None and ranges[1] == "bytes=%d-" % (len(files[data_path]) // 2)
        assert any("resuming" in line for line in logs)
        for p in paths:
            with open(p, "rb") as f:
                assert f.read() == files["/rgc_intermediate/" + os.path.basename(p)]
            digest = open(p + ".sha256").read().split()[0]
            assert digest == dl.sha256_file(p)
            assert not os.path.exists(p + ".new.part")
        # a second run checks the files against their sha256 and downloads nothing
        n = len(srv.requests)
        dl.download("rgc_intermediate", str(tmp_path), base_url=srv.url, log=logs.append)
        assert len(srv.requests) == n
        # a damaged local file is noticed and fetched again
        with open(paths[1], "r+b") as f:
            f.write(b"\0\0\0\0")
        dl.download("rgc_intermediate", str(tmp_path), base_url=srv.url, log=logs.append)
        assert len(srv.requests) == n + 1
        with open(paths[1], "rb") as f:
            assert f.read() == files[data_path]


def test_corrupt_download_is_refused_and_not_kept(tmp_path):
    with Server(synthetic(corrupt=True)) as srv:
        with pytest.raises(dl.DownloadError, match="crc32c mismatch"):
            dl.download("rgc_intermediate", str(tmp_path), base_url=srv.url, log=lambda s: None)
    folder = tmp_path / "rgc_intermediate"
    assert not any(f.endswith(".data-00000-of-00001") or f.endswith(".sha256")
                   for f in os.listdir(folder))


def test_missing_file_and_unknown_arch(tmp_path):
    with Server({}) as srv:
        with pytest.raises(dl.DownloadError, match="HTTP 404"):
            dl.download("rgc_shallow", str(tmp_path), base_url=srv.url, log=lambda s: None)
    with pytest.raises(dl.DownloadError, match="unknown architecture"):
        dl.download("resnet50", str(tmp_path))


def test_urls_are_the_authors():
    assert dl.BASE_URL == "https://convrnnckpts.s3-us-west-1.amazonaws.com"
    assert len(dl.ARCHS) == 20
