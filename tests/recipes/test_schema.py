"""Recipe validation: every error is found before any work and names the field."""

from __future__ import annotations

import copy

import pytest

from nnshrink.recipes import RecipeError, TrainStage, load_recipe, parse_recipe, preset_names


def test_valid_recipe_parses(tiny_recipe):
    recipe = parse_recipe(tiny_recipe)
    assert [s.name for s in recipe.stages] == ["train", "prune", "finetune", "export", "evaluate"]
    assert recipe.stages[0].config == TrainStage(epochs=1)
    assert recipe.stages[1].config.kind == "test-zero-smallest"
    assert recipe.fingerprint() == parse_recipe(copy.deepcopy(tiny_recipe)).fingerprint()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r["stages"].append({"sharpen": {}}), r"stages\[5\]: unknown stage 'sharpen'"),
        (lambda r: r["stages"][0]["train"].update(epochs="two"),
         r"stages\[0\] \(train\): recipe-train.epochs: expected an integer"),
        (lambda r: r["stages"][0]["train"].update(lrr=0.1), r"unknown key\(s\) \['lrr'\]"),
        (lambda r: r["stages"][1]["prune"].pop("type"), r"stages\[1\] \(prune\): missing 'type'"),
        (lambda r: r["stages"][1]["prune"].update(type="nope"), "unknown type 'nope'"),
        (lambda r: r["stages"][1]["prune"].update(fraction="x"), "fraction: expected a number"),
        (lambda r: r["model"].update(name="resnet1000"), "model.name: unknown model"),
        (lambda r: r.update(model={"checkpoint": "missing.safetensors"}),
         "model.checkpoint: file 'missing.safetensors' does not exist"),
        (lambda r: r["data"].update(name="imagenet"), "data.name"),
        (lambda r: r["data"].update(batch_size=0), "data.batch_size"),
        (lambda r: r.update(extra=1), r"recipe: unknown key\(s\) \['extra'\]"),
        (lambda r: r.pop("stages"), "missing required key 'stages'"),
        (lambda r: r.update(stages=[]), "non-empty list"),
        (lambda r: r["stages"].append({"train": {}, "prune": {}}), "one-key mapping"),
        (lambda r: r["stages"].append({"export": {"type": "x"}}), "only for technique stages"),
        (lambda r: r["stages"].append({"prune": {"type": "recipe-train"}}), "not a technique"),
    ],
)  # fmt: skip
def test_invalid_recipes_name_the_field(tiny_recipe, mutate, message):
    mutate(tiny_recipe)
    with pytest.raises(RecipeError, match=message):
        parse_recipe(tiny_recipe)


def test_yaml_file_and_presets(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model: {name: lenet5}\ndata: mnist\nstages:\n  - train: {epochs: 1}\n")
    recipe = load_recipe(path)
    assert recipe.name == "lenet5" and recipe.data == {"name": "mnist"}
    path.write_text("model: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(path)
    with pytest.raises(RecipeError, match="neither a recipe file nor a preset"):
        load_recipe("no-such-preset")


@pytest.mark.parametrize("name", preset_names())
def test_every_shipped_preset_validates(name):
    recipe = load_recipe(name)
    assert recipe.stages


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"eval_split": "valid"}, r"data.eval_split: expected one of \['test', 'val'\]"),
        ({"eval_split": "val", "val_size": 0}, "data.val_size: expected a positive integer"),
        ({"eval_split": "val", "val_size": "5k"}, "data.val_size: expected a positive integer"),
        ({"val_size": 5000}, "data.val_size: only used with eval_split: val"),
    ],
)
def test_eval_split_keys_are_validated(tiny_recipe, data, message):
    tiny_recipe["data"].update(data)
    with pytest.raises(RecipeError, match=message):
        parse_recipe(tiny_recipe)


def test_eval_split_val_parses(tiny_recipe):
    tiny_recipe["data"].update(eval_split="val", val_size=1000)
    assert parse_recipe(tiny_recipe).data["eval_split"] == "val"
