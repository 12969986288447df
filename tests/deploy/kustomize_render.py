"""A small kustomize renderer for the project's own manifests, so the tests need no kubectl.

It does what those kustomizations use and refuses the rest (so a new feature cannot pass
unrendered): ``resources`` (files and directories holding a kustomization), and
``patches`` with a ``target`` and an inline ``patch`` that is either a JSON 6902 list of
``add``/``replace``/``remove`` operations or a ``$patch: delete`` document.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

SUPPORTED_KEYS = {"apiVersion", "kind", "resources", "patches"}


class Unsupported(Exception):
    """The kustomization uses something this renderer does not implement."""


def load_kustomization(root: Path) -> dict:
    return yaml.safe_load((root / "kustomization.yaml").read_text(encoding="utf-8"))


def render(root: Path) -> list[dict]:
    """The resources ``kustomize build root`` would produce, in the order listed."""
    k = load_kustomization(root)
    extra = set(k) - SUPPORTED_KEYS
    if extra:
        raise Unsupported(f"{root}/kustomization.yaml: {sorted(extra)}")
    out: list[dict] = []
    for entry in k.get("resources") or []:
        path = (root / entry).resolve()
        if path.is_dir():
            out.extend(render(path))
        else:
            out.extend(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d)
    for patch in k.get("patches") or []:
        out = apply_patch(out, patch)
    return out


def matches(resource: dict, target: dict) -> bool:
    group, _, version = resource["apiVersion"].rpartition("/")
    want = {"group": group, "version": version, "kind": resource["kind"], "name": resource["metadata"]["name"]}
    unknown = set(target) - set(want)
    if unknown:
        raise Unsupported(f"patch target keys {sorted(unknown)}")
    return all(want[key] == value for key, value in target.items())


def apply_patch(resources: list[dict], patch: dict) -> list[dict]:
    if set(patch) != {"target", "patch"}:
        raise Unsupported(f"patch form {sorted(patch)} (only target + inline patch)")
    hits = [r for r in resources if matches(r, patch["target"])]
    if not hits:
        raise AssertionError(f"patch target {patch['target']} matches no resource")
    body = yaml.safe_load(patch["patch"])
    if isinstance(body, dict) and body.get("$patch") == "delete":
        return [r for r in resources if not any(r is h for h in hits)]
    if not isinstance(body, list):
        raise Unsupported("strategic-merge patches")
    out = []
    for r in resources:
        if any(r is h for h in hits):
            r = copy.deepcopy(r)
            for op in body:
                json_patch(r, op)
        out.append(r)
    return out


def json_patch(doc: dict, op: dict) -> None:
    """One RFC 6902 operation (add, replace, remove) applied in place."""
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
    node = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    kind = op["op"]
    if isinstance(node, list):
        if kind == "add":
            node.insert(len(node) if last == "-" else int(last), op["value"])
        elif kind == "replace":
            node[int(last)] = op["value"]
        elif kind == "remove":
            del node[int(last)]
        else:
            raise Unsupported(f"op {kind}")
        return
    if kind == "add":
        node[last] = op["value"]
    elif kind == "replace":
        if last not in node:
            raise AssertionError(f"replace of a missing path {op['path']}")
        node[last] = op["value"]
    elif kind == "remove":
        del node[last]
    else:
        raise Unsupported(f"op {kind}")
