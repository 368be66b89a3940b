"""Values across a pipe, between a model-written program and the tests that judge it.

A value crosses as JSON with a tag per type, and arrives as the same type with the same contents: None,
bools, ints and floats (in hex, exact at any size), complex numbers, fractions, decimals, strings, bytes,
bytearrays; lists, tuples, dicts, sets and frozensets (a set in the order it iterates, see
:mod:`peftcode.sandbox.layouts`); named tuples, Counters, OrderedDicts, defaultdicts and deques; ranges,
slices, dates, times, datetimes, timedeltas and fixed time zones; arrays, memoryviews and dict views; Enum
members; numpy's scalars and arrays of plain dtypes; builtin and standard-library types, functions and
modules, by name. Anything else (a
function of the program's own, a generator, an object of its own class, a lambda of the tests) stays
where it lives and crosses as a handle: the other side gets a stand-in (:mod:`peftcode.sandbox.peer`).

The receiving side rebuilds every value itself, from the tags, under limits of depth and size: a
subclass of a builtin type crosses as its base type (an ``int`` whose ``__eq__`` says yes to everything
arrives as the int it holds), and a named tuple or an Enum of the program's own arrives as one the
receiver made from its name, fields and values (:mod:`peftcode.sandbox.rebuild`).

Only the standard library: this module runs inside the sandbox (see :mod:`peftcode.sandbox.serve`) as well
as in the judge (:mod:`peftcode.sandbox.judge`).
"""

import array
import collections
import datetime
import enum
import json
import sys
import types
from decimal import Decimal
from fractions import Fraction

import layouts
from rebuild import DECODERS, ENUM_BASES, NAMED_FUNCTIONS, TAKEN_TYPES, named

MAX_DEPTH = 1000


class CannotCross(TypeError):
    """A value nested too deep, or a name that does not resolve."""


def hex_int(value) -> str:
    return format(int.__index__(value), "x")


class Codec:
    """Values to tags and back for one side (``judge`` or ``program``). ``handles`` keeps what this side
    lends as handles and makes stand-ins for the other side's (see :class:`peftcode.sandbox.peer.Peer`)."""

    def __init__(self, handles, allowed=frozenset(), judge: bool = False):
        self.handles, self.allowed = handles, frozenset(allowed)
        # The judge names the builtin functions it sends (``key=len``) and takes only types by name: a
        # function the program names arrives as a stand-in of the program's own, never as the judge's
        # (the tests could call it: ``os._exit``, ``setattr``).
        self.judge = judge
        self.sent_by_name = (type, *NAMED_FUNCTIONS) if judge else (type,)
        self.taken_by_name = (type,) if judge else (type, *NAMED_FUNCTIONS)
        # Where the judge takes a type the program names from: Python's builtins (``int``), and Enums of
        # the standard library's modules it has imported (``re.RegexFlag``), whose calls do nothing.
        self.named_from = TAKEN_TYPES if judge else None
        self.rebuilt_classes: dict = {}  # the other side's named tuples and Enums, made here once each
        self.origins: dict = {}  # a class made here -> its handle on the other side

    def encode(self, value, depth: int = 0):
        if depth == 0:
            self.shared, self.held = {}, []  # the mutable containers of this value, in the order met
        if depth > MAX_DEPTH:
            raise CannotCross(f"a value nested deeper than {MAX_DEPTH}")
        inner = depth + 1
        ref = self.handles.reference(value)
        if ref is not None:
            return ref
        if value is None:
            return ["none"]
        if isinstance(value, bool):
            return ["bool", bool(value)]
        if isinstance(value, enum.Enum):
            return self.encode_member(value, inner)
        if isinstance(value, int):
            return ["int", hex_int(value)]
        if isinstance(value, float):
            return ["float", float.hex(float.__float__(value))]
        if isinstance(value, Fraction):
            return ["fraction", hex_int(value.numerator), hex_int(value.denominator)]
        if isinstance(value, Decimal):
            return ["decimal", str(Decimal.__str__(value))]
        if isinstance(value, complex):
            number = complex.__complex__(value)
            return ["complex", float.hex(number.real), float.hex(number.imag)]
        if isinstance(value, str):
            return ["str", str.__str__(value)]
        if isinstance(value, bytearray):
            return self.again(value) or ["bytearray", bytes(value).hex()]
        if isinstance(value, bytes):
            return ["bytes", bytes(value).hex()]
        found = self.encode_container(value, inner)
        if found is not None:
            return found
        found = self.encode_other(value, inner)
        return found if found is not None else self.handles.lend(value)

    def items(self, values, depth: int) -> list:
        return [self.encode(item, depth) for item in values]

    def pairs(self, mapping, depth: int) -> list:
        return [[self.encode(k, depth), self.encode(v, depth)] for k, v in dict.items(mapping)]

    def again(self, value):
        """A mutable container met before in this value, as its number (``[[0] * 2] * 2`` is one row
        twice, and a function that changes it changes both), or None, numbering it."""
        number = self.shared.get(id(value))
        if number is not None:
            return ["same", number]
        self.shared[id(value)] = len(self.held)
        self.held.append(value)
        return None

    def encode_container(self, value, inner: int):
        if isinstance(value, dict | list | set | collections.deque):
            met = self.again(value)
            if met is not None:
                return met
        if isinstance(value, tuple) and is_named_tuple(type(value)):
            kind = type(value)
            return ["namedtuple", self.class_key(kind), kind.__name__, list(kind._fields),
                    self.items(tuple.__iter__(value), inner)]  # fmt: skip
        if isinstance(value, collections.Counter):
            return ["counter", self.pairs(value, inner)]
        if isinstance(value, collections.OrderedDict):
            return ["ordereddict", self.pairs(value, inner)]
        if isinstance(value, collections.defaultdict):
            return ["defaultdict", self.encode(value.default_factory, inner), self.pairs(value, inner)]
        if isinstance(value, dict):
            return ["dict", self.pairs(value, inner)]
        if isinstance(value, collections.deque):
            return ["deque", value.maxlen, self.items(collections.deque.__iter__(value), inner)]
        for kind, tag in ((list, "list"), (tuple, "tuple")):
            if isinstance(value, kind):
                return [tag, self.items(kind.__iter__(value), inner)]
        if isinstance(value, set | frozenset):
            tag = "frozenset" if isinstance(value, frozenset) else "set"
            kind = frozenset if tag == "frozenset" else set
            size, slots = layouts.read(value)
            return [tag, size, slots, self.items(kind.__iter__(value), inner)]
        return None

    def encode_other(self, value, inner: int):
        view = VIEWS.get(type(value))
        if view is not None:
            return [view, self.items(value, inner)]
        if isinstance(value, array.array):
            return ["array", value.typecode, self.items(array.array.tolist(value), inner)]
        if isinstance(value, memoryview):
            return ["memoryview", memoryview.tobytes(value).hex()]
        if isinstance(value, range):
            return ["range", *(hex_int(v) for v in (value.start, value.stop, value.step))]
        if isinstance(value, slice):
            return ["slice", self.items((value.start, value.stop, value.step), inner)]
        if type(value) in (datetime.date, datetime.datetime, datetime.time):
            return [type(value).__name__, value.isoformat()]
        if type(value) is datetime.timedelta:
            return ["timedelta", value.days, value.seconds, value.microseconds]
        if type(value) is datetime.timezone:
            return ["timezone", self.encode(value.utcoffset(None), inner), value.tzname(None)]
        if type(value).__module__ == "numpy":
            return self.encode_numpy(value, inner)
        if isinstance(value, types.ModuleType) and sys.modules.get(value.__name__) is value:
            return ["module", value.__name__]
        if isinstance(value, type):
            return self.encode_class(value, inner)
        if isinstance(value, self.sent_by_name):
            where = named(value)
            return None if where is None else ["name", *where]
        return None

    def encode_class(self, kind: type, inner: int):
        """A class by name (Python's, or the standard library's from the judge); the other side's class
        made here, as its handle; an exception class, named tuple or Enum of this side's own, as what the
        other side makes one from (so that ``except Bad``, ``isinstance(p, Point)`` and ``Color.RED`` work
        there); any other class is a handle."""
        origin = self.origins.get(kind)
        if origin is not None:
            return origin
        where = named(kind)
        if where is not None and (self.judge or where[0] in TAKEN_TYPES):
            return ["name", *where]
        name = kind.__name__
        if issubclass(kind, BaseException):
            return ["exception-class", self.class_key(kind), name, [c.__name__ for c in kind.__mro__[1:]]]
        if is_named_tuple(kind):
            return ["namedtuple-class", self.class_key(kind), name, list(kind._fields)]
        if issubclass(kind, enum.Enum) and kind.__members__:
            return ["enum-class", *self.enum_fields(kind, inner)]
        return None

    def encode_member(self, member, inner: int):
        kind = type(member)
        origin = self.origins.get(kind)
        if origin is not None:  # the other side's Enum, made here: its own member, by name
            return ["member", origin, member.name]
        where = named(kind)
        if where is not None:
            return ["member", ["name", *where], member.name]
        return ["enum", *self.enum_fields(kind, inner), member.name]

    def enum_fields(self, kind: type, inner: int) -> list:
        base = next((name for name, cls in ENUM_BASES.items() if issubclass(kind, cls)), "Enum")
        base = "IntFlag" if issubclass(kind, enum.IntFlag) else base
        members = [[name, self.encode(m.value, inner)] for name, m in kind.__members__.items()]
        return [self.class_key(kind), kind.__name__, base, members]

    def encode_numpy(self, value, inner: int):
        kind = getattr(value, "dtype", None)
        if kind is None or kind.hasobject or kind.kind not in "biufcmMSU":
            return None
        if getattr(value, "shape", None) == ():
            return ["numpy", kind.str, value.tobytes().hex()]
        if type(value).__name__ == "ndarray":
            return ["ndarray", kind.str, list(value.shape), value.tobytes(order="C").hex()]
        return None

    def class_key(self, kind: type):
        """How the other side tells this side's class from another of the same name: its handle."""
        return self.handles.lend(kind)

    # Decoding: only builtin values, the standard library's, classes made here, and handles.

    def decode(self, tagged, depth: int = 0):
        if depth == 0:
            self.made = []  # the mutable containers of this value, in the order made
        if depth > MAX_DEPTH or not isinstance(tagged, list) or not tagged or not isinstance(tagged[0], str):
            raise ValueError("not a plain value")
        tag, rest = tagged[0], tagged[1:]
        decoder = DECODERS.get(tag)
        if decoder is None:
            raise ValueError(f"not a plain value (tag {tag[:20]!r})")
        try:
            return decoder(self, rest, depth + 1)
        except (TypeError, KeyError, IndexError, AttributeError, OverflowError, ArithmeticError) as error:
            raise ValueError(f"not a plain value ({tag[:20]}): {error!r:.200}") from None

    def decoded_items(self, items, depth: int) -> list:
        if not isinstance(items, list):
            raise ValueError("not a list of values")
        return [self.decode(item, depth) for item in items]

    def decoded_pairs(self, pairs, depth: int) -> list:
        return [(self.decode(k, depth), self.decode(v, depth)) for k, v in self.raw_pairs(pairs)]

    def keep(self, container):
        """A mutable container made for this value, numbered as the sender numbered it."""
        self.made.append(container)
        return container

    def same(self, number):
        if not isinstance(number, int) or not 0 <= number < len(self.made) or self.made[number] is None:
            raise ValueError("not a container of this value")
        return self.made[number]

    def fail(self):
        raise ValueError("not a plain value")

    def raw_pairs(self, pairs) -> list:
        if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
            raise ValueError("not a list of pairs")
        return pairs

    def rebuilt_class(self, key, make):
        """The class this side made for the other side's class ``key`` (a handle), made once."""
        ident = json.dumps(key)
        if ident not in self.rebuilt_classes:
            made = make()
            self.rebuilt_classes[ident], self.origins[made] = made, key
        return self.rebuilt_classes[ident]


VIEWS = {type({}.keys()): "keys", type({}.values()): "values", type({}.items()): "items"}


def is_named_tuple(kind: type) -> bool:
    fields = getattr(kind, "_fields", None)
    return kind is not tuple and isinstance(fields, tuple) and all(isinstance(f, str) for f in fields)
