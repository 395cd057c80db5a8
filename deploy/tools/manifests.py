#!/usr/bin/env python3
"""Helpers for scripts/validate-manifests.sh (needs PyYAML).

  render DIR                 render DIR/kustomization.yaml with the fallback renderer
  compare A B                fail unless two renderings hold the same objects
  policy FILE                check the security and scheduling rules deploy/README.md states
  flags FILE README BINARY   check every CLI flag in container args against the binary's
                             --help, or its listing under "Not yet implemented in the binary"
  json FILE                  print the objects of a YAML file as one JSON array (for the
                             Node.js CRD validator in deploy/tools/crd-validate)

The fallback renderer exists for machines without kustomize (`kubectl kustomize` or the
`kustomize` binary). It supports exactly what deploy/base and deploy/observability use
and refuses anything else: `resources` (plain YAML files), `namespace`, `labels` entries
with `pairs`, `includeSelectors: false` and `includeTemplates`, and `configMapGenerator`
entries with `name`, `namespace`, `files` (plain file names) and the options
`disableNameSuffixHash: true` and `labels`. When a real kustomize is present the
validation script renders with both and compares them, so the two cannot drift apart.
"""

import json
import os
import re
import subprocess
import sys

import yaml

# Kinds without a namespace that deploy/ may use; anything not listed is namespaced.
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "PriorityClass",
    "CustomResourceDefinition",
    "StorageClass",
    "PersistentVolume",
}
# Kinds whose pod template sits at spec.template.
WORKLOADS = {"Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job"}
SUPPORTED_KEYS = {"apiVersion", "kind", "namespace", "labels", "resources", "configMapGenerator"}


def fail(msg):
    print(f"manifests: {msg}", file=sys.stderr)
    sys.exit(1)


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def render(directory):
    kpath = os.path.join(directory, "kustomization.yaml")
    with open(kpath) as f:
        k = yaml.safe_load(f)
    unsupported = set(k) - SUPPORTED_KEYS
    if unsupported:
        fail(f"{kpath}: the fallback renderer does not support {sorted(unsupported)}")
    if k.get("kind", "Kustomization") != "Kustomization":
        fail(f"{kpath}: kind must be Kustomization")
    docs = []
    for res in k.get("resources", []):
        path = os.path.join(directory, res)
        if not os.path.isfile(path):
            fail(f"{kpath}: resource {res} is not a file (directories and URLs unsupported)")
        docs.extend(load_all(path))
    docs.extend(generate_config_maps(kpath, directory, k.get("configMapGenerator", [])))
    ns = k.get("namespace")
    if ns:
        service_accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
        for d in docs:
            if d["kind"] == "Namespace":
                if d["metadata"]["name"] != ns:
                    fail(f"Namespace {d['metadata']['name']} differs from namespace {ns}: unsupported")
                continue
            if d["kind"] not in CLUSTER_SCOPED:
                d["metadata"]["namespace"] = ns
            if d["kind"] in ("RoleBinding", "ClusterRoleBinding"):
                for s in d.get("subjects", []):
                    if s.get("kind") == "ServiceAccount" and s.get("name") in service_accounts:
                        s["namespace"] = ns
    for entry in k.get("labels", []):
        extra = set(entry) - {"pairs", "includeSelectors", "includeTemplates"}
        if extra or entry.get("includeSelectors", False):
            fail(f"{kpath}: labels entries support pairs, includeTemplates and includeSelectors: false only")
        pairs = entry.get("pairs", {})
        for d in docs:
            d["metadata"].setdefault("labels", {}).update(pairs)
            if entry.get("includeTemplates") and d["kind"] in WORKLOADS:
                meta = d["spec"]["template"].setdefault("metadata", {})
                meta.setdefault("labels", {}).update(pairs)
    return docs


def generate_config_maps(kpath, directory, generators):
    """ConfigMaps from `configMapGenerator` entries, as kustomize writes them: one data key
    per file (its name), the file's text as the value. Only without the name's hash
    suffix, which kustomize computes from the content and this renderer does not."""
    maps = []
    for g in generators:
        options = g.get("options", {})
        extra = (set(g) - {"name", "namespace", "files", "options"}) | (
            set(options) - {"disableNameSuffixHash", "labels"})
        if extra or options.get("disableNameSuffixHash") is not True:
            fail(f"{kpath}: configMapGenerator supports name, namespace, files and options "
                 f"disableNameSuffixHash: true and labels only (got {sorted(extra)})")
        data = {}
        for f in g.get("files", []):
            path = os.path.join(directory, f)
            if "=" in f or os.path.dirname(f) or not os.path.isfile(path):
                fail(f"{kpath}: configMapGenerator file {f} is not a plain file name here")
            with open(path) as fh:
                data[f] = fh.read()
        meta = {"name": g["name"]}
        if "namespace" in g:
            meta["namespace"] = g["namespace"]
        if options.get("labels"):
            meta["labels"] = dict(options["labels"])
        maps.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
    return maps


def key(d):
    m = d.get("metadata", {})
    return (d.get("apiVersion"), d.get("kind"), m.get("namespace", ""), m.get("name"))


def compare(a_path, b_path):
    a = {key(d): d for d in load_all(a_path)}
    b = {key(d): d for d in load_all(b_path)}
    if set(a) != set(b):
        fail(f"object sets differ: only in {a_path}: {sorted(set(a) - set(b))}; "
             f"only in {b_path}: {sorted(set(b) - set(a))}")
    for k in sorted(a):
        if a[k] != b[k]:
            fail(f"{k} differs between {a_path} and {b_path}")
    print(f"manifests: fallback renderer matches kustomize ({len(a)} objects)")


def pod_specs(docs):
    for d in docs:
        if d["kind"] in WORKLOADS:
            yield d, d["spec"]["template"]["spec"]


def policy(path):
    docs = load_all(path)
    errors = []
    for d, spec in pod_specs(docs):
        name = f"{d['kind']}/{d['metadata']['name']}"
        pod_sc = spec.get("securityContext", {})
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            where = f"{name} container {c['name']}"
            sc = c.get("securityContext", {})
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(part, {}):
                        errors.append(f"{where}: no {part}.{r}")
            for probe in ("livenessProbe", "readinessProbe"):
                if probe not in c:
                    errors.append(f"{where}: no {probe}")
            if sc.get("readOnlyRootFilesystem") is not True:
                errors.append(f"{where}: readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                errors.append(f"{where}: allowPrivilegeEscalation is not false")
            if sc.get("privileged"):
                errors.append(f"{where}: privileged")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                errors.append(f"{where}: capabilities.drop is not [ALL]")
            if sc.get("capabilities", {}).get("add"):
                errors.append(f"{where}: adds capabilities")
            seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}
            if seccomp.get("type") != "RuntimeDefault":
                errors.append(f"{where}: seccompProfile is not RuntimeDefault")
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(flag):
                errors.append(f"{name}: {flag}")
        if d["kind"] == "DaemonSet":
            if {"operator": "Exists"} not in spec.get("tolerations", []):
                errors.append(f"{name}: does not tolerate every taint")
            if not spec.get("priorityClassName"):
                errors.append(f"{name}: no priorityClassName")
    errors += isolation(docs)
    if errors:
        fail("policy violations:\n  " + "\n  ".join(errors))
    print(f"manifests: policy ok ({sum(1 for _ in pod_specs(docs))} workloads)")


# Namespaces whose workloads need more than `restricted` (the agent: hostPath, root).
PRIVILEGED_NAMESPACES = {"blobswarm-node"}


def isolation(docs):
    """Issue #18 finding 11: every namespace enforces a Pod Security level (`restricted`
    unless listed in PRIVILEGED_NAMESPACES), a namespace running workloads denies all
    traffic by default (NetworkPolicy with an empty pod selector, Ingress and Egress),
    no pod gets a service account token and no RBAC is granted (nothing calls the
    Kubernetes API)."""
    errors = []
    namespaces = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Namespace"}
    for name, ns in namespaces.items():
        level = ns["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce")
        want = "privileged" if name in PRIVILEGED_NAMESPACES else "restricted"
        if level != want:
            errors.append(f"Namespace/{name}: pod-security enforce is {level}, not {want}")
    denied = {
        d["metadata"].get("namespace")
        for d in docs
        if d["kind"] == "NetworkPolicy"
        and d["spec"].get("podSelector") == {}
        and set(d["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not d["spec"].get("ingress")
        and not d["spec"].get("egress")
    }
    for d, spec in pod_specs(docs):
        ns = d["metadata"].get("namespace")
        name = f"{d['kind']}/{d['metadata']['name']}"
        if ns not in namespaces:
            errors.append(f"{name}: namespace {ns} is not defined here")
        if ns not in denied:
            errors.append(f"{name}: namespace {ns} has no default-deny NetworkPolicy")
        if spec.get("automountServiceAccountToken") is not False:
            errors.append(f"{name}: automountServiceAccountToken is not false")
    for d in docs:
        if d["kind"] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"):
            errors.append(f"{d['kind']}/{d['metadata']['name']}: RBAC that nothing uses")
    return errors


def not_yet(readme):
    """Gaps listed in the README section "Not yet implemented in the binary": a set of
    `--flag`s (or `--flag=PLACEHOLDER`), and a dict of `--flag=prefix` forms (the flag
    exists, values of that form do not)."""
    with open(readme) as f:
        text = f.read()
    m = re.search(r"^## Not yet implemented in the binary\n(.*?)(?=^##+ |\Z)", text, re.M | re.S)
    if not m:
        fail(f"{readme} has no '## Not yet implemented in the binary' section")
    whole, values = set(), {}
    for flag, value in re.findall(r"`(?:blobswarm \w+ )?(--[a-z0-9-]+)(=[^`\s]+)?", m.group(1)):
        # `--flag=VALUE` with an upper-case placeholder lists the whole flag.
        if value and not re.fullmatch(r"=[A-Z_]+", value):
            values.setdefault(flag, set()).add(value[1:])
        else:
            whole.add(flag)
    return whole, values


def help_flags(binary, sub):
    out = subprocess.run([binary, sub, "--help"], capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"{binary} {sub} --help failed: {out.stderr.strip()}")
    return set(re.findall(r"(--[a-z0-9-]+)", out.stdout))


def flags(path, readme, binary):
    docs = load_all(path)
    gaps, value_gaps = not_yet(readme)
    errors = []
    checked = 0
    helps = {sub: help_flags(binary, sub) for sub in ("agent", "seed")}
    for flag in sorted(gaps & (helps["agent"] | helps["seed"])):
        errors.append(f"{flag} is in the binary now; update the README's 'Not yet implemented' list")
    for d, spec in pod_specs(docs):
        for c in spec.get("containers", []):
            args = c.get("args", [])
            if not args:
                continue
            sub = args[0]
            if sub not in helps:
                helps[sub] = help_flags(binary, sub)
            for a in args[1:]:
                if not a.startswith("--"):
                    continue
                flag, _, value = a.partition("=")
                checked += 1
                where = f"{d['kind']}/{d['metadata']['name']}: {sub} {a}"
                if flag in gaps:
                    continue
                if flag not in helps[sub]:
                    errors.append(f"{where}: the flag is neither in `blobswarm {sub} --help` nor "
                                  "listed under 'Not yet implemented in the binary'")
                elif value and any(value.startswith(v) for v in value_gaps.get(flag, ())):
                    continue
    if errors:
        fail("flag check:\n  " + "\n  ".join(errors))
    print(f"manifests: {checked} flags are in the binary or listed as not yet implemented")


def main():
    if len(sys.argv) < 2:
        fail(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "render" and len(args) == 1:
        yaml.safe_dump_all(render(args[0]), sys.stdout, sort_keys=False)
    elif cmd == "compare" and len(args) == 2:
        compare(*args)
    elif cmd == "policy" and len(args) == 1:
        policy(args[0])
    elif cmd == "flags" and len(args) == 3:
        flags(*args)
    elif cmd == "json" and len(args) == 1:
        json.dump(load_all(args[0]), sys.stdout)
    else:
        fail(__doc__)


if __name__ == "__main__":
    main()
