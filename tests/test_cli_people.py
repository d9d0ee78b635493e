"""The ``mammo`` command for people (issue #22 items 4-8): truthful provenance labels, no state
from a command that fails, argument errors that are one line without importing TensorFlow,
short summaries instead of JSON, help text without type placeholders."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from mammo_pipeline.cli.main import app
from mammo_pipeline.config import get_settings
from mammo_pipeline.errors import MammoError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bare_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty working directory and no MAMMO_* settings: what a new user has."""
    for key in [k for k in os.environ if k.startswith("MAMMO_")]:
        monkeypatch.delenv(key)
    work = tmp_path / "empty"
    work.mkdir()
    monkeypatch.chdir(work)
    get_settings.cache_clear()
    yield work
    get_settings.cache_clear()


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


# --- 6: argument errors are one line and never import TensorFlow ---------------------------
#: Runs each argv through the real entry point in one process, then says whether TensorFlow
#: was imported: stderr of each case is captured separately.
_DRIVER = """
import contextlib, io, json, sys
from mammo_pipeline.cli.main import main
out = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    sys.argv = ["mammo", *argv]
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main()
        except SystemExit as exc:
            code = exc.code
    out.append({"argv": argv, "code": code, "stderr": err.getvalue()})
print(json.dumps({"cases": out, "tensorflow": "tensorflow" in sys.modules}))
"""


@pytest.mark.slow
def test_train_argument_errors_are_one_line_without_tensorflow(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a tfrecord\n")
    cases = [
        ["train", "--learning-rate", "0"],
        ["train", "--epochs", "-1"],
        ["train", "--batch-size", "0"],
        ["train", "--image-size", "10"],
        ["train", "--weights", "foo"],
        ["train", "--data", str(tmp_path / "missing")],
        ["train", "--data", str(tmp_path / "notes.txt")],
        ["train", "--weights", "none"],  # no validated data (a new user's empty directory)
        ["train", "--data", str(tmp_path / "data.tfrecords"), "--weights", "none"],  # no test
    ]
    (tmp_path / "data.tfrecords").write_bytes(b"")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAMMO_")}
    r = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps(cases)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["tensorflow"] is False  # no argument error waits for TensorFlow's import
    for case in result["cases"]:
        lines = [ln for ln in case["stderr"].splitlines() if ln.strip()]
        assert case["code"] == 1, case
        assert len(lines) == 1 and lines[0].startswith("error: "), case
    errors = [c["stderr"] for c in result["cases"]]
    assert "missing: no such file or directory" in errors[5]
    assert "notes.txt: not a tfrecord file" in errors[6]
    assert "validated: no such directory" in errors[7]
    assert "test: no such directory" in errors[8]


def test_tensorflow_start_up_lines_are_muted(monkeypatch: pytest.MonkeyPatch) -> None:
    from mammo_pipeline.cli import quiet

    for key in quiet.TF_LOG_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("GRPC_VERBOSITY", "DEBUG")  # a value the user set wins
    quiet.quiet_tensorflow_env()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    assert os.environ["GRPC_VERBOSITY"] == "DEBUG"


# --- 5: serve and deploy without a registry create nothing ---------------------------------
@pytest.mark.parametrize("command", [["serve"], ["deploy"], ["deploy", "--version", "1"]])
def test_serve_and_deploy_without_a_registry_create_nothing(bare_env: Path, command) -> None:
    result = CliRunner().invoke(app, command)
    assert result.exit_code != 0
    assert isinstance(result.exception, MammoError), result.output
    message = str(result.exception)
    assert "no MLflow registry" in message and "source .demo/env" in message
    assert "\n" not in message
    assert sorted(os.listdir(bare_env)) == []  # no mlflow.db, no data/serving/deploy.lock


@pytest.mark.slow
def test_serve_without_a_registry_is_one_line_in_a_process(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAMMO_")}
    r = subprocess.run(
        [sys.executable, "-m", "mammo_pipeline.cli.main", "deploy"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert "source .demo/env" in lines[0] and not r.stdout.strip()
    assert os.listdir(tmp_path) == []


# --- 4: provenance travels with generated files --------------------------------------------
def test_a_demo_written_film_is_marked_synthetic_and_a_plain_png_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    from mammo_pipeline.data.provenance import SYNTHETIC, file_provenance, write_sidecar
    from mammo_pipeline.orchestration import demo_film

    sent: list[list[str]] = []

    def fake_run(argv, **kwargs):  # the demo's `mammo predict` of the film it wrote
        sent.append(argv)
        return subprocess.CompletedProcess(argv, 1, "", "no service in this test")

    monkeypatch.setattr(demo_film.subprocess, "run", fake_run)
    demo_film.analyze_whole_film("http://127.0.0.1:9", tmp_path, say=lambda _msg: None)
    film = tmp_path / "synthetic_film.png"
    assert sent and str(film) in sent[0] and "--synthetic" not in sent[0]  # the file says so
    assert file_provenance(film) == SYNTHETIC
    with Image.open(film) as img:  # still an ordinary PNG for every reader
        img.load()
        assert img.size == (1200, 2000) and img.text["mammo:provenance"] == SYNTHETIC
    plain = tmp_path / "plain.png"
    plain.write_bytes(_png(np.zeros((40, 30), np.uint8)))
    assert file_provenance(plain) is None
    tile = tmp_path / "tile.npy"
    np.save(tile, np.zeros((8, 8), np.uint8))
    assert file_provenance(tile) is None
    write_sidecar(tile)
    assert file_provenance(tile) == SYNTHETIC


def test_film_set_pngs_carry_the_marker_only_when_synthetic(tmp_path: Path) -> None:
    from mammo_pipeline.data.film_set import FilmSetWriter, load_film_set, make_film_set
    from mammo_pipeline.data.provenance import SYNTHETIC, file_provenance

    make_film_set(tmp_path / "synth", 2, seed=0)
    films = load_film_set(tmp_path / "synth")
    assert all(file_provenance(tmp_path / "synth" / r.file) == SYNTHETIC for r in films.records)
    assert films.pixels(films.records[0]).ndim == 2  # the manifest digest still holds
    writer = FilmSetWriter(tmp_path / "real", source="test", synthetic=False)
    record = writer.add(
        "f1", np.zeros((64, 48), np.uint8), pixel_spacing_mm=0.2, lesions=[], role="test",
        group="p1",
    )  # fmt: skip
    writer.close()
    real = load_film_set(tmp_path / "real")
    assert not real.synthetic and file_provenance(tmp_path / "real" / record.file) is None


def test_the_heatmap_headline_never_says_real_unless_declared() -> None:
    from mammo_pipeline.analysis.heatmap import _headline

    result = SimpleNamespace(
        score=0.4, label="negative", threshold=0.5, tiles_scored=12, tile_size_mm=29.9,
        pixel_spacing_mm=0.1, spacing_source="given",
    )  # fmt: skip
    assert _headline(result, synthetic=True).startswith("SYNTHETIC data")
    undeclared = _headline(result, synthetic=False)
    assert undeclared.startswith("provenance not declared") and "real" not in undeclared


# --- 7: output for people ------------------------------------------------------------------
def test_predict_summary_is_short_and_names_what_matters(tmp_path: Path) -> None:
    from mammo_pipeline.cli.serve import summary_lines

    body = {
        "score": 0.81, "aggregation": "max tile probability", "label": "positive",
        "threshold": 0.6, "regions": [{"rank": 1, "x0": 10, "y0": 20, "x1": 309, "y1": 319,
                                       "probability": 0.81}],
        "tiles_scored": 40, "scale": {"pixel_spacing_mm": 0.1, "spacing_source": "given"},
        "grid": {"probabilities": [[None] * 30] * 30},
        "operating_point": {"threshold": 0.6, "method": "film_validation"},
        "model_name": "mammo-vgg16", "model_version": "3",
        "data": "SYNTHETIC (marked in the file)", "heatmap_written_to": "out.png",
    }  # fmt: skip
    lines = summary_lines(body, tmp_path / "film.png", synthetic=True)
    text = "\n".join(lines)
    assert len(lines) <= 12 and "null" not in text and "None" not in text
    assert "score 0.810" in text and "POSITIVE" in text and "threshold 0.600" in text
    assert "film_validation" in text and "version 3" in text and "0.1 mm/px (given)" in text
    assert "10,20 - 309,319" in text and "heatmap: out.png" in text and "SYNTHETIC" in text
    tile = summary_lines(
        {"probability": 0.2, "label": "negative", "threshold": 0.5, "model_name": "m",
         "model_version": "1"},
        tmp_path / "t.npy",
        synthetic=False,
    )  # fmt: skip
    assert "provenance not declared" in tile[0] and "NEGATIVE" in tile[0]
    assert tile[1] == "model m version 1"


def test_predict_of_a_missing_file_is_one_line(bare_env: Path) -> None:
    result = CliRunner().invoke(app, ["predict", "nope.png", "--url", "http://127.0.0.1:9"])
    assert result.exit_code != 0 and isinstance(result.exception, MammoError)
    assert str(result.exception) == "nope.png: no such file"


def test_inspect_of_a_text_file_says_not_a_tfrecord(bare_env: Path) -> None:
    (bare_env / "notes.txt").write_text("meeting notes\n")
    result = CliRunner().invoke(app, ["data", "inspect", "notes.txt"])
    assert isinstance(result.exception, MammoError), result.output
    assert str(result.exception).startswith("notes.txt: not a tfrecord file")


def _review_context(version: str, aliases: list[str], reasons: list[str]):
    from mammo_pipeline.registry.report_html import ReviewContext

    decision = SimpleNamespace(
        passed=not reasons, reasons=reasons, checks=[], version=version, statistics={},
        evaluated_at="2026-01-01T00:00:00+00:00", policy=None, tolerance=0.02,
    )  # fmt: skip
    return ReviewContext(
        model_name="mammo-vgg16", version=version, run_id="r1", aliases=aliases,
        tags={"gate": "failed" if reasons else "passed"}, candidate_metrics={},
        champion_version=None, champion_metrics={}, min_precision=0.3, min_recall=0.8,
        tolerance=0.02, decision=decision,  # type: ignore[arg-type]
    )  # fmt: skip


def test_registry_show_of_the_champion_says_so_and_prints_reasons_once(
    bare_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mammo_pipeline.registry as registry

    (bare_env / "mlflow.db").touch()  # a store exists (read-only commands need one)
    monkeypatch.setattr(
        registry, "review_context", lambda s, v: _review_context(v, ["champion"], [])
    )
    result = CliRunner().invoke(app, ["registry", "show", "1"])
    assert result.exit_code == 0, result.output
    assert "champion: this version" in result.output and "champion: none" not in result.output
    long = "candidate recall 0.61 is below the threshold 0.80 " * 8
    monkeypatch.setattr(
        registry, "review_context", lambda s, v: _review_context(v, [], [long.strip()])
    )
    result = CliRunner().invoke(app, ["registry", "show", "2"])
    assert result.exit_code == 0, result.output
    assert " ".join(result.output.split()).count(long.strip()) == 1  # once, wrapped
    assert max(len(line) for line in result.output.splitlines()) <= 100


def test_the_review_report_names_the_aliases_its_decision_sets() -> None:
    from mammo_pipeline.registry.report_html import aliases_after

    passed = _review_context("1", [], [])
    assert aliases_after(passed) == "champion (as this decision leaves them)"
    failed = _review_context("2", [], ["recall too low"])
    assert aliases_after(failed) == "challenger (as this decision leaves them)"
    assert aliases_after(_review_context("1", ["baseline", "champion"], [])) == (
        "baseline, champion"
    )


# --- 8: help for people --------------------------------------------------------------------
def _commands() -> list[list[str]]:
    import typer.main

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if not subs:
            return [path]
        return [path] + [p for name, c in subs.items() for p in walk(c, [*path, name])]

    return walk(typer.main.get_command(app), [])


PLACEHOLDER = re.compile(r"<(bool|int|float|str|path|file|directory|list\[|[a-z]+ range)|\{\w+\}")


@pytest.mark.parametrize("path", _commands(), ids=lambda p: " ".join(p) or "mammo")
def test_help_has_no_type_placeholders_and_every_option_explained(path: list[str]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    found = PLACEHOLDER.findall(result.output)
    assert not found, (found, result.output)
    import typer.main

    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    for param in cmd.params:
        if not getattr(param, "hidden", False):
            assert getattr(param, "help", None), f"mammo {' '.join(path)}: {param.name} has no help"
    if getattr(cmd, "short_help", None):
        assert "\n" not in cmd.short_help


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["train", "--epochs", "abc"], "Invalid value for '--epochs'"),
        (["registry", "gate"], "Missing option '--version'"),
        (["trian"], "Did you mean 'train'?"),
        (["predict"], "Missing argument 'IMAGE'"),
    ],
)
def test_usage_errors_are_one_line(argv, says, monkeypatch, capsys) -> None:
    from mammo_pipeline.cli.main import main

    monkeypatch.setattr(sys, "argv", ["mammo", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert exit_info.value.code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and says in err[0], err
    assert "--help`)" in err[0]  # and where to look


def test_the_service_reads_the_marker_of_an_uploaded_png() -> None:
    from mammo_pipeline.data.provenance import png_bytes
    from serving.service import _provenance

    film = np.zeros((40, 30), np.uint8)
    assert _provenance(png_bytes(film, synthetic=True), False) == "SYNTHETIC (marked in the file)"
    assert _provenance(png_bytes(film, synthetic=False), False) == "provenance not declared"
    assert _provenance(png_bytes(film, synthetic=False), True).startswith("SYNTHETIC (declared")
