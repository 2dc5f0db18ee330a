"""One conformance suite for every registered attack: the contract of attacks/base.py.

For each name in the attack registry, with small options so the suite stays fast (CASES):
the output is shaped and typed like x, inside [0, 1] and inside the eps-ball, on inputs at the
edges of [0, 1], and moves some input; eps = 0 returns the input; no side effects on the model
(modes, requires_grad, buffers, no .grad) with bn_mode eval and train; a seed reproduces the
attack bitwise (and, unseeded, so does torch's global seed); float64 and CUDA inputs give
float64 and CUDA outputs. A registered attack without a CASES entry fails here, naming the fix.
Attack-specific properties (strength, schedules, bookkeeping) stay in each family's test file.
"""
from __future__ import annotations

import pytest
import torch

from attacks import available_attacks, create_attack
from tests.conftest import ToyNet, toy_data
from tests.invariants import check_eps_zero_identity, check_no_side_effects, check_threat_model, with_boundary_pixels

FAST_CW = {"binary_search_steps": 3, "steps": 20, "lr": 0.05, "initial_const": 1.0}
# per registered attack: the option sets checked (eps in pixel units, few steps)
CASES: dict[str, list[dict]] = {
    "fgsm": [{"eps": 0.1}, {"eps": 0.5, "norm": "l2"}],
    "fgsm_rs": [{"eps": 0.1}],
    "bim": [{"eps": 0.1}],
    "pgd": [{"eps": 0.1}, {"eps": 0.5, "norm": "l2", "steps": 5}, {"eps": 0.1, "restarts": 3, "steps": 5},
            {"eps": 0.1, "steps": 5, "loss": "kl"}],
    "apgd_ce": [{"eps": 0.2, "n_iter": 10, "norm": n, "loss": loss} for n in ("linf", "l2") for loss in ("ce", "dlr")]
    + [{"eps": 0.2, "n_iter": 10, "n_restarts": 2}],
    "apgd_t": [{"eps": 0.2, "n_iter": 10}, {"eps": 1.5, "n_iter": 10, "norm": "l2", "n_restarts": 2, "n_target_classes": 2}],
    "apgd_cascade": [{"eps": 0.1, "version": "cheap"}, {"eps": 0.8, "version": "cheap", "norm": "l2"}],
    "autoattack": [{"eps": 0.3, "components": ["apgd-ce"]}, {"eps": 2.0, "norm": "l2", "components": ["apgd-ce"]}],
    "square": [{"eps": 0.2, "n_queries": 40}],
    "fmn": [{"eps": e, "norm": n, "steps": 20} for n, e in (("linf", 0.2), ("l2", 1.5), ("l1", 4.0))],
    "cw_l2": [{"eps": 1.5, **FAST_CW}],
    "deepfool": [{"eps": 1.5, "max_steps": 10}],
    "fgsm_targeted": [{"eps": 0.1}, {"eps": 1.5, "norm": "l2"}, {"eps": 0.3, "target_rule": "given"}],
    "l2_iterative_targeted": [{"eps": 1.5, "max_steps": 20}, {"eps": 1.5, "max_steps": 20, "target_rule": "random"},
                              {"eps": 1.5, "max_steps": 20, "target_rule": "given"}],
    "lbfgs": [{"eps": 1.5}, {"eps": 1.5, "target_rule": "given", "max_iter": 5}],
    "autocast": [{"eps": 0.1, "attack": {"name": "pgd", "steps": 5}},
                 {"eps": 0.5, "attack": {"name": "pgd", "norm": "l2", "steps": 5}}],
    "bpda": [{"eps": 0.1, "attack": {"name": "pgd", "steps": 5}}],
    "transfer": [{"eps": 0.1, "attack": {"name": "pgd", "steps": 3}}],
    "post_train_adaptive": [{"eps": 0.2, "steps": 3}],
}
# attacks whose random start or search makes another seed give another output
RANDOMISED = {"fgsm_rs", "pgd", "apgd_ce", "apgd_t", "square"}
ALL = [(name, options) for name in available_attacks() for options in CASES.get(name, [{}])]

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              # bpda on a model without preprocessing: the warning is tested in test_blur.py
              pytest.mark.filterwarnings("ignore:.*no module with a 'straight_through' switch")]


def case_id(case) -> str:
    name, options = case
    return "-".join([name, *(f"{v}" for k, v in options.items() if k != "eps")])


@pytest.fixture(scope="module")
def transfer_source(tmp_path_factory):
    """A real advtrain checkpoint for ``transfer`` to craft on (4 classes, 1 x 8 x 8 pixels)."""
    import pytorch_lightning as pl

    from lightning_modules import AdversarialClassifier

    torch.manual_seed(0)
    model = AdversarialClassifier(backbone="cifar_resnet18", num_classes=4, mean=(0.5,), std=(0.25,))
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.strategy.connect(model)
    path = tmp_path_factory.mktemp("transfer") / "source.ckpt"
    trainer.save_checkpoint(path)
    return str(path)


@pytest.fixture
def make(request):
    """``make(name, options, **overrides)`` -> the attack (transfer: crafting on a real checkpoint)."""

    def build(name, options, **overrides):
        extra = {"source": request.getfixturevalue("transfer_source")} if name == "transfer" else {}
        return create_attack({"name": name, **options, **extra, **overrides})

    return build


@pytest.fixture
def call_kwargs(request):
    """``call_kwargs(name, options, y)``: what the call needs besides (model, x, y): a given target, or for
    post_train_adaptive the defence it attacks (post-train around the trained toy model, tiny settings)."""

    def kwargs(name, options, y):
        if name == "post_train_adaptive":
            from lightning_modules.defences.post_train import PostTrain

            model, x_train, y_train = request.getfixturevalue("trained_toy")
            return {"defence": PostTrain(model, torch.utils.data.TensorDataset(x_train, y_train), {
                "neighbour_attack": {"name": "pgd", "eps": 0.2, "steps": 2, "random_start": False},
                "steps": 2, "samples_per_class": 4})}
        return {"target": (y + 1) % 4} if options.get("target_rule") == "given" else {}

    return kwargs


def batch(trained_toy, name, n=32):
    """The trained toy model and n points (transfer: 16, its source is a ResNet)."""
    model, x, y = trained_toy
    n = 16 if name == "transfer" else n
    return model, x[:n], y[:n]


def test_every_registered_attack_has_a_case():
    missing = sorted(set(available_attacks()) - set(CASES))
    assert not missing, f"add small options for {missing} to CASES in {__file__}"


@pytest.mark.parametrize("case", ALL, ids=case_id)
def test_output_inside_ball_and_pixel_range(case, make, trained_toy, call_kwargs):
    name, options = case
    model, x, y = batch(trained_toy, name)
    x = with_boundary_pixels(x)
    x_adv = check_threat_model(make(name, options, seed=0), model, x, y, **call_kwargs(name, options, y))
    assert (x_adv != x).any(), "the attack moved no input at all"


@pytest.mark.parametrize("case", ALL, ids=case_id)
def test_eps_zero_returns_the_input(case, make, trained_toy, call_kwargs):
    name, options = case
    model, x, y = batch(trained_toy, name)
    check_eps_zero_identity(lambda eps: make(name, options, eps=eps), model, x, y, **call_kwargs(name, options, y))


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
@pytest.mark.parametrize("case", ALL, ids=case_id)
def test_no_side_effects_on_the_model(case, bn_mode, make, call_kwargs):
    name, options = case
    x, y = toy_data(16)
    check_no_side_effects(make(name, options, bn_mode=bn_mode), x, y, **call_kwargs(name, options, y))


@pytest.mark.parametrize("case", ALL, ids=case_id)
def test_seed_reproduces_the_attack(case, make, trained_toy, call_kwargs):
    name, options = case
    model, x, y = batch(trained_toy, name)
    kwargs = call_kwargs(name, options, y)
    a, b, c = (make(name, options, seed=s)(model, x, y, **kwargs) for s in (3, 3, 4))
    assert torch.equal(a, b), "one seed, two results"
    if name in RANDOMISED:
        assert not torch.equal(a, c), "another seed gave the same result"
    unseeded = make(name, options)
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(unseeded(model, x, y, **kwargs))
    assert torch.equal(*runs), "an unseeded attack does not follow torch's global seed"


@pytest.mark.parametrize("case", ALL, ids=case_id)
def test_follows_the_input_dtype(case, make, trained_toy, call_kwargs):
    name, options = case
    if name in ("transfer", "autoattack", "post_train_adaptive"):
        pytest.skip(f"{name} attacks another model (its source, the reference code's float32 copy, or the "
                    "defence's float32 fine-tuned copies), not the model at hand alone")
    model, x, y = batch(trained_toy, name)
    double = ToyNet()
    double.load_state_dict(model.state_dict())
    double = double.double().eval()
    x_adv = check_threat_model(make(name, options, seed=0), double, x.double(), y, **call_kwargs(name, options, y))
    assert x_adv.dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: device-following is checked on a GPU")
@pytest.mark.parametrize("case", ALL, ids=case_id)
def test_follows_the_input_device(case, make, trained_toy, call_kwargs):
    name, options = case
    if name == "post_train_adaptive":
        pytest.skip("post_train_adaptive attacks the defence's fine-tuned copies, which live on the defence's device")
    model, x, y = batch(trained_toy, name)
    device = torch.device("cuda")
    gpu = ToyNet()
    gpu.load_state_dict(model.state_dict())
    gpu = gpu.to(device).eval()
    x, y = x.to(device), y.to(device)
    x_adv = check_threat_model(make(name, options, seed=0), gpu, x, y, **call_kwargs(name, options, y))
    assert x_adv.device.type == "cuda"
