#!/usr/bin/env bash
# End-to-end test of the operator on a real Kubernetes cluster (kind), for machines with
# Docker. Opt-in: CI does not run it (the test suite covers the operator against an API
# emulator instead; see the README, "Run on Kubernetes").
#
#   scripts/e2e-kind.sh                 # create a cluster, test, delete the cluster
#   KEEP_CLUSTER=1 scripts/e2e-kind.sh  # keep the cluster afterwards for a look around
#
# Steps: create a kind cluster; build the project image (flow + operator) and a pipeline
# image FROM it with a small module; load both into kind; helm install the chart; run
# PostgreSQL in the cluster with a seeded source table; create the connection Secrets;
# apply the output of `flow export-k8s`; wait for the first scheduled run (the pipeline
# runs every minute); print `kubectl get emtxpipelines -o wide`; fail unless the status
# shows a successful run and the target table holds the rows.
#
# Needs: docker, kind, kubectl, helm (v3) on PATH. Environment knobs: CLUSTER_NAME
# (default ematix-e2e), NAMESPACE (default ematix-e2e), TIMEOUT seconds for the run
# (default 420), KIND_NODE_IMAGE (kind's default if unset).
set -euo pipefail

cd "$(dirname "$0")/.."
CLUSTER_NAME="${CLUSTER_NAME:-ematix-e2e}"
NAMESPACE="${NAMESPACE:-ematix-e2e}"
OPERATOR_NAMESPACE="ematix-system"
TIMEOUT="${TIMEOUT:-420}"
IMAGE="ematix-flow:e2e"
PIPELINE_IMAGE="ematix-flow-pipelines:e2e"
PG_PASSWORD="e2e-only-password"
WORK="$(mktemp -d)"

log() { printf '\n==> %s\n' "$*"; }

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "error: $tool is not on PATH" >&2; exit 2; }
done
docker info >/dev/null 2>&1 || { echo "error: no Docker engine is reachable" >&2; exit 2; }

diagnose() {
  log "diagnostics"
  kubectl get emtxpipelines,cronjobs,jobs,pods -n "$NAMESPACE" -o wide || true
  kubectl describe emtxpipelines -n "$NAMESPACE" || true
  kubectl logs -n "$NAMESPACE" -l app.kubernetes.io/component=pipeline --tail=100 || true
  kubectl logs -n "$OPERATOR_NAMESPACE" -l app.kubernetes.io/component=operator --tail=200 || true
}

cleanup() {
  status=$?
  if [[ $status -ne 0 ]]; then diagnose; fi
  rm -rf "$WORK"
  if [[ "${KEEP_CLUSTER:-0}" != "1" ]]; then
    kind delete cluster --name "$CLUSTER_NAME" >/dev/null 2>&1 || true
  else
    echo "cluster kept: kind-$CLUSTER_NAME (delete with: kind delete cluster --name $CLUSTER_NAME)"
  fi
  exit $status
}
trap cleanup EXIT

log "kind cluster $CLUSTER_NAME"
if ! kind get clusters | grep -qx "$CLUSTER_NAME"; then
  kind create cluster --name "$CLUSTER_NAME" ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} --wait 120s
fi
kubectl config use-context "kind-$CLUSTER_NAME" >/dev/null

log "images: $IMAGE (flow + operator) and $PIPELINE_IMAGE (FROM it, with the pipeline module)"
docker build -t "$IMAGE" .
cat >"$WORK/e2e_pipelines.py" <<'PY'
"""The end-to-end pipeline: copy public.e2e_source into the warehouse, every minute."""

from typing import Annotated

from ematix_flow import ematix, pk
from ematix_flow.types import BigInt, Text


@ematix.table(schema="public", name="e2e_target")
class E2ETarget:
    id: Annotated[BigInt, pk()]
    name: Text | None


@ematix.pipeline(
    target=E2ETarget,
    schedule="* * * * *",
    mode="merge",
    source_connection="source",
    target_connection="warehouse",
)
def e2e_sync(src_conn, tgt_conn):
    return "SELECT id, name FROM public.e2e_source"
PY
cat >"$WORK/Dockerfile" <<DOCKER
FROM $IMAGE
COPY e2e_pipelines.py /app/
DOCKER
docker build -t "$PIPELINE_IMAGE" "$WORK"
kind load docker-image --name "$CLUSTER_NAME" "$IMAGE" "$PIPELINE_IMAGE"

log "operator: helm install charts/ematix-flow-operator"
helm upgrade --install ematix-flow charts/ematix-flow-operator \
  --namespace "$OPERATOR_NAMESPACE" --create-namespace \
  --set image.repository=ematix-flow --set image.tag=e2e --set image.pullPolicy=Never \
  --wait --timeout 180s

log "PostgreSQL in namespace $NAMESPACE"
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -n "$NAMESPACE" -f - <<YAML
apiVersion: apps/v1
kind: Deployment
metadata:
  name: postgres
spec:
  replicas: 1
  selector:
    matchLabels: {app: postgres}
  template:
    metadata:
      labels: {app: postgres}
    spec:
      containers:
        - name: postgres
          image: postgres:16
          env:
            - {name: POSTGRES_PASSWORD, value: "$PG_PASSWORD"}
          ports:
            - containerPort: 5432
          readinessProbe:
            exec:
              command: ["pg_isready", "-U", "postgres"]
            periodSeconds: 2
---
apiVersion: v1
kind: Service
metadata:
  name: postgres
spec:
  selector: {app: postgres}
  ports:
    - port: 5432
YAML
kubectl rollout status -n "$NAMESPACE" deploy/postgres --timeout=180s
psql() { kubectl exec -n "$NAMESPACE" deploy/postgres -- psql -U postgres -v ON_ERROR_STOP=1 "$@"; }
psql -c "CREATE DATABASE warehouse" || true
psql -d postgres -c "CREATE TABLE IF NOT EXISTS public.e2e_source (id bigint PRIMARY KEY, name text);
  INSERT INTO public.e2e_source VALUES (1, 'ada'), (2, 'grace'), (3, 'edsger')
  ON CONFLICT DO NOTHING"

log "connection Secrets (the names flow export-k8s lists)"
host="postgres.$NAMESPACE.svc.cluster.local"
for pair in "source:postgres" "warehouse:warehouse"; do
  conn="${pair%%:*}" db="${pair##*:}"
  kubectl create secret generic "ematix-flow-$conn" -n "$NAMESPACE" \
    --from-literal=dsn="postgresql://postgres:$PG_PASSWORD@$host:5432/$db" \
    --dry-run=client -o yaml | kubectl apply -f -
done

log "flow export-k8s | kubectl apply -f -"
docker run --rm "$PIPELINE_IMAGE" flow export-k8s --module e2e_pipelines \
  --image "$PIPELINE_IMAGE" --namespace "$NAMESPACE" --output - >"$WORK/pipelines.yaml"
cat "$WORK/pipelines.yaml"
kubectl apply -f "$WORK/pipelines.yaml"
name="$(kubectl get -f "$WORK/pipelines.yaml" -o name | head -n 1)"
name="${name##*/}"

log "waiting up to ${TIMEOUT}s for the first scheduled run of $name"
deadline=$((SECONDS + TIMEOUT))
phase=""
while ((SECONDS < deadline)); do
  phase="$(kubectl get emtxpipelines -n "$NAMESPACE" "$name" -o jsonpath='{.status.lastRun.phase}')"
  [[ "$phase" == "Succeeded" || "$phase" == "Failed" ]] && break
  sleep 5
done

log "kubectl get emtxpipelines -o wide"
kubectl get emtxpipelines -n "$NAMESPACE" -o wide
kubectl get emtxpipelines -n "$NAMESPACE" "$name" -o yaml | sed -n '/^status:/,$p'

succeeded="$(kubectl get emtxpipelines -n "$NAMESPACE" "$name" \
  -o jsonpath='{.status.conditions[?(@.type=="LastRunSucceeded")].status}')"
ready="$(kubectl get emtxpipelines -n "$NAMESPACE" "$name" \
  -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')"
if [[ "$phase" != "Succeeded" || "$succeeded" != "True" || "$ready" != "True" ]]; then
  echo "FAIL: lastRun.phase=$phase LastRunSucceeded=$succeeded Ready=$ready" >&2
  exit 1
fi
rows="$(psql -d warehouse -tA -c "SELECT count(*) FROM public.e2e_target")"
if [[ "$rows" != "3" ]]; then
  echo "FAIL: the target table holds $rows rows, expected 3" >&2
  exit 1
fi
log "PASS: a scheduled run succeeded, the status shows it, and the warehouse holds 3 rows"
