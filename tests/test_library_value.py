"""dsl.library.Library: the built-in and user definitions as one value."""
import pytest

import prunedsl
from prunedsl.dsl.library import BUILTIN, Library, library
from prunedsl.errors import DSLNameError


def test_a_library_is_a_value_parsed_once():
    texts = ("metric boost(k = 2) = |W| * ‖X‖ ^ k\n",)
    a, b = Library(list(texts)), Library(texts)
    assert a == b and hash(a) == hash(b) and a.texts == texts  # keys the parse caches
    assert a.of_kind("metric") is not a.of_kind("metric")       # callers get their own dict...
    assert a._definitions is a._definitions                      # ...of definitions parsed once
    assert "boost" in a.of_kind("metric") and "boost" not in BUILTIN.of_kind("metric")
    assert prunedsl.parse("boost", library=a) is prunedsl.parse("boost", library=b)
    with pytest.raises(DSLNameError, match="defined twice"):
        Library(("metric x = |W|\nmetric x = W",)).of_kind()


def test_library_files(tmp_path):
    (tmp_path / "a.pdsl").write_text("metric boost = |W| * 2\n", encoding="utf-8")
    lib = Library.from_files([tmp_path / "a.pdsl"])
    assert prunedsl.parse("boost", library=lib).text() == "|W| * 2"
    with pytest.raises(prunedsl.PruneDSLError, match="cannot read library file"):
        Library.from_files([tmp_path / "missing.pdsl"])


def test_builtin_is_the_library_function():
    assert library("allocation") == BUILTIN.of_kind("allocation") and "owl" in library("allocation")
