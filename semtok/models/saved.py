"""Loading a saved model folder safely: clear errors for a folder that is missing or incomplete, or whose
config and weights cannot make the model they name; saving it readable by the user's group.

diffusers treats any path that is not a local folder as a Hugging Face Hub id, so a typo in
`results/tokenizer/b18/stage2` (or a stage that has not run yet) surfaces as "couldn't connect to
huggingface.co"; and it loads weights that do not fit their config.json with only a log line (a tensor
the config asks for and the file lacks is left randomly initialised). `SavedModelMixin.from_pretrained`
checks the path first, then every config value's type (naming the key), then that the weights are
exactly the tensors the config makes (no missing, unexpected or misshapen one) and that they are all
finite, and raises `InvalidSavedModel` naming the folder and the keys or tensors.
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import inspect
import os
import re
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from semtok.utils.io import follow_umask

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# from_pretrained's arguments that also locate the config (load_config takes them too)
LOCATION_KWARGS = (
    "cache_dir",
    "force_download",
    "proxies",
    "local_files_only",
    "token",
    "revision",
    "subfolder",
)
LISTED = 8  # names shown per kind of problem


class InvalidSavedModel(ValueError):
    """A saved model whose config.json or weights cannot make the model: the message names the folder
    and the keys or tensors."""


def check_saved_model(path: str | os.PathLike, kind: str) -> None:
    """Raise FileNotFoundError naming `path` unless it is a folder with a config.json, or a string of
    the form `owner/name` that is not a local path (left to the Hub)."""
    folder = Path(path)
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"{folder} is not a saved {kind}: it has no config.json (written last by save_pretrained; "
                "an interrupted export leaves none, rerun the rule that writes it)"
            )
        return
    if folder.exists():
        raise FileNotFoundError(f"{folder} is a file, not a saved {kind} folder")
    if not HUB_ID.fullmatch(str(path)):
        raise FileNotFoundError(
            f"no saved {kind} at {folder} (a folder written by save_pretrained, such as "
            "results/tokenizer/b18/stage2 or results/generator/ar-l; has its rule run?)"
        )


# ---------------------------------------------------------------------------------------------
# The config's values


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def fits(tp: Any, value: Any) -> bool:
    """Whether a JSON value can stand for a parameter annotated `tp` (a list for a tuple, an int for a
    float, never a bool for a number); an annotation it does not know lets every value pass."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(fits(arg, value) for arg in args)
    if origin is Literal:
        return value in args
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp in (int, float):
        allowed = (int,) if tp is int else (int, float)
        return isinstance(value, allowed) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple, collections.abc.Sequence) or tp in (list, tuple):
        items = [arg for arg in args if arg is not Ellipsis]
        return isinstance(value, (list, tuple)) and all(
            any(fits(a, v) for a in items or [Any]) for v in value
        )
    if origin is dict or tp is dict:
        return isinstance(value, dict) and (not args or all(fits(args[1], v) for v in value.values()))
    return True


def _annotations(typed_by: Iterable[Callable]) -> dict[str, Any]:
    """The annotated parameters of the callables (a class: its __init__), the first one's type winning."""
    hints: dict[str, Any] = {}
    for fn in typed_by:
        target = fn.__init__ if inspect.isclass(fn) and not dataclasses.is_dataclass(fn) else fn
        try:
            found = typing.get_type_hints(inspect.unwrap(target))
        except Exception:  # an annotation that does not resolve: its values are not checked
            found = {}
        hints = {**{k: v for k, v in found.items() if k != "return"}, **hints}
    return hints


def check_config_types(
    config: Mapping[str, Any],
    typed_by: Iterable[Callable],
    nested: Mapping[str, tuple],
    where: str,
    key: str = "",
) -> None:
    """Raise InvalidSavedModel naming the first value of `config` whose type its parameter's annotation
    (in `typed_by`) rules out; a nested mapping whose dotted key is in `nested` is checked against the
    callables given there. Keys starting with "_" (diffusers' own) are not parameters."""
    hints = _annotations(typed_by)
    for name, value in config.items():
        path = f"{key}.{name}" if key else name
        if name.startswith("_") or name not in hints:
            continue
        if not fits(hints[name], value):
            raise InvalidSavedModel(
                f"{where}: config.json: {path}: expected {_type_name(hints[name])}, got "
                f"{type(value).__name__} ({value!r})"
            )
        if path in nested and isinstance(value, Mapping):
            check_config_types(value, nested[path], nested, where, path)


# ---------------------------------------------------------------------------------------------
# The weights


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:LISTED])
    return f"{shown}, … ({len(names)} in all)" if len(names) > LISTED else shown


def check_weights(info: Mapping[str, list], where: str) -> None:
    """Raise InvalidSavedModel naming the tensors when diffusers' loading info (`output_loading_info`)
    has missing, unexpected or misshapen ones: the weights were not written for this config."""
    problems = []
    if info.get("missing_keys"):
        problems.append(f"missing from the weights: {_listed(sorted(info['missing_keys']))}")
    if info.get("unexpected_keys"):
        problems.append(f"in the weights but not in the model: {_listed(sorted(info['unexpected_keys']))}")
    if info.get("mismatched_keys"):
        shapes = [
            f"{k} ({tuple(saved)} saved, {tuple(model)} in the model)"
            for k, saved, model in info["mismatched_keys"]
        ]
        problems.append(f"of another shape: {_listed(shapes)}")
    if info.get("error_msgs"):
        problems.append("; ".join(info["error_msgs"]))
    if problems:
        raise InvalidSavedModel(
            f"{where}: the weights do not match its config.json (edited, or written for another model): "
            + "; ".join(problems)
        )


def nonfinite_tensors(tensors: Iterable[tuple[str, torch.Tensor]]) -> list[tuple[str, int, int]]:
    """(name, non-finite values, values) of every floating tensor holding a NaN or an infinity."""
    found = []
    for name, tensor in tensors:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            found.append((name, int((~torch.isfinite(tensor)).sum()), tensor.numel()))
    return found


def check_finite(tensors: Iterable[tuple[str, torch.Tensor]], where: str) -> None:
    """Raise InvalidSavedModel naming every tensor with NaN or infinite values (name, count) — weights of
    a diverged run, or damaged on disk. tensors: (name, tensor) pairs, e.g. `model.state_dict().items()`."""
    bad = nonfinite_tensors(tensors)
    if bad:
        listed = _listed([f"{name} ({count} of {total} values)" for name, count, total in bad])
        raise InvalidSavedModel(f"{where}: non-finite values (NaN or inf) in {len(bad)} tensor(s): {listed}")


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """diffusers logs missing or misshapen weights as warnings; they are raised as errors instead."""
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(level)


class SavedModelMixin:
    """Put before diffusers' ModelMixin and ConfigMixin: `from_pretrained` and `load_config` check the
    path first, `from_pretrained` then the config and the weights (module docstring); `save_pretrained`
    leaves its files with the permissions the umask gives (safetensors writes them 0600).

    config_types: the callables whose parameters type the entries of each nested config mapping, by
    dotted key (the top level is typed by the class's own __init__)."""

    config_types: ClassVar[dict[str, tuple[Callable, ...]]] = {}

    @classmethod
    def load_config(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        subfolder = kwargs.get("subfolder")
        local = Path(pretrained_model_name_or_path)
        check_saved_model(
            local / subfolder if subfolder and local.is_dir() else pretrained_model_name_or_path, cls.__name__
        )
        try:
            return super().load_config(pretrained_model_name_or_path, *args, **kwargs)
        except OSError as err:
            if Path(pretrained_model_name_or_path).exists():
                raise
            raise FileNotFoundError(
                f"{pretrained_model_name_or_path} is not a local folder, and loading it as a Hugging Face Hub "
                f"id failed: {err}"
            ) from err

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> Any:
        """diffusers' from_pretrained, refusing (InvalidSavedModel) a config value of the wrong type,
        weights that are not exactly the tensors of the config (whatever `ignore_mismatched_sizes`
        says) and non-finite weights. `output_loading_info=True` also returns diffusers' loading info."""
        subfolder = kwargs.get("subfolder")
        where = f"{pretrained_model_name_or_path}" + (f" (subfolder {subfolder})" if subfolder else "")
        config = cls.load_config(
            pretrained_model_name_or_path, **{k: kwargs[k] for k in LOCATION_KWARGS if k in kwargs}
        )
        check_config_types(config, [cls], cls.config_types, where)
        return_info = kwargs.pop("output_loading_info", False)
        kwargs.pop("ignore_mismatched_sizes", None)
        with _quiet_loading():
            model, info = super().from_pretrained(
                pretrained_model_name_or_path,
                output_loading_info=True,
                ignore_mismatched_sizes=True,
                **kwargs,
            )
        check_weights(info, where)
        check_finite(model.state_dict().items(), where)
        return (model, info) if return_info else model

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        super().save_pretrained(save_directory, *args, **kwargs)
        follow_umask(Path(save_directory))
