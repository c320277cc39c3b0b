"""Fusion of the network's per-bundle poses with odometry: precision over a track, the way AMCL gives it (ROS-free).

Why: one bundle's pose is as good as one look; a robot also knows how it moved between two looks (wheel odometry,
``odom → base_link``). :class:`PoseFusion` keeps a short window of rig poses in a factor graph — GTSAM's
``IncrementalFixedLagSmoother`` (iSAM2 over the last ``lag`` seconds; older poses are marginalised into a prior) —
with

* a ``BetweenFactorPose3`` per bundle from the odometry increment ``T_odom_base(k−1)⁻¹ · T_odom_base(k)``, whose
  noise grows with the distance travelled and the angle turned (``odom_*`` settings);
* a ``PriorFactorPose3`` per bundle: the network pose with its (calibrated) covariance as an absolute measurement,
  under a robust loss (Huber or Cauchy, ``robust_*``), after a **gate**: the Mahalanobis distance of the pose
  (x, y, yaw: the blocks whose covariance is calibrated) from the odometry prediction, under the predicted plus
  measured covariance, beyond ``outlier_gate`` σ rejects it (counted); after ``max_consecutive_outliers``
  rejections in a row the filter re-initialises from the network (counted), as a kidnapped robot needs.

Every input pose yields exactly one output with one status (:data:`STATUSES`, counted in :attr:`PoseFusion.stats`):
``fused``, ``initialized`` (first pose, or a re-initialisation), ``outlier_rejected`` (odometry prediction
published), ``no_odometry`` / ``invalid`` / ``solver_error`` (the raw pose passes through). So
``received = Σ statuses`` always. The output is the filtered (causal) estimate of the newest pose and its marginal
covariance, in the ROS ``PoseWithCovariance`` convention (``[x y z rot_x rot_y rot_z]`` about the fixed map axes).

GTSAM is an optional dependency (``pip install gtsam``, pinned in requirements.txt): it is imported when a
:class:`PoseFusion` is built, and its absence is one :class:`FusionUnavailableError` line.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ConfigError
from .geometry import pose_between, quat_normalize, quat_to_matrix, quat_to_yaw

ROBUST_LOSSES = ("huber", "cauchy", "none")
#: the status of each output (one per input pose; counted in :attr:`PoseFusion.stats`)
STATUSES = ("fused", "initialized", "outlier_rejected", "no_odometry", "invalid", "solver_error")
GTSAM_PIN = "gtsam==4.3.0"
MISSING_GTSAM = (f"pose fusion needs GTSAM, which is not installed: `pip install {GTSAM_PIN}` (requirements.txt); "
                 "the raw per-bundle poses are unaffected")


class FusionUnavailableError(ConfigError):
    """Fusion was requested but GTSAM cannot be imported (one line: what to install)."""


def load_gtsam() -> Any:
    """The ``gtsam`` module, or :class:`FusionUnavailableError` with the one-line install hint."""
    try:
        import gtsam  # type: ignore[import-not-found]
    except ImportError as e:
        raise FusionUnavailableError(MISSING_GTSAM) from e
    return gtsam


def gtsam_available() -> bool:
    """Whether GTSAM imports here (eval-bag's ``--fusion auto``)."""
    try:
        load_gtsam()
    except FusionUnavailableError:
        return False
    return True


@dataclass(frozen=True)
class FusionSettings:
    """The fusion's settings (SI units), validated once at construction; one name each (the node's ``fusion.*``
    parameters, eval-bag and the evaluator use these names; :data:`FIELD_DOCS` describes them)."""

    enabled: bool = False
    lag: float = 2.0
    robust_loss: str = "huber"
    robust_threshold: float = 3.0
    outlier_gate: float = 4.0
    max_consecutive_outliers: int = 10
    measurement_scale: float = 1.5
    correlated_fraction: float = 0.25
    position_scale: float = 1.0
    rotation_scale: float = 1.0
    odom_translation_per_m: float = 0.15
    odom_rotation_per_m: float = 0.1
    odom_rotation_per_rad: float = 0.05
    odom_min_translation: float = 0.002
    odom_min_rotation: float = 0.001

    def __post_init__(self) -> None:
        def bad(name: str, want: str) -> ConfigError:
            return ConfigError(f"fusion.{name} = {getattr(self, name)!r}: expected {want}")

        if not isinstance(self.enabled, bool):
            raise bad("enabled", "true or false")
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type in ("float", float) and (isinstance(v, bool) or not isinstance(v, int | float)
                                                or not math.isfinite(v)):
                raise bad(f.name, "a finite number")
        if self.lag <= 0:
            raise bad("lag", "a number of seconds > 0")
        if self.robust_loss not in ROBUST_LOSSES:
            raise bad("robust_loss", f"one of {ROBUST_LOSSES}")
        if self.robust_threshold <= 0:
            raise bad("robust_threshold", "a number of σ > 0")
        if self.outlier_gate < 0:
            raise bad("outlier_gate", "a number of σ >= 0 (0 = no gate)")
        if isinstance(self.max_consecutive_outliers, bool) or not isinstance(self.max_consecutive_outliers, int) \
                or self.max_consecutive_outliers < 1:
            raise bad("max_consecutive_outliers", "an integer >= 1")
        if self.measurement_scale <= 0:
            raise bad("measurement_scale", "a σ factor > 0")
        if not 0.0 <= self.correlated_fraction < 1.0:
            raise bad("correlated_fraction", "a share in [0, 1)")
        for name in ("position_scale", "rotation_scale"):
            if getattr(self, name) <= 0:
                raise bad(name, "a σ factor > 0")
        for name in ("odom_translation_per_m", "odom_rotation_per_m", "odom_rotation_per_rad"):
            if getattr(self, name) < 0:
                raise bad(name, "a number >= 0")
        for name in ("odom_min_translation", "odom_min_rotation"):
            if getattr(self, name) <= 0:
                raise bad(name, "a number > 0 (a zero σ makes the graph singular)")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> FusionSettings:
        """Settings from ``{name: value}`` (missing names keep their defaults; unknown ones are a ConfigError)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown fusion setting(s) {unknown}; known: {sorted(names)}")
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        """Name → value (report meta)."""
        return dataclasses.asdict(self)


#: the node names whose section of a ROS parameters file applies to ``localize_node`` (``/**`` = any node)
PARAMS_SECTIONS = ("/**", "mfapr_localizer")


def fusion_values_from_params(doc: Any, source: str = "parameters file") -> dict[str, Any]:
    """The ``fusion.*`` values of a ROS 2 parameters document (``{node: {ros__parameters: {...}}}``), as
    ``{setting: value}``: the ``/**`` section first, then a ``mfapr_localizer`` section (any namespace) over it,
    the way ``--params-file`` applies them to the node. Both the nested (``fusion: {lag: 2.0}``) and the dotted
    (``fusion.lag: 2.0``) spellings are read; other parameters are ignored (the file may be the node's whole
    config). Why: ``mfapr eval-bag --params`` and ``mfapr fit-fusion`` must read exactly the file the node is
    started with, so an offline figure is the figure of the settings the robot runs."""
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{source}: expected a ROS 2 parameters file ({{node: {{ros__parameters: ...}}}})")
    out: dict[str, Any] = {}
    sections = sorted((k for k in doc if isinstance(k, str)
                       and (k == "/**" or k.rstrip("/").split("/")[-1] == "mfapr_localizer")),
                      key=lambda k: k != "/**")
    for key in sections:
        params = (doc[key] or {}).get("ros__parameters") if isinstance(doc[key], Mapping) else None
        if not isinstance(params, Mapping):
            raise ConfigError(f"{source}: section '{key}' has no 'ros__parameters' mapping")
        nested = params.get("fusion", {})
        if not isinstance(nested, Mapping):
            raise ConfigError(f"{source}: 'fusion' in section '{key}' must be a mapping of fusion.* settings")
        out.update(nested)
        out.update({k[len("fusion."):]: v for k, v in params.items() if isinstance(k, str) and k.startswith("fusion.")})
    return out


def load_fusion_params(path: str, base: FusionSettings | None = None) -> FusionSettings:
    """:class:`FusionSettings` from a node parameters file (:func:`fusion_values_from_params`) over ``base``
    (default: the node's defaults); an unknown or invalid ``fusion.*`` value is one ConfigError naming the file."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"cannot read parameters file {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"parameters file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    values = fusion_values_from_params(doc, source=f"parameters file {path}")
    try:
        return FusionSettings.from_dict({**(base or FusionSettings()).to_dict(), **values})
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def fusion_params_yaml(settings: FusionSettings, header: str = "") -> str:
    """A ROS 2 parameters file (``/**`` section) with every ``fusion.*`` setting: what ``mfapr fit-fusion`` writes,
    to be given to the node (``--params-file``) and to ``mfapr eval-bag --params``. ``header``: comment lines."""
    import yaml

    body = yaml.safe_dump({"/**": {"ros__parameters": {"fusion": settings.to_dict()}}}, sort_keys=False)
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    return "\n".join(lines + [body]) if lines else body


#: What each setting means (the node's parameter table and docs/node.md use these words).
FIELD_DOCS: dict[str, tuple[str, str]] = {
    "enabled": ("Fuse the network's poses with odometry (odom->base_frame from TF) into ~/fused_pose; with "
                "tf_mode map_to_odom the TF is then computed from the fused pose. Needs GTSAM.", ""),
    "lag": ("Seconds of poses kept in the fixed-lag smoother (older ones are marginalised into a prior).", "> 0"),
    "robust_loss": ("Robust loss on the network pose factor: huber, cauchy or none.", "huber|cauchy|none"),
    "robust_threshold": ("Robust loss threshold, in σ of the whitened 6-D pose error.", "> 0"),
    "outlier_gate": ("A network pose farther than this (Mahalanobis σ over x, y, yaw) from the odometry "
                     "prediction is rejected and counted; 0 = no gate.", ">= 0"),
    "max_consecutive_outliers": ("After this many rejections in a row the filter re-initialises from the "
                                 "network pose (counted).", ">= 1"),
    "measurement_scale": ("σ factor on the network covariance before fusion (>1 when consecutive bundles' errors "
                          "are correlated).", "> 0"),
    "correlated_fraction": ("Share of the network covariance that consecutive bundles have in common (a bias of "
                            "the place that averaging over the track cannot remove): the published fused "
                            "covariance is this share of the newest network covariance plus the rest of the "
                            "smoother's marginal; 0 = independent errors (the smoother alone).", "[0, 1)"),
    "position_scale": ("σ factor on the position block of the published fused covariance (fitted with the next one "
                       "by `mfapr fit-fusion` on a held-out drive; 1 = as the smoother and correlated_fraction give "
                       "it).", "> 0"),
    "rotation_scale": ("σ factor on the rotation block of the published fused covariance (see position_scale).",
                       "> 0"),
    "odom_translation_per_m": ("Odometry translation σ per metre travelled (m/m).", ">= 0"),
    "odom_rotation_per_m": ("Odometry rotation σ per metre travelled (rad/m).", ">= 0"),
    "odom_rotation_per_rad": ("Odometry rotation σ per radian turned (rad/rad).", ">= 0"),
    "odom_min_translation": ("Floor of the odometry translation σ per step (m).", "> 0"),
    "odom_min_rotation": ("Floor of the odometry rotation σ per step (rad).", "> 0"),
}


@dataclass(frozen=True)
class FusedPose:
    """One output: ``T_map_base`` (``t``, ``q`` wxyz), its 6×6 covariance (ROS order) and how it was made."""

    stamp_ns: int
    t: np.ndarray
    q: np.ndarray
    covariance: np.ndarray
    status: str

    @property
    def fused(self) -> bool:
        """True when the pose comes from the filter (fused, initialised or odometry-predicted), False when the raw
        pose passed through."""
        return self.status in ("fused", "initialized", "outlier_rejected")


def _swap() -> np.ndarray:
    """Permutation between ROS ``[trans, rot]`` and GTSAM ``[rot, trans]`` (its own inverse)."""
    p = np.zeros((6, 6))
    p[:3, 3:] = np.eye(3)
    p[3:, :3] = np.eye(3)
    return p


_P = _swap()


def ros_to_body_covariance(cov_ros: np.ndarray, q: np.ndarray) -> np.ndarray:
    """A ROS pose covariance (``[x y z rx ry rz]``, map-aligned axes) → GTSAM's local coordinates of ``Pose3``
    (``[ω v]`` in the body frame, first order): rotate both blocks by ``Rᵀ`` and swap them."""
    r = quat_to_matrix(q)
    j = np.zeros((6, 6))
    j[:3, :3] = r.T
    j[3:, 3:] = r.T
    out = _P @ j @ cov_ros @ j.T @ _P.T
    return 0.5 * (out + out.T)


def body_to_ros_covariance(cov_body: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Inverse of :func:`ros_to_body_covariance`."""
    r = quat_to_matrix(q)
    j = np.zeros((6, 6))
    j[:3, :3] = r
    j[3:, 3:] = r
    out = j @ _P.T @ cov_body @ _P @ j.T
    return 0.5 * (out + out.T)


def _yaw_block(cov_ros: np.ndarray) -> np.ndarray:
    idx = [0, 1, 5]
    return cov_ros[np.ix_(idx, idx)]


class PoseFusion:
    """The estimator (see the module docstring). Feed poses in stamp order with :meth:`update`."""

    def __init__(self, settings: FusionSettings) -> None:
        self.settings = settings
        self.gtsam = load_gtsam()
        self.last_error = ""  # the last GTSAM failure (solver_error), for a log line
        self.stats: dict[str, int] = {"received": 0, **{s: 0 for s in STATUSES}, "resets": 0,
                                      "robust_downweighted": 0}
        self._reset_state()

    # ------------------------------------------------------------------ state
    def _reset_state(self) -> None:
        self._smoother: Any = None
        self._k = -1  # index of the newest pose in the graph
        self._t0_ns: int | None = None
        self._last_stamp: int | None = None
        self._last_odom: tuple[np.ndarray, np.ndarray] | None = None
        self._last_pose: Any = None
        self._last_cov: np.ndarray | None = None  # body covariance of the newest pose
        self._meas_cov: np.ndarray | None = None  # body covariance of the newest accepted network pose (scaled)
        self._outliers_in_row = 0

    def reset(self) -> None:
        """Forget the track (the next pose with odometry initialises it again)."""
        self._reset_state()

    @property
    def initialized(self) -> bool:
        return self._smoother is not None

    # ------------------------------------------------------------------ noise models
    def _measurement_noise(self, cov_body: np.ndarray, robust: bool) -> Any:
        g = self.gtsam
        gauss = g.noiseModel.Gaussian.Covariance(cov_body)
        s = self.settings
        if not robust or s.robust_loss == "none":
            return gauss
        est = (g.noiseModel.mEstimator.Huber.Create(s.robust_threshold) if s.robust_loss == "huber"
               else g.noiseModel.mEstimator.Cauchy.Create(s.robust_threshold))
        return g.noiseModel.Robust.Create(est, gauss)

    def _odometry_sigmas(self, delta: Any) -> np.ndarray:
        """Body-frame ``[ω v]`` σ of one odometry increment (grows with distance and turn)."""
        s = self.settings
        dist = float(np.linalg.norm(delta.translation()))
        turn = float(np.linalg.norm(self.gtsam.Rot3.Logmap(delta.rotation())))
        st = max(s.odom_min_translation, s.odom_translation_per_m * dist)
        sr = max(s.odom_min_rotation, s.odom_rotation_per_m * dist + s.odom_rotation_per_rad * turn)
        return np.array([sr, sr, sr, st, st, st])

    # ------------------------------------------------------------------ the one entry point
    def update(self, stamp_ns: int, t: np.ndarray, q: np.ndarray, covariance: np.ndarray,
               odom: tuple[np.ndarray, np.ndarray] | None) -> FusedPose:
        """One network pose ``T_map_base`` (``t``, ``q`` wxyz, 6×6 ROS covariance) and the odometry
        ``T_odom_base`` at the same stamp (``None`` when it is not available) → the fused pose at that stamp."""
        self.stats["received"] += 1
        stamp_ns = int(stamp_ns)
        t = np.asarray(t, dtype=np.float64).reshape(3)
        q = np.asarray(q, dtype=np.float64).reshape(4)
        cov = np.asarray(covariance, dtype=np.float64).reshape(6, 6)
        raw = FusedPose(stamp_ns, t, q, cov, "invalid")
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(q)) and np.linalg.norm(q) > 1e-6
                and np.all(np.isfinite(cov))) or not self._positive_definite(cov):
            return self._out(raw, "invalid")
        if self._last_stamp is not None and stamp_ns <= self._last_stamp:
            return self._out(raw, "invalid")  # out of order / duplicate: the graph only moves forward
        if odom is None or not all(np.all(np.isfinite(np.asarray(x))) for x in odom):
            return self._out(raw, "no_odometry")
        q = quat_normalize(q)
        odom_t = np.asarray(odom[0], dtype=np.float64).reshape(3)
        odom_q = quat_normalize(np.asarray(odom[1], dtype=np.float64).reshape(4))
        scale2 = self.settings.measurement_scale ** 2
        cov_body = ros_to_body_covariance(cov * scale2, q)
        try:
            if not self.initialized:
                return self._initialize(stamp_ns, t, q, cov_body, odom_t, odom_q, "initialized")
            return self._step(stamp_ns, t, q, cov * scale2, cov_body, odom_t, odom_q)
        except RuntimeError as e:  # GTSAM: indeterminant system etc. — start over, pass the raw pose
            self._reset_state()
            self.last_error = f"{type(e).__name__}: {e}"
            return self._out(raw, "solver_error")

    def _out(self, pose: FusedPose, status: str) -> FusedPose:
        self.stats[status] += 1
        return dataclasses.replace(pose, status=status)

    @staticmethod
    def _positive_definite(cov: np.ndarray) -> bool:
        try:
            np.linalg.cholesky(0.5 * (cov + cov.T))
        except np.linalg.LinAlgError:
            return False
        return True

    def _pose3(self, t: np.ndarray, q: np.ndarray) -> Any:
        g = self.gtsam
        return g.Pose3(g.Rot3.Quaternion(*q), t)

    def _fused_pose(self, stamp_ns: int, pose: Any, cov_body: np.ndarray, status: str) -> FusedPose:
        """The published pose: the smoother's estimate with ``ρ·R + (1 − ρ)·P`` (ρ = ``correlated_fraction``, R the
        newest accepted network covariance, P the smoother's marginal).

        Why: the smoother treats every network pose as an independent measurement, so its marginal shrinks like
        1/N over the window — but the network's errors at one place are largely the same error (measured on the
        demo's forward query: error autocorrelation 0.89 one bundle apart, 0.56 after 1 s), and the marginal
        claimed a few centimetres while the fused pose was 0.35 m off (0 % of errors inside 1σ). With a share ρ
        of each error common to the window, the fused error keeps that share of R however many poses are fused;
        one pose alone (P = R) is published with R, as without fusion.
        """
        q = quat_normalize(np.array(pose.rotation().toQuaternion().coeffs())[[3, 0, 1, 2]])
        t = np.asarray(pose.translation(), dtype=np.float64).reshape(3)
        rho = self.settings.correlated_fraction
        out = cov_body if self._meas_cov is None or rho == 0 else rho * self._meas_cov + (1 - rho) * cov_body
        return self._out(FusedPose(stamp_ns, t, q, self._scaled(body_to_ros_covariance(out, q)), status), status)

    def _scaled(self, cov_ros: np.ndarray) -> np.ndarray:
        """``D Σ D``, ``D = diag(s_p ×3, s_r ×3)`` (``position_scale``, ``rotation_scale``): the published fused
        covariance's σ factors (a pass-through raw pose keeps the network's own covariance)."""
        sp, sr = self.settings.position_scale, self.settings.rotation_scale
        if sp == 1.0 and sr == 1.0:
            return cov_ros
        d = np.array([sp, sp, sp, sr, sr, sr])
        return cov_ros * d[:, None] * d[None, :]

    def _initialize(self, stamp_ns: int, t: np.ndarray, q: np.ndarray, cov_body: np.ndarray, odom_t: np.ndarray,
                    odom_q: np.ndarray, status: str) -> FusedPose:
        g = self.gtsam
        self._smoother = g.IncrementalFixedLagSmoother(self.settings.lag)
        self._t0_ns, self._k = stamp_ns, 0
        key = g.symbol("x", 0)
        pose = self._pose3(t, q)
        graph, values, stamps = g.NonlinearFactorGraph(), g.Values(), g.FixedLagSmootherKeyTimestampMap()
        graph.add(g.PriorFactorPose3(key, pose, self._measurement_noise(cov_body, robust=False)))
        values.insert(key, pose)
        stamps.insert((key, 0.0))
        self._smoother.update(graph, values, stamps)
        self._last_stamp, self._last_odom = stamp_ns, (odom_t, odom_q)
        self._last_pose, self._last_cov, self._meas_cov = pose, cov_body, cov_body
        self._outliers_in_row = 0
        return self._fused_pose(stamp_ns, pose, cov_body, status)

    def _step(self, stamp_ns: int, t: np.ndarray, q: np.ndarray, cov_ros: np.ndarray, cov_body: np.ndarray,
              odom_t: np.ndarray, odom_q: np.ndarray) -> FusedPose:
        g, s = self.gtsam, self.settings
        d_t, d_q = pose_between(self._last_odom[0], self._last_odom[1], odom_t, odom_q)
        delta = self._pose3(d_t, d_q)
        q_sig = self._odometry_sigmas(delta)
        # prediction: x⁻ = x ⊕ Δ, P⁻ = Ad(Δ⁻¹) P Ad(Δ⁻¹)ᵀ + Q (GTSAM's right-perturbation convention)
        pred = self._last_pose.compose(delta)
        ad = delta.inverse().AdjointMap()
        p_pred = ad @ self._last_cov @ ad.T + np.diag(q_sig ** 2)
        p_pred_ros = body_to_ros_covariance(p_pred, quat_normalize(
            np.array(pred.rotation().toQuaternion().coeffs())[[3, 0, 1, 2]]))
        pred_t = np.asarray(pred.translation(), dtype=np.float64)
        pred_yaw = float(pred.rotation().yaw())
        e = np.array([t[0] - pred_t[0], t[1] - pred_t[1],
                      (float(quat_to_yaw(q)) - pred_yaw + math.pi) % (2 * math.pi) - math.pi])
        sm = _yaw_block(p_pred_ros) + _yaw_block(cov_ros)
        try:
            d = math.sqrt(max(0.0, float(e @ np.linalg.solve(sm, e))))
        except np.linalg.LinAlgError:
            d = math.inf
        accept = s.outlier_gate <= 0 or d <= s.outlier_gate
        if not accept:
            self._outliers_in_row += 1
            if self._outliers_in_row >= s.max_consecutive_outliers:
                self.stats["resets"] += 1
                self._reset_state()
                return self._initialize(stamp_ns, t, q, cov_body, odom_t, odom_q, "initialized")
        else:
            self._outliers_in_row = 0
        # robust-loss bookkeeping: the whitened 6-D error of the measurement against the prediction
        meas = self._pose3(t, q)
        if accept:
            r = pred.localCoordinates(meas)
            try:
                if math.sqrt(max(0.0, float(r @ np.linalg.solve(p_pred + cov_body, r)))) > s.robust_threshold:
                    self.stats["robust_downweighted"] += 1
            except np.linalg.LinAlgError:
                pass
        self._k += 1
        prev, key = g.symbol("x", self._k - 1), g.symbol("x", self._k)
        graph, values, stamps = g.NonlinearFactorGraph(), g.Values(), g.FixedLagSmootherKeyTimestampMap()
        graph.add(g.BetweenFactorPose3(prev, key, delta, g.noiseModel.Diagonal.Sigmas(q_sig)))
        if accept:
            graph.add(g.PriorFactorPose3(key, meas, self._measurement_noise(cov_body, robust=True)))
        values.insert(key, pred)
        stamps.insert((key, (stamp_ns - self._t0_ns) / 1e9))
        self._smoother.update(graph, values, stamps)
        pose = self._smoother.calculateEstimatePose3(key)
        cov_new = np.asarray(self._smoother.marginalCovariance(key), dtype=np.float64)
        if accept:
            # the measurement's covariance in the body frame of the *estimate* (the published frame)
            self._meas_cov = ros_to_body_covariance(cov_ros, quat_normalize(
                np.array(pose.rotation().toQuaternion().coeffs())[[3, 0, 1, 2]]))
        self._last_stamp, self._last_odom = stamp_ns, (odom_t, odom_q)
        self._last_pose, self._last_cov = pose, 0.5 * (cov_new + cov_new.T)
        return self._fused_pose(stamp_ns, pose, self._last_cov, "fused" if accept else "outlier_rejected")


@dataclass
class FusedTrack:
    """:func:`fuse_track`'s result: one fused pose per input row, its status, and the estimator's counters."""

    t: np.ndarray  # (N, 3)
    q: np.ndarray  # (N, 4) wxyz
    covariance: np.ndarray  # (N, 6, 6) ROS order
    status: list[str]
    stats: dict[str, int]


def fuse_track(settings: FusionSettings, stamps_ns: np.ndarray, t: np.ndarray, q: np.ndarray, covariance: np.ndarray,
               odom_t: np.ndarray, odom_q: np.ndarray, odom_ok: np.ndarray) -> FusedTrack:
    """Run :class:`PoseFusion` over a recorded track (rows in stamp order), as the node would have live: what
    ``mfapr eval-bag`` and the benchmarks report as the fused pose. ``odom_ok[i]`` False = no odometry at row i."""
    f = PoseFusion(settings)
    out = [f.update(int(s), t[i], q[i], covariance[i], (odom_t[i], odom_q[i]) if odom_ok[i] else None)
           for i, s in enumerate(np.asarray(stamps_ns, dtype=np.int64))]
    if not out:
        return FusedTrack(np.zeros((0, 3)), np.zeros((0, 4)), np.zeros((0, 6, 6)), [], dict(f.stats))
    return FusedTrack(np.stack([o.t for o in out]), np.stack([o.q for o in out]),
                      np.stack([o.covariance for o in out]), [o.status for o in out], dict(f.stats))
