"""The one model serializer: skops bytes, a sha256 digest, and a ctloop-owned allow-list.

Artifacts never go through pickle: `load_model` refuses an artifact whose digest differs from
the one the registry recorded, and one whose skops content asks for any type outside
`TRUSTED_TYPES` (the list is ours, never read from the artifact).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import threading
import zipfile
from typing import Any

import numpy as np
import skops
import skops.io as sio
from numpy.lib import format as npy_format
from skops.io._audit import NODE_TYPE_MAPPING
from skops.io._numpy import NdArrayNode
from skops.io._protocol import PROTOCOL
from skops.io._utils import SaveContext, get_state
from skops.io.exceptions import UntrustedTypesFoundException

# Types skops does not trust by default but that ctloop's own pipelines contain.
TRUSTED_TYPES: frozenset[str] = frozenset(
    {
        "numpy.dtype",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
        "sklearn._loss.link.LogitLink",
        "sklearn._loss.link.MultinomialLogit",
        "sklearn._loss.loss.HalfBinomialLoss",
        "sklearn._loss.loss.HalfMultinomialLoss",
    }
)


class ArtifactError(ValueError):
    """An artifact that must not be loaded: wrong digest, untrusted types, or unreadable."""


def digest(data: bytes) -> str:
    """`sha256:<hex>` of the artifact bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def dump_model(model: object) -> tuple[bytes, str]:
    """Serialize a model; returns the bytes and their digest.

    The file is `skops.io.dumps`'s, with its `schema.json` written without indentation.
    NOTE: `dumps` indents it, and an indented `json.dumps` runs in pure Python: for a
    HistGradientBoosting pipeline (50,000 rows) it took 11.4 of the dump's 21.9 ms and made the
    schema 440 KB instead of 152 KB; compact, it takes 1.1 ms. JSON's whitespace means nothing
    to `skops.io.loads`, which reads these files unchanged.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        context = SaveContext(zip_file=archive)
        state = get_state(model, context)
        context.clear_memo()
        state["protocol"] = context.protocol
        state["_skops_version"] = skops.__version__
        archive.writestr("schema.json", json.dumps(state))
    data = buffer.getvalue()
    return data, digest(data)


@functools.lru_cache(maxsize=256)
def _npy_header(version: tuple[int, int], header: bytes) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """Shape, Fortran order and dtype of an `.npy` header, parsed by numpy's own reader (with
    its size limit); `header` is the length field and the header text."""
    read = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
    return read(io.BytesIO(header))


class _CachedHeaderArrayNode(NdArrayNode):  # type: ignore[misc]
    """skops's node for a numeric array, with each distinct `.npy` header parsed once.

    NOTE: numpy parses every array's header with `ast.literal_eval`; a HistGradientBoosting
    pipeline (100 trees, 50,000 rows) holds 203 arrays with 14 distinct headers, and the
    parsing was ~8 of the load's ~18 ms. With the headers cached the load takes ~10 ms (same
    machine, same artifact), which the trainer's round trip, the registry's verification and
    serving's swap each pay. Anything but a plain numeric `.npy` array goes to skops's own
    node unchanged. It is registered in skops's private node table only while that table
    still maps to skops's own array node, so a skops that changes it loads as skops does."""

    def _construct(self) -> Any:
        if self.type != "numpy" or (self.module_name, self.class_name) != ("numpy", "ndarray"):
            return super()._construct()
        data = self.buffer.getbuffer()
        version = (data[6], data[7]) if len(data) > 8 else None
        if bytes(data[:6]) != b"\x93NUMPY" or version not in ((1, 0), (2, 0)):
            return super()._construct()
        length_size = 2 if version == (1, 0) else 4
        start = 8 + length_size + int.from_bytes(data[8 : 8 + length_size], "little")
        shape, fortran_order, dtype = _npy_header(version, bytes(data[8:start]))
        if dtype.hasobject:
            return super()._construct()  # refused there: objects would need pickle
        # frombuffer raises if the data is shorter than the header says (a truncated array)
        array = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=start).copy()
        return array.reshape(shape[::-1]).transpose() if fortran_order else array.reshape(shape)


if NODE_TYPE_MAPPING.get(("NdArrayNode", PROTOCOL)) is NdArrayNode:
    NODE_TYPE_MAPPING[("NdArrayNode", PROTOCOL)] = _CachedHeaderArrayNode


_LOADING = threading.Lock()
"""One load at a time per process. NOTE: numpy reads each array's header with
`ast.literal_eval`, and CPython 3.11's AST conversion is not safe in two threads at once: two
uploads verified at once by one registry failed one with "SystemError: AST constructor recursion
depth mismatch" (a full test run, test_registry_replicas). A load takes ~10-40 ms."""


def load_model(data: bytes, expected_digest: str | None = None) -> object:
    """Verify and load an artifact. Raises `ArtifactError` saying why it was refused."""
    if expected_digest is not None and digest(data) != expected_digest:
        raise ArtifactError(f"digest mismatch: expected {expected_digest}, got {digest(data)}")
    # NOTE: one pass: skops audits every type against its defaults plus ours before it builds
    # anything (listing the untrusted types first read the artifact twice: +40% per load).
    try:
        with _LOADING:
            return sio.loads(data, trusted=sorted(TRUSTED_TYPES))
    except UntrustedTypesFoundException:
        refused = sorted(set(sio.get_untrusted_types(data=data)) - TRUSTED_TYPES)
        raise ArtifactError(f"artifact asks for untrusted types: {refused}") from None
    except Exception as exc:
        raise ArtifactError(f"not a readable skops artifact: {type(exc).__name__}: {exc}") from exc
