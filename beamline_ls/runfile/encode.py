"""Turn document values into HDF5 attributes that any HDF5 reader understands.

HDF5 attributes hold scalars, strings and homogeneous arrays. Document values that
fit are stored natively (``scan_id`` is an integer attribute, ``plane_z_um`` a float
array). Everything else (dicts, ``None``, empty or mixed lists) is stored as a JSON
string, and its key is listed in the ``_json_keys`` attribute of the same object so a
reader knows exactly which attributes to ``json.loads``. Dicts additionally become
subgroups with the same treatment, so ``/start/plan_args`` has one attribute per plan
argument for readers that prefer not to parse JSON (MATLAB ``h5readatt``, Fiji).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np

JSON_KEYS_ATTR = "_json_keys"


def to_json(value: Any) -> str:
    """JSON text of ``value``; numpy scalars and arrays become plain numbers and lists."""
    return json.dumps(value, default=_json_default, sort_keys=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return repr(value)


def native_attr(value: Any) -> Any | None:
    """``value`` as an HDF5-native attribute value, or None if it needs JSON."""
    if isinstance(value, bool | np.bool_):
        return np.bool_(value)
    if isinstance(value, int | np.integer):
        return value if -(2**63) <= int(value) < 2**63 else None
    if isinstance(value, float | np.floating | str):
        return value
    if isinstance(value, list | tuple) and value:
        if all(isinstance(v, str) for v in value):
            return np.array(value, dtype=h5py.string_dtype())
        if all(isinstance(v, bool) for v in value):
            return np.array(value, dtype=bool)
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            arr = np.asarray(value)
            return arr if arr.dtype.kind in "if" else None
        if all(isinstance(v, list) for v in value):
            try:  # a rectangular list of lists of numbers (e.g. waveform tables)
                arr = np.asarray(value)
            except ValueError:
                return None
            return arr if arr.dtype.kind in "if" and arr.ndim > 1 else None
    return None


def write_attrs(obj: h5py.Group | h5py.Dataset, doc: Mapping[str, Any],
                *, subgroups: bool = True) -> None:
    """Store every key of ``doc`` as an attribute of ``obj`` (JSON where needed).

    With ``subgroups``, dict values also become child groups of ``obj`` (recursively),
    each with one attribute per key.
    """
    json_keys = []
    for key, value in doc.items():
        native = native_attr(value)
        if native is None:
            obj.attrs[key] = to_json(value)
            json_keys.append(key)
        else:
            obj.attrs[key] = native
        if subgroups and isinstance(value, Mapping) and isinstance(obj, h5py.Group):
            child = obj.require_group(key)
            write_attrs(child, value, subgroups=True)
    obj.attrs[JSON_KEYS_ATTR] = np.array(sorted(json_keys), dtype=h5py.string_dtype())


def read_attrs(obj: h5py.Group | h5py.Dataset) -> dict[str, Any]:
    """Inverse of :func:`write_attrs` (for tests and Python users; plain h5py suffices)."""
    json_keys = {_text(k) for k in obj.attrs.get(JSON_KEYS_ATTR, [])}
    out: dict[str, Any] = {}
    for key, value in obj.attrs.items():
        if key == JSON_KEYS_ATTR:
            continue
        if key in json_keys:
            out[key] = json.loads(_text(value))
        elif isinstance(value, np.ndarray):
            out[key] = [_text(v) if isinstance(v, bytes) else v for v in value.tolist()]
        elif isinstance(value, np.generic):
            out[key] = value.item()
        else:
            out[key] = _text(value)
    return out


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value
