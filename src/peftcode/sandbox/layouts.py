"""A set that crosses the pipe iterates, on the other side, in the order it did where it was made.

A set's order is the order of its hash table's slots, which depends on its size and on the history of
its insertions and removals, not only on its members: ``tuple({12, 13, 14, 15, 16})`` is
``(16, 12, 13, 14, 15)`` in CPython 3.11, and a set rebuilt member by member elsewhere may iterate
otherwise. So the sender reads where each member sits (:func:`read`, CPython's own layout), and the
receiver, whose string hashes agree (both processes run with the same ``PYTHONHASHSEED``), inserts the
members in an order that puts each in its slot of a table of the same size, holding the slots that
were taken when the member was first inserted with placeholders that it removes at the end
(:func:`rebuild`). Where that cannot be done (another interpreter, a member whose hash differs on this
side), the set is rebuilt in the sender's order, and its order may differ.

Only the standard library (see :mod:`peftcode.sandbox.wire`).
"""

import ctypes
import sys

LINEAR_PROBES, PERTURB_SHIFT, SMALL = 9, 5, 8
WORD = ctypes.sizeof(ctypes.c_void_p)
# PySetObject: the object's head, fill, used, mask, then the table's pointer; a slot is (key, hash).
MASK_AT, TABLE_AT, SLOT = 4 * WORD, 5 * WORD, 2 * WORD
DUMMY_HASH = -1
CPYTHON = sys.implementation.name == "cpython" and WORD == 8 and not getattr(sys, "_is_gil_enabled", None)


def read(members) -> tuple:
    """(table size, slot of each member in iteration order) of a set or frozenset, or (None, None)."""
    if not CPYTHON or type(members).__basicsize__ < TABLE_AT + WORD:
        return None, None
    base = id(members)
    mask = ctypes.c_ssize_t.from_address(base + MASK_AT).value
    table = ctypes.c_void_p.from_address(base + TABLE_AT).value
    if not table or mask < SMALL - 1 or mask & (mask + 1) or mask > 1 << 40:
        return None, None
    slots = []
    for slot in range(mask + 1):
        key = ctypes.c_void_p.from_address(table + slot * SLOT).value
        held = ctypes.c_ssize_t.from_address(table + slot * SLOT + WORD).value
        if key and held != DUMMY_HASH:
            slots.append(slot)
    return (mask + 1, slots) if len(slots) == len(members) else (None, None)


class Placeholder:
    """Holds a slot while the members are inserted; hashes to it and equals only itself."""

    __slots__ = ("slot",)

    def __init__(self, slot: int):
        self.slot = slot

    def __hash__(self) -> int:
        return self.slot


def probes(hashed: int, mask: int):
    """The slots CPython's set_add_entry tries for a hash, in order."""
    perturb = hashed & ((1 << 64) - 1)
    index = hashed & mask
    while True:
        count = LINEAR_PROBES if index + LINEAR_PROBES <= mask else 0
        yield from range(index, index + count + 1)
        perturb >>= PERTURB_SHIFT
        index = (index * 5 + 1 + perturb) & mask


def insertions(members: list, size: int, slots: list) -> list | None:
    """Members and placeholders, in the order that lays each member in its slot, or None."""
    mask, target = size - 1, dict(zip(slots, range(len(members)), strict=True))
    try:
        hashes = [hash(member) for member in members]
    except TypeError:
        return None
    taken, order, pending = set(), [], list(range(len(members)))
    while pending:
        waiting, before = [], len(order)
        for index in pending:
            free = next(slot for slot in probes(hashes[index], mask) if slot not in taken)
            if free == slots[index]:
                taken.add(free)
                order.append(members[index])
                continue
            if free not in target:  # free now, but taken when this member came: hold it
                taken.add(free)
                order.append(Placeholder(free))
            waiting.append(index)
        if len(order) == before:  # each waits for another's slot
            return None
        pending = waiting
    return order


def rebuild(kind: type, members: list, size, slots):
    """A set (or frozenset) of ``members`` that iterates in their order, laid out as the sender's was
    where it can be."""
    made = _laid_out(members, size, slots)
    if made is None:
        made = set()
        for member in members:
            made.add(member)
    return made if kind is set else frozenset(made)


def _laid_out(members: list, size, slots):
    if not (CPYTHON and isinstance(size, int) and isinstance(slots, list) and len(slots) == len(members)):
        return None
    # A table at most as large as a set of these members could have grown to (removals keep its size).
    if size < SMALL or size & (size - 1) or size > 64 * (len(members) + 8) or len(set(slots)) != len(slots):
        return None
    if not all(isinstance(slot, int) and 0 <= slot < size for slot in slots):
        return None
    order = insertions(members, size, slots)
    if order is None:
        return None
    first = max(size // 4, 5) if size > SMALL else 0  # the update that sizes the table
    taken = {o.slot for o in order if type(o) is Placeholder} | set(slots)
    spare = (slot for slot in range(size) if slot not in taken)
    while len(order) < first:
        order.append(Placeholder(next(spare)))
    if len(order) * 5 >= (size - 1) * 3:  # the table would grow on the way
        return None
    made = set()
    made.update(dict.fromkeys(order[:first]))
    for item in order[first:]:
        made.add(item)
    for item in order:
        if type(item) is Placeholder:
            made.discard(item)
    return made if [id(m) for m in made] == [id(m) for m in members] else None
