"""The evaluation layer: feature networks, FID/KID/IS through torchmetrics, the reference-statistics cache,
seed-set spread, memorisation, classifier confidence, toy-2-D distances."""

from __future__ import annotations

import importlib.util
import math
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import scoresde.evaluation as E
from scoresde import quantization as q
from scoresde.data.digits import load_digits_splits
from scoresde.evaluation import inception as inc
from scoresde.evaluation.classifier import DIGITS_WEIGHTS_FILE
from scoresde.evaluation.weight_files import package_weights_dir

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def digits():
    """(x_train, y_train, x_test, y_test) of the fixed 1,500 / 297 split, uint8 (N, 1, 8, 8) in [0, 17)."""
    s = load_digits_splits()
    return (*s["train"], *s["test"])


@pytest.fixture(scope="module")
def net():
    return E.build_feature_extractor("digits")


@pytest.fixture(scope="module")
def train_ref(digits, net):
    return E.compute_reference_stats(net, digits[0], "digits-train")


def gaussian_features(n, dim, shift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g, dtype=torch.float64) + shift


def stats_of(features, name="synthetic"):
    return E.ReferenceStats.from_features(
        features, name=name, feature_name="none", fingerprint="f", data_hash="0" * 64
    )


# ---------------------------------------------------------------------------------------- digits classifier
def test_shipped_digits_classifier_accuracy(digits, net):
    _, _, xte, yte = digits
    acc = E.classifier_accuracy(net, xte, yte)
    assert acc >= 0.97, f"digits classifier test accuracy {acc:.4f} < 0.97"
    path = package_weights_dir() / DIGITS_WEIGHTS_FILE
    assert path.stat().st_size < 1_000_000
    assert net.meta["dataset"] == "digits" and net.meta["test_accuracy"] == pytest.approx(acc, abs=1e-6)
    assert "train_classifier.py digits" in net.meta["command"]


def test_digits_extractor_interface(digits, net):
    x = digits[2][:5]
    assert (net.name, net.num_features, net.num_classes, net.levels) == ("digits", 128, 10, 17)
    assert net.input_shape == (1, 8, 8) and net.has_logits
    feats, logits = net.features_and_logits(x)
    assert feats.shape == (5, 128) and logits.shape == (5, 10)
    assert torch.equal(net(x), feats) and torch.equal(net.logits(x), logits)
    assert net.fingerprint.startswith("digits-smallcnn-v1:")
    assert not net.training
    net.train()
    assert not net.training  # never leaves evaluation mode
    with pytest.raises(ValueError, match="integer images"):
        net(x.float())
    with pytest.raises(ValueError, match=r"\[0, 17\)"):
        net(x.clamp(max=16) + 1)
    with pytest.raises(ValueError, match="shape"):
        net(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match="unknown feature network"):
        E.build_feature_extractor("resnet")


def test_classifier_training_is_deterministic(digits):
    x, y = digits[0][:128], digits[1][:128]
    kw = dict(levels=17, epochs=1, batch_size=64)
    a = E.train_classifier(x, y, seed=3, **kw).state_dict()
    b = E.train_classifier(x, y, seed=3, **kw).state_dict()
    c = E.train_classifier(x, y, seed=4, **kw).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def _load_script():
    path = REPO / "scripts" / "train_classifier.py"
    spec = importlib.util.spec_from_file_location("train_classifier_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_idx(path: Path, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


def test_training_script_digits_and_mnist(tmp_path, monkeypatch):
    script = _load_script()
    out = script.main(["digits", "--epochs", "1", "--out", str(tmp_path / "d.pt"), "--quiet"])
    loaded = E.digits_feature_extractor(weights=out)
    assert loaded.meta["recipe"]["epochs"] == 1 and loaded.num_features == 128

    # MNIST from (tiny, synthetic) IDX files; the weights are then found through the environment variable.
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 20)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
    args = ["mnist", "--root", str(tmp_path), "--epochs", "1", "--out", str(tmp_path / "m.pt"), "--quiet"]
    mnist_out = script.main(args)
    monkeypatch.setenv("SCORESDE_MNIST_CLASSIFIER", str(mnist_out))
    m = E.build_feature_extractor("mnist")
    assert (m.name, m.levels, m.input_shape) == ("mnist", 256, (1, 28, 28))
    assert m(torch.zeros(3, 1, 28, 28, dtype=torch.uint8)).shape == (3, 128)


def test_missing_mnist_weights_error(tmp_path, monkeypatch):
    monkeypatch.delenv("SCORESDE_MNIST_CLASSIFIER", raising=False)
    monkeypatch.setenv("SCORESDE_WEIGHTS_DIR", str(tmp_path))
    if (package_weights_dir() / "mnist_classifier.pt").exists():
        pytest.skip("MNIST classifier weights were placed in the package")
    with pytest.raises(E.WeightsNotFoundError) as err:
        E.build_feature_extractor("mnist")
    msg = str(err.value)
    assert "scripts/train_classifier.py mnist --root" in msg and str(tmp_path) in msg
    assert isinstance(err.value, FileNotFoundError)


def test_bad_classifier_file(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"weights": torch.zeros(3)}, bad)
    with pytest.raises(E.WeightsFormatError, match="not a scoresde classifier"):
        E.load_classifier(bad, "digits")


# ------------------------------------------------------------------------------------------------ inception
def test_missing_inception_weights_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("SCORESDE_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.delenv("SCORESDE_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.delenv("TORCH_HUB", raising=False)
    with pytest.raises(E.WeightsNotFoundError) as err:
        E.build_feature_extractor("inception")
    msg = str(err.value)
    assert inc.INCEPTION_URLS["pt_inception-2015-12-05-6726825d.pth"] in msg  # how to obtain it
    where = tmp_path / "torch" / "hub" / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth"
    assert str(where) in msg  # where to put it
    assert "SCORESDE_INCEPTION_WEIGHTS" in msg and "weights=" in msg
    with pytest.raises(E.WeightsNotFoundError, match="nowhere.pth"):
        E.InceptionFeatureExtractor(weights=tmp_path / "nowhere.pth")


def test_inception_loads_local_weights_and_runs(tmp_path, monkeypatch):
    torch.manual_seed(0)
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(inc.FIDInceptionV3().state_dict(), hub / "pt_inception-2015-12-05-6726825d.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("SCORESDE_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.delenv("TORCH_HUB", raising=False)
    monkeypatch.setattr(inc, "INPUT_SIZE", 75)  # the smallest input the network takes: keeps the test fast
    ext = E.build_feature_extractor("inception", levels=17)
    assert ext.weights_path.parent == hub and ext.fingerprint.startswith("inception-fid-v3:")
    x = torch.randint(0, 17, (2, 1, 8, 8), dtype=torch.uint8)
    feats, logits = ext.features_and_logits(x)
    assert feats.shape == (2, 2048) and logits.shape == (2, 1008) and torch.isfinite(feats).all()
    assert E.InceptionFeatureExtractor(weights=hub / "pt_inception-2015-12-05-6726825d.pth").fingerprint != \
        ext.fingerprint  # levels are part of the fingerprint
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(1008, 2048)}, bad)
    with pytest.raises(E.WeightsFormatError, match="missing keys"):
        E.InceptionFeatureExtractor(weights=bad)


def test_tf1_resize_samples_like_tensorflow():
    x = torch.arange(4.0).view(1, 1, 1, 4)
    # TensorFlow 1.x, align_corners=False: source positions i * in/out = 0, 0.5, 1, ..., clamped at the edge.
    out = inc.resize_bilinear_tf1(x, (1, 8))
    assert torch.allclose(out.flatten(), torch.tensor([0, 0.5, 1, 1.5, 2, 2.5, 3, 3]))


# ------------------------------------------------------------------------------------------- FID / KID / IS
def test_fid_of_a_set_against_itself_is_zero_and_grows_with_a_shift(digits, net, train_ref):
    xtr, _, xte, _ = digits
    fid = lambda x: E.fid_from_features(train_ref, net.extract(x)[0])  # noqa: E731
    assert abs(fid(xtr)) < 1e-6
    test_fid = fid(xte)
    shifted_fid = fid(torch.roll(xte, 1, dims=3))
    assert 0 < test_fid < shifted_fid


@pytest.mark.filterwarnings("ignore:Metric `InceptionScore` will save", r"ignore:std\(\)")
def test_extractor_plugs_into_torchmetrics_directly(digits, net, train_ref):
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.inception import InceptionScore

    xtr, _, xte, _ = digits
    metric = FrechetInceptionDistance(feature=net)
    metric.update(xtr, real=True)
    metric.update(xte, real=False)
    ours = E.fid_from_features(train_ref, net.extract(xte)[0])
    assert float(metric.compute()) == pytest.approx(ours, rel=1e-4)
    score = InceptionScore(feature=net.logits_module(), splits=1)
    score.update(xte)
    ours = E.inception_score_from_logits(net.extract(xte)[1], splits=1)[0]
    assert float(score.compute()[0]) == pytest.approx(ours, rel=1e-5) and ours > 8.0


def test_fid_on_synthetic_gaussians():
    real = stats_of(gaussian_features(4000, 4))
    assert E.fid_from_features(real, gaussian_features(4000, 4)) < 0.05
    shifted = E.fid_from_features(real, gaussian_features(4000, 4, shift=1.0, seed=1))
    assert shifted == pytest.approx(4.0, rel=0.1)  # |mu1 - mu2|^2 = 4 x 1^2, covariances equal
    with pytest.raises(ValueError, match="expected features"):
        E.fid_from_features(real, gaussian_features(10, 5))


def test_kid_sanity_on_synthetic_features():
    ref = gaussian_features(600, 8)
    same = E.kid_from_features(ref, gaussian_features(600, 8, seed=1), subsets=20, subset_size=200)
    far = E.kid_from_features(ref, gaussian_features(600, 8, shift=1.0, seed=2), subsets=20, subset_size=200)
    assert abs(same[0]) < 3 * same[1] + 1e-3
    assert far[0] > 10 * abs(same[0]) and far[0] > 3 * far[1]
    assert same == E.kid_from_features(ref, gaussian_features(600, 8, seed=1), subsets=20, subset_size=200)
    # subset size is capped at the smaller set
    assert math.isfinite(E.kid_from_features(ref, gaussian_features(50, 8), subset_size=1000)[0])


def test_inception_score_sanity():
    k = 10
    confident_uniform = torch.eye(k).repeat(20, 1) * 50.0  # every class equally often, each certain
    assert E.inception_score_from_logits(confident_uniform, splits=1)[0] == pytest.approx(k, rel=1e-3)
    assert E.inception_score_from_logits(confident_uniform, splits=4)[0] > 9.0  # splits are not all balanced
    collapsed = torch.zeros(200, k)
    collapsed[:, 3] = 50.0  # always the same class
    assert E.inception_score_from_logits(collapsed)[0] == pytest.approx(1.0, abs=1e-3)
    assert E.inception_score_from_logits(torch.zeros(200, k))[0] == pytest.approx(1.0, abs=1e-6)


def test_compute_image_metrics_on_digits(digits, net, train_ref):
    m = E.compute_image_metrics(digits[2], train_ref, net, kid_subsets=10)
    assert m.is_mean is not None and m.is_mean > 8.0  # 10 balanced classes, confidently recognised
    assert m.num_samples == 297 and m.num_reference == 1500 and m.feature_network == "digits"
    assert set(m.to_dict()) >= {"fid", "kid_mean", "kid_std", "is_mean", "is_std"}
    other = E.ReferenceStats(**{**train_ref.__dict__, "fingerprint": "other"})
    with pytest.raises(ValueError, match="another feature network"):
        E.compute_image_metrics(digits[2], other, net)


def test_to_uint8_quantizes_like_the_data(digits):
    x = digits[2]
    g = torch.Generator().manual_seed(0)
    model_space = q.dequantize(x, 17, (-1.0, 1.0), generator=g)
    assert torch.equal(E.to_uint8(model_space, 17), x)
    assert E.to_uint8(x, 17).dtype == torch.uint8
    bad = model_space.clone()
    bad[3, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="1 of 297 samples contain NaN"):
        E.to_uint8(bad, 17)
    with pytest.raises(ValueError, match=r"\[0, 17\)"):
        E.to_uint8(x.long() + 1, 17)


# ---------------------------------------------------------------------------------------------------- cache
class Counting:
    """Counts calls of an extractor's network."""

    def __init__(self, extractor, monkeypatch):
        self.calls = 0
        original = extractor._forward

        def counted(images):
            self.calls += 1
            return original(images)

        monkeypatch.setattr(extractor, "_forward", counted)


def test_reference_cache_reused_and_invalidated(digits, tmp_path, monkeypatch):
    ext = E.digits_feature_extractor()
    counter = Counting(ext, monkeypatch)
    cache = E.ReferenceStatsCache(tmp_path / "stats")
    x = digits[0][:400].clone()

    first = cache.get("digits-train", ext, x)
    computed = counter.calls
    first_file = cache.path_for("digits-train", ext, E.data_hash(x))
    assert computed > 0 and first_file.name == f"digits-train__{E.data_hash(x)[:16]}__digits.npz"
    assert first_file.is_file()
    second = cache.get("digits-train", ext, x)
    assert counter.calls == computed  # reused: the network was not called again
    assert torch.equal(first.features_sum, second.features_sum)
    assert torch.equal(first.features_cov_sum, second.features_cov_sum)

    x[0, 0, 4, 4] = (int(x[0, 0, 4, 4]) + 1) % 17  # the data changed: recomputed, into a file of their own
    third = cache.get("digits-train", ext, x)
    assert counter.calls > computed and third.data_hash == E.data_hash(x) != first.data_hash
    changed_file = cache.path_for("digits-train", ext, E.data_hash(x))
    assert changed_file != first_file and changed_file.is_file() and first_file.is_file()
    calls = counter.calls
    cache.get("digits-train", ext, x)
    assert counter.calls == calls

    monkeypatch.setattr(ext, "_fingerprint", ext.fingerprint + "-retrained")  # the features changed
    assert cache.get("digits-train", ext, x).fingerprint.endswith("-retrained")
    assert counter.calls > calls

    calls = counter.calls
    changed_file.write_bytes(b"garbage")  # unreadable: recomputed, not a crash
    cache.get("digits-train", ext, x)
    assert counter.calls > calls
    assert sorted((tmp_path / "stats").iterdir()) == sorted([first_file, changed_file])  # no temp files


def test_two_data_sets_of_one_data_module_class_keep_their_own_cached_statistics(tmp_path, monkeypatch):
    """Two MNIST-format data sets at two roots (say MNIST and Fashion-MNIST, both through MNISTDataModule,
    so both named ``mnist-train``) get a cache file each: alternating between them recomputes nothing."""
    from scoresde.data import MNISTDataModule
    from scoresde.evaluation.classifier import ClassifierFeatureExtractor, SmallCNN

    torch.manual_seed(0)
    ext = ClassifierFeatureExtractor(SmallCNN((1, 28, 28), 256, widths=(4,), num_features=8), "mnist")
    rng = np.random.default_rng(0)
    modules = []
    for root in (tmp_path / "mnist", tmp_path / "fashion"):
        root.mkdir()
        for prefix, n in (("train", 30), ("t10k", 10)):
            write_idx(root / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
            write_idx(root / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
        modules.append(MNISTDataModule(root))
    assert modules[0].name == modules[1].name == "mnist"
    counter = Counting(ext, monkeypatch)

    def reference(dm):
        images = dm.integer_data("train")
        return E.reference_stats(f"{dm.name}-train", ext, images, cache_dir=tmp_path / "stats")

    first = [reference(dm) for dm in modules]
    files = sorted((tmp_path / "stats").iterdir())
    hashes = [E.data_hash(dm.integer_data("train")) for dm in modules]
    assert [f.name for f in files] == sorted(f"mnist-train__{h[:16]}__mnist.npz" for h in hashes)
    assert sorted(E.ReferenceStats.load(f).data_hash for f in files) == sorted(hashes)
    assert not torch.equal(first[0].features_sum, first[1].features_sum)
    calls = counter.calls
    again = [reference(dm) for dm in modules]  # each data set finds its own statistics
    assert counter.calls == calls
    for a, b in zip(first, again):
        assert a.data_hash == b.data_hash and torch.equal(a.features_sum, b.features_sum)


def test_reference_stats_default_dir_and_round_trip(digits, net, tmp_path, monkeypatch):
    monkeypatch.setenv("SCORESDE_STATS_DIR", str(tmp_path))
    assert E.default_stats_dir() == tmp_path
    stats = E.reference_stats("digits-test", net, digits[2])
    loaded = E.ReferenceStats.load(tmp_path / f"digits-test__{E.data_hash(digits[2])[:16]}__digits.npz")
    assert loaded.num_samples == 297 and loaded.fingerprint == net.fingerprint
    assert torch.allclose(loaded.cov, stats.cov) and torch.allclose(loaded.mean, stats.mean)
    assert loaded.features.shape == (297, 128)
    big = E.ReferenceStats.from_features(
        gaussian_features(50, 3), name="x", feature_name="n", fingerprint="f", data_hash="ab" * 32,
        max_kid_features=20,
    )
    assert big.features.shape == (20, 3) and big.num_samples == 50


# --------------------------------------------------------------------------------------------------- spread
def test_fid_spread_over_seed_sets(digits, net, train_ref):
    pool = torch.cat([digits[0], digits[2]])

    def fid_over_seed_sets(shift, seed_sets):
        values = []
        for seeds in seed_sets:  # one "sample" per seed: a real image, through model space and back
            idx = torch.tensor([s * 7919 % len(pool) for s in seeds])
            x = q.dequantize(torch.roll(pool[idx], shift, dims=3), 17,
                             generator=torch.Generator().manual_seed(seeds[0]))
            values.append(E.fid_from_features(train_ref, net.extract(E.to_uint8(x, 17))[0]))
        return E.SpreadResult(tuple(values), "FID")

    sets_a = [list(range(k * 200, (k + 1) * 200)) for k in range(3)]
    sets_b = [list(range(10_000 + k * 200, 10_000 + (k + 1) * 200)) for k in range(3)]
    good, good2 = fid_over_seed_sets(0, sets_a), fid_over_seed_sets(0, sets_b)
    bad = fid_over_seed_sets(1, sets_a)
    assert good.n == 3 and good.std > 0 and all(v > 0 for v in good.values)
    assert E.compare(good, good2).within
    cmp = E.compare(good, bad)
    assert not cmp.within and bad.mean > good.mean and "larger than the seed-set spread" in cmp.message
    assert "cannot be ranked" in E.compare(good, good2).message
    with pytest.raises(ValueError, match=">= 2 seed sets"):
        E.compare(E.SpreadResult((1.0,)), good)


def test_spread_result():
    r = E.SpreadResult((1.0, 2.0, 3.0), "FID")
    assert (r.mean, r.std) == (2.0, 1.0) and r.to_dict()["n"] == 3 and "FID 2 +- 1" in str(r)


# --------------------------------------------------------------------------------------------- memorisation
def test_memorization_on_constructed_cases(digits, net):
    xtr, _, xte, _ = digits
    copies = E.memorization(xtr[torch.arange(0, 1500, 5)], xtr, xte)
    assert copies.fraction == 1.0 and copies.threshold > 0 and copies.space == "pixel"
    # fresh images (training images held out of the "training set") behave like test data: about 5%
    fresh = E.memorization(xtr[1200:], xtr[:1200], xte)
    assert 0.0 <= fresh.fraction <= 0.12 and fresh.expected == 0.05
    assert E.memorization(xte, xtr, xte).fraction == pytest.approx(0.05, abs=0.01)
    half = torch.cat([xtr[:100], xtr[1200:1300]])  # half copies, half fresh
    assert 0.45 <= E.memorization(half, xtr[:1200], xte).fraction <= 0.6
    feats = E.memorization(xtr[1200:], xtr[:1200], xte, space="features", extractor=net)
    assert feats.space == "features" and 0.0 <= feats.fraction <= 0.12
    with pytest.raises(ValueError, match="quantize"):
        E.memorization(xte.float(), xtr, xte)
    with pytest.raises(ValueError, match="extractor"):
        E.memorization(xte, xtr, xte, space="features")


def test_nearest_distances_exact():
    refs = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    d = E.nearest_distances(torch.tensor([[0.0, 0.0], [3.0, 5.0], [6.0, 8.0]]), refs, chunk=2)
    assert torch.allclose(d, torch.tensor([0.0, 1.0, 5.0], dtype=torch.float64))


# ----------------------------------------------------------------------------------------------- confidence
def test_classifier_confidence(digits, net):
    real = E.classifier_confidence(net, digits[2])
    assert real.mean_max_prob > 0.95 and real.kl_to_uniform < 0.01
    assert sum(real.class_histogram) == pytest.approx(1)
    one_class = torch.zeros(50, 10)
    one_class[:, 2] = 30.0
    c = E.confidence_from_logits(one_class)
    assert c.kl_to_uniform == pytest.approx(math.log(10)) and c.mean_max_prob == pytest.approx(1.0)
    assert E.confidence_from_logits(torch.zeros(10, 10)).mean_max_prob == pytest.approx(0.1)


# ----------------------------------------------------------------------------------------- toy 2-D, imports
def test_toy2d_distances():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1000, 2, generator=g), torch.randn(1000, 2, generator=g)
    c = torch.randn(1000, 2, generator=g) + 1.0
    assert E.sliced_wasserstein(a, b, generator=g) < E.sliced_wasserstein(a, c, generator=g)
    assert abs(E.mmd_rbf(a, b)) < E.mmd_rbf(a, c)


@pytest.mark.slow
def test_evaluation_layer_imports_neither_lightning_nor_hydra():
    code = (
        "import sys, scoresde.evaluation; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('pytorch_lightning', 'lightning', 'hydra', "
        "'torchvision', 'torch_fidelity')]; print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_line_plot_png(tmp_path):
    from PIL import Image

    from scoresde.evaluation.plot import save_line_plot

    path = save_line_plot(
        {"em": [(101, 20.0), (1001, 8.0)], "ode": [(74, 15.0), (float("nan"), 1.0)]},
        tmp_path / "q.png", xlabel="NFE", ylabel="FID", logx=True,
    )
    img = Image.open(path)
    assert img.size == (900, 600) and len(img.getcolors(100000)) > 3
    with pytest.raises(ValueError, match="no finite points"):
        save_line_plot({"a": [(float("nan"), 1.0)]}, tmp_path / "x.png", xlabel="x", ylabel="y")
