"""``tollgate dev history`` (:mod:`tollgate_tools.history`): published topic versions checked against git history."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ConfigDict

from tests.cli_support import exit_status
from tollgate_cli.dev import dev_app
from tollgate_core import compat
from tollgate_tools import history
from tollgate_tools.schemagen import render

TOPIC = "orders.placed"


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrderV1(Closed):
    """rev1: an order."""

    order_id: str
    note: str | None = None


class OrderV2(Closed):
    """rev2: the optional note is gone (compatible under FORWARD: old readers never needed it)."""

    order_id: str


class OrderV3(Closed):
    """rev3: the note is back, as a number: fine for rev2's data, not for rev1's."""

    order_id: str
    note: int | None = None


class OrderWithChannel(Closed):
    """Adds an optional field: BACKWARD compatible with OrderV1."""

    order_id: str
    note: str | None = None
    channel: str = "web"


class Repo:
    """A throwaway git repository holding a topic catalog entry and its schema."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.schemas = path / "schemas"
        (self.schemas / "topics" / TOPIC).mkdir(parents=True)
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        result = subprocess.run(
            [
                "git",
                "-c",
                "user.name=tollgate tests",
                "-c",
                "user.email=tests@example.com",
                "-c",
                "commit.gpgsign=false",
                *args,
            ],
            cwd=self.path,
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout.strip()

    def write(
        self,
        model: type[BaseModel] | None,
        status: str = "published",
        mode: str = "BACKWARD_TRANSITIVE",
        versions: list[dict[str, Any]] | None = None,
    ) -> None:
        entry = {
            "name": TOPIC,
            "description": "Orders as the shop places them.",
            "owner": "shop",
            "producers": ["shop"],
            "consumers": ["billing"],
            "key": "order id",
            "partitions": 1,
            "compatibility": mode,
            "versions": versions if versions is not None else [{"version": 1, "status": status}],
        }
        (self.schemas / "topics" / f"{TOPIC}.yaml").write_text(yaml.safe_dump(entry, sort_keys=False))
        schema_path = self.schemas / "topics" / TOPIC / "v1.schema.json"
        if model is None:
            schema_path.unlink(missing_ok=True)
        else:
            schema_path.write_text(render(model.model_json_schema(by_alias=True, mode="serialization")))

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "--short=10", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path / "repo")


def failures(repo: Repo, against: str | None = None) -> list[str]:
    return history.check_repository(repo.schemas, against).failures


def test_pairwise_compatible_history_can_still_break_transitively() -> None:
    old, mid, new = (OrderV1, OrderV2, OrderV3)
    s = [m.model_json_schema(by_alias=True, mode="serialization") for m in (old, mid, new)]
    assert compat.check(s[0], s[1], "FORWARD") == []  # rev1 -> rev2 compatible (under the mode of the time)
    assert compat.check(s[1], s[2], "BACKWARD") == []  # rev3 compatible with rev2
    assert compat.check(s[0], s[2], "BACKWARD") != []  # ... but not with rev1


def test_transitive_check_compares_with_every_published_revision(repo: Repo) -> None:
    repo.write(OrderV1, mode="FORWARD_TRANSITIVE")
    rev1 = repo.commit("rev1: publish orders.placed v1")
    repo.write(OrderV2, mode="FORWARD_TRANSITIVE")
    rev2 = repo.commit("rev2: drop the note")
    assert failures(repo) == []  # the working tree is rev2, compatible with rev1 under FORWARD

    # rev3, now that consumers must read all history (BACKWARD_TRANSITIVE)
    repo.write(OrderV3, mode="BACKWARD_TRANSITIVE")
    found = failures(repo)
    assert len(found) == 1, found
    assert found[0].startswith(
        f"orders.placed.v1 [BACKWARD_TRANSITIVE] against {rev1}: $.note: type-narrowed"
    )
    assert rev2 not in found[0]

    report = history.check_repository(repo.schemas)
    assert "1 incompatibility" in report.summary
    assert "2 earlier schema(s) compared" in report.summary


def test_compatible_history_passes(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    repo.write(OrderV1)
    repo.commit("rev1")
    repo.write(OrderWithChannel)
    repo.commit("rev2: optional channel")
    assert exit_status(dev_app, "history", "--schemas-dir", str(repo.schemas)) == 0
    out = capsys.readouterr().out
    assert "ok   orders.placed.v1 [BACKWARD_TRANSITIVE]: compatible with 2 distinct schema(s)" in out
    assert out.rstrip().endswith("0 incompatibilities")

    repo.write(OrderV2)  # removes a field of a closed model: old messages carrying it would be refused
    assert exit_status(dev_app, "history", "--schemas-dir", str(repo.schemas)) == 1
    out = capsys.readouterr().out
    assert "FAIL orders.placed.v1 [BACKWARD_TRANSITIVE] against" in out
    assert "$.note: property-removed (backward)" in out
    assert "$.channel: property-removed (backward)" in out


def test_draft_revisions_do_not_count(repo: Repo) -> None:
    repo.write(OrderV3, status="draft")
    repo.commit("draft with a numeric note")
    repo.write(OrderV1, status="draft")
    repo.commit("draft with a text note")
    repo.write(OrderV1, status="published")
    repo.commit("publish")
    repo.write(OrderWithChannel)
    assert failures(repo) == []  # the numeric-note draft is not compared with
    repo.write(OrderV3)
    assert len(failures(repo)) == 1


def test_unpublishing_deleting_or_weakening_fails(repo: Repo) -> None:
    repo.write(OrderV1)
    repo.commit("publish")

    repo.write(OrderV1, status="draft")
    assert [f.split(": ")[1] for f in failures(repo)] == ["status-regressed"]

    repo.write(OrderV1, versions=[{"version": 2, "status": "draft"}])
    assert [f.split(": ")[1] for f in failures(repo)] == ["version-removed"]

    repo.write(None)
    assert [f.split(": ")[1] for f in failures(repo)] == ["schema-deleted"]

    repo.write(OrderV1, mode="NONE")
    assert [f.split(": ")[1] for f in failures(repo)] == ["compatibility-weakened"]

    repo.write(OrderV1, mode="FULL_TRANSITIVE")  # stronger is fine
    assert failures(repo) == []

    (repo.schemas / "topics" / f"{TOPIC}.yaml").unlink()
    assert [f.split(": ")[1] for f in failures(repo)] == ["topic-removed"]


def test_published_version_without_schema_fails(repo: Repo) -> None:
    repo.write(None)
    found = failures(repo)
    assert [f.split(": ")[1] for f in found] == ["schema-missing"]


def test_against_defaults_to_origin_main(repo: Repo) -> None:
    repo.write(OrderV1)
    base = repo.commit("publish")
    # main moved on: an optional text channel
    repo.write(OrderWithChannel)
    main = repo.commit("main: optional channel")
    repo.git("update-ref", "refs/remotes/origin/main", main)
    repo.git("checkout", "-q", "-b", "feature", base)
    # the feature branch adds a channel of another type: compatible with its own history, not with main

    class OrderChannelNumber(Closed):
        order_id: str
        note: str | None = None
        channel: int = 0

    repo.write(OrderChannelNumber)
    found = failures(repo)
    assert len(found) == 1
    assert "against origin/main: $.channel: type-narrowed" in found[0]
    assert history.check_repository(repo.schemas, "HEAD").failures == [], "the branch's own history is fine"
    assert "history up to origin/main" in history.check_repository(repo.schemas).summary


def test_shallow_and_young_clones_say_so(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo.write(OrderV1)
    repo.commit("rev1")
    repo.write(OrderWithChannel)
    repo.commit("rev2")
    clone = tmp_path / "clone"
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", f"file://{repo.path}", str(clone)],
        check=True,
        capture_output=True,
    )
    assert exit_status(dev_app, "history", "--schemas-dir", str(clone / "schemas")) == 0
    out = capsys.readouterr().out
    assert "note: shallow clone: only the 1 commit(s) present" in out

    fresh = Repo(tmp_path / "fresh")
    fresh.write(OrderV1)
    assert exit_status(dev_app, "history", "--schemas-dir", str(fresh.schemas)) == 0
    out = capsys.readouterr().out
    assert "note: no commits yet" in out
    assert "new  orders.placed.v1: no earlier published revision" in out


def test_errors_outside_git_or_with_an_unknown_revision(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "outside" / "schemas"
    (outside / "topics").mkdir(parents=True)
    assert exit_status(dev_app, "history", "--schemas-dir", str(outside)) == 2
    assert "not inside a git repository" in capsys.readouterr().err

    repo.write(OrderV1)
    repo.commit("rev1")
    assert (
        exit_status(dev_app, "history", "--schemas-dir", str(repo.schemas), "--against", "no-such-ref") == 2
    )
    assert "no such revision" in capsys.readouterr().err


def test_the_project_history_is_compatible() -> None:
    try:
        report = history.check_repository()
    except history.GitError as exc:
        pytest.skip(f"not a git checkout: {exc}")
    assert report.failures == [], "\n".join(report.failures)
