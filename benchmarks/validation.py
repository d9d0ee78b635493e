"""Benchmark: end-to-end validation of a synthetic training set vs. a plain sequential read.

Generates a SYNTHETIC training set (default: full size, 55,890 records in 5 files, ~5 GB) in a
temporary directory, then, in a fresh child process so that the peak memory is that of
validation alone, measures on the same files in the same run:

- ``raw read``: reading every file's bytes sequentially (8 MiB chunks), after one untimed
  warm-up pass so that every measurement sees the same page cache (``--cold`` evicts the
  files from the cache before the raw read and again before validation instead);
- ``record read``: streaming every record with CRC checks (``iter_records``), i.e. the
  cheapest read a training input pipeline could do;
- ``profile``: the streaming per-record profile alone;
- ``validate``: ``validate_landing`` end to end (sha256, profile, GX checkpoint with Data Docs,
  moves, ledger, hash index, drift), excluding the one-off import of the libraries.

It prints each time, the ratios ``validate / raw read`` (aim: <= 3x) and ``validate / record
read``, records per second and the child's peak RSS (aim: < 2 GB), then deletes the data.

    python benchmarks/validation.py                      # full size (slow to generate)
    python benchmarks/validation.py --n 3000 --files 5   # reduced scale
    python benchmarks/validation.py --n 3000 --tiles fast
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHUNK = 8 << 20


def _generate(out: Path, n: int, files: int, seed: int, tiles: str, compression: str) -> None:
    """SYNTHETIC tfrecords into ``out/landing`` (only tfrecord files land there)."""
    landing = out / "landing"
    landing.mkdir(parents=True)
    if tiles == "synthetic":
        from mammo_pipeline.data.synthetic import generate

        gen = out / "generated"
        generate(
            gen, n, files=files, seed=seed, compression=compression, progress=sys.stderr.isatty()
        )
        for p in gen.iterdir():
            if ".tfrecord" in p.name:
                os.rename(p, landing / p.name)
        shutil.rmtree(gen)
        return
    # "fast": a pool of synthetic tiles, each record made unique by its index in 8 pixels.
    import numpy as np

    from mammo_pipeline.data.example_codec import encode_tile
    from mammo_pipeline.data.synthetic import make_labels, make_tile
    from mammo_pipeline.data.tfrecord_io import write_records

    labels = make_labels(n, 0.14, seed, "train")
    pool = {lab: [make_tile(seed, "train", i, lab) for i in range(16)] for lab in range(5)}
    bounds = np.linspace(0, n, files + 1).astype(int)
    suffix = ".tfrecords.gz" if compression == "GZIP" else ".tfrecords"

    def records(lo: int, hi: int):
        for i in range(lo, hi):
            lab = int(labels[i])
            img = pool[lab][i % 16].copy()
            img.reshape(-1)[:8] = np.frombuffer(int(i).to_bytes(8, "little"), dtype=np.uint8)
            yield encode_tile(img, lab)

    for k in range(files):
        path = landing / f"synthetic_train_{k:02d}-of-{files:02d}{suffix}"
        write_records(path, records(bounds[k], bounds[k + 1]), compression=compression)


def _read_raw(files: list[Path]) -> int:
    total = 0
    for path in files:
        with open(path, "rb", buffering=0) as fh:
            while block := fh.read(CHUNK):
                total += len(block)
    return total


def _evict(files: list[Path]) -> None:
    """Drop these files' pages from the page cache (only ours: POSIX_FADV_DONTNEED)."""
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _measure(data_dir: Path, cold: bool) -> dict:
    """Runs in the child process: the timings and the peak memory."""
    from mammo_pipeline.data.tfrecord_io import iter_records, list_tfrecords

    landing = data_dir / "landing"
    files = list_tfrecords(landing)
    size = _read_raw(files)  # warm-up (untimed)
    if cold:
        _evict(files)
    t = time.perf_counter()
    _read_raw(files)
    raw_s = time.perf_counter() - t
    t = time.perf_counter()
    n = sum(1 for f in files for _ in iter_records(f))
    records_s = time.perf_counter() - t

    t = time.perf_counter()
    from mammo_pipeline.config import Settings
    from mammo_pipeline.validation.profile import profile_file
    from mammo_pipeline.validation.run import validate_landing

    import_s = time.perf_counter() - t
    t = time.perf_counter()
    for f in files:
        profile_file(f)
    profile_s = time.perf_counter() - t

    settings = Settings(data_dir=data_dir)
    if cold:
        _evict(files)
    t = time.perf_counter()
    result = validate_landing(settings)
    validate_s = time.perf_counter() - t
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    worker_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    from mammo_pipeline.validation.run import _workers

    workers = _workers(settings, len(files))
    return {
        "files": len(files),
        "records": n,
        "bytes": size,
        "raw_read_s": raw_s,
        "record_read_s": records_s,
        "import_s": import_s,
        "profile_s": profile_s,
        "validate_s": validate_s,
        "passed": result.passed,
        "quarantined": result.quarantined,
        "verdicts": {f.file: f.message for f in result.files if f.verdict != "passed"},
        "peak_rss_bytes": peak_kib * 1024,
        "workers": workers if workers > 1 else 0,
        "worker_peak_rss_bytes": worker_kib * 1024 if workers > 1 else 0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=55_890, help="records (default: full size)")
    parser.add_argument("--files", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tiles",
        choices=["synthetic", "fast"],
        default="synthetic",
        help="'synthetic': every tile generated; 'fast': unique variants of a pool of tiles",
    )
    parser.add_argument("--compress", action="store_true", help="GZIP-compressed files")
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the temp dir")
    parser.add_argument("--keep", action="store_true", help="do not delete the data")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="evict the files from the page cache before the raw read and before validation",
    )
    parser.add_argument("--_measure", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._measure is not None:
        print(json.dumps(_measure(args._measure, args.cold)))
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="mammo-bench-validation-", dir=args.workdir))
    try:
        t = time.perf_counter()
        _generate(tmp, args.n, args.files, args.seed, args.tiles, "GZIP" if args.compress else "")
        print(
            f"generated {args.n} SYNTHETIC records in {args.files} file(s) "
            f"({args.tiles} tiles) in {time.perf_counter() - t:.1f}s under {tmp}"
        )
        child = subprocess.run(
            [sys.executable, __file__, "--_measure", str(tmp)] + (["--cold"] if args.cold else []),
            capture_output=True,
            text=True,
            check=False,
        )
        if child.returncode != 0:
            print(child.stderr, file=sys.stderr)
            return 1
        m = json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    gb = m["bytes"] / 1e9
    cache = "cold (files evicted from the page cache)" if args.cold else "warm page cache"
    print(f"data: {m['records']} records, {m['files']} files, {gb:.2f} GB; {cache}")
    print(f"raw sequential read : {m['raw_read_s']:8.2f} s  ({gb / m['raw_read_s']:.2f} GB/s)")
    print(f"record read (CRC)   : {m['record_read_s']:8.2f} s")
    rate = m["records"] / m["profile_s"]
    print(f"profile only        : {m['profile_s']:8.2f} s  ({rate:.0f} rec/s, one process)")
    print(
        f"validate end to end : {m['validate_s']:8.2f} s  ({m['records'] / m['validate_s']:.0f} "
        f"rec/s; plus {m['import_s']:.1f} s one-off import)"
    )
    print(f"verdicts: {m['passed']} passed, {m['quarantined']} quarantined")
    for name, message in m["verdicts"].items():
        print(f"  {name}: {message}")
    ratio_raw = m["validate_s"] / m["raw_read_s"]
    ratio_rec = m["validate_s"] / m["record_read_s"]
    main_gb = m["peak_rss_bytes"] / 1e9
    worker_gb = m["worker_peak_rss_bytes"] / 1e9
    total_gb = main_gb + m["workers"] * worker_gb
    print(f"RATIO validate / raw read    = {ratio_raw:.2f}x  (aim <= 3x)")
    print(f"RATIO validate / record read = {ratio_rec:.2f}x")
    print(
        f"PEAK MEMORY = {total_gb:.2f} GB  (aim < 2 GB): validating process {main_gb:.2f} GB"
        + (f" + {m['workers']} profiling worker(s) x {worker_gb:.2f} GB" if m["workers"] else "")
        + " (ru_maxrss; the sum is an upper bound)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
