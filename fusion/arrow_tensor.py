"""Arrow's canonical `arrow.variable_shape_tensor` extension type: the type, and numpy arrays to and from it.

Storage `struct<data: list<T>, shape: fixed_size_list<int32>[ndim]>`. The type is implemented in
Arrow C++ (pyarrow 26 registers it) but not exposed in pyarrow's Python API, so
`variable_shape_tensor()` obtains it by deserializing a schema whose field carries the extension
name: other Arrow readers see the canonical type.

Copies: encoding concatenates a column's tensors into one buffer (one copy, no per-element
Python); decoding slices that buffer in place (`to_numpy(zero_copy_only=True)`), so arrays read
from a memory-mapped file are read-only views of the mapping.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from fusion.errors import InputError

_TENSOR_NAME = "arrow.variable_shape_tensor"
_INT32_MAX = np.iinfo(np.int32).max


@functools.cache
def variable_shape_tensor(value_type: pa.DataType, dim_names: tuple[str, ...]) -> pa.DataType:
    """The canonical `arrow.variable_shape_tensor` type of rank len(dim_names).

    Raises:
        RuntimeError: when the installed pyarrow does not know the canonical type.
    """
    storage = pa.struct(
        [pa.field("data", pa.list_(value_type)), pa.field("shape", pa.list_(pa.int32(), len(dim_names)))]
    )
    metadata = {
        b"ARROW:extension:name": _TENSOR_NAME.encode(),
        b"ARROW:extension:metadata": json.dumps({"dim_names": list(dim_names)}).encode(),
    }
    # Arrow C++ resolves registered extension types when it reads a schema; that is the only
    # route to this type from Python.
    serialized = pa.schema([pa.field("t", storage, metadata=metadata)]).serialize()
    tensor_type = ipc.read_schema(serialized).field(0).type
    if getattr(tensor_type, "extension_name", None) != _TENSOR_NAME:
        raise RuntimeError(f"pyarrow {pa.__version__} does not provide {_TENSOR_NAME}; upgrade pyarrow")
    return tensor_type


def encode_tensors(
    arrays: Sequence[np.ndarray | None], tensor_type: pa.DataType, *, column: str
) -> pa.ExtensionArray:
    """Tensors (None: null row) -> one variable_shape_tensor array over a single data buffer."""
    value_type = tensor_type.storage_type.field("data").type.value_type
    dtype = np.dtype(value_type.to_pandas_dtype())
    ndim = tensor_type.storage_type.field("shape").type.list_size
    for row, a in enumerate(arrays):
        if a is not None and (a.dtype != dtype or a.ndim != ndim):
            raise InputError(
                f"column {column!r} row {row}: expected a {ndim}-d {dtype} array, got {a.shape} {a.dtype}"
            )
    present = [a for a in arrays if a is not None]
    if len(present) == 1:
        flat = present[0].reshape(-1)  # a view when contiguous
    else:
        flat = np.concatenate([a.reshape(-1) for a in present]) if present else np.empty(0, dtype)
    sizes = np.array([0 if a is None else a.size for a in arrays], dtype=np.int64)
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    if offsets[-1] > _INT32_MAX:
        raise InputError(
            f"column {column!r}: {offsets[-1]} values exceed one Arrow list; write smaller batches"
        )
    shapes = np.array([(0,) * ndim if a is None else a.shape for a in arrays], dtype=np.int64)
    shapes = shapes.reshape(len(arrays), ndim)
    nulls = np.array([a is None for a in arrays], dtype=bool)
    mask = pa.array(nulls) if nulls.any() else None
    data = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(flat), mask=mask)
    shape = pa.FixedSizeListArray.from_arrays(pa.array(shapes.astype(np.int32).reshape(-1)), ndim)
    storage = pa.StructArray.from_arrays([data, shape], fields=list(tensor_type.storage_type), mask=mask)
    return tensor_type.wrap_array(storage)


def decode_tensors(
    array: pa.Array, valid: np.ndarray, *, column: str, source: str, first_row: int
) -> list[np.ndarray | None]:
    """A variable_shape_tensor array -> read-only views of its data buffer (None where not `valid`).

    Args:
        array: the extension array, n rows.
        valid: [n] bool, rows that must hold a tensor; the others read as None.
    """
    storage = array.storage
    data, shape = storage.field("data"), storage.field("shape")
    ndim = shape.type.list_size
    n = len(array)
    valid = valid & ~storage.is_null().to_numpy(zero_copy_only=False)
    where = f"{source}: column {column!r}"
    bad_null = valid & (
        data.is_null().to_numpy(zero_copy_only=False) | shape.is_null().to_numpy(zero_copy_only=False)
    )
    if bad_null.any():
        raise InputError(f"{where} row {first_row + int(np.argmax(bad_null))}: tensor data or shape is null")
    try:
        values = data.values.to_numpy(zero_copy_only=True)
    except pa.ArrowInvalid as err:
        raise InputError(f"{where}: tensor elements cannot be read in place ({err})") from None
    # `.values` of a sliced list ignores the slice, but `.offsets` index into it absolutely.
    offsets = data.offsets.to_numpy().astype(np.int64)
    # Null shapes (rows that are not `valid`) read as 0; valid rows were checked above.
    shapes = shape.values.slice(shape.offset * ndim, n * ndim).fill_null(0).to_numpy()
    shapes = shapes.astype(np.int64).reshape(n, ndim)
    lengths = np.diff(offsets)
    expected = np.prod(shapes, axis=1)
    broken = valid & (
        (lengths != expected) | (shapes < 0).any(axis=1) | (offsets[:-1] < 0) | (offsets[1:] > len(values))
    )
    if broken.any():
        row = int(np.argmax(broken))
        raise InputError(
            f"{where} row {first_row + row}: shape {tuple(shapes[row].tolist())} needs "
            f"{expected[row]} values, the data has {lengths[row]}"
        )
    return [values[offsets[i] : offsets[i + 1]].reshape(shapes[i]) if valid[i] else None for i in range(n)]
