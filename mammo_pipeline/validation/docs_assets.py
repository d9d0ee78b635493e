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
to install it. Rewriting is idempotent: a page without remote links is left untouched, and a
vendor file already in place is not copied again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Iterable, Iterator
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
#: Touched just before a build; pages modified since (by the filesystem's clock) are rewritten.
BUILD_MARKER = VENDOR / ".build-started"
INSTALL_HINT = "run `make install` (npm ci in docs-assets/)"


@dataclass(frozen=True, slots=True)
class Asset:
    """One remote CSS/JS file of GX's templates and the npm package file that replaces it."""

    url: str
    package: str
    path: str
    #: Accepted installed version: exact (``"4.3.1"``) or a major line (``"5"`` for ``@5``).
    version: str


ASSETS: tuple[Asset, ...] = (
    Asset(
        "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css",
        "bootstrap",
        "dist/css/bootstrap.min.css",
        "4.3.1",
    ),
    Asset(
        "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js",
        "bootstrap",
        "dist/js/bootstrap.min.js",
        "4.3.1",
    ),
    Asset(
        "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css",
        "bootstrap-table",
        "dist/bootstrap-table.min.css",
        "1.19.1",
    ),
    Asset(
        "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js",
        "bootstrap-table",
        "dist/bootstrap-table.min.js",
        "1.19.1",
    ),
    Asset(
        "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/"
        "bootstrap-table-filter-control.min.js",
        "bootstrap-table",
        "dist/extensions/filter-control/bootstrap-table-filter-control.min.js",
        "1.19.1",
    ),
    # GX names 1.19.0 for the filter-control stylesheets only; the patch release 1.19.1 that
    # its scripts use carries the same stylesheets.
    Asset(
        "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/"
        "bootstrap-table-filter-control.min.css",
        "bootstrap-table",
        "dist/extensions/filter-control/bootstrap-table-filter-control.min.css",
        "1.19.1",
    ),
    Asset(
        "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/"
        "bootstrap-table-filter-control.css",
        "bootstrap-table",
        "dist/extensions/filter-control/bootstrap-table-filter-control.css",
        "1.19.1",
    ),
    Asset(
        "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/"
        "bootstrap-datepicker.min.css",
        "bootstrap-datepicker",
        "dist/css/bootstrap-datepicker.min.css",
        "1.9.0",
    ),
    Asset(
        "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/"
        "bootstrap-datepicker.min.js",
        "bootstrap-datepicker",
        "dist/js/bootstrap-datepicker.min.js",
        "1.9.0",
    ),
    Asset(
        "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/"
        "bootstrap-prefers-dark.css",
        "@forevolve/bootstrap-dark",
        "dist/css/bootstrap-prefers-dark.css",
        "1.1.0",
    ),
    Asset(
        "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css",
        "@fortawesome/fontawesome-free",
        "css/all.min.css",
        "6.6.0",
    ),
    Asset(
        "https://code.jquery.com/jquery-3.7.1.min.js",
        "jquery",
        "dist/jquery.min.js",
        "3.7.1",
    ),
    Asset(
        "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js",
        "popper.js",
        "dist/umd/popper.min.js",
        "1.12.9",
    ),
    # ``npm/<name>@<major>`` on jsDelivr serves the file named by the package's "jsdelivr" field.
    Asset("https://cdn.jsdelivr.net/npm/vega@5", "vega", "build/vega.min.js", "5"),
    Asset("https://cdn.jsdelivr.net/npm/vega-lite@5", "vega-lite", "build/vega-lite.min.js", "5"),
    Asset(
        "https://cdn.jsdelivr.net/npm/vega-embed@6", "vega-embed", "build/vega-embed.min.js", "6"
    ),
)

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


def mark_build_start(docs_dir: Path) -> int:
    """Touch the build marker and return its mtime (ns), read back from the filesystem so that
    the comparison with the pages' mtimes uses one clock."""
    marker = docs_dir / BUILD_MARKER
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()  # an existing marker gets the current time
    return marker.stat().st_mtime_ns


def localize_data_docs(
    docs_dir: Path,
    *,
    assets_dir: Path = DEFAULT_ASSETS_DIR,
    changed_since_ns: int | None = None,
    progress: bool = False,
) -> LocalizeReport:
    """Point the Data Docs in ``docs_dir`` at local copies of their CSS/JS.

    Only pages (``*.html`` and GX's ``static/styles/*.css``) modified at or after
    ``changed_since_ns`` are read (all of them when ``None``). Never raises for a missing
    asset: it keeps its CDN link and one warning per process names it.
    """
    from tqdm.auto import tqdm

    report = LocalizeReport()
    if not docs_dir.is_dir():
        return report
    installed, not_installed = find_assets(assets_dir)
    # Copies first, so that no page ever points at a file that is not there yet.
    for item in installed.values():
        report.files_copied += _copy_asset(item, docs_dir)
    pages = list(_pages(docs_dir, changed_since_ns))
    sri_ok: dict[tuple[str, str], bool] = {}
    for page in tqdm(pages, desc="Data Docs pages", unit="page", disable=not progress):
        try:
            text = page.read_bytes().decode("utf-8")  # newlines kept as they are
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("%s: cannot read this Data Docs page (%s); left as it is", page, exc)
            continue
        new = _rewrite(text, page, docs_dir, installed, not_installed, sri_ok, report)
        if new != text:
            _write_atomic(page, new.encode("utf-8"))
            report.pages_rewritten.append(page)
    _warn_once(report)
    return report


def _pages(docs_dir: Path, since_ns: int | None) -> Iterator[Path]:
    vendor = docs_dir / VENDOR
    candidates: Iterable[Path] = (p for p in docs_dir.rglob("*.html") if vendor not in p.parents)
    styles = docs_dir / "static" / "styles"
    for page in [*candidates, *sorted(styles.glob("*.css"))]:
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
    sri_ok: dict[tuple[str, str], bool],
    report: LocalizeReport,
) -> str:
    def tag(match: re.Match[str]) -> str:
        original = match.group(0)
        ref = _REF.search(original)
        if ref is None:
            return original
        url = ref.group(3)
        if not url.lower().startswith(("http://", "https://")):
            fixed = _static_ref(url, page, docs_dir)
            if fixed is None:
                return original
            start, end = ref.span(3)
            return original[:start] + fixed + original[end:]
        if url.startswith(GX_WEB_ASSETS):
            local = _gx_image(url, docs_dir)
            if local is None:
                return original
            new_ref = _relative(local, page)
        elif url in installed:
            item = installed[url]
            sri = _SRI.search(original)
            if sri:
                key = (url, sri.group(2))
                if key not in sri_ok:
                    sri_ok[key] = _sri_matches(item.source, sri.group(2))
                if not sri_ok[key]:
                    _record(report.missing, f"{url}: {item.source} does not match its SRI hash")
                    return original
            new_ref = _relative(docs_dir / item.target, page)
        else:
            if url in not_installed:
                _record(report.missing, f"{url}: {not_installed[url]}")
            elif not original.lower().startswith("<img"):
                _record(report.unknown, url)
            return original
        start, end = ref.span(3)
        rewritten = original[:start] + new_ref + original[end:]
        return _CROSSORIGIN.sub("", _SRI.sub("", rewritten))

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


def _record(items: list[str], item: str) -> None:
    if item not in items:
        items.append(item)


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
    try:
        if target.stat().st_size == source.stat().st_size:
            return 0
    except FileNotFoundError:
        pass
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return 1


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        shutil.copymode(path, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _warn_once(report: LocalizeReport) -> None:
    if report.missing:
        key = "missing:" + "|".join(report.missing)
        if key not in _warned:
            _warned.add(key)
            more = f" and {len(report.missing) - 1} more" if len(report.missing) > 1 else ""
            log.warning(
                "Data Docs keep CDN links and render blank offline: %s%s; %s",
                report.missing[0],
                more,
                INSTALL_HINT,
            )
    if report.unknown:
        key = "unknown:" + "|".join(report.unknown)
        if key not in _warned:
            _warned.add(key)
            log.warning(
                "Data Docs load %s, which mammo_pipeline.validation.docs_assets.ASSETS does not "
                "map to an npm package (new Great Expectations templates?); it stays remote",
                ", ".join(report.unknown),
            )


def main(argv: list[str] | None = None) -> int:
    """``python -m mammo_pipeline.validation.docs_assets DATA_DOCS_DIR``: localize a whole
    site (e.g. one built before this module existed)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("docs_dir", type=Path)
    parser.add_argument("--assets-dir", type=Path, default=DEFAULT_ASSETS_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if not args.docs_dir.is_dir():
        print(f"error: {args.docs_dir}: no such Data Docs directory", file=sys.stderr)
        return 2
    report = localize_data_docs(args.docs_dir, assets_dir=args.assets_dir, progress=True)
    print(
        f"{args.docs_dir}: {len(report.pages_rewritten)} pages rewritten, "
        f"{report.files_copied} asset files copied, {len(report.missing)} assets still remote"
    )
    return 1 if report.missing or report.unknown else 0


if __name__ == "__main__":
    raise SystemExit(main())
