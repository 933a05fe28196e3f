"""Class conditioning of the U-Net and NCSN++/DDPM++, the noise-conditional classifier network, and their
adapters to score and logits functions."""

import pytest
import torch

from scoresde import VPSDE
from scoresde.conditional import (
    cfg_score,
    class_conditional_score,
    classifier_guided_score,
    network_classifier,
)
from scoresde.nets import NCSNpp, UNet
from scoresde.nets.classifier import NoiseConditionalClassifier
from scoresde.solvers import EulerMaruyama

pytestmark = pytest.mark.usefixtures("one_thread")


def small_unet(**kw):
    return UNet(in_channels=1, ch=8, ch_mult=(1, 2), image_size=8, **kw)


def test_unconditional_unet_is_unchanged_by_the_option():
    """num_classes=0 adds no parameter: same state-dict keys, same outputs as before the option."""
    torch.manual_seed(0)
    a = small_unet()
    torch.manual_seed(0)
    b = small_unet(num_classes=0)
    assert list(a.state_dict()) == list(b.state_dict())
    assert not any("class" in k for k in a.state_dict())
    x, c = torch.randn(3, 1, 8, 8), torch.tensor([1.0, 500.0, 999.0])
    torch.testing.assert_close(a(x, c), b(x, c), rtol=0, atol=0)
    with pytest.raises(ValueError, match="no class conditioning"):
        a(x, c, torch.tensor([0, 1, 2]))


def test_class_conditional_unet():
    net = small_unet(num_classes=10)
    torch.nn.init.normal_(net.conv_out.weight)  # the output conv starts at zero
    assert net.null_label == 10 and net.class_embed.weight.shape == (11, 32)
    x, c = torch.randn(2, 1, 8, 8), torch.tensor([100.0, 100.0])
    y0, y1 = net(x, c, torch.tensor([0, 0])), net(x, c, torch.tensor([1, 1]))
    assert not torch.allclose(y0, y1)
    torch.testing.assert_close(net(x, c), net(x, c, torch.tensor([10, 10])))  # None = the null label
    with pytest.raises(ValueError, match="must lie in 0..9"):
        net(x, c, torch.tensor([0, 11]))


# Tiny DDPM++ (VP/sub-VP options) and NCSN++ (VE options: FIR, input pyramid, Fourier embedding of
# log sigma, output divided by sigma), with the noise labels each is called with.
TINY_NCSNPP = {
    "ddpmpp": (dict(), lambda n: 999 * torch.rand(n)),
    "ncsnpp": (dict(fir=True, progressive_input="residual", embedding_type="fourier", scale_by_sigma=True,
                    centered=False), lambda n: 0.01 * (50 / 0.01) ** torch.rand(n)),
}


def tiny_ncsnpp(name, **kw):
    base = dict(in_channels=2, image_size=8, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
                dropout=0.0, init_scale=0.1)
    return NCSNpp(**{**base, **TINY_NCSNPP[name][0], **kw})


@pytest.mark.parametrize("name", sorted(TINY_NCSNPP))
def test_unconditional_ncsnpp_is_unchanged_by_the_option(name):
    """num_classes=None (default) or 0 adds no parameter: the reference's state-dict keys in the same order
    (official checkpoints load by key and their EMA lists by parameters() order), the same outputs."""
    torch.manual_seed(0)
    a = tiny_ncsnpp(name)
    nets = []
    for k in (None, 0):
        torch.manual_seed(0)
        nets.append(tiny_ncsnpp(name, num_classes=k))
    x, c = torch.randn(3, 2, 8, 8), TINY_NCSNPP[name][1](3)
    for b in nets:
        assert list(a.state_dict()) == list(b.state_dict()) and b.num_classes == 0
        assert not any("class" in k for k in b.state_dict())
        torch.testing.assert_close(a(x, c), b(x, c), rtol=0, atol=0)
    with pytest.raises(ValueError, match="no class conditioning"):
        a(x, c, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="num_classes must be >= 0"):
        tiny_ncsnpp(name, num_classes=-1)


@pytest.mark.parametrize("name", sorted(TINY_NCSNPP))
def test_class_conditional_ncsnpp(name):
    torch.manual_seed(0)
    plain_net = tiny_ncsnpp(name)
    torch.manual_seed(0)
    net = tiny_ncsnpp(name, num_classes=10).eval()
    assert net.null_label == 10 and net.class_embed.weight.shape == (11, 32)
    # the reference's parameters first, in its order; the class embedding is the only addition
    names = [n for n, _ in net.named_parameters()]
    assert names == [n for n, _ in plain_net.named_parameters()] + ["class_embed.weight"]
    x, c = torch.randn(2, 2, 8, 8), TINY_NCSNPP[name][1](1).expand(2)
    with torch.no_grad():
        y0, y1 = net(x, c, torch.tensor([0, 0])), net(x, c, torch.tensor([1, 1]))
        assert y0.shape == x.shape and torch.isfinite(y0).all()
        assert not torch.allclose(y0, y1)
        torch.testing.assert_close(net(x, c), net(x, c, torch.tensor([10, 10])))  # None = the null label
        assert not torch.allclose(net(x, c), y0)
        torch.testing.assert_close(net(x, c, 1), y1)  # one label for the batch
    with pytest.raises(ValueError, match="must lie in 0..9"):
        net(x, c, torch.tensor([0, 11]))
    with pytest.raises(ValueError, match="must be integers"):
        net(x, c, torch.tensor([0.0, 1.0]))


def test_class_conditional_ncsnpp_without_noise_embedding():
    """conditional=False (no noise embedding): the class embedding alone feeds the residual blocks."""
    net = tiny_ncsnpp("ddpmpp", conditional=False, num_classes=3).eval()
    x = torch.randn(2, 2, 8, 8)
    with torch.no_grad():
        assert torch.equal(net(x, torch.tensor([1.0, 2.0]), 1), net(x, torch.tensor([500.0, 7.0]), 1))
        assert not torch.allclose(net(x, 5.0, 0), net(x, 5.0, 1))


@pytest.mark.parametrize("preset", ["ddpmpp_cifar10", "ncsnpp_cifar10"])
def test_ncsnpp_presets_take_num_classes(preset):
    from pathlib import Path

    from omegaconf import OmegaConf

    from scoresde.train.build import instantiate

    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "model" / f"{preset}.yaml")
    assert cfg.num_classes is None
    with torch.device("meta"):  # shapes only
        net = instantiate(cfg, num_classes=10)
    assert net.num_classes == 10 and net.class_embed.weight.shape == (11, 512)


@pytest.mark.parametrize("label_dropout", [0.0, 0.5])
def test_score_model_trains_a_class_conditional_ncsnpp_with_label_dropout(tmp_path, label_dropout):
    """Two Lightning steps on (x, y) batches, all of class 0: the embeddings of class 0 move, those of the
    unused classes do not, and the null label's moves exactly when labels are dropped."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from scoresde.train import ScoreModel

    net = {"_target_": "scoresde.nets.NCSNpp", "in_channels": 2, "image_size": 8, "nf": 8, "ch_mult": [1, 2],
           "num_res_blocks": 1, "attn_resolutions": [4], "dropout": 0.0, "num_classes": 3}
    torch.manual_seed(0)
    model = ScoreModel(net, {"_target_": "scoresde.sde.VPSDE"}, warmup_steps=0, lr=1e-3,
                       data_shape=(2, 8, 8), label_dropout=label_dropout)
    before = model.net.class_embed.weight.detach().clone()
    data = TensorDataset(torch.randn(16, 2, 8, 8), torch.zeros(16, dtype=torch.long))
    trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path)
    trainer.fit(model, train_dataloaders=DataLoader(data, batch_size=8))
    moved = (model.net.class_embed.weight.detach() != before).any(dim=1).tolist()
    assert moved == [True, False, False, label_dropout > 0], moved


def test_network_adapters_drive_guidance_and_samplers():
    sde = VPSDE()
    net = small_unet(num_classes=3).eval()
    torch.nn.init.normal_(net.conv_out.weight, std=0.01)
    clf = NoiseConditionalClassifier(num_classes=3, ch=8, image_size=8).eval()
    logits = network_classifier(clf, sde)
    assert logits.num_classes == 3
    x, t = torch.randn(4, 1, 8, 8), torch.full((4,), 0.5)
    assert logits(x, t).shape == (4, 3)
    cond = class_conditional_score(net, sde)
    labels = torch.tensor([0, 1, 2, 0])
    guided = classifier_guided_score(lambda v, s: cond(v, s, 3), logits, labels, scale=2.0)
    out = EulerMaruyama(steps=3).sample(guided, sde, (4, 1, 8, 8), seeds=[0, 1, 2, 3])
    assert out.shape == (4, 1, 8, 8) and torch.isfinite(out).all()
    out = EulerMaruyama(steps=3).sample(cfg_score(cond, labels, 1.5, net.null_label), sde, (4, 1, 8, 8),
                                        seeds=[0, 1, 2, 3])
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="outside the classifier's labels 0..2"):
        classifier_guided_score(lambda v, s: cond(v, s, 3), logits, 3)
    with pytest.raises(ValueError, match="no class conditioning"):
        class_conditional_score(small_unet(), sde)
    for name in TINY_NCSNPP:  # NCSN++/DDPM++ through the same adapters
        net = tiny_ncsnpp(name, in_channels=1, num_classes=3).eval()
        cond = class_conditional_score(net, sde)
        assert not torch.allclose(cond(x, t, labels), cond(x, t, torch.tensor([1, 2, 0, 1])))
        out = EulerMaruyama(steps=3).sample(cfg_score(cond, labels, 1.5, net.null_label), sde, (4, 1, 8, 8),
                                            seeds=[0, 1, 2, 3])
        assert out.shape == (4, 1, 8, 8) and torch.isfinite(out).all()
        with pytest.raises(ValueError, match="no class conditioning"):
            class_conditional_score(tiny_ncsnpp(name), sde)
    with pytest.raises(ValueError, match="num_classes >= 2"):
        NoiseConditionalClassifier(num_classes=1)


def test_classifier_module_trains_on_labelled_batches_and_round_trips(tmp_path):
    """The labelled loader pairs each (dequantized) digit with its label; a few steps of the classifier's
    cross-entropy on SDE-perturbed digits lower it; the saved weights load back to the same logits."""
    import pytorch_lightning as pl

    from scoresde.data.digits import DigitsDataModule
    from scoresde.train.classifier import ClassifierModel, labelled_loader, load_classifier, save_classifier

    dm = DigitsDataModule(batch_size=64, seed=0)
    dm.setup()
    x, y = next(iter(labelled_loader(dm, "test", train=False)))
    assert x.shape == (64, 1, 8, 8) and torch.equal(y, dm.labels("test")[:64])
    net = {"_target_": "scoresde.nets.classifier.NoiseConditionalClassifier", "num_classes": 10, "ch": 8}
    torch.manual_seed(0)
    model = ClassifierModel(net, {"_target_": "scoresde.sde.VPSDE"}, lr=5e-3, warmup_steps=0)
    before = model._loss((x, y), torch.Generator().manual_seed(0), t=1e-3)[0].item()
    trainer = pl.Trainer(max_steps=40, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path)
    trainer.fit(model, train_dataloaders=labelled_loader(dm, "train", train=True))
    model.eval()
    after = model._loss((x, y), torch.Generator().manual_seed(0), t=1e-3)[0].item()
    assert after < before - 0.1, (before, after)
    save_classifier(model, tmp_path / "classifier.pt")
    net2, sde = load_classifier(tmp_path / "classifier.pt")
    c = sde.noise_label(torch.full((4,), 0.3))
    torch.testing.assert_close(net2(x[:4], c), model.net(x[:4], c))
    with pytest.raises(FileNotFoundError, match="task=train_classifier"):
        load_classifier(tmp_path / "missing.pt")
