"""Processors: the unit of work an app offers, and the files they read and write.

A processor declares a pydantic *context model* as the type of its ``run`` argument.
Each field of that model is one of

- an input file (``InputFile``), or a list of them (``List[InputFile]``),
- an output file (``OutputFile``),
- a parameter: ``str``, ``int``, ``float``, ``bool``, ``List[...]`` or ``Optional[...]``
  of those, or a ``Literal[...]`` of one of them (which becomes the parameter's options),
- or another ``BaseModel``, whose fields count as the context's under ``outer.inner`` names
  (as in the original Pairio SDK).

``processor_spec`` turns such a class into the ``PairioAppProcessor`` that goes into
``spec.json``; ``ContextFields`` sorts the model's fields for building a context from a job file.
"""

from __future__ import annotations

import os
import shutil
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .models import (
    PairioAppProcessor,
    PairioAppProcessorAttribute,
    PairioAppProcessorInputFile,
    PairioAppProcessorOutputFile,
    PairioAppProcessorParameter,
    implied_required,
)

_SCALAR_TYPE_NAMES: dict[type, str] = {str: "str", int: "int", float: "float", bool: "bool"}
ALLOWED_PARAMETER_TYPES = "str, int, float, bool, List[...] or Optional[...] of those, or a Literal[...] of one of them"


class ProcessorDefinitionError(TypeError):
    """A processor class or its context model cannot be turned into a spec; the message says how to fix it."""


# ---------------------------------------------------------------- files


class InputFile(BaseModel):
    """An input file: staged on local disk by the bridge ahead of the job, or fetched when first asked for (lazy).

    ``get_url()`` is the input's URL and never downloads anything: hand it to readers of
    remote files (lindi, remfile, h5py over HTTP) to read a large file by ranges. ``download()``
    and ``local_file_name`` give a local copy, fetching it first if the bridge staged lazily.

    Also answers the original Pairio SDK's API: ``local_file_name``, ``is_local()``,
    ``get_local_file_name()``, ``download(dest_file_path=...)``, ``job_id``.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    file_base_name: str
    url: str
    path: str
    job_id: Optional[str] = None
    # The original SDK's processors could sign URLs with the job's key; here jobs hold none.
    job_private_key: Optional[str] = None
    # Lazy staging: the file is at ``path`` only once fetched, through ``cache_dir`` when given (bridge.staging).
    lazy: bool = False
    cache_dir: Optional[str] = None

    def get_url(self) -> str:
        return self.url

    @property
    def local_file_name(self) -> str:
        return self._local_path()

    def is_local(self) -> bool:
        return True  # a local file name is always available (fetched on first use when lazy)

    def get_local_file_name(self) -> str:
        return self._local_path()

    def is_staged(self) -> bool:
        """Whether the file is on local disk already (always, unless the bridge stages lazily)."""
        return Path(self.path).is_file()

    def _local_path(self) -> str:
        if self.lazy and not self.is_staged():
            from .input_cache import fetch_input  # resumable, size-checked, shared with the bridge

            fetch_input(self.url, Path(self.path), Path(self.cache_dir) if self.cache_dir else None)
        return self.path

    def download(
        self, dest: Optional[str | os.PathLike[str]] = None, *, dest_file_path: Optional[str | os.PathLike[str]] = None
    ) -> str:
        """Copy the input to ``dest`` (default: its file base name in the working directory).

        ``dest_file_path`` is the original SDK's name for ``dest``. A copy rather than a hard
        link: the staged file may be shared with the bridge's cache, and a processor that
        edits its copy must not change it. To read the file without copying it, open
        ``local_file_name``.
        """
        if dest is not None and dest_file_path is not None:
            raise TypeError("give dest or dest_file_path (the same thing), not both")
        chosen = dest if dest is not None else dest_file_path
        target = Path(chosen if chosen is not None else self.file_base_name)
        source = self._local_path()
        if target.resolve() == Path(source).resolve():
            return str(target)  # already there, as the original SDK allows
        if target.parent != Path(""):
            target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return str(target)


class OutputFile(BaseModel):
    """An output file: ``upload(path)`` moves a local file to where the bridge collects it."""

    name: str
    file_base_name: str
    path: str
    job_id: Optional[str] = None
    job_private_key: Optional[str] = None
    size: Optional[int] = None  # as in the original SDK, which never fills it either

    def upload(self, local_path: str | os.PathLike[str], delete_local_file: bool = True) -> None:
        """Hand ``local_path`` over as this output; ``delete_local_file=False`` keeps a copy where it is.

        A repeated upload replaces the earlier file.
        """
        source = Path(local_path)
        if not source.is_file():
            raise FileNotFoundError(
                f"cannot upload output {self.name!r}: {str(source)!r} is not a file; write it before calling upload()"
            )
        destination = Path(self.path)
        destination.parent.mkdir(parents=True, exist_ok=True)
        if source.resolve() == destination.resolve():
            return
        if delete_local_file:
            shutil.move(str(source), destination)
        else:
            shutil.copyfile(source, destination)

    @property
    def was_produced(self) -> bool:
        """True when the file is at its output path (uploaded, or written there directly)."""
        return Path(self.path).is_file()

    @property
    def was_uploaded(self) -> bool:
        """The original SDK's name for ``was_produced``."""
        return self.was_produced


# ---------------------------------------------------------------- processors


class ProcessorBase:
    """Subclass this, set the class attributes, and define ``@staticmethod run(context: YourContext)``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    label: ClassVar[str] = ""
    image: ClassVar[str] = ""
    executable: ClassVar[str] = ""
    needs_network: ClassVar[bool] = False
    """True when the processor needs the network in a container (bridges give containers none otherwise)"""
    attributes: ClassVar[dict[str, Any]] = {}
    tags: ClassVar[list[str]] = []

    @staticmethod
    def run(context: Any) -> None:
        raise NotImplementedError("a processor must define @staticmethod run(context: YourContextModel)")


@dataclass
class ContextFields:
    """The fields of a processor's context model, sorted by role.

    A field whose type is itself a ``BaseModel`` is flattened into ``outer.inner`` names, as
    the original Pairio does; ``infos`` holds each (dotted) name's pydantic field.
    """

    model: type[BaseModel]
    inputs: list[str] = field(default_factory=list)
    list_inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    parameters: list[str] = field(default_factory=list)
    infos: dict[str, FieldInfo] = field(default_factory=dict)

    @classmethod
    def of(cls, processor: type[ProcessorBase]) -> "ContextFields":
        model = context_model_of(processor)
        fields = cls(model=model)
        fields._add_model(model, prefix="", depth=0)
        return fields

    def _add_model(self, model: type[BaseModel], prefix: str, depth: int) -> None:
        for field_name, info in model.model_fields.items():
            name = prefix + field_name
            annotation = info.annotation
            self.infos[name] = info
            if annotation is InputFile:
                self.inputs.append(name)
            elif _is_list_of(annotation, InputFile):
                self.list_inputs.append(name)
            elif annotation is OutputFile:
                self.outputs.append(name)
            elif _is_list_of(annotation, OutputFile):
                raise ProcessorDefinitionError(
                    f"{model.__name__}.{field_name}: lists of output files are not supported; declare one OutputFile field per output"
                )
            elif isinstance(annotation, type) and issubclass(annotation, BaseModel) and annotation not in (InputFile, OutputFile):
                if depth >= 8:
                    raise ProcessorDefinitionError(f"{model.__name__}.{field_name}: context models may be nested at most 8 deep")
                self._add_model(annotation, prefix=name + ".", depth=depth + 1)
            else:
                parameter_type_of(annotation, f"{model.__name__}.{field_name}")  # raises if not allowed
                self.parameters.append(name)


def get_dotted(obj: Any, dotted_name: str) -> Any:
    """``context.outer.inner`` for the name ``outer.inner``."""
    for part in dotted_name.split("."):
        obj = getattr(obj, part)
    return obj


def set_dotted(values: dict[str, Any], dotted_name: str, value: Any) -> None:
    """Put ``value`` at ``values["outer"]["inner"]`` for the name ``outer.inner``."""
    *outer, last = dotted_name.split(".")
    for part in outer:
        values = values.setdefault(part, {})
    values[last] = value


def context_model_of(processor: type[ProcessorBase]) -> type[BaseModel]:
    """The pydantic model named as the type of the first argument of ``processor.run``."""
    run = processor.__dict__.get("run")
    if not isinstance(run, staticmethod):
        raise ProcessorDefinitionError(
            f"processor {processor.__name__} must define run as '@staticmethod def run(context: SomeContextModel)'"
        )
    function = run.__func__
    try:
        hints = typing.get_type_hints(function)
    except NameError as e:
        raise ProcessorDefinitionError(
            f"cannot resolve the type hints of {processor.__name__}.run ({e}); define its context model at module level"
        ) from e
    argument_names = function.__code__.co_varnames[: function.__code__.co_argcount]
    if len(argument_names) != 1:
        raise ProcessorDefinitionError(
            f"{processor.__name__}.run must take exactly one argument, the context, not {len(argument_names)}"
        )
    model = hints.get(argument_names[0])
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise ProcessorDefinitionError(
            f"the argument of {processor.__name__}.run needs a pydantic BaseModel type hint, "
            f"as in 'def run(context: {processor.__name__}Context)'"
        )
    return model


def processor_spec(processor: type[ProcessorBase], default_image: str = "", default_executable: str = "") -> PairioAppProcessor:
    """The spec of a processor class, as it goes into ``spec.json``."""
    if not (isinstance(processor, type) and issubclass(processor, ProcessorBase)):
        raise ProcessorDefinitionError(f"{processor!r} is not a subclass of pairio.app.ProcessorBase")
    if not processor.name:
        raise ProcessorDefinitionError(f"processor class {processor.__name__} needs a 'name' class attribute")
    fields = ContextFields.of(processor)
    model_fields = fields.infos
    if not isinstance(processor.attributes, dict):
        raise ProcessorDefinitionError(f"{processor.__name__}.attributes must be a dict of name -> JSON value")
    return PairioAppProcessor(
        name=processor.name,
        description=processor.description,
        label=processor.label,
        image=processor.image or default_image,
        executable=processor.executable or default_executable,
        needsNetwork=bool(processor.needs_network),
        inputs=[
            PairioAppProcessorInputFile(
                name=name, description=model_fields[name].description or "", list=name in fields.list_inputs
            )
            for name in model_fields
            if name in fields.inputs or name in fields.list_inputs
        ],
        outputs=[
            PairioAppProcessorOutputFile(name=name, description=model_fields[name].description or "")
            for name in fields.outputs
        ],
        parameters=[_parameter_spec(name, model_fields[name], fields.model.__name__) for name in fields.parameters],
        attributes=[PairioAppProcessorAttribute(name=k, value=v) for k, v in processor.attributes.items()],
        tags=list(processor.tags),
    )


def _parameter_spec(name: str, info: FieldInfo, model_name: str) -> PairioAppProcessorParameter:
    where = f"{model_name}.{name}"
    type_name, literal_options = parameter_type_of(info.annotation, where)
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    options = extra.get("options", literal_options)
    if options is not None and not isinstance(options, list):
        raise ProcessorDefinitionError(f"{where}: json_schema_extra 'options' must be a list of allowed values")
    if info.default is not PydanticUndefined:
        default = info.default
    elif info.default_factory is not None:
        default = info.default_factory()  # type: ignore[call-arg]
    else:
        default = None
    # The same rule as for a spec.json that does not say (the original Pairio's): no default, required.
    required = implied_required(default, type_name)
    return PairioAppProcessorParameter(
        name=name,
        description=info.description or "",
        type=type_name,  # type: ignore[arg-type]
        default=default,
        required=required,
        options=options,
        secret=bool(extra.get("secret", False)),
    )


def parameter_type_of(annotation: Any, where: str) -> tuple[str, Optional[list[Any]]]:
    """The spec type string of a parameter annotation, and its options when it is a ``Literal``."""
    scalar = _scalar_type_name(annotation)
    if scalar is not None:
        return scalar
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType) and len(args) == 2 and type(None) in args:
        inner = args[0] if args[1] is type(None) else args[1]
        scalar = _scalar_type_name(inner)
        if scalar is not None:
            return f"Optional[{scalar[0]}]", scalar[1]
        if typing.get_origin(inner) is list and len(typing.get_args(inner)) == 1:
            inner_scalar = _scalar_type_name(typing.get_args(inner)[0])
            if inner_scalar is not None and inner_scalar[1] is None:
                return f"Optional[List[{inner_scalar[0]}]]", None
    if origin is list:  # both List[int] and list[int]
        inner_scalar = _scalar_type_name(args[0]) if len(args) == 1 else None
        if inner_scalar is not None and inner_scalar[1] is None:
            return f"List[{inner_scalar[0]}]", None
    raise ProcessorDefinitionError(
        f"{where}: type {_describe(annotation)} is not allowed; use InputFile, List[InputFile], OutputFile, "
        f"or for a parameter {ALLOWED_PARAMETER_TYPES}"
    )


def _scalar_type_name(annotation: Any) -> Optional[tuple[str, Optional[list[Any]]]]:
    if annotation in _SCALAR_TYPE_NAMES:
        return _SCALAR_TYPE_NAMES[annotation], None
    if typing.get_origin(annotation) is Literal:
        values = list(typing.get_args(annotation))
        value_types = {type(v) for v in values}
        if len(value_types) == 1 and (value_type := value_types.pop()) in _SCALAR_TYPE_NAMES:
            return _SCALAR_TYPE_NAMES[value_type], values
    return None


def _describe(annotation: Any) -> str:
    return annotation.__name__ if isinstance(annotation, type) else repr(annotation).replace("typing.", "")


def _is_list_of(annotation: Any, item_type: type) -> bool:
    return typing.get_origin(annotation) is list and typing.get_args(annotation) == (item_type,)
