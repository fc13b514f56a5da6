"""The named variant catalog (`ablations/variants.yaml`) as frozen data. Pure Python: no torch.

A variant is data (docs/design.md): zero or more GateSpecs, an optional parameter-free or near-free transform
of the SDPA output (the controls of Table 3), and an optional change of model shape (the
parameter-matched baselines of Table 1 rows 2-4).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import yaml

from gatelab.trainer.config.gate_spec import GateSpec, Position, SpecError
from gatelab.trainer.config.invalid import InvalidValue, join_key
from gatelab.trainer.config.presets import ModelConfig
from gatelab.trainer.config.shipped_data import CATALOG_PATH
from gatelab.trainer.config.suggest import did_you_mean


class SdpaTransform(str, Enum):
    """Controls applied to the SDPA output that are not gates (Table 3 rows 5-6)."""

    NONE = "none"
    RMSNORM = "rmsnorm"  # per-head RMSNorm, "SDPA GroupNorm / RMSNorm"
    SILU = "silu"  # parameter-free SiLU at G1


@dataclass(frozen=True, kw_only=True)
class ShapeChange:
    """A parameter-matched baseline: more query heads, more kv heads or more experts (Table 1 rows 2-4)."""

    q_heads_scale: float = 1.0
    """Multiply n_q_heads (row 3: q 32 -> 48 is 1.5)."""
    kv_heads_scale: float = 1.0
    """Multiply n_kv_heads (row 2: k 4 -> 8 is 2)."""
    add_experts: int = 0
    """Add this many experts, total and activated (row 4: +4)."""

    def apply(self, model: ModelConfig, variant_name: str) -> ModelConfig:
        if self.add_experts and not model.is_moe:
            raise SpecError(
                "", f"variant {variant_name!r} adds experts, which needs an MoE preset (model.n_experts > 0)"
            )
        q_heads = round(model.n_q_heads * self.q_heads_scale)
        kv_heads = round(model.n_kv_heads * self.kv_heads_scale)
        if q_heads % kv_heads:
            raise SpecError(
                "", f"variant {variant_name!r} gives n_q_heads={q_heads}, not a multiple of n_kv_heads={kv_heads}"
            )
        return model.with_overrides(
            n_q_heads=q_heads,
            n_kv_heads=kv_heads,
            n_experts=model.n_experts + self.add_experts,
            top_k=model.top_k + self.add_experts if self.add_experts else model.top_k,
        )

    @property
    def is_identity(self) -> bool:
        return self.q_heads_scale == 1.0 and self.kv_heads_scale == 1.0 and not self.add_experts


@dataclass(frozen=True, kw_only=True)
class PaperFigures:
    """The paper's published numbers for this variant, where it has them (Tables 1, 3, 4)."""

    added_params_m: float | None = None
    """Table 1 'Added Param' at the 15A2B MoE, in millions."""
    ppl: float | None = None
    """Avg PPL of the 15A2B MoE (Table 1 / Table 3)."""
    gate_mean: float | None = None
    """Mean gate score (Table 4)."""
    m_act: float | None = None
    """Mean over layers of max |hidden| (Table 4)."""
    f_attn: float | None = None
    """Attention share on the first token (Table 4)."""


@dataclass(frozen=True, kw_only=True)
class Variant:
    """One named row of the catalog."""

    name: str
    """Short stable name, e.g. g1_elementwise_sigmoid."""
    paper_ref: str
    """Where the paper defines it (table and row), or 'extension' for combinations it did not run."""
    description: str
    """One line for humans."""
    gates: tuple[GateSpec, ...] = ()
    """Gates applied in every attention layer."""
    sdpa_transform: SdpaTransform = SdpaTransform.NONE
    """Non-gate control on the SDPA output."""
    shape_change: ShapeChange = field(default_factory=ShapeChange)
    """Model-shape change of a parameter-matched baseline."""
    paper: PaperFigures = field(default_factory=PaperFigures)
    """Published figures to print beside measured ones."""

    def __post_init__(self) -> None:
        # Every rule about a variant is checked here, when it is loaded (torch-free), not when a worker builds
        # the model: one gate per position; an SDPA-output control replaces the G1 gate, it does not stack on it.
        positions = [spec.position for spec in self.gates]
        twice = sorted({p.value for p in positions if positions.count(p) > 1})
        if twice:
            raise SpecError("gates", f"variant {self.name!r} has two gates at {', '.join(twice)}")
        if self.sdpa_transform is not SdpaTransform.NONE and Position.G1 in positions:
            raise SpecError(
                "sdpa_transform", f"variant {self.name!r}: sdpa_transform and a g1 gate both act on the SDPA output"
            )

    def model_config(self, base: ModelConfig) -> ModelConfig:
        """The preset as this variant trains it; computed once per (variant, preset): a trial's validation, its
        key and its model all ask for it."""
        return _shaped(self.shape_change, base, self.name)

    @property
    def is_gated(self) -> bool:
        return bool(self.gates)

    @property
    def axes(self) -> dict[str, str]:
        """Every design axis as a flat string mapping (MLflow tags, report columns)."""
        out: dict[str, str] = {"sdpa_transform": self.sdpa_transform.value}
        if not self.gates:
            out["gate_position"] = "none"
        for key in self.gates[0].axes if self.gates else {}:
            values = [gate.axes[key] for gate in self.gates]
            # Several gates (e.g. G1+G2): one value when they agree, else joined in gate order.
            out[f"gate_{key}"] = values[0] if len(set(values)) == 1 else "+".join(values)
        sc = self.shape_change
        if not sc.is_identity:
            out["shape_change"] = f"q*{sc.q_heads_scale:g},kv*{sc.kv_heads_scale:g},experts+{sc.add_experts}"
        return out


@functools.lru_cache(maxsize=4096)
def _shaped(change: ShapeChange, base: ModelConfig, name: str) -> ModelConfig:
    return change.apply(base, name)


_VARIANT_KEYS = {"name", "paper_ref", "description", "gates", "sdpa_transform", "shape_change", "paper"}


_REQUIRED_VARIANT_KEYS = ("name", "paper_ref", "description")


def _variant_from_dict(row: dict) -> Variant:
    name = row.get("name")
    unknown = sorted(set(row) - _VARIANT_KEYS)
    if unknown:
        raise SpecError(str(unknown[0]), f"variant {name!r} has unknown key(s) {unknown}")
    missing = [key for key in _REQUIRED_VARIANT_KEYS if key not in row]
    if missing:
        raise SpecError(missing[0], f"variant {name!r}: missing {missing[0]!r}")
    gates = row.get("gates", ())
    if not isinstance(gates, (list, tuple)):
        raise SpecError("gates", f"variant {name!r}: expected a list of gates, got {gates!r}")
    return Variant(
        name=name,
        paper_ref=row["paper_ref"],
        description=row["description"],
        gates=tuple(_part(name, f"gates.{i}", GateSpec.from_dict, gate) for i, gate in enumerate(gates)),
        sdpa_transform=_part(name, "sdpa_transform", SdpaTransform, row.get("sdpa_transform", "none")),
        shape_change=_part(name, "shape_change", lambda raw: ShapeChange(**raw), row.get("shape_change", {})),
        paper=_part(name, "paper", lambda raw: PaperFigures(**raw), row.get("paper", {})),
    )


def _part(variant_name: Any, key: str, make: Callable[[Any], Any], raw: Any) -> Any:
    """make(raw), one part of a catalog row; its errors name the variant and carry the part's key."""
    try:
        return make(raw)
    except InvalidValue as err:
        raise SpecError(join_key(key, err.key), f"variant {variant_name!r}: {err}") from None
    except (TypeError, ValueError) as err:  # an unknown field of ShapeChange or PaperFigures, an unknown enum value
        raise SpecError(key, f"variant {variant_name!r}: {err}") from None


def load_catalog(path: str | Path | None = None) -> dict[str, Variant]:
    """All variants by name, in file order; duplicate names are an error. `path`: a catalog YAML of the
    user's (the same schema as ablations/variants.yaml); None: the catalog shipped with gatelab."""
    return _load_catalog(Path(path).expanduser().resolve() if path is not None else CATALOG_PATH)


@lru_cache(maxsize=8)
def _load_catalog(path: Path) -> dict[str, Variant]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise SpecError("", f"catalog {str(path)!r}: cannot read it ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        raise SpecError("", f"catalog {str(path)!r}: invalid YAML ({str(err).splitlines()[0]})") from None
    rows = data.get("variants") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows:
        raise SpecError(
            "",
            f"catalog {str(path)!r}: expected a mapping with a non-empty list `variants:` "
            "(the schema of ablations/variants.yaml)",
        )
    catalog: dict[str, Variant] = {}
    for index, row in enumerate(rows):
        at = f"variants.{index}"
        if not isinstance(row, dict):
            raise SpecError(at, f"catalog {str(path)!r}: expected each variant as a mapping, got {row!r}")
        try:
            variant = _variant_from_dict(row)
        except SpecError as err:
            raise err.under(at) from None
        if variant.name in catalog:
            raise SpecError(f"{at}.name", f"{path}: variant name {variant.name!r} appears twice")
        catalog[variant.name] = variant
    return catalog


def get_variant(name: str, path: str | Path | None = None) -> Variant:
    """The named variant of the catalog at `path` (None: the shipped one), or an error suggesting the nearest
    valid name."""
    catalog = load_catalog(path)
    if name in catalog:
        return catalog[name]
    hint = did_you_mean(name, catalog, otherwise="")
    hint = f"; {hint}" if hint else ""
    where = f" in catalog {str(path)!r}" if path is not None else ""
    raise SpecError("", f"unknown variant {name!r}{where}{hint}")
