"""Placeholder until the sympy layer lands: printing without simplification."""
from .printer import to_text


def formula(expr):
    return to_text(expr)


def pretty(expr):
    return to_text(expr)


def latex(expr):
    return to_text(expr)


def canonical(expr, group):
    return to_text(expr)
