#!/usr/bin/env python3
"""Vendors the published JSON schemas that node/tests/compose_topology.rs
validates docker/compose.yaml and docker/kubernetes.yaml against.

There is no network here but the package registries, so the schemas come
from two PyPI packages that ship them:

* check-jsonschema  (vendor/compose-spec.json: the compose-spec project's
  schema, as `check-jsonschema --builtin-schema vendor.compose-spec` uses it)
* kubernetes-validate (kubernetes-json-schema/vX.Y.Z-local-strict: the
  Kubernetes OpenAPI schemas converted to JSON schema, "strict" meaning
  unknown fields are refused)

The Kubernetes schemas refer to one 1.5 MB `_definitions.json`; this script
keeps only the definitions reachable from the kinds we use and inlines them
as `$defs`, so each vendored file is self-contained. Nothing else is
changed. Run from the repository root:

    python3 docker/schemas/vendor.py

It downloads the pinned wheels with `pip download` (or uses the directory
given as its first argument) and rewrites the files under docker/schemas/.
"""

import json
import pathlib
import re
import subprocess
import sys
import tempfile
import zipfile

CHECK_JSONSCHEMA = "check-jsonschema==0.39.0"
KUBERNETES_VALIDATE = "kubernetes-validate==1.37.0"
KUBERNETES_VERSION = "v1.30.0"
KINDS = ["statefulset-apps-v1", "service-v1", "poddisruptionbudget-policy-v1"]

OUT = pathlib.Path(__file__).resolve().parent


def wheels(directory: pathlib.Path) -> dict:
    found = {}
    for wheel in directory.glob("*.whl"):
        if wheel.name.startswith("check_jsonschema-"):
            found["check"] = wheel
        if wheel.name.startswith("kubernetes_validate-"):
            found["k8s"] = wheel
    return found


def refs(node, into: set):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                into.add(value.split("#/$defs/", 1)[1])
            else:
                refs(value, into)
    elif isinstance(node, list):
        for value in node:
            refs(value, into)


def local_refs(node):
    """Points every `$ref` at this document's own `$defs`."""
    if isinstance(node, dict):
        return {
            key: (re.sub(r"^.*#/\$defs/", "#/$defs/", value) if key == "$ref" else local_refs(value))
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [local_refs(v) for v in node]
    return node


def main():
    if len(sys.argv) > 1:
        directory = pathlib.Path(sys.argv[1])
    else:
        directory = pathlib.Path(tempfile.mkdtemp())
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(directory),
             CHECK_JSONSCHEMA, KUBERNETES_VALIDATE],
            check=True,
        )
    found = wheels(directory)

    with zipfile.ZipFile(found["check"]) as z:
        base = "check_jsonschema/builtin_schemas/vendor/"
        (OUT / "compose-spec.json").write_bytes(z.read(base + "compose-spec.json"))
        (OUT / "LICENSE.compose-spec").write_bytes(z.read(base + "licenses/LICENSE.compose-spec"))

    with zipfile.ZipFile(found["k8s"]) as z:
        base = f"kubernetes_validate/kubernetes-json-schema/{KUBERNETES_VERSION}-local-strict/"
        definitions = json.loads(z.read(base + "_definitions.json"))["$defs"]
        target = OUT / "kubernetes" / KUBERNETES_VERSION
        target.mkdir(parents=True, exist_ok=True)
        for kind in KINDS:
            schema = json.loads(z.read(base + kind + ".json"))
            wanted, todo = set(), set()
            refs(schema, todo)
            while todo:
                name = todo.pop()
                if name in wanted:
                    continue
                wanted.add(name)
                refs(definitions[name], todo)
            schema = local_refs(schema)
            schema.pop("$id", None)
            schema["$comment"] = (
                f"{KUBERNETES_VALIDATE} kubernetes-json-schema/{KUBERNETES_VERSION}-local-strict/"
                f"{kind}.json with the definitions it uses inlined (docker/schemas/vendor.py)"
            )
            schema["$defs"] = {name: local_refs(definitions[name]) for name in sorted(wanted)}
            (target / f"{kind}.json").write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
