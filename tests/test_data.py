"""The data layer: formats on disk (written here in the exact standard formats), clear errors, splits,
determinism, and what the dataloaders yield."""

import ast
import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from scoresde import quantization as q
from scoresde.data import (
    TOY2D_DATASETS,
    CIFAR10DataModule,
    DataFormatError,
    DataNotFoundError,
    DigitsDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
    Toy2DDataModule,
)
from scoresde.data.cifar10 import read_cifar_batch
from scoresde.data.mnist import read_idx

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------- writers
def write_idx(path: Path, array: np.ndarray, gz: bool = False, magic: int | None = None) -> Path:
    """An IDX file of unsigned bytes: big-endian magic 0x0000 08 <ndim>, one uint32 per dim, raw bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x0800 + array.ndim
    payload = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
    return path


def _truncate(path: Path, n: int) -> None:
    path.write_bytes(path.read_bytes()[:-n])


def make_mnist(directory: Path, gz: bool = False, n_train: int = 6, n_test: int = 4, seed: int = 0):
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for split, n, stem in (("train", n_train, "train"), ("test", n_test, "t10k")):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(directory / f"{stem}-images-idx3-ubyte", x, gz)
        write_idx(directory / f"{stem}-labels-idx1-ubyte", y, gz)
        out[split] = (x, y)
    return out


def _py2_str(b: bytes) -> bytes:
    """A Python 2 ``str`` as cPickle writes it (SHORT_BINSTRING / BINSTRING)."""
    return (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<i", len(b)) + b)


def py2_cifar_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A CIFAR-10 batch exactly as the official files are: a Python 2 cPickle (protocol 2) of a dict of
    py2 ``str`` keys, with the numpy (1.x) array under ``numpy.core.multiarray._reconstruct``."""
    n = data.shape[0]
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _py2_str(b"b") + b"\x87R("
        b"K\x01J" + struct.pack("<i", n) + b"J" + struct.pack("<i", 3072) + b"\x86"
        b"cnumpy\ndtype\n"
        + _py2_str(b"u1")
        + b"K\x00K\x01\x87R(K\x03"
        + _py2_str(b"|")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89"
        + _py2_str(data.tobytes())
        + b"tb"
    )
    label_list = b"](" + b"".join(b"K" + bytes([int(v)]) for v in labels) + b"e"
    names = b"](" + b"".join(_py2_str(f"img_{i}.png".encode()) for i in range(n)) + b"e"
    return (
        b"\x80\x02}("
        + _py2_str(b"batch_label") + _py2_str(b"training batch 1 of 5")
        + _py2_str(b"labels") + label_list
        + _py2_str(b"data") + array
        + _py2_str(b"filenames") + names
        + b"u."
    )  # fmt: skip


CIFAR_NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def make_cifar(root: Path, per_batch: int = 3, style: str = "py2", seed: int = 0):
    """``root/cifar-10-batches-py/`` with the six batches; returns ``{name: (data, labels)}``."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for name in CIFAR_NAMES:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        if style == "py2":
            blob = py2_cifar_batch(data, labels)
        else:  # as re-pickled by Python 3
            blob = pickle.dumps({b"batch_label": b"x", b"labels": labels, b"data": data}, protocol=2)
        (d / name).write_bytes(blob)
        out[name] = (data, labels)
    return out


def save_image(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


# ----------------------------------------------------------------------------------------------- digits
def test_digits_fixed_stratified_split():
    dm = DigitsDataModule()
    assert (dm.shape, dm.levels, dm.data_range) == ((1, 8, 8), 17, (-1.0, 1.0))
    tr, te = dm.integer_data("train"), dm.integer_data("test")
    assert tr.shape == (1500, 1, 8, 8) and te.shape == (297, 1, 8, 8)
    assert tr.dtype == torch.uint8 and int(tr.min()) == 0 and int(tr.max()) == 16
    # val_size=0: validation is the test split
    assert torch.equal(dm.integer_data("val"), te) and torch.equal(dm.labels("val"), dm.labels("test"))
    ytr, yte = dm.labels("train"), dm.labels("test")
    assert ytr.dtype == torch.int64 and yte.shape == (297,)
    # stratified: each class's share of the test split matches its overall share (to rounding)
    counts = torch.bincount(torch.cat([ytr, yte]), minlength=10)
    assert (torch.bincount(yte, minlength=10) - counts * 297 / 1797).abs().max() <= 1.0
    # the same split on every construction, and all 1,797 images used exactly once
    dm2 = DigitsDataModule(seed=5, data_seed=7)
    assert torch.equal(dm2.integer_data("test"), te) and torch.equal(dm2.labels("train"), ytr)
    from sklearn.datasets import load_digits

    allx = torch.from_numpy(load_digits().images.astype(np.uint8))
    got = torch.cat([tr, te])[:, 0].reshape(1797, -1)
    assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, allx.reshape(1797, -1).tolist()))


def test_digits_val_carved_from_train():
    dm = DigitsDataModule(val_size=150)
    assert [dm.num_examples(s) for s in ("train", "val", "test")] == [1350, 150, 297]
    assert torch.equal(dm.integer_data("test"), DigitsDataModule().integer_data("test"))
    assert (torch.bincount(dm.labels("val"), minlength=10) - 15).abs().max() <= 1  # stratified
    frac = DigitsDataModule(val_size=0.1)
    assert frac.num_examples("val") == 150 and torch.equal(frac.labels("val"), dm.labels("val"))
    assert not torch.equal(DigitsDataModule(val_size=150, data_seed=1).labels("val"), dm.labels("val"))
    with pytest.raises(ValueError, match="val_size"):
        DigitsDataModule(val_size=1500).setup()


@pytest.mark.parametrize("data_range", [(-1.0, 1.0), (0.0, 1.0)])
def test_dataloaders_yield_float_batches_in_range(data_range):
    dm = DigitsDataModule(batch_size=100, eval_batch_size=64, data_range=list(data_range))
    batches = list(dm.train_dataloader())
    assert len(batches) == 15 and all(isinstance(b, torch.Tensor) for b in batches)
    b = batches[0]
    assert b.dtype == torch.float32 and b.shape == (100, 1, 8, 8)
    allb = torch.cat(batches)
    assert allb.min() >= data_range[0] and allb.max() < data_range[1]
    # validation: fixed order, so quantizing recovers the integers exactly; noise is the same every pass
    val = list(dm.val_dataloader())
    assert [len(v) for v in val] == [64] * 4 + [41]
    torch.testing.assert_close(torch.cat(val), torch.cat(list(dm.val_dataloader())), rtol=0, atol=0)
    k = q.quantize(torch.cat(val), 17, data_range)
    assert torch.equal(k, dm.integer_data("val").long())
    # uniform dequantization: the within-bin offsets look uniform, not constant
    u = (torch.cat(val) - data_range[0]) / (data_range[1] - data_range[0]) * 17 - k
    assert 0.45 < u.mean() < 0.55 and u.std() > 0.25


def test_train_loader_reproducible_by_seed_and_epoch():
    def epoch(dm, e):
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(e)
        return torch.cat(list(loader))

    a, b = DigitsDataModule(batch_size=256, seed=3), DigitsDataModule(batch_size=256, seed=3)
    assert torch.equal(epoch(a, 0), epoch(b, 0)) and torch.equal(epoch(a, 1), epoch(b, 1))
    assert not torch.equal(epoch(a, 0), epoch(a, 1))
    assert not torch.equal(epoch(a, 0), epoch(DigitsDataModule(batch_size=256, seed=4), 0))
    # without set_epoch, consecutive passes advance the epoch
    loader = a.train_dataloader()
    assert torch.equal(torch.cat(list(loader)), epoch(a, 0)) and torch.equal(
        torch.cat(list(loader)), epoch(a, 1)
    )


def test_batches_do_not_depend_on_num_workers():
    ref = DigitsDataModule(batch_size=500, seed=1)
    par = DigitsDataModule(batch_size=500, seed=1, num_workers=1)
    assert torch.equal(torch.cat(list(ref.train_dataloader())), torch.cat(list(par.train_dataloader())))


def test_dequantize_false_gives_bin_centres():
    dm = DigitsDataModule(batch_size=297, dequantize=False, data_range=(0, 1))
    x = next(iter(dm.val_dataloader()))
    torch.testing.assert_close(x, (dm.integer_data("val").float() + 0.5) / 17)


def test_random_flip_option():
    def flips(dm):
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(0)
        idx = [i for i, _ in loader.sampler]
        loader.sampler.set_epoch(0)
        flipped, kept = 0, 0
        x_int = dm.integer_data("train")
        for i, batch in zip(idx, loader):
            k = q.quantize(batch, 17, dm.data_range).to(torch.uint8)
            same = (k == x_int[i]).flatten(1).all(1)
            mirrored = (k == x_int[i].flip(-1)).flatten(1).all(1)
            assert bool((same | mirrored).all())
            kept += int((same & ~mirrored).sum())
            flipped += int((mirrored & ~same).sum())
        return kept, flipped

    kept, flipped = flips(DigitsDataModule(random_flip=True, dequantize=False))
    assert kept > 600 and flipped > 600
    assert flips(DigitsDataModule(random_flip=False, dequantize=False))[1] == 0
    # never on validation batches
    dm = DigitsDataModule(random_flip=True, batch_size=297)
    assert torch.equal(
        q.quantize(next(iter(dm.val_dataloader())), 17).to(torch.uint8), dm.integer_data("val")
    )
    # defaults: on for CIFAR-10 only
    assert CIFAR10DataModule().random_flip and not DigitsDataModule().random_flip
    assert not MNISTDataModule().random_flip and not ImageFolderDataModule("x").random_flip


def test_to_model_space_matches_loader_convention():
    dm = DigitsDataModule()
    x = dm.integer_data("test")[:10]
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    y = dm.to_model_space(x, generator=g1)
    torch.testing.assert_close(y, q.dequantize(x, 17, (-1.0, 1.0), generator=g2))
    with pytest.raises(ValueError, match="shape"):
        dm.to_model_space(x[:, 0])
    with pytest.raises(ValueError, match="integer"):
        dm.to_model_space(x.float() / 17)


def test_lightning_training_step_receives_float_batches():
    import pytorch_lightning as pl

    seen = []

    class Probe(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def training_step(self, batch, batch_idx):
            seen.append(("train", batch.dtype, tuple(batch.shape)))
            return (self.w - batch.mean()) ** 2

        def validation_step(self, batch, batch_idx):
            seen.append(("val", batch.dtype, tuple(batch.shape)))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = pl.Trainer(
        max_steps=2, limit_val_batches=1, num_sanity_val_steps=0, val_check_interval=2, accelerator="cpu",
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(Probe(), datamodule=DigitsDataModule(batch_size=32))
    assert ("train", torch.float32, (32, 1, 8, 8)) in seen and ("val", torch.float32, (32, 1, 8, 8)) in seen


# ----------------------------------------------------------------------------------------------- toy2d
@pytest.mark.parametrize("name", list(TOY2D_DATASETS))
def test_toy2d_seeded_sets_and_samples(name):
    dm = Toy2DDataModule(name, n_train=2000, n_val=300, n_test=400, batch_size=512)
    assert (dm.shape, dm.levels, dm.data_range) == ((2,), None, (-4.0, 4.0))
    tr = dm.data("train")
    assert tr.shape == (2000, 2) and tr.dtype == torch.float32 and torch.isfinite(tr).all()
    assert dm.data("val").shape == (300, 2) and dm.data("test").shape == (400, 2)
    assert (tr.abs() <= 4.5).float().mean() > 0.999
    same = Toy2DDataModule(name, n_train=2000, n_val=300, n_test=400, seed=9)  # seed: order only
    assert torch.equal(same.data("train"), tr) and torch.equal(same.data("test"), dm.data("test"))
    other = Toy2DDataModule(name, n_train=2000, n_val=300, n_test=400, data_seed=1)
    assert not torch.equal(other.data("train"), tr)
    assert not torch.equal(dm.data("val"), dm.data("test")[:300])
    s1 = dm.sample(100, torch.Generator().manual_seed(0))
    assert s1.shape == (100, 2) and torch.equal(s1, dm.sample(100, torch.Generator().manual_seed(0)))
    batches = list(dm.train_dataloader())
    assert [b.shape for b in batches] == [(512, 2)] * 3 + [(464, 2)]
    assert torch.equal(torch.sort(torch.cat(batches)[:, 0]).values, torch.sort(tr[:, 0]).values)
    assert dm.labels("train") is None


def test_toy2d_errors():
    with pytest.raises(ValueError, match="moons, swissroll, checkerboard, 8gaussians"):
        Toy2DDataModule("spirals")
    with pytest.raises(ValueError, match="random_flip"):
        Toy2DDataModule("moons", random_flip=True)
    with pytest.raises(TypeError, match="continuous"):
        Toy2DDataModule("moons", n_train=10).integer_data("train")
    with pytest.raises(ValueError, match="unknown split"):
        Toy2DDataModule("moons", n_train=10).data("training")


# ----------------------------------------------------------------------------------------------- MNIST
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_mnist_reads_idx_files(tmp_path, gz, layout):
    directory = tmp_path if layout == "flat" else tmp_path / "MNIST" / "raw"
    ref = make_mnist(directory, gz=gz)
    dm = MNISTDataModule(root=str(tmp_path), batch_size=4)
    dm.prepare_data()
    assert (dm.shape, dm.levels) == ((1, 28, 28), 256)
    for split in ("train", "test"):
        x, y = ref[split]
        assert torch.equal(dm.integer_data(split), torch.from_numpy(x)[:, None])
        assert torch.equal(dm.labels(split), torch.from_numpy(y).long())
    b = next(iter(dm.train_dataloader()))
    assert b.dtype == torch.float32 and b.shape == (4, 1, 28, 28) and b.min() >= -1 and b.max() < 1


def test_mnist_missing_files_clear_error(tmp_path):
    make_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataNotFoundError) as err:
        MNISTDataModule(root=tmp_path).setup()
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        assert name in msg
    assert f"Missing in {tmp_path}: t10k-labels-idx1-ubyte." in msg
    assert str(tmp_path) in msg and "root" in msg and "http" in msg
    with pytest.raises(DataNotFoundError, match="nowhere"):
        MNISTDataModule(root=tmp_path / "nowhere").prepare_data()


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda d: write_idx(d / "train-images-idx3-ubyte", np.zeros((6, 28, 28)), magic=2049),
         "magic number 2049"),
        (lambda d: (d / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00"), "too short"),
        (lambda d: _truncate(d / "train-images-idx3-ubyte", 5), "truncated"),
        (lambda d: write_idx(d / "train-labels-idx1-ubyte", np.zeros(5)), "has 5 labels but"),
        (lambda d: write_idx(d / "train-labels-idx1-ubyte", np.full(6, 10)), "0..9"),
        (lambda d: write_idx(d / "train-images-idx3-ubyte", np.zeros((6, 28, 27))), "28x28"),
    ],
    ids=["magic", "short", "truncated", "count", "label-range", "dims"],
)  # fmt: skip
def test_mnist_malformed_files_clear_error(tmp_path, corrupt, match):
    make_mnist(tmp_path)
    corrupt(tmp_path)
    with pytest.raises(DataFormatError, match=match) as err:
        MNISTDataModule(root=tmp_path).setup()
    assert str(tmp_path) in str(err.value)


def test_mnist_corrupt_gzip_clear_error(tmp_path):
    make_mnist(tmp_path, gz=True)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:30])  # truncated stream
    with pytest.raises(DataFormatError, match="train-images-idx3-ubyte.gz"):
        MNISTDataModule(root=tmp_path).setup()
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(DataFormatError, match="gzip"):
        read_idx(bad, 2051)


# ----------------------------------------------------------------------------------------------- CIFAR-10
@pytest.mark.parametrize("style", ["py2", "py3"])
@pytest.mark.parametrize("point_at", ["parent", "folder"])
def test_cifar10_reads_python_batches(tmp_path, style, point_at):
    ref = make_cifar(tmp_path, style=style)
    root = tmp_path if point_at == "parent" else tmp_path / "cifar-10-batches-py"
    dm = CIFAR10DataModule(root=root, batch_size=5)
    dm.prepare_data()
    assert (dm.shape, dm.levels) == ((3, 32, 32), 256)
    x = dm.integer_data("train")
    assert x.shape == (15, 3, 32, 32) and x.dtype == torch.uint8
    d1, l1 = ref["data_batch_1"]
    # channel planes: the first 1024 values are red, row-major 32x32
    assert torch.equal(x[0, 0], torch.from_numpy(d1[0, :1024].reshape(32, 32)))
    assert torch.equal(x[1, 2], torch.from_numpy(d1[1, 2048:].reshape(32, 32)))
    assert torch.equal(x[3:6], torch.from_numpy(ref["data_batch_2"][0].reshape(3, 3, 32, 32)))
    assert dm.labels("train")[:3].tolist() == l1 and dm.labels("test").tolist() == ref["test_batch"][1]
    b = next(iter(dm.train_dataloader()))
    assert b.dtype == torch.float32 and b.shape == (5, 3, 32, 32) and b.min() >= -1 and b.max() < 1


def test_cifar10_missing_files_clear_error(tmp_path):
    make_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataNotFoundError) as err:
        CIFAR10DataModule(root=tmp_path).prepare_data()
    msg = str(err.value)
    assert all(n in msg for n in CIFAR_NAMES) and "Missing in" in msg and ": data_batch_4." in msg
    assert str(tmp_path / "cifar-10-batches-py") in msg and "cifar.html" in msg and "root" in msg
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "cifar-10-python.tar.gz").write_bytes(b"")
    with pytest.raises(DataNotFoundError, match="tar xzf cifar-10-python.tar.gz"):
        CIFAR10DataModule(root=empty).setup()


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize(
    "blob, match",
    [
        (b"this is not a pickle", "could not unpickle"),
        (b"", "could not unpickle"),
        (pickle.dumps([1, 2, 3]), "got a list"),
        (pickle.dumps({b"data": np.zeros((3, 3072), np.uint8)}), "found keys b'data'"),
        (pickle.dumps({b"data": np.zeros((3, 3071), np.uint8), b"labels": [0, 1, 2]}), r"shape \(N, 3072\)"),
        (pickle.dumps({b"data": np.zeros((3, 3072), np.float32), b"labels": [0, 1, 2]}), "uint8"),
        (pickle.dumps({b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1]}), "must be 3 ints"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}), "0..9"),
        (pickle.dumps({b"data": _Evil(), b"labels": []}), "not allowed"),
    ],
    ids=["garbage", "empty", "list", "no-labels", "shape", "dtype", "count", "label-range", "evil"],
)
def test_cifar10_malformed_batch_clear_error(tmp_path, blob, match):
    make_cifar(tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(blob)
    with pytest.raises(DataFormatError, match=match) as err:
        CIFAR10DataModule(root=tmp_path).setup()
    assert str(bad) in str(err.value)


def test_cifar_batch_reader_accepts_py2_format(tmp_path):
    data = np.arange(2 * 3072).reshape(2, 3072).astype(np.uint8)
    (tmp_path / "b").write_bytes(py2_cifar_batch(data, [3, 7]))
    x, y = read_cifar_batch(tmp_path / "b")
    assert x.shape == (2, 3, 32, 32) and np.array_equal(x.reshape(2, -1), data) and y.tolist() == [3, 7]


# ----------------------------------------------------------------------------------------------- folder
def test_folder_resize_center_crop_png_and_jpeg(tmp_path):
    wide = np.zeros((8, 16, 3), np.uint8)  # h=8, w=16: shorter side already 8 -> pure center crop
    wide[:, :4] = (255, 0, 0)
    wide[:, 4:12] = (0, 200, 0)
    wide[:, 12:] = (0, 0, 255)
    save_image(tmp_path / "a_wide.png", wide)
    save_image(tmp_path / "b_big.png", np.full((40, 32, 3), 77, np.uint8))  # resized down, then cropped
    save_image(tmp_path / "sub" / "c.jpg", np.full((20, 30, 3), 128, np.uint8))
    save_image(tmp_path / "sub" / "d.JPEG", np.full((9, 9), 30, np.uint8))  # greyscale source
    (tmp_path / "notes.txt").write_text("ignored")
    dm = ImageFolderDataModule(tmp_path, resolution=8, test_size=1, batch_size=2)
    assert (dm.shape, dm.levels) == ((3, 8, 8), 256)
    paths = dm.image_paths()
    assert len(paths["train"]) == 3 and len(paths["test"]) == 1
    assert sorted(p.name for p in paths["train"] + paths["test"]) == [
        "a_wide.png",
        "b_big.png",
        "c.jpg",
        "d.JPEG",
    ]
    x = torch.cat([dm.integer_data("train"), dm.integer_data("test")])
    assert x.shape == (4, 3, 8, 8) and x.dtype == torch.uint8
    by_name = dict(zip([p.name for p in paths["train"] + paths["test"]], x))
    green = torch.tensor([0, 200, 0], dtype=torch.uint8)[:, None, None].expand(3, 8, 8)
    assert torch.equal(by_name["a_wide.png"], green)
    assert torch.equal(by_name["b_big.png"], torch.full((3, 8, 8), 77, dtype=torch.uint8))
    assert (by_name["c.jpg"].int() - 128).abs().max() <= 3  # JPEG is lossy
    assert (by_name["d.JPEG"].int() - 30).abs().max() <= 3
    b = next(iter(dm.train_dataloader()))
    assert b.dtype == torch.float32 and b.shape == (2, 3, 8, 8)
    gray = ImageFolderDataModule(tmp_path, resolution=4, grayscale=True, test_size=0.25)
    assert gray.shape == (1, 4, 4) and gray.integer_data("train").shape == (3, 1, 4, 4)
    assert gray.labels("train") is None


def test_folder_train_test_subfolders_and_seeded_split(tmp_path):
    for i in range(5):
        save_image(tmp_path / "train" / f"{i}.png", np.full((6, 6, 3), i, np.uint8))
    save_image(tmp_path / "test" / "t.png", np.full((6, 6, 3), 9, np.uint8))
    dm = ImageFolderDataModule(tmp_path, resolution=6)
    assert dm.num_examples("train") == 5 and dm.num_examples("test") == 1
    assert int(dm.integer_data("val").max()) == 9  # val_size=0: validate on test
    flat = tmp_path / "train"
    s0 = ImageFolderDataModule(flat, resolution=6, test_size=2).image_paths()["test"]
    assert s0 == ImageFolderDataModule(flat, resolution=6, test_size=2).image_paths()["test"] and len(s0) == 2


def test_folder_missing_and_malformed_clear_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist") as err:
        ImageFolderDataModule(tmp_path / "nope").prepare_data()
    assert ".png" in str(err.value) and str(tmp_path / "nope") in str(err.value)
    (tmp_path / "readme.txt").write_text("no images")
    with pytest.raises(DataNotFoundError, match="no PNG/JPEG files"):
        ImageFolderDataModule(tmp_path).setup()
    save_image(tmp_path / "ok.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(DataFormatError, match="broken.jpg"):
        ImageFolderDataModule(tmp_path, resolution=4, test_size=1).setup()


# ------------------------------------------------------------------------------------- registry, configs
DATA_CLASSES = {"toy2d": Toy2DDataModule, "digits": DigitsDataModule, "mnist": MNISTDataModule,
                "cifar10": CIFAR10DataModule, "folder": ImageFolderDataModule}


@pytest.mark.parametrize("name", ["toy2d", "digits", "mnist", "cifar10", "folder"])
def test_yaml_configs_instantiate(tmp_path, name):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(REPO / "conf" / "data" / f"{name}.yaml")
    if name == "folder":
        cfg.root = str(tmp_path)
    cfg.pop("_feature_network_")  # the evaluation's feature network, not a constructor argument
    dm = instantiate(cfg)  # constructing touches no files
    assert type(dm) is DATA_CLASSES[name]
    assert dm.batch_size == {"toy2d": 512, "digits": 128, "mnist": 128, "cifar10": 128, "folder": 64}[name]
    assert dm.data_range == ((-4.0, 4.0) if name == "toy2d" else (-1.0, 1.0))
    assert dm.random_flip == (name == "cifar10")


def test_data_knows_nothing_of_networks():
    for path in (REPO / "scoresde" / "data").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = (
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                )
                assert not any(n.startswith(("scoresde.nets", "scoresde.sde")) for n in names), path
