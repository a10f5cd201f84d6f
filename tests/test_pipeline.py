"""The pipeline runner on cheap stages: placeholders, manifests, --resume, --only, bad configs."""
import json
import shutil

import pytest

from align.pipeline import fingerprint, load_pipeline, relabel, resolve, run_pipeline
from reward.files import InputError

PIPELINE = """
name: t
seed: 5
stages:
  - name: world
    kind: synth
    args: {n_train: 8, n_pairs: 4, n_eval: 12, seed: "{seed}"}
  - name: pope
    kind: pope
    args: {annotations: "{world}/instances_eval.json", images: "{world}", vocab: shapes, n_images: 2,
           min_objects: 1, seed: "{seed}"}
"""


def _write(tmp_path, text=PIPELINE):
    f = tmp_path / "p.yaml"
    f.write_text(text)
    return f


@pytest.mark.unit
def test_placeholders_resolve_recursively_and_keep_ints():
    v = {"run": "/r", "seed": "3", "sft": "/r/sft"}
    assert resolve({"a": ["{sft}/model", "{seed}"], "b": "x{seed}"}, v) == {"a": ["/r/sft/model", 3], "b": "x3"}
    with pytest.raises(InputError, match="nope"):
        resolve("{nope}/x", v)


@pytest.mark.unit
def test_run_writes_manifests_and_resume_skips_unchanged_stages(tmp_path, capsys):
    p = load_pipeline(_write(tmp_path), out=tmp_path / "run")
    first = run_pipeline(p)
    m = json.loads((tmp_path / "run/world/stage.json").read_text())
    assert m["metrics"]["eval_images"] == 12 and m["wall_time_s"] >= 0 and "torch" in m["versions"]
    assert first["pope"]["identity"]["args"]["seed"] == 5          # "{seed}" became the int 5
    # the pope stage's inputs are the world files, hashed
    assert any(k.endswith("instances_eval.json") for k in m_inputs(tmp_path / "run/pope/stage.json"))
    capsys.readouterr()
    run_pipeline(load_pipeline(_write(tmp_path), out=tmp_path / "run"), resume=True)
    out = capsys.readouterr().out
    assert "[world] up to date, skipped" in out and "[pope] up to date, skipped" in out


def m_inputs(path):
    return json.loads(path.read_text())["identity"]["inputs"]


def _drop_an_annotation(run):
    """Change an input of the pope stage (the world's eval annotations lose their last box)."""
    f = run / "world/instances_eval.json"
    data = json.loads(f.read_text())
    f.write_text(json.dumps({**data, "annotations": data["annotations"][:-1]}))


@pytest.mark.unit
def test_resume_skips_the_stages_of_a_run_copied_elsewhere(tmp_path, capsys):
    # copying a finished run to try another setting of a late stage must not redo the early ones
    run_pipeline(load_pipeline(_write(tmp_path), out=tmp_path / "run"))
    shutil.copytree(tmp_path / "run", tmp_path / "copy")
    capsys.readouterr()
    done = run_pipeline(load_pipeline(_write(tmp_path), out=tmp_path / "copy"), resume=True)
    out = capsys.readouterr().out
    assert "[world] up to date, skipped" in out and "[pope] up to date, skipped" in out
    # the copy's manifests still name the run the stages ran in (the export's lineage follows them)
    assert done["pope"]["identity"]["args"]["annotations"] == str((tmp_path / "run/world/instances_eval.json").resolve())
    # and a changed input in the copy is still seen
    _drop_an_annotation(tmp_path / "copy")
    run_pipeline(load_pipeline(_write(tmp_path), out=tmp_path / "copy"), resume=True)
    out = capsys.readouterr().out
    assert "[world] up to date, skipped" in out and "[pope] pope ..." in out


@pytest.mark.unit
def test_resume_matches_manifests_written_before_roots_were_recorded(tmp_path, capsys):
    run_pipeline(load_pipeline(_write(tmp_path), out=tmp_path / "run"))
    for stage in ("world", "pope"):
        f = tmp_path / "run" / stage / "stage.json"
        m = json.loads(f.read_text())
        del m["roots"]
        f.write_text(json.dumps(m))
    capsys.readouterr()
    run_pipeline(load_pipeline(_write(tmp_path), out=tmp_path / "run"), resume=True)
    assert capsys.readouterr().out.count("up to date, skipped") == 2
    # such a run copied elsewhere resumes too: its manifests' paths say where it ran
    shutil.copytree(tmp_path / "run", tmp_path / "copy")
    run_pipeline(load_pipeline(_write(tmp_path), out=tmp_path / "copy"), resume=True)
    assert capsys.readouterr().out.count("up to date, skipped") == 2
    # and a changed input in the copy is still seen
    _drop_an_annotation(tmp_path / "copy")
    run_pipeline(load_pipeline(_write(tmp_path), out=tmp_path / "copy"), resume=True)
    out = capsys.readouterr().out
    assert "[world] up to date, skipped" in out and "[pope] pope ..." in out


@pytest.mark.unit
def test_relabel_writes_paths_under_a_root_from_its_placeholder():
    roots = {"{run}": "/r/demo", "{configs}": "/r/demo/configs"}
    assert relabel({"/r/demo/sft/model": ["/r/demo", "/r/demo2/x", "/r/demo/configs/a.yaml", 3]}, roots) == {
        "{run}/sft/model": ["{run}", "/r/demo2/x", "{configs}/a.yaml", 3]}


@pytest.mark.unit
def test_resume_reruns_a_stage_whose_input_changed(tmp_path, capsys):
    p = load_pipeline(_write(tmp_path), out=tmp_path / "run")
    run_pipeline(p)
    _drop_an_annotation(tmp_path / "run")   # an input of the pope stage: its manifest no longer matches
    capsys.readouterr()
    run_pipeline(load_pipeline(_write(tmp_path), out=tmp_path / "run"), resume=True, start="pope")
    assert "[pope] pope ..." in capsys.readouterr().out


@pytest.mark.unit
def test_only_runs_one_stage(tmp_path, capsys):
    p = load_pipeline(_write(tmp_path), out=tmp_path / "run")
    run_pipeline(p, only="world")
    assert (tmp_path / "run/world/stage.json").is_file() and not (tmp_path / "run/pope").exists()


@pytest.mark.unit
@pytest.mark.parametrize("text,needle", [
    ("stages: []\n", "no stages"),
    ("stages:\n  - {name: a, kind: bake}\n", "unknown stage kind 'bake'"),
    ("stages:\n  - {name: a, kind: synth, confg: x}\n", "unknown key 'confg'"),
    ("stagez: []\n", "unknown key 'stagez'"),
    ("stages:\n  - {name: a, kind: synth}\n  - {name: a, kind: synth}\n", "two stages named 'a'"),
])
def test_bad_pipeline_files(tmp_path, text, needle):
    with pytest.raises(InputError, match=needle):
        load_pipeline(_write(tmp_path, text))


@pytest.mark.unit
def test_fingerprint_changes_with_content_and_names(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.txt").write_text("1")
    h1 = fingerprint(d)
    (d / "a.txt").write_text("2")
    h2 = fingerprint(d)
    (d / "a.txt").rename(d / "b.txt")
    assert len({h1, h2, fingerprint(d)}) == 3
