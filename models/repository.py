"""Writes repository entries: the artifact files, their manifest, and the model card.

An entry is assembled in `<repository>/.staging/` and renamed into place, so a server scanning
the repository never sees half an entry.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from models.model_card import render_model_card
from service.runtime.artifact import (
    CARD_NAME,
    MANIFEST_NAME,
    MODEL_NAME,
    TOKENIZER_NAME,
    Manifest,
    SourceInfo,
    digest_files,
    load_artifact,
    read_manifest,
)
from service.runtime.evidence import EvidenceCombiner
from service.runtime.spec import MetricSpec

STAGING = ".staging"  # beside the metrics, never matched as <metric>/<version>


def publish_entry(
    repository: Path,
    spec: MetricSpec,
    *,
    model: Path,
    tokenizer: Path,
    source: dict[str, Any],
    export: dict[str, Any],
    parity: dict[str, Any],
    quality: dict[str, Any] | None = None,
    evidence: EvidenceCombiner | None = None,
    force: bool = False,
    link_files: bool = False,
) -> Path:
    """Write `<repository>/<name>/<version>/` atomically and return it, verified.

    With `link_files`, the model and tokenizer are hard links to the given files where the file
    system allows (a recalibrated version shares its weights on disk; in git, equal files are one
    blob anyway), copies otherwise."""
    target = repository / spec.name / spec.version
    target.parent.mkdir(parents=True, exist_ok=True)
    (repository / STAGING).mkdir(exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{spec.name}-{spec.version}-", dir=repository / STAGING))
    staging.chmod(0o755)  # mkdtemp makes it private; a server may run as another user
    try:
        for source_file, name in ((model, MODEL_NAME), (tokenizer, TOKENIZER_NAME)):
            _place(source_file, staging / name, link=link_files)
        manifest = Manifest(
            spec=spec,
            source=SourceInfo(**source),
            export=export,
            files={},
            parity=parity,
            quality=quality or {},
            evidence=evidence,
            created_at=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        )
        _write_card_and_manifest(staging, manifest)
        if target.exists():
            if not force:
                raise FileExistsError(f"{target} exists; pass --force to replace that version")
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    load_artifact(target)
    return target


def _place(source: Path, target: Path, *, link: bool) -> None:
    if link:
        try:
            os.link(source, target)
            return
        except OSError:  # another file system, or links not allowed: a copy is as good
            pass
    shutil.copyfile(source, target)


def record_quality(folder: Path, name: str, figures: dict[str, Any]) -> Manifest:
    """Add one test set's figures to an entry's manifest and card, re-digesting the card."""
    load_artifact(folder)  # refuse to vouch for an entry that no longer checks out
    manifest = read_manifest(folder)
    quality = {**manifest.quality, name: figures}
    updated = manifest.model_copy(update={"quality": quality})
    _write_card_and_manifest(folder, updated)
    load_artifact(folder)
    return updated


def record_generalisation(folder: Path, held_out: str, figures: dict[str, Any]) -> Manifest:
    """Add a leave-one-task-out figure to an entry's manifest and card: `figures` are those of a
    model built by the entry's recipe without the task `held_out`, on that task's test pairs."""
    load_artifact(folder)
    manifest = read_manifest(folder)
    updated = manifest.model_copy(update={"generalisation": {**manifest.generalisation, held_out: figures}})
    _write_card_and_manifest(folder, updated)
    load_artifact(folder)
    return updated


def _write_card_and_manifest(folder: Path, manifest: Manifest) -> None:
    weights = manifest.model_copy(update={"files": digest_files(folder, (MODEL_NAME, TOKENIZER_NAME))})
    (folder / CARD_NAME).write_text(render_model_card(weights), encoding="utf-8")
    digested = manifest.model_copy(update={"files": digest_files(folder)})
    tmp = folder / (MANIFEST_NAME + ".tmp")
    tmp.write_text(digested.to_json(), encoding="utf-8")
    tmp.replace(folder / MANIFEST_NAME)
