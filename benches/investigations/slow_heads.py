"""Slow request heads against a running server (finding 26 in docs/benchmarks-history.md).

Opens --connections connections that each send --head-bytes of a request head and then stall
(no blank line, so the head never completes), and reports the server's open file descriptors
and resident memory with them open, and how many the server had closed after --wait seconds.

    target/release/convrnn-serve serve --model-dir models --listen 127.0.0.1:8099 &
    python3 benches/investigations/slow_heads.py --pid $! --port 8099 --connections 2000 --head-bytes 60000
"""
import argparse
import os
import socket
import time


def rss_mib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
    raise RuntimeError("no VmRSS")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pid", type=int, required=True, help="the server's process id")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--head-bytes", type=int, default=60000)
    ap.add_argument("--wait", type=float, default=8.0, help="seconds before counting closed ones")
    args = ap.parse_args()
    fds0, rss0 = fds(args.pid), rss_mib(args.pid)
    head = b"POST /v1/models/m/classify HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * args.head_bytes
    socks = []
    for _ in range(args.connections):
        s = socket.create_connection(("127.0.0.1", args.port))
        try:
            s.sendall(head)
        except OSError:
            pass  # refused mid-head (431) and closed: counted below
        socks.append(s)
    time.sleep(min(3.0, args.wait))
    print(f"{args.connections} stalled heads of {args.head_bytes} B: server fds +{fds(args.pid) - fds0}, "
          f"RSS {rss0} -> {rss_mib(args.pid)} MiB")
    time.sleep(max(0.0, args.wait - 3.0))
    closed = 0
    for s in socks:
        s.setblocking(False)
        try:
            s.recv(1)
            closed += 1  # end of stream, or an answer (431): the server gave up on it
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        s.close()
    print(f"after {args.wait:.0f} s: {closed} of {args.connections} closed by the server; "
          f"RSS {rss_mib(args.pid)} MiB")


if __name__ == "__main__":
    main()
