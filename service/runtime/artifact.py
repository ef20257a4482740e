"""The artifact contract: `<repository>/<metric>/<version>/` with a manifest that vouches for it.

Loading checks the folder against its manifest (layout, every file's sha256, the spec) and
fails with one clear message, so a server never serves bytes nobody vouched for.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.runtime.evidence import EvidenceCombiner
from service.runtime.spec import MetricSpec

MANIFEST_NAME = "manifest.json"
MODEL_NAME = "model.onnx"
TOKENIZER_NAME = "tokenizer.json"
CARD_NAME = "MODEL_CARD.md"
ARTIFACT_FILES = (MODEL_NAME, TOKENIZER_NAME, CARD_NAME)
MANIFEST_FORMAT = "lunaserve-artifact/1"


class ArtifactError(ValueError):
    """An artifact folder that must not be served; the message names the folder and the fault."""


class FileDigest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class SourceInfo(BaseModel):
    """Where the weights came from, so a reader can rebuild or audit them."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    checkpoint: str = Field(description="The checkpoint that was exported (path or name).")
    base_model: str = Field("", description="The pretrained base it was fine-tuned from.")
    base_sha256: str = Field("", description="sha256 of the base weights, when known.")
    training: dict[str, Any] = Field(default_factory=dict, description="Data, seed, settings.")


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    format: Literal["lunaserve-artifact/1"] = "lunaserve-artifact/1"
    spec: MetricSpec
    source: SourceInfo
    export: dict[str, Any] = Field(description="Exporter versions, opset, optimisation, quantisation.")
    files: dict[str, FileDigest]
    parity: dict[str, Any] = Field(description="Figures against the reference model.")
    quality: dict[str, Any] = Field(default_factory=dict, description="Figures on test sets.")
    generalisation: dict[str, Any] = Field(
        default_factory=dict,
        description="Leave one task out: this recipe's models built without a task, scored on that task.",
    )
    evidence: EvidenceCombiner | None = Field(
        None, description="Evidence combined with the encoder's score; part of the metric when present."
    )
    created_at: str

    @model_validator(mode="after")
    def _evidence_needs_two_labels(self) -> Manifest:
        if self.evidence is not None and len(self.spec.labels) != 2:
            raise ValueError("an evidence combiner needs a metric with exactly two labels")
        return self

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=False) + "\n"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def digest_files(folder: Path, names: tuple[str, ...] = ARTIFACT_FILES) -> dict[str, FileDigest]:
    return {
        name: FileDigest(sha256=sha256_file(folder / name), bytes=(folder / name).stat().st_size)
        for name in names
    }


class Artifact:
    """A verified artifact folder: manifest, and the paths the runtime loads."""

    def __init__(self, folder: Path, manifest: Manifest) -> None:
        self.folder = folder
        self.manifest = manifest

    @property
    def spec(self) -> MetricSpec:
        return self.manifest.spec

    @property
    def model_path(self) -> Path:
        return self.folder / MODEL_NAME

    @property
    def tokenizer_path(self) -> Path:
        return self.folder / TOKENIZER_NAME


def read_manifest(folder: Path) -> Manifest:
    path = folder / MANIFEST_NAME
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{folder}: no {MANIFEST_NAME}; not an artifact folder") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable manifest: {exc}") from None
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ArtifactError(
            f"{path}: invalid manifest ({exc.error_count()} problems; first at {where}: {first['msg']})"
        ) from None


def load_artifact(folder: Path, *, check_layout: bool = True) -> Artifact:
    """Read and verify an artifact folder; raise ArtifactError on any mismatch.

    With `check_layout` the folder must sit at `<metric>/<version>` as its spec says, which is
    how the repository finds versions.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: not a directory")
    manifest = read_manifest(folder)
    spec = manifest.spec
    if check_layout and (folder.name != spec.version or folder.parent.name != spec.name):
        raise ArtifactError(
            f"{folder}: holds {spec.name} version {spec.version} but sits at"
            f" {folder.parent.name}/{folder.name}; expected {spec.name}/{spec.version}"
        )
    missing = [n for n in ARTIFACT_FILES if n not in manifest.files]
    if missing:
        raise ArtifactError(f"{folder}: manifest lists no digest for {missing}")
    for name, expected in manifest.files.items():
        path = folder / name
        if not path.is_file():
            raise ArtifactError(f"{folder}: {name} is listed in the manifest but missing")
        actual = sha256_file(path)
        if actual != expected.sha256:
            raise ArtifactError(
                f"{path}: sha256 {actual} does not match the manifest's {expected.sha256};"
                " the file was changed or corrupted"
            )
    return Artifact(folder, manifest)


def find_artifacts(repository: Path) -> list[Path]:
    """Every `<metric>/<version>` folder holding a manifest, sorted; hidden folders are skipped."""
    return sorted(
        p.parent
        for p in Path(repository).glob(f"*/*/{MANIFEST_NAME}")
        if not (p.parent.name.startswith(".") or p.parent.parent.name.startswith("."))
    )
