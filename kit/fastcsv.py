"""Writing a table of probabilities as CSV at a fixed precision, vectorised.

pandas' `to_csv` turns every float into its shortest round-trip repr, one value at a time: 20 s
for a million rows x 10 classes on this machine (docs/results.md, issue 11). Here each value is
written with PROBABILITY_DIGITS significant digits in the layout of C's `%.7g` (positional down
to 1e-4, then `1.5e-05`; trailing zeros dropped; 0 and 1 as `0` and `1`), built as bytes by numpy
for the whole table at once. Read back, every value is within PROBABILITY_TOLERANCE of the float
written (relative: half a unit in the 7th digit); a log loss moves by at most that much, far
below the four decimals a score is reported with. The text is `%.7g`'s except for a value within
float rounding of a half-way point, whose last digit may be rounded the other way.

Only tables this can write exactly as CSV are taken: text columns that need no quoting, integer
columns, and float columns whose values are all finite within [0, 1]; anything else is left to
pandas.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

PROBABILITY_DIGITS = 7  # significant digits per probability (as `%.7g`)
PROBABILITY_TOLERANCE = 5e-7  # relative error of a value read back: half a unit in the 7th digit

_ROWS_PER_CHUNK = 65_536  # rows built at once: rows x (id + 17 bytes per value), a few tens of MB
_QUOTED = np.array([ord(c) for c in ',"\r\n'], np.uint8)  # characters csv quoting would wrap
_ZERO, _DOT, _E, _MINUS, _COMMA, _NEWLINE = (ord(c) for c in "0.e-,\n")
FIELD_WIDTH = 16  # bytes per value before the NULs are dropped (0.0001234567, 1.234567e-100)
# the floats 1e-4, 1e-3, 1e-2, 0.1 and 1 are each at or above the real power of ten, so counting
# the thresholds a value reaches gives its decimal exponent exactly (no log10, no off-by-one)
_DECADES = np.array([1e-4, 1e-3, 1e-2, 1e-1, 1.0])


def probability_bytes(values: np.ndarray) -> np.ndarray:
    """(N,) floats in [0, 1] -> (N, FIELD_WIDTH) uint8: each value's text, NUL where no character.

    The usual value, 1e-4 <= v < 1, is `0.` + up to three zeros + seven digits: four-byte words
    looked up in tables (_WORDS). The rest (0, 1, v < 1e-4, what rounds to 1) is `_rare_bytes`."""
    v = np.asarray(values, dtype=np.float64)
    exponent = (
        np.searchsorted(_DECADES, v, side="right").astype(np.int64) - 5
    )  # exact: see _DECADES
    usual = (exponent < 0) & (exponent >= -4)
    scale = np.where(usual, 10.0 ** (6 - np.clip(exponent, -4, -1)), 0.0)
    mantissa = np.rint(v * scale).astype(np.int64)  # 10^6 <= m <= 10^7 on the usual rows
    carry = mantissa >= 10**7  # rounded up to the next power of ten
    exponent[carry] += 1
    mantissa[carry] = 10**6
    usual &= exponent < 0  # what rounds to 1 is rare
    high, low = np.divmod(mantissa, 10_000)  # 3 and 4 digits
    zeros = np.clip(-exponent - 1, 0, 3)  # between the point and the first digit
    out = np.zeros((len(v), FIELD_WIDTH), dtype=np.uint8)
    words = out.view(np.uint32)  # (N, 4): bytes 0-3, 4-7, 8-11, 12-15
    first, second, third = _WORDS
    words[:, 0] = first[zeros]  # `0.` and the first two zeros
    words[:, 1] = second[(zeros * 2 + (low == 0)) * 1000 + np.clip(high, 0, 999)]
    words[:, 2] = third[low]  # the last four digits, trailing zeros dropped
    rare = np.flatnonzero(~usual)
    if len(rare):
        out[rare] = _rare_bytes(v[rare])
    return out


def _word_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """probability_bytes' words of 0.[zeros]ddddddd as uint32 (native order): `0.` + zeros 1-2,
    by zero count; zero 3 + digits 1-3, by (zero count, whether digits 4-7 are all zero, digits
    1-3); digits 4-7, by their value. Trailing zeros of the seven digits are NUL."""
    digits = np.arange(10_000)[:, None] // 10 ** np.arange(3, -1, -1) % 10
    full = (_ZERO + digits).astype(np.uint8)
    trailing = np.cumprod((digits == 0)[:, ::-1], axis=1)[:, ::-1].astype(bool)  # 0s to the end
    stripped = np.where(trailing, 0, full).astype(np.uint8)
    first = np.zeros((4, 4), np.uint8)
    second = np.zeros((4, 2, 1000, 4), np.uint8)
    for count in range(4):
        first[count] = [_ZERO, _DOT] + [_ZERO if count > i else 0 for i in range(2)]
        second[count, :, :, 0] = _ZERO if count > 2 else 0
        second[count, 0, :, 1:] = full[:1000, 1:]
        second[count, 1, :, 1:] = stripped[:1000, 1:]  # digits 4-7 are zero: strip these too
    return tuple(t.reshape(-1, 4).view(np.uint32).ravel() for t in (first, second, stripped))


_WORDS = _word_tables()


def _rare_bytes(values: np.ndarray) -> np.ndarray:
    """probability_bytes for any value in [0, 1], slower: exponent from log10, either notation.

    Positional (1e-4 <= v <= 1): a leading `0` or digit, the point, up to three zeros, seven
    digits. Scientific (v < 1e-4): a digit, the point, six digits, `e-`, two or three digits."""
    v = np.asarray(values, dtype=np.float64)
    positive = v > 0
    safe = np.where(positive, v, 1.0)
    exponent = np.floor(np.log10(safe)).astype(np.int64)
    mantissa = _scaled(safe, exponent)
    # log10 may be off by one at powers of ten, and rounding may carry to 10^7: fix both
    low = mantissa < 10**6
    exponent[low] -= 1
    mantissa[low] = _scaled(safe[low], exponent[low])
    carry = mantissa >= 10**7
    exponent[carry] += 1
    mantissa[carry] = _scaled(safe[carry], exponent[carry])
    mantissa[mantissa >= 10**7] = 10**6  # rounding carried at the new exponent too: 10^(e+1)
    digits = (
        _ZERO + (mantissa[:, None] // 10 ** np.arange(6, -1, -1)) % 10
    )  # most significant first
    kept = 7 - _trailing_zeros(mantissa)  # digits to write: trailing zeros are dropped
    positional = exponent >= -4  # as %g: scientific below 1e-4 (v <= 1, so never above)
    lead_zero = positional & (exponent < 0)  # 0.xxx: the digits all follow the point

    out = np.zeros((len(v), FIELD_WIDTH), dtype=np.uint8)
    out[:, 0] = np.where(lead_zero, _ZERO, digits[:, 0])
    out[:, 1] = np.where(lead_zero | (kept > 1), _DOT, 0)
    for i in range(3):  # positional: zeros between the point and the first digit
        out[:, 2 + i] = np.where(lead_zero & (i < -exponent - 1), _ZERO, 0)
    for i in range(7):  # positional: digit 0 leads unless 0.xxx
        out[:, 5 + i] = np.where((i < kept) & (lead_zero | (i > 0)), digits[:, i], 0)
    scientific = np.flatnonzero(~positional)
    if len(scientific):
        rows = np.zeros((len(scientific), FIELD_WIDTH), dtype=np.uint8)
        rows[:, :2] = out[scientific, :2]
        for i in range(1, 7):
            rows[:, 1 + i] = np.where(i < kept[scientific], digits[scientific, i], 0)
        magnitude = -exponent[scientific]
        rows[:, 8] = _E
        rows[:, 9] = _MINUS
        rows[:, 10] = np.where(magnitude >= 100, _ZERO + magnitude // 100, 0)
        rows[:, 11] = _ZERO + magnitude // 10 % 10
        rows[:, 12] = _ZERO + magnitude % 10
        out[scientific] = rows
    out[~positive] = 0
    out[~positive, 0] = _ZERO  # exactly 0 is written `0`
    return out


def _scaled(v: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """round(v * 10^(6 - exponent)) as int64, in two factors so that 10^k cannot overflow."""
    k = 6 - exponent
    first = np.minimum(k, 300)
    return np.rint(v * 10.0**first * 10.0 ** (k - first)).astype(np.int64)


def _trailing_zeros(mantissa: np.ndarray) -> np.ndarray:
    zeros = np.zeros(len(mantissa), dtype=np.int64)
    m = mantissa.copy()
    for _ in range(6):  # a 7-digit mantissa has at most 6 trailing zeros
        ends = (m % 10 == 0) & (m > 0)
        zeros += ends
        m = np.where(ends, m // 10, m)
    return zeros


def _text_bytes(column: pd.Series) -> np.ndarray | None:
    """A text column as a (N, width) uint8 matrix of its UTF-8 bytes, NUL-padded; None when
    a value is missing or holds a character csv quoting would wrap, or a NUL."""
    if column.isna().any() or pd.api.types.infer_dtype(column, skipna=False) != "string":
        return None  # missing, or objects other than str
    values = column.to_numpy(dtype=object)
    try:  # the usual id: ASCII, converted in C
        codes = np.asarray(values, dtype=str)
        matrix = codes.view(np.uint32).reshape(len(values), -1)
        if (matrix > 127).any():
            raise UnicodeError
        matrix = matrix.astype(np.uint8)
        characters = sum(map(len, values))
    except UnicodeError:
        encoded = [str(v).encode("utf-8") for v in values]
        characters = sum(map(len, encoded))
        encoded = np.array(encoded, dtype=bytes)
        matrix = np.frombuffer(encoded.tobytes(), np.uint8).reshape(len(values), -1)
    if matrix.shape[1] == 0:
        matrix = np.zeros((len(values), 1), dtype=np.uint8)
    if np.isin(matrix, _QUOTED).any():
        return None
    if np.count_nonzero(matrix) != characters:  # a NUL inside a value would be dropped
        return None
    return matrix


def _float_values(column: pd.Series) -> np.ndarray | None:
    """A float column as float64, or None unless every value is finite within [0, 1]."""
    values = column.to_numpy(dtype=np.float64)
    if not (np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()):
        return None
    return values


def _integer_bytes(column: pd.Series) -> np.ndarray:
    """An integer column as a (N, width) uint8 matrix of its decimal digits, NUL-padded."""
    text = column.to_numpy().astype(bytes)
    return np.frombuffer(text.tobytes(), np.uint8).reshape(len(column), -1)


def _prepared(frame: pd.DataFrame) -> list[np.ndarray] | None:
    """Each column as write_probabilities needs it (text and integers: byte matrices; floats:
    float64), or None when the frame has a column it cannot write exactly, or no float column."""
    if frame.empty:
        return None  # nothing to gain: pandas writes the header
    columns = []
    for _, column in frame.items():
        if pd.api.types.is_float_dtype(column.dtype):
            prepared = _float_values(column)
        elif pd.api.types.is_integer_dtype(column.dtype) and not column.hasnans:
            prepared = _integer_bytes(column)
        elif pd.api.types.is_string_dtype(column.dtype):
            prepared = _text_bytes(column)
        else:
            return None
        if prepared is None:
            return None
        columns.append(prepared)
    if not any(c.ndim == 1 for c in columns):
        return None
    return columns


def write_probabilities(handle, frame: pd.DataFrame) -> bool:
    """Write frame as CSV (header, no index, as `to_csv` does) to the text handle, probabilities
    at PROBABILITY_DIGITS; False, writing nothing, when it has a column this cannot write exactly
    (text needing quotes or missing, other numbers than integers and floats in [0, 1])."""
    columns = _prepared(frame)
    if columns is None:
        return False
    frame.head(0).to_csv(handle, index=False)  # the header exactly as pandas writes it
    handle.flush()
    raw = handle.buffer if isinstance(handle, io.TextIOWrapper) else None
    for start in range(0, len(frame), _ROWS_PER_CHUNK):  # two threads were slower here
        text = _rows_bytes([c[start : start + _ROWS_PER_CHUNK] for c in columns])
        if raw is not None:
            raw.write(text)
        else:
            handle.write(text.decode("utf-8"))
    if raw is not None:
        raw.flush()
    return True


def _rows_bytes(columns: list[np.ndarray]) -> bytes:
    """The CSV lines of some rows: every field's bytes side by side, then the NULs dropped."""
    widths = [FIELD_WIDTH if c.ndim == 1 else c.shape[1] for c in columns]
    n = len(columns[0])
    table = np.zeros((n, sum(widths) + len(columns)), dtype=np.uint8)
    at = 0
    for column, width in zip(columns, widths, strict=True):
        table[:, at : at + width] = probability_bytes(column) if column.ndim == 1 else column
        table[:, at + width] = _COMMA  # after the last field, the newline below replaces it
        at += width + 1
    table[:, -1] = _NEWLINE
    flat = table.ravel()
    return np.compress(flat != 0, flat).tobytes()
