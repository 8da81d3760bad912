"""Loading evaluated runs and aggregating them over seeds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fit.config import SAEConfig
from fit.runs import find_runs
from pipeline.errors import PipelineError
from pipeline.evaluate.metrics import t_interval
from pipeline.evaluate.record import GROUP_METRICS, EvalRecord
from pipeline.presets import PRESETS
from pipeline.report import paper
from pipeline.report.frontier import architecture_key, architecture_label, setting_label


def load_evaluations(paths: list[str]) -> list[EvalRecord]:
    evals = []
    for run in find_runs(paths):
        if not run.evaluated:
            raise PipelineError(f"{run} has not been evaluated: run `pipeline evaluate {run}` first")
        evals.append(EvalRecord.read(run.eval_path))
    return evals


def config_key(sae: dict[str, Any]) -> tuple:
    """The SAE configuration without its seed."""
    # Matryoshka's prefixes are a list in config.json: a tuple, so that the key hashes.
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in sae.items() if k != "seed"))


@dataclass
class Group:
    """The runs of one configuration (one per seed) and their mean and 95% CI per metric."""

    sae: dict[str, Any]
    runs: list[EvalRecord] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{architecture_label(self.sae)} {setting_label(self.sae)}"

    def stat(self, metric: str) -> tuple[float, float, int]:
        return t_interval([r.metric(metric) for r in self.runs])

    def training_seconds(self) -> tuple[float, float, int]:
        return t_interval([r.train.sae_seconds for r in self.runs])

    def groups_mean(self) -> list[dict]:
        """Per latent group: mean over seeds of each group statistic (with CI)."""
        out = []
        for g, first in enumerate(self.runs[0].groups):
            row: dict[str, Any] = {"group": first.group, "features": first.features}
            for key in GROUP_METRICS:
                row[key] = t_interval([getattr(r.groups[g], key) for r in self.runs])
            out.append(row)
        return out

    def matches(self, **want) -> bool:
        return all(self.sae.get(k) == v for k, v in want.items())


def group_runs(evals: list[EvalRecord]) -> list[Group]:
    groups: dict[tuple, Group] = {}
    for e in evals:
        groups.setdefault(config_key(e.sae), Group(e.sae)).runs.append(e)
    for g in groups.values():
        g.runs.sort(key=lambda r: r.sae["seed"])
    return list(groups.values())


def paper_setting(variant: str) -> dict:
    """The SAE fields of the paper's setting of ``variant``: SAEConfig's defaults, the one place they live."""
    fields = SAEConfig(variant=variant).to_dict()
    del fields["seed"]
    return fields


def find_group(candidates: list[Group], **want) -> Group | None:
    """The group with these SAE fields, at the paper's setting for the fields not named."""
    matches = [g for g in candidates if g.matches(**{**paper_setting(want["variant"]), **want})]
    return matches[0] if matches else None


@dataclass(frozen=True)
class Compared:
    """The baseline and hierarchical SAEs the paper's claims compare, and the setting both were run at."""

    setting: str
    """The setting in prose, for the report's sentences ("the paper's setting (λ = 0.04, K = 5, γ = 1.5)")."""
    base: Group | None
    hier: Group | None


def compared(groups: list[Group]) -> Compared:
    """The pair at the paper's setting; where neither was run there, at the first preset's setting (pipeline/
    presets.py) where one was: `pipeline experiment --preset paper-code` compares its own SAEs, and says so."""
    settings = [(f"the paper's setting ({paper.setting_text()})", {})]
    settings += [(f"the `--preset {p.name}` setting ({p.description})", p.sae) for p in PRESETS.values()]
    for setting, fields in settings:
        base, hier = (find_group(groups, variant=v, **fields) for v in ("baseline", "hier"))
        if base or hier:
            return Compared(setting, base, hier)
    return Compared(settings[0][0], None, None)


def is_paper_setting(group: Group) -> bool:
    return group.matches(**paper_setting(group.sae["variant"]))


def by_architecture(evals: list[EvalRecord]) -> dict[str, list[EvalRecord]]:
    """The runs of each architecture (every sparsity setting and seed), by its label, in first-seen order."""
    keys: dict[tuple, str] = {}
    out: dict[str, list[EvalRecord]] = {}
    for e in evals:
        label = keys.setdefault(architecture_key(e.sae), architecture_label(e.sae))
        out.setdefault(label, []).append(e)
    return out
