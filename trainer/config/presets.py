"""Model sizes as named presets (paper Table 7 for the paper-sized ones). Pure Python: no torch."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from gatelab.trainer.config.invalid import InvalidValue

BYTE_VOCAB = 258  # 256 byte values + BOS + EOS (the embedded corpus is byte-level)
GPT2_VOCAB = 50_304  # GPT-2 tokenizer padded to a multiple of 64, as nanoGPT does
QWEN_VOCAB = 151_936  # tokenizer of the paper's Qwen-family models (only matters for paper-sized presets)


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Shape of the decoder-only LM; a gate variant may change q/kv heads or experts (Table 1 rows 2-4)."""

    vocab_size: int = BYTE_VOCAB
    """Number of token ids."""
    d_model: int
    """Hidden size."""
    n_layers: int
    """Number of decoder blocks."""
    n_q_heads: int
    """Query heads (q in the paper)."""
    n_kv_heads: int
    """Key/value heads (k in the paper); must divide n_q_heads (GQA)."""
    head_dim: int
    """Per-head width (d_k)."""
    ffn_dim: int
    """SwiGLU hidden width (per expert when n_experts > 0)."""
    n_experts: int = 0
    """Routed experts; 0 means a dense SwiGLU FFN."""
    top_k: int = 0
    """Experts per token (softmax top-k routing)."""
    qk_norm: bool = True
    """RMSNorm over head_dim on q and k before RoPE (all of the paper's models, Table 7)."""
    rope_theta: float = 10_000.0
    """RoPE base."""
    tie_embeddings: bool = True
    """Share the token embedding with the LM head."""
    max_seq_len: int = 256
    """Training sequence length (YaRN scales relative to it)."""
    lb_loss_coef: float = 1e-2
    """Load-balancing loss weight (the paper gives none; docs/paper.md §8)."""
    z_loss_coef: float = 1e-3
    """Router z-loss weight (ST-MoE's default)."""
    norm_eps: float = 1e-6
    """RMSNorm epsilon."""
    init_std: float = 0.02
    """Std of the normal init of every linear and embedding weight."""

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layers", "n_q_heads", "n_kv_heads", "head_dim", "ffn_dim", "vocab_size"):
            value = getattr(self, name)
            # Overrides arrive unchecked (a dict field), so "5" from YAML must fail here, not compare as text.
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InvalidValue(name, "expected a positive integer", value=value)
        if self.n_q_heads % self.n_kv_heads:
            raise InvalidValue(
                "n_kv_heads",
                f"expected a divisor of n_q_heads={self.n_q_heads} (grouped-query attention)",
                value=self.n_kv_heads,
            )
        if self.n_experts and not 0 < self.top_k <= self.n_experts:
            raise InvalidValue("top_k", f"expected 1..n_experts={self.n_experts}", value=self.top_k)

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0

    def with_overrides(self, **changes) -> "ModelConfig":
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise InvalidValue(str(unknown[0]), f"model has unknown key(s) {unknown}")
        return replace(self, **changes)


PRESETS: dict[str, ModelConfig] = {
    # tests: 2 layers, width 32 (docs/design.md, Testing)
    "tiny": ModelConfig(d_model=32, n_layers=2, n_q_heads=4, n_kv_heads=2, head_dim=8, ffn_dim=64, max_seq_len=64),
    "tiny-moe": ModelConfig(
        d_model=32,
        n_layers=2,
        n_q_heads=4,
        n_kv_heads=2,
        head_dim=8,
        ffn_dim=32,
        n_experts=4,
        top_k=2,
        tie_embeddings=False,
        max_seq_len=64,
    ),
    # CPU: big enough for a first-token sink to form in the baseline, small enough for minutes per run
    "laptop": ModelConfig(
        d_model=128, n_layers=4, n_q_heads=8, n_kv_heads=2, head_dim=16, ffn_dim=384, max_seq_len=256
    ),
    # ~124M parameters like GPT-2 small (SwiGLU 2048 ~ GELU 3072), one GPU; GPT-2's padded vocab so
    # nanoGPT-style .bin token files fit
    "small": ModelConfig(
        d_model=768,
        n_layers=12,
        n_q_heads=12,
        n_kv_heads=12,
        head_dim=64,
        ffn_dim=2048,
        vocab_size=GPT2_VOCAB,
        max_seq_len=1024,
    ),
    # paper Table 7
    "paper-1.7b": ModelConfig(
        d_model=2048,
        n_layers=28,
        n_q_heads=16,
        n_kv_heads=8,
        head_dim=128,
        ffn_dim=6144,
        vocab_size=QWEN_VOCAB,
        max_seq_len=4096,
    ),
    "paper-1.7b-48l": ModelConfig(
        d_model=1536,
        n_layers=48,
        n_q_heads=16,
        n_kv_heads=8,
        head_dim=128,
        ffn_dim=4608,
        vocab_size=QWEN_VOCAB,
        max_seq_len=4096,
    ),
    "paper-moe-15a2b": ModelConfig(
        d_model=2048,
        n_layers=24,
        n_q_heads=32,
        n_kv_heads=4,
        head_dim=128,
        ffn_dim=768,
        n_experts=128,
        top_k=8,
        tie_embeddings=False,
        vocab_size=QWEN_VOCAB,
        max_seq_len=4096,
    ),
}


def preset(name: str) -> ModelConfig:
    """The named preset; unknown names get the list of valid ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InvalidValue("", f"unknown model preset {name!r}; expected one of {sorted(PRESETS)}") from None
