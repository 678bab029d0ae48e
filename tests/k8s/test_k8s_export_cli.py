"""`flow export-k8s` end to end: a real module with decorated pipelines, in a process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _k8s_testing import load_all, validate_custom, validate_strict

from ematix_flow._k8s.cronjob import render_cronjob

pytestmark = pytest.mark.k8s

IMAGE = "registry.example/team/pipelines:1.4.0"
PASSWORD = "Sup3r-Secret-pw"
INLINE_URL = f"postgresql://etl:{PASSWORD}@db.internal:5432/wh"

# Spec §2 and §4, as a user's module; plus the spec's §1 imperative style with an inline
# URL in its body (never executed by the export, never written to it).
MODULE = textwrap.dedent(
    f'''
    from typing import Annotated

    from ematix_flow import _core, ematix, pipeline, pk
    from ematix_flow.types import BigInt, Boolean, Date, Numeric, String, Text, TimestampTZ


    @ematix.table(schema="warehouse")
    class CustomerDim:
        customer_id: Annotated[BigInt, pk()]
        email: String[256]
        name: Text | None
        last_seen: TimestampTZ


    @ematix.pipeline(
        target=CustomerDim,
        schedule="0 * * * *",
        mode="scd2",
        event_timestamp_column="last_seen",
    )
    def customer_sync(conn):
        return "SELECT id AS customer_id, email, name, last_seen FROM source.users"


    @ematix.table(schema="features", name="user_purchase_features_v1")
    class UserPurchaseFeatures:
        user_id: Annotated[BigInt, pk()]
        period_start: Annotated[Date, pk()]
        total_spend: Numeric[12, 2] | None
        order_count: BigInt | None
        is_subscriber: Boolean
        last_event_ts: TimestampTZ


    @ematix.pipeline(
        target=UserPurchaseFeatures,
        schedule="0 */6 * * *",
        mode="scd2",
        event_timestamp_column="last_event_ts",
        source_connection="oltp",
        target_connection="warehouse",
    )
    def sync_user_purchase_features(src_conn, tgt_conn):
        return """
            SELECT user_id, date_trunc('day', event_ts)::date AS period_start,
                   sum(amount) AS total_spend, count(*) AS order_count,
                   bool_or(is_sub) AS is_subscriber, max(event_ts) AS last_event_ts
            FROM events.purchases GROUP BY 1, 2
        """


    @pipeline.register(name="legacy_inline", schedule="@daily")
    def legacy_inline():
        conn = _core.connect("{INLINE_URL}")
        raise RuntimeError("never runs during an export")


    @pipeline.register(name="adhoc_backfill")
    def adhoc_backfill():
        pass
    '''
)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder with the module and connections configured with inline URLs."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "team_pipelines.py").write_text(MODULE)
    (folder / ".ematix-flow.toml").write_text(
        f'[connections.oltp]\ndsn = "{INLINE_URL.replace("/wh", "/oltp")}"\n'
    )
    monkeypatch.setenv("EMATIX_FLOW_DSN_WAREHOUSE", INLINE_URL)
    monkeypatch.chdir(folder)
    return folder


def flow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ematix_flow._cli.main", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def _export(*extra: str) -> subprocess.CompletedProcess[str]:
    return flow("export-k8s", "--module", "team_pipelines", "--image", IMAGE, *extra)


def test_stdout_export_of_the_spec_examples_is_valid(project: Path) -> None:
    result = _export("--namespace", "data", "--output", "-")
    assert result.returncode == 0, result.stderr
    docs = load_all(result.stdout)
    assert [d["spec"]["pipeline"] for d in docs] == [
        "customer_sync",
        "legacy_inline",
        "sync_user_purchase_features",
    ]
    for doc in docs:
        validate_custom(doc)
        cronjob = render_cronjob(doc["metadata"]["name"], "data", "uid-1", doc["spec"])
        validate_strict(cronjob)
    by_name = {d["spec"]["pipeline"]: d for d in docs}
    features = by_name["sync_user_purchase_features"]["spec"]
    assert [c["name"] for c in features["connections"]] == ["oltp", "warehouse"]
    assert features["targets"][0]["table"] == "features.user_purchase_features_v1"
    assert by_name["customer_sync"]["spec"]["module"] == "team_pipelines"
    # The list of Secrets goes to stderr, so stdout pipes straight into kubectl.
    assert "ematix-flow-warehouse  key dsn" in result.stderr
    assert "ematix-flow-oltp  key dsn" in result.stderr
    assert "adhoc_backfill" in result.stderr


def test_two_runs_give_identical_bytes(project: Path) -> None:
    first = _export("--namespace", "data")
    second = _export("--namespace", "data")
    assert first.returncode == 0, first.stderr
    assert first.stdout.encode() == second.stdout.encode()


def test_no_dsn_or_password_anywhere_in_the_output(project: Path) -> None:
    result = _export("--namespace", "data")
    out = project.parent / "out"
    in_dir = _export("--output", str(out))
    assert result.returncode == 0 and in_dir.returncode == 0, result.stderr + in_dir.stderr
    texts = [result.stdout, result.stderr, in_dir.stdout, in_dir.stderr]
    texts += [p.read_text() for p in out.iterdir()]
    for text in texts:
        assert PASSWORD not in text
        assert "db.internal" not in text
        assert "etl:" not in text


def test_directory_output_is_gitops_friendly(project: Path) -> None:
    out = project.parent / "gitops" / "pipelines"
    out.mkdir(parents=True)
    (out / "kustomization.yaml").write_text("resources: []\n")
    (out / "stale.yaml").write_text(
        "# EmatixPipeline resources generated by `flow export-k8s --module team_pipelines`.\n"
    )
    (out / "other-module.yaml").write_text(
        "# EmatixPipeline resources generated by `flow export-k8s --module other`.\n"
    )
    first = _export("--output", str(out))
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "customer-sync.yaml",
        "kustomization.yaml",
        "legacy-inline.yaml",
        "other-module.yaml",
        "sync-user-purchase-features.yaml",
    ]
    assert "removed" in first.stdout and "stale.yaml" in first.stdout
    assert "Create these Secrets" in first.stdout
    for path in out.glob("*-*.yaml"):
        if path.name != "other-module.yaml":
            (doc,) = load_all(path.read_text())
            validate_custom(doc)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    second = _export("--output", str(out))
    assert second.returncode == 0
    assert "wrote" not in second.stdout and second.stdout.count("unchanged") == 3
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_secret_name_template(project: Path) -> None:
    result = _export("--secret-name-template", "db-{connection}")
    assert result.returncode == 0, result.stderr
    secrets = {c["secretName"] for d in load_all(result.stdout) for c in d["spec"]["connections"]}
    assert secrets == {"db-oltp", "db-warehouse"}
    bad = _export("--secret-name-template", "one-secret-for-all")
    assert bad.returncode == 3
    assert "{connection}" in bad.stderr


def test_unknown_module_is_reported_as_flow_run_reports_it(project: Path) -> None:
    result = flow("export-k8s", "--module", "no_such_module", "--image", IMAGE)
    assert result.returncode == 3
    assert "cannot import module 'no_such_module'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_module_without_scheduled_pipelines_is_a_usage_error(project: Path) -> None:
    (project / "empty_pipelines.py").write_text("X = 1\n")
    result = flow("export-k8s", "--module", "empty_pipelines", "--image", IMAGE)
    assert result.returncode == 2
    assert "registers no scheduled pipeline" in result.stderr


def test_image_and_module_are_required(project: Path) -> None:
    result = flow("export-k8s", "--module", "team_pipelines")
    assert result.returncode == 2
    assert "--image" in result.stderr
