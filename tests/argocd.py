"""Run the Argo CD health checks in docs/argocd/ as Argo CD runs them.

Argo CD (gopher-lua, Lua 5.1) decodes the live object's JSON into nested tables,
arrays as 1-based tables and JSON numbers as Lua numbers, sets the global `obj` and
runs the script, which returns a table `hs` with `status` and `message`. Here the same
happens in a fresh Lua 5.1 runtime per call (lupa), so no global leaks between checks.

Argo CD opens only Lua's base, package and table libraries (and a safe part of os), so
the runtime here has no string, math, io or debug library either: a script that calls
string.format would pass here only to fail in Argo CD otherwise. One difference stays:
gopher-lua writes tostring(0.1 + 0.2) with Go's shortest form, C Lua with "%.14g".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:  # the Lua 5.1 that gopher-lua implements, where lupa ships it
    from lupa import lua51 as lupa_runtime
except ImportError:  # pragma: no cover - older lupa: its one bundled runtime
    import lupa as lupa_runtime

SCRIPTS = Path(__file__).resolve().parents[1] / "docs" / "argocd"
STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing"}
# Leave what Argo CD's Lua VM has (argo-cd util/lua: base, package, table, safe os).
_ARGO_LIBRARIES = """
os = {time = os.time, date = os.date, clock = os.clock}
string, math, io, debug, coroutine = nil, nil, nil, nil, nil
getmetatable("").__index = nil  -- no ("x"):format() without the string library
"""


def script(kind: str) -> str:
    return (SCRIPTS / f"health-{kind.lower()}.lua").read_text()


def to_lua(lua: Any, value: Any) -> Any:
    """A Python value decoded from JSON, as Argo CD hands it to Lua."""
    if isinstance(value, dict):
        table = lua.table()
        for key, item in value.items():
            if item is not None:  # JSON null: the key is absent (nil) in Lua
                table[key] = to_lua(lua, item)
        return table
    if isinstance(value, list):
        # lua.table(*items) numbers the items 1..n, as a decoded JSON array.
        return lua.table(*(to_lua(lua, item) for item in value))
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)  # every JSON number is a float64 to gopher-lua
    return value


def health(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    """(hs.status, hs.message) of the `kind` (Study or Trial) health check for `obj`."""
    lua = lupa_runtime.LuaRuntime(unpack_returned_tuples=False)
    lua.execute(_ARGO_LIBRARIES)
    lua.globals().obj = to_lua(lua, obj)
    hs = lua.execute(script(kind))
    assert hs is not None, "the script returned nothing"
    status, message = hs["status"], hs["message"]
    assert status in STATUSES, f"hs.status={status!r} is not an Argo CD health status"
    assert isinstance(message, str), f"hs.message={message!r} is not a string"
    return str(status), message
