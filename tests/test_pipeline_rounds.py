"""Iterative alignment as a pipeline option: a `rounds` group (generate -> mine -> DPO, each round from the
last round's model) expands into ordinary stages, runs, and resumes round by round."""
import json

import pytest

from align.pipeline import load_pipeline, run_pipeline, variables
from reward.files import InputError

ROUNDS = """
name: iterative
seed: 3
stages:
  - name: world
    kind: synth
    args: {{n_train: 8, n_pairs: 8, n_eval: 4, seed: "{{seed}}"}}
  - name: iter
    rounds: {rounds}
    start_model: {model}
    stages:
      - name: samples
        kind: generate
        args: {{model: "{{model_in}}", prompts: "{{world}}/prompts_pairs.jsonl", sample: true, num_samples: 2,
               max_new_tokens: 6, batch_size: 8, seed: "{{round}}"}}
      - name: pairs
        kind: pairs
        args: {{annotations: "{{world}}/instances_pairs.json", captions: "{{world}}/captions_pairs.json",
               images: "{{world}}", responses: "{{samples}}/responses.jsonl", strategy: [inject, rank],
               vocab: shapes, seed: "{{round}}"}}
      - name: dpo
        kind: dpo
        config: "{{configs}}/demo/dpo.yaml"
        args: {{model_name_or_path: "{{model_in}}", dataset: "{{pairs}}/pairs.jsonl", images_dir: "{{world}}",
               max_steps: 2, per_device_train_batch_size: 2, warmup_steps: 0,
               learning_rate: 1.0e-3, lr_scheduler_type: constant}}
  - name: after
    kind: generate
    args: {{model: "{{iter}}/model", prompts: "{{world}}/prompts_eval.jsonl", max_new_tokens: 4}}
"""


def _write(tmp_path, rounds=2, model="/nowhere/model"):
    f = tmp_path / "p.yaml"
    f.write_text(ROUNDS.format(rounds=rounds, model=model))
    return f


@pytest.mark.unit
def test_rounds_expand_into_chained_stages(tmp_path):
    p = load_pipeline(_write(tmp_path, rounds=3), out=tmp_path / "run")
    names = [s.name for s in p.stages]
    assert names == ["world", "iter_r1_samples", "iter_r1_pairs", "iter_r1_dpo", "iter_r2_samples", "iter_r2_pairs",
                     "iter_r2_dpo", "iter_r3_samples", "iter_r3_pairs", "iter_r3_dpo", "after"]
    by = {s.name: s for s in p.stages}
    assert by["iter_r1_samples"].args["model"] == "/nowhere/model"            # round 1: start_model
    assert by["iter_r2_samples"].args["model"] == "{iter_r1_dpo}/model"       # round 2: round 1's DPO model
    assert by["iter_r3_dpo"].args["model_name_or_path"] == "{iter_r2_dpo}/model"
    assert by["iter_r2_pairs"].args["responses"] == "{iter_r2_samples}/responses.jsonl"   # its own round's samples
    assert by["iter_r2_pairs"].args["seed"] == 2 and by["iter_r3_samples"].args["seed"] == 3
    assert by["iter_r1_dpo"].config == "{configs}/demo/dpo.yaml"
    v = variables(p)
    assert v["iter"] == v["iter_r3_dpo"] == str((tmp_path / "run" / "iter_r3_dpo").resolve())


@pytest.mark.unit
@pytest.mark.parametrize("group,needle", [
    ("  - {name: g, rounds: 0, start_model: m, stages: [{name: d, kind: dpo}]}\n", "an integer >= 1"),
    ("  - {name: g, rounds: 2, start_model: m, stages: [{name: s, kind: generate}]}\n", "needs a training stage"),
    ("  - {name: g, rounds: 2, stages: [{name: d, kind: dpo}]}\n", "start_model"),
    ("  - {name: g, rounds: 2, start_model: m, every: 1, stages: [{name: d, kind: dpo}]}\n", "unknown key 'every'"),
])
def test_bad_rounds_groups(tmp_path, group, needle):
    f = tmp_path / "p.yaml"
    f.write_text("stages:\n" + group)
    with pytest.raises(InputError, match=needle):
        load_pipeline(f)


@pytest.mark.integration
def test_two_rounds_of_generate_mine_dpo_run_and_resume(tmp_path, capsys):
    from safetensors.torch import load_file

    from align.tiny import TinyLlavaConfig, create_tiny_llava
    from data_prep.synth import synth_command

    # the tiny model needs a world's vocabulary; any world of the same generator will do
    synth_command(tmp_path / "w", n_images=12, seed=3)
    model = create_tiny_llava(tmp_path / "w", tmp_path / "m", TinyLlavaConfig(vision_layers=1, text_layers=1,
                                                                            text_hidden=32, vision_hidden=32))
    run = tmp_path / "run"
    run_pipeline(load_pipeline(_write(tmp_path, rounds=2, model=model), out=run))
    r1 = json.loads((run / "iter_r1_dpo/stage.json").read_text())
    r2 = json.loads((run / "iter_r2_dpo/stage.json").read_text())
    # round 2 really started from round 1's model: that model folder is one of its hashed inputs
    assert any(k.endswith("iter_r1_dpo/model") for k in r2["identity"]["inputs"])
    assert not any(k.endswith("iter_r1_dpo/model") for k in r1["identity"]["inputs"])
    w1 = load_file(str(run / "iter_r1_dpo/model/model.safetensors"))
    w2 = load_file(str(run / "iter_r2_dpo/model/model.safetensors"))
    assert any(not (w1[k] == w2[k]).all() for k in w1)                       # round 2 trained further
    after = json.loads((run / "after/stage.json").read_text())
    assert str(run.resolve() / "iter_r2_dpo/model") in after["identity"]["args"]["model"]
    capsys.readouterr()
    run_pipeline(load_pipeline(_write(tmp_path, rounds=2, model=model), out=run), resume=True, start="iter")
    out = capsys.readouterr().out
    assert "[iter_r1_samples] up to date, skipped" in out and "[iter_r2_dpo] up to date, skipped" in out
