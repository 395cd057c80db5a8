// Validates the Prometheus Operator objects (monitoring.coreos.com/v1 ServiceMonitor and
// PrometheusRule) among rendered manifests against the operator's published CRD schemas
// (openAPIV3Schema of prometheus-operator v0.90.1, compiled into validators by
// @kubernetes-models/prometheus-operator 5.0.1, pinned in package-lock.json).
//
//   python3 deploy/tools/manifests.py json RENDERED.yaml | node validate.mjs
//
// The input is a JSON array of objects; objects of other API groups are left to
// kubernetes-validate. Exits 1 naming each object and error, or on any other kind of
// monitoring.coreos.com. These schemas check types, formats, patterns, enums and
// required fields; like the CRDs themselves they do not reject unknown fields, which
// promtool does for the rules (tests/e2e_observability.rs).
import { readFileSync } from "node:fs";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";

const MODELS = { ServiceMonitor, PrometheusRule };
const GROUP = "monitoring.coreos.com/";

const docs = JSON.parse(readFileSync(0, "utf8"));
const errors = [];
let checked = 0;
for (const doc of docs) {
  if (!String(doc.apiVersion).startsWith(GROUP)) continue;
  const name = `${doc.kind}/${doc.metadata?.name}`;
  const Model = MODELS[doc.kind];
  if (doc.apiVersion !== `${GROUP}v1` || !Model) {
    errors.push(`${name}: ${doc.apiVersion} ${doc.kind} has no schema here; add its model`);
    continue;
  }
  try {
    new Model(doc).validate();
    checked++;
  } catch (e) {
    errors.push(`${name}: ${e.message}`);
  }
}
if (errors.length > 0) {
  console.error(`crd-validate: ${errors.length} invalid:\n  ${errors.join("\n  ")}`);
  process.exit(1);
}
console.log(`crd-validate: ${checked} Prometheus Operator objects match the published CRD schemas`);
