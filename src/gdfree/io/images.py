"""Read and write single 3-D images: NIfTI through nibabel, NRRD/MHA/MHD through SimpleITK.

Reads return a :class:`~gdfree.types.Volume` with the affine in RAS+ mm (NIfTI convention), whatever
the format. Writes are atomic: the image goes to a temporary file beside the target and is renamed
over it only once complete, so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from gdfree.errors import ImageReadError
from gdfree.types import Volume

__all__ = [
    "atomic_path",
    "file_sha256",
    "from_sitk",
    "image_suffix",
    "read_mask",
    "read_volume",
    "save_figure",
    "to_sitk",
    "write_text",
    "write_volume",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SPACING_RANGE_MM = (0.01, 100.0)
"""Voxel sizes outside this range are refused as a broken header (a scanner writes 0.1-10 mm)."""


def image_suffix(path: Path | str) -> str:
    """The image extension of ``path`` (``.nii.gz`` counts as one), lower-cased, or '' if none."""
    name = Path(path).name.lower()
    for suffix in (*NIFTI_SUFFIXES[::-1], *ITK_SUFFIXES):
        if name.endswith(suffix):
            return suffix
    return ""


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` with the same extension; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left as it was. The file gets the
    permissions of any new file under the process umask (``mkstemp`` alone would make it private, 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = image_suffix(path) or path.suffix
    # the owner tag (process and host) lets another shard writing into the same folder tell its files from
    # an interrupted run's leftovers (gdfree.io.runs.remove_stale_temporaries)
    tag = f"gd{os.getpid()}@{host_name()}"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{tag}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def host_name() -> str:
    """This machine's name, cut to letters, digits and dashes (it goes into temporary file names)."""
    import re
    import socket

    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_figure(fig: object, path: Path | str, dpi: int = 80) -> Path:
    """Write a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    return path


def file_sha256(path: Path | str) -> str:
    """SHA-256 of a file's bytes, hex, read in 1 MiB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_text(path: Path | str, text: str) -> Path:
    """Write a text file atomically (UTF-8, newline-terminated as given)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def read_volume(path: Path | str) -> Volume:
    """Read one 3-D image.

    Trailing singleton dimensions (X, Y, Z, 1) are dropped. NIfTI data keep their on-disk dtype unless
    the header asks for scaling (then float32). qform/sform codes are kept.

    Raises:
        ImageReadError: the file is missing, unreadable, truncated, of an unknown format, not 3-D, holds a
            multi-component or non-numeric pixel type, NaN or infinite voxels, or a voxel size outside
            :data:`SPACING_RANGE_MM` or a singular affine. The message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    suffix = image_suffix(path)
    if suffix in NIFTI_SUFFIXES:
        volume = _read_nifti(path)
    elif suffix in ITK_SUFFIXES:
        volume = _read_itk(path)
    else:
        known = ", ".join(NIFTI_SUFFIXES + ITK_SUFFIXES)
        raise ImageReadError(f"{path}: unknown image format; expected one of {known}")
    _check_voxels(volume.data, path)
    low, high = SPACING_RANGE_MM
    if not all(low <= s <= high for s in volume.spacing_mm):
        raise ImageReadError(f"{path}: voxel size {tuple(round(s, 6) for s in volume.spacing_mm)} mm is outside "
                             f"[{low}, {high}] mm; the header's affine/pixdim is broken")  # fmt: skip
    return volume


def _check_voxels(data: np.ndarray, path: Path) -> None:
    if data.dtype == np.bool_:
        return
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise ImageReadError(f"{path}: voxel type {data.dtype} is not a real number (complex, RGB or structured "
                             "data); expected one intensity per voxel")  # fmt: skip
    if np.issubdtype(data.dtype, np.floating):
        bad = ~np.isfinite(data)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ImageReadError(f"{path}: {int(bad.sum())} voxels are NaN or infinite (first at voxel {first}); "
                                 "fix or mask them before using this image")  # fmt: skip


def read_mask(path: Path | str) -> Volume:
    """Read a binary mask as bool: the one rule for what is inside a mask, everywhere in gdfree.

    A mask holds 0 (outside) and one positive value (inside: 1, or 255 as some tools write); anything else
    (negative values, two or more positive values such as a label map or a probability map) is refused.

    Raises:
        ImageReadError: as :func:`read_volume`, or the image is not a binary mask.
    """
    volume = read_volume(path)
    data = np.asarray(volume.data)
    if data.dtype == np.bool_:
        return volume
    values = np.unique(data)
    if values.size > 2 or values.min() < 0 or (values.size == 2 and values[0] != 0):
        shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if values.size > 6 else "")
        raise ImageReadError(f"{path}: not a binary mask (values {shown}); a mask holds 0 outside and one positive "
                             "value inside (threshold or binarise it first)")  # fmt: skip
    return volume.with_data(data > 0, volume.path)


def _squeeze_to_3d(data: np.ndarray, path: Path) -> np.ndarray:
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        hint = " (a time series or multi-volume file: split it into 3-D volumes)" if data.ndim > 3 else ""
        raise ImageReadError(f"{path}: expected a 3-D volume, got {data.ndim}-D data of shape {data.shape}{hint}")
    if min(data.shape) < 1:
        raise ImageReadError(f"{path}: empty image of shape {data.shape}")
    return data


def _read_nifti(path: Path) -> Volume:
    import nibabel as nib

    try:
        img = nib.load(path)
        if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            raise ImageReadError(f"{path}: not a NIfTI-1/2 image (nibabel read a {type(img).__name__})")
        proxy = img.dataobj
        slope, inter = img.header.get_slope_inter()
        if slope in (None, 1.0) and inter in (None, 0.0):
            data = np.asarray(proxy.get_unscaled())  # type: ignore[attr-defined]
        else:
            data = np.asarray(proxy, dtype=np.float32)
        affine = np.asarray(img.affine, dtype=np.float64)
        qcode, scode = int(img.header["qform_code"]), int(img.header["sform_code"])
    except ImageReadError:
        raise
    except Exception as exc:  # nibabel raises a dozen types for a broken header or truncated data
        raise ImageReadError(
            f"{path}: cannot read NIfTI data ({type(exc).__name__}: {exc}); the file may be truncated, "
            "corrupt or not a NIfTI image"
        ) from exc
    data = _squeeze_to_3d(data, path)
    try:
        return Volume(data, affine, path, qcode, scode)
    except ValueError as exc:
        raise ImageReadError(str(exc)) from exc


def _read_itk(path: Path) -> Volume:
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ImageReadError(f"{path}: cannot read image ({exc.__class__.__name__}: {exc})") from exc
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise ImageReadError(f"{path}: expected scalar voxels, got {img.GetNumberOfComponentsPerPixel()} components")
    if img.GetDimension() != 3:
        size = img.GetSize()
        raise ImageReadError(f"{path}: expected a 3-D volume, got {img.GetDimension()}-D data of size {size}")
    try:
        volume = from_sitk(img, path)
    except ValueError as exc:  # a singular or non-finite direction/spacing
        raise ImageReadError(str(exc)) from exc
    return Volume(volume.data, volume.affine, path, 1, 1)


def to_sitk(volume: Volume, dtype: type | None = None) -> Any:
    """The volume as a SimpleITK image with the same voxels and physical placement (LPS); bool -> uint8."""
    import SimpleITK as sitk

    data = volume.data if dtype is None else volume.data.astype(dtype, copy=False)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    img = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    lps = np.linalg.inv(_LPS_TO_RAS) @ volume.affine
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    img.SetSpacing(spacing.tolist())
    img.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    img.SetOrigin(lps[:3, 3].tolist())
    return img


def from_sitk(image: Any, path: Path | None = None) -> Volume:
    """A 3-D SimpleITK image as a Volume (array indexed (X, Y, Z), RAS+ affine)."""
    import SimpleITK as sitk

    data = np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0))
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return Volume(data, _LPS_TO_RAS @ lps, path)


def write_volume(volume: Volume, path: Path | str, dtype: np.dtype | type | None = None) -> Path:
    """Write ``volume`` to ``path`` atomically; the format follows the extension.

    NIfTI: the affine goes to both sform and qform with the volume's codes (qform keeps no shear),
    units mm, deterministic gzip. Bool data are stored as uint8. ``dtype`` converts before writing.
    """
    path = Path(path)
    suffix = image_suffix(path)
    data = volume.data
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    if suffix in NIFTI_SUFFIXES:
        import nibabel as nib

        img = nib.Nifti1Image(data, volume.affine)
        img.header.set_data_dtype(data.dtype)
        img.set_sform(volume.affine, code=volume.sform_code)
        img.set_qform(volume.affine, code=volume.qform_code)
        img.header.set_xyzt_units("mm")
        with atomic_path(path) as tmp:
            nib.save(img, tmp)
        return path
    if suffix in (".nrrd", ".mha"):
        import SimpleITK as sitk

        img = to_sitk(volume.with_data(data))
        with atomic_path(path) as tmp:
            sitk.WriteImage(img, str(tmp), useCompression=True)
        return path
    raise ValueError(f"{path}: cannot write this format; use .nii.gz, .nii, .nrrd or .mha")
