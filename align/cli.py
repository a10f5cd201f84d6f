"""The `halign` command line (also `python -m align`).

Each verb is a typed Python function somewhere in the package; this module turns its signature and the
"Args:" block of its docstring into argparse options (LitGPT-style), so a verb's `--help` is its
docstring. Verbs are imported lazily: `halign data pope --help` does not import torch.

Training stages (`pretrain`, `sft`, `dpo`, `ppo`, `grpo`) take `--config FILE [--field value ...]`; they
receive the raw argument list and parse it against their config dataclass (align/config.py).
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
import types
import typing

from reward.files import InputError

# verb path -> "module:function". Functions taking a single `argv: list[str]` get the raw arguments.
VERBS: dict[tuple[str, ...], str] = {
    ("demo",): "align.demo:demo",
    ("pipeline",): "align.pipeline:pipeline",
    ("data", "synth"): "data_prep.synth:synth_command",
    ("data", "pairs"): "data_prep.pairs:pairs_command",
    ("data", "pope"): "data_prep.pope:pope_command",
    ("pretrain",): "align.pretrain:main",
    ("sft",): "align.sft:main",
    ("dpo",): "align.dpo:main",
    ("ppo",): "align.ppo:main",
    ("grpo",): "align.grpo:main",
    ("eval", "generate"): "align.generate:generate_command",
    ("eval", "chair"): "align.score:chair_command",
    ("eval", "pope"): "align.score:pope_command",
    ("eval", "run"): "align.evaluate:run_command",
    ("export",): "align.export:export_command",
}

# Parameter names that cannot be Python identifiers as flags (DESIGN.md: `halign pipeline --from STAGE`).
FLAG_NAMES = {"from_stage": "--from"}

GROUP_HELP = {
    "data": "prepare data: synthetic world, preference pairs, POPE question sets",
    "eval": "generate with a checkpoint and score hallucination (CHAIR, POPE, coverage)",
}


def _load(target: str):
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def _doc_summary_and_args(func) -> tuple[str, dict[str, str]]:
    doc = inspect.getdoc(func) or ""
    summary, _, rest = doc.partition("\nArgs:\n")
    args: dict[str, str] = {}
    current = None
    for line in rest.splitlines():
        m = re.match(r"\s{0,4}(\w+):\s*(.*)", line)
        if m and not line.startswith(" " * 5):
            current = m.group(1)
            args[current] = m.group(2)
        elif current and line.strip():
            args[current] += " " + line.strip()
        elif not line.strip():
            current = None
    return summary.strip(), args


def _is_raw(func) -> bool:
    params = list(inspect.signature(func).parameters)
    return params == ["argv"]


def _unwrap_optional(tp):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _add_arguments(parser: argparse.ArgumentParser, func) -> None:
    hints = typing.get_type_hints(func)
    _, arg_help = _doc_summary_and_args(func)
    for name, param in inspect.signature(func).parameters.items():
        tp = _unwrap_optional(hints.get(name, str))
        flag = FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
        required = param.default is inspect.Parameter.empty
        default = None if required else param.default
        help_text = arg_help.get(name, "")
        if not required and default not in (None, False):
            help_text += f" (default: {default})"
        # argparse %-formats help strings; a docstring's "50 %" must reach it as "50 %%"
        kw: dict = {"dest": name, "help": help_text.strip().replace("%", "%%") or None}
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=bool(default), **kw)
            continue
        origin = typing.get_origin(tp)
        if origin is typing.Literal:
            kw["choices"] = list(typing.get_args(tp))
            kw["type"] = type(kw["choices"][0])
        elif origin in (list, tuple):
            (inner,) = typing.get_args(tp)[:1]
            kw["nargs"] = "+"
            kw["type"] = inner
        else:
            kw["type"] = tp
        if required:
            kw["required"] = True
            kw["metavar"] = name.upper()
        else:
            kw["default"] = default
        parser.add_argument(flag, **kw)


def build_parser(only: tuple[str, ...] | None = None) -> argparse.ArgumentParser:
    """Build the parser. `only` restricts loading to one verb (the others get a placeholder)."""
    parser = argparse.ArgumentParser(
        prog="halign",
        description="Preference alignment against object hallucination in vision-language models.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for path, target in VERBS.items():
        if len(path) == 2:
            if path[0] not in groups:
                gp = sub.add_parser(path[0], help=GROUP_HELP.get(path[0]))
                groups[path[0]] = gp.add_subparsers(dest="subverb", metavar="SUBCOMMAND")
            container, name = groups[path[0]], path[1]
        else:
            container, name = sub, path[0]
        if only is not None and path != only:
            container.add_parser(name, help=_short_help(target), add_help=False)
            continue
        func = _load(target)
        summary, _ = _doc_summary_and_args(func)
        first = summary.split("\n")[0]
        p = container.add_parser(name, help=first.replace("%", "%%"), description=summary,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 add_help=not _is_raw(func))
        p.set_defaults(_target=target)
        if not _is_raw(func):
            _add_arguments(p, func)
    return parser


# One-line help for `halign --help` without importing every module.
_SHORT = {
    "align.demo:demo": "whole pipeline on the synthetic world, CPU, offline",
    "align.pipeline:pipeline": "run the stages a pipeline YAML names (resumable)",
    "data_prep.synth:synth_command": "render the synthetic grounded world (images + COCO annotations)",
    "data_prep.pairs:pairs_command": "mine preference pairs from grounded annotations",
    "data_prep.pope:pope_command": "build POPE question sets (random, popular, adversarial)",
    "align.pretrain:main": "pretraining: vision tower on boxes (tiny VLM) or projector alignment",
    "align.sft:main": "supervised fine-tuning (TRL SFTTrainer)",
    "align.dpo:main": "DPO and hallucination-aware variants (TRL DPOTrainer subclass)",
    "align.ppo:main": "PPO with a grounded hallucination reward",
    "align.grpo:main": "GRPO with the grounded hallucination reward (TRL GRPOTrainer)",
    "align.generate:generate_command": "generate responses for image prompts with a checkpoint",
    "align.score:chair_command": "score captions with CHAIR_s / CHAIR_i / recall",
    "align.score:pope_command": "score POPE answers (accuracy, precision, recall, F1, yes-ratio)",
    "align.evaluate:run_command": "generate and score every benchmark named in an eval config",
    "align.export:export_command": "export a checkpoint (merged LoRA) with processor and model card",
}


def _short_help(target: str) -> str:
    return _SHORT.get(target, "")


def _find_verb(argv: list[str]) -> tuple[str, ...] | None:
    words = [a for a in argv[:2] if not a.startswith("-")]
    for n in (2, 1):
        if tuple(words[:n]) in VERBS:
            return tuple(words[:n])
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = _find_verb(argv)
    try:
        if verb is not None and _is_raw(_load(VERBS[verb])):
            result = _load(VERBS[verb])(argv[len(verb):])
            return int(result or 0)
        parser = build_parser(only=verb if verb is not None else ())
        if verb is None:
            if argv and argv[0] in GROUP_HELP and len(argv) == 1:
                argv.append("--help")
            args = parser.parse_args(argv or ["--help"])
            return 0
        args = parser.parse_args(argv)
        kwargs = {k: v for k, v in vars(args).items() if k not in ("verb", "subverb", "_target")}
        result = _load(args._target)(**kwargs)
        return int(result or 0) if isinstance(result, (int, type(None))) else 0
    except InputError as e:
        print(f"halign: error: {e.message()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("halign: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
