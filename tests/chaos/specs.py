"""Study specs as a hurried user writes them: mutations of a valid one.

Each mutation changes one to three places, chosen at random among every field of
the spec (the trial template's inside included): a value of the wrong type, a
field left out, an unknown field, an extreme number, unicode where ASCII was
expected, a list entry duplicated, a broken `${...}` reference.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator
from typing import Any

Path = tuple[str | int, ...]

EXTREMES: list[Any] = [0, -1, 1e308, -1e308, 2**63, -(2**63), 1e-308, 10**40, 0.5, 1_000_000]
WEIRD_STRINGS = ["", " ", "ü", "学习率", "🚀", "a" * 300, "\u202e", "null", "${", "\n", "-1"]
BROKEN_REFS = [
    "${params.nope}",
    "${params.}",
    "${",
    "${params.x",
    "${trial.unknown}",
    "${study}",
    "$${params.x}",
    "${params.x}${params.x}",
]


def _paths(node: Any, at: Path = ()) -> Iterator[Path]:
    yield at
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*at, i))


def _get(node: Any, path: Path) -> Any:
    for p in path:
        node = node[p]
    return node


def _set(root: Any, path: Path, value: Any) -> None:
    _get(root, path[:-1])[path[-1]] = value


def _other_type(value: Any, rng: random.Random) -> Any:
    choices: list[Any] = ["text", 7, 2.5, True, None, [1, "a"], {"k": "v"}]
    return rng.choice([c for c in choices if type(c) is not type(value)])


def _wrong_type(spec: Any, rng: random.Random) -> None:
    path = rng.choice([p for p in _paths(spec) if p])
    _set(spec, path, _other_type(_get(spec, path), rng))


def _missing(spec: Any, rng: random.Random) -> None:
    path = rng.choice([p for p in _paths(spec) if p and isinstance(_get(spec, p[:-1]), dict)])
    del _get(spec, path[:-1])[path[-1]]


def _extra(spec: Any, rng: random.Random) -> None:
    path = rng.choice([p for p in _paths(spec) if isinstance(_get(spec, p), dict)])
    _get(spec, path)[rng.choice(["extra", "Name", "maxtrials", "ü", "seed"])] = rng.choice(
        [1, "x", {"a": 1}, [None]]
    )


def _extreme(spec: Any, rng: random.Random) -> None:
    numbers = [p for p in _paths(spec) if p and isinstance(_get(spec, p), int | float)] or [
        p for p in _paths(spec) if p
    ]
    _set(spec, rng.choice(numbers), rng.choice(EXTREMES))


def _unicode(spec: Any, rng: random.Random) -> None:
    strings = [p for p in _paths(spec) if p and isinstance(_get(spec, p), str)]
    _set(spec, rng.choice(strings), rng.choice(WEIRD_STRINGS))


def _duplicate(spec: Any, rng: random.Random) -> None:
    lists = [p for p in _paths(spec) if isinstance(_get(spec, p), list) and _get(spec, p)]
    target = _get(spec, rng.choice(lists))
    target.append(copy.deepcopy(rng.choice(target)))


def _broken_ref(spec: Any, rng: random.Random) -> None:
    template = spec["trialTemplate"]
    strings = [p for p in _paths(template) if p and isinstance(_get(template, p), str)]
    path = rng.choice(strings)
    _set(template, path, f"{_get(template, path)}{rng.choice(BROKEN_REFS)}")


MUTATIONS: dict[str, Callable[[Any, random.Random], None]] = {
    "wrong_type": _wrong_type,
    "missing": _missing,
    "extra": _extra,
    "extreme": _extreme,
    "unicode": _unicode,
    "duplicate": _duplicate,
    "broken_ref": _broken_ref,
}


def mutations(base: dict[str, Any], count: int, seed: int) -> Iterator[tuple[str, Any]]:
    """`count` mutated copies of `base["spec"]`, each named by its first mutation."""
    rng = random.Random(seed)
    kinds = sorted(MUTATIONS)
    for i in range(count):
        spec = copy.deepcopy(base["spec"])
        first = kinds[i % len(kinds)]
        for kind in [first, *rng.sample(kinds, rng.randint(0, 2))]:
            try:
                MUTATIONS[kind](spec, rng)
            except (IndexError, KeyError, TypeError):
                continue  # nothing of that kind left to mutate: the others still apply
        yield first, spec
