"""Assertions on what the chart renders: the things that would break a deployment silently."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from conftest import CHART_DIR, NAMESPACE, REPO, deep_merge, scenario_values

CHART = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
DEFAULTS = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
CRATE_VERSION = re.search(
    r'^version\s*=\s*"([^"]+)"', (REPO / "Cargo.toml").read_text(), re.MULTILINE
).group(1)


def admin_port(rendered) -> int:
    listen = rendered.config["ACCOUNT_SYNC_ADMIN_LISTEN"]
    return int(listen.rsplit(":", 1)[1])


def named_port(rendered, name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in rendered.container["ports"]}
    return ports[name]


def seconds(duration: str) -> int:
    m = re.fullmatch(r"(\d+)s", duration)
    assert m, duration
    return int(m.group(1))


# --- versions ------------------------------------------------------------------------------


def test_app_version_is_the_crate_version():
    assert CHART["appVersion"] == CRATE_VERSION


def test_image_tag_defaults_to_app_version(render, minimal):
    rendered = render(minimal)
    assert rendered.container["image"] == f"account-sync:{CHART['appVersion']}"
    labels = rendered.deployment["metadata"]["labels"]
    assert labels["app.kubernetes.io/version"] == CHART["appVersion"]


def test_image_tag_and_digest_override(render, minimal):
    rendered = render(deep_merge(minimal, {"image": {"repository": "r.example/a", "tag": "9.9.9"}}))
    assert rendered.container["image"] == "r.example/a:9.9.9"
    digest = "sha256:" + "a" * 64
    rendered = render(deep_merge(minimal, {"image": {"digest": digest}}))
    assert rendered.container["image"] == f"account-sync@{digest}"


# --- what renders by default ---------------------------------------------------------------


def test_minimal_renders_only_the_core(render, minimal):
    rendered = render(minimal)
    assert rendered.kinds() == ["ConfigMap", "Deployment", "Secret", "ServiceAccount"]


@pytest.mark.parametrize(
    "kind",
    ["Service", "ServiceMonitor", "PodMonitor", "PrometheusRule", "PodDisruptionBudget",
     "HorizontalPodAutoscaler", "ScaledObject", "TriggerAuthentication", "NetworkPolicy"],
)
def test_disabled_features_do_not_render(render, minimal, kind):
    assert render(minimal).maybe(kind) is None


def test_no_dashboard_configmap_by_default(render, minimal):
    rendered = render(minimal)
    assert [c["metadata"]["name"] for c in rendered.all("ConfigMap")] == ["rel-account-sync"]


# --- the worker's command and settings -----------------------------------------------------


def test_runs_the_worker(render, minimal):
    container = render(minimal).container
    assert container["args"] == ["run"]
    assert "command" not in container  # the image's ENTRYPOINT, account-sync


def test_settings_come_from_the_configmap(render, minimal):
    rendered = render(minimal)
    cm_name = rendered.one("ConfigMap")["metadata"]["name"]
    assert rendered.container["envFrom"] == [{"configMapRef": {"name": cm_name}}]
    config = rendered.config
    assert config["ACCOUNT_SYNC_BROKERS"] == "kafka-0.kafka:9092"
    assert config["ACCOUNT_SYNC_SDKAPPID"] == "1400000000"  # not 1.4e+09
    assert config["ACCOUNT_SYNC_LOG_FORMAT"] == "json"
    assert config["ACCOUNT_SYNC_CHECK_RATE"] == "100"
    assert config["ACCOUNT_SYNC_IMPORT_RATE"] == "200"
    assert config["ACCOUNT_SYNC_WINDOW_SIZE"] == "100"
    assert config["ACCOUNT_SYNC_DRAIN_TIMEOUT"] == "30s"
    assert config["ACCOUNT_SYNC_ADMIN_LISTEN"] == "0.0.0.0:9090"
    assert config["ACCOUNT_SYNC_GROUP_PROTOCOL"] == "classic"
    assert config["ACCOUNT_SYNC_INPUT_ENVELOPE"] == "none"
    assert "ACCOUNT_SYNC_API_BASE_URL" not in config
    # Every value is a string (ConfigMap data) and nothing secret is in it.
    assert all(isinstance(v, str) for v in config.values())
    assert not any("SECRET" in k or "PASSWORD" in k for k in config)
    assert "not-a-real-key" not in json.dumps(config)


def test_every_setting_is_mapped(render):
    values = scenario_values("everything")
    config = render(values).config
    assert config["ACCOUNT_SYNC_GROUP_ID"] == "account-sync-prod"
    assert config["ACCOUNT_SYNC_GROUP_PROTOCOL"] == "consumer"
    assert config["ACCOUNT_SYNC_INPUT_TOPIC"] == "signups.v1"
    assert config["ACCOUNT_SYNC_OUTCOME_TOPIC"] == "account-outcomes.v1"
    assert config["ACCOUNT_SYNC_DLQ_TOPIC"] == "account-dlq.v1"
    assert config["ACCOUNT_SYNC_IDENTIFIER"] == "sync_admin"
    assert config["ACCOUNT_SYNC_REGION"] == "tokyo"
    assert config["ACCOUNT_SYNC_REQUEST_TIMEOUT"] == "15s"
    assert config["ACCOUNT_SYNC_RETRY_MAX_ATTEMPTS"] == "5"
    assert config["ACCOUNT_SYNC_RETRY_MAX_ELAPSED"] == "2m"
    assert config["ACCOUNT_SYNC_CHECK_RATE"] == "50"
    assert config["ACCOUNT_SYNC_CHECK_BURST"] == "5"
    assert config["ACCOUNT_SYNC_IMPORT_RATE"] == "150.5"
    assert config["ACCOUNT_SYNC_IMPORT_BURST"] == "15"
    assert config["ACCOUNT_SYNC_WINDOW_SIZE"] == "50"
    assert config["ACCOUNT_SYNC_WINDOW_LINGER"] == "500ms"
    assert config["ACCOUNT_SYNC_MAX_WINDOWS_IN_FLIGHT"] == "16"
    assert config["ACCOUNT_SYNC_MAX_EVENTS_IN_FLIGHT"] == "5000"
    assert config["ACCOUNT_SYNC_MAX_IMPORTS_IN_FLIGHT"] == "128"
    assert config["ACCOUNT_SYNC_COMMIT_INTERVAL"] == "2s"
    assert config["ACCOUNT_SYNC_DRAIN_TIMEOUT"] == "45s"
    assert config["ACCOUNT_SYNC_INPUT_FORMAT"] == "json"
    assert config["ACCOUNT_SYNC_USER_ID_POINTER"] == "/user/id"
    assert config["ACCOUNT_SYNC_NICK_POINTER"] == "/user/nick"
    assert config["ACCOUNT_SYNC_FACE_URL_POINTER"] == "/user/avatar"
    assert config["ACCOUNT_SYNC_INPUT_ENVELOPE"] == "debezium"
    assert config["ACCOUNT_SYNC_LOG_LEVEL"] == "account_sync=debug,info"


def test_lifecycle_settings(render, minimal):
    plain = render(minimal).config
    assert plain["ACCOUNT_SYNC_APPLY_DELETES"] == "false"
    assert plain["ACCOUNT_SYNC_DRY_RUN"] == "false"
    assert "ACCOUNT_SYNC_EVENT_TYPE_POINTER" not in plain
    assert plain["ACCOUNT_SYNC_DELETE_RATE"] == "100"
    values = deep_merge(minimal, {"worker": {"lifecycle": {
        "eventTypePointer": "/type", "updateTypes": ["renamed", "avatar_changed"],
        "deleteTypes": ["gone"], "applyDeletes": True, "dryRun": True}},
        "rateBudget": {"deleteRate": 50, "deleteBurst": 5}})
    config = render(values).config
    assert config["ACCOUNT_SYNC_EVENT_TYPE_POINTER"] == "/type"
    assert config["ACCOUNT_SYNC_UPDATE_TYPES"] == "renamed,avatar_changed"
    assert config["ACCOUNT_SYNC_DELETE_TYPES"] == "gone"
    assert "ACCOUNT_SYNC_CREATE_TYPES" not in config
    assert config["ACCOUNT_SYNC_APPLY_DELETES"] == "true"
    assert config["ACCOUNT_SYNC_DRY_RUN"] == "true"
    assert config["ACCOUNT_SYNC_DELETE_RATE"] == "50"
    assert config["ACCOUNT_SYNC_DELETE_BURST"] == "5"


def test_api_base_url_is_passed(render, minimal):
    rendered = render(deep_merge(minimal, {"chat": {"apiBaseUrl": "https://im.example.com"}}))
    assert rendered.config["ACCOUNT_SYNC_API_BASE_URL"] == "https://im.example.com"


def test_every_variable_is_one_the_binary_reads(render):
    """Catches a renamed flag: each ACCOUNT_SYNC_* the chart sets is declared in src/."""
    known = set()
    for path in (REPO / "src").rglob("*.rs"):
        known |= set(re.findall(r'"(ACCOUNT_SYNC_[A-Z0-9_]+)"', path.read_text()))
    # Chart-internal: only referenced by $(VAR) expansion inside ACCOUNT_SYNC_KAFKA_PROPERTIES.
    internal = {"ACCOUNT_SYNC_SASL_PASSWORD", "ACCOUNT_SYNC_SASL_USERNAME"}
    for scenario in ("everything", "minimal"):
        rendered = render(scenario_values(scenario))
        used = set(rendered.config) | set(rendered.env_names)
        assert used - internal - known == set(), "unknown to the binary"
    mount_as_env = deep_merge(scenario_values("minimal"), {"secretKey": {"mountAsFile": False}})
    assert set(render(mount_as_env).env_names) <= known


def test_schema_registry_settings_and_credentials_file(render, minimal):
    values = deep_merge(minimal, {"worker": {"input": {"format": "avro", "schemaRegistry": {
        "url": "https://sr.example:8081", "existingSecret": "sr-creds", "userInfoKey": "basic"}}}})
    rendered = render(values)
    assert rendered.config["ACCOUNT_SYNC_INPUT_FORMAT"] == "avro"
    assert rendered.config["ACCOUNT_SYNC_SCHEMA_REGISTRY_URL"] == "https://sr.example:8081"
    path = rendered.config["ACCOUNT_SYNC_SCHEMA_REGISTRY_USER_INFO_FILE"]
    assert "ACCOUNT_SYNC_SCHEMA_REGISTRY_TOKEN_FILE" not in rendered.config
    mount = next(m for m in rendered.container["volumeMounts"] if m["name"] == "schema-registry")
    assert mount["readOnly"] is True and path == mount["mountPath"] + "/user-info"
    volume = next(v for v in rendered.pod["volumes"] if v["name"] == "schema-registry")
    assert volume["secret"]["secretName"] == "sr-creds"
    assert volume["secret"]["items"] == [{"key": "basic", "path": "user-info"}]
    assert volume["secret"]["defaultMode"] & 0o007 == 0
    token = deep_merge(values, {"worker": {"input": {"schemaRegistry": {
        "userInfoKey": "", "tokenKey": "bearer"}}}})
    rendered = render(token)
    assert rendered.config["ACCOUNT_SYNC_SCHEMA_REGISTRY_TOKEN_FILE"].endswith("/token")
    volume = next(v for v in rendered.pod["volumes"] if v["name"] == "schema-registry")
    assert volume["secret"]["items"] == [{"key": "bearer", "path": "token"}]
    without = render(deep_merge(minimal, {"worker": {"input": {"format": "json-schema",
        "schemaRegistry": {"url": "https://sr.example"}}}}))
    assert not any(v["name"] == "schema-registry" for v in without.pod["volumes"])


# --- the secret key --------------------------------------------------------------------------


def _secret_file(rendered):
    """(volume, mount, file path) of the secret key."""
    path = rendered.env["ACCOUNT_SYNC_SECRET_KEY_FILE"]["value"]
    mounts = [m for m in rendered.container["volumeMounts"]
              if path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert len(mounts) == 1, f"{path} is not under exactly one mount"
    mount = mounts[0]
    volume = {v["name"]: v for v in rendered.pod["volumes"]}[mount["name"]]
    return volume, mount, path


def test_secret_key_is_mounted_as_a_file(render, minimal):
    rendered = render(minimal)
    assert "ACCOUNT_SYNC_SECRET_KEY" not in rendered.env
    volume, mount, path = _secret_file(rendered)
    assert mount["readOnly"] is True
    secret = rendered.one("Secret")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    relative = path[len(mount["mountPath"].rstrip("/")) + 1:]
    items = {i["path"]: i["key"] for i in volume["secret"]["items"]}
    assert relative in items and items[relative] in secret["data"]
    assert volume["secret"]["defaultMode"] & 0o007 == 0  # not world-readable


def test_chart_made_secret_holds_the_key(render, minimal):
    import base64

    secret = render(minimal).one("Secret")
    assert base64.b64decode(secret["data"]["secret-key"]).decode() == "not-a-real-key"


def test_secret_change_rolls_the_pods(render, minimal):
    a = render(minimal).deployment["spec"]["template"]["metadata"]["annotations"]
    b = render(deep_merge(minimal, {"secretKey": {"value": "another"}}))
    b = b.deployment["spec"]["template"]["metadata"]["annotations"]
    assert a["checksum/secret"] != b["checksum/secret"]
    assert a["checksum/config"] == b["checksum/config"]
    c = render(deep_merge(minimal, {"rateBudget": {"importRate": 150}}))
    assert c.deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"] != a["checksum/config"]


def test_existing_secret(render):
    rendered = render(scenario_values("existing-secret"))
    assert rendered.maybe("Secret") is None
    volume, _, path = _secret_file(rendered)
    assert volume["secret"]["secretName"] == "chat-app-credentials"
    assert volume["secret"]["items"] == [{"key": "tencent-secret-key", "path": "secret-key"}]
    assert path.endswith("/secret-key")
    assert "checksum/secret" not in rendered.deployment["spec"]["template"]["metadata"]["annotations"]


def test_secret_key_as_env_when_asked(render, minimal):
    rendered = render(deep_merge(minimal, {"secretKey": {"mountAsFile": False}}))
    assert "ACCOUNT_SYNC_SECRET_KEY_FILE" not in rendered.env
    ref = rendered.env["ACCOUNT_SYNC_SECRET_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "rel-account-sync", "key": "secret-key"}
    assert "secret-key" not in {v["name"] for v in rendered.pod["volumes"]}


# --- probes, ports, shutdown -----------------------------------------------------------------


def test_probes_hit_the_admin_port(render, minimal):
    for values in (minimal, deep_merge(minimal, {"admin": {"port": 9191}})):
        rendered = render(values)
        port = admin_port(rendered)
        assert named_port(rendered, "admin") == port
        c = rendered.container
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            target = c[probe]["httpGet"]["port"]
            assert target == port or named_port(rendered, target) == port, probe


@pytest.mark.parametrize("drain", [1, 30, 45, 600])
def test_grace_period_exceeds_drain_timeout(render, minimal, drain):
    rendered = render(deep_merge(minimal, {"worker": {"drainTimeoutSeconds": drain}}))
    assert seconds(rendered.config["ACCOUNT_SYNC_DRAIN_TIMEOUT"]) == drain
    assert rendered.pod["terminationGracePeriodSeconds"] > drain


def test_explicit_grace_period(render, minimal):
    rendered = render(deep_merge(minimal, {"terminationGracePeriodSeconds": 31}))
    assert rendered.pod["terminationGracePeriodSeconds"] == 31


@pytest.mark.parametrize("grace", [30, 10])
def test_grace_period_not_above_drain_is_refused(render, minimal, grace):
    import helm_python as helm

    with pytest.raises(helm.HelmError, match="terminationGracePeriodSeconds"):
        render(deep_merge(minimal, {"terminationGracePeriodSeconds": grace}))


# --- security ----------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["minimal", "everything", "sasl"])
def test_security_context_is_hardened(render, scenario):
    rendered = render(scenario_values(scenario))
    pod = rendered.pod["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] != 0
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    sc = rendered.container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc.get("privileged", False) is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "add" not in sc["capabilities"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert rendered.pod["automountServiceAccountToken"] is False
    sa = rendered.one("ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    assert rendered.pod["serviceAccountName"] == sa["metadata"]["name"]


def test_resources_are_set(render, minimal):
    resources = render(minimal).container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]


# --- Kafka: SASL / TLS / properties ------------------------------------------------------------


def _properties(rendered) -> list[str]:
    return rendered.env["ACCOUNT_SYNC_KAFKA_PROPERTIES"]["value"].split(";")


def test_no_kafka_properties_by_default(render, minimal):
    assert "ACCOUNT_SYNC_KAFKA_PROPERTIES" not in render(minimal).env


def test_sasl_password_comes_from_its_secret(render):
    rendered = render(scenario_values("sasl"))
    names = rendered.env_names
    password = rendered.env["ACCOUNT_SYNC_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert password == {"name": "account-sync-kafka-user", "key": "password"}
    # $(VAR) expansion only sees variables defined earlier in the list.
    assert names.index("ACCOUNT_SYNC_SASL_PASSWORD") < names.index("ACCOUNT_SYNC_KAFKA_PROPERTIES")
    props = _properties(rendered)
    assert props[:5] == [
        "security.protocol=SASL_SSL",
        "sasl.mechanism=SCRAM-SHA-512",
        "sasl.username=account-sync",
        "sasl.password=$(ACCOUNT_SYNC_SASL_PASSWORD)",
        "ssl.ca.location=/etc/account-sync/kafka-ca/ca.crt",
    ]
    assert "fetch.wait.max.ms=100" in props
    # Nothing about SASL in the ConfigMap.
    assert not any("sasl" in v.lower() for v in rendered.config.values())


def test_kafka_ca_is_mounted_where_librdkafka_looks(render):
    rendered = render(scenario_values("sasl"))
    location = next(p.split("=", 1)[1] for p in _properties(rendered)
                    if p.startswith("ssl.ca.location="))
    mount = next(m for m in rendered.container["volumeMounts"] if m["name"] == "kafka-ca")
    assert location == mount["mountPath"] + "/ca.crt"
    volume = next(v for v in rendered.pod["volumes"] if v["name"] == "kafka-ca")
    assert volume["secret"] == {"secretName": "kafka-cluster-ca-cert",
                                "items": [{"key": "ca.crt", "path": "ca.crt"}]}


def test_tls_with_system_cas(render, minimal):
    rendered = render(deep_merge(minimal, {"kafka": {"tls": {"enabled": True}}}))
    assert _properties(rendered) == ["security.protocol=SSL"]
    assert "kafka-ca" not in {v["name"] for v in rendered.pod["volumes"]}


def test_kafka_ca_from_configmap(render, minimal):
    rendered = render(deep_merge(minimal, {"kafka": {"tls": {
        "enabled": True, "ca": {"configMapName": "kafka-ca", "key": "ca.pem"}}}}))
    assert _properties(rendered) == [
        "security.protocol=SSL", "ssl.ca.location=/etc/account-sync/kafka-ca/ca.crt"]
    volume = next(v for v in rendered.pod["volumes"] if v["name"] == "kafka-ca")
    assert volume["configMap"] == {"name": "kafka-ca", "items": [{"key": "ca.pem", "path": "ca.crt"}]}


def test_sasl_username_from_secret_and_mtls(render):
    rendered = render(scenario_values("everything"))
    names = rendered.env_names
    user = rendered.env["ACCOUNT_SYNC_SASL_USERNAME"]["valueFrom"]["secretKeyRef"]
    assert user == {"name": "account-sync-kafka-user", "key": "username"}
    assert names.index("ACCOUNT_SYNC_SASL_USERNAME") < names.index("ACCOUNT_SYNC_KAFKA_PROPERTIES")
    props = _properties(rendered)
    assert "sasl.username=$(ACCOUNT_SYNC_SASL_USERNAME)" in props
    assert "sasl.mechanism=SCRAM-SHA-256" in props
    assert "ssl.certificate.location=/etc/account-sync/kafka-client/tls.crt" in props
    assert "ssl.key.location=/etc/account-sync/kafka-client/tls.key" in props
    # User properties come last, so they win over the derived ones.
    assert props[-3:] == [
        "client.rack=zone-a",
        "fetch.wait.max.ms=100",
        "group.remote.assignor=uniform",
    ]


def test_sasl_without_tls_is_sasl_plaintext(render, minimal):
    rendered = render(deep_merge(minimal, {"kafka": {"sasl": {
        "enabled": True, "mechanism": "PLAIN", "username": "u", "existingSecret": "s"}}}))
    assert _properties(rendered)[:2] == ["security.protocol=SASL_PLAINTEXT", "sasl.mechanism=PLAIN"]


# --- monitoring ----------------------------------------------------------------------------------


def test_service_monitor_scrapes_the_admin_port(render):
    rendered = render(scenario_values("everything"))
    service = rendered.one("Service")
    monitor = rendered.one("ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    port_name = monitor["spec"]["endpoints"][0]["port"]
    port = next(p for p in service["spec"]["ports"] if p["name"] == port_name)
    assert port["targetPort"] == "admin"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    # The Service selects the worker's pods.
    pod_labels = rendered.deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_pod_monitor(render, minimal):
    rendered = render(deep_merge(minimal, {"metrics": {"podMonitor": {"enabled": True}}}))
    assert rendered.maybe("Service") is None
    monitor = rendered.one("PodMonitor")
    pod_labels = rendered.deployment["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "admin"


def test_scrape_annotations(render, minimal):
    rendered = render(deep_merge(minimal, {"metrics": {"scrapeAnnotations": True}}))
    ann = rendered.deployment["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true"
    assert int(ann["prometheus.io/port"]) == admin_port(rendered)


def test_prometheus_rule_carries_the_alert_file(render):
    rule = render(scenario_values("everything")).one("PrometheusRule")
    alerts = yaml.safe_load((CHART_DIR / "files" / "alerts.yaml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"]


def test_dashboard_configmap(render):
    rendered = render(scenario_values("everything"))
    cm = next(c for c in rendered.all("ConfigMap") if c["metadata"]["name"].endswith("-dashboard"))
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Workers"}
    (data,) = cm["data"].values()
    dashboard = json.loads(data)
    assert dashboard == json.loads((CHART_DIR / "files" / "dashboard.json").read_text())
    assert isinstance(dashboard["panels"], list)


def test_dashboard_label_is_configurable(render, minimal):
    rendered = render(deep_merge(minimal, {"grafanaDashboard": {
        "enabled": True, "labels": {"grafana_dashboard": None, "dashboards": "grafana"}}}))
    cm = next(c for c in rendered.all("ConfigMap") if c["metadata"]["name"].endswith("-dashboard"))
    assert cm["metadata"]["labels"]["dashboards"] == "grafana"
    assert "grafana_dashboard" not in cm["metadata"]["labels"]


# --- scaling and availability -------------------------------------------------------------------


def test_pdb(render):
    rendered = render(scenario_values("everything"))
    pdb = rendered.one("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    pod_labels = rendered.deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_hpa(render, minimal):
    rendered = render(deep_merge(minimal, {"autoscaling": {
        "enabled": True, "minReplicas": 2, "maxReplicas": 8,
        "targetMemoryUtilizationPercentage": 80}}))
    hpa = rendered.one("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "name": rendered.deployment["metadata"]["name"]}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}
    assert "replicas" not in rendered.deployment["spec"]  # the HPA owns it


def test_replicas_without_autoscaling(render, minimal):
    assert render(deep_merge(minimal, {"replicaCount": 3})).deployment["spec"]["replicas"] == 3


def test_keda_scales_on_input_lag(render):
    rendered = render(scenario_values("everything"))
    so = rendered.one("ScaledObject")
    assert "replicas" not in rendered.deployment["spec"]
    assert so["spec"]["scaleTargetRef"]["name"] == rendered.deployment["metadata"]["name"]
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (1, 12)
    (trigger,) = so["spec"]["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert meta["bootstrapServers"] == "kafka-bootstrap.kafka.svc:9093"
    assert meta["consumerGroup"] == "account-sync-prod"
    assert meta["topic"] == "signups.v1"
    assert meta["lagThreshold"] == "500"
    assert meta["sasl"] == "scram_sha256" and meta["tls"] == "enable"
    auth = rendered.one("TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    params = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    assert params == {
        "username": ("account-sync-kafka-user", "username"),
        "password": ("account-sync-kafka-user", "password"),
        "ca": ("kafka-cluster-ca-cert", "ca.crt"),
        "cert": ("account-sync-kafka-client-tls", "tls.crt"),
        "key": ("account-sync-kafka-client-tls", "tls.key"),
    }
    behavior = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 600


def test_keda_without_auth(render, minimal):
    rendered = render(deep_merge(minimal, {"keda": {"enabled": True}}))
    (trigger,) = rendered.one("ScaledObject")["spec"]["triggers"]
    assert "authenticationRef" not in trigger
    assert "sasl" not in trigger["metadata"]
    assert rendered.maybe("TriggerAuthentication") is None


def test_keda_with_own_trigger_authentication(render):
    values = deep_merge(scenario_values("sasl"), {"keda": {
        "enabled": True, "authenticationRef": "my-kafka-auth"}})
    rendered = render(values)
    assert rendered.maybe("TriggerAuthentication") is None
    (trigger,) = rendered.one("ScaledObject")["spec"]["triggers"]
    assert trigger["authenticationRef"] == {"name": "my-kafka-auth"}


def test_topology_spread_gets_the_selector(render):
    rendered = render(scenario_values("everything"))
    (constraint,) = rendered.pod["topologySpreadConstraints"]
    selector = rendered.deployment["spec"]["selector"]["matchLabels"]
    assert constraint["labelSelector"] == {"matchLabels": selector}
    assert constraint["topologyKey"] == "topology.kubernetes.io/zone"


def test_scheduling_and_pod_metadata(render):
    rendered = render(scenario_values("everything"))
    pod = rendered.pod
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert "nodeAffinity" in pod["affinity"]
    assert pod["priorityClassName"] == "workers"
    meta = rendered.deployment["spec"]["template"]["metadata"]
    assert meta["labels"]["tier"] == "backend"
    assert meta["annotations"]["example.com/owner"] == "identity"
    assert rendered.deployment["metadata"]["labels"]["team"] == "identity"
    assert rendered.env["ACCOUNT_SYNC_SYSTEMIC_PROBE_INTERVAL"]["value"] == "10s"


# --- network policy -------------------------------------------------------------------------------


def test_network_policy_egress_only_when_enabled(render, minimal):
    assert render(minimal).maybe("NetworkPolicy") is None
    rendered = render(scenario_values("everything"))
    policy = rendered.one("NetworkPolicy")
    spec = policy["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    pod_labels = rendered.deployment["spec"]["template"]["metadata"]["labels"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
    # Ingress: the admin port only.
    (ingress,) = spec["ingress"]
    assert ingress["ports"] == [{"port": "admin", "protocol": "TCP"}]
    # Egress: DNS, the brokers' port, HTTPS to the Chat API; nothing else.
    ports = sorted((p["port"], p["protocol"]) for rule in spec["egress"] for p in rule["ports"])
    assert ports == [(53, "TCP"), (53, "UDP"), (443, "TCP"), (9093, "TCP")]
    assert all(rule.get("to") for rule in spec["egress"]), "an egress rule without peers allows all"
    kafka_rule = next(r for r in spec["egress"] if r["ports"][0]["port"] == 9093)
    assert kafka_rule["to"] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "kafka"}}}]


def test_network_policy_follows_an_explicit_api_port(render, minimal):
    values = deep_merge(minimal, {
        "chat": {"apiBaseUrl": "https://chat-proxy.internal:8443"},
        "networkPolicy": {"enabled": True, "kafka": {"to": [{"ipBlock": {"cidr": "10.1.0.0/16"}}]}},
    })
    spec = render(values).one("NetworkPolicy")["spec"]
    ports = sorted(p["port"] for rule in spec["egress"] for p in rule["ports"])
    assert ports == [53, 53, 8443, 9092]


# --- NOTES --------------------------------------------------------------------------------------


def test_notes_say_how_to_check(render, minimal):
    notes = render(minimal).notes
    assert "/readyz" in notes and "port-forward" in notes
    assert "rollout status deployment/rel-account-sync" in notes
    assert "100 account_check and 200 account_import calls/s for the whole app" in notes
    assert '(consumer group "account-sync", classic group protocol)' in notes
    consumer = render(deep_merge(minimal, {"kafka": {"groupProtocol": "consumer"}})).notes
    assert "consumer group protocol" in consumer


# --- values.yaml --------------------------------------------------------------------------------


def _paths(node, schema, prefix=""):
    """(path, schema node) of every key of a values tree, descending while the schema names
    properties (free-form maps such as labels or resources are leaves)."""
    for key, value in node.items():
        path = f"{prefix}{key}"
        sub = schema.get("properties", {}).get(key)
        yield path, sub
        if isinstance(value, dict) and sub and "properties" in sub:
            yield from _paths(value, sub, path + ".")


def test_values_and_schema_agree():
    """Every key of values.yaml is described by the schema, and every key the schema describes
    has a default in values.yaml (chat.sdkappid: null, because it has no sensible default)."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    undescribed = [p for p, sub in _paths(DEFAULTS, schema) if sub is None]
    assert not undescribed, undescribed

    def schema_paths(node, prefix=""):
        for key, sub in node.get("properties", {}).items():
            yield f"{prefix}{key}"
            if "properties" in sub:
                yield from schema_paths(sub, f"{prefix}{key}.")

    defaults = {p for p, _ in _paths(DEFAULTS, schema)}
    assert set(schema_paths(schema)) - defaults == {"global"}


def test_values_yaml_comments_the_settings():
    """Each top-level section and each worker/rate setting has a comment near it."""
    text = (CHART_DIR / "values.yaml").read_text()
    lines = text.splitlines()
    for key in ["rateBudget", "checkRate", "importRate", "windowSize", "drainTimeoutSeconds",
                "maxEventsInFlight", "brokers", "sdkappid", "existingSecret", "mountAsFile",
                "terminationGracePeriodSeconds", "networkPolicy", "keda", "autoscaling"]:
        index = next(i for i, line in enumerate(lines) if line.strip().startswith(key + ":"))
        assert any(lines[j].strip().startswith("#") for j in range(max(0, index - 8), index)), key
    assert "not per-replica" in text or "NOT per-replica" in text


def test_defaults_carry_the_vendor_rate_limits():
    assert DEFAULTS["rateBudget"]["checkRate"] == 100
    assert DEFAULTS["rateBudget"]["importRate"] == 200
