"""Offline tests of helm/nexus: lint (strict), render with the default and
the GPU values, validate every manifest against the Kubernetes schemas, and
check what the chart promises (raft peers, UDP ports, storage, budgets,
autoscaling, GPU resources, dashboards, values schema)."""

import json
import sys
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml

CHART = Path(__file__).resolve().parents[2] / "helm" / "nexus"
KUBE = "1.30.0"
CRDS = {"ServiceMonitor"}  # validated by the Prometheus operator, not core schemas
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def render(values):
    chart = helm.Chart.load(str(CHART))
    chart.validate_schema(values)
    docs = []
    for path, text in sorted(chart.render(values, name="nexus", namespace="ml").items()):
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append(doc)
    return docs


def validate(docs, label):
    for d in docs:
        try:
            kubernetes_validate.validate(d, KUBE, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            check(d["kind"] in CRDS, f"{label}: no schema for {d['kind']}")
        except kubernetes_validate.ValidationError as e:
            check(False, f"{label}: {d['kind']}/{d['metadata']['name']}: {e.message} at {list(e.path)}")


def by_kind(docs, kind, name=None):
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def args_of(deploy):
    return deploy["spec"]["template"]["spec"]["containers"][0]["args"]


# Lint.
report = helm.lint(str(CHART), strict=True, kube_version="v" + KUBE)
errors = [m for m in report["messages"] if m["severity"] >= 2] + [{"error": e} for e in report["errors"]]
check(not errors, f"helm lint --strict: {errors}")

# Defaults.
docs = render({})
validate(docs, "defaults")
sts = by_kind(docs, "StatefulSet")
check(len(sts) == 1, "one coordinator StatefulSet")
sts = sts[0]
check(sts["spec"]["replicas"] == 3, "three coordinators by default")
check(sts["spec"]["podManagementPolicy"] == "Parallel", "members start in parallel")
peers = [a for a in sts["spec"]["template"]["spec"]["containers"][0]["args"] if str(a).startswith("--peer=")]
check(len(peers) == 3, f"a --peer flag per member: {peers}")
check(all("nexus-coordinator-peers.ml.svc:7500" in p for p in peers), f"peers through the headless Service: {peers}")
check(sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "50Gi", "raft log PVC")
headless = by_kind(docs, "Service", "nexus-coordinator-peers")[0]
check(headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"], "headless peer Service")
check({p["protocol"] for p in headless["spec"]["ports"] if p["name"] in ("public", "raft")} == {"UDP"}, "QUIC ports are UDP")
check(sts["spec"]["serviceName"] == "nexus-coordinator-peers", "StatefulSet governed by the headless Service")
workers = by_kind(docs, "Deployment", "nexus-cpu-worker")
check(len(workers) == 1 and "replicas" not in workers[0]["spec"], "CPU workers sized by the HPA")
check(sum(str(a).startswith("--coordinator=") for a in args_of(workers[0])) == 3, "workers know every coordinator")
check(not by_kind(docs, "Deployment", "nexus-gpu-worker"), "no GPU workers by default")
hpa = by_kind(docs, "HorizontalPodAutoscaler")[0]
check(hpa["spec"]["scaleTargetRef"]["name"] == "nexus-cpu-worker", "HPA scales the CPU workers")
pdb = by_kind(docs, "PodDisruptionBudget", "nexus-coordinator")[0]
check(pdb["spec"]["minAvailable"] == 2, "PDB keeps a raft quorum")
check(len(by_kind(docs, "ServiceMonitor")) == 1, "ServiceMonitor")
cm = by_kind(docs, "ConfigMap", "nexus-dashboards")[0]
check(cm["metadata"]["labels"].get("grafana_dashboard") == "1", "dashboards labelled for the Grafana sidecar")
check(json.loads(cm["data"]["nexus-overview.json"])["uid"] == "nexus-overview", "overview dashboard shipped")

# GPU values.
gpu_values = yaml.safe_load((CHART / "ci" / "gpu-values.yaml").read_text())
docs = render(gpu_values)
validate(docs, "gpu")
gpu = by_kind(docs, "Deployment", "nexus-gpu-worker")
check(len(gpu) == 1, "GPU worker Deployment")
spec = gpu[0]["spec"]["template"]["spec"]
check(spec.get("runtimeClassName") == "nvidia", "runtimeClassName")
check(spec["containers"][0]["resources"]["limits"].get("nvidia.com/gpu") == 1, "GPU resource limit")
check(gpu[0]["spec"]["replicas"] == 2, "GPU replicas")
check(by_kind(docs, "Deployment", "nexus-cpu-worker")[0]["spec"]["replicas"] == 4, "fixed CPU replicas without HPA")
check(not by_kind(docs, "HorizontalPodAutoscaler"), "no HPA when disabled")

# A model volume: every worker mounts it read-only and serves it.
docs = render({**gpu_values, "models": {"claimName": "nexus-models", "mountPath": "/models"}})
validate(docs, "models")
for name in ("nexus-cpu-worker", "nexus-gpu-worker"):
    deploy = by_kind(docs, "Deployment", name)[0]
    pod = deploy["spec"]["template"]["spec"]
    check("--models=/models" in args_of(deploy), f"{name} serves the model root")
    mounts = pod["containers"][0]["volumeMounts"]
    check({"name": "models", "mountPath": "/models", "readOnly": True} in mounts, f"{name} mounts the models read-only")
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    check(claims == ["nexus-models"], f"{name} models claim: {claims}")
check(not any("--models" in str(a) for a in args_of(by_kind(render({}), "Deployment", "nexus-cpu-worker")[0])),
      "no model root by default")
check(not any("--lean-keys" in str(a) for a in args_of(by_kind(render({}), "Deployment", "nexus-cpu-worker")[0])),
      "full keys by default")
lean = by_kind(render({"worker": {"leanKeys": True}}), "Deployment", "nexus-cpu-worker")[0]
check("--lean-keys" in args_of(lean), "worker.leanKeys passes --lean-keys")
sts = by_kind(docs, "StatefulSet")[0]
check(sum(str(a).startswith("--peer=") for a in sts["spec"]["template"]["spec"]["containers"][0]["args"]) == 5,
      "five members, five peers")

# The values schema refuses what would break the cluster.
for bad, why in [
    ({"coordinator": {"replicas": 2}}, "an even raft group"),
    ({"coordinator": {"ports": {"public": 70000}}}, "a port out of range"),
    ({"gpuWorker": {"enabled": "yes"}}, "a non-boolean switch"),
    ({"workers": {}}, "an unknown key"),
]:
    try:
        helm.Chart.load(str(CHART)).validate_schema(bad)
        check(False, f"values schema accepts {why}")
    except helm.HelmError:
        pass

if failures:
    print(f"{len(failures)} chart test(s) failed")
    sys.exit(1)
print("helm chart: lint, render (defaults, GPU), kubernetes-validate and template tests passed")
