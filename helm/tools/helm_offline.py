"""`helm lint` and `helm template` without a helm binary or a cluster, through helm-sdkpy.

helm-sdkpy bundles Helm's own Go library (Helm v4) but offers install, not template. So
`template` runs a real `helm install` (values checked against values.schema.json, templates
rendered, every object mapped through the API's discovery) into Helm's in-memory release
store, against a stand-in Kubernetes API on loopback that serves discovery for the kinds the
chart renders and accepts whatever it is sent. What it was sent is what `helm install` would
send a cluster; nothing checks it the way an API server would (the tests do that).

Runs on Python >= 3.12 in its own environment (`make helm-env`: .venv-helm), with the
standard library and helm-sdkpy only; values come in as JSON.

    helm_offline.py lint CHART [--values-json FILE]        Helm's lint result, as JSON
    helm_offline.py template CHART [--values-json FILE] [--release NAME] [--namespace NS]
                    [--api-group GROUP/VERSION ...]        the rendered manifest (YAML)
    helm_offline.py batch JOBS.json                        many of those in one process

A batch job is {"action": "lint"|"template", "chart": ..., "values": {...}, "release": ...,
"namespace": ..., "api_groups": [...]}; the batch prints a JSON list with, per job, "result"
(the lint result or the manifest) or "error" (Helm's message). `lint` with values lints a copy
of the chart whose values.yaml is those values (helm-sdkpy's lint reads the chart's own), so
give whole values there; `template` takes overrides, as `helm install -f` does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

KUBE_VERSION = ("1", "33")

# group/version -> (kind, plural) the stand-in API serves; all namespaced but Namespace.
# OPTIONAL groups are CRDs a cluster may lack, served only when asked for.
ALWAYS = {
    "v1": [
        ("ConfigMap", "configmaps"),
        ("Secret", "secrets"),
        ("Service", "services"),
        ("ServiceAccount", "serviceaccounts"),
        ("PersistentVolumeClaim", "persistentvolumeclaims"),
        ("Namespace", "namespaces"),
    ],
    "apps/v1": [("Deployment", "deployments"), ("StatefulSet", "statefulsets")],
    "batch/v1": [("Job", "jobs")],
    "policy/v1": [("PodDisruptionBudget", "poddisruptionbudgets")],
    "networking.k8s.io/v1": [("NetworkPolicy", "networkpolicies"), ("Ingress", "ingresses")],
    "ray.io/v1": [("RayService", "rayservices"), ("RayCluster", "rayclusters")],
}
OPTIONAL = {
    "monitoring.coreos.com/v1": [
        ("ServiceMonitor", "servicemonitors"),
        ("PodMonitor", "podmonitors"),
        ("PrometheusRule", "prometheusrules"),
    ],
    "gateway.networking.k8s.io/v1": [("GRPCRoute", "grpcroutes"), ("Gateway", "gateways")],
}


def _discovery(catalog: dict[str, list[tuple[str, str]]]) -> dict[str, dict]:
    """Path -> JSON body of the API's discovery documents."""
    major, minor = KUBE_VERSION
    docs: dict[str, dict] = {
        "/version": {"major": major, "minor": minor, "gitVersion": f"v{major}.{minor}.0"},
        "/api": {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "x"}],
        },
    }
    groups = []
    for gv, kinds in catalog.items():
        group, _, version = gv.rpartition("/")
        resources = [
            {
                "name": plural,
                "singularName": kind.lower(),
                "namespaced": kind != "Namespace",
                "kind": kind,
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            }
            for kind, plural in kinds
        ]
        path = "/api/v1" if gv == "v1" else f"/apis/{gv}"
        docs[path] = {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": gv,
            "resources": resources,
        }
        if group:
            entry = {"groupVersion": gv, "version": version}
            groups.append({"name": group, "versions": [entry], "preferredVersion": entry})
    docs["/apis"] = {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
    return docs


class _StandInAPI(BaseHTTPRequestHandler):
    docs: dict[str, dict] = {}

    def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in self.docs:
            self._send(200, json.dumps(self.docs[path]).encode())
        else:  # nothing exists yet: Helm's ownership check finds no conflict
            status = {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                      "reason": "NotFound", "code": 404, "message": f"{path} not found"}  # fmt: skip
            self._send(404, json.dumps(status).encode())

    def do_POST(self) -> None:  # created: the object comes back as sent
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._send(201, body, self.headers.get("Content-Type", "application/json"))

    def log_message(self, *args) -> None:
        pass


def _kubeconfig(port: int, namespace: str) -> str:
    cluster = {"name": "stand-in", "cluster": {"server": f"http://127.0.0.1:{port}"}}
    context = {"cluster": "stand-in", "user": "stand-in", "namespace": namespace}
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [cluster],
            "users": [{"name": "stand-in", "user": {}}],
            "contexts": [{"name": "stand-in", "context": context}],
            "current-context": "stand-in",
        }
    )


def template(chart: str, values: dict, release: str, namespace: str, groups: list[str]) -> str:
    import helm_sdkpy

    unknown = sorted(set(groups) - set(OPTIONAL))
    if unknown:
        raise ValueError(f"unknown API group {unknown}; known: {sorted(OPTIONAL)}")
    catalog = {**ALWAYS, **{gv: OPTIONAL[gv] for gv in groups}}
    handler = type("Handler", (_StandInAPI,), {"docs": _discovery(catalog)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with tempfile.TemporaryDirectory(dir=os.environ["HOME"]) as tmp:
            kubeconfig = Path(tmp) / "kubeconfig"
            kubeconfig.write_text(_kubeconfig(server.server_address[1], namespace))
            # A Configuration of its own, so a release store of its own: names never clash.
            config = helm_sdkpy.Configuration(namespace=namespace, kubeconfig=str(kubeconfig))
            install = helm_sdkpy.Install(config)
            result = asyncio.run(install.run(release, chart, values=values, wait=False))
    finally:
        server.shutdown()
        server.server_close()
    return result["manifest"]


def lint(chart: str, values: dict | None) -> dict:
    import helm_sdkpy

    with tempfile.TemporaryDirectory(dir=os.environ["HOME"]) as tmp:
        if values is not None:
            copy = Path(tmp) / Path(chart).resolve().name
            shutil.copytree(chart, copy)
            (copy / "values.yaml").write_text(json.dumps(values, indent=1))  # JSON is YAML
            chart = str(copy)
        return asyncio.run(helm_sdkpy.Lint(helm_sdkpy.Configuration()).run(chart))


def run_job(job: dict) -> dict:
    try:
        if job["action"] == "lint":
            return {"result": lint(job["chart"], job.get("values"))}
        manifest = template(
            job["chart"],
            job.get("values") or {},
            job.get("release", "ragtune"),
            job.get("namespace", "ragtune"),
            job.get("api_groups", []),
        )
        return {"result": manifest}
    except Exception as err:  # Helm's message is what matters; no Python traceback
        return {"error": str(err)}


def _isolated(argv: list[str]) -> int:
    """Run this script again in a fresh process with Helm's environment: Go reads the
    environment once, when the library loads, so it cannot be set from inside."""
    with tempfile.TemporaryDirectory(prefix="helm-offline-") as home:
        env = dict(
            os.environ,
            HELM_DRIVER="memory",  # releases live in that process only
            HOME=home,  # discovery cache, kubeconfig, Helm's folders: nothing outside
            HELM_CACHE_HOME=f"{home}/cache",
            HELM_CONFIG_HOME=f"{home}/config",
            HELM_DATA_HOME=f"{home}/data",
        )
        env.pop("KUBECONFIG", None)
        return subprocess.run([sys.executable, __file__, *argv], env=env).returncode


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["lint", "template", "batch"])
    parser.add_argument("target", help="chart folder; for batch, the JSON file of jobs")
    parser.add_argument("--values-json", help="file of values (JSON)")
    parser.add_argument("--release", default="ragtune")
    parser.add_argument("--namespace", default="ragtune")
    parser.add_argument(
        "--api-group",
        action="append",
        default=[],
        help=f"optional API group/version the stand-in cluster serves: {sorted(OPTIONAL)}",
    )
    args = parser.parse_args(argv)
    if os.environ.get("HELM_DRIVER") != "memory":
        return _isolated(argv)
    if args.action == "batch":
        jobs = json.loads(Path(args.target).read_text())
        print(json.dumps([run_job(job) for job in jobs]))
        return 0
    job = {
        "action": args.action,
        "chart": args.target,
        "values": json.loads(Path(args.values_json).read_text()) if args.values_json else None,
        "release": args.release,
        "namespace": args.namespace,
        "api_groups": args.api_group,
    }
    outcome = run_job(job)
    if "error" in outcome:
        print(f"helm {args.action}: {outcome['error']}", file=sys.stderr)
        return 1
    result = outcome["result"]
    print(json.dumps(result, indent=1) if args.action == "lint" else result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
