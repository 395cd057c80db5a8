#!/usr/bin/env bash
# Renders deploy/base and validates every object against the Kubernetes API schemas
# (kubernetes-validate --strict: unknown fields and wrong types are errors), plus
# deploy/secrets.example.yaml, the security rules deploy/README.md states, and every
# CLI flag in the manifests against the binary's --help or the README's list of gaps.
# Renders deploy/observability the same way and validates its ServiceMonitors and
# PrometheusRule against the Prometheus Operator's published CRD schemas (Node.js,
# deploy/tools/crd-validate; promtool checks the rules in tests/e2e_observability.rs).
# Then it breaks copies of both on purpose and fails unless each break is caught.
#
#   scripts/validate-manifests.sh
#
# Renderer: `kubectl kustomize`, else `kustomize build`, else the fallback renderer in
# deploy/tools/manifests.py (which supports only what the base uses). With a real
# kustomize both run and must agree.
#
# Environment:
#   K8S_VERSIONS     Kubernetes versions to validate against (default "1.31.0 1.35.0")
#   BLOBSWARM_BIN    binary whose --help the flags are checked against
#                    (default target/release/blobswarm; with CI=true it must exist)
#   VALIDATE_RENDERER  force "kubectl kustomize", "kustomize build" or "fallback"
#   VALIDATE_VENV    virtualenv for the validator (default ~/.cache/blobswarm/validate-venv)
#   CRD_VALIDATE_DIR where the CRD validator's npm packages go
#                    (default ~/.cache/blobswarm/crd-validate)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

kv_version=1.37.0 # kubernetes-validate on PyPI (bundles schemas for 1.25 to 1.37)
k8s_versions=${K8S_VERSIONS:-1.31.0 1.35.0}
venv=${VALIDATE_VENV:-$HOME/.cache/blobswarm/validate-venv}
bin=${BLOBSWARM_BIN:-target/release/blobswarm}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- tools -------------------------------------------------------------------------
if [ "$("$venv/bin/kubernetes-validate" --version 2>/dev/null || true)" != "$kv_version" ]; then
    echo "validate: installing kubernetes-validate==$kv_version into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$kv_version"
fi
py=$venv/bin/python # has PyYAML (a kubernetes-validate dependency)
tool=deploy/tools/manifests.py

# The CRD validator: the pinned npm packages (package-lock.json) installed next to a copy
# of its script, outside the repository, again only when the lock file changed.
crd_src=deploy/tools/crd-validate
crd_dir=${CRD_VALIDATE_DIR:-$HOME/.cache/blobswarm/crd-validate}
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "validate: FAILED: node and npm are needed to validate deploy/observability" >&2
    exit 1
fi
if ! cmp -s "$crd_src/package-lock.json" "$crd_dir/package-lock.json" 2>/dev/null; then
    echo "validate: installing the CRD validator's npm packages into $crd_dir"
    mkdir -p "$crd_dir"
    cp "$crd_src/package.json" "$crd_src/package-lock.json" "$crd_dir/"
    # The packages declare Node.js 22; the validators they hold run on 20 as well.
    (cd "$crd_dir" && npm ci --quiet --no-audit --no-fund --engine-strict=false >/dev/null)
fi
cp "$crd_src/validate.mjs" "$crd_dir/"

renderer=${VALIDATE_RENDERER:-}
if [ -z "$renderer" ]; then
    renderer=fallback
    if kubectl kustomize --help >/dev/null 2>&1; then
        renderer="kubectl kustomize"
    elif command -v kustomize >/dev/null 2>&1; then
        renderer="kustomize build"
    fi
fi
echo "validate: renderer: $renderer"

# render DIR OUT: render a kustomization with the chosen renderer.
render() {
    case $renderer in
        "kubectl kustomize") kubectl kustomize "$1" >"$2" ;;
        "kustomize build") kustomize build "$1" >"$2" ;;
        fallback) "$py" "$tool" render "$1" >"$2" ;;
    esac
}

# validate_dir DIR: render, compare with the fallback, schema-validate, check policy.
validate_dir() {
    local dir=$1 out=$tmp/rendered.yaml
    render "$dir" "$out" || return 1
    if [ "$renderer" != fallback ]; then
        "$py" "$tool" render "$dir" >"$tmp/fallback.yaml" || return 1
        "$py" "$tool" compare "$out" "$tmp/fallback.yaml" || return 1
    fi
    local v
    for v in $k8s_versions; do
        "$venv/bin/kubernetes-validate" --strict --quiet -k "$v" "$out" || return 1
    done
    echo "validate: $(grep -c '^kind:' "$out") objects pass schema validation for Kubernetes $k8s_versions"
    "$py" "$tool" policy "$out" || return 1
}

# validate_kit DIR: validate_dir, then the Prometheus Operator objects against their CRDs.
validate_kit() {
    validate_dir "$1" || return 1
    "$py" "$tool" json "$tmp/rendered.yaml" | node "$crd_dir/validate.mjs" || return 1
}

# --- the real manifests ------------------------------------------------------------
echo "validate: deploy/base"
validate_dir deploy/base || {
    echo "validate: FAILED: deploy/base is invalid (see above)" >&2
    exit 1
}
for v in $k8s_versions; do
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$v" deploy/secrets.example.yaml || {
        echo "validate: FAILED: deploy/secrets.example.yaml is invalid" >&2
        exit 1
    }
done
echo "validate: deploy/secrets.example.yaml passes"
echo "validate: deploy/observability"
validate_kit deploy/observability || {
    echo "validate: FAILED: deploy/observability is invalid (see above)" >&2
    exit 1
}

if [ -x "$bin" ]; then
    render deploy/base "$tmp/rendered.yaml"
    "$py" "$tool" flags "$tmp/rendered.yaml" deploy/README.md "$bin" || {
        echo "validate: FAILED: manifest flags and $bin / deploy/README.md disagree" >&2
        exit 1
    }
elif [ "${CI:-}" = true ]; then
    echo "validate: FAILED: no binary at $bin to check the manifests' flags against" >&2
    exit 1
else
    echo "validate: SKIPPED the flag check: no binary at $bin (cargo build --release)"
fi

# --- self-test: each deliberate break must be caught --------------------------------
# break_copy CHECK SRC NAME FILE SED_EXPR: copy SRC, apply SED_EXPR to FILE, expect the
# function CHECK to fail on the copy.
break_count=0
break_copy() {
    local check=$1 src=$2 name=$3 file=$4 expr=$5 dir=$tmp/broken
    rm -rf "$dir" && cp -r "$src" "$dir"
    sed -i "$expr" "$dir/$file"
    if cmp -s "$src/$file" "$dir/$file"; then
        echo "validate: self-test '$name' did not change $file; fix the test" >&2
        exit 1
    fi
    if "$check" "$dir" >"$tmp/broken.log" 2>&1; then
        echo "validate: FAILED: self-test '$name' was not caught:" >&2
        cat "$tmp/broken.log" >&2
        exit 1
    fi
    echo "validate: self-test '$name' caught: $(grep -m1 -E '^ERROR|^  ' "$tmp/broken.log" | cut -c1-150)"
    break_count=$((break_count + 1))
}
# break_base NAME FILE SED_EXPR: a break of deploy/base.
break_base() { break_copy validate_dir deploy/base "$@"; }
# break_kit NAME FILE SED_EXPR: a break of deploy/observability.
break_kit() { break_copy validate_kit deploy/observability "$@"; }
break_base "misspelt field" agent-daemonset.yaml 's/imagePullPolicy:/imagePullPolcy:/'
break_base "wrong type" agent-daemonset.yaml 's/containerPort: 4002/containerPort: "four"/'
break_base "missing required field" seeder-service.yaml '/- name: api/,/protocol: TCP/{/      port: 8080/d}'
break_base "writable root filesystem" agent-daemonset.yaml 's/readOnlyRootFilesystem: true/readOnlyRootFilesystem: false/'
break_base "missing resource limits" seeder-deployment.yaml '/^            limits:/,/memory: 2Gi/d'
break_base "no default-deny policy" network-policies.yaml '0,/  name: default-deny/s//  name: not-default-deny\n  labels: {}/; /name: not-default-deny/,/policyTypes/{s/podSelector: {}/podSelector: {matchLabels: {a: b}}/}'
break_base "privileged seeder namespace" namespace.yaml '0,/enforce: restricted/s//enforce: privileged/'
break_kit "ServiceMonitor bad duration" servicemonitors.yaml '0,/interval: 15s/s//interval: 15 s/'
break_kit "ServiceMonitor port as a number" servicemonitors.yaml '0,/- port: metrics/s//- port: 9464/'
break_kit "PrometheusRule for: as a number" prometheusrule.yaml '0,/for: 5m/s//for: 5/'
break_kit "misspelt Service field" agent-metrics-service.yaml 's/clusterIP: None/clusterIp: None/'
if [ -x "$bin" ]; then
    sed 's/- --pin$/- --pin\n            - --no-such-flag/' deploy/base/agent-daemonset.yaml >"$tmp/flag.yaml"
    grep -q -- '--no-such-flag' "$tmp/flag.yaml" || { echo "validate: flag self-test did not apply" >&2; exit 1; }
    if "$py" "$tool" flags "$tmp/flag.yaml" deploy/README.md "$bin" >"$tmp/broken.log" 2>&1; then
        echo "validate: FAILED: self-test 'unknown flag' was not caught" >&2
        exit 1
    fi
    echo "validate: self-test 'unknown flag' caught: $(grep -m1 '^  ' "$tmp/broken.log" | cut -c1-150)"
    break_count=$((break_count + 1))
fi
echo "validate: ok (deploy/base and deploy/observability valid; $break_count deliberately broken copies refused)"
