"""TF Serving's REST JSON for predict requests and responses, as numpy arrays.

It follows tensorflow_serving/util/json_tensor.cc: the row (`instances`) and
columnar (`inputs`) request formats, `{"b64": ...}` for binary strings, the
`predictions` and `outputs` response shapes, floats written in their shortest
round-tripping form, and TF Serving's error messages. One difference: integer
values outside their dtype's range (300 for uint8) are refused instead of wrapped.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from mnist_tf.serve.status import RequestError, invalid

# TF's DataTypeString names -> numpy dtypes, with the range of the integer ones.
NUMPY_DTYPES = {
    "float": np.float32,
    "double": np.float64,
    "half": np.float16,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "uint32": np.uint32,
    "uint64": np.uint64,
    "bool": np.bool_,
    "string": object,
}
_FLOATS = ("float", "double")
_INTS = ("int8", "int16", "int32", "int64", "uint8", "uint32", "uint64")
_MAX_DEBUG_CHARS = 256


def debug_string(value: Any) -> str:
    """A JSON value as TF Serving quotes it in errors: one line, cut at 256 characters."""
    text = json.dumps(value, separators=(", ", ": "), ensure_ascii=False, allow_nan=True)
    return text if len(text) <= _MAX_DEBUG_CHARS else text[:_MAX_DEBUG_CHARS]


def json_type(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return {None: "Null", False: "False", True: "True"}[value]
    if isinstance(value, (int, float)):
        return "Number"
    return {dict: "Object", list: "Array", str: "String"}[type(value)]


def parse_body(body: bytes) -> dict[str, Any]:
    """The request document; refuses what is empty, malformed or not an object."""
    if not body:
        raise invalid("JSON Parse error: The document is empty")
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as e:
        where = f" at offset: {e.pos}" if isinstance(e, json.JSONDecodeError) else ""
        reason = e.msg if isinstance(e, json.JSONDecodeError) else "Invalid JSON"
        raise invalid(f"JSON Parse error: {reason}{where}") from None
    if not isinstance(doc, dict):
        raise invalid(f"JSON Value: {debug_string(doc)} Is not object")
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid(
            f"JSON Value: {debug_string(doc)} not formatted correctly. 'signature_name' key must be a string value."
        )
    return doc


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _is_element_object(value: Any) -> bool:
    return isinstance(value, dict) and not _is_b64(value)


def _type_error(value: Any, dtype: str) -> RequestError:
    return invalid(f"JSON Value: {debug_string(value)} Type: {json_type(value)} is not of expected type: {dtype}")


def _decode_b64(value: Any) -> bytes:
    if not _is_b64(value):
        raise invalid(f"JSON Value: {debug_string(value)} not formatted correctly for base64 data")
    text = value["b64"].strip()
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid("Unable to base64 decode") from None


def _scalar(value: Any, dtype: str) -> Any:
    """One JSON leaf as a value of `dtype`."""
    if isinstance(value, dict):
        if dtype == "string":
            return _decode_b64(value)
        raise _type_error(value, dtype)
    if dtype not in (*_FLOATS, *_INTS, "bool", "string"):
        raise RequestError("UNIMPLEMENTED", f"Conversion of JSON Value: {debug_string(value)} to type: {dtype}")
    if dtype == "string":
        if isinstance(value, str):
            return value.encode()
    elif dtype == "bool":
        if isinstance(value, bool):
            return value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if dtype in _FLOATS:
            return value
        info = np.iinfo(NUMPY_DTYPES[dtype])
        if isinstance(value, int) and info.min <= value <= info.max:
            return value
    raise _type_error(value, dtype)


def dense_shape(value: Any) -> list[int]:
    """The shape TF Serving reads from a nested list: the length at each level of its first items."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill(value: Any, level: int, shape: list[int], dtype: str, out: list) -> None:
    if not isinstance(value, list):
        if level != len(shape):
            raise invalid(
                f"JSON Value: {debug_string(value)} found at incorrect level: {level + 1} in the JSON DOM. "
                f"Expected at level: {len(shape)}"
            )
        out.append(_scalar(value, dtype))
        return
    if level >= len(shape):
        raise invalid(f"Encountered list at unexpected level: {level} expected < {len(shape)}")
    if len(value) != shape[level]:
        raise invalid(
            f"Encountered list at unexpected size: {len(value)} at level: {level} expected size: {shape[level]}"
        )
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


def to_array(value: Any, dtype: str) -> np.ndarray:
    """A JSON value (nested lists, a scalar or a b64 object) as an array of `dtype`."""
    shape = dense_shape(value)
    out: list = []
    _fill(value, 0, shape, dtype, out)
    if dtype == "string":
        array = np.empty(len(out), object)
        array[:] = out
        return array.reshape(shape)
    return np.array(out, NUMPY_DTYPES[dtype]).reshape(shape)


def _instances(instances: list, specs: Mapping[str, str]) -> dict[str, np.ndarray]:
    if not _is_element_object(instances[0]) and len(specs) > 1:
        raise invalid(
            "instances is a plain list, but expecting list of objects as multiple input tensors required as per "
            "tensorinfo_map"
        )
    objects = _is_element_object(instances[0])
    rows: dict[str, list[np.ndarray]] = {}
    for i, element in enumerate(instances):
        if objects != _is_element_object(element):
            kind = "Expecting object but got list" if objects else "Expecting value/list but got object"
            raise invalid(f"{kind} at item {i} of input list")
        items = element.items() if objects else [(next(iter(specs)), element)]
        for name, item in items:
            where = f"{i} key: {name}" if objects else f"{i}"
            try:
                if name not in specs:
                    raise invalid(f"JSON object: does not have named input: {name}")
                array = to_array(item, specs[name])
                first = rows.setdefault(name, [array])[0]
                if first.size != array.size:
                    raise invalid(f"Expecting tensor size: {first.size} but got: {array.size}")
                if first.shape != array.shape:
                    raise invalid(f"Expecting shape {_shape(first.shape)} but got: {_shape(array.shape)}")
            except RequestError as e:
                raise invalid(f"Failed to process element: {where} of 'instances' list. Error: {e.status_string()}")
            if i:
                rows[name].append(array)
        if objects and set(element) != set(specs):
            raise invalid(
                f"Failed to process element: {i} of 'instances' list. JSON object: {debug_string(element)} "
                f"keys must be equal to: {','.join(sorted(specs))}"
            )
    return {name: np.stack(arrays) for name, arrays in rows.items()}


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _inputs(value: Any, specs: Mapping[str, str]) -> dict[str, np.ndarray]:
    if not isinstance(value, dict) or _is_b64(value):
        if len(specs) > 1:
            raise invalid(
                "inputs is a plain value/list, but expecting an object as multiple input tensors required as per "
                "tensorinfo_map"
            )
        name = next(iter(specs))
        return {name: to_array(value, specs[name])}
    missing = [name for name in specs if name not in value]
    if missing:
        raise invalid(f"Missing named input: {missing[0]} in 'inputs' object.")
    return {name: to_array(value[name], dtype) for name, dtype in specs.items()}


def request_tensors(doc: dict[str, Any], specs: Mapping[str, str]) -> tuple[dict[str, np.ndarray], bool]:
    """The input arrays of a parsed request for a signature with inputs `specs`
    (name -> TF dtype name), and whether it used the row format."""
    if not specs:
        raise invalid(f"Failed to get input map for signature: {doc.get('signature_name') or 'DEFAULT'}")
    if "instances" in doc and "inputs" in doc:
        raise invalid(
            f"JSON Value: {debug_string(doc)} Not formatted correctly expecting only one of 'inputs' or "
            "'instances' keys to exist "
        )
    if "instances" in doc:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise invalid(f"JSON Value: {debug_string(doc)} Expecting 'instances' to be an list/array")
        if not instances:
            raise invalid(f"JSON Value: {debug_string(doc)} No values in 'instances' array")
        return _instances(instances, specs), True
    if "inputs" in doc:
        return _inputs(doc["inputs"], specs), False
    raise invalid("Missing 'inputs' or 'instances' key")


# --- responses ------------------------------------------------------------------


def format_float(value: float, dtype: type) -> str:
    """As TF Serving writes a float: six significant digits when they round-trip, else full precision."""
    if not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("-Infinity" if value < 0 else "Infinity")
    text = f"{value:g}"
    if dtype(text) != dtype(value):
        text = f"{value:.{9 if dtype is np.float32 else 17}g}"
    return text if ("." in text or "e" in text) else text + ".0"


def _leaves(array: np.ndarray, as_bytes: bool) -> list[str]:
    kind = array.dtype.kind
    flat = array.reshape(-1)
    if kind == "f":
        dtype = np.float32 if array.dtype.itemsize <= 4 else np.float64
        return [format_float(float(v), dtype) for v in flat]
    if kind in "iu":
        return list(map(str, flat.tolist()))
    if kind == "b":
        return ["true" if v else "false" for v in flat.tolist()]
    values = [v if isinstance(v, bytes) else str(v).encode() for v in flat]
    if as_bytes:
        return ['{"b64": "' + base64.b64encode(v).decode() + '"}' for v in values]
    return [json.dumps(v.decode("utf-8", "replace"), ensure_ascii=False) for v in values]


def _nest(leaves: list[str], shape: tuple[int, ...]) -> str:
    if not shape:
        return leaves[0]
    if len(shape) == 1:
        return "[" + ", ".join(leaves) + "]"
    step = len(leaves) // shape[0] if shape[0] else 0
    return "[" + ", ".join(_nest(leaves[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])) + "]"


def _tensor_json(name: str, array: np.ndarray) -> str:
    leaves, shape = _leaves(array, name.endswith("_bytes")), array.shape
    while len(shape) > 1 and shape[-1] == 1:  # An image's [..., 1]: bracket each leaf at once, not one join each.
        leaves, shape = [f"[{leaf}]" for leaf in leaves], shape[:-1]
    return _nest(leaves, shape)


def response_json(outputs: Mapping[str, np.ndarray], row: bool) -> str:
    """`{"predictions": [...]}` (row format) or `{"outputs": ...}` (columnar), as TF Serving writes them."""
    if not outputs:
        raise invalid("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if not row:
        if len(names) == 1:
            return '{"outputs": ' + _tensor_json(names[0], outputs[names[0]]) + "}"
        return '{"outputs": {' + ", ".join(f"{json.dumps(n)}: {_tensor_json(n, outputs[n])}" for n in names) + "}}"
    batch = None
    for name in names:
        if outputs[name].ndim == 0:
            raise invalid(f"Tensor name: {name} has no shape information ")
        if batch is not None and outputs[name].shape[0] != batch:
            raise invalid(
                f"Tensor name: {name} has inconsistent batch size: {outputs[name].shape[0]} expecting: {batch}"
            )
        batch = outputs[name].shape[0]
    items = []
    for i in range(batch or 0):
        # np.asarray: one row of a string tensor [N] is a Python bytes object, not an array.
        parts = {name: _tensor_json(name, np.asarray(outputs[name][i])) for name in names}
        if len(names) == 1:
            items.append(parts[names[0]])
        else:
            items.append("{" + ", ".join(f"{json.dumps(n)}: {v}" for n, v in parts.items()) + "}")
    return '{"predictions": [' + ", ".join(items) + "]}"


def error_json(message: str) -> str:
    return json.dumps({"error": message}, ensure_ascii=False)
