"""Every catalog variant on the tiny presets: finite, causal, eager == fused; and the gate invariants."""

import math

import pytest
import torch

from gatelab.trainer.config.catalog import load_catalog
from gatelab.trainer.config.gate_spec import GateSpec
from gatelab.trainer.config.presets import preset
from gatelab.trainer.model.gates import Gate
from gatelab.trainer.model.lm import GatedLM
from gatelab.trainer.model.rope import Rotary, yarn_inv_freq
from gatelab.trainer.probes import ProbeRecorder

from conftest import preset_for

CATALOG = load_catalog()
VARIANTS = list(CATALOG)


def build(name: str, seed: int = 0) -> GatedLM:
    torch.manual_seed(seed)
    model = GatedLM(preset(preset_for(name)), CATALOG[name])
    # Move every gate away from its init so a wrong path cannot hide behind sigmoid(0)-like symmetry.
    with torch.no_grad():
        for gate in model.gates():
            for param in gate.parameters():
                param.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("name", VARIANTS)
def test_forward_backward_finite(name, tokens_BT):
    model = build(name)
    loss, parts = model.loss(tokens_BT[:, :-1], tokens_BT[:, 1:])
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(math.log(258), rel=0.2)  # near uniform at init
    loss.backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, pname
        assert torch.isfinite(param.grad).all(), pname
    gate_grads = [p.grad.abs().sum().item() for g in model.gates() for p in g.parameters()]
    assert all(g > 0 for g in gate_grads)


@pytest.mark.parametrize("name", VARIANTS)
def test_causal(name, tokens_BT):
    model = build(name).eval()
    changed = tokens_BT.clone()
    changed[:, 15:] = (changed[:, 15:] + 7) % 256
    with torch.no_grad():
        before = model(tokens_BT).logits_BTV
        after = model(changed).logits_BTV
    assert torch.equal(before[:, :15], after[:, :15])
    assert not torch.allclose(before[:, 15:], after[:, 15:])


@pytest.mark.parametrize("name", VARIANTS)
def test_eager_probe_path_equals_fused(name, tokens_BT):
    model = build(name).eval()
    with torch.no_grad():
        fused = model(tokens_BT).logits_BTV
        recorder = ProbeRecorder()
        eager = model(tokens_BT, recorder=recorder).logits_BTV
    torch.testing.assert_close(eager, fused, rtol=1e-5, atol=1e-5)
    assert len(recorder.report().f_attn_per_layer) == model.cfg.n_layers


@pytest.mark.parametrize(
    "gated",
    [
        "g1_elementwise_sigmoid",
        "g1_g2_headwise_sigmoid",
        "g5_elementwise_sigmoid",
        "g1_additive_silu",
        "g1_input_independent",
    ],
)
def test_baseline_equals_gated_model_with_gate_disabled(gated, tokens_BT):
    baseline = build("baseline", seed=1).eval()
    model = build(gated, seed=2).eval()
    missing, unexpected = model.load_state_dict(baseline.state_dict(), strict=False)
    assert not unexpected and all(".gates." in key for key in missing) and missing
    with torch.no_grad():
        assert not torch.equal(model(tokens_BT).logits_BTV, baseline(tokens_BT).logits_BTV)
        model.set_gates_enabled(False)
        assert torch.equal(model(tokens_BT).logits_BTV, baseline(tokens_BT).logits_BTV)


def _scores(spec: dict, x_BTD: torch.Tensor, heads: int = 4, width: int = 8) -> torch.Tensor:
    torch.manual_seed(0)
    gate = Gate(GateSpec.from_dict(spec), x_BTD.shape[-1], heads, width)
    with torch.no_grad():
        for param in gate.parameters():
            param.normal_(0, 3.0)
        return gate.scores(x_BTD).expand(x_BTD.shape[0], x_BTD.shape[1], heads, width)


def test_gate_score_invariants():
    x_BTD = torch.randn(2, 5, 32) * 3
    ns = _scores({"activation": "ns_sigmoid"}, x_BTD)
    assert ns.min() >= 0.5 and ns.max() <= 1.0 and ns.std() > 0.05
    shared = _scores({"sharing": "head_shared"}, x_BTD)
    assert torch.equal(shared, shared[:, :, :1].expand_as(shared))
    assert not torch.equal(shared[..., 0], shared[..., 1])  # still elementwise within d_k
    headwise = _scores({"granularity": "headwise"}, x_BTD)
    assert torch.equal(headwise, headwise[..., :1].expand_as(headwise))
    assert not torch.equal(headwise[:, :, 0], headwise[:, :, 1])
    independent_a = _scores({"input": "independent"}, x_BTD)
    independent_b = _scores({"input": "independent"}, torch.randn(2, 5, 32))
    assert torch.equal(independent_a, independent_b)
    assert not torch.equal(independent_a[:, :, 0], independent_a[:, :, 1])
    dependent = _scores({}, x_BTD)
    assert not torch.equal(dependent[:, 0], dependent[:, 1])


def test_input_independent_gate_starts_at_half():
    model = GatedLM(preset("tiny"), CATALOG["g1_input_independent"])
    score = model.gates()[0].scores(torch.randn(1, 3, 32))
    assert torch.equal(score, torch.full_like(score, 0.5))


def test_yarn_factor_one_is_plain_rope_and_scaling_follows_ntk_by_parts():
    head_dim, base, original = 16, 10_000.0, 64
    plain = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    inv_freq, temperature = yarn_inv_freq(head_dim, base, 1.0, original)
    assert torch.equal(inv_freq, plain.float()) and temperature == 1.0
    rotary = Rotary(head_dim, base, original)
    cos1, sin1 = rotary.cos_sin(32, 1.0, torch.device("cpu"), torch.float32)
    angles = torch.outer(torch.arange(32, dtype=torch.float32), plain.float())
    torch.testing.assert_close(cos1[:, 0], torch.cat([angles, angles], -1).cos())
    scaled, temperature4 = yarn_inv_freq(head_dim, base, 4.0, original)
    assert temperature4 == pytest.approx(0.1 * math.log(4) + 1)
    # Fast (high-frequency) dims extrapolate unchanged; the slowest dims are interpolated by 1/s.
    assert scaled[0] == pytest.approx(plain[0].item())
    assert scaled[-1] == pytest.approx(plain[-1].item() / 4)
    assert (scaled <= plain.float() + 1e-12).all()


def test_yarn_evaluates_beyond_training_length(tokens_BT):
    model = build("g1_elementwise_sigmoid").eval()
    long_tokens = torch.randint(0, 256, (1, 4 * model.cfg.max_seq_len))
    with torch.no_grad():
        plain = model(long_tokens).logits_BTV
        yarn = model(long_tokens, yarn_factor=4.0).logits_BTV
    assert torch.isfinite(yarn).all() and not torch.allclose(plain, yarn)


def test_moe_aux_losses_finite_and_uniform_router_minimal(tokens_BT):
    model = GatedLM(preset("tiny-moe"), CATALOG["baseline"])
    out = model(tokens_BT)
    assert set(out.aux_losses) == {"lb_loss", "z_loss"}
    assert all(torch.isfinite(v) for v in out.aux_losses.values())
    moe = model.layers[0].ffn
    x_BTD = torch.randn(4, 16, 32)
    with torch.no_grad():
        moe.router.weight.zero_()  # uniform router
        _, uniform = moe(x_BTD)
        assert uniform["lb_loss"].item() == pytest.approx(1.0)
        losses = []
        for seed in range(5):
            torch.manual_seed(seed)
            moe.router.weight.normal_(0, 1.0)
            losses.append(moe(x_BTD)[1]["lb_loss"].item())
        moe.router.weight.zero_()
        moe.router.weight[0] = 1.0  # every token's sum is large and positive: expert 0 takes all
        collapsed = moe(x_BTD + 3.0)[1]["lb_loss"].item()
    # E * sum f*P is 1 at uniform; random routers sit at or above it (up to a tiny dip when the
    # hard top-k shares and the soft probabilities disagree), a collapsed router far above.
    assert min(losses) > 0.99 and sum(losses) / len(losses) > 1.0 and collapsed == pytest.approx(2.0, rel=1e-3)
