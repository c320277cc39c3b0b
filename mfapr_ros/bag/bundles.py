"""THE bag → bundles pipeline (ROS-free), shared by `mfapr eval-bag` and training's rosbag reader.

Why one pipeline: the accuracy eval-bag reports and the bundles training learns from must be the bundles the live
node would form from the same recording. So the steps are the node's, in the node's order, written once:

1. **Binding** (:func:`camera_bindings`): each camera of the rig binds by *name* to a topic — an override, else
   the rig's topic — under image_transport naming (``<base>/compressed`` for compressed cameras). The node's
   parameter layer (:func:`mfapr_ros.ros.params.bind_cameras`) calls the same rule. In a bag,
   :func:`bind_bag_topics` then falls back to the camera's other transport when only that one was recorded
   (logged: the robot node would subscribe to the bound topic).
2. **Stamps**: header stamps in integer ns; a zero header stamp (a driver that leaves it unset) falls back to the
   bag's log time, counted ``zero_header_stamp``.
3. **Synchronisation** by the one :class:`mfapr_ros.core.sync.ApproximateTimeSynchronizer` (built from the one
   :class:`~mfapr_ros.core.sync.SyncSettings`) over the undecoded messages, flushed at the end of the bag; its
   message drops are merged into the drop table as ``sync_<cause>``.
4. **Decoding and the bad-frame rule** (:func:`decode_bundles`, eval-bag) — the node's, once bundled:
   :func:`mfapr_ros.core.bundle_decode.decode_bundle` decodes each member, checks its size
   (``enforce_image_size``, :meth:`CameraBinding.size_mismatch`), counts a bad frame by cause and scores the
   bundle with it masked when ``min_cameras`` allows, else drops it (``bad_frame_bundle``). Training keeps the
   payloads encoded and decodes lazily. (``iter_bundles(enforce_image_size=True)`` is the older pre-sync size
   filter, kept for ``mfapr explain``.)
"""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mfapr_ros.core.drops import DropCounter
from mfapr_ros.core.errors import ConfigError, DataError
from mfapr_ros.core.rig import Camera, Rig
from mfapr_ros.core.sync import ApproximateTimeSynchronizer, Bundle

from .reader import COMPRESSED_IMAGE, IMAGE_TYPES, BagMessage, BagReader, image_fields, stamp_ns

LOG = logging.getLogger("mfapr.bag.bundles")
COMPRESSED_SUFFIX = "/compressed"


@dataclass(frozen=True)
class CameraBinding:
    """A bound camera: model slot, name, the topic actually read (subscribed), transport, expected size."""

    slot: int
    name: str
    topic: str
    transport: str
    width: int | None = None
    height: int | None = None

    def size_mismatch(self, width: int, height: int) -> str | None:
        """Why an image of ``width``×``height`` is refused under ``enforce_image_size`` (None = accepted) — the one
        policy of the node and ``eval-bag``: a different resolution silently changes the field of view the model
        sees, so it is dropped and counted (``wrong_size``), never resized."""
        if self.width is None or self.height is None or (width, height) == (self.width, self.height):
            return None
        return (f"{width}x{height} px on {self.topic}, the rig expects {self.width}x{self.height} (set "
                "enforce_image_size:=false / --no-enforce-image-size to accept it)")


def camera_bindings(cameras: Sequence[Camera], model_names: Sequence[str], topics: Mapping[str, str] | None = None,
                    transports: Mapping[str, str] | None = None, camera_topics: Sequence[str] = (),
                    default_transport: str = "") -> list[CameraBinding]:
    """The node's binding rule, in model slot order: topic = ``topics[name]``, else ``camera_topics[i]`` (rig
    order), else the rig's; transport = ``transports[name]``, else ``default_transport``, else the rig's; the
    topic read is image_transport's name for that transport. Inputs are assumed validated by the caller (the
    node's parameter layer names its parameters in errors); only a duplicate topic is refused here."""
    topics, transports = topics or {}, transports or {}
    out = []
    for i, cam in enumerate(cameras):
        topic = topics.get(cam.name, camera_topics[i] if camera_topics else cam.topic)
        transport = transports.get(cam.name, default_transport or cam.transport)
        topic = dataclasses.replace(cam, topic=topic, transport=transport).subscribe_topic
        out.append(CameraBinding(list(model_names).index(cam.name), cam.name, topic, transport, cam.width,
                                 cam.height))
    names = [b.topic for b in out]
    dup = sorted({t for t in names if names.count(t) > 1})
    if dup:
        raise ConfigError(f"camera topics must be distinct; {dup} is used by more than one camera")
    return sorted(out, key=lambda b: b.slot)


def _in_bag(b: CameraBinding, bag_types: Mapping[str, str]) -> str | None:
    """The bound topic if recorded, else the same camera's other transport (``/x`` ↔ ``/x/compressed``)."""
    base = b.topic[: -len(COMPRESSED_SUFFIX)] if b.topic.endswith(COMPRESSED_SUFFIX) else b.topic
    return next((t for t in (b.topic, base, base + COMPRESSED_SUFFIX) if bag_types.get(t) in IMAGE_TYPES), None)


def bind_bag_topics(rig: Rig, bag_types: Mapping[str, str], topics: Mapping[str, str] | None = None, *,
                    allow_missing: bool = False, source: str = "the bag") -> list[CameraBinding | None]:
    """The binding of each rig camera (slot order) to an image topic of the bag (``bag_types``: topic → type).

    ``topics`` maps camera names to topics (eval-bag ``--topics``, training ``topics``); an unknown name is a
    :class:`ConfigError`. A camera with no recorded topic is a :class:`DataError` listing the bag's image topics,
    or with ``allow_missing`` a ``None`` slot (always masked, logged) as long as one camera is bound.
    """
    topics = dict(topics or {})
    unknown = [c for c in topics if c not in rig.camera_names]
    if unknown:
        raise ConfigError(f"camera→topic map names camera(s) {unknown} that are not in the rig {rig.camera_names} "
                          "(eval-bag --topics, training topics)")
    out: list[CameraBinding | None] = []
    missing = []
    for b in camera_bindings(rig.cameras, rig.camera_names, topics):
        hit = _in_bag(b, bag_types)
        if hit is None:
            missing.append(f"{b.name} → {b.topic}")
        elif hit != b.topic:
            # a checkpoint keeps the rig as written: say so, or the robot node subscribes to a silent topic
            LOG.warning("%s: camera %s: topic %s (transport '%s') is not recorded; using %s. A checkpoint made "
                        "with this rig keeps transport '%s': on the robot set transport.%s:=%s (or fix the rig "
                        "YAML) if the camera publishes only %s", source, b.name, b.topic, b.transport, hit,
                        b.transport, b.name, "compressed" if hit.endswith(COMPRESSED_SUFFIX) else "raw", hit)
        out.append(None if hit is None else dataclasses.replace(b, topic=hit))
    if missing and (not allow_missing or all(b is None for b in out)):
        images = sorted(t for t, ty in bag_types.items() if ty in IMAGE_TYPES)
        raise DataError(f"{source} lacks the camera topic(s) {missing} (image topics in the bag: "
                        f"{images or 'none'}); map cameras to topics (eval-bag --topics cam0=/topic,...; training "
                        "topics: {camera: topic}) or fix the rig YAML")
    if missing:
        LOG.warning("%s: cameras without a topic (always masked): %s", source, ", ".join(missing))
    return out


def message_size(m: BagMessage) -> tuple[int, int] | None:
    """(width, height) of a bag image without decoding it (raw: the header fields; compressed: the JPEG/PNG header),
    None when it cannot be read (the decoder then reports the image)."""
    if m.msgtype != COMPRESSED_IMAGE:
        return int(m.msg.width), int(m.msg.height)
    try:
        from PIL import Image

        with Image.open(io.BytesIO(np.asarray(m.msg.data, dtype=np.uint8).tobytes())) as im:
            return int(im.size[0]), int(im.size[1])
    except Exception:  # noqa: BLE001 - unreadable header: left to the decoder, which counts it as corrupt
        return None


def iter_bundles(bag: BagReader, bindings: Sequence[CameraBinding | None], sync: ApproximateTimeSynchronizer,
                 start_ns: int | None = None, end_ns: int | None = None,
                 drops: DropCounter | None = None, *, enforce_image_size: bool = False,
                 on_message: Callable[[], None] | None = None) -> Iterator[Bundle]:
    """Stream the synchronizer's bundles over the bound topics (slot ``i`` = ``bindings[i]``, ``None`` = never
    delivers), in bag log-time order within ``[start_ns, end_ns)``; payloads are the undecoded
    :class:`~.reader.BagMessage`, ``stamps_ns`` the effective stamps (steps 2–4 of the module docstring).
    The synchronizer's drops are merged into ``drops`` once the bag is exhausted."""
    drops = drops if drops is not None else DropCounter.for_reader()
    slot = {b.topic: i for i, b in enumerate(bindings) if b is not None}
    for m in bag.messages(list(slot), start_ns, end_ns):
        if on_message is not None:
            on_message()
        stamp = stamp_ns(m.msg.header.stamp)
        if stamp == 0:
            drops.add("zero_header_stamp", f"{bag.path}: {m.topic} has header stamp 0; using the recording time "
                      "instead")
            stamp = m.log_time_ns
        i = slot[m.topic]
        if enforce_image_size:
            size = message_size(m)
            why = bindings[i].size_mismatch(*size) if size is not None else None  # type: ignore[union-attr]
            if why is not None:
                drops.add("wrong_size", f"an image of {m.topic} at {stamp} ns: {why}")
                continue
        yield from sync.add(i, stamp, m)
    yield from sync.flush()
    drops.merge(sync.drop_counts())


def decode_message(m: BagMessage, device: object = None) -> np.ndarray:
    """Decode one bag image with the package's one decoder (:mod:`mfapr_ros.core.images`)."""
    from mfapr_ros.core import images

    f = image_fields(m.msgtype, m.msg)
    if m.msgtype == COMPRESSED_IMAGE:
        if device is None:
            return images.decode_compressed(f["format"], f["data"])
        return images.decode_compressed(f["format"], f["data"], device=device)
    return images.decode_raw(f["encoding"], f["height"], f["width"], f["step"], f["data"],
                             is_bigendian=f["is_bigendian"])


@dataclass
class DecodedBundle:
    """A synchronized bundle with decoded images (``None`` where a camera is absent or failed to decode)."""

    stamp_ns: int
    images: list[np.ndarray | None]
    mask: np.ndarray
    stamps_ns: list[int | None]


def decode_bundles(bundles: Iterator[Bundle], drops: DropCounter | None = None, device: object = None, *,
                   bindings: Sequence[CameraBinding | None] | None = None, min_present: int = 1,
                   enforce_image_size: bool = False) -> Iterator[DecodedBundle]:
    """Decode :func:`iter_bundles`' payloads with the node's bad-frame rule
    (:func:`mfapr_ros.core.bundle_decode.decode_bundle`): a bad frame is counted by cause (``corrupt``,
    ``unsupported_encoding``, ``wrong_size`` under ``enforce_image_size`` with ``bindings``) and masked; the bundle
    is kept when ``min_present`` good frames are left (eval-bag passes the synchronizer's ``min_streams``, as the
    node does), else counted ``bad_frame_bundle``."""
    from mfapr_ros.core.bundle_decode import BAD_FRAME_BUNDLE, decode_bundle

    drops = drops if drops is not None else DropCounter.for_reader()

    def size(i: int, w: int, h: int) -> str | None:
        b = bindings[i] if bindings is not None else None
        return b.size_mismatch(w, h) if b is not None else None

    for b in bundles:
        v = decode_bundle(b.payloads, lambda _i, m: decode_message(m, device), min_present,
                          size if enforce_image_size and bindings is not None else None)
        for d in v.frame_drops:
            m = b.payloads[d.stream]
            drops.add(d.cause, f"an image of {m.topic} at {m.log_time_ns} ns: {d.detail}")
        if not v.keep:
            drops.add(BAD_FRAME_BUNDLE, f"bundle at {b.stamp_ns} ns: {v.num_present} good frame(s) left, "
                      f"{min_present} needed")
            continue
        stamps = [s if ok else None for s, ok in zip(b.stamps_ns, v.mask, strict=True)]
        yield DecodedBundle(int(b.stamp_ns), v.images, v.mask, stamps)
