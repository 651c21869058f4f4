#!/usr/bin/env python3
"""Compare featherguard-loader materialization with Python safetensors, memcpy and `cat`,
all measured in this one run on the same ~2 GB synthetic checkpoint (single file and 4 shards).

    python3 scripts/loader/compare.py [--runs 5] [--cold] [--cleanup]

Creates a private venv under target/loader-venv (safetensors, numpy, ml_dtypes pinned below;
never touches the user's Python), builds `examples/loader_bench` in release mode, generates the
checkpoint under target/loader-bench (reused across runs; --cleanup deletes it), then runs each
method in its own process, interleaved, `--runs` times, and prints medians and ratios. Peak RSS
is the child's maximum resident set from wait4 (ru_maxrss). Results also go to
target/loader-bench/results.json.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PY_PACKAGES = ["safetensors==0.8.0", "numpy==2.4.6", "ml_dtypes==0.6.0"]


def target_dir():
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))


def venv_python():
    venv = ROOT / "target" / "loader-venv"
    py = venv / "bin" / "python"
    stamp = venv / "packages.txt"
    if not py.exists() or not stamp.exists() or stamp.read_text() != "\n".join(PY_PACKAGES):
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PY_PACKAGES], check=True)
        stamp.write_text("\n".join(PY_PACKAGES))
    return py


def build():
    subprocess.run(
        ["cargo", "build", "--release", "-q", "-p", "featherguard-loader", "--example", "loader_bench"],
        cwd=ROOT, check=True)
    return target_dir() / "release" / "examples" / "loader_bench"


def run_child(cmd):
    """Runs cmd, returns (parsed JSON stdout, wall seconds, peak RSS bytes from wait4)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out, err = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[0]} failed: {err.decode()[-2000:]}")
    text = out.decode().strip()
    return (json.loads(text) if text else None), wall, usage.ru_maxrss * 1024


def files_of(bench, path):
    """The data files of a checkpoint (shards for an index)."""
    if path.endswith(".index.json"):
        index = json.loads(Path(path).read_text())
        return sorted({str(Path(path).parent / s) for s in index["weight_map"].values()})
    return [path]


def materialize_secs(bench, path, flags):
    """Open + materialize everything (the page-cache probe is outside the timed span)."""
    j, _, rss = run_child([bench, "materialize", path, *flags])
    return j["report"]["wall_secs"] + j["open_secs"], rss, j


def measure(bench, py, paths, runs, cold, variants):
    """Runs every method on every checkpoint, `runs` rounds; each round visits the checkpoints
    and methods in the same order, so a busy minute on the shared machine lands on all of them
    rather than on whichever checkpoint happened to be measured then."""
    ours = {
        "ours": [],
        "ours_zero_huge": ["--fill", "zero"],
        "ours_zero_4k": ["--fill", "zero", "--no-huge-pages"],
        "ours_fresh": ["--fill", "fresh"],
        "ours_convert": ["--convert", "f32"],
    }
    ours.update(variants)
    state = {}
    for path in paths:
        files = files_of(bench, path)
        state[path] = {
            "files": files,
            "size": sum(os.path.getsize(f) for f in files),
            "res": {k: [] for k in [*ours, "python", "cat", "fresh_huge", "fresh_4k"]},
            "rss": {k: [] for k in [*ours, "python"]},
        }
        subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)  # warm the cache
    for _ in range(runs):
        for path in paths:
            st = state[path]
            res, rss, files = st["res"], st["rss"], st["files"]
            for name, flags in ours.items():
                secs, r, _ = materialize_secs(bench, path, flags)
                res[name].append(secs)
                rss[name].append(r)
            j, _, r = run_child([py, str(ROOT / "scripts/loader/read_np.py"), *files])
            res["python"].append(j["secs"])
            rss["python"].append(r)
            t = time.perf_counter()
            subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)
            res["cat"].append(time.perf_counter() - t)
            j, _, _ = run_child([bench, "fresh", path])
            res["fresh_huge"].append(j["huge_secs"])
            res["fresh_4k"].append(j["small_secs"])
    out = []
    for path in paths:
        st = state[path]
        res = st["res"]
        memcpy, _, _ = run_child([bench, "memcpy", path])
        first_view, _, _ = run_child([bench, "first-view", path])
        out.append({
            "path": path,
            "bytes": st["size"],
            "median_secs": {k: statistics.median(v) for k, v in res.items()},
            "min_secs": {k: min(v) for k, v in res.items()},
            "samples_secs": res,
            "peak_rss_bytes": {k: max(v) for k, v in st["rss"].items()},
            "memcpy_secs": memcpy["median_secs"],
            "first_view_secs": first_view["median_secs"],
            "variants": list(variants),
        })
    if cold:
        cold_res = {path: {"ours": [], "cat": [], "resident": []} for path in paths}
        for _ in range(runs):
            for path in paths:
                c = cold_res[path]
                run_child([bench, "evict", path])
                secs, _, j = materialize_secs(bench, path, [])
                c["ours"].append(secs)
                c["resident"].append(j["page_cache_resident_before"])
                run_child([bench, "evict", path])
                t = time.perf_counter()
                subprocess.run(["cat", *state[path]["files"]], stdout=subprocess.DEVNULL, check=True)
                c["cat"].append(time.perf_counter() - t)
        for r in out:
            c = cold_res[r["path"]]
            r["cold_median_secs"] = {k: statistics.median(c[k]) for k in ["ours", "cat"]}
            r["cold_resident_before"] = c["resident"]
    return out


def report(r):
    gb = r["bytes"] / 1e9
    m = r["median_secs"]
    print(f"\n== {r['path']}  ({r['bytes'] / 1e9:.3f} GB)")
    rows = [
        ("featherguard materialize (copy, default auto)", m["ours"], r["peak_rss_bytes"]["ours"]),
        ("  zero-then-copy, huge pages", m["ours_zero_huge"], r["peak_rss_bytes"]["ours_zero_huge"]),
        ("  zero-then-copy, 4 KiB pages", m["ours_zero_4k"], r["peak_rss_bytes"]["ours_zero_4k"]),
        ("  copy into fresh pages (userfaultfd)", m["ours_fresh"], r["peak_rss_bytes"]["ours_fresh"]),
        ("featherguard materialize (convert->f32)", m["ours_convert"], r["peak_rss_bytes"]["ours_convert"]),
        ("python safe_open(np) every tensor", m["python"], r["peak_rss_bytes"]["python"]),
        ("memcpy into pre-touched memory", r["memcpy_secs"], None),
        ("cat (page-cache read)", m["cat"], None),
        ("fault in fresh memory, huge pages (floor)", m["fresh_huge"], None),
        ("fault in fresh memory, 4 KiB pages (floor)", m["fresh_4k"], None),
    ]
    for name in r["variants"]:
        rows.append((f"variant {name}", m[name], r["peak_rss_bytes"][name]))
    for name, secs, peak in rows:
        extra = f"  peak RSS {peak / 1e9:.2f} GB ({peak / r['bytes']:.2f}x file)" if peak else ""
        print(f"  {name:46s} {secs * 1e3:8.1f} ms  {gb / secs:6.2f} GB/s{extra}")
    print(f"  header -> first view: {r['first_view_secs'] * 1e3:.3f} ms (target <= 1 ms)")
    best = r["min_secs"]
    print(f"  best of runs: ours {best['ours'] * 1e3:.1f} ms, python {best['python'] * 1e3:.1f} ms, "
          f"cat {best['cat'] * 1e3:.1f} ms")
    floor = min(m["fresh_huge"], m["fresh_4k"])
    print(f"  python / ours: {m['python'] / m['ours']:.2f}x (target >= 3x); python / fresh-memory "
          f"floor (faster of huge and 4 KiB): {m['python'] / floor:.2f}x")
    print(f"  ours / memcpy: {m['ours'] / r['memcpy_secs']:.2f}x (target <= 3x)")
    print(f"  ours / cat:    {m['ours'] / m['cat']:.2f}x")
    print(f"  peak RSS / file: {r['peak_rss_bytes']['ours'] / r['bytes']:.2f}x (target <= 1.2x)")
    if "cold_median_secs" in r:
        c = r["cold_median_secs"]
        print(f"  cold: ours {c['ours'] * 1e3:.1f} ms, cat {c['cat'] * 1e3:.1f} ms; ours reaches "
              f"{c['cat'] / c['ours'] * 100:.0f}% of cat's bandwidth (target >= 80%); "
              f"resident before: {max(r['cold_resident_before']) * 100:.0f}%")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--cold", action="store_true", help="also measure with the files evicted from the page cache")
    ap.add_argument("--cleanup", action="store_true", help="delete the generated checkpoints afterwards")
    ap.add_argument("--dir", default=str(ROOT / "target" / "loader-bench"))
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=FLAGS",
                    help="also time `loader_bench materialize` with these flags, e.g. "
                         "'t3=--threads 3' (repeatable; same rounds as the rest)")
    args = ap.parse_args()
    py = venv_python()
    bench = build()
    paths, _, _ = run_child([bench, "gen", args.dir])
    variants = {}
    for v in args.variant:
        name, _, flags = v.partition("=")
        variants[name] = flags.split()
    results = measure(bench, py, [paths["single"], paths["sharded"]], args.runs, args.cold, variants)
    for r in results:
        report(r)
    print(f"\nmachine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}; runs: {args.runs}; "
          "medians; warm page cache unless 'cold'")
    Path(args.dir, "results.json").write_text(json.dumps(results, indent=2))
    if args.cleanup:
        for sub in ["single", "sharded"]:
            shutil.rmtree(Path(args.dir, sub), ignore_errors=True)


if __name__ == "__main__":
    main()
