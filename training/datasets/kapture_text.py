"""kapture's text files: rows with line numbers and the unit of their integer timestamps.

Shared by :mod:`.kapture_reader`, :mod:`.kapture_poses` and `mfapr split` (which detects the unit before cutting).
"""

from __future__ import annotations

from pathlib import Path

from mfapr_ros.core.errors import DataError

US_TO_NS = 1000
#: ``stamp_unit`` values of :func:`read_kapture` (``data.stamp_unit``) → factor to nanoseconds; ``frame@<N>hz``
#: (frame indices of an N Hz recording, e.g. ``frame@30hz``) is accepted too, see :func:`stamp_unit_factor`.
STAMP_UNITS = {"ns": 1, "us": US_TO_NS, "ms": 1_000_000, "s": 1_000_000_000}
#: How a user sets the unit, named in every stamp-unit error (the reader's callers may pass their own flag).
STAMP_UNIT_HINT = "--set data.stamp_unit={unit} (mfapr train), --stamp-unit {unit} (mfapr split / evaluate)"


def stamp_unit_factor(unit: str, where: str = "data.stamp_unit") -> int:
    """Nanoseconds per timestamp unit: ``ns``/``us``/``ms``/``s``, or ``frame@<N>hz`` (frame indices at N Hz)."""
    u = str(unit).strip().lower()
    if u in STAMP_UNITS:
        return STAMP_UNITS[u]
    if u.startswith("frame@") and u.endswith("hz"):
        try:
            hz = float(u[len("frame@"):-2])
        except ValueError:
            hz = 0.0
        if hz > 0 and hz == hz and hz < 1e9:
            return max(1, int(round(1e9 / hz)))
    raise DataError(f"{where}: stamp_unit {unit!r} is not one of {['auto', *STAMP_UNITS]} or frame@<N>hz "
                    "(frame indices of an N Hz recording, e.g. frame@30hz)")


def detect_stamp_unit(stamps: dict[str, list[int]], where: str, unit: str = "auto",
                      hint: str = STAMP_UNIT_HINT) -> int:
    """The factor that turns this kapture's integer timestamps into ns, or a :class:`DataError` that says how to fix.

    kapture's timestamps are integers of an unspecified unit: µs by convention (NAVER LABS, ``mfapr synth``), ns in
    ROS conversions (naver/kapture ``samples/t265/ros_kapture``), frame indices in image collections
    (``samples/t265/kapture``, 7-Scenes). Epoch stamps are recognised by magnitude (µs ≈ 1e15, ns ≈ 1e18,
    ms ≈ 1e12, s ≈ 1e9); stamps counted from 0 by each camera's median step (µs: 5e3–5e6 = 0.2–200 Hz; ns: ≥ 5e6).
    Milliseconds, seconds and frame indices are refused with the exact setting that reads them (``hint``, formatted
    with the unit): bundling by time with the wrong unit silently pairs the wrong frames.
    """
    if unit != "auto":
        return stamp_unit_factor(unit, where)
    allv = [v for vs in stamps.values() for v in vs]
    if not allv:
        return US_TO_NS
    first = min(allv)
    steps = sorted(b - a for vs in stamps.values() for a, b in zip(sorted(set(vs)), sorted(set(vs))[1:],
                                                                   strict=False))
    step = steps[len(steps) // 2] if steps else None

    def how(u: str, note: str = "") -> str:
        return f"set the unit: {hint.format(unit=u)}{note}; or convert the timestamp column of records_camera.txt " \
               "and trajectories.txt to µs (ms → µs: × 1000; frame index at N Hz → index × 1e6 / N)"

    if 10**17 <= first < 10**19:
        return 1
    if 10**14 <= first < 10**16:
        return US_TO_NS
    if 10**11 <= first < 10**13:
        raise DataError(f"{where}: timestamps look like epoch milliseconds (first {first}); {how('ms')}")
    if 10**8 <= first < 10**10:
        raise DataError(f"{where}: timestamps look like epoch seconds (first {first}); {how('s')}")
    if step is None:
        return US_TO_NS
    if step <= 2:
        raise DataError(f"{where}: timestamps look like frame indices (first {first}, median step {step}); "
                        f"{how('frame@<N>hz', ' with the frame rate N, e.g. frame@30hz for 30 Hz')}")
    if step < 5000:
        raise DataError(f"{where}: timestamps look like milliseconds (median step {step}, i.e. "
                        f"{1e3 / step:.1f} Hz in ms but {1e6 / step:.0f} Hz in µs); {how('ms')}")
    return US_TO_NS if step < 5_000_000 else 1


def rows(path: Path) -> list[tuple[int, list[str]]]:
    """kapture CSV rows with their 1-based line numbers (kapture's own readers drop line numbers and file order,
    both of which the error messages and the out-of-order check need)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            line = line.rstrip("\n\r")
            if not line.strip() or line.startswith("#"):
                continue
            out.append((n, [c.strip() for c in line.split(",")]))
    return out
