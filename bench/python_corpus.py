"""An offline "task" corpus for bench_task_specific.py: the Python standard library's own source.

    manifest = ensure_corpus(Path("/tmp/pycorpus"), cap_mb=4)
    manifest["paths"]["calib"], manifest["paths"]["heldout"]   # the two text files

Every ``*.py`` file under ``sysconfig.get_paths()["stdlib"]``, except test code
(``test/``, ``tests/``), the IDLE and lib2to3 packages, installed packages (``site-packages``),
the machine-generated ``_sysconfigdata*`` and the generated codec tables (``encodings/*`` made
by ``gencodec.py``: 256-entry character tables, 1.4 MB that would dominate a sample of
"Python" and whose perplexity says little about code). A stable hash of each file's relative path
decides everything, so two builds from the same standard library give the same bytes:

- the split: ``hash % 100 < 80`` goes to calibration, the rest is held out (~80/20, whole
  files, so no file is on both sides);
- the order: files are taken in hash order until the size cap, so a capped corpus samples the
  whole library rather than its alphabetical start, and each text lists its files in that
  order (the first evaluation windows read many modules, not the first few of the alphabet).

Each file's text is preceded by a comment line ``# file: <relative path>``. The two texts and
``manifest.json`` (file lists, sizes, sha256 of both texts, the Python version) go to one
directory; a later run reuses them (checking the sha256), so results stay comparable on a
machine with another Python.
"""
from __future__ import annotations

import hashlib
import json
import platform
import sysconfig
from pathlib import Path

EXCLUDED_DIRS = frozenset({"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages"})
CALIB_PERCENT = 80
FILES = {"calib": "python_calib.txt", "heldout": "python_heldout.txt"}
MANIFEST = "manifest.json"
VERSION = 1   # of the rules above: a corpus built by other rules is not reused
GENERATED_MARK = "with gencodec.py"   # in the first line of every generated codec table


class CorpusError(Exception):
    """The corpus directory holds something this module did not write, or other settings."""


def path_hash(rel: str) -> int:
    """A stable 64-bit hash of a relative path (sha256; Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(rel.encode("utf-8")).digest()[:8], "big")


def split_of(rel: str) -> str:
    return "calib" if path_hash(rel) % 100 < CALIB_PERCENT else "heldout"


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def source_files(root: Path) -> list[str]:
    """Relative POSIX paths of the library's ``*.py`` files, sorted, without the excluded ones."""
    out = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if EXCLUDED_DIRS & set(rel.parts[:-1]) or rel.name.startswith("_sysconfigdata") or not path.is_file():
            continue
        out.append(rel.as_posix())
    return sorted(out)


def build_corpus(root: Path, directory: Path, cap_mb: float) -> dict:
    """Write the two texts and the manifest to ``directory``; returns the manifest."""
    cap = int(cap_mb * 2**20)
    chosen: list[tuple[str, str]] = []
    skipped: list[str] = []
    generated: list[str] = []
    total = 0
    for rel in sorted(source_files(root), key=lambda r: (path_hash(r), r)):
        if total >= cap:
            break
        try:
            text = (root / rel).read_text(encoding="utf-8")
        except UnicodeDecodeError:  # a few files declare another source encoding: left out
            skipped.append(rel)
            continue
        if GENERATED_MARK in text[:300]:
            generated.append(rel)
            continue
        chosen.append((rel, text))
        total += len(text.encode("utf-8"))
    parts: dict[str, list[tuple[str, str]]] = {"calib": [], "heldout": []}
    for rel, text in chosen:
        parts[split_of(rel)].append((rel, text))
    directory.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"version": VERSION, "stdlib": str(root), "python": platform.python_version(),
                      "cap_mb": cap_mb, "calib_percent": CALIB_PERCENT, "excluded_dirs": sorted(EXCLUDED_DIRS),
                      "skipped_not_utf8": skipped, "skipped_generated": generated,
                      "files": {}, "bytes": {}, "sha256": {}, "paths": {}}
    for split, items in parts.items():
        if not items:
            raise CorpusError(f"the {split} split is empty: raise the size cap ({cap_mb} MB)")
        text = "\n".join(f"# file: {rel}\n{body.rstrip()}\n" for rel, body in items)
        data = text.encode("utf-8")
        path = directory / FILES[split]
        path.write_bytes(data)
        manifest["files"][split] = [rel for rel, _ in items]
        manifest["bytes"][split] = len(data)
        manifest["sha256"][split] = hashlib.sha256(data).hexdigest()
        manifest["paths"][split] = str(path)
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1))  # last: a half-built corpus has none
    return manifest


def ensure_corpus(directory: Path, cap_mb: float, root: Path | None = None) -> dict:
    """The corpus in ``directory``: reused when its manifest is there (same cap, texts unchanged),
    built from ``root`` (default: this Python's standard library) otherwise."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        return build_corpus(root or stdlib_root(), directory, cap_mb)
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("version") != VERSION:
        raise CorpusError(f"{directory} holds a corpus built by other rules (version {manifest.get('version')}, "
                          f"this is {VERSION}); give another --corpus-dir")
    if manifest.get("cap_mb") != cap_mb:
        raise CorpusError(f"{directory} holds a corpus capped at {manifest.get('cap_mb')} MB, not {cap_mb} MB; "
                          f"give that cap or another --corpus-dir")
    for split, name in FILES.items():
        path = directory / name
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        if digest != manifest["sha256"][split]:
            raise CorpusError(f"{path} is missing or changed since {manifest_path} was written; "
                              f"move the directory away to build it again")
        manifest["paths"][split] = str(path)  # the directory may have moved
    return manifest
