"""Benchmark: end-to-end validation of a synthetic training set vs. a plain sequential read.

Generates a SYNTHETIC training set (default: full size, 55,890 records in 5 files, ~5 GB) and
a SYNTHETIC held-out test split shaped like the public one (``--test-n``, default 15,364
tiles in ``cv10_data.npy`` and ``test10_data.npy``, which the held-out-test guard searches)
in a temporary directory. The guard's index of the test split is built once, untimed (a
deployment keeps it cached), then, in a fresh child process so that the peak memory is that
of validation alone, it measures on the same files in the same run:

- ``raw read``: reading every file's bytes sequentially (8 MiB chunks), after one untimed
  warm-up pass so that every measurement sees the same page cache (``--cold`` evicts the
  files from the cache before the raw read and again before validation instead);
- ``record read``: streaming every record with CRC checks (``iter_records``), i.e. the
  cheapest read a training input pipeline could do;
- ``profile``: the streaming per-record profile alone;
- ``validate``: ``validate_landing`` end to end (sha256, profile, held-out-test guard with
  the index loaded from its cache and the test split's manifest hashed as in every run, GX
  checkpoint with Data Docs, moves, ledger, hash index, drift), excluding the one-off import
  of the libraries (Great Expectations included: printed separately);
- ``stage costs``: CPU time per record of each step of the work (CRC-checked read, Example
  decode, sha1 content hash, pixel statistics, perceptual hash, ring spectra, guard search)
  on a sample of records, and the file sha256, in one process: what bounds the ratio.

It prints each time, the ratios ``validate / raw read`` (aim: <= 3x) and ``validate / record
read``, records per second, the CPU time (this process and its workers), the load average
and the child's peak RSS (aim: < 2 GB), then deletes the data.

    python benchmarks/validation.py                      # full size (slow to generate)
    python benchmarks/validation.py --n 3000 --files 5   # reduced scale
    python benchmarks/validation.py --n 3000 --tiles fast
    python benchmarks/validation.py --n 10000 --test-n 0   # no held-out split (no guard)
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


#: Held-out tiles of the public data set (cv10 + test10: 7,682 each).
DDSM_TEST_TILES = 15_364
TEST_NAME = "synthetic_test"


def _generate(
    out: Path, n: int, files: int, seed: int, tiles: str, compression: str, test_n: int
) -> None:
    """SYNTHETIC tfrecords into ``out/landing`` (only tfrecord files land there) and a
    SYNTHETIC held-out split of ``test_n`` tiles into ``out/test``."""
    landing = out / "landing"
    landing.mkdir(parents=True)
    (out / "test").mkdir()
    if tiles == "synthetic":
        from mammo_pipeline.data.synthetic import generate

        gen = out / "generated"
        generate(
            gen,
            n,
            files=files,
            seed=seed,
            compression=compression,
            test_n=test_n,
            progress=sys.stderr.isatty(),
        )
        for p in gen.iterdir():
            if ".tfrecord" in p.name:
                os.rename(p, landing / p.name)
            elif p.name.startswith(TEST_NAME):
                os.rename(p, out / "test" / p.name)
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
    if test_n:
        test_labels = make_labels(test_n, 0.14, seed, "test")
        test_pool = {lab: [make_tile(seed, "test", i, lab) for i in range(16)] for lab in range(5)}
        data = np.lib.format.open_memmap(
            out / "test" / f"{TEST_NAME}_data.npy",
            mode="w+",
            dtype=np.uint8,
            shape=(test_n, 299, 299, 1),
        )
        for i, lab in enumerate(test_labels.tolist()):
            img = test_pool[lab][i % 16].copy()
            img.reshape(-1)[:8] = np.frombuffer(int(i).to_bytes(8, "little"), dtype=np.uint8)
            data[i, :, :, 0] = img
        data.flush()
        del data
        np.save(out / "test" / f"{TEST_NAME}_labels.npy", test_labels)


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


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and of its reaped children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _stage_costs(files: list[Path], settings, sample: int = 1024) -> dict[str, float]:
    """CPU microseconds per record of each step of validation's per-record work, measured on
    the first ``sample`` records in this process (BLAS on one thread, as in the workers),
    plus the file's sha256 spread over its records."""
    import itertools

    import numpy as np
    from threadpoolctl import threadpool_limits

    from mammo_pipeline.data.example_codec import decode_tile
    from mammo_pipeline.data.near_duplicates import perceptual_hashes
    from mammo_pipeline.data.ring_descriptors import ring_spectra
    from mammo_pipeline.data.tfrecord_io import file_sha256, iter_records
    from mammo_pipeline.validation.profile import content_hash, pixel_stats
    from mammo_pipeline.validation.test_guard import load_guard

    cpu = time.process_time
    guard = load_guard(settings)
    out: dict[str, float] = {}
    with threadpool_limits(1):
        t = cpu()
        payloads = list(itertools.islice(iter_records(files[0]), sample))
        out["read + CRC"] = cpu() - t
        n = len(payloads)
        t = cpu()
        images = [decode_tile(p).image for p in payloads]
        out["Example decode"] = cpu() - t
        t = cpu()
        for image in images:
            content_hash(image)
        out["sha1 content hash"] = cpu() - t
        t = cpu()
        for image in images:
            pixel_stats(image)
        out["pixel statistics"] = cpu() - t
        tiles = np.stack([np.frombuffer(i, np.uint8) for i in images]).reshape(n, 299, 299)
        t = cpu()
        hashes = perceptual_hashes(tiles)
        out["perceptual hash"] = cpu() - t
        t = cpu()
        rings = ring_spectra(tiles)
        out["ring spectra"] = cpu() - t
        t = cpu()
        guard.find(hashes, None, rings)
        out[f"guard search ({len(guard)} test tiles)"] = cpu() - t
        records_in_file = sum(1 for _ in iter_records(files[0], verify=False))
        t = cpu()
        file_sha256(files[0])
        out["file sha256"] = (cpu() - t) * n / records_in_file
    return {k: v / n * 1e6 for k, v in out.items()}


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
    from mammo_pipeline.validation.gx_context import quiet_gx_logging
    from mammo_pipeline.validation.profile import profile_file
    from mammo_pipeline.validation.run import validate_landing

    quiet_gx_logging()
    import great_expectations  # noqa: F401 - the one-off import, as in any process

    import_s = time.perf_counter() - t
    t = time.perf_counter()
    for f in files:
        profile_file(f)
    profile_s = time.perf_counter() - t

    settings = Settings(data_dir=data_dir)
    if cold:
        _evict(files)
    load_before = os.getloadavg()
    cpu_before = _cpu_s()
    t = time.perf_counter()
    result = validate_landing(settings)
    validate_s = time.perf_counter() - t
    cpu_s = _cpu_s() - cpu_before
    load_after = os.getloadavg()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    worker_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    from mammo_pipeline.validation.run import _workers

    workers = _workers(settings, len(files))
    validated = sorted((data_dir / "validated").glob("*.tfrecords*")) or files
    stages = _stage_costs(validated, settings)
    return {
        "files": len(files),
        "records": n,
        "bytes": size,
        "raw_read_s": raw_s,
        "record_read_s": records_s,
        "import_s": import_s,
        "profile_s": profile_s,
        "validate_s": validate_s,
        "validate_cpu_s": cpu_s,
        "load_before": load_before[0],
        "load_after": load_after[0],
        "cpus": os.cpu_count(),
        "stages_us": stages,
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
    parser.add_argument(
        "--test-n",
        type=int,
        default=DDSM_TEST_TILES,
        help=f"held-out test tiles the guard searches (default {DDSM_TEST_TILES:,}, as in "
        "the public data; 0: none)",
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
        if sys.stdin.readline().strip() != "go":  # the data is ready (or the parent gave up)
            return 1
        print(json.dumps(_measure(args._measure, args.cold)))
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="mammo-bench-validation-", dir=args.workdir))
    # Started before the data is made: Linux carries a process's peak RSS across fork and
    # exec, so a child started after generating (and indexing) gigabytes would report the
    # parent's peak as its own.
    child = subprocess.Popen(
        [sys.executable, __file__, "--_measure", str(tmp)] + (["--cold"] if args.cold else []),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        t = time.perf_counter()
        compression = "GZIP" if args.compress else ""
        _generate(tmp, args.n, args.files, args.seed, args.tiles, compression, args.test_n)
        print(
            f"generated {args.n} SYNTHETIC records in {args.files} file(s) and a SYNTHETIC "
            f"held-out split of {args.test_n} tiles ({args.tiles} tiles) in "
            f"{time.perf_counter() - t:.1f}s under {tmp}"
        )
        if args.test_n:  # a deployment keeps the guard's index cached: build it untimed
            from mammo_pipeline.config import Settings
            from mammo_pipeline.validation.test_guard import load_guard

            t = time.perf_counter()
            load_guard(Settings(data_dir=tmp))
            print(f"held-out test index built in {time.perf_counter() - t:.1f}s (untimed)")
        out, err = child.communicate("go\n")
        if child.returncode != 0:
            print(err, file=sys.stderr)
            return 1
        m = json.loads(out.strip().splitlines()[-1])
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
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
    print(
        f"validate CPU time   : {m['validate_cpu_s']:8.2f} s  (this process + workers; "
        f"{m['validate_cpu_s'] / m['validate_s']:.2f} of {m['cpus']} cores busy on average)"
    )
    print(f"load average        : {m['load_before']:.2f} before, {m['load_after']:.2f} after")
    print(f"verdicts: {m['passed']} passed, {m['quarantined']} quarantined")
    for name, message in m["verdicts"].items():
        print(f"  {name}: {message}")
    stages = m["stages_us"]
    total_us = sum(stages.values())
    print(f"CPU per record by step (one core, sample of the first file): {total_us:.0f} us")
    for name, us in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"  {name:32s} {us:8.1f} us  {us / total_us:6.1%}")
    floor_us = sum(stages[k] for k in ("read + CRC", "sha1 content hash", "file sha256"))
    floor_s = m["records"] * floor_us * 1e-6 / m["cpus"]
    print(
        f"  the checksums alone (CRC, sha1, sha256: {floor_us:.0f} us a record) on all "
        f"{m['cpus']} cores take {floor_s:.2f} s = {floor_s / m['raw_read_s']:.2f}x the raw read"
    )
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
