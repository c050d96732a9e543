"""The dataset card (README.md with YAML metadata) written next to a factorized dataset."""

from __future__ import annotations

import json

import yaml
from huggingface_hub import DatasetCard, DatasetCardData

from .data import REAL_DATASETS
from .fileformat import PREVIEW
from .zoo import zoo_name

__all__ = ["dataset_card"]


def dataset_card(config: dict, storage, repo_id: str | None = None, export: dict | None = None) -> str:
    """Card text for a format-v1 ``config`` and its :class:`~haba_datasets.factorized.StorageReport`.

    ``export`` describes the parquet copy of a published repo (``path``, ``num_examples``,
    ``num_bytes``); it adds the ``configs``/``dataset_info`` metadata ``datasets`` reads, the
    preview picture and loading instructions without this library.
    """
    prov = config["provenance"]
    hall = config["hallucinators"]
    soft = bool(config.get("soft_labels"))
    name = prov.get("name") or repo_id or "factorized dataset"
    extra = {}
    if export is not None:
        class_names = {str(i): c for i, c in enumerate(config["classes"])}
        extra["configs"] = [{"config_name": "default", "data_files": [{"split": "train", "path": export["path"]}]}]
        extra["dataset_info"] = {
            "features": [{"name": "image", "dtype": "image"},
                         {"name": "label", "dtype": {"class_label": {"names": class_names}}}]
                        + ([{"name": "soft_label", "list": "float32", "length": len(config["classes"])}] if soft else []),
            "splits": [{"name": "train", "num_bytes": export["num_bytes"], "num_examples": export["num_examples"]}],
        }  # fmt: skip
    source = REAL_DATASETS.get(prov.get("dataset")) if isinstance(prov.get("dataset"), str) else None
    if source is not None:
        extra["source_datasets"] = [source.hub_id]
    data = DatasetCardData(
        license=prov.get("license", source.license if source else "unknown"),
        task_categories=["image-classification"],
        size_categories=[_size_category(config["num_bases"] * hall["count"])],
        tags=["dataset-distillation", "haba", "factorized-dataset", f"arxiv:{ARXIV_ID}"],
        pretty_name=name,
        **extra,
    )
    c, h, w = config["image_shape"]
    lines = [
        f"# {name}",
        "",
        f"A distilled image-classification dataset stored in factorized form (HaBa, Liu et al., NeurIPS 2022): "
        f"{config['num_bases']} bases and {hall['count']} `{hall['architecture']}` hallucinators; every "
        f"(basis, hallucinator) pair is a {c}x{h}x{w} training image, {config['num_bases'] * hall['count']} in all, "
        f"over {len(config['classes'])} classes.",
        "",
        *([SOFT_LABELS, ""] if soft else []),
        "## Storage",
        "",
        str(storage) + ".",
        "",
        "## How it was made",
        "",
    ]
    lines += _provenance(prov)
    lines += ["", "## Results", ""]
    lines += _results(prov.get("metrics") or {}, prov.get("reference"), soft)
    if isinstance(prov.get("cross_architecture"), dict):
        lines += ["", "## Across architectures", ""] + _cross_architecture(prov["cross_architecture"])
    lines += [
        "",
        "## How to load",
        "",
        "```python",
        "from torch.utils.data import DataLoader",
        "from haba_datasets import FactorizedDataset",
        "",
        f"dataset = FactorizedDataset.from_pretrained({json.dumps(repo_id or zoo_name(prov) or 'path/to/this/folder')})",
        "loader = DataLoader(dataset, batch_size=256, shuffle=True)  # (image, label) batches",
        "test_transform = dataset.real_transform  # real images -> this dataset's model space",
        "```",
        "",
        f"Images live in `{config['preprocessing']['kind']}` space: apply `dataset.real_transform` to real test "
        "images before evaluating a model trained on them. Learned learning rate: "
        f"{config['learned_lr'] if config['learned_lr'] is not None else 'none recorded'}.",
        "",
        "Classes: " + ", ".join(config["classes"]) + ".",
        "",
        "## Citation",
        "",
        f"The method ([arXiv:{ARXIV_ID}](https://arxiv.org/abs/{ARXIV_ID})):",
        "",
        "```bibtex",
        CITATION,
        "```",
    ]
    if export is not None:
        lines[lines.index("## Storage"):lines.index("## Storage")] = [
            f"![bases x hallucinators, per class]({PREVIEW})", "",
        ]  # fmt: skip
        lines += [
            "",
            "### Without this library",
            "",
            f"Every image, rendered back to pixels, is also stored as parquet (`{export['path']}`, "
            f"{export['num_examples']} rows of `image`, `label`{', `soft_label`' if soft else ''}):",
            "",
            "```python",
            "from datasets import load_dataset",
            "",
            f"rows = load_dataset({json.dumps(repo_id)}, split=\"train\")",
            "```",
        ]
    return str(DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"))


SOFT_LABELS = (
    "**Soft labels.** Every basis carries a probability vector over the classes, and an item's target is "
    "its basis's vector (`torch.nn.functional.cross_entropy` takes it as is). Accuracies measured by "
    "training on soft labels are not comparable with hard-label results; "
    "`FactorizedDataset.from_pretrained(..., soft_labels=False)` trains on the classes instead."
)
ARXIV_ID = "2210.16774"
CITATION = """@inproceedings{liu2022dataset,
  title     = {Dataset Distillation via Factorization},
  author    = {Liu, Songhua and Wang, Kai and Yang, Xingyi and Ye, Jingwen and Wang, Xinchao},
  booktitle = {Advances in Neural Information Processing Systems},
  year      = {2022}
}"""


def _size_category(n: int) -> str:
    """The Hub's ``size_categories`` bucket for ``n`` examples."""
    for limit, bucket in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return bucket
    return "n>1M"


def _provenance(prov: dict) -> list[str]:
    """Scalars and small objects as a list; the recipe (a nested settings tree) as YAML."""
    lines = [f"- {k}: {_value(v)}" for k, v in prov.items() if k not in _OWN_SECTIONS]
    if isinstance(prov.get("recipe"), dict):
        lines += ["", "The recipe, as run:", "", "```yaml", yaml.safe_dump(prov["recipe"], sort_keys=False).strip(), "```"]
    return lines or ["No provenance recorded."]


def _results(metrics: dict, reference, soft: bool = False) -> list[str]:
    """Measured test accuracy (mean +- std, protocol) next to the paper's number, then other metrics."""
    if not metrics:
        return ["No metrics recorded."]
    lines = []
    if "test_accuracy" in metrics:
        std = f" +- {_percent(metrics['test_accuracy_std'])}" if "test_accuracy_std" in metrics else ""
        protocol = f"{metrics.get('model', '?')}, {metrics.get('runs', '?')} runs x {metrics.get('epochs', '?')} epochs"
        protocol += ", trained on the soft labels" if metrics.get("labels", "soft" if soft else "hard") == "soft" else ""
        lines += ["| | test accuracy (%) | protocol |", "|---|---|---|",
                  f"| this dataset | {_percent(metrics['test_accuracy'])}{std} | {protocol} |"]  # fmt: skip
        if isinstance(reference, dict):  # published numbers for this setting, by method
            lines += [f"| {method} (published) | {_percent(accuracy)} | as published |" for method, accuracy in reference.items()]
        lines.append("")
    rest = {k: v for k, v in metrics.items() if k not in _SUMMARISED}
    return lines + (_table(rest) if rest else [])


def _cross_architecture(cross: dict) -> list[str]:
    """Accuracy per network next to random real images of the same storage (types checked: the
    provenance may come from a downloaded file)."""
    networks = cross.get("networks") if isinstance(cross.get("networks"), dict) else {}
    base = cross.get("baseline") if isinstance(cross.get("baseline"), dict) else None
    head = "| network | lr | test accuracy (%) |" + (f" random real, {base.get('images_per_class')} per class (%) | gain |" if base else "")
    lines = [head, "|---|---|---|" + ("---|---|" if base else "")]
    for model, r in networks.items():
        if not isinstance(r, dict):
            continue
        own = " (distilled for)" if model == cross.get("distilled_with") else ""
        row = f"| {model}{own} | {_value(r.get('lr'))} ({r.get('lr_source')}) | {_accuracy(r)} |"
        b = r.get("baseline")
        if base and isinstance(b, dict):
            both = _number(r.get("test_accuracy")) and _number(b.get("test_accuracy"))
            gain = f"{100 * (r['test_accuracy'] - b['test_accuracy']):+.2f}" if both else "-"
            row += f" {_accuracy(b)} | {gain} |"
        lines.append(row)
    if _number(cross.get("transfer_mean")):
        row = f"| mean of the other networks | | {_percent(cross['transfer_mean'])} |"
        if base and _number(cross.get("baseline_transfer_mean")):
            row += f" {_percent(cross['baseline_transfer_mean'])} | {100 * (cross['transfer_mean'] - cross['baseline_transfer_mean']):+.2f} |"
        lines.append(row)
    lines += ["", f"Protocol: {cross.get('runs')} run(s) x {cross.get('epochs')} epochs per network (DSA: {cross.get('dsa')}); "
              f"the lr of each network other than the one the data was distilled for chosen on the validation split "
              f"from {cross.get('lr_grid')} ({cross.get('lr_epochs')} epochs per candidate). Measured by "
              f"`{cross.get('command')}`."]  # fmt: skip
    return lines


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _accuracy(r: dict) -> str:
    if not _number(r.get("test_accuracy")):
        return "diverged"
    std = f" +- {_percent(r['test_accuracy_std'])}" if _number(r.get("test_accuracy_std")) else ""
    return f"{_percent(r['test_accuracy'])}{std}"


_OWN_SECTIONS = {"name", "license", "metrics", "reference", "recipe", "cross_architecture"}
_SUMMARISED = {"test_accuracy", "test_accuracy_std", "runs", "epochs", "model", "labels"}


def _percent(value) -> str:
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f"{100 * value:.2f}" if is_number else str(value)


def _value(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _table(values: dict) -> list[str]:
    rows = ["| key | value |", "|---|---|"]
    rows += [f"| {k} | {_value(v)} |" for k, v in values.items()]
    return rows
