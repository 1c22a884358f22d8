"""Transformation handlers: string rewrites and filters walked over a nested JSON object."""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import TypeAlias, cast

from python_worker.domain.errors import InvalidPayload
from python_worker.domain.jobs import json_kind
from python_worker.domain.limits import (
    MAX_DEPTH,
    MAX_FIELD_LENGTH,
    MAX_FIELDS,
    MAX_NODES,
    MAX_STRING_LENGTH,
)

JsonValue: TypeAlias = "bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None"
JsonObject: TypeAlias = "dict[str, JsonValue]"


def check_data(data: object) -> JsonObject:
    """`data` itself, once known to be a JSON object within the depth, size and string limits."""
    if not isinstance(data, dict):
        raise InvalidPayload(f"data must be a JSON object, not {json_kind(data)}")
    nodes = 0
    # An explicit stack rather than recursion: the limits are checked before anything recurses.
    pending: list[tuple[object, int, str]] = [(data, 1, "data")]
    while pending:
        value, depth, path = pending.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise InvalidPayload(f"data has more than {MAX_NODES} values; the limit is {MAX_NODES}")
        if isinstance(value, dict):
            _check_depth(depth, path)
            for key, item in value.items():
                if not isinstance(key, str):
                    raise InvalidPayload(
                        f"{path}: object keys must be strings, not {json_kind(key)}"
                    )
                pending.append((item, depth + 1, f"{path}.{key}"))
        elif isinstance(value, list):
            _check_depth(depth, path)
            pending.extend((item, depth + 1, f"{path}[{i}]") for i, item in enumerate(value))
        elif isinstance(value, str):
            if len(value) > MAX_STRING_LENGTH:
                raise InvalidPayload(
                    f"{path} has {len(value)} characters; the limit is {MAX_STRING_LENGTH}"
                )
        elif isinstance(value, float) and not math.isfinite(value):
            raise InvalidPayload(f"{path}: {value} is not a JSON number")
        elif value is not None and not isinstance(value, bool | int | float):
            raise InvalidPayload(f"{path}: {json_kind(value)} is not a JSON value")
    return cast(JsonObject, data)


def uppercase(data: Mapping[str, object]) -> JsonObject:
    """Every string value upper-cased; keys, numbers, booleans and nulls left alone."""
    return cast(JsonObject, _map_strings(check_data(data), str.upper))


def lowercase(data: Mapping[str, object]) -> JsonObject:
    """Every string value lower-cased; keys, numbers, booleans and nulls left alone."""
    return cast(JsonObject, _map_strings(check_data(data), str.lower))


def normalize(data: Mapping[str, object]) -> JsonObject:
    """Every string value in Unicode NFKC form, trimmed, with inner whitespace runs as one space."""
    return cast(JsonObject, _map_strings(check_data(data), normalize_text))


def normalize_text(text: str) -> str:
    """`text` in NFKC form, trimmed, each run of whitespace collapsed to a single space."""
    # NFKC first: it turns no-break and ideographic spaces into plain ones for split() to see.
    return " ".join(unicodedata.normalize("NFKC", text).split())


def reverse(data: Mapping[str, object]) -> JsonObject:
    """Every string value reversed (by code point) and every list in reverse order."""
    return cast(JsonObject, _reverse(check_data(data)))


def filter_data(
    data: Mapping[str, object],
    fields: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
) -> JsonObject:
    """Only `fields`, minus `exclude`; with neither, the data without nulls and empty values.

    A field is a dotted path (`user.address.city`); a path through a list applies to each
    object in it. Keys that themselves contain a dot cannot be named. Dropping empties works
    bottom-up, so an object left empty by dropping its nulls is dropped in turn.
    """
    checked = check_data(data)
    if fields is None and exclude is None:
        cleaned = _drop_empty(checked)
        return cast(JsonObject, cleaned) if cleaned is not _DROPPED else {}
    result = checked
    if fields is not None:
        if not fields:
            raise InvalidPayload("fields is empty; name at least one field or leave fields out")
        result = cast(JsonObject, _keep(result, _path_tree("fields", fields)))
    if exclude is not None:
        result = cast(JsonObject, _remove(result, _path_tree("exclude", exclude)))
    return result


class _Dropped:
    """The marker for a value that filtering removed."""


_DROPPED = _Dropped()

# A path tree maps a key to None (the whole value is named) or to the tree of its sub-paths.
_PathTree: TypeAlias = "dict[str, _PathTree | None]"


def _map_strings(value: JsonValue, change: Callable[[str], str]) -> JsonValue:
    # Plain recursion is safe here: check_data has bounded the depth to MAX_DEPTH.
    if isinstance(value, str):
        return change(value)
    if isinstance(value, list):
        return [_map_strings(item, change) for item in value]
    if isinstance(value, dict):
        return {key: _map_strings(item, change) for key, item in value.items()}
    return value


def _reverse(value: JsonValue) -> JsonValue:
    if isinstance(value, str):
        return value[::-1]
    if isinstance(value, list):
        return [_reverse(item) for item in reversed(value)]
    if isinstance(value, dict):
        return {key: _reverse(item) for key, item in value.items()}
    return value


def _drop_empty(value: JsonValue) -> JsonValue | _Dropped:
    if isinstance(value, dict):
        kept = {key: _drop_empty(item) for key, item in value.items()}
        cleaned = {key: item for key, item in kept.items() if not isinstance(item, _Dropped)}
        return cleaned or _DROPPED
    if isinstance(value, list):
        items = [_drop_empty(item) for item in value]
        remaining = [item for item in items if not isinstance(item, _Dropped)]
        return remaining or _DROPPED
    if value is None or value == "":
        return _DROPPED
    return value


def _keep(value: JsonValue, tree: _PathTree) -> JsonValue | _Dropped:
    if isinstance(value, list):
        kept = [_keep(item, tree) for item in value if isinstance(item, dict)]
        remaining = [item for item in kept if not isinstance(item, _Dropped)]
        return remaining or _DROPPED
    if not isinstance(value, dict):
        return _DROPPED
    result: JsonObject = {}
    for key, item in value.items():
        if key not in tree:
            continue
        subtree = tree[key]
        picked = item if subtree is None else _keep(item, subtree)
        if not isinstance(picked, _Dropped):
            result[key] = picked
    return result or _DROPPED


def _remove(value: JsonValue, tree: _PathTree) -> JsonValue:
    if isinstance(value, list):
        return [_remove(item, tree) for item in value]
    if not isinstance(value, dict):
        return value
    result: JsonObject = {}
    for key, item in value.items():
        if key not in tree:
            result[key] = item
        elif (subtree := tree[key]) is not None:
            result[key] = _remove(item, subtree)
    return result


def _path_tree(name: str, paths: Sequence[str]) -> _PathTree:
    if len(paths) > MAX_FIELDS:
        raise InvalidPayload(
            f"{name} has {len(paths)} entries; the limit is {MAX_FIELDS}", field=name
        )
    tree: _PathTree = {}
    for index, path in enumerate(paths):
        if not isinstance(path, str):
            raise InvalidPayload(f"{name}[{index}] must be a string, not {json_kind(path)}")
        if len(path) > MAX_FIELD_LENGTH:
            raise InvalidPayload(
                f"{name}[{index}] has {len(path)} characters; the limit is {MAX_FIELD_LENGTH}",
                field=name,
            )
        keys = path.split(".")
        if not all(keys):
            raise InvalidPayload(f"{name}[{index}]: {path!r} is not a dotted field path")
        node = tree
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if child is None:
                break  # an ancestor is named whole already
            node = child
        else:
            # Naming a field whole overrides any narrower path under it.
            node[keys[-1]] = None
    return tree


def _check_depth(depth: int, path: str) -> None:
    if depth > MAX_DEPTH:
        raise InvalidPayload(f"{path} is nested {depth} levels deep; the limit is {MAX_DEPTH}")
