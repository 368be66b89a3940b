"""One side of a tested run's conversation (the judge's, or the program's): requests and answers on two
pipes, values as :mod:`peftcode.sandbox.wire` encodes them, and handles for what cannot be copied.

A handle is a value that stays where it lives (the program's function, generator or object of its own
class; a lambda, type or generator the tests pass): the other side gets a :class:`Remote` for it, and
each use of that stand-in is a request to the side that holds it, which may itself ask back before it
answers (a program's ``sorted(xs, key=k)`` calls the tests' lambda ``k`` while the judge waits for the
sort). A handle lent and sent back arrives as the object itself.

What a stand-in forwards is what reveals nothing of the asking side: a call (with its arguments, as in
plain Python), iteration, an attribute, an item, ``len``, ``bool``, ``str`` and ``repr``. It never forwards
a comparison, a hash or arithmetic: a stand-in equals only itself, so an object of the program's whose
``__eq__`` says yes to everything is never asked, and never sees the value it is compared with. Which of
these requests a side answers about its own objects is its own choice (``serves`` and
``attribute_allowed``): the judge answers attributes only of objects of the tests' own classes, never of a
lambda (its ``__globals__``) or a generator (its frame), which would hold the tests.

One message is one line of JSON on a file descriptor. Only the standard library (see
:mod:`peftcode.sandbox.wire`).
"""

import json
import os
import select
import threading
import time

import wire
from rebuild import NOT_REBUILT, exception_class

# Values nest up to wire.MAX_DEPTH, each level a few frames on either side.
RECURSION = 12000
ALL_OPERATIONS = frozenset(
    {"call", "getattr", "getitem", "iter", "next", "len", "bool", "str", "repr", "instancecheck"}
)


class Failed(BaseException):
    """The other side could not answer: it ended, answered out of turn, too late, or not with a value.
    Not an Exception, so that no ``except Exception`` in the tests swallows it."""


def error(exception: BaseException) -> dict:
    """An exception as the other side rebuilds it: its class's name, its message, its bases' names."""
    bases = [kind.__name__ for kind in type(exception).__mro__[1:]]
    return {"error": [type(exception).__name__, str(exception)[:1000], bases]}


def rebuilt(error, kind: type | None = None) -> Exception:
    """The other side's exception: of ``kind`` (its class, made on this side once) or of a class named as
    its own, subclassing the first builtin exception among its bases; with its message."""
    name, message, bases = (list(error) + ["", "", []])[:3] if isinstance(error, list) else ("", "", [])
    name, message = str(name)[:100], str(message)
    exception = (kind or exception_class(name, bases))(message)
    exception.add_note(f"raised on the other side as {name}")
    return exception


class Remote:
    """The other side's object. Equal to itself only, hashed by identity; every other use is a request."""

    __slots__ = ("_peer", "_ref", "__weakref__")

    def __init__(self, peer, ref):
        object.__setattr__(self, "_peer", peer)
        object.__setattr__(self, "_ref", ref)

    def _ask(self, op: str, **fields):
        return self._peer.ask(op, target=self._ref, **fields)

    def __call__(self, *args, **kwargs):
        return self._peer.call(self._ref, args, kwargs)

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._ask("getattr", name=name)

    def __getitem__(self, key):
        return self._ask("getitem", key=self._peer.codec.encode(key))

    def __iter__(self):
        return self._ask("iter")

    def __next__(self):
        answer = self._peer.request("next", target=self._ref)
        if answer.get("stop"):
            raise StopIteration
        return self._peer.value(answer)

    def __len__(self) -> int:
        length = self._ask("len")
        if type(length) is not int:
            raise Failed("a length that is not an int")
        return length

    def __bool__(self) -> bool:
        return self._ask("bool") is True

    def __instancecheck__(self, instance) -> bool:
        return self._ask("instancecheck", value=self._peer.codec.encode(instance)) is True

    def __str__(self) -> str:
        return str(self._ask("str"))

    def __repr__(self) -> str:
        return str(self._ask("repr"))

    def __eq__(self, other) -> bool:
        return self is other

    def __ne__(self, other) -> bool:
        return self is not other

    __hash__ = object.__hash__


class Handles:
    """What one side lends (by number) and the stand-ins it holds for the other side's."""

    def __init__(self, peer, side: str):
        self.peer, self.side = peer, side
        self.lent: dict[int, object] = {}
        self.numbers: dict[int, int] = {}  # id() of a lent object -> its number
        self.remotes: dict[str, Remote] = {}

    def reference(self, value):
        """A value that goes back as the handle it came as: the other side's stand-in, or None."""
        if type(value) is Remote and object.__getattribute__(value, "_peer") is self.peer:
            return object.__getattribute__(value, "_ref")
        return None

    def lend(self, value) -> list:
        number = self.numbers.get(id(value))
        if number is None or self.lent[number] is not value:
            number = len(self.lent) + 1
            self.lent[number], self.numbers[id(value)] = value, number
        return ["ref", self.side, number]

    def own(self, ref):
        if not (isinstance(ref, list) and len(ref) == 3 and ref[1] == self.side and ref[2] in self.lent):
            raise ValueError("not a handle this side lent")
        return self.lent[ref[2]]

    def resolve(self, rest):
        side, number = rest
        if side == self.side:
            return self.own(["ref", side, number])
        if not isinstance(side, str) or type(number) is not int:
            raise ValueError("not a handle")
        key = f"{side}:{number}"
        if key not in self.remotes:
            self.remotes[key] = Remote(self.peer, ["ref", side, number])
        return self.remotes[key]


class Peer:
    """Requests to the other side, answered while this side answers the other's requests in turn."""

    def __init__(self, side: str, reader, fd: int, serves=ALL_OPERATIONS, allowed=(), write=None):
        self.reader, self.fd, self.serves, self.write = reader, fd, frozenset(serves), write
        self.other = "the program" if side == "judge" else "the judge"
        self.turn = threading.RLock()
        self.handles = Handles(self, side)
        self.codec = wire.Codec(self.handles, allowed, judge=side == "judge")
        self.extra: dict = {}  # requests of this side's own (a program's ``get`` and ``main``)

    def send(self, message: dict) -> None:
        if self.write is None:
            send(self.fd, message)
        else:
            send(self.fd, message, self.write)

    def receive(self) -> dict:
        try:
            return self.reader.receive()
        except (Ended, BrokenPipeError):
            raise Failed(f"{self.other} ended before its tests did") from None
        except TimeoutError:
            raise Failed(f"{self.other} did not answer in time") from None
        except ValueError as problem:
            raise Failed(f"{self.other}'s answer is not a message: {problem!s:.200}") from None

    def request(self, op: str, **fields) -> dict:
        """The other side's answer to a request, serving its own requests until it comes; one thread's
        conversation at a time (a program's threads may call the tests' lambda at once)."""
        with self.turn:
            try:
                self.send({"op": op, **fields})
            except BrokenPipeError:
                raise Failed(f"{self.other} ended before its tests did") from None
            while True:
                message = self.receive()
                if "answer" in message:
                    answer = message["answer"]
                    if not isinstance(answer, dict):
                        raise Failed(f"{self.other}'s answer is not a message")
                    return answer
                self.serve(message)

    def serve(self, message: dict) -> None:
        try:
            answer = self.answer(message)
        except Exception as exception:
            answer = self.error_of(exception)
        self.send({"answer": answer})

    def error_of(self, exception: BaseException) -> dict:
        """An exception with its class, where the other side makes one of this side's classes."""
        answer = error(exception)
        try:
            answer["class"] = self.codec.encode(type(exception))
        except Exception:  # whatever encoding an odd class raises: the names alone
            pass
        return answer

    def serve_until_ended(self) -> None:
        while True:
            try:
                message = self.reader.receive()
            except Ended:
                return
            self.serve(message)

    def value(self, answer: dict):
        if "error" in answer:
            raise rebuilt(answer["error"], self.error_class(answer.get("class")))
        if "value" not in answer:
            raise Failed(f"{self.other}'s answer holds no value")
        try:
            return self.codec.decode(answer["value"])
        except Exception as problem:  # whatever a malformed value raises
            raise Failed(f"{self.other}'s answer is not a value: {problem!s:.200}") from None

    def error_class(self, tagged) -> type | None:
        """The class the other side's exception is of, where this side made it (``except Bad``)."""
        try:
            kind = self.codec.decode(tagged) if tagged is not None else None
        except Exception:
            return None
        made = isinstance(kind, type) and kind in self.codec.origins and issubclass(kind, Exception)
        return kind if made and not issubclass(kind, NOT_REBUILT) else None

    def ask(self, op: str, **fields):
        return self.value(self.request(op, **fields))

    def call(self, ref, args, kwargs):
        """The other side's function called (see :meth:`after_call`)."""
        # One value, so that an object passed twice is one object there too.
        given = self.codec.encode([list(args), dict(kwargs)])
        answer = self.request("call", target=ref, given=given, back=self.arguments_back)
        self.after_call([*args, *kwargs.values()], answer)
        return self.value(answer)

    arguments_back = False  # whether a call's answer holds its arguments as the call left them

    @staticmethod
    def attribute_allowed(target) -> bool:
        """Whether this side answers an attribute of its ``target`` (the judge's choice, see judge.py)."""
        return True

    def after_call(self, given: list, answer: dict) -> None:
        """What this side does with the arguments a call of the other side's left (nothing here)."""

    # This side's answers about its own objects.

    def answer(self, message: dict) -> dict:
        op = message.get("op")
        if op in self.extra:
            return self.extra[op](message)
        if op not in self.serves:
            raise PermissionError(f"not answered here: {op!r:.40}")
        target = self.handles.own(message.get("target"))
        if op == "call":
            return self.answer_call(target, message)
        if op == "next":
            try:
                return {"value": self.codec.encode(next(target))}
            except StopIteration:
                return {"stop": True}
        if op == "getattr":
            name = str(message.get("name"))
            if name.startswith("_") or not self.attribute_allowed(target):
                raise AttributeError(name)
            return {"value": self.codec.encode(getattr(target, name))}
        if op == "getitem":
            return {"value": self.codec.encode(target[self.codec.decode(message.get("key"))])}
        if op == "instancecheck":
            return {"value": self.codec.encode(isinstance(self.codec.decode(message.get("value")), target))}
        unary = {"iter": iter, "len": len, "bool": bool, "str": str, "repr": repr}[op]
        return {"value": self.codec.encode(unary(target))}

    def answer_call(self, target, message: dict) -> dict:
        args, kwargs = self.codec.decode(message.get("given"))
        if not (isinstance(args, list) and isinstance(kwargs, dict) and all(type(k) is str for k in kwargs)):
            raise ValueError("not a call's arguments")
        try:
            answer = {"value": self.codec.encode(target(*args, **kwargs))}
        except Exception as exception:
            answer = self.error_of(exception)
        if message.get("back"):
            answer["args"] = self.codec.encode([*args, *kwargs.values()])
        return answer


MAX_MESSAGE = 64 << 20  # bytes of one line: a list of about 5 million ints


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
