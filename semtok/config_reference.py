"""The parameter reference of the config (`config/README.md`), generated from the schema.

Every key of `semtok.config.Config` with its type, valid range (the field's `Bounds` and the relations
checked at load), default (the schema's), the value `config/paper.yaml` gives it and the one of the
tiny default `config/config.yaml`, and what it means: the comments written beside and above the
field in semtok/config.py and the docstring of its section's class, read from the source, so that
the explanation lives in one place. `semtok config-reference --output config/README.md` writes it; a
test keeps the committed file in sync.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import tokenize
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from semtok import config as schema
from semtok.config import RELATIONS, Bounds, Config

HEADER = """# Configuration reference

Generated from the schema in `semtok/config.py` by `semtok config-reference --output config/README.md`;
edit the schema (its field comments are the descriptions below), not this file — a test keeps the two in
sync.

A config is YAML: `config/config.yaml` is the tiny offline default (`snakemake --cores 2 all_tables`),
`config/paper.yaml` spells out every hyperparameter of the paper (`snakemake --configfile
config/paper.yaml site.yaml ...`; with `--configfile` the default is not loaded at all). Change one
value without editing files with `--config 'overrides=["generator.sample.top_p=0.8"]'` (Snakemake) or
`--set generator.sample.top_p=0.8` (any `semtok` command). A key missing from a file takes the
**default** column; an unknown key, a value of the wrong type or outside its range stops the load with
an error that names the key. `tokenizer_variants` and `generator_variants` hold partial overrides of
the `tokenizer` and `generator` sections (listed at the end); `arch` and `transformer` mappings are
replaced as a whole, every other mapping merged key by key.

Columns: **paper** is `config/paper.yaml`, **tiny** is `config/config.yaml`; `null` is YAML's empty
value.
"""

COLUMNS = ("Key", "Type", "Range", "Default", "Paper", "Tiny", "Description")
VARIANTS = dict[str, dict[str, Any]]  # the type of tokenizer_variants and generator_variants
VARIANTS_NOTE = "see Variants"


@dataclass(frozen=True)
class Key:
    """One leaf key of the schema."""

    path: str  # "tokenizer.stage1.optim.lr"
    type: str
    range: str
    default: Any
    paper: Any
    tiny: Any
    description: str


@dataclass(frozen=True)
class Section:
    """The keys of one dataclass of the schema, at one place in the tree."""

    path: str  # "" for the top level
    cls: type
    keys: list[Key]


# ----------------------------------------------------------------------------------------------
# The schema's comments, from the source


def field_comments(module: Any = schema) -> dict[tuple[str, str], str]:
    """{(class name, field name): comment} for every dataclass field of `module` that has comments:
    the comment lines right above the field and the comment on its last line, in that order."""
    source = inspect.getsource(module)
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    lines = source.splitlines()
    out = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                continue
            above, row = [], item.lineno - 1
            while row >= 1 and lines[row - 1].strip().startswith("#"):
                above.insert(0, comments[row])
                row -= 1
            after = [
                comments[n] for n in range(item.lineno, (item.end_lineno or item.lineno) + 1) if n in comments
            ]
            text = " ".join(above + after)
            if text:
                out[node.name, item.target.id] = text
    return out


def class_doc(cls: type) -> str:
    """A schema class's own docstring, dedented; "" when it has none (the signature a dataclass gets
    as its docstring does not count)."""
    doc = cls.__dict__.get("__doc__")
    if not doc or doc.startswith(f"{cls.__name__}("):  # dataclass's generated signature
        return ""
    return inspect.cleandoc(doc)


# ----------------------------------------------------------------------------------------------
# Values


def show(value: Any) -> str:
    """A value as YAML flow text: 3.0e-3 → 0.003, None → null, [0.9, 0.95], {L: [24, 1024, 16]}."""
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**9).strip()
    return text.removesuffix("\n...").removesuffix(" ...")


def _section_of_relations(cls: type) -> dict[str, list[str]]:
    """{field path relative to `cls`: messages} of the relations checked on `cls`."""
    out: dict[str, list[str]] = {}
    for kind, key, _, message in RELATIONS:
        if kind is cls:
            out.setdefault(key, []).append(message)
    return out


def sections(paper: Config, tiny: Config) -> list[Section]:
    """Every dataclass of the schema in tree order with its leaf keys (nested dataclasses get sections
    of their own)."""
    comments = field_comments()
    default = Config()
    out: list[Section] = []
    relations: dict[str, list[str]] = {}

    def walk(cls: type, path: str, values: tuple[Any, Any, Any]) -> None:
        hints = typing.get_type_hints(cls)
        prefix = f"{path}." if path else ""
        for key, messages in _section_of_relations(cls).items():
            relations.setdefault(prefix + key, []).extend(messages)
        keys, nested = [], []
        for field in dataclasses.fields(cls):
            own = tuple(getattr(v, field.name) for v in values)
            if dataclasses.is_dataclass(hints[field.name]):
                nested.append((hints[field.name], prefix + field.name, own))
                continue
            if hints[field.name] == VARIANTS:  # listed in a section of their own
                own = (VARIANTS_NOTE,) * 3
            bounds: Bounds = field.metadata.get("bounds", Bounds())
            limits = [bounds.describe()] if bounds.describe() else []
            if bounds.length is not None:
                limits.append(f"{bounds.length} values")
            elif bounds.min_length is not None:
                limits.append(f"at least {bounds.min_length}")
            keys.append(
                Key(
                    prefix + field.name,
                    schema._type_name(hints[field.name]),
                    "; ".join(limits),
                    *own,
                    comments.get((cls.__name__, field.name), ""),
                )
            )
        if keys:
            out.append(Section(path, cls, keys))
        for sub in nested:
            walk(*sub)

    walk(Config, "", (default, paper, tiny))
    return [
        Section(
            s.path,
            s.cls,
            [
                dataclasses.replace(k, range="; ".join(filter(None, [k.range, *relations.get(k.path, [])])))
                for k in s.keys
            ],
        )
        for s in out
    ]


# ----------------------------------------------------------------------------------------------
# Markdown


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(value: Any) -> str:
    if value == VARIANTS_NOTE:
        return f"[{VARIANTS_NOTE}](#variants)"
    text = show(value)
    return f"`{_cell(text)}`" if "`" not in text else _cell(text)


def _variants(name: str, paper: dict[str, dict], tiny: dict[str, dict]) -> list[str]:
    lines = [f"### {name}", "", "| Variant | Paper | Tiny |", "|---|---|---|"]
    for variant in dict.fromkeys([*paper, *tiny]):
        cells = [_code(cfg[variant]) if variant in cfg else "–" for cfg in (paper, tiny)]
        lines.append(f"| `{variant}` | {' | '.join(cells)} |")
    return [*lines, ""]


def markdown(paper: Config, tiny: Config) -> str:
    """The whole reference for the two shipped configs."""
    out = [HEADER]
    seen: dict[type, str] = {}
    for section in sections(paper, tiny):
        out += [f"## `{section.path}`" if section.path else "## Top level", ""]
        doc = class_doc(section.cls)
        if doc and section.cls in seen:
            out += [f"Keys as in `{seen[section.cls]}`.", ""]
        elif doc:
            out += [doc, ""]
        seen.setdefault(section.cls, section.path)
        out += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        for key in section.keys:
            cells = [f"`{key.path}`", _cell(key.type), _cell(key.range) or "–"]
            cells += [_code(key.default), _code(key.paper), _code(key.tiny), _cell(key.description)]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    out += [
        "## Variants",
        "",
        "Partial overrides of the `tokenizer` / `generator` section, one per variant.",
        "",
    ]
    out += _variants("tokenizer_variants", paper.tokenizer_variants, tiny.tokenizer_variants)
    out += _variants("generator_variants", paper.generator_variants, tiny.generator_variants)
    return "\n".join(out).rstrip() + "\n"


def write(paper: str | Path, tiny: str | Path) -> str:
    """The reference for the configs in files `paper` and `tiny`."""
    return markdown(schema.load(paper), schema.load(tiny))
