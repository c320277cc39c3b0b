"""What `mfapr eval-bag` (and `mfapr explain --bag`) read from a bag, from their options: which recorded topic each
camera's images come from (``--topics`` / ``--transport``, by the node's binding rule) and the synchronizer settings
(``--slop``, ``--min-cameras`` …, generated from :class:`~mfapr_ros.core.sync.SyncSettings`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Mapping, Sequence

from mfapr_ros.bag.bundles import COMPRESSED_SUFFIX, CameraBinding, bind_bag_topics, camera_bindings
from mfapr_ros.bag.reader import COMPRESSED_IMAGE, IMAGE, IMAGE_TYPES
from mfapr_ros.core.errors import ConfigError, DataError
from mfapr_ros.core.rig import TRANSPORTS, Rig
from mfapr_ros.core.sync import SyncSettings

LOG = logging.getLogger("mfapr.eval_bag")


def _items(spec: str | Sequence[str] | None) -> list[str]:
    if not spec:
        return []
    raw = spec.split(",") if isinstance(spec, str) else [x for s in spec for x in s.split(",")]
    return [x.strip() for x in raw if x.strip()]


def parse_topic_map(spec: str | Sequence[str] | None) -> dict[str, str]:
    """``"cam0=/a,cam1=/b@raw"`` (or a list of ``cam=topic``) → ``{"cam0": "/a", "cam1": "/b@raw"}``; the
    ``@transport`` suffix is kept for :func:`split_topic_transports`."""
    out: dict[str, str] = {}
    for item in _items(spec):
        if item.count("=") != 1 or not all(item.split("=")):
            raise ConfigError(f"--topics entry '{item}' must be CAMERA=TOPIC[@TRANSPORT], e.g. cam0=/front/image_raw "
                              "or cam0=/front/image_raw@raw")
        cam, topic = item.split("=")
        out[cam.strip()] = topic.strip()
    return out


def parse_transport_map(spec: str | Sequence[str] | None) -> dict[str, str] | str:
    """``--transport``: ``raw`` / ``compressed`` (every camera, returned as the string) or ``cam0=raw,cam1=...``."""
    items = _items(spec)
    if len(items) == 1 and "=" not in items[0]:
        if items[0] not in TRANSPORTS:
            raise ConfigError(f"--transport '{items[0]}' is not a transport; expected one of {TRANSPORTS} (every "
                              "camera) or CAMERA=TRANSPORT,... e.g. cam0=raw")
        return items[0]
    out: dict[str, str] = {}
    for item in items:
        if item.count("=") != 1 or not all(item.split("=")):
            raise ConfigError(f"--transport entry '{item}' must be CAMERA=TRANSPORT (e.g. cam0=raw), or give one "
                              f"of {TRANSPORTS} alone for every camera")
        cam, tr = (x.strip() for x in item.split("="))
        if tr not in TRANSPORTS:
            raise ConfigError(f"--transport {cam}={tr}: '{tr}' is not a transport; expected one of {TRANSPORTS}")
        out[cam] = tr
    return out


def split_topic_transports(topics: Mapping[str, str], transports: Mapping[str, str] | str | None,
                           rig: Rig) -> tuple[dict[str, str], dict[str, str]]:
    """``(topics, transports)`` per camera name from ``--topics`` (``topic[@transport]``) and ``--transport``;
    unknown cameras, unknown transports and a camera given two different transports are ConfigErrors."""
    names = rig.camera_names
    if isinstance(transports, str):
        tr = dict.fromkeys(names, transports)
    else:
        tr = dict(transports or {})
    tp: dict[str, str] = {}
    for cam, topic in topics.items():
        if "@" in topic:  # '@' cannot occur in a ROS topic name: the transport suffix is unambiguous
            topic, _, suffix = topic.rpartition("@")
            if suffix not in TRANSPORTS or not topic:
                raise ConfigError(f"--topics {cam}={topic}@{suffix}: expected TOPIC@TRANSPORT with a transport in "
                                  f"{TRANSPORTS}")
            if cam in tr and tr[cam] != suffix and not isinstance(transports, str):
                raise ConfigError(f"camera '{cam}' is given transport '{suffix}' by --topics and '{tr[cam]}' by "
                                  "--transport; give it once")
            tr[cam] = suffix
        tp[cam] = topic
    unknown = sorted({c for c in (*tp, *tr) if c not in names})
    if unknown:
        raise ConfigError(f"--topics/--transport name camera(s) {unknown} that are not in the checkpoint's rig "
                          f"{names}")
    for cam, topic in tp.items():
        if tr.get(cam) == "raw" and topic.endswith(COMPRESSED_SUFFIX):
            raise ConfigError(f"--topics {cam}={topic}@raw: a raw image topic does not end in '{COMPRESSED_SUFFIX}'; "
                              f"give the base topic ({topic[: -len(COMPRESSED_SUFFIX)]}) or @compressed")
    return tp, tr


def resolve_bindings(rig: Rig, bag_types: Mapping[str, str], topics: Mapping[str, str] | None = None,
                     transports: Mapping[str, str] | str | None = None, *,
                     source: str = "the bag") -> list[CameraBinding]:
    """Which bag topic each rig camera is read from (model slot order). Three cases per camera, so that nothing is
    appended or swapped behind the user's back:

    * a transport given (``--transport``, or ``--topics cam=TOPIC@TRANSPORT``): image_transport naming on the base
      topic (``--topics`` or the rig's), like the node's ``topics.<cam>`` + ``transport.<cam>``: ``raw`` reads the base
      topic, ``compressed`` reads ``<base>/compressed``; that topic must be recorded with that type (no fallback);
    * only a topic (``--topics cam=TOPIC``): exactly that topic, its transport is the recorded message type (the
      rig's transport is *not* appended);
    * neither: the rig's topic and transport, falling back to the other transport when only that one was recorded
      (logged), the rule shared with training (:func:`~mfapr_ros.bag.bundles.bind_bag_topics`).
    """
    topics, trs = split_topic_transports(dict(topics or {}), transports, rig)
    by_rule = [c for c in rig.camera_names if c not in topics and c not in trs]
    ruled = {b.name: b for b in bind_bag_topics(rig.subset(by_rule), bag_types, source=source)  # type: ignore[union-attr]
             } if by_rule else {}
    images = sorted(t for t, ty in bag_types.items() if ty in IMAGE_TYPES)
    out: list[CameraBinding] = []
    for slot, cam in enumerate(rig.cameras):
        if cam.name in ruled:  # transport = what is read (the rule may have fallen back to the other one)
            b = ruled[cam.name]
            read = "compressed" if bag_types.get(b.topic) == COMPRESSED_IMAGE else "raw"
            out.append(dataclasses.replace(b, slot=slot, transport=read))
            continue
        if cam.name in trs:
            (b,) = camera_bindings([cam], [cam.name], topics, trs)
            want = COMPRESSED_IMAGE if b.transport == "compressed" else IMAGE
            how = f"--transport {cam.name}={b.transport}"
        else:
            b = CameraBinding(slot, cam.name, topics[cam.name], "", cam.width, cam.height)
            want, how = None, f"--topics {cam.name}={topics[cam.name]}"
        got = bag_types.get(b.topic)
        if got not in IMAGE_TYPES or (want is not None and got != want):
            recorded = f"recorded as {got}" if got else "not recorded"
            raise DataError(f"{source}: camera {cam.name} ({how}) reads {b.topic}, which is {recorded} "
                            f"(image topics in the bag: {images or 'none'}); fix --topics/--transport")
        transport = "compressed" if got == COMPRESSED_IMAGE else "raw"
        out.append(dataclasses.replace(b, slot=slot, transport=transport))
    topics_read = [b.topic for b in out]
    dup = sorted({t for t in topics_read if topics_read.count(t) > 1})
    if dup:
        raise ConfigError(f"camera topics must be distinct; {dup} is read for more than one camera "
                          "(check --topics/--transport)")
    return out


def add_sync_options(p: argparse.ArgumentParser) -> None:
    """``--<setting>`` for every :class:`SyncSettings` field (``--slop``, ``--min-cameras`` …), generated from its
    fields: the node's ``sync.*`` names, units (seconds) and descriptions; unset = the node's default."""
    g = p.add_argument_group("synchronizer (the node's sync.* parameters; default: the node's defaults)")
    for f in dataclasses.fields(SyncSettings):
        g.add_argument(f"--{f.name.replace('_', '-')}", dest=f"sync_{f.name}", type=int if f.type == "int" else float,
                       default=None, help=f"{f.metadata['doc']} Default {f.default}.")
    g.add_argument("--slop-ms", type=float, default=None, help=argparse.SUPPRESS)  # deprecated: --slop in seconds


def sync_settings_from_args(args: argparse.Namespace) -> SyncSettings:
    """The CLI's sync options over the node's defaults, validated by :class:`SyncSettings` (as the node's ``sync.*``
    parameters and training's ``data.sync``), so eval-bag bundles exactly as ``localize_node`` with the same
    parameters."""
    given = {f.name: getattr(args, f"sync_{f.name}") for f in dataclasses.fields(SyncSettings)}
    if getattr(args, "slop_ms", None) is not None:
        LOG.warning("--slop-ms is deprecated: use --slop in seconds (--slop %g)", args.slop_ms / 1e3)
        if given["slop"] is None:
            given["slop"] = args.slop_ms / 1e3
    flags = ", ".join(f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None)
    return SyncSettings.from_dict({k: v for k, v in given.items() if v is not None}, where=f"eval-bag ({flags})")
