"""Turns one benchmark run's results (a folder written by scripts/bench.sh) into the generated
part of docs/benchmarks.md and the plot docs/benchmarks.png.

    python benches/suite/report.py bench-results/<run> [--doc docs/benchmarks.md] [--plot docs/benchmarks.png]

The generated part sits between the markers `<!-- BEGIN GENERATED -->` and
`<!-- END GENERATED -->`; the hand-written text around it is kept.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics

BEGIN, END = "<!-- BEGIN GENERATED -->", "<!-- END GENERATED -->"

TARGETS = {
    "throughput_vs_raw": 0.90,
    "latency_overhead_ms": 2.0,
    "vs_python": {"rgc_fmnist": 3.0, "rgc_intermediate": 1.2},
    "npz_vs_classify": 1.3,
}


def load_raw(run: str):
    """The raw part's results, keyed by (model, outputs, sessions, pool); outputs is `logits`
    (the graph pruned to them, as the server classifies), `logits-whole` or `all`."""
    raw = {}
    for p in glob.glob(os.path.join(run, "raw-*.json")):
        r = json.load(open(p))
        # Runs before pruning (no "pruned" field) ran logits on the whole graph, which was then
        # what the server ran too.
        outputs = r["outputs"]
        if outputs == "logits" and r.get("pruned") is False:
            outputs = "logits-whole"
        raw[(r["model"], outputs, r.get("sessions", 1), r.get("pool", "per-session"))] = r
    return raw


def raw_rows(raw, model):
    """Every logits-only row of `model`'s raw runs, over every session layout measured."""
    return [dict(x, sessions=v.get("sessions", 1), pool=v.get("pool", "per-session"))
            for k, v in raw.items() if k[0] == model and k[1] == "logits" for x in v["rows"]]


def raw_ceiling(raw, model):
    """The ceiling of target 1: the best batch size over every session layout measured."""
    rows = raw_rows(raw, model)
    return max(rows, key=lambda x: x["images_per_s"]) if rows else None


def raw_batch1(raw, model):
    """The reference of target 2: the lowest batch-1 p50 over every session layout measured."""
    rows = [x for x in raw_rows(raw, model) if x["batch"] == 1]
    return min(rows, key=lambda x: x["p50_ms"]) if rows else None


def load(run: str):
    raw, loads, pre = load_raw(run), [], {}
    for p in glob.glob(os.path.join(run, "*.jsonl")):
        loads += [json.loads(line) for line in open(p) if line.strip()]
    for p in glob.glob(os.path.join(run, "preprocess-*.json")):
        r = json.load(open(p))
        pre[r["impl"]] = r
    meta = json.load(open(os.path.join(run, "meta.json"))) if os.path.exists(
        os.path.join(run, "meta.json")) else {}
    return raw, loads, pre, meta


def pick(loads, **kw):
    return [r for r in loads if all(r.get(k, "" if k == "tag" else None) == v for k, v in kw.items())]


# Runs of our server with `--prune-logits-graph false`: classification on the same graph as
# activations, for target 4 only (targets 1-3 judge the server as it is configured).
WHOLE_GRAPH = "whole-graph"


def tags_of(loads, model):
    """Tags of our server's runs on `model`: "" (the judged flags) first, then variants."""
    return sorted({x.get("tag", "") for x in pick(loads, server="rust", model=model)} - {WHOLE_GRAPH})


def quarter_means(samples, col):
    """Mean of column `col` of the samples in each quarter of the run."""
    n = len(samples)
    return [sum(x[col] for x in samples[n * i // 4:n * (i + 1) // 4]) / max(1, n * (i + 1) // 4 - n * i // 4)
            for i in range(4)]


def one(loads, **kw):
    rs = pick(loads, **kw)
    return rs[-1] if rs else None


def ok(b):
    return "**met**" if b else "**missed**"


def rate(x):
    """A throughput with three significant figures (0.716 img/s, 617 img/s)."""
    return f"{x:.3g}" if x < 100 else f"{x:.0f}"


def fmt(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"


def models_in(raw, loads):
    names = []
    for (m, *_rest) in raw:
        if m not in names:
            names.append(m)
    for r in loads:
        if r["model"] not in names:
            names.append(r["model"])
    order = {"rgc_fmnist": 0, "rgc_intermediate": 1}
    return sorted(names, key=lambda n: order.get(n, 9))


def round_spread(rounds):
    """A paired record's lowest and highest round ratio and the median p99 of each side."""
    ratios = [x["ratio"] for x in rounds]
    return (min(ratios), max(ratios), statistics.median(x["ours_p99_ms"] for x in rounds),
            statistics.median(x["other_p99_ms"] for x in rounds))


def cpu_split(rounds):
    """Where a paired target-1 run's CPU went, as medians over its rounds: what an image cost the
    server's inference threads and raw ORT, and what a request cost the server's HTTP threads;
    "" for records from before the bench measured it."""
    def med(key):
        vals = [x[key] for x in rounds if x.get(key) is not None]
        return statistics.median(vals) if vals else None
    ours, raw, http = (med("ours_cpu_ms_per_image"), med("other_cpu_ms_per_image"),
                       med("ours_http_cpu_ms_per_request"))
    if None in (ours, raw, http):
        return ""
    share = http / (ours + http)
    return (f"; CPU per image: the server's inference threads {ours:.2f} ms vs raw {raw:.2f} ms "
            f"({ours / raw:.2f}x), its HTTP threads {http * 1e3:.0f} us per request "
            f"({share:.1%} of its CPU): with every core busy, at most {raw / (ours + http):.2f}x raw")


def compute_share(raw, m):
    """How much of target 4's ratio is the model's own work: raw ORT time for every output
    (the whole graph) over logits only (the pruned graph classification runs), per batch, in
    each thread layout measured with both (1 session on all cores; 2 sessions x 1 thread, the
    layout the start-up calibration picks for rgc_fmnist on 2 cores), which can differ by far."""
    parts = []
    for sessions, pool, label in ((1, "shared", "1 session"), (2, "per-session", "2 sessions x 1 thread")):
        a, lg = raw.get((m, "all", sessions, pool)), raw.get((m, "logits", sessions, pool))
        if not (a and lg and lg.get("pruned")):
            continue
        cells = []
        for row in a["rows"]:
            other = next((x for x in lg["rows"] if x["batch"] == row["batch"]), None)
            if other:
                cells.append(f"b{row['batch']} {row['mean_ms'] / other['mean_ms']:.2f}x")
        if cells:
            parts.append(f"{label}: {', '.join(cells)}")
    if not parts:
        return ""
    return f"; of which compute (raw ORT, all outputs / logits on the pruned graph): {'; '.join(parts)}"


def targets_section(raw, loads, pre, out):
    out.append("### Targets\n")
    out.append("| # | target | model | measured | verdict |")
    out.append("|---|---|---|---|---|")
    for m in models_in(raw, loads):
        best = raw_ceiling(raw, m)
        b1 = raw_batch1(raw, m)
        # Untagged runs use the server flags the targets are judged on; tagged ones (another
        # thread layout) are reported beside them.
        tags = tags_of(loads, m)
        for tag in tags:
            cls = pick(loads, server="rust", model=m, case="classify:model.jpg", tag=tag)
            if best and cls:
                sat = max(cls, key=lambda x: x["ok_rps"])
                ratio = sat["ok_rps"] / best["images_per_s"]
                label = f"{m} ({tag})" if tag else m
                out.append(
                    f"| 1 | saturated HTTP >= {TARGETS['throughput_vs_raw']:.2f}x raw ORT best batch | {label} | "
                    f"{rate(sat['ok_rps'])} img/s (c={sat['conns']}) vs raw {rate(best['images_per_s'])} img/s "
                    f"(batch {best['batch']}, {best['sessions']} session(s), {best['pool']} pool) = "
                    f"**{ratio:.2f}x** | {ok(ratio >= TARGETS['throughput_vs_raw'])} |")
        for pr in pick(loads, server="paired", model=m, against="raw", tag=""):
            b, rs = pr["raw"], pr["rounds"]
            lo, hi = min(x["ratio"] for x in rs), max(x["ratio"] for x in rs)
            out.append(
                f"| 1 | saturated HTTP >= {TARGETS['throughput_vs_raw']:.2f}x raw ORT best batch, "
                f"**paired** | {m} | {len(rs)} alternating {pr['seconds']:.0f} s slices at c={pr['conns']} "
                f"against raw batch {b['batch']} ({b['sessions']} session(s), {b['pool']} pool, same image): "
                f"median **{pr['median_ratio']:.3f}x** (rounds {lo:.2f}-{hi:.2f}x){cpu_split(rs)} | "
                f"{ok(pr['median_ratio'] >= TARGETS['throughput_vs_raw'])} |")
        cls = pick(loads, server="rust", model=m, case="classify:model.jpg", tag="")
        for tag in tags:
            c1 = one(loads, server="rust", model=m, case="classify:model.jpg", conns=1, tag=tag)
            if b1 and c1:
                over = c1["lat_p50_ms"] - b1["p50_ms"]
                label = f"{m} ({tag})" if tag else m
                out.append(
                    f"| 2 | no-load p50 <= raw batch-1 + {TARGETS['latency_overhead_ms']:.0f} ms | {label} | "
                    f"{c1['lat_p50_ms']:.2f} ms vs raw {b1['p50_ms']:.2f} ms = **+{over:.2f} ms** | "
                    f"{ok(over <= TARGETS['latency_overhead_ms'])} |")
        for pr in pick(loads, server="paired", model=m, against="raw-latency", tag=""):
            b, rs = pr["raw"], pr["rounds"]
            diffs = [x["p50_diff_ms"] for x in rs]
            over = pr["median_p50_diff_ms"]
            out.append(
                f"| 2 | no-load p50 <= raw batch-1 + {TARGETS['latency_overhead_ms']:.0f} ms, **paired** | {m} | "
                f"{len(rs)} alternating {pr['seconds']:.0f} s slices at c={pr['conns']} against raw batch 1 "
                f"({b['sessions']} session(s), {b['pool']} pool, same image): median p50 "
                f"{statistics.median(x['ours_p50_ms'] for x in rs):.2f} vs "
                f"{statistics.median(x['other_p50_ms'] for x in rs):.2f} ms, median difference "
                f"**{over:+.2f} ms** (rounds {min(diffs):+.2f} to {max(diffs):+.2f} ms) | "
                f"{ok(over <= TARGETS['latency_overhead_ms'])} |")
        py32s = pick(loads, server="python", model=m, case="classify:model.jpg", conns=32)
        py32 = max(py32s, key=lambda x: x["ok_rps"]) if py32s else None  # its best settings
        for tag in tags:
            rs32 = one(loads, server="rust", model=m, case="classify:model.jpg", conns=32, tag=tag)
            if not (rs32 and py32):
                continue
            label = f"{m} ({tag})" if tag else m
            want = TARGETS["vs_python"].get(m, 1.2)
            ratio = rs32["ok_rps"] / py32["ok_rps"] if py32["ok_rps"] else float("inf")
            if not py32["ok_rps"]:
                py32 = dict(py32, lat_p99_ms=float("inf"))  # nothing finished within the run
            out.append(
                f"| 3 | vs Python at c=32: >= {want}x throughput, lower p99 | {label} | "
                f"{rate(rs32['ok_rps'])} vs {rate(py32['ok_rps'])} req/s = **{ratio:.2f}x**; p99 "
                f"{rs32['lat_p99_ms']:.0f} vs {py32['lat_p99_ms']:.0f} ms | "
                f"{ok(ratio >= want and rs32['lat_p99_ms'] < py32['lat_p99_ms']) if ratio != float('inf') else '**not determined**: Python finished none of its requests within the run (it runs all 32 at once)'} |")
        for pr in pick(loads, server="paired", model=m, against="python", tag=""):
            rs = pr["rounds"]
            want = TARGETS["vs_python"].get(m, 1.2)
            lo, hi, p99_ours, p99_py = round_spread(rs)
            out.append(
                f"| 3 | vs Python at c={pr['conns']}: >= {want}x throughput, lower p99, **paired** | {m} | "
                f"{len(rs)} alternating {pr['seconds']:.0f} s slices: median **{pr['median_ratio']:.2f}x** "
                f"(rounds {lo:.2f}-{hi:.2f}x); median p99 {p99_ours:.0f} vs {p99_py:.0f} ms | "
                f"{ok(pr['median_ratio'] >= want and p99_ours < p99_py)} |")
        for pr in pick(loads, server="paired", model=m, against="python-pruned", tag=""):
            rs = pr["rounds"]
            lo, hi, p99_ours, p99_py = round_spread(rs)
            out.append(
                f"| 3 | (beside it) vs Python running the graph pruned to logits (`REF_PRUNE=1`), "
                f"c={pr['conns']}, **paired** | {m} | {len(rs)} alternating {pr['seconds']:.0f} s slices: "
                f"median **{pr['median_ratio']:.2f}x** (rounds {lo:.2f}-{hi:.2f}x); median p99 "
                f"{p99_ours:.0f} vs {p99_py:.0f} ms | not judged: what serving alone gains, without "
                f"the pruning |")
        npz = pick(loads, server="rust", model=m, case="npz:model.jpg", tag="")
        if npz and cls:
            worst = None
            cells = []
            for n in sorted(npz, key=lambda x: x["conns"]):
                c = next((x for x in cls if x["conns"] == n["conns"]), None)
                if not c or not n["ok_rps"]:
                    continue
                ratio = c["ok_rps"] / n["ok_rps"]
                worst = ratio if worst is None else max(worst, ratio)
                cells.append(f"c={n['conns']}: {ratio:.2f}x")
            js = pick(loads, server="rust", model=m, case="json:model.jpg", tag="")
            jcells = []
            for j in sorted(js, key=lambda x: x["conns"]):
                c = next((x for x in cls if x["conns"] == j["conns"]), None)
                if c and j["ok_rps"]:
                    jcells.append(f"c={j['conns']}: {c['ok_rps'] / j['ok_rps']:.2f}x")
            if worst is not None:
                out.append(
                    f"| 4 | activations (all layers x steps, npz) <= {TARGETS['npz_vs_classify']}x classify "
                    f"time | {m} | npz {', '.join(cells)} (JSON: {', '.join(jcells) or 'not run'})"
                    f"{compute_share(raw, m)} | {ok(worst <= TARGETS['npz_vs_classify'])} |")
            whole = pick(loads, server="rust", model=m, case="classify:model.jpg", tag=WHOLE_GRAPH)
            wcells, wworst = [], None
            for n in sorted(npz, key=lambda x: x["conns"]):
                c = next((x for x in whole if x["conns"] == n["conns"]), None)
                if c and n["ok_rps"]:
                    r = c["ok_rps"] / n["ok_rps"]
                    wworst = r if wworst is None else max(wworst, r)
                    wcells.append(f"c={n['conns']}: {r:.2f}x")
            if wworst is not None:
                out.append(
                    f"| 4 | the same, against classify on the whole graph (`--prune-logits-graph "
                    f"false`: equal work, what the binary answer itself costs) | {m} | npz "
                    f"{', '.join(wcells)} | {ok(wworst <= TARGETS['npz_vs_classify'])} (equal work) |")
    for r in pick(loads, server="overload"):
        # "No growth": judged on the second half's trend (least squares, robust to the +-5%
        # sample noise) extrapolated over the whole run, against 5% of the mean RSS.
        smp = r["rss_samples"]
        quarters = [q / 1024 for q in quarter_means(smp, 1)]
        half = smp[len(smp) // 2:]
        xs, ys = [x[0] for x in half], [x[1] / 1024 for x in half]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((a - mx) * (b - my) for a, b in zip(xs, ys)) / max(1e-9, sum((a - mx) ** 2 for a in xs))
        drift = slope * r["seconds"]
        out.append(
            f"| 5 | RSS under overload flat and bounded | {r['model']} | max {r['rss_max_mib']:.0f} MiB "
            f"over {r['seconds']:.0f} s, {r['conns']} connections, queue {r['queue_capacity']} "
            f"(idle {r['rss_idle_mib']:.0f} MiB); quarter means {', '.join(f'{q:.0f}' for q in quarters)} MiB; "
            f"second-half trend {slope * 60:+.1f} MiB/min (**{drift / my * 100:+.0f}%** over the run) | "
            f"{ok(drift < 0.05 * my)} |")
    if "rust" in pre and "pillow" in pre:
        for row in pre["rust"]["rows"]:
            p = next((x for x in pre["pillow"]["rows"] if x["size"] == row["size"]
                      and x["what"] == "decode+resize"), None)
            pf = next((x for x in pre["pillow"]["rows"] if x["size"] == row["size"]
                       and x["what"] == "full"), None)
            if p:
                out.append(
                    f"| 6 | decode+resize 1024x768 JPEG faster than Pillow | to {row['size']}x{row['size']} | "
                    f"ours (incl. normalise) {row['p50_ms']:.2f} ms vs Pillow {p['p50_ms']:.2f} ms "
                    f"(+normalise {pf['p50_ms']:.2f} ms) = **{pf['p50_ms'] / row['p50_ms']:.1f}x faster** | "
                    f"{ok(row['p50_ms'] < p['p50_ms'])} |")
    out.append("")


def raw_section(raw, out):
    out.append("### Raw ONNX Runtime (no HTTP), `benches/suite/raw_ort.rs`\n")
    for (m, o, sess, pool), r in sorted(raw.items()):
        threads = (f"one shared pool of {r['intra_threads']} intra-op thread(s)" if pool == "shared"
                   else f"{r['intra_threads']} intra-op thread(s) each")
        what = {"logits": " (on the graph pruned to them, as the server classifies)" if r.get("pruned")
                else "", "logits-whole": " (on the whole graph, `--prune false`)"}.get(o, "")
        out.append(f"**{m}**, outputs `{o}`{what}, {sess} session(s), {threads} ({r['cores']} cores)\n")
        out.append("| batch | runs | p50 ms | p90 ms | mean ms | images/s |")
        out.append("|---:|---:|---:|---:|---:|---:|")
        for x in r["rows"]:
            out.append(f"| {x['batch']} | {x['runs']} | {x['p50_ms']:.2f} | {x['p90_ms']:.2f} | "
                       f"{x['mean_ms']:.2f} | {rate(x['images_per_s'])} |")
        out.append("")


def load_section(loads, out):
    out.append("### HTTP under load (wrk, one real encoded image per request)\n")
    out.append("| server | model | endpoint | image | body B | c | ok req/s | p50 ms | p90 ms | p99 ms "
               "| non-2xx | max RSS MiB |")
    out.append("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    tagged = lambda r: f"{r['server']} ({r['tag']})" if r.get("tag") else r["server"]  # noqa: E731
    for r in sorted([x for x in loads if x["server"] not in ("overload", "paired")],
                    key=lambda x: (x["model"] != "rgc_fmnist", x["server"], x.get("tag", ""),
                                   x["endpoint"], x["image"], x["conns"])):
        out.append(f"| {tagged(r)} | {r['model']} | {r['endpoint']} | {r['image']} | {r['body_bytes']} "
                   f"| {r['conns']} | {rate(r['ok_rps'])} | {r['lat_p50_ms']:.1f} | {r['lat_p90_ms']:.1f} "
                   f"| {r['lat_p99_ms']:.1f} | {r['non2xx']} | {r['rss_max_mib']:.0f} |")
    out.append("")
    cmds = {}
    for r in loads:
        if r["server"] == "paired":
            continue
        cmds.setdefault((tagged(r), r["model"], r.get("server_cmd", "")), 1)
    out.append("Server command lines:\n")
    out.append("```")
    for (s, m, c) in sorted(cmds):
        out.append(f"# {s} / {m}\n{c}")
    out.append("```\n")


def paired_section(loads, out):
    prs = pick(loads, server="paired")
    if not prs:
        return
    out.append("### Paired measurements (alternating slices, `load.py paired`)\n")
    out.append("Each round runs both sides back to back, in the order A B, then B A, so that the "
               "machine's drift over minutes falls on both alike.\n")
    rate_prs = [pr for pr in prs if pr["against"] != "raw-latency"]
    if rate_prs:
        out.append("| model | against | c | round | ours req/s | theirs req/s | ratio | ours p99 ms | theirs p99 ms |")
        out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for pr in rate_prs:
        theirs = (f"raw b{pr['raw']['batch']} x{pr['raw']['sessions']} {pr['raw']['pool']}"
                  if pr["against"] == "raw" else pr["against"])
        for i, r in enumerate(pr["rounds"], 1):
            out.append(f"| {pr['model']} | {theirs} | {pr['conns']} | {i} | {r['ours_rps']:.1f} | "
                       f"{r['other_rps']:.1f} | {r['ratio']:.3f} | {fmt(r['ours_p99_ms'])} | "
                       f"{fmt(r['other_p99_ms'])} |")
    out.append("")
    lat = [pr for pr in prs if pr["against"] == "raw-latency"]
    if lat:
        out.append("Target 2, paired: the server's p50 at c=1 (wrk, one keep-alive connection) and "
                   "raw ORT's batch-1 p50 (`benches/suite/raw_ort.rs`) in alternating slices.\n")
        out.append("| model | against | round | ours p50 ms | raw p50 ms | difference ms |")
        out.append("|---|---|---:|---:|---:|---:|")
        for pr in lat:
            theirs = f"raw b1 x{pr['raw']['sessions']} {pr['raw']['pool']}"
            for i, r in enumerate(pr["rounds"], 1):
                out.append(f"| {pr['model']} | {theirs} | {i} | {r['ours_p50_ms']:.2f} | "
                           f"{r['other_p50_ms']:.2f} | {r['p50_diff_ms']:+.2f} |")
        out.append("")
    out.append("```")
    for pr in prs:
        out.append(f"# paired / {pr['model']} / against {pr['against']}\n{pr['server_cmd']}")
        if pr.get("python_cmd"):
            out.append(pr["python_cmd"])
    out.append("```\n")


def overload_section(loads, out):
    rs = pick(loads, server="overload")
    if not rs:
        return
    out.append("### Memory under sustained overload\n")
    for r in rs:
        s = r["rss_samples"]
        n = len(s)
        q = [s[i * (n - 1) // 4][1] / 1024 for i in range(5)] if n else []
        out.append(f"- {r['model']}, `{r['case']}`, {r['conns']} connections, queue capacity "
                   f"{r['queue_capacity']}, {r['seconds']:.0f} s: {r['ok_rps']:.1f} ok/s, "
                   f"{r['status429']} x 429 ({r['non2xx']} non-2xx), "
                   f"socket errors connect/read/write/timeout {r['err_connect']}/{r['err_read']}/"
                   f"{r['err_write']}/{r['err_timeout']}.")
        out.append(f"  RSS idle {r['rss_idle_mib']:.0f} MiB, max {r['rss_max_mib']:.0f} MiB, at 0/25/50/75/100% "
                   f"of the run {', '.join(f'{v:.0f}' for v in q)} MiB, after {r['rss_after_mib']:.0f} MiB.")
        if n and len(s[0]) > 2:
            # Open descriptors ~ connections the server holds at that moment.
            fq = [s[i * (n - 1) // 4][2] for i in range(5)]
            qm = quarter_means(s, 2)
            out.append(f"  Open file descriptors (~ connections held) at 0/25/50/75/100%: "
                       f"{', '.join(str(v) for v in fq)}; quarter means {', '.join(f'{v:.0f}' for v in qm)}.")
    out.append("")


def preprocess_section(pre, out):
    if not pre:
        return
    out.append("### Decode + resize (+ normalise) of a 1024x768 JPEG, one thread\n")
    out.append("| implementation | target | work | p50 ms | mean ms |")
    out.append("|---|---|---|---:|---:|")
    for row in pre.get("rust", {}).get("rows", []):
        out.append(f"| convrnn_serve::image::preprocess | {row['size']}x{row['size']} | decode+orient+resize+normalise "
                   f"| {row['p50_ms']:.2f} | {row['mean_ms']:.2f} |")
    for row in pre.get("pillow", {}).get("rows", []):
        out.append(f"| Pillow {pre['pillow'].get('pillow', '')} + NumPy | {row['size']}x{row['size']} | "
                   f"{row['what']} | {row['p50_ms']:.2f} | {row['mean_ms']:.2f} |")
    out.append("")


def plot(raw, loads, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = models_in(raw, loads)
    fig, axes = plt.subplots(2, len(models), figsize=(6.5 * len(models), 9), squeeze=False)
    styles = {"classify:model.jpg": "o-", "classify:model.png": "s--", "classify:camera.jpg": "^-",
              "classify:camera.png": "v--", "npz:model.jpg": "D-", "json:model.jpg": "x:"}
    for j, m in enumerate(models):
        ax = axes[0][j]
        for case, st in styles.items():
            rs = sorted(pick(loads, server="rust", model=m, case=case, tag=""), key=lambda x: x["conns"])
            if rs:
                ax.plot([r["conns"] for r in rs], [r["ok_rps"] for r in rs], st, label=f"rust {case}")
        for tag, (st, color) in zip([t for t in tags_of(loads, m) if t],
                                    [("P--", "purple"), ("X:", "saddlebrown"), ("h-.", "teal")]):
            rs = sorted(pick(loads, server="rust", model=m, case="classify:model.jpg", tag=tag),
                        key=lambda x: x["conns"])
            ax.plot([r["conns"] for r in rs], [r["ok_rps"] for r in rs], st, color=color,
                    label=f"rust classify:model.jpg ({tag})")
        py = sorted(pick(loads, server="python", model=m, case="classify:model.jpg"),
                    key=lambda x: x["conns"])
        if py:
            ax.plot([r["conns"] for r in py], [r["ok_rps"] for r in py], "r*", ms=14,
                    label="python classify:model.jpg")
        rows = [dict(x, sessions=v.get("sessions", 1)) for k, v in raw.items()
                if k[0] == m and k[1] == "logits" for x in v["rows"]]
        if rows:
            best = max(rows, key=lambda x: x["images_per_s"])
            ax.axhline(best["images_per_s"], color="k", ls="-.", lw=1,
                       label=f"raw ORT best (batch {best['batch']})")
            ax.axhline(0.9 * best["images_per_s"], color="gray", ls=":", lw=1, label="0.90x raw")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent connections")
        ax.set_ylabel("successful requests/s (1 image each)")
        ax.set_title(f"{m}: throughput")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        ax = axes[1][j]
        rs = sorted(pick(loads, server="rust", model=m, case="classify:model.jpg", tag=""),
                    key=lambda x: x["conns"])
        for key, st in (("lat_p50_ms", "o-"), ("lat_p90_ms", "s-"), ("lat_p99_ms", "^-")):
            if rs:
                ax.plot([r["conns"] for r in rs], [r[key] for r in rs], st,
                        label=f"rust classify {key[4:7]}")
        npz = sorted(pick(loads, server="rust", model=m, case="npz:model.jpg", tag=""),
                     key=lambda x: x["conns"])
        if npz:
            ax.plot([r["conns"] for r in npz], [r["lat_p50_ms"] for r in npz], "D:", label="rust npz p50")
        for key, st in (("lat_p50_ms", "r*"), ("lat_p99_ms", "rX")):
            if py:
                ax.plot([r["conns"] for r in py], [r[key] for r in py], st, ms=12,
                        label=f"python {key[4:7]}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("concurrent connections")
        ax.set_ylabel("latency ms")
        ax.set_title(f"{m}: latency percentiles (model-sized JPEG)")
        ax.grid(True, alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--doc", default="docs/benchmarks.md")
    ap.add_argument("--plot", default="docs/benchmarks.png")
    a = ap.parse_args()
    raw, loads, pre, meta = load(a.run)
    out = [BEGIN, ""]
    if meta:
        out.append(f"Run `{os.path.basename(os.path.normpath(a.run))}`: {meta.get('when', '')}; "
                   f"{meta.get('machine', '')}; {meta.get('load', '')}\n")
    targets_section(raw, loads, pre, out)
    out.append(f"![throughput and latency]({os.path.relpath(a.plot, os.path.dirname(a.doc))})\n")
    raw_section(raw, out)
    load_section(loads, out)
    paired_section(loads, out)
    overload_section(loads, out)
    preprocess_section(pre, out)
    out.append(END)
    gen = "\n".join(out)
    doc = open(a.doc).read() if os.path.exists(a.doc) else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN in doc and END in doc:
        doc = doc[:doc.index(BEGIN)] + gen + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip() + "\n\n" + gen + "\n"
    with open(a.doc, "w") as f:
        f.write(doc)
    plot(raw, loads, a.plot)
    print(f"wrote {a.doc} and {a.plot}")


if __name__ == "__main__":
    main()
