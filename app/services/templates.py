"""Prompt templates: Jinja2 in a sandbox, rendered within a size and a time bound.

``render`` stops a template whose output (or any value it builds) grows past
``max_output`` characters, or that runs longer than ``timeout`` seconds, with
``TemplateLimit``. Values that could grow at once past the bound are refused
before they are built: string and list repetition (``'x' * n``), powers, string
formatting widths, the width and count arguments of filters and ``str`` methods
(``center``, ``ljust``, ``batch``, ``replace``, ``join`` ...), ``~`` concatenation
and namespace attributes; all values one render builds may together be
``BUILT_FACTOR`` times the bound. The clock is checked at every loop step, call,
operator, filter and output chunk, so a loop that prints nothing is stopped too.
"""
import contextvars
import functools
import math
import re
import time

from jinja2 import StrictUndefined, nodes
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import Namespace, generate_lorem_ipsum
from jinja2.visitor import NodeTransformer

_LIMITS = contextvars.ContextVar("template_limits", default=None)
DEFAULT_MAX_OUTPUT = 1_000_000
_DIGITS = re.compile(r"\d+")
_PRINTF = re.compile(r"%(?:\([^)]*\))?([-#0 +]*(?:\*|\d*)(?:\.(?:\*|\d*))?)")  # the flags, width, precision
_BRACE_SPECS = re.compile(r"\{[^{}:]*:((?:[^{}]|\{[^{}]*\})*)\}")  # the spec after ':' in {...:spec}
BUILT_FACTOR = 10  # all values a render builds, together, in multiples of its output bound
INT_DIGITS = 4300  # the longest integer Python prints by default (sys.int_info.default_max_str_digits)
LOOP_GUARD, CONCAT = "__chatport_loop", "__chatport_concat"


class TemplateLimit(Exception):
    """A template went past its size or time bound; ``setting`` names the bound's setting."""

    def __init__(self, message, setting="TEMPLATE_MAX_OUTPUT"):
        super().__init__(message)
        self.setting = setting


def _current():
    """The bounds of the render under way; outside ``render`` (compiling, when jinja folds
    constant expressions) the default size bound, so folding never builds a huge value."""
    return _LIMITS.get() or _Limits(DEFAULT_MAX_OUTPUT, None)


class _Limits:
    def __init__(self, max_output, timeout):
        self.max_output, self.timeout = max_output, timeout
        self.deadline = time.monotonic() + timeout if timeout else None
        self.built = 0  # characters (or items) of every value built so far

    def add(self, size):
        """Count a value built; all of them together may be BUILT_FACTOR times the output bound."""
        self.built += size
        if self.max_output is not None and self.built > BUILT_FACTOR * self.max_output:
            raise TemplateLimit(f"the values the template builds would together be larger than "
                                f"{BUILT_FACTOR} x {self.max_output} characters")

    def tick(self):
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TemplateLimit(f"rendering took longer than {self.timeout} s", "TEMPLATE_TIMEOUT")

    def fits(self, size, what="a value"):
        if self.max_output is not None and size > self.max_output:
            raise TemplateLimit(f"{what} would be larger than {self.max_output} characters")

    def number(self, digits):
        if digits > INT_DIGITS:
            raise TemplateLimit(f"a number would have more than {INT_DIGITS} digits")

    def format_string(self, text, args=()):
        """Widths and precisions of a format string (``%9999s``, ``{:>9999}``; ``%*s`` and
        ``{:{}}`` take them from ``args``)."""
        if self.max_output is None:
            return
        widths, dynamic = [], False
        for spec in _PRINTF.findall(text) + _BRACE_SPECS.findall(text):
            dynamic = dynamic or "*" in spec or "{" in spec
            widths += _DIGITS.findall(spec)
        sizes = [int(w) if len(w) < 16 else self.max_output + 1 for w in widths]
        if dynamic:
            sizes += [_count(a) for a in args]
        if sizes and max(sizes) > self.max_output:
            raise TemplateLimit(f"a format width would be larger than {self.max_output} characters")


def _size(value):
    return len(value) if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)) else 0


def _digits(value):
    return int(abs(value).bit_length() * 0.30103) + 1 if isinstance(value, int) else 0


def _count(value):
    """An int argument used as a width or a count (bools and other types: 0)."""
    return abs(value) if isinstance(value, int) and not isinstance(value, bool) else 0


def _check_result(limits, value):
    limits.fits(_size(value))
    limits.add(_size(value))
    if isinstance(value, int) and not isinstance(value, bool):
        limits.number(_digits(value))
    return value


# str methods whose int arguments are widths; for the others the estimate is computed below.
_WIDTH_METHODS = {"center", "ljust", "rjust", "zfill", "expandtabs"}


def _check_call(limits, obj, args, kwargs):
    """The arguments of a call, after refusing ``str`` methods whose result would be too large."""
    receiver, name = getattr(obj, "__self__", None), getattr(obj, "__name__", "")
    if not isinstance(receiver, str):
        return args
    if name in _WIDTH_METHODS:
        widest = max([_count(a) for a in (*args, *kwargs.values())] + [0])
        limits.fits(widest * (len(receiver) if name == "expandtabs" else 1))
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        limits.fits(len(receiver) + (receiver.count(args[0]) if args[0] else len(receiver) + 1) * len(args[1]))
    elif name == "join" and len(args) == 1:
        items = list(args[0])
        limits.fits(len(receiver) * len(items) + sum(len(i) for i in items if isinstance(i, str)))
        return (items,)
    return args


class _Namespace(Namespace):
    """``namespace()`` whose attributes stay within the bound (``{% set ns.x = ns.x ~ ns.x %}``)."""

    def __setitem__(self, name, value):
        limits = _current()
        limits.tick()
        _check_result(limits, value)
        super().__setitem__(name, value)


def _loop(iterable):
    """The iterable of a ``{% for %}``, checking the clock at every step."""
    limits = _current()
    for item in iterable:
        limits.tick()
        yield item


def _concat(*values):
    """``a ~ b``: the parts as text, refused when together past the bound."""
    parts, limits = [str(v) for v in values], _current()
    limits.fits(sum(map(len, parts)))
    return _check_result(limits, "".join(parts))


def _lipsum(n=5, html=True, min=20, max=100):  # noqa: A002 - jinja's own argument names
    _current().fits(_count(n) * _count(max) * 10, "lipsum()")
    return generate_lorem_ipsum(n, html, min, max)


def _bounded_filter(name, func):
    """A filter that refuses size arguments past the bound and results past it."""

    @functools.wraps(func)
    def bounded(*args, **kwargs):
        limits = _current()
        limits.tick()
        lead = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0  # context/environment first
        value, rest = (args[lead] if len(args) > lead else None), args[lead + 1:]
        if name in ("center", "indent", "wordwrap", "truncate", "batch", "slice"):
            limits.fits(max([_count(a) for a in (*rest, *kwargs.values())] + [0]), f"the {name} filter's output")
        if name == "indent" and isinstance(value, str):
            width = next((a for a in (*rest[:1], kwargs.get("width")) if a is not None), 4)
            limits.fits(len(value) + (value.count("\n") + 1) * (len(width) if isinstance(width, str) else
                                                                 _count(width)), "the indent filter's output")
        elif name == "wordwrap" and isinstance(value, str):
            wrap = rest[2] if len(rest) > 2 else kwargs.get("wrapstring") or "\n"
            limits.fits(len(value) * (1 + len(wrap)), "the wordwrap filter's output")
        elif name == "replace" and isinstance(value, str) and len(rest) >= 2:
            old, new = str(rest[0]), str(rest[1])
            limits.fits(len(value) + (value.count(old) if old else len(value) + 1) * len(new),
                        "the replace filter's output")
        elif name == "join" and value is not None and not isinstance(value, dict):
            value = list(value)
            sep = rest[0] if rest else kwargs.get("d", "")
            limits.fits(len(str(sep)) * len(value) + sum(len(v) for v in value if isinstance(v, str)),
                        "the join filter's output")
            args = (*args[:lead], value, *rest)
        elif name == "format" and isinstance(value, str):
            limits.format_string(value, (*rest, *kwargs.values()))
        return _check_result(limits, func(*args, **kwargs))

    return bounded


class BoundedEnvironment(SandboxedEnvironment):
    """The sandbox with every call, operator and filter checked against ``render``'s bounds.

    The intercepted operators are never folded at compile time, so ``{{ 'x' * 10**9 }}``
    is refused when it runs rather than built while compiling."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **kw):
        super().__init__(**kw)
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}
        self.globals.update({"namespace": _Namespace, "lipsum": _lipsum, LOOP_GUARD: _loop, CONCAT: _concat})

    def call_binop(self, context, operator, left, right):
        limits = _current()
        limits.tick()
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
            limits.number(int(right * math.log10(abs(left))) + 1 if right > 0 else 1)
        elif operator == "*":
            if _size(left) and isinstance(right, int):
                limits.fits(_size(left) * _count(right))
            elif _size(right) and isinstance(left, int):
                limits.fits(_size(right) * _count(left))
            elif isinstance(left, int) and isinstance(right, int):
                limits.number(_digits(left) + _digits(right))
        elif operator == "+":
            limits.fits(_size(left) + _size(right))
        elif operator == "%" and isinstance(left, str):
            limits.format_string(left, right if isinstance(right, tuple) else (right,))
        return _check_result(limits, super().call_binop(context, operator, left, right))

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - jinja's own signature
        limits = _current()
        limits.tick()
        args = _check_call(limits, __obj, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        receiver = getattr(__obj, "__self__", None)
        if isinstance(receiver, (list, dict, set)):  # list.extend(list) and friends grow in place
            limits.fits(_size(receiver))
        return _check_result(limits, result)

    def wrap_str_format(self, value):
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        text = value.__self__

        def checked(*args, **kwargs):
            _current().format_string(text, (*args, *kwargs.values()))
            return wrapped(*args, **kwargs)

        return checked


class _Guard(NodeTransformer):
    """Routes every loop's iterable and every ``~`` through the checks."""

    def visit_For(self, node):  # noqa: N802
        node = self.generic_visit(node)
        node.iter = nodes.Call(nodes.Name(LOOP_GUARD, "load", lineno=node.lineno), [node.iter], [], None, None,
                               lineno=node.lineno)
        return node

    def visit_Concat(self, node):  # noqa: N802
        node = self.generic_visit(node)
        return nodes.Call(nodes.Name(CONCAT, "load", lineno=node.lineno), node.nodes, [], None, None,
                          lineno=node.lineno)


ENV = BoundedEnvironment(undefined=StrictUndefined, autoescape=False)


def render(source, variables, *, max_output=None, timeout=None, env=ENV):
    """The text of template ``source`` with ``variables``.

    Raises TemplateLimit past ``max_output`` characters (of the output or any value built on
    the way) or ``timeout`` seconds; jinja2's own errors (UndefinedError, SecurityError, ...)
    pass through."""
    limits = _Limits(max_output, timeout)
    token = _LIMITS.set(limits)
    try:
        template = env.from_string(_Guard().visit(env.parse(source)))
        out, size = [], 0
        for chunk in template.generate(**variables):
            size += len(chunk)
            limits.fits(size, "the output")
            limits.tick()
            out.append(chunk)
        return "".join(out)
    except OverflowError as exc:  # the sandbox's range() past MAX_RANGE, a float too large
        raise TemplateLimit(str(exc), "the sandbox's limits") from None
    except RecursionError:
        raise TemplateLimit("macros call themselves too deeply", "the recursion limit") from None
    finally:
        _LIMITS.reset(token)
