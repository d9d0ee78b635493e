"""Make Great Expectations Data Docs render without internet.

GX's page templates load their CSS/JS (bootstrap, jquery, bootstrap-table, datepicker,
font-awesome, vega) from CDNs and their logo from GX's web server. Offline, hospital
machines then show unstyled pages whose validation tables (filled in by bootstrap-table's JS)
are empty. This module owns the fix:

- :data:`ASSETS`: every remote script/stylesheet URL of GX's templates, with the npm package
  and file that holds the same asset. ``make install`` installs those packages, at the
  versions GX names, from ``docs-assets/package-lock.json`` into ``docs-assets/node_modules``
  (ignored by git: the asset files are never committed).
- :func:`localize_data_docs`, run after each Data Docs build: copies the assets to
  ``<data_docs>/static/vendor/<package>@<version>/...`` (with the fonts their CSS refers to)
  and points the pages at them with relative links, so the folder can be zipped and opened
  anywhere. GX's logo (an image that also reports the context id to GX) is pointed at the copy
  GX itself puts in ``static/images``, and GX's ``static/`` links written with the wrong
  depth are corrected. A script whose tag carries an SRI ``integrity`` hash is only replaced
  by a local file with that hash.

An asset that is not installed (``make install`` not run) keeps its CDN link, so the pages
work as before where there is internet, and one warning line names what is missing and how
to install it. Each pass reads only the pages changed since the previous pass began (all of
them on the first pass, after a crash, or when the installed assets changed, so sites built
before ``make install`` are caught up by the next validation). Rewriting is idempotent: a
page without remote links is left untouched; a vendor file already in place is not copied.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

log = logging.getLogger(__name__)

#: Where ``make install`` puts the npm packages (``docs-assets/node_modules`` of the repository).
DEFAULT_ASSETS_DIR = Path(__file__).resolve().parents[2] / "docs-assets" / "node_modules"
#: Folder, relative to the Data Docs root, that receives the local copies.
VENDOR = Path("static") / "vendor"
#: GX's web server for its logos; the same images ship in ``static/images`` of every build.
GX_WEB_ASSETS = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"
GX_IMAGES = Path("static") / "images"
#: Its mtime: when the last complete pass began; its text: the installed assets it used.
PASS_MARKER = VENDOR / ".localized"
INSTALL_HINT = "run `make install` (npm ci in docs-assets/)"


@dataclass(frozen=True, slots=True)
class Asset:
    """One remote CSS/JS file of GX's templates and the npm package file that replaces it."""

    url: str
    package: str
    path: str
    #: Accepted installed version: exact (``"4.3.1"``) or a major line (``"5"`` for ``@5``).
    version: str


_CDNJS = "https://cdnjs.cloudflare.com/ajax/libs"
_JSD = "https://cdn.jsdelivr.net/npm"
_BT = "bootstrap-table"
_FILTER = "dist/extensions/filter-control/bootstrap-table-filter-control"
# fmt: off
ASSETS: tuple[Asset, ...] = (
    Asset("https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css",
          "bootstrap", "dist/css/bootstrap.min.css", "4.3.1"),
    Asset("https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js",
          "bootstrap", "dist/js/bootstrap.min.js", "4.3.1"),
    Asset(f"https://unpkg.com/{_BT}@1.19.1/dist/bootstrap-table.min.css",
          _BT, "dist/bootstrap-table.min.css", "1.19.1"),
    Asset(f"https://unpkg.com/{_BT}@1.19.1/dist/bootstrap-table.min.js",
          _BT, "dist/bootstrap-table.min.js", "1.19.1"),
    Asset(f"https://unpkg.com/{_BT}@1.19.1/{_FILTER}.min.js", _BT, f"{_FILTER}.min.js", "1.19.1"),
    # GX names 1.19.0 for the filter-control stylesheets only; the patch release 1.19.1 that
    # its scripts use carries the same stylesheets.
    Asset(f"https://unpkg.com/{_BT}@1.19.0/{_FILTER}.min.css", _BT, f"{_FILTER}.min.css", "1.19.1"),
    Asset(f"https://unpkg.com/{_BT}@1.19.0/{_FILTER}.css", _BT, f"{_FILTER}.css", "1.19.1"),
    Asset(f"{_CDNJS}/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css",
          "bootstrap-datepicker", "dist/css/bootstrap-datepicker.min.css", "1.9.0"),
    Asset(f"{_CDNJS}/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js",
          "bootstrap-datepicker", "dist/js/bootstrap-datepicker.min.js", "1.9.0"),
    Asset(f"{_JSD}/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css",
          "@forevolve/bootstrap-dark", "dist/css/bootstrap-prefers-dark.css", "1.1.0"),
    Asset(f"{_CDNJS}/font-awesome/6.6.0/css/all.min.css",
          "@fortawesome/fontawesome-free", "css/all.min.css", "6.6.0"),
    Asset("https://code.jquery.com/jquery-3.7.1.min.js", "jquery", "dist/jquery.min.js", "3.7.1"),
    Asset(f"{_CDNJS}/popper.js/1.12.9/umd/popper.min.js",
          "popper.js", "dist/umd/popper.min.js", "1.12.9"),
    # ``npm/<name>@<major>`` on jsDelivr serves the file named by the package's "jsdelivr" field.
    Asset(f"{_JSD}/vega@5", "vega", "build/vega.min.js", "5"),
    Asset(f"{_JSD}/vega-lite@5", "vega-lite", "build/vega-lite.min.js", "5"),
    Asset(f"{_JSD}/vega-embed@6", "vega-embed", "build/vega-embed.min.js", "6"),
)
# fmt: on

_TAG = re.compile(r"<(?:script|link|img)\b[^>]*>", re.IGNORECASE)
_REF = re.compile(r"""(\s(?:src|href)\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_SRI = re.compile(r"""\sintegrity\s*=\s*(["'])(.*?)\1""", re.IGNORECASE | re.DOTALL)
_CROSSORIGIN = re.compile(r"""\scrossorigin(?:\s*=\s*(["']).*?\1)?""", re.IGNORECASE | re.DOTALL)
_CSS_URL = re.compile(r"""url\(\s*(["']?)([^"')]*)\1\s*\)""", re.IGNORECASE)
_warned: set[str] = set()


@dataclass(slots=True)
class InstalledAsset:
    """An asset found in the installed packages: its file and its place under the docs."""

    asset: Asset
    package_dir: Path
    version: str

    @property
    def source(self) -> Path:
        return self.package_dir / self.asset.path

    @property
    def target(self) -> Path:
        """Path under the Data Docs root: ``static/vendor/<package>@<version>/<path>``."""
        return VENDOR / f"{self.asset.package}@{self.version}" / self.asset.path


@dataclass(slots=True)
class LocalizeReport:
    """What one :func:`localize_data_docs` pass did."""

    pages_rewritten: list[Path] = field(default_factory=list)
    files_copied: int = 0
    #: ``url: why`` of each known asset that the pages read still load from its CDN.
    missing: list[str] = field(default_factory=list)
    #: Remote script/stylesheet URLs in the pages that :data:`ASSETS` does not know.
    unknown: list[str] = field(default_factory=list)


def _version_ok(installed: str, wanted: str) -> bool:
    return installed == wanted or installed.startswith(wanted + ".")


def find_assets(
    assets_dir: Path = DEFAULT_ASSETS_DIR,
) -> tuple[dict[str, InstalledAsset], dict[str, str]]:
    """Installed assets by URL, and why each of the others is not usable, by URL."""
    found: dict[str, InstalledAsset] = {}
    missing: dict[str, str] = {}
    versions: dict[str, str | None] = {}
    for asset in ASSETS:
        package_dir = assets_dir / asset.package
        if asset.package not in versions:
            try:
                meta = json.loads((package_dir / "package.json").read_text(encoding="utf-8"))
                versions[asset.package] = str(meta["version"])
            except (OSError, ValueError, KeyError):
                versions[asset.package] = None
        version = versions[asset.package]
        source = package_dir / asset.path
        if version is None:
            missing[asset.url] = f"npm package {asset.package} not in {assets_dir}"
        elif not _version_ok(version, asset.version):
            missing[asset.url] = f"{asset.package} {version} installed, {asset.version} needed"
        elif not source.is_file():
            missing[asset.url] = f"{source} does not exist"
        else:
            found[asset.url] = InstalledAsset(asset, package_dir, version)
    return found, missing


def localize_data_docs(
    docs_dir: Path,
    *,
    assets_dir: Path = DEFAULT_ASSETS_DIR,
    everything: bool = False,
    progress: bool = False,
) -> LocalizeReport:
    """Point the Data Docs in ``docs_dir`` at local copies of their CSS/JS.

    Reads the pages (``*.html`` and GX's ``static/styles/*.css``) modified since the previous
    complete pass began, or all of them (``everything``, first pass, installed assets changed).
    Never raises for a missing asset: it keeps its CDN link and one warning per process names
    it. Raises ``OSError`` when the docs folder cannot be written.
    """
    from tqdm.auto import tqdm

    report = LocalizeReport()
    if not docs_dir.is_dir():
        return report
    installed, not_installed = find_assets(assets_dir)
    fingerprint = "".join(f"{url} {item.version}\n" for url, item in sorted(installed.items()))
    since = None if everything else _last_pass(docs_dir, fingerprint)
    pending, started = _begin_pass(docs_dir)
    complete = True
    try:
        # Copies first, so that no page ever points at a file that is not there yet.
        for item in installed.values():
            report.files_copied += _copy_asset(item, docs_dir)
        pages = list(_pages(docs_dir, since))
        for page in tqdm(pages, desc="Data Docs pages", unit="page", disable=not progress):
            try:
                text = page.read_bytes().decode("utf-8")  # newlines kept as they are
            except (OSError, UnicodeDecodeError) as exc:
                log.warning("%s: cannot read this Data Docs page (%s); left as it is", page, exc)
                complete = False
                continue
            new = _rewrite(text, page, docs_dir, installed, not_installed, report)
            if new != text:
                _write_atomic(page, new.encode("utf-8"))
                report.pages_rewritten.append(page)
        if complete:  # the next pass starts from this one's start
            pending.write_text(fingerprint, encoding="utf-8")
            os.utime(pending, ns=(started, started))
            os.replace(pending, docs_dir / PASS_MARKER)
    finally:
        pending.unlink(missing_ok=True)
    report.missing = list(dict.fromkeys(report.missing))
    report.unknown = list(dict.fromkeys(report.unknown))
    _warn_once(report)
    return report


def _last_pass(docs_dir: Path, fingerprint: str) -> int | None:
    """When the last complete pass with the same installed assets began (``None``: never)."""
    marker = docs_dir / PASS_MARKER
    try:
        same = marker.read_text(encoding="utf-8") == fingerprint
        return marker.stat().st_mtime_ns if same else None
    except OSError:
        return None


def _begin_pass(docs_dir: Path) -> tuple[Path, int]:
    """A new pending marker and its mtime: the pass's start by the filesystem's own clock,
    the clock that stamps the pages."""
    pending = docs_dir / VENDOR / f".localizing-{os.getpid()}"
    pending.parent.mkdir(parents=True, exist_ok=True)
    pending.touch()
    return pending, pending.stat().st_mtime_ns


def _pages(docs_dir: Path, since_ns: int | None) -> Iterator[Path]:
    vendor = docs_dir / VENDOR
    html = (p for p in docs_dir.rglob("*.html") if vendor not in p.parents)
    for page in [*html, *sorted((docs_dir / "static" / "styles").glob("*.css"))]:
        try:
            if since_ns is None or page.stat().st_mtime_ns >= since_ns:
                yield page
        except OSError:
            continue


def _relative(target: Path, page: Path) -> str:
    return quote(os.path.relpath(target, page.parent).replace(os.sep, "/"), safe="/@.-_~")


def _rewrite(
    text: str,
    page: Path,
    docs_dir: Path,
    installed: dict[str, InstalledAsset],
    not_installed: dict[str, str],
    report: LocalizeReport,
) -> str:
    def remote(url: str, tag: str) -> str | None:
        if url.startswith(GX_WEB_ASSETS):
            local = _gx_image(url, docs_dir)
            return None if local is None else _relative(local, page)
        item = installed.get(url)
        if item is None:
            if url in not_installed:
                report.missing.append(f"{url}: {not_installed[url]}")
            elif not tag.lower().startswith("<img"):
                report.unknown.append(url)
            return None
        sri = _SRI.search(tag)
        if sri and not _sri_matches(item.source, sri.group(2)):
            report.missing.append(f"{url}: {item.source} does not match its SRI hash")
            return None
        return _relative(docs_dir / item.target, page)

    def tag(match: re.Match[str]) -> str:
        original = match.group(0)
        ref = _REF.search(original)
        if ref is None:
            return original
        url = ref.group(3)
        is_remote = url.lower().startswith(("http://", "https://"))
        new_ref = remote(url, original) if is_remote else _static_ref(url, page, docs_dir)
        if new_ref is None:
            return original
        rewritten = original[: ref.start(3)] + new_ref + original[ref.end(3) :]
        return _CROSSORIGIN.sub("", _SRI.sub("", rewritten))  # file:// has no CORS

    def css_url(match: re.Match[str]) -> str:
        url = match.group(2).strip()
        if not url.startswith(GX_WEB_ASSETS):
            return match.group(0)
        local = _gx_image(url, docs_dir)
        # GX ships no local copy of its dark-mode logo: drop that background image.
        return "none" if local is None else f"url('{_relative(local, page)}')"

    if page.suffix == ".css":
        return _CSS_URL.sub(css_url, text)
    return _CSS_URL.sub(css_url, _TAG.sub(tag, text))


def _static_ref(ref: str, page: Path, docs_dir: Path) -> str | None:
    """The right relative link for a ``(../)*static/...`` reference that GX wrote with the
    wrong depth (its validation pages link ``../../../static/images/favicon.ico`` from four
    folders down); ``None`` when the reference resolves or is not one of those."""
    path = ref.split("?", 1)[0].split("#", 1)[0]
    if "static/" not in path or "://" in path or path.startswith(("/", "data:")):
        return None
    if (page.parent / unquote(path)).exists():
        return None
    target = docs_dir / unquote(path[path.index("static/") :])
    return _relative(target, page) if target.is_file() else None


def _gx_image(url: str, docs_dir: Path) -> Path | None:
    name = url[len(GX_WEB_ASSETS) :].split("?", 1)[0].split("#", 1)[0]
    local = docs_dir / GX_IMAGES / name
    return local if name and "/" not in name and local.is_file() else None


def _sri_matches(path: Path, integrity: str) -> bool:
    """True when one of the ``algo-base64`` hashes of an SRI attribute is ``path``'s."""
    data = path.read_bytes()
    for token in integrity.split():
        algo, _, expected = token.partition("-")
        if algo in ("sha256", "sha384", "sha512"):
            digest = base64.b64encode(hashlib.new(algo, data).digest()).decode("ascii")
            if digest == expected:
                return True
    return False


def _copy_asset(item: InstalledAsset, docs_dir: Path) -> int:
    """Copy one asset (and the files its CSS refers to) under ``static/vendor``; returns how
    many files were copied (0 when all were already in place)."""
    target = docs_dir / item.target
    copied = _copy_if_needed(item.source, target)
    if item.source.suffix == ".css":
        css = item.source.read_bytes().decode("utf-8", errors="replace")
        package_root = item.package_dir.resolve()
        for match in _CSS_URL.finditer(css):
            ref = match.group(2).strip().split("?", 1)[0].split("#", 1)[0]
            if not ref or ref.startswith(("data:", "http:", "https:", "//", "/")):
                continue
            dependency = (item.source.parent / ref).resolve()
            if package_root in dependency.parents and dependency.is_file():
                copied += _copy_if_needed(dependency, (target.parent / ref).resolve())
    return copied


def _copy_if_needed(source: Path, target: Path) -> int:
    if target.is_file() and target.stat().st_size == source.stat().st_size:
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(target, source.read_bytes())
    return 1


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name beside ``path``, then rename: never half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        if path.exists():
            shutil.copymode(path, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _warn_once(report: LocalizeReport) -> None:
    """One line per distinct problem and process (a run validates many files)."""
    lines = []
    if report.missing:
        more = f" and {len(report.missing) - 1} more" if len(report.missing) > 1 else ""
        lines.append(
            f"Data Docs keep CDN links and render blank offline: {report.missing[0]}{more}; "
            + INSTALL_HINT
        )
    if report.unknown:
        lines.append(
            f"Data Docs load {', '.join(report.unknown)}, which docs_assets.ASSETS does not map "
            "to an npm package (new Great Expectations templates?); it stays remote"
        )
    for line in lines:
        if line not in _warned:
            _warned.add(line)
            log.warning("%s", line)
