"""The metric language: grammar, AST, types, checker, printers (no torch here)."""
