"""What every command prints with: tables for people, one-line JSON for machines.

``--format text|md|json`` chooses; without it, a terminal gets aligned plain-text tables
and a pipe or file gets Markdown (what prunedsl always printed, so scripts and docs that
read it keep working). ``--json`` is ``--format json``.
"""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import ConfigError
from ..tables import markdown_table, render_table  # noqa: F401  (markdown_table: re-exported)

FORMATS = ("text", "md", "json")


class _FormatAction(argparse.Action):
    """--format json also sets ``args.json``, so an error is reported as JSON too."""

    def __call__(self, parser, namespace, value, option_string=None):
        setattr(namespace, self.dest, value)
        if value == "json":
            namespace.json = True


def add_format_option(parser) -> None:
    parser.add_argument("--format", choices=FORMATS, default=None, action=_FormatAction,
                        help="text (aligned tables; the default on a terminal), md (Markdown tables; the "
                             "default when stdout is a pipe or file) or json (same as --json)")


def output_format(args) -> str:
    """text, md or json, from --format / --json / whether stdout is a terminal."""
    chosen = getattr(args, "format", None)
    if getattr(args, "json", False):
        if chosen not in (None, "json"):
            raise ConfigError("--json and --format {fmt} disagree", hint="give one of them", fmt=chosen)
        return "json"
    if chosen is not None:
        return chosen
    return "text" if sys.stdout.isatty() else "md"


def print_table(header, rows, fmt: str) -> None:
    print(render_table(header, rows, fmt))


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, ensure_ascii=False, indent=None, default=str)
    sys.stdout.write("\n")
