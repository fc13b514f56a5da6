"""The language model: attention with gates at G1-G5, the gates, the FFN/MoE, RoPE/YaRN."""
