#!/usr/bin/env python3
"""Validate Kubernetes manifests offline, the way the API server would judge them.

Why this exists: `kubernetes-validate --strict` knows every built-in kind, but
for a custom resource it only prints "WARN couldn't find schema" and passes. So
this script runs the same kubernetes-validate check (strict, per Kubernetes
version) on built-in kinds, and judges custom resources against the CRDs given
with --crd, following the API server's order: prune nulls of non-nullable
fields, apply the schema's defaults, check the structural schema (unknown
fields rejected, as `kubectl apply` does with its default strict field
validation), then evaluate the `x-kubernetes-validations` CEL rules with
cel-python. An unknown kind is an error, never a silent pass.

  validate.py validate --crd crds/chatcluster.yaml -k 1.30.0 FILE...
      every object in every FILE must be valid.
  validate.py reject --crd crds/chatcluster.yaml -k 1.30.0 FILE...
      every FILE must be rejected, and each `# expect-error: TEXT` line in it
      must match one of the errors, so a file rejected for the wrong reason
      (a typo, say) does not count as a passing negative test.
"""

from __future__ import annotations

import argparse
import copy
import functools
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import celpy
import celpy.celtypes as celtypes
import jsonschema
import kubernetes_validate.utils as kv
import yaml
from referencing import Registry, Resource

# kubernetes-validate parses its (large) schema files on every call; the script
# validates many objects, so parse each file once.
kv.schema_contents = functools.lru_cache(maxsize=None)(kv.schema_contents)

EXPECT = re.compile(r"^#\s*expect-error:\s*(.+?)\s*$", re.MULTILINE)
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


# --- YAML -------------------------------------------------------------------


class StrictLoader(yaml.SafeLoader):
    """A SafeLoader that rejects duplicate mapping keys, as the API server's
    strict decoding does (PyYAML would silently keep the last one)."""


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    mapping: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"found duplicate key {key!r}", key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.load_all(path.read_text(), Loader=StrictLoader) if doc is not None]


# --- CEL ----------------------------------------------------------------------

# The Kubernetes CEL string extensions that CRD rules commonly use and that
# cel-python lacks. A rule calling anything else fails loudly ("undeclared
# reference"), so an unsupported rule can never pass unnoticed.
K8S_CEL_FUNCTIONS = {
    "trim": lambda s: celtypes.StringType(str(s).strip()),
    "lowerAscii": lambda s: celtypes.StringType(str(s).lower()),
    "upperAscii": lambda s: celtypes.StringType(str(s).upper()),
    "replace": lambda s, old, new: celtypes.StringType(str(s).replace(str(old), str(new))),
    "indexOf": lambda s, sub: celtypes.IntType(str(s).find(str(sub))),
}

CEL_ENV = celpy.Environment()


@functools.lru_cache(maxsize=None)
def cel_program(rule: str) -> celpy.Runner:
    return CEL_ENV.program(CEL_ENV.compile(rule), functions=K8S_CEL_FUNCTIONS)


def cel_eval(expression: str, value: Any) -> Any:
    return cel_program(expression).evaluate({"self": celpy.json_to_cel(value)})


def short(error: Exception) -> str:
    """cel-python's errors embed the whole activation; keep the first clause."""
    text = str(error.args[0]) if error.args else str(error)
    return text.split(" (in activation")[0][:200]


# --- custom resources ----------------------------------------------------------


def openapi_to_jsonschema(schema: dict) -> dict:
    """Translate a CRD's OpenAPI v3 structural schema to JSON Schema 2020-12,
    with the API server's strict field validation: an object rejects fields its
    schema does not declare unless it preserves unknown fields."""
    out: dict = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: openapi_to_jsonschema(sub) for name, sub in value.items()}
        elif key == "items" and isinstance(value, dict):
            out[key] = openapi_to_jsonschema(value)
        elif key == "additionalProperties" and isinstance(value, dict):
            out[key] = openapi_to_jsonschema(value)
        elif key in ("anyOf", "oneOf", "allOf"):
            out[key] = [openapi_to_jsonschema(sub) for sub in value]
        elif key == "not":
            out[key] = openapi_to_jsonschema(value)
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            continue  # OpenAPI 3.0 booleans, handled below
        elif key.startswith("x-kubernetes-") or key in ("nullable", "default", "description", "format", "example", "title"):
            continue
        else:
            out[key] = copy.deepcopy(value)
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if schema.get(exclusive) is True and bound in out:
            out[exclusive] = out.pop(bound)
    if schema.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (schema.get("type") == "object" and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    if schema.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def apply_defaults(value: Any, schema: dict) -> None:
    """Structural defaulting, in place: nulls of non-nullable fields are pruned,
    then missing fields take their schema default, then children recurse."""
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in value and value[name] is None and not sub.get("nullable"):
                del value[name]
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                apply_defaults(value[name], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name in value.keys() - schema.get("properties", {}).keys():
                apply_defaults(value[name], extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(item, schema["items"])


def field_path(parts: list) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<root>"


def cel_rules(value: Any, schema: dict, path: list, errors: list[str], skipped: list[str]) -> None:
    """Evaluate every `x-kubernetes-validations` rule where its value is present."""
    for rule in schema.get("x-kubernetes-validations", []):
        expression = rule["rule"]
        if re.search(r"\boldSelf\b", expression):
            skipped.append(expression)  # a transition rule: only judged on update
            continue
        where = field_path(path + ([rule["fieldPath"].lstrip(".")] if rule.get("fieldPath") else []))
        try:
            ok = cel_eval(expression, value)
        except Exception as error:  # noqa: BLE001 - any CEL failure is a rejection
            errors.append(f"{where}: rule {expression!r} could not be evaluated: {short(error)}")
            continue
        if not isinstance(ok, celtypes.BoolType):
            errors.append(f"{where}: rule {expression!r} returned {ok!r}, not a bool")
        elif not ok:
            message = rule.get("message") or f"failed rule: {expression}"
            if rule.get("messageExpression"):
                try:
                    message = str(cel_eval(rule["messageExpression"], value))
                except Exception as error:  # noqa: BLE001
                    message = f"{message} (messageExpression failed: {short(error)})"
            errors.append(f"{where}: Invalid value: {message}")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name, sub in properties.items():
            if name in value:
                cel_rules(value[name], sub, path + [name], errors, skipped)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name in value.keys() - properties.keys():
                cel_rules(value[name], extra, path + [name], errors, skipped)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            cel_rules(item, schema["items"], path + [index], errors, skipped)


@dataclass
class CustomResourceDefinition:
    group: str
    kind: str
    versions: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def from_manifest(cls, crd: dict) -> CustomResourceDefinition:
        spec = crd["spec"]
        this = cls(group=spec["group"], kind=spec["names"]["kind"])
        for version in spec["versions"]:
            this.versions[version["name"]] = version
        return this


def object_meta_validator(kube_version: str) -> jsonschema.protocols.Validator:
    definitions = kv.schema_contents(
        f"kubernetes-json-schema/v{kv_schema_version(kube_version)}-local-strict/_definitions.json",
        kube_version)
    registry = Resource.from_contents(definitions) @ Registry()
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              "$ref": f"https://kubernetes.io/api/_definitions.json#/$defs/{OBJECT_META}"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


def kv_schema_version(kube_version: str) -> str:
    """The newest schema set kubernetes-validate ships that is not newer than kube_version."""
    wanted = kv.major_minor(kube_version.lstrip("v"))
    candidates = [v for v in kv.all_versions() if kv.major_minor(v) <= wanted]
    if not candidates:
        raise SystemExit(f"kubernetes-validate {kv.__version__} has no schemas for Kubernetes {kube_version}")
    return candidates[-1]


def validate_custom_resource(obj: dict, crd: CustomResourceDefinition, kube_version: str) -> tuple[list[str], list[str]]:
    version_name = obj["apiVersion"].split("/", 1)[1]
    version = crd.versions.get(version_name)
    if version is None or not version.get("served", False):
        return [f"apiVersion: version {version_name!r} of {crd.kind} is not served by the CRD"], []
    errors: list[str] = []
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name"):
        errors.append("metadata.name: Required value")
    else:
        for error in object_meta_validator(kube_version).iter_errors(meta):
            errors.append(f"metadata{''.join('.' + str(p) for p in error.path)}: {error.message}")
        if not DNS1123_SUBDOMAIN.match(str(meta["name"])) or len(meta["name"]) > 253:
            errors.append(f"metadata.name: Invalid value: {meta['name']!r}: must be a DNS-1123 subdomain")

    schema = version["schema"]["openAPIV3Schema"]
    body = copy.deepcopy(obj)
    apply_defaults(body, schema)
    structural = openapi_to_jsonschema(schema)
    # Every object carries these; metadata is checked above against ObjectMeta,
    # as the API server does.
    structural.setdefault("properties", {}).update(
        apiVersion={"type": "string"}, kind={"type": "string"}, metadata={"type": "object"})
    for error in sorted(jsonschema.Draft202012Validator(structural).iter_errors(body), key=lambda e: list(e.path)):
        errors.append(f"{field_path(list(error.path))}: {error.message}")
    skipped: list[str] = []
    if not errors:
        cel_rules(body, schema, [], errors, skipped)
    return errors, skipped


# --- one object, one file --------------------------------------------------------


@dataclass
class Validator:
    crds: dict[tuple[str, str], CustomResourceDefinition]
    kube_versions: list[str]
    skipped_rules: set[str] = field(default_factory=set)

    def check_object(self, obj: Any) -> list[str]:
        if not isinstance(obj, dict) or not isinstance(obj.get("apiVersion"), str) or not isinstance(obj.get("kind"), str):
            return ["not a Kubernetes object: apiVersion and kind are required strings"]
        group = obj["apiVersion"].split("/", 1)[0] if "/" in obj["apiVersion"] else ""
        crd = self.crds.get((group, obj["kind"]))
        if crd is not None:
            # The CRD's own schema decides; only ObjectMeta comes from Kubernetes.
            errors, skipped = validate_custom_resource(obj, crd, self.kube_versions[0])
            self.skipped_rules.update(skipped)
            return errors
        errors: list[str] = []
        for kube_version in self.kube_versions:
            errors += [f"[k8s {kube_version}] {e}" for e in self.check_builtin(obj, kube_version)]
        return errors

    @staticmethod
    def check_builtin(obj: dict, kube_version: str) -> list[str]:
        try:
            kv.validate(obj, kube_version, strict=True)
        except kv.ValidationError as error:
            hint = ""
            if isinstance(error.instance, bool) and "string" in str(error.validator_value):
                hint = (" (an unquoted yes/no/on/off is a boolean in YAML 1.1, which is how"
                        " kubectl reads it: the emitter must quote it)")
            return [f"{field_path(list(error.path))}: {error.message}{hint}"]
        except kv.SchemaNotFoundError as error:
            return [f"{error.message} (a typo, a removed API, or a custom resource whose CRD was not given with --crd)"]
        return []

    def check_file(self, path: Path) -> tuple[int, list[str]]:
        try:
            documents = load_documents(path)
        except yaml.YAMLError as error:
            return 0, [f"not valid YAML: {error}"]
        if not documents:
            return 0, ["no Kubernetes object in the file"]
        errors: list[str] = []
        for obj in documents:
            name = f"{obj.get('kind', '?')}/{(obj.get('metadata') or {}).get('name', '?')}" if isinstance(obj, dict) else "?"
            errors += [f"{name}: {e}" for e in self.check_object(obj)]
        return len(documents), errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["validate", "reject"])
    parser.add_argument("--crd", action="append", default=[], type=Path, help="a CRD manifest; repeatable")
    parser.add_argument("-k", "--kubernetes-version", action="append", dest="versions",
                        help="Kubernetes version to validate against; repeatable (default 1.30.0)")
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args()

    crds: dict[tuple[str, str], CustomResourceDefinition] = {}
    for path in args.crd:
        for doc in load_documents(path):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                crd = CustomResourceDefinition.from_manifest(doc)
                crds[(crd.group, crd.kind)] = crd
    validator = Validator(crds=crds, kube_versions=args.versions or ["1.30.0"])

    failed = objects = 0
    for path in args.files:
        count, errors = validator.check_file(path)
        objects += count
        if args.mode == "validate":
            if errors:
                failed += 1
                print(f"FAIL {path}:", *errors, sep="\n  ")
            continue
        expected = EXPECT.findall(path.read_text())
        missing = [text for text in expected if not any(text in e for e in errors)]
        if not expected:
            failed += 1
            print(f"FAIL {path}: an invalid example needs an '# expect-error: <text>' line naming why it is invalid")
        elif not errors:
            failed += 1
            print(f"FAIL {path}: was ACCEPTED, but it is an invalid example (expected: {'; '.join(expected)})")
        elif missing:
            failed += 1
            print(f"FAIL {path}: rejected, but not for the expected reason {missing}; errors:", *errors, sep="\n  ")

    verdict = "valid" if args.mode == "validate" else "rejected as expected"
    kinds = ", ".join(sorted(f"{k}.{g}" for g, k in crds)) or "none"
    print(f"{args.mode}: {len(args.files) - failed}/{len(args.files)} files {verdict} "
          f"({objects} objects; Kubernetes {', '.join(validator.kube_versions)}; CRDs: {kinds})")
    for rule in sorted(validator.skipped_rules):
        print(f"  note: transition rule not evaluated offline (needs oldSelf): {rule}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
