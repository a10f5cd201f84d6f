"""Stage configs from YAML + overrides, and the CLI's error contract (one paragraph, exit 2)."""
import subprocess
import sys
from pathlib import Path

import pytest

from align.cli import VERBS, main
from reward.files import InputError

REPO = Path(__file__).resolve().parents[1]


def _yaml(tmp_path, text):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    return str(f)


@pytest.mark.unit
def test_yaml_then_command_line_overrides(tmp_path):
    from align.config import parse_config
    from align.sft import SFTStageConfig

    cfg = parse_config(SFTStageConfig, ["--config", _yaml(tmp_path, "learning_rate: 0.001\nlora_r: 4\n"),
                                        "--lora_r", "8", "--output_dir", str(tmp_path)], "sft")
    assert cfg.learning_rate == 0.001 and cfg.lora_r == 8
    # CPU run: TRL's GPU defaults (bf16, gradient checkpointing) are switched off
    assert cfg.bf16 is False and cfg.gradient_checkpointing is False


@pytest.mark.unit
def test_unknown_key_is_an_error_that_names_it_and_suggests(tmp_path):
    from align.config import parse_config
    from align.dpo import DPOStageConfig

    with pytest.raises(InputError) as e:
        parse_config(DPOStageConfig, ["--config", _yaml(tmp_path, "learning_rat: 0.1\n")], "dpo")
    assert "learning_rat" in str(e.value) and "learning_rate" in str(e.value) and "c.yaml" in str(e.value)


@pytest.mark.unit
@pytest.mark.parametrize("text,needle", [("a: [1, 2\n", "malformed YAML"), ("", "empty"), ("- 1\n", "mapping")])
def test_bad_yaml_files(tmp_path, text, needle):
    from align.config import parse_config
    from align.sft import SFTStageConfig

    with pytest.raises(InputError, match=needle):
        parse_config(SFTStageConfig, ["--config", _yaml(tmp_path, text)], "sft")


@pytest.mark.unit
def test_every_verb_has_help():
    for path in VERBS:
        out = subprocess.run([sys.executable, "-m", "align", *path, "--help"], capture_output=True, text=True,
                             cwd=REPO, timeout=120)
        assert out.returncode == 0, (path, out.stderr[-500:])
        assert "usage" in out.stdout.lower()


@pytest.mark.unit
def test_a_percent_sign_in_a_docstring_does_not_break_help():
    import argparse

    from align.cli import _add_arguments

    def verb(rate: float = 0.5) -> int:
        """Do it.

        Args:
            rate: the share kept (50 % by default; %d and %(prog)s stay text).
        """
        return 0

    parser = argparse.ArgumentParser(prog="verb")
    _add_arguments(parser, verb)
    assert "50 % by default; %d and %(prog)s stay text" in parser.format_help().replace("\n", " ").replace("  ", " ")


@pytest.mark.unit
def test_bad_input_gives_one_paragraph_and_exit_2(tmp_path, capsys):
    rc = main(["eval", "chair", "--captions", str(tmp_path / "none.jsonl"), "--annotations",
               str(tmp_path / "none.json"), "--out", str(tmp_path / "o.json")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("halign: error: ") and "none.jsonl" in err and "Traceback" not in err
    assert not (tmp_path / "o.json").exists()


@pytest.mark.unit
def test_training_stage_without_config_says_how(capsys):
    assert main(["sft"]) == 2
    assert "--config" in capsys.readouterr().err
