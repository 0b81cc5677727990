"""Merge the services' OpenAPI documents into the one the gateway serves.

Paths are unique per service (each owns its prefix). Component schemas are shared by name:
a schema identical to the one already merged under its name is kept once; any other is
renamed with its service's name in front, and every `$ref` to it inside that service's
document is rewritten, so nothing is overwritten. "Identical" is judged after rewriting, so
a schema that refers to a renamed one is itself renamed.
"""

import copy
from collections.abc import Mapping
from typing import Any

SCHEMA_REF = "#/components/schemas/"


def _rewrite_refs(node: Any, renames: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        return {
            key: (
                SCHEMA_REF + renames.get(value[len(SCHEMA_REF) :], value[len(SCHEMA_REF) :])
                if key == "$ref" and isinstance(value, str) and value.startswith(SCHEMA_REF)
                else _rewrite_refs(value, renames)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(item, renames) for item in node]
    return node


def _renames_for(service: str, own: Mapping[str, Any], merged: Mapping[str, Any]) -> dict[str, str]:
    """Which of `own` schemas must take a new name; repeated until no rename causes another."""
    renames: dict[str, str] = {}
    taken = set(merged) | set(own)
    changed = True
    while changed:
        changed = False
        for name, schema in own.items():
            clash = name in merged and merged[name] != _rewrite_refs(schema, renames)
            if name not in renames and clash:
                renames[name] = _unique_name(service, name, taken)
                taken.add(renames[name])
                changed = True
    return renames


def _unique_name(service: str, name: str, taken: set[str]) -> str:
    candidate, suffix = f"{service.capitalize()}{name}", 2
    while candidate in taken:
        candidate, suffix = f"{service.capitalize()}{name}{suffix}", suffix + 1
    return candidate


def merge_openapi(
    docs: Mapping[str, Mapping[str, Any]], *, title: str, description: str
) -> dict[str, Any]:
    """`docs` maps a service name to its OpenAPI document."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    tags: list[dict[str, Any]] = []
    for service, doc in docs.items():
        own = doc.get("components", {}).get("schemas", {})
        renames = _renames_for(service, own, schemas)
        for name, schema in own.items():
            schemas[renames.get(name, name)] = _rewrite_refs(copy.deepcopy(schema), renames)
        for path, item in doc.get("paths", {}).items():
            paths[path] = _rewrite_refs(copy.deepcopy(item), renames)
        tags.append({"name": service, "description": doc.get("info", {}).get("description", "")})
    return {
        "openapi": next((d["openapi"] for d in docs.values() if "openapi" in d), "3.1.0"),
        "info": {"title": title, "version": "0.1.0", "description": description},
        "tags": tags,
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(schemas.items()))},
    }
