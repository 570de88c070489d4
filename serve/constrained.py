"""The prunedsl grammar in llguidance's Lark dialect, derived from ``grammar.lark``.

    grammar_text("formula")   # one formula, no holes
    grammar_text("reply")     # optional `node N` line, then 1..8 formulas (holes allowed),
                              # each may be numbered `1. ` (dropped by the reader)
    reply_grammar_for((0, 3)) # the same with a required `node 0` or `node 3` line

The derivation reads the *compiled* lark grammar (``Lark(...).rules`` / ``.terminals``),
so it follows ``grammar.lark`` when that changes: the rules reachable from ``formula``
are printed back as plain BNF and the terminals are rewritten. Aliases (``-> call``) say
what an alternative is. No torch, no llguidance here; ``generate.py`` compiles the text.

Lark vs llguidance's Lark dialect, and what the derivation does about each difference:

- ``?rule`` and ``-> alias`` only shape lark's tree (llguidance builds none): not emitted.
- ``[x]`` (``maybe_placeholders``) and ``x*`` are compiled by lark into alternatives and
  ``__rule_star_N`` rules; printed as ordinary rules (renamed ``hrule_star_N``).
- ``%import common.WS`` / ``%ignore``: llguidance imports only its own ``common``. The
  ignored text here is a space: no newline inside a formula (it separates a reply's
  lines) and no ``#`` comment (free text the model could fill until the budget ends).
- no lookarounds in llguidance's (Rust) regexes: ``HOLE``'s ``(?![A-Za-z0-9_])`` is
  dropped; safe, as a hole followed by a name or number is never grammatical.
- no terminal priorities (``KIND.2``): only definitions use them, and those are dropped.
- ``\\d`` is a Unicode digit in Python and in Rust: it becomes ``[0-9]``.
- llguidance lexes greedily (a lexeme ends when the next byte cannot extend it); on this
  grammar that agrees with lark (``**`` vs ``*``, ``2.5`` vs ``2`` ``.5``).

Bounds, so that decoding terminates: at most 6 digits before and after the point and a
1-digit exponent (every number is finite); only known names; nesting and length are
bounded by the token budget, which ``generate.py`` keeps by completing the formula
before it runs out. A number has at most ``reply_guard.MAX_SIGNIFICANT`` (5) significant
digits (``1.156054`` is gone, ``0.00125`` and ``2.5e-3`` are not): the reply check
(``replies.py``) rejects more, as a copied score or noise, so the grammar never offers
what every attempt would be rejected for.

Narrowing (a subset of ``grammar.lark``'s language, towards what the checker accepts;
the names come from the ``dsl`` tables and the library, so they follow them too):

- names by role: an operand or metric (``-> name``), a function or parameterized metric
  (``-> call``), a metric parameter (``-> kwarg``); the input statistics only as
  ``norm(X)``, ``norm(X, 1)``, ``norm(X, inf)``, ``mean(X)``, ``std(X)``, ``var(X)``
  (``‖X‖`` etc. from the grammar), so there is no bare ``X``;
- a call has positional or keyword arguments, not both (lark parses ``f(a=1, 2)``, then
  the parser rejects it);
- a number has a digit after its point (`2.5`, not `2.`): `1.` is the list numbering
  small models put before lines, which the reply mode allows there (``LIST_MARK``);
- an exponent is a number (``-2``, ``(1/3)``; ``?c`` in a sketch), as the checker wants;
- the power is spelled ``^`` (``**`` is Markdown bold to a chat model: ``**wanda**``);
- a formula mentions an operand that varies per weight (``W``, ``G``, ``hinv``, ``‖X‖``,
  a metric; a hole in a sketch), as the checker rejects Scalar results: each rule R gets
  copies R_t (with such an operand) and R_u (without), see ``_require_operand``; inside a
  whole-tensor reduction (``sum(W)`` is a Scalar) an operand does not count;
- calls have the arities of ``dsl.functions.ARITY`` (``min(W, G, 1)``, ``abs()`` are
  gone); a library metric's arguments are numbers and its keywords its own parameters
  (``ria(W)``, ``ria(alpha = 1)`` are gone), see ``_narrow_calls``.

Type errors remain possible (``sqrt(W)``: signs; ``row_sum(‖X‖)``: shapes): the grammar
guarantees parsing only. ``generate.py`` type-checks each constrained reply and samples
again when the checker rejects it.
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass

from lark import Lark

from ..dsl.functions import ALL_FUNCTIONS, ARITY, WHOLE
from ..dsl.library import library
from ..dsl.operands import NAMED_OPERANDS, OPERANDS
from ..dsl.parser import GRAMMAR_PATH
from ..dsl.types import SCALAR
from ..errors import PruneDSLError
from ..llm_contract import MAX_LINES, MAX_NODE_DIGITS
from ..reply_guard import MAX_SIGNIFICANT

MODES = ("formula", "reply")
MAX_DIGITS = 6        # digits before and after the decimal point
MAX_EXP_DIGITS = 1    # 999999.999999e9 and 1e-9 fit float32, the precision scores have (e99 would not)

ENTRY_RULE = "formula"          # its body is what a formula is
HOLE_ALIAS = "hole"
XNORM_ALIAS = "xnorm"
DROP_ALIASES = {"formula": {HOLE_ALIAS}, "reply": set()}
NAME_TERMINAL = "NAME"
NAME_ROLES = {"name": ("VAR_NAME", "SCALAR_NAME"), "call": ("FUNC_NAME", "PARAM_FUNC"), "kwarg": ("PARAM_NAME",)}
ROLE_TERMINALS = {t for roles in NAME_ROLES.values() for t in roles}
KWARG_ALIAS = "kwarg"
NUMBER_ALIAS = "number"   # `NUMBER -> number`: its terminal is what exponents are made of
POW_ALIAS = "pow"         # `atom POWOP unary -> pow`: the exponent becomes a number
# One spelling where the language has several: `**` is also Markdown bold, which small
# chat models put around names (`**wanda**`), and the grammar would read it as a power.
SPELLINGS = {"POWOP": "^"}
NODE_LINE = f"/node [0-9]{{1,{MAX_NODE_DIGITS}}}/"
# Small chat models number their lines (`1. |W|`) whatever the prompt says; the reply mode
# allows that before each line and ``split_reply`` drops it (``llm_contract.LIST_MARK_RE``).
# Without it the mask turns the model's `1.` into a number and the formula around it
# (`1. ^(0.5) * ‖X‖ ^ 0.5`). A space must follow, as ``split_reply`` wants (`1.W` is no line).
LIST_MARK = "/[0-9]{1,2}[.)] /"


class GrammarDerivationError(PruneDSLError):
    """grammar.lark changed in a way the derivation does not know how to translate."""

    kind = "grammar derivation error"


@dataclass(frozen=True)
class KnownNames:
    variables: tuple[str, ...]   # bare names that vary per weight: operands, library metrics
    scalars: tuple[str, ...]     # bare names of one value per layer (n_in, n_out)
    functions: tuple[str, ...]   # called names: the built-in functions
    params: tuple[str, ...]      # keyword arguments of library metrics
    param_functions: tuple[str, ...]  # library metrics with parameters
    x_statistics: tuple[str, ...]  # norm(X), mean(X), ... (their ASCII spelling)
    signatures: tuple[tuple[str, tuple[str, ...]], ...] = ()  # param_functions with their parameters


@functools.lru_cache(maxsize=None)
def known_names() -> KnownNames:
    metrics = library("metric")
    x_stats = tuple(o.ascii for o in OPERANDS.values() if "X" in o.ascii and "(" in o.ascii)
    x_funcs = {s.split("(")[0] for s in x_stats}          # norm, mean, std, var
    whole_tensor = {"mean", "std"}                        # also reduce any expression
    functions = sorted(set(ALL_FUNCTIONS) - (x_funcs - whole_tensor))
    params = sorted({p.name for d in metrics.values() for p in d.params})
    scalars = {n for n, key in NAMED_OPERANDS.items() if OPERANDS[key].type.shape == SCALAR}
    return KnownNames(tuple(sorted((set(NAMED_OPERANDS) - scalars) | set(metrics))), tuple(sorted(scalars)),
                      tuple(functions), tuple(params), tuple(sorted(n for n, d in metrics.items() if d.params)),
                      x_stats, tuple((n, tuple(p.name for p in d.params)) for n, d in sorted(metrics.items())
                                     if d.params))


@functools.lru_cache(maxsize=None)
def _lark() -> Lark:
    return Lark(GRAMMAR_PATH.read_text(encoding="utf-8"), parser="lalr", maybe_placeholders=True)


def _rule_name(name: str) -> str:
    """lark's helper rules are ``__atom_star_2``; keep names plain for llguidance."""
    return "h" + name.strip("_") if name.startswith("_") else name


def _bound_regex(name: str, regex: str) -> str:
    """Rewrite a Python regex into a bounded one in llguidance's (Rust) syntax."""
    out = re.sub(r"\(\?<?[!=][^()]*\)", "", regex)  # lookarounds: see the module docstring
    out = out.replace(r"\d", "[0-9]")
    # `\d+\.?\d*` is `\d+(\.\d*)?`; the second form bounds digits on each side separately.
    # A digit must follow the point: `1.` is list numbering here (see LIST_MARK), not a number.
    out = out.replace(r"[0-9]+\.?[0-9]*", r"[0-9]+(\.[0-9]+)?")
    exp = re.compile(r"(\[eE\]\[\+-\]\?)\[0-9\]\+")  # the exponent of a number
    out = exp.sub(lambda m: m.group(1) + f"[0-9]{{1,{MAX_EXP_DIGITS}}}", out)
    out = out.replace("[0-9]+", f"[0-9]{{1,{MAX_DIGITS}}}").replace("[0-9]*", f"[0-9]{{0,{MAX_DIGITS}}}")
    bare = re.sub(r"\[(\\.|[^\]])*\]", "", re.sub(r"\\.", "", out))  # no escapes, no classes
    if re.search(r"[*+]|\{\d*,\}", bare):
        raise GrammarDerivationError(f"terminal {name} /{regex}/ is unbounded after rewriting: /{out}/",
                                     hint="teach serve/constrained.py to bound it")
    return "/" + out.replace("/", r"\/") + "/"


# The mantissa _bound_regex makes of grammar.lark's NUMBER, and the same numbers with at
# most MAX_SIGNIFICANT significant digits (leading zeros do not count: 0.00125 has 3).
BOUNDED_MANTISSA = rf"[0-9]{{1,{MAX_DIGITS}}}(\.[0-9]{{1,{MAX_DIGITS}}})?|\.[0-9]{{1,{MAX_DIGITS}}}"


def significant_mantissa(n: int = MAX_SIGNIFICANT) -> str:
    zero_led = rf"0?\.0{{0,{MAX_DIGITS - 1}}}[0-9]{{1,{n}}}"
    return "|".join(["0", rf"[1-9][0-9]{{0,{n - 1}}}", zero_led] +
                    [rf"[1-9]{f'[0-9]{{{k - 1}}}' if k > 1 else ''}\.[0-9]{{1,{n - k}}}" for k in range(1, n)])


def _number_terminal(name: str, pattern) -> str:
    out = _bound_regex(name, pattern.value)
    if BOUNDED_MANTISSA not in out:
        raise GrammarDerivationError(f"the number terminal {name} /{pattern.value}/ changed: no /{BOUNDED_MANTISSA}/ "
                                     f"in /{out}/", hint="teach _number_terminal in serve/constrained.py its form")
    return out.replace(BOUNDED_MANTISSA, significant_mantissa())


def _literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _alternatives(names) -> str:
    return " | ".join(_literal(n) for n in names)


@dataclass
class _Walk:
    rules: dict[str, list[list[str]]]   # rule -> alternatives (symbol lists), in walk order
    terminals: set[str]                 # grammar.lark terminals used
    name_rule: str                      # the rule with `NAME -> name` (atoms)
    kwargs: list[list[str]]             # the `NAME "=" expr -> kwarg` alternatives


def _walk(mode: str, by_origin: dict, terminals: dict, role_terms: dict) -> _Walk:
    """The rules reachable from the entry rule's body, with NAME split by role and the
    dropped and moved alternatives taken out."""
    rules: dict[str, list[list[str]]] = {}
    used: set[str] = set()
    name_rule, kwargs = None, []
    todo = [s.name for r in by_origin[ENTRY_RULE] for s in r.expansion]
    while todo:
        origin = todo.pop()
        if origin in rules:
            continue
        alts = rules[origin] = []
        for r in by_origin[origin]:
            alias, syms = r.alias, [s.name for s in r.expansion]
            if alias in DROP_ALIASES[mode]:
                continue
            variants = [syms]
            if NAME_TERMINAL in syms:
                if alias not in NAME_ROLES:
                    raise GrammarDerivationError(f"NAME in rule {origin} (alias {alias}) has no known role",
                                                 hint=f"known roles: {', '.join(NAME_ROLES)}")
                # one alternative per kind of name; none if no such names (e.g. no parameters)
                variants = [[role if x == NAME_TERMINAL else x for x in syms]
                            for role in NAME_ROLES[alias] if role_terms[role]]
                name_rule = origin if alias == "name" else name_rule
            for syms in variants:
                if alias == POW_ALIAS:  # the checker wants a constant exponent: say so in the grammar
                    if syms[-1] in terminals:
                        raise GrammarDerivationError(f"the exponent of `{alias}` is not a rule: {syms}")
                    syms = syms[:-1] + ["exponent"]
                for sym in syms:
                    if sym in terminals:
                        used.add(sym)
                    elif sym not in ROLE_TERMINALS and sym != "exponent":
                        todo.append(sym)
                syms = [x if x in terminals or x in ROLE_TERMINALS else _rule_name(x) for x in syms]
                (kwargs if alias == KWARG_ALIAS else alts).append(syms)
    if name_rule is None:
        raise GrammarDerivationError("no `NAME -> name` alternative reachable from formula")
    return _Walk({_rule_name(k): v for k, v in rules.items()}, used, _rule_name(name_rule), kwargs)


def _terminal(name: str, pattern) -> str:
    if name in SPELLINGS:
        if not re.fullmatch(pattern.to_regexp(), SPELLINGS[name]):
            raise GrammarDerivationError(f"{SPELLINGS[name]!r} is no longer a spelling of {name}")
        return _literal(SPELLINGS[name])
    return _literal(pattern.value) if pattern.type == "str" else _bound_regex(name, pattern.value)


def _narrow_calls(w: _Walk, names: KnownNames, role_terms: dict) -> tuple[set[str], set[str]]:
    """Calls with the arities of ``dsl.functions.ARITY`` and parameters that are numbers.

    lark's call alternatives have 0, 1 or 2+ arguments (``f()``, ``f(x)``, ``f(x, y, ...)``);
    each gets the names that take that many: ``abs()`` and ``min(W, G, 1)`` are gone, and
    ``f(x, y, ...)`` is cut to two arguments when no function takes more. One-argument
    whole-tensor reductions (``sum``, ``max``, ... of ``dsl.functions.WHOLE``) get a role of
    their own: their value is a Scalar, so the operand inside does not count as one the
    formula varies with (``sum(W)`` alone is no formula). A library metric's positional
    and keyword arguments are numbers (``constant``), keywords only its own parameters.
    Returns the symbols that make an alternative untainted (``_require_operand``'s
    ``opaque``) and the literal metric names to add to ``taint``."""
    def takes(f: str, n: int) -> bool:
        lo, hi = ARITY[f]
        return lo <= n <= hi if n < 2 else hi >= 2

    fs = names.functions
    roles = {"FUNC_NAME": tuple(f for f in fs if takes(f, 1) and f not in WHOLE),
             "GLOBAL_FUNC": tuple(f for f in fs if takes(f, 1) and f in WHOLE),
             "PAIR_NAME": tuple(f for f in fs if takes(f, 2)), "ZERO_NAME": tuple(f for f in fs if takes(f, 0)),
             "MULTI_PARAM_FUNC": tuple(f for f, ps in names.signatures if len(ps) >= 2)}
    role_terms.update(roles)
    most = max([ARITY[f][1] for f in roles["PAIR_NAME"]] + [len(ps) for _, ps in names.signatures], default=1)
    if most > 2:
        raise GrammarDerivationError(f"a function or metric takes {most} arguments",
                                     hint="teach _narrow_calls in serve/constrained.py to bound them")
    out: list[list[str]] = []
    for a in w.rules[w.name_rule]:
        head, inner = a[0], a[2:-1]
        if head not in ("FUNC_NAME", "PARAM_FUNC") or len(inner) > 2:
            out.append(a)
            continue
        if len(inner) == 2:  # an argument and lark's `("," arg)*` rule: one more argument
            (base,) = [b for b in w.rules[inner[1]] if inner[1] not in b]
            inner = inner[:1] + base
        if head == "PARAM_FUNC":
            inner = ["constant" if x == inner[0] else x for x in inner]
            head = "MULTI_PARAM_FUNC" if len(inner) > 1 else head
            out.append([head, a[1], *inner, a[-1]])
            continue
        for role in {0: ["ZERO_NAME"], 1: ["FUNC_NAME", "GLOBAL_FUNC"]}.get(len(inner), ["PAIR_NAME"]):
            out.append([role, a[1], *inner, a[-1]])
    w.rules[w.name_rule] = [a for a in out if role_terms.get(a[0], True)]
    literals = set()
    for i, (f, ps) in enumerate(names.signatures if w.kwargs else ()):  # keywords only: lark accepts
        name = "(" + _alternatives(ps) + ")"                            # f(a=1, 2), the parser does not
        w.rules[f"kwarg_{i}"] = [[name if x == "PARAM_NAME" else x for x in kw[:-1]] + ["constant"]
                                 for kw in w.kwargs]
        more = f'("," kwarg_{i}){{0,{len(ps) - 1}}}' if len(ps) > 1 else None
        w.rules[w.name_rule].append([_literal(f), '"("', f"kwarg_{i}", *([more] if more else []), '")"'])
        literals.add(_literal(f))
    return {"GLOBAL_FUNC"}, literals | {"MULTI_PARAM_FUNC"}


def _require_operand(rules: dict[str, list[list[str]]], taint: set[str],
                     opaque: set[str] = frozenset()) -> dict[str, list[list[str]]]:
    """Add ``R_t`` (the strings of ``R`` that contain a symbol of ``taint``) and ``R_u``
    (those that contain none) for every rule ``R``. An alternative of ``R_t`` has its first
    tainted symbol at position i: ``U(s1) .. U(s_i-1) T(s_i) s_i+1 ..``, so ``R_t`` is as
    unambiguous as ``R``. Symbols that are not rules (terminals, literals, groups) are
    untainted unless in ``taint``. An alternative with a symbol of ``opaque`` counts as
    untainted whatever it contains (``sum(W)``), and is kept as it is in ``R_u``."""
    can_t: set[str] = set()
    can_u: set[str] = set()

    def T(x):
        return x if x in taint else (x + "_t" if x in can_t else None)

    def U(x):
        return None if x in taint else (x + "_u" if x in can_u else None) if x in rules else x

    def t_alts(a):
        if opaque & set(a):
            return []
        return [[U(x) for x in a[:i]] + [T(y)] + a[i + 1:]
                for i, y in enumerate(a) if T(y) and all(U(x) for x in a[:i])]

    def u_alt(a):
        return list(a) if opaque & set(a) else [U(x) for x in a] if all(U(x) for x in a) else None

    changed = True
    while changed:  # least fixed point: which rules can derive tainted / untainted strings
        changed = False
        for r, alts in rules.items():
            if r not in can_u and any(u_alt(a) for a in alts):
                can_u.add(r)
                changed = True
            if r not in can_t and any(t_alts(a) for a in alts):
                can_t.add(r)
                changed = True
    out = dict(rules)
    out.update({r + "_t": [t for a in rules[r] for t in t_alts(a)] for r in can_t})
    out.update({r + "_u": [u for a in rules[r] if (u := u_alt(a))] for r in can_u})
    return out


def _reachable(rules: dict[str, list[list[str]]], start: str) -> dict[str, list[list[str]]]:
    seen, todo = set(), [start]
    while todo:
        r = todo.pop()
        if r in seen or r not in rules:
            continue
        seen.add(r)
        todo += [w for a in rules[r] for x in a for w in re.findall(r"[a-z_][a-z0-9_]*", x)]
    return {r: alts for r, alts in rules.items() if r in seen and alts}


@functools.lru_cache(maxsize=256)
def reply_grammar_for(nodes: tuple[int, ...]) -> str:
    """The reply grammar when the request offers sketches (``prunedsl_sketches``): the
    ``node <id>`` line is required and names one of ``nodes``. A 0.5B model otherwise
    copies a score from the prompt as the id (``node 341940``, docs/prompt_cache.md)."""
    base = grammar_text("reply")
    optional, any_node = 'start: (NODE_LINE "\\n")?', f"NODE_LINE: {NODE_LINE}"
    if optional not in base or any_node not in base or not nodes:
        raise GrammarDerivationError("the reply grammar has no optional node line to narrow" if nodes
                                     else "no node ids to narrow the reply grammar to")
    return base.replace(optional, 'start: NODE_LINE "\\n"').replace(
        any_node, "NODE_LINE: " + _alternatives(f"node {int(i)}" for i in sorted(set(nodes))))


@functools.lru_cache(maxsize=None)
def grammar_text(mode: str) -> str:
    """The llguidance Lark grammar for ``mode`` (``formula`` or ``reply``)."""
    if mode not in MODES:
        raise ValueError(f"unknown grammar mode {mode!r}; choose one of {', '.join(MODES)}")
    lark = _lark()
    by_origin: dict[str, list] = {}
    for r in lark.rules:
        by_origin.setdefault(r.origin.name, []).append(r)
    if ENTRY_RULE not in by_origin or len(by_origin[ENTRY_RULE]) != 1:
        raise GrammarDerivationError(f"grammar.lark has no single rule {ENTRY_RULE!r}")
    terminals = {t.name: t for t in lark.terminals}
    alias_terminal = {r.alias: r.expansion[0].name for rs in by_origin.values() for r in rs
                      if len(r.expansion) == 1 and r.expansion[0].name in terminals}
    names = known_names()
    role_terms = {"VAR_NAME": names.variables, "SCALAR_NAME": names.scalars, "FUNC_NAME": names.functions,
                  "PARAM_NAME": names.params, "PARAM_FUNC": names.param_functions}
    w = _walk(mode, by_origin, terminals, role_terms)
    number = alias_terminal.get(NUMBER_ALIAS)
    if number not in w.terminals:
        raise GrammarDerivationError(f"no `{NUMBER_ALIAS}` atom (a NUMBER terminal) reachable from formula")
    w.rules[w.name_rule].append(["x_statistic"])
    opaque, metric_calls = _narrow_calls(w, names, role_terms)
    # A formula must vary per weight (the checker rejects a Scalar result): it has to
    # mention at least one operand that does; numbers and n_in alone are not formulas.
    holes = [alias_terminal[HOLE_ALIAS]] if HOLE_ALIAS not in DROP_ALIASES[mode] else []
    taint = {"VAR_NAME", "PARAM_FUNC", "x_statistic", alias_terminal.get(XNORM_ALIAS), *holes,
             *metric_calls} - {None}
    rules = _require_operand(w.rules, taint, opaque)
    entry = _rule_name(by_origin[ENTRY_RULE][0].expansion[0].name) + "_t"
    if entry not in rules:
        raise GrammarDerivationError("no formula mentions an operand that varies per weight")
    rules = _reachable(rules, entry)

    lines = [f"// derived from {GRAMMAR_PATH.name} by serve/constrained.py ({mode} mode)"]
    if mode == "formula":
        lines.append(f"start: {entry}")
    else:
        lines.append(f'start: (NODE_LINE "\\n")? reply_line ("\\n" reply_line){{0,{MAX_LINES - 1}}}')
        lines.append(f"reply_line: LIST_MARK? {entry}")
        lines.append(f"NODE_LINE: {NODE_LINE}")
        lines.append(f"LIST_MARK: {LIST_MARK}")
    for origin, alts in rules.items():
        lines.append(f"{origin}: " + "\n    | ".join(" ".join(a) for a in alts))
    lines.append(f'constant: "-"? {number} | "(" "-"? {number} ("/" {number})? ")"')
    lines.append("exponent: constant" + "".join(f" | {h}" for h in holes))  # ?c: a constant to be found
    lines.append("x_statistic: " + "\n    | ".join(
        " ".join(_literal(t) for t in re.findall(r"\w+|[^\w\s]", s)) for s in names.x_statistics))
    body = " ".join(" ".join(a) for alts in rules.values() for a in alts).split()
    for term, choices in role_terms.items():
        if choices and term in body:
            lines.append(f"{term}: {_alternatives(choices)}")
    for name in sorted(w.terminals):
        pattern = terminals[name].pattern
        lines.append(f"{name}: {_number_terminal(name, pattern) if name == number else _terminal(name, pattern)}")
    lines.append('%ignore " "')
    return "\n".join(lines) + "\n"
