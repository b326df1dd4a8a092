"""Segmentation models: nnU-Net v2 trained-model folders, their cards, label mapping and installation.

A model is any nnU-Net v2 trained-model folder (``dataset.json``, ``plans.json``,
``fold_N/checkpoint_*.pth``, as found in ``nnUNet_results/DatasetXXX/Trainer__Plans__configuration``) or
the zip that ``nnUNetv2_export_model_to_zip`` makes (installed into the user's data folder first).

Model card: ``liverplan_model.json`` beside ``dataset.json`` when present (name, version, labels,
training data, ``demo`` and ``not_for_clinical_use`` flags, free text), otherwise derived from
``dataset.json``. The card goes into every output's provenance.

Label mapping: the model's labels (``dataset.json`` "labels") map to LiverPlan's five structures by name
(:func:`engine.labels.structure_for_name`). A model trained elsewhere with other names gets an explicit,
editable map: ``liverplan_label_map.json`` beside ``dataset.json`` or a file/dict/preset passed in, in the
format ``{"liver": [1], "portal_vein": [64, "portal_vein_and_splenic_vein"], "ivc": ["inferior_vena_cava"]}``
(keys are LiverPlan structure keys, "vessels" for vessels without the portal/hepatic split, "none" for labels
not to use; values model label values or names). Known public releases (engine.releases) have built-in maps.
Each map adds to and overrides name matching (a partial map keeps the labels it does not name), see
:func:`resolve_label_mapping`.

Checkpoints are loaded with ``torch.load(weights_only=True)`` and an allow-list of the few non-tensor
types real nnU-Net 2.x checkpoints hold (numpy scalars/arrays/dtypes in the training log and
``_best_ema``); anything else is refused before any pickled code can run.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from .errors import ModelError
from .labels import BY_KEY, BY_LABEL, SYNONYMS, VESSEL_UNASSIGNED, Structure, normalise_name, structure_for_name
from .model_safety import check_card, check_checkpoint, check_dataset_json, check_plans
from .paths import bundled_models_dir, user_models_dir

log = logging.getLogger(__name__)

MODEL_CARD_FILE = "liverplan_model.json"
LABEL_MAP_FILE = "liverplan_label_map.json"
#: Largest uncompressed size accepted for a model zip (real 5-fold 3d_fullres models are ~1-2 GB).
MAX_ZIP_BYTES = 8 * 1024 ** 3
MAX_ZIP_ENTRIES = 10_000
_CHECKPOINT_PREFERENCE = ("checkpoint_final.pth", "checkpoint_best.pth", "checkpoint_latest.pth")

LabelMapSpec = Union[None, str, os.PathLike, Mapping[str, Any]]


# ------------------------------------------------------------------------------------------------
@dataclass
class ModelCard:
    """What a user is told about a model (and what every output records)."""

    name: str
    version: str = "unknown"
    labels: dict[str, int] = field(default_factory=dict)   # model label name -> value (dataset.json)
    training_data: str = ""
    demo: bool = False
    not_for_clinical_use: bool = False
    description: str = ""
    source: str = "dataset.json"                          # "liverplan_model.json" or "dataset.json"
    extra: dict[str, Any] = field(default_factory=dict)
    licence: str = ""                                     # as the card, dataset.json or the known release says


    def to_dict(self) -> dict:
        d = {"name": self.name, "version": self.version, "labels": dict(self.labels),
             "training_data": self.training_data, "demo": self.demo,
             "not_for_clinical_use": self.not_for_clinical_use, "description": self.description,
             "card_source": self.source, "licence": self.licence or "not stated"}
        d.update({k: v for k, v in self.extra.items() if k not in d})
        return d

    def headline(self) -> str:
        """One line for a model list: name, version and the warnings a clinician must see."""
        tags = []
        if self.demo:
            tags.append("demo — synthetic data")
        if self.not_for_clinical_use or self.demo:
            tags.append("not for clinical use")
        return f"{self.name} {self.version}" + (f" ({' — '.join(tags)})" if tags else "")   # as the GUI says it


@dataclass
class ModelInfo:
    """One usable model folder.

    ``label_to_structure`` maps the model's output values to LiverPlan labels (1-5); ``unmapped`` lists
    the model labels that map to nothing (they become background).
    """

    path: Path
    card: ModelCard
    dataset_json: dict
    plans: dict
    configuration: str
    folds: list[str]
    checkpoint_name: str
    label_to_structure: dict[int, int]
    unmapped: dict[int, str]
    mapping_source: str
    warnings: list[str] = field(default_factory=list)
    #: the known public release this is (engine.releases key), None for others
    release: Optional[str] = None
    #: model value -> Couinaud segment 1..8 for labels named liver_segment_N (the planning segment map)
    segment_values: dict[int, int] = field(default_factory=dict)

    # convenience --------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.card.name

    @property
    def display_name(self) -> str:
        """A name that tells models apart in a list: a card's own name as written; a name derived from
        dataset.json with its dataset folder and configuration (three TotalSegmentator parts, or two
        configurations of one export, never read alike)."""
        if self.card.source == MODEL_CARD_FILE:
            return self.card.name
        from .releases import dataset_folder_name

        ds = dataset_folder_name(self.path, self.plans)
        inst = installed_name(self.path)
        where = ", ".join(x for x in (ds if ds and ds != self.card.name else "", self.configuration,
                                      f"installed as {inst}" if inst not in (ds, self.path.name) else "") if x)
        return f"{self.card.name} ({where})"

    def headline(self) -> str:
        """One line for a model list: the distinct name, version, and the warnings a clinician must see."""
        h = self.card.headline()
        return self.display_name + h[len(self.card.name):] if h.startswith(self.card.name) else h

    @property
    def is_demo(self) -> bool:
        return self.card.demo

    @property
    def label_mapping(self) -> dict[int, int]:
        return dict(self.label_to_structure)

    @property
    def patch_size(self) -> list[int]:
        return list(_configuration_dict(self.plans, self.configuration).get("patch_size", []))

    @property
    def target_spacing(self) -> list[float]:
        return list(_configuration_dict(self.plans, self.configuration).get("spacing", []))

    @property
    def image_reader(self) -> str:
        """The nnU-Net image reader the model was trained with (decides the orientation of the array it is
        given; see engine.inference.orientation)."""
        from .inference.orientation import model_reader

        return model_reader(self.dataset_json, self.plans)[0]

    def structures(self) -> list[str]:
        """Names of the LiverPlan structures this model produces."""
        return [structure_of(v).name for v in sorted(set(self.label_to_structure.values()))]

    def checkpoint_paths(self, folds: Optional[list[str]] = None) -> list[Path]:
        return [self.path / f"fold_{f}" / self.checkpoint_name for f in (folds or self.folds)]

    def to_provenance(self) -> dict:
        """What an output records about the model that made it."""
        return {"card": self.card.to_dict(), "path": str(self.path), "configuration": self.configuration,
                "folds": list(self.folds), "checkpoint": self.checkpoint_name,
                "label_mapping": {str(k): structure_of(v).key for k, v in sorted(self.label_to_structure.items())},
                "couinaud_segments": {str(k): v for k, v in sorted(self.segment_values.items())},
                "release": self.release, "image_reader": self.image_reader,
                "unmapped_labels": {str(k): v for k, v in sorted(self.unmapped.items())},
                "mapping_source": self.mapping_source, "warnings": list(self.warnings)}

    def describe(self) -> str:
        """Several plain-language lines (``models show``)."""
        c = self.card
        lines = [self.headline(), f"  folder: {self.path}",
                 f"  configuration: {self.configuration}, folds: {', '.join(self.folds)}, "
                 f"checkpoint: {self.checkpoint_name}",
                 f"  patch size (voxels): {self.patch_size}, spacing (mm): {self.target_spacing}",
                 f"  training data: {c.training_data or 'not stated'}",
                 f"  licence: {c.licence or 'not stated (ask the provider of the model)'}",
                 f"  image reader: {self.image_reader}"]
        for k, label in (("segments", "segments"), ("reported_performance", "reported by its authors")):
            if c.extra.get(k):
                lines.append(f"  {label}: {c.extra[k]}")
        if c.description:
            lines.append(f"  description: {c.description}")
        lines.append(f"  label mapping ({self.mapping_source}):")
        names = {v: k for k, v in c.labels.items()}
        for value, lab in sorted(self.label_to_structure.items()):
            seg = f" (Couinaud segment {self.segment_values[value]})" if value in self.segment_values else ""
            lines.append(f"    {value} {names.get(value, '?')!r} -> {structure_of(lab).name}{seg}")
        for value, nm in sorted(self.unmapped.items()):
            lines.append(f"    {value} {nm!r} -> (not used)")
        for w in self.warnings:
            lines.append(f"  warning: {w}")
        return "\n".join(lines)


def structure_of(label: int) -> Structure:
    """The structure a LiverPlan label value stands for (the five, or "vessel, unassigned")."""
    return BY_LABEL.get(int(label)) or VESSEL_UNASSIGNED


# ------------------------------------------------------------------------------------------------
def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"The model folder {path.parent} has no {path.name}; it is not a complete "
                         f"nnU-Net v2 model ({what} is missing).") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"The {what} of the model in {path.parent} cannot be read ({exc}).") from exc
    if not isinstance(data, dict):
        raise ModelError(f"The {what} of the model in {path.parent} is not a JSON object.")
    return data


def _configuration_dict(plans: dict, name: str) -> dict:
    """A configuration's plans entry with nnU-Net's (shallow) ``inherits_from`` resolved."""
    confs = plans.get("configurations", {})
    if name not in confs:
        return {}
    conf = dict(confs[name])
    seen = {name}
    while "inherits_from" in conf:
        parent = conf.pop("inherits_from")
        if parent in seen or parent not in confs:
            break
        seen.add(parent)
        merged = dict(confs[parent])
        merged.update(conf)
        conf = merged
    return conf


def is_model_folder(path: Path) -> bool:
    return (path / "dataset.json").is_file() and (path / "plans.json").is_file() and any(path.glob("fold_*"))


def find_model_folders(root: Path, max_depth: int = 4) -> list[Path]:
    """Model folders at or below ``root`` (an nnU-Net results tree or an extracted zip)."""
    root = Path(root)
    found: list[Path] = []

    def walk(p: Path, depth: int) -> None:
        if is_model_folder(p):
            found.append(p)
            return
        if depth >= max_depth:
            return
        try:
            children = sorted(c for c in p.iterdir() if c.is_dir() and not c.is_symlink()
                              and not c.name.startswith("."))
        except OSError:
            return
        for c in children:
            walk(c, depth + 1)

    walk(root, 0)
    return found


def _pick_model_folder(root: Path) -> Path:
    if is_model_folder(root):
        return root
    candidates = find_model_folders(root)
    if not candidates:
        if not root.exists():
            raise ModelError(f"There is no model at {root}.")
        raise ModelError(f"{root} holds no nnU-Net v2 model: a model folder needs dataset.json, plans.json "
                         "and fold_N/checkpoint_final.pth.")
    # Prefer full-resolution 3D configurations; 2D ones are refused later with a clear message.
    def rank(p: Path) -> tuple:
        conf = p.name.split("__")[-1]
        return (0 if conf == "3d_fullres" else 1 if conf.startswith("3d") else 2, str(p))
    return sorted(candidates, key=rank)[0]


def _structure_key(name: str) -> Optional[str]:
    n = normalise_name(name)
    if n in BY_KEY:
        return n
    return SYNONYMS.get(n)


#: Target of a label-map key: a LiverPlan label (1-6) or None (deliberately not used).
_NOT_USED = -1


def _map_target(key: str) -> Optional[int]:
    """LiverPlan label for a label-map key; _NOT_USED for "none"/"ignore"; None for an unknown key."""
    from .releases import EXTRA_MAP_KEYS

    n = normalise_name(key)
    if n in EXTRA_MAP_KEYS:
        t = EXTRA_MAP_KEYS[n]
        return _NOT_USED if t is None else t
    skey = _structure_key(key)
    return BY_KEY[skey].label if skey else None


def parse_label_map(spec: Mapping[str, Any], model_labels: dict[str, int], lenient: bool = False) -> dict[int, int]:
    """Turn an explicit map ``{structure_key: [model value or model label name, ...]}`` into
    ``{model value: LiverPlan label}`` (value -1: deliberately not used, for the keys "none"/"ignore");
    raises ModelError naming anything it cannot understand. Keys besides the five structures: "vessels"
    (intrahepatic vessels without the portal/hepatic split, see engine.releases) and "none".
    lenient (presets, which name the labels of several models): names and values this model does not have
    are skipped instead of refused."""
    by_name = {normalise_name(k): v for k, v in model_labels.items()}
    values_of_model = set(model_labels.values())
    out: dict[int, int] = {}
    problems = []

    def put(value: int, key: str, target: int, shown) -> None:
        if value not in values_of_model:
            if lenient:
                return
            listed = ", ".join(f"{v} '{nm}'" for nm, v in sorted(model_labels.items(), key=lambda kv: kv[1]))
            problems.append(f"{shown} (for '{key}') is not a label of this model (its labels: {listed})")
        elif value in out and out[value] != target:
            other = "none" if out[value] == _NOT_USED else structure_of(out[value]).key
            problems.append(f"label {value} is given to two structures ({other} and {key}); "
                            "a model label can be only one")
        else:
            out[value] = target

    for key, values in spec.items():
        if str(key).startswith("_"):        # comments such as "_comment"
            continue
        target = _map_target(str(key))
        if target is None:
            problems.append(f"'{key}' is not one of {', '.join(list(BY_KEY) + ['vessels', 'none'])}")
            continue
        for v in (values if isinstance(values, (list, tuple)) else [values]):
            if isinstance(v, bool):
                problems.append(f"{v!r} for '{key}' is not a label value or name")
            elif isinstance(v, int) or (isinstance(v, str) and v.strip().isdigit()):
                put(int(v), str(key), target, int(v))
            elif isinstance(v, str) and normalise_name(v) in by_name and isinstance(by_name[normalise_name(v)], int):
                put(int(by_name[normalise_name(v)]), str(key), target, repr(v))
            elif not lenient:
                problems.append(f"'{v}' (for '{key}') is not a label of this model")
    if problems:
        raise ModelError("The label map cannot be used: " + "; ".join(problems) + ".")
    return out


def _load_label_map_spec(spec: LabelMapSpec) -> Optional[tuple[dict, str, bool]]:
    """(map, where it came from, lenient) for a map passed in: a dict, a JSON file, or a preset name
    (engine.releases.preset_names(): a known release's key, "totalsegmentator", "msd")."""
    from .releases import preset_map, preset_names

    if spec is None:
        return None
    if isinstance(spec, Mapping):
        return dict(spec), "label map passed in", False
    p = Path(spec)
    if not p.is_file():
        preset = preset_map(str(spec))
        if preset is not None:
            return preset, f"preset '{spec}'", True
        raise ModelError(f"The label map file {p} does not exist (built-in presets: {', '.join(preset_names())}).")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"The label map file {p} cannot be read as JSON ({exc}).") from None
    if isinstance(data, str) and preset_map(data) is not None:
        return preset_map(data), f"preset '{data}' (file {p})", True
    if not isinstance(data, dict):
        raise ModelError(f"The label map file {p} must hold a JSON object such as "
                         '{"liver": [1], "portal_vein": [2]}.')
    return data, f"label map {p}", False


def _name_mapping(labels: dict[str, int]) -> tuple[dict[int, int], dict[int, int]]:
    """Mapping by name (synonyms, unsplit vessels, Couinaud segments): ({value: label}, {value: segment})."""
    from .releases import couinaud_segment, is_unsplit_vessel_name

    mapping: dict[int, int] = {}
    segments: dict[int, int] = {}
    for nm, value in labels.items():
        seg = couinaud_segment(nm)
        if seg is not None:
            mapping[value] = BY_KEY["liver"].label
            segments[value] = seg
            continue
        if is_unsplit_vessel_name(nm):
            mapping[value] = VESSEL_UNASSIGNED.label
            continue
        st = structure_for_name(nm)
        if st is not None:
            mapping[value] = st.label
    return mapping, segments


def resolve_label_mapping(folder: Path, plans: dict, labels: dict[str, int],
                          label_map: LabelMapSpec) -> tuple[dict[int, int], str, Optional[str], dict[int, int]]:
    """How a model's labels become LiverPlan's: (value -> label, where that came from, known release key,
    value -> Couinaud segment).

    Layers, each adding to and overriding the one before: names (synonyms), the known release's built-in
    map, ``liverplan_label_map.json`` beside the model, the map passed in (file, dict or preset). A partial map
    therefore adds to name matching (a map naming only ``liver_vessels`` keeps ``liver_tumor`` by name);
    a label mapped to "none" is dropped."""
    from .releases import recognise

    mapping, segments = _name_mapping(labels)
    sources = ["by name (dataset.json labels)"] if mapping else []
    release = recognise(folder, plans, labels)
    layers: list[tuple[dict, str, bool]] = []
    if release is not None:
        layers.append(({k: list(v) for k, v in release.label_map.items()}, f"built-in map for {release.title}", True))
    if (folder / LABEL_MAP_FILE).is_file():
        layers.append((_read_json(folder / LABEL_MAP_FILE, "label map"), f"label map {folder / LABEL_MAP_FILE}", False))
    given = _load_label_map_spec(label_map)
    if given is not None:
        layers.append(given)
    for spec, where, lenient in layers:
        layer = parse_label_map(spec, labels, lenient=lenient)
        if layer:
            sources.append(where)
        mapping.update(layer)
    mapping = {v: lab for v, lab in mapping.items() if lab != _NOT_USED}
    segments = {v: s for v, s in segments.items() if mapping.get(v) == BY_KEY["liver"].label}
    return mapping, " + ".join(sources) or "by name (dataset.json labels)", release.key if release else None, segments


def _card_from(folder: Path, dataset_json: dict, labels: dict[str, int], plans: Optional[dict] = None) -> ModelCard:
    card_path = folder / MODEL_CARD_FILE
    if card_path.is_file():
        c = _read_json(card_path, "model card")
        check_card(c, str(card_path))
        known = {"name", "version", "labels", "training_data", "demo", "not_for_clinical_use", "description"}
        td = c.get("training_data", "")
        return ModelCard(name=str(c.get("name") or folder.name), version=str(c.get("version", "unknown")),
                         labels=labels, training_data=td if isinstance(td, str) else json.dumps(td),
                         demo=bool(c.get("demo", False)),
                         not_for_clinical_use=bool(c.get("not_for_clinical_use", c.get("demo", False))),
                         description=str(c.get("description", "")), source=MODEL_CARD_FILE,
                         extra={k: v for k, v in c.items() if k not in known | {"licence", "license"}},
                         licence=str(c.get("licence") or c.get("license") or dataset_json.get("licence")
                                     or dataset_json.get("license") or ""))
    # Derived card: dataset folder name (DatasetXXX_Name) is the most telling name nnU-Net keeps.
    dataset_folder = folder.parent.name if folder.parent.name.lower().startswith("dataset") else ""
    name = str(dataset_json.get("name") or dataset_folder or folder.name)
    licence = str(dataset_json.get("licence") or dataset_json.get("license") or "")
    from .releases import recognise, release_card_fields

    release = recognise(folder, plans or {}, labels)
    if release is not None:
        return ModelCard(name=release.title, version=dataset_folder or str(dataset_json.get("release", "unknown")),
                         labels=labels, training_data=str(dataset_json.get("description", "") or release.reported),
                         source="dataset.json", licence=licence or release.licence,
                         extra=release_card_fields(release))
    n_train = dataset_json.get("numTraining")
    td = str(dataset_json.get("description", "") or dataset_json.get("reference", ""))
    if n_train:
        td = (td + "; " if td else "") + f"{n_train} training cases"
    return ModelCard(name=name, version=str(dataset_json.get("release", dataset_json.get("version", "unknown"))),
                     labels=labels, training_data=td, source="dataset.json", licence=licence)


def load_model(path: Union[str, os.PathLike], label_map: LabelMapSpec = None,
               checkpoint_name: Optional[str] = None, folds: Optional[list[str]] = None) -> ModelInfo:
    """Read and check a model folder (or a results tree holding one) without loading its weights.

    Raises ModelError with a plain message for missing files, 2D/cascade-only models, multi-channel
    models, region-based label sets, and label sets of which nothing maps to LiverPlan's structures.
    """
    root = Path(path).expanduser()
    if root.is_file() and root.suffix.lower() == ".zip":
        raise ModelError(f"{root.name} is a model package (zip); install it first "
                         "(liverplan models install ZIP, or Install model... in the application).")
    folder = _pick_model_folder(root).resolve()
    dataset_json = _read_json(folder / "dataset.json", "dataset.json")
    plans = _read_json(folder / "plans.json", "plans.json")
    # data, never code: every name nnU-Net would import and every number, before anything else reads them
    check_dataset_json(dataset_json, str(folder / "dataset.json"))
    check_plans(plans, where=str(folder / "plans.json"))
    warnings: list[str] = []

    # --- folds and checkpoints ------------------------------------------------------------------
    fold_dirs = sorted(p for p in folder.glob("fold_*") if p.is_dir())
    names = [checkpoint_name] if checkpoint_name else list(_CHECKPOINT_PREFERENCE)
    chosen = None
    for nm in names:
        if any((d / nm).is_file() for d in fold_dirs):
            chosen = nm
            break
    if chosen is None:
        raise ModelError(f"The model in {folder} has no trained weights: none of its fold folders holds "
                         f"{' or '.join(names)}.")
    available = [d.name[len("fold_"):] for d in fold_dirs if (d / chosen).is_file()]
    if folds:
        missing = [f for f in folds if str(f) not in available]
        if missing:
            raise ModelError(f"The model in {folder} has no fold {', '.join(map(str, missing))} "
                             f"(available: {', '.join(available)}).")
        available = [str(f) for f in folds]
    # fold_all is a model trained on all cases; nnU-Net's own auto-detection skips it unless alone.
    if len(available) > 1 and "all" in available:
        available = [f for f in available if f != "all"]
    available.sort(key=lambda f: (not f.isdigit(), int(f) if f.isdigit() else 0))

    # --- configuration ----------------------------------------------------------------------------
    confs = plans.get("configurations", {})
    parts = folder.name.split("__")
    configuration = parts[-1] if len(parts) == 3 and parts[-1] in confs else None
    if configuration is None:
        configuration = _configuration_from_checkpoint(folder / f"fold_{available[0]}" / chosen)
    if configuration not in confs:
        raise ModelError(f"The model in {folder} was trained with configuration '{configuration}', which its "
                         "plans.json does not describe; the folder is incomplete.")
    conf = _configuration_dict(plans, configuration)
    patch = conf.get("patch_size", [])
    if isinstance(patch, (list, tuple)) and len(patch) == 2:
        raise ModelError(f"The model in {folder} is a 2D model (configuration '{configuration}'); LiverPlan "
                         "needs a 3D nnU-Net model (e.g. 3d_fullres).")
    if conf.get("previous_stage") or "cascade" in configuration:
        raise ModelError(f"The model in {folder} is the second stage of an nnU-Net cascade, which needs the "
                         "low-resolution model's output; use a 3d_fullres model instead.")
    check_plans(plans, configuration, where=str(folder / "plans.json"))

    # --- input channels ------------------------------------------------------------------------
    channels = dataset_json.get("channel_names", dataset_json.get("modality", {}))
    if len(channels) != 1:
        raise ModelError(f"The model in {folder} expects {len(channels)} input images per case "
                         f"({', '.join(map(str, channels.values()))}); LiverPlan gives it one CT.")
    channel = str(next(iter(channels.values()))) if channels else "CT"
    norm = (conf.get("normalization_schemes") or ["CTNormalization"])[0]
    if normalise_name(channel) != "ct":
        warnings.append(f"This model was trained on '{channel}' images, not CT (intensity normalisation "
                        f"{norm}); its results on a CT are unreliable.")

    # --- labels ----------------------------------------------------------------------------------
    raw_labels = dataset_json.get("labels", {})
    if any(isinstance(v, (list, tuple)) for v in raw_labels.values()):
        raise ModelError(f"The model in {folder} is region-based (overlapping labels); LiverPlan supports "
                         "nnU-Net models with one label per voxel.")
    labels = {str(k): int(v) for k, v in raw_labels.items() if int(v) != 0}
    card = _card_from(folder, dataset_json, labels, plans)
    mapping, mapping_source, release, segment_values = resolve_label_mapping(folder, plans, labels, label_map)
    unmapped = {v: nm for nm, v in labels.items() if v not in mapping}
    if not mapping:
        listed = ", ".join(f"{v} '{nm}'" for v, nm in sorted(unmapped.items())) or "none"
        raise ModelError(
            f"None of this model's labels ({listed}) corresponds to a LiverPlan structure (liver, portal vein, "
            f"hepatic veins, IVC, CRLM). Write a label map {LABEL_MAP_FILE} beside its dataset.json, e.g. "
            '{"liver": [1], "portal_vein": [2], "vessels": [3], "none": [4]} (on the command line '
            '`models install --label-map FILE`, or --label-map FILE when segmenting, does the same, and '
            '--extra-label-map FILE for an --extra-model; the window asks with a label-mapping dialog).')
    if unmapped:
        warnings.append("These model labels are not used (no LiverPlan structure): "
                        + ", ".join(f"{v} '{nm}'" for v, nm in sorted(unmapped.items())) + ".")
    return ModelInfo(path=folder, card=card, dataset_json=dataset_json, plans=plans,
                     configuration=configuration, folds=available, checkpoint_name=chosen,
                     label_to_structure=mapping, unmapped=unmapped, mapping_source=mapping_source,
                     warnings=warnings, release=release, segment_values=segment_values)


def _configuration_from_checkpoint(path: Path) -> str:
    ckpt = load_checkpoint(path)
    try:
        return str(ckpt["init_args"]["configuration"])
    except (KeyError, TypeError):
        raise ModelError(f"The checkpoint {path} does not say which nnU-Net configuration it was trained "
                         "with; it is not an nnU-Net v2 checkpoint.") from None


# ------------------------------------------------------------------------------------------------
def _checkpoint_safe_globals() -> list:
    """The non-tensor types found in nnU-Net 2.x checkpoints.

    nnU-Net's checkpoint holds 'network_weights' (tensors), 'optimizer_state' and 'grad_scaler_state'
    (tensors, floats, bools), 'logging' (lists of floats and numpy float64 scalars from np.nanmean),
    '_best_ema' (a numpy float64), 'init_args' (plans/dataset dicts, strings, ints and a torch.device) and
    'trainer_name'. numpy scalars pickle as numpy._core.multiarray.scalar + a dtype (and arrays via
    _reconstruct); checkpoints written under numpy 1.x name them numpy.core.*.
    """
    import numpy as np

    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed core -> _core
    scalar = core.multiarray.scalar
    reconstruct = core.multiarray._reconstruct
    allowed: list = [scalar, reconstruct, np.ndarray, np.dtype,
                     (scalar, "numpy.core.multiarray.scalar"),
                     (reconstruct, "numpy.core.multiarray._reconstruct")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for nm in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType", "Int16DType",
                   "Int8DType", "UInt8DType", "UInt16DType", "UInt32DType", "UInt64DType", "BoolDType"):
            if hasattr(dtypes, nm):
                allowed.append(getattr(dtypes, nm))
    return allowed


def _damaged_checkpoint(path: Path) -> str:
    return (f"The checkpoint {path.name} in {path.parent} is damaged or incomplete (it may have been cut off "
            "while copying), or it is not a PyTorch checkpoint; copy or install the model again.")


def load_checkpoint(path: Union[str, os.PathLike]) -> dict:
    """Load an nnU-Net checkpoint on the CPU without running pickled code.

    Raises ModelError when the file is missing, damaged, or needs types outside the allow-list (a
    checkpoint that would execute code when loaded): it is never loaded with ``weights_only=False``.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"The checkpoint {path} does not exist.")
    try:
        with torch.serialization.safe_globals(_checkpoint_safe_globals()):
            ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception:  # noqa: BLE001 - a damaged file: say so below
            unsafe = []
        # legacy (non-zip) checkpoints cannot be scanned up-front: torch names the foreign global in its error
        unsafe = unsafe or re.findall(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if unsafe:
            raise ModelError(
                f"The checkpoint {path.name} in {path.parent} was refused as unsafe: it contains Python objects that are "
                f"not model weights ({', '.join(unsafe[:6])}) and loading it could run code from the file. "
                "Use a model from a trusted source saved by nnU-Net.") from None
        # no foreign objects named in it: not a checkpoint at all, or a damaged one. torch's own text
        # suggests loading it unsafely, which is never the answer here: it is not logged or shown.
        log.warning("checkpoint %s: refused by the safe loader (%s)", path, _torch_reason(exc))
        raise ModelError(_damaged_checkpoint(path)) from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        log.warning("checkpoint %s: %s", path, _torch_reason(exc))
        raise ModelError(_damaged_checkpoint(path)) from None
    if not isinstance(ckpt, dict) or "network_weights" not in ckpt:
        raise ModelError(f"The checkpoint {path} is not an nnU-Net checkpoint (no network weights in it).")
    check_checkpoint(ckpt, path)     # trainer name and init_args: data, never code (engine.model_safety)
    return ckpt


def _torch_reason(exc: BaseException) -> str:
    """torch's error without its advice to load with ``weights_only=False`` (never the answer here)."""
    text = str(exc)
    m = re.search(r"(Unsupported (?:operand|global)[^\n]*|Invalid magic number[^\n]*|[^\n]*corrupt[^\n]*)", text)
    if m:
        return m.group(1)[:200]
    first = text.splitlines()[0][:200] if text else type(exc).__name__
    return type(exc).__name__ if "weights_only" in first or "Weights only" in first else first


# ------------------------------------------------------------------------------------------------
def discover_models(extra_dirs: Optional[list[Union[str, os.PathLike]]] = None,
                    skipped: Optional[list[tuple[Path, str]]] = None) -> list[ModelInfo]:
    """The models LiverPlan can use: bundled (``resources/models/*``), the user's installed models
    (``<user data>/models/*``) and any ``extra_dirs``. Broken folders (or ones whose labels name none of
    LiverPlan's structures) are skipped with a logged reason, also appended to ``skipped`` as
    (folder, reason) when a list is given, so that a user can be told why a model is not offered."""
    roots: list[Path] = []
    for base in [bundled_models_dir(), user_models_dir(create=False)] + [Path(p) for p in (extra_dirs or [])]:
        if base.is_dir():
            roots.extend(sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")))
    out: list[ModelInfo] = []
    seen: set[Path] = set()
    for r in roots:
        for folder in find_model_folders(r):
            if folder.resolve() in seen:
                continue
            seen.add(folder.resolve())
            try:
                out.append(load_model(folder))
            except ModelError as err:
                log.info("skipping model %s: %s", folder, err)      # `models list` and the GUI name it
                if skipped is not None:
                    skipped.append((folder, str(err)))
    return out


def bundled_demo_model() -> Optional[ModelInfo]:
    """The demo model shipped in ``resources/models/demo`` (None when it is not there or broken)."""
    demo = bundled_models_dir() / "demo"
    if not demo.is_dir() or not find_model_folders(demo):
        return None
    try:
        return load_model(demo)
    except ModelError as err:
        log.warning("the bundled demo model cannot be used: %s", err)
        return None


def find_model(spec: Union[str, os.PathLike, ModelInfo], label_map: LabelMapSpec = None) -> ModelInfo:
    """A model from a folder path, a model name (card name or installed folder name) or 'demo'."""
    if isinstance(spec, ModelInfo):
        return spec
    p = Path(spec).expanduser()
    if p.exists():
        return load_model(p, label_map=label_map)
    name = str(spec)
    if name == "demo":
        demo = bundled_demo_model()
        if demo is None:
            raise ModelError("The demo model is not installed with this copy of LiverPlan.")
        return load_model(demo.path, label_map=label_map) if label_map is not None else demo
    skipped: list[tuple[Path, str]] = []
    models = discover_models(skipped=skipped)
    chosen = _choose_by_name(name, models)
    if chosen is not None:
        return load_model(chosen.path, label_map=label_map) if label_map is not None else chosen
    for folder, reason in skipped:
        if name == installed_name(folder):
            # installed but unusable as it is (e.g. its labels name no LiverPlan structure): a label map may
            # be exactly what it needs; without one, say why it is not usable rather than "no such model"
            if label_map is not None:
                return load_model(folder, label_map=label_map)
            raise ModelError(f"The installed model '{name}' cannot be used: {reason}")
    known = ", ".join(sorted({installed_name(m.path) for m in models})) or "none installed"
    raise ModelError(f"There is no model called '{name}' (installed: {known}; 'demo' is the bundled demo model); "
                     "give a model folder, or install a model zip first.")


def _names_of(m: ModelInfo) -> set[str]:
    from .releases import dataset_folder_name

    names = {m.card.name, installed_name(m.path), m.display_name, m.path.name, str(m.dataset_json.get("name") or "")}
    ds = dataset_folder_name(m.path, m.plans)
    if ds:
        names.add(ds)
    if m.release:
        names.add(m.release)
    return {n.lower() for n in names if n}


def configuration_rank(path: Path) -> tuple:
    """Which of several configurations of one model runs (the smallest rank): 3d_fullres, then other 3D ones."""
    conf = path.name.split("__")[-1]
    return (0 if conf == "3d_fullres" else 1 if conf.startswith("3d") else 2, str(path))


def runs_by_default(model: ModelInfo, models: list[ModelInfo]) -> bool:
    """True when ``model`` is the configuration ``--model <installed name>`` runs among its installed folder's."""
    top = installed_name(model.path)
    same = [m for m in models if installed_name(m.path) == top]
    return min(same, key=lambda m: configuration_rank(m.path)).path == model.path


def _choose_by_name(name: str, models: list[ModelInfo]) -> Optional[ModelInfo]:
    """The model a name means: None when none; the default configuration when the name means one installed
    model; ModelError listing the candidates when it could mean several (never one picked silently)."""
    n = name.lower()
    hits = [m for m in models if n in _names_of(m)]
    if not hits:
        return None
    exact = [m for m in hits if n in {m.display_name.lower(), str(m.path).lower()}]
    if len(exact) == 1:
        return exact[0]
    groups: dict[str, list[ModelInfo]] = {}
    for m in hits:
        groups.setdefault(installed_name(m.path), []).append(m)
    if len(groups) == 1:
        return min(next(iter(groups.values())), key=lambda m: configuration_rank(m.path))
    listed = "; ".join(f"{m.display_name}: --model {installed_name(m.path)}"
                       for g in groups.values() for m in sorted(g, key=lambda m: configuration_rank(m.path))[:1])
    raise ModelError(f"'{name}' could mean {len(groups)} installed models; say which: {listed}.")


@dataclass
class ModelSetEntry:
    """A model set (engine.releases.MODEL_SETS) as installed here: the parts found (run order), the required
    parts missing, notes on optional parts left out. What a model list offers beside single models."""

    name: str
    description: str
    parts: list[ModelInfo]
    missing: list[str]
    notes: list[str]

    @property
    def complete(self) -> bool:
        return not self.missing

    def headline(self) -> str:
        state = "" if self.complete else f" — incomplete: install {', '.join(self.missing)}"
        return f"{self.name} (model set, {len(self.parts)} parts){state}"

    def structures(self) -> list[str]:
        return sorted({s for m in self.parts for s in m.structures()})

    def describe(self) -> str:
        lines = [self.headline(), f"  {self.description}"]
        for i, m in enumerate(self.parts, 1):
            lines.append(f"  {i}. {m.display_name} — licence: {m.card.licence or 'not stated'}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _set_entry(ms, models: list[ModelInfo]) -> ModelSetEntry:
    from .releases import BY_RELEASE_KEY

    parts: list[ModelInfo] = []
    notes: list[str] = []
    missing: list[str] = []
    for key in ms.all_parts():
        cands = [m for m in models if m.release == key]
        if not cands:
            if key in ms.parts:
                missing.append(BY_RELEASE_KEY[key].title)
            else:
                notes.append(f"{BY_RELEASE_KEY[key].title} is not installed; the set runs without it.")
            continue
        parts.append(min(cands, key=lambda m: (not runs_by_default(m, models), configuration_rank(m.path))))
    return ModelSetEntry(ms.name, ms.description, parts, missing, notes)


def available_model_sets(models: list[ModelInfo]) -> list[ModelSetEntry]:
    """The model sets of which at least one part is installed among ``models``."""
    from .releases import MODEL_SETS

    out = []
    for ms in MODEL_SETS:
        e = _set_entry(ms, models)
        if e.parts:
            out.append(e)
    return out


def find_model_set(spec: str, label_maps: Optional[Mapping[str, LabelMapSpec]] = None):
    """The parts of a model set (engine.releases.MODEL_SETS) installed here: (ModelSet, [ModelInfo in run
    order], notes). None when ``spec`` names no set. ModelError naming what to install when a required part
    is missing."""
    from .releases import find_model_set as _find_set

    ms = _find_set(str(spec))
    if ms is None:
        return None
    e = _set_entry(ms, discover_models())
    if e.missing:
        raise ModelError(f"The model set '{ms.name}' needs {', '.join(e.missing)}, which "
                         f"{'is' if len(e.missing) == 1 else 'are'} not installed. Install the release zips "
                         "(`liverplan models install-folder DIR`, or Models > Install a folder of model zips...).")
    parts = [load_model(m.path, label_map=(label_maps or {})[m.release]) if (label_maps or {}).get(m.release)
             else m for m in e.parts]
    return ms, parts, e.notes


def zip_model_labels(zip_path: Union[str, os.PathLike]) -> dict[str, int]:
    """The labels (name -> value, background left out) of the model in a zip, read without extracting it:
    what a label-mapping dialog asks about before an install."""
    zp = Path(zip_path)
    try:
        with zipfile.ZipFile(zp) as zf:
            names = [n for n in zf.namelist() if n.replace("\\", "/").rsplit("/", 1)[-1] == "dataset.json"]
            if not names:
                raise ModelError(f"{zp.name} holds no dataset.json; it is not an nnU-Net model package.")
            data = json.loads(zf.read(sorted(names, key=len)[0]).decode("utf-8"))
    except (zipfile.BadZipFile, OSError, ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"The labels of {zp.name} cannot be read ({exc}).") from None
    labels = data.get("labels", {}) if isinstance(data, dict) else {}
    return {str(k): int(v) for k, v in labels.items()
            if not isinstance(v, (list, tuple)) and str(v).lstrip("-").isdigit() and int(v) != 0}


def installed_name(path: Path) -> str:
    """The name ``--model`` takes for a model in the user's or the bundled models folder (its top folder
    there), else the folder's own name."""
    for base in (user_models_dir(create=False), bundled_models_dir()):
        try:
            return path.resolve().relative_to(base.resolve()).parts[0]
        except (ValueError, IndexError):
            continue
    return path.name


# ------------------------------------------------------------------------------------------------
def _safe_name(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")
    return s[:80] or "model"


def validate_model_zip(zip_path: Union[str, os.PathLike], max_bytes: int = MAX_ZIP_BYTES) -> list[zipfile.ZipInfo]:
    """Check a model zip before anything is extracted; returns its file entries.

    Refused (ModelError): not a zip, absolute or ``..`` paths, symbolic links or other special files,
    too many entries, more than ``max_bytes`` uncompressed, or no dataset.json + plans.json +
    fold_N/checkpoint_*.pth in one folder.
    """
    zp = Path(zip_path)
    if not zp.is_file():
        raise ModelError(f"The model package {zp} does not exist.")
    try:
        zf = zipfile.ZipFile(zp)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"{zp.name} is not a valid zip file ({exc}).") from None
    with zf:
        infos = zf.infolist()
    if len(infos) > MAX_ZIP_ENTRIES:
        raise ModelError(f"{zp.name} holds {len(infos)} files, more than a model package can (limit "
                         f"{MAX_ZIP_ENTRIES}); it was not installed.")
    total = 0
    files = []
    for info in infos:
        name = info.filename.replace("\\", "/")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts:
            raise ModelError(f"{zp.name} was refused: the entry '{info.filename}' would be written outside the "
                             "model folder (path traversal).")
        mode = (info.external_attr >> 16) & 0xFFFF
        # Zips written without Unix file types (Windows, writestr) carry only permission bits: regular files.
        ftype = stat.S_IFMT(mode)
        if ftype and (stat.S_ISLNK(mode) or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))):
            kind = "a symbolic link" if stat.S_ISLNK(mode) else "a special file"
            raise ModelError(f"{zp.name} was refused: the entry '{info.filename}' is {kind}, which a model "
                             "package never needs.")
        total += info.file_size
        if total > max_bytes:
            raise ModelError(f"{zp.name} unpacks to more than {max_bytes / 1024 ** 3:.1f} GB; it was not "
                             "installed.")
        if not info.is_dir():
            files.append(info)
    # Expected files: dataset.json, plans.json and a checkpoint under fold_* in the same folder.
    dirs: dict[str, set[str]] = {}
    for info in files:
        d, _, base = info.filename.replace("\\", "/").rpartition("/")
        dirs.setdefault(d, set()).add(base)
    ok = False
    for d, names in dirs.items():
        if {"dataset.json", "plans.json"} <= names:
            prefix = (d + "/") if d else ""
            if any(re.match(re.escape(prefix) + r"fold_[^/]+/checkpoint_[^/]+\.pth$", i.filename) for i in files):
                ok = True
                break
    if not ok:
        raise ModelError(f"{zp.name} is not an nnU-Net model package: it needs dataset.json, plans.json and "
                         "fold_N/checkpoint_final.pth in one folder.")
    return files


def install_model_zip(zip_path: Union[str, os.PathLike], overwrite: bool = False,
                      dest_root: Optional[Union[str, os.PathLike]] = None, name: Optional[str] = None,
                      max_bytes: int = MAX_ZIP_BYTES, label_map: LabelMapSpec = None) -> ModelInfo:
    """Validate and install a model zip into the user's models folder; returns the installed model.

    The zip is extracted into a temporary folder beside the destination, every checkpoint is loaded
    safely (refusing unsafe pickles) and the model is checked before it is moved into place. An already
    installed model of the same name is replaced only when ``overwrite`` is True. ``label_map`` (file,
    dict or preset): for a model whose labels LiverPlan does not know; it is saved beside the model's
    dataset.json (``liverplan_label_map.json``) as the label values it resolved to.
    """
    zp = Path(zip_path)
    files = validate_model_zip(zp, max_bytes)
    root = Path(dest_root) if dest_root is not None else user_models_dir()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".installing-", dir=root))
    try:
        with zipfile.ZipFile(zp) as zf:
            written = 0
            for info in files:
                target = tmp.joinpath(*[p for p in info.filename.replace("\\", "/").split("/") if p not in ("", ".")])
                if not target.resolve().is_relative_to(tmp.resolve()):
                    raise ModelError(f"{zp.name} was refused: '{info.filename}' escapes the model folder.")
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    while True:
                        chunk = src.read(1 << 20)
                        if not chunk:
                            break
                        written += len(chunk)
                        if written > max_bytes:  # the sizes in the zip directory can lie
                            raise ModelError(f"{zp.name} unpacks to more than its stated size; it was not "
                                             "installed.")
                        dst.write(chunk)
        if label_map is not None:
            _save_label_map(tmp, label_map)
        info_tmp = load_model(tmp)
        for ck in info_tmp.checkpoint_paths():
            load_checkpoint(ck)
        final_name = _safe_name(name or info_tmp.card.name if info_tmp.card.source == MODEL_CARD_FILE
                                else name or zp.stem)
        dest = root / final_name
        if dest.exists():
            if not overwrite:
                raise ModelError(f"A model called '{final_name}' is already installed ({dest}); replace it "
                                 "(`models install --overwrite` on the command line) or give the new one another "
                                 "name (`--name`).")
            backup = root / f".replaced-{final_name}-{os.getpid()}"
            os.replace(dest, backup)
            try:
                os.replace(tmp, dest)
            except OSError:
                os.replace(backup, dest)
                raise
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except zipfile.BadZipFile as exc:
        raise ModelError(f"{zp.name} is damaged ({exc}); it was not installed.") from None
    except OSError as exc:
        raise ModelError(f"The model could not be installed into {root}: {exc.strerror or exc}.") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("installed model %s into %s", zp.name, dest)
    return load_model(dest)


def _save_label_map(root: Path, label_map: LabelMapSpec) -> None:
    """Write the map passed at install as ``liverplan_label_map.json`` into every model folder below ``root``
    (resolved to the model's label values, so a preset or a file elsewhere is not needed later)."""
    spec = _load_label_map_spec(label_map)
    for folder in find_model_folders(root):
        ds = _read_json(folder / "dataset.json", "dataset.json")
        labels = {str(k): int(v) for k, v in ds.get("labels", {}).items()
                  if not isinstance(v, (list, tuple)) and int(v) != 0}
        parsed = parse_label_map(spec[0], labels, lenient=spec[2])
        out: dict[str, list[int]] = {"_comment": [f"written at install from {spec[1]}"]}  # type: ignore[dict-item]
        for value, lab in sorted(parsed.items()):
            key = "none" if lab == _NOT_USED else structure_of(lab).key
            out.setdefault(key, []).append(value)
        (folder / LABEL_MAP_FILE).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


def install_model_folder(folder: Union[str, os.PathLike], overwrite: bool = False,
                         label_map: LabelMapSpec = None) -> tuple[list[ModelInfo], list[tuple[Path, str]]]:
    """Install every model zip in a folder (the release zips carried over from a connected machine).
    Returns (installed models, [(zip, why it was not installed)]); one bad zip does not stop the others."""
    d = Path(folder).expanduser()
    if not d.is_dir():
        raise ModelError(f"{d} is not a folder.")
    zips = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() == ".zip")
    if not zips:
        raise ModelError(f"{d} holds no .zip files.")
    done: list[ModelInfo] = []
    failed: list[tuple[Path, str]] = []
    for z in zips:
        try:
            done.append(install_model_zip(z, overwrite=overwrite, label_map=label_map))
        except ModelError as err:
            failed.append((z, str(err)))
    return done, failed


def remove_model(model: ModelInfo) -> None:
    """Delete an installed model (only from the user's models folder, never a bundled one)."""
    base = user_models_dir(create=False).resolve()
    try:
        top = model.path.resolve().relative_to(base).parts[0]
    except (ValueError, IndexError):
        raise ModelError(f"{model.name} is not an installed user model and cannot be removed here.") from None
    shutil.rmtree(base / top)
