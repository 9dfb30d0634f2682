"""Rules on the resources the program registers: load balancer, pools, DNS records, Deployments, PDB, migration Job.

Allowed cases are the resources as the program registers them for the shipped
config. Denied cases come from crafted configs where the program accepts them,
and otherwise (the program's own preflight already refuses, e.g., a rollout with
maxUnavailable 1) from the program's resources with one property changed: the
policy is the second line for a program bug or a hand edit.
"""

import shutil

import pytest

from offline_preview.harness import REPO_ROOT

from .helpers import Stack, of_type, preview

PROD = Stack.prod()
BASE = PROD.at(infra="mvp")  # one pool, no replica; release canary-10, schema 0002-migrate, dns ttl-lowered
LB = "cloudflare:index/loadBalancer:LoadBalancer"
POOL = "cloudflare:index/loadBalancerPool:LoadBalancerPool"
DNS_RECORD = "cloudflare:index/dnsRecord:DnsRecord"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
JOB = "kubernetes:batch/v1:Job"
UNKNOWN_STRING = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"


def steady(stack, **kw):
    """The stack re-applied with nothing moving: only resource rules can fire."""
    return preview(stack, stack, **kw)


def named(resources, type_, name):
    [r] = [r for r in resources if r.type == type_ and r.name == name]
    return r


def test_the_registered_resources_pass():
    result = steady(BASE)
    types = {r.type for r in result.evaluation.resources}
    assert {LB, POOL, DNS_RECORD, DEPLOYMENT, PDB, CONFIG_MAP, JOB} <= types
    assert not result.mandatory, result.explain()


# --------------------------------------------------------------------------- traffic
def test_load_balancer_with_all_weights_zero_is_denied():
    def mutate(resources):
        weights = of_type(resources, LB)[0].inputs["randomSteering"]["poolWeights"]
        for key in weights:
            weights[key] = 0.0
    result = steady(BASE, mutate=mutate)
    assert result.names() == {"traffic-load-balancer-weights"}, result.explain()
    assert "every pool weight is 0" in result.messages("traffic-load-balancer-weights")[0]


def test_load_balancer_without_random_steering_is_denied():
    def mutate(resources):
        of_type(resources, LB)[0].inputs["steeringPolicy"] = "geo"
    assert "steeringPolicy is 'geo'" in steady(BASE, mutate=mutate).messages("traffic-load-balancer-weights")[0]


def test_unknown_pool_ids_make_the_load_balancer_rule_advisory_only():
    # New pools have unknown ids at a real preview; the mandatory twin is traffic-never-zero on the gate.
    def mutate(resources):
        of_type(resources, LB)[0].inputs["randomSteering"]["poolWeights"] = UNKNOWN_STRING
    result = steady(BASE, mutate=mutate)
    [v] = [v for v in result.violations if v.policy_name == "traffic-load-balancer-weights"]
    assert v.enforcement == "advisory" and "during preview" in v.message


def test_pool_with_traffic_but_no_monitor_is_denied():
    def mutate(resources):
        named(resources, POOL, "traffic-server1").inputs.pop("monitor")
    result = steady(BASE, mutate=mutate)
    assert result.names() == {"traffic-pool-monitor-attached"}, result.explain()
    assert "pool 'bazbii-server1' has no health monitor although ['server1'] gets traffic" in \
        result.messages("traffic-pool-monitor-attached")[0]


def test_unmonitored_pool_at_weight_zero_passes():
    def edit(s):
        s.step("infra", "gateway-on-server2")["changes"]["traffic"]["pools"]["server2"]["monitored"] = False
    stack = PROD.edit(edit).at(infra="gateway-on-server2")
    result = steady(stack)
    assert "monitor" not in named(result.evaluation.resources, POOL, "traffic-server2").inputs
    assert not result.mandatory, result.explain()


# --------------------------------------------------------------------------- dns
def test_proxied_record_with_a_real_ttl_is_denied():
    def mutate(resources):
        named(resources, DNS_RECORD, "dns-www").inputs["ttl"] = 300.0
    result = steady(BASE, mutate=mutate)
    assert result.names() == {"dns-proxied-record-ttl"}, result.explain()
    assert "proxied record 'www.bazbii.example' sets ttl 300" in result.messages("dns-proxied-record-ttl")[0]


# --------------------------------------------------------------------------- kubernetes
def _api(resources):
    return named(resources, DEPLOYMENT, "app-api").inputs


def _container(resources):
    return _api(resources)["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("rule, mutate, expected", [
    ("k8s-zero-unavailable", lambda rs: _api(rs)["spec"]["strategy"]["rollingUpdate"].update(maxUnavailable=1.0),
     "serving Deployment api has rollingUpdate.maxUnavailable 1"),
    ("k8s-zero-unavailable", lambda rs: _api(rs)["spec"].update(strategy={"type": "Recreate"}),
     "serving Deployment api uses strategy 'Recreate'"),
    ("k8s-readiness-probe", lambda rs: _container(rs).pop("readinessProbe"),
     "container 'api' of serving Deployment api has no readinessProbe"),
    ("k8s-graceful-shutdown", lambda rs: _container(rs).pop("lifecycle"),
     "container 'api' of serving Deployment api has no preStop hook"),
    ("k8s-graceful-shutdown", lambda rs: _api(rs)["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=15.0),
     "terminationGracePeriodSeconds 15, not more than its drain time 15 s"),
    ("k8s-revision-history", lambda rs: _api(rs)["spec"].update(revisionHistoryLimit=0.0),
     "keeps 0 old ReplicaSets"),
    ("k8s-pod-disruption-budget", lambda rs: rs.remove(named(rs, PDB, "app-pdb")),
     "serving Deployment api has no PodDisruptionBudget"),
    ("k8s-pod-disruption-budget", lambda rs: named(rs, PDB, "app-pdb").inputs["spec"].update(maxUnavailable="100%"),
     "PodDisruptionBudget api for api allows every pod to be evicted"),
])
def test_kubernetes_rules_deny(rule, mutate, expected):
    result = steady(BASE, mutate=mutate)
    assert rule in result.names(), result.explain()
    assert any(expected in m for m in result.messages(rule)), result.messages(rule)


def test_drain_and_history_minimums_are_configurable():
    config = {"k8s-graceful-shutdown": {"drainSeconds": 30}, "k8s-revision-history": {"minRevisionHistory": 8}}
    result = steady(BASE, policy_config=config)
    assert {"k8s-graceful-shutdown", "k8s-revision-history"} <= result.names()
    assert any("drains 15 s in preStop, less than the required 30 s" in m for m in result.messages("k8s-graceful-shutdown"))


def test_worker_is_not_a_serving_deployment():
    def mutate(resources):
        worker = named(resources, DEPLOYMENT, "app-worker").inputs
        worker["spec"]["template"]["spec"]["containers"][0].pop("readinessProbe")
    assert "k8s-readiness-probe" not in steady(BASE, mutate=mutate).names()


@pytest.mark.parametrize("tag", ["latest", "main", "stable", "edge", "dev", "2.0"])
def test_a_moving_image_tag_is_denied_on_the_registered_deployment(tag):
    image = f"registry.example.com/bazbii/worker:{tag}"
    stack = BASE.edit(lambda s: s.values["app"]["worker"].update(image=image)).at(release="api-1.9", schema="none")
    result = steady(stack)
    assert "k8s-image-pinned" in result.names()
    [message] = result.messages("k8s-image-pinned")
    assert f"Deployment worker container 'worker': image '{image}' has tag '{tag}', which is not a version" in message
    assert "a tag that is not a version can move" in message and "Fix: set bazbii:app.worker.image" in message


@pytest.mark.parametrize("image", ["registry.example.com/bazbii/worker:1.9.1", "registry.example.com/bazbii/worker:v1.9.1-rc.2",
                                   "registry.example.com/bazbii/worker@sha256:" + "0" * 64,
                                   "registry.example.com/bazbii/worker:main@sha256:" + "0" * 64])
def test_a_version_tag_or_a_digest_pins_an_image(image):
    stack = BASE.edit(lambda s: s.values["app"]["worker"].update(image=image)).at(release="api-1.9", schema="none")
    assert not {"k8s-image-pinned", "k8s-image-pinned-in-state"} & steady(stack).names()


def test_untagged_job_image_is_denied():
    def mutate(resources):
        of_type(resources, JOB)[0].inputs["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example.com/bazbii/api"
    [message] = steady(BASE, mutate=mutate).messages("k8s-image-pinned")
    assert "image 'registry.example.com/bazbii/api' has no version tag (it would run whatever :latest is)" in message


# --------------------------------------------------------------------------- schema
def test_contract_while_old_deployments_run_is_denied_on_the_registered_deployments():
    edited = PROD.edit(lambda s: s.step("schema", "0002-contract").pop("requires"))
    result = preview(edited.at(infra="mvp", schema="0002-contract"), edited.at(infra="mvp", schema="0002-migrate"))
    [violation] = [v for v in result.violations if v.policy_name == "schema-contract-after-deployments-rollout"
                   and v.resource_name == "app-api"]
    assert violation.resource_type == DEPLOYMENT
    assert "the contract stage runs while Deployment api runs registry.example.com/bazbii/api:1.9.0 (1.9.0 < 2.0.0)" \
        in violation.message


def test_contract_after_the_rollout_passes_on_the_registered_deployments():
    at = dict(infra="mvp", release="api-2.0", dns="ttl-restored", flags="new-category-ui-old-path-removed")
    edited = PROD.edit(lambda s: s.step("dns", "switched").pop("requires"))  # keep infra at mvp
    result = preview(edited.at(schema="0002-contract", **at), edited.at(schema="0002-migrate", **at), origin="plan-walk")
    assert not result.mandatory, result.explain()


def test_migration_job_for_another_stage_is_denied():
    def mutate(resources):
        for r in of_type(resources, JOB) + of_type(resources, CONFIG_MAP):
            r.inputs["metadata"]["labels"]["bazbii.io/migration-stage"] = "contract"
    result = steady(BASE, mutate=mutate)
    assert "schema-stage-matches-plan" in result.names()
    assert "stage 'contract', but the schema track is at '0002_add_category' stage 'migrate'" in \
        result.messages("schema-stage-matches-plan")[0]


def test_migration_job_not_using_the_runner_is_denied():
    def mutate(resources):
        container = of_type(resources, JOB)[0].inputs["spec"]["template"]["spec"]["containers"][0]
        container["command"] = ["psql", "-f", "/var/lib/bazbii/migrations/0002_add_category/migrate.sql"]
    result = steady(BASE, mutate=mutate)
    assert result.names() == {"schema-migrations-through-runner"}, result.explain()


@pytest.fixture
def migrations(tmp_path):
    """A copy of the repository's migrations the test may edit; the stack points at it (absolute migrationsDir)."""
    root = tmp_path / "migrations"
    shutil.copytree(REPO_ROOT / "migrations", root)
    return root


def _with_dir(stack, root):
    return stack.edit(lambda s: s.values["schema"].update(migrationsDir=str(root)))


def test_destructive_ddl_in_expand_is_denied(migrations):
    path = migrations / "0002_add_category" / "expand.sql"
    path.write_text(path.read_text() + "ALTER TABLE posts DROP COLUMN IF EXISTS title;\n")
    stack = _with_dir(BASE, migrations).at(schema="0002-expand", release="api-1.9")
    result = steady(stack)
    assert result.names() == {"schema-destructive-ddl-in-contract-only"}, result.explain()
    [message] = result.messages("schema-destructive-ddl-in-contract-only")
    assert "/expand.sql:3: [destructive-ddl-outside-contract] DROP COLUMN title on posts in the expand stage" in message


def test_a_down_step_is_judged_as_the_runner_runs_it(migrations):
    # expand.down.sql drops what expand added: it never runs in the expand stage's Job, and is not
    # destructive DDL in the expand stage
    folder = migrations / "0002_add_category"
    (folder / "expand.down.sql").write_text("ALTER TABLE posts DROP COLUMN IF EXISTS category;\n")
    result = steady(_with_dir(BASE, migrations).at(schema="0002-expand", release="api-1.9"))
    assert "schema-destructive-ddl-in-contract-only" not in result.names(), result.explain()
    # contract.down.sql runs in the migrate stage's Job when the schema track rolls back to migrate:
    # its unsafe DDL is denied there, cited by its own file
    down = folder / "contract.down.sql"
    down.write_text(down.read_text() + "CREATE INDEX posts_category_idx ON posts (category);\n")
    result = steady(_with_dir(BASE, migrations))
    assert any("contract.down.sql" in m and "[require-concurrent-index-creation]" in m
               for m in result.messages("schema-safe-ddl")), result.explain()


def test_down_steps_run_only_in_earlier_stages_jobs():
    from policies.rules.schema import analyse_configmap

    data = {"migration.toml": 'contract_min_app_version = "2.0.0"\n',
            "expand.sql": "ALTER TABLE posts ADD COLUMN category text;\n",
            "contract.sql": "ALTER TABLE posts DROP COLUMN legacy;\n",
            "contract.down.sql": "ALTER TABLE posts ADD COLUMN legacy text;\nALTER TABLE posts DROP COLUMN category;\n"
                                 "CREATE INDEX posts_legacy_idx ON posts (legacy);\n"}
    rules = lambda stage: {(f.file.split("/")[-1], f.rule) for f in analyse_configmap(stage, "0009_x", data, False)}
    # in the expand and migrate Jobs the down of contract may run: judged as an expand (no drops)
    assert ("contract.down.sql", "destructive-ddl-outside-contract") in rules("expand")
    assert ("contract.down.sql", "destructive-ddl-outside-contract") in rules("migrate")
    assert ("contract.down.sql", "require-concurrent-index-creation") in rules("migrate")
    # in the contract Job it does not run; contract.sql's own drop is the contract's to make
    assert not any(name == "contract.down.sql" for name, _ in rules("contract"))
    assert ("contract.sql", "destructive-ddl-outside-contract") not in rules("contract")


def test_destructive_ddl_in_contract_passes(migrations):
    path = migrations / "0002_add_category" / "contract.sql"
    path.write_text(path.read_text() + "ALTER TABLE posts DROP COLUMN IF EXISTS legacy_tag;\n")
    at = dict(infra="mvp", release="api-2.0", dns="ttl-restored", flags="new-category-ui-old-path-removed")
    edited = _with_dir(PROD, migrations).edit(lambda s: s.step("dns", "switched").pop("requires"))
    result = preview(edited.at(schema="0002-contract", **at), edited.at(schema="0002-migrate", **at), origin="plan-walk")
    assert not result.mandatory, result.explain()


@pytest.mark.parametrize("sql, rule", [
    ("CREATE INDEX posts_category_idx ON posts (category);", "require-concurrent-index-creation"),
    ("ALTER TABLE posts ADD CONSTRAINT posts_user_fk FOREIGN KEY (user_id) REFERENCES users (id);", "constraint-missing-not-valid"),
    ("ALTER TABLE posts ADD CONSTRAINT posts_title_len CHECK (length(title) < 500);", "constraint-missing-not-valid"),
    ("ALTER TABLE posts ALTER COLUMN title TYPE varchar(20);", "changing-column-type"),
    ("ALTER TABLE posts ALTER COLUMN title SET NOT NULL;", "set-not-null-without-validated-check"),
    ("ALTER TABLE posts ADD COLUMN token uuid DEFAULT gen_random_uuid();", "adding-field-with-volatile-default"),
    ("SET lock_timeout = 0;\nALTER TABLE posts ADD COLUMN note text;", "timeout-disabled"),
])
def test_unsafe_ddl_is_denied_in_any_stage(migrations, sql, rule):
    path = migrations / "0002_add_category" / "expand.sql"
    path.write_text(path.read_text() + sql + "\n")
    result = steady(_with_dir(BASE, migrations).at(schema="0002-expand", release="api-1.9"))
    assert "schema-safe-ddl" in result.names(), result.explain()
    assert any(f"[{rule}]" in m for m in result.messages("schema-safe-ddl")), result.messages("schema-safe-ddl")


def test_set_not_null_after_a_check_validated_in_an_earlier_stage_passes(migrations):
    # The check is added and validated in migrate; contract only sets NOT NULL (phase awareness across files).
    folder = migrations / "0002_add_category"
    (folder / "migrate.sql").write_text(
        (folder / "migrate.sql").read_text()
        + "ALTER TABLE posts ADD CONSTRAINT posts_category_not_null CHECK (category IS NOT NULL) NOT VALID;\n"
        + "ALTER TABLE posts VALIDATE CONSTRAINT posts_category_not_null;\n")
    (folder / "contract.sql").write_text("ALTER TABLE posts ALTER COLUMN category SET NOT NULL;\n")
    at = dict(infra="mvp", release="api-2.0", dns="ttl-restored", flags="new-category-ui-old-path-removed")
    edited = _with_dir(PROD, migrations).edit(lambda s: s.step("dns", "switched").pop("requires"))
    result = preview(edited.at(schema="0002-contract", **at), edited.at(schema="0002-migrate", **at), origin="plan-walk")
    assert "schema-safe-ddl" not in result.names(), result.explain()


def test_linter_advice_is_advisory():
    result = steady(BASE.at(schema="0002-expand", release="api-1.9"))
    advice = [v for v in result.violations if v.policy_name == "schema-ddl-lint"]
    assert advice and all(v.enforcement == "advisory" for v in advice)
    assert any("[prefer-text-field]" in v.message for v in advice)
