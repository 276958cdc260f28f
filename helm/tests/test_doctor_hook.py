"""The optional `account-sync doctor` hook Job (doctor.hook.enabled): it renders only when enabled,
as a pre-install / pre-upgrade hook that needs none of the release's own resources (they do not
exist yet at pre-install), with the worker's very settings."""

from __future__ import annotations

import base64
import json

import helm_python as helm
import pytest

from conftest import deep_merge, scenario_values

HOOK = {"doctor": {"hook": {"enabled": True}}}
HOOK_EVENTS = "pre-install,pre-upgrade"


def hooked(values, **extra):
    return deep_merge(deep_merge(values, HOOK), extra)


def job(rendered):
    return rendered.one("Job")


def job_container(rendered):
    (container,) = job(rendered)["spec"]["template"]["spec"]["containers"]
    return container


def job_env(rendered):
    return {e["name"]: e for e in job_container(rendered)["env"]}


def hook_secrets(rendered):
    return [s for s in rendered.all("Secret")
            if "helm.sh/hook" in s["metadata"].get("annotations", {})]


@pytest.mark.parametrize("scenario", ["minimal", "existing-secret", "sasl"])
def test_no_hook_unless_enabled(render, scenario):
    rendered = render(scenario_values(scenario))
    assert rendered.maybe("Job") is None
    assert hook_secrets(rendered) == []


def test_disabled_by_default():
    import yaml

    from conftest import CHART_DIR

    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert defaults["doctor"]["hook"]["enabled"] is False


def test_hook_job_runs_the_doctor_before_install_and_upgrade(render, minimal):
    rendered = render(hooked(minimal, replicaCount=3))
    j = job(rendered)
    annotations = j["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == HOOK_EVENTS
    assert set(annotations["helm.sh/hook-delete-policy"].split(",")) == {
        "before-hook-creation", "hook-succeeded"}
    assert j["spec"]["backoffLimit"] == 0
    pod = j["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    container = job_container(rendered)
    assert container["image"] == rendered.container["image"]
    args = container["args"]
    assert args[0] == "doctor"
    assert args[args.index("--replicas") + 1] == "3"
    assert args[args.index("--kafka-timeout") + 1] == "10s"


def test_hook_checks_the_replicas_the_autoscaler_may_run(render, minimal):
    rendered = render(hooked(minimal, autoscaling={"enabled": True, "maxReplicas": 9}))
    args = job_container(rendered)["args"]
    assert args[args.index("--replicas") + 1] == "9"


def test_hook_has_the_workers_settings_without_the_release_configmap(render):
    rendered = render(hooked(scenario_values("everything")))
    env = job_env(rendered)
    # At pre-install the release's ConfigMap does not exist: every setting is an env value.
    assert "envFrom" not in job_container(rendered)
    for key, value in rendered.config.items():
        assert env[key]["value"] == value, key
    # Secrets and derived settings exactly as the worker gets them.
    worker_env = rendered.env
    for name in ("ACCOUNT_SYNC_SASL_PASSWORD", "ACCOUNT_SYNC_SASL_USERNAME",
                 "ACCOUNT_SYNC_KAFKA_PROPERTIES", "ACCOUNT_SYNC_SYSTEMIC_PROBE_INTERVAL"):
        assert env[name] == worker_env[name], name
    names = [e["name"] for e in job_container(rendered)["env"]]
    assert names.index("ACCOUNT_SYNC_SASL_PASSWORD") < names.index("ACCOUNT_SYNC_KAFKA_PROPERTIES")
    mounts = {m["name"]: m for m in job_container(rendered)["volumeMounts"]}
    assert {"secret-key", "kafka-ca", "kafka-client-cert", "tmp"} <= set(mounts)


def test_chart_made_key_comes_from_a_hook_copy_of_the_secret(render, minimal):
    rendered = render(hooked(minimal))
    (copy,) = hook_secrets(rendered)
    annotations = copy["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == HOOK_EVENTS
    # Created before the Job.
    assert int(annotations["helm.sh/hook-weight"]) < int(
        job(rendered)["metadata"]["annotations"]["helm.sh/hook-weight"])
    assert base64.b64decode(copy["data"]["secret-key"]).decode() == "not-a-real-key"
    volumes = {v["name"]: v for v in job(rendered)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["secret-key"]["secret"]["secretName"] == copy["metadata"]["name"]
    env = job_env(rendered)
    assert env["ACCOUNT_SYNC_SECRET_KEY_FILE"] == rendered.env["ACCOUNT_SYNC_SECRET_KEY_FILE"]
    # The key itself is in no pod spec.
    assert "not-a-real-key" not in json.dumps(job(rendered))
    # The worker's own Secret is unchanged and not a hook.
    (worker_secret,) = [s for s in rendered.all("Secret") if s is not copy]
    assert "annotations" not in worker_secret["metadata"]


def test_existing_secret_is_used_directly(render):
    rendered = render(hooked(scenario_values("existing-secret")))
    assert hook_secrets(rendered) == []
    volumes = {v["name"]: v for v in job(rendered)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["secret-key"]["secret"]["secretName"] == "chat-app-credentials"


def test_key_as_env_comes_from_the_hook_copy(render, minimal):
    rendered = render(hooked(minimal, secretKey={"mountAsFile": False}))
    ref = job_env(rendered)["ACCOUNT_SYNC_SECRET_KEY"]["valueFrom"]["secretKeyRef"]
    (copy,) = hook_secrets(rendered)
    assert ref == {"name": copy["metadata"]["name"], "key": "secret-key"}


def test_hook_needs_no_release_service_account(render, minimal):
    # The release's ServiceAccount does not exist at pre-install: the default one is used.
    pod = job(render(hooked(minimal)))["spec"]["template"]["spec"]
    assert "serviceAccountName" not in pod
    assert pod["automountServiceAccountToken"] is False
    pod = job(render(hooked(minimal, serviceAccount={"create": False, "name": "ops"})))
    assert pod["spec"]["template"]["spec"]["serviceAccountName"] == "ops"


def test_hook_pod_is_not_selected_as_a_worker(render):
    rendered = render(hooked(scenario_values("everything")))
    labels = job(rendered)["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "doctor"
    selector = rendered.deployment["spec"]["selector"]["matchLabels"]
    assert not selector.items() <= labels.items()
    assert not rendered.one("Service")["spec"]["selector"].items() <= labels.items()
    pod = job(rendered)["spec"]["template"]["spec"]
    assert pod["securityContext"] == rendered.pod["securityContext"]
    assert job_container(rendered)["securityContext"] == rendered.container["securityContext"]


def test_notes_mention_the_doctor(render, minimal):
    off = render(minimal).notes
    assert "account-sync doctor" in off and "doctor.hook.enabled=true" in off
    on = render(hooked(minimal)).notes
    assert "logs job/rel-account-sync-doctor" in on


@pytest.mark.parametrize("bad, fragment", [
    ({"doctor": {"hook": {"enabled": "yes"}}}, "enabled"),
    ({"doctor": {"hook": {"kafkaTimeout": "soon"}}}, "kafkaTimeout"),
    ({"doctor": {"hook": {"activeDeadlineSeconds": 0}}}, "activeDeadlineSeconds"),
    ({"doctor": {"hok": {}}}, "hok"),
])
def test_schema_refuses_bad_hook_values(chart, minimal, bad, fragment):
    with pytest.raises(helm.HelmError, match=fragment):
        chart.validate_schema(deep_merge(minimal, bad))
