"""The Helm chart: rendered by Helm's engine, validated against the Kubernetes schemas."""

from __future__ import annotations

import copy
import json

import helm_python
import pytest
import yaml

from tests.deploy import settings_catalog
from tests.deploy.chart import (CHART_DIR, NAMESPACE, ROOT, by_kind, full_values, kubernetes_errors,
                                one, pod_specs, render)

PROCESSOR = "rel-tickpipe-processor"


@pytest.fixture(scope="module")
def default_manifests(chart):
    return render(chart)


@pytest.fixture(scope="module")
def full_manifests(chart):
    return render(chart, full_values())


def test_default_values_render_valid_kubernetes_manifests(default_manifests):
    kinds = sorted(m["kind"] for m in default_manifests)
    assert kinds == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Job", "NetworkPolicy",
                     "PodDisruptionBudget", "ServiceAccount"]
    assert kubernetes_errors(default_manifests) == []


def test_full_values_render_valid_kubernetes_manifests(full_manifests):
    assert kubernetes_errors(full_manifests) == []
    assert {m["kind"] for m in full_manifests} >= {"ScaledObject", "PodMonitor", "PrometheusRule",
                                                   "PodDisruptionBudget", "NetworkPolicy"}


def test_the_validator_rejects_a_broken_manifest(default_manifests):
    broken = copy.deepcopy(one(default_manifests, "Deployment", PROCESSOR))
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "ops"
    assert kubernetes_errors([broken])


def test_chart_lints_clean_in_strict_mode():
    for values in ({}, full_values()):
        report = helm_python.lint(CHART_DIR, values, strict=True)
        assert report["errors"] == []
        assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_one_producer_deployment_per_connection_one_replica_recreate(full_manifests):
    producers = [m for m in by_kind(full_manifests, "Deployment")
                 if m["metadata"]["labels"]["app.kubernetes.io/component"] == "producer"]
    assert [m["metadata"]["name"] for m in producers] == [
        "rel-tickpipe-producer-alpaca-iex", "rel-tickpipe-producer-coinbase-exchange", "rel-tickpipe-producer-coinbase"]
    for deployment in producers:
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    container = producers[1]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["produce", "coinbase-exchange", "--connection-id", "coinbase-exchange"]
    assert {"secretRef": {"name": "coinbase-exchange-credentials"}} in container["envFrom"]
    assert container["resources"]["limits"]["memory"] == "1Gi"


def test_producer_selectors_do_not_overlap(full_manifests):
    selectors = [json.dumps(m["spec"]["selector"], sort_keys=True) for m in by_kind(full_manifests, "Deployment")]
    assert len(set(selectors)) == len(selectors)


def test_processor_scales_with_a_cpu_hpa_by_default(default_manifests):
    hpa = one(default_manifests, "HorizontalPodAutoscaler", PROCESSOR)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": PROCESSOR}
    assert "replicas" not in one(default_manifests, "Deployment", PROCESSOR)["spec"]  # the HPA owns it


def test_keda_scaled_object_replaces_the_hpa(full_manifests):
    assert by_kind(full_manifests, "HorizontalPodAutoscaler") == []
    scaled = one(full_manifests, "ScaledObject", PROCESSOR)
    assert scaled["spec"]["scaleTargetRef"]["name"] == PROCESSOR
    assert scaled["spec"]["maxReplicaCount"] == 42
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == "tickpipe-processor"
    assert trigger["metadata"]["bootstrapServers"] == "kafka-0.kafka:9093,kafka-1.kafka:9093"
    assert trigger["metadata"]["allowIdleConsumers"] == "false"
    assert trigger["authenticationRef"] == {"name": "kafka-sasl-auth"}
    processor_env = one(full_manifests, "Deployment", PROCESSOR)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "TICKPIPE_PROCESSOR_APP_ID", "value": "tickpipe-processor"} in processor_env


def test_fixed_replicas_without_autoscaling(chart):
    manifests = render(chart, {"processor": {"replicas": 3, "autoscaling": {"enabled": False}}})
    assert one(manifests, "Deployment", PROCESSOR)["spec"]["replicas"] == 3
    assert by_kind(manifests, "HorizontalPodAutoscaler") == []


def test_pdb_covers_the_processors_only(full_manifests):
    (pdb,) = by_kind(full_manifests, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 2
    processor_labels = one(full_manifests, "Deployment", PROCESSOR)["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= processor_labels.items()


def test_topics_job_is_a_pre_install_and_pre_upgrade_hook_with_the_configmap_settings(full_manifests):
    job = one(full_manifests, "Job", "rel-tickpipe-topics")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["topics", "create"]
    configmap = one(full_manifests, "ConfigMap", "rel-tickpipe")
    assert {e["name"]: e["value"] for e in container["env"]} == configmap["data"]
    assert "envFrom" not in container  # the ConfigMap does not exist yet when a pre-install hook runs
    assert "serviceAccountName" not in job["spec"]["template"]["spec"]


def test_configmap_maps_values_to_tickpipe_variables(full_manifests):
    data = one(full_manifests, "ConfigMap", "rel-tickpipe")["data"]
    assert data["TICKPIPE_TOPICS_RAW_PARTITIONS"] == "6"
    assert data["TICKPIPE_PRODUCER_STALE_AFTER_S"] == "30"
    assert data["TICKPIPE_KAFKA_TOPIC_PREFIX"] == "prod."
    assert data["TICKPIPE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert data["TICKPIPE_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert data["TICKPIPE_OPS_PORT"] == "9400"


def test_every_variable_the_chart_sets_is_a_tickpipe_setting(default_manifests, full_manifests):
    known = settings_catalog.variables()
    for manifests in (default_manifests, full_manifests):
        names = set(one(manifests, "ConfigMap", "rel-tickpipe")["data"])
        for _name, spec in pod_specs(manifests):
            names |= {e["name"] for e in spec["containers"][0].get("env", [])}
        assert sorted(names - set(known)) == []


def test_kafka_tls_and_sasl_files_come_from_secrets(full_manifests):
    data = one(full_manifests, "ConfigMap", "rel-tickpipe")["data"]
    for name, spec in pod_specs(full_manifests):
        mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
        secrets = {v["name"]: v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
        for variable, secret in (("TICKPIPE_KAFKA_SSL_CAFILE", "kafka-ca"),
                                 ("TICKPIPE_KAFKA_SSL_CERTFILE", "tickpipe-kafka-client"),
                                 ("TICKPIPE_KAFKA_SSL_KEYFILE", "tickpipe-kafka-client"),
                                 ("TICKPIPE_KAFKA_SASL_PASSWORD_FILE", "tickpipe-kafka-sasl")):
            directory, _, key = data[variable].rpartition("/")
            assert secrets[mounts[directory]] == secret, (name, variable)
            items = next(v["secret"]["items"] for v in spec["volumes"] if v["name"] == mounts[directory])
            assert key in {i["path"] for i in items}, (name, variable)


def test_plaintext_mounts_no_kafka_secrets(default_manifests):
    data = one(default_manifests, "ConfigMap", "rel-tickpipe")["data"]
    assert not [k for k in data if k.startswith(("TICKPIPE_KAFKA_SSL", "TICKPIPE_KAFKA_SASL"))]
    for _name, spec in pod_specs(default_manifests):
        assert [v["name"] for v in spec["volumes"]] == ["tmp", "workdir"]


def test_long_running_containers_probe_healthz_and_readyz_on_the_ops_port(full_manifests):
    for deployment in by_kind(full_manifests, "Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["ports"] == [{"name": "ops", "containerPort": 9400, "protocol": "TCP"}]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}
        assert container["resources"]["requests"] and container["resources"]["limits"]


def test_every_pod_is_non_root_with_a_read_only_root_filesystem(full_manifests):
    for name, spec in pod_specs(full_manifests):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["capabilities"] == {"drop": ["ALL"]}, name
            writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
            assert writable == {"/tmp", "/var/lib/tickpipe"}, name


def test_kubernetes_waits_longer_than_tickpipe_flushes(chart):
    values = chart.merge_values({})
    for workload in ("producers", "processor"):
        assert values[workload]["terminationGracePeriodSeconds"] > values["config"]["ops"]["shutdown_grace_s"]


def test_processor_credentials_come_from_its_secret(full_manifests):
    container = one(full_manifests, "Deployment", PROCESSOR)["spec"]["template"]["spec"]["containers"][0]
    assert {"secretRef": {"name": "tickpipe-schema-registry"}} in container["envFrom"]


def test_the_chart_holds_no_secret(full_manifests):
    assert by_kind(full_manifests, "Secret") == []
    for _name, spec in pod_specs(full_manifests):
        for env in spec["containers"][0].get("env", []):
            assert not any(word in env["name"] for word in ("PASSWORD", "SECRET", "TOKEN")) \
                or env["name"].endswith("_FILE"), env


def test_metrics_service_and_monitors_select_the_long_running_pods(chart, full_manifests):
    with_service_monitor = render(chart, {**full_values(), "monitoring": {
        "podMonitor": {"enabled": False}, "serviceMonitor": {"enabled": True, "interval": "30s"}}})
    assert kubernetes_errors(with_service_monitor) == []
    service = one(with_service_monitor, "Service", "rel-tickpipe-metrics")
    pod_monitor = one(full_manifests, "PodMonitor", "rel-tickpipe")
    for deployment in by_kind(full_manifests, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    job_labels = one(full_manifests, "Job", "rel-tickpipe-topics")["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= job_labels.items()
    service_monitor = one(with_service_monitor, "ServiceMonitor", "rel-tickpipe")
    assert service_monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service_monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert service_monitor["spec"]["endpoints"][0]["interval"] == "30s"
    assert pod_monitor["metadata"]["labels"]["release"] == "prometheus"


def test_prometheus_rule_and_dashboard_ship_the_files_compose_uses(full_manifests):
    rule = one(full_manifests, "PrometheusRule", "rel-tickpipe")
    assert rule["spec"] == yaml.safe_load((ROOT / "deploy/prometheus/alert-rules.yml").read_text())
    dashboard = one(full_manifests, "ConfigMap", "rel-tickpipe-dashboard")
    assert json.loads(dashboard["data"]["tickpipe.json"]) == json.loads(
        (ROOT / "deploy/grafana/dashboards/tickpipe.json").read_text())


def test_network_policies_open_feeds_to_producers_only(full_manifests):
    base = one(full_manifests, "NetworkPolicy", "rel-tickpipe")
    assert base["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert base["spec"]["ingress"][0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    egress_ports = [p["port"] for rule in base["spec"]["egress"] for p in rule["ports"]]
    assert 443 not in egress_ports and {53, 9092, 9093, 8081} <= set(egress_ports)
    feeds = one(full_manifests, "NetworkPolicy", "rel-tickpipe-producer-feeds")
    assert feeds["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "producer"
    assert feeds["spec"]["egress"] == [{"ports": [{"port": 443, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]


def test_namespace_is_the_release_namespace(full_manifests):
    assert NAMESPACE  # rendered manifests carry no namespace of their own: helm install -n decides
    assert all("namespace" not in m["metadata"] for m in full_manifests)


def test_default_and_full_values_pass_the_schema(chart):
    chart.validate_schema({})
    chart.validate_schema(full_values())


@pytest.mark.parametrize("values, complaint", [
    ({"securityContext": {"runAsNonRoot": False, "allowPrivilegeEscalation": False,
                          "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}}, "runAsNonRoot"),
    ({"securityContext": {"readOnlyRootFilesystem": False}}, "readOnlyRootFilesystem"),
    ({"producers": {"connections": [{"name": "x", "provider": "bloomberg"}]}}, "provider"),
    ({"producers": {"connections": [{"name": "Alpaca_1", "provider": "alpaca"}]}}, "name"),
    ({"producers": {"connections": [{"name": "a", "provider": "alpaca", "env": {"TICKPIPE_ALPACA_SECRET_KEY": "x"}}]}}, "TICKPIPE_ALPACA_SECRET_KEY"),
    ({"config": {"alpaca": {"secret_key": "hunter2"}}}, "secret_key"),
    ({"config": {"kafka": {"bootstrap_servers": "x:9092"}}}, "kafka"),
    ({"kafka": {"securityProtocol": "SASL_SSL"}}, "mechanism"),
    ({"kafka": {"securityProtocol": "TLS"}}, "securityProtocol"),
    ({"processor": {"replica": 2}}, "replica"),
    ({"opsPort": 70000}, "opsPort"),
    ({"monitoring": {"podMonitor": {"enabled": True}, "serviceMonitor": {"enabled": True}}}, "monitoring"),
])
def test_schema_rejects_broken_values(chart, values, complaint):
    with pytest.raises(helm_python.HelmValuesError, match=complaint):
        chart.validate_schema(values)
    with pytest.raises(helm_python.HelmValuesError):
        render(chart, values)  # an install or upgrade refuses them the same way


def test_oauthbearer_token_is_mounted_from_its_secret(chart):
    manifests = render(chart, {"kafka": {"securityProtocol": "SASL_SSL", "sasl": {
        "mechanism": "OAUTHBEARER", "oauthTokenSecret": {"name": "kafka-oauth", "key": "token"}}}})
    data = one(manifests, "ConfigMap", "rel-tickpipe")["data"]
    assert data["TICKPIPE_KAFKA_SASL_OAUTH_TOKEN_FILE"] == "/etc/tickpipe/kafka-oauth/token"
    assert "TICKPIPE_KAFKA_SASL_PASSWORD_FILE" not in data
    spec = one(manifests, "Deployment", PROCESSOR)["spec"]["template"]["spec"]
    assert {"name": "kafka-oauth", "mountPath": "/etc/tickpipe/kafka-oauth", "readOnly": True} in spec["containers"][0]["volumeMounts"]
    assert kubernetes_errors(manifests) == []


def test_schema_knows_exactly_the_providers_tickpipe_knows(chart):
    from tickpipe.providers import PROVIDERS

    connection = chart.schema["properties"]["producers"]["properties"]["connections"]["items"]
    assert connection["properties"]["provider"]["enum"] == list(PROVIDERS)
