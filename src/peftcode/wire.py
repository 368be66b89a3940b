"""Plain Python values across a pipe, between a model-written program and the tests that judge it.

A value crosses as JSON with a tag per type: None, bools, ints, floats (special ones included), complex
numbers, fractions and decimals, strings, bytes, and lists, tuples, dicts, sets and frozensets of them;
ints and floats in hex, so that they cross exactly and at any size. Nothing else crosses: no object of the
program's own classes, no function, no generator. The receiving side rebuilds the value itself, under
limits of depth and size, so what arrives is a value of these builtin types and nothing more, whatever
the sender wrote.

One message is one line of JSON on a file descriptor. Only the standard library: this module runs inside
the sandbox (see :mod:`peftcode.sandbox_serve`) as well as in the judge (:mod:`peftcode.judge`).
"""

import json
import os
import select
import time
from decimal import Decimal
from fractions import Fraction

MAX_DEPTH = 100
MAX_MESSAGE = 16 << 20  # bytes of one line


class CannotCross(TypeError):
    """A value that is not one of the plain types above (or is nested too deep)."""


def encode(value, depth: int = 0):
    """``value`` as tagged JSON. Subclasses of the builtin types cross as their base type (a Counter as a
    dict, a numpy float64 as a float), and numpy's scalars as the Python value they hold."""
    if depth > MAX_DEPTH:
        raise CannotCross(f"a value nested deeper than {MAX_DEPTH}")
    inner = depth + 1
    if value is None:
        return ["none"]
    if isinstance(value, bool):
        return ["bool", bool(value)]
    if isinstance(value, int):
        return ["int", format(int.__index__(value), "x")]
    if isinstance(value, float):
        return ["float", float.hex(float.__float__(value))]
    if isinstance(value, Fraction):
        return ["fraction", format(value.numerator, "x"), format(value.denominator, "x")]
    if isinstance(value, Decimal):
        return ["decimal", str(Decimal.__str__(value))]
    if isinstance(value, complex):
        number = complex.__complex__(value)
        return ["complex", float.hex(number.real), float.hex(number.imag)]
    if isinstance(value, str):
        return ["str", str.__str__(value)]
    if isinstance(value, bytes | bytearray):
        return ["bytearray" if isinstance(value, bytearray) else "bytes", bytes(value).hex()]
    if isinstance(value, dict):
        return ["dict", [[encode(k, inner), encode(v, inner)] for k, v in dict.items(value)]]
    for kind, tag in ((list, "list"), (tuple, "tuple"), (frozenset, "frozenset"), (set, "set")):
        if isinstance(value, kind):
            return [tag, [encode(item, inner) for item in kind.__iter__(value)]]
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "shape", None) == ():
        return encode(value.item(), depth)
    raise CannotCross(f"a value of type {type(value).__name__} cannot be passed as a plain value")


SCALARS = {
    "int": lambda text: int(text, 16),
    "float": float.fromhex,
    "str": str,
    "bytes": bytes.fromhex,
    "bytearray": lambda text: bytearray.fromhex(text),
    "decimal": Decimal,
}
COLLECTIONS = {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}


def decode(tagged, depth: int = 0):
    """The value that ``tagged`` (from :func:`encode`, or from anyone) stands for; ValueError for anything
    that is not a well-formed value."""
    if depth > MAX_DEPTH or not isinstance(tagged, list) or not tagged or not isinstance(tagged[0], str):
        raise ValueError("not a plain value")
    tag, rest, inner = tagged[0], tagged[1:], depth + 1
    if tag == "none" and not rest:
        return None
    if tag == "bool" and len(rest) == 1 and isinstance(rest[0], bool):
        return rest[0]
    if tag in SCALARS and len(rest) == 1 and isinstance(rest[0], str):
        return SCALARS[tag](rest[0])
    if tag in ("complex", "fraction") and len(rest) == 2 and all(isinstance(part, str) for part in rest):
        if tag == "complex":
            return complex(float.fromhex(rest[0]), float.fromhex(rest[1]))
        return Fraction(int(rest[0], 16), int(rest[1], 16))
    if tag in COLLECTIONS and len(rest) == 1 and isinstance(rest[0], list):
        try:
            return COLLECTIONS[tag](decode(item, inner) for item in rest[0])
        except TypeError as error:  # an unhashable member of a set
            raise ValueError(str(error)) from None
    if tag == "dict" and len(rest) == 1 and isinstance(rest[0], list):
        pairs = rest[0]
        if not all(isinstance(pair, list) and len(pair) == 2 for pair in pairs):
            raise ValueError("not a plain value")
        try:
            return {decode(k, inner): decode(v, inner) for k, v in pairs}
        except TypeError as error:
            raise ValueError(str(error)) from None
    raise ValueError(f"not a plain value (tag {tag[:20]!r})")


def send(fd: int, message: dict, write=os.write) -> None:
    data = json.dumps(message).encode() + b"\n"
    while data:
        data = data[write(fd, data) :]


class Ended(EOFError):
    """The other side closed its end (a program that exited, or was killed)."""


class Reader:
    """Messages from a file descriptor, one line each, each at most ``MAX_MESSAGE`` bytes, each waited
    for until ``deadline`` (a ``time.monotonic`` value; None waits for ever)."""

    def __init__(self, fd: int, deadline: float | None = None):
        self.fd, self.deadline, self.buffer = fd, deadline, bytearray()
        self.poll = select.poll()
        self.poll.register(fd, select.POLLIN)

    def receive(self) -> dict:
        end = self.buffer.find(b"\n")
        while end < 0:
            if len(self.buffer) > MAX_MESSAGE:
                raise ValueError(f"a message longer than {MAX_MESSAGE} bytes")
            if self.deadline is not None:
                left = self.deadline - time.monotonic()
                # poll, not select: select cannot wait on a descriptor numbered 1024 or more
                if left <= 0 or not self.poll.poll(left * 1000):
                    raise TimeoutError("no answer in time")
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                raise Ended("the other side ended")
            found = chunk.find(b"\n")
            end = -1 if found < 0 else len(self.buffer) + found
            self.buffer += chunk
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 1]
        message = json.loads(line)
        if not isinstance(message, dict):
            raise ValueError("a message that is not an object")
        return message
