"""How the receiving side of :mod:`peftcode.sandbox.wire` rebuilds a value from its tags: only builtin values,
the standard library's, classes made here from a name, fields and values, and handles; and which names
may be looked up or imported on the way (none private, none whose import does something, and in the judge
only Python's builtin types and the Enums of modules it has imported).

Only the standard library (see :mod:`peftcode.sandbox.wire`).
"""

import array
import builtins
import collections
import datetime
import enum
import importlib
import sys
import types
from decimal import Decimal
from fractions import Fraction

import layouts

# Standard-library modules that do something when imported (open a browser, print): never imported by name.
IMPORT_EFFECTS = frozenset(
    {"antigravity", "this", "turtle", "turtledemo", "tkinter", "idlelib", "webbrowser"}
)
ENUM_BASES = {"Enum": enum.Enum, "IntEnum": enum.IntEnum, "Flag": enum.Flag, "IntFlag": enum.IntFlag}
NAMED_FUNCTIONS = (types.BuiltinFunctionType, types.BuiltinMethodType)


TAKEN_TYPES = frozenset({"builtins"})


def importable(module: str, allowed=frozenset()) -> bool:
    """A module of the standard library or an allowed package that may be imported by name: no part of
    its name private (``venv.__main__`` runs venv), none whose import does something, and, below the top
    level, only one already imported (a package's submodule can run anything)."""
    parts = module.split(".")
    if any(not part.isidentifier() or part.startswith("_") for part in parts):
        return False
    top = parts[0]
    if top in IMPORT_EFFECTS or not (top in sys.stdlib_module_names or top in allowed):
        return False
    return len(parts) == 1 or module in sys.modules


def named(value) -> tuple[str, str] | None:
    """(module, qualified name) under which ``value`` (a type or builtin function) is found again, if it
    is the standard library's or Python's own."""
    module, name = getattr(value, "__module__", None), getattr(value, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(name, str) or not importable(module):
        return None
    found = sys.modules.get(module)
    for part in name.split("."):
        found = getattr(found, part, None)
    return (module, name) if found is value else None


def look_up(module: str, name: str, allowed=frozenset(), only=None):
    """What ``module.name`` names; with ``only``, a module already imported, and nothing but builtins' or
    those modules' own types (the judge: never a class the tests could call to open a file)."""
    if not (isinstance(module, str) and isinstance(name, str) and importable(module, allowed)):
        raise ValueError(f"not a name to look up: {module!r:.60} {name!r:.60}")
    if any(not part.isidentifier() or part.startswith("_") for part in name.split(".")):
        raise ValueError(f"not a name to look up: {name!r:.60}")
    if only is not None and module not in only:
        raise ValueError(f"not a name to take from the program: {module}.{name}"[:200])
    found = importlib.import_module(module)
    for part in name.split("."):
        found = getattr(found, part)
    return found


def identifier(text) -> str:
    if not isinstance(text, str) or not text.isidentifier() or text.startswith("_"):
        raise ValueError(f"not a name: {text!r:.60}")
    return text


def _scalar(parse):
    def decode(codec, rest, depth):
        (text,) = rest
        if not isinstance(text, str):
            raise ValueError("not a plain value")
        return parse(text)

    return decode


def _named_tuple(codec, rest, depth):
    kind = _named_tuple_class(codec, rest[:3], depth)
    return kind(*codec.decoded_items(rest[3], depth))


def _enum_class(codec, rest, depth):
    key, name, base, members = rest
    values = [(identifier(n), codec.decode(v, depth)) for n, v in codec.raw_pairs(members)]
    return codec.rebuilt_class(key, lambda: ENUM_BASES[base](identifier(name), values))


def _enum(codec, rest, depth):
    return _enum_class(codec, rest[:4], depth)[identifier(rest[4])]


def _named_tuple_class(codec, rest, depth):
    key, name, fields = rest
    fields = [identifier(field) for field in fields]
    return codec.rebuilt_class(key, lambda: collections.namedtuple(identifier(name), fields))


# Exceptions a side may raise to the other, rebuilt by the names of its class and bases; not those that
# steer iteration (a StopIteration raised into map() or all() would end it as if it were done).
NOT_REBUILT = (StopIteration, StopAsyncIteration, BaseExceptionGroup)


class RemoteError(Exception):
    """An exception the other side raised, of a class that is not a builtin one."""


def exception_class(name, bases) -> type:
    """A class named as the other side's exception class, subclassing the first builtin exception among
    its bases (a JSONDecodeError is a ValueError), constructed from its message alone."""
    base = RemoteError
    for candidate in [name, *(bases if isinstance(bases, list) else [])]:
        found = getattr(builtins, str(candidate), None)
        if isinstance(found, type) and issubclass(found, Exception) and not issubclass(found, NOT_REBUILT):
            base = found
            break
    name = str(name)[:100]
    made = type(name if name.isidentifier() else "RemoteError", (base,), {
        "__init__": Exception.__init__, "__str__": lambda self: str(self.args[0]) if self.args else ""
    })  # fmt: skip
    return made


def _exception_class(codec, rest, depth):
    key, name, bases = rest
    return codec.rebuilt_class(key, lambda: exception_class(name, bases))


def _member(codec, rest, depth):
    where, name = rest
    if isinstance(where, list) and where[:1] == ["name"] and len(where) == 3 and codec.named_from:
        kind = look_up(*where[1:], codec.allowed, set(sys.modules))  # an imported module's Enum
    else:
        kind = codec.decode(where, depth)
    if not (isinstance(kind, type) and issubclass(kind, enum.Enum)):
        raise ValueError("not an Enum")
    return kind[identifier(name)]


def _set(kind):
    def decode(codec, rest, depth):
        size, slots, items = rest
        number = len(codec.made)
        if kind is set:
            codec.keep(None)  # numbered before its members, as the sender numbered it
        made = layouts.rebuild(kind, codec.decoded_items(items, depth), size, slots)
        if kind is set:
            codec.made[number] = made
        return made

    return decode


def _filled(make):
    """A container made empty and numbered first, then filled: a member may be the container itself."""

    def decode(codec, rest, depth):
        made = codec.keep(make())
        if isinstance(made, list | collections.deque):
            made.extend(codec.decoded_items(rest[-1], depth))
        elif isinstance(made, collections.Counter):  # its own update adds counts
            dict.update(made, codec.decoded_pairs(rest[-1], depth))
        else:
            made.update(codec.decoded_pairs(rest[-1], depth))
        return made

    return decode


def _numpy(codec, rest, depth, array=False):
    import numpy

    if array:
        dtype, shape, data = rest
        kind = numpy.dtype(dtype)
        if kind.hasobject or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise ValueError("not a plain array")
        return numpy.frombuffer(bytes.fromhex(data), dtype=kind).reshape(shape).copy()
    dtype, data = rest
    kind = numpy.dtype(dtype)
    if kind.hasobject:
        raise ValueError("not a plain scalar")
    return numpy.frombuffer(bytes.fromhex(data), dtype=kind)[0]


def _name(codec, rest, depth):
    found = look_up(*rest, codec.allowed, codec.named_from)
    wanted = codec.taken_by_name
    if not isinstance(found, wanted):
        raise ValueError(f"a name that is not a {' or '.join(kind.__name__ for kind in wanted)}")
    return found


def _module(codec, rest, depth):
    (name,) = rest
    if not importable(name, codec.allowed):
        raise ValueError(f"a module that cannot be passed: {name!r:.60}")
    return importlib.import_module(name)


def _deque(codec, rest, depth):
    maxlen, items = rest
    if maxlen is not None and not isinstance(maxlen, int):
        raise ValueError("not a deque")
    made = codec.keep(collections.deque(maxlen=maxlen))
    made.extend(codec.decoded_items(items, depth))
    return made


def _defaultdict(codec, rest, depth):
    factory, pairs = rest
    made = codec.keep(collections.defaultdict())
    made.default_factory = codec.decode(factory, depth)
    made.update(codec.decoded_pairs(pairs, depth))
    return made


def _timezone(codec, rest, depth):
    offset, name = rest
    offset = codec.decode(offset, depth)
    return datetime.timezone(offset) if name is None else datetime.timezone(offset, str(name))


DECODERS = {
    "none": lambda codec, rest, depth: None if not rest else codec.fail(),
    "bool": lambda codec, rest, depth: (
        rest[0] if len(rest) == 1 and isinstance(rest[0], bool) else codec.fail()
    ),
    "int": _scalar(lambda text: int(text, 16)),
    "float": _scalar(float.fromhex),
    "str": _scalar(str),
    "bytes": _scalar(bytes.fromhex),
    "bytearray": lambda codec, rest, depth: codec.keep(bytearray.fromhex(rest[0])),
    "same": lambda codec, rest, depth: codec.same(rest[0]),
    "decimal": _scalar(Decimal),
    "complex": lambda codec, rest, depth: complex(float.fromhex(rest[0]), float.fromhex(rest[1])),
    "fraction": lambda codec, rest, depth: Fraction(int(rest[0], 16), int(rest[1], 16)),
    "list": _filled(list),
    "tuple": lambda codec, rest, depth: tuple(codec.decoded_items(rest[0], depth)),
    "set": _set(set),
    "frozenset": _set(frozenset),
    "dict": _filled(dict),
    "counter": _filled(collections.Counter),
    "ordereddict": _filled(collections.OrderedDict),
    "defaultdict": _defaultdict,
    "deque": _deque,
    "namedtuple": _named_tuple,
    "enum": _enum,
    "enum-class": _enum_class,
    "namedtuple-class": _named_tuple_class,
    "exception-class": _exception_class,
    "member": _member,
    "range": lambda codec, rest, depth: range(*(int(part, 16) for part in rest)),
    "keys": lambda codec, rest, depth: dict.fromkeys(codec.decoded_items(rest[0], depth)).keys(),
    "values": lambda codec, rest, depth: dict(enumerate(codec.decoded_items(rest[0], depth))).values(),
    "items": lambda codec, rest, depth: dict(codec.decoded_items(rest[0], depth)).items(),
    "array": lambda codec, rest, depth: array.array(str(rest[0]), codec.decoded_items(rest[1], depth)),
    "memoryview": lambda codec, rest, depth: memoryview(bytes.fromhex(rest[0])),
    "slice": lambda codec, rest, depth: slice(*codec.decoded_items(rest[0], depth)),
    "date": _scalar(datetime.date.fromisoformat),
    "datetime": _scalar(datetime.datetime.fromisoformat),
    "time": _scalar(datetime.time.fromisoformat),
    "timedelta": lambda codec, rest, depth: datetime.timedelta(*(int(part) for part in rest)),
    "timezone": _timezone,
    "numpy": _numpy,
    "ndarray": lambda codec, rest, depth: _numpy(codec, rest, depth, array=True),
    "name": _name,
    "module": _module,
    "ref": lambda codec, rest, depth: codec.handles.resolve(rest),
}
