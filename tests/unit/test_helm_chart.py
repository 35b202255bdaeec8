"""The Helm chart (helm/ragtune): Helm's own lint and render, every rendered object validated
offline (built-in kinds by kubernetes-validate, custom resources by the CRD schemas in
../shared/k8s-schemas, serveConfigV2 by Ray's ServeDeploySchema and each service's config),
the values schema, what the objects say, and that nothing copied or generated has drifted.
All renders run in one Helm process (one session fixture)."""

from __future__ import annotations

import json

import jsonschema
import kubernetes_validate
import pytest
import yaml

from ragtune.common.services import HTTP_APPS, SERVICES, app_by_name, by_name
from ragtune.deployment import DEV_MODEL, validate
from ragtune.local import INGRESS_MODES
from tests.conftest import REPO
from tests.helm_chart import (
    DEFAULTS,
    GATEWAY_API,
    MONITORING,
    example_values,
    helm_batch,
    merged,
    objects,
    one,
    serve_config,
)

SCHEMAS = REPO.parent / "shared" / "k8s-schemas"
CRD_SCHEMAS = {
    "RayService": "rayservice-ray-v1.json",
    "PodMonitor": "podmonitor-monitoring-v1.json",
    "ServiceMonitor": "servicemonitor-monitoring-v1.json",
    "PrometheusRule": "prometheusrule-monitoring-v1.json",
}
KUBE_VERSIONS = ("1.29.0", "1.37.0")  # the chart's oldest supported and the newest schemas

EVERYTHING = {
    "serve": {"ingress": "proxy", "exposeInternalServices": True},
    "services": {
        "embedding": {
            "autoscaling": {
                "enabled": True,
                "minReplicas": 2,
                "maxReplicas": 6,
                "targetOngoingRequests": 48,
            }
        },
        "retrieval": {
            "maxOngoingRequests": 16,
            "cpus": 1.5,
            "memoryBytes": 8589934592,
            "args": {"tail_interval_s": 0.5},
        },
        "rerank": {"enabled": False},
        "generation": {"labelSelector": {"pool": "cpu"}, "args": {"model_path": "/m/x"}},
    },
    "gateway": {
        "grpcRoute": {"enabled": True, "parentRefs": [{"name": "public-gw"}]},
        "ingress": {"enabled": True, "className": "nginx"},
    },
    "models": {
        "source": "objectStorage",
        "objectStorage": {"uri": "s3://b/models", "credentialsSecret": "s3-creds"},
    },
    "database": {"existingSecret": "db-creds"},
    "apiKeys": {"existingSecret": "keys-v2", "revision": "2"},
    "pricing": {"workers": {"cpu": {"kind": "cpu", "usd_per_hour": 0.05}}},
    "telemetry": {"tracing": "otlp", "otlpEndpoint": "otel:4317", "samplingRatio": 0.5},
    "monitoring": {"podMonitor": {"enabled": False}, "serviceMonitor": {"enabled": True}},
    "networkPolicy": {
        "gatewayFrom": [{"namespaceSelector": {"matchLabels": {"team": "apps"}}}],
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"m": "1"}}}],
    },
    "extraObjects": [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "{{ .Release.Name }}-extra"},
            "data": {"a": "b"},
        }
    ],
}
INCREMENTAL = {
    "type": "NewClusterWithIncrementalUpgrade",
    "clusterUpgradeOptions": {
        "gatewayClassName": "istio",
        "stepSizePercent": 10,
        "intervalSeconds": 30,
        "maxSurgePercent": 20,
    },
}
# name -> (values given with -f, optional API groups the cluster serves)
CASES = {
    "default": ({}, [MONITORING]),
    "cpu": (example_values("cpu"), [MONITORING]),
    "gpu": (example_values("gpu"), [MONITORING]),
    "no-crds": ({}, []),
    "no-openai": ({"services": {"openai": {"enabled": False}}}, []),
    "everything": (EVERYTHING, [MONITORING, GATEWAY_API]),
    "incremental": ({"upgradeStrategy": INCREMENTAL}, []),
    "strategy-none": ({"upgradeStrategy": {"type": "None"}}, []),
}
# name -> (values, what Helm's message must say)
REFUSED = {
    "negative replicas": ({"services": {"gateway": {"replicas": -1}}}, "minimum: got -1, want 0"),
    "unknown key": ({"services": {"gateway": {"replica": 2}}}, "'replica' not allowed"),
    "wrong type": ({"gateway": {"port": "9000"}}, "got string, want integer"),
    "no database Secret": ({"database": {"existingSecret": ""}}, "database.existingSecret"),
    "sqlite across pods": ({"database": {"type": "sqlite"}}, "database.type sqlite"),
    "GPUs without a GPU group": ({"services": {"generation": {"gpus": 1}}}, "workers.gpu.enabled"),
    "GRPCRoute without the CRDs": (
        {"gateway": {"grpcRoute": {"enabled": True, "parentRefs": [{"name": "gw"}]}}},
        "Gateway API CRDs",
    ),
    "object storage without a URI": ({"models": {"source": "objectStorage"}}, "objectStorage.uri"),
}
LINTED = {"default": None, "cpu": "cpu", "gpu": "gpu"}


@pytest.fixture(scope="session")
def helm():
    """Every lint and render of this module, from one Helm process."""
    jobs = [{"action": "template", "values": v, "api_groups": g} for v, g in CASES.values()]
    jobs += [{"action": "template", "values": v} for v, _ in REFUSED.values()]
    jobs += [
        {"action": "lint", "values": None if e is None else merged(DEFAULTS, example_values(e))}
        for e in LINTED.values()
    ]
    answers = iter(helm_batch(jobs))
    rendered = {}
    for name in CASES:
        answer = next(answers)
        assert "error" not in answer, f"{name}: {answer.get('error')}"
        rendered[name] = objects(answer["result"])
    refused = {name: next(answers) for name in REFUSED}
    lints = {name: next(answers) for name in LINTED}
    return rendered, refused, lints


@pytest.fixture(scope="session")
def rendered(helm):
    return helm[0]


@pytest.mark.parametrize("name", LINTED)
def test_helm_lint_passes(helm, name):
    result = helm[2][name]["result"]
    # helm-sdkpy returns each message's severity and path (its JSON loses the text); 1 is INFO.
    serious = [m["Path"] for m in result["Messages"] if m["Severity"] >= 2]
    assert result["TotalChartsLinted"] == 1 and not serious, f"lint warnings/errors in {serious}"


def validate_object(obj: dict) -> None:
    kind = obj["kind"]
    if kind in CRD_SCHEMAS:
        schema = json.loads((SCHEMAS / CRD_SCHEMAS[kind]).read_text())
        # Not jsonschema.validate: its check of the schema itself refuses the Go-style
        # `(?i)` regex prometheus-operator's CRD carries (which Python's re accepts).
        jsonschema.Draft7Validator(schema).validate(obj)
    elif kind == "GRPCRoute":  # no schema of the Gateway API's CRDs is kept here
        assert obj["apiVersion"] == "gateway.networking.k8s.io/v1"
        assert set(obj["spec"]) <= {"parentRefs", "hostnames", "rules"}
        assert obj["spec"]["parentRefs"] and obj["spec"]["rules"][0]["backendRefs"]
    else:
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("case", CASES)
def test_every_rendered_object_validates(rendered, case):
    kinds = {o["kind"] for o in rendered[case]}
    assert "RayService" in kinds
    for obj in rendered[case]:
        validate_object(obj)
    config = serve_config(rendered[case])
    validate(config)  # Ray's own ServeDeploySchema
    for app in config["applications"]:  # what each application's build(args) validates
        app_by_name(app["name"]).config_class().model_validate(app["args"])


def test_the_chart_deploys_every_service_of_the_table(rendered):
    table = (*SERVICES, *HTTP_APPS)
    assert list(DEFAULTS["services"]) == [s.name for s in table]
    apps = serve_config(rendered["default"])["applications"]
    assert [(a["name"], a["import_path"]) for a in apps] == [(s.name, s.builder) for s in table]
    openai = next(a for a in apps if a["name"] == "openai")
    assert openai["route_prefix"] == "/v1"  # OpenAI clients' base URL: http://SERVICE:PORT/v1
    no_openai = serve_config(rendered["no-openai"])["applications"]
    assert [a["name"] for a in no_openai] == [s.name for s in SERVICES]


def test_the_gateway_service_carries_the_openai_api_only_when_deployed(rendered):
    """KubeRay 1.7 builds the gateway Service from the head's container ports named "serve" or
    "serve-*", taking our definitions of those names: the HTTP port is named so only while
    the OpenAI-compatible API is deployed."""
    http = serve_config(rendered["default"])["http_options"]["port"]
    for case, served in (("default", True), ("no-openai", False)):
        spec = one(rendered[case], "RayService")["spec"]
        ports = {p["name"]: p for p in spec["serveService"]["spec"]["ports"]}
        head = spec["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
        serving = {p["name"] for p in head["ports"] if p["name"].startswith("serve")}
        assert serving == set(ports)  # each Service port names a serving container port
        assert ("serve-http" in ports) is served
        if served:
            assert ports["serve-http"]["port"] == DEFAULTS["gateway"]["httpPort"]
            assert ports["serve-http"]["targetPort"] == "serve-http"
            assert {"name": "serve-http", "containerPort": http} in head["ports"]
        else:
            assert {"name": "http", "containerPort": http} in head["ports"]


def test_head_runs_no_replicas(rendered):
    for case in CASES:
        head = one(rendered[case], "RayService")["spec"]["rayClusterConfig"]["headGroupSpec"]
        assert head["rayStartParams"]["num-cpus"] == "0"


def worker_groups(objs):
    return {
        g["groupName"]: g
        for g in one(objs, "RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    }


def test_gpu_worker_group_only_when_asked(rendered):
    for case in ("default", "cpu", "everything"):
        assert list(worker_groups(rendered[case])) == ["cpu"]
        assert "nvidia.com/gpu" not in json.dumps(rendered[case])
    gpu = worker_groups(rendered["gpu"])["gpu"]["template"]["spec"]
    resources = gpu["containers"][0]["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu[
        "tolerations"
    ]
    apps = {a["name"]: a for a in serve_config(rendered["gpu"])["applications"]}
    assert apps["generation"]["deployments"][0]["ray_actor_options"]["num_gpus"] == 0.8
    assert apps["generation"]["args"]["engine"] == "vllm"


def ray_containers(objs):
    cluster = one(objs, "RayService")["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]["template"]]
    pods += [g["template"] for g in cluster["workerGroupSpecs"]]
    return [c for p in pods for c in p["spec"]["containers"]], [p["spec"] for p in pods]


@pytest.mark.parametrize("case", CASES)
def test_secrets_are_referenced_never_inlined(rendered, case):
    values = merged(DEFAULTS, CASES[case][0])
    objs = rendered[case]
    assert not [o for o in objs if o["kind"] == "Secret"]
    containers, pods = ray_containers(objs)
    for container in containers:
        env = {e["name"]: e for e in container["env"]}
        for var in ("PGHOST", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGPORT"):
            if values["database"]["type"] == "postgresql":
                assert "value" not in env[var]
                ref = env[var]["valueFrom"]["secretKeyRef"]
                assert ref["name"] == values["database"]["existingSecret"]
            else:
                assert var not in env
    for pod in pods:
        keys = next(v for v in pod["volumes"] if v["name"] == "api-keys")
        assert keys["secret"]["secretName"] == values["apiKeys"]["existingSecret"]
    for app in serve_config(objs)["applications"]:
        url = app["args"].get("database_url", "")
        assert "@" not in url and "password" not in url.lower()


def test_network_policy_opens_only_the_gateway(rendered):
    for case in ("default", "everything", "no-openai"):
        values = merged(DEFAULTS, CASES[case][0])
        policy = one(rendered[case], "NetworkPolicy")["spec"]
        release = policy["podSelector"]["matchLabels"]
        assert policy["policyTypes"] == ["Ingress"]
        # The gateway's gRPC port, and Serve's HTTP port while it serves the OpenAI API.
        public = {values["gateway"]["port"]}
        if values["services"]["openai"]["enabled"]:
            public.add(serve_config(rendered[case])["http_options"]["port"])
        assert any({p["port"] for p in r.get("ports", [])} == public for r in policy["ingress"])
        for rule in policy["ingress"]:
            ports = {p["port"] for p in rule.get("ports", [])}
            peers = rule.get("from", [])
            if ports == public:  # the gateway: anyone, or gatewayFrom
                assert peers == values["networkPolicy"]["gatewayFrom"]
            elif not ports:  # every port, but only from the release's own pods
                assert peers == [{"podSelector": {"matchLabels": release}}]
            else:  # the operator (dashboard, proxy health) or Prometheus: named peers only
                assert peers and all("namespaceSelector" in p for p in peers)
                assert ports in ({8265, 8000}, {values["monitoring"]["metricsPort"]})
                if ports == {8265, 8000}:
                    assert (
                        peers[0]["podSelector"]["matchLabels"]
                        == values["networkPolicy"]["kuberayOperator"]["podLabels"]
                    )


@pytest.mark.parametrize(
    "case,strategy",
    [
        ("default", {"type": "NewCluster"}),
        ("incremental", INCREMENTAL),
        ("strategy-none", {"type": "None"}),
        ("gpu", {"type": "None"}),
    ],
)
def test_upgrade_strategy_is_passed_through(rendered, case, strategy):
    assert one(rendered[case], "RayService")["spec"]["upgradeStrategy"] == strategy


def test_values_shape_the_serve_config(rendered):
    default, everything = serve_config(rendered["default"]), serve_config(rendered["everything"])
    public = by_name("gateway").servicer_function
    assert default["grpc_options"]["grpc_servicer_functions"] == [public]
    assert everything["grpc_options"]["grpc_servicer_functions"] == [
        s.servicer_function for s in SERVICES
    ]
    assert default["proxy_location"] == "EveryNode" and default["http_options"]["host"] == "0.0.0.0"
    apps = {a["name"]: a for a in everything["applications"]}
    assert "rerank" not in apps and apps["gateway"]["args"]["rerank"] is False
    embedding = apps["embedding"]["deployments"][0]
    assert "num_replicas" not in embedding
    assert embedding["autoscaling_config"] == {
        "min_replicas": 2,
        "max_replicas": 6,
        "target_ongoing_requests": 48,
    }
    retrieval = apps["retrieval"]["deployments"][0]
    assert retrieval["max_ongoing_requests"] == 16
    assert retrieval["ray_actor_options"] == {"num_cpus": 1.5, "memory": 8589934592}
    assert apps["retrieval"]["args"]["tail_interval_s"] == 0.5
    generation = apps["generation"]
    assert generation["deployments"][0]["ray_actor_options"]["label_selector"] == {"pool": "cpu"}
    assert generation["args"]["model_path"] == "/m/x"  # the values' args win
    gateway = apps["gateway"]
    assert gateway["runtime_env"] == {"env_vars": {"RAGTUNE_API_KEYS_REVISION": "2"}}
    assert gateway["args"]["pricing"]["workers"]["cpu"]["usd_per_hour"] == 0.05
    assert gateway["args"]["telemetry"] == {
        "tracing": "otlp",
        "otlp_endpoint": "otel:4317",
        "sampling_ratio": 0.5,
        "capture_content": False,
    }


def test_the_cpu_example_trains_the_dev_model_it_points_at(rendered):
    apps = {a["name"]: a for a in serve_config(rendered["cpu"])["applications"]}
    mount = example_values("cpu")["models"].get("mountPath", DEFAULTS["models"]["mountPath"])
    assert apps["generation"]["args"]["model_path"] == f"{mount}/{DEV_MODEL}"
    assert apps["generation"]["args"]["adapters_dir"] == f"{mount}/adapters"
    _, pods = ray_containers(rendered["cpu"])
    for pod in pods:
        (init,) = pod["initContainers"]
        assert init["command"][:5] == ["ragtune", "--data-dir", "/tmp/ragtune", "devmodel", "--out"]


@pytest.mark.parametrize("case,mode", [("default", "haproxy"), ("everything", "proxy")])
def test_ingress_mode_sets_what_ragtune_serve_sets(rendered, case, mode):
    for container in ray_containers(rendered[case])[0]:
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert {k: env[k] for k in INGRESS_MODES[mode]} == INGRESS_MODES[mode]


def test_monitoring_objects_only_where_the_crds_exist(rendered):
    assert {"PodMonitor", "PrometheusRule"} <= {o["kind"] for o in rendered["default"]}
    assert not {"PodMonitor", "PrometheusRule"} & {o["kind"] for o in rendered["no-crds"]}
    kinds = [o["kind"] for o in rendered["everything"]]
    assert "ServiceMonitor" in kinds and "PodMonitor" not in kinds and "GRPCRoute" in kinds


def test_standard_labels_on_every_object(rendered):
    for case in CASES:
        for obj in rendered[case]:
            if obj["metadata"]["name"].endswith("-extra"):
                continue  # extraObjects are the user's own
            labels = obj["metadata"]["labels"]
            for key in ("name", "instance", "version", "managed-by", "part-of"):
                assert f"app.kubernetes.io/{key}" in labels, (case, obj["kind"], key)


def test_dashboards_and_rules_ship_as_deploy_has_them(rendered):
    deploy = REPO / "deploy"
    maps = [o for o in rendered["default"] if o["kind"] == "ConfigMap"]
    shipped = {name: text for m in maps for name, text in m["data"].items()}
    assert shipped == {p.name: p.read_text() for p in (deploy / "grafana").glob("*.json")}
    assert all(m["metadata"]["labels"]["grafana_dashboard"] == "1" for m in maps)
    rule = one(rendered["default"], "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((deploy / "prometheus/ragtune-rules.yml").read_text())


@pytest.mark.parametrize("name", REFUSED)
def test_helm_refuses_broken_values_with_a_clear_message(helm, name):
    answer = helm[1][name]
    assert "error" in answer, f"{name} rendered"
    assert REFUSED[name][1] in answer["error"], answer["error"]
