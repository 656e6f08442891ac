"""Lets the unmodified F5-TTS trainer (f5-tts 1.1.22) run on a CPU-only machine.

Loaded only when this directory is on the trainer's PYTHONPATH; no installed file is changed.

1. The registry's torchaudio wheel is a CUDA build: loading lib/_torchaudio.so fails for want
   of libc10_cuda.so. torchaudio treats a *missing* library file as "extension not built" and
   then works in pure Python, which is all F5 needs (MelSpectrogram, Resample). So once
   `torchaudio._extension.utils` has run, its `_load_lib` is replaced by one that says "absent".
2. torchaudio.load / torchaudio.save go through torchcodec, also a CUDA build here. They are
   replaced by soundfile-backed versions with the same return shape: (float32 [C, T], rate).
3. Test switch: with F5_SHIM_NAN_AT_UPDATE=N the loss that produces update N, and every one
   after it in this process, is made NaN (weights go non-finite at the next optimizer step).
   With F5_SHIM_NAN_ONCE_FILE=/path it fires in one process only over a whole test: the
   process that creates the file (O_EXCL) injects; if the file exists at start, none does.

Nothing heavy is imported here: each patch is applied right after its module is first
executed by whoever imports it. A sitecustomize this one shadows on sys.path still runs.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

NAN_AT_UPDATE = "F5_SHIM_NAN_AT_UPDATE"
NAN_ONCE_FILE = "F5_SHIM_NAN_ONCE_FILE"


# ---------------------------------------------------------------- torchaudio


def _no_lib(lib: str) -> bool:
    return False  # "library file not found": torchaudio then runs without its C++ extension


def _patch_ta_utils(module: ModuleType) -> None:
    module._load_lib = _no_lib  # type: ignore[attr-defined]


def _sf_load(
    uri: Any,
    frame_offset: int = 0,
    num_frames: int = -1,
    normalize: bool = True,
    channels_first: bool = True,
    format: str | None = None,
    buffer_size: int = 4096,
    backend: str | None = None,
) -> tuple[Any, int]:
    import soundfile  # type: ignore[import-not-found,unused-ignore]  # trainer venv only
    import torch

    data, rate = soundfile.read(
        uri, start=frame_offset, frames=num_frames, dtype="float32", always_2d=True, format=format
    )  # data: [frames, channels]
    tensor = torch.from_numpy(data.T.copy() if channels_first else data)
    return tensor, int(rate)


def _sf_save(
    uri: Any,
    src: Any,
    sample_rate: int,
    channels_first: bool = True,
    format: str | None = None,
    encoding: str | None = None,
    bits_per_sample: int | None = None,
    buffer_size: int = 4096,
    backend: str | None = None,
    compression: float | int | None = None,
) -> None:
    import soundfile  # type: ignore[import-not-found,unused-ignore]  # trainer venv only
    import torch

    data = src.detach().to("cpu", torch.float32).numpy()
    if data.ndim == 2 and channels_first:
        data = data.T  # soundfile wants [frames, channels]
    soundfile.write(uri, data, int(sample_rate), format=format)


def _patch_torchaudio(module: ModuleType) -> None:
    module.load = _sf_load  # type: ignore[attr-defined]
    module.save = _sf_save  # type: ignore[attr-defined]


# ---------------------------------------------------------------- NaN injection


class _NanState:
    """What the injector knows: the update the trainer resumed from and the losses seen since."""

    def __init__(self, at_update: int, once_file: str | None) -> None:
        self.at_update = at_update
        self.once_file = once_file
        # Decided at process start, so a file made by this very process does not disarm it.
        self.armed = once_file is None or not os.path.exists(once_file)
        self.claimed = once_file is None
        self.start_update = 0
        self.accumulation = 1
        self.losses = 0

    def fire(self) -> bool:
        """Whether the loss being computed now must be NaN."""
        update = self.start_update + self.losses // self.accumulation + 1  # the update it feeds
        self.losses += 1
        if not self.armed or update < self.at_update:
            return False
        if not self.claimed:
            try:  # O_EXCL: of processes racing here, exactly one wins
                os.close(os.open(self.once_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))  # type: ignore[arg-type]
            except FileExistsError:
                self.armed = False
                return False
            self.claimed = True
            print(f"[f5-shim] injecting NaN loss from update {update}", file=sys.stderr, flush=True)
        return True


_nan: _NanState | None = None


def _patch_trainer(module: ModuleType) -> None:
    """Record the update Trainer.load_checkpoint resumes from (0 on a fresh run)."""
    trainer_cls = module.Trainer
    load = trainer_cls.load_checkpoint

    def load_checkpoint(self: Any) -> int:
        update = int(load(self))
        if _nan is not None:
            _nan.start_update = update
            _nan.accumulation = max(1, int(getattr(self, "grad_accumulation_steps", 1)))
            _nan.losses = 0
        return update

    trainer_cls.load_checkpoint = load_checkpoint


def _patch_cfm(module: ModuleType) -> None:
    """CFM.forward returns (loss, cond, pred); the trainer backpropagates that loss."""
    cfm_cls = module.CFM
    forward = cfm_cls.forward

    def nan_forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        loss, cond, pred = forward(self, *args, **kwargs)
        if _nan is not None and self.training and _nan.fire():
            loss = loss * float("nan")  # stays in the graph: gradients, then weights, go NaN
        return loss, cond, pred

    cfm_cls.forward = nan_forward


# ---------------------------------------------------------------- import hook


class _PatchAfterExec(importlib.abc.Loader):
    """Runs the real loader, then a patch on the fresh module; anything else goes to the real one."""

    def __init__(self, inner: importlib.abc.Loader, patch: Callable[[ModuleType], None]) -> None:
        self._inner = inner
        self._patch = patch

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        self._patch(module)

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, ...
        return getattr(self._inner, name)


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, patches: dict[str, Callable[[ModuleType], None]]) -> None:
        self._patches = patches

    def find_spec(
        self, name: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        patch = self._patches.pop(name, None)
        if patch is None:
            return None
        if not self._patches:
            sys.meta_path.remove(self)
        for finder in sys.meta_path:  # whoever would have found it without us
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _PatchAfterExec(spec.loader, patch)
                return spec
        return None


def _run_shadowed() -> None:
    """A sitecustomize further down sys.path (a virtualenv's, a distribution's) still runs."""
    here = os.path.dirname(os.path.abspath(__file__))
    where = [os.path.abspath(p or ".") for p in sys.path]
    rest = sys.path[where.index(here) + 1 :] if here in where else []
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


def _install() -> None:
    global _nan
    patches: dict[str, Callable[[ModuleType], None]] = {
        "torchaudio._extension.utils": _patch_ta_utils,
        "torchaudio": _patch_torchaudio,
    }
    at_update = os.environ.get(NAN_AT_UPDATE, "").strip()
    if at_update:
        _nan = _NanState(int(at_update), os.environ.get(NAN_ONCE_FILE) or None)
        patches["f5_tts.model.trainer"] = _patch_trainer
        patches["f5_tts.model.cfm"] = _patch_cfm
    for name in list(patches):
        if name in sys.modules:  # already imported (unlikely this early): patch in place
            patches.pop(name)(sys.modules[name])
    if patches:
        sys.meta_path.insert(0, _Finder(patches))


# Once per process: another chaining sitecustomize (train-supervisor's own) may run this file
# again from its "shadowed" search; a second run must neither patch twice nor chain in a loop.
if "_f5_shim_done" not in sys.modules:
    sys.modules["_f5_shim_done"] = ModuleType("_f5_shim_done")
    _install()
    _run_shadowed()
