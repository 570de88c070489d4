"""Text → AST. The grammar lives in ``grammar.lark`` at the package root.

Only this module talks to lark; every lark exception is turned into a
``DSLSyntaxError`` with a caret and the expected tokens in the user's spelling.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import (LarkError, UnexpectedCharacters, UnexpectedEOF,
                             UnexpectedInput, UnexpectedToken, VisitError)

from ..errors import DSLSyntaxError, PruneDSLError, Span
from .ast import BinOp, Call, Definition, Expr, Hole, Name, Neg, Num, Operand, Param, Program
from .operands import X_NORM_TOKENS

GRAMMAR_PATH = Path(__file__).resolve().parent.parent / "grammar.lark"
MAX_SOURCE_CHARS = 100_000  # a formula this long is a mistake (or an attack)
MAX_DEPTH = 200  # nesting: parentheses, calls, unary minus; a chain of a + b + c counts once
# Path length through the tree, chains included: later passes recurse per node and must stay
# clear of Python's recursion limit (a 400-term sum checks, simplifies and compiles; 1000 does not).
MAX_PATH = 400
_CHAINS = {"add": "sum", "sub": "sum", "mul": "product", "div": "product"}

# How terminals are spelled in "expected ..." messages.
_SPELLING = {
    "NAME": "a name", "NUMBER": "a number", "XNORM": "‖X‖", "KIND": "'metric', 'allocation' or 'structure'",
    "MULOP": "'*'", "POWOP": "'^'", "$END": "end of input", "HOLE": "a hole (?Mat)",
}


@functools.lru_cache(maxsize=None)
def _lark() -> Lark:
    return Lark(GRAMMAR_PATH.read_text(encoding="utf-8"), parser="lalr",
                propagate_positions=True, maybe_placeholders=True, cache=False)


@functools.lru_cache(maxsize=None)
def _terminal_spelling() -> dict[str, str]:
    out = dict(_SPELLING)
    for term in _lark().terminals:
        if term.name not in out and term.pattern.type == "str":
            out[term.name] = repr(term.pattern.value)
    return out


def _span(meta_or_token) -> Span:
    if isinstance(meta_or_token, Token):
        return Span(meta_or_token.start_pos, meta_or_token.end_pos)
    return Span(meta_or_token.start_pos, meta_or_token.end_pos)


# Scores are computed in float32: a literal outside its range would silently become inf or 0.
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.401298464324817e-45  # smallest positive (subnormal) float32


def _number(tok: Token) -> float:
    value = float(tok)
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        raise DSLSyntaxError(f"number {str(tok)!r} is out of range: scores are float32, whose largest "
                             f"value is about 3.4e38", span=_span(tok))
    if abs(value) < FLOAT32_TINY and any(ch in "123456789" for ch in str(tok).lower().split("e")[0]):
        raise DSLSyntaxError(f"number {str(tok)!r} underflows to 0 in float32 (smallest about 1.4e-45)",
                             span=_span(tok), hint="write 0 if zero is meant")
    return value


@v_args(meta=True)
class _ToAST(Transformer):
    def start(self, meta, c):
        return c[0]

    def formula(self, meta, c):
        return c[0]

    def program(self, meta, c):
        return Program(tuple(c))

    def definition(self, meta, c):
        kind, name, params, body = c
        return Definition(str(kind), str(name), params or (), body, span=_span(meta))

    def params(self, meta, c):
        return tuple(p for p in c if p is not None)

    def param(self, meta, c):
        return Param(str(c[0]), c[1], span=_span(meta))

    def pos_number(self, meta, c):
        return _number(c[0])

    def neg_number(self, meta, c):
        return -_number(c[0])

    def add(self, meta, c):
        return BinOp("+", c[0], c[1], span=_span(meta))

    def sub(self, meta, c):
        return BinOp("-", c[0], c[1], span=_span(meta))

    def mul(self, meta, c):
        return BinOp("*", c[0], c[2], span=_span(meta))

    def div(self, meta, c):
        return BinOp("/", c[0], c[1], span=_span(meta))

    def pow(self, meta, c):
        return BinOp("^", c[0], c[2], span=_span(meta))

    def neg(self, meta, c):
        return Neg(c[0], span=_span(meta))

    def unary(self, meta, c):  # unary plus
        return c[0]

    def number(self, meta, c):
        return Num(_number(c[0]), span=_span(meta))

    def name(self, meta, c):
        return Name(str(c[0]), span=_span(meta))

    def xnorm(self, meta, c):
        return Operand(X_NORM_TOKENS[str(c[0])], span=_span(meta))

    def hole(self, meta, c):
        return Hole(str(c[0])[1:], span=_span(meta))

    def abs(self, meta, c):
        return Call("abs", (c[0],), span=_span(meta), name_span=_span(meta))

    def call(self, meta, c):
        name, *args = c
        args = [a for a in args if a is not None]
        positional = tuple(a for a in args if not isinstance(a, tuple))
        keywords = tuple(a for a in args if isinstance(a, tuple))
        if keywords and args.index(keywords[0]) < len(positional):
            raise DSLSyntaxError("positional argument after a keyword argument",
                                 span=_span(meta))
        return Call(str(name), positional, keywords, span=_span(meta), name_span=_span(name))

    def arg(self, meta, c):
        return c[0]

    def kwarg(self, meta, c):
        return (str(c[0]), c[1])


def _syntax_error(err: UnexpectedInput, text: str) -> DSLSyntaxError:
    pos = getattr(err, "pos_in_stream", None)
    if pos is None or pos < 0:
        pos = len(text)
    spelled = _terminal_spelling()
    expected = sorted({spelled.get(t, t) for t in (getattr(err, "expected", None) or
                                                    getattr(err, "allowed", None) or ())})
    if isinstance(err, UnexpectedEOF) or (isinstance(err, UnexpectedToken) and err.token.type == "$END"):
        msg, span = "unexpected end of formula", Span(len(text), len(text) + 1)
    elif isinstance(err, UnexpectedToken):
        tok = err.token
        msg, span = f"unexpected {str(tok)!r}", Span(tok.start_pos, max(tok.end_pos, tok.start_pos + 1))
    elif isinstance(err, UnexpectedCharacters):
        ch = text[pos] if pos < len(text) else ""
        msg, span = f"unexpected character {ch!r}", Span(pos, pos + 1)
    else:
        msg, span = "invalid syntax", Span(pos, pos + 1)
    hint = None
    if expected:
        shown = expected if len(expected) <= 8 else expected[:8] + ["…"]
        hint = "expected " + ", ".join(shown)
    if "X" in text and "‖" not in text and "X" in msg:
        hint = (hint + "; " if hint else "") + "the input appears as a statistic: ‖X‖ or norm(X), mean(X), std(X), var(X)"
    return DSLSyntaxError(msg, source=text, span=span, hint=hint)


def _parse(text: str):
    if not isinstance(text, str):
        raise DSLSyntaxError(f"expected formula text, got {type(text).__name__}")
    if len(text) > MAX_SOURCE_CHARS:
        raise DSLSyntaxError(f"formula is {len(text)} characters long; the limit is {MAX_SOURCE_CHARS}")
    if not text.strip():
        raise DSLSyntaxError("empty formula", source=text, span=Span(0, 1),
                             hint="write a formula such as |W| * ‖X‖, or a metric name such as wanda")
    try:
        tree = _lark().parse(text)
        _check_depth(tree, text)
        return _ToAST().transform(tree)
    except UnexpectedInput as err:
        raise _syntax_error(err, text) from None
    except VisitError as err:
        inner = err.orig_exc
        if isinstance(inner, PruneDSLError):
            raise inner.with_source(text) from None
        raise DSLSyntaxError(f"could not read formula: {inner}", source=text) from None
    except RecursionError:
        raise DSLSyntaxError("formula is nested too deeply", source=text) from None
    except LarkError as err:
        raise DSLSyntaxError(f"could not parse formula: {err}", source=text) from None


def _check_depth(tree, text: str) -> None:
    """Reject absurdly nested input before any recursive pass sees it (iteratively).

    Nesting counts levels of parentheses, calls and operators, with a left-associated chain
    of the same kind (``a + b - c + …``) as one level; a long chain is "too many terms".
    """
    stack = [(tree, 1, 1)]  # node, nesting, path length
    while stack:
        node, depth, path = stack.pop()
        if depth > MAX_DEPTH or path > MAX_PATH:
            meta = node.meta
            span = Span(meta.start_pos, meta.end_pos) if not meta.empty else None
            if depth > MAX_DEPTH:
                raise DSLSyntaxError(f"formula is nested more than {MAX_DEPTH} levels deep", source=text,
                                     span=span)
            raise DSLSyntaxError(f"formula has too many terms: more than {MAX_PATH} operations in a row",
                                 source=text, span=span,
                                 hint="split it into library metrics (metric part1 = …) and combine those")
        chain = _CHAINS.get(node.data)
        for child in node.children:
            if hasattr(child, "children"):
                same = chain is not None and _CHAINS.get(child.data) == chain and child is node.children[0]
                stack.append((child, depth if same else depth + 1, path + 1))


def parse_expr(text: str) -> Expr:
    """Parse one formula (an expression, possibly naming library metrics)."""
    tree = _parse(text)
    if isinstance(tree, Program):
        if len(tree.definitions) == 1:
            raise DSLSyntaxError("expected a formula, got a definition", source=text,
                                 span=tree.definitions[0].span,
                                 hint="use parse_program() for definitions")
        raise DSLSyntaxError("expected a formula", source=text, span=Span(0, len(text)))
    return tree


def parse_program(text: str) -> Program:
    """Parse a file of ``metric``/``allocation`` definitions; comments above a definition are its doc."""
    tree = _parse(text)
    if not isinstance(tree, Program):
        raise DSLSyntaxError("expected definitions such as 'metric name = formula'", source=text,
                             span=Span(0, len(text)))
    docs = _leading_comments(text)
    defs = tuple(Definition(d.kind, d.name, d.params, d.body, doc=docs.get(d.span.start, ""),
                            span=d.span, source=text) for d in tree.definitions)
    return Program(defs)


def parse(text: str) -> Expr | Program:
    """Parse either a formula or a program (whichever the text is)."""
    tree = _parse(text)
    if isinstance(tree, Program):
        return parse_program(text)
    return tree


def _leading_comments(text: str) -> dict[int, str]:
    """Map the offset of each line that follows a run of ``#`` comment lines to the comments."""
    out, run, offset = {}, [], 0
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("#"):
            run.append(stripped.lstrip("#").strip())
        elif stripped:
            if run:
                out[offset + (len(line) - len(line.lstrip()))] = " ".join(run)
            run = []
        else:
            run = []
        offset += len(line)
    return out
