"""Bound the object graph a pickle would build, before anything unpickles it.

`torch.load(weights_only=True)` and our own restricted unpicklers refuse every import a file asks for, but they
still build whatever tuples, lists and dicts its opcodes describe, and the memo lets a tiny file describe a huge
graph: `T_k = (T_{k-1}, T_{k-1})` over 60 levels is ~120 opcodes (1 KB) and 2**60 tuples once expanded. Hashing
such a tuple (inserting it into a dict, which the unpickler itself does for SETITEMS), comparing, sorting or
formatting it walks the expanded tree inside one C call that holds the GIL: a server stops answering for good.

`check_pickle_graph` simulates the pickle machine over the opcodes alone (`pickletools.genops`: nothing is
built, nothing imported) and refuses a stream whose graph, counted as the tree that hashing or formatting would
walk (a shared object counts once per reference), has more than `max_nodes` nodes or is deeper than
`max_depth`, or that refers to itself. It costs one pass over the opcodes plus one over the graph's edges.
"""

from __future__ import annotations

import io
import os
import pickletools
import zipfile
from typing import IO

MAX_PICKLE_NODES = 2_000_000  # a StyleGAN2 1024 checkpoint with its optimisers is ~1e5 nodes
MAX_PICKLE_DEPTH = 200  # a torch state dict is ~6 deep; an ADA network pickle ~50 (nested persistent modules)
MAX_PICKLES = 5  # torch's legacy format: magic number, protocol, sys info, the object, the storage keys


class PickleGraphError(ValueError):
    """A pickle whose object graph is too large, too deep, self-referencing or not a pickle at all."""


class NotAPickleError(PickleGraphError):
    """Bytes that are not a well-formed pickle (refused as such before any unpickler sees them)."""


class _Node:
    __slots__ = ("children",)

    def __init__(self, children: list | None = None):
        self.children = children if children is not None else []


_MARK = object()

# opcode name -> how many stack items it pops into a new node (pushed in their place)
_POP_INTO_NEW = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3, "REDUCE": 2, "NEWOBJ": 2, "NEWOBJ_EX": 3,
                 "STACK_GLOBAL": 2, "BINPERSID": 1}
# opcode name -> how many stack items it pops and adds to the container below them
_POP_INTO_TOP = {"APPEND": 1, "SETITEM": 2, "BUILD": 1}
_MARK_INTO_NEW = {"TUPLE", "LIST", "DICT", "FROZENSET", "INST", "OBJ"}
_MARK_INTO_TOP = {"APPENDS", "SETITEMS", "ADDITEMS"}
_LEAVES = {"NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4",
           "FLOAT", "BINFLOAT", "STRING", "BINSTRING", "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES",
           "BINBYTES8", "BYTEARRAY8", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "EMPTY_LIST",
           "EMPTY_DICT", "EMPTY_SET", "EMPTY_TUPLE", "GLOBAL", "PERSID"}
_NO_EFFECT = {"PROTO", "FRAME", "READONLY_BUFFER"}
_GETS = {"GET", "BINGET", "LONG_BINGET"}
_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}


def _simulate(stream: IO[bytes], source: str) -> _Node:
    """The root node of the next pickle in `stream` (read up to and including its STOP opcode)."""
    stack: list = []
    memo: dict = {}

    def pop() -> object:
        if not stack:
            raise NotAPickleError(f"{source} is not a well-formed pickle (its stack runs empty)")
        return stack.pop()

    def pop_mark() -> list:
        items = []
        while True:
            item = pop()
            if item is _MARK:
                return items[::-1]
            items.append(item)

    def top_node() -> _Node:
        if not stack or stack[-1] is _MARK:
            raise NotAPickleError(f"{source} is not a well-formed pickle (nothing to add items to)")
        return stack[-1]

    try:
        for opcode, arg, _pos in pickletools.genops(stream):
            name = opcode.name
            if name in _LEAVES:
                stack.append(_Node())
            elif name == "MARK":
                stack.append(_MARK)
            elif name in _POP_INTO_NEW:
                stack.append(_Node([pop() for _ in range(_POP_INTO_NEW[name])]))
            elif name in _POP_INTO_TOP:
                items = [pop() for _ in range(_POP_INTO_TOP[name])]
                top_node().children.extend(items)
            elif name in _MARK_INTO_NEW:
                stack.append(_Node(pop_mark()))
            elif name in _MARK_INTO_TOP:
                items = pop_mark()
                top_node().children.extend(items)
            elif name in _GETS:
                if arg not in memo:
                    raise NotAPickleError(f"{source} is not a well-formed pickle (memo key {int(arg)} unset)")
                stack.append(memo[arg])
            elif name in _PUTS:
                memo[arg] = top_node()
            elif name == "MEMOIZE":
                memo[len(memo)] = top_node()
            elif name == "DUP":
                stack.append(top_node())
            elif name == "POP":
                pop()
            elif name == "POP_MARK":
                pop_mark()
            elif name == "STOP":
                root = pop()
                if not isinstance(root, _Node):
                    raise NotAPickleError(f"{source} is not a well-formed pickle (it ends on a mark)")
                return root
            elif name in _NO_EFFECT:
                pass
            else:  # EXT1/2/4 (the copyreg extension registry), NEXT_BUFFER (out-of-band data)
                raise PickleGraphError(f"{source} uses the pickle opcode {name}, which weights are never saved with")
    except PickleGraphError:
        raise
    except (ValueError, EOFError, KeyError, UnicodeDecodeError) as err:  # genops on bytes that are not a pickle
        raise NotAPickleError(f"{source} is not a well-formed pickle ({type(err).__name__})") from err
    raise NotAPickleError(f"{source} is not a well-formed pickle (it has no STOP opcode)")


def _measure(root: _Node, source: str, max_nodes: int, max_depth: int) -> tuple[int, int]:
    """(expanded size capped at max_nodes + 1, depth) of the graph under `root`, iteratively (no recursion)."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    todo: list[tuple[_Node, bool]] = [(root, False)]
    while todo:
        node, children_done = todo.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            kids = node.children
            size[key] = min(max_nodes + 1, 1 + sum(size[id(c)] for c in kids))
            depth[key] = 1 + max((depth[id(c)] for c in kids), default=0)
            if depth[key] > max_depth:
                raise PickleGraphError(f"{source} nests its objects more than {max_depth} deep; refused before "
                                       "unpickling (weights are never nested that deep)")
            continue
        if key in size:
            continue
        if key in on_path:
            raise PickleGraphError(f"{source} holds an object that contains itself; refused before unpickling")
        on_path.add(key)
        todo.append((node, True))
        if len(on_path) > max_depth:
            raise PickleGraphError(f"{source} nests its objects more than {max_depth} deep; refused before "
                                   "unpickling (weights are never nested that deep)")
        todo.extend((c, False) for c in node.children if id(c) not in size)
    return size[id(root)], depth[id(root)]


def check_pickle_graph(stream: IO[bytes] | bytes, source: str, *, max_nodes: int = MAX_PICKLE_NODES,
                       max_depth: int = MAX_PICKLE_DEPTH) -> int:
    """Refuse (`PickleGraphError`, a ValueError naming `source`) the next pickle in `stream` if the object graph
    it describes has over `max_nodes` nodes counted as an expanded tree, is over `max_depth` deep, or contains
    itself; return its node count. Nothing is unpickled."""
    if isinstance(stream, (bytes, bytearray)):
        stream = io.BytesIO(stream)
    root = _simulate(stream, source)
    nodes, _ = _measure(root, source, max_nodes, max_depth)
    if nodes > max_nodes:
        raise PickleGraphError(f"{source} describes an object graph of more than {max_nodes:,} objects (shared "
                               "objects counted at each use, as hashing or printing them would walk it); refused "
                               "before unpickling")
    return nodes


def check_torch_file(file: str | os.PathLike | bytes, source: str, **limits: int) -> None:
    """`check_pickle_graph` over every pickle `torch.load` would read from `file` (a path, or the bytes of a
    nested `torch.save`): the `.pkl` entries of torch's zip format, or the leading pickles of its legacy format
    (at most `MAX_PICKLES`, as torch reads them). Torch's pre-0.4 tar format is refused (no weights file is that
    old, and its members are pickles of their own)."""
    import tarfile

    opened = io.BytesIO(bytes(file)) if isinstance(file, (bytes, bytearray)) else open(file, "rb")  # noqa: SIM115
    with opened as f:
        if zipfile.is_zipfile(f):
            f.seek(0)
            with zipfile.ZipFile(f) as archive:
                for name in [n for n in archive.namelist() if n.endswith(".pkl")]:
                    with archive.open(name) as entry:
                        check_pickle_graph(io.BytesIO(entry.read()), f"{source} ({name})", **limits)
            return
        f.seek(0)
        if tarfile.is_tarfile(f):
            raise PickleGraphError(f"{source} is in torch's pre-0.4 tar format, which is not read here")
        f.seek(0)
        for _ in range(MAX_PICKLES):
            if not f.read(1):  # the end of a plain pickle
                break
            f.seek(-1, io.SEEK_CUR)
            check_pickle_graph(f, source, **limits)


def describe(value: object, max_chars: int = 40) -> str:
    """`value` for an error message without formatting an untrusted object: short plain scalars as their repr,
    a longer string cut, anything else by its type name (a container may be any graph)."""
    if value is None or isinstance(value, (bool, int, float)):
        text = repr(value) if not isinstance(value, int) or abs(value) < 10**18 else "a very large int"
        return text
    if isinstance(value, str):
        return repr(value[:max_chars]) + ("..." if len(value) > max_chars else "")
    return f"a {type(value).__name__}"


def describe_keys(mapping: dict, limit: int = 8) -> str:
    """The first `limit` keys of an untrusted dict in sorted order where they are strings, each `describe`d;
    other keys by their type (never hashed further, compared or formatted)."""
    keys = list(mapping)[:1000]
    shown = sorted(describe(k) for k in keys if isinstance(k, str))[:limit]
    others = sum(1 for k in keys if not isinstance(k, str))
    more = len(mapping) - len(shown) - others
    parts = shown + ([f"{others} non-string keys"] if others else []) + ([f"{more} more"] if more > 0 else [])
    return "[" + ", ".join(parts) + "]"


__all__ = ["MAX_PICKLE_DEPTH", "MAX_PICKLE_NODES", "NotAPickleError", "PickleGraphError", "check_pickle_graph",
           "check_torch_file", "describe", "describe_keys"]
