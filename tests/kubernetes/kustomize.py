"""Renders a kustomization offline and validates every object it makes against the Kubernetes
JSON schemas bundled by kubernetes-validate (PyPI), for tests/tests/kubernetes.rs: there is no
kubectl or kustomize binary on the test machines.

    python kustomize.py DIR --kubernetes-version 1.30.0 [--kubernetes-version ...]

prints {"objects": [...], "errors": ["Kind/name: ..."]} as JSON on stdout.

It renders the part of kustomize that examples/kubernetes uses, exactly, and refuses any other
key (so a kustomization it cannot render fails instead of being rendered wrong):
`resources` (files, or directories holding a kustomization.yaml), `namespace`, `images`
(newName, newTag), `patches` (strategic-merge patch files, by kind and name), and
`configMapGenerator` with `files` under `generatorOptions.disableNameSuffixHash: true` (text
files as `data`, others as `binaryData`, as kustomize does).
"""

import argparse
import base64
import copy
import json
import os
import sys

import kubernetes_validate
import yaml

KNOWN_KEYS = {"apiVersion", "kind", "resources", "namespace", "images", "patches",
              "configMapGenerator", "generatorOptions"}
# Strategic merge: lists of objects merged by this key (the Kubernetes API's patchMergeKey
# for these fields); other lists are replaced.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "env": "name",
    "ports": "containerPort",
    "topologySpreadConstraints": "topologyKey",
}


class RenderError(Exception):
    pass


def load_yaml_documents(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def merge(base, patch, field=None):
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = merge(out[key], value, key)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        out = [copy.deepcopy(item) for item in base]
        for item in patch:
            match = next((i for i, b in enumerate(out) if b.get(key) == item.get(key)), None)
            if match is None:
                out.append(copy.deepcopy(item))
            else:
                out[match] = merge(out[match], item)
        return out
    return copy.deepcopy(patch)


def generate_config_maps(directory, kustomization):
    generators = kustomization.get("configMapGenerator", [])
    if generators and not kustomization.get("generatorOptions", {}).get("disableNameSuffixHash"):
        raise RenderError("configMapGenerator without generatorOptions.disableNameSuffixHash: true "
                          "(this renderer does not add name hashes)")
    maps = []
    for generator in generators:
        unknown = set(generator) - {"name", "files"}
        if unknown:
            raise RenderError(f"configMapGenerator {generator.get('name')}: unsupported keys {sorted(unknown)}")
        config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}}
        for entry in generator.get("files", []):
            key, _, path = entry.rpartition("=") if "=" in entry else (os.path.basename(entry), "", entry)
            full = os.path.join(directory, path)
            if not os.path.isfile(full):
                raise RenderError(f"configMapGenerator {generator['name']}: {full} is missing")
            with open(full, "rb") as f:
                content = f.read()
            try:
                config_map.setdefault("data", {})[key] = content.decode("utf-8")
            except UnicodeDecodeError:
                config_map.setdefault("binaryData", {})[key] = base64.b64encode(content).decode("ascii")
        maps.append(config_map)
    return maps


def render(directory):
    path = os.path.join(directory, "kustomization.yaml")
    (kustomization,) = load_yaml_documents(path)
    unknown = set(kustomization) - KNOWN_KEYS
    if unknown:
        raise RenderError(f"{path}: unsupported keys {sorted(unknown)}")
    objects = []
    for resource in kustomization.get("resources", []):
        full = os.path.join(directory, resource)
        objects += render(full) if os.path.isdir(full) else load_yaml_documents(full)
    objects += generate_config_maps(directory, kustomization)
    for patch_entry in kustomization.get("patches", []):
        if set(patch_entry) != {"path"}:
            raise RenderError(f"{path}: only patches with a path are supported: {patch_entry}")
        for patch in load_yaml_documents(os.path.join(directory, patch_entry["path"])):
            targets = [o for o in objects if o["kind"] == patch["kind"]
                       and o["metadata"]["name"] == patch["metadata"]["name"]]
            if len(targets) != 1:
                raise RenderError(f"patch {patch_entry['path']}: {len(targets)} targets")
            objects[objects.index(targets[0])] = merge(targets[0], patch)
    for image in kustomization.get("images", []):
        for obj in objects:
            for container in obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
    if "namespace" in kustomization:
        for obj in objects:
            obj["metadata"]["namespace"] = kustomization["namespace"]
    return objects


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    parser.add_argument("--kubernetes-version", action="append", required=True)
    args = parser.parse_args()
    try:
        objects = render(args.directory)
    except (RenderError, OSError, KeyError, ValueError, yaml.YAMLError) as error:
        print(json.dumps({"objects": [], "errors": [f"render: {error}"]}))
        return 1
    errors = []
    for version in args.kubernetes_version:
        for obj in objects:
            what = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                errors.append(f"{what} (Kubernetes {version}): {error.message} at {list(error.path)}")
            except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as error:
                errors.append(f"{what} (Kubernetes {version}): {error}")
    print(json.dumps({"objects": objects, "errors": errors}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
