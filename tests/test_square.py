"""Square Attack (L-inf, black box): invariants, query accounting, schedule, random search."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import attacks.square  # noqa: F401  (registers "square")
from attacks import available_attacks, create_attack
from attacks.losses import margin_loss
from attacks.square import P_HALVINGS, SquareAttack, p_schedule, square_side
from tests.invariants import check_threat_model

EPS = 0.1


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def build(**options):
    return create_attack({"name": "square", "eps": EPS, "n_queries": 40, **options})


def margins(model, x, y):
    with torch.no_grad():
        return margin_loss(model(x), y)


class NoGradModel(nn.Module):
    """Refuses any forward pass that could build a graph; counts the rows it was queried on."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.rows = 0

    def forward(self, x):
        assert not torch.is_grad_enabled(), "the black-box attack queried the model with grad enabled"
        assert not x.requires_grad, "the black-box attack queried the model on an input that requires grad"
        self.rows += x.shape[0]
        return self.inner(x)


# -- the contract -------------------------------------------------------------------------
def test_registered_with_defaults_and_config_round_trip():
    assert "square" in available_attacks()
    default = create_attack("square")
    assert isinstance(default, SquareAttack)
    assert default.config() == {"name": "square", "eps": pytest.approx(8 / 255), "n_queries": 5000, "p_init": 0.8,
                                "n_restarts": 1, "norm": "linf", "bn_mode": "eval", "seed": None}
    attack = create_attack({"name": "square", "eps": "8/255", "n_queries": 100, "p_init": "0.5", "seed": 1})
    assert attack.eps == pytest.approx(8 / 255) and attack.p_init == 0.5
    assert create_attack(attack.config()).config() == attack.config()


def test_options_are_validated():
    with pytest.raises(ValueError, match="linf"):
        create_attack({"name": "square", "norm": "l2"})
    with pytest.raises(ValueError, match=">= 1"):
        build(n_queries=0)
    with pytest.raises(ValueError, match="p_init"):
        build(p_init=0)
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        build(eps=8)


def test_threat_model_on_colour_non_square_images():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 10, 5))
    gen = torch.Generator().manual_seed(1)
    x = torch.rand((16, 3, 6, 10), generator=gen)
    x[:4] = 0.0
    x[4:8] = 1.0
    y = torch.randint(0, 5, (16,), generator=gen)
    check_threat_model(build(seed=0), model, x, y)


def test_seed_reproduces_the_query_bookkeeping(trained_toy):
    """The output's reproducibility is in test_attack_conformance.py; here: last_info too."""
    model, x, y = trained_toy
    infos = []
    for _ in range(2):
        attack = build(eps=0.15, seed=3)
        attack(model, x, y)
        infos.append(attack.last_info)
    assert all(torch.equal(infos[0][k], infos[1][k]) for k in ("queries", "success"))


def test_takes_no_gradients_and_counts_every_query(trained_toy):
    inner, x, y = trained_toy
    model = NoGradModel(inner)
    attack = build(eps=0.15, seed=0)
    attack(model, x.clone().requires_grad_(True), y)
    assert model.rows > 0
    assert attack.last_info["queries"].sum().item() == model.rows, "queries must count every row forwarded"
    assert all(p.grad is None for p in inner.parameters())


# -- strength and the random search ---------------------------------------------------
def test_accuracy_drops_on_the_trained_model(trained_toy):
    model, x, y = trained_toy
    x_adv = build(eps=0.3, n_queries=200, seed=0)(model, x, y)
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
        robust = (model(x_adv).argmax(1) == y).float().mean().item()
    assert clean > 0.9
    assert robust <= 0.5 * clean, (clean, robust)


def test_init_is_the_stripes_and_search_never_worsens_it(trained_toy):
    """n_queries=2 is the clean check plus the stripes; more queries only lower each margin."""
    model, x, y = trained_toy
    eps = 0.2
    init_attack = build(eps=eps, n_queries=2, seed=5)
    x_init = init_attack(model, x, y)

    # the same seed's first draw is the stripes on the clean-correct samples
    reference = build(eps=eps, seed=5)
    correct = margins(model, x, y) > 0
    stripes = x.clone()
    stripes[correct] = reference.stripes(x[correct], reference.generator(x.device))
    take = margins(model, stripes, y) < margins(model, x, y)
    assert torch.equal(x_init, torch.where(take[:, None, None, None], stripes, x))

    x_adv = build(eps=eps, n_queries=150, seed=5)(model, x, y)
    m_clean, m_init, m_adv = margins(model, x, y), margins(model, x_init, y), margins(model, x_adv, y)
    assert (m_adv <= m_init + 1e-4).all()
    assert (m_adv <= m_clean + 1e-4).all()
    assert (m_adv < m_init - 1e-3).any(), "the search improved no sample over its initialisation"


def test_last_info_queries_and_success(trained_toy):
    model, x, y = trained_toy
    y = y.clone()
    y[:10] = (y[:10] + 1) % 4  # wrong labels: misclassified before any perturbation
    n_queries = 60
    attack = build(eps=0.25, n_queries=n_queries, seed=0)
    x_adv = attack(model, x, y)
    queries, success = attack.last_info["queries"], attack.last_info["success"]
    assert queries.shape == success.shape == y.shape
    assert queries.dtype == torch.int64 and success.dtype == torch.bool
    assert (queries >= 1).all() and (queries <= n_queries).all()
    with torch.no_grad():
        assert torch.equal(success, model(x_adv).argmax(1) != y)
    # already misclassified: one query (the clean check), returned unchanged
    assert (queries[:10] == 1).all() and success[:10].all() and torch.equal(x_adv[:10], x[:10])
    # not fooled: queried on every iteration, the whole budget
    assert (queries[~success] == n_queries).all()
    assert (~success).any() and success[10:].any(), "eps should fool some samples but not all"


def test_restarts_only_add_successes(trained_toy):
    model, x, y = trained_toy
    one = build(eps=0.25, n_queries=40, seed=2)
    three = build(eps=0.25, n_queries=40, n_restarts=3, seed=2)
    x1, x3 = one(model, x, y), three(model, x, y)
    s1, s3 = one.last_info["success"], three.last_info["success"]
    assert s1.any() and not (s1 & ~s3).any()
    assert s3.sum() > s1.sum(), "restarts fooled no further sample"
    assert torch.equal(x1[s1], x3[s1]), "the first restart is the single run"
    assert (margins(model, x3, y) <= margins(model, x1, y) + 1e-4).all()
    q3 = three.last_info["queries"]
    assert (q3 <= 3 * 40).all() and (q3[~s3] == 3 * 40).all()


# -- the pieces ---------------------------------------------------------------------------
@pytest.mark.parametrize("n_queries", [10_000, 5000, 1000, 300])
def test_p_halves_at_the_rescaled_iterations(n_queries):
    p_init = 0.8
    values = [p_schedule(p_init, it, n_queries) for it in range(n_queries)]
    assert values[0] == p_init
    halvings = [it for it in range(1, n_queries) if values[it] != values[it - 1]]
    assert all(values[it] == values[it - 1] / 2 for it in halvings)
    expected = sorted({next(it for it in range(n_queries) if int(it / n_queries * 10_000) > b) for b in P_HALVINGS})
    assert halvings == expected
    assert values[-1] == p_init / 2 ** len(P_HALVINGS)
    attack = build(n_queries=n_queries, p_init=p_init)
    assert [attack.p_at(it) for it in halvings] == [values[it] for it in halvings]


def test_p_schedule_matches_the_paper_at_10000_queries():
    p = lambda it: p_schedule(0.8, it, 10_000)  # noqa: E731
    assert (p(10), p(11), p(50), p(51), p(200), p(201)) == (0.8, 0.4, 0.4, 0.2, 0.2, 0.1)
    assert (p(8000), p(8001), p(9999)) == (0.8 / 256, 0.8 / 512, 0.8 / 512)
    assert (p_schedule(0.8, 1, 1000), p_schedule(0.8, 2, 1000)) == (0.8, 0.4)  # rescaled: 10 -> 1


def test_square_side():
    assert square_side(0.8, 8, 8) == 7  # round(sqrt(51.2))
    assert square_side(1.0, 8, 8) == 7  # capped below the image size
    assert square_side(0.05, 8, 8) == 2
    assert square_side(0.001, 8, 8) == 1  # at least one pixel
    assert square_side(0.8, 32, 32) == 29
    assert square_side(0.5, 1, 10) == 1


def test_margin_loss():
    logits = torch.tensor([[3.0, 1.0, 2.0], [3.0, 1.0, 2.0]], dtype=torch.bfloat16)
    m = margin_loss(logits, torch.tensor([0, 1]))
    assert m.dtype == torch.float32 and m.tolist() == [1.0, -2.0]


def test_stripes_are_vertical_and_eps_away():
    attack = build(eps=0.25, seed=0)
    x = torch.full((6, 3, 8, 8), 0.5)
    delta = attack.stripes(x, attack.generator(x.device)) - x
    assert torch.allclose(delta.abs(), torch.full_like(delta, 0.25))
    assert torch.equal(delta, delta[:, :, :1].expand_as(delta)), "stripes are constant along each column"
    assert (delta[:, :, 0] > 0).any() and (delta[:, :, 0] < 0).any()
    edge = torch.zeros(2, 1, 4, 4)
    edge[1] = 1.0
    out = attack.stripes(edge, attack.generator(edge.device))
    assert out.min() >= 0 and out.max() <= 1
    assert set(out[0].unique().tolist()) <= {0.0, 0.25} and set(out[1].unique().tolist()) <= {0.75, 1.0}


def test_square_proposal_changes_one_square_per_sample():
    attack = build(eps=0.25, seed=0)
    gen = attack.generator(torch.device("cpu"))
    x = torch.full((32, 3, 8, 8), 0.5)
    x_best = attack.stripes(x, gen)
    side = 3
    proposal = attack.square_proposal(x, x_best, side, gen)
    changed = proposal != x_best
    assert changed.flatten(1).any(1).all(), "every proposal must change its sample"
    delta = proposal - x
    for i in range(x.shape[0]):
        rows = changed[i].any(0).any(1).nonzero().squeeze(1)
        cols = changed[i].any(0).any(0).nonzero().squeeze(1)
        assert rows.max() - rows.min() < side and cols.max() - cols.min() < side
        for ch in range(3):  # inside the square one sign per channel
            vals = delta[i, ch, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
            assert torch.allclose(vals.abs(), torch.full_like(vals, 0.25))


def test_square_proposal_redraws_a_sign_that_changes_nothing():
    """With one channel and x_best = x + eps everywhere only the minus sign changes anything."""
    attack = build(eps=0.25, seed=0)
    gen = attack.generator(torch.device("cpu"))
    x = torch.full((64, 1, 8, 8), 0.5)
    proposal = attack.square_proposal(x, x + 0.25, 2, gen)
    changed = proposal != x + 0.25
    assert (changed.flatten(1).sum(1) == 4).all()
    assert torch.equal(proposal[changed], torch.full((64 * 4,), 0.25))


def test_squares_reach_every_row_and_column():
    attack = build(eps=0.25, seed=0)
    gen = attack.generator(torch.device("cpu"))
    x = torch.full((400, 1, 5, 5), 0.5)
    changed = attack.square_proposal(x, x + 0.25, 1, gen) != x + 0.25
    assert changed.any(0).all(), "some pixel was never reachable by a square"
