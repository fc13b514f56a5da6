"""GateSpec: one attention gate described as data (paper §2.2, Eq. 5: Y' = g(Y, X, W_theta, sigma)).

This module is pure Python (no torch) so that `grid/` can validate variants on machines without torch.
Every variant of the paper's Tables 1, 3 and 4 is one GateSpec (or a list of them, e.g. G1+G2) plus,
for the controls that are not gates, an SDPA-output transform (see `Variant` in `trainer.catalog`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum

from gatelab.trainer.config.invalid import InvalidValue


class SpecError(InvalidValue):
    """An invalid gate, variant or catalog; the key is the first field the rule names, the message all of them."""


class Position(str, Enum):
    """Where the gate multiplies in (paper §2.2, Table 1 'Score shape')."""

    G1 = "g1"  # SDPA output, per query head, before o_proj
    G2 = "g2"  # after v_proj, per kv head
    G3 = "g3"  # after k_proj, per kv head
    G4 = "g4"  # after q_proj, per query head
    G5 = "g5"  # after o_proj, over d_model


class Granularity(str, Enum):
    """One score per element of the gated tensor, or one scalar per head (Table 1 rows 5 vs 10)."""

    ELEMENTWISE = "elementwise"
    HEADWISE = "headwise"


class Sharing(str, Enum):
    """Head-specific scores, or one score averaged over heads and shared by all (Table 1 rows 12-13)."""

    HEAD_SPECIFIC = "head_specific"
    HEAD_SHARED = "head_shared"


class Combine(str, Enum):
    """Y * act(XW) or Y + act(XW) (Table 1 row 14; Table 3 row 7)."""

    MULTIPLICATIVE = "multiplicative"
    ADDITIVE = "additive"


class Activation(str, Enum):
    """The score non-linearity: sigmoid (default), SiLU (Table 1 rows 14-15), NS-sigmoid (Eq. 9), identity."""

    SIGMOID = "sigmoid"
    SILU = "silu"
    NS_SIGMOID = "ns_sigmoid"  # 0.5 + 0.5 * sigmoid(x): keeps non-linearity, removes sparsity (Eq. 9)
    IDENTITY = "identity"


class GateInput(str, Enum):
    """What produces the scores: the block's pre-norm hidden state X (footnote 1) or nothing (§4.2)."""

    HIDDEN = "hidden"
    INDEPENDENT = "independent"  # learnable zero-initialised parameter, same for every token


# Positions the paper defines headwise gating for (Table 1 rows 10-11: SDPA and value only).
_HEADWISE_POSITIONS = {Position.G1, Position.G2}
# Head-shared gating is defined only for G1 and G2 (Table 1 rows 12-13).
_SHARED_POSITIONS = {Position.G1, Position.G2}
# Additive gating appears only with SiLU (Table 1 row 14) and identity (Table 3 row 7).
_ADDITIVE_ACTIVATIONS = {Activation.SILU, Activation.IDENTITY}
# Multiplying by an unbounded identity score is not a gate the paper defines.
_MULTIPLICATIVE_ACTIVATIONS = {Activation.SIGMOID, Activation.SILU, Activation.NS_SIGMOID}


@dataclass(frozen=True, kw_only=True)
class GateSpec:
    """One gate; invalid combinations raise SpecError when the spec is built."""

    position: Position = Position.G1
    """Which tensor is gated (G1..G5)."""
    granularity: Granularity = Granularity.ELEMENTWISE
    """Elementwise scores or one scalar per head."""
    sharing: Sharing = Sharing.HEAD_SPECIFIC
    """Per-head scores, or scores averaged over heads (pre-activation) and shared."""
    combine: Combine = Combine.MULTIPLICATIVE
    """How the score meets the gated tensor."""
    activation: Activation = Activation.SIGMOID
    """Non-linearity applied to the scores."""
    input: GateInput = GateInput.HIDDEN
    """Source of the scores: X (pre-norm hidden state) or an input-independent parameter."""

    def __post_init__(self) -> None:
        for f in fields(self):
            enum_type = {
                "position": Position,
                "granularity": Granularity,
                "sharing": Sharing,
                "combine": Combine,
                "activation": Activation,
                "input": GateInput,
            }[f.name]
            value = getattr(self, f.name)
            if not isinstance(value, enum_type):
                try:
                    object.__setattr__(self, f.name, enum_type(value))
                except ValueError:
                    allowed = ", ".join(e.value for e in enum_type)
                    raise SpecError(f.name, f"gate.{f.name}={value!r} is not one of: {allowed}") from None
        self._check_combination()

    def _check_combination(self) -> None:
        if self.granularity is Granularity.HEADWISE and self.position not in _HEADWISE_POSITIONS:
            raise SpecError(
                "granularity",
                f"gate.granularity=headwise with gate.position={self.position.value}: the paper defines "
                "headwise gates only at g1 and g2 (Table 1 rows 10-11)",
            )
        if self.sharing is Sharing.HEAD_SHARED:
            if self.position not in _SHARED_POSITIONS:
                raise SpecError(
                    "sharing",
                    f"gate.sharing=head_shared with gate.position={self.position.value}: head-shared gates "
                    "are defined only at g1 and g2 (Table 1 rows 12-13)",
                )
            if self.granularity is Granularity.HEADWISE:
                raise SpecError(
                    "sharing",
                    "gate.sharing=head_shared with gate.granularity=headwise: a head-shared "
                    "score is an n x d_k average over heads, so it must be elementwise (§3.2.1)",
                )
            if self.input is GateInput.INDEPENDENT:
                raise SpecError(
                    "sharing",
                    "gate.sharing=head_shared with gate.input=independent: averaging an "
                    "input-independent parameter over heads is not a variant the paper defines",
                )
        if self.combine is Combine.ADDITIVE and self.activation not in _ADDITIVE_ACTIVATIONS:
            raise SpecError(
                "combine",
                f"gate.combine=additive with gate.activation={self.activation.value}: additive gates are "
                "defined with silu (Table 1 row 14) or identity (Table 3 row 7)",
            )
        if self.combine is Combine.MULTIPLICATIVE and self.activation not in _MULTIPLICATIVE_ACTIVATIONS:
            raise SpecError(
                "combine",
                f"gate.combine=multiplicative with gate.activation={self.activation.value}: a multiplicative "
                "gate needs sigmoid, ns_sigmoid or silu",
            )
        if self.input is GateInput.INDEPENDENT and self.position is not Position.G1:
            raise SpecError(
                "input",
                f"gate.input=independent with gate.position={self.position.value}: the input-independent "
                "gate is defined on the SDPA output only (§4.2)",
            )

    @property
    def axes(self) -> dict[str, str]:
        """The six design axes as plain strings (for tags and tables)."""
        return {f.name: getattr(self, f.name).value for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "GateSpec":
        """Build from a YAML mapping; unknown keys raise SpecError naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(str(unknown[0]), f"gate has unknown key(s) {unknown}; expected some of {sorted(known)}")
        return cls(**data)
