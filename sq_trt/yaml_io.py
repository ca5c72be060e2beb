"""Bounded YAML loading for recipes and ``--set`` values.

``yaml.safe_load`` runs no code, but it expands aliases: a 1 KB document of nested
anchors (the "billion laughs" shape) becomes billions of nodes, and printing such
a value in an error message hangs the process. Documents are therefore measured
on the composed node graph, where an alias is a shared node, before anything is
constructed.
"""

from __future__ import annotations

import os
import reprlib
from pathlib import Path
from typing import Any

import yaml

from sq_trt.errors import ConfigError

# A recipe is a few hundred nodes; 1 MiB / 100k expanded nodes leave room for any real one.
MAX_DOCUMENT_BYTES = 1 << 20
MAX_EXPANDED_NODES = 100_000


def safe_load_bounded(text: str, where: str) -> Any:
    """``yaml.safe_load`` refusing oversized documents and alias bombs.

    Args:
        text: The YAML document.
        where: What it is (a file name, ``--set x=y``), for messages.

    Raises:
        ConfigError: Too large, too many nodes once aliases are expanded, or invalid YAML.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_DOCUMENT_BYTES:
        raise ConfigError(
            f"{where} is larger than {MAX_DOCUMENT_BYTES // 1024} KiB; a recipe is a few KiB, check the file"
        )
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is None:
            return None
        expanded = _expanded_size(node, {}, 0)
        if expanded > MAX_EXPANDED_NODES:
            raise ConfigError(
                f"{where} expands to more than {MAX_EXPANDED_NODES} values through YAML aliases; "
                "expected a plain recipe, remove the anchors/aliases"
            )
        refuse_duplicate_keys(node, where)
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML ({shorten(str(exc).replace(chr(10), ' '))})") from exc
    except RecursionError as exc:
        raise ConfigError(f"{where} is nested too deeply to be a recipe") from exc


_MERGE_TAG = "tag:yaml.org,2002:merge"


def refuse_duplicate_keys(root: yaml.Node, where: str) -> None:
    """Refuse a mapping that repeats a key, at any depth (YAML would silently keep the last one).

    A second ``gate:`` replacing a strict gate with a lax one must not pass unnoticed. Keys
    compare by resolved tag and text (``1`` and ``"1"`` differ); ``<<`` merge keys are left
    to YAML. Call after :func:`_expanded_size` has bounded the graph (no cycles, bounded depth).

    Raises:
        ConfigError: Naming the key and the lines of both occurrences.
    """
    seen_nodes: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes:
            continue  # an alias: the same node, checked once
        seen_nodes.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], yaml.Node] = {}
            for key_node, value_node in node.value:
                stack.extend((key_node, value_node))
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                    continue
                earlier = first.setdefault((key_node.tag, key_node.value), key_node)
                if earlier is not key_node:
                    raise ConfigError(
                        f"{where}: key {shorten(key_node.value, 60)!r} appears twice in one mapping "
                        f"(lines {earlier.start_mark.line + 1} and {key_node.start_mark.line + 1}); "
                        "YAML would keep only the last, remove one"
                    )


def _expanded_size(node: yaml.Node, memo: dict[int, int], depth: int) -> int:
    """Node count after alias expansion, computed without expanding (shared nodes memoised)."""
    key = id(node)
    if key in memo:
        return memo[key]
    if depth > 200:
        raise RecursionError
    memo[key] = MAX_EXPANDED_NODES + 1  # a cycle (recursive alias) counts as unbounded
    size = 1
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            size += _expanded_size(child, memo, depth + 1)
            if size > MAX_EXPANDED_NODES:
                break
    elif isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            size += _expanded_size(key_node, memo, depth + 1) + _expanded_size(value_node, memo, depth + 1)
            if size > MAX_EXPANDED_NODES:
                break
    memo[key] = size
    return size


def shorten(text: str, limit: int = 160) -> str:
    """``text`` on one line, cut to ``limit`` characters (values in messages stay readable and bounded)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` bounded in depth and width: never walks a huge or deeply nested value."""
    bounded = reprlib.Repr()
    bounded.maxlevel, bounded.maxdict, bounded.maxlist = 3, 6, 6
    bounded.maxstring, bounded.maxother = limit, limit
    return shorten(bounded.repr(value), limit)


def read_text_file(path: str | os.PathLike[str], what: str) -> str:
    """A small UTF-8 text file (a recipe), refusing binary content and oversized files with one line.

    Raises:
        ConfigError: Unreadable, larger than :data:`MAX_DOCUMENT_BYTES`, or not UTF-8 text.
    """
    try:
        size = os.stat(path).st_size
        if size > MAX_DOCUMENT_BYTES:
            raise ConfigError(
                f"{what} {path} is {size} bytes, larger than {MAX_DOCUMENT_BYTES // 1024} KiB; check the file"
            )
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text (binary at byte {exc.start}); pass a YAML file") from exc
    if "\x00" in text:
        raise ConfigError(f"{what} {path} contains NUL bytes; it is a binary file, pass a YAML file")
    return text
