"""ApiDeployment: the API and the workers on Kubernetes, rolled without dropping requests.

``<name>-db``          Secret ``bazbii-db``: DATABASE_URL / DB_PASSWORD (secret Outputs)
``<name>-flags``       ConfigMap ``bazbii-flags-<checksum>`` (immutable): ``flags.json``, the feature
                       flags of this step (:func:`bazbii_plan.flags.flags_document`), even when empty
``<name>-service``     Service ``api`` (NodePort, so the gateways on other hosts reach it), selecting
                       ``app.kubernetes.io/name=api``: stable and canary pods alike
``<name>-pdb``         PodDisruptionBudget ``api`` over every API pod (``maxUnavailable`` from config,
                       ``unhealthyPodEvictionPolicy: AlwaysAllow``)
``<name>-worker``      Deployment ``worker`` (job handlers)
``<name>-api-canary``  Deployment ``api-canary``, only while ``app.canary`` is set
``<name>-api``         Deployment ``api`` (stable)

Every Deployment: RollingUpdate with the configured ``maxSurge`` (>= 1) and
``maxUnavailable`` (0), readiness probe on ``readinessPath``, ``minReadySeconds``,
``progressDeadlineSeconds``, ``revisionHistoryLimit`` (>= 2, so ``kubectl rollout
undo`` works), a native ``preStop`` sleep of ``drainSeconds`` (endpoints are removed
while the pod still serves; Kubernetes >= 1.30) and a termination grace period
longer than that drain. :func:`bazbii_plan.rollout.rollout_problems` (run by the
pre-flight) rejects config that breaks these before anything is registered.

Canary: the canary's share of API *pods* is ``app.canary.weight`` percent
(both Deployments sit behind the one Service, so the request share follows the
pod share): canary replicas = ceil(replicas * weight / 100) (0 at weight 0),
stable = replicas - canary.

Feature flags: the component **rolls the pods**; they do not pick a change up
in place. The ConfigMap is named after its content (``bazbii-flags-<sha256[:12]>``,
``immutable``) and every container reads ``flags.json`` once, at start, through
the env var ``BAZBII_FLAGS`` (``configMapKeyRef``); every pod template also
carries the full checksum as the annotation ``bazbii.io/flags-checksum``. A flag
change therefore creates a new ConfigMap (the old one is deleted only after the
Deployments moved off it) and is an ordinary rolling update of the API (stable
and canary) and the workers: maxUnavailable 0, readiness-gated. A pod never
changes its flags mid-life, so the rollout's progress (``kubectl rollout
status``) is exactly the share of pods on the new percentages. Roll back by
setting the previous flags step (``kubectl rollout undo`` would point at a
ConfigMap that is gone). Each Deployment depends on the ConfigMap.

Order: workers first (job handlers before enqueuers), then the canary, then the
stable API (``depends_on``), so a new job type is handled before any API pod
can enqueue it, and the canary scales up before the stable scales down.
A schema release (``extra_depends_on``) runs before all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import pulumi
import pulumi_kubernetes as k8s

from bazbii_plan import models
from bazbii_plan import flags as feature_flags
from bazbii_plan.facts import (HTTP_PORT_NAME, NAME_LABEL, PART_OF_LABELS, SERVING_LABEL, TRACK_LABEL, VERSION_LABEL,
                               image_tag, image_version)
from bazbii_plan.workloads import canary_split
from components._util import TYPE_PREFIX, child_opts, inherit_depends_on

API_NODE_PORT = 30080
DB_SECRET_NAME = "bazbii-db"



@dataclass(frozen=True)
class ApiDeploymentArgs:
    app: models.App
    db_host: str
    db_port: int
    db_name: str
    db_user: str
    database_url: pulumi.Input[str]  # secret
    db_password: pulumi.Input[str]  # secret
    flags: dict[str, models.Flag] = field(default_factory=dict)
    extra_depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)


def app_versions(app: models.App) -> list[str]:
    """Versions (image tags) of every Deployment of this step: what a contract migration must wait for.

    An image pinned by digest alone has no version: it is passed whole, and the runner counts it as
    unknown (a contract then waits)."""
    images = [app.api.image, app.worker.image] + ([app.canary.image] if app.canary else [])
    return sorted({image_tag(i) or i for i in images})


def _labels(component: str, image: str, track: Optional[str] = None) -> dict[str, str]:
    labels = {NAME_LABEL: component, VERSION_LABEL: image_version(image), **PART_OF_LABELS}
    if track:
        labels[TRACK_LABEL] = track
        labels[SERVING_LABEL] = "true"
    return labels


class ApiDeployment(pulumi.ComponentResource):
    deployments: dict[str, k8s.apps.v1.Deployment]
    app_versions: list[str]

    def __init__(self, name: str, args: ApiDeploymentArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(f"{TYPE_PREFIX}:ApiDeployment", name, None, opts)
        inherit_depends_on(self, opts)
        app = args.app
        ns = app.namespace
        rollout = app.rollout

        self.db_secret = k8s.core.v1.Secret(
            f"{name}-db",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=DB_SECRET_NAME, namespace=ns, labels=dict(PART_OF_LABELS)),
            type="Opaque",
            string_data={
                "DATABASE_URL": pulumi.Output.secret(args.database_url),
                "DB_PASSWORD": pulumi.Output.secret(args.db_password),
            },
            opts=child_opts(self),
        )

        flags_json = feature_flags.flags_document(args.flags)
        flags_checksum = feature_flags.document_checksum(flags_json)
        # Named after its content: a change is a new object (create, roll, then delete the old one), never an
        # in-place edit that pods restarting mid-rollout would pick up early.
        flags_map_name = feature_flags.config_map_name(flags_json)
        self.flags_config_map = k8s.core.v1.ConfigMap(
            f"{name}-flags",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=flags_map_name, namespace=ns, labels={feature_flags.CONFIG_MAP_LABEL: "true", **PART_OF_LABELS}),
            data={feature_flags.DOCUMENT_KEY: flags_json},
            immutable=True,
            opts=child_opts(self),
        )

        def env() -> list[k8s.core.v1.EnvVarArgs]:
            def from_secret(key: str) -> k8s.core.v1.EnvVarSourceArgs:
                return k8s.core.v1.EnvVarSourceArgs(
                    secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(name=DB_SECRET_NAME, key=key))
            return [
                k8s.core.v1.EnvVarArgs(name="DB_HOST", value=args.db_host),
                k8s.core.v1.EnvVarArgs(name="DB_PORT", value=str(args.db_port)),
                k8s.core.v1.EnvVarArgs(name="DB_NAME", value=args.db_name),
                k8s.core.v1.EnvVarArgs(name="DB_USER", value=args.db_user),
                k8s.core.v1.EnvVarArgs(name="DB_PASSWORD", value_from=from_secret("DB_PASSWORD")),
                k8s.core.v1.EnvVarArgs(name="DATABASE_URL", value_from=from_secret("DATABASE_URL")),
                k8s.core.v1.EnvVarArgs(name=feature_flags.ENV_VAR, value_from=k8s.core.v1.EnvVarSourceArgs(
                    config_map_key_ref=k8s.core.v1.ConfigMapKeySelectorArgs(
                        name=flags_map_name, key=feature_flags.DOCUMENT_KEY))),
            ]

        def deployment(resource: str, k8s_name: str, component: str, workload: models.Workload, image: str,
                       replicas: int, track: Optional[str], depends_on: list) -> k8s.apps.v1.Deployment:
            selector = {NAME_LABEL: component, **({TRACK_LABEL: track} if track else {})}
            labels = _labels(component, image, track)
            container = k8s.core.v1.ContainerArgs(
                name=component,
                image=image,
                ports=[k8s.core.v1.ContainerPortArgs(name=HTTP_PORT_NAME, container_port=workload.port, protocol="TCP")],
                env=env(),
                readiness_probe=k8s.core.v1.ProbeArgs(
                    http_get=k8s.core.v1.HTTPGetActionArgs(path=rollout.readiness_path, port=HTTP_PORT_NAME),
                    period_seconds=5, timeout_seconds=2, success_threshold=1, failure_threshold=3,
                ),
                liveness_probe=k8s.core.v1.ProbeArgs(
                    tcp_socket=k8s.core.v1.TCPSocketActionArgs(port=HTTP_PORT_NAME),
                    initial_delay_seconds=10, period_seconds=10, timeout_seconds=2, failure_threshold=6,
                ),
                lifecycle=k8s.core.v1.LifecycleArgs(
                    pre_stop=k8s.core.v1.LifecycleHandlerArgs(
                        sleep=k8s.core.v1.SleepActionArgs(seconds=rollout.drain_seconds)),
                ),
                resources=k8s.core.v1.ResourceRequirementsArgs(
                    requests={"cpu": "100m", "memory": "128Mi"}, limits={"memory": "512Mi"}),
            )
            return k8s.apps.v1.Deployment(
                resource,
                metadata=k8s.meta.v1.ObjectMetaArgs(name=k8s_name, namespace=ns, labels=labels),
                spec=k8s.apps.v1.DeploymentSpecArgs(
                    replicas=replicas,
                    selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
                    strategy=k8s.apps.v1.DeploymentStrategyArgs(
                        type="RollingUpdate",
                        rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(
                            max_surge=rollout.max_surge, max_unavailable=rollout.max_unavailable),
                    ),
                    min_ready_seconds=rollout.min_ready_seconds,
                    progress_deadline_seconds=rollout.progress_deadline_seconds,
                    revision_history_limit=rollout.revision_history_limit,
                    template=k8s.core.v1.PodTemplateSpecArgs(
                        metadata=k8s.meta.v1.ObjectMetaArgs(
                            labels=labels, annotations={feature_flags.CHECKSUM_ANNOTATION: flags_checksum}),
                        spec=k8s.core.v1.PodSpecArgs(
                            termination_grace_period_seconds=rollout.termination_grace_period_seconds,
                            containers=[container],
                        ),
                    ),
                ),
                opts=child_opts(self, depends_on=depends_on),
            )

        base_deps = [self.db_secret, self.flags_config_map, *args.extra_depends_on]
        worker = app.worker
        self.worker = deployment(
            f"{name}-worker", "worker", "worker", worker, worker.image,
            worker.replicas, None, base_deps,
        )
        stable_replicas, canary_replicas = canary_split(app.api.replicas, app.canary.weight if app.canary else None)
        self.canary = None
        api_deps = [*base_deps, self.worker]
        if app.canary is not None:
            self.canary = deployment(
                f"{name}-api-canary", "api-canary", "api", app.api, app.canary.image,
                canary_replicas, "canary", api_deps,
            )
            api_deps = [*api_deps, self.canary]
        self.api = deployment(
            f"{name}-api", "api", "api", app.api, app.api.image, stable_replicas, "stable", api_deps,
        )
        self.deployments = {"worker": self.worker, "api": self.api, **({"api-canary": self.canary} if self.canary else {})}

        self.service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="api", namespace=ns, labels={NAME_LABEL: "api", **PART_OF_LABELS}),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="NodePort",
                selector={NAME_LABEL: "api"},
                ports=[k8s.core.v1.ServicePortArgs(name=HTTP_PORT_NAME, port=80, target_port=HTTP_PORT_NAME,
                                                   node_port=API_NODE_PORT, protocol="TCP")],
            ),
            opts=child_opts(self),
        )
        self.pdb = k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="api", namespace=ns, labels={NAME_LABEL: "api", **PART_OF_LABELS}),
            spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                max_unavailable=rollout.pdb_max_unavailable,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels={NAME_LABEL: "api"}),
                unhealthy_pod_eviction_policy="AlwaysAllow",
            ),
            opts=child_opts(self),
        )

        self.app_versions = app_versions(app)
        self.register_outputs({
            "namespace": ns,
            "replicas": {"api": stable_replicas, "api-canary": canary_replicas, "worker": worker.replicas},
            "images": {"api": app.api.image, "worker": worker.image, **({"api-canary": app.canary.image} if app.canary else {})},
            "dbHost": args.db_host,
            "flagsChecksum": flags_checksum,
        })
