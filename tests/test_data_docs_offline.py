"""Great Expectations Data Docs render without internet.

Fast tests check the asset table against GX's installed templates and the npm packages that
``make install`` brings (versions, SRI hashes), and the rewriting on small hand-written pages.
Slow tests build real Data Docs from tiny SYNTHETIC tfrecords through the committed GX
context, check every page's CSS/JS/font/image reference is local and resolves inside the docs
folder, and open the pages in headless Chromium with networking disabled: the screenshots
must show the styled page (icons in bootstrap's colours, the validation table filled in by
bootstrap-table's JS), which the same docs with CDN links do not.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest

from mammo_pipeline.config import Settings
from mammo_pipeline.data.example_codec import encode_tile
from mammo_pipeline.data.tfrecord_io import write_records
from mammo_pipeline.validation import docs_assets
from mammo_pipeline.validation.docs_assets import (
    ASSETS,
    DEFAULT_ASSETS_DIR,
    GX_WEB_ASSETS,
    find_assets,
    localize_data_docs,
)

REPO = Path(__file__).resolve().parents[1]
JQUERY = "https://code.jquery.com/jquery-3.7.1.min.js"
POPPER = "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js"
POPPER_SRI = "sha384-ApNbgh9B+Y1QKtv3Rn7W3mgPxhU9K/ScQsAP7hUibX39j7fakFPskvXusvfa0b4Q"
FONT_AWESOME = "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css"
#: A page head as GX's templates write it (subset), and its logo beacon.
HEAD = f"""<html><head>
<link rel="stylesheet" href="{FONT_AWESOME}">
<script src="{JQUERY}"></script>
<script src="{POPPER}" integrity="{POPPER_SRI}" crossorigin="anonymous"></script>
<style>.navbar-brand a {{ background: url('{GX_WEB_ASSETS}full_logo_dark.png') 0 0; }}</style>
</head><body><img src="{GX_WEB_ASSETS}logo-long.png?d=1&dataContextId=x">
<a href="https://greatexpectations.io">GX</a></body></html>
"""
# bootstrap's "text-success" / "text-danger" colours, in which GX draws its status icons.
GREEN = (40, 167, 69)
RED = (220, 53, 69)


def needs_installed_assets() -> None:
    _, missing = find_assets(DEFAULT_ASSETS_DIR)
    if missing:
        url, why = next(iter(missing.items()))
        pytest.fail(f"Data Docs assets are not installed ({url}: {why}); run `make install`")


# ---------------------------------------------------------------- the asset table


def gx_templates() -> Path:
    spec = importlib.util.find_spec("great_expectations")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "render" / "view" / "templates"


def template_resources() -> tuple[set[str], dict[str, str]]:
    """Remote script/stylesheet URLs in GX's installed templates, and their SRI hashes."""
    urls: set[str] = set()
    sri: dict[str, str] = {}
    for template in gx_templates().rglob("*.j2"):
        text = template.read_text(encoding="utf-8")
        for tag in re.findall(r"<(?:script|link)\b[^>]*>", text, re.IGNORECASE):
            ref = re.search(r'\s(?:src|href)="(https?://[^"]+)"', tag)
            if ref:
                urls.add(ref.group(1))
                integrity = re.search(r'integrity="([^"]+)"', tag)
                if integrity:
                    sri[ref.group(1)] = integrity.group(1)
    return urls, sri


def test_asset_table_covers_exactly_the_remote_css_js_of_gx_templates() -> None:
    urls, _ = template_resources()
    assert len(urls) >= 10, "GX's templates were not found or changed their layout"
    assert urls == {a.url for a in ASSETS}


def test_installed_assets_are_the_pinned_versions_and_match_gx_sri_hashes() -> None:
    needs_installed_assets()
    installed, missing = find_assets(DEFAULT_ASSETS_DIR)
    assert missing == {} and set(installed) == {a.url for a in ASSETS}
    pins = json.loads((REPO / "docs-assets" / "package.json").read_text())["dependencies"]
    for item in installed.values():
        assert pins[item.asset.package] == item.version, item.asset.package
        # the version GX names in the URL, but for the documented 1.19.0 -> 1.19.1 stylesheets
        url, wanted = item.asset.url, item.asset.version
        assert wanted in url or (wanted == "1.19.1" and "bootstrap-table@1.19.0/" in url), url
    # The two scripts GX loads with an SRI hash: the npm files are byte-identical to the CDN's.
    _, sri = template_resources()
    assert set(sri) == {
        POPPER,
        "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js",
    }
    for url, integrity in sri.items():
        assert docs_assets._sri_matches(installed[url].source, integrity), url


# ---------------------------------------------------------------- rewriting, small pages


def write_pages(docs: Path) -> dict[str, Path]:
    (docs / "static" / "images").mkdir(parents=True)
    (docs / "static" / "images" / "logo-long.png").write_bytes(b"\x89PNG not really")
    pages = {"index": docs / "index.html", "deep": docs / "validations" / "s" / "r" / "p.html"}
    for page in pages.values():
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(HEAD, encoding="utf-8")
    return pages


def test_pages_point_at_relative_local_copies_and_a_second_pass_changes_nothing(
    tmp_path: Path,
) -> None:
    needs_installed_assets()
    docs = tmp_path / "data docs"  # a space: links must still resolve
    pages = write_pages(docs)
    report = localize_data_docs(docs)
    assert sorted(report.pages_rewritten) == sorted(pages.values())
    assert report.missing == [] and report.unknown == []
    for page in pages.values():
        text = page.read_text()
        assert "https://" not in text.replace('href="https://greatexpectations.io"', "")
        assert "integrity=" not in text and "crossorigin" not in text  # file:// has no CORS
        refs = resources(page)
        assert len(refs) == 4
        for ref in refs:
            assert (page.parent / unquote(ref)).resolve().is_file(), (page, ref)
        assert "background: none 0 0" in text  # GX ships no local dark logo
    deep = pages["deep"].read_text()
    assert 'src="../../../static/images/logo-long.png"' in deep
    assert 'src="../../../static/vendor/jquery@3.7.1/dist/jquery.min.js"' in deep
    # font-awesome's CSS loads its fonts by relative url(): they are copied beside it.
    fonts = docs / "static/vendor/@fortawesome/fontawesome-free@6.6.0/webfonts"
    assert (fonts / "fa-solid-900.woff2").is_file()

    def stamps() -> dict[Path, int]:  # every file but the pass marker
        files = [p for p in docs.rglob("*") if p.is_file() and p.name != ".localized"]
        return {p: p.stat().st_mtime_ns for p in files}

    before = stamps()
    again = localize_data_docs(docs, everything=True)
    assert again.pages_rewritten == [] and again.files_copied == 0
    assert stamps() == before


def test_a_pass_reads_the_pages_changed_since_the_last_one_all_when_the_assets_change(
    tmp_path: Path,
) -> None:
    needs_installed_assets()
    docs = tmp_path / "docs"
    pages = write_pages(docs)
    assert len(localize_data_docs(docs).pages_rewritten) == 2  # first pass: every page
    old = docs / "old.html"
    old.write_text(HEAD, encoding="utf-8")
    os.utime(old, ns=(10**18, 10**18))  # built in 2001, before any pass: not read
    new = docs / "validations" / "new.html"
    new.write_text(HEAD, encoding="utf-8")  # built now, like GX's pages of a new validation
    assert localize_data_docs(docs).pages_rewritten == [new]
    assert JQUERY in old.read_text() and JQUERY not in pages["index"].read_text()
    # Other installed assets (here: none) mean a full pass; so does installing them again.
    empty = tmp_path / "node_modules"
    empty.mkdir()
    missing = localize_data_docs(docs, assets_dir=empty).missing
    assert any(m.startswith(JQUERY) for m in missing)  # old.html was read
    assert localize_data_docs(docs).pages_rewritten == [old]
    assert localize_data_docs(docs, everything=True).pages_rewritten == []
    assert not list((docs / "static" / "vendor").glob(".localizing-*"))


def test_missing_assets_keep_cdn_links_and_warn_once_with_the_fix(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    docs = tmp_path / "docs"
    pages = write_pages(docs)
    empty = tmp_path / "node_modules"
    empty.mkdir()
    with caplog.at_level(logging.WARNING, logger=docs_assets.__name__):
        report = localize_data_docs(docs, assets_dir=empty)
        localize_data_docs(docs, assets_dir=empty)
    left = sorted(m.split(": ")[0] for m in report.missing)
    assert left == sorted([FONT_AWESOME, JQUERY, POPPER])
    text = pages["index"].read_text()
    assert JQUERY in text and f'integrity="{POPPER_SRI}"' in text  # as GX wrote it
    assert 'src="static/images/logo-long.png"' in text  # GX's own copy needs no install
    assert not (docs / "static" / "vendor" / "jquery@3.7.1").exists()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "make install" in warnings[0] and "npm package" in warnings[0]


def test_a_local_file_that_fails_the_sri_hash_is_not_used(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    pages = write_pages(docs)
    modules = tmp_path / "node_modules"
    popper = modules / "popper.js"
    (popper / "dist" / "umd").mkdir(parents=True)
    (popper / "package.json").write_text('{"name": "popper.js", "version": "1.12.9"}')
    (popper / "dist" / "umd" / "popper.min.js").write_text("/* tampered */")
    report = localize_data_docs(docs, assets_dir=modules)
    assert any("does not match its SRI hash" in m for m in report.missing)
    assert f'src="{POPPER}" integrity="{POPPER_SRI}"' in pages["index"].read_text()


def test_a_stale_install_is_reported_with_both_versions(tmp_path: Path) -> None:
    jquery = tmp_path / "node_modules" / "jquery"
    (jquery / "dist").mkdir(parents=True)
    (jquery / "package.json").write_text('{"name": "jquery", "version": "3.6.0"}')
    (jquery / "dist" / "jquery.min.js").write_text("/* old */")
    _, missing = find_assets(tmp_path / "node_modules")
    assert missing[JQUERY] == "jquery 3.6.0 installed, 3.7.1 needed"


# ---------------------------------------------------------------- real Data Docs


def records(seed: int, labels: list[int]) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [
        encode_tile(rng.integers(40, 200, size=(299, 299), dtype=np.uint8), lab) for lab in labels
    ]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Data Docs of one validation run on two SYNTHETIC files (one passes, one is
    quarantined), plus a second site built with no assets installed (CDN links kept)."""
    needs_installed_assets()
    from mammo_pipeline.validation.gx_context import ContractChecker
    from mammo_pipeline.validation.profile import profile_file
    from mammo_pipeline.validation.run import validate_landing

    root = tmp_path_factory.mktemp("docs_offline")
    landing = root / "landing"
    landing.mkdir()
    write_records(landing / "good.tfrecords", records(1, [0, 1, 0, 0, 2, 0, 0, 4, 0, 0]))
    write_records(landing / "all_negative.tfrecords", records(2, [0] * 6))
    settings = Settings(data_dir=root, validation_workers=1, landing_quiet_seconds=0)
    result = validate_landing(settings)
    verdicts = {f.file: f.verdict for f in result.files}
    assert verdicts == {"good.tfrecords": "passed", "all_negative.tfrecords": "quarantined"}
    docs = Path(result.data_docs_path).parent
    failed_page = Path(next(f.data_docs for f in result.files if f.verdict == "quarantined"))

    cdn_root = root / "cdn"
    checker = ContractChecker(Settings(data_dir=cdn_root), docs_assets_dir=root / "none")
    profile = profile_file(settings.validated / "good.tfrecords")
    frame = profile.records
    frame["seen_before"] = False
    outcome = checker.validate(frame, run_name="good.tfrecords@cdn")
    return {
        "docs": docs,
        "failed_page": failed_page,
        "cdn_docs": checker.docs_dir,
        "cdn_page": Path(outcome.data_docs_page),
    }


class Resources(HTMLParser):
    """What a page loads: scripts, stylesheets, icons, images and inline CSS url()s."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("script", "img") and a.get("src"):
            self.refs.append(a["src"] or "")
        if tag == "link" and a.get("href"):
            self.refs.append(a["href"] or "")
        self._in_style = tag == "style"
        if a.get("style"):
            self.refs.extend(css_urls(a["style"] or ""))

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.refs.extend(css_urls(data))


def css_urls(css: str) -> list[str]:
    return [u for u in re.findall(r"""url\(\s*['"]?([^'")]+)""", css) if not u.startswith("data:")]


def resources(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".css":
        return css_urls(text)
    parser = Resources()
    parser.feed(text)
    return parser.refs


def is_remote(ref: str) -> bool:
    return ref.startswith("//") or urlparse(ref).scheme not in ("", "file")


@pytest.mark.slow
def test_built_data_docs_load_nothing_from_the_internet_and_every_reference_resolves(
    built: dict,
) -> None:
    docs: Path = built["docs"]
    pages = [*docs.rglob("*.html"), *docs.rglob("*.css")]
    assert len([p for p in pages if p.suffix == ".html"]) >= 4
    for page in pages:
        refs = resources(page)
        for ref in refs:
            assert not is_remote(ref), f"{page.relative_to(docs)} loads {ref}"
            target = (page.parent / unquote(ref.split("#")[0].split("?")[0])).resolve()
            assert target.is_file(), f"{page.relative_to(docs)}: {ref} does not exist"
            assert docs.resolve() in target.parents, f"{ref} is outside the docs folder"
        if page.suffix == ".html":  # each page loads the whole set (GX adds vega to some)
            assert sum("static/vendor/" in r for r in refs) >= 12, page
    # the fallback site (no assets installed) is still GX's page, CDN links and all
    cdn_refs = resources(built["cdn_docs"] / "index.html")
    assert JQUERY in cdn_refs and FONT_AWESOME in cdn_refs


# ---------------------------------------------------------------- headless browser


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome-headless-shell"):
        found = shutil.which(name)
        if found:
            return found
    return None


def browse(page: Path, out: Path, what: str) -> str:
    """Open ``page`` in headless Chromium with networking disabled; ``what`` is
    ``screenshot`` (written to ``out``) or ``dom`` (returned). The net log (every request the
    browser tried) is written beside ``out`` and returned for ``screenshot``."""
    browser = chromium()
    if browser is None:
        pytest.skip(
            "chromium is not installed (Debian: apt-get install -y chromium; .ci/run installs it)"
        )
    netlog = out.with_suffix(".netlog.json")
    command = [
        browser,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--no-first-run",
        "--hide-scrollbars",
        "--disable-background-networking",
        "--disable-component-update",
        f"--user-data-dir={out.parent / ('profile-' + out.stem)}",
        "--proxy-server=127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--log-net-log={netlog}",
        "--window-size=1280,900",
    ]
    command.append(f"--screenshot={out}" if what == "screenshot" else "--dump-dom")
    done = subprocess.run(
        [*command, page.as_uri()], capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    if what == "dom":
        return done.stdout
    assert out.is_file(), done.stderr[-2000:]
    return netlog.read_text(encoding="utf-8", errors="replace")


def requested_hosts(netlog: str) -> set[str]:
    """Hosts of the http(s) requests in a Chromium net log (read as text: robust to a log
    cut short)."""
    return {urlparse(u).hostname or "" for u in re.findall(r'"url":"(https?://[^"]+)"', netlog)}


def colour_pixels(png: Path, rgb: tuple[int, int, int], tol: int = 30) -> int:
    from PIL import Image

    a = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return int((np.abs(a - np.array(rgb)).max(axis=2) < tol).sum())


def ink(png: Path) -> float:
    """Fraction of pixels that are not (near) white."""
    from PIL import Image

    a = np.asarray(Image.open(png).convert("RGB"))
    return float((a.min(axis=2) < 235).mean())


@pytest.mark.slow
def test_headless_chromium_renders_the_docs_offline(
    built: dict, tmp_path_factory: pytest.TempPathFactory
) -> None:
    shots = tmp_path_factory.mktemp("screenshots")
    asset_hosts = {urlparse(a.url).hostname for a in ASSETS} | {urlparse(GX_WEB_ASSETS).hostname}
    docs = built["docs"]

    index_log = browse(docs / "index.html", shots / "index.png", "screenshot")
    page_log = browse(built["failed_page"], shots / "validation.png", "screenshot")
    cdn_log = browse(built["cdn_docs"] / "index.html", shots / "index_cdn.png", "screenshot")
    print(f"SYNTHETIC data; screenshots in {shots}")

    # The browser asked no CDN for anything; the docs with CDN links did (so the log works).
    assert requested_hosts(index_log) & asset_hosts == set()
    assert requested_hosts(page_log) & asset_hosts == set()
    assert requested_hosts(cdn_log) & asset_hosts, "the net log shows no CDN request"

    # Styled pages: bootstrap's panels and font-awesome's status icons in bootstrap's
    # colours. Offline, the same index with CDN links is unstyled text without icons.
    index, cdn = shots / "index.png", shots / "index_cdn.png"
    assert ink(index) > 0.03 and ink(index) > 3 * ink(cdn), (ink(index), ink(cdn))
    assert colour_pixels(index, GREEN) > 50 and colour_pixels(index, RED) > 10
    assert colour_pixels(cdn, GREEN) == 0 and colour_pixels(cdn, RED) == 0
    page = shots / "validation.png"
    assert ink(page) > 0.05 and colour_pixels(page, GREEN) > 100

    # bootstrap-table's JS filled the index's validation table (it is empty without it).
    dom = browse(docs / "index.html", shots / "index_dom", "dom")
    rows = re.findall(r'<tr[^>]*data-href="validations/[^"]*"[^>]*data-index="\d+"', dom)
    body = " ".join(re.findall(r"<tbody[^>]*>(.*?)</tbody>", dom, re.DOTALL))
    assert len(rows) == 2 and "good.tfrecords@" in body and "all_negative.tfrecords@" in body
    cdn_dom = browse(built["cdn_docs"] / "index.html", shots / "cdn_dom", "dom")
    assert "good.tfrecords@" in cdn_dom and not re.findall(r"<tr[^>]*data-index=", cdn_dom)
