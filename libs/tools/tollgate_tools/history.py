"""The topic catalog's compatibility policy over git history: every published topic version of the working
tree is checked against every earlier published revision of its schema (the ``_TRANSITIVE`` in the modes)
with the subset checker :func:`tollgate_core.compat.check`, and no published version may be removed,
unpublished or lose its schema file.

``tollgate dev history [--against REV]`` (``make test`` runs it).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tollgate_core.compat import check
from tollgate_core.paths import schemas_dir
from tollgate_core.topics import TopicSpec
from tollgate_tools.schemagen import topic_schema_file


class GitError(RuntimeError):
    pass


class _Git:
    """Reads blobs of one repository through a single ``git cat-file --batch`` process."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self._batch: subprocess.Popen[bytes] | None = None

    def run(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            ["git", "-C", str(self.repo), *args], capture_output=True, text=True, check=False
        )
        if check and result.returncode != 0:
            raise GitError(f"git {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def ok(self, *args: str) -> bool:
        return (
            subprocess.run(["git", "-C", str(self.repo), *args], capture_output=True, check=False).returncode
            == 0
        )

    def blob(self, spec: str) -> bytes | None:
        """Content of ``<rev>:<path>`` (or a blob id), None when it does not exist."""
        if self._batch is None:
            self._batch = subprocess.Popen(
                ["git", "-C", str(self.repo), "cat-file", "--batch"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        assert self._batch.stdin is not None and self._batch.stdout is not None
        self._batch.stdin.write(spec.encode() + b"\n")
        self._batch.stdin.flush()
        header = self._batch.stdout.readline().decode().split()
        if len(header) != 3 or header[1] != "blob":
            if len(header) == 3:  # a tree or commit: skip its body
                self._batch.stdout.read(int(header[2]) + 1)
            return None
        data = self._batch.stdout.read(int(header[2]))
        self._batch.stdout.read(1)
        return data

    def close(self) -> None:
        if self._batch is not None:
            assert self._batch.stdin is not None
            self._batch.stdin.close()
            self._batch.wait()
            if self._batch.stdout is not None:
                self._batch.stdout.close()
            self._batch = None


@dataclass
class _Revision:
    """The blobs of the topics folder at one commit."""

    label: str  # short commit id, or the --against ref
    files: dict[str, str]  # path inside the topics folder -> blob id


@dataclass
class _Published:
    """One topic version as published in history."""

    first_seen: str  # label of the oldest revision where it is published
    # distinct schema blob id -> labels of the revisions where the version is published with it, oldest first
    schemas: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class _History:
    revisions: list[_Revision]
    against: str | None
    notes: list[str]


@dataclass
class Report:
    """Outcome of ``check_repository``: failures (each one line), per-version results, notes, a summary."""

    failures: list[str]
    results: list[str]
    notes: list[str]
    summary: str = ""

    @property
    def ok(self) -> bool:
        return not self.failures


def _parse_yaml(data: bytes) -> dict[str, Any] | None:
    try:
        loaded = yaml.safe_load(data.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return None
    return loaded if isinstance(loaded, dict) else None


def _published_versions(document: dict[str, Any]) -> Iterator[int]:
    """Published (or deprecated) JSON versions of a catalog entry, read leniently: an old revision may not
    fit today's catalog model."""
    for entry in document.get("versions") or []:
        if (
            isinstance(entry, dict)
            and entry.get("status") in ("published", "deprecated")
            and isinstance(entry.get("version"), int)
            and entry.get("format", "json") == "json"
        ):
            yield entry["version"]


def _directions(mode: str) -> int:
    """How many directions a mode enforces, to notice a weakened mode."""
    return {"NONE": 0, "BACKWARD": 1, "FORWARD": 1, "FULL": 2}.get(mode.removesuffix("_TRANSITIVE"), 0)


def check_repository(root: Path | None = None, against: str | None = None) -> Report:
    """Check the working tree's published topic versions against git history (see the module docstring)."""
    topics_dir = (root or schemas_dir()).resolve() / "topics"
    probe = _Git(topics_dir)
    if not probe.ok("rev-parse", "--git-dir"):
        raise GitError(f"{topics_dir} is not inside a git repository")
    toplevel = Path(probe.run("rev-parse", "--show-toplevel").strip()).resolve()
    prefix = topics_dir.relative_to(toplevel).as_posix()
    git = _Git(toplevel)  # paths given to and printed by git are relative to the top level
    try:
        history = _history(git, prefix, against)
        published, modes_at_against = _published(git, history)
        report = Report(failures=[], results=[], notes=history.notes)
        current = _working_catalog(topics_dir, prefix, report)
        _check_catalog(topics_dir, prefix, current, published, modes_at_against, history.against, report)
        _check_schemas(git, topics_dir, prefix, current, published, history.against, report)
        return report
    finally:
        git.close()


def _history(git: _Git, prefix: str, against: str | None) -> _History:
    """Every commit that touched the topics folder (oldest first), plus ``against``: the revisions whose
    catalog and schemas the working tree is compared with."""
    notes: list[str] = []
    has_head = git.ok("rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    commits = list(reversed(git.run("log", "--format=%H", "--", prefix).split())) if has_head else []
    if against is None:
        if git.ok("rev-parse", "--verify", "--quiet", "origin/main^{commit}"):
            against = "origin/main"
        elif has_head:
            against = "HEAD"
    targets = [(commit[:10], commit) for commit in commits]
    if against is not None:
        if not git.ok("rev-parse", "--verify", "--quiet", f"{against}^{{commit}}"):
            raise GitError(f"--against {against}: no such revision")
        against_commit = git.run("rev-parse", f"{against}^{{commit}}").strip()
        if against_commit in commits:
            targets = [(against if commit == against_commit else label, commit) for label, commit in targets]
        else:
            targets.append((against, against_commit))
    if git.run("rev-parse", "--is-shallow-repository").strip() == "true":
        notes.append(
            f"shallow clone: only the {len(commits)} commit(s) present that touch {prefix} are compared; "
            "fetch the full history (git fetch --unshallow) for a complete check"
        )
    elif not has_head:
        notes.append("no commits yet: nothing to compare with")
    elif len(commits) <= 1:
        notes.append(f"{len(commits)} commit(s) touch {prefix}: little history to compare with")
    revisions = []
    for label, commit in targets:
        files = {}
        for line in git.run("ls-tree", "-r", commit, "--", f"{prefix}/").splitlines():
            meta, _, path = line.partition("\t")
            parts = meta.split()
            if len(parts) == 3 and parts[1] == "blob":
                files[path.removeprefix(prefix + "/")] = parts[2]
        revisions.append(_Revision(label=label, files=files))
    return _History(revisions=revisions, against=against, notes=notes)


def _published(git: _Git, history: _History) -> tuple[dict[tuple[str, int], _Published], dict[str, str]]:
    """Which topic versions were published at which revision, with which schema; and the modes declared at
    the ``against`` revision. A schema only counts from the revisions where its version was published:
    drafts change freely."""
    published: dict[tuple[str, int], _Published] = {}
    modes_at_against: dict[str, str] = {}
    documents: dict[str, dict[str, Any] | None] = {}
    for revision in history.revisions:
        for path, blob in revision.files.items():
            if "/" in path or not path.endswith(".yaml"):
                continue
            if blob not in documents:
                data = git.blob(blob)
                documents[blob] = None if data is None else _parse_yaml(data)
            document = documents[blob]
            if document is None:
                continue
            topic = str(document.get("name", path.removesuffix(".yaml")))
            if revision.label == history.against:
                modes_at_against[topic] = str(document.get("compatibility", "NONE"))
            for version in _published_versions(document):
                entry = published.setdefault((topic, version), _Published(first_seen=revision.label))
                schema_blob = revision.files.get(topic_schema_file(topic, version))
                if schema_blob is not None:
                    entry.schemas.setdefault(schema_blob, []).append(revision.label)
    return published, modes_at_against


def _working_catalog(topics_dir: Path, prefix: str, report: Report) -> dict[str, TopicSpec]:
    current: dict[str, TopicSpec] = {}
    for path in sorted(topics_dir.glob("*.yaml")):
        try:
            spec = TopicSpec.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
        except (ValidationError, yaml.YAMLError) as exc:
            report.failures.append(f"{prefix}/{path.name}: catalog-invalid: {exc}")
            continue
        current[spec.name] = spec
    return current


def _check_catalog(
    topics_dir: Path,
    prefix: str,
    current: dict[str, TopicSpec],
    published: dict[tuple[str, int], _Published],
    modes_at_against: dict[str, str],
    against: str | None,
    report: Report,
) -> None:
    """A published version stays in the catalog, published (or deprecated), with its schema file."""
    for (topic, version), entry in sorted(published.items()):
        name = f"{topic}.v{version}"
        since = f"published since {entry.first_seen}"
        spec = current.get(topic)
        if spec is None:
            report.failures.append(f"{name}: topic-removed: {since}, {prefix}/{topic}.yaml is gone")
            continue
        now = next((v for v in spec.versions if v.version == version), None)
        if now is None:
            report.failures.append(f"{name}: version-removed: {since}, no longer in {prefix}/{topic}.yaml")
        elif now.status == "draft":
            report.failures.append(f"{name}: status-regressed: {since}, draft again in {prefix}/{topic}.yaml")
        schema_file = topic_schema_file(topic, version)
        if entry.schemas and not (topics_dir / schema_file).is_file():
            report.failures.append(f"{name}: schema-deleted: {since}, {prefix}/{schema_file} is gone")
    for topic, before in sorted(modes_at_against.items()):
        spec = current.get(topic)
        if spec is not None and _directions(spec.compatibility.value) < _directions(before):
            report.failures.append(
                f"{topic}: compatibility-weakened: {before} at {against}, {spec.compatibility.value} now"
            )


def _check_schemas(
    git: _Git,
    topics_dir: Path,
    prefix: str,
    current: dict[str, TopicSpec],
    published: dict[tuple[str, int], _Published],
    against: str | None,
    report: Report,
) -> None:
    """Each published version's working-tree schema against every distinct earlier published schema."""
    versions = compared = 0
    for topic, spec in sorted(current.items()):
        for version in spec.versions:
            if version.status == "draft" or version.format != "json":
                continue
            name = f"{topic}.v{version.version}"
            schema_file = topic_schema_file(topic, version.version)
            schema_path = topics_dir / schema_file
            entry = published.get((topic, version.version))
            earlier = entry.schemas if entry is not None else {}
            if not schema_path.is_file():
                if not earlier:  # with history, _check_catalog reported schema-deleted
                    report.failures.append(
                        f"{name}: schema-missing: a published JSON version needs {prefix}/{schema_file}"
                    )
                continue
            versions += 1
            text = schema_path.read_bytes()
            if not earlier:
                report.results.append(f"new  {name}: no earlier published revision to compare with")
                continue
            new_schema = json.loads(text)
            mode = spec.compatibility
            failures_before = len(report.failures)
            working_blob = _blob_id(text)
            for blob, labels in earlier.items():
                data = None if blob == working_blob else git.blob(blob)
                if data is None:
                    continue  # identical to the working tree
                compared += 1
                where = labels[0] if len(labels) == 1 else f"{labels[0]}..{labels[-1]}"
                for problem in check(json.loads(data), new_schema, mode):
                    report.failures.append(f"{name} [{mode.value}] against {where}: {problem}")
            if len(report.failures) == failures_before:
                revisions = sum(len(labels) for labels in earlier.values())
                report.results.append(
                    f"ok   {name} [{mode.value}]: compatible with {len(earlier)} distinct schema(s) "
                    f"published in {revisions} revision(s)"
                )
    failures = len(report.failures)
    report.summary = (
        f"compat: {versions} published topic version(s) checked, {compared} earlier schema(s) compared"
        + (f", history up to {against}" if against else "")
        + f": {failures} incompatibilit{'y' if failures == 1 else 'ies'}"
    )


def _blob_id(data: bytes) -> str:
    """Git's blob id of some content, to skip revisions identical to the working tree."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()
